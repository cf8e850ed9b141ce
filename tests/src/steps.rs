//! Named steps of a long run, each timed: a line as it starts and as it ends, and at the end
//! the table of where the time went (`cargo xtask test`, `cargo xtask demo` and the demo).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// A finished step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTime {
    /// What it did.
    pub name: String,
    /// How long it took.
    pub took: Duration,
    /// Whether it failed.
    pub failed: bool,
}

/// Steps run one after another, timed from the first until [`Steps::summary`].
#[derive(Debug)]
pub struct Steps {
    started: Instant,
    current: Option<(String, Instant)>,
    done: Vec<StepTime>,
}

impl Default for Steps {
    fn default() -> Steps {
        Steps::new()
    }
}

impl Steps {
    /// Starts the clock of the whole run.
    pub fn new() -> Steps {
        Steps { started: Instant::now(), current: None, done: Vec::new() }
    }

    /// Ends the current step, if any, and starts `name`, printing its start line.
    pub fn start(&mut self, name: &str) {
        self.finish(false);
        let clock = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!("[hour]:[minute]:[second]"))
            .unwrap_or_default();
        println!("{}", start_line(name, &clock));
        self.current = Some((name.to_string(), Instant::now()));
    }

    /// Ends the current step, if any, printing its time (and whether it failed).
    pub fn finish(&mut self, failed: bool) {
        if let Some((name, started)) = self.current.take() {
            let step = StepTime { name, took: started.elapsed(), failed };
            println!("{}", end_line(&step));
            self.done.push(step);
        }
    }

    /// Ends the current step (failed or not) and returns the table of where the time went.
    pub fn summary(&mut self, failed: bool) -> String {
        self.finish(failed);
        summary(&self.done, self.started.elapsed())
    }
}

/// `\n=== lints (06:41:07)`: a step starts, at this UTC time of day.
fn start_line(name: &str, clock: &str) -> String {
    format!("\n=== {name} ({clock})")
}

/// `=== lints: 48 s`: a step ended, after whole seconds.
fn end_line(step: &StepTime) -> String {
    format!("=== {}: {} s{}", step.name, step.took.as_secs(), failed_suffix(step.failed))
}

fn failed_suffix(failed: bool) -> &'static str {
    if failed {
        " (failed)"
    } else {
        ""
    }
}

/// The table: each step's whole seconds in a column, then the run's total.
pub fn summary(steps: &[StepTime], total: Duration) -> String {
    let mut text = String::from("\n=== where the time went\n");
    for step in steps {
        let suffix = failed_suffix(step.failed);
        let _ = writeln!(text, "{:<40} {:>6} s{suffix}", step.name, step.took.as_secs());
    }
    let _ = writeln!(text, "{:<40} {:>6} s", "total", total.as_secs());
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, secs: u64, failed: bool) -> StepTime {
        StepTime { name: name.into(), took: Duration::from_millis(secs * 1000 + 700), failed }
    }

    #[test]
    fn step_lines_name_the_step_its_start_and_its_whole_seconds() {
        assert_eq!(start_line("format", "06:41:07"), "\n=== format (06:41:07)");
        assert_eq!(end_line(&step("format", 3, false)), "=== format: 3 s");
        assert_eq!(end_line(&step("lints", 48, true)), "=== lints: 48 s (failed)");
    }

    #[test]
    fn the_summary_is_a_table_of_steps_then_the_total() {
        let steps = [step("host packages", 2, false), step("tests", 1234, true)];
        assert_eq!(
            summary(&steps, Duration::from_secs(1300)),
            "\n=== where the time went\n\
             host packages                                 2 s\n\
             tests                                      1234 s (failed)\n\
             total                                      1300 s\n"
        );
    }

    #[test]
    fn a_step_ends_when_the_next_starts_and_at_the_summary() {
        let mut steps = Steps::new();
        steps.start("one");
        steps.start("two");
        let table = steps.summary(true);
        let names: Vec<(&str, bool)> =
            steps.done.iter().map(|s| (s.name.as_str(), s.failed)).collect();
        assert_eq!(names, [("one", false), ("two", true)]);
        assert!(table.contains("\ntwo ") && table.contains(" s (failed)\ntotal "), "{table}");
    }
}
