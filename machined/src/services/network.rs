//! `network`: puts the config's network into effect at boot and at every config change, and
//! renews DHCP leases at half their time (see [`crate::network`]). Runs only as PID 1: an
//! ordinary process leaves the host's network alone.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::facts::Facts;
use crate::network::plan::Plan;
use crate::network::reconcile::NetworkState;
use crate::network::{self};
use crate::node::effects::EffectReports;
use crate::service::{self, Service, ServiceContext};

/// The network service.
pub struct Network {
    facts: Arc<Facts>,
    effects: Arc<EffectReports>,
}

impl Network {
    /// Configures the network as the running config of `facts` says, reporting to `effects`.
    pub fn new(facts: Arc<Facts>, effects: Arc<EffectReports>) -> Self {
        Network { facts, effects }
    }
}

impl Service for Network {
    fn id(&self) -> &'static str {
        "network"
    }

    fn puts_config_into_effect(&self) -> bool {
        true
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let handle = network::connect()?;
            let mut config = self.facts.config.subscribe();
            let mut state = NetworkState::default();
            let mut named = false;
            loop {
                let current = config.borrow_and_update().clone();
                // A plan that cannot be made leaves the network as it is, and says why.
                let plan = match Plan::from_config(current.as_ref().map(|c| &c.machine.network)) {
                    Ok(plan) => plan,
                    Err(problems) => {
                        for problem in &problems {
                            ctx.log(format!("PROBLEM: {problem}"));
                        }
                        if let Some(current) = &current {
                            self.effects.report(self.id(), current, problems);
                        }
                        tokio::select! {
                            _ = ctx.stop.cancelled() => return Ok(()),
                            changed = config.changed() => { changed?; continue }
                        }
                    }
                };
                // A pass can wait long (carrier, DHCP retries); a stop must not.
                let report = tokio::select! {
                    _ = ctx.stop.cancelled() => return Ok(()),
                    report = state.reconcile(&handle, &plan) => report?,
                };
                for change in &report.changes {
                    tracing::info!("network: {change}");
                    ctx.log(change.clone());
                }
                for problem in &report.problems {
                    tracing::warn!("network: {problem}");
                    ctx.log(format!("PROBLEM: {problem}"));
                }
                if let Some(current) = &current {
                    self.effects.report(self.id(), current, report.problems);
                }
                if let (false, Some(mac)) = (named, report.primary_mac) {
                    name_host(&mac);
                    named = true;
                }
                ctx.ready();
                let renewal = state.next_due();
                tokio::select! {
                    _ = ctx.stop.cancelled() => return Ok(()),
                    changed = config.changed() => changed?,
                    _ = service::until(renewal) => {}
                }
            }
        })
    }
}

/// Gives a node that has no host name `cairn-` and the last three bytes of its MAC, so nodes
/// on one network tell apart (the machine config's hostname, when applied, wins).
fn name_host(mac: &[u8; 6]) {
    let current = crate::node::config::kernel_hostname();
    if current.is_empty() || current == "(none)" || current == "localhost" {
        let name = format!("cairn-{:02x}{:02x}{:02x}", mac[3], mac[4], mac[5]);
        match nix::unistd::sethostname(&name) {
            Ok(()) => tracing::info!("host name: {name}"),
            Err(errno) => tracing::warn!("setting the host name {name}: {errno}"),
        }
    }
}
