//! Kubernetes objects a node keeps: in its config (`machine.objects`) and applied with
//! `ctl apply -f`. ConfigMaps and Secrets, which pods read as volumes and variables; Pods; and
//! workloads (Deployments, ReplicaSets, DaemonSets, StatefulSets), whose pod template the node
//! runs itself, as their controllers would on a cluster of this one node; Namespaces, kept so
//! that files creating them apply. They are decoded as strictly as `machine.pods`: a field
//! Kubernetes does not know, or one Cairn does not honour, is refused with its path; names,
//! keys and sizes follow the API server's rules.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod,
    PodTemplateSpec, Secret, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml::Value;
use sha2::{Digest, Sha256};

use super::pod::Supported::{Each, Elsewhere, Whole};
use super::pod::{check_fields, check_pod, is_object_name, Supported, DEFAULT_NAMESPACE};
use super::validate::{Checker, Problem};

/// The annotation `kubectl apply` records an object's last applied form in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The most data one object holds, as the API server limits it (etcd's value size).
pub const MAX_OBJECT_BYTES: usize = 1 << 20;

/// The most pods one workload runs, and the config's pods and objects together: the upstream
/// kubelet's default `maxPods`.
pub const MAX_REPLICAS: i32 = 110;

/// One object a node keeps, by its `kind`.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalObject {
    /// A ConfigMap (`apiVersion: v1`).
    ConfigMap(ConfigMap),
    /// A Secret (`apiVersion: v1`).
    Secret(Secret),
    /// A Namespace (`apiVersion: v1`): kept, and nothing more (namespaces need no creating).
    Namespace(Namespace),
    /// A PersistentVolumeClaim (`apiVersion: v1`): a directory of the node's, which pods
    /// mount and which outlives them.
    PersistentVolumeClaim(PersistentVolumeClaim),
    /// A Pod (`apiVersion: v1`).
    Pod(Pod),
    /// A Deployment (`apiVersion: apps/v1`): its replicas, replaced when its template changes.
    Deployment(Deployment),
    /// A ReplicaSet (`apiVersion: apps/v1`): its replicas.
    ReplicaSet(ReplicaSet),
    /// A DaemonSet (`apiVersion: apps/v1`): one pod, this node being the cluster.
    DaemonSet(DaemonSet),
    /// A StatefulSet (`apiVersion: apps/v1`): its ordinal pods, `NAME-0`, `NAME-1`...
    StatefulSet(StatefulSet),
    /// A Job (`apiVersion: batch/v1`): one pod, run to completion once, its failures run
    /// again up to `backoffLimit` times.
    Job(Job),
}

/// Applies `$body` to the object inside any variant, bound to `$object`.
macro_rules! each_kind {
    ($value:expr, $object:ident => $body:expr) => {
        match $value {
            LocalObject::ConfigMap($object) => $body,
            LocalObject::Secret($object) => $body,
            LocalObject::Namespace($object) => $body,
            LocalObject::PersistentVolumeClaim($object) => $body,
            LocalObject::Pod($object) => $body,
            LocalObject::Deployment($object) => $body,
            LocalObject::ReplicaSet($object) => $body,
            LocalObject::DaemonSet($object) => $body,
            LocalObject::StatefulSet($object) => $body,
            LocalObject::Job($object) => $body,
        }
    };
}

/// The kinds a node keeps, for messages.
pub const KINDS: &str = "ConfigMap, Secret, Namespace, PersistentVolumeClaim, Pod, Deployment, \
                         ReplicaSet, DaemonSet, StatefulSet, Job";

/// Reads `value` as a `T`; an error names the field that does not fit (`metadata.annotations.
/// revision: invalid type: integer `2`, expected a string`).
fn read<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| match e.path().to_string().as_str() {
        "." => e.inner().to_string(),
        path => format!("{path}: {}", e.inner()),
    })
}

impl LocalObject {
    /// Reads one object by its `kind`; an error for a kind a node does not keep.
    pub fn from_value(value: Value) -> Result<LocalObject, String> {
        let kind = value.get("kind").and_then(Value::as_str).map(str::to_string);
        let version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        if matches!(version, "extensions/v1beta1" | "apps/v1beta1" | "apps/v1beta2") {
            return Err(format!(
                "apiVersion {version} was removed in Kubernetes 1.16: apps/v1 replaces it \
                 (where spec.selector is required)"
            ));
        }
        match kind.as_deref() {
            Some("ConfigMap") => read(value).map(LocalObject::ConfigMap),
            Some("Secret") => read(value).map(LocalObject::Secret),
            Some("Namespace") => read(value).map(LocalObject::Namespace),
            Some("PersistentVolumeClaim") => read(value).map(LocalObject::PersistentVolumeClaim),
            Some("Pod") => read(value).map(LocalObject::Pod),
            Some("Deployment") => read(value).map(LocalObject::Deployment),
            Some("ReplicaSet") => read(value).map(LocalObject::ReplicaSet),
            Some("DaemonSet") => read(value).map(LocalObject::DaemonSet),
            Some("StatefulSet") => read(value).map(LocalObject::StatefulSet),
            Some("Job") => read(value).map(LocalObject::Job),
            Some(other) => Err(format!("kind {other:?} is not one a node keeps ({KINDS})")),
            None => Err(format!("kind is required ({KINDS})")),
        }
    }

    /// `kind`, as written.
    pub fn kind(&self) -> &'static str {
        match self {
            LocalObject::ConfigMap(_) => "ConfigMap",
            LocalObject::Secret(_) => "Secret",
            LocalObject::Namespace(_) => "Namespace",
            LocalObject::PersistentVolumeClaim(_) => "PersistentVolumeClaim",
            LocalObject::Pod(_) => "Pod",
            LocalObject::Deployment(_) => "Deployment",
            LocalObject::ReplicaSet(_) => "ReplicaSet",
            LocalObject::DaemonSet(_) => "DaemonSet",
            LocalObject::StatefulSet(_) => "StatefulSet",
            LocalObject::Job(_) => "Job",
        }
    }

    /// Its metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        each_kind!(self, object => &object.metadata)
    }

    /// `metadata.namespace`, [`DEFAULT_NAMESPACE`] when absent; empty for a Namespace, which
    /// belongs to none.
    pub fn namespace(&self) -> &str {
        match self {
            LocalObject::Namespace(_) => "",
            _ => self.metadata().namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
        }
    }

    /// `metadata.name` (required: validation refuses an object without one).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// `KIND/NAMESPACE/NAME`: what identifies it among the objects of a node.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.kind(), self.namespace(), self.name())
    }

    /// The fields Cairn keeps of this kind (a Pod's are the pods' own).
    fn supported(&self) -> Option<&'static Supported> {
        match self {
            LocalObject::ConfigMap(_) => Some(&CONFIG_MAP),
            LocalObject::Secret(_) => Some(&SECRET),
            LocalObject::Namespace(_) => Some(&NAMESPACE),
            LocalObject::PersistentVolumeClaim(_) => Some(&CLAIM),
            LocalObject::Pod(_) => None,
            LocalObject::Deployment(_) => Some(&DEPLOYMENT),
            LocalObject::ReplicaSet(_) => Some(&REPLICA_SET),
            LocalObject::DaemonSet(_) => Some(&DAEMON_SET),
            LocalObject::StatefulSet(_) => Some(&STATEFUL_SET),
            LocalObject::Job(_) => Some(&JOB),
        }
    }

    /// The object's keys and the size of each value.
    fn entries(&self) -> Vec<(&str, usize)> {
        fn sizes<V>(
            map: &Option<BTreeMap<String, V>>,
            size: fn(&V) -> usize,
        ) -> Vec<(&str, usize)> {
            map.iter().flatten().map(|(k, v)| (k.as_str(), size(v))).collect()
        }
        let text = |v: &String| v.len();
        let bytes = |v: &k8s_openapi::ByteString| v.0.len();
        match self {
            LocalObject::ConfigMap(map) => {
                [sizes(&map.data, text), sizes(&map.binary_data, bytes)].concat()
            }
            LocalObject::Secret(secret) => {
                [sizes(&secret.data, bytes), sizes(&secret.string_data, text)].concat()
            }
            _ => Vec::new(),
        }
    }

    /// A workload's pod template, selector (a Job's is optional) and replicas; None for other
    /// kinds.
    fn workload(&self) -> Option<(&PodTemplateSpec, Option<&LabelSelector>, i32)> {
        let spec = |replicas: Option<i32>| replicas.unwrap_or(1);
        match self {
            LocalObject::Deployment(d) => {
                d.spec.as_ref().map(|s| (&s.template, Some(&s.selector), spec(s.replicas)))
            }
            LocalObject::ReplicaSet(r) => r
                .spec
                .as_ref()
                .and_then(|s| Some((s.template.as_ref()?, Some(&s.selector), spec(s.replicas)))),
            LocalObject::DaemonSet(d) => {
                d.spec.as_ref().map(|s| (&s.template, Some(&s.selector), 1))
            }
            LocalObject::StatefulSet(s) => {
                s.spec.as_ref().map(|s| (&s.template, Some(&s.selector), spec(s.replicas)))
            }
            LocalObject::Job(j) => j.spec.as_ref().map(|s| (&s.template, s.selector.as_ref(), 1)),
            _ => None,
        }
    }

    /// The pods this object runs on a node: a Pod itself; a workload's template as many times
    /// as it has replicas (once for a DaemonSet), named as its controller names them but
    /// without randomness: a Deployment's `NAME-HASH-N` (HASH of its template, also its
    /// `pod-template-hash` label), a ReplicaSet's and a DaemonSet's `NAME-N`, a StatefulSet's
    /// `NAME-N` with that host name, a Job's `NAME-HASH` (five digits) labelled `job-name`.
    /// None for objects that run no pod.
    pub fn pods(&self) -> Vec<Pod> {
        if let LocalObject::Pod(pod) = self {
            return vec![pod.clone()];
        }
        let Some((template, _, replicas)) = self.workload() else { return Vec::new() };
        let hash = template_hash(template);
        (0..replicas.clamp(0, MAX_REPLICAS))
            .map(|ordinal| {
                let mut metadata = template.metadata.clone().unwrap_or_default();
                let mut labels = metadata.labels.take().unwrap_or_default();
                let name = match self {
                    LocalObject::Job(_) => {
                        labels.insert("job-name".into(), self.name().to_string());
                        format!("{}-{}", self.name(), &hash[..5])
                    }
                    LocalObject::Deployment(_) => {
                        labels.insert("pod-template-hash".into(), hash.clone());
                        format!("{}-{hash}-{ordinal}", self.name())
                    }
                    LocalObject::StatefulSet(_) => {
                        let name = format!("{}-{ordinal}", self.name());
                        labels.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
                        name
                    }
                    _ => format!("{}-{ordinal}", self.name()),
                };
                let mut spec = template.spec.clone().unwrap_or_default();
                if let LocalObject::StatefulSet(set) = self {
                    spec.hostname.get_or_insert_with(|| name.clone());
                    // Each claim template is a volume of that name, bound to the pod's own
                    // claim, as the StatefulSet controller makes them: it replaces a volume
                    // of the template's that has the name.
                    let volumes = spec.volumes.get_or_insert_with(Vec::new);
                    for (volume, claim) in claim_names(set, ordinal) {
                        volumes.retain(|v| v.name != volume);
                        volumes.push(Volume {
                            name: volume,
                            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                                claim_name: claim,
                                read_only: None,
                            }),
                            ..Default::default()
                        });
                    }
                }
                Pod {
                    metadata: ObjectMeta {
                        name: Some(name),
                        namespace: Some(self.namespace().to_string()),
                        labels: Some(labels).filter(|l| !l.is_empty()),
                        annotations: metadata.annotations.take(),
                        ..Default::default()
                    },
                    spec: Some(spec),
                    status: None,
                }
            })
            .collect()
    }
}

/// The claims of a StatefulSet's pod `ordinal`: for each claim template, the volume's name and
/// the claim's (`TEMPLATE-SET-ORDINAL`, as upstream names them).
pub fn claim_names(set: &StatefulSet, ordinal: i32) -> Vec<(String, String)> {
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let templates = set.spec.iter().flat_map(|s| s.volume_claim_templates.iter().flatten());
    templates
        .map(|template| {
            let volume = template.metadata.name.clone().unwrap_or_default();
            let claim = format!("{volume}-{set_name}-{ordinal}");
            (volume, claim)
        })
        .collect()
}

impl LocalObject {
    /// The claims this object makes of itself: a StatefulSet's, one per claim template and
    /// ordinal (`TEMPLATE-SET-N`); none for other kinds.
    pub fn implied_claims(&self) -> Vec<String> {
        let LocalObject::StatefulSet(set) = self else { return Vec::new() };
        let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        (0..replicas.clamp(0, MAX_REPLICAS))
            .flat_map(|ordinal| claim_names(set, ordinal).into_iter().map(|(_, claim)| claim))
            .collect()
    }

    /// How many times a failed run of this object's pods is run again: a Job's
    /// `backoffLimit` (6 by default); None for objects whose pods follow their restart policy.
    pub fn restart_limit(&self) -> Option<i32> {
        let LocalObject::Job(job) = self else { return None };
        Some(job.spec.as_ref().and_then(|s| s.backoff_limit).unwrap_or(6))
    }

    /// Whether this object's controller keeps its replicas running, so that a pod of its that
    /// failed for good (evicted) is replaced by a new one: a Deployment's, a ReplicaSet's, a
    /// DaemonSet's or a StatefulSet's; not a bare Pod's or a Job's.
    pub fn replaces_failed_pods(&self) -> bool {
        matches!(
            self,
            LocalObject::Deployment(_)
                | LocalObject::ReplicaSet(_)
                | LocalObject::DaemonSet(_)
                | LocalObject::StatefulSet(_)
        )
    }
}

/// Ten hex digits of a hash of a pod template: a Deployment's pods change names with it.
fn template_hash(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).expect("a pod template always serializes");
    Sha256::digest(bytes)[..5].iter().map(|b| format!("{b:02x}")).collect()
}

impl Serialize for LocalObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        each_kind!(self, object => object.serialize(serializer))
    }
}

impl<'de> Deserialize<'de> for LocalObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        LocalObject::from_value(Value::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Object metadata, as kept (in [`CONFIG_MAP`] and [`SECRET`]).
const METADATA: Supported = Supported::Fields(
    &[("name", Whole), ("namespace", Whole), ("labels", Whole), ("annotations", Whole)],
    "",
);

/// The fields of a ConfigMap Cairn keeps.
static CONFIG_MAP: Supported = Supported::Fields(
    &[
        ("apiVersion", Whole),
        ("kind", Whole),
        ("metadata", METADATA),
        ("data", Whole),
        ("binaryData", Whole),
        ("immutable", Whole),
    ],
    "",
);

/// The fields of a Secret Cairn keeps.
static SECRET: Supported = Supported::Fields(
    &[
        ("apiVersion", Whole),
        ("kind", Whole),
        ("metadata", METADATA),
        ("type", Whole),
        ("data", Whole),
        ("stringData", Whole),
        ("immutable", Whole),
    ],
    "",
);

/// The fields of a Namespace Cairn keeps.
static NAMESPACE: Supported =
    Supported::Fields(&[("apiVersion", Whole), ("kind", Whole), ("metadata", METADATA)], "");

/// The fields of an object of a kind with a `spec`, whose fields are given.
macro_rules! with_spec {
    ($($field:literal => $supported:expr),* $(,)?) => {
        Supported::Fields(
            &[
                ("apiVersion", Whole),
                ("kind", Whole),
                ("metadata", METADATA),
                ("spec", Supported::Fields(&[$(($field, $supported)),*], "")),
            ],
            "",
        )
    };
}

/// The fields of a Deployment Cairn honours (its `template` is checked as a pod). Its
/// `strategy` is read as Recreate: one node has no room to surge, so a changed template
/// replaces the pods.
static DEPLOYMENT: Supported = with_spec!(
    "selector" => Whole,
    "template" => Elsewhere,
    "minReadySeconds" => Whole,
    "replicas" => Whole,
    "strategy" => Whole,
    "revisionHistoryLimit" => Whole,
    "progressDeadlineSeconds" => Whole,
);
/// The fields of a ReplicaSet Cairn honours.
static REPLICA_SET: Supported = with_spec!(
    "selector" => Whole,
    "template" => Elsewhere,
    "minReadySeconds" => Whole,
    "replicas" => Whole,
);
/// The fields of a DaemonSet Cairn honours.
static DAEMON_SET: Supported = with_spec!(
    "selector" => Whole,
    "template" => Elsewhere,
    "minReadySeconds" => Whole,
    "updateStrategy" => Whole,
    "revisionHistoryLimit" => Whole,
);
/// The fields of a StatefulSet Cairn honours. Its claims outlive it, as upstream's default
/// retention (`whenDeleted: Retain`) keeps them.
static STATEFUL_SET: Supported = with_spec!(
    "selector" => Whole,
    "template" => Elsewhere,
    "minReadySeconds" => Whole,
    "replicas" => Whole,
    "serviceName" => Whole,
    "podManagementPolicy" => Whole,
    "updateStrategy" => Whole,
    "revisionHistoryLimit" => Whole,
    "volumeClaimTemplates" => Each(&CLAIM),
);
/// The fields of a Job Cairn honours: one pod at a time, to one completion.
static JOB: Supported = with_spec!(
    "template" => Elsewhere,
    "selector" => Whole,
    "manualSelector" => Whole,
    "backoffLimit" => Whole,
    "completions" => Whole,
    "parallelism" => Whole,
);
/// The fields of a PersistentVolumeClaim (or a claim template) Cairn honours. A claim is a
/// directory on EPHEMERAL: its requested size is kept, not enforced (a directory has no
/// quota), and every access mode is granted (the node is the only node).
static CLAIM: Supported = with_spec!(
    "accessModes" => Whole,
    "resources" => Whole,
    "storageClassName" => Whole,
    "volumeMode" => Whole,
);

/// Why `key` cannot be a key of a ConfigMap or a Secret (a file name in their volumes), as the
/// API server checks it; None when it can.
pub fn key_problem(key: &str) -> Option<String> {
    let allowed = |ch: char| ch.is_ascii_alphanumeric() || "-._".contains(ch);
    if key.is_empty() || key.len() > 253 || !key.chars().all(allowed) {
        Some(format!("{key:?} is not a key (1-253 letters, digits, '-', '_' and '.')"))
    } else if key == "." || key.starts_with("..") {
        Some(format!("{key:?} is not a key (it may not be '.' or start with '..')"))
    } else {
        None
    }
}

/// Whether `name` is a DNS subdomain in lower case, as ConfigMaps and Secrets are named.
pub fn is_subdomain_name(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_object_name)
}

/// Checks `objects` (written as `written`, by index, to find fields Kubernetes does not
/// know); `paths` names each (`machine.objects[0]`, `web.yaml[2]`).
pub(super) fn check_objects(
    c: &mut Checker,
    objects: &[LocalObject],
    written: &[Value],
    paths: &[String],
) {
    let mut seen = HashSet::new();
    for (i, object) in objects.iter().enumerate() {
        let at = &paths[i];
        let written = written.get(i);
        check_object(c, object, written, at);
        c.check(seen.insert(object.key()), format!("{at}.metadata.name"), || {
            let (kind, name) = (object.kind(), object.name());
            match object.namespace() {
                "" => format!("{kind} {name} is defined more than once"),
                namespace => format!("{kind} {namespace}/{name} is defined more than once"),
            }
        });
    }
}

/// Every problem of one object at `at`.
fn check_object(c: &mut Checker, object: &LocalObject, written: Option<&Value>, at: &str) {
    if let LocalObject::Pod(pod) = object {
        return check_pod(c, pod, written, at);
    }
    match (serde_yaml::to_value(object), object.supported()) {
        (Ok(read), Some(supported)) => {
            check_fields(c, written.unwrap_or(&read), &read, supported, at)
        }
        (Err(e), _) => c.fail(at, format!("cannot be checked: {e}")),
        (_, None) => {}
    }
    let meta = object.metadata();
    match &meta.name {
        Some(name) => c.check(is_subdomain_name(name), format!("{at}.metadata.name"), || {
            format!("{name:?} is not a DNS subdomain (lower-case letters, digits, '-', '.')")
        }),
        None => c.fail(format!("{at}.metadata.name"), "is required"),
    }
    if let Some(namespace) = &meta.namespace {
        c.check(is_object_name(namespace), format!("{at}.metadata.namespace"), || {
            format!("{namespace:?} is not a DNS label (1-63 lower-case letters, digits, '-')")
        });
    }
    let entries = object.entries();
    let mut keys = HashSet::new();
    for (key, _) in &entries {
        if let Some(problem) = key_problem(key) {
            c.fail(format!("{at}.data.{key:?}"), problem);
        }
        // A Secret's stringData overrides its data by design; a ConfigMap's two maps may not
        // share a key.
        if let LocalObject::ConfigMap(_) = object {
            c.check(keys.insert(*key), format!("{at}.binaryData.{key:?}"), || {
                "is also a key of data".to_string()
            });
        }
    }
    let bytes: usize = entries.iter().map(|(key, size)| key.len() + size).sum();
    c.check(bytes <= MAX_OBJECT_BYTES, at, || {
        format!("holds {bytes} bytes, more than the {MAX_OBJECT_BYTES} an object may")
    });
    if let LocalObject::PersistentVolumeClaim(claim) = object {
        check_claim(c, claim.spec.as_ref(), at);
    }
    if let LocalObject::StatefulSet(set) = object {
        let templates = set.spec.iter().flat_map(|s| s.volume_claim_templates.iter().flatten());
        for (i, template) in templates.enumerate() {
            let at = format!("{at}.spec.volumeClaimTemplates[{i}]");
            match &template.metadata.name {
                Some(name) => c.check(is_object_name(name), format!("{at}.metadata.name"), || {
                    format!("{name:?} is not a volume name (a DNS label)")
                }),
                None => c.fail(format!("{at}.metadata.name"), "is required"),
            }
            check_claim(c, template.spec.as_ref(), &at);
        }
    }
    if let Some((template, selector, replicas)) = object.workload() {
        check_workload(c, object, (template, selector, replicas), written, at);
    }
}

/// Checks a claim's spec at `at`: a directory is a file system, not a block device.
fn check_claim(
    c: &mut Checker,
    spec: Option<&k8s_openapi::api::core::v1::PersistentVolumeClaimSpec>,
    at: &str,
) {
    let mode = spec.and_then(|s| s.volume_mode.as_deref()).unwrap_or("Filesystem");
    c.check(mode == "Filesystem", format!("{at}.spec.volumeMode"), || {
        format!("{mode:?} is not supported: a claim is a directory of the node (Filesystem is)")
    });
}

/// Checks a workload: its replicas, its selector against its template's labels, and its
/// template as the pod it becomes (under its first pod's name).
fn check_workload(
    c: &mut Checker,
    object: &LocalObject,
    (template, selector, replicas): (&PodTemplateSpec, Option<&LabelSelector>, i32),
    written: Option<&Value>,
    at: &str,
) {
    if let LocalObject::Job(job) = object {
        check_job(c, job, template, at);
    } else {
        // As the API server: a controller that keeps its replicas running restarts them.
        let policy = template.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
        if let Some(policy) = policy.filter(|p| *p != "Always") {
            c.fail(
                format!("{at}.spec.template.spec.restartPolicy"),
                format!("{policy:?} is not allowed for a {}: only Always is", object.kind()),
            );
        }
    }
    c.check((0..=MAX_REPLICAS).contains(&replicas), format!("{at}.spec.replicas"), || {
        format!("{replicas} is not 0 to {MAX_REPLICAS}: one node runs at most {MAX_REPLICAS} pods")
    });
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    let empty = selector.is_none_or(|selector| {
        selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && selector.match_expressions.as_ref().is_none_or(Vec::is_empty)
    });
    if !matches!(object, LocalObject::Job(_)) {
        c.check(!empty, format!("{at}.spec.selector"), || "is required (matchLabels)".into());
    }
    if let Some(reason) = selector.and_then(|selector| selector_mismatch(selector, &labels)) {
        c.fail(format!("{at}.spec.template.metadata.labels"), reason);
    }
    // The template as the pod it becomes: its first pod (with a name, a kind) as written.
    let mut as_one = object.clone();
    match &mut as_one {
        LocalObject::Deployment(d) => d.spec.iter_mut().for_each(|s| s.replicas = Some(1)),
        LocalObject::ReplicaSet(r) => r.spec.iter_mut().for_each(|s| s.replicas = Some(1)),
        LocalObject::StatefulSet(s) => s.spec.iter_mut().for_each(|s| s.replicas = Some(1)),
        _ => {}
    }
    let Some(pod) = as_one.pods().pop() else { return };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let written_pod = written.and_then(|w| w.get("spec")?.get("template")).map(|template| {
        let mut written = serde_yaml::Mapping::new();
        written.insert("apiVersion".into(), "v1".into());
        written.insert("kind".into(), "Pod".into());
        let mut metadata = match template.get("metadata") {
            Some(Value::Mapping(m)) => m.clone(),
            _ => serde_yaml::Mapping::new(),
        };
        metadata.insert("name".into(), name.clone().into());
        written.insert("metadata".into(), Value::Mapping(metadata));
        written.insert("spec".into(), template.get("spec").cloned().unwrap_or(Value::Null));
        Value::Mapping(written)
    });
    // Problems of the template's own fields are the template's; the generated ones (name,
    // namespace, labels) come from the workload, checked above.
    let mut inner = Checker::default();
    let pod_at = format!("{at}.spec.template");
    let written_pod = written_pod.or_else(|| serde_yaml::to_value(&pod).ok());
    check_pod(&mut inner, &pod, written_pod.as_ref(), &pod_at);
    for Problem { path, reason } in inner.problems {
        let path = match path.strip_prefix(&format!("{pod_at}.metadata.name")) {
            Some(_) => format!("{at}.metadata.name"),
            None => path,
        };
        c.fail(path, reason);
    }
}

/// Checks what a Job asks that one node does: one pod to one completion, a restart policy
/// that lets it complete, a limit of retries.
fn check_job(c: &mut Checker, job: &Job, template: &PodTemplateSpec, at: &str) {
    let Some(spec) = &job.spec else { return };
    for (field, value) in [("completions", spec.completions), ("parallelism", spec.parallelism)] {
        if let Some(n) = value.filter(|n| *n != 1) {
            c.fail(
                format!("{at}.spec.{field}"),
                format!("{n} is not supported: a node runs a Job's pod once at a time (1 is)"),
            );
        }
    }
    if let Some(limit) = spec.backoff_limit.filter(|n| *n < 0) {
        c.fail(format!("{at}.spec.backoffLimit"), format!("{limit} is negative"));
    }
    let policy = template.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
    c.check(
        matches!(policy, Some("Never" | "OnFailure")),
        format!("{at}.spec.template.spec.restartPolicy"),
        || {
            format!(
                "{} is not allowed for a Job: Never or OnFailure is required",
                policy.unwrap_or("none")
            )
        },
    );
}

/// Whether `selector` selects the object with `labels` (an empty selector selects all).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector_mismatch(selector, labels).is_none()
}

/// Why `selector` does not select `labels`, as the API server refuses a workload whose pods
/// its own selector would not find; None when it does.
fn selector_mismatch(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Option<String> {
    for (key, value) in selector.match_labels.iter().flatten() {
        if labels.get(key) != Some(value) {
            return Some(format!("do not match spec.selector: {key}={value:?} is not among them"));
        }
    }
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.clone().unwrap_or_default();
        let has = labels.get(&expression.key);
        let holds = match expression.operator.as_str() {
            "In" => has.is_some_and(|v| values.contains(v)),
            "NotIn" => has.is_none_or(|v| !values.contains(v)),
            "Exists" => has.is_some(),
            "DoesNotExist" => has.is_none(),
            other => {
                return Some(format!(
                    "selector operator {other:?} is not In, NotIn, Exists or DoesNotExist"
                ))
            }
        };
        if !holds {
            return Some(format!(
                "do not match spec.selector: {} {} {values:?} does not hold",
                expression.key, expression.operator
            ));
        }
    }
    None
}

impl LocalObject {
    /// A copy for callers who may not see secrets: a Secret's values replaced by
    /// [`REDACTED`](super::redact::REDACTED), its keys kept (as `kubectl describe secret` shows
    /// them); the environment values of a pod or of a workload's template too.
    pub fn redacted(&self) -> LocalObject {
        let mut object = self.clone();
        let hidden = super::redact::REDACTED;
        let template = match &mut object {
            LocalObject::Secret(secret) => {
                // kubectl's record of the last apply holds the data too.
                if let Some(annotations) = &mut secret.metadata.annotations {
                    annotations.remove(LAST_APPLIED);
                }
                for value in secret.data.iter_mut().flat_map(|data| data.values_mut()) {
                    *value = k8s_openapi::ByteString(hidden.as_bytes().to_vec());
                }
                for value in secret.string_data.iter_mut().flat_map(|data| data.values_mut()) {
                    *value = hidden.to_string();
                }
                None
            }
            LocalObject::Pod(pod) => {
                super::redact::redact_pod(pod);
                None
            }
            LocalObject::Deployment(d) => d.spec.as_mut().map(|s| &mut s.template),
            LocalObject::ReplicaSet(r) => r.spec.as_mut().and_then(|s| s.template.as_mut()),
            LocalObject::DaemonSet(d) => d.spec.as_mut().map(|s| &mut s.template),
            LocalObject::StatefulSet(s) => s.spec.as_mut().map(|s| &mut s.template),
            LocalObject::Job(j) => j.spec.as_mut().map(|s| &mut s.template),
            LocalObject::ConfigMap(_)
            | LocalObject::Namespace(_)
            | LocalObject::PersistentVolumeClaim(_) => None,
        };
        if let Some(template) = template {
            let mut pod = Pod { spec: template.spec.take(), ..Default::default() };
            super::redact::redact_pod(&mut pod);
            template.spec = pod.spec;
        }
        object
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::Problem;

    fn problems(yaml: &str) -> Vec<String> {
        let written: Vec<Value> = serde_yaml::from_str(yaml).unwrap();
        let objects: Vec<LocalObject> = serde_yaml::from_str(yaml).unwrap();
        let mut c = Checker::default();
        let paths: Vec<String> =
            (0..objects.len()).map(|i| format!("machine.objects[{i}]")).collect();
        check_objects(&mut c, &objects, &written, &paths);
        c.problems.iter().map(Problem::to_string).collect()
    }

    #[test]
    fn controllers_that_keep_replicas_replace_failed_pods() {
        let replaces = |api_version: &str, kind: &str| {
            let text =
                format!("{{apiVersion: {api_version}, kind: {kind}, metadata: {{name: x}}}}");
            LocalObject::from_value(serde_yaml::from_str(&text).unwrap())
                .unwrap()
                .replaces_failed_pods()
        };
        for kind in ["Deployment", "ReplicaSet", "DaemonSet", "StatefulSet"] {
            assert!(replaces("apps/v1", kind), "{kind}");
        }
        assert!(!replaces("batch/v1", "Job"));
        assert!(!replaces("v1", "Pod"));
    }

    #[test]
    fn replicas_restart_always() {
        let set = |policy: &str| {
            problems(&format!(
                "- apiVersion: apps/v1\n  kind: DaemonSet\n  metadata: {{name: agent}}\n  spec:\n    selector: {{matchLabels: {{app: a}}}}\n    template:\n      metadata: {{labels: {{app: a}}}}\n      spec: {{restartPolicy: {policy}, containers: [{{name: c, image: i}}]}}\n"
            ))
        };
        assert_eq!(set("Always"), Vec::<String>::new());
        assert_eq!(
            set("Never"),
            ["machine.objects[0].spec.template.spec.restartPolicy: \"Never\" is not allowed for a DaemonSet: only Always is"]
        );
    }

    #[test]
    fn config_maps_and_secrets_are_read_by_kind() {
        let objects: Vec<LocalObject> = serde_yaml::from_str(concat!(
            "- {apiVersion: v1, kind: ConfigMap, metadata: {name: site}, data: {index.html: hi}}\n",
            "- {apiVersion: v1, kind: Secret, metadata: {name: creds, namespace: apps},\n",
            "   data: {password: aHVudGVyMg==}, stringData: {user: admin}}\n",
        ))
        .unwrap();
        assert_eq!(objects[0].kind(), "ConfigMap");
        assert_eq!((objects[0].namespace(), objects[0].name()), ("default", "site"));
        let LocalObject::Secret(secret) = &objects[1] else { panic!("{objects:?}") };
        assert_eq!(secret.data.as_ref().unwrap()["password"].0, b"hunter2");
        assert_eq!(objects[1].namespace(), "apps");
        // Written back as they were read.
        let again: Vec<LocalObject> =
            serde_yaml::from_str(&serde_yaml::to_string(&objects).unwrap()).unwrap();
        assert_eq!(again, objects);
    }

    #[test]
    fn removed_api_versions_say_what_replaced_them() {
        let old = "{apiVersion: extensions/v1beta1, kind: DaemonSet, metadata: {name: d}}";
        let error = LocalObject::from_value(serde_yaml::from_str(old).unwrap()).unwrap_err();
        assert!(error.starts_with("apiVersion extensions/v1beta1 was removed in Kubernetes 1.16"));
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_by_its_field() {
        let object = "{apiVersion: apps/v1, kind: StatefulSet, metadata: {name: s, annotations: {revision: 2}}}";
        let error = LocalObject::from_value(serde_yaml::from_str(object).unwrap()).unwrap_err();
        assert_eq!(
            error,
            "metadata.annotations.revision: invalid type: integer `2`, expected a string"
        );
    }

    #[test]
    fn other_kinds_are_refused_by_name() {
        let read = serde_yaml::from_str::<Vec<LocalObject>>(
            "- {apiVersion: v1, kind: Service, metadata: {name: web}}\n",
        );
        let error = read.unwrap_err().to_string();
        assert!(error.contains("\"Service\" is not one a node keeps"), "{error}");
        let read = serde_yaml::from_str::<Vec<LocalObject>>("- {metadata: {name: web}}\n");
        assert!(read.unwrap_err().to_string().contains("kind is required"));
    }

    #[test]
    fn names_keys_fields_and_duplicates_are_checked() {
        assert_eq!(
            problems(concat!(
                "- {apiVersion: v1, kind: ConfigMap, metadata: {name: Site}, data: {../x: a}}\n",
                "- {apiVersion: v1, kind: ConfigMap, metadata: {name: ok}, data: {a: b},\n",
                "   binaryData: {a: Yg==}, dta: {}}\n",
                "- {apiVersion: v1, kind: ConfigMap, metadata: {name: ok, generateName: x}}\n",
                "- {apiVersion: v1, kind: Secret, metadata: {name: ok}, data: {.env: YQ==}}\n",
            )),
            [
                "machine.objects[0].metadata.name: \"Site\" is not a DNS subdomain (lower-case letters, digits, '-', '.')",
                "machine.objects[0].data.\"../x\": \"../x\" is not a key (1-253 letters, digits, '-', '_' and '.')",
                "machine.objects[1].dta: unknown field",
                "machine.objects[1].binaryData.\"a\": is also a key of data",
                "machine.objects[2].metadata.generateName: not supported by Cairn's kubelet",
                "machine.objects[2].metadata.name: ConfigMap default/ok is defined more than once",
            ]
        );
    }

    #[test]
    fn an_object_over_a_mebibyte_is_refused() {
        let big = "a".repeat(MAX_OBJECT_BYTES);
        let yaml = format!(
            "- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: big}}, data: {{k: {big}}}}}\n"
        );
        let found = problems(&yaml);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("more than the 1048576 an object may"), "{found:?}");
    }

    #[test]
    fn secrets_lose_their_values_and_keep_their_keys() {
        let mut objects: Vec<LocalObject> = serde_yaml::from_str(concat!(
            "- {apiVersion: v1, kind: Secret, metadata: {name: s, annotations: {kubectl.kubernetes.io/last-applied-configuration: hunter2}}, data: {p: aHVudGVyMg==}, stringData: {u: admin}}\n",
            "- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}, data: {k: v}}\n",
        ))
        .unwrap();
        objects.push(
            LocalObject::from_value(
                serde_yaml::from_str(concat!(
                    "{apiVersion: apps/v1, kind: Deployment, metadata: {name: d}, spec: {selector: {matchLabels: {a: b}},\n",
                    " template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, env: [{name: K, value: v}]}]}}}}",
                ))
                .unwrap(),
            )
            .unwrap(),
        );
        let config_map = objects[1].clone();
        let objects: Vec<LocalObject> = objects.iter().map(LocalObject::redacted).collect();
        let LocalObject::Secret(secret) = &objects[0] else { panic!() };
        assert_eq!(secret.data.as_ref().unwrap()["p"].0, b"******");
        assert_eq!(secret.string_data.as_ref().unwrap()["u"], "******");
        assert!(secret.metadata.annotations.as_ref().unwrap().is_empty());
        assert_eq!(objects[1], config_map);
        let LocalObject::Deployment(deployment) = &objects[2] else { panic!() };
        let template = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(
            template.containers[0].env.as_ref().unwrap()[0].value.as_deref(),
            Some("******")
        );
    }
}
