//! Upgrade from a source of bundle bytes: the config's trusted keys, the install into the
//! slot not booted (progress reported phase by phase), then (unless staged) a reboot into it.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::facts::Fact;
use crate::logs::events::EventKind;
use crate::update::{Chosen, Phase, Progress, UpdateError};

use super::power::PowerAction;
use super::{blocking, Node, NodeError};

/// How long an upgrade waits for EPHEMERAL to be mounted (formatting a large one on a
/// first boot takes a while).
const EPHEMERAL_WAIT: Duration = Duration::from_secs(120);

/// How an upgrade goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpgradeOptions {
    /// Allow a version older than the running one.
    pub force: bool,
    /// Install only; do not reboot into it.
    pub stage: bool,
}

/// A step of an upgrade, as its caller is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeStep {
    /// Bytes received or written (one report per phase change and per percent).
    Progress(Progress),
    /// The new system is installed and chosen for the next boot.
    Staged(Chosen),
    /// The node reboots into it.
    Rebooting(Chosen),
}

impl Node {
    /// Refuses an upgrade the node cannot take (before its caller sends the bundle), else
    /// records that one started.
    pub fn begin_upgrade(&self) -> Result<(), NodeError> {
        self.parts.updater.slots()?;
        self.events().publish(EventKind::Power, "upgrade started");
        Ok(())
    }

    /// Installs the bundle `source` reads and reboots into it unless `options.stage`,
    /// reporting each step, or the error that ended it, on `tx`.
    pub async fn upgrade<T, E>(
        self: Arc<Self>,
        source: impl Read + Send + 'static,
        options: UpgradeOptions,
        tx: mpsc::Sender<Result<T, E>>,
    ) where
        T: From<UpgradeStep> + Send + 'static,
        E: From<NodeError> + Send + 'static,
    {
        let chosen = match self.install(source, options, tx.clone()).await {
            Ok(chosen) => chosen,
            Err(e) => {
                tracing::warn!("upgrade: {e}");
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        let _ = tx.send(Ok(UpgradeStep::Staged(chosen.clone()).into())).await;
        if !options.stage {
            let _ = tx.send(Ok(UpgradeStep::Rebooting(chosen).into())).await;
            self.power(PowerAction::Reboot);
        }
    }

    /// Installs the bundle `source` reads with the config's trusted keys, on a blocking
    /// thread, reporting its progress on `tx`.
    async fn install<T, E>(
        &self,
        source: impl Read + Send + 'static,
        options: UpgradeOptions,
        tx: mpsc::Sender<Result<T, E>>,
    ) -> Result<Chosen, NodeError>
    where
        T: From<UpgradeStep> + Send + 'static,
        E: Send + 'static,
    {
        let keys = self
            .configuration()
            .config(false)?
            .map(|c| c.machine.update.trusted_keys.clone())
            .unwrap_or_default();
        // The bundle is received on EPHEMERAL, which a first boot may still be formatting.
        if !self.parts.facts.wait(Fact::EphemeralVolume, Some(EPHEMERAL_WAIT)).await {
            return Err(NodeError::Update(UpdateError::Unavailable(
                "EPHEMERAL (/var) is not mounted: no room to receive the bundle; see ctl logs"
                    .into(),
            )));
        }
        let updater = self.parts.updater.clone();
        blocking(move || {
            let mut throttle = ProgressThrottle::default();
            let mut report = |progress: Progress| {
                if throttle.worth_telling(&progress) {
                    let _ = tx.blocking_send(Ok(UpgradeStep::Progress(progress).into()));
                }
            };
            updater.install(source, &keys, options.force, &mut report)
        })
        .await
        .map_err(|e| NodeError::Task(format!("the updater failed: {e}")))?
        .map_err(NodeError::from)
    }
}

/// Lets through one progress report per phase change and per percent: progress, not a flood.
#[derive(Debug, Default)]
struct ProgressThrottle {
    last: Option<(Phase, u64)>,
}

impl ProgressThrottle {
    /// Whether `progress` says something new.
    fn worth_telling(&mut self, progress: &Progress) -> bool {
        let now = (progress.phase, progress.done * 100 / progress.total.max(1));
        if self.last == Some(now) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use cairn_api::image::Slot;

    fn progress(phase: Phase, done: u64, total: u64) -> Progress {
        Progress { phase, version: "1.1.0".into(), slot: Slot::B, done, total }
    }

    #[test]
    fn progress_is_told_once_per_percent_and_phase() {
        let mut throttle = ProgressThrottle::default();
        let told: Vec<bool> = [
            progress(Phase::Receiving, 0, 1000),
            progress(Phase::Receiving, 5, 1000),
            progress(Phase::Receiving, 10, 1000),
            progress(Phase::Writing, 10, 1000),
            progress(Phase::Writing, 1000, 1000),
            progress(Phase::Writing, 0, 0),
        ]
        .iter()
        .map(|p| throttle.worth_telling(p))
        .collect();
        assert_eq!(told, [true, false, true, true, true, true]);
    }
}
