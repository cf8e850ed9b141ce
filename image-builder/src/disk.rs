//! The disk step: GPT disk images for UEFI machines (DESIGN §3), laid out as a board's
//! `[disk]` says: a protective MBR, a GPT, and three partitions on 1 MiB boundaries
//! (labels as generic-x86_64 has them):
//!
//! | # | label    | type                           | content                          |
//! |---|----------|--------------------------------|----------------------------------|
//! | 1 | `EFI`    | EFI System                     | FAT32, volume label `EFI`        |
//! | 2 | `ROOT-A` | Discoverable Partitions root   | the root squashfs                |
//! | 3 | `ROOT-B` | (same, for the architecture)   | zeros until the first update     |
//!
//! The rest of the disk stays unpartitioned: machined creates STATE and EPHEMERAL after
//! ROOT-B on first boot, sized to the medium. The image file is sparse: only the GPT, the
//! FAT structures and files, and the squashfs are written.
//!
//! The same inputs give the same bytes: the disk and partition GUIDs and the FAT volume id
//! are hashed from the image's content (never random), and every FAT timestamp is `mtime`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cairn_api::arch::Arch;
use cairn_api::board::{Disk, PartitionTable};
// The table format: one definition, in the contract crate (the labels come from the board).
use cairn_api::disk::partition_table::{
    self, Mbr, PartitionKind, PartitionTableError, PlacedPartition, Uuid, ALIGNMENT_BYTES,
    BACKUP_GPT_BYTES, SECTOR_BYTES,
};
use sha2::{Digest, Sha256};

use crate::tree::{FileTree, Node};

/// The length of a FAT volume label, space-padded.
const FAT_LABEL_BYTES: usize = 11;
/// FAT32 needs at least 65525 clusters; this leaves room for the FATs themselves.
const FAT32_MIN_CLUSTERS: u64 = 67_000;

/// The sizes and labels of a disk image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    /// The architecture, which sets the root partitions' type GUID.
    pub arch: Arch,
    /// The ESP's label, of the partition and of its FAT volume (at most 11 ASCII bytes).
    pub esp_label: String,
    /// The labels of root slots A and B.
    pub root_labels: [String; 2],
    /// The whole image, in bytes (a multiple of [`SECTOR_BYTES`]).
    pub size_bytes: u64,
    /// The ESP, in bytes (a multiple of [`ALIGNMENT_BYTES`]; FAT32 needs at least ~33 MiB).
    pub esp_bytes: u64,
    /// Each root slot, in bytes (a multiple of [`ALIGNMENT_BYTES`]).
    pub root_slot_bytes: u64,
    /// What LBA 0 holds: the protective MBR, or a hybrid one listing the ESP.
    pub mbr: Mbr,
}

/// Where one partition of a [`DiskLayout`] lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSpan<'a> {
    /// Its GPT label.
    pub label: &'a str,
    /// Its first byte in the image.
    pub offset: u64,
    /// Its size in bytes.
    pub size: u64,
}

impl DiskLayout {
    /// The layout a board's `[disk]` describes, for its architecture.
    pub fn for_board(arch: Arch, disk: &Disk) -> Self {
        let mbr = match disk.table {
            PartitionTable::Gpt => Mbr::Protective,
            PartitionTable::Hybrid => Mbr::Hybrid,
        };
        DiskLayout {
            arch,
            esp_label: disk.boot_label.clone(),
            root_labels: disk.root_labels.clone(),
            size_bytes: disk.size_bytes(),
            esp_bytes: disk.boot_bytes(),
            root_slot_bytes: disk.root_slot_bytes(),
            mbr,
        }
    }

    /// The ESP, ROOT-A and ROOT-B, in this order, after checking that the sizes are aligned
    /// and that they and the backup GPT fit in the image.
    pub fn partitions(&self) -> Result<[PartitionSpan<'_>; 3], DiskError> {
        check_multiple("size_bytes", self.size_bytes, SECTOR_BYTES)?;
        check_multiple("esp_bytes", self.esp_bytes, ALIGNMENT_BYTES)?;
        check_multiple("root_slot_bytes", self.root_slot_bytes, ALIGNMENT_BYTES)?;
        let [a_label, b_label] = &self.root_labels;
        let esp =
            PartitionSpan { label: &self.esp_label, offset: ALIGNMENT_BYTES, size: self.esp_bytes };
        let root_a =
            PartitionSpan { label: a_label, offset: end(&esp), size: self.root_slot_bytes };
        let root_b =
            PartitionSpan { label: b_label, offset: end(&root_a), size: self.root_slot_bytes };
        let needed = end(&root_b) + BACKUP_GPT_BYTES;
        if needed > self.size_bytes {
            return Err(DiskError::TooSmall { size_bytes: self.size_bytes, needed });
        }
        Ok([esp, root_a, root_b])
    }
}

/// A disk image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A size in the layout is not a multiple of what it must be.
    #[error("disk layout: {field} = {value} is not a positive multiple of {multiple} bytes")]
    Misaligned {
        /// The layout field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What it must be a multiple of.
        multiple: u64,
    },
    /// The partitions do not fit.
    #[error("disk layout: {size_bytes} bytes cannot hold the partitions ({needed} bytes needed)")]
    TooSmall {
        /// The image size asked for.
        size_bytes: u64,
        /// The smallest image that holds the partitions and the backup GPT.
        needed: u64,
    },
    /// The root filesystem is larger than a slot.
    #[error(
        "the root filesystem ({bytes} bytes) does not fit a {slot_bytes}-byte root slot: \
         grow root_slot_bytes or shrink the root"
    )]
    RootTooLarge {
        /// The root filesystem's size.
        bytes: u64,
        /// A slot's size.
        slot_bytes: u64,
    },
    /// The image file could not be created or written.
    #[error("{path:?}: {source}")]
    Io {
        /// The image file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The partition table could not be written.
    #[error(transparent)]
    PartitionTable(#[from] PartitionTableError),
    /// The ESP's label cannot be a FAT volume label.
    #[error("disk layout: the ESP label {0:?} is no FAT volume label (at most 11 ASCII bytes)")]
    EspLabel(String),
    /// The ESP is too small for FAT32.
    #[error("the {0}-byte ESP is too small for FAT32: make esp_bytes at least 33 MiB")]
    EspTooSmall(u64),
    /// The ESP could not be formatted, mounted or unmounted.
    #[error("writing the {esp_bytes}-byte FAT32 ESP: {source}")]
    Esp {
        /// The ESP's size.
        esp_bytes: u64,
        /// What fatfs said.
        source: io::Error,
    },
    /// An ESP entry could not be copied into the FAT filesystem.
    #[error("/{path:?}: copying into the ESP: {source}")]
    EspEntry {
        /// The entry, relative to the ESP's root.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The ESP tree holds something FAT cannot: a symbolic link, or a non-UTF-8 name.
    #[error("/{0:?}: FAT holds only directories and regular files with UTF-8 names")]
    EspUnsupported(PathBuf),
}

/// Writes a disk image to `path` (replacing any file there): GPT, the ESP formatted FAT32
/// holding `esp`, `root_a` (a squashfs image) in ROOT-A, ROOT-B left empty. Every FAT
/// timestamp is `mtime` (seconds since 1970, UTC; clamped to FAT's 1980 start).
pub fn write(
    path: &Path,
    layout: &DiskLayout,
    esp: &FileTree,
    root_a: &[u8],
    mtime: u32,
) -> Result<(), DiskError> {
    let [esp_span, root_a_span, root_b_span] = layout.partitions()?;
    let root_bytes = root_a.len() as u64;
    if root_bytes > root_a_span.size {
        return Err(DiskError::RootTooLarge { bytes: root_bytes, slot_bytes: root_a_span.size });
    }
    let volume_label = fat_volume_label(&layout.esp_label)?;
    let identity = image_identity(layout, esp, root_a, mtime);
    let io_error = |source| DiskError::Io { path: path.to_path_buf(), source };

    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_error)?;
    // Extending an empty file leaves a hole: unwritten regions cost no space.
    file.set_len(layout.size_bytes).map_err(io_error)?;

    let root = PartitionKind::Root(layout.arch);
    let partitions = [
        placed(esp_span, PartitionKind::EfiSystem, &identity),
        placed(root_a_span, root, &identity),
        placed(root_b_span, root, &identity),
    ];
    partition_table::write_new(path, derived_guid(&identity, "disk"), &partitions, layout.mbr)?;
    write_esp(&mut file, &esp_span, volume_label, esp, mtime, &identity)?;
    file.seek(SeekFrom::Start(root_a_span.offset)).map_err(io_error)?;
    file.write_all(root_a).map_err(io_error)?;
    Ok(())
}

/// `span` in the partition table, holding `kind`, its GUID derived from the image identity.
fn placed<'a>(
    span: PartitionSpan<'a>,
    kind: PartitionKind,
    identity: &[u8; 32],
) -> PlacedPartition<'a> {
    PlacedPartition {
        label: span.label,
        kind,
        guid: derived_guid(identity, span.label),
        offset: span.offset,
        size: span.size,
    }
}

/// The first byte after a partition.
fn end(span: &PartitionSpan) -> u64 {
    span.offset + span.size
}

/// `label` space-padded to FAT's 11 bytes.
fn fat_volume_label(label: &str) -> Result<[u8; FAT_LABEL_BYTES], DiskError> {
    let bytes = label.as_bytes();
    if !label.is_ascii() || bytes.len() > FAT_LABEL_BYTES {
        return Err(DiskError::EspLabel(label.into()));
    }
    let mut padded = [b' '; FAT_LABEL_BYTES];
    padded[..bytes.len()].copy_from_slice(bytes);
    Ok(padded)
}

/// Refuses a zero `value` or one that is not a multiple of `multiple`.
fn check_multiple(field: &'static str, value: u64, multiple: u64) -> Result<(), DiskError> {
    if value == 0 || value % multiple != 0 {
        return Err(DiskError::Misaligned { field, value, multiple });
    }
    Ok(())
}

/// A hash of everything that goes into the image: the seed of its GUIDs and volume id, so
/// two different images never share them and rebuilding one gives the same ones.
fn image_identity(layout: &DiskLayout, esp: &FileTree, root_a: &[u8], mtime: u32) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"cairn disk image\0");
    hash.update(layout.arch.name());
    for number in [layout.size_bytes, layout.esp_bytes, layout.root_slot_bytes, mtime.into()] {
        hash.update(number.to_le_bytes());
    }
    // Only a hybrid MBR is hashed: the images of the boards without one keep their GUIDs.
    if layout.mbr == Mbr::Hybrid {
        hash.update(b"hybrid mbr");
    }
    for (path, node) in esp.entries() {
        hash.update(path.as_os_str().as_bytes());
        hash.update([0]);
        if let Node::File { data, .. } = node {
            hash.update((data.len() as u64).to_le_bytes());
            hash.update(data);
        }
    }
    hash.update(root_a);
    hash.finalize().into()
}

/// 16 bytes derived from the image identity for one purpose.
fn derive(identity: &[u8; 32], purpose: &str) -> [u8; 16] {
    let digest = Sha256::new().chain_update(identity).chain_update(purpose).finalize();
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes
}

/// A GUID derived from the image identity, shaped as a random (version 4) one, as
/// systemd-repart does for its hashed GUIDs.
fn derived_guid(identity: &[u8; 32], purpose: &str) -> Uuid {
    let mut bytes = derive(identity, purpose);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

/// Formats the ESP as FAT32 and copies `esp` into it.
fn write_esp(
    file: &mut File,
    span: &PartitionSpan,
    volume_label: [u8; FAT_LABEL_BYTES],
    esp: &FileTree,
    mtime: u32,
    identity: &[u8; 32],
) -> Result<(), DiskError> {
    let esp_error = |source| DiskError::Esp { esp_bytes: span.size, source };
    let [a, b, c, d, ..] = derive(identity, "esp volume id");
    // fatfs falls back to FAT16 when FAT32 would have too few clusters, so pick the largest
    // cluster (fewer, faster allocations) that leaves enough, and check the result below.
    let cluster = [4096, 2048, 1024, 512]
        .into_iter()
        .find(|&cluster| span.size / u64::from(cluster) >= FAT32_MIN_CLUSTERS)
        .unwrap_or(512);
    let options = fatfs::FormatVolumeOptions::new()
        .fat_type(fatfs::FatType::Fat32)
        .bytes_per_cluster(cluster)
        .volume_id(u32::from_le_bytes([a, b, c, d]))
        .volume_label(volume_label);
    let region = Region::new(file, span).map_err(esp_error)?;
    fatfs::format_volume(region, options).map_err(esp_error)?;

    // fatfs 0.3 takes only a `&'static` time provider: one is leaked per image (12 bytes).
    let clock: &'static FixedClock = Box::leak(Box::new(FixedClock(dos_date_time(mtime))));
    let region = Region::new(file, span).map_err(esp_error)?;
    let fs = fatfs::FileSystem::new(region, fatfs::FsOptions::new().time_provider(clock))
        .map_err(esp_error)?;
    if fs.fat_type() != fatfs::FatType::Fat32 {
        return Err(DiskError::EspTooSmall(span.size));
    }
    copy_into_fat(&fs.root_dir(), esp)?;
    // Counting the free clusters makes unmount record them in FSInfo, which fatfs's format
    // leaves "unknown" (fsck.fat reports that).
    fs.stats().map_err(esp_error)?;
    fs.unmount().map_err(esp_error)?;
    let mut region = Region::new(file, span).map_err(esp_error)?;
    repair_dot_entries(&mut region).map(drop).map_err(esp_error)
}

/// Copies the directories and files of `esp` into a FAT filesystem, parents first.
fn copy_into_fat(root: &fatfs::Dir<Region>, esp: &FileTree) -> Result<(), DiskError> {
    for (path, node) in esp.entries() {
        let name = path.to_str().ok_or_else(|| DiskError::EspUnsupported(path.to_path_buf()))?;
        let copied = match node {
            Node::Dir { .. } => root.create_dir(name).map(drop),
            // Flushing here reports errors that dropping the file would only log.
            Node::File { data, .. } => root.create_file(name).and_then(|mut file| {
                file.write_all(data)?;
                file.flush()
            }),
            Node::Symlink { .. } => return Err(DiskError::EspUnsupported(path.to_path_buf())),
        };
        copied.map_err(|source| DiskError::EspEntry { path: path.to_path_buf(), source })?;
    }
    Ok(())
}

/// The first two entries of a FAT directory: "." and "..", as padded short names.
const DOT_NAMES: [[u8; 11]; 2] = [*b".          ", *b"..         "];
/// The size of a FAT directory entry.
const DIR_ENTRY_BYTES: usize = 32;
/// The slots fatfs fills when it creates a directory: a long name and ".", a long name and "..".
const DOT_SLOTS_BYTES: usize = 4 * DIR_ENTRY_BYTES;

/// Repairs what fatfs 0.3 gets wrong in every directory it creates (fixed upstream after
/// 0.3.6, rust-fatfs #99 and #100), which `fsck.fat` "repairs" by renaming and truncating:
/// it puts a long-name entry before "." and before "..", so they are not the first two
/// slots, and gives ".." of a top-level directory the root's cluster instead of 0. This
/// walks the FAT32 directory tree and rewrites the first four slots of each directory;
/// it returns how many directories it changed.
fn repair_dot_entries(volume: &mut Region) -> io::Result<usize> {
    let mut boot = [0; 512];
    volume.seek(SeekFrom::Start(0))?;
    volume.read_exact(&mut boot)?;
    let le16 = |at: usize| u64::from(u16::from_le_bytes([boot[at], boot[at + 1]]));
    let le32 = |at: usize| u32::from_le_bytes([boot[at], boot[at + 1], boot[at + 2], boot[at + 3]]);
    let (sector, reserved, fats) = (le16(11), le16(14), u64::from(boot[16]));
    let cluster_bytes = sector * u64::from(boot[13]);
    let fat_bytes = u64::from(le32(36)) * sector;
    let data_start = reserved * sector + fats * fat_bytes;
    let cluster_offset = |cluster: u32| match cluster.checked_sub(2) {
        Some(index) => Ok(data_start + u64::from(index) * cluster_bytes),
        None => Err(io::Error::new(io::ErrorKind::InvalidData, "a directory at cluster 0 or 1")),
    };

    let mut fat = vec![0; usize::try_from(fat_bytes).map_err(io::Error::other)?];
    volume.seek(SeekFrom::Start(reserved * sector))?;
    volume.read_exact(&mut fat)?;
    // A chain can be no longer than the FAT has entries; anything longer is a loop.
    let max_chain = fat.len() / 4;
    let next = |cluster: u32| {
        let at = cluster as usize * 4;
        let entry = fat.get(at..at + 4).map(|e| u32::from_le_bytes([e[0], e[1], e[2], e[3]]));
        entry.map(|e| e & 0x0FFF_FFFF).filter(|&e| (2..0x0FFF_FFF8).contains(&e))
    };

    // (first cluster, the cluster ".." must name; None for the root, which has no dots)
    let mut dirs = vec![(le32(44), None)];
    let mut repaired = 0;
    while let Some((first, parent)) = dirs.pop() {
        let mut chain = vec![first];
        while let Some(cluster) = chain.last().copied().and_then(next) {
            if chain.len() == max_chain {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "FAT cluster loop"));
            }
            chain.push(cluster);
        }
        let mut entries = Vec::new();
        for &cluster in &chain {
            let start = entries.len();
            entries.resize(start + cluster_bytes as usize, 0);
            volume.seek(SeekFrom::Start(cluster_offset(cluster)?))?;
            volume.read_exact(&mut entries[start..])?;
        }
        if let Some(parent) = parent {
            let slots = entries.get_mut(..DOT_SLOTS_BYTES).and_then(|s| s.try_into().ok());
            let slots: &mut [u8; DOT_SLOTS_BYTES] = slots.ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "a directory smaller than 4 entries")
            })?;
            if repair_dot_slots(slots, parent)? {
                repaired += 1;
                volume.seek(SeekFrom::Start(cluster_offset(first)?))?;
                volume.write_all(slots)?;
            }
        }
        // Subdirectories: short-name entries with the directory bit, other than the dots.
        // The root is cluster 0 in "..", whatever cluster it really starts at.
        let this = if parent.is_some() { first } else { 0 };
        for entry in entries.chunks_exact(DIR_ENTRY_BYTES) {
            match entry[0] {
                0x00 => break,
                0xE5 | b'.' => continue,
                _ if entry[11] & 0x18 == 0x10 => {
                    let high = u32::from(u16::from_le_bytes([entry[20], entry[21]]));
                    let low = u32::from(u16::from_le_bytes([entry[26], entry[27]]));
                    dirs.push(((high << 16) | low, Some(this)));
                }
                _ => {}
            }
        }
    }
    volume.flush()?;
    Ok(repaired)
}

/// Makes a directory's first slots "." then ".." (naming `parent`), turning the long-name
/// entries fatfs writes before them into deleted entries. Returns whether anything changed;
/// fails on a directory that does not start with its dot entries at all.
fn repair_dot_slots(slots: &mut [u8; DOT_SLOTS_BYTES], parent: u32) -> io::Result<bool> {
    const LONG_NAME: u8 = 0x0F;
    const DELETED: u8 = 0xE5;
    let name = |slots: &[u8; DOT_SLOTS_BYTES], slot: usize| {
        let mut name = [0; 11];
        name.copy_from_slice(&slots[slot * DIR_ENTRY_BYTES..][..11]);
        name
    };
    let attributes =
        |slots: &[u8; DOT_SLOTS_BYTES], slot: usize| slots[slot * DIR_ENTRY_BYTES + 11];
    let before = *slots;
    if attributes(slots, 0) == LONG_NAME
        && name(slots, 1) == DOT_NAMES[0]
        && attributes(slots, 2) == LONG_NAME
        && name(slots, 3) == DOT_NAMES[1]
    {
        slots.copy_within(DIR_ENTRY_BYTES..2 * DIR_ENTRY_BYTES, 0);
        slots.copy_within(3 * DIR_ENTRY_BYTES.., DIR_ENTRY_BYTES);
        slots[2 * DIR_ENTRY_BYTES..].fill(0);
        slots[2 * DIR_ENTRY_BYTES] = DELETED;
        slots[3 * DIR_ENTRY_BYTES] = DELETED;
    }
    if name(slots, 0) != DOT_NAMES[0] || name(slots, 1) != DOT_NAMES[1] {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "a directory without . and .."));
    }
    let dotdot = &mut slots[DIR_ENTRY_BYTES..2 * DIR_ENTRY_BYTES];
    dotdot[20..22].copy_from_slice(&((parent >> 16) as u16).to_le_bytes());
    dotdot[26..28].copy_from_slice(&(parent as u16).to_le_bytes());
    Ok(*slots != before)
}

/// A fixed clock for fatfs, which otherwise stamps entries with the local time.
#[derive(Debug)]
struct FixedClock(fatfs::DateTime);

impl fatfs::TimeProvider for FixedClock {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0
    }
}

/// `mtime` (seconds since 1970, UTC) as a FAT date and time; FAT starts in 1980, so earlier
/// times (e.g. SOURCE_DATE_EPOCH=0) become 1980-01-01 00:00:00. FAT stores even seconds.
fn dos_date_time(mtime: u32) -> fatfs::DateTime {
    const FAT_EPOCH: u32 = 315_532_800; // 1980-01-01T00:00:00Z
    let seconds = mtime.max(FAT_EPOCH);
    let (days, time) = (seconds / 86_400, seconds % 86_400);
    // Days since 1970 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u32::from(month <= 2);
    // Every value is bounded by the calendar (years up to 2106), so the casts are exact.
    fatfs::DateTime {
        date: fatfs::Date { year: year as u16, month: month as u16, day: day as u16 },
        time: fatfs::Time {
            hour: (time / 3600) as u16,
            min: (time / 60 % 60) as u16,
            sec: (time % 60) as u16,
            millis: 0,
        },
    }
}

/// One partition of the image file, seen as a whole device (fatfs wants offset 0 to be
/// the volume's first byte, and must not touch bytes outside it).
struct Region<'f> {
    file: &'f mut File,
    start: u64,
    len: u64,
    /// The position within the region; the file is kept at `start + pos`.
    pos: u64,
}

impl<'f> Region<'f> {
    fn new(file: &'f mut File, span: &PartitionSpan) -> io::Result<Self> {
        file.seek(SeekFrom::Start(span.offset))?;
        Ok(Region { file, start: span.offset, len: span.size, pos: 0 })
    }

    /// How much of a `want`-byte transfer stays inside the region.
    fn clamp(&self, want: usize) -> usize {
        let left = self.len.saturating_sub(self.pos);
        usize::try_from(left).map_or(want, |left| want.min(left))
    }
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.clamp(buf.len());
        let n = self.file.read(&mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Region<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.clamp(buf.len());
        let n = self.file.write(&buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Region<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the partition")
        })?;
        self.file.seek(SeekFrom::Start(self.start + target))?;
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpt::partition_types;
    use gpt::GptConfig;
    use std::os::unix::fs::MetadataExt;

    const MIB: u64 = 1024 * 1024;

    fn small_layout() -> DiskLayout {
        DiskLayout {
            arch: Arch::X86_64,
            esp_label: "EFI".into(),
            root_labels: ["ROOT-A".into(), "ROOT-B".into()],
            size_bytes: 200 * MIB,
            esp_bytes: 64 * MIB,
            root_slot_bytes: 32 * MIB,
            mbr: Mbr::Protective,
        }
    }

    fn esp_tree() -> FileTree {
        let mut tree = FileTree::new();
        tree.file("/EFI/BOOT/BOOTX64.EFI", 0o644, vec![0x4D; 70_000]).unwrap();
        tree.file("/loader/loader.conf", 0o644, "timeout 0\ndefault cairn-*\n").unwrap();
        tree.file("/loader/entries/cairn-a.conf", 0o644, "title Cairn (A)\n").unwrap();
        tree.dir("/loader/keys", 0o755).unwrap();
        tree
    }

    fn root_image() -> Vec<u8> {
        (0..3 * MIB as usize + 123).map(|i| (i % 253) as u8 + 1).collect()
    }

    fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
        let mut file = File::open(path).unwrap();
        file.seek(SeekFrom::Start(offset)).unwrap();
        let mut buf = vec![0; len];
        file.read_exact(&mut buf).unwrap();
        buf
    }

    #[test]
    fn default_layout_fits() {
        let disk = Disk {
            table: PartitionTable::Gpt,
            size_mib: 2048,
            boot_label: "BOOT".into(),
            boot_size_mib: 256,
            root_labels: ["R-A".into(), "R-B".into()],
            root_size_mib: 512,
        };
        let layout = DiskLayout::for_board(Arch::Arm64, &disk);
        let spans = layout.partitions().unwrap();
        assert_eq!(
            spans.map(|s| (s.label, s.offset / MIB, s.size / MIB)),
            [("BOOT", 1, 256), ("R-A", 257, 512), ("R-B", 769, 512)]
        );
        assert_eq!(layout.size_bytes, 2048 * MIB);
    }

    #[test]
    fn layout_errors() {
        let layout = DiskLayout { size_bytes: 99 * MIB, ..small_layout() };
        let needed = 129 * MIB + 33 * 512;
        assert!(
            matches!(layout.partitions(), Err(DiskError::TooSmall { needed: n, .. }) if n == needed)
        );
        let layout = DiskLayout { esp_bytes: 64 * MIB + 512, ..small_layout() };
        assert!(matches!(
            layout.partitions(),
            Err(DiskError::Misaligned { field: "esp_bytes", .. })
        ));
        let layout = DiskLayout { size_bytes: 200 * MIB + 1, ..small_layout() };
        assert!(matches!(
            layout.partitions(),
            Err(DiskError::Misaligned { field: "size_bytes", .. })
        ));
        let layout = DiskLayout { root_slot_bytes: 0, ..small_layout() };
        assert!(matches!(layout.partitions(), Err(DiskError::Misaligned { .. })));
    }

    #[test]
    fn fat_volume_labels_are_padded_ascii() {
        assert_eq!(&fat_volume_label("EFI").unwrap(), b"EFI        ");
        assert_eq!(&fat_volume_label("BOOTPART123").unwrap(), b"BOOTPART123");
        assert!(matches!(fat_volume_label("BOOTPART1234"), Err(DiskError::EspLabel(_))));
        assert!(matches!(fat_volume_label("BÖÖT"), Err(DiskError::EspLabel(_))));
    }

    #[test]
    fn dos_times() {
        let at = |t| {
            let d = dos_date_time(t);
            (d.date.year, d.date.month, d.date.day, d.time.hour, d.time.min, d.time.sec)
        };
        assert_eq!(at(0), (1980, 1, 1, 0, 0, 0));
        assert_eq!(at(1_700_000_000), (2023, 11, 14, 22, 13, 20));
        assert_eq!(at(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(at(u32::MAX), (2106, 2, 7, 6, 28, 15));
    }

    #[test]
    fn a_hybrid_image_lists_its_esp_in_the_mbr_beside_the_gpt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let layout = DiskLayout { mbr: Mbr::Hybrid, ..small_layout() };
        write(&path, &layout, &esp_tree(), &root_image(), 1_700_000_000).unwrap();
        let lba0: [u8; 512] = read_at(&path, 0, 512).try_into().unwrap();
        assert!(cairn_api::disk::hybrid_mbr::is_hybrid(&lba0));
        // The ESP as FAT32 from 1 MiB, for its 64 MiB.
        assert_eq!(lba0[446 + 4], 0x0c);
        assert_eq!(u32::from_le_bytes(lba0[454..458].try_into().unwrap()), 2048);
        assert_eq!(u32::from_le_bytes(lba0[458..462].try_into().unwrap()), 64 * 2048);
        let gpt = GptConfig::new().only_valid_headers(true).open(&path).unwrap();
        assert_eq!(gpt.partitions().len(), 3);
    }

    #[test]
    fn image_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let layout = small_layout();
        let root = root_image();
        write(&path, &layout, &esp_tree(), &root, 1_700_000_000).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 200 * MIB);
        // Sparse: far fewer bytes allocated than the image's size.
        assert!(std::fs::metadata(&path).unwrap().blocks() * 512 < 50 * MIB);

        // Protective MBR: one 0xEE partition from LBA 1, and the boot signature.
        let mbr = read_at(&path, 0, 512);
        assert_eq!(mbr[446 + 4], 0xEE);
        assert_eq!(u32::from_le_bytes(mbr[454..458].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(mbr[458..462].try_into().unwrap()), 200 * 2048 - 1);
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);

        let gpt = GptConfig::new().only_valid_headers(true).open(&path).unwrap();
        let partitions: Vec<_> = gpt.partitions().values().collect();
        let summary: Vec<_> = partitions
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.part_type_guid.clone(),
                    p.first_lba * 512,
                    p.last_lba * 512 + 512,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("EFI", partition_types::EFI, MIB, 65 * MIB),
                ("ROOT-A", partition_types::LINUX_ROOT_X64, 65 * MIB, 97 * MIB),
                ("ROOT-B", partition_types::LINUX_ROOT_X64, 97 * MIB, 129 * MIB),
            ]
        );
        let mut guids: Vec<_> = partitions.iter().map(|p| p.part_guid.to_string()).collect();
        guids.push(gpt.guid().to_string());
        guids.sort();
        guids.dedup();
        assert_eq!(guids.len(), 4, "disk and partition GUIDs are distinct");
        assert!(guids.iter().all(|g| g.as_bytes()[14] == b'4'), "version 4 shaped: {guids:?}");

        // ROOT-A holds the root image followed by zeros; ROOT-B is all zeros.
        assert_eq!(read_at(&path, 65 * MIB, root.len()), root);
        assert!(read_at(&path, 65 * MIB + root.len() as u64, 4096).iter().all(|&b| b == 0));
        assert!(read_at(&path, 97 * MIB, 32 * MIB as usize).iter().all(|&b| b == 0));

        // The ESP is FAT32 labelled EFI, with the files and the fixed time.
        let mut file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let span = layout.partitions().unwrap()[0];
        let region = Region::new(&mut file, &span).unwrap();
        let fs = fatfs::FileSystem::new(region, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        assert_eq!(fs.volume_label(), "EFI");
        let mut content = Vec::new();
        fs.root_dir().open_file("EFI/BOOT/BOOTX64.EFI").unwrap().read_to_end(&mut content).unwrap();
        assert_eq!(content, vec![0x4D; 70_000]);
        let mut names = Vec::new();
        for entry in fs.root_dir().open_dir("loader").unwrap().iter() {
            let entry = entry.unwrap();
            if entry.file_name().starts_with('.') {
                continue;
            }
            assert_eq!(entry.modified(), dos_date_time(1_700_000_000), "{}", entry.file_name());
            assert_eq!(entry.created(), dos_date_time(1_700_000_000), "{}", entry.file_name());
            names.push(entry.file_name());
        }
        assert_eq!(names, ["entries", "keys", "loader.conf"]);
        drop(fs);

        // Every directory starts with "." and ".." naming the right clusters: a second
        // repair pass finds nothing to change (and would fail on a directory without dots).
        let mut region = Region::new(&mut file, &span).unwrap();
        assert_eq!(repair_dot_entries(&mut region).unwrap(), 0);
    }

    #[test]
    fn fatfs_directories_are_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("fat"))
            .unwrap();
        file.set_len(40 * MIB).unwrap();
        let span = PartitionSpan { label: "EFI", offset: 0, size: 40 * MIB };
        let options = fatfs::FormatVolumeOptions::new().fat_type(fatfs::FatType::Fat32);
        fatfs::format_volume(Region::new(&mut file, &span).unwrap(), options).unwrap();
        let fs =
            fatfs::FileSystem::new(Region::new(&mut file, &span).unwrap(), fatfs::FsOptions::new())
                .unwrap();
        fs.root_dir().create_dir("a").unwrap().create_dir("b").unwrap();
        fs.unmount().unwrap();
        assert_eq!(repair_dot_entries(&mut Region::new(&mut file, &span).unwrap()).unwrap(), 2);
        assert_eq!(repair_dot_entries(&mut Region::new(&mut file, &span).unwrap()).unwrap(), 0);
    }

    #[test]
    fn dot_slots_exact_bytes() {
        let mut slots = [0u8; DOT_SLOTS_BYTES];
        let entry = |name: &[u8; 11], attributes: u8, cluster: u32| {
            let mut entry = [0u8; DIR_ENTRY_BYTES];
            entry[..11].copy_from_slice(name);
            entry[11] = attributes;
            entry[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
            entry[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
            entry
        };
        // What fatfs 0.3 writes for a directory at cluster 0x12345 under the root.
        let long = entry(b"A.\0\xff\xff\xff\xff\xff\xff\xff\xff", 0x0F, 0);
        slots[..32].copy_from_slice(&long);
        slots[32..64].copy_from_slice(&entry(&DOT_NAMES[0], 0x10, 0x12345));
        slots[64..96].copy_from_slice(&long);
        slots[96..].copy_from_slice(&entry(&DOT_NAMES[1], 0x10, 2));

        assert!(repair_dot_slots(&mut slots, 0).unwrap());
        assert_eq!(slots[..32], entry(&DOT_NAMES[0], 0x10, 0x12345));
        assert_eq!(slots[32..64], entry(&DOT_NAMES[1], 0x10, 0));
        let mut deleted = [0u8; DIR_ENTRY_BYTES];
        deleted[0] = 0xE5;
        assert_eq!(slots[64..96], deleted);
        assert_eq!(slots[96..], deleted);
        assert!(!repair_dot_slots(&mut slots, 0).unwrap());

        // A deeper directory's ".." names its parent.
        assert!(repair_dot_slots(&mut slots, 0x7_0001).unwrap());
        assert_eq!(slots[32..64], entry(&DOT_NAMES[1], 0x10, 0x7_0001));

        let mut garbage = [b'X'; DOT_SLOTS_BYTES];
        assert!(repair_dot_slots(&mut garbage, 0).is_err());
    }

    #[test]
    fn same_inputs_give_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("first.raw"), dir.path().join("second.raw"));
        // A stale, larger file at the second path must not leak into the image.
        std::fs::write(&second, vec![0xFF; 201 * MIB as usize]).unwrap();
        let (layout, esp, root) = (small_layout(), esp_tree(), root_image());
        write(&first, &layout, &esp, &root, 1_234_567_890).unwrap();
        write(&second, &layout, &esp, &root, 1_234_567_890).unwrap();
        assert!(std::fs::read(&first).unwrap() == std::fs::read(&second).unwrap());

        // Other content gives other GUIDs.
        let third = dir.path().join("third.raw");
        write(&third, &layout, &esp, &root[1..], 1_234_567_890).unwrap();
        let guid = |path: &Path| GptConfig::new().open(path).unwrap().guid().to_string();
        assert_ne!(guid(&first), guid(&third));
    }

    #[test]
    fn root_types_follow_the_architecture() {
        let dir = tempfile::tempdir().unwrap();
        for (arch, root_type) in [
            (Arch::Arm64, partition_types::LINUX_ROOT_ARM_64),
            (Arch::Armv7, partition_types::LINUX_ROOT_ARM_32),
        ] {
            let path = dir.path().join(format!("{arch}.raw"));
            let layout = DiskLayout { arch, ..small_layout() };
            write(&path, &layout, &FileTree::new(), b"", 0).unwrap();
            let gpt = GptConfig::new().open(&path).unwrap();
            let types: Vec<_> =
                gpt.partitions().values().map(|p| p.part_type_guid.clone()).collect();
            assert_eq!(types, [partition_types::EFI, root_type.clone(), root_type]);
        }
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let layout = small_layout();
        let too_big = vec![1; 32 * MIB as usize + 1];
        let err = write(&path, &layout, &FileTree::new(), &too_big, 0).unwrap_err();
        assert!(matches!(err, DiskError::RootTooLarge { .. }), "{err}");

        let mut esp = esp_tree();
        esp.symlink("/EFI/link", "BOOT").unwrap();
        let err = write(&path, &layout, &esp, b"", 0).unwrap_err();
        assert!(
            matches!(&err, DiskError::EspUnsupported(p) if p == Path::new("EFI/link")),
            "{err}"
        );

        let layout = DiskLayout { esp_bytes: 16 * MIB, ..layout };
        let err = write(&path, &layout, &FileTree::new(), b"", 0).unwrap_err();
        assert!(matches!(err, DiskError::EspTooSmall(_)), "{err}");
    }
}
