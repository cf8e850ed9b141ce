//! Boot control by systemd-boot (DESIGN §2): one Boot Loader Spec entry per slot on the
//! ESP (`api::disk::boot_entry`), whose file name carries the try counter
//! (`api::disk::entry_name`), and the slot's kernel, initramfs and version file under
//! `/cairn/<slot>/`.
//!
//! [`EspState`] is what the ESP says, read once; its verbs change the value and queue the
//! changes that make the ESP say the same, without touching the disk; [`EspState::commit`]
//! makes them, in one mount. Choosing a slot writes its entry under a name systemd-boot
//! skips, then renames it to its counted name: the one step systemd-boot sees.

use cairn_api::disk::boot_entry::{
    entry_field, generation_of, slot_kernel_args, version_path, BootEntry, ENTRIES_DIR,
};
use cairn_api::disk::entry_name::{EntryName, TryCounter};
use cairn_api::image::Slot;

use super::esp::{Change, EspFiles};
use super::{
    read_versions, BootControlError, BootState, BootloaderState, OnBootPartition, SlotEntry,
    SlotState, SlotSystem,
};

/// A slot's boot entry as found on the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FoundEntry {
    /// The file name in [`ENTRIES_DIR`], as found (renamed by this).
    file: String,
    /// What the name says: the slot and its try counter.
    name: EntryName,
    /// Its place in the boot order (0 when it has none).
    generation: u64,
    /// Its kernel arguments after the slot's own.
    kernel_args: Vec<String>,
}

impl FoundEntry {
    /// The entry in `file`, whose text is `text`, if its name is a Cairn entry's.
    fn parse(file: &str, text: &str) -> Option<FoundEntry> {
        let name: EntryName = file.parse().ok()?;
        let kernel_args =
            slot_kernel_args(name.slot, entry_field(text, "options").unwrap_or_default());
        Some(FoundEntry {
            file: file.to_string(),
            name,
            generation: generation_of(text).unwrap_or(0),
            kernel_args,
        })
    }
}

/// What the ESP says about the slots, and the changes queued to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EspState {
    /// Every Cairn entry, in no particular order.
    entries: Vec<FoundEntry>,
    /// The versions in the slots' version files, A then B.
    versions: [Option<String>; 2],
    /// The changes that make the ESP say this, in order.
    changes: Vec<Change>,
}

/// The path of entry file `file`.
fn entry_path(file: &str) -> String {
    format!("{ENTRIES_DIR}/{file}")
}

impl EspState {
    /// The entry of `slot`, if it has one (the newest, should a crash have left two).
    fn entry(&self, slot: Slot) -> Option<&FoundEntry> {
        self.entries.iter().filter(|e| e.name.slot == slot).max_by_key(|e| e.generation)
    }

    /// One more than the highest generation: an entry with it boots before all others.
    fn next_generation(&self) -> u64 {
        self.entries.iter().map(|e| e.generation).max().unwrap_or(0) + 1
    }

    /// The slot systemd-boot boots next: the newest entry among those with tries left
    /// (entries with none go last), as `default cairn-*` picks.
    fn next_boot(&self) -> Option<Slot> {
        self.entries
            .iter()
            .max_by_key(|e| (!e.name.is_exhausted(), e.generation))
            .map(|e| e.name.slot)
    }

    /// The changes queued, in order.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Renames `slot`'s entry to `name`. Does not write to the disk.
    fn rename(&mut self, slot: Slot, name: EntryName) -> Result<(), BootControlError> {
        let generation = self.entry(slot).ok_or(BootControlError::NoEntry(slot))?.generation;
        let found = self
            .entries
            .iter_mut()
            .find(|e| e.name.slot == slot && e.generation == generation)
            .expect("found above");
        if found.name == name && found.file == name.to_string() {
            return Ok(());
        }
        self.changes.push(Change::Rename {
            dir: ENTRIES_DIR.into(),
            from: found.file.clone(),
            to: name.to_string(),
        });
        (found.file, found.name) = (name.to_string(), name);
        Ok(())
    }
}

impl BootloaderState for EspState {
    /// Reads the entries and version files.
    fn read(files: &dyn EspFiles) -> Result<Self, BootControlError> {
        let found = files
            .read_dir(ENTRIES_DIR, &|name| name.parse::<EntryName>().is_ok())
            .map_err(BootControlError::io("reading the boot entries"))?;
        let entries = found.iter().filter_map(|(file, text)| FoundEntry::parse(file, text));
        let versions = read_versions(files)?;
        Ok(EspState { entries: entries.collect(), versions, changes: Vec::new() })
    }

    /// The state as boot control reports it.
    fn boot_state(&self) -> BootState {
        let slot = |slot: Slot| SlotState {
            version: self.versions[slot.index()].clone(),
            entry: self.entry(slot).map(|found| SlotEntry {
                name: found.file.clone(),
                counter: found.name.counter,
                kernel_args: found.kernel_args.clone(),
            }),
        };
        BootState { a: slot(Slot::A), b: slot(Slot::B), next_boot: self.next_boot() }
    }

    /// Removes `slot`'s entries and version file. Does not write to the disk.
    fn retire(&mut self, slot: Slot) {
        for found in self.entries.iter().filter(|e| e.name.slot == slot) {
            self.changes.push(Change::Remove(entry_path(&found.file)));
        }
        self.entries.retain(|e| e.name.slot != slot);
        self.changes.push(Change::Remove(version_path(slot)));
        self.versions[slot.index()] = None;
    }

    /// Makes `slot`, holding `system`, the next boot's with `tries` boots: its version file,
    /// then its entry after every other one, under a temporary name (not `.conf`:
    /// systemd-boot skips it), then its old entries removed and the new one renamed to its
    /// counted name. Returns that name. Does not write to the disk.
    fn choose(&mut self, slot: Slot, system: SlotSystem<'_>, tries: u32) -> String {
        let generation = self.next_generation();
        let entry = BootEntry::for_slot(slot, system.version, generation, system.kernel_args);
        let temporary = format!("{}.new", slot.to_string().to_lowercase());
        let name = EntryName::on_trial(slot, tries);
        self.changes.push(Change::Write {
            path: version_path(slot),
            text: format!("{}\n", system.version),
        });
        self.changes.push(Change::Write { path: entry_path(&temporary), text: entry.render() });
        for old in self.entries.iter().filter(|e| e.name.slot == slot) {
            self.changes.push(Change::Remove(entry_path(&old.file)));
        }
        self.changes.push(Change::Rename {
            dir: ENTRIES_DIR.into(),
            from: temporary,
            to: name.to_string(),
        });
        self.entries.retain(|e| e.name.slot != slot);
        self.entries.push(FoundEntry {
            file: name.to_string(),
            name,
            generation,
            kernel_args: system.kernel_args.to_vec(),
        });
        self.versions[slot.index()] = Some(system.version.to_string());
        name.to_string()
    }

    /// Blesses `slot`: its entry loses the counter, as `systemd-bless-boot good` does.
    /// Does not write to the disk.
    fn mark_successful(&mut self, slot: Slot) -> Result<(), BootControlError> {
        self.rename(slot, EntryName::blessed(slot))
    }

    /// Gives `slot` up: its entry counts one more try and none left, so systemd-boot does not
    /// try it again (as `systemd-bless-boot bad`). Does not write to the disk.
    fn give_up(&mut self, slot: Slot) -> Result<(), BootControlError> {
        let done = self.entry(slot).and_then(|e| e.name.counter).map_or(0, |c| c.done);
        self.rename(slot, EntryName { slot, counter: Some(TryCounter { left: 0, done: done + 1 }) })
    }

    /// Makes the queued changes on `files`, in one step.
    fn commit(self, files: &dyn EspFiles) -> Result<(), BootControlError> {
        if self.changes.is_empty() {
            return Ok(());
        }
        files.apply(&self.changes).map_err(BootControlError::io("writing the boot entries"))
    }
}

/// systemd-boot's boot control, on the ESP's files.
pub type SystemdBoot<F> = OnBootPartition<EspState, F>;

#[cfg(test)]
mod tests {
    use super::super::esp::MemoryEsp;
    use super::super::BootControl;
    use super::*;

    const A_BLESSED: &str = "title Cairn 0.1.0 (slot A)\nsort-key cairn\nversion 1\n\
        linux /cairn/a/vmlinuz\ninitrd /cairn/a/initramfs.zst\noptions cairn.slot=a\n";

    /// The ESP as image-builder leaves it: A blessed at generation 1, holding 0.1.0.
    fn fresh() -> SystemdBoot<MemoryEsp> {
        let esp = MemoryEsp::default();
        esp.apply(&[
            Change::Write { path: "/loader/entries/cairn-a.conf".into(), text: A_BLESSED.into() },
            Change::Write { path: "/cairn/a/version".into(), text: "0.1.0\n".into() },
        ])
        .unwrap();
        SystemdBoot::new(esp)
    }

    /// What systemd-boot does at boot: renames an entry.
    fn boot_renames(control: &SystemdBoot<MemoryEsp>, from: &str, to: &str) {
        let (dir, from, to) = (ENTRIES_DIR.into(), from.into(), to.into());
        control.files.apply(&[Change::Rename { dir, from, to }]).unwrap();
    }

    fn args() -> Vec<String> {
        vec!["console=ttyS0".into()]
    }

    #[test]
    fn choosing_a_slot_writes_its_version_then_renames_its_entry_into_place() {
        let control = fresh();
        let mut state = EspState::read(&control.files).unwrap();
        let system = SlotSystem { version: "0.2.0", kernel_args: &args() };
        assert_eq!(state.choose(Slot::B, system, 3).to_string(), "cairn-b+3.conf");
        let entry_b = "title Cairn 0.2.0 (slot B)\nsort-key cairn\nversion 2\n\
            linux /cairn/b/vmlinuz\ninitrd /cairn/b/initramfs.zst\n\
            options cairn.slot=b console=ttyS0\n";
        assert_eq!(
            state.changes(),
            [
                Change::Write { path: "/cairn/b/version".into(), text: "0.2.0\n".into() },
                Change::Write { path: "/loader/entries/b.new".into(), text: entry_b.into() },
                Change::Rename {
                    dir: "/loader/entries".into(),
                    from: "b.new".into(),
                    to: "cairn-b+3.conf".into()
                },
            ]
        );
        // Nothing is written before the commit.
        assert_eq!(control.files.paths(), ["/cairn/a/version", "/loader/entries/cairn-a.conf"]);
        state.commit(&control.files).unwrap();
        assert_eq!(
            control.files.paths(),
            [
                "/cairn/a/version",
                "/cairn/b/version",
                "/loader/entries/cairn-a.conf",
                "/loader/entries/cairn-b+3.conf"
            ]
        );
        assert_eq!(control.files.text("/loader/entries/cairn-b+3.conf").unwrap(), entry_b);
        assert_eq!(control.files.text("/loader/entries/cairn-a.conf").unwrap(), A_BLESSED);
        let state = control.state().unwrap();
        assert_eq!(state.next_boot, Some(Slot::B));
        let b = state.b.entry.unwrap();
        assert_eq!(
            (b.name.as_str(), b.counter),
            ("cairn-b+3.conf", Some(TryCounter { left: 3, done: 0 }))
        );
        assert_eq!((b.kernel_args, state.b.version.as_deref()), (args(), Some("0.2.0")));
        assert_eq!(state.a.entry.unwrap().kernel_args, Vec::<String>::new());
    }

    #[test]
    fn the_slot_chosen_last_boots_unless_its_tries_ran_out() {
        let control = fresh();
        assert_eq!(control.state().unwrap().next_boot, Some(Slot::A));
        let system = SlotSystem { version: "0.2.0", kernel_args: &args() };
        control.choose(Slot::B, system, 3).unwrap();
        // systemd-boot counted three failed boots: A again.
        boot_renames(&control, "cairn-b+3.conf", "cairn-b+0-3.conf");
        let state = control.state().unwrap();
        assert_eq!(state.next_boot, Some(Slot::A));
        assert!(state.b.entry.unwrap().is_given_up());
        // Chosen again: one entry for B, the newest, with fresh tries; then blessed.
        assert_eq!(control.choose(Slot::B, system, 3).unwrap(), "cairn-b+3.conf");
        control.bless(Slot::B).unwrap();
        assert_eq!(
            control.files.paths(),
            [
                "/cairn/a/version",
                "/cairn/b/version",
                "/loader/entries/cairn-a.conf",
                "/loader/entries/cairn-b.conf"
            ]
        );
        let text = control.files.text("/loader/entries/cairn-b.conf").unwrap();
        assert_eq!(generation_of(&text), Some(3));
        assert_eq!(control.state().unwrap().next_boot, Some(Slot::B));
        // Blessing a blessed slot changes nothing.
        let mut state = EspState::read(&control.files).unwrap();
        state.mark_successful(Slot::B).unwrap();
        assert_eq!(state.changes(), []);
    }

    #[test]
    fn a_slot_given_up_counts_one_more_try_and_none_left() {
        let control = fresh();
        let system = SlotSystem { version: "0.2.0", kernel_args: &[] };
        control.choose(Slot::B, system, 3).unwrap();
        boot_renames(&control, "cairn-b+3.conf", "cairn-b+2-1.conf");
        let mut state = EspState::read(&control.files).unwrap();
        state.give_up(Slot::B).unwrap();
        assert_eq!(
            state.changes(),
            [Change::Rename {
                dir: "/loader/entries".into(),
                from: "cairn-b+2-1.conf".into(),
                to: "cairn-b+0-2.conf".into()
            }]
        );
        state.commit(&control.files).unwrap();
        assert_eq!(control.state().unwrap().next_boot, Some(Slot::A));
        let empty = SystemdBoot::new(MemoryEsp::default());
        assert!(matches!(empty.bless(Slot::B), Err(BootControlError::NoEntry(Slot::B))));
    }

    #[test]
    fn a_retired_slot_has_no_entry_nor_version_but_keeps_its_boot_files() {
        let control = fresh();
        control.install_file(Slot::A, "vmlinuz", &mut &b"kernel"[..], &mut |_| {}).unwrap();
        let mut state = EspState::read(&control.files).unwrap();
        state.retire(Slot::A);
        assert_eq!(
            state.changes(),
            [
                Change::Remove("/loader/entries/cairn-a.conf".into()),
                Change::Remove("/cairn/a/version".into())
            ]
        );
        state.commit(&control.files).unwrap();
        assert_eq!(control.files.paths(), ["/cairn/a/vmlinuz"]);
        assert_eq!(control.state().unwrap(), BootState::default());
    }

    #[test]
    fn only_cairn_entries_count_and_the_newest_of_two_wins() {
        let control = fresh();
        let b = |generation: u64| BootEntry::for_slot(Slot::B, "0.2.0", generation, &[]).render();
        control
            .files
            .apply(&[
                Change::Write {
                    path: "/loader/entries/other.conf".into(),
                    text: "version 9\n".into(),
                },
                Change::Write { path: "/loader/entries/cairn-b.conf".into(), text: b(4) },
                Change::Write { path: "/loader/entries/cairn-b+1.conf".into(), text: b(5) },
            ])
            .unwrap();
        let state = control.state().unwrap();
        assert_eq!(state.b.entry.unwrap().name, "cairn-b+1.conf");
        assert_eq!(state.next_boot, Some(Slot::B));
        // Choosing B again leaves one entry of B.
        control.choose(Slot::B, SlotSystem { version: "0.2.0", kernel_args: &[] }, 2).unwrap();
        let entries: Vec<String> =
            control.files.paths().into_iter().filter(|p| p.contains("entries")).collect();
        assert_eq!(
            entries,
            [
                "/loader/entries/cairn-a.conf",
                "/loader/entries/cairn-b+2.conf",
                "/loader/entries/other.conf"
            ]
        );
    }
}
