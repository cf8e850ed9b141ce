//! Start-up and the main loop: load the config, start the services, wait for a signal.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use cairn_api::image::BOOTLOADER_PATH;
use tokio::signal::unix::{signal, SignalKind};

use crate::api::server::Apid;
use crate::boot::control;
use crate::boot::pid1::{self, Prepared};
use crate::boot::root_source::RootSource;
use crate::boot::{self, Stage};
use crate::cli::Options;
use crate::config::from_url::ConfigUrl;
use crate::config::host_settings::HostSettings;
use crate::config::store::{ConfigStore, Stored};
use crate::facts::{Clock, Facts, Volumes};
use crate::files::layout::{under, NodeLayout};
use crate::identity::bootstrap_trust::BootstrapTrust;
use crate::logs::console::{ConsoleOut, ACTIVE_CONSOLES};
use crate::logs::events::{EventBus, EventKind};
use crate::logs::kmsg::Kmsg;
use crate::logs::LogBook;
use crate::node::config::Configuration;
use crate::node::effects::EffectReports;
use crate::node::power::{PowerAction, PowerControl};
use crate::node::{Node, NodeParts};
use crate::service::{Service, Supervisor};
use crate::services::addresses::AddressWatch;
use crate::services::config_url::ConfigFromUrl;
use crate::services::containerd;
use crate::services::logflush::LogFlush;
use crate::services::network::Network;
use crate::services::power_button::PowerButton;
use crate::services::serving_cert::ServingCert;
use crate::services::settings::Settings;
use crate::services::time::TimeSync;
use crate::system::power::{KernelPower, Power, ProcessPower};
use crate::system::reaper::Reaper;
use crate::time::clock::SystemClock;
use crate::time::floor::{self, Floor};
use crate::update::commit::BootCheck;
use crate::update::watchdog::Watchdog;
use crate::update::{Slots, Updater};
use crate::workloads::kubelet::Kubelet;

/// Runs machined until it is told to stop (as PID 1: forever).
pub fn run(options: Options) -> anyhow::Result<()> {
    let stage = Stage::detect();
    if stage == Stage::Initramfs {
        boot::stage1::run();
    }
    let logs = Arc::new(LogBook::default());
    let (console, kmsg) = match stage {
        Stage::Root => (
            ConsoleOut::kernel_consoles(Path::new(ACTIVE_CONSOLES), Path::new("/dev")),
            Kmsg::open("machined")
                .inspect_err(|e| {
                    eprintln!(
                        "machined: /dev/kmsg: {e}; the kernel log will not have machined's lines"
                    )
                })
                .ok(),
        ),
        _ => (ConsoleOut::Stderr, None),
    };
    logs.install_tracing(console, kmsg);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(options, logs, stage))
}

/// Open files PID 1 may hold: every API connection, log file and watched device is one, and
/// the kernel's default of 1024 let 1000 idle connections lock the operator out.
/// (`rlim_t`: 64 bits here, 32 on armv7.)
const OPEN_FILES: nix::libc::rlim_t = 65_536;

/// Raises the open-file limit to [`OPEN_FILES`] (as PID 1, which may raise the hard limit) or
/// to the hard limit (as an ordinary process).
fn raise_open_file_limit(stage: Stage) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    let hard = if stage == Stage::Root { hard.max(OPEN_FILES) } else { hard };
    if let Err(errno) = setrlimit(Resource::RLIMIT_NOFILE, hard.min(OPEN_FILES), hard) {
        tracing::warn!("raising the open-file limit: {errno}");
    }
}

async fn serve(options: Options, logs: Arc<LogBook>, stage: Stage) -> anyhow::Result<()> {
    raise_open_file_limit(stage);
    // Exit statuses go to whoever started the process; as PID 1, orphans are reaped too.
    let reaper = Reaper::new();
    tokio::spawn(reaper.clone().run());
    let (power, prepared): (Box<dyn Power>, _) = match stage {
        Stage::Root => (Box::new(KernelPower), pid1::prepare(&reaper).await),
        // Under a root directory, its `state` and `var` stand for the volumes; the host
        // keeps the kernel's modules.
        _ => (
            Box::new(ProcessPower),
            Prepared {
                volumes: Volumes { state: true, ephemeral: true },
                ephemeral: None,
                modules: None,
            },
        ),
    };
    let layout = NodeLayout::new(&options.root);
    // Before any certificate is issued or checked: a board without RTC starts in 1970.
    let (image_floor, clock) = match stage {
        Stage::Root => raise_clock_to_floor(&layout),
        _ => (None, Clock::Host),
    };
    let store = ConfigStore::new(layout.clone());
    if store.promote_staged()? {
        tracing::info!("the staged config is now the running config");
    }
    // PID 1 must not exit over a stored config it can no longer use; a node that was
    // configured stays in its owners' hands (recovery mode), never back to maintenance mode.
    let stored = store.open();
    let mode = match &stored {
        Stored::Nothing => "maintenance mode: waiting for a config".to_string(),
        Stored::Config(_) => "configured".to_string(),
        Stored::Damaged(damage) => format!(
            "recovery mode: the stored config does not load ({}); it waits for a config from an admin of the last known client CA, or a client proving the bootstrap token",
            damage.reason
        ),
    };
    tracing::info!(
        "machined {} starting under {} ({mode})",
        env!("CARGO_PKG_VERSION"),
        layout.root().display(),
    );
    let bootstrap =
        BootstrapTrust::load(&layout.bootstrap_token_path(), Path::new("/proc/cmdline"));
    match &bootstrap {
        BootstrapTrust::FirstComer => {}
        BootstrapTrust::Token(_) => tracing::info!(
            "bootstrap token present: a first config is taken only from a client that knows it"
        ),
        BootstrapTrust::Unusable(why) => {
            tracing::error!("bootstrap token unusable: {why}; no config will be accepted")
        }
    }
    let slots = match (stage, RootSource::current()) {
        (Stage::Root, Some(RootSource::SlotPartition(slot))) => {
            control::image_bootloader(&under(layout.root(), BOOTLOADER_PATH))
                .and_then(|bootloader| Slots::find(Path::new("/sys/class/block"), bootloader, slot))
        }
        (Stage::Root, Some(RootSource::Initramfs { .. })) => Err(
            "it has none, being diskless (its system comes from its boot server at every boot: a new version is installed there, not by ctl upgrade)".to_string(),
        ),
        (Stage::Root, None) => Err("the kernel command line names no slot".to_string()),
        _ => Err("machined runs as an ordinary process, not from a slot".to_string()),
    };
    let updater = Arc::new(Updater::new(&layout, slots));
    let facts = Facts::new(None);
    let events = Arc::new(EventBus::default());
    let supervisor = Arc::new(Supervisor::new(facts.clone(), events.clone(), logs.clone()));
    let power = PowerControl::new(
        events.clone(),
        supervisor.clone(),
        logs.clone(),
        layout.log_dir(),
        power,
    );
    let configuration = Configuration::new(
        &layout,
        stored,
        facts.clone(),
        events.clone(),
        power.clone(),
        bootstrap,
    )?;
    let effects = EffectReports::new(supervisor.clone(), facts.config.subscribe());
    events.publish(EventKind::Power, "machined started");
    facts.volumes.send_replace(prepared.volumes);
    if let Some(ephemeral) = prepared.ephemeral {
        tokio::spawn(pid1::mount_in_background(ephemeral, reaper.clone(), facts.clone()));
    }
    facts.clock.send_replace(clock);
    // The services' modules load beside the API; the services that need them wait.
    match prepared.modules {
        Some(modules) => {
            let facts = facts.clone();
            tokio::task::spawn_blocking(move || {
                pid1::load_service_modules(&modules);
                facts.service_modules.send_replace(true);
            });
        }
        None => drop(facts.service_modules.send_replace(true)),
    }
    // The kubelet runs only as PID 1, where containerd does.
    let kubelet = (stage == Stage::Root)
        .then(|| Arc::new(Kubelet::new(layout.clone(), facts.config.subscribe(), power.clone())));
    let host = HostSettings::new(layout.var_dir(), stage == Stage::Root);
    let mut services: Vec<Arc<dyn Service>> = vec![
        Arc::new(LogFlush::new(logs.clone(), layout.log_dir(), options.log_flush_interval)),
        Arc::new(Settings::new(facts.clone(), effects.clone(), events.clone(), host)),
        Arc::new(AddressWatch::new(facts.clone())),
        Arc::new(ServingCert::new(configuration.clone(), facts.clone())),
    ];
    // PID 1's services (it alone runs a kubelet).
    if let Some(kubelet) = &kubelet {
        if let Some(source) = config_url() {
            services.push(Arc::new(ConfigFromUrl::new(
                source,
                configuration.clone(),
                facts.clone(),
            )));
        }
        services.push(Arc::new(Network::new(facts.clone(), effects.clone())));
        services.push(Arc::new(PowerButton::new(power.clone())));
        services.push(Arc::new(TimeSync::new(
            facts.clone(),
            image_floor,
            layout.time_floor_path(),
        )));
        services.push(Arc::new(Watchdog));
        services.push(Arc::new(BootCheck::new(
            updater.clone(),
            facts.config.subscribe(),
            supervisor.clone(),
            Some(kubelet.clone()),
            power.clone(),
        )));
        services.push(Arc::new(containerd::service(
            layout.root().to_path_buf(),
            facts.config.subscribe(),
            reaper.clone(),
        )));
        services.push(kubelet.clone());
    }
    let node = Node::new(NodeParts {
        configuration,
        effects,
        power: power.clone(),
        updater,
        kubelet,
        supervisor: supervisor.clone(),
        events,
        logs,
        facts,
        layout,
    });
    // The API first, as ever: `ctl services` lists them in this order.
    services.insert(0, Arc::new(Apid::new(node, options.listen)));
    supervisor.start_all(services)?;

    let action = power_signal(stage).await?;
    tracing::info!("{action:?} requested by a signal");
    power.request(action);
    std::future::pending::<()>().await;
    Ok(())
}

/// The URL of the first config the kernel command line names, if it names a usable one.
fn config_url() -> Option<ConfigUrl> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    ConfigUrl::from_cmdline(&cmdline)
        .inspect_err(|e| tracing::error!("{e}; the node waits in maintenance mode"))
        .ok()
        .flatten()
}

/// Raises the clock to the highest time floor (STATE's, the image's) if it is below it;
/// returns the image's floor (the time service checks corrections against it) and the clock
/// fact to start from.
fn raise_clock_to_floor(layout: &NodeLayout) -> (Option<Floor>, Clock) {
    let read = |path: &Path| {
        Floor::read(path).unwrap_or_else(|e| {
            tracing::warn!("{e}");
            None
        })
    };
    let image_floor = read(&layout.image_time_floor_path());
    let floors: Vec<Floor> =
        [read(&layout.time_floor_path()), image_floor.clone()].into_iter().flatten().collect();
    let raised_to_floor = floor::apply_floor(&SystemClock, &floors).unwrap_or_else(|e| {
        tracing::error!("{e}");
        None
    });
    (image_floor, Clock::Unsynchronised { raised_to_floor, last_error: None })
}

/// Waits for a signal that asks to stop. As PID 1: SIGTERM and SIGPWR power off, SIGINT
/// (Ctrl-Alt-Del, which the kernel then sends instead of rebooting at once) reboots. As a
/// process: SIGTERM and SIGINT exit.
async fn power_signal(stage: Stage) -> anyhow::Result<PowerAction> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    if stage != Stage::Root {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        return Ok(PowerAction::PowerOff);
    }
    if let Err(errno) = nix::sys::reboot::set_cad_enabled(false) {
        tracing::warn!("Ctrl-Alt-Del will reboot without a clean stop: {errno}");
    }
    let mut power_failure = signal(SignalKind::from_raw(nix::libc::SIGPWR))?;
    Ok(tokio::select! {
        _ = terminate.recv() => PowerAction::PowerOff,
        _ = power_failure.recv() => PowerAction::PowerOff,
        _ = interrupt.recv() => PowerAction::Reboot,
    })
}
