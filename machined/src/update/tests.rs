//! The updater on a node made of files: an ESP image, two ROOT files, a root directory.

use std::path::{Path, PathBuf};

use cairn_api::arch::Arch;
use cairn_api::bundle::testing::{self, bundle, key, Rng};
use cairn_api::bundle::SigningKey;
use cairn_api::disk::boot_entry::{version_path, BootEntry};
use cairn_api::image::Slot;
use sha2::{Digest, Sha256};

use super::esp::{format_for_tests, Esp};
use super::record::UpdateState;
use super::{Phase, Slots, UpdateError, Updater};
use crate::layout::NodeLayout;

/// A node running 0.2.0 from slot A, trusting `trusted`.
struct Node {
    dir: tempfile::TempDir,
    updater: Updater,
}

impl Node {
    fn new(trusted: &SigningKey) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for (path, text) in [
            ("etc/os-release", "ID=cairn\nVERSION_ID=0.2.0\nVARIANT_ID=generic-x86_64\n".into()),
            ("usr/lib/cairn/update-keys", format!("{}\n", trusted.public().to_base64())),
        ] {
            std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            std::fs::write(root.join(path), text).unwrap();
        }
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::fs::create_dir_all(root.join("system/state")).unwrap();
        format_for_tests(&dir.path().join("esp.img"), 40 << 20);
        let esp = Esp::new(dir.path().join("esp.img"));
        let entry = BootEntry::for_slot(Slot::A, "0.2.0", 1, &[]);
        esp.write_file("/loader/entries/cairn-a.conf", &mut entry.render().as_bytes(), &mut |_| {})
            .unwrap();
        esp.write_file(&version_path(Slot::A), &mut &b"0.2.0\n"[..], &mut |_| {}).unwrap();
        let roots: [PathBuf; 2] = [dir.path().join("root-a"), dir.path().join("root-b")];
        std::fs::write(&roots[0], vec![1u8; 1 << 20]).unwrap();
        std::fs::write(&roots[1], vec![0u8; 1 << 20]).unwrap();
        let slots = Slots { esp, roots, booted: Slot::A };
        let updater = Updater::new(&NodeLayout::new(&root), Ok(slots));
        Node { dir, updater }
    }

    /// Hashes of everything the node boots from.
    fn disks(&self) -> Vec<String> {
        ["esp.img", "root-a", "root-b"]
            .iter()
            .map(|f| cairn_api::bundle::hex(&Sha256::digest(std::fs::read(self.path(f)).unwrap())))
            .collect()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn install(&self, bytes: &[u8], force: bool) -> Result<super::Chosen, UpdateError> {
        self.updater.install(bytes, &[], force, &mut |_| {})
    }

    /// The node after a reboot into `slot`, which runs `version`.
    fn rebooted(self, slot: Slot, version: &str) -> Node {
        let root = self.path("root");
        let release = format!("ID=cairn\nVERSION_ID={version}\nVARIANT_ID=generic-x86_64\n");
        std::fs::write(root.join("etc/os-release"), release).unwrap();
        let roots = [self.path("root-a"), self.path("root-b")];
        let slots = Slots { esp: Esp::new(self.path("esp.img")), roots, booted: slot };
        let updater = Updater::new(&NodeLayout::new(&root), Ok(slots));
        Node { dir: self.dir, updater }
    }

    fn esp(&self) -> &Esp {
        &self.updater.slots().unwrap().esp
    }
}

fn starts_with(path: &Path, bytes: &[u8]) -> bool {
    std::fs::read(path).unwrap().starts_with(bytes)
}

#[test]
fn an_install_writes_the_other_slot_and_puts_it_on_trial() {
    let key = key();
    let node = Node::new(&key);
    let rootfs: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let mut phases = Vec::new();
    let chosen = node
        .updater
        .install(bundle(&key, "0.3.0", Arch::X86_64, &rootfs).as_slice(), &[], false, &mut |p| {
            phases.push((p.phase, p.done, p.total))
        })
        .unwrap();
    assert_eq!((chosen.slot, chosen.version.as_str()), (Slot::B, "0.3.0"));
    assert!(starts_with(&node.path("root-b"), &rootfs));
    assert!(starts_with(&node.path("root-a"), &[1u8; 1000]));
    let state = node.esp().boot_state().unwrap();
    assert_eq!(state.next_boot(), Some(Slot::B));
    let b = state.entry(Slot::B).unwrap();
    assert_eq!((b.file.as_str(), b.generation), ("cairn-b+3.conf", 2));
    assert_eq!(node.esp().entry_options(&b.file).unwrap(), "cairn.slot=b console=ttyS0");
    assert_eq!(node.esp().slot_version(Slot::B).unwrap().as_deref(), Some("0.3.0"));
    // Received first, then written, each to its end.
    let last = |phase| phases.iter().rev().find(|p| p.0 == phase).copied().unwrap();
    assert_eq!(phases[0].0, Phase::Receiving);
    let (_, done, total) = last(Phase::Writing);
    assert_eq!((done, total), (total, rootfs.len() as u64 + 15));
    let (_, done, total) = last(Phase::Receiving);
    assert_eq!(done, total);
    let record = node.updater.record().load().unwrap();
    assert_eq!((record.state, record.slot), (UpdateState::Pending, Slot::B));
    assert_eq!((record.from_version.as_str(), record.to_version.as_str()), ("0.2.0", "0.3.0"));
    assert!(!node.dir.path().join("root/var/lib/cairn/update").exists(), "the spool is gone");
    assert_eq!(node.updater.status().other_version.as_deref(), Some("0.3.0"));
}

#[test]
fn refused_bundles_change_nothing_the_node_boots() {
    let key = key();
    let node = Node::new(&key);
    // Incompressible, so the rootfs is most of the bundle and the flip lands in it.
    let rootfs = Rng(1).bytes(300_000);
    let good = bundle(&key, "0.3.0", Arch::X86_64, &rootfs);
    let before = node.disks();
    let mut flipped = good.clone();
    let last = flipped.len() - 2048;
    flipped[last - 10] ^= 1;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "unknown key",
            bundle(&testing::key(), "0.3.0", Arch::X86_64, &rootfs),
            "not signed by a trusted key",
        ),
        ("truncated", good[..good.len() / 2].to_vec(), "bundle refused"),
        ("flipped byte", flipped, "rootfs: chunk 0"),
        ("older", bundle(&key, "0.1.9", Arch::X86_64, &rootfs), "older than the running 0.2.0"),
        ("wrong arch", bundle(&key, "0.3.0", Arch::Arm64, &rootfs), "the bundle is for arm64"),
    ];
    for (what, bytes, says) in cases {
        let error = node.install(&bytes, false).unwrap_err().to_string();
        assert!(error.contains(says), "{what}: {error}");
        assert_eq!(node.disks(), before, "{what} changed the disks");
        assert_eq!(node.updater.record().load(), None, "{what}");
    }
}

#[test]
fn a_slot_on_trial_keeps_its_fallback_until_blessed() {
    let key = key();
    let node = Node::new(&key);
    node.install(&bundle(&key, "0.3.0", Arch::X86_64, b"root 0.3.0"), false).unwrap();
    // systemd-boot counted the boot into B down: B runs on trial, A is the fallback.
    let node = node.rebooted(Slot::B, "0.3.0");
    node.esp().rename_entry("cairn-b+3.conf", &"cairn-b+2-1.conf".parse().unwrap()).unwrap();
    let before = node.disks();
    let error = node.install(&bundle(&key, "0.4.0", Arch::X86_64, b"root 0.4.0"), false);
    let error = error.unwrap_err().to_string();
    assert!(error.starts_with("slot B is on trial and slot A holds the system"), "{error}");
    assert_eq!(node.disks(), before);
    // Blessed, B is the proven system and A may take the next update.
    node.esp().rename_entry("cairn-b+2-1.conf", &"cairn-b.conf".parse().unwrap()).unwrap();
    let chosen = node.install(&bundle(&key, "0.4.0", Arch::X86_64, b"root 0.4.0"), false);
    assert_eq!(chosen.unwrap().slot, Slot::A);
    assert!(starts_with(&node.path("root-a"), b"root 0.4.0"));
}

#[test]
fn rollback_needs_a_system_in_the_other_slot() {
    let key = key();
    let node = Node::new(&key);
    let error = node.updater.rollback().unwrap_err().to_string();
    assert_eq!(error, "slot B holds no system to roll back to");
    node.install(&bundle(&key, "0.3.0", Arch::X86_64, b"root"), false).unwrap();
    // Installed, then given up by systemd-boot: choosing it again gives it fresh tries.
    node.esp().rename_entry("cairn-b+3.conf", &"cairn-b+0-3.conf".parse().unwrap()).unwrap();
    assert_eq!(node.esp().boot_state().unwrap().next_boot(), Some(Slot::A));
    let chosen = node.updater.rollback().unwrap();
    assert_eq!((chosen.slot, chosen.version.as_str()), (Slot::B, "0.3.0"));
    let state = node.esp().boot_state().unwrap();
    assert_eq!(state.next_boot(), Some(Slot::B));
    assert_eq!(state.entry(Slot::B).unwrap().file, "cairn-b+3.conf");
    assert_eq!(node.esp().entry_options("cairn-b+3.conf").unwrap(), "cairn.slot=b console=ttyS0");
}

#[test]
fn a_node_without_slots_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let updater = Updater::new(&NodeLayout::new(dir.path()), Err("no slots here".into()));
    let error = updater.install(&b""[..], &[], false, &mut |_| {}).unwrap_err();
    assert_eq!(error.to_string(), "this node cannot switch slots: no slots here");
    assert_eq!(updater.status().booted, None);
}

#[test]
fn only_the_architectures_bundles_name_are_running_ones() {
    assert_eq!(super::arch_named("x86_64"), Some(Arch::X86_64));
    assert_eq!(super::arch_named("aarch64"), Some(Arch::Arm64));
    assert_eq!(super::arch_named("arm"), Some(Arch::Armv7));
    assert_eq!(super::arch_named("riscv64"), None);
    assert!(super::running_arch().is_some(), "the tests run on an architecture Cairn has");
}
