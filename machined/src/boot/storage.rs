//! STATE and EPHEMERAL: created by machined on a node's first boot (an image carries only
//! the ESP and the root slots), formatted ext4, and mounted at `/system/state` and `/var`.
//!
//! Creating them rewrites the GPT of the boot disk, moving its backup header to the end of
//! the medium (the image was smaller). The kernel will not re-read the table of a disk in
//! use, so machined reboots once after creating them; formatting happens on the next boot.
//! How they are mounted to spare flash is [`flash_wear`]'s business.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_api::disk::partition_table::{
    self, AppendedPartition, AppendedSize, PartitionKind, PartitionTableError, Uuid,
};
use cairn_api::image::{EPHEMERAL_LABEL, STATE_LABEL};
use nix::mount::mount;

use crate::boot::flash_wear;
use crate::boot::partitions::find_by_label;
use crate::boot::root_source::RootSource;

/// STATE's size: configs and keys are small; flash is not.
const STATE_BYTES: u64 = 64 * 1024 * 1024;
/// Where partitions are listed.
const SYS_CLASS_BLOCK: &str = "/sys/class/block";
/// A fresh random GUID on every read.
const KERNEL_RANDOM_UUID: &str = "/proc/sys/kernel/random/uuid";

/// STATE or EPHEMERAL could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The root partition is not on a disk we can find.
    #[error("cannot find the disk holding {0}")]
    NoDisk(String),
    /// The kernel command line names no root, so no disk to create them on.
    #[error(
        "the kernel command line names no root ({}=a|b): no disk to create STATE and EPHEMERAL on",
        cairn_api::image::SLOT_ARG
    )]
    NoRoot,
    /// Editing the partition table failed.
    #[error(transparent)]
    PartitionTable(#[from] PartitionTableError),
    /// mke2fs failed.
    #[error("formatting {device}: {reason}")]
    Format {
        /// The partition.
        device: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A mount failed.
    #[error("mounting {device} on {target}: {errno}")]
    Mount {
        /// The partition.
        device: PathBuf,
        /// The mount point.
        target: String,
        /// Why.
        errno: nix::errno::Errno,
    },
    /// Reading a device failed.
    #[error("{path}: {source}")]
    Io {
        /// The device.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// What preparing storage did.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepared {
    /// Both are mounted.
    Mounted,
    /// The partitions were just created: reboot so the kernel sees them.
    RebootNeeded,
}

/// Makes sure STATE and EPHEMERAL exist, are formatted and are mounted. On a first boot
/// they are created on the disk of `root`, the root the kernel command line names.
pub fn prepare(root: Option<RootSource>) -> Result<Prepared, StorageError> {
    let sys = Path::new(SYS_CLASS_BLOCK);
    let (Some(state), Some(ephemeral)) =
        (find_by_label(sys, STATE_LABEL), find_by_label(sys, EPHEMERAL_LABEL))
    else {
        let root = root.ok_or(StorageError::NoRoot)?.partition_label();
        let root_device =
            find_by_label(sys, root).ok_or_else(|| StorageError::NoDisk(root.into()))?;
        let disk = disk_of(&root_device).ok_or_else(|| StorageError::NoDisk(root.into()))?;
        create_partitions(&disk)?;
        return Ok(Prepared::RebootNeeded);
    };
    for (device, label, target) in
        [(&state, STATE_LABEL, "/system/state"), (&ephemeral, EPHEMERAL_LABEL, "/var")]
    {
        if !has_ext4(device)? {
            format(device, label)?;
        }
        mount(
            Some(device.as_path()),
            target,
            Some("ext4"),
            flash_wear::VOLUME_FLAGS,
            Some(flash_wear::volume_options().as_str()),
        )
        .map_err(|errno| StorageError::Mount {
            device: device.clone(),
            target: target.into(),
            errno,
        })?;
        tracing::info!("{label} ({}) mounted on {target}", device.display());
    }
    Ok(Prepared::Mounted)
}

/// `/dev/vda` for `/dev/vda2`: the partition's parent in sysfs.
fn disk_of(partition: &Path) -> Option<PathBuf> {
    let name = partition.file_name()?;
    let real = std::fs::canonicalize(Path::new(SYS_CLASS_BLOCK).join(name)).ok()?;
    Some(Path::new("/dev").join(real.parent()?.file_name()?))
}

/// Adds STATE (fixed size) and EPHEMERAL (the rest) after the last partition, moving the
/// backup GPT to the end of the medium.
fn create_partitions(disk: &Path) -> Result<(), StorageError> {
    let partition = |label, guid, size| AppendedPartition {
        label,
        kind: PartitionKind::LinuxFilesystem,
        guid,
        size,
    };
    partition_table::append(
        disk,
        &[
            partition(STATE_LABEL, random_guid()?, AppendedSize::Bytes(STATE_BYTES)),
            partition(EPHEMERAL_LABEL, random_guid()?, AppendedSize::Rest),
        ],
    )?;
    tracing::info!("{}: created {STATE_LABEL} and {EPHEMERAL_LABEL}", disk.display());
    Ok(())
}

/// A random GUID from the kernel. Not getrandom(2): early in a VM's boot it can block until
/// the entropy pool is ready, and a partition GUID needs uniqueness, not secrecy.
fn random_guid() -> Result<Uuid, StorageError> {
    let io_error = |source| StorageError::Io { path: KERNEL_RANDOM_UUID.into(), source };
    let text = std::fs::read_to_string(KERNEL_RANDOM_UUID).map_err(io_error)?;
    Uuid::parse_str(text.trim())
        .map_err(|e| io_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// Whether the device starts with an ext2/3/4 superblock (magic 0xEF53 at byte 1080).
fn has_ext4(device: &Path) -> Result<bool, StorageError> {
    let io_error = |source| StorageError::Io { path: device.into(), source };
    let mut file = File::open(device).map_err(io_error)?;
    let mut magic = [0u8; 2];
    file.seek(SeekFrom::Start(1080)).map_err(io_error)?;
    file.read_exact(&mut magic).map_err(io_error)?;
    Ok(magic == [0x53, 0xEF])
}

fn format(device: &Path, label: &str) -> Result<(), StorageError> {
    let output = Command::new("/usr/sbin/mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", label])
        .arg(device)
        .output()
        .map_err(|e| StorageError::Format { device: device.into(), reason: e.to_string() })?;
    if !output.status.success() {
        let reason = String::from_utf8_lossy(&output.stderr).trim().to_string();
        return Err(StorageError::Format { device: device.into(), reason });
    }
    tracing::info!("formatted {} as ext4 ({label})", device.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4_magic_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev");
        let mut bytes = vec![0u8; 4096];
        std::fs::write(&path, &bytes).unwrap();
        assert!(!has_ext4(&path).unwrap());
        bytes[1080..1082].copy_from_slice(&[0x53, 0xEF]);
        std::fs::write(&path, &bytes).unwrap();
        assert!(has_ext4(&path).unwrap());
    }

    #[test]
    fn partition_guids_come_from_the_kernel_and_differ() {
        assert_ne!(random_guid().unwrap(), random_guid().unwrap());
    }
}
