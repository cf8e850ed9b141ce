//! Which SNTP samples may move the clock, and which times may become the STATE floor. SNTP is
//! unauthenticated: any one server (or whoever answers in its name) can say any time. So:
//!
//! - **The first sync** since boot steps the clock to the first server that answers, as it
//!   always did: the clock is then a floor's time or 1970, and the image's floor (checked by
//!   [`sync`](crate::time::sync)) refuses the past. No upper bound: one loose enough for a
//!   node that runs an old image for years still lets a liar pick a time at which every
//!   certificate has expired; only authenticated time (NTS) closes that.
//! - **After it**, one server alone may move the clock by at most [`SINGLE_SERVER_BOUND`]
//!   per sync, plus [`DRIFT_RATE`] of the time since the clock was last set (so that a
//!   node whose network was down for a day can still be corrected by its one server): up to
//!   [`STEP_THRESHOLD`] slewed, beyond that stepped (a slew of a second takes the kernel
//!   half an hour, longer than a poll, and a step of a second is harmless to
//!   certificates). A larger correction needs at least [`AGREEING_SERVERS`]
//!   distinct configured servers (different names *and* different addresses) whose offsets
//!   agree within [`AGREEMENT`]. Otherwise the step is refused ([`StepRefused`] says who
//!   said what); a server that agrees with the clock is still followed, so one liar cannot
//!   stop the others from keeping the clock right.
//! - **The floor** is recorded only from a confirmed time ([`ConfirmedTime`]): a sync that
//!   moved the clock by no more than one server may alone (the clock already agreed with
//!   a server; at the first sync, by at most [`SINGLE_SERVER_BOUND`]), or a
//!   step that distinct servers agreed on. A first-sync step by one server is not confirmed:
//!   it is recorded at the next sync that agrees with it, so a lie told once at boot does
//!   not outlive a reboot.
//!
//! One server can still walk the clock by that allowance per poll (about 1.5 s per
//! 15-minute poll, about two minutes a day); and a persistent liar on the path of every
//! configured server (no NTS) can still set any time.
//!
//! [`Discipline`] is a value: its verbs decide and never touch the clock or the disk.
//!
//! [`STEP_THRESHOLD`]: crate::time::clock::STEP_THRESHOLD

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use crate::time::clock::{Correction, Offset};
use crate::time::floor::{ConfirmedTime, RECORD_INTERVAL};
use crate::time::sntp::Sample;

/// The most one server alone may move a synchronised clock by, per sync, besides
/// [`DRIFT_RATE`].
pub const SINGLE_SERVER_BOUND: Duration = Duration::from_secs(1);
/// How fast, at most, an unsynchronised clock is taken to drift, in parts per million:
/// what the kernel slews at most, five times a poor crystal's 100 ppm.
pub const DRIFT_RATE: u32 = 500;
/// How many distinct servers must agree on a larger correction.
pub const AGREEING_SERVERS: usize = 2;
/// How far apart two servers' offsets may be and still agree: well above what asymmetric
/// routes give honest servers (at most half a round trip), well below any useful lie.
pub const AGREEMENT: Duration = Duration::from_millis(500);

/// A sample and the server, as configured, that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The server's name as `machine.time.servers` gives it.
    pub server: String,
    /// What it measured.
    pub sample: Sample,
}

impl Reading {
    /// Whether `self` and `other` come from different servers: different names and
    /// different addresses (two ports of one host are one host).
    fn distinct_from(&self, other: &Reading) -> bool {
        self.server.trim() != other.server.trim()
            && self.sample.server.ip() != other.sample.server.ip()
    }

    fn within(&self, allowed: Duration) -> bool {
        self.sample.offset.magnitude() <= allowed
    }

    fn agrees_with(&self, offset: Offset) -> bool {
        let apart = i128::from(self.sample.offset.as_nanos()) - i128::from(offset.as_nanos());
        apart.unsigned_abs() <= AGREEMENT.as_nanos()
    }
}

/// `pool.example (192.0.2.1:123) says +0.004512s`.
impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}) says {}", self.server, self.sample.server, self.sample.offset)
    }
}

/// A step after the first sync that one server wanted and no other confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused to step the clock: time server {wanted}, and after the first sync one server \
     alone may move it by at most {} now ({} and {DRIFT_RATE} ppm of the time since it was \
     last set); more needs {AGREEING_SERVERS} distinct servers agreeing within {}; {others}",
    humantime::format_duration(*allowed),
    humantime::format_duration(SINGLE_SERVER_BOUND),
    humantime::format_duration(AGREEMENT)
)]
pub struct StepRefused {
    /// The server that wanted the step.
    pub wanted: Reading,
    /// What one server alone could have moved the clock by.
    pub allowed: Duration,
    /// What the other servers said.
    pub others: Others,
}

/// What the other servers said about a step one wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Others {
    /// No other server is configured.
    NoneConfigured,
    /// None of the others answered.
    NoneAnswered,
    /// These answered, and none agreed enough.
    Disagree(Vec<Reading>),
}

impl fmt::Display for Others {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Others::NoneConfigured => {
                write!(f, "it is the only server configured (machine.time.servers)")
            }
            Others::NoneAnswered => write!(f, "no other configured server answered"),
            Others::Disagree(readings) => {
                let said: Vec<String> = readings.iter().map(ToString::to_string).collect();
                write!(f, "no other distinct server agrees: {}", said.join(", "))
            }
        }
    }
}

/// What one sync does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The correction to make and the reading it follows; `None`: leave the clock alone.
    pub correction: Option<(Correction, Reading)>,
    /// Whether the clock's time after the correction is confirmed (see the module).
    pub confirmed: bool,
    /// A step that was refused, even if another server's correction was made instead.
    pub refused: Option<StepRefused>,
}

/// The clock's discipline across syncs: whether it has been synchronised, and when the
/// floor was last recorded.
#[derive(Debug, Clone, Default)]
pub struct Discipline {
    /// When a correction was last made (`None`: not since boot).
    last_set: Option<Instant>,
    /// A step was made and no confirmed time has been recorded since.
    step_unrecorded: bool,
    recorded_at: Option<Instant>,
}

impl Discipline {
    /// A clock not synchronised since boot.
    pub fn new() -> Discipline {
        Discipline::default()
    }

    /// Whether a correction has been made since boot.
    pub fn is_synchronised(&self) -> bool {
        self.last_set.is_some()
    }

    /// What one server alone may move the clock by at `instant`.
    pub fn allowed(&self, instant: Instant) -> Duration {
        let since = self.last_set.map_or(Duration::ZERO, |at| instant.duration_since(at));
        SINGLE_SERVER_BOUND + since * DRIFT_RATE / 1_000_000
    }

    /// What to do with the first reading of a sync (the first server that answered);
    /// `None` when it wants more than one server may make alone: hear the other configured
    /// servers and call [`Discipline::decide_with_others`].
    pub fn decide(&self, first: &Reading, instant: Instant) -> Option<Decision> {
        if !self.is_synchronised() {
            let correction = Correction::for_offset(first.sample.offset, true);
            return Some(Decision {
                correction: Some((correction, first.clone())),
                confirmed: first.within(SINGLE_SERVER_BOUND),
                refused: None,
            });
        }
        first.within(self.allowed(instant)).then(|| Self::follow(first, true, None))
    }

    /// What to do at `instant` when the `first` reading wants more than one server may
    /// make alone and the other configured servers (of `configured`, `first`'s included)
    /// said `others`. The first reading, in order, that one server may follow alone or
    /// that distinct servers agree with is followed.
    pub fn decide_with_others(
        &self,
        first: &Reading,
        others: &[Reading],
        configured: usize,
        instant: Instant,
    ) -> Decision {
        let allowed = self.allowed(instant);
        let refused = StepRefused {
            wanted: first.clone(),
            allowed,
            others: match (configured, others) {
                (0 | 1, _) => Others::NoneConfigured,
                (_, []) => Others::NoneAnswered,
                _ => Others::Disagree(others.to_vec()),
            },
        };
        let all: Vec<&Reading> = std::iter::once(first).chain(others).collect();
        let followed = all.iter().position(|reading| {
            reading.within(allowed)
                || Self::agreeing(reading.sample.offset, &all) >= AGREEING_SERVERS
        });
        match followed {
            Some(0) => Self::follow(first, true, None),
            Some(at) => Self::follow(all[at], true, Some(refused)),
            None => Decision { correction: None, confirmed: false, refused: Some(refused) },
        }
    }

    /// Notes that `decision`'s correction reached the clock at `instant`.
    pub fn applied(&mut self, decision: &Decision, instant: Instant) {
        if let Some((correction, _)) = &decision.correction {
            self.last_set = Some(instant);
            self.step_unrecorded |= matches!(correction, Correction::Step(_));
        }
    }

    /// The time to record as the floor after `decision` was applied, the clock then saying
    /// `now` (at `instant`): only a confirmed time, and at most every [`RECORD_INTERVAL`]
    /// unless a step has not been recorded yet (the next boot must not start before it).
    pub fn floor_due(
        &self,
        decision: &Decision,
        now: SystemTime,
        instant: Instant,
    ) -> Option<ConfirmedTime> {
        let due = self.step_unrecorded
            || self.recorded_at.is_none_or(|at| instant.duration_since(at) >= RECORD_INTERVAL);
        (decision.confirmed && due).then(|| ConfirmedTime::new(now))
    }

    /// Notes that the floor was recorded at `instant`.
    pub fn floor_recorded(&mut self, instant: Instant) {
        self.recorded_at = Some(instant);
        self.step_unrecorded = false;
    }

    fn follow(reading: &Reading, confirmed: bool, refused: Option<StepRefused>) -> Decision {
        let correction = Correction::for_offset(reading.sample.offset, false);
        Decision { correction: Some((correction, reading.clone())), confirmed, refused }
    }

    /// How many distinct servers among `readings` agree on `offset`.
    fn agreeing(offset: Offset, readings: &[&Reading]) -> usize {
        let mut distinct: Vec<&Reading> = Vec::new();
        for reading in readings.iter().filter(|reading| reading.agrees_with(offset)) {
            if distinct.iter().all(|kept| kept.distinct_from(reading)) {
                distinct.push(reading);
            }
        }
        distinct.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::floor::RECORD_INTERVAL;

    const MS: i64 = 1_000_000;
    const SECOND: i64 = 1_000 * MS;
    /// From 2026 to 2100.
    const TO_2100: i64 = (4_102_444_800 - 1_767_225_600) * SECOND;

    fn reading(server: &str, address: &str, offset_nanos: i64) -> Reading {
        Reading {
            server: server.into(),
            sample: Sample {
                server: address.parse().unwrap(),
                offset: Offset::from_nanos(offset_nanos),
                delay: Duration::from_millis(20),
                stratum: 2,
            },
        }
    }

    fn a(offset_nanos: i64) -> Reading {
        reading("a.example", "192.0.2.1:123", offset_nanos)
    }

    fn b(offset_nanos: i64) -> Reading {
        reading("b.example", "192.0.2.2:123", offset_nanos)
    }

    /// A discipline past its first sync, made at `t0`.
    fn synchronised(t0: Instant) -> Discipline {
        let mut discipline = Discipline::new();
        let first = discipline.decide(&a(3600 * SECOND), t0).unwrap();
        discipline.applied(&first, t0);
        discipline
    }

    fn correction(decision: &Decision) -> Option<Correction> {
        decision.correction.as_ref().map(|(correction, _)| *correction)
    }

    #[test]
    fn the_first_sync_steps_to_one_server_unconfirmed() {
        let (discipline, t0) = (Discipline::new(), Instant::now());
        let decision = discipline.decide(&a(TO_2100), t0).unwrap();
        let step = Correction::Step(Offset::from_nanos(TO_2100));
        assert_eq!(decision.correction, Some((step, a(TO_2100))));
        assert!(!decision.confirmed, "one server's word is not a floor");
        assert_eq!(decision.refused, None);
        // A clock that already agreed with the server (an RTC) is confirmed by it.
        let decision = discipline.decide(&a(-3 * MS), t0).unwrap();
        assert_eq!(correction(&decision), Some(Correction::Step(Offset::from_nanos(-3 * MS))));
        assert!(decision.confirmed);
    }

    #[test]
    fn small_drift_is_followed_from_one_server() {
        let t0 = Instant::now();
        let discipline = synchronised(t0);
        let small = Offset::from_nanos(-4 * MS);
        let decision = discipline.decide(&a(-4 * MS), t0).unwrap();
        assert_eq!(correction(&decision), Some(Correction::Slew(small)));
        assert!(decision.confirmed);
        // Up to the bound, stepped.
        let decision = discipline.decide(&a(SECOND), t0).unwrap();
        assert_eq!(correction(&decision), Some(Correction::Step(Offset::from_nanos(SECOND))));
        assert_eq!(discipline.decide(&a(SECOND + 1), t0), None);
        assert_eq!(discipline.decide(&a(-SECOND - 1), t0), None);
    }

    #[test]
    fn one_server_alone_may_correct_more_the_longer_since_the_last_sync() {
        let t0 = Instant::now();
        let discipline = synchronised(t0);
        // A day without a sync (the network was down): 1 s and 43.2 s of drift.
        let day = t0 + Duration::from_secs(86_400);
        assert_eq!(discipline.allowed(day), Duration::from_millis(44_200));
        let decision = discipline.decide(&a(-44 * SECOND), day).unwrap();
        assert_eq!(correction(&decision), Some(Correction::Step(Offset::from_nanos(-44 * SECOND))));
        assert!(decision.confirmed);
        assert_eq!(discipline.decide(&a(45 * SECOND), day), None);
        let refused = discipline.decide_with_others(&a(45 * SECOND), &[], 1, day).refused.unwrap();
        assert_eq!(refused.allowed, Duration::from_millis(44_200));
        assert!(refused.to_string().contains("at most 44s 200ms now"), "{refused}");
        // Each correction starts the count again.
        let mut discipline = discipline;
        discipline.applied(&decision, day);
        assert_eq!(discipline.decide(&a(2 * SECOND), day + Duration::from_secs(900)), None);
    }

    #[test]
    fn one_server_alone_cannot_jump_the_clock() {
        let t0 = Instant::now();
        let discipline = synchronised(t0);
        assert_eq!(discipline.decide(&a(TO_2100), t0), None);
        let decision = discipline.decide_with_others(&a(TO_2100), &[], 1, t0);
        assert_eq!((decision.correction, decision.confirmed), (None, false));
        let refused = decision.refused.unwrap();
        assert_eq!(refused.others, Others::NoneConfigured);
        assert_eq!(
            refused.to_string(),
            "refused to step the clock: time server a.example (192.0.2.1:123) says \
             +2335219200.000000s, and after the first sync one server alone may move it by at \
             most 1s now (1s and 500 ppm of the time since it was last set); more needs 2 \
             distinct servers agreeing within 500ms; it is the only server configured \
             (machine.time.servers)"
        );
        let decision = discipline.decide_with_others(&a(TO_2100), &[], 3, t0);
        assert_eq!(decision.refused.unwrap().others, Others::NoneAnswered);
    }

    #[test]
    fn two_distinct_servers_that_agree_step_the_clock() {
        let t0 = Instant::now();
        let discipline = synchronised(t0);
        let decision = discipline.decide_with_others(&a(TO_2100), &[b(TO_2100 + 400 * MS)], 2, t0);
        let step = Correction::Step(Offset::from_nanos(TO_2100));
        assert_eq!(decision.correction, Some((step, a(TO_2100))));
        assert!(decision.confirmed);
        assert_eq!(decision.refused, None);
        // Two others may outvote the first.
        let c = reading("c.example", "192.0.2.3:123", -7200 * SECOND);
        let decision =
            discipline.decide_with_others(&a(TO_2100), &[b(-7200 * SECOND), c.clone()], 3, t0);
        assert_eq!(
            correction(&decision),
            Some(Correction::Step(Offset::from_nanos(-7200 * SECOND)))
        );
        assert!(decision.confirmed && decision.refused.is_some());
    }

    #[test]
    fn servers_that_disagree_or_are_not_distinct_are_refused() {
        let t0 = Instant::now();
        let discipline = synchronised(t0);
        // 600 ms apart.
        let decision = discipline.decide_with_others(&a(TO_2100), &[b(TO_2100 + 600 * MS)], 2, t0);
        assert_eq!((decision.correction, decision.confirmed), (None, false));
        let refused = decision.refused.unwrap();
        assert_eq!(refused.others, Others::Disagree(vec![b(TO_2100 + 600 * MS)]));
        assert!(
            refused.to_string().ends_with(
                "no other distinct server agrees: b.example (192.0.2.2:123) says \
                 +2335219200.600000s"
            ),
            "{refused}"
        );
        // One name twice, or two names for one address (another port): one server.
        for twin in [
            reading("a.example", "192.0.2.9:123", TO_2100),
            reading("b.example", "192.0.2.1:1123", TO_2100),
        ] {
            let decision =
                discipline.decide_with_others(&a(TO_2100), std::slice::from_ref(&twin), 2, t0);
            assert_eq!(decision.correction, None, "{twin}");
        }
    }

    #[test]
    fn a_server_that_agrees_with_the_clock_outvotes_a_liar() {
        let t0 = Instant::now();
        let discipline = synchronised(t0);
        let decision = discipline.decide_with_others(&a(TO_2100), &[b(3 * MS)], 2, t0);
        assert_eq!(
            decision.correction,
            Some((Correction::Slew(Offset::from_nanos(3 * MS)), b(3 * MS)))
        );
        assert!(decision.confirmed);
        let refused = decision.refused.expect("the liar is reported");
        assert_eq!(refused.wanted, a(TO_2100));
    }

    #[test]
    fn the_floor_is_recorded_only_from_a_confirmed_time() {
        let t0 = Instant::now();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let mut discipline = Discipline::new();
        // The first sync's step by one server: not recorded.
        let first = discipline.decide(&a(3600 * SECOND), t0).unwrap();
        discipline.applied(&first, t0);
        assert_eq!(discipline.floor_due(&first, now, t0), None);
        // A refused step: not recorded.
        let refused = discipline.decide_with_others(&a(TO_2100), &[], 1, t0);
        discipline.applied(&refused, t0);
        assert_eq!(discipline.floor_due(&refused, now, t0), None);
        // The next sync agrees with the clock: confirmed, and the step is recorded at once.
        let agrees = discipline.decide(&a(2 * MS), t0).unwrap();
        discipline.applied(&agrees, t0);
        assert_eq!(discipline.floor_due(&agrees, now, t0), Some(ConfirmedTime::new(now)));
        discipline.floor_recorded(t0);
        // Then at most every RECORD_INTERVAL...
        assert_eq!(discipline.floor_due(&agrees, now, t0 + Duration::from_secs(60)), None);
        let later = t0 + RECORD_INTERVAL;
        assert_eq!(discipline.floor_due(&agrees, now, later), Some(ConfirmedTime::new(now)));
        // ... except after an agreed step, recorded at once.
        let agreed = discipline.decide_with_others(&a(TO_2100), &[b(TO_2100)], 2, t0);
        discipline.applied(&agreed, t0);
        let soon = t0 + Duration::from_secs(61);
        assert_eq!(discipline.floor_due(&agreed, now, soon), Some(ConfirmedTime::new(now)));
    }
}
