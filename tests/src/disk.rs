//! Looking into a Cairn disk image from the host: its partitions by GPT label, and files of
//! its root filesystem.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

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
