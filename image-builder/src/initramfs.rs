//! The initramfs: a newc ("070701") cpio archive of a [`FileTree`], compressed with zstd,
//! which the kernel unpacks into its rootfs before running `/init`.
//!
//! The archive is written by hand because the format is small and every field must be fixed
//! for the output to be reproducible: inode numbers count up in entry order, owners and
//! devices are 0, every time is the given `mtime`, and entries come in the tree's order
//! (parents first). The kernel accepts zstd-compressed initramfs images; compression runs on
//! one thread at a fixed level so the bytes do not depend on the machine.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::tree::{FileTree, Node};

/// The zstd level of [`build`]: high, because the kernel and initramfs are read from slow
/// boot media and decompression speed barely depends on the level.
pub const ZSTD_LEVEL: i32 = 19;

/// The magic of a newc header (no checksums).
const NEWC_MAGIC: &[u8; 6] = b"070701";
/// The name of the entry that ends an archive.
const TRAILER: &[u8] = b"TRAILER!!!";

/// File type bits of `st_mode`, as cpio stores them.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// An initramfs could not be built from a tree.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// A mode had bits besides the permission bits (0o7777).
    #[error("/{path:?}: mode {mode:#o} has bits outside 0o7777; give only permission bits")]
    BadMode {
        /// The entry, relative to the root.
        path: PathBuf,
        /// The mode it had.
        mode: u32,
    },
    /// A file or link target is too long for newc's 32-bit size field.
    #[error("/{path:?}: {bytes} bytes do not fit a cpio newc entry (at most 4 GiB - 1)")]
    TooLarge {
        /// The entry, relative to the root.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// zstd failed.
    #[error("compressing the initramfs with zstd: {0}")]
    Compress(#[source] std::io::Error),
}

/// The tree as an uncompressed newc cpio archive, every entry stamped with `mtime`.
pub fn cpio_newc(tree: &FileTree, mtime: u32) -> Result<Vec<u8>, InitramfsError> {
    let mut out = Vec::with_capacity(usize::try_from(tree.content_bytes()).unwrap_or(0) + 4096);
    for (ino, (path, node)) in (1u32..).zip(tree.entries()) {
        let (mode, nlink, data) = match node {
            Node::Dir { mode } => (S_IFDIR | permissions(path, *mode)?, 2, &[][..]),
            Node::File { mode, data } => (S_IFREG | permissions(path, *mode)?, 1, &data[..]),
            // Link permissions are not used by Linux; 0o777 is what it reports for them.
            Node::Symlink { target } => (S_IFLNK | 0o777, 1, target.as_bytes()),
        };
        let size = u32::try_from(data.len()).map_err(|_| InitramfsError::TooLarge {
            path: path.to_path_buf(),
            bytes: data.len() as u64,
        })?;
        let entry = Header { ino, mode, nlink, mtime, size };
        entry.write(&mut out, path.as_os_str().as_bytes());
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    Header { ino: 0, mode: 0, nlink: 1, mtime: 0, size: 0 }.write(&mut out, TRAILER);
    Ok(out)
}

/// The tree as a zstd-compressed newc cpio archive: what the kernel takes as its initrd.
pub fn build(tree: &FileTree, mtime: u32) -> Result<Vec<u8>, InitramfsError> {
    let cpio = cpio_newc(tree, mtime)?;
    zstd::bulk::compress(&cpio, ZSTD_LEVEL).map_err(InitramfsError::Compress)
}

/// `mode` if it holds only permission bits (the type bits come from the node).
fn permissions(path: &Path, mode: u32) -> Result<u32, InitramfsError> {
    if mode & !0o7777 != 0 {
        return Err(InitramfsError::BadMode { path: path.to_path_buf(), mode });
    }
    Ok(mode)
}

/// The fields of a newc header that vary; owners, devices and the checksum are always 0.
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
}

impl Header {
    /// Appends the 110-byte header and the NUL-terminated `name`, padded to 4 bytes.
    fn write(&self, out: &mut Vec<u8>, name: &[u8]) {
        // `name` comes from a tree path or the trailer, far below 4 GiB.
        let namesize = name.len() as u32 + 1;
        let fields =
            [self.ino, self.mode, 0, 0, self.nlink, self.mtime, self.size, 0, 0, 0, 0, namesize, 0];
        out.extend_from_slice(NEWC_MAGIC);
        for field in fields {
            out.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        out.extend_from_slice(name);
        out.push(0);
        pad4(out);
    }
}

/// Pads `out` with NULs to a multiple of 4 bytes (headers start at 0, so this aligns both
/// the data after a name and the header after data).
fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry read back from an archive.
    #[derive(Debug, PartialEq)]
    struct Entry {
        name: String,
        ino: u32,
        mode: u32,
        nlink: u32,
        mtime: u32,
        data: Vec<u8>,
    }

    /// A minimal newc reader: checks magic, zero owners/devices and padding, stops at the
    /// trailer, and fails on anything after it.
    fn parse(mut bytes: &[u8]) -> Vec<Entry> {
        let total = bytes.len();
        let mut entries = Vec::new();
        loop {
            assert_eq!((total - bytes.len()) % 4, 0, "header not 4-aligned");
            assert_eq!(&bytes[..6], NEWC_MAGIC);
            let field = |i: usize| {
                let hex = std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(hex, 16).unwrap()
            };
            let (ino, mode, nlink, mtime, size, namesize) =
                (field(0), field(1), field(4), field(5), field(6), field(11));
            for zero in [2, 3, 7, 8, 9, 10, 12] {
                assert_eq!(field(zero), 0, "field {zero}");
            }
            let name_end = 110 + namesize as usize;
            assert_eq!(bytes[name_end - 1], 0, "name is NUL-terminated");
            let name = String::from_utf8(bytes[110..name_end - 1].to_vec()).unwrap();
            let data_start = name_end.next_multiple_of(4);
            assert!(bytes[name_end..data_start].iter().all(|&b| b == 0));
            let data_end = data_start + size as usize;
            let data = bytes[data_start..data_end].to_vec();
            let next = data_end.next_multiple_of(4).min(bytes.len());
            assert!(bytes[data_end..next].iter().all(|&b| b == 0));
            bytes = &bytes[next..];
            if name == "TRAILER!!!" {
                assert!(bytes.is_empty(), "bytes after the trailer");
                return entries;
            }
            entries.push(Entry { name, ino, mode, nlink, mtime, data });
        }
    }

    fn sample() -> FileTree {
        let mut tree = FileTree::new();
        tree.file("/init", 0o755, "#!/bin/sh\n").unwrap();
        tree.file("/etc/hostname", 0o644, "cairn").unwrap();
        tree.file("/etc/empty", 0o600, "").unwrap();
        tree.dir("/tmp", 0o1777).unwrap();
        tree.symlink("/bin", "usr/bin").unwrap();
        tree.file("/usr/bin/tool", 0o4755, vec![7u8; 1001]).unwrap();
        tree
    }

    #[test]
    fn archive_reads_back() {
        let entries = parse(&cpio_newc(&sample(), 1_700_000_000).unwrap());
        let summary: Vec<_> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.ino, e.mode, e.nlink, e.data.len()))
            .collect();
        assert_eq!(
            summary,
            [
                ("bin", 1, 0o120777, 1, 7),
                ("etc", 2, 0o040755, 2, 0),
                ("etc/empty", 3, 0o100600, 1, 0),
                ("etc/hostname", 4, 0o100644, 1, 5),
                ("init", 5, 0o100755, 1, 10),
                ("tmp", 6, 0o041777, 2, 0),
                ("usr", 7, 0o040755, 2, 0),
                ("usr/bin", 8, 0o040755, 2, 0),
                ("usr/bin/tool", 9, 0o104755, 1, 1001),
            ]
        );
        assert!(entries.iter().all(|e| e.mtime == 1_700_000_000));
        assert_eq!(entries[0].data, b"usr/bin");
        assert_eq!(entries[3].data, b"cairn");
        assert_eq!(entries[8].data, vec![7u8; 1001]);
    }

    #[test]
    fn exact_bytes_of_one_entry() {
        let mut tree = FileTree::new();
        tree.file("/a", 0o644, "xy").unwrap();
        let cpio = cpio_newc(&tree, 0x10).unwrap();
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
        // rdevmajor, rdevminor, namesize, check
        let expected_header = concat!(
            "070701", "00000001", "000081A4", "00000000", "00000000", "00000001", "00000010",
            "00000002", "00000000", "00000000", "00000000", "00000000", "00000002", "00000000",
        );
        assert_eq!(&cpio[..110], expected_header.as_bytes());
        // Name "a\0" ends at 112 (aligned), then "xy" and two pad bytes.
        assert_eq!(&cpio[110..116], b"a\0xy\0\0");
        assert_eq!(cpio.len() % 4, 0);
        assert!(cpio.ends_with(b"TRAILER!!!\0\0\0\0"));
    }

    #[test]
    fn empty_tree_is_just_the_trailer() {
        assert!(parse(&cpio_newc(&FileTree::new(), 0).unwrap()).is_empty());
    }

    #[test]
    fn rejects_type_bits_in_modes() {
        let mut tree = FileTree::new();
        tree.file("/x", 0o100644, "").unwrap();
        let err = cpio_newc(&tree, 0).unwrap_err();
        assert!(matches!(err, InitramfsError::BadMode { mode: 0o100644, .. }), "{err}");
    }

    #[test]
    fn build_is_deterministic_and_decompresses_to_the_archive() {
        let tree = sample();
        let first = build(&tree, 42).unwrap();
        assert_eq!(first, build(&tree, 42).unwrap());
        assert_ne!(first, build(&tree, 43).unwrap());
        assert_eq!(&first[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd frame magic");
        let cpio = zstd::stream::decode_all(&first[..]).unwrap();
        assert_eq!(cpio, cpio_newc(&tree, 42).unwrap());
    }
}
