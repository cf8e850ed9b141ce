//! Reboot and power-off, behind a trait: the kernel's on a node, the process's own when
//! machined runs as an ordinary process.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

/// How the machine reboots and powers off. Called after services have stopped and logs
/// have been flushed.
pub trait Power: Send + Sync {
    /// Restarts the machine; does not return on success.
    fn reboot(&self) -> anyhow::Result<()>;
    /// Turns the machine off; does not return on success.
    fn power_off(&self) -> anyhow::Result<()>;
}

/// machined as PID 1: the kernel reboots or powers off, after a sync.
#[derive(Debug, Default)]
pub struct KernelPower;

impl Power for KernelPower {
    fn reboot(&self) -> anyhow::Result<()> {
        nix::unistd::sync();
        match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT)? {}
    }

    fn power_off(&self) -> anyhow::Result<()> {
        nix::unistd::sync();
        match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF)? {}
    }
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
