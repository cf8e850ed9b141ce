//! The boot files step: the boot partition's tree, as the board's `[boot]` describes it:
//! the bootloader's and firmware's files taken from the packages, the kernel's device trees
//! and the board's own files (the Raspberry Pi's `config.txt`) the board names, the
//! bootloader's configuration (systemd-boot's loader.conf and slot A's entry, or U-Boot's
//! boot script and both copies of its environment), and slot A's kernel, initramfs and
//! version.

use std::path::Path;

use cairn_api::arch::Arch;
use cairn_api::board::{Boot, Bootloader};
use cairn_api::disk::boot_entry::{
    version_path, BootEntry, LoaderConf, ENTRIES_DIR, LOADER_CONF_PATH,
};
use cairn_api::disk::entry_name::EntryName;
use cairn_api::disk::uboot_state::{ScriptState, ENV_COPIES};
use cairn_api::image::Slot;

use super::ImageError;
use crate::file_name;
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

/// Where the files `[boot]` names come from.
pub struct BootSources<'a> {
    /// The board's packages, unpacked: `[boot] files`.
    pub packages: &'a FileTree,
    /// The kernel's device trees by their path under its device-tree directory:
    /// `[boot] device_trees`.
    pub device_tree: &'a dyn Fn(&str) -> Option<&'a [u8]>,
}

/// The boot partition of a fresh `arch` image booting slot A with `boot`'s bootloader, its
/// files taken from `sources` and the board's folder.
pub fn build(
    arch: Arch,
    boot: &Boot,
    sources: &BootSources<'_>,
    slot_a: &SlotA<'_>,
) -> Result<FileTree, ImageError> {
    let pool = sources.packages;
    let mut tree = FileTree::new();
    for path in &boot.device_trees {
        let data = (sources.device_tree)(path).ok_or_else(|| {
            ImageError::BootPartition(format!(
                "the kernel package has no device tree {path} (boot.device_trees)"
            ))
        })?;
        tree.file(format!("/{}", file_name(Path::new(path))), 0o644, data.to_vec())?;
    }
    for path in &boot.board_files {
        let data =
            std::fs::read(path).map_err(|source| ImageError::Io { path: path.clone(), source })?;
        tree.file(format!("/{}", file_name(path)), 0o644, data)?;
    }
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
            device_trees: vec![],
            board_files: vec![],
        }
    }

    fn no_device_tree<'a>(_: &str) -> Option<&'a [u8]> {
        None
    }

    fn from_packages(pool: &FileTree) -> BootSources<'_> {
        BootSources { packages: pool, device_tree: &no_device_tree }
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
            &from_packages(&pool),
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
        let boot = Boot { bootloader: Bootloader::UBoot, ..boot("/x") };
        let boot = Boot { files: vec![], ..boot };
        let args = ["console=ttyAMA0,115200".to_string()];
        let slot_a = SlotA { version: "1.2.3", kernel: b"k", initramfs: b"i", kernel_args: &args };
        let empty = FileTree::new();
        let tree = build(Arch::Arm64, &boot, &from_packages(&empty), &slot_a).unwrap();
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
        let err = build(Arch::X86_64, &boot, &from_packages(&empty), &slot_a).unwrap_err();
        assert!(err.to_string().contains("boot partition"), "{err}");
    }

    #[test]
    fn a_boot_file_missing_from_the_packages_is_named() {
        let slot_a = SlotA { version: "1.2.3", kernel: b"k", initramfs: b"i", kernel_args: &[] };
        let empty = FileTree::new();
        let err = build(Arch::X86_64, &boot("/usr/lib/x.efi"), &from_packages(&empty), &slot_a)
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("/usr/lib/x.efi") && message.contains("boot partition"),
            "{message}"
        );
    }

    #[test]
    fn device_trees_and_board_files_go_to_the_partition_s_root() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.txt");
        std::fs::write(&config, "kernel=u-boot.bin\n").unwrap();
        let boot = Boot {
            bootloader: Bootloader::UBoot,
            files: vec![],
            device_trees: vec!["broadcom/bcm2837-rpi-3-b.dtb".into()],
            board_files: vec![config],
        };
        let device_tree =
            |path: &str| (path == "broadcom/bcm2837-rpi-3-b.dtb").then_some(&b"dtb"[..]);
        let empty = FileTree::new();
        let sources = BootSources { packages: &empty, device_tree: &device_tree };
        let slot_a = SlotA { version: "1", kernel: b"k", initramfs: b"i", kernel_args: &[] };
        let tree = build(Arch::Arm64, &boot, &sources, &slot_a).unwrap();
        let file = |path: &str| match tree.get(path) {
            Some(Node::File { data, .. }) => data.clone(),
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(file("/bcm2837-rpi-3-b.dtb"), b"dtb");
        assert_eq!(file("/config.txt"), b"kernel=u-boot.bin\n");
        let missing = Boot { device_trees: vec!["broadcom/none.dtb".into()], ..boot };
        let err = build(Arch::Arm64, &missing, &sources, &slot_a).unwrap_err().to_string();
        assert!(err.contains("no device tree broadcom/none.dtb (boot.device_trees)"), "{err}");
    }
}
