//! What `ctl services` shows of a service: its state, health, restarts and last exit, and
//! the latest changes of state.

use std::collections::VecDeque;

use super::Dependency;

/// A service's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    /// Registered; waits for a dependency (which one: [`ServiceStatus::waiting_for`]).
    Waiting,
    /// Its runner was started, it is not up yet.
    Starting,
    /// Up, but not (yet) ready: its health check has not passed.
    Running,
    /// Up and ready; its dependants may start.
    Ready,
    /// Asked to stop, not yet down.
    Stopping,
    /// Stopped on request.
    Stopped,
    /// Ended by itself without error.
    Finished,
    /// Ended with an error; restarts after a back-off.
    Failed,
}

impl ServiceState {
    /// The name shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Waiting => "Waiting",
            ServiceState::Starting => "Starting",
            ServiceState::Running => "Running",
            ServiceState::Ready => "Ready",
            ServiceState::Stopping => "Stopping",
            ServiceState::Stopped => "Stopped",
            ServiceState::Finished => "Finished",
            ServiceState::Failed => "Failed",
        }
    }

    /// Whether the service's runner is alive in this state.
    pub fn is_up(self) -> bool {
        matches!(self, ServiceState::Starting | ServiceState::Running | ServiceState::Ready)
    }
}

/// What the last health check said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The service has no health check, or it has not run yet.
    Unknown,
    /// The last check passed.
    Healthy,
    /// The last check failed, and why.
    Unhealthy(String),
}

impl Health {
    /// The text shown to users: `-`, `healthy` or `unhealthy: REASON`.
    pub fn describe(&self) -> String {
        match self {
            Health::Unknown => "-".into(),
            Health::Healthy => "healthy".into(),
            Health::Unhealthy(reason) => format!("unhealthy: {reason}"),
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
    /// While waiting: what for, with that dependency's own state, e.g. `containerd (Failed)`.
    pub waiting_for: Option<String>,
    /// Its health.
    pub health: Health,
    /// Restarts after failures since machined started.
    pub restarts: u32,
    /// How its runner last ended (`exit status 1`, `killed by SIGKILL`, an error), if it has.
    pub last_exit: Option<String>,
    /// When the current state began.
    pub since_unix_millis: u64,
    /// The latest state changes, oldest first.
    pub events: Vec<StateChange>,
}

/// State changes kept per service.
const EVENTS_KEPT: usize = 10;

/// A service's status as the supervisor keeps it.
#[derive(Debug)]
pub(super) struct Status {
    pub state: ServiceState,
    pub waiting_for: Option<Dependency>,
    pub health: Health,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub since_unix_millis: u64,
    pub events: VecDeque<StateChange>,
}

impl Status {
    pub fn new(now: u64) -> Self {
        Status {
            state: ServiceState::Waiting,
            waiting_for: None,
            health: Health::Unknown,
            restarts: 0,
            last_exit: None,
            since_unix_millis: now,
            events: VecDeque::new(),
        }
    }

    /// Records a change of state.
    pub fn enter(&mut self, state: ServiceState, message: String, now: u64) {
        self.state = state;
        self.since_unix_millis = now;
        if state != ServiceState::Waiting {
            self.waiting_for = None;
        }
        if !state.is_up() {
            self.health = Health::Unknown;
        }
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(StateChange { unix_millis: now, state, message });
    }
}
