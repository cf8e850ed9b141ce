//! The boot bench's floor: a disk image's own kernel, initramfs and command line (slot A's,
//! read from its boot partition) with `trivial-init` as `/init`, booted directly on the
//! board's machine ([`cairn_qemu::Vm::start_kernel`]): what the kernel and any init cost,
//! none of Cairn's. The same files without trivial-init boot Cairn the same way, so the two
//! differ only by Cairn's own work.

use std::io::{Cursor, Read as _, Seek as _, SeekFrom};
use std::path::Path;

use anyhow::Context as _;
use cairn_api::arch::Arch;
use cairn_api::disk::boot_entry::{entry_field, ENTRIES_DIR};
use cairn_api::disk::entry_name::EntryName;
use cairn_api::image::Slot;
use cairn_qemu::DirectKernel;
use image_builder::machined::{self, Program};
use image_builder::tree::FileTree;

/// What trivial-init prints on the console once it runs (machined/src/bin/trivial-init.rs).
pub const MARKER: &str = "cairn trivial init: reached";

/// A slot's kernel, initramfs and command line, as its boot entry names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// The kernel image.
    pub kernel: Vec<u8>,
    /// The (compressed) initramfs.
    pub initramfs: Vec<u8>,
    /// The kernel command line.
    pub command_line: String,
}

impl BootFiles {
    /// `slot`'s files on the disk image `disk`, from its boot partition (a FAT file system
    /// labelled `boot_label`) and the slot's blessed boot entry there (a fresh image's).
    pub fn read(disk: &Path, boot_label: &str, slot: Slot) -> anyhow::Result<BootFiles> {
        let (offset, length) = crate::disk::partition(disk, boot_label)?;
        let mut file = std::fs::File::open(disk)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut partition = Vec::new();
        file.take(length).read_to_end(&mut partition)?;
        let fs = fatfs::FileSystem::new(Cursor::new(partition), fatfs::FsOptions::new())
            .with_context(|| format!("{}: {boot_label} is no FAT file system", disk.display()))?;
        let root = fs.root_dir();
        let read = |path: &str| -> anyhow::Result<Vec<u8>> {
            let mut data = Vec::new();
            root.open_file(path.trim_start_matches('/'))
                .and_then(|mut file| file.read_to_end(&mut data))
                .with_context(|| format!("{}: {boot_label}{path}", disk.display()))?;
            Ok(data)
        };
        let entry_path = format!("{ENTRIES_DIR}/{}", EntryName::blessed(slot));
        let entry = String::from_utf8(read(&entry_path)?)
            .with_context(|| format!("{entry_path} is not UTF-8"))?;
        let field = |key: &str| {
            entry_field(&entry, key).with_context(|| format!("{entry_path} has no {key} line"))
        };
        Ok(BootFiles {
            kernel: read(field("linux")?)?,
            initramfs: read(field("initrd")?)?,
            command_line: field("options")?.to_string(),
        })
    }

    /// The initramfs with `init` as its `/init`: a second, uncompressed newc archive after
    /// the first, whose entries the kernel unpacks over the first's. The kernel unpacks all of
    /// the image's initramfs first, as it does when Cairn boots.
    pub fn initramfs_with_init(&self, init: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut tree = FileTree::new();
        tree.file("/init", 0o755, init)?;
        let mut initramfs = self.initramfs.clone();
        // Archives after the first start on a 4-byte boundary; the kernel skips zeros.
        initramfs.resize(initramfs.len().next_multiple_of(4), 0);
        initramfs.extend(image_builder::initramfs::cpio_newc(&tree, 0)?);
        Ok(initramfs)
    }

    /// Writes the kernel and the initramfs with `init` into `dir`; returns how to boot them.
    pub fn write_with_init(&self, init: &[u8], dir: &Path) -> anyhow::Result<DirectKernel> {
        self.write_kernel(dir, "initramfs-trivial-init", &self.initramfs_with_init(init)?)
    }

    /// Writes the kernel and the slot's own initramfs into `dir`; returns how to boot them as
    /// the bootloader would, without it.
    pub fn write(&self, dir: &Path) -> anyhow::Result<DirectKernel> {
        self.write_kernel(dir, "initramfs", &self.initramfs)
    }

    fn write_kernel(
        &self,
        dir: &Path,
        name: &str,
        initramfs: &[u8],
    ) -> anyhow::Result<DirectKernel> {
        std::fs::create_dir_all(dir)?;
        let kernel = DirectKernel {
            kernel: dir.join("vmlinuz"),
            initramfs: dir.join(name),
            command_line: self.command_line.clone(),
        };
        std::fs::write(&kernel.kernel, &self.kernel)?;
        std::fs::write(&kernel.initramfs, initramfs)?;
        Ok(kernel)
    }
}

/// trivial-init, built static for `arch` with machined and pause, as image-builder builds
/// them, and checked to be a static executable for `arch`. cargo runs the calling program as
/// the workspace's rustc wrapper: its `main` must first call
/// [`image_builder::machined::run_as_rustc_wrapper`].
pub fn trivial_init(arch: Arch) -> anyhow::Result<Vec<u8>> {
    let programs = machined::build(crate::workspace(), arch)?;
    Ok(machined::load(&programs.trivial_init, Program::TrivialInit, arch)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_goes_in_a_second_archive_after_the_whole_first() {
        let files = BootFiles {
            kernel: b"k".to_vec(),
            initramfs: b"zstd!".to_vec(),
            command_line: "quiet".into(),
        };
        let initramfs = files.initramfs_with_init(b"\x7fELF init").unwrap();
        assert_eq!(&initramfs[..8], b"zstd!\0\0\0", "the image's, padded to 4 bytes");
        let second = &initramfs[8..];
        assert!(second.starts_with(b"070701"), "a newc archive");
        let text = String::from_utf8_lossy(second);
        let init = text.find("init\0").unwrap();
        assert!(text[init..].contains("\x7fELF init"), "{text:?}");
        assert!(text.contains("TRAILER!!!"));
    }

    #[test]
    fn the_floor_is_written_with_the_slots_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let files = BootFiles {
            kernel: b"kernel".to_vec(),
            initramfs: b"abcd".to_vec(),
            command_line: "cairn.slot=a console=ttyS0".into(),
        };
        let kernel = files.write_with_init(b"init", dir.path()).unwrap();
        assert_eq!(kernel.command_line, "cairn.slot=a console=ttyS0");
        assert_eq!(std::fs::read(&kernel.kernel).unwrap(), b"kernel");
        let initramfs = std::fs::read(&kernel.initramfs).unwrap();
        assert_eq!(initramfs, files.initramfs_with_init(b"init").unwrap());
    }
}
