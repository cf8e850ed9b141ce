//! Boot control by Cairn's U-Boot boot script (DESIGN §2, image-builder's `uboot/boot.cmd`):
//! the slot to boot, its trial and each slot's kernel command line are variables of a U-Boot
//! environment file kept in two copies on the boot partition (`api::disk::uboot_state`); the
//! slot's kernel, initramfs and version file are under `/cairn/<slot>/`, as with systemd-boot.
//! The script counts a trial's boots itself and boots the other slot once they ran out.
//!
//! [`ScriptEnv`] is what the boot partition says, read once; its verbs change the value and
//! touch no disk; [`ScriptEnv::commit`] writes the version files, then the new state into the
//! copy not in force, with the next generation: the one step the script sees whole, as a torn
//! copy is not valid and leaves the other in force.

use cairn_api::disk::boot_entry::version_path;
use cairn_api::disk::entry_name::TryCounter;
use cairn_api::disk::uboot_state::{command_line_variable, InForce, ScriptState, ENV_COPIES};
use cairn_api::image::Slot;

use super::esp::{Change, EspFiles};
use super::{
    read_versions, BootControlError, BootState, BootloaderState, OnBootPartition, SlotEntry,
    SlotState, SlotSystem,
};

/// What the boot partition says about the slots, and the changes queued to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptEnv {
    /// The copy of the environment in force when read.
    in_force: InForce,
    /// The script's state, as the verbs left it.
    state: ScriptState,
    /// The versions in the slots' version files, A then B.
    versions: [Option<String>; 2],
    /// The changes to the version files, in order, made before the state is written.
    version_changes: Vec<Change>,
}

impl ScriptEnv {
    /// The copy in force once the changes are committed.
    fn copy_in_force(&self) -> &'static str {
        match self.state == self.in_force.state {
            true => ENV_COPIES[self.in_force.copy],
            false => ENV_COPIES[1 - self.in_force.copy],
        }
    }

    /// How messages name `slot`'s entry: its command line's variable and copy.
    fn entry_name(&self, slot: Slot) -> String {
        format!("{} in {}", command_line_variable(slot), self.copy_in_force())
    }

    /// The version files' changes queued, in order.
    pub fn version_changes(&self) -> &[Change] {
        &self.version_changes
    }

    /// The script's state as the verbs left it.
    pub fn state(&self) -> &ScriptState {
        &self.state
    }

    /// Fails unless the script may boot `slot`.
    fn check_entry(&self, slot: Slot) -> Result<(), BootControlError> {
        match self.state.kernel_args(slot) {
            Some(_) => Ok(()),
            None => Err(BootControlError::NoEntry(slot)),
        }
    }
}

impl BootloaderState for ScriptEnv {
    /// Reads both copies of the environment and the version files.
    fn read(files: &dyn EspFiles) -> Result<Self, BootControlError> {
        let mut copies = [None, None];
        for (copy, path) in copies.iter_mut().zip(ENV_COPIES) {
            *copy = files.read_bytes(path).map_err(BootControlError::io(path))?;
        }
        let in_force =
            InForce::find([copies[0].as_deref(), copies[1].as_deref()]).map_err(|e| {
                BootControlError::Invalid {
                    what: "reading the U-Boot script's state".into(),
                    reason: e.to_string(),
                }
            })?;
        Ok(ScriptEnv {
            state: in_force.state.clone(),
            in_force,
            versions: read_versions(files)?,
            version_changes: Vec::new(),
        })
    }

    /// The state as boot control reports it.
    fn boot_state(&self) -> BootState {
        let slot = |slot: Slot| SlotState {
            version: self.versions[slot.index()].clone(),
            entry: self.state.kernel_args(slot).map(|args| SlotEntry {
                name: self.entry_name(slot),
                counter: self.state.trial.filter(|_| self.state.slot == slot),
                kernel_args: args.to_vec(),
            }),
        };
        let next_boot = Some(self.state.boots()).filter(|s| self.state.kernel_args(*s).is_some());
        BootState { a: slot(Slot::A), b: slot(Slot::B), next_boot }
    }

    /// Takes `slot` out of the script's choice (the other slot boots, blessed, if `slot` was
    /// the one to boot) and removes its version file. Does not write to the disk.
    fn retire(&mut self, slot: Slot) {
        self.state.set_kernel_args(slot, None);
        if self.state.slot == slot {
            self.state.slot = slot.other();
            self.state.trial = None;
        }
        self.version_changes.push(Change::Remove(version_path(slot)));
        self.versions[slot.index()] = None;
    }

    /// Makes `slot`, holding `system`, the one the script boots, on trial with `tries` boots:
    /// its version file, then the state. Returns its entry's name. Does not write to the disk.
    fn choose(&mut self, slot: Slot, system: SlotSystem<'_>, tries: u32) -> String {
        self.version_changes.push(Change::Write {
            path: version_path(slot),
            text: format!("{}\n", system.version),
        });
        self.versions[slot.index()] = Some(system.version.to_string());
        self.state.set_kernel_args(slot, Some(system.kernel_args.to_vec()));
        self.state.slot = slot;
        self.state.trial = Some(TryCounter { left: tries, done: 0 });
        self.entry_name(slot)
    }

    /// Blesses `slot`: if it is on trial, the trial ends and the script keeps booting it.
    /// Does not write to the disk.
    fn mark_successful(&mut self, slot: Slot) -> Result<(), BootControlError> {
        self.check_entry(slot)?;
        if self.state.slot == slot {
            self.state.trial = None;
        }
        Ok(())
    }

    /// Gives `slot` up: a trial of it with one more try counted and none left, so the script
    /// boots the other slot (as a trial whose tries ran out). Does not write to the disk.
    fn give_up(&mut self, slot: Slot) -> Result<(), BootControlError> {
        self.check_entry(slot)?;
        let done = match self.state.trial {
            Some(trial) if self.state.slot == slot => trial.done,
            _ => 0,
        };
        self.state.slot = slot;
        self.state.trial = Some(TryCounter { left: 0, done: done + 1 });
        Ok(())
    }

    /// Makes the queued changes on `files`: the version files, then the state in the copy not
    /// in force, if it changed.
    fn commit(self, files: &dyn EspFiles) -> Result<(), BootControlError> {
        if !self.version_changes.is_empty() {
            files
                .apply(&self.version_changes)
                .map_err(BootControlError::io("writing the slots' version files"))?;
        }
        if self.state == self.in_force.state {
            return Ok(());
        }
        let (path, bytes) =
            self.in_force.successor(&self.state).map_err(|e| BootControlError::Invalid {
                what: format!("writing {}", ENV_COPIES[1 - self.in_force.copy]),
                reason: e.to_string(),
            })?;
        files
            .write_file(path, &mut bytes.as_slice(), &mut |_| {})
            .map_err(BootControlError::io(path))?;
        Ok(())
    }
}

/// Boot control by the U-Boot script, on the boot partition's files.
pub type UBoot<F> = OnBootPartition<ScriptEnv, F>;

#[cfg(test)]
mod tests {
    use super::super::esp::{format_for_tests, FatEsp, MemoryEsp};
    use super::super::BootControl;
    use super::*;

    /// The boot partition as an image leaves it: A blessed at generation 1 in copy 0,
    /// holding 0.1.0.
    fn fresh() -> UBoot<MemoryEsp> {
        let files = MemoryEsp::default();
        let first = ScriptState::first(Slot::A, &args()).render().unwrap();
        files.files.lock().unwrap().insert("/cairn/env.0".into(), first);
        files
            .apply(&[Change::Write { path: "/cairn/a/version".into(), text: "0.1.0\n".into() }])
            .unwrap();
        UBoot::new(files)
    }

    fn args() -> Vec<String> {
        vec!["console=ttyAMA0".into()]
    }

    /// The copy in force, as the script finds it.
    fn in_force(files: &MemoryEsp) -> InForce {
        let copies = files.files.lock().unwrap();
        let copy = |path: &str| copies.get(path).map(Vec::as_slice);
        InForce::find([copy("/cairn/env.0"), copy("/cairn/env.1")]).unwrap()
    }

    /// What the script does at a trial boot: counts it in the other copy.
    fn script_counts_a_boot(files: &MemoryEsp) {
        let found = in_force(files);
        let mut state = found.state.clone();
        let trial = state.trial.as_mut().expect("a trial");
        (trial.left, trial.done) = (trial.left - 1, trial.done + 1);
        let (path, bytes) = found.successor(&state).unwrap();
        files.files.lock().unwrap().insert(path.into(), bytes);
    }

    #[test]
    fn choosing_a_slot_writes_its_version_then_the_other_copy() {
        let control = fresh();
        let mut env = ScriptEnv::read(&control.files).unwrap();
        let system = SlotSystem { version: "0.2.0", kernel_args: &args() };
        assert_eq!(env.choose(Slot::B, system, 3), "cairn_bootargs_b in /cairn/env.1");
        assert_eq!(
            env.version_changes(),
            [Change::Write { path: "/cairn/b/version".into(), text: "0.2.0\n".into() }]
        );
        // Nothing is written before the commit.
        assert_eq!(control.files.paths(), ["/cairn/a/version", "/cairn/env.0"]);
        env.commit(&control.files).unwrap();
        assert_eq!(
            control.files.paths(),
            ["/cairn/a/version", "/cairn/b/version", "/cairn/env.0", "/cairn/env.1"]
        );
        let found = in_force(&control.files);
        let expected = ScriptState {
            generation: 2,
            slot: Slot::B,
            trial: Some(TryCounter { left: 3, done: 0 }),
            kernel_args: [Some(args()), Some(args())],
        };
        assert_eq!((found.copy, &found.state), (1, &expected));
        // Copy 0 is as it was: a power cut during the write would have left it in force.
        let first = ScriptState::first(Slot::A, &args()).render().unwrap();
        assert_eq!(control.files.files.lock().unwrap()["/cairn/env.0"], first);
        let state = control.state().unwrap();
        assert_eq!(state.next_boot, Some(Slot::B));
        let b = state.b.entry.unwrap();
        assert_eq!((b.counter, b.kernel_args), (Some(TryCounter { left: 3, done: 0 }), args()));
        assert_eq!(state.b.version.as_deref(), Some("0.2.0"));
        let a = state.a.entry.unwrap();
        assert_eq!((a.name.as_str(), a.counter), ("cairn_bootargs_a in /cairn/env.1", None));
    }

    #[test]
    fn the_script_s_count_shows_and_a_trial_with_no_tries_left_boots_the_other_slot() {
        let control = fresh();
        control.choose(Slot::B, SlotSystem { version: "0.2.0", kernel_args: &[] }, 2).unwrap();
        script_counts_a_boot(&control.files);
        let b = control.state().unwrap().b.entry.unwrap();
        assert_eq!(
            (b.counter, b.name.as_str()),
            (Some(TryCounter { left: 1, done: 1 }), "cairn_bootargs_b in /cairn/env.0")
        );
        script_counts_a_boot(&control.files);
        let state = control.state().unwrap();
        assert!(state.b.entry.unwrap().is_given_up());
        assert_eq!(state.next_boot, Some(Slot::A));
    }

    #[test]
    fn blessing_ends_the_trial_and_the_slot_keeps_booting() {
        let control = fresh();
        control.choose(Slot::B, SlotSystem { version: "0.2.0", kernel_args: &[] }, 3).unwrap();
        script_counts_a_boot(&control.files);
        control.bless(Slot::B).unwrap();
        let found = in_force(&control.files);
        assert_eq!((found.copy, found.state.generation), (1, 4));
        assert_eq!((found.state.slot, found.state.trial), (Slot::B, None));
        assert_eq!(control.state().unwrap().next_boot, Some(Slot::B));
        // Blessing a blessed slot writes nothing.
        let mut env = ScriptEnv::read(&control.files).unwrap();
        env.mark_successful(Slot::B).unwrap();
        assert_eq!(env.state(), &found.state);
        env.commit(&control.files).unwrap();
        assert_eq!(in_force(&control.files), found);
    }

    #[test]
    fn a_slot_given_up_counts_one_more_try_and_none_left() {
        let control = fresh();
        control.choose(Slot::B, SlotSystem { version: "0.2.0", kernel_args: &[] }, 3).unwrap();
        script_counts_a_boot(&control.files);
        control.give_up(Slot::B).unwrap();
        let state = control.state().unwrap();
        assert_eq!(state.b.entry.unwrap().counter, Some(TryCounter { left: 0, done: 2 }));
        assert_eq!(state.next_boot, Some(Slot::A));
        let empty = fresh();
        assert!(matches!(empty.bless(Slot::B), Err(BootControlError::NoEntry(Slot::B))));
        assert!(matches!(empty.give_up(Slot::B), Err(BootControlError::NoEntry(Slot::B))));
    }

    #[test]
    fn a_retired_slot_may_not_boot_and_loses_its_version_but_keeps_its_boot_files() {
        let control = fresh();
        control.choose(Slot::B, SlotSystem { version: "0.2.0", kernel_args: &[] }, 3).unwrap();
        control.install_file(Slot::B, "vmlinuz", &mut &b"kernel"[..], &mut |_| {}).unwrap();
        // B, chosen but not booted yet, is retired: A boots again, blessed.
        let mut env = ScriptEnv::read(&control.files).unwrap();
        env.retire(Slot::B);
        assert_eq!(env.version_changes(), [Change::Remove("/cairn/b/version".into())]);
        env.commit(&control.files).unwrap();
        let state = control.state().unwrap();
        assert_eq!((state.b.entry, state.b.version), (None, None));
        assert_eq!((state.next_boot, state.a.entry.unwrap().counter), (Some(Slot::A), None));
        assert_eq!(control.files.text("/cairn/b/vmlinuz").as_deref(), Some("kernel"));
        assert_eq!(in_force(&control.files).state.generation, 3);
    }

    #[test]
    fn with_no_valid_copy_the_state_cannot_be_read_and_each_copy_says_why() {
        let control = UBoot::new(MemoryEsp::default());
        let error = control.state().unwrap_err().to_string();
        assert_eq!(
            error,
            "reading the U-Boot script's state: no valid copy of the boot script's environment: \
             /cairn/env.0: missing; /cairn/env.1: missing"
        );
    }

    /// The same on a real FAT filesystem: the copies are binary files.
    #[test]
    fn the_state_is_kept_on_a_fat_boot_partition() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot.img");
        format_for_tests(&path, 40 << 20);
        let files = FatEsp::new(&path);
        let first = ScriptState::first(Slot::A, &args()).render().unwrap();
        files.write_file("/cairn/env.0", &mut first.as_slice(), &mut |_| {}).unwrap();
        let control = UBoot::new(files);
        control.choose(Slot::B, SlotSystem { version: "0.2.0", kernel_args: &args() }, 3).unwrap();
        let bytes = control.files.read_bytes("/cairn/env.1").unwrap().unwrap();
        assert_eq!(ScriptState::parse(&bytes).unwrap().slot, Slot::B);
        let state = control.state().unwrap();
        assert_eq!((state.next_boot, state.b.version.as_deref()), (Some(Slot::B), Some("0.2.0")));
    }
}
