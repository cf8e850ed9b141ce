//! How STATE and EPHEMERAL spare an idle node's flash: their mount options and the kernel's
//! write-back delay, which together set what a power cut may lose.
//!
//! Flash (an SD card above all) wears with every block written, and an idle node still writes:
//! a pod's log line every few seconds, ext4's journal commits of the metadata each line changes
//! (size, times, a new block now and then), machined's log flushes. `tests/benches/flash.rs`
//! measures it. By default ext4 commits its journal every 5 s and the kernel writes dirty pages
//! back after 30 s, so a log line every 10 s costs a journal commit (a descriptor, the inode's
//! table block, a commit block) and a data block each time. Here:
//!
//! - `noatime`: reading a file writes nothing;
//! - `lazytime`: a change of timestamps alone stays in memory until the inode changes otherwise
//!   (or for a day at most, the kernel's `vm.dirtytime_expire_seconds`);
//! - `commit=` [`WRITE_BACK_WINDOW`]: ext4 gathers the metadata changes of a window into one
//!   journal commit;
//! - `vm.dirty_expire_centisecs` = [`WRITE_BACK_WINDOW`]: data that nobody syncs waits as long
//!   in memory, so a file appended to all the time is written once per window.
//!
//! What a power cut loses is then what was written without a sync in the last
//! [`WRITE_BACK_WINDOW`] at most: container logs, what pods write to their volumes without
//! syncing (as on any Linux, an application that needs its data kept syncs it). machined's own
//! log files follow the same window: its rings are appended to them and synced every
//! [`WRITE_BACK_WINDOW`] (`--log-flush-interval`), and at reboot and shutdown. What must
//! survive is synced when it is written, so the window does not apply to it: the config, the
//! node's keys, manifests and update records (atomic replaces: write, fsync, rename, fsync the
//! directory), containerd's metadata database (it syncs each transaction). The time floor is
//! such an atomic replace too, at most every
//! [`RECORD_INTERVAL`](crate::time::floor::RECORD_INTERVAL): after a power cut the clock starts
//! at most that much behind the time it went off. A sync commits ext4's journal at once,
//! whatever `commit=` says.
//!
//! mke2fs keeps its defaults. The inode tables are zeroed lazily (`lazy_itable_init`, the
//! kernel's `ext4lazyinit` thread, once, after the first mount): it is a one-time write of
//! about 1/64 of the partition, the same amount whether at format time or later, and later
//! keeps it off the first boot's path. The journal is zeroed at format time
//! (`lazy_journal_init` off), once: a journal never zeroed could hold a previous file
//! system's blocks that a replay after a power cut might mistake for its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::MsFlags;

/// How long data nobody syncs may wait in memory, and ext4's journal commit interval, on
/// STATE and EPHEMERAL: what a power cut may lose of it.
pub const WRITE_BACK_WINDOW: Duration = Duration::from_secs(300);

/// The mount flags of STATE and EPHEMERAL.
pub const VOLUME_FLAGS: MsFlags = MsFlags::MS_NOATIME
    .union(MsFlags::MS_LAZYTIME)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOSUID);

/// The kernel setting that delays the write-back of unsynced data.
const DIRTY_EXPIRE: &str = "vm/dirty_expire_centisecs";

/// The write-back delay could not be set.
#[derive(Debug, thiserror::Error)]
#[error("setting {path}: {source}")]
pub struct WriteBackError {
    /// The sysctl's file.
    pub path: PathBuf,
    /// What failed.
    pub source: std::io::Error,
}

/// ext4's mount options (the data string) of STATE and EPHEMERAL.
pub fn volume_options() -> String {
    format!("commit={}", WRITE_BACK_WINDOW.as_secs())
}

/// Sets the kernel's write-back delay of unsynced data to [`WRITE_BACK_WINDOW`], under
/// `proc_sys` (`/proc/sys` on a node). A config's `vm.dirty_expire_centisecs` sysctl, applied
/// later, takes precedence.
pub fn delay_write_back(proc_sys: &Path) -> Result<(), WriteBackError> {
    let path = proc_sys.join(DIRTY_EXPIRE);
    let centiseconds = WRITE_BACK_WINDOW.as_millis() / 10;
    std::fs::write(&path, format!("{centiseconds}\n"))
        .map_err(|source| WriteBackError { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4_commits_once_per_window() {
        assert_eq!(volume_options(), "commit=300");
        assert!(VOLUME_FLAGS.contains(MsFlags::MS_NOATIME | MsFlags::MS_LAZYTIME));
        assert!(VOLUME_FLAGS.contains(MsFlags::MS_NODEV | MsFlags::MS_NOSUID));
    }

    #[test]
    fn unsynced_data_waits_the_same_window() {
        let sys = tempfile::tempdir().unwrap();
        std::fs::create_dir(sys.path().join("vm")).unwrap();
        delay_write_back(sys.path()).unwrap();
        let written = std::fs::read_to_string(sys.path().join(DIRTY_EXPIRE)).unwrap();
        assert_eq!(written, "30000\n");
    }

    #[test]
    fn a_missing_setting_names_its_file() {
        let sys = tempfile::tempdir().unwrap();
        let error = delay_write_back(sys.path()).unwrap_err();
        assert!(error.to_string().contains("vm/dirty_expire_centisecs"), "{error}");
    }
}
