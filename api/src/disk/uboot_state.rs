//! What Cairn's U-Boot boot script (image-builder's `uboot/boot.cmd`) keeps on the boot
//! partition (DESIGN §2): the slot to boot, its trial, and each slot's kernel command line,
//! as variables of a U-Boot environment file ([`super::uboot_env`]) that the script reads
//! with `env import -c` and rewrites with `env export -c` and `fatwrite`.
//!
//! FAT writes are not atomic, so there are two copies, [`ENV_COPIES`]. The copy in force is
//! the valid one with the higher generation (copy 0 on a tie, as the script's `itest -gt`
//! picks); every write, the script's or machined's, goes to the other copy with the next
//! generation, so a power cut at any moment of a write leaves the copy in force as it was.
//!
//! Numbers are hexadecimal without `0x`, as U-Boot's `setexpr` writes them.

use super::entry_name::TryCounter;
use super::slot_name;
use super::uboot_env::{EnvError, UbootEnv};
use crate::disk::boot_entry::{slot_command_line, slot_kernel_args};
use crate::image::Slot;

/// The two copies of the environment, from the boot partition's root.
pub const ENV_COPIES: [&str; 2] = ["/cairn/env.0", "/cairn/env.1"];

/// Bumped by each write: the valid copy with the higher one is in force.
const GENERATION: &str = "cairn_gen";
/// The slot the script boots: `a` or `b`.
const SLOT: &str = "cairn_slot";
/// `1` while that slot is on trial, `0` once blessed.
const UPGRADE: &str = "cairn_upgrade";
/// Boots the trial has left; the script decrements it before each.
const TRIES: &str = "cairn_tries";
/// Boots the trial has had; the script increments it before each.
const TRIED: &str = "cairn_tried";

/// The variable holding `slot`'s kernel command line, e.g. `cairn_bootargs_b`: its own
/// argument first ([`slot_command_line`]); absent while the script may not boot the slot.
pub fn command_line_variable(slot: Slot) -> String {
    format!("cairn_bootargs_{}", slot_name(slot))
}

/// The boot script's state, as one copy of the environment holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptState {
    /// The copy's generation.
    pub generation: u64,
    /// The slot the script boots, unless its trial ran out.
    pub slot: Slot,
    /// `slot`'s trial; `None` once blessed.
    pub trial: Option<TryCounter>,
    /// The kernel arguments after its own of each slot the script may boot, A then B.
    pub kernel_args: [Option<Vec<String>>; 2],
}

impl ScriptState {
    /// A blessed `slot` booting with `kernel_args`, the other slot empty: a new image's.
    pub fn first(slot: Slot, kernel_args: &[String]) -> ScriptState {
        let mut state = ScriptState { generation: 1, slot, trial: None, kernel_args: [None, None] };
        state.kernel_args[slot.index()] = Some(kernel_args.to_vec());
        state
    }

    /// The kernel arguments of `slot` after its own, if the script may boot it.
    pub fn kernel_args(&self, slot: Slot) -> Option<&[String]> {
        self.kernel_args[slot.index()].as_deref()
    }

    /// Sets the kernel arguments of `slot`; `None` takes it out of the script's choice.
    pub fn set_kernel_args(&mut self, slot: Slot, kernel_args: Option<Vec<String>>) {
        self.kernel_args[slot.index()] = kernel_args;
    }

    /// The slot the script boots next: [`Self::slot`], or the other once its tries ran out.
    pub fn boots(&self) -> Slot {
        match self.trial {
            Some(trial) if trial.left == 0 => self.slot.other(),
            _ => self.slot,
        }
    }

    /// The state in the environment `env`.
    pub fn from_env(env: &UbootEnv) -> Result<ScriptState, EnvError> {
        let required =
            |name: &str| env.get(name).ok_or_else(|| EnvError::variable(name, "missing"));
        let hex = |name: &str| {
            let text = required(name)?;
            u64::from_str_radix(text, 16)
                .map_err(|_| EnvError::variable(name, format!("{text:?} is not a hex number")))
        };
        let count = |name: &str| {
            u32::try_from(hex(name)?).map_err(|_| EnvError::variable(name, "too large"))
        };
        let slot = match required(SLOT)? {
            "a" => Slot::A,
            "b" => Slot::B,
            other => return Err(EnvError::variable(SLOT, format!("{other:?} is not a or b"))),
        };
        let trial = match required(UPGRADE)? {
            "0" => None,
            "1" => Some(TryCounter { left: count(TRIES)?, done: count(TRIED)? }),
            other => return Err(EnvError::variable(UPGRADE, format!("{other:?} is not 0 or 1"))),
        };
        let kernel_args = [Slot::A, Slot::B].map(|slot| {
            env.get(&command_line_variable(slot)).map(|line| slot_kernel_args(slot, line))
        });
        Ok(ScriptState { generation: hex(GENERATION)?, slot, trial, kernel_args })
    }

    /// The environment holding this state.
    pub fn to_env(&self) -> Result<UbootEnv, EnvError> {
        let mut env = UbootEnv::default();
        env.set(GENERATION, &format!("{:x}", self.generation))?;
        env.set(SLOT, slot_name(self.slot))?;
        env.set(UPGRADE, if self.trial.is_some() { "1" } else { "0" })?;
        if let Some(trial) = self.trial {
            env.set(TRIES, &format!("{:x}", trial.left))?;
            env.set(TRIED, &format!("{:x}", trial.done))?;
        }
        for slot in [Slot::A, Slot::B] {
            if let Some(args) = self.kernel_args(slot) {
                env.set(&command_line_variable(slot), &slot_command_line(slot, args))?;
            }
        }
        Ok(env)
    }

    /// Reads one copy's bytes.
    pub fn parse(bytes: &[u8]) -> Result<ScriptState, EnvError> {
        ScriptState::from_env(&UbootEnv::parse(bytes)?)
    }

    /// One copy's bytes.
    pub fn render(&self) -> Result<Vec<u8>, EnvError> {
        self.to_env()?.render()
    }
}

/// The copy of the environment in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InForce {
    /// Its index in [`ENV_COPIES`].
    pub copy: usize,
    /// What it holds.
    pub state: ScriptState,
}

/// Neither copy of the environment is valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no valid copy of the boot script's environment: {}: {}; {}: {}",
    ENV_COPIES[0], reasons[0], ENV_COPIES[1], reasons[1]
)]
pub struct NoCopyInForce {
    /// Why each copy is not, in [`ENV_COPIES`]'s order.
    pub reasons: [String; 2],
}

impl InForce {
    /// The copy in force among `copies` (the files' bytes, `None` for a missing one): the
    /// valid one with the higher generation, copy 0 on a tie.
    pub fn find(copies: [Option<&[u8]>; 2]) -> Result<InForce, NoCopyInForce> {
        let read = copies.map(|bytes| match bytes {
            Some(bytes) => ScriptState::parse(bytes).map_err(|e| e.to_string()),
            None => Err("missing".to_string()),
        });
        let valid = read.iter().enumerate().filter_map(|(copy, r)| Some((copy, r.as_ref().ok()?)));
        // `max_by_key` keeps the last of equals: compare copy 1 first so copy 0 wins a tie.
        let newest = valid.rev().max_by_key(|(_, state)| state.generation);
        match newest {
            Some((copy, state)) => Ok(InForce { copy, state: state.clone() }),
            None => {
                Err(NoCopyInForce { reasons: read.map(|r| r.expect_err("neither copy is valid")) })
            }
        }
    }

    /// What puts `state` in force: the path of the other copy and its bytes, with the next
    /// generation.
    pub fn successor(&self, state: &ScriptState) -> Result<(&'static str, Vec<u8>), EnvError> {
        let next = ScriptState { generation: self.state.generation + 1, ..state.clone() };
        Ok((ENV_COPIES[1 - self.copy], next.render()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_trial() -> ScriptState {
        ScriptState {
            generation: 0x1a,
            slot: Slot::B,
            trial: Some(TryCounter { left: 2, done: 1 }),
            kernel_args: [Some(vec![]), Some(vec!["console=ttyAMA0".into(), "quiet".into()])],
        }
    }

    /// The data area of a copy, built by hand.
    fn data(bytes: &[u8]) -> &[u8] {
        let end = bytes[4..].windows(2).position(|w| w == [0, 0]).unwrap();
        &bytes[4..4 + end + 2]
    }

    #[test]
    fn a_trial_is_written_as_the_script_reads_it() {
        let bytes = on_trial().render().unwrap();
        assert_eq!(
            data(&bytes),
            &b"cairn_bootargs_a=cairn.slot=a\0\
               cairn_bootargs_b=cairn.slot=b console=ttyAMA0 quiet\0\
               cairn_gen=1a\0cairn_slot=b\0cairn_tried=1\0cairn_tries=2\0cairn_upgrade=1\0\0"[..]
        );
        assert_eq!(ScriptState::parse(&bytes).unwrap(), on_trial());
        assert_eq!(on_trial().boots(), Slot::B);
    }

    #[test]
    fn a_blessed_slot_has_no_tries_and_a_slot_without_command_line_is_not_bootable() {
        let first = ScriptState::first(Slot::A, &["console=ttyAMA0".into()]);
        let bytes = first.render().unwrap();
        assert_eq!(
            data(&bytes),
            &b"cairn_bootargs_a=cairn.slot=a console=ttyAMA0\0cairn_gen=1\0cairn_slot=a\0\
               cairn_upgrade=0\0\0"[..]
        );
        let read = ScriptState::parse(&bytes).unwrap();
        assert_eq!((read.kernel_args(Slot::B), read.boots()), (None, Slot::A));
        assert_eq!(read, first);
    }

    #[test]
    fn a_trial_with_no_tries_left_boots_the_other_slot() {
        let given_up = ScriptState { trial: Some(TryCounter { left: 0, done: 3 }), ..on_trial() };
        assert_eq!(given_up.boots(), Slot::A);
    }

    #[test]
    fn bad_variables_are_named() {
        let with = |name: &str, value: &str| {
            let mut env = on_trial().to_env().unwrap();
            env.set(name, value).unwrap();
            ScriptState::from_env(&env).unwrap_err().to_string()
        };
        assert_eq!(with("cairn_slot", "c"), "variable cairn_slot: \"c\" is not a or b");
        assert_eq!(with("cairn_upgrade", "2"), "variable cairn_upgrade: \"2\" is not 0 or 1");
        assert_eq!(with("cairn_tries", "x"), "variable cairn_tries: \"x\" is not a hex number");
        assert_eq!(with("cairn_tried", ""), "variable cairn_tried: missing");
        assert_eq!(
            with("cairn_gen", "100000000000000000"),
            "variable cairn_gen: \"100000000000000000\" is not a hex number"
        );
        assert_eq!(with("cairn_tries", "100000000"), "variable cairn_tries: too large");
    }

    #[test]
    fn the_valid_copy_with_the_higher_generation_is_in_force() {
        let older = on_trial().render().unwrap();
        let newer = ScriptState { generation: 0x1b, ..on_trial() }.render().unwrap();
        let found = InForce::find([Some(&older), Some(&newer)]).unwrap();
        assert_eq!((found.copy, found.state.generation), (1, 0x1b));
        let found = InForce::find([Some(&newer), Some(&older)]).unwrap();
        assert_eq!((found.copy, found.state.generation), (0, 0x1b));
        // A tie goes to copy 0, as in the script.
        assert_eq!(InForce::find([Some(&older), Some(&older)]).unwrap().copy, 0);
        assert_eq!(InForce::find([None, Some(&older)]).unwrap().copy, 1);
    }

    /// A power cut while the newer copy was written: it is torn, or cut short, and the
    /// older one is in force, as it was before the write.
    #[test]
    fn a_torn_newest_copy_leaves_the_older_in_force() {
        let older = on_trial().render().unwrap();
        let in_force = InForce::find([Some(&older), None]).unwrap();
        let mut chosen = on_trial();
        chosen.trial = None;
        let (path, newer) = in_force.successor(&chosen).unwrap();
        assert_eq!(path, "/cairn/env.1");
        assert_eq!(ScriptState::parse(&newer).unwrap().generation, 0x1b);
        let mut torn = newer.clone();
        torn[100..].fill(0xff);
        for newest in [&torn[..], &newer[..2048], &[]] {
            let found = InForce::find([Some(&older), Some(newest)]).unwrap();
            assert_eq!(found, in_force);
        }
        // Once written whole, it is in force; the next write goes to copy 0.
        let found = InForce::find([Some(&older), Some(&newer)]).unwrap();
        assert_eq!((found.copy, found.state.trial), (1, None));
        assert_eq!(found.successor(&found.state).unwrap().0, "/cairn/env.0");
    }

    #[test]
    fn with_no_valid_copy_each_reason_is_given() {
        let mut torn = on_trial().render().unwrap();
        torn[8] ^= 1;
        let error = InForce::find([Some(&torn), None]).unwrap_err();
        assert!(error.to_string().starts_with(
            "no valid copy of the boot script's environment: /cairn/env.0: bad CRC: "
        ));
        assert!(error.to_string().ends_with("; /cairn/env.1: missing"), "{error}");
    }
}
