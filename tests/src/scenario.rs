//! One QEMU scenario's run: a VM slot held for its length, and its duration printed as
//! `scenario <board>/<name>: 93.2 s` (with `(failed)` when it panicked), for people and CI.

use std::time::{Duration, Instant};

use crate::boards::Board;
use crate::vm_slots;

/// Runs `body` as the scenario `name` of `board`, once a VM slot is free.
pub fn run<T>(board: &Board, name: &str, body: impl FnOnce() -> T) -> T {
    let _slot = vm_slots::shared(board.vm_cpus).acquire();
    timed(board, name, body)
}

/// Runs `body`, which starts no VM, as the scenario `name` of `board`.
pub fn timed<T>(board: &Board, name: &str, body: impl FnOnce() -> T) -> T {
    let _report = Timed { what: format!("{}/{name}", board.name), started: Instant::now() };
    body()
}

/// Prints how long a scenario took when it ends, however it ends.
struct Timed {
    /// `<board>/<name>`.
    what: String,
    /// When it started.
    started: Instant,
}

impl Drop for Timed {
    fn drop(&mut self) {
        println!("{}", line(&self.what, self.started.elapsed(), std::thread::panicking()));
    }
}

/// The line a scenario prints when it ends.
fn line(what: &str, took: Duration, failed: bool) -> String {
    let failed = if failed { " (failed)" } else { "" };
    format!("scenario {what}: {:.1} s{failed}", took.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_scenario_and_its_seconds() {
        let took = Duration::from_millis(93_240);
        assert_eq!(
            line("generic-x86_64/pods", took, false),
            "scenario generic-x86_64/pods: 93.2 s"
        );
        assert_eq!(
            line("generic-x86_64/reboot", took, true),
            "scenario generic-x86_64/reboot: 93.2 s (failed)"
        );
    }
}
