//! Time floors: times the clock is known not to be earlier than. A node without a real-time
//! clock boots in 1970; raised to a floor at boot, it is at worst a little in the past
//! (certificates it issues are valid, clients' certificates are not "not yet valid") until
//! SNTP corrects it. Two floors:
//!
//! - the last known-good time, kept on STATE ([`NodeLayout::time_floor_path`]): recorded
//!   only from a [`ConfirmedTime`] (one the servers confirmed, see
//!   [`discipline`](crate::time::discipline)): at once after a confirmed step, otherwise at
//!   most every [`RECORD_INTERVAL`], by an atomic replace (small, rare writes: SD cards
//!   wear). A time one server alone stepped the clock to is never recorded: it would
//!   outlive a reboot;
//! - the image's build time, written by image-builder at
//!   [`cairn_api::image::TIME_FLOOR_PATH`] ([`NodeLayout::image_time_floor_path`]).
//!
//! Both files hold decimal seconds since 1970 (UTC) and a newline, e.g. `1767225600\n`.
//!
//! [`NodeLayout::time_floor_path`]: crate::files::layout::NodeLayout::time_floor_path
//! [`NodeLayout::image_time_floor_path`]: crate::files::layout::NodeLayout::image_time_floor_path

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::time::clock::{Clock, ClockError, Offset};

/// How often, at most, a synchronised node records the time on STATE (a step is recorded at
/// once).
pub const RECORD_INTERVAL: Duration = Duration::from_secs(3600);

/// A time the servers confirmed, the only kind [`record`] takes. Made only by
/// [`Discipline::floor_due`](crate::time::discipline::Discipline::floor_due).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmedTime(SystemTime);

impl ConfirmedTime {
    pub(in crate::time) fn new(time: SystemTime) -> ConfirmedTime {
        ConfirmedTime(time)
    }

    /// The time.
    pub fn time(self) -> SystemTime {
        self.0
    }
}

/// A time the clock cannot be earlier than, and the file it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    /// The time.
    pub time: SystemTime,
    /// Where it was read.
    pub source: PathBuf,
}

/// A floor could not be read, recorded or applied.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    /// The file exists but could not be read.
    #[error("reading the time floor {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The file does not hold a time floor.
    #[error("{path}: {text:?} is not a time floor (decimal seconds since 1970)")]
    Format {
        /// The file.
        path: PathBuf,
        /// What it holds (its first 64 bytes).
        text: String,
    },
    /// The floor could not be recorded.
    #[error("recording the time floor {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The clock could not be raised to the floor.
    #[error("raising the clock to the time floor from {path}: {source}")]
    Raise {
        /// The floor's file.
        path: PathBuf,
        /// What failed.
        source: ClockError,
    },
    /// A correction would have set the clock below a floor.
    #[error(
        "a correction by {offset} would set the clock to {}, below the time floor {} from \
         {path}: refused",
        show(*target),
        show(*floor)
    )]
    BelowFloor {
        /// The correction's offset.
        offset: Offset,
        /// The time the clock would have been set to.
        target: SystemTime,
        /// The floor.
        floor: SystemTime,
        /// The floor's file.
        path: PathBuf,
    },
}

impl Floor {
    /// Reads the floor at `path`; `None` when there is no such file (a first boot, or an
    /// image built before floors existed).
    pub fn read(path: &Path) -> Result<Option<Floor>, FloorError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(FloorError::Read { path: path.into(), source }),
        };
        let time = decode(&bytes).ok_or_else(|| FloorError::Format {
            path: path.into(),
            text: String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned(),
        })?;
        Ok(Some(Floor { time, source: path.into() }))
    }

    /// Refuses a correction by `offset` at `now` that would set the clock below this floor.
    ///
    /// Check SNTP corrections against the image's floor: it cannot be ahead of true time.
    /// The STATE floor can be (a node that once believed a wrong server recorded the wrong
    /// time), and a sync must be able to repair it, so checking against it trades that
    /// repair for protection from servers that set the clock back.
    pub fn check(&self, now: SystemTime, offset: Offset) -> Result<(), FloorError> {
        let target = offset.applied_to(now).unwrap_or(UNIX_EPOCH);
        if target >= self.time {
            return Ok(());
        }
        Err(FloorError::BelowFloor { offset, target, floor: self.time, path: self.source.clone() })
    }
}

/// Records `time` (to the second, rounded down, so it stays a floor) at `path`, atomically.
pub fn record(path: &Path, time: ConfirmedTime) -> Result<(), FloorError> {
    crate::files::durable::write_atomically(path, encode(time.time()).as_bytes(), 0o644)
        .map_err(|source| FloorError::Write { path: path.into(), source })
}

/// The floor to raise the clock to at `now`: the highest of `floors`, if the clock is below
/// it. A clock at or above every floor is left alone: floors never move it backwards.
pub fn raise_to(now: SystemTime, floors: &[Floor]) -> Option<&Floor> {
    floors.iter().max_by_key(|floor| floor.time).filter(|floor| now < floor.time)
}

/// Steps `clock` up to the highest of `floors` if it is below it; returns the time it was
/// set to, or `None` if it was left alone.
pub fn apply_floor(clock: &impl Clock, floors: &[Floor]) -> Result<Option<SystemTime>, FloorError> {
    let now = clock.now();
    let Some(floor) = raise_to(now, floors) else { return Ok(None) };
    clock
        .step(Offset::between(now, floor.time))
        .map_err(|source| FloorError::Raise { path: floor.source.clone(), source })?;
    tracing::info!(
        "clock raised from {} to the time floor {} from {}",
        show(now),
        show(floor.time),
        floor.source.display()
    );
    Ok(Some(floor.time))
}

/// `1767225600\n`.
fn encode(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{seconds}\n")
}

/// Decimal seconds since 1970, with surrounding whitespace allowed.
fn decode(bytes: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::from_secs(text.parse().ok()?))
}

/// RFC 3339 for times from 1970, seconds before it otherwise (humantime refuses those).
fn show(time: SystemTime) -> String {
    match time.duration_since(UNIX_EPOCH) {
        Ok(_) => humantime::format_rfc3339_seconds(time).to_string(),
        Err(before) => format!("{}s before 1970", before.duration().as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::clock::fake::FakeClock;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn floor(seconds: u64, source: &str) -> Floor {
        Floor { time: at(seconds), source: source.into() }
    }

    #[test]
    fn the_file_is_decimal_seconds_and_a_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/time-floor");
        record(&path, ConfirmedTime::new(at(1_767_225_600) + Duration::from_millis(999))).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"1767225600\n");
        let expected = Floor { time: at(1_767_225_600), source: path.clone() };
        assert_eq!(Floor::read(&path).unwrap(), Some(expected));
        record(&path, ConfirmedTime::new(at(1_767_225_601))).unwrap();
        assert_eq!(Floor::read(&path).unwrap().unwrap().time, at(1_767_225_601));
        // What image-builder writes, and hand-written variants.
        assert_eq!(decode(b"1767225600"), Some(at(1_767_225_600)));
        assert_eq!(decode(b" 42 \n"), Some(at(42)));
    }

    #[test]
    fn a_missing_floor_is_none_and_a_garbled_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Floor::read(&dir.path().join("absent")).unwrap(), None);
        for garbage in
            [&b""[..], b"-5\n", b"+5", b"12 34", b"1e9", b"\xff", b"99999999999999999999"]
        {
            let path = dir.path().join("garbled");
            std::fs::write(&path, garbage).unwrap();
            let error = Floor::read(&path).unwrap_err();
            assert!(matches!(error, FloorError::Format { .. }), "{garbage:?}: {error}");
            assert!(error.to_string().contains("garbled"), "{error}");
        }
    }

    #[test]
    fn a_clock_below_the_floors_is_raised_to_the_highest() {
        let floors =
            [floor(1_700_000_000, "/usr/lib/cairn/time-floor"), floor(1_750_000_000, "state")];
        let clock = FakeClock::at(at(5));
        assert_eq!(apply_floor(&clock, &floors).unwrap(), Some(at(1_750_000_000)));
        assert_eq!(clock.now(), at(1_750_000_000));
        // Between the floors: only the higher one counts.
        assert_eq!(raise_to(at(1_720_000_000), &floors), Some(&floors[1]));
        assert_eq!(raise_to(at(5), &floors[..1]), Some(&floors[0]));
    }

    #[test]
    fn a_clock_at_or_above_the_floors_is_left_alone() {
        let floors = [floor(1_700_000_000, "image"), floor(1_750_000_000, "state")];
        for now in [at(1_750_000_000), at(1_800_000_000)] {
            let clock = FakeClock::at(now);
            assert_eq!(apply_floor(&clock, &floors).unwrap(), None);
            assert_eq!(clock.now(), now, "floors never move the clock backwards");
            assert!(clock.steps.lock().unwrap().is_empty());
        }
        assert_eq!(apply_floor(&FakeClock::at(at(5)), &[]).unwrap(), None);
    }

    #[test]
    fn corrections_below_a_floor_are_refused() {
        let image = floor(1_767_225_600, "/usr/lib/cairn/time-floor");
        let now = at(1_767_225_700);
        let back = |seconds: i64| Offset::from_nanos(-seconds * 1_000_000_000);
        assert!(image.check(now, back(100)).is_ok(), "landing on the floor is fine");
        assert!(image.check(now, Offset::from_nanos(1)).is_ok());
        let error = image.check(now, back(101)).unwrap_err();
        assert!(matches!(error, FloorError::BelowFloor { .. }));
        assert_eq!(
            error.to_string(),
            "a correction by -101.000000s would set the clock to 2025-12-31T23:59:59Z, below \
             the time floor 2026-01-01T00:00:00Z from /usr/lib/cairn/time-floor: refused"
        );
        // A server that says it is 1969.
        let error = image.check(now, back(1_767_225_701)).unwrap_err();
        assert!(error.to_string().contains("to 1s before 1970"), "{error}");
    }
}
