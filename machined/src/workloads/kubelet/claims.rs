//! PersistentVolumeClaims, as one node keeps them: each claim is a directory on EPHEMERAL,
//! `/var/lib/cairn/claims/NAMESPACE/NAME`, made when a pod first mounts it and kept across
//! pod restarts, replacements and reboots. Deleting the claim (`ctl delete -f`) retires the
//! directory at once (a claim made again under the same name starts empty) and the kubelet
//! removes it once no pod that wants the claim is left, as upstream holds a claim while a pod
//! uses it.

use std::io;
use std::path::{Path, PathBuf};

/// Where claims live on the node.
pub const CLAIM_ROOT: &str = "/var/lib/cairn/claims";
/// Where deleted claims wait for their last pod, under [`CLAIM_ROOT`].
const RETIRED: &str = ".deleted";

/// The directory of claim `name` in `namespace`, under `root` (the node's [`CLAIM_ROOT`]).
/// Both are DNS labels (checked on apply), so neither leaves its directory.
pub fn claim_dir(root: &Path, namespace: &str, name: &str) -> PathBuf {
    root.join(namespace).join(name)
}

/// Moves the directory of a deleted claim aside, for [`sweep_retired`]; false when the claim
/// had no directory (no pod ever mounted it).
pub fn retire(root: &Path, namespace: &str, name: &str) -> io::Result<bool> {
    let dir = claim_dir(root, namespace, name);
    if !dir.exists() {
        return Ok(false);
    }
    let retired = root.join(RETIRED);
    std::fs::create_dir_all(&retired)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    // `_` occurs in neither label: the name reads back.
    std::fs::rename(&dir, retired.join(format!("{namespace}_{name}_{stamp}")))?;
    Ok(true)
}

/// Removes the retired claims under `root` that no pod wants any more (`in_use(namespace,
/// name)`); returns what it did, for the log.
pub fn sweep_retired(root: &Path, in_use: impl Fn(&str, &str) -> bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.join(RETIRED)) else { return Vec::new() };
    let mut done = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let mut parts = file.splitn(3, '_');
        let (Some(namespace), Some(name)) = (parts.next(), parts.next()) else { continue };
        if in_use(namespace, name) {
            continue;
        }
        done.push(match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => format!("removed the data of deleted claim {namespace}/{name}"),
            Err(e) => format!("removing the data of deleted claim {namespace}/{name}: {e}"),
        });
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_claim_goes_once_no_pod_wants_it() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        assert!(!retire(root, "default", "data").unwrap(), "never mounted");
        let dir = claim_dir(root, "default", "data");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("db"), "rows").unwrap();
        assert!(retire(root, "default", "data").unwrap());
        assert!(!dir.exists(), "a claim made again starts empty");
        assert!(sweep_retired(root, |ns, name| (ns, name) == ("default", "data")).is_empty());
        assert_eq!(
            sweep_retired(root, |_, _| false),
            ["removed the data of deleted claim default/data"]
        );
        assert_eq!(std::fs::read_dir(root.join(RETIRED)).unwrap().count(), 0);
    }
}
