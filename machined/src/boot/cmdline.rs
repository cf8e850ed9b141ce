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

/// 64 hex digits (a SHA-256 a command-line argument names) as 32 bytes.
pub fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(bytes)
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
