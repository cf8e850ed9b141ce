//! The service runtime: what machined runs, in what order, and how it is kept running.
//!
//! A [`Service`] declares what it depends on (other services being ready, [`Fact`]s about
//! the node), how it runs (an in-process task, or a child process through
//! [`ProcessService`]) and, optionally, a health check. The [`Supervisor`] starts each
//! service once its dependencies hold, so start order follows them; restarts it with an
//! exponential back-off when it fails; runs its health check; and stops dependants before
//! what they depend on. A service whose dependency is missing or failed shows as waiting for
//! it, so `ctl services` says why it does not run.

mod process;
mod status;
mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::facts::Fact;
use crate::logs::LogBook;

pub use process::{CommandFactory, ProcessHealth, ProcessService};
pub use status::{Health, ServiceState, ServiceStatus, StateChange};
pub use supervisor::{Supervisor, SupervisorError};

/// Something a service needs before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// Another service being ready.
    Service(&'static str),
    /// A fact about the node holding; with a limit, the service starts anyway once it has
    /// waited that long (for what helps but must not block, like a synchronised clock).
    Fact(Fact, Option<Duration>),
}

/// The result of a health check: `Err` says what is wrong.
pub type HealthCheck = BoxFuture<'static, Result<(), String>>;

/// Something machined runs and supervises.
pub trait Service: Send + Sync + 'static {
    /// Its name, e.g. `apid`.
    fn id(&self) -> &'static str;

    /// Whether an operator may stop it; the API server may not (it would cut off the API).
    fn stoppable(&self) -> bool {
        true
    }

    /// Whether it puts configs into effect and reports what it could not
    /// ([`crate::node::effects::EffectReports::report`]); an apply waits for its report.
    fn puts_config_into_effect(&self) -> bool {
        false
    }

    /// What must hold before it starts; asked again before every start.
    fn dependencies(&self) -> Vec<Dependency> {
        Vec::new()
    }

    /// Runs until `ctx.stop` is cancelled (then returns `Ok`) or it fails. It calls
    /// [`ServiceContext::ready`] once it is up, or [`ServiceContext::running`] when its
    /// health check decides that.
    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>>;

    /// A check of its health, run periodically while it is up; while it fails the service is
    /// `Running` rather than `Ready`. None: it has no check.
    fn health_check(self: Arc<Self>) -> Option<HealthCheck> {
        None
    }
}

/// Waits until `deadline`, or forever when there is none: the timer branch of a service
/// loop that may have nothing due.
pub async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a running service gets from the supervisor.
#[derive(Clone)]
pub struct ServiceContext {
    /// Cancelled when the service must stop.
    pub stop: CancellationToken,
    logs: Arc<LogBook>,
    shared: Arc<supervisor::Shared>,
}

impl ServiceContext {
    /// Marks the service as up and ready (again: a no-op).
    pub fn ready(&self) {
        self.shared.report_up(ServiceState::Ready, "ready");
    }

    /// Marks the service as up, its readiness left to its health check.
    pub fn running(&self) {
        self.shared.report_up(ServiceState::Running, "running");
    }

    /// Appends a line to the service's log (`ctl logs ID`).
    pub fn log(&self, line: impl Into<String>) {
        self.logs.push(self.shared.id, line);
    }
}
