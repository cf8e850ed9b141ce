//! Listing and reading files, for debugging a node without a shell.
//!
//! Reading is confined to regular files: opening a device, a FIFO or a socket has side
//! effects (`/dev/watchdog` arms the watchdog, a FIFO blocks the reader forever, a block
//! device holds other files' bytes, STATE's among them), so the type is checked before the
//! open and again on the opened file.
//!
//! Admins read and list everything machined can. Everyone else reads and lists only beneath
//! an allowlist of places that hold no secrets ([`ReadablePlaces`]): secrets turn up in too
//! many places (containers' specs under `/run/containerd`, their root filesystems, registry
//! credentials, processes' environments) for a list of forbidden ones to stay complete.
//! Paths are judged after resolving links and `..`: a link into a forbidden place is that
//! place, and the open then follows no link, so a link swapped in after the check fails it.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag, AT_FDCWD};

/// Reading `/proc/kmsg` consumes the kernel's messages for everyone else (`ctl dmesg` reads
/// `/dev/kmsg`, which does not).
const CONSUMING_FILES: &[&str] = &["/proc/kmsg"];

/// Node paths (under the node's root, as the image lays them out) readers may read beneath,
/// and why each holds no secret.
const IMAGE_PLACES: &[(&str, &str)] = &[
    // The read-only image: programs, libraries, the public update keys, the time floor, the
    // images Cairn ships. (The bootstrap token is in /etc, not here.)
    ("/usr", "the image's programs and data"),
    // The merged-/usr links themselves; what they lead to is judged as /usr.
    ("/bin", "a link into /usr"),
    ("/sbin", "a link into /usr"),
    ("/lib", "a link into /usr"),
    ("/lib64", "a link into /usr"),
    ("/etc/os-release", "the system's name and version"),
    ("/etc/hosts", "localhost's names, the same on every node"),
    ("/etc/ssl/certs", "public CA certificates"),
    // A link to /run/resolv.conf, which machined writes from DHCP and the config.
    ("/etc/resolv.conf", "the resolvers"),
    ("/run/resolv.conf", "the resolvers"),
    // machined's services' logs and pods' container logs: readers already get both through
    // `ctl logs` and `ctl logs POD` (ContainerLogs is a reader call), so the files add nothing.
    ("/var/log", "service and container logs"),
];

/// Where the kernel shows devices and resource use (the same paths in host mode), beneath
/// which readers may read. Not `/sys/firmware` (EFI variables and QEMU's fw_cfg blobs carry
/// whatever the platform was given) nor `/sys/kernel` (debugfs, tracefs, securityfs).
const SYS_PLACES: &[&str] =
    &["/sys/block", "/sys/bus", "/sys/class", "/sys/devices", "/sys/fs/cgroup", "/sys/module"];

/// sysfs binary attributes that reach hardware rather than the kernel's view of it: a read of
/// `resourceN` is a read of the device's I/O ports (which can clear its status registers),
/// `rom`, `eeprom` and `nvmem` are the device's own storage.
const SYS_HARDWARE_FILES: &[&str] = &["rom", "eeprom", "nvmem"];

/// `/proc`'s entries readers may read: the kernel's counters and tables. Not `cmdline` or
/// `bootconfig` (the bootstrap token may be there), `kcore`, `kallsyms` or `kpage*` (the
/// kernel's memory and addresses), `keys`, `timer_list` or `sched_debug`. `self`,
/// `thread-self`, `mounts` and `net` are links into a process's directory, judged there.
const PROC_KERNEL_FILES: &[&str] = &[
    "buddyinfo",
    "cgroups",
    "consoles",
    "cpuinfo",
    "crypto",
    "devices",
    "diskstats",
    "filesystems",
    "interrupts",
    "loadavg",
    "locks",
    "mdstat",
    "meminfo",
    "misc",
    "mounts",
    "net",
    "partitions",
    "pressure",
    "schedstat",
    "self",
    "softirqs",
    "stat",
    "swaps",
    "sys",
    "thread-self",
    "uptime",
    "version",
    "vmstat",
    "zoneinfo",
];

/// A process's entries readers may read (`/proc/PID/...`): what `ps` and `top` show, its
/// cgroup, limits, mounts and network namespace. Not `environ`, `cmdline`, `mem`, `maps`,
/// `fd`, `fdinfo`, `map_files`, `root`, `cwd`, `exe` or `task`: its environment, arguments,
/// memory and open files may hold secrets, and the links lead into its filesystem.
const PROC_PROCESS_FILES: &[&str] = &[
    "cgroup",
    "comm",
    "io",
    "limits",
    "mountinfo",
    "mounts",
    "net",
    "oom_score",
    "oom_score_adj",
    "sched",
    "schedstat",
    "stat",
    "statm",
    "status",
    "wchan",
];

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
    /// Outside the places the caller may read.
    #[error("{path} {why}")]
    NotReadable {
        /// As the caller named it.
        path: String,
        /// Why it is not among [`ReadablePlaces`].
        why: &'static str,
    },
}

/// What a caller may read and list.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Everything machined can (admins).
    Everything,
    /// Only beneath these places (readers and operators).
    Only(ReadablePlaces),
}

/// How a place stands with a caller limited to [`ReadablePlaces`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Beneath an allowed place: read, listed, descended into.
    Allowed,
    /// Above allowed places (`/`, `/var`, `/proc/PID`): listed and descended into so the
    /// allowed places can be found, never read.
    Leads,
    /// Neither; the text says why.
    Refused(&'static str),
}

/// The places that hold no secrets, where readers may read and list (see [`IMAGE_PLACES`],
/// [`SYS_PLACES`], [`PROC_KERNEL_FILES`], [`PROC_PROCESS_FILES`]).
#[derive(Debug, Clone)]
pub struct ReadablePlaces {
    /// [`IMAGE_PLACES`] under the node's root, their directories canonical where they exist
    /// (the links among them are allowed as links).
    image: Vec<PathBuf>,
    /// STATE's mount point: named in refusals.
    state_dir: PathBuf,
    /// EPHEMERAL's mount point: named in refusals.
    var_dir: PathBuf,
}

impl ReadablePlaces {
    /// The places of the node whose root is `root`, with its STATE and EPHEMERAL mount points
    /// (named when a path there is refused).
    pub fn new(root: &Path, state_dir: &Path, var_dir: &Path) -> Self {
        let image = IMAGE_PLACES
            .iter()
            .map(|(place, _)| {
                let place = crate::files::layout::under(root, place);
                canonical_dir(&place).unwrap_or(place)
            })
            .collect();
        ReadablePlaces { image, state_dir: canonical(state_dir), var_dir: canonical(var_dir) }
    }

    /// How `resolved` (links and `..` resolved, but a last part that is a link kept as the
    /// link) stands.
    fn verdict(&self, resolved: &Path) -> Verdict {
        if let Ok(in_proc) = resolved.strip_prefix("/proc") {
            return proc_verdict(in_proc);
        }
        if resolved.starts_with("/sys") {
            let verdict = places_verdict(resolved, SYS_PLACES.iter().map(Path::new));
            if verdict == Verdict::Allowed && reaches_hardware(resolved) {
                return Verdict::Refused("reaches the device itself (its I/O ports or storage)");
            }
            return verdict;
        }
        match places_verdict(resolved, self.image.iter().map(PathBuf::as_path)) {
            Verdict::Refused(_) => Verdict::Refused(self.why_not(resolved)),
            verdict => verdict,
        }
    }

    /// Why a path outside the allowed places is refused: where it is, when that says more.
    fn why_not(&self, resolved: &Path) -> &'static str {
        if resolved.starts_with(&self.state_dir) {
            "is on STATE, which holds the config and the node's keys"
        } else if resolved.starts_with(&self.var_dir) {
            "is on /var, where workloads and the config's files keep their data"
        } else {
            NOT_LISTED
        }
    }
}

/// The refusal of a place no rule names.
const NOT_LISTED: &str = "is outside the places readers may read (the image's /usr, /etc's public \
     files, /var/log, and /proc and /sys's views of the kernel), which hold no secrets";

/// Allowed beneath one of `places`, leading to one when above it, refused otherwise.
fn places_verdict<'a>(resolved: &Path, places: impl Iterator<Item = &'a Path> + Clone) -> Verdict {
    if places.clone().any(|place| resolved.starts_with(place)) {
        Verdict::Allowed
    } else if places.into_iter().any(|place| place.starts_with(resolved)) {
        Verdict::Leads
    } else {
        Verdict::Refused(NOT_LISTED)
    }
}

/// How `/proc/{in_proc}` stands: see [`PROC_KERNEL_FILES`] and [`PROC_PROCESS_FILES`].
fn proc_verdict(in_proc: &Path) -> Verdict {
    let mut parts = in_proc.components().map(|c| c.as_os_str().to_str());
    let Some(first) = parts.next() else { return Verdict::Leads };
    let Some(first) = first else { return Verdict::Refused(NOT_LISTED) };
    if !first.is_empty() && first.bytes().all(|b| b.is_ascii_digit()) {
        return match parts.next() {
            None => Verdict::Leads,
            Some(Some(entry)) if PROC_PROCESS_FILES.contains(&entry) => Verdict::Allowed,
            Some(_) => Verdict::Refused(
                "belongs to a process, whose environment, command line, memory and open files \
                 may hold secrets (readers see its status, stat, statm, cgroup, limits, mounts \
                 and network)",
            ),
        };
    }
    match first {
        _ if PROC_KERNEL_FILES.contains(&first) => Verdict::Allowed,
        "cmdline" | "bootconfig" => {
            Verdict::Refused("is the kernel command line, which may hold the bootstrap token")
        }
        "kcore" | "kallsyms" | "kpagecount" | "kpageflags" | "kpagecgroup" => {
            Verdict::Refused("is the kernel's memory, or where it lies")
        }
        _ => Verdict::Refused(
            "is not among /proc's files for readers: the kernel's counters and tables, and \
             processes' status",
        ),
    }
}

/// Whether `resolved` (under `/sys`) is one of [`SYS_HARDWARE_FILES`] or a `resourceN`.
fn reaches_hardware(resolved: &Path) -> bool {
    let Some(name) = resolved.file_name().and_then(OsStr::to_str) else { return false };
    let numbered_resource = name
        .strip_prefix("resource")
        .is_some_and(|n| n.bytes().next().is_some_and(|b| b.is_ascii_digit()));
    numbered_resource || SYS_HARDWARE_FILES.contains(&name)
}

impl Scope {
    fn verdict(&self, resolved: &Path) -> Verdict {
        match self {
            Scope::Everything => Verdict::Allowed,
            Scope::Only(places) => places.verdict(resolved),
        }
    }

    /// `Err` when `resolved` may not be read (`readable`) or listed by this caller.
    fn check(&self, shown: &str, resolved: &Path, readable: bool) -> Result<(), ReadError> {
        match self.verdict(resolved) {
            Verdict::Allowed => Ok(()),
            Verdict::Leads if !readable => Ok(()),
            Verdict::Leads => Err(ReadError::NotReadable { path: shown.into(), why: NOT_LISTED }),
            Verdict::Refused(why) => Err(ReadError::NotReadable { path: shown.into(), why }),
        }
    }
}

/// `path` made canonical when it exists (so places compare by what they are).
fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `path` with its directory made canonical and its last part kept as it is: a link is
/// judged and listed as the link, not as what it leads to.
fn canonical_dir(path: &Path) -> io::Result<PathBuf> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok(fs::canonicalize(dir)?.join(name)),
        _ => fs::canonicalize(path),
    }
}

/// Opens `path` for reading if it is a regular file within `scope`. Returns the open file
/// and its size.
pub fn open_regular(path: &Path, scope: &Scope) -> Result<(File, u64), ReadError> {
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
    // Before the open: opening some of these is itself a disclosure or a side effect.
    scope.check(&shown, &resolved, true)?;
    // No link followed, not even in the directories: the path checked is the path opened,
    // whatever was swapped in since. O_NONBLOCK: nothing swapped in can block the open;
    // fstat then confirms the file is the one checked.
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    let file = File::from(
        openat2(AT_FDCWD, &resolved, how).map_err(|errno| io_error(io::Error::from(errno)))?,
    );
    let opened = file.metadata().map_err(io_error)?;
    if !opened.file_type().is_file() || (opened.dev(), opened.ino()) != (before.dev(), before.ino())
    {
        return Err(ReadError::NotRegular { path: shown, kind: kind_of(&opened) });
    }
    Ok((file, opened.len()))
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
/// Symbolic links are listed, not followed. Paths are shown with their directories made
/// canonical. Within [`Scope::Only`], `root` must be readable or lead to a readable place,
/// and only such entries are shown and walked into.
pub fn list(
    root: &Path,
    depth: i32,
    limit: usize,
    scope: &Scope,
    mut emit: impl FnMut(FileEntry) -> bool,
) -> Result<(), ReadError> {
    let shown = root.display().to_string();
    let root =
        canonical_dir(root).map_err(|source| ReadError::Io { path: shown.clone(), source })?;
    scope.check(&shown, &root, false)?;
    let first = entry(&root);
    let is_dir = first.is_dir;
    let mut walker = Walker { emitted: 0, limit, scope, emit: &mut emit };
    if walker.push(first) && is_dir {
        walker.walk(&root, depth);
    }
    Ok(())
}

struct Walker<'a, F: FnMut(FileEntry) -> bool> {
    emitted: usize,
    limit: usize,
    scope: &'a Scope,
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

    /// `dir` is canonical, so its children are too (their own links are not followed).
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
            // Hidden, names included: STATE's or a process's fds' names say too much.
            if matches!(self.scope.verdict(&child), Verdict::Refused(_)) {
                continue;
            }
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
    use std::os::unix::fs::symlink;

    /// Everything `scope` lists of `root`, as paths below `base`.
    fn listed(root: &Path, base: &Path, depth: i32, limit: usize, scope: &Scope) -> Vec<String> {
        let base = canonical(base).display().to_string();
        let mut out = Vec::new();
        list(root, depth, limit, scope, |e| {
            out.push(e.path.strip_prefix(&base).unwrap_or(&e.path).to_string());
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn lists_to_the_requested_depth() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/deep"), "x").unwrap();
        fs::write(dir.path().join("top"), "hello").unwrap();
        let names = |depth, limit| listed(dir.path(), dir.path(), depth, limit, &Scope::Everything);
        assert_eq!(names(0, 100), ["", "/a", "/top"]);
        assert_eq!(names(-1, 100), ["", "/a", "/a/b", "/a/b/deep", "/top"]);
        // The cap: three entries, then the one that says where it stopped.
        assert_eq!(names(-1, 3), ["", "/a", "/a/b", "/a/b/deep"]);
        let mut top = Vec::new();
        list(&dir.path().join("top"), 0, 100, &Scope::Everything, |e| {
            top.push(e);
            true
        })
        .unwrap();
        assert_eq!((top.len(), top[0].size), (1, 5));
    }

    /// A node root with files in allowed and forbidden places, and the readers' scope on it.
    fn node() -> (tempfile::TempDir, Scope) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "usr/bin/containerd",
            "etc/os-release",
            "etc/cairn/bootstrap-token",
            "var/log/machined.log",
            "var/log/pods/apps_web_1/web/0.log",
            "var/lib/containerd/meta.db",
            "run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/config.json",
            "run/cairn/containerd/certs.d/docker.io/hosts.toml",
            "run/resolv.conf",
            "system/state/config.yaml",
        ] {
            let path = root.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, file).unwrap();
        }
        symlink("usr/lib", root.join("lib")).unwrap();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::write(root.join("usr/lib/libc.so"), "elf").unwrap();
        symlink("../run/resolv.conf", root.join("etc/resolv.conf")).unwrap();
        // Links a pod with a hostPath on /var could plant: each is where it leads.
        symlink(root.join("system/state/config.yaml"), root.join("var/log/state")).unwrap();
        symlink(root.join("run/containerd"), root.join("var/log/run")).unwrap();
        let places = ReadablePlaces::new(root, &root.join("system/state"), &root.join("var"));
        (dir, Scope::Only(places))
    }

    /// Why a reader may not read `path`; `None` when they may.
    fn refusal(path: &Path, scope: &Scope) -> Option<&'static str> {
        match open_regular(path, scope) {
            Ok(_) => None,
            Err(ReadError::NotReadable { why, .. }) => Some(why),
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }

    #[test]
    fn readers_read_only_beneath_the_allowlist() {
        let (dir, scope) = node();
        let root = dir.path();
        for allowed in [
            "usr/bin/containerd",
            "lib/libc.so",
            "etc/os-release",
            "etc/resolv.conf",
            "var/log/machined.log",
            "var/log/pods/apps_web_1/web/0.log",
        ] {
            assert_eq!(refusal(&root.join(allowed), &scope), None, "{allowed}");
        }
        for (refused, why) in [
            ("system/state/config.yaml", "is on STATE"),
            ("var/log/state", "is on STATE"),
            ("var/lib/containerd/meta.db", "is on /var"),
            ("var/log/run/io.containerd.runtime.v2.task/k8s.io/abc/config.json", "is outside"),
            ("run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/config.json", "is outside"),
            ("run/cairn/containerd/certs.d/docker.io/hosts.toml", "is outside"),
            ("etc/cairn/bootstrap-token", "is outside"),
        ] {
            let why_not = refusal(&root.join(refused), &scope);
            assert!(why_not.is_some_and(|w| w.starts_with(why)), "{refused}: {why_not:?}");
            // Admins read everything.
            assert_eq!(refusal(&root.join(refused), &Scope::Everything), None);
        }
        // Off the node's root: the host's own files in host mode.
        assert!(refusal(Path::new("/etc/passwd"), &scope).unwrap().starts_with("is outside"));
        for (proc_file, why) in [
            ("/proc/self/environ", "belongs to a process"),
            ("/proc/self/cmdline", "belongs to a process"),
            ("/proc/self/fdinfo/0", "belongs to a process"),
            ("/proc/cmdline", "is the kernel command line"),
        ] {
            let why_not = refusal(Path::new(proc_file), &scope);
            assert!(why_not.is_some_and(|w| w.starts_with(why)), "{proc_file}: {why_not:?}");
        }
        for proc_file in ["/proc/meminfo", "/proc/self/status", "/proc/mounts", "/proc/uptime"] {
            assert_eq!(refusal(Path::new(proc_file), &scope), None, "{proc_file}");
        }
    }

    #[test]
    fn verdicts_on_the_kernels_files() {
        let (_dir, Scope::Only(places)) = node() else { unreachable!() };
        let verdict = |path: &str| places.verdict(Path::new(path));
        for allowed in [
            "/proc/meminfo",
            "/proc/sys/kernel/hostname",
            "/proc/self",
            "/proc/42/status",
            "/proc/42/net/dev",
            "/sys/class/net",
            "/sys/devices/pci0000:00/0000:00:01.0/resource",
            "/sys/fs/cgroup/memory.stat",
        ] {
            assert_eq!(verdict(allowed), Verdict::Allowed, "{allowed}");
        }
        for leads in ["/", "/proc", "/proc/42", "/sys", "/sys/fs"] {
            assert_eq!(verdict(leads), Verdict::Leads, "{leads}");
        }
        for refused in [
            "/proc/42/environ",
            "/proc/42/mem",
            "/proc/42/fd",
            "/proc/42/fd/3",
            "/proc/42/map_files",
            "/proc/42/root",
            "/proc/42/task/43/environ",
            "/proc/kcore",
            "/proc/kallsyms",
            "/proc/bootconfig",
            "/proc/keys",
            "/sys/devices/pci0000:00/0000:00:01.0/resource0",
            "/sys/devices/pci0000:00/0000:00:01.0/rom",
            "/sys/bus/nvmem/devices/eeprom",
            "/sys/firmware/qemu_fw_cfg/by_name/opt/x/raw",
            "/sys/kernel/debug/x",
            "/dev/sda",
            "/run/containerd",
            "/opt",
        ] {
            assert!(matches!(verdict(refused), Verdict::Refused(_)), "{refused}");
        }
    }

    #[test]
    fn readers_list_only_what_leads_to_the_allowlist() {
        let (dir, scope) = node();
        let root = dir.path();
        let names = listed(root, root, -1, 100, &scope);
        assert_eq!(
            names,
            [
                "",
                "/etc",
                "/etc/os-release",
                "/etc/resolv.conf",
                "/lib",
                "/run",
                "/run/resolv.conf",
                "/usr",
                "/usr/bin",
                "/usr/bin/containerd",
                "/usr/lib",
                "/usr/lib/libc.so",
                "/var",
                "/var/log",
                "/var/log/machined.log",
                "/var/log/pods",
                "/var/log/pods/apps_web_1",
                "/var/log/pods/apps_web_1/web",
                "/var/log/pods/apps_web_1/web/0.log",
                // The links themselves, not followed.
                "/var/log/run",
                "/var/log/state",
            ]
        );
        let everything = listed(root, root, -1, 100, &Scope::Everything);
        assert!(everything.iter().any(|p| p == "/system/state/config.yaml"), "{everything:?}");
        for forbidden in [
            "system/state",
            "run/containerd",
            "var/log/run/io.containerd.runtime.v2.task",
            "var/lib",
            "etc/cairn",
        ] {
            let refused = list(&root.join(forbidden), 0, 100, &scope, |_| true);
            assert!(matches!(refused, Err(ReadError::NotReadable { .. })), "{forbidden}");
        }
        let fds = list(Path::new("/proc/self/fd"), 0, 100, &scope, |_| true);
        assert!(matches!(fds, Err(ReadError::NotReadable { .. })));
        let paths = |root: &str| {
            let mut out = Vec::new();
            list(Path::new(root), 0, 100, &scope, |e| {
                out.push(e.path);
                true
            })
            .unwrap();
            out
        };
        assert_eq!(paths("/proc/self/"), ["/proc/self"], "the link, not followed");
        let process = paths(&format!("/proc/{}", std::process::id()));
        assert!(process.iter().any(|p| p.ends_with("/status")), "{process:?}");
        assert!(!process.iter().any(|p| p.ends_with("/environ") || p.ends_with("/fd")));
    }

    #[test]
    fn reads_only_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("plain"), "hello").unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (_, size) = open_regular(&dir.path().join("plain"), &Scope::Everything).unwrap();
        assert_eq!(size, 5);
        // A FIFO with no writer would block an open for reading forever: refused at once.
        assert!(matches!(
            open_regular(&fifo, &Scope::Everything),
            Err(ReadError::NotRegular { kind: "a FIFO", .. })
        ));
        for device in ["/dev/null", "/dev/zero"] {
            assert!(matches!(
                open_regular(Path::new(device), &Scope::Everything),
                Err(ReadError::NotRegular { kind: "a character device", .. })
            ));
        }
        assert!(matches!(
            open_regular(dir.path(), &Scope::Everything),
            Err(ReadError::NotRegular { .. })
        ));
        assert!(matches!(
            open_regular(Path::new("/proc/kmsg"), &Scope::Everything),
            Err(ReadError::Consuming { .. })
        ));
    }
}
