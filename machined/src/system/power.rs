//! Reboot and power-off, behind a trait: the kernel's on a node, the process's own when
//! machined runs as an ordinary process.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

use nix::sys::reboot::RebootMode;
use nix::sys::statfs::{statfs, EXT4_SUPER_MAGIC};

use crate::boot::storage::{EPHEMERAL_MOUNT, STATE_MOUNT};

/// How the machine reboots and powers off. Called after services have stopped and logs
/// have been flushed.
pub trait Power: Send + Sync {
    /// Restarts the machine; does not return on success.
    fn reboot(&self) -> anyhow::Result<()>;
    /// Turns the machine off; does not return on success.
    fn power_off(&self) -> anyhow::Result<()>;
}

/// machined as PID 1: the kernel reboots or powers off, after a sync, with STATE and
/// EPHEMERAL frozen.
#[derive(Debug, Default)]
pub struct KernelPower;

impl KernelPower {
    fn go_down(mode: RebootMode) -> anyhow::Result<()> {
        nix::unistd::sync();
        let frozen = freeze_volumes();
        let Err(errno) = nix::sys::reboot::reboot(mode);
        // Still up: what is still running must be able to write again.
        for volume in &frozen {
            let _ = sys::thaw(volume.as_raw_fd());
        }
        Err(errno.into())
    }
}

impl Power for KernelPower {
    fn reboot(&self) -> anyhow::Result<()> {
        Self::go_down(RebootMode::RB_AUTOBOOT)
    }

    fn power_off(&self) -> anyhow::Result<()> {
        Self::go_down(RebootMode::RB_POWER_OFF)
    }
}

/// `FIFREEZE` and `FITHAW` (`linux/fs.h`), which neither nix nor libc wraps.
#[allow(unsafe_code)]
mod sys {
    use std::os::raw::c_int;

    use nix::errno::Errno;

    nix::ioctl_readwrite!(fifreeze, b'X', 119, c_int);
    nix::ioctl_readwrite!(fithaw, b'X', 120, c_int);

    /// Freezes the file system of the file open as `fd`.
    pub(super) fn freeze(fd: c_int) -> Result<(), Errno> {
        // SAFETY: the kernel ignores the argument, which points to a valid int for the call.
        unsafe { fifreeze(fd, &mut 0) }.map(drop)
    }

    /// Thaws the file system of the file open as `fd`.
    pub(super) fn thaw(fd: c_int) -> Result<(), Errno> {
        // SAFETY: as for `freeze`.
        unsafe { fithaw(fd, &mut 0) }.map(drop)
    }
}

/// Freezes each data volume that is a mounted ext4; returns those frozen. Freezing checkpoints
/// ext4's journal and marks the file system clean, so the next boot mounts it without a
/// journal replay, which reads and writes the flash before the volume is usable. (machined does
/// not unmount them: containerd's and the pods' mounts may still hold them. A power cut still
/// leaves a journal to replay, as ext4 is built for.)
fn freeze_volumes() -> Vec<File> {
    let mut frozen = Vec::new();
    for mount in [STATE_MOUNT, EPHEMERAL_MOUNT] {
        // Not mounted: the root's read-only directory is no volume to freeze.
        if !statfs(mount).is_ok_and(|fs| fs.filesystem_type() == EXT4_SUPER_MAGIC) {
            continue;
        }
        let Ok(volume) = File::open(mount) else { continue };
        match sys::freeze(volume.as_raw_fd()) {
            Ok(()) => frozen.push(volume),
            Err(errno) => tracing::warn!(
                "freezing {mount}: {errno}; its journal is replayed at the next boot"
            ),
        }
    }
    frozen
}

/// machined as an ordinary process: a reboot re-executes machined with the same arguments
/// (state under `--root` survives, like STATE on a disk); power-off exits.
#[derive(Debug, Default)]
pub struct ProcessPower;

impl Power for ProcessPower {
    fn reboot(&self) -> anyhow::Result<()> {
        let exe = CString::new(std::fs::read_link("/proc/self/exe")?.as_os_str().as_bytes())?;
        let args = std::env::args_os()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        nix::unistd::execv(&exe, &args)?;
        unreachable!("execv returns only on error")
    }

    fn power_off(&self) -> anyhow::Result<()> {
        std::process::exit(0)
    }
}
