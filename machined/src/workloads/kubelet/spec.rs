//! From a Kubernetes Pod to the CRI requests that run it: the sandbox (network, ports,
//! namespaces, cgroup parent, log directory) and each container (image, command, env,
//! mounts, resources, security context). The config was validated on apply, so values that
//! fail to convert here are errors of the container, reported in its status.

use std::collections::HashMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, Pod, PodSecurityContext, SeccompProfile, SecurityContext,
};

use crate::workloads::cri::v1;

use super::downward::{self, Placement};
use super::objects::LocalObjects;
use super::source::DesiredPod;
use super::volumes::PodVolumes;

/// The cgroup (v2, cgroupfs driver) every pod's cgroup is made under.
const CGROUP_ROOT: &str = "/kubepods";

/// Labels the upstream kubelet puts on sandboxes and containers, so CRI tools read ours.
pub mod label {
    /// The pod's name.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// The pod's namespace.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// The pod's uid.
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// The container's name.
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
}

/// The cgroup of pod `uid` (see [`super::pod_cgroup`]), as a path from the cgroup root.
pub fn cgroup_parent(uid: &str) -> String {
    format!("{CGROUP_ROOT}/pod{uid}")
}

/// A container's log file, relative to the pod's log directory.
pub fn log_path(container: &str, attempt: u32) -> String {
    format!("{container}/{attempt}.log")
}

fn spec(pod: &Pod) -> &k8s_openapi::api::core::v1::PodSpec {
    static EMPTY: std::sync::OnceLock<k8s_openapi::api::core::v1::PodSpec> =
        std::sync::OnceLock::new();
    pod.spec.as_ref().unwrap_or_else(|| EMPTY.get_or_init(Default::default))
}

/// Whether the pod shares the node's network.
pub fn host_network(pod: &Pod) -> bool {
    spec(pod).host_network.unwrap_or(false)
}

/// The pod's containers.
pub fn containers(pod: &Pod) -> &[Container] {
    &spec(pod).containers
}

/// The pod's init containers, which run in order, each to completion, before its containers.
pub fn init_containers(pod: &Pod) -> &[Container] {
    spec(pod).init_containers.as_deref().unwrap_or_default()
}

/// The pod's init containers then its containers: what a worker tracks, by index.
pub fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    init_containers(pod).iter().chain(containers(pod))
}

/// Container `index` of [`all_containers`].
pub fn container_at(pod: &Pod, index: usize) -> &Container {
    all_containers(pod).nth(index).expect("an index of the pod's containers")
}

/// `restartPolicy`, `Always` by default.
pub fn restart_policy(pod: &Pod) -> &str {
    spec(pod).restart_policy.as_deref().unwrap_or("Always")
}

/// `terminationGracePeriodSeconds`, 30 by default.
pub fn grace_seconds(pod: &Pod) -> i64 {
    spec(pod).termination_grace_period_seconds.unwrap_or(30).max(0)
}

fn pod_labels(pod: &DesiredPod) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> =
        pod.pod.metadata.labels.clone().unwrap_or_default().into_iter().collect();
    labels.insert(label::POD_NAME.into(), pod.name.clone());
    labels.insert(label::POD_NAMESPACE.into(), pod.namespace.clone());
    labels.insert(label::POD_UID.into(), pod.uid.clone());
    labels
}

/// The namespaces of the pod's containers: the pod's network and IPC, their own PIDs.
fn namespace_options(pod: &Pod) -> v1::NamespaceOption {
    use v1::NamespaceMode::{Container, Node, Pod as Shared};
    let spec = spec(pod);
    let node = |flag: Option<bool>, otherwise: v1::NamespaceMode| match flag {
        Some(true) => Node,
        _ => otherwise,
    };
    let pid = match spec.share_process_namespace {
        Some(true) => Shared,
        _ => Container,
    };
    v1::NamespaceOption {
        network: node(spec.host_network, Shared).into(),
        pid: node(spec.host_pid, pid).into(),
        ipc: node(spec.host_ipc, Shared).into(),
        ..Default::default()
    }
}

/// The resolver settings of `pod`'s sandbox; None leaves the node's (`node_resolv`, the text
/// of its resolv.conf) as they are, which is what a pod gets with no `dnsConfig` and any
/// policy but `None`: this node has no cluster DNS. With `None` the pod's `dnsConfig` is all;
/// with another policy it adds to the node's (options replaced by name), as the upstream
/// kubelet merges them.
pub fn dns_config(pod: &Pod, node_resolv: &str) -> Option<v1::DnsConfig> {
    use cairn_api::config::dns::{MAX_NAMESERVERS, MAX_SEARCHES};
    let spec = spec(pod);
    let pods = spec.dns_config.as_ref()?;
    let option = |name: &str, value: Option<&str>| match value {
        Some(value) => format!("{name}:{value}"),
        None => name.to_string(),
    };
    let mut config = v1::DnsConfig::default();
    if spec.dns_policy.as_deref() != Some("None") {
        for line in node_resolv.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => config.servers.extend(words.next().map(String::from)),
                Some("search" | "domain") => config.searches.extend(words.map(String::from)),
                Some("options") => config.options.extend(words.map(String::from)),
                _ => {}
            }
        }
    }
    config.servers.extend(pods.nameservers.iter().flatten().cloned());
    config.searches.extend(pods.searches.iter().flatten().cloned());
    for wanted in pods.options.iter().flatten() {
        let name = wanted.name.clone().unwrap_or_default();
        config.options.retain(|o| o.split(':').next() != Some(name.as_str()));
        config.options.push(option(&name, wanted.value.as_deref()));
    }
    for list in [&mut config.servers, &mut config.searches] {
        let mut seen = std::collections::HashSet::new();
        list.retain(|entry| seen.insert(entry.clone()));
    }
    config.servers.truncate(MAX_NAMESERVERS);
    config.searches.truncate(MAX_SEARCHES);
    Some(config)
}

/// The sandbox of `pod`, attempt `attempt`, its containers logging into `log_directory`.
pub fn sandbox_config(
    pod: &DesiredPod,
    attempt: u32,
    log_directory: &Path,
) -> v1::PodSandboxConfig {
    let spec = spec(&pod.pod);
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| v1::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => v1::Protocol::Udp,
                _ => v1::Protocol::Tcp,
            }
            .into(),
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or_default(),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let privileged = spec
        .containers
        .iter()
        .any(|c| c.security_context.as_ref().and_then(|s| s.privileged).unwrap_or(false));
    let hostname = if host_network(&pod.pod) {
        String::new()
    } else {
        spec.hostname.clone().unwrap_or_else(|| pod.name.clone())
    };
    let context = spec.security_context.clone().unwrap_or_default();
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            attempt,
        }),
        hostname,
        log_directory: log_directory.to_string_lossy().into_owned(),
        port_mappings,
        labels: pod_labels(pod),
        annotations: pod.pod.metadata.annotations.clone().unwrap_or_default().into_iter().collect(),
        linux: Some(v1::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(&pod.uid),
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(&pod.pod)),
                privileged,
                run_as_user: context.run_as_user.map(|value| v1::Int64Value { value }),
                run_as_group: context.run_as_group.map(|value| v1::Int64Value { value }),
                supplemental_groups: supplemental_groups(&pod.pod),
                seccomp: context.seccomp_profile.as_ref().map(security_profile),
                ..Default::default()
            }),
            sysctls: context
                .sysctls
                .iter()
                .flatten()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The groups every process of the pod joins: its `supplementalGroups` and its `fsGroup`.
fn supplemental_groups(pod: &Pod) -> Vec<i64> {
    let context = spec(pod).security_context.as_ref();
    let mut groups: Vec<i64> =
        context.and_then(|c| c.supplemental_groups.clone()).unwrap_or_default();
    if let Some(group) = context.and_then(|c| c.fs_group).filter(|g| !groups.contains(g)) {
        groups.push(group);
    }
    groups
}

/// The pod's `fsGroup`, which owns its emptyDirs.
pub fn fs_group(pod: &Pod) -> Option<u32> {
    let group = spec(pod).security_context.as_ref()?.fs_group?;
    u32::try_from(group).ok()
}

/// A seccomp profile as CRI takes it; a Localhost one is a file under the kubelet's
/// profile root.
fn security_profile(profile: &SeccompProfile) -> v1::SecurityProfile {
    use cairn_api::config::security_context::SECCOMP_PROFILE_ROOT;
    use v1::security_profile::ProfileType;
    let (kind, localhost_ref) = match profile.type_.as_str() {
        "Localhost" => (
            ProfileType::Localhost,
            format!(
                "{SECCOMP_PROFILE_ROOT}/{}",
                profile.localhost_profile.as_deref().unwrap_or_default()
            ),
        ),
        "Unconfined" => (ProfileType::Unconfined, String::new()),
        _ => (ProfileType::RuntimeDefault, String::new()),
    };
    v1::SecurityProfile { profile_type: kind.into(), localhost_ref }
}

/// The container's security setting `field`, else the pod's, as Kubernetes merges them.
fn effective<T: Clone>(
    pod: &Pod,
    container: &Container,
    of_container: impl Fn(&SecurityContext) -> Option<T>,
    of_pod: impl Fn(&PodSecurityContext) -> Option<T>,
) -> Option<T> {
    container
        .security_context
        .as_ref()
        .and_then(&of_container)
        .or_else(|| spec(pod).security_context.as_ref().and_then(&of_pod))
}

/// Whether `container` asks to run as non-root with no user of its own (nor its pod's): then
/// its image's user decides, which the kubelet must look up.
pub fn needs_image_user(pod: &Pod, container: &Container) -> bool {
    let non_root = effective(pod, container, |s| s.run_as_non_root, |s| s.run_as_non_root);
    let user = effective(pod, container, |s| s.run_as_user, |s| s.run_as_user);
    non_root == Some(true) && user.is_none()
}

/// Why a container that must run as non-root cannot start from an image whose user is
/// `uid` (numeric) or `username` (the image config's `User`, when not numeric); as the
/// upstream kubelet words it.
pub fn image_user_problem(uid: Option<i64>, username: &str) -> Option<String> {
    match (uid, username) {
        (Some(0), _) | (None, "") => {
            Some("container has runAsNonRoot and image will run as root".into())
        }
        (None, name) => Some(format!(
            "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify \
             user is non-root"
        )),
        (Some(_), _) => None,
    }
}

/// The CFS period of `cpu.max`, in microseconds (the kernel's default, and upstream's).
pub const CPU_PERIOD: u64 = 100_000;

/// `millis` of CPU as a quota per [`CPU_PERIOD`], as upstream's MilliCPUToQuota: at least
/// 1 ms.
pub fn cpu_quota(millis: u64) -> u64 {
    (millis * CPU_PERIOD / 1000).max(1_000)
}

/// `millis` of CPU as shares, as upstream's MilliCPUToShares: 1024 per CPU, at least 2.
pub fn cpu_shares(millis: u64) -> u64 {
    (millis * 1024 / 1000).max(2)
}

/// CPU and memory limits and shares of a container, as cgroup values.
fn resources(container: &Container) -> Result<v1::LinuxContainerResources, String> {
    use cairn_api::config::pod::{cpu_millis, memory_bytes};
    let mut out = v1::LinuxContainerResources::default();
    let Some(resources) = &container.resources else { return Ok(out) };
    let limits = resources.limits.clone().unwrap_or_default();
    let requests = resources.requests.clone().unwrap_or_default();
    if let Some(cpu) = limits.get("cpu") {
        out.cpu_period = CPU_PERIOD as i64;
        out.cpu_quota = cpu_quota(cpu_millis(cpu)?) as i64;
    }
    // cpu.weight follows the request (or the limit), as shares.
    if let Some(cpu) = requests.get("cpu").or_else(|| limits.get("cpu")) {
        out.cpu_shares = cpu_shares(cpu_millis(cpu)?) as i64;
    }
    if let Some(memory) = limits.get("memory") {
        out.memory_limit_in_bytes = memory_bytes(memory)? as i64;
    }
    Ok(out)
}

/// The environment of `container`: its `envFrom` objects' keys, then its `env`, a later
/// variable replacing an earlier one of the same name.
fn environment(
    pod: &DesiredPod,
    container: &Container,
    placement: &Placement,
    objects: &LocalObjects,
) -> Result<Vec<v1::KeyValue>, String> {
    let mut vars = objects.env_from(&pod.namespace, container)?;
    for var in container.env.iter().flatten() {
        let value = match objects.env_value(&pod.namespace, var) {
            Some(from_object) => from_object?,
            None => Some(env_value(pod, container, var, placement)?),
        };
        // An optional reference to what does not exist sets nothing.
        let Some(value) = value else { continue };
        match vars.iter_mut().find(|(name, _)| *name == var.name) {
            Some(existing) => existing.1 = value,
            None => vars.push((var.name.clone(), value)),
        }
    }
    Ok(vars.into_iter().map(|(key, value)| v1::KeyValue { key, value }).collect())
}

/// The value of `var` of `container`: its own, or the pod's field or resource it names.
fn env_value(
    pod: &DesiredPod,
    container: &Container,
    var: &EnvVar,
    placement: &Placement,
) -> Result<String, String> {
    let Some(from) = &var.value_from else { return Ok(var.value.clone().unwrap_or_default()) };
    if let Some(field) = &from.field_ref {
        let field = cairn_api::config::env::PodField::parse(&field.field_path)?;
        return Ok(downward::field_value(pod, &field, placement));
    }
    let Some(reference) = &from.resource_field_ref else {
        return Err(format!("env {}: no source this kubelet reads", var.name));
    };
    downward::resource_value(pod, container, reference, placement)
        .map_err(|e| format!("env {}: {e}", var.name))
}

/// How mounts propagate between the node and a container's volumeMount, as its
/// `mountPropagation` says (the config allows only these).
fn propagation(mount_propagation: Option<&str>) -> v1::MountPropagation {
    match mount_propagation {
        Some("HostToContainer") => v1::MountPropagation::PropagationHostToContainer,
        Some("Bidirectional") => v1::MountPropagation::PropagationBidirectional,
        _ => v1::MountPropagation::PropagationPrivate,
    }
}

/// Why a container's config could not be made.
#[derive(Debug, PartialEq)]
pub enum ConfigError {
    /// One of its volumes could not be prepared (event reason `FailedMount`).
    Mount(String),
    /// Anything else: a variable's reference, a volume it names that the pod has not.
    Other(String),
}

impl From<String> for ConfigError {
    fn from(message: String) -> ConfigError {
        ConfigError::Other(message)
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Mount(message) | ConfigError::Other(message) => f.write_str(message),
        }
    }
}

/// The config of `container` in `pod`, attempt `attempt`; `image_ref` is the image as
/// containerd knows it. The volumes it mounts are prepared in `volumes` (the pod's): a
/// subPath is bound there from beneath its volume, and that bind is what the container gets.
/// `placement` fills in the variables that name the pod's fields and resources, `objects`
/// those that name keys of ConfigMaps and Secrets.
pub fn container_config(
    pod: &DesiredPod,
    container: &Container,
    attempt: u32,
    image_ref: &str,
    volumes: &PodVolumes<'_>,
    (placement, objects): (&Placement, &LocalObjects),
) -> Result<v1::ContainerConfig, ConfigError> {
    let declared = &spec(&pod.pod).volumes;
    let mount_failed = |volume: &str, e: super::volumes::VolumeError| {
        ConfigError::Mount(format!("MountVolume.SetUp failed for volume {volume:?}: {e}"))
    };
    let mut mounts = Vec::new();
    for (index, mount) in container.volume_mounts.iter().flatten().enumerate() {
        let volume = declared
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| format!("volumeMount {}: no volume of that name", mount.name))?;
        let mut host_path = volumes.host_path(volume).map_err(|e| mount_failed(&volume.name, e))?;
        if let Some(sub_path) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            host_path = volumes
                .bind_sub_path(&volume.name, &host_path, sub_path, &container.name, index)
                .map_err(|e| mount_failed(&volume.name, e))?;
        }
        mounts.push(v1::Mount {
            container_path: mount.mount_path.clone(),
            host_path: host_path.to_string_lossy().into_owned(),
            // A configMap's or secret's files are the kubelet's, read-only as upstream mounts
            // them; a claim may be read-only too.
            readonly: mount.read_only.unwrap_or(false)
                || volume.config_map.is_some()
                || volume.secret.is_some()
                || volume.downward_api.is_some()
                || volume.persistent_volume_claim.as_ref().and_then(|c| c.read_only) == Some(true),
            propagation: propagation(mount.mount_propagation.as_deref()).into(),
            ..Default::default()
        });
    }
    let security = container.security_context.clone().unwrap_or_default();
    let mut labels = pod_labels(pod);
    labels.insert(label::CONTAINER_NAME.into(), container.name.clone());
    Ok(v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata { name: container.name.clone(), attempt }),
        image: Some(v1::ImageSpec {
            image: image_ref.into(),
            user_specified_image: container.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: container.command.clone().unwrap_or_default(),
        args: container.args.clone().unwrap_or_default(),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: environment(pod, container, placement, objects)?,
        mounts,
        labels,
        log_path: log_path(&container.name, attempt),
        linux: Some(v1::LinuxContainerConfig {
            resources: Some(resources(container)?),
            security_context: Some(v1::LinuxContainerSecurityContext {
                privileged: security.privileged.unwrap_or(false),
                namespace_options: Some(namespace_options(&pod.pod)),
                run_as_user: effective(&pod.pod, container, |s| s.run_as_user, |s| s.run_as_user)
                    .map(|value| v1::Int64Value { value }),
                run_as_group: effective(
                    &pod.pod,
                    container,
                    |s| s.run_as_group,
                    |s| s.run_as_group,
                )
                .map(|value| v1::Int64Value { value }),
                supplemental_groups: supplemental_groups(&pod.pod),
                seccomp: effective(
                    &pod.pod,
                    container,
                    |s| s.seccomp_profile.clone(),
                    |s| s.seccomp_profile.clone(),
                )
                .as_ref()
                .map(security_profile),
                readonly_rootfs: security.read_only_root_filesystem.unwrap_or(false),
                capabilities: security.capabilities.map(|caps| v1::Capability {
                    add_capabilities: caps.add.unwrap_or_default(),
                    drop_capabilities: caps.drop.unwrap_or_default(),
                    add_ambient_capabilities: Vec::new(),
                }),
                // As the kubelet: no_new_privs only when the pod asks for it.
                no_new_privs: security.allow_privilege_escalation == Some(false),
                ..Default::default()
            }),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::kubelet::volumes::RecordingMounter;

    fn desired(yaml: &str) -> DesiredPod {
        DesiredPod::new("config", serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn variables_of_objects_come_first_and_the_containers_own_win() {
        use cairn_api::config::objects::LocalObject;
        let list: Vec<LocalObject> = serde_yaml::from_str(concat!(
            "- {apiVersion: v1, kind: ConfigMap, metadata: {name: settings}, data: {MODE: slow, LEVEL: '3'}}\n",
            "- {apiVersion: v1, kind: Secret, metadata: {name: creds}, stringData: {password: hunter2}}\n",
        ))
        .unwrap();
        let objects = LocalObjects::new(&list);
        let pod = desired(concat!(
            "metadata: {name: web}\n",
            "spec:\n",
            "  containers:\n",
            "  - name: main\n",
            "    image: i\n",
            "    envFrom: [{configMapRef: {name: settings}}]\n",
            "    env:\n",
            "    - {name: MODE, value: fast}\n",
            "    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}\n",
            "    - {name: TOKEN, valueFrom: {secretKeyRef: {name: creds, key: token, optional: true}}}\n",
        ));
        let mounter = RecordingMounter::default();
        let volumes = PodVolumes::new("/nonexistent".into(), &mounter);
        let main = &containers(&pod.pod)[0];
        let config =
            container_config(&pod, main, 0, "i", &volumes, (&placement(), &objects)).unwrap();
        let envs: Vec<(&str, &str)> =
            config.envs.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
        assert_eq!(envs, [("LEVEL", "3"), ("MODE", "fast"), ("PASSWORD", "hunter2")]);
        // Without the secret the container cannot be made, and says why.
        let error = container_config(
            &pod,
            main,
            0,
            "i",
            &volumes,
            (&placement(), &LocalObjects::default()),
        );
        let error = error.unwrap_err();
        assert_eq!(error, ConfigError::Other("envFrom: configmap \"settings\" not found".into()));
    }

    #[test]
    fn ports_resources_and_security_reach_the_cri_requests() {
        let pod = desired(concat!(
            "metadata: {name: web, namespace: apps, labels: {app: web}}\n",
            "spec:\n",
            "  containers:\n",
            "  - name: httpd\n",
            "    image: localhost/busybox:latest\n",
            "    command: [httpd, -f]\n",
            "    env: [{name: A, value: b}]\n",
            "    ports: [{containerPort: 80, hostPort: 8080}]\n",
            "    resources: {limits: {memory: 64Mi, cpu: 250m}, requests: {cpu: 100m}}\n",
            "    securityContext:\n",
            "      runAsUser: 1000\n",
            "      readOnlyRootFilesystem: true\n",
            "      allowPrivilegeEscalation: false\n",
            "      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}\n",
        ));
        let sandbox = sandbox_config(&pod, 0, Path::new("/var/log/pods/apps_web_1"));
        assert_eq!(sandbox.port_mappings.len(), 1);
        assert_eq!(
            (sandbox.port_mappings[0].container_port, sandbox.port_mappings[0].host_port),
            (80, 8080)
        );
        assert_eq!(sandbox.labels[label::POD_UID], pod.uid);
        assert_eq!(sandbox.labels["app"], "web");
        assert_eq!(sandbox.hostname, "web");
        assert_eq!(sandbox.log_directory, "/var/log/pods/apps_web_1");
        let mounter = RecordingMounter::default();
        let volumes = PodVolumes::new("/nonexistent".into(), &mounter);
        let container = container_config(
            &pod,
            &containers(&pod.pod)[0],
            2,
            "sha256:abc",
            &volumes,
            (&placement(), &LocalObjects::default()),
        )
        .unwrap();
        assert_eq!(container.log_path, "httpd/2.log");
        assert_eq!(container.envs[0].key, "A");
        let linux = container.linux.unwrap();
        let resources = linux.resources.unwrap();
        assert_eq!(resources.memory_limit_in_bytes, 64 << 20);
        assert_eq!((resources.cpu_quota, resources.cpu_period), (25_000, 100_000));
        assert_eq!(resources.cpu_shares, 102);
        let security = linux.security_context.unwrap();
        assert_eq!(security.run_as_user, Some(v1::Int64Value { value: 1000 }));
        assert!(security.readonly_rootfs);
        assert!(security.no_new_privs);
        let capabilities = security.capabilities.unwrap();
        assert_eq!(capabilities.drop_capabilities, ["ALL"]);
        assert_eq!(capabilities.add_capabilities, ["NET_BIND_SERVICE"]);
    }

    fn placement() -> Placement {
        Placement {
            pod_ip: "10.244.0.7".into(),
            host_ip: "192.0.2.10".into(),
            node_name: "cairn-1".into(),
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
        }
    }

    #[test]
    fn variables_get_the_pods_fields_and_resources() {
        let pod = desired(concat!(
            "metadata: {name: agent, namespace: edge, labels: {app: agent}}\n",
            "spec:\n",
            "  serviceAccountName: collector\n",
            "  containers:\n",
            "  - name: main\n",
            "    image: busybox\n",
            "    resources: {limits: {memory: 100Mi}, requests: {cpu: 250m}}\n",
            "    env:\n",
            "    - {name: PLAIN, value: v}\n",
            "    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n",
            "    - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}\n",
            "    - {name: APP, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['app']\"}}}\n",
            "    - {name: NONE, valueFrom: {fieldRef: {fieldPath: \"metadata.annotations['x']\"}}}\n",
            "    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}\n",
            "    - {name: SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}\n",
            "    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}\n",
            "    - {name: HOST_IP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}\n",
            "    - {name: MEM_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}\n",
            "    - {name: CPU_LIMIT, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}\n",
            "    - {name: CPU_REQ_M, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}}\n",
            "    - {name: CPU_REQ, valueFrom: {resourceFieldRef: {resource: requests.cpu}}}\n",
            "    - {name: MEM_REQ, valueFrom: {resourceFieldRef: {resource: requests.memory}}}\n",
        ));
        let mounter = RecordingMounter::default();
        let volumes = PodVolumes::new("/nonexistent".into(), &mounter);
        let main = &containers(&pod.pod)[0];
        let config = container_config(
            &pod,
            main,
            0,
            "sha256:abc",
            &volumes,
            (&placement(), &LocalObjects::default()),
        )
        .unwrap();
        let env: Vec<(&str, &str)> =
            config.envs.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
        assert_eq!(
            env,
            [
                ("PLAIN", "v"),
                ("POD", "agent"),
                ("NS", "edge"),
                ("APP", "agent"),
                ("NONE", ""),
                ("NODE", "cairn-1"),
                ("SA", "collector"),
                ("POD_IP", "10.244.0.7"),
                ("HOST_IP", "192.0.2.10"),
                ("MEM_MI", "100"),
                // No CPU limit: the node's CPUs, rounded up as Kubernetes does.
                ("CPU_LIMIT", "4"),
                ("CPU_REQ_M", "250"),
                ("CPU_REQ", "1"),
                // A request defaults to the limit.
                ("MEM_REQ", "104857600"),
            ]
        );
    }

    #[test]
    fn the_pods_security_context_reaches_its_sandbox_and_containers() {
        let pod = desired(concat!(
            "metadata: {name: db}\n",
            "spec:\n",
            "  securityContext:\n",
            "    runAsUser: 999\n",
            "    runAsGroup: 999\n",
            "    fsGroup: 2000\n",
            "    supplementalGroups: [10]\n",
            "    seccompProfile: {type: RuntimeDefault}\n",
            "    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: \"0\"}]\n",
            "  containers:\n",
            "  - {name: main, image: busybox, securityContext: {runAsUser: 1000}}\n",
            "  - name: tool\n",
            "    image: busybox\n",
            "    securityContext: {runAsNonRoot: true, seccompProfile: {type: Localhost, localhostProfile: p/audit.json}}\n",
        ));
        let sandbox = sandbox_config(&pod, 0, Path::new("/logs")).linux.unwrap();
        assert_eq!(sandbox.sysctls["net.ipv4.ip_unprivileged_port_start"], "0");
        let context = sandbox.security_context.unwrap();
        assert_eq!(context.run_as_user, Some(v1::Int64Value { value: 999 }));
        assert_eq!(context.supplemental_groups, [10, 2000]);
        let runtime_default = i32::from(v1::security_profile::ProfileType::RuntimeDefault);
        assert_eq!(context.seccomp.unwrap().profile_type, runtime_default);
        let mounter = RecordingMounter::default();
        let volumes = PodVolumes::new("/nonexistent".into(), &mounter);
        let security = |index: usize| {
            let container = &containers(&pod.pod)[index];
            let config = container_config(
                &pod,
                container,
                0,
                "i",
                &volumes,
                (&placement(), &LocalObjects::default()),
            )
            .unwrap();
            config.linux.unwrap().security_context.unwrap()
        };
        let main = security(0);
        // The container's own user; the pod's group and groups.
        assert_eq!(main.run_as_user, Some(v1::Int64Value { value: 1000 }));
        assert_eq!(main.run_as_group, Some(v1::Int64Value { value: 999 }));
        assert_eq!(main.supplemental_groups, [10, 2000]);
        assert_eq!(main.seccomp.unwrap().profile_type, runtime_default);
        let tool = security(1);
        let profile = tool.seccomp.unwrap();
        assert_eq!(profile.localhost_ref, "/var/lib/kubelet/seccomp/p/audit.json");
        assert_eq!(fs_group(&pod.pod), Some(2000));
        let listed = desired("metadata: {name: p}\nspec: {securityContext: {fsGroup: 5, supplementalGroups: [5, 6]}, containers: [{name: c, image: i}]}");
        assert_eq!(supplemental_groups(&listed.pod), [5, 6]);
        // runAsNonRoot with the pod's user: no need to ask the image.
        assert!(!needs_image_user(&pod.pod, &containers(&pod.pod)[1]));
    }

    #[test]
    fn run_as_non_root_is_checked_against_the_images_user() {
        let pod = desired("metadata: {name: p}\nspec: {containers: [{name: c, image: i, securityContext: {runAsNonRoot: true}}]}");
        assert!(needs_image_user(&pod.pod, &containers(&pod.pod)[0]));
        assert_eq!(image_user_problem(Some(1000), ""), None);
        let root = Some("container has runAsNonRoot and image will run as root".to_string());
        assert_eq!(image_user_problem(Some(0), ""), root);
        assert_eq!(image_user_problem(None, ""), root);
        assert_eq!(
            image_user_problem(None, "nginx").unwrap(),
            "container has runAsNonRoot and image has non-numeric user (nginx), cannot verify user is non-root"
        );
    }

    #[test]
    fn dns_settings_replace_or_add_to_the_nodes() {
        let node = "# written by machined\nnameserver 10.0.2.3\nnameserver 192.0.2.53\nsearch lan\noptions ndots:1 edns0\n";
        let plain = desired("metadata: {name: p}\nspec: {dnsPolicy: ClusterFirst, containers: [{name: c, image: i}]}");
        assert_eq!(dns_config(&plain.pod, node), None);
        let own = desired(concat!(
            "metadata: {name: p}\n",
            "spec:\n",
            "  dnsPolicy: None\n",
            "  dnsConfig: {nameservers: [1.1.1.1], searches: [svc.example], options: [{name: ndots, value: \"5\"}]}\n",
            "  containers: [{name: c, image: i}]\n",
        ));
        let config = dns_config(&own.pod, node).unwrap();
        assert_eq!(
            (config.servers, config.searches, config.options),
            (
                vec!["1.1.1.1".to_string()],
                vec!["svc.example".to_string()],
                vec!["ndots:5".to_string()],
            )
        );
        let added = desired(concat!(
            "metadata: {name: p}\n",
            "spec:\n",
            "  dnsConfig: {nameservers: [10.0.2.3, 1.1.1.1, 8.8.8.8], searches: [lan, extra], options: [{name: ndots, value: \"3\"}, {name: rotate}]}\n",
            "  containers: [{name: c, image: i}]\n",
        ));
        let config = dns_config(&added.pod, node).unwrap();
        assert_eq!(config.servers, ["10.0.2.3", "192.0.2.53", "1.1.1.1"]);
        assert_eq!(config.searches, ["lan", "extra"]);
        assert_eq!(config.options, ["edns0", "ndots:3", "rotate"]);
    }

    #[test]
    fn host_namespaces_are_shared_as_asked() {
        let pod = desired("metadata: {name: p}\nspec: {hostPID: true, hostIPC: true, containers: [{name: c, image: i}]}");
        let options = namespace_options(&pod.pod);
        let node = i32::from(v1::NamespaceMode::Node);
        assert_eq!(
            (options.pid, options.ipc, options.network),
            (node, node, i32::from(v1::NamespaceMode::Pod))
        );
        let shared = desired("metadata: {name: p}\nspec: {shareProcessNamespace: true, containers: [{name: c, image: i}]}");
        assert_eq!(namespace_options(&shared.pod).pid, i32::from(v1::NamespaceMode::Pod));
    }

    #[test]
    fn host_network_pods_share_the_node_network() {
        let pod = desired(
            "metadata: {name: h}\nspec: {hostNetwork: true, containers: [{name: c, image: i}]}",
        );
        let sandbox = sandbox_config(&pod, 1, Path::new("/logs"));
        let options = sandbox.linux.unwrap().security_context.unwrap().namespace_options.unwrap();
        assert_eq!(options.network, i32::from(v1::NamespaceMode::Node));
        assert_eq!(sandbox.hostname, "");
    }

    #[test]
    fn a_subpath_reaches_the_container_through_its_bind_and_never_out_of_its_volume() {
        let pod = desired(concat!(
            "metadata: {name: shared}\n",
            "spec:\n",
            "  volumes: [{name: scratch, emptyDir: {}}]\n",
            "  containers:\n",
            "  - name: web\n",
            "    image: busybox\n",
            "    volumeMounts:\n",
            "    - {name: scratch, mountPath: /scratch}\n",
            "    - {name: scratch, mountPath: /srv, subPath: site, readOnly: true}\n",
        ));
        let base = tempfile::tempdir().unwrap();
        let mounter = RecordingMounter::default();
        let volumes = PodVolumes::new(base.path().to_path_buf(), &mounter);
        let web = &containers(&pod.pod)[0];
        let config = container_config(
            &pod,
            web,
            0,
            "sha256:abc",
            &volumes,
            (&placement(), &LocalObjects::default()),
        )
        .unwrap();
        let mounts: Vec<(&str, &str, bool)> = config
            .mounts
            .iter()
            .map(|m| (m.container_path.as_str(), m.host_path.as_str(), m.readonly))
            .collect();
        let scratch = base.path().join("volumes/scratch");
        let bound = base.path().join("volume-subpaths/scratch/web/1");
        assert_eq!(
            mounts,
            [
                ("/scratch", &*scratch.to_string_lossy(), false),
                ("/srv", &*bound.to_string_lossy(), true),
            ]
        );
        // The missing subPath was made as a directory in the volume, and bound from there.
        assert!(scratch.join("site").is_dir());
        assert_eq!(
            mounter.log.lock().unwrap().as_slice(),
            [format!("bind {} {}", scratch.join("site").display(), bound.display())]
        );

        // A container of the pod replaces the directory with a link to the host's root.
        std::fs::remove_dir(scratch.join("site")).unwrap();
        std::os::unix::fs::symlink("/", scratch.join("site")).unwrap();
        let error = container_config(
            &pod,
            web,
            1,
            "sha256:abc",
            &volumes,
            (&placement(), &LocalObjects::default()),
        )
        .unwrap_err();
        assert_eq!(
            error,
            ConfigError::Mount(
                "MountVolume.SetUp failed for volume \"scratch\": volume \"scratch\", subPath \
                 \"site\": it leads out of the volume (through a symbolic link, an absolute one \
                 or one with '..')"
                    .into()
            )
        );
    }
}
