//! What a disk holds, read from its first bytes: before machined formats a disk a config
//! names for a diskless node's EPHEMERAL (`machine.ephemeral.disk`), it must tell its own
//! file system from a blank disk and from anyone else's data, which is never formatted over
//! unless the config says `wipe`.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// How many bytes of a disk are read to tell what it holds: partition tables and the ext4
/// superblock lie well within the first MiB, as do most file systems' signatures.
const HEAD_BYTES: u64 = 1024 * 1024;
/// The ext2/3/4 superblock starts at byte 1024.
const SUPERBLOCK: usize = 1024;
/// Its magic number (0xEF53, little-endian) at byte 56 of the superblock.
const EXT_MAGIC: (usize, [u8; 2]) = (SUPERBLOCK + 56, [0x53, 0xEF]);
/// Its volume label: 16 bytes at byte 120, NUL-padded.
const EXT_LABEL: std::ops::Range<usize> = SUPERBLOCK + 120..SUPERBLOCK + 136;

/// What a disk holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// An ext4 file system with the label asked for, on the whole disk: ours.
    Labelled,
    /// Zeroes: nothing to lose.
    Blank,
    /// Something else, described for an operator.
    Other(String),
}

/// What the disk (or image) at `path` holds, as for a file system labelled `label`.
pub fn inspect(path: &Path, label: &str) -> std::io::Result<Contents> {
    let mut head = Vec::new();
    File::open(path)?.take(HEAD_BYTES).read_to_end(&mut head)?;
    Ok(contents(&head, label))
}

/// The label of the ext2/3/4 file system `head` (a device's first bytes) starts, if it
/// starts one.
pub fn ext_label(head: &[u8]) -> Option<String> {
    let (at, magic) = EXT_MAGIC;
    if head.get(at..at + 2)? != magic {
        return None;
    }
    let label = head.get(EXT_LABEL)?;
    let end = label.iter().position(|&b| b == 0).unwrap_or(label.len());
    Some(String::from_utf8_lossy(&label[..end]).into_owned())
}

fn contents(head: &[u8], label: &str) -> Contents {
    match ext_label(head) {
        Some(found) if found == label => return Contents::Labelled,
        Some(found) if found.is_empty() => return Contents::Other("an ext4 file system".into()),
        Some(found) => return Contents::Other(format!("an ext4 file system labelled {found:?}")),
        None => {}
    }
    if head.get(512..520) == Some(b"EFI PART".as_slice()) {
        return Contents::Other("a GPT partition table".into());
    }
    if head.get(510..512) == Some([0x55, 0xAA].as_slice()) {
        return Contents::Other("an MBR partition table or boot sector".into());
    }
    match head.iter().position(|&b| b != 0) {
        None => Contents::Blank,
        Some(at) => Contents::Other(format!("data (a non-zero byte at {at})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext4(label: &str) -> Vec<u8> {
        let mut head = vec![0u8; 4096];
        head[EXT_MAGIC.0..EXT_MAGIC.0 + 2].copy_from_slice(&EXT_MAGIC.1);
        head[EXT_LABEL.start..EXT_LABEL.start + label.len()].copy_from_slice(label.as_bytes());
        head
    }

    #[test]
    fn our_file_system_blank_disks_and_other_data_are_told_apart() {
        assert_eq!(contents(&ext4("EPHEMERAL"), "EPHEMERAL"), Contents::Labelled);
        assert_eq!(contents(&vec![0; 8192], "EPHEMERAL"), Contents::Blank);
        assert_eq!(contents(&[], "EPHEMERAL"), Contents::Blank);
        let other = |head: &[u8]| match contents(head, "EPHEMERAL") {
            Contents::Other(what) => what,
            found => panic!("{found:?}"),
        };
        assert_eq!(other(&ext4("photos")), "an ext4 file system labelled \"photos\"");
        assert_eq!(other(&ext4("")), "an ext4 file system");
        let mut gpt = vec![0u8; 4096];
        gpt[510..512].copy_from_slice(&[0x55, 0xAA]);
        gpt[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(other(&gpt), "a GPT partition table");
        gpt[512..520].fill(0);
        assert_eq!(other(&gpt), "an MBR partition table or boot sector");
        let mut data = vec![0u8; 4096];
        data[3000] = 7;
        assert_eq!(other(&data), "data (a non-zero byte at 3000)");
    }

    #[test]
    fn a_disk_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vdb");
        let mut bytes = ext4("EPHEMERAL");
        bytes.resize(2 * HEAD_BYTES as usize, 0xff);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(inspect(&path, "EPHEMERAL").unwrap(), Contents::Labelled);
        assert_eq!(ext_label(&bytes).as_deref(), Some("EPHEMERAL"));
        assert_eq!(ext_label(&bytes[..1000]), None);
        assert!(inspect(&dir.path().join("missing"), "EPHEMERAL").is_err());
    }
}
