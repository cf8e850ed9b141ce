//! The pods the kubelet runs: listed, found by name, restarted on request.

use std::sync::Arc;

use crate::events::EventKind;
use crate::kubelet::{Kubelet, PodRecord};

use super::{Node, NodeError};

impl Node {
    /// The kubelet, or why there is none.
    fn kubelet(&self) -> Result<&Arc<Kubelet>, NodeError> {
        self.parts.kubelet.as_ref().ok_or(NodeError::NoKubelet)
    }

    /// The pods the kubelet runs, with their status.
    pub fn pods(&self) -> Result<Vec<PodRecord>, NodeError> {
        Ok(self.kubelet()?.pods())
    }

    /// The pod `name` names (`name` or `namespace/name`).
    pub fn pod(&self, name: &str) -> Result<PodRecord, NodeError> {
        self.kubelet()?.find(name).ok_or_else(|| NodeError::NoPod(name.to_string()))
    }

    /// Restarts the containers of pod `name`.
    pub fn restart_pod(&self, name: &str) -> Result<(), NodeError> {
        let key = self.pod(name)?.key;
        if !self.kubelet()?.restart(&key) {
            return Err(NodeError::PodBeingRemoved(name.to_string()));
        }
        self.events().publish(EventKind::Service, format!("pod {key}: restart requested"));
        Ok(())
    }
}
