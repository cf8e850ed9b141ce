//! `settings`: puts the running config's host name, sysctls and files into effect at start
//! and whenever the config changes (see [`crate::config::host_settings`]).

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::config::host_settings::HostSettings;
use crate::facts::{Fact, Facts};
use crate::logs::events::{EventBus, EventKind};
use crate::node::effects::EffectReports;
use crate::service::{Service, ServiceContext};

/// The settings service.
pub struct Settings {
    facts: Arc<Facts>,
    effects: Arc<EffectReports>,
    events: Arc<EventBus>,
    host: HostSettings,
}

impl Settings {
    /// Applies the running config of `facts` with `host`, reporting to `effects` and, when
    /// a setting fails, to `events`.
    pub fn new(
        facts: Arc<Facts>,
        effects: Arc<EffectReports>,
        events: Arc<EventBus>,
        host: HostSettings,
    ) -> Self {
        Settings { facts, effects, events, host }
    }
}

impl Service for Settings {
    fn id(&self) -> &'static str {
        "settings"
    }

    fn puts_config_into_effect(&self) -> bool {
        true
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let mut config = self.facts.config.subscribe();
            ctx.ready();
            loop {
                let current = config.borrow_and_update().clone();
                if let Some(current) = current {
                    // Sysctls of modules no device loads (`net.bridge.*`, `net.netfilter.*`)
                    // exist only once they are in. Waited for here, not as a dependency: an
                    // apply must find this service running, to hear its report.
                    tokio::select! {
                        _ = ctx.stop.cancelled() => return Ok(()),
                        _ = self.facts.wait(Fact::ServiceModules, None) => {}
                    }
                    // Files go under `/var`, which a first boot may still be formatting.
                    if !current.machine.files.is_empty() && !self.facts.holds(Fact::EphemeralVolume)
                    {
                        ctx.log("files wait for EPHEMERAL (/var) to be mounted");
                        tokio::select! {
                            _ = ctx.stop.cancelled() => return Ok(()),
                            _ = self.facts.wait(Fact::EphemeralVolume, None) => {}
                        }
                    }
                    let outcomes = self.host.apply(&current.machine);
                    let mut problems = Vec::new();
                    for outcome in outcomes {
                        match outcome.result {
                            Ok(done) => ctx.log(format!("{}: {done}", outcome.setting)),
                            Err(e) => {
                                tracing::warn!("settings: {}: {e}", outcome.setting);
                                ctx.log(format!("{}: FAILED: {e}", outcome.setting));
                                problems.push(format!("{}: {e}", outcome.setting));
                            }
                        }
                    }
                    let failed = problems.len();
                    self.effects.report(self.id(), &current, problems);
                    if failed > 0 {
                        self.events.publish(
                            EventKind::Config,
                            format!(
                                "{failed} setting(s) could not be applied; see ctl logs settings"
                            ),
                        );
                    }
                }
                tokio::select! {
                    _ = ctx.stop.cancelled() => return Ok(()),
                    changed = config.changed() => changed?,
                }
            }
        })
    }
}
