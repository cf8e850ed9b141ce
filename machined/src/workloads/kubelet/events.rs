//! Kubernetes-style events of the pods (Scheduled, Pulled, Created, Started, BackOff,
//! Killing, Unhealthy, FailedMount...), for `ctl get events` and `ctl describe pod`.
//!
//! As upstream's event correlator does, an event that repeats one already kept (same pod,
//! container, type, reason and message) is counted on it instead of kept again, so a crash
//! loop is one line with its count. Memory is bounded: the latest [`CAPACITY`] distinct
//! events, each message cut at [`MESSAGE_LIMIT`] bytes (the API server's limit).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::logs::events::unix_millis;

/// Distinct events kept, across all pods.
const CAPACITY: usize = 1000;

/// The longest message kept, in bytes.
const MESSAGE_LIMIT: usize = 1024;

/// Whether an event is routine or a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Routine: pulled, created, started.
    Normal,
    /// Something the user may need to act on: a failed probe, a back-off.
    Warning,
}

impl EventType {
    /// The name Kubernetes gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The pod (and container) an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Involved {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's uid: a pod replaced under the same name has another.
    pub uid: String,
    /// `spec.containers{NAME}` or `spec.initContainers{NAME}`; empty for the pod itself.
    pub field_path: String,
}

/// One event, with how often it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    /// What it is about.
    pub involved: Involved,
    /// Normal or Warning.
    pub kind: EventType,
    /// One CamelCase word, as upstream's (`BackOff`, `Unhealthy`).
    pub reason: String,
    /// What happened, in words.
    pub message: String,
    /// How many times it happened.
    pub count: u32,
    /// When it first happened (Unix milliseconds).
    pub first_unix_millis: u64,
    /// When it last happened.
    pub last_unix_millis: u64,
}

impl PodEvent {
    fn same_as(&self, other: &PodEvent) -> bool {
        (&self.involved, self.kind, &self.reason, &self.message)
            == (&other.involved, other.kind, &other.reason, &other.message)
    }
}

/// The events of every pod, shared by the kubelet's workers and the API.
#[derive(Debug, Clone, Default)]
pub struct PodEvents {
    events: Arc<Mutex<VecDeque<PodEvent>>>,
}

impl PodEvents {
    /// Records that `reason` happened to `involved`, now.
    pub fn record(&self, involved: &Involved, kind: EventType, reason: &str, message: &str) {
        self.record_at(involved, kind, reason, message, unix_millis());
    }

    fn record_at(
        &self,
        involved: &Involved,
        kind: EventType,
        reason: &str,
        message: &str,
        at: u64,
    ) {
        let mut message = message.to_string();
        if message.len() > MESSAGE_LIMIT {
            let mut end = MESSAGE_LIMIT;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let mut event = PodEvent {
            involved: involved.clone(),
            kind,
            reason: reason.to_string(),
            message,
            count: 1,
            first_unix_millis: at,
            last_unix_millis: at,
        };
        let mut events = self.events.lock().unwrap();
        if let Some(index) = events.iter().rposition(|kept| kept.same_as(&event)) {
            let earlier = events.remove(index).expect("the index was found");
            event.count = earlier.count.saturating_add(1);
            event.first_unix_millis = earlier.first_unix_millis;
        }
        if events.len() == CAPACITY {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// The events kept, oldest (by latest occurrence) first; those of one pod when
    /// `pod` names it (`namespace`, `name`).
    pub fn list(&self, pod: Option<(&str, &str)>) -> Vec<PodEvent> {
        let events = self.events.lock().unwrap();
        let about = |e: &&PodEvent| {
            pod.is_none_or(|(namespace, name)| {
                e.involved.namespace == namespace && e.involved.pod == name
            })
        };
        events.iter().filter(about).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, container: &str) -> Involved {
        Involved {
            namespace: "default".into(),
            pod: name.into(),
            uid: format!("uid-{name}"),
            field_path: format!("spec.containers{{{container}}}"),
        }
    }

    #[test]
    fn a_repeated_event_is_counted_and_moves_to_the_end() {
        let events = PodEvents::default();
        let web = pod("web", "nginx");
        events.record_at(&web, EventType::Warning, "BackOff", "back-off", 1);
        events.record_at(&web, EventType::Normal, "Started", "Started container nginx", 2);
        events.record_at(&web, EventType::Warning, "BackOff", "back-off", 3);
        let kept = events.list(None);
        assert_eq!(kept.len(), 2);
        assert_eq!((kept[0].reason.as_str(), kept[0].count), ("Started", 1));
        assert_eq!((kept[1].reason.as_str(), kept[1].count), ("BackOff", 2));
        assert_eq!((kept[1].first_unix_millis, kept[1].last_unix_millis), (1, 3));
        // The same reason with another message, or of another pod, is another event.
        events.record_at(&web, EventType::Warning, "BackOff", "back-off 20s", 4);
        events.record_at(&pod("db", "nginx"), EventType::Warning, "BackOff", "back-off", 5);
        assert_eq!(events.list(None).len(), 4);
        assert_eq!(events.list(Some(("default", "db"))).len(), 1);
        assert!(events.list(Some(("other", "db"))).is_empty());
    }

    #[test]
    fn memory_is_bounded_in_events_and_message_length() {
        let events = PodEvents::default();
        let web = pod("web", "nginx");
        for n in 0..CAPACITY + 10 {
            events.record_at(&web, EventType::Normal, "Pulled", &format!("image {n}"), n as u64);
        }
        let kept = events.list(None);
        assert_eq!(kept.len(), CAPACITY);
        assert_eq!(kept[0].message, "image 10");
        events.record_at(&web, EventType::Warning, "Failed", &"é".repeat(MESSAGE_LIMIT), 0);
        let long = events.list(None).pop().unwrap();
        assert!(long.message.len() <= MESSAGE_LIMIT && long.message.len() > MESSAGE_LIMIT - 2);
    }
}
