//! The file name of a boot entry, `cairn-<slot>[+LEFT[-DONE]].conf`: the slot it boots and,
//! while that slot is on trial, systemd-boot's try counter.
//!
//! This is the Boot Loader Specification's boot counting, as systemd implements it
//! (systemd.io/AUTOMATIC_BOOT_ASSESSMENT). A counter `+LEFT[-DONE]` just before `.conf`
//! puts an entry on trial; a missing `-DONE` means none done. Each time systemd-boot boots
//! the entry it first renames the file with one try fewer left and one more done
//! (`cairn-b+3.conf`, then `cairn-b+2-1.conf`, ...). An entry with no tries left
//! (`cairn-b+0-3.conf`) is "bad" and sorted after every other entry, so the other slot boots
//! instead: rollback needs no running Cairn. An entry without a counter is blessed, and no
//! longer counted; machined blesses a slot by renaming its entry without the counter, as
//! systemd-bless-boot does.

use std::fmt;
use std::str::FromStr;

use super::slot_name;
use crate::image::Slot;

/// What every Cairn entry's name starts with (`loader.conf` defaults to `cairn-*`).
pub const ENTRY_PREFIX: &str = "cairn-";
/// What every entry's name ends with.
const ENTRY_SUFFIX: &str = ".conf";

/// systemd-boot's try counter of an entry on trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryCounter {
    /// Boots left before the entry is bad.
    pub left: u32,
    /// Boots already tried.
    pub done: u32,
}

/// The name of a boot entry file in [`ENTRIES_DIR`](super::boot_entry::ENTRIES_DIR).
///
/// It renders canonically (`+3`, never `+3-0` or `+03`), while parsing also accepts the
/// other spellings systemd-boot reads; rename the file found on the ESP by the name it was
/// found under, not by a re-rendered one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryName {
    /// The slot the entry boots.
    pub slot: Slot,
    /// The try counter while the slot is on trial; `None` once blessed.
    pub counter: Option<TryCounter>,
}

impl EntryName {
    /// The blessed entry of `slot`, e.g. `cairn-a.conf`.
    pub fn blessed(slot: Slot) -> Self {
        EntryName { slot, counter: None }
    }

    /// A new trial of `slot` with `tries` boots, e.g. `cairn-b+3.conf`. With 0 tries the
    /// entry is bad from the start: it never boots while another entry is good.
    pub fn on_trial(slot: Slot, tries: u32) -> Self {
        EntryName { slot, counter: Some(TryCounter { left: tries, done: 0 }) }
    }

    /// Whether the entry is on trial with no tries left: systemd-boot sorts it last.
    pub fn is_exhausted(&self) -> bool {
        self.counter.is_some_and(|counter| counter.left == 0)
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ENTRY_PREFIX}{}", slot_name(self.slot))?;
        match self.counter {
            None => {}
            Some(TryCounter { left, done: 0 }) => write!(f, "+{left}")?,
            Some(TryCounter { left, done }) => write!(f, "+{left}-{done}")?,
        }
        f.write_str(ENTRY_SUFFIX)
    }
}

impl FromStr for EntryName {
    type Err = EntryNameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let stem =
            name.strip_suffix(ENTRY_SUFFIX).ok_or_else(|| EntryNameError::NotConf(name.into()))?;
        let rest =
            stem.strip_prefix(ENTRY_PREFIX).ok_or_else(|| EntryNameError::NotCairn(name.into()))?;
        let (slot, counter) = match rest.split_once('+') {
            Some((slot, counter)) => (slot, Some(counter)),
            None => (rest, None),
        };
        let slot = [Slot::A, Slot::B]
            .into_iter()
            .find(|s| slot_name(*s) == slot)
            .ok_or_else(|| EntryNameError::UnknownSlot { name: name.into(), slot: slot.into() })?;
        let counter = counter
            .map(|counter| {
                parse_counter(counter).ok_or_else(|| EntryNameError::BadCounter {
                    name: name.into(),
                    counter: format!("+{counter}"),
                })
            })
            .transpose()?;
        Ok(EntryName { slot, counter })
    }
}

/// `LEFT` or `LEFT-DONE`, both decimal.
fn parse_counter(text: &str) -> Option<TryCounter> {
    let (left, done) = match text.split_once('-') {
        Some((left, done)) => (left, Some(done)),
        None => (text, None),
    };
    // `u32::from_str` alone would also take a leading `+`.
    let number = |digits: &str| {
        digits.bytes().all(|b| b.is_ascii_digit()).then(|| digits.parse().ok()).flatten()
    };
    let done = match done {
        Some(done) => number(done)?,
        None => 0,
    };
    Some(TryCounter { left: number(left)?, done })
}

/// A file name is not a Cairn boot entry's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryNameError {
    /// It does not end in `.conf`.
    #[error("{0:?} is not a boot entry: its name does not end in .conf")]
    NotConf(String),
    /// It does not start with `cairn-`.
    #[error("{0:?} is not a Cairn boot entry: its name does not start with {ENTRY_PREFIX}")]
    NotCairn(String),
    /// It names no slot Cairn has.
    #[error("boot entry {name:?}: unknown slot {slot:?} (Cairn's slots are a and b)")]
    UnknownSlot {
        /// The file name.
        name: String,
        /// What stands where the slot should.
        slot: String,
    },
    /// Its try counter is not `+LEFT` or `+LEFT-DONE` with decimal numbers.
    #[error("boot entry {name:?}: try counter {counter:?} is not +LEFT or +LEFT-DONE in decimal")]
    BadCounter {
        /// The file name.
        name: String,
        /// The counter, from its `+`.
        counter: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str) -> Result<EntryName, EntryNameError> {
        name.parse()
    }

    fn counter(left: u32, done: u32) -> Option<TryCounter> {
        Some(TryCounter { left, done })
    }

    #[test]
    fn names_parse_and_render_back() {
        for (name, slot, counter) in [
            ("cairn-a.conf", Slot::A, None),
            ("cairn-b.conf", Slot::B, None),
            ("cairn-b+3.conf", Slot::B, counter(3, 0)),
            ("cairn-b+2-1.conf", Slot::B, counter(2, 1)),
            ("cairn-b+0-3.conf", Slot::B, counter(0, 3)),
            ("cairn-a+4294967295-4294967295.conf", Slot::A, counter(u32::MAX, u32::MAX)),
        ] {
            let parsed = parse(name).unwrap();
            assert_eq!(parsed, EntryName { slot, counter }, "{name}");
            assert_eq!(parsed.to_string(), name);
        }
    }

    #[test]
    fn other_spellings_parse_and_render_canonically() {
        assert_eq!(parse("cairn-b+3-0.conf").unwrap().to_string(), "cairn-b+3.conf");
        assert_eq!(parse("cairn-b+03-01.conf").unwrap().to_string(), "cairn-b+3-1.conf");
    }

    #[test]
    fn a_trial_is_counted_down_then_blessed_or_exhausted() {
        let trial = EntryName::on_trial(Slot::B, 3);
        assert_eq!(trial.to_string(), "cairn-b+3.conf");
        assert!(!trial.is_exhausted());
        // What systemd-boot's renames look like after one and after three failed boots.
        assert!(!parse("cairn-b+2-1.conf").unwrap().is_exhausted());
        assert!(parse("cairn-b+0-3.conf").unwrap().is_exhausted());
        assert_eq!(EntryName::blessed(trial.slot).to_string(), "cairn-b.conf");
        assert!(!EntryName::blessed(Slot::A).is_exhausted());
        assert!(EntryName::on_trial(Slot::A, 0).is_exhausted());
    }

    #[test]
    fn other_names_are_refused() {
        let not_conf = |name: &str| EntryNameError::NotConf(name.into());
        let not_cairn = |name: &str| EntryNameError::NotCairn(name.into());
        let slot = |name: &str, slot: &str| EntryNameError::UnknownSlot {
            name: name.into(),
            slot: slot.into(),
        };
        let bad = |name: &str, counter: &str| EntryNameError::BadCounter {
            name: name.into(),
            counter: counter.into(),
        };
        for (name, error) in [
            ("cairn-a", not_conf("cairn-a")),
            ("cairn-a.conf.bak", not_conf("cairn-a.conf.bak")),
            ("cairn-a.CONF", not_conf("cairn-a.CONF")),
            ("debian-a.conf", not_cairn("debian-a.conf")),
            ("Cairn-a.conf", not_cairn("Cairn-a.conf")),
            ("cairn.conf", not_cairn("cairn.conf")),
            ("cairn-c.conf", slot("cairn-c.conf", "c")),
            ("cairn-A.conf", slot("cairn-A.conf", "A")),
            ("cairn-.conf", slot("cairn-.conf", "")),
            ("cairn-ab+3.conf", slot("cairn-ab+3.conf", "ab")),
            ("cairn-b+.conf", bad("cairn-b+.conf", "+")),
            ("cairn-b+x.conf", bad("cairn-b+x.conf", "+x")),
            ("cairn-b+3-.conf", bad("cairn-b+3-.conf", "+3-")),
            ("cairn-b+-1.conf", bad("cairn-b+-1.conf", "+-1")),
            ("cairn-b++3.conf", bad("cairn-b++3.conf", "++3")),
            ("cairn-b+3-1-1.conf", bad("cairn-b+3-1-1.conf", "+3-1-1")),
            ("cairn-b+3 .conf", bad("cairn-b+3 .conf", "+3 ")),
            ("cairn-b+4294967296.conf", bad("cairn-b+4294967296.conf", "+4294967296")),
        ] {
            assert_eq!(parse(name), Err(error), "{name}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let message = |name: &str| parse(name).unwrap_err().to_string();
        assert_eq!(
            message("cairn-a"),
            "\"cairn-a\" is not a boot entry: its name does not end in .conf"
        );
        assert_eq!(
            message("debian.conf"),
            "\"debian.conf\" is not a Cairn boot entry: its name does not start with cairn-"
        );
        assert_eq!(
            message("cairn-c.conf"),
            "boot entry \"cairn-c.conf\": unknown slot \"c\" (Cairn's slots are a and b)"
        );
        assert_eq!(
            message("cairn-b+x.conf"),
            "boot entry \"cairn-b+x.conf\": try counter \"+x\" is not +LEFT or +LEFT-DONE in \
             decimal"
        );
    }
}
