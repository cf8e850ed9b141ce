//! The machine: its configuration (running, staged, on trial), its mode, and the actions an
//! operator can take. The API calls into this; nothing here knows about gRPC.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_api::config::{ConfigError, MachineConfig};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::apply::{self, Action, ApplyMode, Plan, PlanError};
use crate::bootstrap_trust::BootstrapTrust;
use crate::config_store::{ConfigStore, Damage, LastKnownTrust, StoreError, Stored};
use crate::events::{EventBus, EventKind};
use crate::facts::Facts;
use crate::layout::NodeLayout;
use crate::logs::LogBook;
use crate::pki::{self, PkiError};
use crate::power::Power;
use crate::service::Supervisor;
use crate::tls::{self, TlsError};
use crate::update::Updater;

/// How long machined waits before a reboot or power-off, so the reply reaches the caller.
const POWER_GRACE: Duration = Duration::from_millis(300);
/// A service's log file on EPHEMERAL is rotated past this size (one old generation kept).
const LOG_FILE_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Whether the node has a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeMode {
    /// No config yet: TLS without client auth, a few calls only.
    Maintenance,
    /// Configured: mTLS, roles enforced.
    Configured,
    /// Configured once, but the stored config does not load: a new config is taken only
    /// from an admin of the last known client CA, or a client proving the bootstrap token.
    Recovery {
        /// Whether the node was given a bootstrap token (usable or not), so that a client
        /// without a certificate may try to prove it.
        bootstrap_token: bool,
    },
}

/// What a config apply did.
#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    /// What happened, in words.
    pub summary: String,
    /// The plan that was (or, on a dry run, would be) carried out.
    pub plan: Plan,
    /// The config now running, when it was put into effect live.
    pub running: Option<Arc<MachineConfig>>,
}

/// What a service could not put into effect of a config.
struct Effect {
    service: &'static str,
    config: Arc<MachineConfig>,
    problems: Vec<String>,
}

/// Why a config could not be applied; in every case the node is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The config is invalid.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The mode does not fit the change.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Storing the config failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The config's CA cannot issue the node's certificate.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The config's CA cannot be used for TLS.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// An anonymous client's first config came after another one.
    #[error(
        "the node was configured meanwhile; a further config needs an admin client certificate"
    )]
    AlreadyConfigured,
}

/// Reboot or power-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Restart.
    Reboot,
    /// Turn off.
    PowerOff,
}

/// When [`Machine::follow_serving_names`] issues a new certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reissue {
    /// When the names have changed.
    NamesChanged,
    /// Also when the certificate in force was dated by a clock not yet trusted (the clock
    /// is trusted now).
    ClockTrusted,
}

/// Held while a config changes, so applies, trials and reverts follow one another.
struct ConfigState {
    /// Set while a `try` config runs: the config to return to and the pending revert.
    trial: Option<(Arc<MachineConfig>, AbortHandle)>,
    /// The names the serving certificate in force carries (none in maintenance mode).
    serving_names: Vec<String>,
    /// Whether the clock was trusted when that certificate was issued.
    dated_by_trusted_clock: bool,
}

/// TLS settings for the API and the names their serving certificate carries.
struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    names: Vec<String>,
}

/// The node's state and the operations on it.
pub struct Machine {
    layout: NodeLayout,
    store: ConfigStore,
    state: Mutex<ConfigState>,
    tls: watch::Sender<Arc<rustls::ServerConfig>>,
    /// The node's facts; the running config among them (none: maintenance mode) changes
    /// only with `state` held.
    facts: Arc<Facts>,
    /// The latest [`Effect`] of each service that puts configs into effect.
    effects: watch::Sender<Vec<Effect>>,
    events: Arc<EventBus>,
    logs: Arc<LogBook>,
    supervisor: Arc<Supervisor>,
    power: Box<dyn Power>,
    bootstrap: BootstrapTrust,
    /// Set when the node started with a config that does not load (recovery mode until a
    /// config is applied).
    recovery: Option<Damage>,
    /// The kubelet, once started (only as PID 1, where containerd runs).
    kubelet: std::sync::OnceLock<Arc<crate::kubelet::Kubelet>>,
    updater: Arc<Updater>,
    /// Set once a reboot or power-off has begun: services stopping then stop for good.
    powering_down: std::sync::atomic::AtomicBool,
}

impl Machine {
    /// A machine with what STATE held at start: a running config (configured), nothing
    /// (maintenance mode), or a config that does not load (recovery mode).
    pub fn new(
        layout: NodeLayout,
        stored: Stored,
        logs: Arc<LogBook>,
        power: Box<dyn Power>,
        bootstrap: BootstrapTrust,
        updater: Arc<Updater>,
    ) -> Result<Arc<Machine>, ApplyError> {
        let (running, recovery) = match stored {
            Stored::Nothing => (None, None),
            Stored::Config(config) => (Some(config), None),
            Stored::Damaged(damage) => (None, Some(damage)),
        };
        let ServerTls { config: tls, names } =
            server_tls(running.as_deref(), recovery.as_ref(), &[])?;
        let tls = watch::channel(tls).0;
        let facts = Facts::new(running);
        let events = Arc::new(EventBus::default());
        let supervisor = Arc::new(Supervisor::new(facts.clone(), events.clone(), logs.clone()));
        Ok(Arc::new(Machine {
            store: ConfigStore::new(layout.clone()),
            layout,
            state: Mutex::new(ConfigState {
                trial: None,
                serving_names: names,
                dated_by_trusted_clock: false,
            }),
            tls,
            facts,
            effects: watch::channel(Vec::new()).0,
            events,
            logs,
            supervisor,
            power,
            bootstrap,
            recovery,
            kubelet: std::sync::OnceLock::new(),
            updater,
            powering_down: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Whether a reboot or power-off has begun.
    pub fn powering_down(&self) -> bool {
        self.powering_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Records the kubelet, for the API.
    pub fn set_kubelet(&self, kubelet: Arc<crate::kubelet::Kubelet>) {
        let _ = self.kubelet.set(kubelet);
    }

    /// The kubelet, if this machined runs one.
    pub fn kubelet(&self) -> Option<&Arc<crate::kubelet::Kubelet>> {
        self.kubelet.get()
    }

    /// The updater: the slots, updates and rollbacks.
    pub fn updater(&self) -> &Arc<Updater> {
        &self.updater
    }

    /// The node's mode.
    pub fn mode(&self) -> NodeMode {
        if self.facts.config.borrow().is_some() {
            return NodeMode::Configured;
        }
        match self.recovery {
            Some(_) => NodeMode::Recovery {
                bootstrap_token: !matches!(self.bootstrap, BootstrapTrust::FirstComer),
            },
            None => NodeMode::Maintenance,
        }
    }

    /// In recovery mode, why the stored config does not load.
    pub fn recovery_reason(&self) -> Option<&str> {
        match self.mode() {
            NodeMode::Recovery { .. } => self.recovery.as_ref().map(|d| d.reason.as_str()),
            _ => None,
        }
    }

    /// Whom a first config may come from.
    pub fn bootstrap_trust(&self) -> &BootstrapTrust {
        &self.bootstrap
    }

    /// The running config, or the staged one.
    pub fn config(&self, staged: bool) -> Result<Option<Arc<MachineConfig>>, StoreError> {
        if staged {
            return Ok(self.store.load_staged()?.map(Arc::new));
        }
        Ok(self.facts.config.borrow().clone())
    }

    /// The host name the node goes by: the config's, else the kernel's.
    pub fn hostname(&self) -> String {
        let hostname = self.facts.config.borrow().as_ref().and_then(|c| c.machine.hostname.clone());
        match hostname {
            Some(name) => name,
            None => kernel_hostname(),
        }
    }

    /// Validates `yaml` and applies it as `mode` says; on any error nothing changes.
    /// `first_config_only`: the caller was admitted because the node had no config (an
    /// anonymous maintenance-mode client), so a config that arrived meanwhile wins.
    pub fn apply(
        self: &Arc<Self>,
        yaml: &[u8],
        mode: ApplyMode,
        dry_run: bool,
        first_config_only: bool,
    ) -> Result<ApplyOutcome, ApplyError> {
        let config = Arc::new(MachineConfig::from_yaml(yaml)?);
        let mut state = self.state.lock().expect("config lock");
        let running = self.facts.config.borrow().clone();
        if first_config_only && running.is_some() {
            return Err(ApplyError::AlreadyConfigured);
        }
        let plan = apply::plan(running.as_deref(), &config, mode)?;
        // Build the TLS settings first: a CA that cannot serve must be refused before
        // anything is stored.
        let tls = self.server_tls(Some(&config))?;
        let changes = plan.changes.len();
        if dry_run {
            let summary = format!("dry run: would {} ({changes} change(s))", describe(plan.action));
            return Ok(ApplyOutcome { summary, plan, running: None });
        }
        let live = matches!(plan.action, Action::Live | Action::Try(_)).then(|| config.clone());
        let summary = match plan.action {
            Action::Live | Action::Reboot => {
                self.store.save(&config)?;
                self.store.discard_staged()?;
                if let Some((_, revert)) = state.trial.take() {
                    revert.abort();
                }
                if plan.action == Action::Live {
                    self.activate(&mut state, config, tls, "applied");
                    format!("applied ({changes} change(s))")
                } else {
                    self.events.publish(EventKind::Config, "config stored; rebooting to apply it");
                    drop(state);
                    self.power(PowerAction::Reboot);
                    format!("stored ({changes} change(s)); rebooting")
                }
            }
            Action::Stage => {
                self.store.stage(&config)?;
                self.events.publish(EventKind::Config, "config staged for the next boot");
                format!("staged for the next boot ({changes} change(s))")
            }
            Action::Try(timeout) => {
                let previous = running.expect("plan refuses try without a config");
                let previous = match state.trial.take() {
                    Some((original, revert)) => {
                        revert.abort();
                        original
                    }
                    None => previous,
                };
                let machine = self.clone();
                let revert = tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    machine.end_trial();
                });
                state.trial = Some((previous, revert.abort_handle()));
                self.activate(
                    &mut state,
                    config,
                    tls,
                    &format!("on trial for {}s", timeout.as_secs()),
                );
                format!(
                    "applied on trial ({changes} change(s)); the previous config returns in {}s",
                    timeout.as_secs()
                )
            }
        };
        Ok(ApplyOutcome { summary, plan, running: live })
    }

    /// Records what `service` could not put into effect of `config` (nothing: all of it).
    pub fn report_effect(
        &self,
        service: &'static str,
        config: &Arc<MachineConfig>,
        problems: Vec<String>,
    ) {
        self.effects.send_modify(|effects| {
            effects.retain(|e| e.service != service);
            effects.push(Effect { service, config: config.clone(), problems });
        });
    }

    /// Waits (at most `limit`) until every service that puts configs into effect and runs
    /// has reported on `config`; returns their problems as `SERVICE: what`, a line for each
    /// such service that is not running, and one for each that did not report in time. A
    /// config replaced meanwhile (a later apply, a `try` that ended) has nothing more to say.
    pub async fn effects_of(&self, config: &Arc<MachineConfig>, limit: Duration) -> Vec<String> {
        let (running, down) = self.supervisor.config_consumers();
        let reported = |effects: &Vec<Effect>, service: &str| {
            effects.iter().any(|e| e.service == service && Arc::ptr_eq(&e.config, config))
        };
        let mut effects = self.effects.subscribe();
        let mut current = self.facts.config.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(limit) => {}
            _ = effects.wait_for(|effects| running.iter().all(|s| reported(effects, s))) => {}
            _ = current.wait_for(|c| !c.as_ref().is_some_and(|c| Arc::ptr_eq(c, config))) => {
                return Vec::new();
            }
        }
        let effects = effects.borrow();
        let mut problems: Vec<String> = down
            .into_iter()
            .map(|(service, why)| format!("{service}: not running ({why}); see ctl services"))
            .collect();
        for service in running {
            match effects.iter().find(|e| e.service == service) {
                Some(e) if Arc::ptr_eq(&e.config, config) => {
                    problems.extend(e.problems.iter().map(|p| format!("{service}: {p}")))
                }
                _ => problems.push(format!(
                    "{service}: still putting the config into effect after {}s; see ctl logs {service}",
                    limit.as_secs()
                )),
            }
        }
        problems
    }

    /// Returns to the config that ran before a `try`; called by the trial's revert task.
    fn end_trial(&self) {
        let mut state = self.state.lock().expect("config lock");
        // A revert whose timer fired while a later apply held the lock was aborted too late
        // to stop it: it must leave the later trial (or config) alone.
        let ours = tokio::task::try_id();
        if state.trial.as_ref().map(|(_, revert)| revert.id()) != ours {
            return;
        }
        let Some((previous, _)) = state.trial.take() else {
            return;
        };
        match self.server_tls(Some(&previous)) {
            Ok(tls) => self.activate(&mut state, previous, tls, "restored after the trial ended"),
            Err(e) => tracing::error!("cannot restore the previous config's TLS settings: {e}"),
        }
    }

    /// Makes `config` the running config; `_locked` shows the caller holds the config lock.
    fn activate(
        &self,
        state: &mut ConfigState,
        config: Arc<MachineConfig>,
        tls: ServerTls,
        how: &str,
    ) {
        let was_maintenance = self.facts.config.send_replace(Some(config)).is_none();
        self.tls.send_replace(tls.config);
        state.serving_names = tls.names;
        state.dated_by_trusted_clock = self.facts.clock.borrow().is_trusted();
        self.events.publish(EventKind::Config, format!("config {how}"));
        if was_maintenance {
            self.events
                .publish(EventKind::Mode, "configured: the API now requires client certificates");
        }
    }

    /// Issues a new serving certificate when the names it should carry (the node's addresses
    /// and host name, which DHCP and config changes move) differ from the current one's, or
    /// `when` says so anyway. Open connections keep theirs; new ones get the new one. Returns
    /// whether it changed.
    pub fn follow_serving_names(&self, when: Reissue) -> Result<bool, ApplyError> {
        let mut state = self.state.lock().expect("config lock");
        let config = self.facts.config.borrow().clone();
        let addresses = self.facts.addresses.borrow().addresses.clone();
        let names = match (&config, &self.recovery) {
            (Some(config), _) => serving_names(config, &addresses),
            // Recovery serving from the last known node CA (names, unlike a self-signed one).
            (None, Some(_)) if !state.serving_names.is_empty() => {
                pki::node_names(&kernel_hostname(), &addresses, &[])
            }
            // A self-signed certificate stays as it is: its fingerprint is what operators pin.
            _ => return Ok(false),
        };
        let redate = when == Reissue::ClockTrusted && !state.dated_by_trusted_clock;
        if names == state.serving_names && !redate {
            return Ok(false);
        }
        let tls = server_tls(config.as_deref(), self.recovery.as_ref(), &addresses)?;
        self.events.publish(
            EventKind::Config,
            format!("serving certificate re-issued for {}", tls.names.join(", ")),
        );
        self.tls.send_replace(tls.config);
        state.serving_names = tls.names;
        state.dated_by_trusted_clock = self.facts.clock.borrow().is_trusted();
        Ok(true)
    }

    /// The TLS settings for `config` (none: maintenance or recovery mode) at the node's
    /// current addresses.
    fn server_tls(&self, config: Option<&MachineConfig>) -> Result<ServerTls, ApplyError> {
        server_tls(config, self.recovery.as_ref(), &self.facts.addresses.borrow().addresses)
    }

    /// Reboots or powers off after a short grace, stopping services and flushing logs first.
    pub fn power(self: &Arc<Self>, action: PowerAction) {
        let what = match action {
            PowerAction::Reboot => "reboot",
            PowerAction::PowerOff => "power-off",
        };
        self.events.publish(EventKind::Power, format!("{what} requested"));
        self.powering_down.store(true, std::sync::atomic::Ordering::SeqCst);
        let machine = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(POWER_GRACE).await;
            machine.supervisor.stop_all().await;
            machine.flush_logs();
            let result = match action {
                PowerAction::Reboot => machine.power.reboot(),
                PowerAction::PowerOff => machine.power.power_off(),
            };
            if let Err(e) = result {
                tracing::error!("{what} failed: {e:#}");
            }
        });
    }

    /// Appends in-memory logs to `/var/log`.
    pub fn flush_logs(&self) {
        if let Err(e) = self.logs.flush_to(&self.layout.log_dir(), LOG_FILE_MAX_BYTES) {
            tracing::warn!("flushing logs to {}: {e}", self.layout.log_dir().display());
        }
    }

    /// The API's current TLS settings; they change when the config does.
    pub fn tls(&self) -> watch::Receiver<Arc<rustls::ServerConfig>> {
        self.tls.subscribe()
    }

    /// The running config, now and whenever it changes (none: maintenance mode).
    pub fn watch_config(&self) -> watch::Receiver<Option<Arc<MachineConfig>>> {
        self.facts.config.subscribe()
    }

    /// The node's facts.
    pub fn facts(&self) -> &Arc<Facts> {
        &self.facts
    }

    /// The node's paths.
    pub fn layout(&self) -> &NodeLayout {
        &self.layout
    }

    /// The event history.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The log rings.
    pub fn logs(&self) -> &Arc<LogBook> {
        &self.logs
    }

    /// The service supervisor.
    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.supervisor
    }
}

/// The names a configured node's serving certificate carries: its host name, `addresses`
/// and the configured extra SANs.
fn serving_names(config: &MachineConfig, addresses: &[IpAddr]) -> Vec<String> {
    let machine = &config.machine;
    let hostname = machine.hostname.clone().unwrap_or_else(kernel_hostname);
    pki::node_names(&hostname, addresses, &machine.cert_sans)
}

/// The API's TLS settings for a config (none: maintenance mode, or recovery mode when the
/// stored config did not load) at `addresses`.
fn server_tls(
    config: Option<&MachineConfig>,
    recovery: Option<&Damage>,
    addresses: &[IpAddr],
) -> Result<ServerTls, ApplyError> {
    match (config, recovery) {
        (Some(config), _) => configured_tls(config, serving_names(config, addresses)),
        (None, Some(damage)) => recovery_tls(damage.trust.as_ref(), addresses),
        (None, None) => self_signed_tls("maintenance mode", addresses, None),
    }
}

/// A self-signed certificate, its fingerprint printed for the operator to pin; client
/// certificates of `client_ca` asked for (recovery), or none (maintenance).
fn self_signed_tls(
    mode: &str,
    addresses: &[IpAddr],
    client_ca: Option<&str>,
) -> Result<ServerTls, ApplyError> {
    let identity = pki::maintenance_identity(&pki::node_names(&kernel_hostname(), addresses, &[]))?;
    // The console is the one channel an operator trusts before the node is
    // configured: the fingerprint printed there lets ctl pin this certificate.
    let fingerprint = pki::fingerprint(&identity.chain[0]);
    tracing::info!(
        "{mode}: API certificate fingerprint {fingerprint} (ctl apply-config --insecure --fingerprint {fingerprint})"
    );
    let config = match client_ca {
        Some(ca) => tls::recovery(ca, identity)?,
        None => tls::maintenance(identity)?,
    };
    Ok(ServerTls { config, names: Vec::new() })
}

/// Recovery mode: client certificates of the last known client CA asked for, and a serving
/// certificate from the last known node CA, so an admin's ctl checks the node as before.
/// Whatever of the trust does not work is logged and done without: the node then serves a
/// self-signed certificate, or (no usable client CA) takes a config only with the bootstrap
/// token. Never an error over the trust: PID 1 must come up to be recovered.
fn recovery_tls(
    trust: Option<&LastKnownTrust>,
    addresses: &[IpAddr],
) -> Result<ServerTls, ApplyError> {
    let Some(trust) = trust else {
        return self_signed_tls("recovery mode", addresses, None);
    };
    let names = pki::node_names(&kernel_hostname(), addresses, &[]);
    let served = trust.node_ca.as_ref().map(|(crt, key)| {
        let identity = pki::issue_serving(crt, key, &names)?;
        Ok::<_, ApplyError>(tls::recovery(&trust.client_ca, identity)?)
    });
    match served {
        Some(Ok(config)) => return Ok(ServerTls { config, names }),
        Some(Err(e)) => tracing::error!("recovery mode: the last known CAs cannot serve ({e})"),
        None => tracing::warn!("recovery mode: no last known node CA to serve with"),
    }
    match self_signed_tls("recovery mode", addresses, Some(&trust.client_ca)) {
        Err(ApplyError::Tls(e)) => {
            tracing::error!(
                "recovery mode: the last known client CA is unusable ({e}): only a client proving the bootstrap token can give this node a config"
            );
            self_signed_tls("recovery mode", addresses, None)
        }
        other => other,
    }
}

/// Mutual TLS for `config`, serving a certificate for `names` from its node CA.
fn configured_tls(config: &MachineConfig, names: Vec<String>) -> Result<ServerTls, ApplyError> {
    let node_ca = &config.machine.node_ca;
    let key = node_ca.key.as_deref().expect("validation requires machine.nodeCa.key");
    let identity = pki::issue_serving(&node_ca.crt, key, &names)?;
    Ok(ServerTls { config: tls::mutual(&config.machine.client_ca.crt, identity)?, names })
}

/// The kernel's host name (empty when it has none readable).
pub(crate) fn kernel_hostname() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

fn describe(action: Action) -> String {
    match action {
        Action::Live => "apply it now".into(),
        Action::Reboot => "store it and reboot".into(),
        Action::Stage => "stage it for the next boot".into(),
        Action::Try(timeout) => format!("apply it on trial for {}s", timeout.as_secs()),
    }
}
