//! Setting the system clock. An offset (how far true time is from the clock) is applied in
//! one of two ways:
//!
//! - a **step** jumps the clock: at the first sync after boot (a Raspberry Pi starts in 1970)
//!   and whenever the offset is larger than [`STEP_THRESHOLD`] (after the first sync, only
//!   as far as the [`discipline`](crate::time::discipline) lets the servers move it);
//! - a **slew** lets the kernel run the clock up to 0.05 % fast or slow until the offset is
//!   gone, so time never jumps (nor runs backwards) under running programs.
//!
//! The rule is [`Correction::for_offset`], pure; the system calls sit behind the [`Clock`]
//! trait ([`SystemClock`] is the real one), so the rule and its users are tested without
//! root. Both calls are adjtimex(2): `ADJ_SETOFFSET` steps by an offset in the kernel, with
//! no window between reading the clock and setting it (as `clock_settime(now + offset)` has);
//! `ADJ_OFFSET_SINGLESHOT` slews, as adjtime(3) does.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;

/// Offsets up to this are slewed, larger ones stepped (ntpd's and chrony's step threshold).
pub const STEP_THRESHOLD: Duration = Duration::from_millis(128);

/// A signed clock offset, in nanoseconds: how far true time is ahead of the clock
/// (negative: the clock is ahead). Covers ±292 years.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset {
    nanos: i64,
}

impl Offset {
    /// No offset.
    pub const ZERO: Offset = Offset { nanos: 0 };

    /// An offset of `nanos` nanoseconds (negative: the clock is ahead).
    pub const fn from_nanos(nanos: i64) -> Offset {
        Offset { nanos }
    }

    /// The offset in nanoseconds.
    pub const fn as_nanos(self) -> i64 {
        self.nanos
    }

    /// What takes `from` to `to` (`to - from`), saturating at ±292 years.
    pub fn between(from: SystemTime, to: SystemTime) -> Offset {
        Offset::saturating(unix_nanos(to) - unix_nanos(from))
    }

    /// How large the offset is, whichever its sign.
    pub fn magnitude(self) -> Duration {
        Duration::from_nanos(self.nanos.unsigned_abs())
    }

    /// Whether true time is behind the clock.
    pub const fn is_negative(self) -> bool {
        self.nanos < 0
    }

    /// `time` moved by the offset; `None` if that does not fit a `SystemTime`.
    pub fn applied_to(self, time: SystemTime) -> Option<SystemTime> {
        if self.is_negative() {
            time.checked_sub(self.magnitude())
        } else {
            time.checked_add(self.magnitude())
        }
    }

    /// `nanos`, clamped to what an offset holds.
    pub(crate) fn saturating(nanos: i128) -> Offset {
        Offset { nanos: nanos.clamp(i64::MIN.into(), i64::MAX.into()) as i64 }
    }

    /// Whole seconds (rounded down) and the nanoseconds above them (`0..1e9`): the form
    /// `ADJ_SETOFFSET | ADJ_NANO` takes, e.g. -1.25 s is (-2 s, 750 000 000 ns).
    fn seconds_and_nanos(self) -> (i64, i64) {
        (self.nanos.div_euclid(1_000_000_000), self.nanos.rem_euclid(1_000_000_000))
    }
}

/// `+3600.000000s`, `-0.004512s`: seconds, to the microsecond.
impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let magnitude = self.magnitude();
        let sign = if self.is_negative() { '-' } else { '+' };
        write!(f, "{sign}{}.{:06}s", magnitude.as_secs(), magnitude.subsec_micros())
    }
}

/// Nanoseconds since 1970 (negative before).
pub(crate) fn unix_nanos(time: SystemTime) -> i128 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    }
}

/// What to do about an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Correction {
    /// Jump the clock by the offset.
    Step(Offset),
    /// Let the kernel work the offset off gradually.
    Slew(Offset),
}

impl Correction {
    /// The rule: step at the first sync since boot (`first_sync`) and when the offset is
    /// larger than [`STEP_THRESHOLD`]; slew otherwise.
    pub fn for_offset(offset: Offset, first_sync: bool) -> Correction {
        if first_sync || offset.magnitude() > STEP_THRESHOLD {
            Correction::Step(offset)
        } else {
            Correction::Slew(offset)
        }
    }

    /// The offset being corrected.
    pub fn offset(self) -> Offset {
        match self {
            Correction::Step(offset) | Correction::Slew(offset) => offset,
        }
    }

    /// Makes `clock` apply the correction.
    pub fn apply(self, clock: &impl Clock) -> Result<(), ClockError> {
        match self {
            Correction::Step(offset) => clock.step(offset),
            Correction::Slew(offset) => clock.slew(offset),
        }
    }
}

/// `step +3600.000000s`, `slew -0.004512s`.
impl fmt::Display for Correction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Correction::Step(offset) => write!(f, "step {offset}"),
            Correction::Slew(offset) => write!(f, "slew {offset}"),
        }
    }
}

/// The clock could not be set.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    /// The kernel refused (`EPERM`: machined lacks `CAP_SYS_TIME`).
    #[error("{action} the clock by {offset}: {source}")]
    Refused {
        /// `stepping` or `slewing`.
        action: &'static str,
        /// The offset.
        offset: Offset,
        /// What the kernel said.
        source: Errno,
    },
    /// The offset does not fit the system call's fields (a slew of more than about 35
    /// minutes on 32-bit systems, a step of more than 68 years with a 32-bit `time_t`).
    #[error("{action} the clock by {offset}: too large an offset")]
    OutOfRange {
        /// `stepping` or `slewing`.
        action: &'static str,
        /// The offset.
        offset: Offset,
    },
}

/// A clock that can be read and corrected: the system's, or a test's.
pub trait Clock: Send + Sync {
    /// The time now.
    fn now(&self) -> SystemTime;
    /// Jumps the clock by `offset`.
    fn step(&self, offset: Offset) -> Result<(), ClockError>;
    /// Makes the kernel work `offset` off gradually (about 2 s per 1 ms of offset).
    fn slew(&self, offset: Offset) -> Result<(), ClockError>;
}

/// The system's real-time clock (`CLOCK_REALTIME`). Setting it needs `CAP_SYS_TIME`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

// The conversions are to `time_t`, `suseconds_t` and `long`: 64 bits here, 32 on armv7.
#[allow(clippy::useless_conversion)]
impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn step(&self, offset: Offset) -> Result<(), ClockError> {
        let action = "stepping";
        let out_of_range = || ClockError::OutOfRange { action, offset };
        let (seconds, nanos) = offset.seconds_and_nanos();
        let mut timex = sys::timex();
        // ADJ_NANO: the `tv_usec` field holds nanoseconds.
        timex.modes = nix::libc::ADJ_SETOFFSET | nix::libc::ADJ_NANO;
        timex.time.tv_sec = seconds.try_into().map_err(|_| out_of_range())?;
        timex.time.tv_usec = nanos.try_into().map_err(|_| out_of_range())?;
        sys::adjtimex(&mut timex).map_err(|source| ClockError::Refused { action, offset, source })
    }

    fn slew(&self, offset: Offset) -> Result<(), ClockError> {
        let action = "slewing";
        let mut timex = sys::timex();
        // In microseconds, as adjtime(3) takes it.
        timex.modes = nix::libc::ADJ_OFFSET_SINGLESHOT;
        timex.offset = (offset.as_nanos() / 1_000)
            .try_into()
            .map_err(|_| ClockError::OutOfRange { action, offset })?;
        sys::adjtimex(&mut timex).map_err(|source| ClockError::Refused { action, offset, source })
    }
}

/// adjtimex(2), which neither nix nor rustix wraps: the only unsafe code in machined.
#[allow(unsafe_code)]
mod sys {
    use nix::errno::Errno;
    use nix::libc;

    /// A `struct timex` with every field zero (no mode bits: changes nothing).
    pub(super) fn timex() -> libc::timex {
        // SAFETY: `timex` is plain integers and padding; all-zero bytes are a valid value
        // (its private padding fields leave no other way to build one).
        unsafe { std::mem::zeroed() }
    }

    /// Calls adjtimex(2) with `timex`; its clock-state result is of no interest here.
    pub(super) fn adjtimex(timex: &mut libc::timex) -> Result<(), Errno> {
        // SAFETY: `timex` is a valid, exclusively borrowed `struct timex` for the call; the
        // kernel reads and writes only within it.
        let state = unsafe { libc::adjtimex(timex) };
        Errno::result(state).map(drop)
    }
}

/// A clock for tests: starts at a given time, steps move it, slews are recorded.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::Mutex;
    use std::time::SystemTime;

    use super::{Clock, ClockError, Offset};

    /// See the module.
    pub(crate) struct FakeClock {
        pub(crate) now: Mutex<SystemTime>,
        pub(crate) steps: Mutex<Vec<Offset>>,
        pub(crate) slews: Mutex<Vec<Offset>>,
    }

    impl FakeClock {
        pub(crate) fn at(now: SystemTime) -> FakeClock {
            FakeClock { now: Mutex::new(now), steps: Mutex::default(), slews: Mutex::default() }
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> SystemTime {
            *self.now.lock().unwrap()
        }

        fn step(&self, offset: Offset) -> Result<(), ClockError> {
            let mut now = self.now.lock().unwrap();
            *now = offset.applied_to(*now).expect("a step within SystemTime");
            self.steps.lock().unwrap().push(offset);
            Ok(())
        }

        fn slew(&self, offset: Offset) -> Result<(), ClockError> {
            self.slews.lock().unwrap().push(offset);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeClock;
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn large_offsets_and_the_first_sync_step_small_ones_slew() {
        let at_threshold = Offset::from_nanos(128 * MS);
        let above = Offset::from_nanos(128 * MS + 1);
        assert_eq!(Correction::for_offset(at_threshold, false), Correction::Slew(at_threshold));
        assert_eq!(Correction::for_offset(above, false), Correction::Step(above));
        let behind = Offset::from_nanos(-129 * MS);
        assert_eq!(Correction::for_offset(behind, false), Correction::Step(behind));
        let small = Offset::from_nanos(-3 * MS);
        assert_eq!(Correction::for_offset(small, false), Correction::Slew(small));
        assert_eq!(Correction::for_offset(small, true), Correction::Step(small));
        assert_eq!(Correction::for_offset(Offset::ZERO, false), Correction::Slew(Offset::ZERO));
    }

    #[test]
    fn corrections_reach_the_clock() {
        let start = UNIX_EPOCH + Duration::from_secs(10);
        let clock = FakeClock::at(start);
        let hour = Offset::from_nanos(3_600_000 * MS);
        Correction::for_offset(hour, false).apply(&clock).unwrap();
        assert_eq!(clock.now(), start + Duration::from_secs(3600));
        let small = Offset::from_nanos(5 * MS);
        Correction::for_offset(small, false).apply(&clock).unwrap();
        assert_eq!(*clock.slews.lock().unwrap(), [small]);
        assert_eq!(*clock.steps.lock().unwrap(), [hour]);
    }

    #[test]
    fn offsets_measure_and_print_signed() {
        let a = UNIX_EPOCH + Duration::from_secs(100);
        let b = UNIX_EPOCH + Duration::from_millis(96_500);
        assert_eq!(Offset::between(a, b), Offset::from_nanos(-3500 * MS));
        assert_eq!(Offset::between(b, a).magnitude(), Duration::from_millis(3500));
        assert_eq!(Offset::between(a, b).applied_to(a), Some(b));
        assert_eq!(Offset::between(a, b).to_string(), "-3.500000s");
        assert_eq!(Offset::from_nanos(3_600_000_001_999).to_string(), "+3600.000001s");
        assert_eq!(Correction::Slew(Offset::ZERO).to_string(), "slew +0.000000s");
        // Before 1970 too (a clock can be set there).
        let before = UNIX_EPOCH - Duration::from_secs(2);
        assert_eq!(Offset::between(before, a), Offset::from_nanos(102_000 * MS));
        assert_eq!(Offset::saturating(i128::MAX).as_nanos(), i64::MAX);
    }

    #[test]
    fn steps_split_into_whole_seconds_and_positive_nanoseconds() {
        assert_eq!(Offset::from_nanos(-1_250 * MS).seconds_and_nanos(), (-2, 750_000_000));
        assert_eq!(Offset::from_nanos(1_250 * MS).seconds_and_nanos(), (1, 250_000_000));
        assert_eq!(Offset::from_nanos(-1).seconds_and_nanos(), (-1, 999_999_999));
        assert_eq!(Offset::ZERO.seconds_and_nanos(), (0, 0));
    }
}
