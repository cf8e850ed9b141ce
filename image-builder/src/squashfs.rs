//! The root filesystem: a squashfs image of a [`FileTree`], written with backhand.
//!
//! Every inode is owned by root (uid/gid 0, the only entry of the id table) and stamped with
//! the given `mtime`, as is the superblock; data is zstd-compressed in 128 KiB blocks on one
//! thread, so the same tree and time give the same bytes. Two backhand 0.23 details matter:
//!
//! - its duplicate-file detection compares only the length and hash of a file's *first*
//!   block, so two files that share their first 128 KiB would share all their data (and the
//!   first one's size); it is turned off.
//! - it has no setter for the root directory's time, so the root inode's mtime is 0 (still
//!   fixed; every other inode and the superblock carry `mtime`).

use std::io::{Cursor, Seek, Write};
use std::path::{Path, PathBuf};

use backhand::compression::{CompressionOptions, Compressor, Zstd};
use backhand::{BackhandError, FilesystemCompressor, FilesystemWriter, NodeHeader};

use crate::tree::{FileTree, Node};

/// The data block size: the kernel's and mksquashfs's default.
pub const BLOCK_SIZE: u32 = 128 * 1024;

/// The zstd level: mksquashfs's default for zstd, a balance of image size and build time.
pub const ZSTD_LEVEL: u32 = 15;

/// Permissions of the root directory.
const ROOT_MODE: u16 = 0o755;

/// A squashfs image could not be built from a tree.
#[derive(Debug, thiserror::Error)]
pub enum SquashfsError {
    /// A mode had bits besides the permission bits (0o7777).
    #[error("/{path:?}: mode {mode:#o} has bits outside 0o7777; give only permission bits")]
    BadMode {
        /// The entry, relative to the root.
        path: PathBuf,
        /// The mode it had.
        mode: u32,
    },
    /// The content would overflow the 32-bit offsets and sizes backhand writes.
    #[error("{bytes} bytes of file content: a root filesystem must stay below 4 GiB")]
    TooLarge {
        /// The tree's total content size.
        bytes: u64,
    },
    /// backhand refused an entry.
    #[error("/{path:?}: adding it to the squashfs image: {source}")]
    Add {
        /// The entry, relative to the root.
        path: PathBuf,
        /// What backhand said.
        source: BackhandError,
    },
    /// Compressing or writing the image failed.
    #[error("writing the squashfs image: {0}")]
    Write(#[source] BackhandError),
}

/// Writes the tree as a squashfs image to `out`, starting at `out`'s current position, and
/// returns the image's size in bytes (a multiple of 4 KiB, as loop devices want).
pub fn write(
    tree: &FileTree,
    mtime: u32,
    out: &mut (impl Write + Seek),
) -> Result<u64, SquashfsError> {
    let content = tree.content_bytes();
    if content >= u64::from(u32::MAX) {
        return Err(SquashfsError::TooLarge { bytes: content });
    }
    let mut fs = FilesystemWriter::default();
    fs.set_block_size(BLOCK_SIZE);
    fs.set_time(mtime);
    fs.set_root_mode(ROOT_MODE);
    fs.set_only_root_id();
    fs.set_no_duplicate_files(false);
    let options = CompressionOptions::Zstd(Zstd { compression_level: ZSTD_LEVEL });
    let compressor =
        FilesystemCompressor::new(Compressor::Zstd, Some(options)).map_err(SquashfsError::Write)?;
    fs.set_compressor(compressor);

    for (path, node) in tree.entries() {
        let added = match node {
            Node::Dir { mode } => fs.push_dir(path, header(path, *mode, mtime)?),
            Node::File { mode, data } => {
                fs.push_file(Cursor::new(data.as_slice()), path, header(path, *mode, mtime)?)
            }
            // Link permissions are not used by Linux; 0o777 is what it reports for them.
            Node::Symlink { target } => {
                fs.push_symlink(target, path, NodeHeader::new(0o777, 0, 0, mtime))
            }
        };
        added.map_err(|source| SquashfsError::Add { path: path.to_path_buf(), source })?;
    }

    // backhand seeks back to 0 to write the superblock: make 0 the current position.
    let start = out.stream_position().map_err(|e| SquashfsError::Write(e.into()))?;
    let (_superblock, bytes) = fs.write_with_offset(out, start).map_err(SquashfsError::Write)?;
    Ok(bytes)
}

/// The tree as a squashfs image in memory.
pub fn build(tree: &FileTree, mtime: u32) -> Result<Vec<u8>, SquashfsError> {
    let mut image = Cursor::new(Vec::new());
    write(tree, mtime, &mut image)?;
    Ok(image.into_inner())
}

/// Root-owned metadata for an entry, refusing modes that are more than permission bits.
fn header(path: &Path, mode: u32, mtime: u32) -> Result<NodeHeader, SquashfsError> {
    let permissions = u16::try_from(mode)
        .ok()
        .filter(|p| p & !0o7777 == 0)
        .ok_or_else(|| SquashfsError::BadMode { path: path.to_path_buf(), mode })?;
    Ok(NodeHeader::new(permissions, 0, 0, mtime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use backhand::{FilesystemReader, InnerNode};
    use std::io::Read;

    fn sample() -> FileTree {
        let mut tree = FileTree::new();
        tree.file("/etc/os-release", 0o644, "ID=cairn\n").unwrap();
        tree.file("/etc/empty", 0o600, "").unwrap();
        tree.dir("/tmp", 0o1777).unwrap();
        tree.symlink("/bin", "usr/bin").unwrap();
        tree.file("/usr/bin/tool", 0o4755, vec![0xAB; 3]).unwrap();
        // Larger than a block, and two files that share their first block but differ later
        // (backhand's duplicate detection would confuse them).
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut other = big.clone();
        other[200_000] ^= 0xFF;
        other.truncate(250_000);
        tree.file("/usr/lib/big", 0o644, big).unwrap();
        tree.file("/usr/lib/other", 0o644, other).unwrap();
        tree
    }

    #[test]
    fn image_reads_back() {
        let tree = sample();
        let image = build(&tree, 1_700_000_000).unwrap();
        assert_eq!(image.len() % 4096, 0);
        let fs = FilesystemReader::from_reader(Cursor::new(image)).unwrap();
        assert_eq!(fs.block_size, BLOCK_SIZE);
        assert_eq!(fs.compressor, Compressor::Zstd);
        assert_eq!(fs.mod_time, 1_700_000_000);

        let root = fs.files().next().unwrap();
        assert_eq!(root.fullpath, Path::new("/"));
        assert_eq!(root.header.permissions, 0o755);

        let mut seen = Vec::new();
        for node in fs.files().skip(1) {
            let relative = node.fullpath.strip_prefix("/").unwrap();
            seen.push(relative.to_path_buf());
            assert_eq!((node.header.uid, node.header.gid), (0, 0), "{relative:?}");
            assert_eq!(node.header.mtime, 1_700_000_000, "{relative:?}");
            match (&node.inner, tree.get(Path::new("/").join(relative)).unwrap()) {
                (InnerNode::Dir(_), Node::Dir { mode }) => {
                    assert_eq!(u32::from(node.header.permissions), *mode, "{relative:?}")
                }
                (InnerNode::File(file), Node::File { mode, data }) => {
                    assert_eq!(u32::from(node.header.permissions), *mode, "{relative:?}");
                    let mut read = Vec::new();
                    fs.file(file).reader().read_to_end(&mut read).unwrap();
                    assert!(read == *data, "{relative:?}: content differs");
                }
                (InnerNode::Symlink(link), Node::Symlink { target }) => {
                    assert_eq!(link.link, Path::new(target));
                    assert_eq!(node.header.permissions, 0o777);
                }
                (found, expected) => panic!("{relative:?}: {found:?} is not {expected:?}"),
            }
        }
        let expected: Vec<_> = tree.entries().map(|(p, _)| p.to_path_buf()).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn same_inputs_give_same_bytes() {
        let tree = sample();
        let first = build(&tree, 7).unwrap();
        assert_eq!(first, build(&tree, 7).unwrap());
        assert_ne!(first, build(&tree, 8).unwrap());
    }

    #[test]
    fn writes_at_the_current_position() {
        let tree = sample();
        let image = build(&tree, 7).unwrap();
        let mut out = Cursor::new(b"prefix".to_vec());
        out.seek(std::io::SeekFrom::End(0)).unwrap();
        let bytes = write(&tree, 7, &mut out).unwrap();
        assert_eq!(bytes, image.len() as u64);
        assert_eq!(&out.get_ref()[..6], b"prefix");
        assert!(out.get_ref()[6..] == image[..]);
    }

    #[test]
    fn empty_tree_is_an_image() {
        let image = build(&FileTree::new(), 0).unwrap();
        let fs = FilesystemReader::from_reader(Cursor::new(image)).unwrap();
        assert_eq!(fs.files().count(), 1);
    }

    #[test]
    fn rejects_type_bits_in_modes() {
        let mut tree = FileTree::new();
        tree.dir("/d", 0o040755).unwrap();
        let err = build(&tree, 0).unwrap_err();
        assert!(matches!(err, SquashfsError::BadMode { mode: 0o040755, .. }), "{err}");
    }
}
