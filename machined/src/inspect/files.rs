//! Listing and reading files, for debugging a node without a shell.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One directory entry.
#[derive(Debug, Clone, Default)]
pub struct FileEntry {
    /// Full path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// A directory.
    pub is_dir: bool,
    /// Where a symbolic link points.
    pub link_target: String,
    /// Modification time, seconds since the epoch.
    pub modified_unix: u64,
    /// Why this entry could not be read; the listing goes on.
    pub error: String,
}

/// `root` itself and what lies below it, `depth` levels down (0: its entries only; negative:
/// no limit), depth first, names sorted. Symbolic links are listed, not followed.
pub fn list(root: &Path, depth: i32) -> Vec<FileEntry> {
    let mut out = Vec::new();
    out.push(entry(root));
    if out[0].is_dir {
        walk(root, depth, &mut out);
    }
    out
}

fn walk(dir: &Path, depth: i32, out: &mut Vec<FileEntry>) {
    let mut children: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            out.push(FileEntry {
                path: dir.display().to_string(),
                error: e.to_string(),
                ..Default::default()
            });
            return;
        }
    };
    children.sort();
    for child in children {
        let info = entry(&child);
        let descend = info.is_dir && depth != 0;
        out.push(info);
        if descend {
            walk(&child, depth - 1, out);
        }
    }
}

fn entry(path: &Path) -> FileEntry {
    let display = path.display().to_string();
    match fs::symlink_metadata(path) {
        Ok(meta) => FileEntry {
            path: display,
            size: meta.len(),
            mode: meta.mode(),
            is_dir: meta.is_dir(),
            link_target: fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_default(),
            modified_unix: meta.mtime().max(0) as u64,
            error: String::new(),
        },
        Err(e) => FileEntry { path: display, error: e.to_string(), ..Default::default() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_to_the_requested_depth() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/deep"), "x").unwrap();
        fs::write(dir.path().join("top"), "hello").unwrap();
        let names = |depth| {
            list(dir.path(), depth)
                .into_iter()
                .map(|e| {
                    e.path.strip_prefix(&dir.path().display().to_string()).unwrap().to_string()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(names(0), ["", "/a", "/top"]);
        assert_eq!(names(-1), ["", "/a", "/a/b", "/a/b/deep", "/top"]);
        let top = list(&dir.path().join("top"), 0);
        assert_eq!((top.len(), top[0].size), (1, 5));
    }
}
