//! A board as a description (`overlays/<board>/board.toml`): what image-builder puts on its
//! disk and how, how its kernel talks on a console, and how QEMU emulates it. image-builder,
//! the qemu crate and the tests read the same file; `overlays/README.md` documents every key.
//!
//! ```toml
//! arch = "x86_64"
//! kernel = "linux-image-amd64"
//! packages = ["systemd-boot-efi"]
//! kernel_args = []
//!
//! [disk]
//! table = "gpt"
//! size_mib = 2048
//! boot_label = "EFI"
//! boot_size_mib = 256
//! root_labels = ["ROOT-A", "ROOT-B"]
//! root_size_mib = 512
//!
//! [boot]
//! bootloader = "systemd-boot"
//! [[boot.files]]
//! from = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
//! to = ["/EFI/BOOT/BOOTX64.EFI", "/EFI/systemd/systemd-bootx64.efi"]
//!
//! [console]
//! kernel = ["tty0", "ttyS0,115200"]
//! serial = "ttyS0"
//!
//! [qemu]
//! binary = "qemu-system-x86_64"
//! package = "qemu-system-x86"
//! machine = "q35"
//! cpus = 2
//! disk = "virtio"
//! network = "virtio-net-pci"
//! watchdog = "i6300esb"
//! rng = "virtio-rng-pci"
//! power_off = "acpi-power-button"
//! [qemu.firmware]
//! code = "/usr/share/OVMF/OVMF_CODE_4M.fd"
//! vars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
//! package = "ovmf"
//! ```
//!
//! Reading is strict: an unknown key is an error naming the file and the key, and values
//! that parse but cannot work (a label machined does not look for, a serial console the
//! kernel does not write to) are errors naming the file and the field.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::arch::Arch;
pub use crate::image::Bootloader;
use crate::image::{Slot, ESP_LABEL, ROOT_A_LABEL, ROOT_B_LABEL};

/// The file a board's folder holds its description in.
pub const BOARD_FILE: &str = "board.toml";

/// A board description could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The file does not fit the schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why, with the line and the key.
        message: String,
    },
    /// A value fits the schema but cannot work.
    #[error("{path}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, e.g. `disk.root_labels`.
        field: &'static str,
        /// Why.
        message: String,
    },
}

/// A board: `overlays/<name>/board.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// Its name: the folder it was loaded from (update bundles name the boards they fit).
    #[serde(skip)]
    pub name: String,
    /// The CPU architecture.
    pub arch: Arch,
    /// The kernel metapackage, e.g. `linux-image-amd64`.
    pub kernel: String,
    /// Packages this board needs beside the profile's (bootloader, firmware).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Kernel command-line arguments after the consoles (see [`Board::kernel_args`]).
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// OCI image-layout archives to carry, relative to the board's folder in the file;
    /// [`Board::load`] makes them relative to where it was loaded from.
    #[serde(default)]
    pub images: Vec<PathBuf>,
    /// The disk image.
    pub disk: Disk,
    /// How the board boots a slot.
    pub boot: Boot,
    /// Where the kernel and machined write.
    pub console: Console,
    /// How QEMU emulates the board; `None` for boards QEMU cannot boot.
    #[serde(default)]
    pub qemu: Option<Qemu>,
    /// How a diskless node of the board boots from the network; `None` for boards that
    /// do not.
    #[serde(default)]
    pub netboot: Option<Netboot>,
}

/// `[netboot]`: a diskless node (DESIGN §2). A network loader fetches the kernel and an
/// initramfs that carries the root squashfs; image-builder writes the three, the loader's
/// script included, in `netboot/`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Netboot {
    /// The network loader.
    pub loader: NetbootLoader,
}

/// A network loader whose script image-builder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetbootLoader {
    /// iPXE (a PC's network card's option ROM, QEMU's included): `boot.ipxe`, which fetches
    /// the kernel and the initramfs over HTTP (or TFTP) from where it came from.
    Ipxe,
    /// U-Boot's distro boot, when it finds no disk to boot: after DHCP it loads
    /// `boot.scr.uimg` by TFTP, which loads the kernel and the initramfs the same way.
    #[serde(rename = "u-boot")]
    UBoot,
}

/// `[disk]`: the partitions of a fresh image, on 1 MiB boundaries in this order: the boot
/// partition, then the root slots (STATE and EPHEMERAL follow on a node's first boot).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// The partition table.
    pub table: PartitionTable,
    /// The whole image, MiB.
    pub size_mib: u64,
    /// The boot partition's label (partition and FAT volume).
    pub boot_label: String,
    /// The boot partition's size, MiB.
    pub boot_size_mib: u64,
    /// The labels of root slots A and B.
    pub root_labels: [String; 2],
    /// Each root slot's size, MiB.
    pub root_size_mib: u64,
}

/// A partition table kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionTable {
    /// GUID partition table with a protective MBR (UEFI machines).
    Gpt,
    /// GUID partition table with a hybrid MBR that also lists the boot partition, for
    /// firmware that reads only an MBR (the Raspberry Pi's).
    Hybrid,
}

/// `[boot]`: the bootloader and the files it needs on the boot partition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// What chooses and counts slots.
    pub bootloader: Bootloader,
    /// Files taken from the board's packages onto the boot partition.
    #[serde(default)]
    pub files: Vec<BootFile>,
    /// Device trees of the kernel package, by their path under its device-tree directory
    /// (`/usr/lib/linux-image-<release>/`), copied to the boot partition's root under their
    /// file names, where the board's firmware looks for them.
    #[serde(default)]
    pub device_trees: Vec<String>,
    /// Files of the board's folder (relative to it in the file; [`Board::load`] makes them
    /// relative to where it was loaded from) copied to the boot partition's root, e.g. the
    /// Raspberry Pi's `config.txt`.
    #[serde(default)]
    pub board_files: Vec<PathBuf>,
}

/// One file of a package copied onto the boot partition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootFile {
    /// Its absolute path in the package.
    pub from: String,
    /// Where copies go, absolute paths from the boot partition's root.
    pub to: Vec<String>,
}

/// `[console]`: the kernel's consoles and the serial port read from outside.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// The kernel's consoles (`console=` values), in order; the last one is `/dev/console`,
    /// where machined writes.
    pub kernel: Vec<String>,
    /// The guest's device for the first serial port, which QEMU captures and tests read
    /// (e.g. `ttyS0`); it must be the device of the last kernel console.
    pub serial: String,
}

/// `[qemu]`: how QEMU (TCG) emulates the board.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qemu {
    /// The emulator, e.g. `qemu-system-x86_64`.
    pub binary: String,
    /// The Debian package that installs it (named when it is missing).
    pub package: String,
    /// The machine (`-M`).
    pub machine: String,
    /// The CPU model (`-cpu`); QEMU's default for the machine when absent.
    #[serde(default)]
    pub cpu: Option<String>,
    /// Virtual CPUs (`-smp`).
    pub cpus: u32,
    /// The firmware.
    pub firmware: Firmware,
    /// How the disk is attached.
    pub disk: DiskInterface,
    /// The network card's device model (`-device`).
    pub network: String,
    /// A hardware watchdog's device model (`-device`), if the board has one.
    #[serde(default)]
    pub watchdog: Option<String>,
    /// A hardware random number generator's device model (`-device`), if the board has one.
    #[serde(default)]
    pub rng: Option<String>,
    /// How the guest is asked to power off.
    pub power_off: PowerOff,
}

/// The firmware: UEFI as two pflash drives (the code, read-only, and a copy of the variable
/// store's template per VM), or, with no variable store, a ROM image loaded with `-bios`
/// (U-Boot, which keeps no state of its own: Cairn's is on the disk).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    /// The firmware code.
    pub code: PathBuf,
    /// The variable store's template; `None` for firmware loaded with `-bios`.
    #[serde(default)]
    pub vars: Option<PathBuf>,
    /// The Debian package that installs both (named when they are missing).
    pub package: String,
}

/// How QEMU attaches the disk image (`-drive if=`), which also names it in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskInterface {
    /// virtio-blk: `/dev/vda` in the guest.
    Virtio,
}

/// How the guest is asked to power off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerOff {
    /// The ACPI power button, pressed over QMP (`system_powerdown`).
    AcpiPowerButton,
    /// A power key wired to a GPIO line, as on QEMU's `virt` board (a `gpio-keys` device in
    /// its device tree), also pressed over QMP (`system_powerdown`).
    GpioPowerKey,
}

/// 1 MiB.
const MIB: u64 = 1024 * 1024;

impl Board {
    /// Reads and checks `overlays_dir/<name>/board.toml`.
    pub fn load(overlays_dir: &Path, name: &str) -> Result<Board, BoardError> {
        let dir = overlays_dir.join(name);
        let path = dir.join(BOARD_FILE);
        let text = fs::read_to_string(&path)
            .map_err(|source| BoardError::Io { path: path.clone(), source })?;
        let mut board: Board = toml::from_str(&text)
            .map_err(|e| BoardError::Parse { path: path.clone(), message: e.to_string() })?;
        board.check().map_err(|(field, message)| BoardError::Invalid {
            path: path.clone(),
            field,
            message,
        })?;
        board.name = name.to_string();
        board.images = board.images.iter().map(|image| dir.join(image)).collect();
        board.boot.board_files = board.boot.board_files.iter().map(|f| dir.join(f)).collect();
        Ok(board)
    }

    /// The board's kernel command line: its consoles, then [`Board::kernel_args`].
    pub fn kernel_args(&self) -> Vec<String> {
        let consoles = self.console.kernel.iter().map(|console| format!("console={console}"));
        consoles.chain(self.kernel_args.iter().cloned()).collect()
    }

    /// The guest's device of `slot`'s root partition under QEMU, e.g. `/dev/vda2`; `None`
    /// for a board QEMU cannot boot.
    pub fn qemu_root_device(&self, slot: Slot) -> Option<String> {
        let qemu = self.qemu.as_ref()?;
        Some(qemu.disk.partition_device(self.disk.root_partition_number(slot)))
    }

    /// Values that parse but cannot work: the key and why.
    fn check(&self) -> Result<(), (&'static str, String)> {
        // machined finds the partitions by these labels (crate::image), not from this file.
        if self.disk.boot_label != ESP_LABEL {
            return Err(("disk.boot_label", format!("machined looks for {ESP_LABEL:?}")));
        }
        if self.disk.root_labels != [ROOT_A_LABEL, ROOT_B_LABEL] {
            let expected = format!("machined looks for [{ROOT_A_LABEL:?}, {ROOT_B_LABEL:?}]");
            return Err(("disk.root_labels", expected));
        }
        for (field, mib) in [
            ("disk.size_mib", self.disk.size_mib),
            ("disk.boot_size_mib", self.disk.boot_size_mib),
            ("disk.root_size_mib", self.disk.root_size_mib),
        ] {
            if mib == 0 || mib.checked_mul(MIB).is_none() {
                return Err((field, format!("{mib} MiB is not a usable size")));
            }
        }
        if self.boot.bootloader == Bootloader::UBoot && self.arch == Arch::X86_64 {
            let why =
                "Cairn's U-Boot script boots arm64 and armv7 boards; x86_64 boots systemd-boot";
            return Err(("boot.bootloader", why.to_string()));
        }
        for file in &self.boot.files {
            for path in std::iter::once(&file.from).chain(&file.to) {
                if !path.starts_with('/') {
                    return Err(("boot.files", format!("{path:?} is not an absolute path")));
                }
            }
        }
        for tree in &self.boot.device_trees {
            if tree.starts_with('/') || tree.split('/').any(|part| part == "..") {
                let why = "is not a path under the kernel's device-tree directory";
                return Err(("boot.device_trees", format!("{tree:?} {why}")));
            }
        }
        for file in &self.boot.board_files {
            if file.is_absolute() || file.components().count() != 1 {
                let why = "is not the name of a file in the board's folder";
                return Err(("boot.board_files", format!("{:?} {why}", file.display())));
            }
        }
        let last = self.console.kernel.last().map(|console| console_device(console));
        if last != Some(self.console.serial.as_str()) {
            let why = "must be the device of the last kernel console (the one /dev/console is)";
            return Err(("console.serial", format!("{:?} {why}", self.console.serial)));
        }
        Ok(())
    }
}

impl Disk {
    /// The whole image, bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_mib * MIB
    }

    /// The boot partition, bytes.
    pub fn boot_bytes(&self) -> u64 {
        self.boot_size_mib * MIB
    }

    /// Each root slot, bytes.
    pub fn root_slot_bytes(&self) -> u64 {
        self.root_size_mib * MIB
    }

    /// The label of `slot`'s root partition.
    pub fn root_label(&self, slot: Slot) -> &str {
        &self.root_labels[slot_index(slot)]
    }

    /// The partition number (from 1) of `slot`'s root: the boot partition comes first.
    pub fn root_partition_number(&self, slot: Slot) -> u32 {
        2 + slot_index(slot) as u32
    }
}

impl DiskInterface {
    /// The value of QEMU's `-drive if=`.
    pub fn qemu_name(self) -> &'static str {
        match self {
            DiskInterface::Virtio => "virtio",
        }
    }

    /// The guest's device of the first disk.
    pub fn disk_device(self) -> &'static str {
        match self {
            DiskInterface::Virtio => "/dev/vda",
        }
    }

    /// The guest's device of partition `number` (from 1) of the first disk.
    pub fn partition_device(self, number: u32) -> String {
        format!("{}{number}", self.disk_device())
    }
}

/// The device of a `console=` value: `ttyS0` of `ttyS0,115200`.
fn console_device(console: &str) -> &str {
    console.split(',').next().unwrap_or(console)
}

fn slot_index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
arch = "x86_64"
kernel = "linux-image-amd64"
packages = ["systemd-boot-efi"]
images = ["images/app.tar", "/abs/other.tar"]
kernel_args = ["quiet"]

[disk]
table = "gpt"
size_mib = 2048
boot_label = "EFI"
boot_size_mib = 256
root_labels = ["ROOT-A", "ROOT-B"]
root_size_mib = 512

[boot]
bootloader = "systemd-boot"
device_trees = ["vendor/board.dtb"]
board_files = ["config.txt"]
[[boot.files]]
from = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
to = ["/EFI/BOOT/BOOTX64.EFI"]

[console]
kernel = ["tty0", "ttyS0,115200"]
serial = "ttyS0"

[qemu]
binary = "qemu-system-x86_64"
package = "qemu-system-x86"
machine = "q35"
cpus = 2
disk = "virtio"
network = "virtio-net-pci"
watchdog = "i6300esb"
power_off = "acpi-power-button"
[qemu.firmware]
code = "/usr/share/OVMF/OVMF_CODE_4M.fd"
vars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
package = "ovmf"
"#;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
    }

    /// Loads `text` as board `b` from a fresh overlays folder.
    fn load(text: &str) -> (tempfile::TempDir, Result<Board, BoardError>) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("b")).unwrap();
        fs::write(dir.path().join("b").join(BOARD_FILE), text).unwrap();
        let board = Board::load(dir.path(), "b");
        (dir, board)
    }

    #[test]
    fn the_shipped_board_loads() {
        let board = Board::load(&workspace().join("overlays"), "generic-x86_64").unwrap();
        assert_eq!((board.name.as_str(), board.arch), ("generic-x86_64", Arch::X86_64));
        assert_eq!(board.kernel_args(), ["console=tty0", "console=ttyS0,115200"]);
        assert_eq!(board.disk.size_bytes(), 2048 * MIB);
        assert_eq!(board.qemu_root_device(Slot::A).as_deref(), Some("/dev/vda2"));
        assert_eq!(board.qemu.unwrap().machine, "q35");
    }

    #[test]
    fn the_arm_boards_boot_through_u_boot_with_no_variable_store() {
        for (name, arch) in [("qemu-arm64", Arch::Arm64), ("qemu-armv7", Arch::Armv7)] {
            let board = Board::load(&workspace().join("overlays"), name).unwrap();
            assert_eq!((board.arch, board.boot.bootloader), (arch, Bootloader::UBoot));
            assert_eq!(board.kernel_args(), ["console=ttyAMA0,115200"]);
            let qemu = board.qemu.unwrap();
            assert_eq!((qemu.firmware.vars, qemu.power_off), (None, PowerOff::GpioPowerKey));
        }
    }

    #[test]
    fn a_full_description_reads_with_derived_values() {
        let (dir, board) = load(GOOD);
        let board = board.unwrap();
        assert_eq!(
            board.images,
            [dir.path().join("b/images/app.tar"), PathBuf::from("/abs/other.tar")]
        );
        assert_eq!(board.kernel_args(), ["console=tty0", "console=ttyS0,115200", "quiet"]);
        assert_eq!(board.boot.board_files, [dir.path().join("b/config.txt")]);
        assert_eq!(board.boot.device_trees, ["vendor/board.dtb"]);
        assert_eq!(board.disk.root_label(Slot::B), "ROOT-B");
        assert_eq!(board.disk.root_partition_number(Slot::B), 3);
        assert_eq!(board.qemu_root_device(Slot::B).as_deref(), Some("/dev/vda3"));
        assert_eq!((board.disk.boot_bytes(), board.disk.root_slot_bytes()), (256 * MIB, 512 * MIB));
        let qemu = board.qemu.unwrap();
        assert_eq!((qemu.cpu, qemu.disk.qemu_name()), (None, "virtio"));
        assert_eq!(qemu.power_off, PowerOff::AcpiPowerButton);
    }

    #[test]
    fn a_board_without_qemu_has_no_qemu_devices() {
        let start = GOOD.find("[qemu]").unwrap();
        let (_dir, board) = load(&GOOD[..start]);
        assert_eq!(board.unwrap().qemu_root_device(Slot::A), None);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_file_and_key() {
        for (from, to, key) in [
            ("kernel_args =", "kernal_args =", "kernal_args"),
            ("root_size_mib", "root_size", "root_size"),
            ("machine = \"q35\"", "machine = \"q35\"\nmemory = 1", "memory"),
            ("package = \"ovmf\"", "package = \"ovmf\"\nbios = \"x\"", "bios"),
        ] {
            let (_dir, board) = load(&GOOD.replacen(from, to, 1));
            let err = board.unwrap_err().to_string();
            assert!(err.contains("b/board.toml") && err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn unworkable_values_are_errors_naming_the_field() {
        for (from, to, field) in [
            ("boot_label = \"EFI\"", "boot_label = \"BOOT\"", "disk.boot_label"),
            ("\"ROOT-A\", \"ROOT-B\"", "\"ROOT-B\", \"ROOT-A\"", "disk.root_labels"),
            ("size_mib = 2048", "size_mib = 0", "disk.size_mib"),
            ("root_size_mib = 512", "root_size_mib = 17592186044416", "disk.root_size_mib"),
            ("to = [\"/EFI", "to = [\"EFI", "boot.files"),
            ("serial = \"ttyS0\"", "serial = \"tty0\"", "console.serial"),
            ("bootloader = \"systemd-boot\"", "bootloader = \"u-boot\"", "boot.bootloader"),
            ("kernel = [\"tty0\", \"ttyS0,115200\"]", "kernel = []", "console.serial"),
            ("\"vendor/board.dtb\"", "\"/boot/board.dtb\"", "boot.device_trees"),
            ("\"vendor/board.dtb\"", "\"../x.dtb\"", "boot.device_trees"),
            ("[\"config.txt\"]", "[\"../config.txt\"]", "boot.board_files"),
            ("[\"config.txt\"]", "[\"/etc/config.txt\"]", "boot.board_files"),
        ] {
            let (_dir, board) = load(&GOOD.replacen(from, to, 1));
            let err = board.unwrap_err();
            assert!(
                matches!(&err, BoardError::Invalid { field: f, .. } if *f == field),
                "{field}: {err}"
            );
            assert!(err.to_string().contains("b/board.toml"), "{err}");
        }
    }

    #[test]
    fn unknown_kinds_are_errors() {
        for (from, to) in [
            ("table = \"gpt\"", "table = \"mbr\""),
            ("bootloader = \"systemd-boot\"", "bootloader = \"grub\""),
            ("disk = \"virtio\"", "disk = \"ide\""),
            ("power_off = \"acpi-power-button\"", "power_off = \"kill\""),
        ] {
            let (_dir, board) = load(&GOOD.replacen(from, to, 1));
            assert!(matches!(board, Err(BoardError::Parse { .. })), "{to}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(Board::load(dir.path(), "none"), Err(BoardError::Io { .. })));
    }
}
