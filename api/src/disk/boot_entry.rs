//! The Boot Loader Spec files systemd-boot reads from the ESP (DESIGN §2): `loader.conf`,
//! and one type #1 entry per slot that boots the slot's kernel and initramfs, also kept on
//! the ESP under `/cairn/<slot>/`. Entry files are named by
//! [`EntryName`](super::entry_name::EntryName).

use super::entry_name::ENTRY_PREFIX;
use super::slot_name;
use crate::image::Slot;

/// Where systemd-boot's settings are, from the ESP's root.
pub const LOADER_CONF_PATH: &str = "/loader/loader.conf";
/// The directory of the entry files, from the ESP's root.
pub const ENTRIES_DIR: &str = "/loader/entries";

/// `loader.conf`: which entry systemd-boot boots, and whether it waits in its menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConf {
    /// Seconds the menu waits; with 0 it is not shown unless a key is pressed at boot.
    pub timeout_seconds: u32,
}

impl LoaderConf {
    /// The file's text. The default is "one of Cairn's entries": among them, the try
    /// counters decide (an entry with no tries left sorts last).
    pub fn render(&self) -> String {
        format!("default {ENTRY_PREFIX}*\ntimeout {}\n", self.timeout_seconds)
    }
}

/// A Boot Loader Spec type #1 entry: what systemd-boot shows and boots for one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// The slot it boots.
    pub slot: Slot,
    /// The title in the menu.
    pub title: String,
    /// The kernel, as a path from the ESP's root.
    pub linux: String,
    /// The initramfs, as a path from the ESP's root.
    pub initrd: String,
    /// The kernel command line.
    pub options: String,
}

impl BootEntry {
    /// The entry of `slot`: its kernel and initramfs under `/cairn/<slot>/` on the ESP, and a
    /// command line naming the slot ([`Slot::kernel_arg`]) followed by `kernel_args`.
    pub fn for_slot(slot: Slot, kernel_args: &[String]) -> Self {
        let dir = format!("/cairn/{}", slot_name(slot));
        let options = std::iter::once(slot.kernel_arg())
            .chain(kernel_args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        BootEntry {
            slot,
            title: format!("Cairn (slot {slot})"),
            linux: format!("{dir}/vmlinuz"),
            initrd: format!("{dir}/initramfs.zst"),
            options,
        }
    }

    /// The entry file's text.
    pub fn render(&self) -> String {
        let BootEntry { slot: _, title, linux, initrd, options } = self;
        format!("title {title}\nlinux {linux}\ninitrd {initrd}\noptions {options}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_conf_text() {
        assert_eq!(LoaderConf { timeout_seconds: 0 }.render(), "default cairn-*\ntimeout 0\n");
        assert_eq!(LoaderConf { timeout_seconds: 5 }.render(), "default cairn-*\ntimeout 5\n");
    }

    #[test]
    fn entry_text_for_each_slot() {
        let args = ["console=ttyS0".to_string(), "quiet".to_string()];
        assert_eq!(
            BootEntry::for_slot(Slot::A, &args).render(),
            "title Cairn (slot A)\nlinux /cairn/a/vmlinuz\ninitrd /cairn/a/initramfs.zst\n\
             options cairn.slot=a console=ttyS0 quiet\n"
        );
        let b = BootEntry::for_slot(Slot::B, &[]);
        assert_eq!(
            (b.linux.as_str(), b.initrd.as_str()),
            ("/cairn/b/vmlinuz", "/cairn/b/initramfs.zst")
        );
        assert_eq!(
            b.render(),
            "title Cairn (slot B)\nlinux /cairn/b/vmlinuz\ninitrd /cairn/b/initramfs.zst\n\
             options cairn.slot=b\n"
        );
    }

    #[test]
    fn an_entry_renders_its_fields() {
        let entry = BootEntry {
            slot: Slot::B,
            title: "T".into(),
            linux: "/k".into(),
            initrd: "/i".into(),
            options: "o=1".into(),
        };
        assert_eq!(entry.render(), "title T\nlinux /k\ninitrd /i\noptions o=1\n");
    }
}
