//! Pods that ended: one small file per pod uid, holding the phase it ended in, in one of two
//! places. Jobs' pods on EPHEMERAL (`/var/lib/cairn/jobs/UID`), so that a Job's pod runs
//! once, not again at every boot as a static pod would. Every pod's in `/run` for this boot
//! only: its sandbox is stopped once it ended, and a kubelet that starts again knows it ended
//! rather than taking the stopped sandbox for a lost one and running the pod again; at the
//! next boot a pod that is no Job's runs again, as before. A record goes with its pod (the
//! object deleted or changed, the pod restarted on request).

use std::io;
use std::path::Path;

/// Where the records of Jobs' pods are on the node.
pub const COMPLETION_ROOT: &str = "/var/lib/cairn/jobs";
/// Where the records of the pods that ended in this boot are (a tmpfs).
pub const ENDED_ROOT: &str = "/run/cairn/pods-ended";

/// Records that the pod `uid` finished in `phase` (`Succeeded` or `Failed`); once.
pub fn record(root: &Path, uid: &str, phase: &str) -> io::Result<()> {
    let path = root.join(uid);
    if path.exists() {
        return Ok(());
    }
    crate::files::durable::write_atomically(&path, phase.as_bytes(), 0o644)
}

/// The phase the pod `uid` finished in, if it did.
pub fn recorded(root: &Path, uid: &str) -> Option<String> {
    std::fs::read_to_string(root.join(uid)).ok().filter(|p| p == "Succeeded" || p == "Failed")
}

/// Forgets the pod `uid` (it is removed, or restarted on request).
pub fn forget(root: &Path, uid: &str) {
    let _ = std::fs::remove_file(root.join(uid));
}

/// Removes the records of pods `wanted` does not want.
pub fn sweep(root: &Path, wanted: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let uid = entry.file_name().to_string_lossy().into_owned();
        if !wanted(&uid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_job_is_remembered_until_its_pod_goes() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        assert_eq!(recorded(root, "u1"), None);
        record(root, "u1", "Succeeded").unwrap();
        record(root, "u1", "Failed").unwrap();
        assert_eq!(recorded(root, "u1").as_deref(), Some("Succeeded"), "the first end stays");
        record(root, "u2", "Failed").unwrap();
        sweep(root, |uid| uid == "u2");
        assert_eq!((recorded(root, "u1"), recorded(root, "u2").as_deref()), (None, Some("Failed")));
        forget(root, "u2");
        assert_eq!(recorded(root, "u2"), None);
    }
}
