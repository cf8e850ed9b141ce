//! Flashing: a disk image written to an SD card, a USB stick or a file, decompressed on the
//! fly, synced, then read back from the device (not the page cache) and compared by SHA-256.
//! Everything that could make the write a mistake is refused before a byte is written:
//! [`Target::inspect`] and [`check_fits`].

mod device;
mod source;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{posix_fadvise, OFlag, PosixFadviseAdvice};
use sha2::{Digest, Sha256};

pub use device::{HostView, Target};
pub use source::ImageFile;

/// Bytes read, hashed and written at a time.
const CHUNK: usize = 4 << 20;

/// Written bytes are pushed to the device at least this often: the progress shown is then the
/// device's, not the page cache's, and the last sync does not sit on a gigabyte of writes.
const SYNC_EVERY: u64 = 64 << 20;

/// Why a flash was refused or failed. Every refusal comes before the first write.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// The image could not be read.
    #[error("the image {path}: {source}")]
    Image {
        /// The image.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The image decompresses to more than its header said, which the device was sized by.
    #[error("the image {path} decompresses to more than the {announced} bytes its header says")]
    ImageSize {
        /// The image.
        path: PathBuf,
        /// The size its header gave.
        announced: u64,
    },
    /// The device could not be opened, written, synced or read back.
    #[error("{device}: {source}")]
    Device {
        /// The device.
        device: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Neither a block device nor a regular file.
    #[error("{device} is not a disk")]
    NotADisk {
        /// The path given.
        device: PathBuf,
    },
    /// A partition, not a whole disk: the image has its own partition table.
    #[error("{device} is a partition of {disk}: flash the whole disk (/dev/{disk})")]
    Partition {
        /// The path given.
        device: PathBuf,
        /// The disk it is a partition of.
        disk: String,
    },
    /// The disk holding this host's root filesystem.
    #[error("{device} is the disk this host runs from (/ is {root})")]
    HostDisk {
        /// The path given.
        device: PathBuf,
        /// What / is mounted from.
        root: String,
    },
    /// Something uses the disk or one of its partitions.
    #[error("{device} is in use: {by}")]
    InUse {
        /// The path given.
        device: PathBuf,
        /// What uses it.
        by: String,
    },
    /// The disk is smaller than the image.
    #[error(
        "{device} holds {device_size} bytes, less than the image's {image_size}: \
         nothing was written"
    )]
    TooSmall {
        /// The path given.
        device: PathBuf,
        /// The disk's size in bytes.
        device_size: u64,
        /// The image's size in bytes, decompressed.
        image_size: u64,
    },
    /// The host's mountinfo or swaps could not be read.
    #[error("{path}: {source}")]
    Host {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The device read back differently from the image.
    #[error("{device} does not read back as written: SHA-256 {found}, the image's {expected}")]
    Verify {
        /// The device.
        device: PathBuf,
        /// The image's SHA-256.
        expected: String,
        /// The device's.
        found: String,
    },
}

/// Where a flash is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Writing the image.
    Writing,
    /// Reading it back.
    Verifying,
}

/// A finished flash.
#[derive(Debug)]
pub struct Flashed {
    /// Bytes written and read back.
    pub bytes: u64,
    /// The image's SHA-256 (decompressed), which the device read back as.
    pub sha256: String,
    /// Writing, syncs included.
    pub written_in: Duration,
    /// Reading back.
    pub verified_in: Duration,
}

/// Refuses a disk smaller than the image.
pub fn check_fits(image: &ImageFile, device: &Path, target: &Target) -> Result<(), FlashError> {
    match target {
        Target::Disk { size, .. } if *size < image.size => Err(FlashError::TooSmall {
            device: device.to_path_buf(),
            device_size: *size,
            image_size: image.size,
        }),
        _ => Ok(()),
    }
}

/// Writes `image` to `device` (which [`Target::inspect`] found to be `target`), then reads it
/// back and compares. `progress` hears the phase and the bytes done of `image.size`.
pub fn flash(
    image: &ImageFile,
    device: &Path,
    target: &Target,
    progress: &mut dyn FnMut(Phase, u64),
) -> Result<Flashed, FlashError> {
    check_fits(image, device, target)?;
    let error = |source| FlashError::Device { device: device.to_path_buf(), source };
    let mut out = open(device, target)?;
    let started = Instant::now();
    let expected = write(image, &mut out, target, &mut |done| progress(Phase::Writing, done))
        .map_err(|e| e.or_device(device))?;
    out.sync_all().map_err(error)?;
    let written_in = started.elapsed();
    // Reading back what the page cache kept would prove nothing: drop it first (the pages
    // are clean after the sync).
    posix_fadvise(&out, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .map_err(|e| error(e.into()))?;
    let started = Instant::now();
    out.seek(SeekFrom::Start(0)).map_err(error)?;
    let found =
        hash(&mut out, image.size, &mut |done| progress(Phase::Verifying, done)).map_err(error)?;
    if found != expected {
        return Err(FlashError::Verify { device: device.to_path_buf(), expected, found });
    }
    Ok(Flashed { bytes: image.size, sha256: found, written_in, verified_in: started.elapsed() })
}

/// Opens the target for writing and reading back. A disk is opened exclusively: the kernel
/// then refuses one that is mounted or held, even where this host's mountinfo cannot see it
/// (another mount namespace).
fn open(device: &Path, target: &Target) -> Result<File, FlashError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    match target {
        Target::Disk { .. } => options.custom_flags(OFlag::O_EXCL.bits()),
        Target::File => options.create(true).truncate(true),
    };
    options.open(device).map_err(|source| match source.raw_os_error() {
        Some(code) if code == nix::errno::Errno::EBUSY as i32 => FlashError::InUse {
            device: device.to_path_buf(),
            by: "the kernel holds it (mounted, or held, where this host does not show it)".into(),
        },
        _ => FlashError::Device { device: device.to_path_buf(), source },
    })
}

/// What went wrong while writing: reading the image, or writing the device.
enum WriteError {
    Image(FlashError),
    Device(io::Error),
}

impl WriteError {
    fn or_device(self, device: &Path) -> FlashError {
        match self {
            WriteError::Image(error) => error,
            WriteError::Device(source) => {
                FlashError::Device { device: device.to_path_buf(), source }
            }
        }
    }
}

/// Copies the image into `out` and returns its SHA-256. Into a file, runs of zeros become
/// holes, as a sparse image would have them; a disk gets every byte, since what it held
/// before is not known to be zero.
fn write(
    image: &ImageFile,
    out: &mut File,
    target: &Target,
    progress: &mut dyn FnMut(u64),
) -> Result<String, WriteError> {
    let image_error =
        |source| WriteError::Image(FlashError::Image { path: image.path.clone(), source });
    let mut reader = image.reader().map_err(WriteError::Image)?;
    let mut buffer = Vec::with_capacity(CHUNK);
    let mut sha = Sha256::new();
    let (mut done, mut unsynced) = (0u64, 0u64);
    loop {
        buffer.clear();
        let n = (&mut reader).take(CHUNK as u64).read_to_end(&mut buffer).map_err(image_error)?;
        if n == 0 {
            break;
        }
        if done + n as u64 > image.size {
            return Err(WriteError::Image(FlashError::ImageSize {
                path: image.path.clone(),
                announced: image.size,
            }));
        }
        let chunk = &buffer[..n];
        sha.update(chunk);
        if *target == Target::File && chunk.iter().all(|b| *b == 0) {
            out.seek(SeekFrom::Current(n as i64)).map_err(WriteError::Device)?;
        } else {
            out.write_all(chunk).map_err(WriteError::Device)?;
        }
        done += n as u64;
        unsynced += n as u64;
        if unsynced >= SYNC_EVERY {
            out.sync_data().map_err(WriteError::Device)?;
            unsynced = 0;
        }
        progress(done);
    }
    if *target == Target::File {
        out.set_len(done).map_err(WriteError::Device)?;
    }
    Ok(format!("{:x}", sha.finalize()))
}

/// The SHA-256 of the first `size` bytes of `input`.
fn hash(input: &mut File, size: u64, progress: &mut dyn FnMut(u64)) -> io::Result<String> {
    let mut buffer = vec![0u8; CHUNK];
    let mut sha = Sha256::new();
    let mut done = 0u64;
    while done < size {
        let want = (size - done).min(CHUNK as u64) as usize;
        input.read_exact(&mut buffer[..want])?;
        sha.update(&buffer[..want]);
        done += want as u64;
        progress(done);
    }
    Ok(format!("{:x}", sha.finalize()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// An image of `size` bytes: a patterned first and last MiB, zeros between.
    fn image_bytes(size: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; size];
        for (i, b) in bytes.iter_mut().enumerate().take(1 << 20) {
            *b = (i % 253) as u8;
        }
        for b in bytes.iter_mut().rev().take(1 << 20) {
            *b = 0xa5;
        }
        bytes
    }

    fn compressed_image(dir: &Path, bytes: &[u8]) -> ImageFile {
        let path = dir.join("cairn.raw.zst");
        std::fs::write(&path, zstd::encode_all(bytes, 3).unwrap()).unwrap();
        ImageFile::open(&path).unwrap()
    }

    #[test]
    fn a_file_gets_the_image_with_holes_for_its_zeros_and_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = image_bytes(24 << 20);
        let image = compressed_image(dir.path(), &bytes);
        let out = dir.path().join("card.img");
        std::fs::write(&out, vec![0xffu8; 40 << 20]).unwrap();
        let mut seen = Vec::new();
        let flashed =
            flash(&image, &out, &Target::File, &mut |phase, done| seen.push((phase, done)))
                .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), bytes, "replaced, not overwritten in part");
        assert_eq!(flashed.sha256, format!("{:x}", Sha256::digest(&bytes)));
        assert_eq!(flashed.bytes, 24 << 20);
        let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
        assert!(allocated < 12 << 20, "{allocated} bytes allocated: the zeros were written");
        assert_eq!(seen.last(), Some(&(Phase::Verifying, 24 << 20)));
        assert!(seen.contains(&(Phase::Writing, 24 << 20)));
    }

    #[test]
    fn a_disk_smaller_than_the_image_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let image = compressed_image(dir.path(), &image_bytes(3 << 20));
        let disk = Target::Disk { name: "sdz".into(), size: 2 << 20, model: String::new() };
        let error = check_fits(&image, Path::new("/dev/sdz"), &disk).unwrap_err();
        assert_eq!(
            error.to_string(),
            "/dev/sdz holds 2097152 bytes, less than the image's 3145728: nothing was written"
        );
    }

    #[test]
    fn an_image_longer_than_its_header_says_stops_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut image = compressed_image(dir.path(), &image_bytes(6 << 20));
        image.size = 5 << 20;
        let out = dir.path().join("card.img");
        let error = flash(&image, &out, &Target::File, &mut |_, _| {}).unwrap_err();
        let says = "decompresses to more than the 5242880 bytes its header says";
        assert!(error.to_string().ends_with(says), "{error}");
    }

    #[test]
    fn the_read_back_hashes_exactly_the_image_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.bin");
        std::fs::write(&path, b"abc").unwrap();
        let mut file = File::open(&path).unwrap();
        assert_eq!(
            hash(&mut file, 3, &mut |_| {}).unwrap(),
            format!("{:x}", Sha256::digest(b"abc"))
        );
        let mut file = File::open(&path).unwrap();
        let short = hash(&mut file, 4, &mut |_| {}).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
    }
}
