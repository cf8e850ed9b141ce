//! The boards the QEMU suite boots: every board-specific fact the scenarios use, in one
//! table, and the one place that turns a board into a [`VmConfig`].

use std::path::{Path, PathBuf};

use cairn_api::arch::Arch;
use cairn_qemu::VmConfig;

/// What the QEMU scenarios need to know about a board.
#[derive(Debug)]
pub struct Board {
    /// image-builder's `--board`, and the scenarios' prefix (`scenario <name>/<scenario>`).
    pub name: &'static str,
    /// The image's architecture.
    pub arch: Arch,
    /// The disk image image-builder writes.
    pub image: &'static str,
    /// Its compressed copy.
    pub compressed_image: &'static str,
    /// The update bundle's file name before its version (`<prefix><version>.bundle`).
    pub bundle_prefix: &'static str,
    /// The node's disk, as its kernel names it.
    pub disk_device: &'static str,
    /// ROOT-A on that disk: the console names it when stage 1 finds its root.
    pub root_a_device: &'static str,
    /// ROOT-B on that disk.
    pub root_b_device: &'static str,
    /// STATE on that disk, once the first boot has made it.
    pub state_device: &'static str,
    /// The disk a user boots the image from: bigger than the image, so the first boot grows
    /// EPHEMERAL into it.
    pub disk_bytes: u64,
    /// The guest's memory.
    pub memory_mib: u32,
    /// The guest's virtual CPUs (as `cairn_qemu` starts it): what a VM costs the host.
    pub vm_cpus: usize,
    /// The kernel release the image boots starts with this.
    pub kernel_series: &'static str,
}

/// A PC: q35, OVMF, systemd-boot, a virtio disk.
pub const GENERIC_X86_64: Board = Board {
    name: "generic-x86_64",
    arch: Arch::X86_64,
    image: "cairn-x86_64.raw",
    compressed_image: "cairn-x86_64.raw.zst",
    bundle_prefix: "cairn-x86_64-",
    disk_device: "/dev/vda",
    root_a_device: "/dev/vda2",
    root_b_device: "/dev/vda3",
    state_device: "/dev/vda4",
    disk_bytes: 4 << 30,
    memory_mib: 1024,
    vm_cpus: 2,
    kernel_series: "6.12",
};

/// Every board the QEMU suite boots.
pub const BOARDS: &[&Board] = &[&GENERIC_X86_64];

/// How a VM is powered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOn {
    /// With user networking and the host's time.
    Online,
    /// Cut off every network but the forwarded ports.
    Offline,
    /// Online, with the real-time clock starting at this date (`2000-01-01`), like a board
    /// without one.
    ClockAt(&'static str),
}

impl Board {
    /// The file name of the update bundle of `version`.
    pub fn bundle(&self, version: &str) -> String {
        format!("{}{version}.bundle", self.bundle_prefix)
    }

    /// How to boot this board from `image` (a path as `cairn_qemu` takes it), with the
    /// console and firmware files in `work_dir` and the guest's TCP `forwards`.
    pub fn vm_config(
        &self,
        image: PathBuf,
        work_dir: &Path,
        forwards: &[u16],
        power_on: PowerOn,
    ) -> VmConfig {
        VmConfig {
            image,
            arch: self.arch,
            memory_mib: self.memory_mib,
            work_dir: work_dir.to_path_buf(),
            own_process_group: false,
            rtc_base: match power_on {
                PowerOn::ClockAt(date) => Some(date.to_string()),
                PowerOn::Online | PowerOn::Offline => None,
            },
            forwards: forwards.to_vec(),
            offline: power_on == PowerOn::Offline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_names_follow_image_builder() {
        assert_eq!(GENERIC_X86_64.bundle("0.2.0"), "cairn-x86_64-0.2.0.bundle");
    }

    #[test]
    fn a_vm_config_says_how_it_powers_on() {
        let dir = Path::new("/tmp/vm");
        let board = &GENERIC_X86_64;
        let online = board.vm_config("d.raw".into(), dir, &[8080], PowerOn::Online);
        assert_eq!((online.offline, online.rtc_base.as_deref()), (false, None));
        assert_eq!(online.forwards, [8080]);
        let offline = board.vm_config("d.raw".into(), dir, &[], PowerOn::Offline);
        assert_eq!((offline.offline, offline.rtc_base.as_deref()), (true, None));
        let behind = board.vm_config("d.raw".into(), dir, &[], PowerOn::ClockAt("2000-01-01"));
        assert_eq!((behind.offline, behind.rtc_base.as_deref()), (false, Some("2000-01-01")));
    }
}
