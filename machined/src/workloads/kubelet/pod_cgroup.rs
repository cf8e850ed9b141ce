//! The pod's own cgroup (v2), as the upstream kubelet makes it: the cgroups of its sandbox and
//! containers are made under `kubepods/pod<uid>`, which the kubelet limits to what the
//! containers may take together, so the pod is bounded as one and weighted against other pods
//! by what it requests.
//!
//! As upstream (`ResourceConfigForPod`): the pod's limit of a resource is the larger of its
//! containers' sum and its largest init container's (those run one at a time, before the
//! containers), and is set only when every container declares one (a container without a
//! limit may take the node's, so the pod may; init containers too). Sidecars run beside what
//! follows them: they count with the containers, and with each init container after them.
//! Its CPU weight follows the sum of the requests (a request defaults to its limit); a pod
//! that requests nothing gets the least.
//!
//! A controller the kernel lacks is not enabled, and its limits not written: the containers'
//! own limits fail then, where the runtime sets them.

use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use cairn_api::config::pod::{cpu_millis, memory_bytes};

use super::pod_totals::{pod_total, Unstated};
use super::spec::{self, cpu_quota, cpu_shares, CPU_PERIOD};

/// The controllers a pod's cgroup is limited by; enabled for the cgroups under the root.
const CONTROLLERS: [&str; 2] = ["cpu", "memory"];

/// What a pod may take, together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLimits {
    /// `memory.max`, in bytes; None for no limit.
    pub memory_bytes: Option<u64>,
    /// The CPU the pod may use, in millicores; None for no limit.
    pub cpu_millis: Option<u64>,
    /// The CPU it requests, in millicores.
    pub cpu_request_millis: u64,
}

/// The quantity `resource` of `container`'s limits (or requests, with `requests`), parsed by
/// `parse`; an error names one that does not parse (validation refuses those on apply).
fn stated(
    container: &Container,
    requests: bool,
    resource: &str,
    parse: fn(&Quantity) -> Result<u64, String>,
) -> Result<Option<u64>, String> {
    let resources = container.resources.as_ref();
    let list =
        resources.and_then(|r| if requests { r.requests.as_ref() } else { r.limits.as_ref() });
    list.and_then(|list| list.get(resource)).map(parse).transpose()
}

/// What `pod` may take, together; an error names a quantity that does not parse.
pub fn limits(pod: &Pod) -> Result<PodLimits, String> {
    let cpu_limit = |c: &Container| stated(c, false, "cpu", cpu_millis);
    // A request defaults to the limit.
    let cpu_request = |c: &Container| Ok(stated(c, true, "cpu", cpu_millis)?.or(cpu_limit(c)?));
    Ok(PodLimits {
        memory_bytes: pod_total(pod, Unstated::Unbounded, |c| {
            stated(c, false, "memory", memory_bytes)
        })?,
        cpu_millis: pod_total(pod, Unstated::Unbounded, cpu_limit)?,
        cpu_request_millis: pod_total(pod, Unstated::Nothing, cpu_request)?.unwrap_or_default(),
    })
}

impl PodLimits {
    /// The cgroup v2 files that say so, and their contents.
    pub fn files(&self) -> [(&'static str, String); 3] {
        let memory = self.memory_bytes.map_or_else(|| "max".into(), |bytes| bytes.to_string());
        let quota = self.cpu_millis.map_or_else(|| "max".into(), |m| cpu_quota(m).to_string());
        // Upstream's shares, then runc's mapping of shares onto cpu.weight (2..262144 onto
        // 1..10000).
        let shares = cpu_shares(self.cpu_request_millis).min(262_144);
        let weight = 1 + (shares - 2) * 9999 / 262_142;
        [
            ("memory.max", memory),
            ("cpu.max", format!("{quota} {CPU_PERIOD}")),
            ("cpu.weight", weight.to_string()),
        ]
    }
}

/// The cgroup of pod `uid`, under the cgroup filesystem's root `cgroup_root`.
pub fn directory(cgroup_root: &Path, uid: &str) -> PathBuf {
    cgroup_root.join(spec::cgroup_parent(uid).trim_start_matches('/'))
}

/// Makes the cgroup of `pod` (uid `uid`) under `cgroup_root` with its limits, the cpu and
/// memory controllers enabled down to it; an error says which file could not be written.
pub fn create(cgroup_root: &Path, uid: &str, pod: &Pod) -> Result<(), String> {
    let limits = limits(pod)?;
    let dir = directory(cgroup_root, uid);
    let failed = |path: &Path, e: io::Error| format!("{}: {e}", path.display());
    std::fs::create_dir_all(&dir).map_err(|e| failed(&dir, e))?;
    // Every cgroup from the root to the pod's parent hands the controllers down, the root
    // first: a cgroup can only hand down what it was handed (else ENOENT).
    let parents: Vec<&Path> =
        dir.ancestors().skip(1).take_while(|p| p.starts_with(cgroup_root)).collect();
    for parent in parents.into_iter().rev() {
        let available = std::fs::read_to_string(parent.join("cgroup.controllers"));
        let available = available.unwrap_or_default();
        let enable: Vec<String> = (CONTROLLERS.iter())
            .filter(|wanted| available.split_whitespace().any(|c| c == **wanted))
            .map(|controller| format!("+{controller}"))
            .collect();
        if enable.is_empty() {
            continue;
        }
        let control = parent.join("cgroup.subtree_control");
        std::fs::write(&control, enable.join(" ")).map_err(|e| failed(&control, e))?;
    }
    // A file is there when its controller is enabled.
    for (name, value) in limits.files() {
        let path = dir.join(name);
        if path.exists() {
            std::fs::write(&path, value).map_err(|e| failed(&path, e))?;
        }
    }
    Ok(())
}

/// Removes the cgroup of pod `uid`, once its sandbox is gone (a cgroup with processes stays).
pub fn remove(cgroup_root: &Path, uid: &str) -> io::Result<()> {
    match std::fs::remove_dir(directory(cgroup_root, uid)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        done => done,
    }
}

/// Removes the cgroups of pods `keep` does not name (by uid) that are empty: those whose
/// removal failed with their pods, or that a crash left.
pub fn sweep(cgroup_root: &Path, keep: impl Fn(&str) -> bool) {
    let parent = directory(cgroup_root, "");
    let Some(parent) = parent.parent() else { return };
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(uid) = name.to_str().and_then(|n| n.strip_prefix("pod")) else { continue };
        if entry.path().is_dir() && !keep(uid) {
            let _ = remove(cgroup_root, uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn the_pod_is_limited_to_its_containers_sum_or_its_largest_init_container() {
        let limited = pod(concat!(
            "metadata: {name: web}\n",
            "spec:\n",
            "  initContainers: [{name: migrate, image: i, resources: {limits: {memory: 512Mi, cpu: '2'}}}]\n",
            "  containers:\n",
            "  - {name: app, image: i, resources: {limits: {memory: 128Mi, cpu: 500m}, requests: {cpu: 250m}}}\n",
            "  - {name: proxy, image: i, resources: {limits: {memory: 64Mi, cpu: 100m}}}\n",
        ));
        let limits = limits(&limited).unwrap();
        // Memory: the init container's 512Mi beats the containers' 192Mi; CPU likewise.
        assert_eq!(limits.memory_bytes, Some(512 << 20));
        assert_eq!(limits.cpu_millis, Some(2000));
        // Requests: 250m + 100m (the proxy's limit), against the init container's 2000m.
        assert_eq!(limits.cpu_request_millis, 2000);
        let files = limits.files();
        assert_eq!(files[0], ("memory.max", (512u64 << 20).to_string()));
        assert_eq!(files[1], ("cpu.max", "200000 100000".into()));
        assert_eq!(files[2], ("cpu.weight", "79".into()));
    }

    #[test]
    fn sidecars_count_with_the_containers_and_the_init_containers_after_them() {
        let with_sidecar = pod(concat!(
            "metadata: {name: web}\n",
            "spec:\n",
            "  initContainers:\n",
            "  - {name: proxy, image: i, restartPolicy: Always, resources: {limits: {memory: 64Mi}}}\n",
            "  - {name: migrate, image: i, resources: {limits: {memory: 512Mi}}}\n",
            "  containers: [{name: app, image: i, resources: {limits: {memory: 128Mi}}}]\n",
        ));
        // The migration ran beside the proxy: 576Mi beats the proxy and app's 192Mi.
        assert_eq!(limits(&with_sidecar).unwrap().memory_bytes, Some(576 << 20));
    }

    #[test]
    fn one_container_without_a_limit_leaves_the_pod_unlimited_in_that_resource() {
        let partly = pod(concat!(
            "metadata: {name: web}\n",
            "spec:\n",
            "  containers:\n",
            "  - {name: app, image: i, resources: {limits: {memory: 128Mi, cpu: 500m}}}\n",
            "  - {name: proxy, image: i, resources: {limits: {memory: 64Mi}}}\n",
        ));
        let partial = limits(&partly).unwrap();
        assert_eq!((partial.memory_bytes, partial.cpu_millis), (Some(192 << 20), None));
        assert_eq!(partial.files()[1].1, "max 100000");
        // Nothing asked for at all (BestEffort): no limits, the least weight.
        let nothing = pod("metadata: {name: p}\nspec: {containers: [{name: c, image: i}]}");
        let files = limits(&nothing).unwrap().files();
        assert_eq!(files.map(|(_, value)| value), ["max", "max 100000", "1"]);
    }

    #[test]
    fn the_cgroup_is_made_with_its_limits_and_the_controllers_the_kernel_has() {
        // A cgroup filesystem as the kernel shows it once the controllers are handed down.
        let root = tempfile::tempdir().unwrap();
        let dir = directory(root.path(), "u1");
        assert_eq!(dir, root.path().join("kubepods/podu1"));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |path: PathBuf, text: &str| std::fs::write(path, text).unwrap();
        write(root.path().join("cgroup.controllers"), "cpuset cpu io memory pids");
        write(root.path().join("kubepods/cgroup.controllers"), "memory");
        for file in ["memory.max", "cpu.max", "cpu.weight"] {
            write(dir.join(file), "");
        }
        std::fs::remove_file(dir.join("cpu.max")).unwrap();
        let limited = pod(
            "metadata: {name: p}\nspec: {containers: [{name: c, image: i, resources: {limits: {memory: 1Gi, cpu: 50m}}}]}",
        );
        create(root.path(), "u1", &limited).unwrap();
        let read = |path: PathBuf| std::fs::read_to_string(path).unwrap();
        assert_eq!(read(dir.join("memory.max")), (1u64 << 30).to_string());
        // 50m is 5000 µs per period (the request defaults to the limit: 51 shares, weight 2).
        assert_eq!(read(dir.join("cpu.weight")), "2");
        // What the kernel lacks is neither enabled nor written.
        assert_eq!(read(root.path().join("cgroup.subtree_control")), "+cpu +memory");
        assert_eq!(read(root.path().join("kubepods/cgroup.subtree_control")), "+memory");
        assert!(!dir.join("cpu.max").exists());
        assert_eq!(limits(&limited).unwrap().files()[1].1, "5000 100000");
        // Only an empty cgroup goes (here, a directory without files).
        assert!(remove(root.path(), "u1").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        remove(root.path(), "u1").unwrap();
        // The sweep removes the empty cgroups of pods no one wants.
        for uid in ["kept", "gone"] {
            std::fs::create_dir_all(directory(root.path(), uid)).unwrap();
        }
        sweep(root.path(), |uid| uid == "kept");
        assert!(
            directory(root.path(), "kept").exists() && !directory(root.path(), "gone").exists()
        );
    }
}
