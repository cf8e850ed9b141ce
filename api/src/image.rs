//! What images and machined agree on: partition labels, where machined lives, the module
//! table ([`module_table`]) and the kernel command-line key for the slot.

pub mod module_table;

/// GPT label of the boot partition (ESP).
pub const ESP_LABEL: &str = "EFI";
/// GPT label of root slot A.
pub const ROOT_A_LABEL: &str = "ROOT-A";
/// GPT label of root slot B.
pub const ROOT_B_LABEL: &str = "ROOT-B";
/// Where machined (stage 2) lives on a root filesystem.
pub const MACHINED_PATH: &str = "/usr/sbin/machined";

/// Where a bootstrap token baked into an image lives (read-only, mode 0400).
pub const BOOTSTRAP_TOKEN_PATH: &str = "/etc/cairn/bootstrap-token";
/// Where image-builder records the image's time floor, a time the clock of a node running
/// the image cannot be earlier than: SOURCE_DATE_EPOCH when the build had one, else the build
/// date of the newest package in the image. Decimal seconds since 1970 (UTC) and a newline,
/// e.g. `1767225600\n`; machined raises a clock below it (a Raspberry Pi boots in 1970).
pub const TIME_FLOOR_PATH: &str = "/usr/lib/cairn/time-floor";
/// Where image-builder records the bootloader that boots the image's slots: its name in
/// `board.toml` ([`crate::board::Bootloader::name`]) and a newline, e.g. `u-boot\n`. machined
/// reads it to know how to choose and count slots; an image without it boots through
/// systemd-boot (the only bootloader before boards had others).
pub const BOOTLOADER_PATH: &str = "/usr/lib/cairn/bootloader";
/// Where the OCI archives baked into an image live; the kubelet imports each into containerd
/// at boot, so pods run with no registry reachable.
pub const IMAGES_DIR: &str = "/usr/share/cairn/images";
/// The sandbox ("pause") image every pod starts with, one of the baked-in archives.
pub const PAUSE_IMAGE: &str = "localhost/pause:latest";
/// The public keys an image trusts to sign update bundles: base64 of their 32 bytes, one a
/// line (image-builder's `--signing-key` puts its public half here).
pub const UPDATE_KEYS_PATH: &str = "/usr/lib/cairn/update-keys";
/// The file in `/usr/lib/modules/<release>/` (of the initramfs and of the root filesystem)
/// that lists the modules that tree carries, their dependencies and aliases, and when each
/// loads: the format is [`module_table`]'s.
pub const MODULE_TABLE: &str = "modules.cairn-table";
/// The kernel command-line key that names the slot being booted (`a` or `b`).
pub const SLOT_ARG: &str = "cairn.slot";
/// The kernel command-line key of a diskless node's root: `cairn.root=initramfs`, the root
/// squashfs the initramfs carries at [`INITRAMFS_ROOT_PATH`] (netboot).
pub const ROOT_ARG: &str = "cairn.root";
/// [`ROOT_ARG`]'s value for a root carried by the initramfs.
pub const ROOT_IN_INITRAMFS: &str = "initramfs";
/// The kernel command-line key of the SHA-256 (hex) the root in the initramfs must have:
/// stage 1 mounts nothing else, so a netboot download damaged on its way fails loudly.
pub const ROOT_SHA256_ARG: &str = "cairn.root.sha256";
/// Where a netboot initramfs carries the root squashfs.
pub const INITRAMFS_ROOT_PATH: &str = "/root.squashfs";
/// The kernel command-line key of a URL (`http://`) a node in maintenance mode takes its
/// first config from, once its network is up.
pub const CONFIG_URL_ARG: &str = "cairn.config";
/// The kernel command-line key of the SHA-256 (hex) the config at [`CONFIG_URL_ARG`] must
/// have: what makes a config over plain HTTP trustworthy.
pub const CONFIG_SHA256_ARG: &str = "cairn.config.sha256";

/// GPT label of STATE (machine config, node identity), created by machined on first boot.
pub const STATE_LABEL: &str = "STATE";
/// GPT label of EPHEMERAL (`/var`), created on first boot over the rest of the disk.
pub const EPHEMERAL_LABEL: &str = "EPHEMERAL";

/// The bootloader that chooses and counts slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    /// UEFI machines: systemd-boot, one Boot Loader Spec entry per slot.
    SystemdBoot,
    /// ARM boards: U-Boot's distro boot runs Cairn's boot script (`/boot.scr`), which keeps
    /// the slot and the trial's count in its own environment files on the boot partition.
    UBoot,
}

impl Bootloader {
    /// Its name in `board.toml` and in an image's [`BOOTLOADER_PATH`].
    pub fn name(self) -> &'static str {
        match self {
            Bootloader::SystemdBoot => "systemd-boot",
            Bootloader::UBoot => "u-boot",
        }
    }

    /// The bootloader `name` names.
    pub fn from_name(name: &str) -> Option<Bootloader> {
        [Bootloader::SystemdBoot, Bootloader::UBoot].into_iter().find(|b| b.name() == name)
    }
}

/// A root slot: A/B updates write the one not running and boot it on trial. Serialized as
/// `"A"` or `"B"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Slot {
    /// The first root slot (`ROOT-A`), the one a fresh image boots.
    A,
    /// The second root slot (`ROOT-B`).
    B,
}

impl Slot {
    /// The GPT label of the slot's root partition.
    pub fn root_label(self) -> &'static str {
        match self {
            Slot::A => ROOT_A_LABEL,
            Slot::B => ROOT_B_LABEL,
        }
    }

    /// The slot's place in pairs of per-slot values: 0 for A, 1 for B.
    pub fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }

    /// The other slot: the one an update writes, or a failed trial falls back to.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The slot a [`SLOT_ARG`] value names (`a` or `b`, in either case).
    pub fn from_kernel_arg(value: &str) -> Option<Slot> {
        match value {
            "a" | "A" => Some(Slot::A),
            "b" | "B" => Some(Slot::B),
            _ => None,
        }
    }

    /// The kernel command-line argument that boots this slot, e.g. `cairn.slot=a` (lower
    /// case, as in boot entry names).
    pub fn kernel_arg(self) -> String {
        format!("{SLOT_ARG}={}", self.to_string().to_lowercase())
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_through_the_kernel_command_line() {
        for slot in [Slot::A, Slot::B] {
            let arg = slot.kernel_arg();
            let value = arg.strip_prefix(&format!("{SLOT_ARG}=")).unwrap();
            assert_eq!(Slot::from_kernel_arg(value), Some(slot));
        }
        assert_eq!(Slot::A.kernel_arg(), "cairn.slot=a");
        assert_eq!((Slot::B.root_label(), Slot::B.to_string()), ("ROOT-B", "B".to_string()));
        assert_eq!(Slot::from_kernel_arg("c"), None);
    }
}
