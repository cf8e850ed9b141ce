//! The pods the kubelet runs: listed, found by name, restarted on request, their events and
//! their containers' log files found.

use std::path::PathBuf;
use std::sync::Arc;

use cairn_api::config::pod::DEFAULT_NAMESPACE;

use crate::logs::events::EventKind;
use crate::workloads::kubelet::events::PodEvent;
use crate::workloads::kubelet::{Kubelet, PodRecord};

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

    /// The events of pod `name` (`name`: a running pod's namespace, else the default one;
    /// or `namespace/name`), or of every pod when `name` is empty.
    pub fn pod_events(&self, name: &str) -> Result<Vec<PodEvent>, NodeError> {
        let kubelet = self.kubelet()?;
        if name.is_empty() {
            return Ok(kubelet.events(None));
        }
        let (namespace, name) = match name.split_once('/') {
            Some((namespace, name)) => (namespace.to_string(), name),
            None => match kubelet.find(name) {
                Some(record) => (record.pod.metadata.namespace.unwrap_or_default(), name),
                None => (DEFAULT_NAMESPACE.to_string(), name),
            },
        };
        Ok(kubelet.events(Some((&namespace, name))))
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

    /// The log file of `container` (empty: the only one, init containers aside) of pod `pod`: its latest run's, or
    /// with `previous` the run before.
    pub fn container_log(
        &self,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<PathBuf, NodeError> {
        log_file(&self.pod(pod)?, pod, container, previous)
    }
}

/// The log file of `container` of `record` (named `pod` by the caller), as
/// [`Node::container_log`] finds it.
fn log_file(
    record: &PodRecord,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<PathBuf, NodeError> {
    let names: Vec<&String> = record.logs.keys().collect();
    // Init containers aside, as kubectl defaults to a pod's one container.
    let spec = record.pod.spec.iter();
    let main: Vec<&str> = spec.flat_map(|s| &s.containers).map(|c| c.name.as_str()).collect();
    let container = match (container, names.as_slice(), main.as_slice()) {
        ("", [only], _) => only.as_str(),
        ("", _, [only]) => only,
        ("", _, _) => {
            let containers = names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ");
            return Err(NodeError::ContainerNotNamed { pod: pod.to_string(), containers });
        }
        (name, _, _) => name,
    };
    let no_container =
        || NodeError::NoContainer { pod: pod.to_string(), container: container.to_string() };
    let logs = record.logs.get(container).ok_or_else(no_container)?;
    let path = if previous { &logs.previous } else { &logs.current };
    path.clone().ok_or_else(|| NodeError::NoRun {
        pod: pod.to_string(),
        container: container.to_string(),
        previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::workloads::kubelet::ContainerLogs;

    fn record(containers: &[(&str, Option<&str>, Option<&str>)]) -> PodRecord {
        let logs = containers
            .iter()
            .map(|(name, current, previous)| {
                let logs = ContainerLogs {
                    current: current.map(PathBuf::from),
                    previous: previous.map(PathBuf::from),
                };
                (name.to_string(), logs)
            })
            .collect();
        PodRecord {
            key: "default/web".into(),
            source: "config".into(),
            uid: "u".into(),
            pod: Default::default(),
            logs,
        }
    }

    #[test]
    fn the_only_container_needs_no_name() {
        let web = record(&[("nginx", Some("/var/log/pods/0.log"), None)]);
        let path = log_file(&web, "web", "", false).unwrap();
        assert_eq!(path, PathBuf::from("/var/log/pods/0.log"));
    }

    #[test]
    fn of_several_containers_one_is_named() {
        let web = record(&[("a", Some("/a"), None), ("b", Some("/b"), Some("/b.1"))]);
        let e = log_file(&web, "web", "", false).unwrap_err();
        assert_eq!(e.to_string(), "pod web has containers a, b: name one (POD/CONTAINER)");
        assert_eq!(log_file(&web, "web", "b", true).unwrap(), PathBuf::from("/b.1"));
        let e = log_file(&web, "web", "c", false).unwrap_err();
        assert_eq!(e.to_string(), "pod web has no container \"c\"");
    }

    #[test]
    fn init_containers_aside_the_one_container_needs_no_name() {
        let mut batch = record(&[("first", Some("/f"), None), ("main", Some("/m"), None)]);
        batch.pod = serde_yaml::from_str(
            "spec: {initContainers: [{name: first}], containers: [{name: main}]}",
        )
        .unwrap();
        assert_eq!(log_file(&batch, "batch", "", false).unwrap(), PathBuf::from("/m"));
        assert_eq!(log_file(&batch, "batch", "first", false).unwrap(), PathBuf::from("/f"));
    }

    #[test]
    fn a_run_that_is_not_there_says_which() {
        let web = record(&[("nginx", None, None)]);
        let e = log_file(&web, "web", "", false).unwrap_err();
        assert_eq!(e.to_string(), "container nginx of pod web has no run yet");
        let e = log_file(&web, "web", "nginx", true).unwrap_err();
        assert_eq!(e.to_string(), "container nginx of pod web has no a previous run");
    }
}
