//! STATE and EPHEMERAL: created by machined on a node's first boot (an image carries only
//! the ESP and the root slots), formatted ext4, and mounted at `/system/state` and `/var`.
//!
//! Creating them rewrites the GPT of the boot disk, moving its backup header to the end of
//! the medium (the image was smaller). The kernel will not re-read the table of a disk in
//! use, so machined reboots once after creating them; formatting happens on the next boot.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_api::image::{Slot, EPHEMERAL_LABEL, STATE_LABEL};
use nix::mount::{mount, MsFlags};

use crate::boot::partitions::find_by_label;

/// STATE's size: configs and keys are small; flash is not.
const STATE_BYTES: u64 = 64 * 1024 * 1024;
/// Where partitions are listed.
const SYS_CLASS_BLOCK: &str = "/sys/class/block";

/// STATE or EPHEMERAL could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The root partition is not on a disk we can find.
    #[error("cannot find the disk holding {0}")]
    NoDisk(String),
    /// Editing the partition table failed.
    #[error("{disk}: partition table: {reason}")]
    Gpt {
        /// The disk.
        disk: PathBuf,
        /// What failed.
        reason: String,
    },
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

/// Makes sure STATE and EPHEMERAL exist, are formatted and are mounted.
pub fn prepare(slot: Slot) -> Result<Prepared, StorageError> {
    let sys = Path::new(SYS_CLASS_BLOCK);
    let (Some(state), Some(ephemeral)) =
        (find_by_label(sys, STATE_LABEL), find_by_label(sys, EPHEMERAL_LABEL))
    else {
        let root = slot.root_label();
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
            MsFlags::MS_NOATIME | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            None::<&str>,
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
    let gpt_error = |reason: String| StorageError::Gpt { disk: disk.into(), reason };
    let mut gpt =
        gpt::GptConfig::new().writable(true).open(disk).map_err(|e| gpt_error(e.to_string()))?;
    // Re-setting the partitions recomputes the headers for the device's real size.
    let mut partitions = gpt.take_partitions();
    gpt.update_partitions(partitions.clone()).map_err(|e| gpt_error(e.to_string()))?;
    let align = gpt.calculate_alignment().max(1);
    let block = u64::from(*gpt.logical_block_size());
    let (start, length) = gpt
        .find_free_sectors()
        .into_iter()
        .max_by_key(|(_, length)| *length)
        .ok_or_else(|| gpt_error("no free space after the root slots".into()))?;
    let round_up = |lba: u64| lba.div_ceil(align) * align;
    let state_first = round_up(start);
    let state_last = state_first + STATE_BYTES / block - 1;
    let ephemeral_first = round_up(state_last + 1);
    let ephemeral_last = start + length - 1;
    if ephemeral_first >= ephemeral_last {
        return Err(gpt_error("the disk is too small for STATE and EPHEMERAL".into()));
    }
    let next_id = partitions.keys().max().copied().unwrap_or(0) + 1;
    for (offset, (label, first, last)) in
        [(STATE_LABEL, state_first, state_last), (EPHEMERAL_LABEL, ephemeral_first, ephemeral_last)]
            .into_iter()
            .enumerate()
    {
        let partition = gpt::partition::Partition {
            part_type_guid: gpt::partition_types::LINUX_FS,
            part_guid: random_guid().parse().map_err(|e| gpt_error(format!("GUID: {e}")))?,
            first_lba: first,
            last_lba: last,
            flags: 0,
            name: label.to_string(),
        };
        partitions.insert(next_id + offset as u32, partition);
    }
    gpt.update_partitions(partitions).map_err(|e| gpt_error(e.to_string()))?;
    let mut device = gpt.write().map_err(|e| gpt_error(e.to_string()))?;
    // The protective MBR still covers the image's size; it must cover the disk's (capped at
    // 2^32-1 blocks, as the specification says for larger disks).
    let io_error = |source| StorageError::Io { path: disk.into(), source };
    let blocks = device.seek(SeekFrom::End(0)).map_err(io_error)? / block;
    let covered = u32::try_from(blocks.saturating_sub(1)).unwrap_or(u32::MAX);
    gpt::mbr::ProtectiveMBR::with_lb_size(covered)
        .update_conservative(&mut device)
        .map_err(|e| gpt_error(format!("protective MBR: {e}")))?;
    device.sync_all().map_err(io_error)?;
    tracing::info!("{}: created {STATE_LABEL} and {EPHEMERAL_LABEL}", disk.display());
    Ok(())
}

/// A random GUID from the kernel. Not getrandom(2): early in a VM's boot it can block until
/// the entropy pool is ready, and a partition GUID needs uniqueness, not secrecy.
fn random_guid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
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
    fn partitions_fill_a_grown_disk_and_the_protective_mbr_follows() {
        const MIB: u64 = 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.raw");
        // An image of 32 MiB with one partition, then "flashed" to a 256 MiB medium.
        std::fs::File::create(&disk).unwrap().set_len(32 * MIB).unwrap();
        let mut gpt = gpt::GptConfig::new().writable(true).create(&disk).unwrap();
        gpt.add_partition("ROOT-A", 16 * MIB, gpt::partition_types::LINUX_FS, 0, None).unwrap();
        let mut device = gpt.write().unwrap();
        gpt::mbr::ProtectiveMBR::with_lb_size((32 * MIB / 512 - 1) as u32)
            .overwrite_lba0(&mut device)
            .unwrap();
        drop(device);
        std::fs::OpenOptions::new().write(true).open(&disk).unwrap().set_len(256 * MIB).unwrap();

        create_partitions(&disk).unwrap();

        let gpt = gpt::GptConfig::new().open(&disk).unwrap();
        let by_name = |name: &str| gpt.partitions().values().find(|p| p.name == name).cloned();
        let state = by_name(STATE_LABEL).expect("STATE");
        let ephemeral = by_name(EPHEMERAL_LABEL).expect("EPHEMERAL");
        assert_eq!((state.last_lba - state.first_lba + 1) * 512, STATE_BYTES);
        assert!(ephemeral.first_lba > state.last_lba);
        // EPHEMERAL reaches the backup GPT (32 entry sectors and the header) at the end.
        assert_eq!(ephemeral.last_lba, 256 * MIB / 512 - 34);
        let mbr = std::fs::read(&disk).unwrap();
        let covered = u32::from_le_bytes(mbr[446 + 12..446 + 16].try_into().unwrap());
        assert_eq!(u64::from(covered), 256 * MIB / 512 - 1);
    }
}
