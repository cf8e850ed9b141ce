//! The initramfs step: machined as `/init`, the mount points stage 1 uses, and the modules
//! that reach the root, as a newc archive ([`crate::initramfs`]).

use super::kernel::Kernel;
use super::ImageError;
use crate::initramfs;
use crate::tree::FileTree;

/// The directories stage 1 mounts on or switches from.
const MOUNT_POINTS: [&str; 5] = ["/dev", "/proc", "/sys", "/run", "/newroot"];

/// The compressed initramfs of an image whose stage 1 is `machined`.
pub fn build(kernel: &Kernel, machined: &[u8], mtime: u32) -> Result<Vec<u8>, ImageError> {
    Ok(initramfs::build(&tree(kernel, machined)?, mtime)?)
}

fn tree(kernel: &Kernel, machined: &[u8]) -> Result<FileTree, ImageError> {
    let mut early = FileTree::new();
    early.file("/init", 0o755, machined.to_vec())?;
    for dir in MOUNT_POINTS {
        early.dir(dir, 0o755)?;
    }
    kernel.add_modules(&mut early, &kernel.initramfs_modules)?;
    Ok(early)
}
