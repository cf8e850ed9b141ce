//! Unpacking `.deb` files: an `ar` archive whose `data.tar.{xz,zst,gz}` member holds the
//! files. Only the paths a caller selects are taken, straight into a [`FileTree`].

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::tree::{FileTree, Node, TreeError};

/// A package could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The package file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Not a Debian package, or one compressed in a way we do not read.
    #[error("{path}: {reason}")]
    Format {
        /// The package file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A selected entry does not fit the tree.
    #[error("{path}: {source}")]
    Tree {
        /// The package file.
        path: PathBuf,
        /// Why.
        source: TreeError,
    },
}

/// Copies the entries of `deb` whose absolute path `select` accepts into `tree`.
/// Hard links become copies; devices and FIFOs are skipped (packages Cairn takes have none).
/// Returns how many entries were taken.
pub fn unpack_into(
    deb: &Path,
    tree: &mut FileTree,
    select: impl Fn(&Path) -> bool,
) -> Result<usize, DebError> {
    let data = member_tar(deb, "data.tar")?;
    copy_selected(&data, deb, tree, &select)
}

/// The control file (`DEBIAN/control`: `Package:`, `Version:`, `Depends:`, ...) of `deb`.
pub fn control(deb: &Path) -> Result<String, DebError> {
    let tar_bytes = member_tar(deb, "control.tar")?;
    let io_error = |source| DebError::Io { path: deb.into(), source };
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    for entry in archive.entries().map_err(io_error)? {
        let mut entry = entry.map_err(io_error)?;
        let path = entry.path().map_err(io_error)?;
        if path.strip_prefix(".").unwrap_or(&path) == Path::new("control") {
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(io_error)?;
            return Ok(text);
        }
    }
    Err(DebError::Format { path: deb.into(), reason: "control.tar has no control file".into() })
}

/// When `deb` was built: the date of its `data.tar` member, seconds since 1970. dpkg-deb
/// stamps members with the build's SOURCE_DATE_EPOCH (the package's changelog date on
/// Debian's builders), so it is fixed for a given package and earlier than any time the
/// package can be installed at.
pub fn built_at(deb: &Path) -> Result<u64, DebError> {
    let io_error = |source| DebError::Io { path: deb.into(), source };
    let mut archive = ar::Archive::new(File::open(deb).map_err(io_error)?);
    while let Some(member) = archive.next_entry() {
        let member = member.map_err(io_error)?;
        if member.header().identifier().starts_with(b"data.tar") {
            return Ok(member.header().mtime());
        }
    }
    Err(DebError::Format {
        path: deb.into(),
        reason: "no data.tar member: not a Debian package".into(),
    })
}

/// The uncompressed bytes of the tar member `stem` (`data.tar`, `control.tar`) of `deb`,
/// whichever compression it uses.
fn member_tar(deb: &Path, stem: &str) -> Result<Vec<u8>, DebError> {
    let io_error = |source| DebError::Io { path: deb.into(), source };
    let format_error = |reason: String| DebError::Format { path: deb.into(), reason };
    let mut archive = ar::Archive::new(File::open(deb).map_err(io_error)?);
    while let Some(member) = archive.next_entry() {
        let mut member = member.map_err(io_error)?;
        let name = String::from_utf8_lossy(member.header().identifier()).into_owned();
        let Some(compression) = name.strip_prefix(stem) else { continue };
        let mut compressed = Vec::new();
        member.read_to_end(&mut compressed).map_err(io_error)?;
        return match compression {
            ".xz" => {
                let mut out = Vec::new();
                lzma_rs::xz_decompress(&mut compressed.as_slice(), &mut out)
                    .map_err(|e| format_error(format!("{name}: {e}")))?;
                Ok(out)
            }
            ".zst" => zstd::decode_all(compressed.as_slice()).map_err(io_error),
            "" => Ok(compressed),
            other => Err(format_error(format!("{stem}{other}: compression not supported"))),
        };
    }
    Err(format_error(format!("no {stem} member: not a Debian package")))
}

fn copy_selected(
    tar_bytes: &[u8],
    deb: &Path,
    tree: &mut FileTree,
    select: &impl Fn(&Path) -> bool,
) -> Result<usize, DebError> {
    let io_error = |source| DebError::Io { path: deb.into(), source };
    let tree_error = |source| DebError::Tree { path: deb.into(), source };
    // Hard links name an earlier entry: remember contents by path.
    let mut taken = 0;
    let mut archive = tar::Archive::new(tar_bytes);
    let mut contents: std::collections::HashMap<PathBuf, Vec<u8>> =
        std::collections::HashMap::new();
    for entry in archive.entries().map_err(io_error)? {
        let mut entry = entry.map_err(io_error)?;
        let raw = entry.path().map_err(io_error)?.into_owned();
        let path = Path::new("/").join(raw.strip_prefix(".").unwrap_or(&raw));
        if path == Path::new("/") {
            continue;
        }
        let mode = entry.header().mode().map_err(io_error)? & 0o7777;
        let kind = entry.header().entry_type();
        let node = if kind.is_dir() {
            Node::Dir { mode }
        } else if kind.is_symlink() {
            let target = entry.link_name().map_err(io_error)?.unwrap_or_default();
            Node::Symlink { target: target.to_string_lossy().into_owned() }
        } else if kind.is_hard_link() {
            let target = entry.link_name().map_err(io_error)?.unwrap_or_default().into_owned();
            let target = Path::new("/").join(target.strip_prefix(".").unwrap_or(&target));
            let data = contents.get(&target).cloned().unwrap_or_default();
            Node::File { mode, data }
        } else if kind.is_file() {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(io_error)?;
            contents.insert(path.clone(), data.clone());
            Node::File { mode, data }
        } else {
            continue;
        };
        if select(&path) {
            tree.insert(&path, node).map_err(tree_error)?;
            taken += 1;
        }
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The date `make_deb` gives its package's members.
    const BUILT_AT: u64 = 1_750_000_000;

    /// Builds a .deb: ar with debian-binary, control.tar and a zstd data.tar.
    fn make_deb(dir: &Path) -> PathBuf {
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            header.set_size(data.len() as u64);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            header.set_path(path).unwrap();
            header.set_cksum();
            tar.append(&header, data).unwrap();
        };
        add("./", tar::EntryType::Directory, b"", None);
        add("./usr/bin/", tar::EntryType::Directory, b"", None);
        add("./usr/bin/tool", tar::EntryType::Regular, b"#!tool", None);
        add("./usr/bin/alias", tar::EntryType::Symlink, b"", Some("tool"));
        add("./usr/bin/copy", tar::EntryType::Link, b"", Some("./usr/bin/tool"));
        add("./usr/share/doc/x", tar::EntryType::Regular, b"docs", None);
        let data = zstd::encode_all(tar.into_inner().unwrap().as_slice(), 3).unwrap();
        let mut control = tar::Builder::new(Vec::new());
        let text = b"Package: tool\nVersion: 1.0-1\nArchitecture: amd64\n";
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(text.len() as u64);
        header.set_path("./control").unwrap();
        header.set_cksum();
        control.append(&header, &text[..]).unwrap();
        let control = zstd::encode_all(control.into_inner().unwrap().as_slice(), 3).unwrap();
        let path = dir.join("tool.deb");
        let mut builder = ar::Builder::new(File::create(&path).unwrap());
        for (name, bytes) in [
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.zst", control),
            ("data.tar.zst", data),
        ] {
            let mut header = ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64);
            // As dpkg-deb stamps them: the package's SOURCE_DATE_EPOCH.
            header.set_mtime(BUILT_AT);
            builder.append(&header, bytes.as_slice()).unwrap();
        }
        path
    }

    #[test]
    fn takes_only_selected_paths() {
        let dir = tempfile::tempdir().unwrap();
        let deb = make_deb(dir.path());
        let mut tree = FileTree::new();
        let taken = unpack_into(&deb, &mut tree, |p| p.starts_with("/usr/bin")).unwrap();
        assert_eq!(taken, 4);
        assert_eq!(
            tree.get("/usr/bin/tool"),
            Some(&Node::File { mode: 0o644, data: b"#!tool".to_vec() })
        );
        assert_eq!(
            tree.get("/usr/bin/copy"),
            Some(&Node::File { mode: 0o644, data: b"#!tool".to_vec() })
        );
        assert_eq!(tree.get("/usr/bin/alias"), Some(&Node::Symlink { target: "tool".into() }));
        assert!(tree.get("/usr/share/doc/x").is_none());
        assert!(control(&deb).unwrap().starts_with("Package: tool\nVersion: 1.0-1\n"));
        assert_eq!(built_at(&deb).unwrap(), BUILT_AT);
    }

    #[test]
    fn refuses_what_is_not_a_package() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.deb");
        std::fs::write(&path, b"!<arch>\n").unwrap();
        assert!(matches!(
            unpack_into(&path, &mut FileTree::new(), |_| true),
            Err(DebError::Format { .. })
        ));
        assert!(matches!(built_at(&path), Err(DebError::Format { .. })));
    }
}
