//! `config-url`: a node in maintenance mode takes its first config from the URL on its
//! kernel command line ([`crate::config::from_url`]) once its network is up, asking again
//! with a growing pause while the server cannot be reached (or, over HTTPS, not be trusted
//! yet: the clock may still be unsynchronised). A config with another hash, or
//! one that does not validate, is reported (console, `ctl logs config-url`) and the node
//! stays in maintenance mode, reachable by `ctl` as ever.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::apply::ApplyMode;
use crate::config::from_url::{self, ConfigUrl};
use crate::facts::{Fact, Facts};
use crate::node::config::{ApplyError, Configuration};
use crate::service::{Dependency, Service, ServiceContext};

/// How long one attempt may take.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(30);
/// The first pause between attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// How taking the config ended.
enum Ended {
    /// The node has a config (this one, or one that came first).
    Configured(String),
    /// The config was refused, or cannot be had: asking again would not help.
    Refused(String),
}

/// The config-url service.
pub struct ConfigFromUrl {
    source: ConfigUrl,
    /// Whom an `https://` server's certificate must chain to.
    tls: Arc<rustls::ClientConfig>,
    configuration: Arc<Configuration>,
    facts: Arc<Facts>,
}

impl ConfigFromUrl {
    /// Takes the first config of `configuration` from `source`.
    pub fn new(source: ConfigUrl, configuration: Arc<Configuration>, facts: Arc<Facts>) -> Self {
        ConfigFromUrl { source, tls: from_url::public_ca_tls(), configuration, facts }
    }

    /// Fetches and applies the config until one attempt ends it.
    async fn take(&self, ctx: &ServiceContext) -> Ended {
        let url = &self.source.url;
        let mut pause = FIRST_PAUSE;
        loop {
            if self.facts.config.borrow().is_some() {
                return Ended::Configured(format!("the node has a config: {url} not fetched"));
            }
            let yaml = match from_url::fetch(&self.source, &self.tls, ATTEMPT_LIMIT).await {
                Ok(yaml) => yaml,
                Err(e) if e.is_final() => {
                    return Ended::Refused(format!(
                        "{url}: {e}; the node stays in maintenance mode"
                    ))
                }
                Err(e) => {
                    ctx.log(format!("{url}: {e}; asking again in {}s", pause.as_secs()));
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                    continue;
                }
            };
            let configuration = self.configuration.clone();
            let applied = tokio::task::spawn_blocking(move || {
                configuration.apply(&yaml, ApplyMode::Auto, false, true)
            })
            .await;
            return match applied {
                Ok(Ok(outcome)) => {
                    Ended::Configured(format!("config from {url}: {}", outcome.summary))
                }
                Ok(Err(ApplyError::AlreadyConfigured)) => Ended::Configured(format!(
                    "the node was configured meanwhile: {url} not applied"
                )),
                Ok(Err(e)) => Ended::Refused(format!(
                    "config from {url} refused: {e}; the node stays in maintenance mode"
                )),
                Err(e) => Ended::Refused(format!("applying the config from {url}: {e}")),
            };
        }
    }
}

impl Service for ConfigFromUrl {
    fn id(&self) -> &'static str {
        "config-url"
    }

    fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Fact(Fact::Addresses, None), Dependency::Fact(Fact::StateVolume, None)]
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            ctx.running();
            let ended = tokio::select! {
                _ = ctx.stop.cancelled() => return Ok(()),
                ended = self.take(&ctx) => ended,
            };
            match ended {
                Ended::Configured(message) => {
                    tracing::info!("{message}");
                    ctx.log(message);
                    ctx.ready();
                }
                Ended::Refused(message) => {
                    tracing::error!("{message}");
                    ctx.log(message);
                }
            }
            ctx.stop.cancelled().await;
            Ok(())
        })
    }
}
