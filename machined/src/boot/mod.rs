//! Booting: which stage this machined is, stage 1 (the initramfs's `/init`), boot control
//! (which slot the bootloader boots), and what stage 2 does only as PID 1.
//!
//! The kernel runs `/init` from the initramfs as PID 1: that is stage 1, which reaches the
//! slot's root filesystem and hands over to `/usr/sbin/machined` on it (stage 2, still PID 1).
//! Any other start is machined as an ordinary process.

pub mod blkpg;
pub mod cmdline;
pub mod coldplug;
pub mod control;
pub mod data_disk;
pub mod flash_wear;
pub mod initramfs;
pub mod loop_device;
pub mod modules;
pub mod partitions;
pub mod pid1;
pub mod root_source;
pub mod stage1;
pub mod storage;
pub mod uevents;

/// Which machined this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// PID 1 in the initramfs.
    Initramfs,
    /// PID 1 on the root filesystem.
    Root,
    /// An ordinary process (development, tests).
    Process,
}

impl Stage {
    /// Tells the stage from the process id and the name machined was started as.
    pub fn detect() -> Stage {
        let argv0 = std::env::args_os().next().unwrap_or_default();
        Stage::of(std::process::id(), &argv0.to_string_lossy())
    }

    fn of(pid: u32, argv0: &str) -> Stage {
        match (pid, argv0) {
            (1, "/init") => Stage::Initramfs,
            (1, _) => Stage::Root,
            _ => Stage::Process,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages() {
        assert_eq!(Stage::of(1, "/init"), Stage::Initramfs);
        assert_eq!(Stage::of(1, "/usr/sbin/machined"), Stage::Root);
        assert_eq!(Stage::of(4242, "/init"), Stage::Process);
    }
}
