//! The node's use-cases: what an operator can ask of a node (apply a config, upgrade, roll
//! back, power, manifests, log follows...), in plain Rust types. The API only checks roles
//! and converts its messages into calls on [`Node`], as Firecracker's `VmmAction`s are run by
//! one controller; services get the narrow handles they need instead (see `runtime`).

pub mod apply;
pub mod config;
pub mod effects;
pub mod follow;
pub mod kernel_log;
pub mod manifests;
pub mod objects;
pub mod pods;
pub mod power;
pub mod rollback;
pub mod upgrade;
pub mod version;

use std::io;
use std::sync::Arc;

use cairn_api::config::MachineConfig;

use crate::config::store::StoreError;
use crate::facts::{Clock, Facts};
use crate::files::layout::NodeLayout;
use crate::logs::events::EventBus;
use crate::logs::ring::Ring;
use crate::logs::{LogBook, LogLine};
use crate::service::{ServiceStatus, Supervisor, SupervisorError};
use crate::update::{UpdateError, Updater};
use crate::workloads::applied::AppliedError;
use crate::workloads::kubelet::manifests::ManifestError;
use crate::workloads::kubelet::Kubelet;

use self::config::{ApplyError, Configuration};
use self::effects::EffectReports;
use self::kernel_log::KernelLog;
use self::power::{PowerAction, PowerControl};

/// Why a use-case failed. The API maps each variant to a status code in one place
/// (`api::status`).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A config could not be applied; the node is unchanged.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Parsing, validating and storing a config took too long.
    #[error("the config was not processed within {0}s")]
    ApplyTimedOut(u64),
    /// The config store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The config asked for is not there.
    #[error("{}", if *.staged { "no config is staged" } else { "the node has no config" })]
    NoConfig {
        /// Whether the staged config was asked for.
        staged: bool,
    },
    /// An update or rollback failed.
    #[error(transparent)]
    Update(#[from] UpdateError),
    /// A manifest was refused or could not be written or removed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Objects were refused or could not be stored, removed or read.
    #[error(transparent)]
    Objects(#[from] AppliedError),
    /// The supervisor refused a service action.
    #[error(transparent)]
    Service(#[from] SupervisorError),
    /// Pods were asked about, and this machined runs none.
    #[error("this machined runs no kubelet (it does only as a node's PID 1, with containerd)")]
    NoKubelet,
    /// No pod of that name runs.
    #[error("no pod {0:?} runs on this node")]
    NoPod(String),
    /// The pod is on its way out.
    #[error("pod {0:?} is being removed")]
    PodBeingRemoved(String),
    /// A pod of several containers was asked for its log without naming one.
    #[error("pod {pod} has containers {containers}: name one (POD/CONTAINER)")]
    ContainerNotNamed {
        /// The pod as asked for.
        pod: String,
        /// Its containers, comma-separated.
        containers: String,
    },
    /// The pod has no container of that name.
    #[error("pod {pod} has no container {container:?}")]
    NoContainer {
        /// The pod as asked for.
        pod: String,
        /// The container asked for.
        container: String,
    },
    /// The container has no run of the kind asked for.
    #[error("container {container} of pod {pod} has no {}", if *.previous { "a previous run" } else { "run yet" })]
    NoRun {
        /// The pod as asked for.
        pod: String,
        /// The container.
        container: String,
        /// Whether the previous run was asked for.
        previous: bool,
    },
    /// No log of that id is kept.
    #[error("no logs for {0:?}")]
    NoLogs(String),
    /// A follower did not keep up with its ring.
    #[error("follower fell {0} records behind")]
    FellBehind(u64),
    /// The kernel log cannot be read.
    #[error("/dev/kmsg: {0}")]
    KernelLog(io::Error),
    /// The kernel could not say its release.
    #[error("uname: {0}")]
    Uname(nix::errno::Errno),
    /// A task that did blocking work for a use-case failed.
    #[error("{0}")]
    Task(String),
}

/// The handles the use-cases work with.
pub struct NodeParts {
    /// The configuration: apply, try, revert, mode.
    pub configuration: Arc<Configuration>,
    /// What services could not put into effect of a config.
    pub effects: Arc<EffectReports>,
    /// Reboot and power-off.
    pub power: Arc<PowerControl>,
    /// Slots, updates, rollbacks.
    pub updater: Arc<Updater>,
    /// The kubelet, when this machined runs one (only as PID 1, with containerd).
    pub kubelet: Option<Arc<Kubelet>>,
    /// The services.
    pub supervisor: Arc<Supervisor>,
    /// The event history.
    pub events: Arc<EventBus>,
    /// The log rings.
    pub logs: Arc<LogBook>,
    /// The node's typed facts.
    pub facts: Arc<Facts>,
    /// The node's paths.
    pub layout: NodeLayout,
}

/// The node, as the API sees it: each method is a use-case.
pub struct Node {
    parts: NodeParts,
    kernel_log: tokio::sync::OnceCell<Arc<KernelLog>>,
}

impl Node {
    /// The use-cases over `parts`.
    pub fn new(parts: NodeParts) -> Arc<Node> {
        Arc::new(Node { parts, kernel_log: Default::default() })
    }

    /// The configuration: mode, running and staged config, TLS settings.
    pub fn configuration(&self) -> &Arc<Configuration> {
        &self.parts.configuration
    }

    /// The running config, or the staged one; an error when there is none.
    pub fn config(&self, staged: bool) -> Result<Arc<MachineConfig>, NodeError> {
        self.parts.configuration.config(staged)?.ok_or(NodeError::NoConfig { staged })
    }

    /// The node's paths.
    pub fn layout(&self) -> &NodeLayout {
        &self.parts.layout
    }

    /// Reboots or powers off, after the reply's grace.
    pub fn power(&self, action: PowerAction) {
        self.parts.power.request(action);
    }

    /// The services and their states.
    pub fn services(&self) -> Vec<ServiceStatus> {
        self.parts.supervisor.list()
    }

    /// Starts service `id`.
    pub fn start_service(&self, id: &str) -> Result<(), NodeError> {
        Ok(self.parts.supervisor.start(id)?)
    }

    /// Stops service `id`.
    pub async fn stop_service(&self, id: &str) -> Result<(), NodeError> {
        Ok(self.parts.supervisor.stop(id).await?)
    }

    /// Restarts service `id`.
    pub fn restart_service(&self, id: &str) -> Result<(), NodeError> {
        Ok(self.parts.supervisor.restart(id)?)
    }

    /// The log ring of `id` (a service, `machined`, a pod's container...).
    pub fn log(&self, id: &str) -> Result<Arc<Ring<LogLine>>, NodeError> {
        self.parts.logs.existing(id).ok_or_else(|| NodeError::NoLogs(id.to_string()))
    }

    /// The event history.
    pub fn events(&self) -> &EventBus {
        &self.parts.events
    }

    /// The kernel log, read from its first call on.
    pub async fn kernel_log(&self) -> Result<&Arc<KernelLog>, NodeError> {
        self.kernel_log.get_or_try_init(KernelLog::start).await.map_err(NodeError::KernelLog)
    }

    /// The clock's state, and the time servers of the running config.
    pub fn time(&self) -> (Clock, Vec<String>) {
        let config = self.parts.facts.config.borrow().clone();
        let clock = self.parts.facts.clock.borrow().clone();
        (clock, crate::services::time::servers(config.as_deref()))
    }
}

/// Runs `work` on a blocking thread; a panic there is an error, not the caller's.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| NodeError::Task(e.to_string()))
}
