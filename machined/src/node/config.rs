//! Apply config, try, revert: the node's configuration (running, staged, on trial), its
//! mode, and the serving certificate that follows both. Nothing here knows about gRPC.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use cairn_api::config::{ConfigError, MachineConfig};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::config::apply::{self, Action, ApplyMode, Plan, PlanError};
use crate::config::store::{ConfigStore, Damage, LastKnownTrust, StoreError, Stored};
use crate::facts::Facts;
use crate::files::layout::NodeLayout;
use crate::identity::bootstrap_trust::BootstrapTrust;
use crate::identity::pki::{self, PkiError};
use crate::identity::tls::{self, ClockTrust, TlsError};
use crate::logs::events::{EventBus, EventKind};
use crate::node::power::{PowerAction, PowerControl};

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

/// When [`Configuration::follow_serving_names`] issues a new certificate.
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

/// The node's configuration and the operations on it.
pub struct Configuration {
    store: ConfigStore,
    state: Mutex<ConfigState>,
    tls: watch::Sender<Arc<rustls::ServerConfig>>,
    /// The node's facts; the running config among them (none: maintenance mode) changes
    /// only with `state` held.
    facts: Arc<Facts>,
    events: Arc<EventBus>,
    /// Reboots the node when a config needs it.
    power: Arc<PowerControl>,
    bootstrap: BootstrapTrust,
    /// Set when the node started with a config that does not load (recovery mode until a
    /// config is applied).
    recovery: Option<Damage>,
    /// Whether the clock is trusted, which client certificates are checked against.
    clock: ClockTrust,
}

impl Configuration {
    /// The configuration of a node with what STATE held at start: a running config
    /// (configured), nothing (maintenance mode), or a config that does not load (recovery
    /// mode). The running config is published in `facts`.
    pub fn new(
        layout: &NodeLayout,
        stored: Stored,
        facts: Arc<Facts>,
        events: Arc<EventBus>,
        power: Arc<PowerControl>,
        bootstrap: BootstrapTrust,
    ) -> Result<Arc<Configuration>, ApplyError> {
        let (running, recovery) = match stored {
            Stored::Nothing => (None, None),
            Stored::Config(config) => (Some(config), None),
            Stored::Damaged(damage) => (None, Some(damage)),
        };
        let clock_fact = facts.clock.subscribe();
        let clock: ClockTrust = Arc::new(move || clock_fact.borrow().is_trusted());
        let ServerTls { config: tls, names } =
            server_tls(running.as_deref(), recovery.as_ref(), &[], &clock)?;
        let tls = watch::channel(tls).0;
        facts.config.send_replace(running);
        Ok(Arc::new(Configuration {
            store: ConfigStore::new(layout.clone()),
            state: Mutex::new(ConfigState {
                trial: None,
                serving_names: names,
                dated_by_trusted_clock: false,
            }),
            tls,
            facts,
            events,
            power,
            bootstrap,
            recovery,
            clock,
        }))
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
                    self.power.request(PowerAction::Reboot);
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
                let configuration = self.clone();
                let revert = tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    configuration.end_trial();
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
        let tls = server_tls(config.as_deref(), self.recovery.as_ref(), &addresses, &self.clock)?;
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
        let addresses = self.facts.addresses.borrow().addresses.clone();
        server_tls(config, self.recovery.as_ref(), &addresses, &self.clock)
    }

    /// The API's current TLS settings; they change when the config does.
    pub fn tls(&self) -> watch::Receiver<Arc<rustls::ServerConfig>> {
        self.tls.subscribe()
    }

    /// The running config, now and whenever it changes (none: maintenance mode).
    pub fn watch_config(&self) -> watch::Receiver<Option<Arc<MachineConfig>>> {
        self.facts.config.subscribe()
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
    clock: &ClockTrust,
) -> Result<ServerTls, ApplyError> {
    match (config, recovery) {
        (Some(config), _) => configured_tls(config, serving_names(config, addresses), clock),
        (None, Some(damage)) => recovery_tls(damage.trust.as_ref(), addresses, clock),
        (None, None) => self_signed_tls("maintenance mode", addresses, None, clock),
    }
}

/// A self-signed certificate, its fingerprint printed for the operator to pin; client
/// certificates of `client_ca` asked for (recovery), or none (maintenance).
fn self_signed_tls(
    mode: &str,
    addresses: &[IpAddr],
    client_ca: Option<&str>,
    clock: &ClockTrust,
) -> Result<ServerTls, ApplyError> {
    let identity = pki::maintenance_identity(&pki::node_names(&kernel_hostname(), addresses, &[]))?;
    // The console is the one channel an operator trusts before the node is
    // configured: the fingerprint printed there lets ctl pin this certificate.
    let fingerprint = pki::fingerprint(&identity.chain[0]);
    tracing::info!(
        "{mode}: API certificate fingerprint {fingerprint} (ctl apply-config --insecure --fingerprint {fingerprint})"
    );
    let config = match client_ca {
        Some(ca) => tls::recovery(ca, identity, clock)?,
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
    clock: &ClockTrust,
) -> Result<ServerTls, ApplyError> {
    let Some(trust) = trust else {
        return self_signed_tls("recovery mode", addresses, None, clock);
    };
    let names = pki::node_names(&kernel_hostname(), addresses, &[]);
    let served = trust.node_ca.as_ref().map(|(crt, key)| {
        let identity = pki::issue_serving(crt, key, &names)?;
        Ok::<_, ApplyError>(tls::recovery(&trust.client_ca, identity, clock)?)
    });
    match served {
        Some(Ok(config)) => return Ok(ServerTls { config, names }),
        Some(Err(e)) => tracing::error!("recovery mode: the last known CAs cannot serve ({e})"),
        None => tracing::warn!("recovery mode: no last known node CA to serve with"),
    }
    match self_signed_tls("recovery mode", addresses, Some(&trust.client_ca), clock) {
        Err(ApplyError::Tls(e)) => {
            tracing::error!(
                "recovery mode: the last known client CA is unusable ({e}): only a client proving the bootstrap token can give this node a config"
            );
            self_signed_tls("recovery mode", addresses, None, clock)
        }
        other => other,
    }
}

/// Mutual TLS for `config`, serving a certificate for `names` from its node CA.
fn configured_tls(
    config: &MachineConfig,
    names: Vec<String>,
    clock: &ClockTrust,
) -> Result<ServerTls, ApplyError> {
    let node_ca = &config.machine.node_ca;
    let key = node_ca.key.as_deref().expect("validation requires machine.nodeCa.key");
    let identity = pki::issue_serving(&node_ca.crt, key, &names)?;
    Ok(ServerTls { config: tls::mutual(&config.machine.client_ca.crt, identity, clock)?, names })
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use crate::config::store::tests::config_yaml;
    use crate::logs::LogBook;
    use crate::service::Supervisor;
    use crate::system::power::Power;

    /// Power that must not be used.
    struct NoPower;

    impl Power for NoPower {
        fn reboot(&self) -> anyhow::Result<()> {
            panic!("no reboot expected")
        }

        fn power_off(&self) -> anyhow::Result<()> {
            panic!("no power-off expected")
        }
    }

    /// The configuration of a node under `root` that starts with `stored`.
    fn configuration(root: &std::path::Path, stored: Stored) -> (Arc<Configuration>, Arc<Facts>) {
        let layout = NodeLayout::new(root);
        let (facts, events) = (Facts::new(None), Arc::new(EventBus::default()));
        let logs = Arc::new(LogBook::default());
        let supervisor = Arc::new(Supervisor::new(facts.clone(), events.clone(), logs.clone()));
        let power = PowerControl::new(
            events.clone(),
            supervisor,
            logs,
            layout.log_dir(),
            Box::new(NoPower),
        );
        let configuration = Configuration::new(
            &layout,
            stored,
            facts.clone(),
            events,
            power,
            BootstrapTrust::FirstComer,
        )
        .unwrap();
        (configuration, facts)
    }

    fn hostname(facts: &Facts) -> Option<String> {
        facts.config.borrow().as_ref().and_then(|c| c.machine.hostname.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn a_config_on_trial_gives_way_to_the_previous_one_when_its_time_is_up() {
        let root = tempfile::tempdir().unwrap();
        let first = MachineConfig::from_yaml(config_yaml("  hostname: first\n").as_bytes());
        let stored = Stored::Config(Arc::new(first.unwrap()));
        let (configuration, facts) = configuration(root.path(), stored);
        let trial = config_yaml("  hostname: trial\n");
        let outcome = configuration
            .apply(trial.as_bytes(), ApplyMode::Try(Duration::from_secs(30)), false, false)
            .unwrap();
        assert_eq!(outcome.plan.action, Action::Try(Duration::from_secs(30)));
        assert!(outcome.running.is_some(), "a trial runs live");
        assert_eq!(hostname(&facts).as_deref(), Some("trial"));
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(hostname(&facts).as_deref(), Some("first"));
    }

    #[tokio::test]
    async fn a_dry_run_changes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let (configuration, facts) = configuration(root.path(), Stored::Nothing);
        let yaml = config_yaml("  hostname: node\n");
        let outcome = configuration.apply(yaml.as_bytes(), ApplyMode::Auto, true, true).unwrap();
        assert!(outcome.summary.starts_with("dry run: would "), "{}", outcome.summary);
        assert!(facts.config.borrow().is_none());
        assert_eq!(configuration.mode(), NodeMode::Maintenance);
    }

    #[tokio::test]
    async fn an_anonymous_first_config_loses_to_one_that_came_meanwhile() {
        let root = tempfile::tempdir().unwrap();
        let (configuration, facts) = configuration(root.path(), Stored::Nothing);
        let yaml = config_yaml("  hostname: node\n");
        configuration.apply(yaml.as_bytes(), ApplyMode::Auto, false, true).unwrap();
        assert_eq!(configuration.mode(), NodeMode::Configured);
        assert_eq!(hostname(&facts).as_deref(), Some("node"));
        let again = configuration.apply(yaml.as_bytes(), ApplyMode::Auto, false, true);
        assert!(matches!(again, Err(ApplyError::AlreadyConfigured)), "{again:?}");
    }
}
