//! Where the pods a node runs come from. Every source yields complete Pod objects; the
//! kubelet runs their union. Today: the machine config (`machine.pods`) and a manifest
//! directory on STATE (one Pod YAML per `*.yaml` file, like the upstream kubelet's static pod
//! path). A later Kubernetes API-server source (pods bound to this node) is one more
//! [`PodSource`].

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use cairn_api::config::pod::DEFAULT_NAMESPACE;
use cairn_api::config::MachineConfig;

/// How often the manifest directory is read again.
const MANIFEST_RESCAN: Duration = Duration::from_secs(10);

/// A pod to run, with its identity.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPod {
    /// Which source it came from, e.g. `config` or `manifest:web.yaml`.
    pub source: String,
    /// `metadata.namespace`, `default` when absent.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// A hash of the source and the whole object, as the upstream kubelet gives static pods:
    /// any change to the pod gives a new uid, so the pod is replaced.
    pub uid: String,
    /// The object as given.
    pub pod: Pod,
}

impl DesiredPod {
    /// The pod of `source`, with its identity; None without a name (validation refuses that).
    pub fn new(source: &str, pod: Pod) -> Option<DesiredPod> {
        let name = pod.metadata.name.clone()?;
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        let mut hash = Sha256::new();
        hash.update(source.as_bytes());
        hash.update(serde_json::to_vec(&pod).expect("a Pod always serializes"));
        let digest = hash.finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let uid = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        );
        Some(DesiredPod { source: source.into(), namespace, name, uid, pod })
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One place pods come from.
pub trait PodSource: Send {
    /// The pods it holds now. Problems (an unreadable or refused manifest) are returned as
    /// messages for the kubelet's log; the pods that are fine still run.
    fn pods(&self) -> (Vec<DesiredPod>, Vec<String>);

    /// Resolves when the pods may have changed.
    fn changed(&mut self) -> BoxFuture<'_, ()>;
}

/// `machine.pods` of the running config (validated on apply).
pub struct ConfigPods {
    config: watch::Receiver<Option<std::sync::Arc<MachineConfig>>>,
}

impl ConfigPods {
    /// The pods of the config `config` carries.
    pub fn new(config: watch::Receiver<Option<std::sync::Arc<MachineConfig>>>) -> Self {
        ConfigPods { config }
    }
}

impl PodSource for ConfigPods {
    fn pods(&self) -> (Vec<DesiredPod>, Vec<String>) {
        let config = self.config.borrow().clone();
        let pods = config.iter().flat_map(|c| c.machine.pods.iter());
        (pods.filter_map(|pod| DesiredPod::new("config", pod.clone())).collect(), Vec::new())
    }

    fn changed(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.config.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// A directory of Pod manifests, one per `*.yaml` file, decoded as strictly as
/// `machine.pods`: a refused file is reported and its pod does not run.
pub struct ManifestDir {
    dir: PathBuf,
}

impl ManifestDir {
    /// The manifests in `dir` (absent: none).
    pub fn new(dir: PathBuf) -> Self {
        ManifestDir { dir }
    }
}

impl PodSource for ManifestDir {
    fn pods(&self) -> (Vec<DesiredPod>, Vec<String>) {
        let mut pods = Vec::new();
        let mut problems = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return (pods, problems) };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        paths.sort();
        for path in paths {
            let file = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let decoded = std::fs::read(&path)
                .map_err(|e| vec![format!("{}: {e}", path.display())])
                .and_then(|bytes| {
                    cairn_api::config::pod::decode_pod(&bytes, &file)
                        .map_err(|p| p.iter().map(ToString::to_string).collect())
                });
            match decoded {
                Ok(pod) => pods.extend(DesiredPod::new(&format!("manifest:{file}"), pod)),
                Err(mut refused) => problems.append(&mut refused),
            }
        }
        (pods, problems)
    }

    fn changed(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(MANIFEST_RESCAN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn any_change_to_a_pod_changes_its_uid() {
        let a = pod("metadata: {name: web}\nspec: {containers: [{name: c, image: i}]}");
        let b = pod("metadata: {name: web}\nspec: {containers: [{name: c, image: j}]}");
        let first = DesiredPod::new("config", a.clone()).unwrap();
        assert_eq!(first.namespace, "default");
        assert_eq!(first.uid, DesiredPod::new("config", a.clone()).unwrap().uid);
        assert_ne!(first.uid, DesiredPod::new("config", b).unwrap().uid);
        assert_ne!(first.uid, DesiredPod::new("manifest:web.yaml", a).unwrap().uid);
        assert_eq!(first.uid.len(), 36);
    }

    #[test]
    fn refused_manifests_are_reported_and_the_rest_run() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("good.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: good}\nspec: {containers: [{name: c, image: i}]}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("bad.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec: {initContainers: [{name: i, image: i}], containers: [{name: c, image: i}]}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let (pods, problems) = ManifestDir::new(dir.path().to_path_buf()).pods();
        assert_eq!(pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["good"]);
        assert_eq!(pods[0].source, "manifest:good.yaml");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("bad.yaml") && problems[0].contains("initContainers"));
    }
}
