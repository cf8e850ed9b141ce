//! What machined does only as PID 1 on the root filesystem (stage 2): the mounts stage 1
//! did not bring, the root filesystem's modules, and the data volumes.

use std::path::Path;

use nix::mount::{mount, MsFlags};

use crate::boot::flash_wear;
use crate::boot::root_source::RootSource;
use crate::boot::storage::{self, Prepared};
use crate::facts::Volumes;
use crate::system::power::{KernelPower, Power};

/// Mounts `/tmp`, the cgroup v2 hierarchy, STATE and EPHEMERAL, and loads modules; returns
/// the volumes mounted. Errors are logged, not fatal: the API must come up so an operator
/// can see what is wrong. Runs before the reaper starts: mke2fs is waited for by std, which
/// the reaper would race.
pub fn prepare() -> Volumes {
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
    let root = RootSource::current();
    tracing::info!(
        "machined {} stage 2 (PID 1) on {}",
        env!("CARGO_PKG_VERSION"),
        root.map_or("slot ?".to_string(), |r| r.to_string())
    );
    // Before the volumes see their first write; a config's sysctls may change it later.
    if let Err(e) = flash_wear::delay_write_back(Path::new("/proc/sys")) {
        tracing::error!("{e}");
    }
    match storage::prepare(root) {
        Ok(Prepared::Mounted) => return Volumes { state: true, ephemeral: true },
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
    Volumes::default()
}
