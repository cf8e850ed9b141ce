//! The packages of a build: the profile's and the board's, plus the kernel the board's
//! kernel metapackage names; resolved to exact versions (the lock file's, when there is
//! one), downloaded and checked against their SHA-256.

use std::path::{Path, PathBuf};

use crate::apt::{AptError, AptState, PackageRecord};
use crate::board::{Board, Profile};
use crate::lockfile::Lock;

/// The package set could not be resolved or fetched.
#[derive(Debug, thiserror::Error)]
pub enum PackagesError {
    /// apt failed.
    #[error(transparent)]
    Apt(#[from] AptError),
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
    /// A kernel metapackage that names no kernel.
    #[error("{0}: a kernel metapackage should depend on one linux-image package")]
    KernelMeta(String),
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

/// Resolves, downloads into `debs`, and returns the set and the lock that pins it.
pub fn fetch(
    apt: &AptState,
    board: &Board,
    profile: &Profile,
    lock: Option<&Lock>,
    debs: &Path,
) -> Result<(PackageSet, Lock), PackagesError> {
    let build_arch = board.arch.debian();
    let mut new_lock = Lock::new(&profile.suite);
    let mut resolve = |name: &str| -> Result<PackageRecord, PackagesError> {
        let record = match lock.and_then(|l| l.find(name, build_arch)) {
            Some(locked) => {
                let record = apt.show(name, Some(&locked.version))?;
                if record.sha256 != locked.sha256 {
                    return Err(PackagesError::LockMismatch {
                        name: name.into(),
                        version: locked.version.clone(),
                        archive: record.sha256,
                        locked: locked.sha256.clone(),
                    });
                }
                record
            }
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
    let download = |record: PackageRecord| -> Result<Fetched, PackagesError> {
        let deb = apt.download(&record, debs)?;
        Ok(Fetched { record, deb })
    };
    let set = PackageSet {
        kernel: download(kernel)?,
        packages: records.into_iter().map(download).collect::<Result<_, _>>()?,
    };
    Ok((set, new_lock))
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
