//! The boards the QEMU suite boots: every board-specific fact the scenarios use, in one
//! table, and the one place that turns a board into a [`VmConfig`].

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cairn_api::arch::Arch;
use cairn_api::board::{Board as Description, DiskInterface, Qemu};
use cairn_api::image::Slot;
use cairn_qemu::VmConfig;

/// A board the QEMU suite boots: its name, and what the suite chooses for it. Everything
/// else comes from its description, `overlays/<name>/board.toml`.
#[derive(Debug)]
pub struct Board {
    /// Its folder in `overlays/`, image-builder's `--board`, and the scenarios' prefix
    /// (`scenario <name>/<scenario>`).
    pub name: &'static str,
    /// The disk a user boots the image from: bigger than the image, so the first boot grows
    /// EPHEMERAL into it.
    pub disk_bytes: u64,
    /// The guest's memory.
    pub memory_mib: u32,
    /// The kernel release the image boots starts with this.
    pub kernel_series: &'static str,
    /// Its description, once read.
    description: OnceLock<Description>,
}

/// A PC: q35, OVMF, systemd-boot, a virtio disk.
pub static GENERIC_X86_64: Board = Board {
    name: "generic-x86_64",
    disk_bytes: 4 << 30,
    memory_mib: 1024,
    kernel_series: "6.12",
    description: OnceLock::new(),
};

/// QEMU's 64-bit ARM `virt` board: U-Boot, a virtio disk.
pub static QEMU_ARM64: Board = Board {
    name: "qemu-arm64",
    disk_bytes: 4 << 30,
    memory_mib: 1024,
    kernel_series: "6.12",
    description: OnceLock::new(),
};

/// QEMU's 32-bit ARM `virt` board: U-Boot, a virtio disk.
pub static QEMU_ARMV7: Board = Board {
    name: "qemu-armv7",
    disk_bytes: 4 << 30,
    memory_mib: 1024,
    kernel_series: "6.12",
    description: OnceLock::new(),
};

/// The Raspberry Pi 3, 4, 400, CM3, CM4 and Zero 2 W in 64-bit: U-Boot, an SD card.
pub static RPI_ARM64: Board = Board {
    name: "rpi-arm64",
    disk_bytes: 4 << 30,
    memory_mib: 1024,
    kernel_series: "6.12",
    description: OnceLock::new(),
};

/// The Raspberry Pi 2 and 3 in 32-bit: U-Boot, an SD card.
pub static RPI_ARMV7: Board = Board {
    name: "rpi-armv7",
    disk_bytes: 4 << 30,
    memory_mib: 1024,
    kernel_series: "6.12",
    description: OnceLock::new(),
};

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
    /// Its description, `overlays/<name>/board.toml` (read once).
    pub fn description(&self) -> &Description {
        self.description.get_or_init(|| crate::board(self.name))
    }

    /// How QEMU emulates it.
    fn qemu(&self) -> &Qemu {
        let qemu = self.description().qemu.as_ref();
        qemu.unwrap_or_else(|| panic!("{}: board.toml has no [qemu]", self.name))
    }

    /// Whether QEMU gives it a hardware watchdog (machined arms it).
    pub fn has_watchdog(&self) -> bool {
        self.qemu().watchdog.is_some()
    }

    /// The image's architecture.
    pub fn arch(&self) -> Arch {
        self.description().arch
    }

    /// The disk image image-builder writes.
    pub fn image(&self) -> String {
        format!("cairn-{}.raw", self.arch())
    }

    /// Its compressed copy.
    pub fn compressed_image(&self) -> String {
        format!("{}.zst", self.image())
    }

    /// The file name of the update bundle of `version`.
    pub fn bundle(&self, version: &str) -> String {
        format!("cairn-{}-{version}.bundle", self.arch())
    }

    /// How the node's disk is attached.
    fn disk_interface(&self) -> DiskInterface {
        self.qemu().disk
    }

    /// The node's disk, as its kernel names it.
    pub fn disk_device(&self) -> &'static str {
        self.disk_interface().disk_device()
    }

    /// The root partition of `slot`, as the console names it when stage 1 finds its root.
    pub fn root_device(&self, slot: Slot) -> String {
        self.disk_interface().partition_device(self.description().disk.root_partition_number(slot))
    }

    /// STATE, once the first boot has made it: the partition after ROOT-B.
    pub fn state_device(&self) -> String {
        let number = self.description().disk.root_partition_number(Slot::B) + 1;
        self.disk_interface().partition_device(number)
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
            disk: Some(image),
            board: self.description().clone(),
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
        assert_eq!(GENERIC_X86_64.image(), "cairn-x86_64.raw");
    }

    #[test]
    fn devices_come_from_the_description() {
        let board = &GENERIC_X86_64;
        assert_eq!(board.disk_device(), "/dev/vda");
        assert_eq!(board.root_device(Slot::A), "/dev/vda2");
        assert_eq!(board.root_device(Slot::B), "/dev/vda3");
        assert_eq!(board.state_device(), "/dev/vda4");
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
