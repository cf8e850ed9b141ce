//! A file as a read-only block device, through the kernel's loop driver: a diskless node's
//! root squashfs lives in a file of the initramfs, and squashfs mounts only block devices.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// Where the loop driver takes requests for a free device.
const LOOP_CONTROL: &str = "/dev/loop-control";

/// Attaching a file to a loop device failed.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// Opening the control device, a loop device or the file failed.
    #[error("{path}: {source}")]
    Open {
        /// What was opened.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The driver refused a request.
    #[error("{what}: {errno}")]
    Ioctl {
        /// The request.
        what: String,
        /// Why it failed.
        errno: Errno,
    },
}

/// Attaches `file` read-only to a free loop device and returns the device's path. The
/// device keeps the file open for as long as it is attached: for a root, until power-off.
pub fn attach_read_only(file: &Path) -> Result<PathBuf, LoopError> {
    let open = |path: &Path, write: bool| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .map_err(|source| LoopError::Open { path: path.into(), source })
    };
    let control = open(Path::new(LOOP_CONTROL), true)?;
    let number = sys::get_free(&control).map_err(|errno| LoopError::Ioctl {
        what: format!("{LOOP_CONTROL}: LOOP_CTL_GET_FREE"),
        errno,
    })?;
    let device = PathBuf::from(format!("/dev/loop{number}"));
    let backing = open(file, false)?;
    let loop_device = open(&device, false)?;
    sys::configure_read_only(&loop_device, &backing).map_err(|errno| LoopError::Ioctl {
        what: format!("{}: LOOP_CONFIGURE with {}", device.display(), file.display()),
        errno,
    })?;
    Ok(device)
}

#[allow(unsafe_code)]
mod sys {
    use super::*;

    /// `LO_FLAGS_READ_ONLY`.
    const READ_ONLY: u32 = 1;
    /// `LO_NAME_SIZE` and `LO_KEY_SIZE`.
    const NAME_BYTES: usize = 64;
    const KEY_BYTES: usize = 32;

    /// `struct loop_info64`.
    #[repr(C)]
    struct LoopInfo64 {
        device: u64,
        inode: u64,
        rdevice: u64,
        offset: u64,
        size_limit: u64,
        number: u32,
        encrypt_type: u32,
        encrypt_key_size: u32,
        flags: u32,
        file_name: [u8; NAME_BYTES],
        crypt_name: [u8; NAME_BYTES],
        encrypt_key: [u8; KEY_BYTES],
        init: [u64; 2],
    }

    /// `struct loop_config` (Linux 5.8+): attach and configure in one request.
    #[repr(C)]
    pub(super) struct LoopConfig {
        fd: u32,
        block_size: u32,
        info: LoopInfo64,
        reserved: [u64; 8],
    }

    // Both are `_IO`-style numbers although LOOP_CONFIGURE passes a pointer.
    nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
    nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);

    /// The number of a free loop device (the driver creates it if it must).
    pub(super) fn get_free(control: &File) -> Result<i32, Errno> {
        // SAFETY: the request takes no argument; a bad fd or request is an error, not UB.
        unsafe { loop_ctl_get_free(control.as_raw_fd()) }
    }

    /// Attaches `backing` to `device`, read-only.
    pub(super) fn configure_read_only(device: &File, backing: &File) -> Result<(), Errno> {
        let config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                device: 0,
                inode: 0,
                rdevice: 0,
                offset: 0,
                size_limit: 0,
                number: 0,
                encrypt_type: 0,
                encrypt_key_size: 0,
                flags: READ_ONLY,
                file_name: [0; NAME_BYTES],
                crypt_name: [0; NAME_BYTES],
                encrypt_key: [0; KEY_BYTES],
                init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: `config` is a valid `repr(C)` `struct loop_config`, borrowed for the whole
        // call; the kernel only reads it. A bad fd or request is an error, not UB.
        unsafe { loop_configure(device.as_raw_fd(), &config) }.map(drop)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn structures_have_the_kernels_sizes() {
            assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
            assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
        }
    }
}
