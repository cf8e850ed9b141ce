//! What machined reads from the kernel command line.

use cairn_api::image::{Slot, SLOT_ARG};

/// The boot slot: `cairn.slot=a` or `=b`; the last one counts.
pub fn slot(cmdline: &str) -> Option<Slot> {
    let key = format!("{SLOT_ARG}=");
    cmdline
        .split_whitespace()
        .rev()
        .find_map(|arg| arg.strip_prefix(key.as_str()))
        .and_then(Slot::from_kernel_arg)
}

/// The slot this kernel was booted from, per `/proc/cmdline`.
pub fn current_slot() -> Option<Slot> {
    std::fs::read_to_string("/proc/cmdline").ok().and_then(|c| slot(&c))
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
    }
}
