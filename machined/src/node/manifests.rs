//! Pod manifests written to and removed from STATE's manifest directory, each an event.

use crate::logs::events::EventKind;

use super::{Node, NodeError};

impl Node {
    /// Checks the pod `yaml` and stores it for the kubelet; returns the pod's
    /// `namespace/name`.
    pub fn apply_manifest(&self, yaml: &[u8]) -> Result<String, NodeError> {
        let config = self.configuration().config(false)?;
        let dir = self.layout().manifest_dir();
        let pod = crate::workloads::kubelet::manifests::write(&dir, yaml, config.as_deref())?;
        self.events().publish(EventKind::Config, format!("manifest of pod {pod} stored"));
        Ok(pod)
    }

    /// Removes the manifest of pod `name`; returns the pod's `namespace/name`.
    pub fn delete_manifest(&self, name: &str) -> Result<String, NodeError> {
        let pod =
            crate::workloads::kubelet::manifests::remove(&self.layout().manifest_dir(), name)?;
        self.events().publish(EventKind::Config, format!("manifest of pod {pod} removed"));
        Ok(pod)
    }
}
