//! What machined reads from the kernel command line.

use cairn_api::image::{Slot, SLOT_ARG};

/// The value of `key=VALUE` on the command line; the last one counts, as in the kernel.
pub fn value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_whitespace().rev().find_map(|arg| arg.strip_prefix(key)?.strip_prefix('='))
}

/// The boot slot: `cairn.slot=a` or `=b`; the last one counts.
pub fn slot(cmdline: &str) -> Option<Slot> {
    value(cmdline, SLOT_ARG).and_then(Slot::from_kernel_arg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_slot() {
        assert_eq!(slot("quiet cairn.slot=a console=ttyS0"), Some(Slot::A));
        assert_eq!(slot("cairn.slot=a cairn.slot=B"), Some(Slot::B));
        assert_eq!(slot("cairn.slot=c"), None);
        assert_eq!(slot("quiet"), None);
        assert_eq!(slot("cairn.slotted=a"), None);
    }

    #[test]
    fn reads_values_by_whole_key() {
        let cmdline = "cairn.root=initramfs cairn.root.sha256=ab cairn.root.sha256=cd";
        assert_eq!(value(cmdline, "cairn.root"), Some("initramfs"));
        assert_eq!(value(cmdline, "cairn.root.sha256"), Some("cd"));
        assert_eq!(value(cmdline, "cairn"), None);
    }
}
