//! Static pods, decoded strictly: from `machine.pods` and from manifest files ([`decode_pod`]).
//!
//! k8s-openapi decodes a Pod as Kubernetes does, leniently: a field it does not know is
//! dropped, so a typo (`imagePullPolcy`) silently becomes a default. And Cairn's kubelet runs a
//! subset of the Pod API, so a field it does not implement (`initContainers`, a `configMap`
//! volume) would be ignored just as silently. A pod is therefore checked three ways, and every
//! problem is reported with its path (`machine.pods[0].spec.containers[0].imagePullPolcy`):
//!
//! - fields Kubernetes does not know: the pod as written is compared, key by key, with the pod
//!   as k8s-openapi read it and wrote it back (keys only: quantities and int-or-string ports
//!   are written back in their own forms);
//! - fields Kubernetes knows and Cairn's kubelet does not support: `SUPPORTED` lists the
//!   fields it does, anything else is refused;
//! - values: names, ports, quantities, references between fields, following Kubernetes'
//!   own validation where the kubelet relies on it.

use std::collections::HashSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    Container, ExecAction, HTTPGetAction, Pod, PodSpec, Probe, ResourceRequirements,
    TCPSocketAction, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_yaml::Value;

use super::validate::{is_dns_label, Checker, Problem};
use super::{dns, env, scheduling, security_context, shape, yaml11_numbers};

/// The namespace of a pod that names none, as in Kubernetes.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Why a field Kubernetes knows is refused.
const UNSUPPORTED: &str = "not supported by Cairn's kubelet";

/// What Cairn's kubelet supports at one place of a Pod (or of an object pods read).
pub(super) enum Supported {
    /// The value as Kubernetes reads it: a scalar, a list of strings, or a map with free-form
    /// keys (labels, annotations).
    Whole,
    /// An object with only these fields; the text says, for a refused field, what is
    /// supported instead (empty when there is nothing useful to say).
    Fields(&'static [(&'static str, Supported)], &'static str),
    /// A list whose every item is supported as described.
    Each(&'static Supported),
    /// A value checked on its own, by another tree (a workload's pod template).
    Elsewhere,
}

use Supported::{Each, Elsewhere, Fields, Whole};

/// Every Pod field Cairn's kubelet supports. A field Kubernetes knows that is not here is
/// refused, so the kubelet never meets a setting it would silently ignore; values are checked
/// separately. Notable refusals: `status`, `ephemeralContainers`,
/// required pod (anti-)affinity, `hostAliases`, SELinux and AppArmor
/// options, volume sources other than hostPath, emptyDir, configMap, secret (the objects of
/// `machine.objects`), persistentVolumeClaim and downwardAPI, `stdin`/`tty`, resources
/// other than cpu, memory and ephemeral-storage; and, by value, the `HugePages` media.
static SUPPORTED: Supported = Fields(
    &[
        ("apiVersion", Whole),
        ("kind", Whole),
        (
            "metadata",
            Fields(
                &[("name", Whole), ("namespace", Whole), ("labels", Whole), ("annotations", Whole)],
                "",
            ),
        ),
        (
            "spec",
            Fields(
                &[
                    ("containers", Each(&CONTAINER)),
                    // Run in order to completion before the containers (or, with
                    // `restartPolicy: Always`, started and kept running beside them: sidecars);
                    // the probes and hooks of the others are refused by value, as the API
                    // server refuses them.
                    ("initContainers", Each(&CONTAINER)),
                    ("restartPolicy", Whole),
                    ("hostNetwork", Whole),
                    ("hostPID", Whole),
                    ("hostIPC", Whole),
                    ("shareProcessNamespace", Whole),
                    // No Services on a node of its own: no links to inject.
                    ("enableServiceLinks", Whole),
                    ("dnsPolicy", Whole),
                    (
                        "dnsConfig",
                        Fields(
                            &[
                                ("nameservers", Whole),
                                ("searches", Whole),
                                (
                                    "options",
                                    Each(&Fields(&[("name", Whole), ("value", Whole)], "")),
                                ),
                            ],
                            "",
                        ),
                    ),
                    ("hostname", Whole),
                    ("terminationGracePeriodSeconds", Whole),
                    (
                        "securityContext",
                        Fields(
                            &[
                                ("runAsUser", Whole),
                                ("runAsGroup", Whole),
                                ("runAsNonRoot", Whole),
                                ("supplementalGroups", Whole),
                                ("fsGroup", Whole),
                                ("seccompProfile", SECCOMP),
                                (
                                    "sysctls",
                                    Each(&Fields(&[("name", Whole), ("value", Whole)], "")),
                                ),
                            ],
                            "",
                        ),
                    ),
                    // Read by the scheduler: the kubelet decides whether the pod fits this
                    // node (machined's `placement`); what only ranks nodes is accepted.
                    ("nodeName", Whole),
                    ("nodeSelector", Whole),
                    (
                        "affinity",
                        Fields(
                            &[
                                (
                                    "nodeAffinity",
                                    Fields(
                                        &[
                                            (
                                                "requiredDuringSchedulingIgnoredDuringExecution",
                                                Whole,
                                            ),
                                            (
                                                "preferredDuringSchedulingIgnoredDuringExecution",
                                                Whole,
                                            ),
                                        ],
                                        "",
                                    ),
                                ),
                                ("podAffinity", POD_AFFINITY),
                                ("podAntiAffinity", POD_AFFINITY),
                            ],
                            "",
                        ),
                    ),
                    ("tolerations", Whole),
                    ("priorityClassName", Whole),
                    ("priority", Whole),
                    ("topologySpreadConstraints", Whole),
                    ("schedulerName", Whole),
                    // No API server issues tokens: accepted, and no token is mounted.
                    ("serviceAccountName", Whole),
                    ("serviceAccount", Whole),
                    // Secrets of `kubernetes.io/dockerconfigjson` (or `dockercfg`) kept on
                    // the node: the registry credentials of the pod's pulls.
                    ("imagePullSecrets", Each(&Fields(&[("name", Whole)], ""))),
                    ("automountServiceAccountToken", Whole),
                    (
                        "volumes",
                        Each(&Fields(
                            &[
                                ("name", Whole),
                                ("hostPath", Fields(&[("path", Whole), ("type", Whole)], "")),
                                (
                                    "emptyDir",
                                    Fields(&[("medium", Whole), ("sizeLimit", Whole)], ""),
                                ),
                                ("configMap", CONFIG_MAP_VOLUME),
                                ("secret", SECRET_VOLUME),
                                (
                                    "persistentVolumeClaim",
                                    Fields(&[("claimName", Whole), ("readOnly", Whole)], ""),
                                ),
                                ("downwardAPI", DOWNWARD_API_VOLUME),
                            ],
                            "hostPath, emptyDir, configMap, secret, persistentVolumeClaim and \
                             downwardAPI are",
                        )),
                    ),
                ],
                "",
            ),
        ),
    ],
    "",
);

/// A configMap volume, in [`SUPPORTED`].
const CONFIG_MAP_VOLUME: Supported = Fields(
    &[("name", Whole), ("items", Each(&KEY_TO_PATH)), ("defaultMode", Whole), ("optional", Whole)],
    "",
);

/// A secret volume, in [`SUPPORTED`].
const SECRET_VOLUME: Supported = Fields(
    &[
        ("secretName", Whole),
        ("items", Each(&KEY_TO_PATH)),
        ("defaultMode", Whole),
        ("optional", Whole),
    ],
    "",
);

/// A downwardAPI volume, in [`SUPPORTED`].
const DOWNWARD_API_VOLUME: Supported = Fields(
    &[
        (
            "items",
            Each(&Fields(
                &[
                    ("path", Whole),
                    ("fieldRef", Fields(&[("apiVersion", Whole), ("fieldPath", Whole)], "")),
                    (
                        "resourceFieldRef",
                        Fields(
                            &[("containerName", Whole), ("resource", Whole), ("divisor", Whole)],
                            "",
                        ),
                    ),
                    ("mode", Whole),
                ],
                "",
            )),
        ),
        ("defaultMode", Whole),
    ],
    "",
);

/// A key of a ConfigMap or Secret as a file of its volume, in [`SUPPORTED`].
const KEY_TO_PATH: Supported = Fields(&[("key", Whole), ("path", Whole), ("mode", Whole)], "");

/// A reference to a ConfigMap or Secret (`envFrom`), in [`SUPPORTED`].
const OBJECT_REF: Supported = Fields(&[("name", Whole), ("optional", Whole)], "");

/// A reference to a key of a ConfigMap or Secret (`env[].valueFrom`), in [`SUPPORTED`].
const KEY_REF: Supported = Fields(&[("name", Whole), ("key", Whole), ("optional", Whole)], "");

/// Pod (anti-)affinity, in [`SUPPORTED`]: on a node of its own a pod has no other node to be
/// placed on, so preferences are accepted as they are; requirements are weighed against the
/// pods of this node (a namespaceSelector would need Namespaces' labels a node does not keep).
const POD_AFFINITY: Supported = Fields(
    &[
        ("preferredDuringSchedulingIgnoredDuringExecution", Whole),
        (
            "requiredDuringSchedulingIgnoredDuringExecution",
            Each(&Fields(
                &[("labelSelector", Whole), ("namespaces", Whole), ("topologyKey", Whole)],
                "labelSelector, namespaces and topologyKey are",
            )),
        ),
    ],
    "",
);

/// A seccomp profile of a pod or a container, in [`SUPPORTED`].
const SECCOMP: Supported = Fields(&[("type", Whole), ("localhostProfile", Whole)], "");

/// A container, in [`SUPPORTED`].
const CONTAINER: Supported = Fields(
    &[
        ("name", Whole),
        ("image", Whole),
        ("imagePullPolicy", Whole),
        ("command", Whole),
        ("args", Whole),
        ("workingDir", Whole),
        (
            "env",
            Each(&Fields(
                &[
                    ("name", Whole),
                    ("value", Whole),
                    (
                        "valueFrom",
                        Fields(
                            &[
                                (
                                    "fieldRef",
                                    Fields(&[("fieldPath", Whole), ("apiVersion", Whole)], ""),
                                ),
                                (
                                    "resourceFieldRef",
                                    Fields(
                                        &[
                                            ("resource", Whole),
                                            ("containerName", Whole),
                                            ("divisor", Whole),
                                        ],
                                        "",
                                    ),
                                ),
                                ("configMapKeyRef", KEY_REF),
                                ("secretKeyRef", KEY_REF),
                            ],
                            "",
                        ),
                    ),
                ],
                "",
            )),
        ),
        (
            "envFrom",
            Each(&Fields(
                &[("prefix", Whole), ("configMapRef", OBJECT_REF), ("secretRef", OBJECT_REF)],
                "",
            )),
        ),
        (
            "ports",
            Each(&Fields(
                &[
                    ("containerPort", Whole),
                    ("hostPort", Whole),
                    ("protocol", Whole),
                    ("name", Whole),
                    ("hostIP", Whole),
                ],
                "",
            )),
        ),
        (
            "volumeMounts",
            Each(&Fields(
                &[
                    ("name", Whole),
                    ("mountPath", Whole),
                    ("readOnly", Whole),
                    ("subPath", Whole),
                    ("mountPropagation", Whole),
                ],
                "",
            )),
        ),
        ("resources", Fields(&[("requests", RESOURCES), ("limits", RESOURCES)], "")),
        (
            "securityContext",
            Fields(
                &[
                    ("runAsUser", Whole),
                    ("runAsGroup", Whole),
                    ("privileged", Whole),
                    ("readOnlyRootFilesystem", Whole),
                    ("allowPrivilegeEscalation", Whole),
                    ("capabilities", Fields(&[("add", Whole), ("drop", Whole)], "")),
                    ("runAsNonRoot", Whole),
                    ("seccompProfile", SECCOMP),
                ],
                "",
            ),
        ),
        ("livenessProbe", PROBE),
        ("readinessProbe", PROBE),
        ("lifecycle", Fields(&[("postStart", HOOK), ("preStop", HOOK)], "")),
        ("startupProbe", PROBE),
        ("terminationMessagePath", Whole),
        ("terminationMessagePolicy", Whole),
        // `Always` makes an init container a sidecar; refused by value elsewhere.
        ("restartPolicy", Whole),
    ],
    "",
);

/// Resource requests or limits, in [`SUPPORTED`].
const RESOURCES: Supported = Fields(
    &[("cpu", Whole), ("memory", Whole), ("ephemeral-storage", Whole)],
    "cpu, memory and ephemeral-storage are",
);

/// An HTTP GET of a probe or a hook, in [`SUPPORTED`].
const HTTP_GET: Supported = Fields(
    &[
        ("path", Whole),
        ("port", Whole),
        ("host", Whole),
        ("scheme", Whole),
        ("httpHeaders", Each(&Fields(&[("name", Whole), ("value", Whole)], ""))),
    ],
    "",
);

/// A postStart or preStop hook, in [`SUPPORTED`].
const HOOK: Supported = Fields(
    &[
        ("exec", Fields(&[("command", Whole)], "")),
        ("httpGet", HTTP_GET),
        ("tcpSocket", Fields(&[("port", Whole), ("host", Whole)], "")),
        ("sleep", Fields(&[("seconds", Whole)], "")),
    ],
    "",
);

/// A liveness, readiness or startup probe, in [`SUPPORTED`].
const PROBE: Supported = Fields(
    &[
        ("exec", Fields(&[("command", Whole)], "")),
        ("httpGet", HTTP_GET),
        ("tcpSocket", Fields(&[("port", Whole), ("host", Whole)], "")),
        ("grpc", Fields(&[("port", Whole), ("service", Whole)], "")),
        ("initialDelaySeconds", Whole),
        ("periodSeconds", Whole),
        ("timeoutSeconds", Whole),
        ("successThreshold", Whole),
        ("failureThreshold", Whole),
    ],
    "",
);

/// Decodes a pod manifest file (one Pod YAML document) within [`shape`]'s limits and checks it
/// as `machine.pods` are; problem paths start with `path` (the file name, say).
pub fn decode_pod(bytes: &[u8], path: &str) -> Result<Pod, Vec<Problem>> {
    let decoded = shape::check(bytes).and_then(|()| {
        // UTF-8, as the shape check found.
        let text = String::from_utf8_lossy(bytes);
        let bytes = yaml11_numbers::rewritten(&text, yaml11_numbers::Pods::Document);
        let bytes = bytes.as_bytes();
        // Read from the bytes rather than from a Value, serde_yaml's errors name the field and
        // the line.
        let pod: Pod = serde_yaml::from_slice(bytes).map_err(|e| e.to_string())?;
        let written: Value = serde_yaml::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok((pod, written))
    });
    let mut c = Checker::default();
    let (pod, written) = match decoded {
        Ok(decoded) => decoded,
        Err(reason) => {
            c.fail(path, reason);
            return Err(c.problems);
        }
    };
    check_pod(&mut c, &pod, Some(&written), path);
    if c.problems.is_empty() {
        Ok(pod)
    } else {
        Err(c.problems)
    }
}

/// Checks `machine.pods` (at `path`): each pod, and that no two share a namespace and name.
/// `written` holds the pods as written, by index; a pod missing there is checked as serde read
/// it, where fields Kubernetes does not know are already gone.
pub(super) fn check_pods(c: &mut Checker, pods: &[Pod], written: &[Value], path: &str) {
    let mut names = HashSet::new();
    for (i, pod) in pods.iter().enumerate() {
        let at = format!("{path}[{i}]");
        check_pod(c, pod, written.get(i), &at);
        if let Some(name) = &pod.metadata.name {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
            c.check(names.insert((namespace, name)), format!("{at}.metadata.name"), || {
                format!("{namespace}/{name} is defined more than once")
            });
        }
    }
}

/// Every problem of one pod: its fields (those `written` has, or else the pod's own) and its
/// values.
pub(super) fn check_pod(c: &mut Checker, pod: &Pod, written: Option<&Value>, path: &str) {
    match serde_yaml::to_value(pod) {
        Ok(read) => {
            let written = written.unwrap_or(&read);
            // k8s-openapi checks these two when present, and writes them back when not.
            for field in ["apiVersion", "kind"] {
                c.check(
                    written.get(field).is_some_and(|v| !v.is_null()),
                    join(path, field),
                    || "is required".to_string(),
                );
            }
            check_fields(c, written, &read, &SUPPORTED, path);
        }
        Err(e) => c.fail(path, format!("cannot be checked: {e}")),
    }
    check_values(c, pod, path);
}

/// Walks the pod as written alongside the pod as read back: a key the reading dropped is
/// unknown to Kubernetes, a key it kept but [`SUPPORTED`] lacks is refused. A null value is
/// an absent field, as in Kubernetes.
pub(super) fn check_fields(
    c: &mut Checker,
    written: &Value,
    read: &Value,
    supported: &Supported,
    path: &str,
) {
    if let Elsewhere = supported {
        return;
    }
    let written = match written {
        Value::Tagged(tagged) => &tagged.value,
        other => other,
    };
    match (written, read) {
        (Value::Mapping(written), Value::Mapping(read)) => {
            for (key, value) in written.iter().filter(|(_, value)| !value.is_null()) {
                let name = match key {
                    Value::String(name) => name.clone(),
                    other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
                };
                let at = join(path, &name);
                let Some(read) = read.get(name.as_str()) else {
                    c.fail(at, "unknown field");
                    continue;
                };
                match supported {
                    Whole => check_fields(c, value, read, &Whole, &at),
                    Fields(fields, instead) => match fields.iter().find(|(f, _)| *f == name) {
                        Some((_, inner)) => check_fields(c, value, read, inner, &at),
                        None if instead.is_empty() => c.fail(at, UNSUPPORTED),
                        None => c.fail(at, format!("{UNSUPPORTED} ({instead})")),
                    },
                    // A list in the tree is a list in the data: k8s-openapi read it as one.
                    Each(_) | Elsewhere => {}
                }
            }
        }
        (Value::Sequence(written), Value::Sequence(read)) => {
            let item = match supported {
                Each(item) => item,
                _ => &Whole,
            };
            for (i, (written, read)) in written.iter().zip(read).enumerate() {
                check_fields(c, written, read, item, &format!("{path}[{i}]"));
            }
        }
        _ => {}
    }
}

/// `path.key`, or `path."key"` when the key is no plain name (`nvidia.com/gpu`).
fn join(path: &str, key: &str) -> String {
    if !key.is_empty() && key.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch)) {
        format!("{path}.{key}")
    } else {
        format!("{path}.{key:?}")
    }
}

/// The `restartPolicy` that makes an init container a sidecar (Kubernetes 1.29+): started in
/// its turn, then kept running beside the containers until they are done.
pub const SIDECAR_RESTART_POLICY: &str = "Always";

/// Whether `container`, an init container, is a sidecar.
pub fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some(SIDECAR_RESTART_POLICY)
}

/// A DNS-1123 label in lower case, as Kubernetes names objects (and namespaces): 1-63
/// lower-case letters, digits and inner '-'.
pub fn is_object_name(name: &str) -> bool {
    is_dns_label(name) && !name.contains(|ch: char| ch.is_ascii_uppercase())
}

/// Checks that `name` is an object name.
fn check_name(c: &mut Checker, name: &str, path: String) {
    c.check(is_object_name(name), path, || {
        format!("{name:?} is not a DNS label (1-63 lower-case letters, digits and inner '-')")
    });
}

/// Checks that `value` is one of `allowed`.
fn check_one_of(c: &mut Checker, value: &str, allowed: &[&str], path: String) {
    c.check(allowed.contains(&value), path, || {
        format!("{value:?} is not one of {}", allowed.join(", "))
    });
}

/// Checks an absolute path (`/` and more).
fn check_absolute(c: &mut Checker, value: &str, path: String) {
    c.check(value.starts_with('/'), path, || format!("{value:?} is not an absolute path"));
}

/// Checks a port number.
fn check_port(c: &mut Checker, port: i32, path: String) {
    c.check((1..=65535).contains(&port), path, || format!("{port} is outside 1..65535"));
}

/// Checks the values of a pod: names, references and numbers its fields allow but Kubernetes
/// (or the kubelet) does not.
fn check_values(c: &mut Checker, pod: &Pod, path: &str) {
    match &pod.metadata.name {
        Some(name) => check_name(c, name, format!("{path}.metadata.name")),
        None => c.fail(format!("{path}.metadata.name"), "is required"),
    }
    if let Some(namespace) = &pod.metadata.namespace {
        check_name(c, namespace, format!("{path}.metadata.namespace"));
    }
    let Some(spec) = &pod.spec else {
        c.fail(format!("{path}.spec"), "is required");
        return;
    };
    let path = format!("{path}.spec");
    c.check(!spec.containers.is_empty(), format!("{path}.containers"), || {
        "needs at least one container".to_string()
    });
    if let Some(policy) = &spec.restart_policy {
        check_one_of(c, policy, &["Always", "OnFailure", "Never"], format!("{path}.restartPolicy"));
    }
    if let Some(hostname) = &spec.hostname {
        check_name(c, hostname, format!("{path}.hostname"));
    }
    if let Some(seconds) = spec.termination_grace_period_seconds {
        c.check(seconds >= 0, format!("{path}.terminationGracePeriodSeconds"), || {
            format!("{seconds} is negative")
        });
    }
    scheduling::check(c, spec, &path);
    for (i, secret) in spec.image_pull_secrets.iter().flatten().enumerate() {
        check_object_ref(c, &secret.name, format!("{path}.imagePullSecrets[{i}].name"));
    }
    dns::check(c, spec, &path);
    let both = spec.host_pid == Some(true) && spec.share_process_namespace == Some(true);
    c.check(!both, format!("{path}.shareProcessNamespace"), || {
        "and hostPID together: the pod shares the node's processes or its own".to_string()
    });
    if let Some(context) = &spec.security_context {
        let host_network = spec.host_network == Some(true);
        security_context::check_pod(c, context, host_network, &format!("{path}.securityContext"));
    }
    let volumes = check_volumes(c, spec, &path);
    let mut names = HashSet::new();
    let mut host_ports = HashSet::new();
    let init = spec.init_containers.iter().flatten().enumerate().map(|(i, c)| (c, i, true));
    let main = spec.containers.iter().enumerate().map(|(i, c)| (c, i, false));
    for (container, i, is_init) in init.chain(main) {
        let list = if is_init { "initContainers" } else { "containers" };
        let at = format!("{path}.{list}[{i}]");
        let name = &container.name;
        check_name(c, name, format!("{at}.name"));
        c.check(names.insert(name), format!("{at}.name"), || {
            format!("{name:?} is used by another container of this pod")
        });
        check_container(c, container, spec, &volumes, &mut host_ports, &at);
        if let Some(policy) = &container.restart_policy {
            let why = match is_init {
                true => (policy != SIDECAR_RESTART_POLICY).then_some(
                    "only Always is supported, which makes the init container a sidecar",
                ),
                false => Some("may not be set for a container that is not an init container"),
            };
            if let Some(why) = why {
                c.fail(format!("{at}.restartPolicy"), format!("{policy:?}: {why}"));
            }
        }
        if is_init && !is_sidecar(container) {
            let probes_and_hooks = [
                ("livenessProbe", container.liveness_probe.is_some()),
                ("readinessProbe", container.readiness_probe.is_some()),
                ("startupProbe", container.startup_probe.is_some()),
                ("lifecycle", container.lifecycle.is_some()),
            ];
            for (field, _) in probes_and_hooks.iter().filter(|(_, set)| *set) {
                c.fail(
                    format!("{at}.{field}"),
                    "may not be set for an init container, which runs to completion",
                );
            }
        }
    }
}

/// Checks the volumes; returns their names, for the mounts.
fn check_volumes<'a>(c: &mut Checker, spec: &'a PodSpec, path: &str) -> HashSet<&'a str> {
    let volumes: &[Volume] = spec.volumes.as_deref().unwrap_or_default();
    let mut names = HashSet::new();
    for (i, volume) in volumes.iter().enumerate() {
        let at = format!("{path}.volumes[{i}]");
        let name = &volume.name;
        check_name(c, name, format!("{at}.name"));
        c.check(names.insert(name.as_str()), format!("{at}.name"), || {
            format!("{name:?} is used by another volume of this pod")
        });
        // A volume with no source is an emptyDir, as Kubernetes defaults it.
        let sources = [
            ("hostPath", volume.host_path.is_some()),
            ("emptyDir", volume.empty_dir.is_some()),
            ("configMap", volume.config_map.is_some()),
            ("secret", volume.secret.is_some()),
            ("persistentVolumeClaim", volume.persistent_volume_claim.is_some()),
            ("downwardAPI", volume.downward_api.is_some()),
        ];
        let given: Vec<&str> =
            sources.iter().filter(|(_, given)| *given).map(|(name, _)| *name).collect();
        c.check(given.len() <= 1, &at, || {
            format!("{} together are {UNSUPPORTED}: a volume has one source", given.join(" and "))
        });
        if let Some(config_map) = &volume.config_map {
            let name = config_map.name.as_str();
            let at = format!("{at}.configMap");
            check_object_ref(c, name, format!("{at}.name"));
            check_projection(c, config_map.items.as_deref(), config_map.default_mode, &at);
        }
        if let Some(downward) = &volume.downward_api {
            let at = format!("{at}.downwardAPI");
            let paths = downward.items.iter().flatten().map(|item| item.path.as_str());
            let modes = downward.items.iter().flatten().map(|item| item.mode);
            check_files(c, paths.zip(modes), downward.default_mode, &at);
            env::check_volume(c, downward, &spec.containers, &at);
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            let name = &claim.claim_name;
            let at = format!("{at}.persistentVolumeClaim.claimName");
            c.check(super::objects::is_subdomain_name(name), at, || {
                format!("{name:?} is not the name of a claim (a DNS subdomain)")
            });
        }
        if let Some(secret) = &volume.secret {
            let at = format!("{at}.secret");
            match &secret.secret_name {
                Some(name) => check_object_ref(c, name, format!("{at}.secretName")),
                None => c.fail(format!("{at}.secretName"), "is required"),
            }
            check_projection(c, secret.items.as_deref(), secret.default_mode, &at);
        }
        if let Some(host_path) = &volume.host_path {
            check_absolute(c, &host_path.path, format!("{at}.hostPath.path"));
            if let Some(kind) = &host_path.type_ {
                let kinds = [
                    "",
                    "DirectoryOrCreate",
                    "Directory",
                    "FileOrCreate",
                    "File",
                    "Socket",
                    "CharDevice",
                    "BlockDevice",
                ];
                check_one_of(c, kind, &kinds, format!("{at}.hostPath.type"));
            }
        }
        if let Some(empty_dir) = &volume.empty_dir {
            let medium = empty_dir.medium.as_deref().unwrap_or("");
            let size_at = format!("{at}.emptyDir.sizeLimit");
            match (medium, &empty_dir.size_limit) {
                ("", None) | ("Memory", None) => {}
                // On disk, enforced by evicting the pod (as upstream); in memory, the tmpfs's
                // size.
                ("" | "Memory", Some(size)) => {
                    if let Err(reason) = memory_bytes(size) {
                        c.fail(size_at, reason);
                    }
                }
                (huge, _) if huge.starts_with("HugePages") => c.fail(
                    format!("{at}.emptyDir.medium"),
                    format!(
                        "{huge:?} is {UNSUPPORTED}: it sets no huge pages aside for pods \
                         (\"\" and \"Memory\" are)"
                    ),
                ),
                (other, _) => c.fail(
                    format!("{at}.emptyDir.medium"),
                    format!("{other:?} is {UNSUPPORTED} (\"\" and \"Memory\" are)"),
                ),
            }
        }
    }
    names
}

/// Checks the name of a ConfigMap or Secret a pod reads.
pub(super) fn check_object_ref(c: &mut Checker, name: &str, path: String) {
    c.check(super::objects::is_subdomain_name(name), path, || {
        format!("{name:?} is not the name of a ConfigMap or Secret (a DNS subdomain)")
    });
}

/// Checks a file mode of a configMap or secret volume (`defaultMode`, `items[].mode`).
fn check_mode(c: &mut Checker, mode: i32, path: String) {
    c.check((0..=0o777).contains(&mode), path, || {
        format!("{mode} is not a file mode (0 to 0777, in octal, or 511 in decimal)")
    });
}

/// Checks the files a configMap or secret volume makes (`items`, modes) at `path`.
fn check_projection(
    c: &mut Checker,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
    default_mode: Option<i32>,
    path: &str,
) {
    for (i, item) in items.unwrap_or_default().iter().enumerate() {
        if let Some(problem) = super::objects::key_problem(&item.key) {
            c.fail(format!("{path}.items[{i}].key"), problem);
        }
    }
    let files = items.unwrap_or_default().iter().map(|item| (item.path.as_str(), item.mode));
    check_files(c, files, default_mode, path);
}

/// Checks the files (path, mode) of the items of a volume at `path`, and its default mode.
fn check_files<'a>(
    c: &mut Checker,
    files: impl Iterator<Item = (&'a str, Option<i32>)>,
    default_mode: Option<i32>,
    path: &str,
) {
    if let Some(mode) = default_mode {
        check_mode(c, mode, format!("{path}.defaultMode"));
    }
    let mut paths = HashSet::new();
    for (i, (file, mode)) in files.enumerate() {
        let at = format!("{path}.items[{i}]");
        c.check(
            !file.is_empty()
                && !file.starts_with('/')
                && !file.starts_with("..")
                && !file.split('/').any(|part| part == ".."),
            format!("{at}.path"),
            || format!("{file:?} is not a relative path without '..'"),
        );
        c.check(paths.insert(file), format!("{at}.path"), || {
            format!("{file:?} is used by another item of this volume")
        });
        if let Some(mode) = mode {
            check_mode(c, mode, format!("{at}.mode"));
        }
    }
}

/// Checks one container of the pod `spec`. `host_ports` gathers the (port, protocol) pairs
/// the pod takes on the host, which two containers cannot share.
fn check_container<'a>(
    c: &mut Checker,
    container: &'a Container,
    spec: &PodSpec,
    volumes: &HashSet<&str>,
    host_ports: &mut HashSet<(i32, &'a str)>,
    path: &str,
) {
    let host_network = spec.host_network == Some(true);
    c.check(
        container.image.as_deref().is_some_and(|image| !image.is_empty()),
        format!("{path}.image"),
        || "is required".to_string(),
    );
    if let Some(policy) = &container.image_pull_policy {
        let policies = ["Always", "IfNotPresent", "Never"];
        check_one_of(c, policy, &policies, format!("{path}.imagePullPolicy"));
    }
    if let Some(dir) = &container.working_dir {
        check_absolute(c, dir, format!("{path}.workingDir"));
    }
    if let Some(message_path) = &container.termination_message_path {
        check_absolute(c, message_path, format!("{path}.terminationMessagePath"));
    }
    if let Some(policy) = &container.termination_message_policy {
        let policies = ["File", "FallbackToLogsOnError"];
        check_one_of(c, policy, &policies, format!("{path}.terminationMessagePolicy"));
    }
    env::check(c, container, &spec.containers, path);
    let port_names = check_ports(c, container, host_network, host_ports, path);
    check_mounts(c, container, volumes, path);
    if let Some(resources) = &container.resources {
        check_resources(c, resources, &format!("{path}.resources"));
    }
    if let Some(context) = &container.security_context {
        security_context::check(c, context, &format!("{path}.securityContext"));
    }
    let (pod_context, context) =
        (spec.security_context.as_ref(), container.security_context.as_ref());
    security_context::check_user(c, pod_context, context, path);
    check_lifecycle(c, container, &port_names, path);
    for (field, probe) in [
        ("livenessProbe", &container.liveness_probe),
        ("readinessProbe", &container.readiness_probe),
        ("startupProbe", &container.startup_probe),
    ] {
        if let Some(probe) = probe {
            let one_success = field != "readinessProbe";
            check_probe(c, probe, one_success, &port_names, &format!("{path}.{field}"));
        }
    }
}

/// Checks a container's ports; returns their names, for the probes.
fn check_ports<'a>(
    c: &mut Checker,
    container: &'a Container,
    host_network: bool,
    host_ports: &mut HashSet<(i32, &'a str)>,
    path: &str,
) -> HashSet<&'a str> {
    let mut names = HashSet::new();
    for (i, port) in container.ports.iter().flatten().enumerate() {
        let at = format!("{path}.ports[{i}]");
        let container_port = port.container_port;
        check_port(c, container_port, format!("{at}.containerPort"));
        if let Some(host_port) = port.host_port {
            check_port(c, host_port, format!("{at}.hostPort"));
            let same = !host_network || host_port == container_port;
            c.check(same, format!("{at}.hostPort"), || {
                format!("{host_port} is not {container_port}: with hostNetwork they are one port")
            });
        }
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        c.check(matches!(protocol, "TCP" | "UDP"), format!("{at}.protocol"), || {
            format!("{protocol:?} is {UNSUPPORTED} (TCP and UDP are)")
        });
        // With hostNetwork, the container port is the host port.
        if let Some(on_host) = port.host_port.or(host_network.then_some(container_port)) {
            c.check(host_ports.insert((on_host, protocol)), format!("{at}.hostPort"), || {
                format!(
                    "{protocol} port {on_host} on the host is taken by another port of this pod"
                )
            });
        }
        if let Some(name) = &port.name {
            c.check(is_port_name(name), format!("{at}.name"), || {
                format!("{name:?} is not a port name (1-15 lower-case letters, digits and '-')")
            });
            c.check(names.insert(name.as_str()), format!("{at}.name"), || {
                format!("{name:?} is used by another port of this container")
            });
        }
        if let Some(ip) = &port.host_ip {
            c.check(ip.parse::<IpAddr>().is_ok(), format!("{at}.hostIP"), || {
                format!("{ip:?} is not an IP address")
            });
        }
    }
    names
}

/// Checks a container's volume mounts: volumes of the pod, each at its own absolute path.
fn check_mounts(c: &mut Checker, container: &Container, volumes: &HashSet<&str>, path: &str) {
    let mut mount_paths = HashSet::new();
    for (i, mount) in container.volume_mounts.iter().flatten().enumerate() {
        let at = format!("{path}.volumeMounts[{i}]");
        let name = &mount.name;
        c.check(volumes.contains(name.as_str()), format!("{at}.name"), || {
            format!("{name:?} names no volume of this pod")
        });
        let mount_path = &mount.mount_path;
        check_absolute(c, mount_path, format!("{at}.mountPath"));
        c.check(mount_paths.insert(mount_path), format!("{at}.mountPath"), || {
            format!("{mount_path:?} is mounted more than once")
        });
        if let Some(sub_path) = &mount.sub_path {
            c.check(
                !sub_path.starts_with('/') && !sub_path.split('/').any(|part| part == ".."),
                format!("{at}.subPath"),
                || format!("{sub_path:?} is not a relative path without '..'"),
            );
        }
        if let Some(propagation) = &mount.mount_propagation {
            let at = format!("{at}.mountPropagation");
            check_one_of(c, propagation, &["None", "HostToContainer", "Bidirectional"], at.clone());
            // As the API server: only a privileged container may mount back onto the node.
            let privileged =
                container.security_context.as_ref().and_then(|s| s.privileged) == Some(true);
            c.check(propagation != "Bidirectional" || privileged, at, || {
                "Bidirectional needs a privileged container (securityContext.privileged)".into()
            });
        }
    }
}

/// An IANA service name, as Kubernetes names ports: 1-15 lower-case letters, digits and inner
/// single '-', at least one letter.
fn is_port_name(name: &str) -> bool {
    name.len() <= 15
        && is_object_name(name)
        && !name.contains("--")
        && name.contains(|ch: char| ch.is_ascii_lowercase())
}

/// Checks requests and limits: quantities that parse, and no request above its limit.
fn check_resources(c: &mut Checker, resources: &ResourceRequirements, path: &str) {
    type Parser = fn(&Quantity) -> Result<u64, String>;
    // ephemeral-storage is a number of bytes, as memory is.
    let parsers: [(&str, Parser); 3] =
        [("cpu", cpu_millis), ("memory", memory_bytes), ("ephemeral-storage", memory_bytes)];
    for (resource, parse) in parsers {
        let amounts = [("requests", &resources.requests), ("limits", &resources.limits)].map(
            |(kind, list)| {
                let quantity = list.as_ref()?.get(resource)?;
                parse(quantity)
                    .map_err(|reason| c.fail(format!("{path}.{kind}.{resource}"), reason))
                    .ok()
                    .map(|amount| (amount, quantity))
            },
        );
        if let [Some((request, _)), Some((limit, quantity))] = amounts {
            c.check(request <= limit, format!("{path}.requests.{resource}"), || {
                format!("is more than the limit, {:?}", quantity.0)
            });
        }
    }
}

/// Checks a probe: one handler, ports that exist, counts that are not negative. `one_success`:
/// liveness and startup probes, which Kubernetes allows a successThreshold of 1 only.
fn check_probe(
    c: &mut Checker,
    probe: &Probe,
    one_success: bool,
    port_names: &HashSet<&str>,
    path: &str,
) {
    let action = Action {
        exec: probe.exec.as_ref(),
        http_get: probe.http_get.as_ref(),
        tcp_socket: probe.tcp_socket.as_ref(),
        other: probe.grpc.is_some(),
        names: "exec, httpGet, tcpSocket and grpc",
    };
    check_action(c, &action, port_names, path);
    if let Some(grpc) = &probe.grpc {
        check_port(c, grpc.port, format!("{path}.grpc.port"));
    }
    for (field, value) in [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("periodSeconds", probe.period_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        if let Some(value) = value {
            c.check(value >= 0, format!("{path}.{field}"), || format!("{value} is negative"));
        }
    }
    if let Some(threshold) = probe.success_threshold {
        c.check(!one_success || threshold == 1, format!("{path}.successThreshold"), || {
            format!("{threshold} is not 1: liveness and startup probes succeed once")
        });
    }
}

/// What a probe or a lifecycle hook does.
struct Action<'a> {
    exec: Option<&'a ExecAction>,
    http_get: Option<&'a HTTPGetAction>,
    tcp_socket: Option<&'a TCPSocketAction>,
    /// Another handler is set (a hook's sleep; a probe's grpc).
    other: bool,
    /// The handlers it may have, for messages.
    names: &'static str,
}

/// Checks a probe's or hook's action: one handler, its command, its port.
fn check_action(c: &mut Checker, action: &Action<'_>, port_names: &HashSet<&str>, path: &str) {
    let set = [
        action.exec.is_some(),
        action.http_get.is_some(),
        action.tcp_socket.is_some(),
        action.other,
    ];
    let names = action.names;
    match set.iter().filter(|set| **set).count() {
        0 => c.fail(path, format!("needs a handler: one of {names}")),
        1 => {}
        _ => c.fail(path, format!("has more than one handler: keep one of {names}")),
    }
    if let Some(exec) = action.exec {
        c.check(
            exec.command.as_ref().is_some_and(|command| !command.is_empty()),
            format!("{path}.exec.command"),
            || "is required".to_string(),
        );
    }
    let targets = [
        action.http_get.map(|http| ("httpGet", &http.port)),
        action.tcp_socket.map(|tcp| ("tcpSocket", &tcp.port)),
    ];
    for (handler, port) in targets.into_iter().flatten() {
        let reason = match port {
            IntOrString::Int(port) if !(1..=65535).contains(port) => {
                format!("{port} is outside 1..65535")
            }
            IntOrString::String(name) if !port_names.contains(name.as_str()) => {
                format!("{name:?} names no port of this container")
            }
            _ => continue,
        };
        c.fail(format!("{path}.{handler}.port"), reason);
    }
    if let Some(scheme) = action.http_get.and_then(|http| http.scheme.as_ref()) {
        check_one_of(c, scheme, &["HTTP", "HTTPS"], format!("{path}.httpGet.scheme"));
    }
}

/// Checks a container's postStart and preStop hooks.
fn check_lifecycle(c: &mut Checker, container: &Container, port_names: &HashSet<&str>, path: &str) {
    let Some(lifecycle) = &container.lifecycle else { return };
    for (name, hook) in [("postStart", &lifecycle.post_start), ("preStop", &lifecycle.pre_stop)] {
        let Some(hook) = hook else { continue };
        let at = format!("{path}.lifecycle.{name}");
        let action = Action {
            exec: hook.exec.as_ref(),
            http_get: hook.http_get.as_ref(),
            tcp_socket: hook.tcp_socket.as_ref(),
            other: hook.sleep.is_some(),
            names: "exec, httpGet, tcpSocket and sleep",
        };
        check_action(c, &action, port_names, &at);
        if let Some(sleep) = &hook.sleep {
            let seconds = sleep.seconds;
            c.check(seconds > 0, format!("{at}.sleep.seconds"), || {
                format!("{seconds} is not positive")
            });
        }
    }
}

/// A memory quantity (`64Mi`, `1G`, `1.5Gi`, `129e6`, `1048576`) in bytes, rounded up as
/// Kubernetes does. Milli-bytes (`100m`, a common slip for `100Mi`) are refused; so is anything
/// over 2^63-1, the most Kubernetes and cgroups take.
pub fn memory_bytes(quantity: &Quantity) -> Result<u64, String> {
    let number = Number::parse(&quantity.0)?;
    if number.milli {
        return Err(format!(
            "{:?} is in thousandths of a byte: write Mi for mebibytes",
            quantity.0
        ));
    }
    number.rounded_up(0, &quantity.0)
}

/// A CPU quantity (`250m`, `0.5`, `2`) in thousandths of a CPU, rounded up as Kubernetes does
/// (`0.1m` is `1m`); at most 2^63-1.
pub fn cpu_millis(quantity: &Quantity) -> Result<u64, String> {
    Number::parse(&quantity.0)?.rounded_up(3, &quantity.0)
}

/// A Kubernetes quantity as an exact number: `digits` × 10^`exp10` × 1024^`exp1024`.
struct Number {
    digits: u128,
    exp10: i32,
    exp1024: u32,
    /// Whether the suffix was `m`.
    milli: bool,
}

impl Number {
    /// Parses `<number><suffix>` (see [`Quantity`]); the sign may only be `+`.
    fn parse(text: &str) -> Result<Number, String> {
        let refused = || format!("{text:?} is not a quantity (like 64Mi, 1G, 250m or 0.5)");
        if text.starts_with('-') {
            return Err(format!("{text:?} is negative"));
        }
        let unsigned = text.strip_prefix('+').unwrap_or(text);
        let end =
            unsigned.find(|ch: char| !ch.is_ascii_digit() && ch != '.').unwrap_or(unsigned.len());
        let (number, suffix) = unsigned.split_at(end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.len() + fraction.len() == 0 || fraction.contains('.') {
            return Err(refused());
        }
        let mut digits = 0u128;
        for digit in whole.bytes().chain(fraction.bytes()) {
            digits = digits
                .checked_mul(10)
                .and_then(|d| d.checked_add(u128::from(digit - b'0')))
                .ok_or_else(|| format!("{text:?} has too many digits"))?;
        }
        let mut exp10 = -i32::try_from(fraction.len()).map_err(|_| refused())?;
        let (scale10, exp1024) = match suffix {
            "" => (0, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 1),
            "Mi" => (0, 2),
            "Gi" => (0, 3),
            "Ti" => (0, 4),
            "Pi" => (0, 5),
            "Ei" => (0, 6),
            exponent if exponent.starts_with(['e', 'E']) => {
                (exponent[1..].parse::<i32>().map_err(|_| refused())?, 0)
            }
            _ => return Err(refused()),
        };
        exp10 = exp10.checked_add(scale10).ok_or_else(refused)?;
        Ok(Number { digits, exp10, exp1024, milli: suffix == "m" })
    }

    /// The number × 10^`scale10`, rounded up to a whole, at most 2^63-1.
    fn rounded_up(&self, scale10: i32, text: &str) -> Result<u64, String> {
        if self.digits == 0 {
            return Ok(0);
        }
        let too_large = || format!("{text:?} is too large (at most 2^63-1)");
        let exp10 = self.exp10.saturating_add(scale10);
        let mut value = 1024u128
            .checked_pow(self.exp1024)
            .and_then(|scale| self.digits.checked_mul(scale))
            .ok_or_else(too_large)?;
        if exp10 >= 0 {
            value = 10u128
                .checked_pow(exp10.unsigned_abs())
                .and_then(|scale| value.checked_mul(scale))
                .ok_or_else(too_large)?;
        } else {
            value = match 10u128.checked_pow(exp10.unsigned_abs()) {
                Some(scale) => value.div_ceil(scale),
                // Past 10^38, any positive number rounds up to 1.
                None => u128::from(value > 0),
            };
        }
        u64::try_from(value).ok().filter(|v| i64::try_from(*v).is_ok()).ok_or_else(too_large)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod using every supported field.
    const FULL: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: edge
  labels: {app.kubernetes.io/name: web, tier: front}
  annotations: {cairn.example/note: "any text"}
spec:
  restartPolicy: OnFailure
  hostNetwork: false
  hostname: web-1
  terminationGracePeriodSeconds: 10
  volumes:
    - name: data
      hostPath: {path: /var/lib/web, type: DirectoryOrCreate}
    - name: scratch
      emptyDir: {medium: Memory, sizeLimit: 64Mi}
    - name: defaulted
      emptyDir: {}
  containers:
    - name: web
      image: docker.io/library/nginx:1.27
      imagePullPolicy: IfNotPresent
      command: [nginx]
      args: [-g, daemon off;]
      workingDir: /srv
      env: [{name: MODE, value: edge}, {name: EMPTY}]
      ports:
        - {name: http, containerPort: 80, hostPort: 8080, protocol: TCP, hostIP: 0.0.0.0}
        - {containerPort: 53, protocol: UDP}
      volumeMounts:
        - {name: data, mountPath: /data, readOnly: true, subPath: site}
        - {name: scratch, mountPath: /tmp}
      resources:
        requests: {cpu: 100m, memory: 64Mi}
        limits: {cpu: 2, memory: "1e9"}
      securityContext:
        runAsUser: 1000
        runAsGroup: 1000
        privileged: false
        readOnlyRootFilesystem: true
        allowPrivilegeEscalation: false
        capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
          host: 127.0.0.1
          scheme: HTTP
          httpHeaders: [{name: X-Probe, value: "1"}]
        initialDelaySeconds: 5
        periodSeconds: 10
        timeoutSeconds: 1
        successThreshold: 1
        failureThreshold: 3
      readinessProbe: {tcpSocket: {port: 80, host: 127.0.0.1}, successThreshold: 2}
      startupProbe: {exec: {command: [/bin/true]}}
      terminationMessagePath: /dev/termination-log
    - name: sidecar
      image: busybox
      nodeName: null
"#;

    /// The smallest pod, to which tests add one line (container fields at 4 spaces, spec
    /// fields at 2).
    const MINIMAL: &str =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - name: web\n    image: busybox\n";

    fn problems(yaml: &str) -> Vec<String> {
        match decode_pod(yaml.as_bytes(), "web.yaml") {
            Ok(_) => Vec::new(),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    fn with(line: &str) -> Vec<String> {
        problems(&format!("{MINIMAL}{line}\n"))
    }

    fn quantity(text: &str) -> Quantity {
        Quantity(text.to_string())
    }

    #[test]
    fn a_pod_using_every_supported_field_passes() {
        let pod = decode_pod(FULL.as_bytes(), "web.yaml").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web"));
        assert_eq!(pod.spec.unwrap().containers.len(), 2);
        assert_eq!(problems(MINIMAL), Vec::<String>::new());
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        assert_eq!(
            with("    imagePullPolcy: Always"),
            ["web.yaml.spec.containers[0].imagePullPolcy: unknown field"]
        );
        let yaml = MINIMAL.replace("metadata:", "metdata: {name: x}\nmetadata:");
        assert_eq!(problems(&yaml), ["web.yaml.metdata: unknown field"]);
        assert_eq!(
            with("    resources: {limits: {memory: 64Mi, cpu: 100m}, requets: {cpu: 1}}"),
            ["web.yaml.spec.containers[0].resources.requets: unknown field"]
        );
        assert_eq!(
            with("  volumes: [{name: v, hostPath: {path: /var/v, kind: Directory}}]"),
            ["web.yaml.spec.volumes[0].hostPath.kind: unknown field"]
        );
    }

    #[test]
    fn known_fields_the_kubelet_lacks_are_refused() {
        let refused = |line: &str, want: &str| assert_eq!(with(line), [want], "{line}");
        refused(
            "  initContainers: [{name: init, image: busybox, restartPolicy: OnFailure}]",
            "web.yaml.spec.initContainers[0].restartPolicy: \"OnFailure\": only Always is supported, which makes the init container a sidecar",
        );
        // A sidecar runs beside the containers: probes and hooks are its own.
        let sidecar = "  initContainers: [{name: proxy, image: busybox, restartPolicy: Always, readinessProbe: {tcpSocket: {port: 80}}, lifecycle: {preStop: {sleep: {seconds: 1}}}}]";
        assert_eq!(with(sidecar), Vec::<String>::new());
        refused(
            "  initContainers: [{name: init, image: busybox, readinessProbe: {tcpSocket: {port: 80}}}]",
            "web.yaml.spec.initContainers[0].readinessProbe: may not be set for an init container, which runs to completion",
        );
        refused(
            "  initContainers: [{name: web, image: busybox}]",
            "web.yaml.spec.containers[0].name: \"web\" is used by another container of this pod",
        );
        refused(
            "  volumes: [{name: v, emptyDir: {}}, {name: data, nfs: {server: s, path: /}}]",
            "web.yaml.spec.volumes[1].nfs: not supported by Cairn's kubelet (hostPath, emptyDir, configMap, secret, persistentVolumeClaim and downwardAPI are)",
        );
        assert_eq!(
            with("    livenessProbe: {grpc: {port: 9000, service: ready}}"),
            Vec::<String>::new()
        );
        assert_eq!(
            with(concat!(
                "    volumeMounts: [{name: root, mountPath: /host, mountPropagation: HostToContainer}]\n",
                "  volumes: [{name: root, hostPath: {path: /}}]",
            )),
            Vec::<String>::new()
        );
        refused(
            "    volumeMounts: [{name: v, mountPath: /v, mountPropagation: Bidirectional}]\n  volumes: [{name: v, emptyDir: {}}]",
            "web.yaml.spec.containers[0].volumeMounts[0].mountPropagation: Bidirectional needs a privileged container (securityContext.privileged)",
        );
        refused(
            "    livenessProbe: {grpc: {port: 9000}, tcpSocket: {port: 9000}}",
            "web.yaml.spec.containers[0].livenessProbe: has more than one handler: keep one of exec, httpGet, tcpSocket and grpc",
        );
        refused(
            "  volumes: [{name: v, hostPath: {path: /var/v}, emptyDir: {}}]",
            "web.yaml.spec.volumes[0]: hostPath and emptyDir together are not supported by Cairn's kubelet: a volume has one source",
        );
        // On disk, a sizeLimit is enforced by eviction, as ephemeral-storage limits are.
        for accepted in [
            "  volumes: [{name: v, emptyDir: {sizeLimit: 1Gi}}]",
            "  volumes: [{name: v, emptyDir: {medium: \"\", sizeLimit: 1Gi}}]",
        ] {
            assert_eq!(with(accepted), Vec::<String>::new(), "{accepted}");
        }
        refused(
            "  volumes: [{name: v, emptyDir: {sizeLimit: 1.5m}}]",
            "web.yaml.spec.volumes[0].emptyDir.sizeLimit: \"1.5m\" is in thousandths of a byte: write Mi for mebibytes",
        );
        refused(
            "  volumes: [{name: v, emptyDir: {medium: HugePages-2Mi, sizeLimit: 4Mi}}]",
            "web.yaml.spec.volumes[0].emptyDir.medium: \"HugePages-2Mi\" is not supported by Cairn's kubelet: it sets no huge pages aside for pods (\"\" and \"Memory\" are)",
        );
        refused(
            "  volumes: [{name: v, emptyDir: {medium: Disk}}]",
            "web.yaml.spec.volumes[0].emptyDir.medium: \"Disk\" is not supported by Cairn's kubelet (\"\" and \"Memory\" are)",
        );
        refused(
            "  volumes: [{name: v, emptyDir: {medium: Memory, sizeLimit: 64m}}]",
            "web.yaml.spec.volumes[0].emptyDir.sizeLimit: \"64m\" is in thousandths of a byte: write Mi for mebibytes",
        );
        refused(
            "    volumeMounts: [{name: v, mountPath: /v, subPathExpr: $(POD)}]\n  volumes: [{name: v, emptyDir: {}}]",
            "web.yaml.spec.containers[0].volumeMounts[0].subPathExpr: not supported by Cairn's kubelet",
        );
        refused(
            "    volumeMounts: [{name: v, mountPath: /v, subPath: a/../../etc}]\n  volumes: [{name: v, emptyDir: {}}]",
            "web.yaml.spec.containers[0].volumeMounts[0].subPath: \"a/../../etc\" is not a relative path without '..'",
        );
        assert_eq!(
            with("  volumes: [{name: v, emptyDir: {medium: Memory, sizeLimit: 64Mi}}]"),
            Vec::<String>::new()
        );
        refused(
            "    resources: {limits: {nvidia.com/gpu: 1}}",
            "web.yaml.spec.containers[0].resources.limits.\"nvidia.com/gpu\": not supported by Cairn's kubelet (cpu, memory and ephemeral-storage are)",
        );
        assert_eq!(
            with("    readinessProbe: {httpGet: {port: 443, scheme: HTTPS}}"),
            Vec::<String>::new()
        );
        refused(
            "    readinessProbe: {httpGet: {port: 80, scheme: FTP}}",
            "web.yaml.spec.containers[0].readinessProbe.httpGet.scheme: \"FTP\" is not one of HTTP, HTTPS",
        );
        refused(
            "    terminationMessagePolicy: Always",
            "web.yaml.spec.containers[0].terminationMessagePolicy: \"Always\" is not one of File, FallbackToLogsOnError",
        );
        refused("status: {phase: Running}", "web.yaml.status: not supported by Cairn's kubelet");
        refused(
            "  hostAliases: [{ip: 127.0.0.1, hostnames: [db]}]",
            "web.yaml.spec.hostAliases: not supported by Cairn's kubelet",
        );
        // Null is absent, as in Kubernetes.
        assert_eq!(with("  hostAliases: null"), Vec::<String>::new());
        assert_eq!(
            with("  affinity: {podAntiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchLabels: {app: zk}}, topologyKey: kubernetes.io/hostname}]}}"),
            Vec::<String>::new()
        );
        refused(
            "  affinity: {podAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{topologyKey: zone, namespaceSelector: {}}]}}",
            "web.yaml.spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].namespaceSelector: not supported by Cairn's kubelet (labelSelector, namespaces and topologyKey are)",
        );
        refused(
            "  affinity: {podAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchExpressions: [{key: app, operator: In}]}, topologyKey: zone}]}}",
            "web.yaml.spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].values: In needs at least one value",
        );
        refused(
            "  affinity: {podAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchLabels: {app: a}}, topologyKey: \"\"}]}}",
            "web.yaml.spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: is required",
        );
    }

    #[test]
    fn config_maps_and_secrets_are_read_as_volumes_and_variables() {
        let fine = concat!(
            "    envFrom: [{configMapRef: {name: settings}, prefix: CFG_}, {secretRef: {name: creds, optional: true}}]\n",
            "    env:\n",
            "      - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}\n",
            "      - {name: PASS, valueFrom: {secretKeyRef: {name: creds, key: pass.word, optional: true}}}\n",
            "  volumes:\n",
            "    - {name: cfg, configMap: {name: settings, defaultMode: 0440, items: [{key: a.conf, path: conf/a.conf, mode: 0400}]}}\n",
            "    - {name: tls, secret: {secretName: web-tls, optional: false}}\n",
        );
        assert_eq!(with(fine), Vec::<String>::new());
        let wrong = concat!(
            "    envFrom: [{configMapRef: {name: a}, secretRef: {name: b}}, {prefix: X}]\n",
            "    env:\n",
            "      - {name: A, valueFrom: {configMapKeyRef: {name: Settings, key: /etc}, fieldRef: {fieldPath: metadata.name}}}\n",
            "  volumes:\n",
            "    - {name: cfg, configMap: {name: s, defaultMode: 1000, items: [{key: a, path: ../a}, {key: b, path: ../a}]}}\n",
            "    - {name: tls, secret: {}, emptyDir: {}}\n",
        );
        let (c, v) = ("web.yaml.spec.containers[0]", "web.yaml.spec.volumes");
        assert_eq!(
            with(wrong),
            [
                format!("{v}[0].configMap.defaultMode: 1000 is not a file mode (0 to 0777, in octal, or 511 in decimal)"),
                format!("{v}[0].configMap.items[0].path: \"../a\" is not a relative path without '..'"),
                format!("{v}[0].configMap.items[1].path: \"../a\" is not a relative path without '..'"),
                format!("{v}[0].configMap.items[1].path: \"../a\" is used by another item of this volume"),
                format!("{v}[1]: emptyDir and secret together are not supported by Cairn's kubelet: a volume has one source"),
                format!("{v}[1].secret.secretName: is required"),
                format!("{c}.env[0].valueFrom: needs exactly one of fieldRef, resourceFieldRef, configMapKeyRef and secretKeyRef"),
                format!("{c}.env[0].valueFrom.configMapKeyRef.name: \"Settings\" is not the name of a ConfigMap or Secret (a DNS subdomain)"),
                format!("{c}.env[0].valueFrom.configMapKeyRef.key: \"/etc\" is not a key (1-253 letters, digits, '-', '_' and '.')"),
                format!("{c}.envFrom[0]: needs exactly one of configMapRef and secretRef"),
                format!("{c}.envFrom[1]: needs one of configMapRef and secretRef"),
            ]
        );
    }

    #[test]
    fn variables_from_the_pod_are_checked() {
        let env = concat!(
            "    env:\n",
            "      - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}\n",
            "      - {name: APP, valueFrom: {fieldRef: {apiVersion: v1, fieldPath: \"metadata.labels['app']\"}}}\n",
            "      - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}\n",
            "      - {name: CPU, valueFrom: {resourceFieldRef: {containerName: web, resource: requests.cpu, divisor: 1m}}}\n",
        );
        assert_eq!(with(env), Vec::<String>::new());
        let wrong = concat!(
            "    env:\n",
            "      - {name: A, value: x, valueFrom: {fieldRef: {fieldPath: status.phase}}}\n",
            "      - {name: B, valueFrom: {resourceFieldRef: {containerName: db, resource: limits.gpu}}}\n",
            "      - {name: C, valueFrom: {}}\n",
        );
        let at = "web.yaml.spec.containers[0].env";
        assert_eq!(
            with(wrong),
            [
                format!("{at}[0].valueFrom: and a non-empty value together: a variable has one source"),
                format!("{at}[0].valueFrom.fieldRef.fieldPath: \"status.phase\" is not a field a variable can hold (metadata.name, namespace, uid, labels['KEY'], annotations['KEY'], spec.nodeName, serviceAccountName, status.hostIP(s), podIP(s))"),
                format!("{at}[1].valueFrom.resourceFieldRef.resource: \"limits.gpu\" is not a resource Cairn's kubelet sets (limits.cpu, limits.memory, requests.cpu, requests.memory)"),
                format!("{at}[1].valueFrom.resourceFieldRef.containerName: \"db\" names no container of this pod"),
                format!("{at}[2].valueFrom: needs one of fieldRef, resourceFieldRef, configMapKeyRef and secretKeyRef"),
            ]
        );
    }

    #[test]
    fn lifecycle_hooks_have_one_handler() {
        let fine = "    lifecycle: {postStart: {exec: {command: [touch, /ready]}}, preStop: {sleep: {seconds: 5}}}";
        assert_eq!(with(fine), Vec::<String>::new());
        let wrong =
            "    lifecycle: {postStart: {}, preStop: {sleep: {seconds: 0}, httpGet: {port: web}}}";
        let at = "web.yaml.spec.containers[0].lifecycle";
        assert_eq!(
            with(wrong),
            [
                format!("{at}.postStart: needs a handler: one of exec, httpGet, tcpSocket and sleep"),
                format!("{at}.preStop: has more than one handler: keep one of exec, httpGet, tcpSocket and sleep"),
                format!("{at}.preStop.httpGet.port: \"web\" names no port of this container"),
                format!("{at}.preStop.sleep.seconds: 0 is not positive"),
            ]
        );
    }

    #[test]
    fn dns_and_namespaces_are_checked_as_the_api_server_does() {
        let fine = "  dnsPolicy: None\n  dnsConfig: {nameservers: [192.0.2.53], searches: [lan], options: [{name: ndots, value: \"2\"}]}\n  hostPID: true\n  hostIPC: true\n  enableServiceLinks: false";
        assert_eq!(with(fine), Vec::<String>::new());
        let wrong = "  dnsPolicy: None\n  dnsConfig: {options: [{value: \"2\"}]}\n  hostPID: true\n  shareProcessNamespace: true";
        assert_eq!(
            with(wrong),
            [
                "web.yaml.spec.dnsConfig.nameservers: needs at least one nameserver with dnsPolicy None",
                "web.yaml.spec.dnsConfig.options[0].name: is required",
                "web.yaml.spec.shareProcessNamespace: and hostPID together: the pod shares the node's processes or its own",
            ]
        );
        let many = "  dnsPolicy: Sometimes\n  dnsConfig: {nameservers: [1.1.1.1, 8.8.8.8, 9.9.9.9, dns.example]}";
        assert_eq!(
            with(many),
            [
                "web.yaml.spec.dnsPolicy: \"Sometimes\" is not one of ClusterFirst, ClusterFirstWithHostNet, Default, None",
                "web.yaml.spec.dnsConfig.nameservers: has 4 entries; a resolver reads at most 3",
                "web.yaml.spec.dnsConfig.nameservers[3]: \"dns.example\" is not an IP address",
            ]
        );
    }

    #[test]
    fn scheduling_fields_are_accepted_and_their_values_checked() {
        let accepted = concat!(
            "  nodeSelector: {kubernetes.io/os: linux}\n",
            "  nodeName: cairn-1\n",
            "  schedulerName: default-scheduler\n",
            "  priorityClassName: system-node-critical\n",
            "  tolerations: [{operator: Exists, effect: NoSchedule}]\n",
            "  topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}]\n",
            "  serviceAccountName: metallb-speaker\n",
            "  automountServiceAccountToken: false\n",
            "  affinity:\n",
            "    nodeAffinity:\n",
            "      requiredDuringSchedulingIgnoredDuringExecution:\n",
            "        nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64, arm64]}]}]\n",
            "      preferredDuringSchedulingIgnoredDuringExecution:\n",
            "        - {weight: 10, preference: {matchExpressions: [{key: zone, operator: Exists}]}}\n",
            "    podAntiAffinity:\n",
            "      preferredDuringSchedulingIgnoredDuringExecution:\n",
            "        - {weight: 100, podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}}\n",
        );
        assert_eq!(with(accepted), Vec::<String>::new());
        let required = concat!(
            "  affinity:\n",
            "    nodeAffinity:\n",
            "      requiredDuringSchedulingIgnoredDuringExecution:\n",
            "        nodeSelectorTerms:\n",
            "          - matchExpressions:\n",
            "              - {key: a, operator: In}\n",
            "              - {key: b, operator: Exists, values: [x]}\n",
            "              - {key: c, operator: Gt, values: [many]}\n",
            "              - {key: d, operator: Near, values: [x]}\n",
            "            matchFields: [{key: metadata.labels, operator: Exists}]\n",
        );
        let path = "web.yaml.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]";
        assert_eq!(
            with(required),
            [
                format!("{path}.matchExpressions[0].values: needs at least one value with In and NotIn"),
                format!("{path}.matchExpressions[1].values: must be empty with Exists and DoesNotExist"),
                format!("{path}.matchExpressions[2].values: must be one integer with Gt and Lt"),
                format!("{path}.matchExpressions[3].operator: \"Near\" is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt"),
                format!("{path}.matchFields[0].key: \"metadata.labels\" is not a field a node is selected by (metadata.name is)"),
                format!("{path}.matchFields[0].operator: \"Exists\" is not In or NotIn, the operators of fields"),
                format!("{path}.matchFields[0].values: must hold exactly one node name"),
            ]
        );
    }

    #[test]
    fn values_are_checked() {
        let yaml = MINIMAL.replace("{name: web}", "{name: Web, namespace: a.b}").replace(
            "    image: busybox\n",
            concat!(
                "    image: busybox\n",
                "    ports: [{containerPort: 0, name: http}, {containerPort: 80, hostPort: 70000}]\n",
                "    volumeMounts: [{name: missing, mountPath: data}]\n",
                "    resources: {requests: {memory: 2Gi, cpu: lots}, limits: {memory: 1Gi}}\n",
                "    livenessProbe: {httpGet: {port: metrics}, tcpSocket: {port: 80}}\n",
                "  - name: web\n",
                "    image: \"\"\n",
            ),
        );
        assert_eq!(
            problems(&yaml),
            [
                "web.yaml.metadata.name: \"Web\" is not a DNS label (1-63 lower-case letters, digits and inner '-')",
                "web.yaml.metadata.namespace: \"a.b\" is not a DNS label (1-63 lower-case letters, digits and inner '-')",
                "web.yaml.spec.containers[0].ports[0].containerPort: 0 is outside 1..65535",
                "web.yaml.spec.containers[0].ports[1].hostPort: 70000 is outside 1..65535",
                "web.yaml.spec.containers[0].volumeMounts[0].name: \"missing\" names no volume of this pod",
                "web.yaml.spec.containers[0].volumeMounts[0].mountPath: \"data\" is not an absolute path",
                "web.yaml.spec.containers[0].resources.requests.cpu: \"lots\" is not a quantity (like 64Mi, 1G, 250m or 0.5)",
                "web.yaml.spec.containers[0].resources.requests.memory: is more than the limit, \"1Gi\"",
                "web.yaml.spec.containers[0].livenessProbe: has more than one handler: keep one of exec, httpGet, tcpSocket and grpc",
                "web.yaml.spec.containers[0].livenessProbe.httpGet.port: \"metrics\" names no port of this container",
                "web.yaml.spec.containers[1].name: \"web\" is used by another container of this pod",
                "web.yaml.spec.containers[1].image: is required",
            ]
        );
    }

    #[test]
    fn security_contexts_are_checked_as_the_api_server_does() {
        assert_eq!(
            with("    securityContext: {capabilities: {add: [CAP_NET_RAW, SYS_ADMIN], drop: [SUPER]}}"),
            [
                "web.yaml.spec.containers[0].securityContext.capabilities.add[0]: \"CAP_NET_RAW\": write it without CAP_ (NET_RAW), as Kubernetes does",
                "web.yaml.spec.containers[0].securityContext.capabilities.drop[0]: \"SUPER\" is no Linux capability (like NET_ADMIN, or ALL)",
            ]
        );
        assert_eq!(
            with("    securityContext: {allowPrivilegeEscalation: false, privileged: true, capabilities: {add: [sys_admin]}}"),
            [
                "web.yaml.spec.containers[0].securityContext.allowPrivilegeEscalation: false contradicts privileged: true",
            ]
        );
        assert_eq!(
            with("    securityContext: {runAsUser: -1}"),
            ["web.yaml.spec.containers[0].securityContext.runAsUser: -1 is outside 0..2147483647"]
        );
        let pod_level = concat!(
            "  securityContext:\n",
            "    runAsUser: 0\n",
            "    runAsNonRoot: true\n",
            "    fsGroup: -2\n",
            "    supplementalGroups: [10, 3000000000]\n",
            "    seccompProfile: {type: Localhost, localhostProfile: ../etc/profile.json}\n",
            "    sysctls: [{name: net.core.somaxconn, value: \"1024\"}, {name: vm.swappiness, value: \"1\"}]\n",
            "  hostNetwork: true\n",
        );
        let at = "web.yaml.spec.securityContext";
        assert_eq!(
            with(pod_level),
            [
                format!("{at}.fsGroup: -2 is outside 0..2147483647"),
                format!("{at}.supplementalGroups[1]: 3000000000 is outside 0..2147483647"),
                format!("{at}.seccompProfile.localhostProfile: needs a path relative to /var/lib/kubelet/seccomp, without '..', with type Localhost"),
                format!("{at}.sysctls[0].name: \"net.core.somaxconn\": the pod shares the node's network; set it in machine.sysctls"),
                format!("{at}.sysctls[1].name: \"vm.swappiness\" is no sysctl of the pod's own namespaces (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*): set the node's in machine.sysctls"),
                "web.yaml.spec.containers[0].securityContext: runAsNonRoot contradicts runAsUser: 0 (of the container, or its pod)".to_string(),
            ]
        );
        let fine = concat!(
            "    securityContext: {runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}\n",
            "  securityContext:\n",
            "    runAsUser: 0\n",
            "    fsGroup: 2000\n",
            "    seccompProfile: {type: Unconfined}\n",
            "    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: \"0\"}]\n",
        );
        assert_eq!(with(fine), Vec::<String>::new());
    }

    #[test]
    fn host_network_ports_are_host_ports() {
        let yaml = format!(
            "{MINIMAL}    ports: [{{containerPort: 80, hostPort: 8080}}, {{containerPort: 443}}]\n  - name: two\n    image: busybox\n    ports: [{{containerPort: 53, protocol: UDP}}, {{containerPort: 443}}]\n  hostNetwork: true\n"
        );
        assert_eq!(
            problems(&yaml),
            [
                "web.yaml.spec.containers[0].ports[0].hostPort: 8080 is not 80: with hostNetwork they are one port",
                "web.yaml.spec.containers[1].ports[1].hostPort: TCP port 443 on the host is taken by another port of this pod",
            ]
        );
    }

    #[test]
    fn pods_of_a_list_have_distinct_names() {
        let pod = |yaml: &str| serde_yaml::from_str::<Pod>(yaml).unwrap();
        let web = pod(MINIMAL);
        let other = pod(&MINIMAL.replace("{name: web}", "{name: web, namespace: other}"));
        let mut c = Checker::default();
        check_pods(&mut c, &[web.clone(), other, web], &[], "machine.pods");
        let problems: Vec<String> = c.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            ["machine.pods[2].metadata.name: default/web is defined more than once"]
        );
    }

    #[test]
    fn manifests_keep_the_config_limits_and_name_parse_errors() {
        let anchored = problems(&format!("{MINIMAL}    args: &a [x]\n"));
        assert_eq!(
            anchored,
            ["web.yaml: line 8 column 14: anchors and aliases are not accepted; write values out"]
        );
        let typed = with("    ports: [{containerPort: http}]");
        assert!(
            typed[0]
                .starts_with("web.yaml: spec.containers[0].ports[0].containerPort: invalid type"),
            "{typed:?}"
        );
        let missing = problems("kind: Pod\nmetadata: {name: web}\n");
        assert_eq!(missing, ["web.yaml.apiVersion: is required", "web.yaml.spec: is required"]);
        let wrong = problems(&MINIMAL.replace("kind: Pod", "kind: Deployment"));
        assert!(wrong[0].contains("expected Pod"), "{wrong:?}");
    }

    #[test]
    fn quantities_parse_exactly() {
        for (text, bytes) in [
            ("64Mi", 67_108_864),
            ("1G", 1_000_000_000),
            ("1e9", 1_000_000_000),
            ("129E6", 129_000_000),
            ("1.5Gi", 1_610_612_736),
            ("1048576", 1_048_576),
            ("+1k", 1000),
            ("0.5", 1),
            ("0", 0),
        ] {
            assert_eq!(memory_bytes(&quantity(text)), Ok(bytes), "{text}");
        }
        for (text, millis) in [
            ("250m", 250),
            ("0.5", 500),
            ("2", 2000),
            ("1.5", 1500),
            (".1", 100),
            ("0.1m", 1),
            ("1e-3", 1),
        ] {
            assert_eq!(cpu_millis(&quantity(text)), Ok(millis), "{text}");
        }
        for garbage in
            ["", "abc", "Mi", ".", "1.2.3", "64MB", "1 Gi", "1e", "0x10", "1e99999999999"]
        {
            let error = memory_bytes(&quantity(garbage)).unwrap_err();
            assert!(error.contains("is not a quantity"), "{garbage}: {error}");
            assert!(cpu_millis(&quantity(garbage)).is_err(), "{garbage}");
        }
        assert_eq!(memory_bytes(&quantity("-1Gi")), Err("\"-1Gi\" is negative".to_string()));
        assert!(memory_bytes(&quantity("100m")).unwrap_err().contains("write Mi"));
        assert!(memory_bytes(&quantity("8Ei")).unwrap_err().contains("too large"));
        assert!(cpu_millis(&quantity("1e40")).unwrap_err().contains("too large"));
        assert_eq!(memory_bytes(&quantity("0e999")), Ok(0));
    }
}
