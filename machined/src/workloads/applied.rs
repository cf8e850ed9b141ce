//! The objects applied with `ctl apply -f`, kept on STATE in one file (`objects.json`, a JSON
//! list) that every apply or delete rewrites atomically: a file of documents changes all its
//! objects or none, and a power cut leaves the old list or the new one. The kubelet reads the
//! file when it changes, and again at every boot: the pods and workloads in it run with no
//! network.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cairn_api::config::documents::Documents;
use cairn_api::config::objects::LocalObject;
use cairn_api::config::{MachineConfig, Problem};

/// The most the file may hold: STATE is small (64 MiB), and every object is in memory.
pub const MAX_STORE_BYTES: usize = 8 << 20;
/// The most pods the applied objects may run: the upstream kubelet's default `maxPods`. Each
/// pod is a task and records in PID 1; a file of many workloads must not exhaust it.
pub const MAX_APPLIED_PODS: usize = 110;

/// One apply or delete at a time: each reads the file, then rewrites it.
static WRITER: Mutex<()> = Mutex::new(());

/// Why objects were not stored or removed.
#[derive(Debug, thiserror::Error)]
pub enum AppliedError {
    /// The documents are not objects the node keeps.
    #[error("{} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    /// The config defines an object of that kind and name.
    #[error("{0} is defined by the machine config; change it there")]
    InConfig(String),
    /// Two objects would run pods of one name: only one could run.
    #[error("pod {pod} would be run by both {first} and {second}; rename one")]
    PodNameTaken {
        /// The pod's `namespace/name`.
        pod: String,
        /// One object (`KIND NAME`, or `machine.pods`).
        first: String,
        /// The other.
        second: String,
    },
    /// The objects would outgrow the store.
    #[error("the applied objects would take {0} bytes; at most {MAX_STORE_BYTES} are kept")]
    TooLarge(usize),
    /// The objects would run too many pods.
    #[error("the applied objects would run {0} pods; a node runs at most {MAX_APPLIED_PODS}")]
    TooManyPods(usize),
    /// A kind `ctl get` does not know.
    #[error("{0:?} is not a kind the node keeps ({kinds})", kinds = cairn_api::config::objects::KINDS)]
    UnknownKind(String),
    /// The file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// What an apply or a delete did to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its kind.
    pub kind: String,
    /// Its namespace (empty for a Namespace).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `created`, `configured`, `unchanged`, `deleted` or `not found`.
    pub action: &'static str,
}

impl Change {
    fn of(object: &LocalObject, action: &'static str) -> Change {
        Change {
            kind: object.kind().into(),
            namespace: object.namespace().into(),
            name: object.name().into(),
            action,
        }
    }
}

/// The objects stored at `path` (none when there is no file).
pub fn read(path: &Path) -> Result<Vec<LocalObject>, AppliedError> {
    let io = |reason: String| AppliedError::Io { path: path.to_path_buf(), reason };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| io(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(e.to_string())),
    }
}

/// Stores `documents` at `path`, each replacing a stored object of the same kind and name;
/// refused whole when `config` defines one of them, or when two objects would run pods of one
/// name.
pub fn apply(
    path: &Path,
    documents: &Documents,
    config: Option<&MachineConfig>,
) -> Result<Vec<Change>, AppliedError> {
    let edit = |stored: &mut Vec<LocalObject>, object: &LocalObject| match stored
        .iter_mut()
        .find(|s| s.key() == object.key())
    {
        Some(same) if same == object => "unchanged",
        Some(same) => {
            *same = object.clone();
            "configured"
        }
        None => {
            stored.push(object.clone());
            "created"
        }
    };
    rewrite(path, documents, config, edit, |stored| check_pod_names(stored, config))
}

/// Removes the objects `documents` name (by kind and name) from `path`; refused whole when
/// `config` defines one of them (a claim of its StatefulSets too: its data is the config's).
pub fn delete(
    path: &Path,
    documents: &Documents,
    config: Option<&MachineConfig>,
) -> Result<Vec<Change>, AppliedError> {
    let edit = |stored: &mut Vec<LocalObject>, object: &LocalObject| {
        let before = stored.len();
        stored.retain(|s| s.key() != object.key());
        if stored.len() < before {
            "deleted"
        } else {
            "not found"
        }
    };
    rewrite(path, documents, config, edit, |_| Ok(()))
}

/// One apply or delete: `edit` each of `documents` into the stored objects (it says what it
/// did), `check` the result, write it. Nothing is written when the config defines one of the
/// documents or `check` refuses.
fn rewrite(
    path: &Path,
    documents: &Documents,
    config: Option<&MachineConfig>,
    edit: impl Fn(&mut Vec<LocalObject>, &LocalObject) -> &'static str,
    check: impl Fn(&[LocalObject]) -> Result<(), AppliedError>,
) -> Result<Vec<Change>, AppliedError> {
    refuse_config_defined(documents, config)?;
    let _writer = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    let mut stored = read(path)?;
    let changes = documents
        .objects
        .iter()
        .map(|object| Change::of(object, edit(&mut stored, object)))
        .collect();
    check(&stored)?;
    write(path, &stored)?;
    Ok(changes)
}

/// Refuses `documents` if `config` defines one of their objects: its objects, its pods, the
/// claims its StatefulSets make.
fn refuse_config_defined(
    documents: &Documents,
    config: Option<&MachineConfig>,
) -> Result<(), AppliedError> {
    let Some(config) = config else { return Ok(()) };
    let objects = &config.machine.objects;
    let pods = config.machine.pods.iter().map(|pod| LocalObject::Pod(pod.clone()).key());
    let claims = objects.iter().flat_map(|object| {
        let namespace = object.namespace().to_string();
        object
            .implied_claims()
            .into_iter()
            .map(move |claim| format!("PersistentVolumeClaim/{namespace}/{claim}"))
    });
    let defined: Vec<String> =
        objects.iter().map(LocalObject::key).chain(pods).chain(claims).collect();
    match documents.objects.iter().find(|o| defined.contains(&o.key())) {
        Some(object) => Err(AppliedError::InConfig(format!("{} {}", object.kind(), object.name()))),
        None => Ok(()),
    }
}

/// Refuses objects whose pods would share a name with another object's or the config's: the
/// kubelet runs one pod of a name.
fn check_pod_names(
    stored: &[LocalObject],
    config: Option<&MachineConfig>,
) -> Result<(), AppliedError> {
    let configured = config.iter().flat_map(|c| {
        let pods = c.machine.pods.iter().map(|pod| ("machine.pods".to_string(), pod.clone()));
        let objects = c.machine.objects.iter().flat_map(owned_pods);
        pods.chain(objects).collect::<Vec<_>>()
    });
    let mut owners: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for (owner, pod) in configured.chain(stored.iter().flat_map(owned_pods)) {
        let namespace =
            pod.metadata.namespace.as_deref().unwrap_or(cairn_api::config::pod::DEFAULT_NAMESPACE);
        let key = format!("{namespace}/{}", pod.metadata.name.as_deref().unwrap_or_default());
        if let Some(first) = owners.get(&key) {
            return Err(AppliedError::PodNameTaken {
                pod: key,
                first: first.clone(),
                second: owner,
            });
        }
        owners.insert(key, owner);
    }
    Ok(())
}

/// The pods `object` runs, each with the object's `KIND NAME`.
fn owned_pods(object: &LocalObject) -> Vec<(String, k8s_openapi::api::core::v1::Pod)> {
    let owner = format!("{} {}", object.kind(), object.name());
    object.pods().into_iter().map(|pod| (owner.clone(), pod)).collect()
}

fn write(path: &Path, stored: &[LocalObject]) -> Result<(), AppliedError> {
    let pods: usize = stored.iter().map(|object| object.pods().len()).sum();
    if pods > MAX_APPLIED_PODS {
        return Err(AppliedError::TooManyPods(pods));
    }
    let bytes = serde_json::to_vec(stored).expect("objects always serialize");
    if bytes.len() > MAX_STORE_BYTES {
        return Err(AppliedError::TooLarge(bytes.len()));
    }
    crate::files::durable::write_atomically(path, &bytes, 0o600)
        .map_err(|e| AppliedError::Io { path: path.to_path_buf(), reason: e.to_string() })
}

/// The kind `name` names as kubectl takes it (`configmaps`, `cm`, `Deployment`, `deploy`...).
pub fn kind_named(name: &str) -> Result<&'static str, AppliedError> {
    let lower = name.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "configmap" | "configmaps" | "cm" => "ConfigMap",
        "secret" | "secrets" => "Secret",
        "namespace" | "namespaces" | "ns" => "Namespace",
        "pod" | "pods" | "po" => "Pod",
        "deployment" | "deployments" | "deploy" => "Deployment",
        "replicaset" | "replicasets" | "rs" => "ReplicaSet",
        "daemonset" | "daemonsets" | "ds" => "DaemonSet",
        "statefulset" | "statefulsets" | "sts" => "StatefulSet",
        "job" | "jobs" => "Job",
        "persistentvolumeclaim" | "persistentvolumeclaims" | "pvc" => "PersistentVolumeClaim",
        _ => return Err(AppliedError::UnknownKind(name.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_api::config::documents;

    fn decoded(yaml: &str) -> Documents {
        documents::decode(yaml.as_bytes(), "f.yaml").unwrap()
    }

    const SITE: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site}\ndata: {a: b}\n";

    #[test]
    fn applies_report_what_they_change_and_deletes_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("objects.json");
        let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {p: q}\n";
        let both = format!("{SITE}{secret}");
        let actions = |changes: Vec<Change>| -> Vec<&'static str> {
            changes.iter().map(|c| c.action).collect()
        };
        assert_eq!(actions(apply(&path, &decoded(&both), None).unwrap()), ["created", "created"]);
        let changed = both.replace("{a: b}", "{a: c}");
        let changes = apply(&path, &decoded(&changed), None).unwrap();
        assert_eq!(actions(changes), ["configured", "unchanged"]);
        assert_eq!(read(&path).unwrap().len(), 2);
        let changes = delete(&path, &decoded(SITE), None).unwrap();
        assert_eq!(
            changes[0],
            Change {
                kind: "ConfigMap".into(),
                namespace: "default".into(),
                name: "site".into(),
                action: "deleted"
            }
        );
        assert_eq!(actions(delete(&path, &decoded(SITE), None).unwrap()), ["not found"]);
        assert_eq!(read(&path).unwrap()[0].kind(), "Secret");
    }

    #[test]
    fn what_the_config_defines_is_refused_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("objects.json");
        // Validation is not the point here; build the value directly.
        let mut config: MachineConfig = serde_yaml::from_str(
            "version: v1alpha1\nmachine:\n  clientCa: {crt: x}\n  nodeCa: {crt: x, key: y}\n",
        )
        .unwrap();
        config.machine.objects = decoded(SITE).objects;
        let refused = apply(&path, &decoded(SITE), Some(&config)).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "ConfigMap site is defined by the machine config; change it there"
        );
        assert!(!path.exists());
        // Nor deleted, a StatefulSet's claims included: their data is the config's.
        let set = concat!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec: {selector: {matchLabels: {a: b}},\n",
            "  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}},\n",
            "  volumeClaimTemplates: [{metadata: {name: rows}, spec: {resources: {requests: {storage: 1Gi}}}}]}\n",
        );
        config.machine.objects.extend(decoded(set).objects);
        let claim =
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: rows-db-0}\nspec: {}\n";
        let refused = delete(&path, &decoded(claim), Some(&config)).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "PersistentVolumeClaim rows-db-0 is defined by the machine config; change it there"
        );
        // A pod of the same name as one the config's set runs is refused too.
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: db-0}\nspec: {containers: [{name: c, image: i}]}\n";
        let refused = apply(&path, &decoded(pod), Some(&config)).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "pod default/db-0 would be run by both StatefulSet db and Pod db-0; rename one"
        );
    }

    #[test]
    fn objects_that_would_run_too_many_pods_are_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("objects.json");
        let deployment = |name: &str, replicas: usize| {
            let template =
                "{metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}";
            format!(
                "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec: \
                 {{replicas: {replicas}, selector: {{matchLabels: {{a: b}}}}, template: {template}}}\n"
            )
        };
        apply(&path, &decoded(&deployment("a", 100)), None).unwrap();
        let more = format!("{SITE}{}", deployment("b", 11));
        let refused = apply(&path, &decoded(&more), None).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "the applied objects would run 111 pods; a node runs at most 110"
        );
        assert_eq!(read(&path).unwrap().len(), 1, "nothing of the refused file is stored");
    }

    #[test]
    fn kinds_are_named_as_kubectl_names_them() {
        assert_eq!(kind_named("cm").unwrap(), "ConfigMap");
        assert_eq!(kind_named("Deployments").unwrap(), "Deployment");
        assert!(kind_named("services")
            .unwrap_err()
            .to_string()
            .starts_with("\"services\" is not a kind"));
    }
}
