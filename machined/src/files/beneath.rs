//! Opening files beneath a directory without ever leaving it: each step is an
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (the last part included) relative to the
//! directory opened before, so a symbolic link or `..` planted anywhere on the way (by a pod
//! with a hostPath on `/var`, say), even while machined walks, fails the open instead of
//! redirecting it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};

/// Mode of the directories created on the way.
const DIR_MODE: u32 = 0o755;

/// A directory opened beneath a root.
#[derive(Debug)]
pub struct BeneathDir {
    fd: OwnedFd,
}

fn how(flags: OFlag, mode: u32) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(mode))
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS)
}

fn refused(path: &Path, errno: Errno) -> io::Error {
    let why = match errno {
        Errno::ELOOP => "a symbolic link on the way".to_string(),
        Errno::EXDEV => "it would leave the directory".to_string(),
        Errno::ENOTDIR => "a part of it is not a directory".to_string(),
        other => other.desc().to_string(),
    };
    io::Error::new(io::Error::from(errno).kind(), format!("{}: {why}", path.display()))
}

impl BeneathDir {
    /// The directory `relative` (plain names only) beneath `root`, created with its missing
    /// parents (and `root` itself, which is machined's own) when `create`.
    pub fn open(root: &Path, relative: &Path, create: bool) -> io::Result<BeneathDir> {
        if create {
            std::fs::create_dir_all(root)?;
        }
        let root_fd: OwnedFd = File::open(root)?.into();
        let mut dir = BeneathDir { fd: root_fd };
        let mut walked = root.to_path_buf();
        for part in relative.components() {
            let Component::Normal(name) = part else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: only plain names may lead beneath {}",
                        relative.display(),
                        root.display()
                    ),
                ));
            };
            walked.push(name);
            let open =
                || openat2(dir.fd.as_fd(), name, how(OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0));
            let fd = match open() {
                Err(Errno::ENOENT) if create => {
                    match mkdirat(dir.fd.as_fd(), name, Mode::from_bits_truncate(DIR_MODE)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(errno) => return Err(refused(&walked, errno)),
                    }
                    open()
                }
                other => other,
            }
            .map_err(|errno| refused(&walked, errno))?;
            dir = BeneathDir { fd };
        }
        Ok(dir)
    }

    /// Opens the file `name` in this directory with `flags` (and `mode`, when it is created).
    pub fn open_file(&self, name: &str, flags: OFlag, mode: u32) -> io::Result<File> {
        let fd = openat2(self.fd.as_fd(), name, how(flags, mode))
            .map_err(|errno| refused(Path::new(name), errno))?;
        Ok(File::from(fd))
    }

    /// A path that reaches `name` in this very directory (through `/proc/self/fd`, which
    /// names the opened directory, not whatever now sits at its old path), for code that
    /// works with paths.
    pub fn path_of(&self, name: &str) -> PathBuf {
        Path::new("/proc/self/fd").join(self.fd.as_raw_fd().to_string()).join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn walks_and_creates_beneath_but_never_through_a_link_or_up() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("var");
        let outside = tempfile::tempdir().unwrap();
        let dir = BeneathDir::open(&root, Path::new("a/b"), true).unwrap();
        std::fs::write(dir.path_of("f"), "hello").unwrap();
        let mut text = String::new();
        dir.open_file("f", OFlag::O_RDONLY, 0).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!((text.as_str(), root.join("a/b/f").exists()), ("hello", true));

        std::os::unix::fs::symlink(outside.path(), root.join("a/link")).unwrap();
        let error = BeneathDir::open(&root, Path::new("a/link/c"), true).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        std::os::unix::fs::symlink(outside.path().join("x"), root.join("a/b/g")).unwrap();
        let error = dir.open_file("g", OFlag::O_WRONLY | OFlag::O_CREAT, 0o644).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert!(BeneathDir::open(&root, Path::new("a/../.."), true).is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }
}
