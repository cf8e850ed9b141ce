//! STATE and EPHEMERAL: created by machined on a node's first boot (an image carries only
//! the ESP and the root slots), formatted ext4, and mounted at `/system/state` and `/var`.
//!
//! Creating them rewrites the GPT of the boot disk, moving its backup header to the end of
//! the medium (the image was smaller). The kernel will not re-read the table of a disk in
//! use, so machined tells it about each new partition ([`crate::boot::blkpg`]), waits for
//! their device nodes and goes on in the same boot: a first boot starts the kernel once.
//! How they are mounted to spare flash is [`flash_wear`]'s business.
//!
//! A diskless node has no boot disk: STATE is memory, and so is EPHEMERAL unless its config
//! names a whole disk for it (`machine.ephemeral.disk`), which is formatted only if blank
//! (or the config says `wipe`) and kept across boots: container images and pod data then
//! outlive a reboot. EPHEMERAL is placed once the node has a config.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_api::config::Ephemeral;
use cairn_api::disk::partition_table::{
    self, AddedPartition, AppendedPartition, AppendedSize, PartitionKind, PartitionTableError, Uuid,
};
use cairn_api::image::{EPHEMERAL_LABEL, STATE_LABEL};
use nix::mount::{mount, MsFlags};
use nix::sys::wait::WaitStatus;

use crate::boot::blkpg::KernelPartitions;
use crate::boot::data_disk::{self, Contents};
use crate::boot::flash_wear;
use crate::boot::partitions::{find_by_label, find_by_number};
use crate::boot::root_source::RootSource;
use crate::system::reaper::Reaper;

/// STATE's size: configs and keys are small; flash is not.
const STATE_BYTES: u64 = 64 * 1024 * 1024;
/// Where partitions are listed.
const SYS_CLASS_BLOCK: &str = "/sys/class/block";
/// A fresh random GUID on every read.
const KERNEL_RANDOM_UUID: &str = "/proc/sys/kernel/random/uuid";
/// How long a partition the kernel was told about may take to get its device node
/// (devtmpfs makes it as the kernel adds the partition: this is a bound, not a delay).
const DEVICE_NODE_LIMIT: Duration = Duration::from_secs(10);
/// How long a disk the config names may take to appear (a USB disk is probed late).
const DISK_LIMIT: Duration = Duration::from_secs(30);

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
    /// The kernel refused a partition written to the table: it is there for the next boot,
    /// not for this one.
    #[error(
        "{disk}: the kernel refused partition {number} ({label}, {size} bytes at byte {offset}): \
         {source}; it is in the partition table, and the next boot will see it"
    )]
    KernelRefused {
        /// The disk.
        disk: PathBuf,
        /// The partition's number.
        number: u32,
        /// Its label.
        label: String,
        /// Its first byte.
        offset: u64,
        /// Its size.
        size: u64,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// A partition the kernel took has no device node.
    #[error("{disk}: partition {number} ({label}) has no device node after {limit:?}")]
    NoDeviceNode {
        /// The disk.
        disk: PathBuf,
        /// The partition's number.
        number: u32,
        /// Its label.
        label: String,
        /// How long it was waited for.
        limit: Duration,
    },
    /// The disk the config names for EPHEMERAL did not appear.
    #[error("machine.ephemeral.disk: no {device} after {limit:?}")]
    NoSuchDisk {
        /// The disk.
        device: PathBuf,
        /// How long it was waited for.
        limit: Duration,
    },
    /// The disk the config names for EPHEMERAL holds something else.
    #[error(
        "machine.ephemeral.disk: {device} holds {holds}, so it was not formatted and nothing on \
         it is lost; clear it, or set machine.ephemeral.wipe: true to format it"
    )]
    NotOurs {
        /// The disk.
        device: PathBuf,
        /// What it holds.
        holds: String,
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

/// A data volume: where it lives, and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Where it lives.
    pub medium: Medium,
    /// Its label (STATE, EPHEMERAL), which its file system gets too.
    pub label: &'static str,
    /// Its mount point.
    pub target: &'static str,
}

/// Where a data volume lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Medium {
    /// A partition of the boot disk, formatted ext4.
    Partition {
        /// The partition's device node.
        device: PathBuf,
        /// Created by this boot: whatever it holds is a former user's, to be formatted over.
        fresh: bool,
    },
    /// A whole disk a diskless node's config names (`machine.ephemeral.disk`), formatted
    /// ext4 if blank, or whatever it holds if `wipe`.
    Disk {
        /// The disk's device node.
        device: PathBuf,
        /// Format it even when it holds something else.
        wipe: bool,
    },
    /// Memory (tmpfs): a diskless node's, empty at every boot.
    Memory,
}

/// Where STATE is mounted.
pub const STATE_MOUNT: &str = "/system/state";
/// Where EPHEMERAL is mounted.
pub const EPHEMERAL_MOUNT: &str = "/var";

/// STATE and EPHEMERAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataVolumes {
    /// Config, identity: small.
    pub state: Volume,
    /// `/var`: the rest of the disk.
    pub ephemeral: EphemeralVolume,
}

/// EPHEMERAL, as far as the boot can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EphemeralVolume {
    /// On the boot disk.
    Found(Volume),
    /// A diskless node's: where its config places it ([`Volume::configured_ephemeral`]),
    /// known once the node has one.
    ByConfig,
}

impl DataVolumes {
    fn on(state: PathBuf, ephemeral: PathBuf, fresh: bool) -> DataVolumes {
        let partition = |device| Medium::Partition { device, fresh };
        DataVolumes {
            state: Volume::state(partition(state)),
            ephemeral: EphemeralVolume::Found(Volume::ephemeral(partition(ephemeral))),
        }
    }
}

/// Finds STATE and EPHEMERAL. On a first boot they are created on the disk of `root`, the
/// root the kernel command line names, and made known to `kernel`. A diskless node's STATE
/// is memory, its EPHEMERAL where its config says: labels on a disk it may see are no sign
/// of its own (a former user's included).
pub fn find_or_create(
    root: Option<RootSource>,
    kernel: &dyn KernelPartitions,
) -> Result<DataVolumes, StorageError> {
    let root_label = match root {
        Some(RootSource::Initramfs { .. }) => {
            return Ok(DataVolumes {
                state: Volume::state(Medium::Memory),
                ephemeral: EphemeralVolume::ByConfig,
            })
        }
        Some(RootSource::SlotPartition(slot)) => Some(slot.root_label()),
        None => None,
    };
    let sys = Path::new(SYS_CLASS_BLOCK);
    if let (Some(state), Some(ephemeral)) =
        (find_by_label(sys, STATE_LABEL), find_by_label(sys, EPHEMERAL_LABEL))
    {
        return Ok(DataVolumes::on(state, ephemeral, false));
    }
    let root = root_label.ok_or(StorageError::NoRoot)?;
    let root_device = find_by_label(sys, root).ok_or_else(|| StorageError::NoDisk(root.into()))?;
    let disk = disk_of(&root_device).ok_or_else(|| StorageError::NoDisk(root.into()))?;
    let added = create_partitions(&disk, kernel)?;
    // A partition added by BLKPG has no label in sysfs: its number finds its device node.
    let nodes = added
        .iter()
        .map(|partition| {
            let found = wait_for(DEVICE_NODE_LIMIT, || {
                find_by_number(sys, &disk, partition.number).filter(|node| node.exists())
            });
            found.ok_or_else(|| StorageError::NoDeviceNode {
                disk: disk.clone(),
                number: partition.number,
                label: partition.label.clone(),
                limit: DEVICE_NODE_LIMIT,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let [state, ephemeral] = <[PathBuf; 2]>::try_from(nodes)
        .expect("append adds exactly the two partitions it is given");
    Ok(DataVolumes::on(state, ephemeral, true))
}

impl Volume {
    fn state(medium: Medium) -> Volume {
        Volume { medium, label: STATE_LABEL, target: STATE_MOUNT }
    }

    fn ephemeral(medium: Medium) -> Volume {
        Volume { medium, label: EPHEMERAL_LABEL, target: EPHEMERAL_MOUNT }
    }

    /// A diskless node's EPHEMERAL, as its config places it: on the disk it names, else in
    /// memory.
    pub fn configured_ephemeral(placement: &Ephemeral) -> Volume {
        Volume::ephemeral(match &placement.disk {
            Some(disk) => Medium::Disk { device: disk.into(), wipe: placement.wipe },
            None => Medium::Memory,
        })
    }

    /// Whether it holds its file system already; if not, [`Volume::prepare`] formats it,
    /// which takes long for a large one.
    pub fn is_formatted(&self) -> Result<bool, StorageError> {
        match &self.medium {
            Medium::Partition { device, fresh } => Ok(!fresh && has_ext4(device)?),
            Medium::Disk { device, .. } => Ok(self.disk_contents(device)? == Contents::Labelled),
            Medium::Memory => Ok(true),
        }
    }

    fn disk_contents(&self, device: &Path) -> Result<Contents, StorageError> {
        data_disk::inspect(device, self.label)
            .map_err(|source| StorageError::Io { path: device.into(), source })
    }

    /// Formats it (ext4) unless it holds its file system, then mounts it on its target. A
    /// disk the config names is formatted only if blank or `wipe`.
    pub async fn prepare(&self, reaper: &Reaper) -> Result<(), StorageError> {
        match &self.medium {
            Medium::Partition { device, .. } => {
                if !self.is_formatted()? {
                    format(device, self.label, reaper).await?;
                }
                self.mount_ext4(device)
            }
            Medium::Disk { device, wipe } => {
                wait_for_disk(device).await?;
                match self.disk_contents(device)? {
                    Contents::Labelled => {}
                    Contents::Blank => format(device, self.label, reaper).await?,
                    Contents::Other(holds) if *wipe => {
                        tracing::warn!(
                            "{}: formatting over {holds} (machine.ephemeral.wipe)",
                            device.display()
                        );
                        format(device, self.label, reaper).await?;
                    }
                    Contents::Other(holds) => {
                        return Err(StorageError::NotOurs { device: device.clone(), holds })
                    }
                }
                self.mount_ext4(device)
            }
            Medium::Memory => {
                let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                mount(Some("tmpfs"), self.target, Some("tmpfs"), flags, Some("mode=0755"))
                    .map_err(|errno| self.mount_error(Path::new("tmpfs"), errno))?;
                tracing::info!(
                    "{} is memory (tmpfs) on {}: the node is diskless",
                    self.label,
                    self.target
                );
                Ok(())
            }
        }
    }

    fn mount_ext4(&self, device: &Path) -> Result<(), StorageError> {
        mount(
            Some(device),
            self.target,
            Some("ext4"),
            flash_wear::VOLUME_FLAGS,
            Some(flash_wear::volume_options().as_str()),
        )
        .map_err(|errno| self.mount_error(device, errno))?;
        tracing::info!("{} ({}) mounted on {}", self.label, device.display(), self.target);
        Ok(())
    }

    fn mount_error(&self, device: &Path, errno: nix::errno::Errno) -> StorageError {
        StorageError::Mount { device: device.into(), target: self.target.into(), errno }
    }
}

/// Waits for `device`'s node: its driver may still be probing the disk.
async fn wait_for_disk(device: &Path) -> Result<(), StorageError> {
    let deadline = Instant::now() + DISK_LIMIT;
    while !device.exists() {
        if Instant::now() >= deadline {
            return Err(StorageError::NoSuchDisk { device: device.into(), limit: DISK_LIMIT });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// `/dev/vda` for `/dev/vda2`: the partition's parent in sysfs.
fn disk_of(partition: &Path) -> Option<PathBuf> {
    let name = partition.file_name()?;
    let real = std::fs::canonicalize(Path::new(SYS_CLASS_BLOCK).join(name)).ok()?;
    Some(Path::new("/dev").join(real.parent()?.file_name()?))
}

/// Adds STATE (fixed size) and EPHEMERAL (the rest) after the last partition, moving the
/// backup GPT to the end of the medium, and makes each known to `kernel`.
fn create_partitions(
    disk: &Path,
    kernel: &dyn KernelPartitions,
) -> Result<Vec<AddedPartition>, StorageError> {
    let partition = |label, guid, size| AppendedPartition {
        label,
        kind: PartitionKind::LinuxFilesystem,
        guid,
        size,
    };
    let added = partition_table::append(
        disk,
        &[
            partition(STATE_LABEL, random_guid()?, AppendedSize::Bytes(STATE_BYTES)),
            partition(EPHEMERAL_LABEL, random_guid()?, AppendedSize::Rest),
        ],
    )?;
    tracing::info!("{}: created {STATE_LABEL} and {EPHEMERAL_LABEL}", disk.display());
    for partition in &added {
        kernel.add(disk, partition).map_err(|source| StorageError::KernelRefused {
            disk: disk.into(),
            number: partition.number,
            label: partition.label.clone(),
            offset: partition.offset,
            size: partition.size,
            source,
        })?;
    }
    Ok(added)
}

/// Polls `found` until it gives something, or `limit` has passed.
fn wait_for<T>(limit: Duration, mut found: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        let result = found();
        if result.is_some() || Instant::now() >= deadline {
            return result;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A random GUID from the kernel. Not getrandom(2): early in a VM's boot it can block until
/// the entropy pool is ready, and a partition GUID needs uniqueness, not secrecy.
fn random_guid() -> Result<Uuid, StorageError> {
    let io_error = |source| StorageError::Io { path: KERNEL_RANDOM_UUID.into(), source };
    let text = std::fs::read_to_string(KERNEL_RANDOM_UUID).map_err(io_error)?;
    Uuid::parse_str(text.trim())
        .map_err(|e| io_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// Whether the device starts with an ext2/3/4 superblock. mke2fs writes it last, so a
/// format cut short by a power loss is done again.
fn has_ext4(device: &Path) -> Result<bool, StorageError> {
    let io_error = |source| StorageError::Io { path: device.into(), source };
    let mut head = Vec::new();
    File::open(device).map_err(io_error)?.take(2048).read_to_end(&mut head).map_err(io_error)?;
    Ok(data_disk::ext_label(&head).is_some())
}

/// Runs mke2fs through the reaper (PID 1's, which would otherwise race for its status).
async fn format(device: &Path, label: &str, reaper: &Reaper) -> Result<(), StorageError> {
    let failed = |reason: String| StorageError::Format { device: device.into(), reason };
    let started = Instant::now();
    let mut command = Command::new("/usr/sbin/mke2fs");
    command.args(["-q", "-F", "-t", "ext4", "-L", label]).arg(device).stdin(Stdio::null());
    let (status, errors) = reaper.output(&mut command).await.map_err(|e| failed(e.to_string()))?;
    if !matches!(status, WaitStatus::Exited(_, 0)) {
        return Err(failed(format!("mke2fs ended with {status:?}: {}", errors.trim())));
    }
    tracing::info!(
        "formatted {} as ext4 ({label}) in {} ms",
        device.display(),
        started.elapsed().as_millis()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::fs::OpenOptions;

    use cairn_api::disk::partition_table::{Mbr, PlacedPartition, BACKUP_GPT_BYTES};

    use super::*;

    const MIB: u64 = 1024 * 1024;

    /// A kernel that records what it is told, and refuses partition `refuse`.
    #[derive(Default)]
    struct FakeKernel {
        told: RefCell<Vec<(PathBuf, u32, u64, u64)>>,
        refuse: Option<u32>,
    }

    impl KernelPartitions for FakeKernel {
        fn add(&self, disk: &Path, partition: &AddedPartition) -> std::io::Result<()> {
            if self.refuse == Some(partition.number) {
                return Err(std::io::Error::from_raw_os_error(nix::libc::EBUSY));
            }
            let told = (disk.into(), partition.number, partition.offset, partition.size);
            self.told.borrow_mut().push(told);
            Ok(())
        }
    }

    /// An image with an ESP and ROOT-A, "flashed" to a 256 MiB medium.
    fn flashed_image(dir: &Path) -> PathBuf {
        let disk = dir.join("disk.raw");
        let grow = |bytes| {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&disk)
                .unwrap()
                .set_len(bytes)
                .unwrap()
        };
        grow(32 * MIB);
        let partition = |label, offset: u64| PlacedPartition {
            label,
            kind: PartitionKind::LinuxFilesystem,
            guid: Uuid::from_u128(offset.into()),
            offset,
            size: 8 * MIB,
        };
        let image = [partition("EFI", MIB), partition("ROOT-A", 9 * MIB)];
        partition_table::write_new(&disk, Uuid::from_u128(1), &image, Mbr::Protective).unwrap();
        grow(256 * MIB);
        disk
    }

    #[test]
    fn the_kernel_is_told_each_new_partition_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let disk = flashed_image(dir.path());
        let kernel = FakeKernel::default();
        let added = create_partitions(&disk, &kernel).unwrap();
        let labels: Vec<&str> = added.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, [STATE_LABEL, EPHEMERAL_LABEL]);
        // STATE after ROOT-A on the next MiB; EPHEMERAL up to the backup GPT.
        let ephemeral_bytes = 256 * MIB - BACKUP_GPT_BYTES - (17 * MIB + STATE_BYTES);
        assert_eq!(
            *kernel.told.borrow(),
            [
                (disk.clone(), 3, 17 * MIB, STATE_BYTES),
                (disk.clone(), 4, 17 * MIB + STATE_BYTES, ephemeral_bytes),
            ]
        );
    }

    #[test]
    fn a_refusal_names_the_partition_and_keeps_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let disk = flashed_image(dir.path());
        let kernel = FakeKernel { refuse: Some(4), ..FakeKernel::default() };
        let error = create_partitions(&disk, &kernel).unwrap_err();
        assert!(matches!(error, StorageError::KernelRefused { number: 4, .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("the kernel refused partition 4 (EPHEMERAL"), "{message}");
        assert!(message.contains("the next boot will see it"), "{message}");
        assert_eq!(kernel.told.borrow().len(), 1, "STATE was told before");
        // The table has them: a second attempt finds the labels taken, not a fresh disk.
        let again = create_partitions(&disk, &FakeKernel::default()).unwrap_err();
        assert!(matches!(
            again,
            StorageError::PartitionTable(PartitionTableError::LabelTaken { .. })
        ));
    }

    #[test]
    fn waiting_ends_when_found_or_at_the_limit() {
        let mut polls = 0;
        assert_eq!(
            wait_for(Duration::from_secs(10), || {
                polls += 1;
                (polls == 3).then_some(polls)
            }),
            Some(3)
        );
        let started = Instant::now();
        assert_eq!(wait_for(Duration::from_millis(50), || None::<()>), None);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_fresh_partition_is_formatted_over_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("vda5");
        let mut bytes = vec![0u8; 4096];
        bytes[1080..1082].copy_from_slice(&[0x53, 0xEF]);
        std::fs::write(&device, &bytes).unwrap();
        let ephemeral =
            |fresh| match DataVolumes::on(dir.path().join("vda4"), device.clone(), fresh) {
                DataVolumes { ephemeral: EphemeralVolume::Found(ephemeral), state } => {
                    (ephemeral, state)
                }
                volumes => panic!("{volumes:?}"),
            };
        assert!(!ephemeral(true).0.is_formatted().unwrap(), "a former user's ext4");
        let (ephemeral, state) = ephemeral(false);
        assert!(ephemeral.is_formatted().unwrap(), "this node's, from a boot before");
        assert!(state.is_formatted().is_err(), "no such device");
    }

    #[tokio::test]
    async fn a_named_disk_holding_anything_else_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("vdb");
        let mut bytes = vec![0u8; 8192];
        bytes[512..520].copy_from_slice(b"EFI PART");
        std::fs::write(&disk, &bytes).unwrap();
        let placement = Ephemeral { disk: Some(disk.to_str().unwrap().into()), wipe: false };
        let volume = Volume::configured_ephemeral(&placement);
        assert_eq!(volume.medium, Medium::Disk { device: disk.clone(), wipe: false });
        assert!(!volume.is_formatted().unwrap());
        let error = volume.prepare(&Reaper::new()).await.unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "machine.ephemeral.disk: {} holds a GPT partition table, so it was not formatted \
                 and nothing on it is lost; clear it, or set machine.ephemeral.wipe: true to \
                 format it",
                disk.display()
            )
        );
        assert_eq!(std::fs::read(&disk).unwrap(), bytes);
        let memory = Volume::configured_ephemeral(&Ephemeral::default());
        assert_eq!((memory.medium, memory.target), (Medium::Memory, EPHEMERAL_MOUNT));
    }

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
