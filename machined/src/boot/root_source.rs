//! Where the root filesystem comes from, as the kernel command line says: stage 1 mounts it,
//! stage 2 finds the boot disk by it.
//!
//! Today a root is always a slot's ROOT partition (`cairn.slot=a|b`). A diskless PXE node's
//! root will be a squashfs inside the initramfs itself: another variant, chosen by its own
//! kernel argument, that stage 1 mounts without waiting for a disk.

use cairn_api::image::Slot;

use super::cmdline;

/// Where the root filesystem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// The squashfs in the ROOT partition of the slot booted.
    SlotPartition(Slot),
}

impl RootSource {
    /// The root the kernel command line `cmdline` names, if it names one.
    pub fn from_cmdline(cmdline: &str) -> Option<RootSource> {
        cmdline::slot(cmdline).map(RootSource::SlotPartition)
    }

    /// The root this kernel was booted with, per `/proc/cmdline`.
    pub fn current() -> Option<RootSource> {
        std::fs::read_to_string("/proc/cmdline").ok().and_then(|c| RootSource::from_cmdline(&c))
    }

    /// The label of the partition that holds it.
    pub fn partition_label(self) -> &'static str {
        match self {
            RootSource::SlotPartition(slot) => slot.root_label(),
        }
    }
}

impl std::fmt::Display for RootSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootSource::SlotPartition(slot) => write!(f, "slot {slot}"),
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
        assert_eq!((root.partition_label(), root.to_string()), ("ROOT-B", "slot B".into()));
        assert_eq!(RootSource::from_cmdline("quiet"), None);
    }
}
