//! Applying a config as an operator asks: parsed, planned and stored off the async workers
//! under a deadline, then (for a live change) the services' reports on putting it into
//! effect.

use std::time::Duration;

use crate::config::apply::{ApplyMode, Plan};

use super::{blocking, Node, NodeError};

/// How long parsing, validating and storing a config may take.
const APPLY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an apply waits for the services to put a live change into effect, so its reply
/// can say what failed.
const EFFECT_WAIT: Duration = Duration::from_secs(15);

/// What an apply did, for its caller.
#[derive(Debug)]
pub struct ApplyReport {
    /// What happened, in words.
    pub summary: String,
    /// The plan that was (or, on a dry run, would be) carried out.
    pub plan: Plan,
    /// What the services could not put into effect of a live change.
    pub problems: Vec<String>,
}

/// How a config is to be applied.
#[derive(Debug, Clone, Copy)]
pub struct ApplyRequest {
    /// Live, with a reboot, staged or on trial (or whichever fits).
    pub mode: ApplyMode,
    /// Only say what would happen.
    pub dry_run: bool,
    /// The caller was admitted because the node had no config (an anonymous
    /// maintenance-mode client), so a config that arrived meanwhile wins.
    pub first_config_only: bool,
}

impl Node {
    /// Validates `yaml` and applies it as `request` says; on any error nothing changes.
    pub async fn apply_config(
        &self,
        yaml: Vec<u8>,
        request: ApplyRequest,
    ) -> Result<ApplyReport, NodeError> {
        // The YAML comes from the network (from anyone, in maintenance mode).
        let configuration = self.configuration().clone();
        let work = blocking(move || {
            configuration.apply(&yaml, request.mode, request.dry_run, request.first_config_only)
        });
        let outcome = tokio::time::timeout(APPLY_TIMEOUT, work)
            .await
            .map_err(|_| NodeError::ApplyTimedOut(APPLY_TIMEOUT.as_secs()))???;
        let problems = match &outcome.running {
            Some(config) => self.parts.effects.of(config, EFFECT_WAIT).await,
            None => Vec::new(),
        };
        Ok(ApplyReport { summary: outcome.summary, plan: outcome.plan, problems })
    }
}
