//! The GPT of a Cairn disk (DESIGN §3): 512-byte sectors, partitions on 1 MiB boundaries.
//!
//! It is written twice in a disk's life. image-builder writes a fresh table ([`write_new`]):
//! the ESP and the two root slots, with GUIDs derived from the image so that rebuilding it
//! gives the same bytes. On a node's first boot machined appends STATE and EPHEMERAL after
//! the last partition ([`append`]), sized to the medium the image was flashed to; that also
//! moves the backup GPT to the medium's end and widens the protective MBR, both of which
//! were written for the smaller image. A board whose firmware reads only an MBR gets a
//! hybrid one instead ([`Mbr::Hybrid`]), which growing leaves as it is.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use gpt::disk::LogicalBlockSize;
use gpt::mbr::ProtectiveMBR;
use gpt::partition::Partition;
use gpt::partition_types::{self, Type};
use gpt::GptConfig;
/// Partition and disk GUIDs (the `uuid` crate's type, which the `gpt` crate takes).
pub use uuid::Uuid;

use super::hybrid_mbr;
use crate::arch::Arch;

/// The logical sector size of Cairn's partition tables.
pub const SECTOR_BYTES: u64 = 512;
/// Partitions start on this boundary (what every partitioning tool uses).
pub const ALIGNMENT_BYTES: u64 = 1024 * 1024;
/// The backup GPT at the end of a disk: 32 sectors of entries and its header.
pub const BACKUP_GPT_BYTES: u64 = 33 * SECTOR_BYTES;

/// What a partition holds, which sets its GPT type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKind {
    /// The EFI System Partition, where firmware looks for bootloaders.
    EfiSystem,
    /// A root slot: the Discoverable Partitions root type of the architecture, so generic
    /// tools recognise it.
    Root(Arch),
    /// Linux filesystem data (STATE, EPHEMERAL).
    LinuxFilesystem,
}

impl PartitionKind {
    fn gpt_type(self) -> Type {
        match self {
            PartitionKind::EfiSystem => partition_types::EFI,
            PartitionKind::Root(Arch::X86_64) => partition_types::LINUX_ROOT_X64,
            PartitionKind::Root(Arch::Arm64) => partition_types::LINUX_ROOT_ARM_64,
            PartitionKind::Root(Arch::Armv7) => partition_types::LINUX_ROOT_ARM_32,
            PartitionKind::LinuxFilesystem => partition_types::LINUX_FS,
        }
    }
}

/// What LBA 0 of a fresh table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mbr {
    /// The protective MBR UEFI specifies: one GPT-protective partition over the disk.
    Protective,
    /// A hybrid MBR ([`hybrid_mbr`]): the first partition also as FAT32, for firmware that
    /// reads only an MBR, then the GPT's protection.
    Hybrid,
}

/// A partition of a fresh table, placed by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedPartition<'a> {
    /// Its GPT label.
    pub label: &'a str,
    /// What it holds.
    pub kind: PartitionKind,
    /// Its unique GUID.
    pub guid: Uuid,
    /// Its first byte (a multiple of [`SECTOR_BYTES`]).
    pub offset: u64,
    /// Its size in bytes (a positive multiple of [`SECTOR_BYTES`]).
    pub size: u64,
}

/// A partition [`append`] places after the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedPartition<'a> {
    /// Its GPT label; no other partition may have it.
    pub label: &'a str,
    /// What it holds.
    pub kind: PartitionKind,
    /// Its unique GUID.
    pub guid: Uuid,
    /// How large it is.
    pub size: AppendedSize,
}

/// The size of an [`AppendedPartition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendedSize {
    /// This many bytes (a positive multiple of [`SECTOR_BYTES`]).
    Bytes(u64),
    /// Up to the end of the usable area: the rest of the medium.
    Rest,
}

/// A partition [`append`] added, where it lies: what the kernel is told of a partition added
/// to a disk in use (BLKPG takes bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedPartition {
    /// Its number in the table (from 1), which its device node is named after (`vda4`).
    pub number: u32,
    /// Its GPT label.
    pub label: String,
    /// Its first byte.
    pub offset: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// A partition table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PartitionTableError {
    /// The disk could not be opened, sized or synced.
    #[error("{disk}: {source}")]
    Io {
        /// The disk or image file.
        disk: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The GPT could not be read, built or written.
    #[error("{disk}: partition table: {source}")]
    Gpt {
        /// The disk or image file.
        disk: PathBuf,
        /// What the gpt crate said.
        source: gpt::GptError,
    },
    /// The protective MBR could not be written.
    #[error("{disk}: protective MBR: {source}")]
    Mbr {
        /// The disk or image file.
        disk: PathBuf,
        /// What the gpt crate said.
        source: gpt::mbr::MBRError,
    },
    /// A partition is not on whole sectors, overlaps another, or leaves the usable area.
    #[error("{disk}: partition {label}: {reason}")]
    Misplaced {
        /// The disk or image file.
        disk: PathBuf,
        /// The partition's label.
        label: String,
        /// What is wrong with where it lies.
        reason: String,
    },
    /// The table already has a partition with the label of one to append.
    #[error("{disk}: already has a partition labelled {label}")]
    LabelTaken {
        /// The disk or image file.
        disk: PathBuf,
        /// The label.
        label: String,
    },
    /// The space after the last partition cannot hold one to append.
    #[error("{disk}: no room for partition {label}: {free_bytes} bytes are left after the partitions before it")]
    NoRoom {
        /// The disk or image file.
        disk: PathBuf,
        /// The partition's label.
        label: String,
        /// What was left where it would start.
        free_bytes: u64,
    },
}

/// Writes a fresh GPT to `disk` (an image file or a device; its current size is the disk's
/// size) holding `partitions`, numbered from 1 in the order given, which must also be their
/// order on the disk; then `mbr` in LBA 0. The same arguments give the same bytes.
pub fn write_new(
    disk: &Path,
    disk_guid: Uuid,
    partitions: &[PlacedPartition<'_>],
    mbr: Mbr,
) -> Result<(), PartitionTableError> {
    let mut file = open(disk)?;
    let mut table = GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(&mut file, Some(disk_guid))
        .map_err(gpt_error(disk))?;
    let (first_usable, last_usable) = (table.header().first_usable, table.header().last_usable);
    let mut entries = BTreeMap::new();
    let mut next_free = first_usable;
    for (number, placed) in (1..).zip(partitions) {
        let refuse = |reason| misplaced(disk, placed.label, reason);
        let sectors = whole_sectors(placed.size)
            .filter(|_| placed.offset % SECTOR_BYTES == 0)
            .ok_or_else(|| {
                refuse(format!(
                    "offset {} and size {} are not whole {SECTOR_BYTES}-byte sectors",
                    placed.offset, placed.size
                ))
            })?;
        let first = placed.offset / SECTOR_BYTES;
        let last = first + sectors - 1;
        if first < next_free {
            return Err(refuse(format!(
                "starts at sector {first}, before sector {next_free} (the end of the primary \
                 GPT or of the partition before it)"
            )));
        }
        if last > last_usable {
            return Err(refuse(format!(
                "ends at sector {last}, after the last usable sector {last_usable} (the backup \
                 GPT follows)"
            )));
        }
        entries.insert(number, entry(placed.label, placed.kind, placed.guid, first, last));
        next_free = last + 1;
    }
    table.update_partitions(entries).map_err(gpt_error(disk))?;
    table.write().map_err(gpt_error(disk))?;
    match (mbr, partitions.first()) {
        (Mbr::Hybrid, Some(boot)) => {
            let sector = |bytes: u64| u32::try_from(bytes / SECTOR_BYTES).ok();
            let (first, sectors) = sector(boot.offset).zip(sector(boot.size)).ok_or_else(|| {
                misplaced(disk, boot.label, "lies beyond what an MBR can address".into())
            })?;
            let guid = disk_guid.as_bytes();
            let signature = u32::from_le_bytes([guid[0], guid[1], guid[2], guid[3]]);
            let lba0 = hybrid_mbr::render(first, sectors, signature);
            file.seek(SeekFrom::Start(0)).map_err(io_error(disk))?;
            file.write_all(&lba0).map_err(io_error(disk))?;
        }
        _ => {
            let sectors = protective_sectors(&mut file).map_err(io_error(disk))?;
            ProtectiveMBR::with_lb_size(sectors)
                .overwrite_lba0(&mut file)
                .map_err(mbr_error(disk))?;
        }
    }
    file.sync_all().map_err(io_error(disk))
}

/// Appends `partitions` after the last partition of `disk`'s GPT, in order, each starting
/// on an [`ALIGNMENT_BYTES`] boundary. The backup GPT moves to the end of the disk and the
/// protective MBR grows to cover it (its boot code and disk signature are kept; a hybrid MBR,
/// which covers nothing past the boot partition, is left as it is); everything is synced
/// before this returns. Refuses a label the table already has, so a table that
/// was already grown is not grown twice. Returns the partitions added, in order.
pub fn append(
    disk: &Path,
    partitions: &[AppendedPartition<'_>],
) -> Result<Vec<AddedPartition>, PartitionTableError> {
    let mut table = GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .open(disk)
        .map_err(gpt_error(disk))?;
    // Setting the partitions again recomputes the headers for the device's real size.
    let mut entries = table.take_partitions();
    table.update_partitions(entries.clone()).map_err(gpt_error(disk))?;
    let (first_usable, last_usable) = (table.header().first_usable, table.header().last_usable);
    let mut next_free = used(&entries).map(|p| p.last_lba + 1).max().unwrap_or(first_usable);
    let next_number = entries.keys().max().copied().unwrap_or(0) + 1;
    let alignment = ALIGNMENT_BYTES / SECTOR_BYTES;
    let mut added = Vec::with_capacity(partitions.len());
    for (number, appended) in (next_number..).zip(partitions) {
        let label = appended.label;
        if find_by_label(&entries, label).is_some() {
            return Err(PartitionTableError::LabelTaken { disk: disk.into(), label: label.into() });
        }
        let first = next_free.div_ceil(alignment) * alignment;
        let last = match appended.size {
            AppendedSize::Bytes(bytes) => {
                let sectors = whole_sectors(bytes).ok_or_else(|| {
                    let reason = format!("size {bytes} is not whole {SECTOR_BYTES}-byte sectors");
                    misplaced(disk, label, reason)
                })?;
                first + sectors - 1
            }
            AppendedSize::Rest => last_usable,
        };
        if first > last || last > last_usable {
            let free_bytes = (last_usable + 1).saturating_sub(first) * SECTOR_BYTES;
            return Err(PartitionTableError::NoRoom {
                disk: disk.into(),
                label: label.into(),
                free_bytes,
            });
        }
        entries.insert(number, entry(label, appended.kind, appended.guid, first, last));
        added.push(AddedPartition {
            number,
            label: label.into(),
            offset: first * SECTOR_BYTES,
            size: (last + 1 - first) * SECTOR_BYTES,
        });
        next_free = last + 1;
    }
    table.update_partitions(entries).map_err(gpt_error(disk))?;
    let mut file = table.write().map_err(gpt_error(disk))?;
    let mut lba0 = [0u8; 512];
    file.seek(SeekFrom::Start(0)).map_err(io_error(disk))?;
    file.read_exact(&mut lba0).map_err(io_error(disk))?;
    if !hybrid_mbr::is_hybrid(&lba0) {
        let sectors = protective_sectors(&mut file).map_err(io_error(disk))?;
        ProtectiveMBR::with_lb_size(sectors)
            .update_conservative(&mut file)
            .map_err(mbr_error(disk))?;
    }
    file.sync_all().map_err(io_error(disk))?;
    Ok(added)
}

/// The used partition labelled `label`.
fn find_by_label<'t>(entries: &'t BTreeMap<u32, Partition>, label: &str) -> Option<&'t Partition> {
    used(entries).find(|p| p.name == label)
}

/// The entries that hold a partition (the gpt crate also lists empty slots).
fn used(entries: &BTreeMap<u32, Partition>) -> impl Iterator<Item = &Partition> {
    entries.values().filter(|p| p.is_used())
}

fn entry(label: &str, kind: PartitionKind, guid: Uuid, first_lba: u64, last_lba: u64) -> Partition {
    Partition {
        part_type_guid: kind.gpt_type(),
        part_guid: guid,
        first_lba,
        last_lba,
        flags: 0,
        name: label.to_string(),
    }
}

/// How many sectors `bytes` is, if it is a positive whole number of them.
fn whole_sectors(bytes: u64) -> Option<u64> {
    (bytes > 0 && bytes % SECTOR_BYTES == 0).then_some(bytes / SECTOR_BYTES)
}

/// The sectors the protective MBR's one partition covers: all after LBA 0, capped at what
/// an MBR can say (the specification's rule for larger disks).
fn protective_sectors(file: &mut File) -> io::Result<u32> {
    let sectors = file.seek(SeekFrom::End(0))? / SECTOR_BYTES;
    Ok(u32::try_from(sectors.saturating_sub(1)).unwrap_or(u32::MAX))
}

fn open(disk: &Path) -> Result<File, PartitionTableError> {
    OpenOptions::new().read(true).write(true).open(disk).map_err(io_error(disk))
}

fn misplaced(disk: &Path, label: &str, reason: String) -> PartitionTableError {
    PartitionTableError::Misplaced { disk: disk.into(), label: label.into(), reason }
}

fn io_error(disk: &Path) -> impl FnOnce(io::Error) -> PartitionTableError + '_ {
    move |source| PartitionTableError::Io { disk: disk.into(), source }
}

fn gpt_error(disk: &Path) -> impl FnOnce(gpt::GptError) -> PartitionTableError + '_ {
    move |source| PartitionTableError::Gpt { disk: disk.into(), source }
}

fn mbr_error(disk: &Path) -> impl FnOnce(gpt::mbr::MBRError) -> PartitionTableError + '_ {
    move |source| PartitionTableError::Mbr { disk: disk.into(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::image::{EPHEMERAL_LABEL, ESP_LABEL, ROOT_A_LABEL, ROOT_B_LABEL, STATE_LABEL};

    const MIB: u64 = 1024 * 1024;

    fn guid(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    /// A sparse file of `size` bytes.
    fn blank_disk(dir: &tempfile::TempDir, name: &str, size: u64) -> PathBuf {
        let path = dir.path().join(name);
        File::create(&path).unwrap().set_len(size).unwrap();
        path
    }

    fn placed(
        label: &str,
        kind: PartitionKind,
        offset_mib: u64,
        size_mib: u64,
    ) -> PlacedPartition<'_> {
        let guid = guid(offset_mib as u8);
        PlacedPartition { label, kind, guid, offset: offset_mib * MIB, size: size_mib * MIB }
    }

    /// An image's table: ESP at 1 MiB (8 MiB), ROOT-A and ROOT-B (4 MiB each) after it.
    fn image_partitions() -> [PlacedPartition<'static>; 3] {
        [
            placed(ESP_LABEL, PartitionKind::EfiSystem, 1, 8),
            placed(ROOT_A_LABEL, PartitionKind::Root(Arch::X86_64), 9, 4),
            placed(ROOT_B_LABEL, PartitionKind::Root(Arch::X86_64), 13, 4),
        ]
    }

    fn mbr(path: &Path) -> [u8; 512] {
        let mut mbr = [0; 512];
        File::open(path).unwrap().read_exact(&mut mbr).unwrap();
        mbr
    }

    /// The sectors the protective MBR's first partition covers (it starts at LBA 1).
    fn mbr_covers(path: &Path) -> u32 {
        let mbr = mbr(path);
        assert_eq!((mbr[446 + 4], &mbr[510..]), (0xEE, &[0x55, 0xAA][..]));
        assert_eq!(u32::from_le_bytes(mbr[454..458].try_into().unwrap()), 1);
        u32::from_le_bytes(mbr[458..462].try_into().unwrap())
    }

    /// (label, type, first byte, end byte, GUID) of each partition, in table order.
    fn summary(path: &Path) -> Vec<(String, Type, u64, u64, Uuid)> {
        // Both headers valid: the backup GPT sits at the end of the disk as it should.
        let table = GptConfig::new().only_valid_headers(true).open(path).unwrap();
        used(table.partitions())
            .map(|p| {
                let (first, end) = (p.first_lba * SECTOR_BYTES, (p.last_lba + 1) * SECTOR_BYTES);
                (p.name.clone(), p.part_type_guid.clone(), first, end, p.part_guid)
            })
            .collect()
    }

    #[test]
    fn a_new_table_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let disk = blank_disk(&dir, "disk.raw", 64 * MIB);
        let partitions = [
            placed("EFI", PartitionKind::EfiSystem, 1, 8),
            placed("X", PartitionKind::Root(Arch::X86_64), 9, 1),
            placed("ARM64", PartitionKind::Root(Arch::Arm64), 10, 1),
            placed("ARMV7", PartitionKind::Root(Arch::Armv7), 11, 1),
            placed("DATA", PartitionKind::LinuxFilesystem, 12, 4),
        ];
        write_new(&disk, guid(0xD1), &partitions, Mbr::Protective).unwrap();

        assert_eq!(*GptConfig::new().open(&disk).unwrap().guid(), guid(0xD1));
        let expected: Vec<_> = partitions
            .iter()
            .zip([
                partition_types::EFI,
                partition_types::LINUX_ROOT_X64,
                partition_types::LINUX_ROOT_ARM_64,
                partition_types::LINUX_ROOT_ARM_32,
                partition_types::LINUX_FS,
            ])
            .map(|(p, t)| (p.label.to_string(), t, p.offset, p.offset + p.size, p.guid))
            .collect();
        assert_eq!(summary(&disk), expected);
        assert_eq!(u64::from(mbr_covers(&disk)), 64 * MIB / SECTOR_BYTES - 1);
    }

    #[test]
    fn a_new_table_is_the_same_bytes_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) =
            (blank_disk(&dir, "first", 32 * MIB), blank_disk(&dir, "second", 32 * MIB));
        // Whatever was in the first 34 sectors (protective MBR, primary GPT) is overwritten.
        std::fs::write(&second, vec![0xFF; 34 * 512]).unwrap();
        File::options().write(true).open(&second).unwrap().set_len(32 * MIB).unwrap();
        write_new(&first, guid(1), &image_partitions(), Mbr::Protective).unwrap();
        write_new(&second, guid(1), &image_partitions(), Mbr::Protective).unwrap();
        assert!(std::fs::read(&first).unwrap() == std::fs::read(&second).unwrap());
    }

    #[test]
    fn misplaced_partitions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let disk = blank_disk(&dir, "disk.raw", 32 * MIB);
        let [esp, root_a, _] = image_partitions();
        let reason = |partitions: &[PlacedPartition]| match write_new(
            &disk,
            guid(1),
            partitions,
            Mbr::Protective,
        ) {
            Err(PartitionTableError::Misplaced { label, reason, .. }) => {
                format!("{label}: {reason}")
            }
            other => panic!("{other:?}"),
        };
        let odd = PlacedPartition { offset: MIB + 1, ..esp };
        assert!(reason(&[odd]).starts_with("EFI: offset 1048577 and size"), "{}", reason(&[odd]));
        let empty = PlacedPartition { size: 0, ..esp };
        assert!(reason(&[empty]).contains("not whole 512-byte sectors"));
        let over_the_gpt = PlacedPartition { offset: 0, ..esp };
        assert_eq!(
            reason(&[over_the_gpt]),
            "EFI: starts at sector 0, before sector 34 (the end of the primary GPT or of the \
             partition before it)"
        );
        let overlapping = PlacedPartition { offset: 8 * MIB, ..root_a };
        assert!(reason(&[esp, overlapping]).starts_with("ROOT-A: starts at sector 16384, before"));
        // The last 33 sectors hold the backup GPT.
        let into_the_backup = PlacedPartition { offset: 16 * MIB, size: 16 * MIB, ..root_a };
        assert!(reason(&[into_the_backup]).starts_with("ROOT-A: ends at sector 65535, after"));

        let err = write_new(&disk, guid(1), &[odd], Mbr::Protective).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: partition EFI: ", disk.display())), "{err}");
    }

    #[test]
    fn partitions_fill_a_grown_disk_and_the_protective_mbr_follows() {
        let dir = tempfile::tempdir().unwrap();
        // A 32 MiB image, then "flashed" to a 256 MiB medium.
        let disk = blank_disk(&dir, "disk.raw", 32 * MIB);
        write_new(&disk, guid(1), &image_partitions(), Mbr::Protective).unwrap();
        File::options().write(true).open(&disk).unwrap().set_len(256 * MIB).unwrap();

        let state = AppendedPartition {
            label: STATE_LABEL,
            kind: PartitionKind::LinuxFilesystem,
            guid: guid(0x57),
            size: AppendedSize::Bytes(64 * MIB),
        };
        let ephemeral = AppendedPartition {
            label: EPHEMERAL_LABEL,
            guid: guid(0xE9),
            size: AppendedSize::Rest,
            ..state
        };
        let added = append(&disk, &[state, ephemeral]).unwrap();
        let ephemeral_end = 256 * MIB - BACKUP_GPT_BYTES;
        let added_at = |number, label: &str, offset, size| AddedPartition {
            number,
            label: label.into(),
            offset,
            size,
        };
        assert_eq!(
            added,
            [
                added_at(4, STATE_LABEL, 17 * MIB, 64 * MIB),
                added_at(5, EPHEMERAL_LABEL, 81 * MIB, ephemeral_end - 81 * MIB),
            ]
        );

        let table = summary(&disk);
        assert_eq!(table.len(), 5);
        assert_eq!(
            table[3],
            (STATE_LABEL.into(), partition_types::LINUX_FS, 17 * MIB, 81 * MIB, guid(0x57))
        );
        // EPHEMERAL reaches the backup GPT at the end.
        assert_eq!(
            table[4],
            (
                EPHEMERAL_LABEL.into(),
                partition_types::LINUX_FS,
                81 * MIB,
                ephemeral_end,
                guid(0xE9)
            )
        );
        let numbers: Vec<u32> =
            GptConfig::new().open(&disk).unwrap().partitions().keys().copied().collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5]);
        assert_eq!(u64::from(mbr_covers(&disk)), 256 * MIB / SECTOR_BYTES - 1);
        assert!(
            find_by_label(GptConfig::new().open(&disk).unwrap().partitions(), "STATE").is_some()
        );

        // Growing again is refused: the labels are taken.
        let err = append(&disk, &[state]).unwrap_err();
        assert!(matches!(&err, PartitionTableError::LabelTaken { label, .. } if label == "STATE"));
        assert_eq!(
            err.to_string(),
            format!("{}: already has a partition labelled STATE", disk.display())
        );
    }

    #[test]
    fn appending_keeps_the_boot_code_and_aligns_after_an_unaligned_partition() {
        let dir = tempfile::tempdir().unwrap();
        let disk = blank_disk(&dir, "disk.raw", 16 * MIB);
        let odd = PlacedPartition { size: MIB + 512, ..image_partitions()[0] };
        write_new(&disk, guid(1), &[odd], Mbr::Protective).unwrap();
        let mut with_boot_code = mbr(&disk);
        with_boot_code[..440].fill(0x90);
        File::options().write(true).open(&disk).unwrap().write_all(&with_boot_code).unwrap();
        File::options().write(true).open(&disk).unwrap().set_len(32 * MIB).unwrap();

        let data = AppendedPartition {
            label: "DATA",
            kind: PartitionKind::LinuxFilesystem,
            guid: guid(2),
            size: AppendedSize::Bytes(MIB),
        };
        append(&disk, &[data]).unwrap();
        assert_eq!(summary(&disk)[1].2, 3 * MIB);
        assert!(mbr(&disk)[..440].iter().all(|&b| b == 0x90));
    }

    #[test]
    fn a_hybrid_mbr_lists_the_boot_partition_and_survives_growing() {
        let dir = tempfile::tempdir().unwrap();
        let disk = blank_disk(&dir, "disk.raw", 32 * MIB);
        write_new(&disk, guid(0xD1), &image_partitions(), Mbr::Hybrid).unwrap();
        let lba0 = mbr(&disk);
        // ESP at 1 MiB, 8 MiB: FAT32 from sector 2048 for 16384 sectors; the signature is
        // the disk GUID's first bytes.
        assert_eq!(lba0, hybrid_mbr::render(2048, 16_384, 0xD1D1_D1D1));
        File::options().write(true).open(&disk).unwrap().set_len(64 * MIB).unwrap();
        let state = AppendedPartition {
            label: STATE_LABEL,
            kind: PartitionKind::LinuxFilesystem,
            guid: guid(2),
            size: AppendedSize::Rest,
        };
        append(&disk, &[state]).unwrap();
        assert_eq!(mbr(&disk), lba0, "growing rewrote the hybrid MBR");
        let labels: Vec<String> = summary(&disk).into_iter().map(|p| p.0).collect();
        assert_eq!(labels, [ESP_LABEL, ROOT_A_LABEL, ROOT_B_LABEL, STATE_LABEL]);
    }

    #[test]
    fn appending_what_does_not_fit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let disk = blank_disk(&dir, "disk.raw", 32 * MIB);
        write_new(&disk, guid(1), &image_partitions(), Mbr::Protective).unwrap();
        let big = |label, mib| AppendedPartition {
            label,
            kind: PartitionKind::LinuxFilesystem,
            guid: guid(2),
            size: AppendedSize::Bytes(mib * MIB),
        };
        let rest = AppendedPartition { size: AppendedSize::Rest, ..big("REST", 0) };

        // 17 MiB are used; 15 MiB less the backup GPT are left.
        let err = append(&disk, &[big("BIG", 15)]).unwrap_err();
        assert!(
            matches!(&err, PartitionTableError::NoRoom { label, free_bytes, .. }
                if label == "BIG" && *free_bytes == 15 * MIB - BACKUP_GPT_BYTES),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{}: no room for partition BIG: {} bytes are left after the partitions before it",
                disk.display(),
                15 * MIB - BACKUP_GPT_BYTES
            )
        );
        // Nothing follows the rest of the disk.
        let err = append(&disk, &[rest, big("AFTER", 1)]).unwrap_err();
        assert!(matches!(&err, PartitionTableError::NoRoom { label, .. } if label == "AFTER"));
        let err = append(&disk, &[big("ODD", 0)]).unwrap_err();
        assert!(matches!(err, PartitionTableError::Misplaced { .. }), "{err}");
        // Refusals leave the table as it was.
        assert_eq!(summary(&disk).len(), 3);
    }

    #[test]
    fn a_disk_without_a_table_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let disk = blank_disk(&dir, "blank.raw", MIB);
        let err = append(&disk, &[]).unwrap_err();
        assert!(matches!(err, PartitionTableError::Gpt { .. }), "{err}");
        assert!(err.to_string().starts_with(&format!("{}: partition table: ", disk.display())));
        let missing = dir.path().join("missing");
        let err = write_new(&missing, guid(1), &[], Mbr::Protective).unwrap_err();
        assert!(matches!(err, PartitionTableError::Io { .. }), "{err}");
    }
}
