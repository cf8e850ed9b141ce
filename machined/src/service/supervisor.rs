//! The supervisor: starts services once their dependencies hold, follows their state and
//! health, restarts failed ones with exponential back-off, and stops them on request or at
//! shutdown, dependants first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::status::Status;
use super::{Dependency, Health, Service, ServiceContext, ServiceState, ServiceStatus};
use crate::facts::Facts;
use crate::logs::events::{unix_millis, EventBus, EventKind};
use crate::logs::LogBook;

/// First delay before restarting a failed service; doubles per failure.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest delay between restarts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A service that ran this long before failing restarts without delay growth.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// How long a stop waits for a service to end before abandoning its task.
pub(super) const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a service that is not ready yet is checked: often, as what depends on it (the
/// kubelet on containerd) waits until a check passes.
const HEALTH_INTERVAL_STARTING: Duration = Duration::from_millis(250);
/// How often a ready service is checked.
const HEALTH_INTERVAL_READY: Duration = Duration::from_secs(5);
/// A health check that takes longer has failed.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// A request the supervisor refused.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// No service has that name.
    #[error("unknown service {0:?}")]
    UnknownService(String),
    /// The service may not be stopped.
    #[error("service {0:?} cannot be stopped: it serves the API this request came through (restart it, or reboot)")]
    NotStoppable(&'static str),
    /// Stop of a service others need.
    #[error("service {service:?} cannot be stopped while {dependant:?}, which depends on it, runs; stop {dependant:?} first")]
    Needed {
        /// The service asked to stop.
        service: &'static str,
        /// A running service that depends on it.
        dependant: &'static str,
    },
    /// Start of a service that runs.
    #[error("service {0:?} is already running")]
    AlreadyRunning(&'static str),
    /// Stop of a service that does not run.
    #[error("service {0:?} is not running")]
    NotRunning(&'static str),
    /// A service depends on one that does not exist.
    #[error("service {service:?} depends on {dependency:?}, which does not exist")]
    UnknownDependency {
        /// The dependant.
        service: &'static str,
        /// The missing service.
        dependency: &'static str,
    },
    /// Services depend on one another in a circle.
    #[error("services depend on one another in a circle: {}", .0.join(" -> "))]
    Cycle(Vec<&'static str>),
    /// Two services have one name.
    #[error("two services are named {0:?}")]
    Duplicate(&'static str),
    /// The services were started already.
    #[error("the services were started already")]
    AlreadyStarted,
}

/// One service's status, shared by its task, its context and the supervisor.
pub(super) struct Shared {
    pub id: &'static str,
    status: Mutex<Status>,
    /// Whether the service is ready; its dependants wait on this.
    ready: watch::Sender<bool>,
    events: Arc<EventBus>,
}

impl Shared {
    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> ServiceState {
        self.status().state
    }

    /// Enters `state`, and says so in the service's events and the machine's.
    pub fn transition(&self, state: ServiceState, message: String, now: u64) {
        self.transition_if(|_| true, state, message, now);
    }

    /// Enters `state` if the current state passes `allowed`, deciding and changing under
    /// one lock, so a late health check or readiness report cannot overwrite a stop.
    fn transition_if(
        &self,
        allowed: impl Fn(ServiceState) -> bool,
        state: ServiceState,
        message: String,
        now: u64,
    ) -> bool {
        {
            let mut status = self.status();
            if !allowed(status.state) {
                return false;
            }
            status.enter(state, message.clone(), now);
            self.ready.send_replace(state == ServiceState::Ready);
        }
        self.events
            .publish(EventKind::Service, format!("{}: {} ({message})", self.id, state.as_str()));
        true
    }

    /// Reports the service up (`Running` or `Ready`) while its run is on, once per change:
    /// services report readiness after each pass of their work; only the change is news.
    pub fn report_up(&self, state: ServiceState, message: &str) {
        let up = |current: ServiceState| current.is_up() && current != state;
        self.transition_if(up, state, message.into(), unix_millis());
    }

    fn wait_for(&self, dependency: Dependency) {
        let what = match dependency {
            Dependency::Service(id) => id,
            Dependency::Fact(fact, _) => fact.as_str(),
        };
        self.transition(ServiceState::Waiting, format!("waiting for {what}"), unix_millis());
        self.status().waiting_for = Some(dependency);
    }

    /// Records a health check's result; it moves the service between `Running` and `Ready`
    /// (only while it is up: a check that ends after a stop changes nothing).
    fn set_health(&self, health: Health) {
        let (from, to, message) = match &health {
            Health::Healthy => (ServiceState::Running, ServiceState::Ready, "healthy".to_string()),
            Health::Unhealthy(why) => {
                (ServiceState::Ready, ServiceState::Running, format!("unhealthy: {why}"))
            }
            Health::Unknown => return,
        };
        self.transition_if(|current| current == from, to, message, unix_millis());
        let mut status = self.status();
        if status.state.is_up() {
            status.health = health;
        }
    }

    fn record_exit(&self, exit: String) {
        self.status().last_exit = Some(exit);
    }
}

struct Entry {
    service: Arc<dyn Service>,
    shared: Arc<Shared>,
    run: Option<(CancellationToken, JoinHandle<()>)>,
    /// Wakes the supervising task to restart the service.
    restart: Arc<Notify>,
}

impl Entry {
    fn is_active(&self) -> bool {
        self.run.as_ref().is_some_and(|(_, task)| !task.is_finished())
    }
}

/// Every service's shared status, by name; fixed once the services are started.
type Peers = Arc<BTreeMap<&'static str, Arc<Shared>>>;

/// Runs and tracks the node's services.
pub struct Supervisor {
    entries: Mutex<BTreeMap<&'static str, Entry>>,
    peers: OnceLock<Peers>,
    facts: Arc<Facts>,
    events: Arc<EventBus>,
    logs: Arc<LogBook>,
}

impl Supervisor {
    /// A supervisor with no services; `facts` are what services' dependencies refer to.
    pub fn new(facts: Arc<Facts>, events: Arc<EventBus>, logs: Arc<LogBook>) -> Self {
        Supervisor {
            entries: Mutex::new(BTreeMap::new()),
            peers: OnceLock::new(),
            facts,
            events,
            logs,
        }
    }

    /// Registers the node's services and starts each once its dependencies hold. Refuses a
    /// set where a service depends on one not in it, or services depend on one another in a
    /// circle (they would wait forever).
    pub fn start_all(&self, services: Vec<Arc<dyn Service>>) -> Result<(), SupervisorError> {
        check_dependencies(&services)?;
        let now = unix_millis();
        let mut entries = self.lock();
        if self.peers.get().is_some() {
            return Err(SupervisorError::AlreadyStarted);
        }
        for service in services {
            let shared = Arc::new(Shared {
                id: service.id(),
                status: Mutex::new(Status::new(now)),
                ready: watch::channel(false).0,
                events: self.events.clone(),
            });
            let id = service.id();
            let entry = Entry { service, shared, run: None, restart: Arc::default() };
            if entries.insert(id, entry).is_some() {
                entries.clear();
                return Err(SupervisorError::Duplicate(id));
            }
        }
        let peers: Peers =
            Arc::new(entries.iter().map(|(id, entry)| (*id, entry.shared.clone())).collect());
        self.peers.set(peers).map_err(|_| SupervisorError::AlreadyStarted)?;
        for entry in entries.values_mut() {
            self.spawn(entry);
        }
        Ok(())
    }

    /// Starts a stopped, finished or failed service.
    pub fn start(&self, id: &str) -> Result<(), SupervisorError> {
        let mut entries = self.lock();
        let entry =
            entries.get_mut(id).ok_or_else(|| SupervisorError::UnknownService(id.into()))?;
        if entry.is_active() {
            return Err(SupervisorError::AlreadyRunning(entry.service.id()));
        }
        self.spawn(entry);
        Ok(())
    }

    fn spawn(&self, entry: &mut Entry) {
        let stop = CancellationToken::new();
        let ctx = ServiceContext {
            stop: stop.clone(),
            logs: self.logs.clone(),
            shared: entry.shared.clone(),
        };
        let peers = self.peers.get().cloned().unwrap_or_default();
        let restart = entry.restart.clone();
        let task =
            tokio::spawn(supervise(entry.service.clone(), ctx, restart, peers, self.facts.clone()));
        entry.run = Some((stop, task));
    }

    /// Stops a service and waits (a bounded time) until it has ended. A service another
    /// running service depends on is not stopped.
    pub async fn stop(&self, id: &str) -> Result<(), SupervisorError> {
        let (stop, task, shared) = {
            let mut entries = self.lock();
            let entry =
                entries.get(id).ok_or_else(|| SupervisorError::UnknownService(id.into()))?;
            let service = entry.service.id();
            if !entry.service.stoppable() {
                return Err(SupervisorError::NotStoppable(service));
            }
            if let Some(dependant) = entries.values().find(|other| {
                other.is_active()
                    && other.service.dependencies().contains(&Dependency::Service(service))
            }) {
                return Err(SupervisorError::Needed { service, dependant: dependant.service.id() });
            }
            let entry = entries.get_mut(id).expect("looked up above");
            match entry.run.take() {
                Some((stop, task)) if !task.is_finished() => {
                    entry.shared.transition(
                        ServiceState::Stopping,
                        "stop requested".into(),
                        unix_millis(),
                    );
                    (stop, task, entry.shared.clone())
                }
                _ => return Err(SupervisorError::NotRunning(service)),
            }
        };
        end(stop, task, shared).await;
        Ok(())
    }

    /// Restarts a service: its run is stopped and started again by the task that supervises
    /// it, which stays registered all along (a stop or shutdown meanwhile still finds it). A
    /// service that is not running is started. Returns at once (the caller may be served by
    /// the service).
    pub fn restart(&self, id: &str) -> Result<(), SupervisorError> {
        let mut entries = self.lock();
        let entry =
            entries.get_mut(id).ok_or_else(|| SupervisorError::UnknownService(id.into()))?;
        if entry.is_active() {
            entry.restart.notify_one();
        } else {
            self.spawn(entry);
        }
        Ok(())
    }

    /// Stops every service, for reboot and shutdown: a service stops only once every
    /// service that depends on it has.
    pub async fn stop_all(&self) {
        loop {
            let batch: Vec<_> = {
                let mut entries = self.lock();
                let active: Vec<&'static str> =
                    entries.iter().filter(|(_, e)| e.is_active()).map(|(id, _)| *id).collect();
                if active.is_empty() {
                    return;
                }
                let needed: BTreeSet<&'static str> = active
                    .iter()
                    .flat_map(|id| entries[id].service.dependencies())
                    .filter_map(|d| match d {
                        Dependency::Service(id) => Some(id),
                        Dependency::Fact(..) => None,
                    })
                    .collect();
                let mut batch: Vec<_> = active.iter().filter(|id| !needed.contains(*id)).collect();
                if batch.is_empty() {
                    // Only a circle leaves nothing free, and start_all refuses circles; never
                    // hang a shutdown over it all the same.
                    batch = active.iter().collect();
                }
                batch
                    .into_iter()
                    .filter_map(|id| {
                        let entry = entries.get_mut(id)?;
                        entry.shared.transition(
                            ServiceState::Stopping,
                            "stopping all services".into(),
                            unix_millis(),
                        );
                        let (stop, task) = entry.run.take()?;
                        Some((stop, task, entry.shared.clone()))
                    })
                    .collect()
            };
            futures_util::future::join_all(
                batch.into_iter().map(|(stop, task, shared)| end(stop, task, shared)),
            )
            .await;
        }
    }

    /// The services that put configs into effect: those up, and those not (each with its
    /// state and last exit), by name.
    pub fn config_consumers(&self) -> (Vec<&'static str>, Vec<(&'static str, String)>) {
        let entries = self.lock();
        let mut up = Vec::new();
        let mut down = Vec::new();
        for (id, entry) in entries.iter().filter(|(_, e)| e.service.puts_config_into_effect()) {
            let status = entry.shared.status();
            if status.state.is_up() {
                up.push(*id);
            } else {
                let exit = status.last_exit.as_deref().unwrap_or("no exit yet");
                down.push((*id, format!("{}, last exit: {exit}", status.state.as_str())));
            }
        }
        (up, down)
    }

    /// Every service's status, by name.
    pub fn list(&self) -> Vec<ServiceStatus> {
        let entries = self.lock();
        entries
            .iter()
            .map(|(id, entry)| {
                let status = entry.shared.status();
                let waiting_for = status.waiting_for.map(|dependency| match dependency {
                    Dependency::Service(other) => match entries.get(other) {
                        Some(other) => {
                            format!("{} ({})", other.service.id(), other.shared.state().as_str())
                        }
                        None => format!("{other} (unknown service)"),
                    },
                    Dependency::Fact(fact, _) => fact.as_str().to_string(),
                });
                ServiceStatus {
                    id,
                    state: status.state,
                    waiting_for,
                    health: status.health.clone(),
                    restarts: status.restarts,
                    last_exit: status.last_exit.clone(),
                    since_unix_millis: status.since_unix_millis,
                    events: status.events.iter().cloned().collect(),
                }
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Refuses dependencies on unknown services and circles of dependencies.
fn check_dependencies(services: &[Arc<dyn Service>]) -> Result<(), SupervisorError> {
    let needs: BTreeMap<&'static str, Vec<&'static str>> = services
        .iter()
        .map(|s| {
            let on = s
                .dependencies()
                .into_iter()
                .filter_map(|d| match d {
                    Dependency::Service(id) => Some(id),
                    Dependency::Fact(..) => None,
                })
                .collect();
            (s.id(), on)
        })
        .collect();
    for (service, on) in &needs {
        if let Some(dependency) = on.iter().find(|d| !needs.contains_key(*d)) {
            return Err(SupervisorError::UnknownDependency { service, dependency });
        }
    }
    // Depth-first search; a service met again on the current path closes a circle.
    fn visit(
        id: &'static str,
        needs: &BTreeMap<&'static str, Vec<&'static str>>,
        path: &mut Vec<&'static str>,
        done: &mut BTreeSet<&'static str>,
    ) -> Result<(), SupervisorError> {
        if let Some(start) = path.iter().position(|p| *p == id) {
            let mut circle = path[start..].to_vec();
            circle.push(id);
            return Err(SupervisorError::Cycle(circle));
        }
        if !done.insert(id) {
            return Ok(());
        }
        path.push(id);
        for next in &needs[id] {
            visit(next, needs, path, done)?;
        }
        path.pop();
        Ok(())
    }
    let mut done = BTreeSet::new();
    for id in needs.keys() {
        visit(id, &needs, &mut Vec::new(), &mut done)?;
    }
    Ok(())
}

async fn end(stop: CancellationToken, mut task: JoinHandle<()>, shared: Arc<Shared>) {
    stop.cancel();
    if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
        tracing::warn!("{} did not stop within {STOP_TIMEOUT:?}; abandoning it", shared.id);
        task.abort();
        shared.transition(
            ServiceState::Stopped,
            format!("abandoned: it did not stop within {}s", STOP_TIMEOUT.as_secs()),
            unix_millis(),
        );
    }
}

/// Waits until every dependency of `service` holds; false if it was stopped meanwhile.
async fn wait_for_dependencies(
    service: &dyn Service,
    ctx: &ServiceContext,
    peers: &Peers,
    facts: &Facts,
) -> bool {
    for dependency in service.dependencies() {
        match dependency {
            Dependency::Service(id) => {
                let Some(peer) = peers.get(id) else { continue };
                let mut ready = peer.ready.subscribe();
                if *ready.borrow() {
                    continue;
                }
                ctx.shared.wait_for(dependency);
                tokio::select! {
                    _ = ctx.stop.cancelled() => return false,
                    _ = ready.wait_for(|ready| *ready) => {}
                }
            }
            Dependency::Fact(fact, limit) => {
                if facts.holds(fact) {
                    continue;
                }
                ctx.shared.wait_for(dependency);
                tokio::select! {
                    _ = ctx.stop.cancelled() => return false,
                    held = facts.wait(fact, limit) => if !held {
                        ctx.log(format!("starting without {} after waiting {}s", fact.as_str(), limit.unwrap_or_default().as_secs()));
                    }
                }
            }
        }
    }
    true
}

/// Runs `service`'s health check while it is up, until `stop`.
async fn check_health(service: Arc<dyn Service>, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let interval = match shared.state() {
            ServiceState::Ready => HEALTH_INTERVAL_READY,
            _ => HEALTH_INTERVAL_STARTING,
        };
        if shared.state().is_up() && shared.state() != ServiceState::Starting {
            let Some(check) = service.clone().health_check() else { return };
            let health = match tokio::time::timeout(HEALTH_TIMEOUT, check).await {
                Ok(Ok(())) => Health::Healthy,
                Ok(Err(why)) => Health::Unhealthy(why),
                Err(_) => {
                    Health::Unhealthy(format!("no answer within {}s", HEALTH_TIMEOUT.as_secs()))
                }
            };
            shared.set_health(health);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Runs one service until it is stopped, restarting it after failures.
async fn supervise(
    service: Arc<dyn Service>,
    ctx: ServiceContext,
    restart: Arc<Notify>,
    peers: Peers,
    facts: Arc<Facts>,
) {
    let shared = ctx.shared.clone();
    let stopped = |shared: &Shared| {
        shared.transition(ServiceState::Stopped, "stopped on request".into(), unix_millis())
    };
    let mut backoff = BACKOFF_START;
    loop {
        tokio::select! {
            ready = wait_for_dependencies(&*service, &ctx, &peers, &facts) => {
                if !ready {
                    return stopped(&shared);
                }
            }
            // A restart while waiting asks the dependencies again.
            _ = restart.notified() => continue,
        }
        shared.transition(ServiceState::Starting, "starting".into(), unix_millis());
        let started = Instant::now();
        // Each run has its own stop, so a restart ends the run and not the supervision.
        let run_ctx = ServiceContext { stop: ctx.stop.child_token(), ..ctx.clone() };
        let health_stop = ctx.stop.child_token();
        let health =
            tokio::spawn(check_health(service.clone(), shared.clone(), health_stop.clone()));
        let mut run = service.clone().run(run_ctx.clone());
        let (result, restarting) = tokio::select! {
            result = &mut run => (result, false),
            _ = restart.notified() => {
                shared.transition(ServiceState::Stopping, "restart requested".into(), unix_millis());
                run_ctx.stop.cancel();
                match tokio::time::timeout(STOP_TIMEOUT, run).await {
                    Ok(result) => (result, true),
                    Err(_) => (Err(anyhow::anyhow!("abandoned: it did not stop within {}s", STOP_TIMEOUT.as_secs())), true),
                }
            }
        };
        health_stop.cancel();
        // Awaited, so no check still running can report on the next state.
        let _ = health.await;
        shared.record_exit(match &result {
            Ok(()) => "ended".into(),
            Err(e) => format!("{e:#}"),
        });
        if ctx.stop.is_cancelled() {
            return stopped(&shared);
        }
        if restarting {
            shared.transition(ServiceState::Stopped, "restarting".into(), unix_millis());
            backoff = BACKOFF_START;
            continue;
        }
        match result {
            Ok(()) => {
                shared.transition(ServiceState::Finished, "ended".into(), unix_millis());
                return;
            }
            Err(e) => {
                if started.elapsed() >= BACKOFF_RESET_AFTER {
                    backoff = BACKOFF_START;
                }
                let message = format!("failed: {e:#}; restarting in {}s", backoff.as_secs());
                ctx.log(&message);
                shared.transition(ServiceState::Failed, message, unix_millis());
            }
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => return stopped(&shared),
            _ = tokio::time::sleep(backoff) => {}
            // A restart asked for during the back-off starts the service now.
            _ = restart.notified() => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        shared.status().restarts += 1;
    }
}

#[cfg(test)]
mod tests;
