//! The lock file: the exact package versions and SHA-256s a build used, per architecture. It
//! behaves like `Cargo.lock`:
//!
//! - by default a build uses every locked version it can still get, from the archive or
//!   from the download cache (a `.deb` whose SHA-256 matches the lock is as good as the
//!   archive's), moves only the entries the archive no longer serves (Debian keeps one
//!   version per suite, so point releases and security fixes drop the old ones), reports
//!   each move and writes the lock;
//! - `--locked` refuses any change (for release builds);
//! - `--update-lock` takes the archive's current versions for everything the build uses.
//!
//! Boards of one architecture share its entries and need not use the same packages (the
//! Raspberry Pi's firmware is no QEMU board's): a build moves or adds the entries of the
//! packages it uses and keeps the others, so building one board never unpins another's.
//!
//! A locked version whose SHA-256 differs from the archive's is always refused: that is
//! tampering or a broken mirror, never a reason to move.
//!
//! ```toml
//! suite = "trixie"
//!
//! [[package]]
//! name = "containerd"
//! arch = "amd64"          # the build's architecture (the package may be "all")
//! version = "1.7.24~ds1-6+deb13u1"
//! sha256 = "ed708deb..."
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::apt::PackageRecord;

/// A lock file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Not a lock file.
    #[error("{path}: not a lock file: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Locked for another suite.
    #[error("{path}: locked for suite {locked:?}, the build uses {wanted:?}")]
    Suite {
        /// The file.
        path: PathBuf,
        /// The lock's suite.
        locked: String,
        /// The build's.
        wanted: String,
    },
}

/// One locked package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    /// Package name.
    pub name: String,
    /// The build's Debian architecture.
    pub arch: String,
    /// Exact version.
    pub version: String,
    /// SHA-256 of the `.deb`.
    pub sha256: String,
}

/// The whole lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// The Debian suite the versions come from.
    pub suite: String,
    /// Locked packages, sorted by architecture then name.
    #[serde(rename = "package", default)]
    pub packages: Vec<LockedPackage>,
}

impl Lock {
    /// An empty lock for `suite`.
    pub fn new(suite: &str) -> Self {
        Lock { suite: suite.to_string(), packages: Vec::new() }
    }

    /// Reads `path`; `None` when there is no such file. Refuses a lock for another suite.
    pub fn load(path: &Path, suite: &str) -> Result<Option<Lock>, LockError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LockError::Io { path: path.into(), source }),
        };
        let lock: Lock = toml::from_str(&text)
            .map_err(|e| LockError::Parse { path: path.into(), message: e.to_string() })?;
        if lock.suite != suite {
            return Err(LockError::Suite {
                path: path.into(),
                locked: lock.suite,
                wanted: suite.into(),
            });
        }
        Ok(Some(lock))
    }

    /// Writes `path`, sorted, so the file changes only when versions do.
    pub fn save(&self, path: &Path) -> Result<(), LockError> {
        let mut sorted = self.clone();
        sorted.sort();
        let text = toml::to_string(&sorted).expect("a lock always serializes");
        let text = format!(
            "# Written by image-builder: the packages its builds use (see lockfile.rs).\n{text}"
        );
        fs::write(path, text).map_err(|source| LockError::Io { path: path.into(), source })
    }

    /// Orders the packages by architecture, then name, as the file lists them.
    pub fn sort(&mut self) {
        self.packages.sort_by(|a, b| (&a.arch, &a.name).cmp(&(&b.arch, &b.name)));
    }

    /// The locked version of `name` for the build architecture `arch`.
    pub fn find(&self, name: &str, arch: &str) -> Option<&LockedPackage> {
        self.packages.iter().find(|p| p.name == name && p.arch == arch)
    }

    /// This lock with `used`'s entries for `arch` in place of its own for the same packages;
    /// its other entries (other architectures, other boards' packages) kept.
    pub fn with_used(&self, arch: &str, used: &Lock) -> Lock {
        let mut merged = self.clone();
        for entry in used.packages.iter().filter(|p| p.arch == arch) {
            merged.packages.retain(|p| !(p.name == entry.name && p.arch == arch));
            merged.packages.push(entry.clone());
        }
        merged.sort();
        merged
    }

    /// How the entries `used` has for `arch` differ from `self`'s, sorted by name.
    pub fn changes_to(&self, used: &Lock, arch: &str) -> Vec<LockChange> {
        let mut changes: Vec<LockChange> = used
            .packages
            .iter()
            .filter(|p| p.arch == arch)
            .filter_map(|p| {
                let from = self.find(&p.name, arch).map(|locked| locked.version.clone());
                (from.as_deref() != Some(p.version.as_str())).then(|| LockChange {
                    name: p.name.clone(),
                    arch: arch.into(),
                    from,
                    to: p.version.clone(),
                })
            })
            .collect();
        changes.sort_by(|a, b| a.name.cmp(&b.name));
        changes
    }

    /// Records what a build used.
    pub fn record(&mut self, record: &PackageRecord, arch: &str) {
        self.packages.retain(|p| !(p.name == record.name && p.arch == arch));
        self.packages.push(LockedPackage {
            name: record.name.clone(),
            arch: arch.to_string(),
            version: record.version.clone(),
            sha256: record.sha256.clone(),
        });
    }
}

/// One entry of a lock that a build moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockChange {
    /// Package name.
    pub name: String,
    /// The build's Debian architecture.
    pub arch: String,
    /// The locked version; `None` when the package was not in the lock.
    pub from: Option<String>,
    /// The version the build takes.
    pub to: String,
}

impl std::fmt::Display for LockChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let LockChange { name, arch, from, to } = self;
        let from = from.as_deref().unwrap_or("not in the lock");
        write!(f, "{name} ({arch}): {from} → {to}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, version: &str) -> PackageRecord {
        PackageRecord {
            name: name.into(),
            version: version.into(),
            arch: "all".into(),
            sha256: format!("sha-{name}-{version}"),
            size: 1,
            depends: String::new(),
        }
    }

    #[test]
    fn round_trips_sorted_and_replaces_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image-builder.lock");
        assert!(Lock::load(&path, "trixie").unwrap().is_none());
        let mut lock = Lock::new("trixie");
        lock.record(&record("runc", "1"), "amd64");
        lock.record(&record("containerd", "1"), "amd64");
        lock.record(&record("runc", "2"), "amd64");
        lock.save(&path).unwrap();
        let loaded = Lock::load(&path, "trixie").unwrap().unwrap();
        let names: Vec<_> =
            loaded.packages.iter().map(|p| (p.name.as_str(), p.version.as_str())).collect();
        assert_eq!(names, [("containerd", "1"), ("runc", "2")]);
        assert_eq!(loaded.find("runc", "amd64").unwrap().sha256, "sha-runc-2");
        assert!(loaded.find("runc", "arm64").is_none());
        assert!(matches!(Lock::load(&path, "forky"), Err(LockError::Suite { .. })));
    }

    #[test]
    fn lists_changes_and_merges_what_a_build_used() {
        let mut old = Lock::new("trixie");
        old.record(&record("kernel", "1"), "amd64");
        old.record(&record("runc", "1"), "amd64");
        // Another board's package of the same architecture.
        old.record(&record("firmware", "1"), "amd64");
        old.record(&record("runc", "1"), "arm64");
        let mut new = Lock::new("trixie");
        new.record(&record("kernel", "1"), "amd64");
        new.record(&record("runc", "2"), "amd64");
        new.record(&record("added", "3"), "amd64");
        let changes: Vec<String> =
            old.changes_to(&new, "amd64").iter().map(ToString::to_string).collect();
        assert_eq!(changes, ["added (amd64): not in the lock → 3", "runc (amd64): 1 → 2"]);
        assert!(old.changes_to(&new, "arm64").is_empty());
        let merged = old.with_used("amd64", &new);
        assert_eq!(merged.find("runc", "arm64").unwrap().version, "1");
        assert_eq!(merged.find("runc", "amd64").unwrap().version, "2");
        assert_eq!(merged.find("firmware", "amd64").unwrap().version, "1");
        assert_eq!(merged.find("added", "amd64").unwrap().version, "3");
        assert!(merged.changes_to(&new, "amd64").is_empty());
    }
}
