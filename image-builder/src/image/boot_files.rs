//! The boot files step: the boot partition's tree, as the board's `[boot]` describes it:
//! the bootloader's files taken from the packages, the bootloader's configuration (systemd-
//! boot's loader.conf and slot A's entry, or U-Boot's boot script and both copies of its
//! environment), and slot A's kernel, initramfs and version.

use cairn_api::arch::Arch;
use cairn_api::board::{Boot, Bootloader};
use cairn_api::disk::boot_entry::{
    version_path, BootEntry, LoaderConf, ENTRIES_DIR, LOADER_CONF_PATH,
};
use cairn_api::disk::entry_name::EntryName;
use cairn_api::disk::uboot_state::{ScriptState, ENV_COPIES};
use cairn_api::image::Slot;

use super::ImageError;
use crate::rootfs::RootfsError;
use crate::tree::{FileTree, Node};
use crate::uboot::{boot_script, BOOT_SCRIPT_PATH};

/// What slot A of a fresh image boots.
pub struct SlotA<'a> {
    /// The system's version.
    pub version: &'a str,
    /// The kernel image.
    pub kernel: &'a [u8],
    /// The compressed initramfs.
    pub initramfs: &'a [u8],
    /// The kernel command line after the slot's own argument.
    pub kernel_args: &'a [String],
}

/// The boot partition of a fresh `arch` image booting slot A with `boot`'s bootloader, its
/// files taken from `pool`.
pub fn build(
    arch: Arch,
    boot: &Boot,
    pool: &FileTree,
    slot_a: &SlotA<'_>,
) -> Result<FileTree, ImageError> {
    let mut tree = FileTree::new();
    for file in &boot.files {
        let Some(Node::File { data, .. }) = pool.get(&file.from) else {
            return Err(ImageError::Rootfs(RootfsError::Missing {
                path: file.from.clone(),
                needed_by: Some("the boot partition".into()),
            }));
        };
        for to in &file.to {
            tree.file(to, 0o644, data.clone())?;
        }
    }
    // The image's slot A is generation 1: every slot installed later goes before it.
    let entry = BootEntry::for_slot(Slot::A, slot_a.version, 1, slot_a.kernel_args);
    match boot.bootloader {
        Bootloader::SystemdBoot => {
            tree.file(LOADER_CONF_PATH, 0o644, LoaderConf { timeout_seconds: 0 }.render())?;
            // A fresh image has nothing to roll back to: slot A's entry starts blessed.
            let name = EntryName::blessed(entry.slot);
            tree.file(format!("{ENTRIES_DIR}/{name}"), 0o644, entry.render())?;
        }
        Bootloader::UBoot => {
            let script = boot_script(arch).map_err(|e| ImageError::BootPartition(e.to_string()))?;
            tree.file(BOOT_SCRIPT_PATH, 0o644, script)?;
            // Both copies alike (copy 0 wins a tie): a later write overwrites a file in place
            // instead of creating one.
            let state = ScriptState::first(Slot::A, slot_a.kernel_args)
                .render()
                .map_err(|e| ImageError::BootPartition(format!("{}: {e}", ENV_COPIES[0])))?;
            for copy in ENV_COPIES {
                tree.file(copy, 0o644, state.clone())?;
            }
        }
    }
    tree.file(&entry.linux, 0o644, slot_a.kernel.to_vec())?;
    tree.file(&entry.initrd, 0o644, slot_a.initramfs.to_vec())?;
    tree.file(version_path(Slot::A), 0o644, format!("{}\n", slot_a.version))?;
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_api::board::BootFile;

    fn boot(from: &str) -> Boot {
        Boot {
            bootloader: Bootloader::SystemdBoot,
            files: vec![BootFile {
                from: from.into(),
                to: vec!["/EFI/BOOT/BOOTX64.EFI".into(), "/EFI/systemd/systemd-bootx64.efi".into()],
            }],
        }
    }

    #[test]
    fn a_systemd_boot_partition_boots_slot_a() {
        let mut pool = FileTree::new();
        pool.file("/usr/lib/systemd/boot/efi/systemd-bootx64.efi", 0o644, "efi").unwrap();
        let args = ["console=ttyS0".to_string()];
        let slot_a = SlotA { version: "1.2.3", kernel: b"k", initramfs: b"i", kernel_args: &args };
        let tree = build(
            Arch::X86_64,
            &boot("/usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
            &pool,
            &slot_a,
        )
        .unwrap();
        let file = |path: &str| match tree.get(path) {
            Some(Node::File { data, .. }) => String::from_utf8(data.clone()).unwrap(),
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(file("/EFI/BOOT/BOOTX64.EFI"), "efi");
        assert_eq!(file("/EFI/systemd/systemd-bootx64.efi"), "efi");
        assert_eq!(file("/loader/loader.conf"), "default cairn-*\ntimeout 0\n");
        let entry = file("/loader/entries/cairn-a.conf");
        assert!(entry.contains("version 1\n"), "{entry}");
        assert!(entry.contains("options cairn.slot=a console=ttyS0\n"), "{entry}");
        assert_eq!(
            (file("/cairn/a/vmlinuz"), file("/cairn/a/initramfs.zst")),
            ("k".into(), "i".into())
        );
        assert_eq!(file("/cairn/a/version"), "1.2.3\n");
    }

    #[test]
    fn a_u_boot_partition_boots_slot_a_from_both_copies_of_its_environment() {
        let boot = Boot { bootloader: Bootloader::UBoot, files: vec![] };
        let args = ["console=ttyAMA0,115200".to_string()];
        let slot_a = SlotA { version: "1.2.3", kernel: b"k", initramfs: b"i", kernel_args: &args };
        let tree = build(Arch::Arm64, &boot, &FileTree::new(), &slot_a).unwrap();
        let file = |path: &str| match tree.get(path) {
            Some(Node::File { data, .. }) => data.clone(),
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(file(BOOT_SCRIPT_PATH), boot_script(Arch::Arm64).unwrap());
        let copies = ENV_COPIES.map(file);
        assert_eq!(copies[0], copies[1]);
        let state = ScriptState::parse(&copies[0]).unwrap();
        assert_eq!(state, ScriptState::first(Slot::A, &args));
        assert_eq!(file("/cairn/a/vmlinuz"), b"k");
        assert!(tree.get(LOADER_CONF_PATH).is_none());
        // x86_64 boots through UEFI: no U-Boot script for it.
        let err = build(Arch::X86_64, &boot, &FileTree::new(), &slot_a).unwrap_err();
        assert!(err.to_string().contains("boot partition"), "{err}");
    }

    #[test]
    fn a_boot_file_missing_from_the_packages_is_named() {
        let slot_a = SlotA { version: "1.2.3", kernel: b"k", initramfs: b"i", kernel_args: &[] };
        let err =
            build(Arch::X86_64, &boot("/usr/lib/x.efi"), &FileTree::new(), &slot_a).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("/usr/lib/x.efi") && message.contains("boot partition"),
            "{message}"
        );
    }
}
