//! Where the root filesystem comes from, as the kernel command line says: stage 1 mounts it,
//! stage 2 finds the boot disk by it (or knows there is none).
//!
//! - `cairn.slot=a|b`: the squashfs in that slot's ROOT partition.
//! - `cairn.root=initramfs cairn.root.sha256=HEX`: a diskless (netboot) node's root, the
//!   squashfs the initramfs carries; stage 1 mounts it only if it has that hash.

use cairn_api::bundle::{hex, sha256_from_hex};
use cairn_api::image::{
    Slot, INITRAMFS_ROOT_PATH, ROOT_ARG, ROOT_IN_INITRAMFS, ROOT_SHA256_ARG, SLOT_ARG,
};

use super::cmdline;

/// Where the root filesystem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// The squashfs in the ROOT partition of the slot booted.
    SlotPartition(Slot),
    /// The squashfs the initramfs carries at [`INITRAMFS_ROOT_PATH`], which must hash to
    /// `sha256`: a diskless node, with no slots.
    Initramfs {
        /// The SHA-256 the command line names.
        sha256: [u8; 32],
    },
}

/// The kernel command line names no root Cairn can mount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootSourceError {
    /// Neither a slot nor another root.
    #[error("the kernel command line names no root: neither {SLOT_ARG}=a|b nor {ROOT_ARG}={ROOT_IN_INITRAMFS}")]
    Missing,
    /// A root Cairn does not know.
    #[error("{ROOT_ARG}={0:?}: the only root it may name is {ROOT_IN_INITRAMFS:?}")]
    Unknown(String),
    /// A root in the initramfs without a valid hash to check it against.
    #[error("{ROOT_ARG}={ROOT_IN_INITRAMFS} needs {ROOT_SHA256_ARG}= and 64 hex digits, the SHA-256 of {INITRAMFS_ROOT_PATH}")]
    NoHash,
}

impl RootSource {
    /// The root the kernel command line `cmdline` names.
    pub fn from_cmdline(cmdline: &str) -> Result<RootSource, RootSourceError> {
        match cmdline::value(cmdline, ROOT_ARG) {
            Some(ROOT_IN_INITRAMFS) => cmdline::value(cmdline, ROOT_SHA256_ARG)
                .and_then(sha256_from_hex)
                .map(|sha256| RootSource::Initramfs { sha256 })
                .ok_or(RootSourceError::NoHash),
            Some(other) => Err(RootSourceError::Unknown(other.to_string())),
            None => cmdline::slot(cmdline)
                .map(RootSource::SlotPartition)
                .ok_or(RootSourceError::Missing),
        }
    }

    /// The root this kernel was booted with, per `/proc/cmdline`.
    pub fn current() -> Option<RootSource> {
        let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
        RootSource::from_cmdline(&cmdline).ok()
    }
}

impl std::fmt::Display for RootSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootSource::SlotPartition(slot) => write!(f, "slot {slot}"),
            RootSource::Initramfs { sha256 } => {
                write!(f, "the initramfs (diskless, root sha256 {})", hex(sha256))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_names_the_slot_whose_partition_is_the_root() {
        let root = RootSource::from_cmdline("quiet cairn.slot=b console=ttyS0").unwrap();
        assert_eq!(root, RootSource::SlotPartition(Slot::B));
        assert_eq!(root.to_string(), "slot B");
        assert_eq!(RootSource::from_cmdline("quiet"), Err(RootSourceError::Missing));
    }

    #[test]
    fn a_root_in_the_initramfs_comes_with_its_hash() {
        let digest = "00ff".repeat(16);
        let root =
            RootSource::from_cmdline(&format!("cairn.root=initramfs cairn.root.sha256={digest}"))
                .unwrap();
        let mut sha256 = [0u8; 32];
        sha256.iter_mut().skip(1).step_by(2).for_each(|b| *b = 0xff);
        assert_eq!(root, RootSource::Initramfs { sha256 });
        assert!(root.to_string().contains(&digest), "{root}");
        // It wins over a slot: a netboot entry may be written beside a disk's arguments.
        let both = format!("cairn.slot=a cairn.root=initramfs cairn.root.sha256={digest}");
        assert_eq!(RootSource::from_cmdline(&both), Ok(root));
    }

    #[test]
    fn a_root_in_the_initramfs_without_a_valid_hash_is_refused() {
        for cmdline in [
            "cairn.root=initramfs",
            "cairn.root=initramfs cairn.root.sha256=abc",
            &format!("cairn.root=initramfs cairn.root.sha256={}", "g".repeat(64)),
            &format!("cairn.root=initramfs cairn.root.sha256={}", "é".repeat(32)),
            &format!("cairn.root=initramfs cairn.root.sha256={}", "+f".repeat(32)),
        ] {
            assert_eq!(
                RootSource::from_cmdline(cmdline),
                Err(RootSourceError::NoHash),
                "{cmdline}"
            );
        }
        assert_eq!(
            RootSource::from_cmdline("cairn.root=/dev/sda2"),
            Err(RootSourceError::Unknown("/dev/sda2".into()))
        );
    }
}
