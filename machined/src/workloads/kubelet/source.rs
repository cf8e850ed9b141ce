//! Where the pods a node runs come from. Every source yields complete Pod objects; the
//! kubelet runs their union. Today: the machine config (`machine.pods`, and the pods and
//! workloads of `machine.objects`), a manifest directory on STATE (one Pod YAML per `*.yaml`
//! file, like the upstream kubelet's static pod path) and the objects applied with
//! `ctl apply -f`. A later Kubernetes API-server source (pods bound to this node) is one more
//! [`PodSource`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use cairn_api::config::objects::LocalObject;
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
    /// How many times a failed run is run again whatever the restart policy: a Job's
    /// `backoffLimit`; None for pods that follow their restart policy.
    pub restart_limit: Option<i32>,
    /// Whether a run that failed for good (an eviction) is replaced by a new one, as the
    /// controllers of Deployments, ReplicaSets, DaemonSets and StatefulSets replace their
    /// pods; false for bare pods and Jobs.
    pub replaced_when_failed: bool,
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
        Some(DesiredPod {
            source: source.into(),
            namespace,
            name,
            uid,
            pod,
            restart_limit: None,
            replaced_when_failed: false,
        })
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
        let mut desired: Vec<DesiredPod> =
            pods.filter_map(|pod| DesiredPod::new("config", pod.clone())).collect();
        let objects = config.iter().flat_map(|c| c.machine.objects.iter());
        desired.extend(pods_of(objects, "config"));
        (desired, Vec::new())
    }

    fn changed(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.config.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// The pods of `objects` (Pods, and workloads' replicas), each from `origin:KIND/NAME`.
fn pods_of<'a>(objects: impl Iterator<Item = &'a LocalObject>, origin: &str) -> Vec<DesiredPod> {
    objects
        .flat_map(|object| {
            let source = format!("{origin}:{}/{}", object.kind(), object.name());
            let (restart_limit, replaced_when_failed) =
                (object.restart_limit(), object.replaces_failed_pods());
            object.pods().into_iter().filter_map(move |pod| {
                DesiredPod::new(&source, pod).map(|pod| DesiredPod {
                    restart_limit,
                    replaced_when_failed,
                    ..pod
                })
            })
        })
        .collect()
}

/// What identifies a version of a file: a rewrite (a rename over it) changes it.
type FileStamp = (std::time::SystemTime, u64, u64);

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// The objects applied with `ctl apply -f` (see [`crate::workloads::applied`]): the pods they
/// run, and the ConfigMaps and Secrets pods read. The file is read again when it changes,
/// which is looked at every [`APPLIED_RESCAN`].
pub struct AppliedObjects {
    path: PathBuf,
    read: Arc<Mutex<ReadObjects>>,
}

/// The applied objects as last read, and which version of the file they were read from.
type ReadObjects = (Option<FileStamp>, Arc<Vec<LocalObject>>);

/// How often the applied objects' file is looked at.
const APPLIED_RESCAN: Duration = Duration::from_secs(1);

impl AppliedObjects {
    /// The objects stored at `path`.
    pub fn new(path: PathBuf) -> Self {
        AppliedObjects { path, read: Arc::default() }
    }

    /// Another handle on the same objects.
    pub fn share(&self) -> AppliedObjects {
        AppliedObjects { path: self.path.clone(), read: self.read.clone() }
    }

    /// The objects, read again if the file changed; a problem reading it, for the log (the
    /// objects read before stay).
    pub fn objects(&self) -> (Arc<Vec<LocalObject>>, Option<String>) {
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamp(&self.path);
        if now == read.0 && now.is_some() {
            return (read.1.clone(), None);
        }
        match crate::workloads::applied::read(&self.path) {
            Ok(objects) => {
                *read = (now, Arc::new(objects));
                (read.1.clone(), None)
            }
            Err(e) => (read.1.clone(), Some(e.to_string())),
        }
    }
}

impl PodSource for AppliedObjects {
    fn pods(&self) -> (Vec<DesiredPod>, Vec<String>) {
        let (objects, problem) = self.objects();
        (pods_of(objects.iter(), "applied"), problem.into_iter().collect())
    }

    fn changed(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                tokio::time::sleep(APPLIED_RESCAN).await;
                let seen = self.read.lock().unwrap_or_else(|e| e.into_inner()).0;
                if stamp(&self.path) != seen {
                    return;
                }
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
    fn applied_workloads_run_their_replicas_and_changes_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("objects.json");
        let source = AppliedObjects::new(path.clone());
        assert!(source.pods().0.is_empty(), "no file, no pods");
        let file = concat!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
            "spec: {replicas: 2, selector: {matchLabels: {app: web}},\n",
            "  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c, image: i}]}}}\n",
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: site}\n",
        );
        let documents = cairn_api::config::documents::decode(file.as_bytes(), "f.yaml").unwrap();
        crate::workloads::applied::apply(&path, &documents, None).unwrap();
        let (pods, problems) = source.share().pods();
        assert!(problems.is_empty(), "{problems:?}");
        let sources: Vec<&str> = pods.iter().map(|p| p.source.as_str()).collect();
        assert_eq!(sources, ["applied:Deployment/web", "applied:Deployment/web"]);
        assert!(pods[1].name.starts_with("web-") && pods[1].name.ends_with("-1"));
        // The Deployment replaces a pod evicted; a Job's pods have a retry limit instead.
        assert!(pods.iter().all(|p| p.replaced_when_failed && p.restart_limit.is_none()));
        assert_eq!(source.objects().0.len(), 2);
        // A broken file is reported; what was read before stays.
        std::fs::write(&path, "not json").unwrap();
        let (pods, problems) = source.pods();
        assert_eq!(pods.len(), 2);
        assert!(problems[0].contains("objects.json"), "{problems:?}");
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
            "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec: {ephemeralContainers: [{name: i, image: i}], containers: [{name: c, image: i}]}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let (pods, problems) = ManifestDir::new(dir.path().to_path_buf()).pods();
        assert_eq!(pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["good"]);
        assert_eq!(pods[0].source, "manifest:good.yaml");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("bad.yaml") && problems[0].contains("ephemeralContainers"));
    }
}
