//! The updater on a node made of an ESP image, two roots in memory and a root directory.

use std::path::PathBuf;
use std::sync::Arc;

use cairn_api::arch::Arch;
use cairn_api::bundle::testing::{self, bundle, key, Rng};
use cairn_api::bundle::SigningKey;
use cairn_api::disk::boot_entry::{generation_of, BootEntry};
use cairn_api::image::Slot;
use sha2::{Digest, Sha256};

use super::record::UpdateState;
use super::slot_writer::MemorySlots;
use super::{Phase, Slots, UpdateError, Updater};
use crate::boot::control::esp::{format_for_tests, Change, EspFiles, FatEsp};
use crate::boot::control::systemd_boot::SystemdBoot;
use crate::boot::control::BootState;
use crate::files::layout::NodeLayout;

/// The updater of the node in `dir` with `roots`, booted from `slot`.
fn updater(dir: &std::path::Path, roots: &Arc<MemorySlots>, slot: Slot) -> Updater {
    let slots = Slots {
        control: Arc::new(SystemdBoot::new(FatEsp::new(dir.join("esp.img")))),
        roots: roots.clone(),
        booted: slot,
    };
    Updater::new(&NodeLayout::new(dir.join("root")), Ok(slots))
}

/// A node running 0.2.0 from slot A, trusting `trusted`.
struct Node {
    dir: tempfile::TempDir,
    roots: Arc<MemorySlots>,
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
        let entry = BootEntry::for_slot(Slot::A, "0.2.0", 1, &[]);
        FatEsp::new(dir.path().join("esp.img"))
            .apply(&[
                Change::Write { path: "/loader/entries/cairn-a.conf".into(), text: entry.render() },
                Change::Write { path: "/cairn/a/version".into(), text: "0.2.0\n".into() },
            ])
            .unwrap();
        let roots = Arc::new(MemorySlots::new(vec![1u8; 1 << 20], vec![0u8; 1 << 20]));
        let updater = updater(dir.path(), &roots, Slot::A);
        Node { dir, roots, updater }
    }

    /// Hashes of everything the node boots from.
    fn disks(&self) -> Vec<String> {
        let esp = std::fs::read(self.path("esp.img")).unwrap();
        [esp, self.roots.root(Slot::A), self.roots.root(Slot::B)]
            .iter()
            .map(|bytes| cairn_api::bundle::hex(&Sha256::digest(bytes)))
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
        let release = format!("ID=cairn\nVERSION_ID={version}\nVARIANT_ID=generic-x86_64\n");
        std::fs::write(self.path("root/etc/os-release"), release).unwrap();
        let updater = updater(self.dir.path(), &self.roots, slot);
        Node { updater, ..self }
    }

    /// What the bootloader knows.
    fn state(&self) -> BootState {
        self.updater.slots().unwrap().control.state().unwrap()
    }

    /// What systemd-boot does when it boots an entry: renames it.
    fn boot_renames(&self, from: &str, to: &str) {
        let (dir, from, to) = ("/loader/entries".into(), from.into(), to.into());
        FatEsp::new(self.path("esp.img")).apply(&[Change::Rename { dir, from, to }]).unwrap();
    }

    /// The text of the ESP file at `path`.
    fn esp_file(&self, path: &str) -> Option<String> {
        FatEsp::new(self.path("esp.img")).read_file(path).unwrap()
    }

    fn root_starts_with(&self, slot: Slot, bytes: &[u8]) -> bool {
        self.roots.root(slot).starts_with(bytes)
    }
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
    assert!(node.root_starts_with(Slot::B, &rootfs));
    assert!(node.root_starts_with(Slot::A, &[1u8; 1000]));
    let state = node.state();
    assert_eq!(state.next_boot, Some(Slot::B));
    assert_eq!(state.b.entry.unwrap().name, "cairn-b+3.conf");
    let entry = node.esp_file("/loader/entries/cairn-b+3.conf").unwrap();
    assert_eq!(
        entry,
        "title Cairn 0.3.0 (slot B)\nsort-key cairn\nversion 2\nlinux /cairn/b/vmlinuz\n\
         initrd /cairn/b/initramfs.zst\noptions cairn.slot=b console=ttyS0\n"
    );
    assert_eq!(node.esp_file("/cairn/b/version").as_deref(), Some("0.3.0\n"));
    assert_eq!(node.esp_file("/cairn/b/vmlinuz").as_deref(), Some("kernel"));
    assert_eq!(node.esp_file("/cairn/b/initramfs.zst").as_deref(), Some("initramfs"));
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
    node.boot_renames("cairn-b+3.conf", "cairn-b+2-1.conf");
    let before = node.disks();
    let error = node.install(&bundle(&key, "0.4.0", Arch::X86_64, b"root 0.4.0"), false);
    let error = error.unwrap_err().to_string();
    assert!(error.starts_with("slot B is on trial and slot A holds the system"), "{error}");
    assert_eq!(node.disks(), before);
    // Blessed, B is the proven system and A may take the next update.
    node.boot_renames("cairn-b+2-1.conf", "cairn-b.conf");
    let chosen = node.install(&bundle(&key, "0.4.0", Arch::X86_64, b"root 0.4.0"), false);
    assert_eq!(chosen.unwrap().slot, Slot::A);
    assert!(node.root_starts_with(Slot::A, b"root 0.4.0"));
}

#[test]
fn rollback_needs_a_system_in_the_other_slot() {
    let key = key();
    let node = Node::new(&key);
    let error = node.updater.rollback().unwrap_err().to_string();
    assert_eq!(error, "slot B holds no system to roll back to");
    node.install(&bundle(&key, "0.3.0", Arch::X86_64, b"root"), false).unwrap();
    // Installed, then given up by systemd-boot: choosing it again gives it fresh tries.
    node.boot_renames("cairn-b+3.conf", "cairn-b+0-3.conf");
    assert_eq!(node.state().next_boot, Some(Slot::A));
    let chosen = node.updater.rollback().unwrap();
    assert_eq!((chosen.slot, chosen.version.as_str()), (Slot::B, "0.3.0"));
    let state = node.state();
    assert_eq!(state.next_boot, Some(Slot::B));
    assert_eq!(state.b.entry.unwrap().name, "cairn-b+3.conf");
    let entry = node.esp_file("/loader/entries/cairn-b+3.conf").unwrap();
    assert!(entry.ends_with("options cairn.slot=b console=ttyS0\n"), "{entry}");
    assert_eq!(generation_of(&entry), Some(3));
}

#[test]
fn a_node_without_slots_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let updater = Updater::new(&NodeLayout::new(dir.path()), Err("no slots here".into()));
    let error = updater.install(&b""[..], &[], false, &mut |_| {}).unwrap_err();
    assert_eq!(error.to_string(), "this node cannot switch slots: no slots here");
    assert_eq!(updater.status().booted, None);
}
