//! A volumeMount's `subPath`, opened beneath its volume. The volume's content is the pod's:
//! a container that plants `x -> /` in a shared emptyDir must not get the host's `/` bound
//! into the next container that mounts `subPath: x` (CVE-2017-1002101). So the path is
//! resolved by the kernel with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` relative to
//! the volume's directory, and the kubelet mounts the descriptor it gets
//! (`/proc/self/fd/N`), never the path again, so a link swapped in afterwards changes nothing.
//!
//! As upstream, symbolic links are followed while they stay within the volume (a relative
//! `current -> releases/2` works); one that leads out (`x -> /`, `x -> ../../..`) fails the
//! open. Stricter than upstream, an absolute link is refused even when it names a place
//! inside the volume: the kernel resolves beneath the volume only links it can check without
//! the host's view of the path. Missing directories are created, as upstream does, each with
//! `mkdirat` in a parent that was itself opened beneath the volume.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

/// How often an open that raced a rename (`EAGAIN` from `openat2`) is tried.
const ATTEMPTS: usize = 8;

/// Why a subPath cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("volume {volume:?}, subPath {sub_path:?}: {reason}")]
pub struct SubPathError {
    /// The volume's name.
    pub volume: String,
    /// The subPath as the pod wrote it.
    pub sub_path: String,
    /// Why.
    pub reason: String,
}

/// A subPath, opened: an `O_PATH` descriptor of what it names.
#[derive(Debug)]
pub struct OpenedSubPath {
    fd: OwnedFd,
    is_dir: bool,
}

impl OpenedSubPath {
    /// A path that reaches the opened file itself (for `mount`'s source).
    pub fn proc_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        Path::new("/proc/self/fd").join(self.fd.as_raw_fd().to_string())
    }

    /// Whether it is a directory (else the mount target is a file).
    pub fn is_dir(&self) -> bool {
        self.is_dir
    }
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// `relative` opened beneath `volume`, following links only within it.
fn beneath(volume: BorrowedFd<'_>, relative: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let mut attempt = 1;
    loop {
        match openat2(volume, relative, how(flags)) {
            Err(Errno::EAGAIN) if attempt < ATTEMPTS => attempt += 1,
            other => return other,
        }
    }
}

fn reason(errno: Errno) -> String {
    match errno {
        Errno::EXDEV => "it leads out of the volume (through a symbolic link, an absolute one \
                         or one with '..')"
            .to_string(),
        Errno::ELOOP => "too many symbolic links, or a link through /proc".to_string(),
        Errno::ENOTDIR => "a part of it is not a directory".to_string(),
        Errno::ENOENT => "it does not exist (a symbolic link to nothing?)".to_string(),
        other => other.desc().to_string(),
    }
}

/// Opens `sub_path` beneath `volume_dir` (the directory of the volume `volume`), creating
/// the directories it names that are missing.
pub fn open(
    volume: &str,
    volume_dir: &Path,
    sub_path: &str,
) -> Result<OpenedSubPath, SubPathError> {
    let fail = |reason: String| SubPathError {
        volume: volume.to_string(),
        sub_path: sub_path.to_string(),
        reason,
    };
    let parts: Vec<&str> = sub_path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    // The config's decoder refuses these; RESOLVE_BENEATH would refuse them too.
    if sub_path.starts_with('/') || parts.contains(&"..") {
        return Err(fail("it is not a relative path without '..'".to_string()));
    }
    let root = nix::fcntl::open(
        volume_dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| {
        fail(format!("the volume's directory {}: {}", volume_dir.display(), errno.desc()))
    })?;
    let whole: PathBuf = parts.iter().collect();
    let fd = match beneath(root.as_fd(), &whole, OFlag::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => create(root.as_fd(), &parts).map_err(|errno| fail(reason(errno)))?,
        Err(errno) => return Err(fail(reason(errno))),
    };
    let stat = fstat(fd.as_fd()).map_err(|errno| fail(reason(errno)))?;
    let is_dir = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    Ok(OpenedSubPath { fd, is_dir })
}

/// Creates the missing directories of `parts` beneath `root`, with the volume's own mode
/// (as upstream does); returns the last one, opened.
fn create(root: BorrowedFd<'_>, parts: &[&str]) -> Result<OwnedFd, Errno> {
    let mode = Mode::from_bits_truncate(fstat(root)?.st_mode & 0o7777);
    let mut prefix = PathBuf::new();
    let mut parent = root.try_clone_to_owned().map_err(|_| Errno::EMFILE)?;
    for part in parts {
        prefix.push(part);
        // Each prefix is resolved from the volume again: a link in it may lead anywhere
        // within the volume, never out.
        let fd = match beneath(root, &prefix, OFlag::O_DIRECTORY) {
            Err(Errno::ENOENT) => {
                match mkdirat(parent.as_fd(), *part, mode) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(errno) => return Err(errno),
                }
                beneath(root, &prefix, OFlag::O_DIRECTORY)?
            }
            other => other?,
        };
        parent = fd;
    }
    Ok(parent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A volume directory with a file, a directory, and links in and out.
    fn volume() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("releases/2")).unwrap();
        std::fs::write(root.join("releases/2/app.conf"), "v2").unwrap();
        symlink("releases/2", root.join("current")).unwrap();
        symlink("../releases/2/app.conf", root.join("releases/conf")).unwrap();
        symlink("/", root.join("x")).unwrap();
        symlink("../../..", root.join("up")).unwrap();
        symlink(root.join("releases"), root.join("absolute")).unwrap();
        symlink("/proc/self/root", root.join("magic")).unwrap();
        dir
    }

    fn target(opened: &OpenedSubPath) -> PathBuf {
        std::fs::read_link(opened.proc_path()).unwrap()
    }

    #[test]
    fn links_that_lead_out_of_the_volume_are_refused_with_the_volume_and_subpath() {
        let dir = volume();
        for sub_path in ["x", "x/etc", "x/etc/shadow", "up", "up/etc", "absolute", "magic/etc"] {
            let error = open("shared", dir.path(), sub_path).unwrap_err();
            let text = error.to_string();
            assert!(
                text.starts_with(&format!("volume \"shared\", subPath {sub_path:?}: ")),
                "{text}"
            );
            assert!(text.contains("leads out of the volume"), "{text}");
        }
        // Nothing was created outside (x/etc exists on the host, x/new would have been made).
        assert!(open("shared", dir.path(), "x/cairn-subpath-test").is_err());
        assert!(!Path::new("/cairn-subpath-test").exists());
        let error = open("shared", dir.path(), "../etc").unwrap_err();
        assert_eq!(
            error.to_string(),
            "volume \"shared\", subPath \"../etc\": it is not a relative path without '..'"
        );
    }

    #[test]
    fn links_that_stay_within_the_volume_are_followed() {
        let dir = volume();
        let root = dir.path();
        let opened = open("shared", root, "current").unwrap();
        assert_eq!((target(&opened), opened.is_dir()), (root.join("releases/2"), true));
        let opened = open("shared", root, "releases/conf").unwrap();
        assert_eq!((target(&opened), opened.is_dir()), (root.join("releases/2/app.conf"), false));
        let opened = open("shared", root, "./current/app.conf").unwrap();
        assert_eq!(target(&opened), root.join("releases/2/app.conf"));
    }

    #[test]
    fn missing_directories_are_made_beneath_the_volume_only() {
        let dir = volume();
        let root = dir.path();
        let opened = open("shared", root, "current/logs/today").unwrap();
        assert_eq!((target(&opened), opened.is_dir()), (root.join("releases/2/logs/today"), true));
        let error = open("shared", root, "releases/2/app.conf/sub").unwrap_err();
        assert!(error.to_string().ends_with("a part of it is not a directory"), "{error}");
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), root.join("out")).unwrap();
        assert!(open("shared", root, "out/new").is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }
}
