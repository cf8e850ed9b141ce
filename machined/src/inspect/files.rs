//! Listing and reading files, for debugging a node without a shell.
//!
//! Reading is confined to regular files: opening a device, a FIFO or a socket has side
//! effects (`/dev/watchdog` arms the watchdog, a FIFO blocks the reader forever, a block
//! device holds other files' bytes, STATE's among them), so the type is checked before the
//! open and again on the opened file. Where secrets live is for admins only: see
//! [`SecretPlaces`].

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Reading `/proc/kmsg` consumes the kernel's messages for everyone else (`ctl dmesg` reads
/// `/dev/kmsg`, which does not).
const CONSUMING_FILES: &[&str] = &["/proc/kmsg"];

/// Why a file may not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It does not exist or cannot be opened.
    #[error("{path}: {source}")]
    Io {
        /// As the caller named it.
        path: String,
        /// What failed.
        source: io::Error,
    },
    /// Not a regular file.
    #[error("{path} is {kind}, not a regular file: only regular files can be read")]
    NotRegular {
        /// As the caller named it.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// Reading it would take something from others.
    #[error("{path}: reading it consumes the kernel's messages; use `ctl dmesg`")]
    Consuming {
        /// As the caller named it.
        path: String,
    },
    /// Where secrets live, and the caller may not see them.
    #[error("{path} {why}")]
    Secret {
        /// As the caller named it.
        path: String,
        /// What secrets it may hold.
        why: &'static str,
    },
}

/// The places that hold secrets, readable by admins only.
#[derive(Debug, Clone)]
pub struct SecretPlaces {
    /// STATE: the config and the node's keys (and the filesystem mounted there).
    pub state_dir: PathBuf,
    /// EPHEMERAL: workloads' data and the config's `files`.
    pub var_dir: PathBuf,
    /// Within `var_dir`, what anyone may read: service logs.
    pub log_dir: PathBuf,
    /// The bootstrap token baked into the image.
    pub bootstrap_token: PathBuf,
}

impl SecretPlaces {
    /// Why `resolved` (canonical, with metadata `file`) holds secrets, if it does.
    fn why_secret(&self, resolved: &Path, file: &fs::Metadata) -> Option<&'static str> {
        if on_state(resolved, file, &self.state_dir) {
            return Some("is on STATE, which holds the config and the node's keys");
        }
        if resolved == canonical(&self.bootstrap_token) {
            return Some("holds the bootstrap token");
        }
        if resolved.starts_with(canonical(&self.var_dir))
            && !resolved.starts_with(canonical(&self.log_dir))
        {
            return Some("is on /var, where workloads and the config's files keep their data");
        }
        let Ok(in_proc) = resolved.strip_prefix("/proc") else { return None };
        let first = in_proc.components().next()?.as_os_str().to_str()?;
        match first {
            "kcore" => Some("is the kernel's memory"),
            "cmdline" => Some("is the kernel command line, which may hold the bootstrap token"),
            _ if first.bytes().all(|b| b.is_ascii_digit()) => Some(
                "belongs to a process, whose memory, environment and command line may hold secrets",
            ),
            _ => None,
        }
    }
}

/// `path` made canonical when it exists (so links compare by what they reach).
fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Opens `path` for reading if it is a regular file; one in `secrets` only when
/// `may_read_secrets`. Returns the open file and its size.
pub fn open_regular(
    path: &Path,
    secrets: &SecretPlaces,
    may_read_secrets: bool,
) -> Result<(File, u64), ReadError> {
    let shown = path.display().to_string();
    let io_error = |source| ReadError::Io { path: shown.clone(), source };
    let resolved = fs::canonicalize(path).map_err(io_error)?;
    if CONSUMING_FILES.iter().any(|f| resolved == Path::new(f)) {
        return Err(ReadError::Consuming { path: shown });
    }
    let before = fs::symlink_metadata(&resolved).map_err(io_error)?;
    if !before.file_type().is_file() {
        return Err(ReadError::NotRegular { path: shown, kind: kind_of(&before) });
    }
    // Before the open: opening some of these is itself a disclosure or a side effect. The
    // opened file is checked to be this one below.
    if !may_read_secrets {
        if let Some(why) = secrets.why_secret(&resolved, &before) {
            return Err(ReadError::Secret { path: shown, why });
        }
    }
    // O_NOFOLLOW and O_NONBLOCK: something swapped in after the check can neither lead the
    // open elsewhere nor block it; fstat then confirms the file is the one checked.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(&resolved)
        .map_err(io_error)?;
    let opened = file.metadata().map_err(io_error)?;
    if !opened.file_type().is_file() || (opened.dev(), opened.ino()) != (before.dev(), before.ino())
    {
        return Err(ReadError::NotRegular { path: shown, kind: kind_of(&opened) });
    }
    Ok((file, opened.len()))
}

/// Whether a file lies in `state_dir`, or on the filesystem mounted there (a hard link
/// elsewhere on that filesystem still reaches STATE's files).
fn on_state(resolved: &Path, file: &fs::Metadata, state_dir: &Path) -> bool {
    let Ok(state) = fs::canonicalize(state_dir) else { return false };
    if resolved.starts_with(&state) {
        return true;
    }
    let (Ok(state_meta), Some(parent)) = (fs::metadata(&state), state.parent()) else {
        return false;
    };
    let is_mount_point = fs::metadata(parent).is_ok_and(|p| p.dev() != state_meta.dev());
    is_mount_point && file.dev() == state_meta.dev()
}

fn kind_of(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory (use ls)"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

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
/// no limit), depth first, names sorted, handed to `emit` as the walk goes (it returns false
/// to stop). At most `limit` entries; past that one last entry says the listing was cut.
/// Symbolic links are listed, not followed.
pub fn list(root: &Path, depth: i32, limit: usize, mut emit: impl FnMut(FileEntry) -> bool) {
    let first = entry(root);
    let is_dir = first.is_dir;
    let mut walker = Walker { emitted: 0, limit, emit: &mut emit };
    if walker.push(first) && is_dir {
        walker.walk(root, depth);
    }
}

struct Walker<'a, F: FnMut(FileEntry) -> bool> {
    emitted: usize,
    limit: usize,
    emit: &'a mut F,
}

impl<F: FnMut(FileEntry) -> bool> Walker<'_, F> {
    /// Emits one entry; false when the walk must stop (the client left, or the cap).
    fn push(&mut self, entry: FileEntry) -> bool {
        if self.emitted == self.limit {
            (self.emit)(FileEntry {
                path: entry.path,
                error: format!("listing stopped after {} entries; list a deeper path", self.limit),
                ..Default::default()
            });
            return false;
        }
        self.emitted += 1;
        (self.emit)(entry)
    }

    fn walk(&mut self, dir: &Path, depth: i32) -> bool {
        let mut children: Vec<PathBuf> = match fs::read_dir(dir) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                let path = dir.display().to_string();
                return self.push(FileEntry { path, error: e.to_string(), ..Default::default() });
            }
        };
        children.sort();
        for child in children {
            let info = entry(&child);
            let descend = info.is_dir && depth != 0;
            // Negative depths mean no limit, down to i32::MIN.
            if !self.push(info) || (descend && !self.walk(&child, depth.saturating_sub(1))) {
                return false;
            }
        }
        true
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
        let names = |depth, limit| {
            let mut out = Vec::new();
            list(dir.path(), depth, limit, |e| {
                out.push(
                    e.path.strip_prefix(&dir.path().display().to_string()).unwrap().to_string(),
                );
                true
            });
            out
        };
        assert_eq!(names(0, 100), ["", "/a", "/top"]);
        assert_eq!(names(-1, 100), ["", "/a", "/a/b", "/a/b/deep", "/top"]);
        // The cap: three entries, then the one that says where it stopped.
        assert_eq!(names(-1, 3), ["", "/a", "/a/b", "/a/b/deep"]);
        let mut top = Vec::new();
        list(&dir.path().join("top"), 0, 100, |e| {
            top.push(e);
            true
        });
        assert_eq!((top.len(), top[0].size), (1, 5));
    }

    fn places(root: &Path) -> SecretPlaces {
        SecretPlaces {
            state_dir: root.join("state"),
            var_dir: root.join("var"),
            log_dir: root.join("var/log"),
            bootstrap_token: root.join("etc/cairn/bootstrap-token"),
        }
    }

    #[test]
    fn reads_only_regular_files_off_state() {
        let dir = tempfile::tempdir().unwrap();
        let state = places(dir.path());
        fs::create_dir_all(&state.state_dir).unwrap();
        let state_dir = state.state_dir.clone();
        fs::write(state_dir.join("config.yaml"), "secret").unwrap();
        fs::write(dir.path().join("plain"), "hello").unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink(state_dir.join("config.yaml"), dir.path().join("link")).unwrap();

        let (_, size) = open_regular(&dir.path().join("plain"), &state, false).unwrap();
        assert_eq!(size, 5);
        // A FIFO with no writer would block an open for reading forever: refused at once.
        assert!(matches!(
            open_regular(&fifo, &state, true),
            Err(ReadError::NotRegular { kind: "a FIFO", .. })
        ));
        for device in ["/dev/null", "/dev/zero"] {
            assert!(matches!(
                open_regular(Path::new(device), &state, true),
                Err(ReadError::NotRegular { kind: "a character device", .. })
            ));
        }
        assert!(matches!(
            open_regular(dir.path(), &state, true),
            Err(ReadError::NotRegular { .. })
        ));
        for path in [state_dir.join("config.yaml"), dir.path().join("link")] {
            assert!(matches!(open_regular(&path, &state, false), Err(ReadError::Secret { .. })));
            assert!(open_regular(&path, &state, true).is_ok());
        }
        assert!(matches!(
            open_regular(Path::new("/proc/kmsg"), &state, true),
            Err(ReadError::Consuming { .. })
        ));
    }

    #[test]
    fn secrets_beyond_state_are_for_admins() {
        let dir = tempfile::tempdir().unwrap();
        let places = places(dir.path());
        for file in ["var/app/token", "var/log/machined.log", "etc/cairn/bootstrap-token"] {
            let path = dir.path().join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, "x").unwrap();
        }
        let secret = |path: &Path| match open_regular(path, &places, false) {
            Err(ReadError::Secret { why, .. }) => Some(why),
            Ok(_) => None,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        assert!(secret(&dir.path().join("var/app/token")).unwrap().contains("/var"));
        assert_eq!(secret(&dir.path().join("var/log/machined.log")), None);
        assert!(secret(&places.bootstrap_token).unwrap().contains("bootstrap token"));
        assert!(secret(Path::new("/proc/self/environ")).unwrap().contains("process"));
        assert!(secret(Path::new("/proc/cmdline")).unwrap().contains("bootstrap token"));
        assert_eq!(secret(Path::new("/proc/meminfo")), None);
        assert!(open_regular(Path::new("/proc/self/status"), &places, true).is_ok());
    }
}
