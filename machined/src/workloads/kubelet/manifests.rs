//! Writing the manifest directory (`ctl pod apply` / `ctl pod delete`): pods that live on
//! the node beside the config, one Pod per file, named `NAMESPACE_NAME.yaml`. A manifest is
//! checked as strictly as `machine.pods` before it is written, and written atomically, so a
//! refused one changes nothing. The kubelet reads the directory again within seconds.

use std::path::{Path, PathBuf};

use cairn_api::config::pod::{decode_pod, is_object_name, DEFAULT_NAMESPACE};
use cairn_api::config::{MachineConfig, Problem};

/// Why a manifest was not written or removed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest is not a pod the kubelet runs.
    #[error("{} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    /// The config already defines a pod of that name.
    #[error("pod {0} is defined by the machine config; change it there")]
    InConfig(String),
    /// The name is not `NAME` or `NAMESPACE/NAME` of Kubernetes object names.
    #[error(
        "{0:?} is not NAME or NAMESPACE/NAME (lower-case letters, digits and '-', at most 63 each)"
    )]
    BadName(String),
    /// No manifest has that pod.
    #[error("no manifest defines pod {0}")]
    NotFound(String),
    /// Reading or writing the directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// `NAMESPACE/NAME` of `NAME` or `NAMESPACE/NAME`, both object names (so a file name made
/// of them stays in the directory).
fn key(name: &str) -> Result<String, ManifestError> {
    let (namespace, pod) = name.split_once('/').unwrap_or((DEFAULT_NAMESPACE, name));
    if is_object_name(namespace) && is_object_name(pod) {
        Ok(format!("{namespace}/{pod}"))
    } else {
        Err(ManifestError::BadName(cairn_api::text::shortened(name, 80)))
    }
}

/// The file of pod `key` (`NAMESPACE/NAME`; both are DNS labels, so `_` cannot occur).
fn file_of(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{}.yaml", key.replace('/', "_")))
}

/// Checks `yaml` and writes it as its pod's manifest; returns the pod's `NAMESPACE/NAME`.
pub fn write(
    dir: &Path,
    yaml: &[u8],
    config: Option<&MachineConfig>,
) -> Result<String, ManifestError> {
    let pod = decode_pod(yaml, "manifest").map_err(ManifestError::Invalid)?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    let key = format!("{namespace}/{}", pod.metadata.name.as_deref().unwrap_or_default());
    let in_config = config.iter().flat_map(|c| c.machine.pods.iter()).any(|p| {
        p.metadata.name == pod.metadata.name
            && p.metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE) == namespace
    });
    if in_config {
        return Err(ManifestError::InConfig(key));
    }
    let path = file_of(dir, &key);
    crate::files::durable::write_atomically(&path, yaml, 0o600)
        .map_err(|source| ManifestError::Io { path, source })?;
    Ok(key)
}

/// Removes the manifest of pod `name` (`NAME` or `NAMESPACE/NAME`); returns its key.
pub fn remove(dir: &Path, name: &str) -> Result<String, ManifestError> {
    let key = key(name)?;
    let path = file_of(dir, &key);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ManifestError::NotFound(key)),
        Err(source) => Err(ManifestError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::kubelet::source::{ManifestDir, PodSource};

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: apps}\nspec: {containers: [{name: c, image: i}]}\n";

    #[test]
    fn written_manifests_are_read_back_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("manifests");
        assert_eq!(write(&manifests, POD.as_bytes(), None).unwrap(), "apps/web");
        let (pods, problems) = ManifestDir::new(manifests.clone()).pods();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(pods[0].key(), "apps/web");
        assert!(
            matches!(remove(&manifests, "web"), Err(ManifestError::NotFound(k)) if k == "default/web")
        );
        assert_eq!(remove(&manifests, "apps/web").unwrap(), "apps/web");
        assert!(ManifestDir::new(manifests.clone()).pods().0.is_empty());
        for bad in ["../config", "a/b/c", "", "x\0y", "Web", &"a".repeat(64)] {
            assert!(matches!(remove(&manifests, bad), Err(ManifestError::BadName(_))), "{bad:?}");
        }
    }

    #[test]
    fn refused_manifests_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let bad = POD.replace("spec: {", "spec: {ephemeralContainers: [{name: i, image: i}], ");
        match write(dir.path(), bad.as_bytes(), None) {
            Err(ManifestError::Invalid(problems)) => {
                assert!(
                    problems[0].to_string().contains("manifest.spec.ephemeralContainers"),
                    "{problems:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
