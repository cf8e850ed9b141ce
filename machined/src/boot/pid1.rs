//! What machined does only as PID 1 on the root filesystem (stage 2): the mounts stage 1
//! did not bring, the root filesystem's modules, and the data volumes.

use std::sync::Arc;

use nix::mount::{mount, MsFlags};

use crate::boot::blkpg::Blkpg;
use crate::boot::root_source::RootSource;
use crate::boot::storage::{self, Volume};
use crate::facts::{Facts, Volumes};
use crate::system::reaper::Reaper;

/// What stage 2 prepared before the API starts.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The volumes mounted.
    pub volumes: Volumes,
    /// EPHEMERAL when it must be formatted first ([`format_in_background`]): a large one
    /// takes long, and nothing on the way to the API needs it.
    pub unformatted: Option<Volume>,
}

/// Mounts `/tmp`, the cgroup v2 hierarchy, STATE and (unless it must be formatted first)
/// EPHEMERAL, and loads modules. Errors are logged, not fatal: the API must come up so an
/// operator can see what is wrong. mke2fs runs through `reaper`, which must be running.
pub async fn prepare(reaper: &Reaper) -> Prepared {
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
    let data = match storage::find_or_create(root, &Blkpg) {
        Ok(data) => data,
        Err(e) => {
            tracing::error!("storage: {e}; the node cannot keep a config until this is fixed");
            return Prepared::default();
        }
    };
    let state = mounted(data.state.prepare(reaper).await, "the node cannot keep a config");
    let ephemeral = match data.ephemeral.is_formatted() {
        Ok(false) => {
            let volumes = Volumes { state, ephemeral: false };
            return Prepared { volumes, unformatted: Some(data.ephemeral) };
        }
        Ok(true) => data.ephemeral.prepare(reaper).await,
        Err(e) => Err(e),
    };
    let volumes = Volumes { state, ephemeral: mounted(ephemeral, CONTAINERS_WAIT) };
    Prepared { volumes, unformatted: None }
}

/// Formats and mounts EPHEMERAL, then publishes it in `facts`: what needs `/var`
/// (containerd, the log flusher, files from the config, updates) waits for that.
pub async fn format_in_background(ephemeral: Volume, reaper: Arc<Reaper>, facts: Arc<Facts>) {
    if mounted(ephemeral.prepare(&reaper).await, CONTAINERS_WAIT) {
        facts.volumes.send_modify(|volumes| volumes.ephemeral = true);
    }
}

/// What a node without EPHEMERAL lacks.
const CONTAINERS_WAIT: &str = "containerd and pods wait for EPHEMERAL";

/// Whether a volume was mounted; logs why not, and what the node lacks for it.
fn mounted(result: Result<(), storage::StorageError>, lacking: &str) -> bool {
    result.inspect_err(|e| tracing::error!("storage: {e}; {lacking} until this is fixed")).is_ok()
}
