//! The boot bench's figures: each measure's runs, their minimum and median, the median's ratio
//! to the floor's (the trivial init), kernel starts, and issue 19's goals with PASS or MISS,
//! as a table. Figures, never assertions: TCG's speed varies with the host's load.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// What one row of the table times, each from QEMU's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Measure {
    /// The image's kernel and initramfs with a trivial `/init`, booted directly: the floor.
    TrivialInit,
    /// A second boot (STATE and EPHEMERAL made) until `ctl version` answers in maintenance mode.
    MaintenanceApi,
    /// A configured node's boot until `ctl version` answers over mTLS, configured.
    ConfiguredApi,
    /// A configured node's boot until every configured pod is Ready.
    PodsReady,
    /// A fresh disk's first boot until `ctl version` answers in maintenance mode.
    FirstBoot,
    /// A second boot to the maintenance API as a user's VM boots: through the board's firmware
    /// and bootloader (OVMF and systemd-boot), not directly as the others.
    FirmwareMaintenanceApi,
}

/// A goal: at most `factor` times the floor's median plus `slack`, and with
/// `one_kernel_start`, a single kernel start in every run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goal {
    /// Times the floor.
    pub factor: f64,
    /// Added to that.
    pub slack: Duration,
    /// Whether every run must start the kernel once only.
    pub one_kernel_start: bool,
}

impl Measure {
    /// Every measure, in the table's order.
    pub const ALL: [Measure; 6] = [
        Measure::TrivialInit,
        Measure::MaintenanceApi,
        Measure::ConfiguredApi,
        Measure::PodsReady,
        Measure::FirstBoot,
        Measure::FirmwareMaintenanceApi,
    ];

    /// The row's label.
    pub fn label(self) -> &'static str {
        match self {
            Measure::TrivialInit => "(a) trivial init, direct kernel boot",
            Measure::MaintenanceApi => "(b) second boot to maintenance API",
            Measure::ConfiguredApi => "(c) configured boot to mTLS API",
            Measure::PodsReady => "(d) configured boot to pods Ready",
            Measure::FirstBoot => "(e) first boot to maintenance API",
            Measure::FirmwareMaintenanceApi => "(f) (b) through the firmware",
        }
    }

    /// Issue 19's goal for it, if it has one.
    pub fn goal(self) -> Option<Goal> {
        let goal = |factor, one_kernel_start| Goal {
            factor,
            slack: Duration::from_secs(1),
            one_kernel_start,
        };
        match self {
            Measure::TrivialInit | Measure::ConfiguredApi | Measure::FirmwareMaintenanceApi => None,
            Measure::MaintenanceApi => Some(goal(1.5, false)),
            Measure::PodsReady => Some(goal(2.5, false)),
            Measure::FirstBoot => Some(goal(2.0, true)),
        }
    }
}

/// One successful run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// From QEMU's start until it was there.
    pub took: Duration,
    /// How many times the kernel started until then.
    pub kernel_starts: usize,
}

/// The runs of every measure, and how many failed.
#[derive(Debug, Default)]
pub struct Figures {
    runs: BTreeMap<Measure, Vec<Run>>,
    failed: BTreeMap<Measure, usize>,
}

impl Figures {
    /// Adds a run of `measure`.
    pub fn record(&mut self, measure: Measure, run: Run) {
        self.runs.entry(measure).or_default().push(run);
    }

    /// Counts a run of `measure` that did not get there.
    pub fn record_failure(&mut self, measure: Measure) {
        *self.failed.entry(measure).or_default() += 1;
    }

    /// The median of `measure`'s runs, if it has any.
    pub fn median(&self, measure: Measure) -> Option<Duration> {
        let mut times: Vec<Duration> = self.runs.get(&measure)?.iter().map(|r| r.took).collect();
        times.sort();
        let middle = times.len() / 2;
        match times.len() {
            0 => None,
            n if n % 2 == 1 => Some(times[middle]),
            _ => Some((times[middle - 1] + times[middle]) / 2),
        }
    }

    /// The table: a row per measure with its runs, minimum, median, ratio to the floor,
    /// kernel starts (the most any run had), goal and verdict.
    pub fn table(&self) -> String {
        let floor = self.median(Measure::TrivialInit);
        let mut table = format!(
            "| {:<38} | runs | min | median | × (a) | kernel starts | goal | |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n",
            "boot"
        );
        for measure in Measure::ALL {
            let runs = self.runs.get(&measure).map_or(&[][..], Vec::as_slice);
            let failed = self.failed.get(&measure).copied().unwrap_or(0);
            let count = match failed {
                0 => runs.len().to_string(),
                _ => format!("{} ({failed} failed)", runs.len()),
            };
            let (min, median, ratio, starts) = match (self.median(measure), runs) {
                (Some(median), runs) => {
                    let min = runs.iter().map(|r| r.took).min().unwrap_or(median);
                    let most_starts = runs.iter().map(|r| r.kernel_starts).max().unwrap_or(0);
                    let ratio = floor.map_or("?".to_string(), |floor| {
                        format!("{:.2}", median.as_secs_f64() / floor.as_secs_f64())
                    });
                    (seconds(min), seconds(median), ratio, most_starts.to_string())
                }
                (None, _) => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            let (goal, verdict) = match measure.goal() {
                Some(goal) => (goal_text(goal, floor), self.verdict(measure, goal, floor)),
                None => ("-".to_string(), ""),
            };
            let _ = writeln!(
                table,
                "| {:<38} | {count} | {min} | {median} | {ratio} | {starts} | {goal} | {verdict} |",
                measure.label()
            );
        }
        table
    }

    /// PASS when the median is within the goal (and every run started the kernel once, when
    /// the goal says so), MISS otherwise, `?` without the floor or runs.
    fn verdict(&self, measure: Measure, goal: Goal, floor: Option<Duration>) -> &'static str {
        let (Some(median), Some(floor)) = (self.median(measure), floor) else { return "?" };
        let starts_ok =
            !goal.one_kernel_start || self.runs[&measure].iter().all(|r| r.kernel_starts == 1);
        if median <= limit(goal, floor) && starts_ok {
            "PASS"
        } else {
            "MISS"
        }
    }
}

/// The longest a measure may take under `goal` when the floor takes `floor`.
fn limit(goal: Goal, floor: Duration) -> Duration {
    floor.mul_f64(goal.factor) + goal.slack
}

fn goal_text(goal: Goal, floor: Option<Duration>) -> String {
    let mut text = format!("≤ {}× (a) + {} s", goal.factor, goal.slack.as_secs());
    if let Some(floor) = floor {
        let _ = write!(text, " = {}", seconds(limit(goal, floor)));
    }
    if goal.one_kernel_start {
        text.push_str(", 1 kernel start");
    }
    text
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// How many times the kernel started on `console`: its banner, `Linux version ...`, once
/// per start.
pub fn kernel_starts(console: &str) -> usize {
    console.lines().filter(|line| line.contains("Linux version ")).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's row whose label starts with `label`.
    fn row_of(table: &str, label: &str) -> String {
        table.lines().find(|l| l.starts_with(&format!("| {label}"))).unwrap().to_string()
    }

    fn run(millis: u64, kernel_starts: usize) -> Run {
        Run { took: Duration::from_millis(millis), kernel_starts }
    }

    #[test]
    fn the_median_is_the_middle_run_or_the_mean_of_the_two_middle_ones() {
        let mut figures = Figures::default();
        assert_eq!(figures.median(Measure::TrivialInit), None);
        for millis in [5000, 3000, 4000] {
            figures.record(Measure::TrivialInit, run(millis, 1));
        }
        assert_eq!(figures.median(Measure::TrivialInit), Some(Duration::from_secs(4)));
        figures.record(Measure::TrivialInit, run(9000, 1));
        assert_eq!(figures.median(Measure::TrivialInit), Some(Duration::from_millis(4500)));
    }

    #[test]
    fn goals_are_the_issues() {
        assert_eq!(Measure::MaintenanceApi.goal().unwrap().factor, 1.5);
        assert_eq!(Measure::PodsReady.goal().unwrap().factor, 2.5);
        let first = Measure::FirstBoot.goal().unwrap();
        assert_eq!((first.factor, first.one_kernel_start), (2.0, true));
        assert_eq!(first.slack, Duration::from_secs(1));
        assert_eq!(Measure::ConfiguredApi.goal(), None);
        assert_eq!(limit(first, Duration::from_secs(3)), Duration::from_secs(7));
    }

    #[test]
    fn the_table_gives_ratios_and_verdicts() {
        let mut figures = Figures::default();
        figures.record(Measure::TrivialInit, run(4000, 1));
        // Limit 1.5 × 4 + 1 = 7 s.
        figures.record(Measure::MaintenanceApi, run(7000, 1));
        // Limit 2.5 × 4 + 1 = 11 s.
        figures.record(Measure::PodsReady, run(12000, 1));
        // Within 2 × 4 + 1 = 9 s, but two kernel starts.
        figures.record(Measure::FirstBoot, run(8000, 2));
        figures.record(Measure::ConfiguredApi, run(6000, 1));
        figures.record_failure(Measure::ConfiguredApi);
        let table = figures.table();
        let row = |label: &str| row_of(&table, label);
        assert_eq!(
            row("(a)"),
            "| (a) trivial init, direct kernel boot   | 1 | 4.0 s | 4.0 s | 1.00 | 1 | - |  |"
        );
        assert!(row("(b)").ends_with("| 1.75 | 1 | ≤ 1.5× (a) + 1 s = 7.0 s | PASS |"), "{table}");
        assert!(row("(c)").contains("| 1 (1 failed) | 6.0 s |"), "{table}");
        assert!(row("(d)").ends_with("| 3.00 | 1 | ≤ 2.5× (a) + 1 s = 11.0 s | MISS |"), "{table}");
        assert!(
            row("(e)").ends_with("| 2 | ≤ 2× (a) + 1 s = 9.0 s, 1 kernel start | MISS |"),
            "{table}"
        );
    }

    #[test]
    fn without_the_floor_or_runs_nothing_is_judged() {
        let mut figures = Figures::default();
        figures.record(Measure::MaintenanceApi, run(7000, 1));
        figures.record_failure(Measure::PodsReady);
        let table = figures.table();
        let row = |label: &str| row_of(&table, label);
        assert!(
            row("(b)").ends_with("| 7.0 s | 7.0 s | ? | 1 | ≤ 1.5× (a) + 1 s | ? |"),
            "{table}"
        );
        assert!(row("(d)").contains("| 0 (1 failed) | - | - | - | - |"), "{table}");
    }

    #[test]
    fn kernel_starts_are_counted_from_the_banner() {
        let console = "Linux version 6.12.1 (debian)\nmachined[stage1]: rebooting\n\
                       [    0.000000] Linux version 6.12.1 (debian)\nAPI listening\n";
        assert_eq!(kernel_starts(console), 2);
        assert_eq!(kernel_starts("no kernel here\n"), 0);
    }
}
