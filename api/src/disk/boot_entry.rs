//! The Boot Loader Spec files systemd-boot reads from the ESP (DESIGN §2): `loader.conf`,
//! and one type #1 entry per slot that boots the slot's kernel and initramfs, also kept on
//! the ESP under `/cairn/<slot>/` with the slot's version. Entry files are named by
//! [`EntryName`](super::entry_name::EntryName).
//!
//! Which slot boots: systemd-boot sorts entries that have a `sort-key` by it, then by their
//! `version`, newest first, and puts entries with no tries left last; `default cairn-*`
//! takes the first. Cairn's entries share one sort key and carry as version a generation,
//! one more than any other entry's each time a slot is installed or chosen: the slot chosen
//! last boots, unless its tries ran out.

use super::entry_name::ENTRY_PREFIX;
use super::slot_name;
use crate::image::Slot;

/// Where systemd-boot's settings are, from the ESP's root.
pub const LOADER_CONF_PATH: &str = "/loader/loader.conf";
/// The directory of the entry files, from the ESP's root.
pub const ENTRIES_DIR: &str = "/loader/entries";
/// The sort key every Cairn entry has.
const SORT_KEY: &str = "cairn";

/// The ESP directory of a slot's kernel, initramfs and version file, e.g. `/cairn/a`.
pub fn slot_dir(slot: Slot) -> String {
    format!("/cairn/{}", slot_name(slot))
}

/// The file in [`slot_dir`] holding the version (semver) of the system in the slot.
pub fn version_path(slot: Slot) -> String {
    format!("{}/version", slot_dir(slot))
}

/// The kernel command line of `slot`: the argument naming it ([`Slot::kernel_arg`]), then
/// `kernel_args`.
pub fn slot_command_line(slot: Slot, kernel_args: &[String]) -> String {
    std::iter::once(slot.kernel_arg())
        .chain(kernel_args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The kernel arguments of `slot`'s `command_line` after its own.
pub fn slot_kernel_args(slot: Slot, command_line: &str) -> Vec<String> {
    let own = slot.kernel_arg();
    command_line.split_whitespace().filter(|arg| *arg != own).map(String::from).collect()
}

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
    /// The entry's place in the boot order: the highest generation boots first.
    pub generation: u64,
}

impl BootEntry {
    /// The entry of `slot`, holding system `version`, at `generation`: its kernel and
    /// initramfs under [`slot_dir`] on the ESP, and a command line naming the slot
    /// ([`Slot::kernel_arg`]) followed by `kernel_args`.
    pub fn for_slot(slot: Slot, version: &str, generation: u64, kernel_args: &[String]) -> Self {
        let dir = slot_dir(slot);
        let options = slot_command_line(slot, kernel_args);
        BootEntry {
            slot,
            title: format!("Cairn {version} (slot {slot})"),
            linux: format!("{dir}/vmlinuz"),
            initrd: format!("{dir}/initramfs.zst"),
            options,
            generation,
        }
    }

    /// The entry file's text.
    pub fn render(&self) -> String {
        let BootEntry { slot: _, title, linux, initrd, options, generation } = self;
        format!(
            "title {title}\nsort-key {SORT_KEY}\nversion {generation}\nlinux {linux}\n\
             initrd {initrd}\noptions {options}\n"
        )
    }
}

/// The generation of an entry file's `text` (its `version` line); `None` when it has none,
/// which sorts it after every entry that has one.
pub fn generation_of(text: &str) -> Option<u64> {
    entry_field(text, "version")?.parse().ok()
}

/// The value of `key` in an entry file's `text` (Boot Loader Spec type #1: `key value`
/// lines), trimmed; the first such line counts.
pub fn entry_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (k, value) = line.trim().split_once(char::is_whitespace)?;
        (k == key).then(|| value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_fields_are_read_by_key() {
        let entry = "title Cairn 0.1.0 (slot A)\nversion 1\nlinux /cairn/a/vmlinuz\n\
                     initrd /cairn/a/initramfs.zst\noptions cairn.slot=a console=ttyS0,115200\n";
        assert_eq!(entry_field(entry, "linux"), Some("/cairn/a/vmlinuz"));
        assert_eq!(entry_field(entry, "initrd"), Some("/cairn/a/initramfs.zst"));
        assert_eq!(entry_field(entry, "options"), Some("cairn.slot=a console=ttyS0,115200"));
        assert_eq!(entry_field(entry, "devicetree"), None);
        assert_eq!(entry_field("linuxx /k\n", "linux"), None);
    }

    #[test]
    fn loader_conf_text() {
        assert_eq!(LoaderConf { timeout_seconds: 0 }.render(), "default cairn-*\ntimeout 0\n");
        assert_eq!(LoaderConf { timeout_seconds: 5 }.render(), "default cairn-*\ntimeout 5\n");
    }

    #[test]
    fn entry_text_for_each_slot() {
        let args = ["console=ttyS0".to_string(), "quiet".to_string()];
        assert_eq!(
            BootEntry::for_slot(Slot::A, "0.1.0", 1, &args).render(),
            "title Cairn 0.1.0 (slot A)\nsort-key cairn\nversion 1\nlinux /cairn/a/vmlinuz\n\
             initrd /cairn/a/initramfs.zst\noptions cairn.slot=a console=ttyS0 quiet\n"
        );
        let b = BootEntry::for_slot(Slot::B, "0.2.0", 7, &[]);
        assert_eq!(
            (b.linux.as_str(), b.initrd.as_str()),
            ("/cairn/b/vmlinuz", "/cairn/b/initramfs.zst")
        );
        assert_eq!(
            b.render(),
            "title Cairn 0.2.0 (slot B)\nsort-key cairn\nversion 7\nlinux /cairn/b/vmlinuz\n\
             initrd /cairn/b/initramfs.zst\noptions cairn.slot=b\n"
        );
        assert_eq!(generation_of(&b.render()), Some(7));
        assert_eq!(
            (slot_dir(Slot::B), version_path(Slot::A)),
            ("/cairn/b".into(), "/cairn/a/version".into())
        );
    }

    #[test]
    fn generations_are_read_from_the_version_line() {
        assert_eq!(generation_of("title x\nversion  12 \n"), Some(12));
        assert_eq!(generation_of("title version 3\n"), None);
        assert_eq!(generation_of("version x\n"), None);
        assert_eq!(generation_of(""), None);
    }

    #[test]
    fn an_entry_renders_its_fields() {
        let entry = BootEntry {
            slot: Slot::B,
            title: "T".into(),
            linux: "/k".into(),
            initrd: "/i".into(),
            options: "o=1".into(),
            generation: 2,
        };
        assert_eq!(
            entry.render(),
            "title T\nsort-key cairn\nversion 2\nlinux /k\ninitrd /i\noptions o=1\n"
        );
    }
}
