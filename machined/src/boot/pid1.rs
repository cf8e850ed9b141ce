//! What machined does only as PID 1 on the root filesystem (stage 2): the mounts stage 1
//! did not bring, the root filesystem's modules (coldplug, then uevents; the services'
//! modules are left to [`load_service_modules`], off the API's path), and the data volumes.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cairn_api::image::module_table::LoadWhen;
use nix::mount::{mount, MsFlags};

use crate::boot::blkpg::Blkpg;
use crate::boot::coldplug::{self, Coldplug, Loaded};
use crate::boot::flash_wear;
use crate::boot::root_source::RootSource;
use crate::boot::storage::{self, EphemeralVolume, Volume};
use crate::boot::uevents::UeventSocket;
use crate::facts::{Facts, Volumes};
use crate::system::reaper::Reaper;

/// What stage 2 prepared before the API starts.
#[derive(Default)]
pub struct Prepared {
    /// The volumes mounted.
    pub volumes: Volumes,
    /// EPHEMERAL, to format if it must be and mount beside the API
    /// ([`mount_in_background`]): nothing on the way to the API needs it, formatting a large
    /// one takes long, and mounting one after a power cut replays its journal.
    pub ephemeral: Option<EphemeralVolume>,
    /// The root filesystem's modules, for [`load_service_modules`] (none: they could not be
    /// read).
    pub modules: Option<Arc<Coldplug>>,
}

/// Mounts `/tmp`, the cgroup v2 hierarchy and STATE, finds EPHEMERAL, and loads the modules
/// the devices present and the boot ask for (those of devices that appear later load as their
/// uevents come). Errors are logged, not fatal: the API must come up so an operator can see
/// what is wrong. mke2fs runs through `reaper`, which must be running.
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
    // Mounts propagate as on any Kubernetes node (systemd makes `/` shared too): a pod's
    // volumeMount with mountPropagation HostToContainer or Bidirectional needs its host path
    // on a shared mount, and what is mounted under `/` from here on is shared as well.
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if let Err(errno) = mount(None::<&str>, "/", None::<&str>, shared, None::<&str>) {
        tracing::error!("making / shared: {errno}");
    }
    let modules = coldplug_root_modules();
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
    let data = match storage::find_or_create(root, &Blkpg) {
        Ok(data) => data,
        Err(e) => {
            tracing::error!("storage: {e}; the node cannot keep a config until this is fixed");
            return Prepared { modules, ..Prepared::default() };
        }
    };
    let state = mounted(data.state.prepare(reaper).await, "the node cannot keep a config");
    let volumes = Volumes { state, ephemeral: false };
    Prepared { volumes, ephemeral: Some(data.ephemeral), modules }
}

/// Formats EPHEMERAL if it must be and mounts it, then publishes it in `facts`: what needs
/// `/var` (containerd, the log flusher, files from the config, updates) waits for that. A
/// diskless node's waits for a config, which says where it goes.
pub async fn mount_in_background(
    ephemeral: EphemeralVolume,
    reaper: Arc<Reaper>,
    facts: Arc<Facts>,
) {
    let ephemeral = match ephemeral {
        EphemeralVolume::Found(volume) => volume,
        EphemeralVolume::ByConfig => {
            let mut config = facts.config.subscribe();
            let placement = match config.wait_for(Option::is_some).await {
                Ok(config) => config.as_ref().map(|c| c.machine.ephemeral.clone()),
                Err(_) => return,
            };
            Volume::configured_ephemeral(&placement.unwrap_or_default())
        }
    };
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

/// Loads the root filesystem's modules the boot and the devices present ask for, and starts
/// a thread that loads those of the devices that appear later; returns the modules.
fn coldplug_root_modules() -> Option<Arc<Coldplug>> {
    let release = nix::sys::utsname::uname()
        .inspect_err(|errno| tracing::error!("uname: {errno}"))
        .ok()?
        .release()
        .to_string_lossy()
        .into_owned();
    let modules = Coldplug::open(&Path::new("/usr/lib/modules").join(&release))
        .inspect_err(|e| tracing::error!("no modules will load: {e}"))
        .ok()?;
    let modules = Arc::new(modules);
    // Subscribed before the devices are read, so none falls between the two.
    let uevents = UeventSocket::open(None)
        .inspect_err(|e| tracing::error!("devices that appear from now on get no modules: {e}"))
        .ok();
    let started = Instant::now();
    let boot = modules.load_when(LoadWhen::Boot);
    let devices = coldplug::device_modaliases(Path::new("/sys/devices"));
    let for_devices = modules.load_for_devices(&devices);
    tracing::info!(
        "coldplug: loaded {} modules for the boot and {} for {} devices in {} ms",
        boot.count,
        for_devices.count,
        devices.len(),
        started.elapsed().as_millis()
    );
    log_failures(&boot);
    log_failures(&for_devices);
    if let Some(uevents) = uevents {
        let modules = modules.clone();
        let spawned = std::thread::Builder::new()
            .name("uevents".into())
            .spawn(move || follow_uevents(&modules, &uevents));
        if let Err(e) = spawned {
            tracing::error!("devices that appear from now on get no modules: {e}");
        }
    }
    Some(modules)
}

/// Loads the modules of each device the kernel adds, for as long as the socket works.
fn follow_uevents(modules: &Coldplug, uevents: &UeventSocket) {
    loop {
        let modaliases = match uevents.next_modaliases(Path::new("/sys/devices")) {
            Ok(modaliases) => modaliases,
            Err(e) => {
                tracing::error!("devices that appear from now on get no modules: {e}");
                return;
            }
        };
        let loaded = modules.load_for_devices(&modaliases);
        if loaded.count > 0 {
            tracing::info!("loaded {} modules for {}", loaded.count, modaliases.join(", "));
        }
        log_failures(&loaded);
    }
}

/// Loads the modules the services need with no device asking (overlay, bridge,
/// netfilter...): beside the API, not before it. Blocks until they are in.
pub fn load_service_modules(modules: &Coldplug) {
    let started = Instant::now();
    let loaded = modules.load_when(LoadWhen::Services);
    tracing::info!(
        "loaded {} modules for the services in {} ms",
        loaded.count,
        started.elapsed().as_millis()
    );
    log_failures(&loaded);
}

fn log_failures(loaded: &Loaded) {
    loaded.failures.iter().for_each(|f| tracing::error!("module: {f}"));
}
