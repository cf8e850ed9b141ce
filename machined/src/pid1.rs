//! What machined does only as PID 1 on the root filesystem (stage 2): the mounts stage 1
//! did not bring, the root filesystem's modules, and reaping orphaned processes, which the
//! kernel hands to PID 1.

use std::sync::Arc;

use nix::mount::{mount, MsFlags};

use cairn_api::image::Slot;

use crate::power::{KernelPower, Power};
use crate::reaper::Reaper;
use crate::storage::{self, Prepared};

/// Mounts `/tmp` and the cgroup v2 hierarchy, and starts `reaper`. Errors are logged, not
/// fatal: the API must come up so an operator can see what is wrong.
pub fn prepare(reaper: &Arc<Reaper>) {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    for (source, target, fstype, flags) in [
        ("tmpfs", "/tmp", "tmpfs", nosuid_nodev),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid_nodev | MsFlags::MS_NOEXEC),
    ] {
        if let Err(errno) = mount(Some(source), target, Some(fstype), flags, None::<&str>) {
            tracing::error!("mounting {fstype} on {target}: {errno}");
        }
    }
    // The root filesystem's modules: network drivers, netfilter, overlay, ext4...
    match nix::sys::utsname::uname() {
        Ok(uname) => {
            let dir = std::path::Path::new("/usr/lib/modules").join(uname.release());
            match crate::boot::modules::load_listed(&dir) {
                Ok((count, failures)) => {
                    tracing::info!("loaded {count} modules");
                    failures.iter().for_each(|f| tracing::error!("module: {f}"));
                }
                Err(e) => tracing::error!("loading modules: {e}"),
            }
        }
        Err(errno) => tracing::error!("uname: {errno}"),
    }
    let slot = crate::boot::cmdline::current_slot();
    tracing::info!(
        "machined {} stage 2 (PID 1) on slot {}",
        env!("CARGO_PKG_VERSION"),
        slot.map_or("?".to_string(), |s| s.to_string())
    );
    // Before the reaper starts: mke2fs is waited for by std, which a reaper would race.
    match storage::prepare(slot.unwrap_or(Slot::A)) {
        Ok(Prepared::Mounted) => {}
        Ok(Prepared::RebootNeeded) => {
            tracing::info!("rebooting so the kernel reads the new partition table");
            if let Err(e) = KernelPower.reboot() {
                tracing::error!("reboot: {e:#}");
            }
        }
        Err(e) => {
            tracing::error!("storage: {e}; the node cannot keep a config until this is fixed")
        }
    }
    tokio::spawn(reaper.clone().run());
}
