//! Machine events: what changed on the node, for `ctl events`.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::logs::ring::Ring;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The machine config was applied, staged, tried or reverted.
    Config,
    /// The API switched between maintenance and configured mode.
    Mode,
    /// A service changed state.
    Service,
    /// Reboot or shutdown.
    Power,
}

impl EventKind {
    /// The name shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Config => "config",
            EventKind::Mode => "mode",
            EventKind::Service => "service",
            EventKind::Power => "power",
        }
    }
}

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Wall-clock time.
    pub unix_millis: u64,
    /// What it is about.
    pub kind: EventKind,
    /// What happened, in words.
    pub message: String,
}

/// The node's event history and its followers.
#[derive(Debug)]
pub struct EventBus {
    ring: Ring<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus { ring: Ring::new(1000) }
    }
}

impl EventBus {
    /// Records an event (and logs it).
    pub fn publish(&self, kind: EventKind, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(kind = kind.as_str(), "{message}");
        self.ring.push(Event { unix_millis: unix_millis(), kind, message });
    }

    /// The history and its followers.
    pub fn ring(&self) -> &Ring<Event> {
        &self.ring
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
