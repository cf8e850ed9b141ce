//! What machined reads from the kernel command line.

/// The boot slot: `cairn.slot=a` or `=b` (lower case, as in boot entry names).
pub fn slot(cmdline: &str) -> Option<char> {
    let key = format!("{}=", cairn_api::image::SLOT_ARG);
    cmdline.split_whitespace().rev().find_map(|arg| arg.strip_prefix(key.as_str())).and_then(
        |value| match value {
            "a" | "A" => Some('A'),
            "b" | "B" => Some('B'),
            _ => None,
        },
    )
}

/// The slot this kernel was booted from, per `/proc/cmdline`.
pub fn current_slot() -> Option<char> {
    std::fs::read_to_string("/proc/cmdline").ok().and_then(|c| slot(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_slot() {
        assert_eq!(slot("quiet cairn.slot=a console=ttyS0"), Some('A'));
        assert_eq!(slot("cairn.slot=a cairn.slot=B"), Some('B'));
        assert_eq!(slot("cairn.slot=c"), None);
        assert_eq!(slot("quiet"), None);
    }
}
