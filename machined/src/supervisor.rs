//! The service supervisor: starts services, follows their state, restarts failed ones with
//! exponential backoff, and stops them on request or at shutdown.
//!
//! A service is anything that implements [`Service`]: a task inside machined (the API) or,
//! later, a child process (containerd) or the kubelet.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::events::{unix_millis, EventBus, EventKind};
use crate::logs::LogBook;

/// First delay before restarting a failed service; doubles per failure.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest delay between restarts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A service that ran this long before failing restarts without delay growth.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// How long a stop waits for a service to end.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// State changes kept per service.
const EVENTS_KEPT: usize = 10;

/// Something machined runs and supervises.
pub trait Service: Send + Sync + 'static {
    /// Its name, e.g. `apid`.
    fn id(&self) -> &'static str;

    /// Whether an operator may stop it; the API server may not (it would cut off the API).
    fn stoppable(&self) -> bool {
        true
    }

    /// Runs until `ctx.stop` is cancelled (then returns `Ok`) or it fails. It calls
    /// [`ServiceContext::ready`] once it is up.
    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>>;
}

/// What a running service gets from the supervisor.
#[derive(Clone)]
pub struct ServiceContext {
    /// Cancelled when the service must stop.
    pub stop: CancellationToken,
    /// Where the service's own log lines go (`ctl logs ID`).
    pub logs: Arc<LogBook>,
    status: Arc<Mutex<Status>>,
    events: Arc<EventBus>,
    id: &'static str,
}

impl ServiceContext {
    /// Marks the service as running.
    pub fn ready(&self) {
        transition(&self.status, &self.events, self.id, ServiceState::Running, "up");
    }

    /// Appends a line to the service's log.
    pub fn log(&self, line: impl Into<String>) {
        self.logs.push(self.id, line);
    }
}

/// A service's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    /// Started, not yet up.
    Starting,
    /// Up.
    Running,
    /// Asked to stop, not yet down.
    Stopping,
    /// Stopped on request.
    Stopped,
    /// Ended by itself without error.
    Finished,
    /// Ended with an error; restarts after a backoff.
    Failed,
}

impl ServiceState {
    /// The name shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Starting => "Starting",
            ServiceState::Running => "Running",
            ServiceState::Stopping => "Stopping",
            ServiceState::Stopped => "Stopped",
            ServiceState::Finished => "Finished",
            ServiceState::Failed => "Failed",
        }
    }
}

/// A state change.
#[derive(Debug, Clone)]
pub struct StateChange {
    /// When.
    pub unix_millis: u64,
    /// The new state.
    pub state: ServiceState,
    /// Why.
    pub message: String,
}

/// What `ctl services` shows of one service.
#[derive(Debug, Clone)]
pub struct ServiceStatus {
    /// The service's name.
    pub id: &'static str,
    /// Its state.
    pub state: ServiceState,
    /// Restarts after failures since machined started.
    pub restarts: u32,
    /// When the current state began.
    pub since_unix_millis: u64,
    /// The latest state changes, oldest first.
    pub events: Vec<StateChange>,
}

#[derive(Debug)]
struct Status {
    state: ServiceState,
    restarts: u32,
    since_unix_millis: u64,
    events: VecDeque<StateChange>,
}

/// A request the supervisor refused.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// No service has that name.
    #[error("unknown service {0:?}")]
    UnknownService(String),
    /// The service may not be stopped.
    #[error("service {0:?} cannot be stopped: it serves the API this request came through (restart it, or reboot)")]
    NotStoppable(&'static str),
    /// Start of a service that runs.
    #[error("service {0:?} is already running")]
    AlreadyRunning(&'static str),
    /// Stop of a service that does not run.
    #[error("service {0:?} is not running")]
    NotRunning(&'static str),
}

struct Entry {
    service: Arc<dyn Service>,
    status: Arc<Mutex<Status>>,
    run: Option<(CancellationToken, JoinHandle<()>)>,
}

/// Runs and tracks the node's services.
pub struct Supervisor {
    entries: Mutex<BTreeMap<&'static str, Entry>>,
    events: Arc<EventBus>,
    logs: Arc<LogBook>,
}

impl Supervisor {
    /// A supervisor with no services.
    pub fn new(events: Arc<EventBus>, logs: Arc<LogBook>) -> Self {
        Supervisor { entries: Mutex::new(BTreeMap::new()), events, logs }
    }

    /// Adds a service and starts it.
    pub fn launch(&self, service: Arc<dyn Service>) {
        let id = service.id();
        let status = Arc::new(Mutex::new(Status {
            state: ServiceState::Starting,
            restarts: 0,
            since_unix_millis: unix_millis(),
            events: VecDeque::new(),
        }));
        self.entries
            .lock()
            .expect("supervisor lock")
            .insert(id, Entry { service, status, run: None });
        self.start(id).expect("a service just added is not running");
    }

    /// Starts a stopped, finished or failed service.
    pub fn start(&self, id: &str) -> Result<(), SupervisorError> {
        let mut entries = self.entries.lock().expect("supervisor lock");
        let entry =
            entries.get_mut(id).ok_or_else(|| SupervisorError::UnknownService(id.into()))?;
        if entry.run.as_ref().is_some_and(|(_, task)| !task.is_finished()) {
            return Err(SupervisorError::AlreadyRunning(entry.service.id()));
        }
        let stop = CancellationToken::new();
        let ctx = ServiceContext {
            stop: stop.clone(),
            logs: self.logs.clone(),
            status: entry.status.clone(),
            events: self.events.clone(),
            id: entry.service.id(),
        };
        let task = tokio::spawn(supervise(entry.service.clone(), ctx));
        entry.run = Some((stop, task));
        Ok(())
    }

    /// Stops a service and waits (a bounded time) until it has ended.
    pub async fn stop(&self, id: &str) -> Result<(), SupervisorError> {
        let (stop, task) = {
            let mut entries = self.entries.lock().expect("supervisor lock");
            let entry =
                entries.get_mut(id).ok_or_else(|| SupervisorError::UnknownService(id.into()))?;
            if !entry.service.stoppable() {
                return Err(SupervisorError::NotStoppable(entry.service.id()));
            }
            match entry.run.take() {
                Some((stop, task)) if !task.is_finished() => (stop, task),
                _ => return Err(SupervisorError::NotRunning(entry.service.id())),
            }
        };
        end(stop, task).await;
        Ok(())
    }

    /// Restarts a service in the background (the caller may be served by it).
    pub fn restart(self: &Arc<Self>, id: &str) -> Result<(), SupervisorError> {
        let run = {
            let mut entries = self.entries.lock().expect("supervisor lock");
            let entry =
                entries.get_mut(id).ok_or_else(|| SupervisorError::UnknownService(id.into()))?;
            entry.run.take()
        };
        let supervisor = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Some((stop, task)) = run {
                end(stop, task).await;
            }
            if let Err(e) = supervisor.start(&id) {
                tracing::warn!("restart of {id}: {e}");
            }
        });
        Ok(())
    }

    /// Stops every service, for reboot and shutdown.
    pub async fn stop_all(&self) {
        let runs: Vec<_> = {
            let mut entries = self.entries.lock().expect("supervisor lock");
            entries.values_mut().filter_map(|e| e.run.take()).collect()
        };
        futures_util::future::join_all(runs.into_iter().map(|(stop, task)| end(stop, task))).await;
    }

    /// Every service's status, by name.
    pub fn list(&self) -> Vec<ServiceStatus> {
        let entries = self.entries.lock().expect("supervisor lock");
        entries
            .iter()
            .map(|(id, entry)| {
                let status = entry.status.lock().expect("status lock");
                ServiceStatus {
                    id,
                    state: status.state,
                    restarts: status.restarts,
                    since_unix_millis: status.since_unix_millis,
                    events: status.events.iter().cloned().collect(),
                }
            })
            .collect()
    }
}

async fn end(stop: CancellationToken, mut task: JoinHandle<()>) {
    stop.cancel();
    if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
        tracing::warn!("a service did not stop within {STOP_TIMEOUT:?}; aborting it");
        task.abort();
    }
}

/// Runs one service until it is stopped, restarting it after failures.
async fn supervise(service: Arc<dyn Service>, ctx: ServiceContext) {
    let id = service.id();
    let (status, events) = (&ctx.status, &ctx.events);
    let mut backoff = BACKOFF_START;
    loop {
        transition(status, events, id, ServiceState::Starting, "starting");
        let started = Instant::now();
        let result = service.clone().run(ctx.clone()).await;
        if ctx.stop.is_cancelled() {
            transition(status, events, id, ServiceState::Stopped, "stopped on request");
            return;
        }
        match result {
            Ok(()) => {
                transition(status, events, id, ServiceState::Finished, "exited");
                return;
            }
            Err(e) => {
                if started.elapsed() >= BACKOFF_RESET_AFTER {
                    backoff = BACKOFF_START;
                }
                let message = format!("failed: {e:#}; restarting in {}s", backoff.as_secs());
                ctx.log(&message);
                transition(status, events, id, ServiceState::Failed, message);
            }
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => {
                transition(status, events, id, ServiceState::Stopped, "stopped on request");
                return;
            }
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        status.lock().expect("status lock").restarts += 1;
    }
}

fn transition(
    status: &Mutex<Status>,
    events: &EventBus,
    id: &str,
    state: ServiceState,
    message: impl Into<String>,
) {
    let message = message.into();
    {
        let mut status = status.lock().expect("status lock");
        status.state = state;
        let now = unix_millis();
        status.since_unix_millis = now;
        if status.events.len() == EVENTS_KEPT {
            status.events.pop_front();
        }
        status.events.push_back(StateChange { unix_millis: now, state, message: message.clone() });
    }
    events.publish(EventKind::Service, format!("{id}: {} ({message})", state.as_str()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails its first run, then runs until stopped.
    struct Flaky {
        runs: AtomicU32,
    }

    impl Service for Flaky {
        fn id(&self) -> &'static str {
            "flaky"
        }

        fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
            Box::pin(async move {
                if self.runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    anyhow::bail!("first run fails");
                }
                ctx.ready();
                ctx.stop.cancelled().await;
                Ok(())
            })
        }
    }

    fn state_of(supervisor: &Supervisor) -> (ServiceState, u32) {
        let status = &supervisor.list()[0];
        (status.state, status.restarts)
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_after_failure_and_stops_on_request() {
        let supervisor = Arc::new(Supervisor::new(Default::default(), Default::default()));
        supervisor.launch(Arc::new(Flaky { runs: AtomicU32::new(0) }));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(state_of(&supervisor), (ServiceState::Failed, 0));
        tokio::time::sleep(BACKOFF_START + Duration::from_millis(10)).await;
        assert_eq!(state_of(&supervisor), (ServiceState::Running, 1));
        assert!(matches!(supervisor.start("flaky"), Err(SupervisorError::AlreadyRunning(_))));
        supervisor.stop("flaky").await.unwrap();
        assert_eq!(state_of(&supervisor).0, ServiceState::Stopped);
        assert!(matches!(supervisor.stop("flaky").await, Err(SupervisorError::NotRunning(_))));
        assert!(matches!(supervisor.stop("nope").await, Err(SupervisorError::UnknownService(_))));
        supervisor.start("flaky").unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(state_of(&supervisor).0, ServiceState::Running);
    }
}
