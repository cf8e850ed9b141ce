//! What a Cairn disk holds besides filesystems (DESIGN §2, §3), for the two programs that
//! write it: image-builder lays out a fresh image, machined grows it on first boot and (as
//! the updater) renames boot entries to try and bless a slot.
//!
//! - [`partition_table`]: the GPT: a fresh table for an image, partitions appended over
//!   the rest of the medium, the protective MBR kept in step.
//! - [`hybrid_mbr`]: the MBR of boards whose firmware reads only an MBR (the Raspberry Pi):
//!   the boot partition in it beside the GPT's protection.
//! - [`boot_entry`]: the Boot Loader Spec files systemd-boot reads (`loader.conf`, one
//!   entry per slot).
//! - [`entry_name`]: an entry's file name, which carries systemd-boot's try counter.
//! - [`uboot_env`]: U-Boot's binary environment file format.
//! - [`uboot_state`]: what the U-Boot boot script keeps in two such files on the boot
//!   partition: the slot to boot, its trial, each slot's command line.
//!
//! Behind the `disk` feature: `ctl` has no disks to edit and does not build the GPT code.

pub mod boot_entry;
pub mod entry_name;
pub mod hybrid_mbr;
pub mod partition_table;
pub mod uboot_env;
pub mod uboot_state;

use crate::image::Slot;

/// A slot as entry file names and ESP paths spell it: `a`, `b`.
fn slot_name(slot: Slot) -> &'static str {
    match slot {
        Slot::A => "a",
        Slot::B => "b",
    }
}
