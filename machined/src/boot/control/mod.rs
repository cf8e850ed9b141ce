//! Boot control (DESIGN §2): which slot the bootloader boots next, and how many tries it
//! gets, behind one seam, [`BootControl`], for the updater, the boot check, rollback and
//! `Version`.
//!
//! - [`systemd_boot`]: Boot Loader Spec entries on the ESP, with systemd-boot's try
//!   counters in their names (UEFI machines).
//! - [`uboot`]: Cairn's U-Boot boot script, whose state (slot, trial, command lines) is a
//!   U-Boot environment file in two copies on the boot partition (ARM boards).
//! - [`esp`]: the boot partition's FAT filesystem, behind a small trait.
//!
//! A node with no slots (PXE: the initramfs carries its root, upgrades are the server's
//! business) has no boot control: its updater has no slots and says why.
//!
//! As in Bottlerocket's signpost, each reads the bootloader's state into a value whose verbs
//! change nothing on disk ([`BootloaderState`]), then writes it in one commit step; one
//! [`OnBootPartition`] makes either a [`BootControl`].

pub mod esp;
pub mod systemd_boot;
pub mod uboot;

use std::io::{self, Read};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_api::disk::boot_entry::{slot_dir, version_path};
use cairn_api::disk::entry_name::TryCounter;
use cairn_api::image::{Bootloader, Slot};

use esp::{EspFiles, FatEsp};
use systemd_boot::SystemdBoot;
use uboot::UBoot;

/// Boot control by `bootloader` on the boot partition at `device`.
pub fn on_boot_partition(bootloader: Bootloader, device: PathBuf) -> Arc<dyn BootControl> {
    match bootloader {
        Bootloader::SystemdBoot => Arc::new(SystemdBoot::new(FatEsp::new(device))),
        Bootloader::UBoot => Arc::new(UBoot::new(FatEsp::new(device))),
    }
}

/// The bootloader the image names at `path` ([`cairn_api::image::BOOTLOADER_PATH`]):
/// systemd-boot when it names none, as images did before boards had other bootloaders.
pub fn image_bootloader(path: &Path) -> Result<Bootloader, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Bootloader::from_name(text.trim()).ok_or_else(|| {
            format!("{}: {:?} names no bootloader machined knows", path.display(), text.trim())
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Bootloader::SystemdBoot),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Boot control failed; what the bootloader boots is as it was before the failed step.
#[derive(Debug, thiserror::Error)]
pub enum BootControlError {
    /// Reading or writing the bootloader's files failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
    /// The slot has no boot entry to act on.
    #[error("slot {0} has no boot entry")]
    NoEntry(Slot),
    /// The bootloader's state is not in its format, or cannot be written in it.
    #[error("{what}: {reason}")]
    Invalid {
        /// What was being read or written.
        what: String,
        /// What is wrong.
        reason: String,
    },
}

impl BootControlError {
    /// An error of `what`, for `map_err`.
    fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> BootControlError {
        let what = what.into();
        move |source| BootControlError::Io { what, source }
    }
}

/// How the bootloader will boot a slot: its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotEntry {
    /// Where the bootloader keeps it, for messages (`cairn-b+2-1.conf`).
    pub name: String,
    /// The try counter while the slot is on trial; `None` once blessed.
    pub counter: Option<TryCounter>,
    /// The kernel arguments it boots with after the slot's own.
    pub kernel_args: Vec<String>,
}

impl SlotEntry {
    /// Whether the slot is on trial with no tries left: the bootloader boots the other slot.
    pub fn is_given_up(&self) -> bool {
        self.counter.is_some_and(|counter| counter.left == 0)
    }
}

/// What the bootloader knows of one slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotState {
    /// The version of the system it holds, if it holds one.
    pub version: Option<String>,
    /// Its entry, if the bootloader may boot it.
    pub entry: Option<SlotEntry>,
}

/// What the bootloader knows of the slots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootState {
    /// Slot A.
    pub a: SlotState,
    /// Slot B.
    pub b: SlotState,
    /// The slot the bootloader boots next, if any.
    pub next_boot: Option<Slot>,
}

impl BootState {
    /// The state of `slot`.
    pub fn slot(&self, slot: Slot) -> &SlotState {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }
}

/// The system a slot holds, as its boot entry names it.
#[derive(Debug, Clone, Copy)]
pub struct SlotSystem<'a> {
    /// Its version (semver).
    pub version: &'a str,
    /// The kernel arguments after the slot's own.
    pub kernel_args: &'a [String],
}

/// Which slot boots, and the slots' boot files.
pub trait BootControl: Send + Sync {
    /// What the bootloader knows of the slots.
    fn state(&self) -> Result<BootState, BootControlError>;
    /// Takes `slot` out of the bootloader's choice, and forgets its system, so its files
    /// can be rewritten.
    fn retire(&self, slot: Slot) -> Result<(), BootControlError>;
    /// Writes the boot file `name` of `slot` (`vmlinuz`, `initramfs.zst`) with what
    /// `content` yields; `written` hears of each piece. Returns the bytes written.
    fn install_file(
        &self,
        slot: Slot,
        name: &str,
        content: &mut dyn Read,
        written: &mut dyn FnMut(usize),
    ) -> Result<u64, BootControlError>;
    /// Makes `slot`, holding `system`, the next boot's, with `tries` boots to come up
    /// healthy. Returns how the bootloader names its entry.
    fn choose(
        &self,
        slot: Slot,
        system: SlotSystem<'_>,
        tries: u32,
    ) -> Result<String, BootControlError>;
    /// Ends `slot`'s trial: it stays the one booted.
    fn bless(&self, slot: Slot) -> Result<(), BootControlError>;
    /// Ends `slot`'s trial as a failure: the bootloader boots the other slot.
    fn give_up(&self, slot: Slot) -> Result<(), BootControlError>;
}

/// The versions in the slots' version files, A then B (`None` for a missing or empty one).
fn read_versions(files: &dyn EspFiles) -> Result<[Option<String>; 2], BootControlError> {
    let mut versions = [None, None];
    for slot in [Slot::A, Slot::B] {
        let path = version_path(slot);
        let text = files.read_file(&path).map_err(BootControlError::io(path))?;
        versions[slot.index()] = text.map(|t| t.trim().to_string()).filter(|v| !v.is_empty());
    }
    Ok(versions)
}

/// Writes the boot file `name` of `slot` under [`slot_dir`], as [`BootControl::install_file`].
fn install_slot_file(
    files: &dyn EspFiles,
    slot: Slot,
    name: &str,
    content: &mut dyn Read,
    written: &mut dyn FnMut(usize),
) -> Result<u64, BootControlError> {
    let path = format!("{}/{name}", slot_dir(slot));
    files.write_file(&path, content, written).map_err(BootControlError::io(path))
}

/// A bootloader's state, as its files on the boot partition say: read once, changed by verbs
/// that touch no disk, written in one [`commit`](BootloaderState::commit) (Bottlerocket's
/// signpost does the same).
pub trait BootloaderState: Sized {
    /// Reads the state from the boot partition's `files`.
    fn read(files: &dyn EspFiles) -> Result<Self, BootControlError>;
    /// The state as boot control reports it.
    fn boot_state(&self) -> BootState;
    /// Takes `slot` out of the bootloader's choice and forgets its system.
    fn retire(&mut self, slot: Slot);
    /// Makes `slot`, holding `system`, the next boot's with `tries` boots; returns how the
    /// bootloader names its entry.
    fn choose(&mut self, slot: Slot, system: SlotSystem<'_>, tries: u32) -> String;
    /// Ends `slot`'s trial: it stays the one booted.
    fn mark_successful(&mut self, slot: Slot) -> Result<(), BootControlError>;
    /// Ends `slot`'s trial as a failure: the other slot boots.
    fn give_up(&mut self, slot: Slot) -> Result<(), BootControlError>;
    /// Makes the changes on `files`.
    fn commit(self, files: &dyn EspFiles) -> Result<(), BootControlError>;
}

/// Boot control by a bootloader whose state `S` is files on the boot partition `files`.
pub struct OnBootPartition<S, F> {
    files: F,
    bootloader: PhantomData<fn() -> S>,
}

impl<S: BootloaderState, F: EspFiles> OnBootPartition<S, F> {
    /// Boot control on the boot partition's `files`.
    pub fn new(files: F) -> Self {
        OnBootPartition { files, bootloader: PhantomData }
    }

    /// Reads the state, runs `verb` on it and commits it.
    fn change<T>(
        &self,
        verb: impl FnOnce(&mut S) -> Result<T, BootControlError>,
    ) -> Result<T, BootControlError> {
        let mut state = S::read(&self.files)?;
        let result = verb(&mut state)?;
        state.commit(&self.files)?;
        Ok(result)
    }
}

impl<S: BootloaderState, F: EspFiles> BootControl for OnBootPartition<S, F> {
    fn state(&self) -> Result<BootState, BootControlError> {
        Ok(S::read(&self.files)?.boot_state())
    }

    fn retire(&self, slot: Slot) -> Result<(), BootControlError> {
        self.change(|state| {
            state.retire(slot);
            Ok(())
        })
    }

    fn install_file(
        &self,
        slot: Slot,
        name: &str,
        content: &mut dyn Read,
        written: &mut dyn FnMut(usize),
    ) -> Result<u64, BootControlError> {
        install_slot_file(&self.files, slot, name, content, written)
    }

    fn choose(
        &self,
        slot: Slot,
        system: SlotSystem<'_>,
        tries: u32,
    ) -> Result<String, BootControlError> {
        self.change(|state| Ok(state.choose(slot, system, tries)))
    }

    fn bless(&self, slot: Slot) -> Result<(), BootControlError> {
        self.change(|state| state.mark_successful(slot))
    }

    fn give_up(&self, slot: Slot) -> Result<(), BootControlError> {
        self.change(|state| state.give_up(slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_names_its_bootloader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootloader");
        // Images from before boards had other bootloaders name none.
        assert_eq!(image_bootloader(&path), Ok(Bootloader::SystemdBoot));
        std::fs::write(&path, "u-boot\n").unwrap();
        assert_eq!(image_bootloader(&path), Ok(Bootloader::UBoot));
        std::fs::write(&path, "systemd-boot\n").unwrap();
        assert_eq!(image_bootloader(&path), Ok(Bootloader::SystemdBoot));
        std::fs::write(&path, "grub\n").unwrap();
        let err = image_bootloader(&path).unwrap_err();
        assert!(err.contains("bootloader") && err.contains("\"grub\""), "{err}");
    }
}
