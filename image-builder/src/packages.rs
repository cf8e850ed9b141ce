//! The packages of a build: the profile's and the board's, plus the kernel the board's
//! kernel metapackage names; resolved to exact versions under the lock file's rules (see
//! [`crate::lockfile`]), downloaded and checked against their SHA-256.

use std::fs;
use std::path::{Path, PathBuf};

use crate::apt::{self, AptError, AptState, PackageRecord};
use cairn_api::board::Board;

use crate::deb::{self, DebError};
use crate::lockfile::{Lock, LockChange, LockedPackage};
use crate::profile::Profile;

/// The package set could not be resolved or fetched.
#[derive(Debug, thiserror::Error)]
pub enum PackagesError {
    /// apt failed.
    #[error(transparent)]
    Apt(#[from] AptError),
    /// A cached package that matches the lock could not be read.
    #[error(transparent)]
    Deb(#[from] DebError),
    /// The archive's index disagrees with the lock file.
    #[error("{name} {version}: the archive's SHA-256 is {archive}, the lock file's {locked}; refusing to build (update the lock deliberately with --update-lock)")]
    LockMismatch {
        /// Package.
        name: String,
        /// Version.
        version: String,
        /// What the index says.
        archive: String,
        /// What the lock says.
        locked: String,
    },
    /// `--locked`, and the build cannot use the lock as it is.
    #[error(
        "--locked: the lock file would have to change, and --locked forbids that; nothing was downloaded.\n{}\n\
         (left: the lock's version; right: what the archive serves now)\n\
         Run with --update-lock (or without --locked) to move the lock to the archive's versions; \
         to rebuild exactly these versions, keep their .deb files in the cache or use a snapshot mirror (--mirror).",
        .0.iter().map(|c| format!("  {c}")).collect::<Vec<_>>().join("\n")
    )]
    LockOutdated(Vec<LockChange>),
    /// A kernel metapackage that names no kernel.
    #[error("{0}: a kernel metapackage should depend on one linux-image package")]
    KernelMeta(String),
}

/// How a build treats the lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockMode {
    /// Keep every locked version that can still be had; move only the others.
    #[default]
    Follow,
    /// Refuse to build when any entry would change.
    Locked,
    /// Take the archive's current version of everything.
    Update,
}

/// A package ready to unpack.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// What it is.
    pub record: PackageRecord,
    /// The downloaded `.deb`.
    pub deb: PathBuf,
}

/// Everything a build unpacks.
#[derive(Debug, Clone)]
pub struct PackageSet {
    /// The kernel image package (not the metapackage).
    pub kernel: Fetched,
    /// The profile's and the board's packages, in that order.
    pub packages: Vec<Fetched>,
}

/// What [`fetch`] resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The packages, downloaded and verified.
    pub set: PackageSet,
    /// The lock of this build's architecture: what it used.
    pub lock: Lock,
    /// How that differs from the lock it was given.
    pub changes: Vec<LockChange>,
}

/// Resolves the board's packages under `mode`, downloads them into `debs` (where `.deb`s
/// of earlier builds are kept) and returns them with the lock that pins them.
pub fn fetch(
    apt: &AptState,
    board: &Board,
    profile: &Profile,
    lock: Option<&Lock>,
    mode: LockMode,
    debs: &Path,
) -> Result<Resolved, PackagesError> {
    let build_arch = board.arch.debian();
    let kept = match mode {
        LockMode::Update => None,
        LockMode::Follow | LockMode::Locked => lock,
    };
    let mut new_lock = Lock::new(&profile.suite);
    let mut resolve = |name: &str| -> Result<PackageRecord, PackagesError> {
        let record = match kept.and_then(|l| l.find(name, build_arch)) {
            Some(locked) => match locked_record(apt, locked, debs)? {
                Some(record) => record,
                None => apt.show(name, None)?,
            },
            None => apt.show(name, None)?,
        };
        new_lock.record(&record, build_arch);
        Ok(record)
    };
    let meta = resolve(&board.kernel)?;
    let image = kernel_of(&meta).ok_or_else(|| PackagesError::KernelMeta(board.kernel.clone()))?;
    let kernel = resolve(&image)?;
    let records = profile
        .packages
        .iter()
        .chain(&board.packages)
        .map(|name| resolve(name))
        .collect::<Result<Vec<_>, _>>()?;

    let no_lock = Lock::new(&profile.suite);
    let changes = lock.unwrap_or(&no_lock).changes_to(&new_lock, build_arch);
    if mode == LockMode::Locked && !changes.is_empty() {
        return Err(PackagesError::LockOutdated(changes));
    }
    let download = |record: PackageRecord| -> Result<Fetched, PackagesError> {
        let deb = apt.download(&record, debs)?;
        Ok(Fetched { record, deb })
    };
    let set = PackageSet {
        kernel: download(kernel)?,
        packages: records.into_iter().map(download).collect::<Result<_, _>>()?,
    };
    Ok(Resolved { set, lock: new_lock, changes })
}

/// The record of a locked version: the archive's, or failing that a cached `.deb` with the
/// locked SHA-256; `None` when neither has it. A locked version the archive serves with
/// another SHA-256 is refused.
fn locked_record(
    apt: &AptState,
    locked: &LockedPackage,
    debs: &Path,
) -> Result<Option<PackageRecord>, PackagesError> {
    match apt.show(&locked.name, Some(&locked.version)) {
        Ok(record) if record.sha256 == locked.sha256 => return Ok(Some(record)),
        Ok(record) => {
            return Err(PackagesError::LockMismatch {
                name: locked.name.clone(),
                version: locked.version.clone(),
                archive: record.sha256,
                locked: locked.sha256.clone(),
            })
        }
        Err(AptError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    cached_record(locked, debs)
}

/// The record of the locked package from a `.deb` in the download cache whose SHA-256 is the
/// lock's (its control file gives the rest).
fn cached_record(
    locked: &LockedPackage,
    debs: &Path,
) -> Result<Option<PackageRecord>, PackagesError> {
    for deb_arch in [locked.arch.as_str(), "all"] {
        let path = debs.join(apt::deb_file_name_of(&locked.name, &locked.version, deb_arch));
        if !path.is_file() || apt::sha256_file(&path)? != locked.sha256 {
            continue;
        }
        let size = fs::metadata(&path)
            .map_err(|source| AptError::Io { path: path.clone(), source })?
            .len();
        let control = deb::control(&path)?;
        let record = apt::record_from_control(&control, &locked.sha256, size)
            .filter(|r| r.name == locked.name && r.version == locked.version)
            .ok_or_else(|| DebError::Format {
                path: path.clone(),
                reason: format!(
                    "its control file does not describe {} {}",
                    locked.name, locked.version
                ),
            })?;
        return Ok(Some(record));
    }
    Ok(None)
}

/// The `linux-image-*` package a kernel metapackage depends on.
fn kernel_of(meta: &PackageRecord) -> Option<String> {
    meta.depends
        .split(',')
        .map(|d| d.trim().split([' ', '(']).next().unwrap_or_default())
        .find(|name| name.starts_with("linux-image-"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_kernel_of_a_metapackage() {
        let meta = PackageRecord {
            name: "linux-image-amd64".into(),
            version: "6.12.107-1".into(),
            arch: "amd64".into(),
            sha256: String::new(),
            size: 0,
            depends: "linux-image-6.12.107+deb13-amd64 (= 6.12.107-1)".into(),
        };
        assert_eq!(kernel_of(&meta).as_deref(), Some("linux-image-6.12.107+deb13-amd64"));
        assert_eq!(kernel_of(&PackageRecord { depends: "libc6".into(), ..meta }), None);
    }
}
