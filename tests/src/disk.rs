//! Cairn disks from the host: copies and qcow2 overlays for VMs to start from, their
//! partitions by GPT label, files of an image's root filesystem and of its FAT boot
//! partition.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

/// A disk a VM starts from, made from an image or a configured node's disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeDisk {
    /// A whole raw disk of its own.
    Raw(PathBuf),
    /// A qcow2 file holding only what differs from a raw base, which must not change while
    /// the overlay is in use.
    Overlay(PathBuf),
}

impl NodeDisk {
    /// A sparse copy of the raw disk `from` at `path`, grown to `bytes` if it is smaller (as
    /// a user's disk is bigger than the image).
    pub fn copy(from: &Path, path: &Path, bytes: u64) -> anyhow::Result<NodeDisk> {
        run(Command::new("cp").arg("--sparse=always").arg(from).arg(path))?;
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        if file.metadata()?.len() < bytes {
            file.set_len(bytes)?;
        }
        Ok(NodeDisk::Raw(path.to_path_buf()))
    }

    /// A qcow2 overlay at `path` over the raw disk `base`.
    pub fn overlay(base: &Path, path: &Path) -> anyhow::Result<NodeDisk> {
        let base = base.canonicalize().with_context(|| format!("{}", base.display()))?;
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&base)
            .arg(path))?;
        Ok(NodeDisk::Overlay(path.to_path_buf()))
    }

    /// The raw disk, which the host can read while a VM writes it (QEMU writes a raw disk
    /// through the host's page cache; an overlay's mapping stays in QEMU until a flush).
    pub fn raw(&self) -> Option<&Path> {
        match self {
            NodeDisk::Raw(path) => Some(path),
            NodeDisk::Overlay(_) => None,
        }
    }

    /// The image as `cairn_qemu` takes it. It opens every image with `format=raw`; an overlay
    /// goes in as QEMU's `json:` pseudo-protocol, a raw view of a qcow2 node (commas doubled,
    /// as QEMU's option syntax wants).
    pub fn qemu_image(&self) -> PathBuf {
        match self {
            NodeDisk::Raw(path) => path.clone(),
            NodeDisk::Overlay(path) => {
                let file = serde_json::json!({"driver": "file", "filename": path});
                let node = serde_json::json!({"file": {"driver": "qcow2", "file": file}});
                PathBuf::from(format!("json:{}", node.to_string().replace(',', ",,")))
            }
        }
    }
}

/// Runs a host tool; fails with its error output.
fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// The byte offset and length of the partition labelled `label`.
pub fn partition(disk: &Path, label: &str) -> anyhow::Result<(u64, u64)> {
    let gpt =
        gpt::GptConfig::new().open(disk).with_context(|| format!("{}: GPT", disk.display()))?;
    let sector = u64::from(*gpt.logical_block_size());
    let part = gpt
        .partitions()
        .values()
        .find(|p| p.name == label)
        .with_context(|| format!("{}: no {label} partition", disk.display()))?;
    Ok((part.first_lba * sector, (part.last_lba + 1 - part.first_lba) * sector))
}

/// The SHA-256 (hex) of the partition labelled `label`, as it is now (a running VM's
/// writes included: QEMU writes through the host's page cache).
pub fn partition_sha256(disk: &Path, label: &str) -> anyhow::Result<String> {
    let (offset, length) = partition(disk, label)?;
    let mut file = std::fs::File::open(disk)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file.take(length), &mut hasher)?;
    Ok(cairn_api::bundle::hex(&hasher.finalize()))
}

/// A file of the root filesystem (ROOT-A's squashfs) of a built disk image.
pub fn file_in_image(disk: &Path, path: &str) -> anyhow::Result<Vec<u8>> {
    let (offset, _) = partition(disk, cairn_api::image::ROOT_A_LABEL)?;
    let file = std::io::BufReader::new(std::fs::File::open(disk)?);
    let fs = backhand::FilesystemReader::from_reader_with_offset(file, offset)
        .with_context(|| format!("{}: ROOT-A is not a squashfs", disk.display()))?;
    for node in fs.files() {
        if node.fullpath == Path::new(path) {
            if let backhand::InnerNode::File(file) = &node.inner {
                let mut data = Vec::new();
                fs.file(file).reader().read_to_end(&mut data)?;
                return Ok(data);
            }
        }
    }
    bail!("{}: no file {path} in ROOT-A", disk.display())
}

/// The file at `path` (from the root) of the FAT filesystem in the partition labelled
/// `label`, if there is one.
pub fn fat_file(disk: &Path, label: &str, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
    with_fat(disk, label, false, |root| match root.open_file(path.trim_start_matches('/')) {
        Ok(mut file) => {
            let mut data = Vec::new();
            file.read_to_end(&mut data)?;
            Ok(Some(data))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    })
}

/// Replaces the content of the existing file at `path` of the FAT filesystem in the partition
/// labelled `label` with `data`, as a bootloader or a torn write would leave it.
pub fn write_fat_file(disk: &Path, label: &str, path: &str, data: &[u8]) -> anyhow::Result<()> {
    with_fat(disk, label, true, |root| {
        let mut file = root.open_file(path.trim_start_matches('/'))?;
        file.truncate()?;
        std::io::Write::write_all(&mut file, data)
    })
}

/// Runs `work` on the root of the FAT filesystem in the partition labelled `label`, read
/// into memory (no mount), and writes the partition back when `write`.
fn with_fat<T>(
    disk: &Path,
    label: &str,
    write: bool,
    work: impl FnOnce(&fatfs::Dir<'_, &mut std::io::Cursor<Vec<u8>>>) -> std::io::Result<T>,
) -> anyhow::Result<T> {
    let (offset, length) = partition(disk, label)?;
    let mut file = std::fs::OpenOptions::new().read(true).write(write).open(disk)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    (&mut file).take(length).read_to_end(&mut bytes)?;
    let mut volume = std::io::Cursor::new(bytes);
    let result = {
        let fs = fatfs::FileSystem::new(&mut volume, fatfs::FsOptions::new())
            .with_context(|| format!("{}: {label} is not a FAT filesystem", disk.display()))?;
        let result = work(&fs.root_dir()).with_context(|| format!("{}: {label}", disk.display()));
        fs.unmount()?;
        result?
    };
    if write {
        file.seek(SeekFrom::Start(offset))?;
        std::io::Write::write_all(&mut file, volume.get_ref())?;
        file.sync_all()?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlay_goes_to_qemu_as_a_raw_view_of_a_qcow2_node() {
        let overlay = NodeDisk::Overlay("/tmp/a,b/disk.qcow2".into());
        assert_eq!(
            overlay.qemu_image(),
            Path::new(concat!(
                r#"json:{"file":{"driver":"qcow2",,"file":{"driver":"file",,"#,
                r#""filename":"/tmp/a,,b/disk.qcow2"}}}"#
            ))
        );
        assert_eq!(overlay.raw(), None);
        let raw = NodeDisk::Raw("/tmp/disk.raw".into());
        assert_eq!(
            (raw.qemu_image(), raw.raw()),
            ("/tmp/disk.raw".into(), Some(Path::new("/tmp/disk.raw")))
        );
    }

    #[test]
    fn a_copy_is_grown_and_an_overlay_reads_through_to_its_base() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        std::fs::write(&base, vec![7u8; 4096]).unwrap();
        let copy = NodeDisk::copy(&base, &dir.path().join("copy.raw"), 1 << 20).unwrap();
        let copied = std::fs::read(copy.raw().unwrap()).unwrap();
        assert_eq!((copied.len(), &copied[..4096]), (1 << 20, &[7u8; 4096][..]));
        let overlay = NodeDisk::overlay(&base, &dir.path().join("o.qcow2")).unwrap();
        let NodeDisk::Overlay(path) = &overlay else { panic!("{overlay:?}") };
        let info = Command::new("qemu-img").arg("info").arg(path).output().unwrap();
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains("file format: qcow2") && info.contains("base.raw"), "{info}");
    }
}
