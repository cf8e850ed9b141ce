//! Where a test run's time goes: each QEMU scenario reports how long it took.
//!
//! libtest keeps the output of passing tests to itself (`println!` and `eprintln!` alike),
//! so [`Scenario`] writes its line straight to the process's stderr, where `cargo test`
//! shows it, and appends it to the file `CAIRN_TIMINGS` names, if set: `cargo xtask test` sets
//! it and prints the file in its summary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The environment variable naming the file scenario times are appended to.
pub const TIMINGS_VARIABLE: &str = "CAIRN_TIMINGS";

/// Times one scenario from [`Scenario::start`] until it is dropped (passed or panicked),
/// then reports `scenario <board>/<name>: <secs> s`.
#[must_use = "the scenario is timed until the guard is dropped"]
pub struct Scenario {
    name: String,
    started: Instant,
    record: Option<PathBuf>,
}

impl Scenario {
    /// Starts timing `name` (`<board>/<scenario>`, e.g. `generic-x86_64/pods`); the line goes
    /// to the file `CAIRN_TIMINGS` names too, if set.
    pub fn start(name: &str) -> Scenario {
        Scenario::recording_to(name, std::env::var_os(TIMINGS_VARIABLE).map(PathBuf::from))
    }

    /// Starts timing `name`; the line is appended to `record` too, if given.
    pub fn recording_to(name: &str, record: Option<PathBuf>) -> Scenario {
        Scenario { name: name.to_string(), started: Instant::now(), record }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let line = scenario_line(&self.name, self.started.elapsed(), std::thread::panicking());
        // Straight to stderr: libtest captures the print macros of passing tests.
        let _ = std::io::stderr().write_all(line.as_bytes());
        if let Some(path) = &self.record {
            if let Err(e) = append(path, &line) {
                let _ = writeln!(std::io::stderr(), "{e:#}");
            }
        }
    }
}

/// The line reported for a scenario that took `took` (and failed, if it panicked).
fn scenario_line(name: &str, took: Duration, panicked: bool) -> String {
    let failed = if panicked { " (failed)" } else { "" };
    format!("scenario {name}: {:.1} s{failed}\n", took.as_secs_f64())
}

/// Appends `line` to `path` in one write (test binaries run side by side; `O_APPEND` keeps
/// their lines whole).
fn append(path: &Path, line: &str) -> anyhow::Result<()> {
    let context = || format!("appending to {} ({TIMINGS_VARIABLE})", path.display());
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(context)?;
    file.write_all(line.as_bytes()).with_context(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_scenario_appends_its_line_to_the_timings_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timings");
        std::fs::write(&path, "scenario generic-x86_64/first-boot: 61.0 s\n").unwrap();
        drop(Scenario::recording_to("generic-x86_64/pods", Some(path.clone())));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0], "scenario generic-x86_64/first-boot: 61.0 s");
        assert!(
            lines[1].starts_with("scenario generic-x86_64/pods: 0.") && lines[1].ends_with(" s")
        );
    }

    #[test]
    fn a_scenario_line_names_the_scenario_its_seconds_and_a_failure() {
        let took = Duration::from_millis(83_460);
        assert_eq!(scenario_line("a/b", took, false), "scenario a/b: 83.5 s\n");
        assert_eq!(scenario_line("a/b", took, true), "scenario a/b: 83.5 s (failed)\n");
    }

    #[test]
    fn an_unwritable_timings_file_is_an_error_naming_it() {
        let error = format!("{:#}", append(Path::new("/nonexistent/timings"), "x\n").unwrap_err());
        assert!(
            error.starts_with("appending to /nonexistent/timings (CAIRN_TIMINGS): "),
            "{error}"
        );
    }
}
