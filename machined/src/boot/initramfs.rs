//! Freeing the initramfs before stage 1 hands over. The kernel unpacks the initramfs into
//! rootfs, a file system in memory, where its files stay for as long as they exist: after
//! the switch to the real root nothing can reach them, yet machined's copy, the boot
//! modules and the rest would hold their memory until the next boot. So stage 1 deletes
//! them first, as `switch_root` tools do, without crossing into other file systems (the new
//! root, the kernel's). A diskless node's root squashfs is unlinked too: its loop device
//! holds the file open, so it lives on for as long as the root does.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::statfs::statfs;

/// statfs(2)'s file system types of ramfs and tmpfs (linux/magic.h), which rootfs is.
const IN_MEMORY: [u32; 2] = [0x8584_58f6, 0x0102_1994];

/// What freeing removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Freed {
    /// Files and links removed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Removes everything under `/` that lies on rootfs; does nothing if `/` is not a file
/// system in memory (so never a disk's files, whoever runs it).
pub fn free() -> std::io::Result<Freed> {
    // The type's width differs between C libraries; the magic numbers are 32-bit.
    let kind = statfs("/").map_err(std::io::Error::from)?.filesystem_type().0 as u32;
    if !IN_MEMORY.contains(&kind) {
        return Ok(Freed::default());
    }
    let device = std::fs::symlink_metadata("/")?.dev();
    let mut freed = Freed::default();
    remove_contents(Path::new("/"), device, &mut freed);
    Ok(freed)
}

/// Removes what `dir` holds on `device`, depth first; entries on other devices (mount
/// points) and entries that cannot be removed are left.
fn remove_contents(dir: &Path, device: u64, freed: &mut Freed) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.dev() != device {
            continue;
        }
        if meta.is_dir() {
            remove_contents(&path, device, freed);
            let _ = std::fs::remove_dir(&path);
        } else if std::fs::remove_file(&path).is_ok() {
            freed.files += 1;
            freed.bytes += meta.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_on_the_device_goes_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("usr/lib/modules/6.12");
        std::fs::create_dir_all(&modules).unwrap();
        std::fs::write(dir.path().join("init"), vec![0u8; 1000]).unwrap();
        std::fs::write(modules.join("loop.ko"), vec![0u8; 24]).unwrap();
        std::os::unix::fs::symlink("init", dir.path().join("sbin-init")).unwrap();
        let device = std::fs::metadata(dir.path()).unwrap().dev();

        let mut freed = Freed::default();
        remove_contents(dir.path(), device.wrapping_add(1), &mut freed);
        assert_eq!(freed, Freed::default(), "another device's files stay");
        assert!(dir.path().join("init").exists());

        remove_contents(dir.path(), device, &mut freed);
        assert_eq!(freed.files, 3);
        assert_eq!(freed.bytes, 1024 + "init".len() as u64);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
