//! What the services that put configs into effect (network, settings) could not do of each
//! config: they report here, and an apply waits for their reports to answer with them.

use std::sync::Arc;
use std::time::Duration;

use cairn_api::config::MachineConfig;
use tokio::sync::watch;

use crate::service::Supervisor;

/// What a service could not put into effect of a config.
struct Effect {
    service: &'static str,
    config: Arc<MachineConfig>,
    problems: Vec<String>,
}

/// The latest report of each service that puts configs into effect.
pub struct EffectReports {
    effects: watch::Sender<Vec<Effect>>,
    supervisor: Arc<Supervisor>,
    config: watch::Receiver<Option<Arc<MachineConfig>>>,
}

impl EffectReports {
    /// Reports on the configs `config` carries, from the services `supervisor` runs.
    pub fn new(
        supervisor: Arc<Supervisor>,
        config: watch::Receiver<Option<Arc<MachineConfig>>>,
    ) -> Arc<EffectReports> {
        Arc::new(EffectReports { effects: watch::channel(Vec::new()).0, supervisor, config })
    }

    /// Records what `service` could not put into effect of `config` (nothing: all of it).
    pub fn report(
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
    pub async fn of(&self, config: &Arc<MachineConfig>, limit: Duration) -> Vec<String> {
        let (running, down) = self.supervisor.config_consumers();
        let reported = |effects: &Vec<Effect>, service: &str| {
            effects.iter().any(|e| e.service == service && Arc::ptr_eq(&e.config, config))
        };
        let mut effects = self.effects.subscribe();
        let mut current = self.config.clone();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures_util::future::BoxFuture;

    use crate::facts::Facts;
    use crate::logs::events::EventBus;
    use crate::logs::LogBook;
    use crate::service::{Service, ServiceContext};

    /// A service that puts configs into effect and does nothing else.
    struct Applier;

    impl Service for Applier {
        fn id(&self) -> &'static str {
            "applier"
        }

        fn puts_config_into_effect(&self) -> bool {
            true
        }

        fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
            Box::pin(async move {
                ctx.ready();
                ctx.stop.cancelled().await;
                Ok(())
            })
        }
    }

    /// Reports from a running [`Applier`], with `config` running.
    async fn reports(config: &Arc<MachineConfig>) -> (Arc<EffectReports>, Arc<Facts>) {
        let facts = Facts::new(Some(config.clone()));
        let events = Arc::new(EventBus::default());
        let supervisor =
            Arc::new(Supervisor::new(facts.clone(), events, Arc::new(LogBook::default())));
        supervisor.start_all(vec![Arc::new(Applier)]).unwrap();
        while supervisor.config_consumers().0.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (EffectReports::new(supervisor, facts.config.subscribe()), facts)
    }

    fn config() -> Arc<MachineConfig> {
        // Parsed without validation: only the config's identity matters here.
        let yaml = "version: v1alpha1\nmachine:\n  clientCa: {crt: x}\n  nodeCa: {crt: y}\n";
        Arc::new(serde_yaml::from_str(yaml).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn an_apply_hears_what_the_services_could_not_do() {
        let config = config();
        let (reports, _facts) = reports(&config).await;
        reports.report("applier", &config, vec!["sysctl x: no such key".into()]);
        let problems = reports.of(&config, Duration::from_secs(15)).await;
        assert_eq!(problems, ["applier: sysctl x: no such key"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_that_does_not_report_in_time_is_named() {
        let config = config();
        let (reports, _facts) = reports(&config).await;
        let problems = reports.of(&config, Duration::from_secs(15)).await;
        assert_eq!(
            problems,
            ["applier: still putting the config into effect after 15s; see ctl logs applier"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_config_replaced_meanwhile_has_nothing_to_say() {
        let config = config();
        let (reports, facts) = reports(&config).await;
        facts.config.send_replace(Some(self::config()));
        assert!(reports.of(&config, Duration::from_secs(15)).await.is_empty());
    }
}
