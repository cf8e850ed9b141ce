//! The downward API: what a pod's containers may know of it (its metadata, where it runs, its
//! containers' resources), as variables (`valueFrom.fieldRef`, `resourceFieldRef`) and as the
//! files of downwardAPI volumes. What each may name is checked by the config (see
//! `cairn_api::config::env`); here the values are filled in.

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeSource, ResourceFieldSelector};

use cairn_api::config::env::{PodField, ResourceField};

use super::objects::{ProjectedFile, DEFAULT_MODE};
use super::source::DesiredPod;
use super::spec;

/// What the downward API tells a container beyond its pod's object: where the pod runs.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// The pod's address (the node's, on the host network).
    pub pod_ip: String,
    /// The node's address on its default route.
    pub host_ip: String,
    /// The node's name.
    pub node_name: String,
    /// The node's CPUs, in millicores: a CPU limit where the container sets none.
    pub cpu_millis: u64,
    /// The node's memory, in bytes: a memory limit where the container sets none.
    pub memory_bytes: u64,
}

/// The value of the pod's field `field`. A whole map (`metadata.labels`) is a `KEY="VALUE"`
/// line per key, in key order, the value quoted as upstream quotes it (no newline after the
/// last, as upstream).
pub fn field_value(pod: &DesiredPod, field: &PodField, placement: &Placement) -> String {
    let metadata = &pod.pod.metadata;
    let keyed = |map: &Option<std::collections::BTreeMap<String, String>>, key: &str| {
        map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default()
    };
    let lines = |map: &Option<std::collections::BTreeMap<String, String>>| {
        let pairs = map.iter().flatten().map(|(key, value)| format!("{key}={value:?}"));
        pairs.collect::<Vec<_>>().join("\n")
    };
    match field {
        PodField::Name => pod.name.clone(),
        PodField::Namespace => pod.namespace.clone(),
        PodField::Uid => pod.uid.clone(),
        PodField::Label(key) => keyed(&metadata.labels, key),
        PodField::Annotation(key) => keyed(&metadata.annotations, key),
        PodField::Labels => lines(&metadata.labels),
        PodField::Annotations => lines(&metadata.annotations),
        PodField::NodeName => placement.node_name.clone(),
        PodField::ServiceAccountName => {
            let spec = pod.pod.spec.as_ref();
            spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default()
        }
        PodField::HostIp => placement.host_ip.clone(),
        PodField::PodIp => placement.pod_ip.clone(),
    }
}

/// The value of the resource `reference` names, of the container it names (else of
/// `container`), in its divisor's units rounded up.
pub fn resource_value(
    pod: &DesiredPod,
    container: &Container,
    reference: &ResourceFieldSelector,
    placement: &Placement,
) -> Result<String, String> {
    let field = ResourceField::parse(&reference.resource)?;
    let named = reference.container_name.as_deref().filter(|n| !n.is_empty());
    let of = match named {
        Some(name) => spec::containers(&pod.pod)
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("no container {name:?}"))?,
        None => container,
    };
    let resources = of.resources.clone().unwrap_or_default();
    let (limits, requests) =
        (resources.limits.unwrap_or_default(), resources.requests.unwrap_or_default());
    let kind = if field.cpu { "cpu" } else { "memory" };
    // As the API server defaults them: a request is the limit where only a limit is set; a
    // limit is the node's capacity where none is set.
    let quantity = match field.limit {
        true => limits.get(kind),
        false => requests.get(kind).or_else(|| limits.get(kind)),
    };
    let amount = match (quantity, field.cpu) {
        (Some(q), true) => cairn_api::config::pod::cpu_millis(q)?,
        (Some(q), false) => cairn_api::config::pod::memory_bytes(q)?,
        (None, _) if !field.limit => 0,
        (None, true) => placement.cpu_millis,
        (None, false) => placement.memory_bytes,
    };
    Ok(amount.div_ceil(field.unit(reference.divisor.as_ref())?).to_string())
}

/// The files of the downwardAPI volume `volume` of `pod`: an item each.
pub fn volume_files(
    pod: &DesiredPod,
    volume: &DownwardAPIVolumeSource,
    placement: &Placement,
) -> Result<Vec<ProjectedFile>, String> {
    let default_mode = volume.default_mode.map_or(DEFAULT_MODE, |mode| mode as u32);
    let mut files = Vec::new();
    for item in volume.items.iter().flatten() {
        let data = match (&item.field_ref, &item.resource_field_ref) {
            (Some(field), _) => {
                field_value(pod, &PodField::parse_for_file(&field.field_path)?, placement)
            }
            (None, Some(reference)) => {
                // The config requires the container's name: it stands for no other.
                let named = reference.container_name.as_deref().unwrap_or_default();
                let container = spec::containers(&pod.pod).iter().find(|c| c.name == named);
                let container = container.ok_or_else(|| format!("no container {named:?}"))?;
                resource_value(pod, container, reference, placement)?
            }
            (None, None) => {
                return Err(format!("{}: neither fieldRef nor resourceFieldRef", item.path))
            }
        };
        let mode = item.mode.map_or(default_mode, |mode| mode as u32);
        files.push(ProjectedFile { path: item.path.clone(), data: data.into_bytes(), mode });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(yaml: &str) -> DesiredPod {
        DesiredPod::new("config", serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn a_volume_holds_the_pods_metadata_and_resources_as_files() {
        let pod = desired(concat!(
            "metadata: {name: web, namespace: shop, labels: {app: web, tier: front end}}\n",
            "spec:\n",
            "  containers:\n",
            "  - {name: main, image: i, resources: {limits: {memory: 64Mi}, requests: {cpu: 250m}}}\n",
        ));
        // Modes in decimal, as the config gives them (0600, 0644).
        let volume: DownwardAPIVolumeSource = serde_yaml::from_str(concat!(
            "defaultMode: 384\n",
            "items:\n",
            "- {path: name, fieldRef: {fieldPath: metadata.name}}\n",
            "- {path: labels, fieldRef: {fieldPath: metadata.labels}, mode: 420}\n",
            "- {path: app, fieldRef: {fieldPath: \"metadata.labels['app']\"}}\n",
            "- {path: mem, resourceFieldRef: {containerName: main, resource: limits.memory, divisor: 1Mi}}\n",
            "- {path: cpu, resourceFieldRef: {containerName: main, resource: requests.cpu, divisor: 1m}}\n",
        ))
        .unwrap();
        let files = volume_files(&pod, &volume, &Placement::default()).unwrap();
        let file = |path: &str| {
            let file = files.iter().find(|f| f.path == path).unwrap();
            (String::from_utf8(file.data.clone()).unwrap(), file.mode)
        };
        assert_eq!(file("name"), ("web".into(), 0o600));
        assert_eq!(file("labels"), ("app=\"web\"\ntier=\"front end\"".into(), 0o644));
        assert_eq!(file("app").0, "web");
        assert_eq!(file("mem").0, "64");
        assert_eq!(file("cpu").0, "250");
        let other: DownwardAPIVolumeSource = serde_yaml::from_str(
            "items: [{path: x, resourceFieldRef: {containerName: db, resource: limits.cpu}}]",
        )
        .unwrap();
        assert_eq!(
            volume_files(&pod, &other, &Placement::default()).unwrap_err(),
            "no container \"db\""
        );
    }
}
