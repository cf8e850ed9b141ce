//! Where a test run's time goes: each QEMU scenario reports how long it took.
//!
//! libtest keeps the output of passing tests to itself (`println!` and `eprintln!` alike),
//! so [`Scenario`] writes its line straight to the process's stderr, where `cargo test`
//! shows it, and appends it to the file `CAIRN_TIMINGS` names, if set: `cargo xtask test` sets
//! it and prints the file in its summary. A scenario that fails says why on its line: the
//! end of CI's log, which keeps that summary, then still tells what went wrong.

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Once;
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
        remember_panics();
        LAST_PANIC.with(|last| last.borrow_mut().take());
        Scenario { name: name.to_string(), started: Instant::now(), record }
    }
}

/// The most characters of a panic's message a scenario's line carries.
const PANIC_CHARS: usize = 1500;

thread_local! {
    /// Where and why this thread last panicked.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs, once, a panic hook that keeps each panic's place and message for its thread's
/// scenario line, then reports it as before.
fn remember_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let place = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
            let said = format!("{}: {message}", place.unwrap_or_default());
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(said));
            previous(info);
        }));
    });
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let failure = std::thread::panicking()
            .then(|| LAST_PANIC.with(|last| last.borrow_mut().take()).unwrap_or_default());
        let line = scenario_line(&self.name, self.started.elapsed(), failure.as_deref());
        // Straight to stderr: libtest captures the print macros of passing tests.
        let _ = std::io::stderr().write_all(line.as_bytes());
        if let Some(path) = &self.record {
            if let Err(e) = append(path, &line) {
                let _ = writeln!(std::io::stderr(), "{e:#}");
            }
        }
    }
}

/// The line reported for a scenario that took `took`, and failed with `failure` (the panic's
/// place and message, on one line and cut short) if it did.
fn scenario_line(name: &str, took: Duration, failure: Option<&str>) -> String {
    let failed = match failure {
        None => String::new(),
        Some("") => " (failed)".into(),
        Some(why) => {
            let one_line = why.split_whitespace().collect::<Vec<_>>().join(" ");
            let mut cut: String = one_line.chars().take(PANIC_CHARS).collect();
            if cut.len() < one_line.len() {
                cut.push_str("...");
            }
            format!(" (failed: {cut})")
        }
    };
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
        assert_eq!(scenario_line("a/b", took, None), "scenario a/b: 83.5 s\n");
        assert_eq!(scenario_line("a/b", took, Some("")), "scenario a/b: 83.5 s (failed)\n");
        let why = "x.rs:3: the node\n  did not answer";
        let line = scenario_line("a/b", took, Some(why));
        assert_eq!(line, "scenario a/b: 83.5 s (failed: x.rs:3: the node did not answer)\n");
        let long = scenario_line("a/b", took, Some(&"é".repeat(2000)));
        assert!(long.ends_with(&format!("{}...)\n", "é".repeat(10))), "{long}");
        assert_eq!(long.chars().filter(|c| *c == 'é').count(), PANIC_CHARS);
    }

    #[test]
    fn a_scenario_that_panics_says_where_and_why_on_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timings");
        let record = path.clone();
        let panicked = std::thread::spawn(move || {
            let _scenario = Scenario::recording_to("a/b", Some(record));
            panic!("the node said {}", "no");
        })
        .join();
        assert!(panicked.is_err());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(" s (failed: tests/src/timing.rs:"), "{text}");
        assert!(text.ends_with(": the node said no)\n"), "{text}");
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
