//! Debian packages through the host's `apt-get`, with a state directory of our own per
//! suite and architecture: its own sources list (the host's mirror, another suite), lists
//! and cache, and an empty dpkg status. The host's dpkg configuration is never read or
//! written, and apt verifies the archive's signatures as it always does.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_api::arch::Arch;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

/// The keyring that signs Debian's archive (from the host's debian-archive-keyring).
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// An apt operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AptError {
    /// Reading or writing the state directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// apt-get or apt-cache failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it said.
        stderr: String,
    },
    /// No mirror for Debian in the host's apt sources.
    #[error("no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d/*.sources; pass --mirror URL")]
    NoMirror,
    /// The package (at that version) is not in the archive.
    #[error("{0} is not in the archive")]
    NotFound(String),
    /// A downloaded file does not have the hash the index or the lock file says.
    #[error("{path}: SHA-256 is {actual}, expected {expected}")]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// What it hashes to.
        actual: String,
        /// What it should hash to.
        expected: String,
    },
}

/// Exclusive use of a package cache, held until dropped. Builds that share a cache may run at
/// once (the tests build several images in parallel); apt refuses a second `apt-get update` on
/// the same lists while one runs, and two downloads of one `.deb` would write the same file.
#[derive(Debug)]
pub struct CacheLock {
    _held: Flock<fs::File>,
}

impl CacheLock {
    /// Locks `cache_root` (creating it), telling `waiting` once if another process holds it.
    pub fn acquire(cache_root: &Path, waiting: impl FnOnce()) -> Result<Self, AptError> {
        fs::create_dir_all(cache_root)
            .map_err(|source| AptError::Io { path: cache_root.into(), source })?;
        let path = cache_root.join("fetch.lock");
        let io_error = |source: io::Error| AptError::Io { path: path.clone(), source };
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error)?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => return Ok(CacheLock { _held: held }),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
            Err((_, errno)) => return Err(io_error(errno.into())),
        };
        waiting();
        Flock::lock(file, FlockArg::LockExclusive)
            .map(|held| CacheLock { _held: held })
            .map_err(|(_, errno)| io_error(errno.into()))
    }
}

/// One package version as the archive's index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRecord {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// Debian architecture (`amd64`, `all`, ...).
    pub arch: String,
    /// SHA-256 of the `.deb`, lower-case hex.
    pub sha256: String,
    /// Size of the `.deb` in bytes.
    pub size: u64,
    /// The `Depends:` field, as written.
    pub depends: String,
}

/// An isolated apt state for one suite and architecture.
#[derive(Debug, Clone)]
pub struct AptState {
    dir: PathBuf,
    arch: Arch,
}

impl AptState {
    /// Prepares `cache_root/<suite>-<debian arch>` with a sources list naming `mirror` and
    /// `suite` (components `main` and `non-free-firmware`), whose signatures must verify
    /// against `keyring` (Debian's: [`DEBIAN_KEYRING`]).
    pub fn new(
        cache_root: &Path,
        mirror: &str,
        keyring: &Path,
        suite: &str,
        arch: Arch,
    ) -> Result<Self, AptError> {
        let dir = cache_root.join(format!("{suite}-{}", arch.debian()));
        for sub in ["lists/partial", "cache/archives/partial", "etc"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|source| AptError::Io { path, source })?;
        }
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            fs::write(&path, text).map_err(|source| AptError::Io { path, source })
        };
        write(
            "etc/sources.list",
            format!(
                "deb [signed-by={}] {mirror} {suite} main non-free-firmware\n",
                keyring.display()
            ),
        )?;
        // An empty dpkg status: nothing counts as installed, and the host's is left alone.
        write("status", String::new())?;
        Ok(AptState { dir, arch })
    }

    /// The host's Debian mirror: the first `URIs:`/`deb` entry that is not the security
    /// archive, from `/etc/apt`.
    pub fn host_mirror() -> Result<String, AptError> {
        host_mirror_in(Path::new("/etc/apt"))
    }

    /// apt options (`-o NAME=VALUE` pairs) that confine `apt-get` and `apt-cache` to this
    /// state, for callers that run apt themselves.
    pub fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        let arch = self.arch.debian();
        [
            format!("Dir::Etc::SourceList={d}/etc/sources.list"),
            "Dir::Etc::SourceParts=/dev/null".into(),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}/cache"),
            format!("Dir::State::status={d}/status"),
            format!("APT::Architecture={arch}"),
            format!("APT::Architectures::={arch}"),
            // Only package indexes: no translations, DEP-11 or Contents files.
            "Acquire::Languages=none".into(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    fn run(&self, program: &str, args: &[&str], cwd: Option<&Path>) -> Result<String, AptError> {
        let mut command = Command::new(program);
        command.args(self.options()).args(args).env("LC_ALL", "C");
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let line = format!("{program} {}", args.join(" "));
        let output = command
            .output()
            .map_err(|e| AptError::Command { command: line.clone(), stderr: e.to_string() })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            return Err(AptError::Command { command: line, stderr });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Fetches the package indexes (apt checks the Release signatures).
    pub fn update(&self) -> Result<(), AptError> {
        self.run("apt-get", &["-qq", "update"], None).map(drop)
    }

    /// The record of `name` at `version`, or of its candidate version.
    pub fn show(&self, name: &str, version: Option<&str>) -> Result<PackageRecord, AptError> {
        let spec = match version {
            Some(v) => format!("{name}={v}"),
            None => name.to_string(),
        };
        let text = self
            .run("apt-cache", &["show", "--no-all-versions", &spec], None)
            .map_err(|_| AptError::NotFound(spec.clone()))?;
        parse_record(&text).ok_or(AptError::NotFound(spec))
    }

    /// Downloads `record` into `dir` (reusing a file already there with the right hash) and
    /// checks its SHA-256.
    pub fn download(&self, record: &PackageRecord, dir: &Path) -> Result<PathBuf, AptError> {
        fs::create_dir_all(dir).map_err(|source| AptError::Io { path: dir.into(), source })?;
        let path = dir.join(deb_file_name(record));
        if !path.exists() || sha256_file(&path)? != record.sha256 {
            let spec = format!("{}={}", record.name, record.version);
            self.run("apt-get", &["-qq", "download", &spec], Some(dir))?;
        }
        let actual = sha256_file(&path)?;
        if actual != record.sha256 {
            return Err(AptError::HashMismatch { path, actual, expected: record.sha256.clone() });
        }
        Ok(path)
    }
}

/// apt-get download's file name: `name_version_arch.deb`, with the epoch's `:` as `%3a`.
fn deb_file_name(record: &PackageRecord) -> String {
    deb_file_name_of(&record.name, &record.version, &record.arch)
}

/// The file name apt-get download gives `name` at `version` for the Debian architecture
/// `arch` (`amd64`, `all`, ...).
pub fn deb_file_name_of(name: &str, version: &str, arch: &str) -> String {
    format!("{name}_{}_{arch}.deb", version.replace(':', "%3a"))
}

/// The SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, AptError> {
    let io_error = |source| AptError::Io { path: path.into(), source };
    let mut file = fs::File::open(path).map_err(io_error)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io_error)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Parses one stanza of `apt-cache show`.
fn parse_record(text: &str) -> Option<PackageRecord> {
    let fields = stanza_fields(text);
    record_from_fields(&fields, fields.get("SHA256")?, fields.get("Size")?.parse().ok()?)
}

/// The record of a `.deb` from its control file (which names neither the file's hash nor its
/// size: the caller knows them).
pub fn record_from_control(control: &str, sha256: &str, size: u64) -> Option<PackageRecord> {
    record_from_fields(&stanza_fields(control), sha256, size)
}

/// The fields of the first stanza of a Debian control-format text (continuation lines skipped).
fn stanza_fields(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .take_while(|l| !l.is_empty())
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_once(": "))
        .collect()
}

fn record_from_fields(
    fields: &BTreeMap<&str, &str>,
    sha256: &str,
    size: u64,
) -> Option<PackageRecord> {
    Some(PackageRecord {
        name: fields.get("Package")?.to_string(),
        version: fields.get("Version")?.to_string(),
        arch: fields.get("Architecture")?.to_string(),
        sha256: sha256.to_string(),
        size,
        depends: fields.get("Depends").unwrap_or(&"").to_string(),
    })
}

fn host_mirror_in(etc_apt: &Path) -> Result<String, AptError> {
    let mut texts = Vec::new();
    if let Ok(text) = fs::read_to_string(etc_apt.join("sources.list")) {
        texts.push(text);
    }
    if let Ok(entries) = fs::read_dir(etc_apt.join("sources.list.d")) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        texts.extend(
            paths
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "sources" || e == "list"))
                .filter_map(|p| fs::read_to_string(p).ok()),
        );
    }
    let is_main_archive = |url: &str| {
        url.starts_with("http")
            && !url.contains("security")
            && url.trim_end_matches('/').ends_with("/debian")
    };
    for text in texts {
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let urls: Vec<&str> = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().collect()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                // `deb [options] URL suite components`
                rest.split_whitespace().filter(|w| w.contains("://")).take(1).collect()
            } else {
                continue;
            };
            if let Some(url) = urls.into_iter().find(|u| is_main_archive(u)) {
                return Ok(url.trim_end_matches('/').to_string());
            }
        }
    }
    Err(AptError::NoMirror)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_build_waits_for_the_cache_until_the_first_lets_go() {
        let cache = tempfile::tempdir().unwrap();
        let first = CacheLock::acquire(cache.path(), || panic!("the cache was free")).unwrap();
        let (told, waited) = std::sync::mpsc::channel();
        let second = std::thread::scope(|scope| {
            let second = scope.spawn(|| {
                CacheLock::acquire(cache.path(), move || told.send(()).unwrap()).unwrap()
            });
            waited.recv().unwrap();
            assert!(!second.is_finished(), "the second got the cache while the first held it");
            drop(first);
            second.join().unwrap()
        });
        drop(second);
        CacheLock::acquire(cache.path(), || panic!("the cache was let go")).unwrap();
    }

    #[test]
    fn parses_apt_cache_show() {
        let text = "Package: hello\nVersion: 1:2.10-5\nArchitecture: amd64\nDepends: libc6 (>= 2.34)\nDescription: x\n more\nSize: 53228\nSHA256: abcd\n\nPackage: other\n";
        let record = parse_record(text).unwrap();
        assert_eq!(record.name, "hello");
        assert_eq!(record.version, "1:2.10-5");
        assert_eq!(record.size, 53228);
        assert_eq!(record.sha256, "abcd");
        assert_eq!(deb_file_name(&record), "hello_1%3a2.10-5_amd64.deb");
    }

    #[test]
    fn finds_the_host_mirror_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("sources.list.d")).unwrap();
        fs::write(
            d.join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: x\n\nTypes: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n",
        )
        .unwrap();
        assert_eq!(host_mirror_in(d).unwrap(), "http://mirror.example/debian");
        fs::write(
            d.join("sources.list"),
            "# c\ndeb [arch=amd64] http://other.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(host_mirror_in(d).unwrap(), "http://other.example/debian");
        assert!(matches!(host_mirror_in(&d.join("none")), Err(AptError::NoMirror)));
    }
}
