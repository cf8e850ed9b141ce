//! Ephemeral storage, bounded as the upstream kubelet's eviction manager bounds it: what a
//! pod writes to the node's disk outside its claims (its containers' writable layers, their
//! logs, its emptyDir volumes on disk) is measured every [`CHECK_EVERY`], and the pod is
//! evicted (its containers killed at once, its phase Failed with reason `Evicted`, not run
//! again unless its controller replaces it) once an emptyDir passes its `sizeLimit`, the pod
//! its total of the containers' `ephemeral-storage` limits (see [`super::pod_totals`]), or a
//! container its own limit; upstream's checks, in its order, with its messages.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use cairn_api::config::pod::memory_bytes;

use super::pod_totals::{pod_total, Unstated};
use super::spec;

/// How often a pod with limits is measured (upstream's housekeeping interval).
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// The resource's name in `resources`.
const RESOURCE: &str = "ephemeral-storage";

/// What a pod may write to the node's disk.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageLimits {
    /// Each container's limit, by name (init containers too).
    containers: Vec<(String, Option<u64>)>,
    /// The pod's limit: the sum of its containers' and sidecars' that set one, or its largest
    /// init container's when larger (upstream's PodLimits); None when none sets one.
    pod: Option<u64>,
    /// Each disk-backed emptyDir's `sizeLimit`, by volume name.
    empty_dirs: Vec<(String, Option<u64>)>,
}

/// What a pod has written, as measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StorageUsage {
    /// Each running container's writable layer and logs, by name.
    pub containers: Vec<(String, u64)>,
    /// Each disk-backed emptyDir, by volume name.
    pub empty_dirs: Vec<(String, u64)>,
}

impl StorageLimits {
    /// The limits of `pod`; None when it sets none, and nothing needs measuring.
    pub fn of(pod: &Pod) -> Option<StorageLimits> {
        let limit = |container: &k8s_openapi::api::core::v1::Container| {
            let limits = container.resources.as_ref()?.limits.as_ref()?;
            memory_bytes(limits.get(RESOURCE)?).ok()
        };
        let containers: Vec<(String, Option<u64>)> =
            spec::all_containers(pod).map(|c| (c.name.clone(), limit(c))).collect();
        // `limit` skips a quantity that does not parse (validation refused it): no error here.
        let pod_limit = pod_total(pod, Unstated::Nothing, |c| Ok(limit(c))).unwrap_or_default();
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or_default();
        let empty_dirs: Vec<(String, Option<u64>)> = volumes
            .iter()
            .filter_map(|v| Some((v.name.clone(), v.empty_dir.as_ref()?)))
            .filter(|(_, dir)| dir.medium.as_deref().unwrap_or_default() != "Memory")
            .map(|(name, dir)| (name, dir.size_limit.as_ref().and_then(|q| memory_bytes(q).ok())))
            .collect();
        let any = |list: &[(String, Option<u64>)]| list.iter().any(|(_, limit)| limit.is_some());
        (any(&containers) || any(&empty_dirs)).then_some(StorageLimits {
            containers,
            pod: pod_limit,
            empty_dirs,
        })
    }

    /// The disk-backed emptyDir volumes, which are measured.
    pub fn empty_dirs(&self) -> impl Iterator<Item = &str> {
        self.empty_dirs.iter().map(|(name, _)| name.as_str())
    }

    /// Why the pod is evicted, with `usage`; None while it stays within its limits.
    pub fn exceeded(&self, usage: &StorageUsage) -> Option<String> {
        if let Some((name, limit)) = first_over(&self.empty_dirs, &usage.empty_dirs) {
            let limit = bytes(limit);
            return Some(format!(
                "Usage of EmptyDir volume {name:?} exceeds the limit \"{limit}\". "
            ));
        }
        // The pod's usage counts its emptyDirs too.
        let pod_usage: u64 = usage.containers.iter().chain(&usage.empty_dirs).map(|(_, b)| b).sum();
        if let Some(total) = self.pod.filter(|total| pod_usage > *total) {
            return Some(format!(
                "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
                bytes(total)
            ));
        }
        let (name, limit) = first_over(&self.containers, &usage.containers)?;
        let limit = bytes(limit);
        Some(format!("Container {name} exceeded its local ephemeral storage limit \"{limit}\". "))
    }
}

/// The first of `limits` (by name) that `usage` passes, with its limit.
fn first_over<'a>(
    limits: &'a [(String, Option<u64>)],
    usage: &[(String, u64)],
) -> Option<(&'a str, u64)> {
    limits.iter().find_map(|(name, limit)| {
        let used = usage.iter().find(|(n, _)| n == name).map_or(0, |(_, bytes)| *bytes);
        limit.filter(|limit| used > *limit).map(|limit| (name.as_str(), limit))
    })
}

/// `bytes` as Kubernetes writes a quantity: in the largest binary unit it is a whole number of.
fn bytes(bytes: u64) -> String {
    let units = [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
    for (unit, shift) in units {
        if bytes > 0 && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// The disk space the files under `path` take (their blocks, as `du` counts them), not
/// following links nor crossing into other filesystems (a tmpfs, a bind).
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(path) else { return 0 };
    let device = top.dev();
    let mut total = 0;
    let mut pending = vec![(path.to_path_buf(), top)];
    while let Some((path, metadata)) = pending.pop() {
        if metadata.dev() != device {
            continue;
        }
        total += metadata.blocks() * 512;
        if !metadata.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
            if let Ok(metadata) = entry.metadata() {
                pending.push((entry.path(), metadata));
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    const POD: &str = concat!(
        "metadata: {name: web}\n",
        "spec:\n",
        "  volumes: [{name: cache, emptyDir: {sizeLimit: 64Mi}}, {name: mem, emptyDir: {medium: Memory}}]\n",
        "  containers:\n",
        "  - {name: app, image: i, resources: {limits: {ephemeral-storage: 100Mi}}}\n",
        "  - {name: proxy, image: i, resources: {limits: {ephemeral-storage: 20Mi}}}\n",
        "  - {name: free, image: i}\n",
    );

    fn usage(containers: &[(&str, u64)], empty_dirs: &[(&str, u64)]) -> StorageUsage {
        let list = |l: &[(&str, u64)]| l.iter().map(|(n, b)| (n.to_string(), *b << 20)).collect();
        StorageUsage { containers: list(containers), empty_dirs: list(empty_dirs) }
    }

    #[test]
    fn the_checks_run_in_upstreams_order_with_its_messages() {
        let limits = StorageLimits::of(&pod(POD)).unwrap();
        assert_eq!(limits.empty_dirs().collect::<Vec<_>>(), ["cache"], "a tmpfs is memory");
        assert_eq!(limits.exceeded(&usage(&[("app", 90), ("proxy", 10)], &[("cache", 10)])), None);
        assert_eq!(
            limits.exceeded(&usage(&[("app", 1)], &[("cache", 65)])).as_deref(),
            Some("Usage of EmptyDir volume \"cache\" exceeds the limit \"64Mi\". ")
        );
        // The pod's total counts its emptyDirs, against the sum of the limits set (120Mi).
        assert_eq!(
            limits.exceeded(&usage(&[("app", 90), ("free", 20)], &[("cache", 11)])).as_deref(),
            Some("Pod ephemeral local storage usage exceeds the total limit of containers 120Mi. ")
        );
        assert_eq!(
            limits.exceeded(&usage(&[("app", 10), ("proxy", 21)], &[])).as_deref(),
            Some("Container proxy exceeded its local ephemeral storage limit \"20Mi\". ")
        );
    }

    #[test]
    fn an_init_container_larger_than_the_containers_sets_the_pods_limit() {
        let with_init = pod(concat!(
            "metadata: {name: web}\n",
            "spec:\n",
            "  initContainers: [{name: unpack, image: i, resources: {limits: {ephemeral-storage: 200Mi}}}]\n",
            "  containers: [{name: app, image: i, resources: {limits: {ephemeral-storage: 100Mi}}}]\n",
        ));
        let limits = StorageLimits::of(&with_init).unwrap();
        assert_eq!(limits.exceeded(&usage(&[("unpack", 150)], &[])), None);
        let over = limits.exceeded(&usage(&[("app", 201)], &[])).unwrap();
        assert!(over.contains("total limit of containers 200Mi"), "{over}");
    }

    #[test]
    fn a_pod_without_limits_is_not_measured() {
        let plain = pod("metadata: {name: p}\nspec: {volumes: [{name: v, emptyDir: {}}], containers: [{name: c, image: i}]}");
        assert_eq!(StorageLimits::of(&plain), None);
    }

    #[test]
    fn disk_usage_counts_blocks_under_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/data"), vec![1u8; 256 * 1024]).unwrap();
        let used = disk_usage(dir.path());
        assert!((256 * 1024..1024 * 1024).contains(&used), "{used}");
        assert_eq!(disk_usage(&dir.path().join("missing")), 0);
    }
}
