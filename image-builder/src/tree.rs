//! A file tree in memory: what goes into an initramfs or a root filesystem. Owners are
//! always root and times are one fixed value, so the same inputs give the same bytes.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// What a path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir {
        /// Permission bits, e.g. 0o755.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Permission bits, e.g. 0o644.
        mode: u32,
        /// Its content.
        data: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// Where it points.
        target: String,
    },
}

/// A tree was given a path it cannot hold.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// Not absolute, or with `..` or `.` in it.
    #[error("{0:?}: tree paths are absolute and plain (no '.' or '..')")]
    BadPath(PathBuf),
    /// A parent of the path is not a directory.
    #[error("{path:?}: its parent {parent:?} is not a directory")]
    NotADirectory {
        /// The path being added.
        path: PathBuf,
        /// The parent that is a file or link.
        parent: PathBuf,
    },
}

/// Paths (absolute, without the leading `/`) to what they hold, in byte order of the path,
/// which is the order every writer emits them in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileTree {
    nodes: BTreeMap<PathBuf, Node>,
}

impl FileTree {
    /// An empty tree (the root directory is implied, mode 0o755).
    pub fn new() -> Self {
        FileTree::default()
    }

    /// Adds (or replaces) `path`, creating missing parent directories with mode 0o755.
    pub fn insert(&mut self, path: impl AsRef<Path>, node: Node) -> Result<(), TreeError> {
        let path = path.as_ref();
        let relative = plain(path)?;
        let mut parent = PathBuf::new();
        let components: Vec<_> = relative.components().collect();
        for component in &components[..components.len().saturating_sub(1)] {
            parent.push(component);
            match self.nodes.get(&parent) {
                None => {
                    self.nodes.insert(parent.clone(), Node::Dir { mode: 0o755 });
                }
                Some(Node::Dir { .. }) => {}
                Some(_) => {
                    return Err(TreeError::NotADirectory {
                        path: path.to_path_buf(),
                        parent: Path::new("/").join(&parent),
                    })
                }
            }
        }
        if !relative.as_os_str().is_empty() {
            self.nodes.insert(relative, node);
        }
        Ok(())
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: impl AsRef<Path>, mode: u32) -> Result<(), TreeError> {
        self.insert(path, Node::Dir { mode })
    }

    /// Adds a regular file.
    pub fn file(
        &mut self,
        path: impl AsRef<Path>,
        mode: u32,
        data: impl Into<Vec<u8>>,
    ) -> Result<(), TreeError> {
        self.insert(path, Node::File { mode, data: data.into() })
    }

    /// Adds a symbolic link.
    pub fn symlink(
        &mut self,
        path: impl AsRef<Path>,
        target: impl Into<String>,
    ) -> Result<(), TreeError> {
        self.insert(path, Node::Symlink { target: target.into() })
    }

    /// What `path` holds.
    pub fn get(&self, path: impl AsRef<Path>) -> Option<&Node> {
        plain(path.as_ref()).ok().and_then(|p| self.nodes.get(&p))
    }

    /// Every entry, parents before children, as paths relative to the root.
    pub fn entries(&self) -> impl Iterator<Item = (&Path, &Node)> {
        self.nodes.iter().map(|(p, n)| (p.as_path(), n))
    }

    /// Writes the files, links and directories below `prefix` into `dir` (for tools that
    /// read a directory, such as the module index).
    pub fn write_below(&self, prefix: impl AsRef<Path>, dir: &Path) -> std::io::Result<()> {
        let prefix = plain(prefix.as_ref())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        std::fs::create_dir_all(dir)?;
        for (path, node) in self.entries() {
            let Ok(relative) = path.strip_prefix(&prefix) else { continue };
            let target = dir.join(relative);
            match node {
                Node::Dir { .. } => std::fs::create_dir_all(&target)?,
                Node::File { data, .. } => std::fs::write(&target, data)?,
                Node::Symlink { target: link } => std::os::unix::fs::symlink(link, &target)?,
            }
        }
        Ok(())
    }

    /// The total size of all file contents.
    pub fn content_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match n {
                Node::File { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }
}

/// `path` relative to `/`, refusing anything that is not a plain absolute path.
fn plain(path: &Path) -> Result<PathBuf, TreeError> {
    let mut components = path.components();
    if components.next() != Some(Component::RootDir) {
        return Err(TreeError::BadPath(path.to_path_buf()));
    }
    let mut relative = PathBuf::new();
    for component in components {
        match component {
            Component::Normal(part) => relative.push(part),
            _ => return Err(TreeError::BadPath(path.to_path_buf())),
        }
    }
    Ok(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_created_and_order_is_stable() {
        let mut tree = FileTree::new();
        tree.file("/usr/bin/b", 0o755, "b").unwrap();
        tree.symlink("/bin", "usr/bin").unwrap();
        tree.file("/etc/a", 0o644, "a").unwrap();
        let paths: Vec<_> = tree.entries().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(paths, ["bin", "etc", "etc/a", "usr", "usr/bin", "usr/bin/b"]);
        assert_eq!(tree.content_bytes(), 2);
    }

    #[test]
    fn refuses_bad_paths() {
        let mut tree = FileTree::new();
        assert!(tree.file("relative", 0o644, "").is_err());
        assert!(tree.file("/a/../b", 0o644, "").is_err());
        tree.file("/f", 0o644, "").unwrap();
        assert!(matches!(tree.file("/f/g", 0o644, ""), Err(TreeError::NotADirectory { .. })));
    }
}
