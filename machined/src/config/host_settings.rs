//! The machine config's host name, sysctls and files, put into effect. Each setting is
//! applied on its own: one that fails (a sysctl this kernel lacks) is reported and the rest
//! still apply. Applying twice changes nothing the second time, so it runs at every boot and
//! every config change.
//!
//! Settings removed from the config are left as they are until the next boot (sysctls and
//! the host name) or for good (files on `/var`), as in Talos.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cairn_api::config::{FileOp, Machine, MachineFile};

use nix::fcntl::OFlag;

use crate::files::beneath::BeneathDir;
use crate::files::durable;

/// Where the kernel's parameters are.
const PROC_SYS: &str = "/proc/sys";
/// A file's mode when the config gives none.
const DEFAULT_FILE_MODE: u32 = 0o644;

/// What applying one setting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The setting, e.g. `sysctl net.ipv4.ip_forward=1` or `file /var/lib/x`.
    pub setting: String,
    /// What happened (`set`, `written`, `unchanged`...), or the error.
    pub result: Result<&'static str, String>,
}

/// Puts host settings into effect.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// Where `/var` is (`DIR/var` for machined as a process).
    var_dir: PathBuf,
    /// Whether the kernel's host name and parameters are this node's to set (PID 1), or the
    /// host's, which machined as a process leaves alone.
    kernel: bool,
}

impl HostSettings {
    /// Settings applied under `var_dir`; the kernel's too when `kernel` is set.
    pub fn new(var_dir: PathBuf, kernel: bool) -> Self {
        HostSettings { var_dir, kernel }
    }

    /// Applies `machine`'s host name, sysctls and files.
    pub fn apply(&self, machine: &Machine) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        if self.kernel {
            if let Some(name) = &machine.hostname {
                outcomes.push(Outcome {
                    setting: format!("hostname {name}"),
                    result: set_hostname(name).map_err(|e| e.to_string()),
                });
            }
            for (key, value) in &machine.sysctls {
                outcomes.push(Outcome {
                    setting: format!("sysctl {key}={value}"),
                    result: set_sysctl(Path::new(PROC_SYS), key, value).map_err(|e| e.to_string()),
                });
            }
        }
        for file in &machine.files {
            outcomes.push(Outcome {
                setting: format!("file {}", file.path),
                result: write_file(&self.var_dir, file).map_err(|e| e.to_string()),
            });
        }
        outcomes
    }
}

fn set_hostname(name: &str) -> nix::Result<&'static str> {
    if crate::node::config::kernel_hostname() == name {
        return Ok("unchanged");
    }
    nix::unistd::sethostname(name)?;
    Ok("set")
}

/// `net.ipv4.ip_forward` names `/proc/sys/net/ipv4/ip_forward`; a key with slashes is a
/// path already (for names with dots in them, like `net/ipv4/conf/eth0.100/forwarding`).
fn sysctl_path(proc_sys: &Path, key: &str) -> PathBuf {
    if key.contains('/') {
        proc_sys.join(key)
    } else {
        proc_sys.join(key.replace('.', "/"))
    }
}

fn set_sysctl(proc_sys: &Path, key: &str, value: &str) -> io::Result<&'static str> {
    let path = sysctl_path(proc_sys, key);
    // The kernel shows some values reformatted (tabs between numbers), so compare words.
    // Write-only ones (vm.drop_caches) cannot be read: they are written every time.
    match fs::read_to_string(&path) {
        Ok(current) if current.split_whitespace().eq(value.split_whitespace()) => {
            return Ok("unchanged")
        }
        Err(e) if e.kind() != io::ErrorKind::PermissionDenied => return Err(e),
        _ => {}
    }
    fs::write(&path, value)?;
    Ok("set")
}

/// Writes a config file under `var_dir` (its path starts with `/var/`, as validated), never
/// through a symbolic link (see [`BeneathDir`]).
fn write_file(var_dir: &Path, file: &MachineFile) -> io::Result<&'static str> {
    let (dir, name) = beneath(var_dir, &file.path)?;
    let mode = file.permissions.unwrap_or(DEFAULT_FILE_MODE);
    let (existing, existing_mode) = match dir.open_file(name, OFlag::O_RDONLY, 0) {
        Ok(mut f) => {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            (Some(bytes), Some(f.metadata()?.permissions().mode() & 0o7777))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (None, None),
        Err(e) => return Err(e),
    };
    let content = file.content.as_bytes();
    match file.op {
        FileOp::Create => {
            if existing.as_deref() == Some(content) && existing_mode == Some(mode) {
                return Ok("unchanged");
            }
            durable::write_atomically(&dir.path_of(name), content, mode)?;
            Ok("written")
        }
        // Appending at every boot would repeat the content: append what is not there yet.
        FileOp::Append => {
            if existing.as_deref().is_some_and(|old| contains(old, content)) {
                return Ok("unchanged");
            }
            let mut out =
                dir.open_file(name, OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT, mode)?;
            if existing.is_none() {
                out.set_permissions(fs::Permissions::from_mode(mode))?;
            }
            out.write_all(content)?;
            out.sync_all()?;
            Ok("appended")
        }
    }
}

/// The directory of `/var/...` under `var_dir` (created as needed) and the file's name,
/// refusing paths that would leave it: parts that are empty, `.` or `..`, and symbolic links
/// on the way.
fn beneath<'a>(var_dir: &Path, path: &'a str) -> io::Result<(BeneathDir, &'a str)> {
    let refuse = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{path}: {why}"));
    let relative = path.strip_prefix("/var/").ok_or_else(|| refuse("not under /var/"))?;
    if relative.split('/').any(|part| matches!(part, "" | "." | "..")) {
        return Err(refuse("empty, '.' and '..' parts are not allowed"));
    }
    let (parents, name) = relative.rsplit_once('/').unwrap_or(("", relative));
    let dir = BeneathDir::open(var_dir, Path::new(parents), true)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    Ok((dir, name))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str, op: FileOp, permissions: Option<u32>) -> MachineFile {
        MachineFile { path: path.into(), content: content.into(), permissions, op }
    }

    #[test]
    fn sysctl_keys_name_proc_sys_files() {
        let sys = Path::new("/proc/sys");
        assert_eq!(sysctl_path(sys, "net.ipv4.ip_forward"), sys.join("net/ipv4/ip_forward"));
        assert_eq!(
            sysctl_path(sys, "net/ipv4/conf/eth0.100/forwarding"),
            sys.join("net/ipv4/conf/eth0.100/forwarding")
        );
    }

    #[test]
    fn sysctls_are_written_only_when_they_differ() {
        let sys = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(sys.path().join("net/ipv4")).unwrap();
        std::fs::write(sys.path().join("net/ipv4/ip_local_port_range"), "32768\t60999\n").unwrap();
        let range = "net.ipv4.ip_local_port_range";
        assert_eq!(set_sysctl(sys.path(), range, "32768 60999").unwrap(), "unchanged");
        assert_eq!(set_sysctl(sys.path(), range, "1024 65000").unwrap(), "set");
        assert!(set_sysctl(sys.path(), "net.ipv4.nonexistent", "1").is_err());
    }

    #[test]
    fn files_are_created_with_their_mode_and_appended_once() {
        let var = tempfile::tempdir().unwrap();
        let created = file("/var/lib/app/settings", "a=1\n", FileOp::Create, Some(0o600));
        assert_eq!(write_file(var.path(), &created).unwrap(), "written");
        assert_eq!(write_file(var.path(), &created).unwrap(), "unchanged");
        let path = var.path().join("lib/app/settings");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o600);

        let appended = file("/var/lib/app/settings", "b=2\n", FileOp::Append, None);
        assert_eq!(write_file(var.path(), &appended).unwrap(), "appended");
        assert_eq!(write_file(var.path(), &appended).unwrap(), "unchanged");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a=1\nb=2\n");

        let changed = file("/var/lib/app/settings", "a=3\n", FileOp::Create, None);
        assert_eq!(write_file(var.path(), &changed).unwrap(), "written");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a=3\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o644);
    }

    #[test]
    fn files_stay_under_var() {
        let var = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        for path in ["/var//etc/x", "/var/a/../../x", "/var/./x", "/etc/x", "/var/a/"] {
            let error = write_file(var.path(), &file(path, "x", FileOp::Create, None));
            assert!(error.is_err(), "{path} was accepted");
        }
        // A link planted under /var does not redirect the write.
        std::os::unix::fs::symlink(outside.path(), var.path().join("lib")).unwrap();
        let error = write_file(var.path(), &file("/var/lib/x", "x", FileOp::Append, None))
            .unwrap_err()
            .to_string();
        assert!(error.contains("symbolic link"), "{error}");
        // Nor does one planted at the file's own name, for either operation.
        std::fs::create_dir(var.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("x"), var.path().join("etc/x")).unwrap();
        for op in [FileOp::Create, FileOp::Append] {
            let error = write_file(var.path(), &file("/var/etc/x", "x", op, None)).unwrap_err();
            assert!(error.to_string().contains("symbolic link"), "{error}");
        }
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }

    #[test]
    fn a_process_leaves_the_kernel_alone() {
        let var = tempfile::tempdir().unwrap();
        let yaml = "version: v1alpha1\nmachine:\n  clientCa: {crt: x}\n  nodeCa: {crt: y}\n  hostname: elsewhere\n  \
                    sysctls: {vm.swappiness: '1'}\n";
        let config: cairn_api::config::MachineConfig = serde_yaml::from_str(yaml).unwrap();
        let settings = HostSettings::new(var.path().into(), false);
        assert_eq!(settings.apply(&config.machine), []);
    }
}
