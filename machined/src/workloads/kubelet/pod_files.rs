//! Where the kubelet keeps pods' files on the node (their logs, volumes, claims, the ends of
//! Jobs, their cgroups) and how it mounts their volumes: the node's own directories and mount syscalls in
//! machined; a temporary directory and a [`RecordingMounter`](super::volumes::RecordingMounter)
//! in unit tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::files::layout::under;

use super::source::DesiredPod;
use super::volumes::{Mounter, PodVolumes};
use super::{claims, completions};

/// Container logs, one directory per pod (the upstream kubelet's layout).
const POD_LOG_ROOT: &str = "/var/log/pods";
/// Pod volumes (emptyDir, subPath binds), one directory per pod uid (see [`super::volumes`]).
const POD_DATA_ROOT: &str = "/var/lib/cairn/pods";
/// The cgroup (v2) filesystem.
const CGROUP_FS: &str = "/sys/fs/cgroup";

/// The node's directories for pods, and its mounter.
#[derive(Clone)]
pub struct PodFiles {
    /// Each pod's volumes, by uid.
    pub data_root: PathBuf,
    /// Each pod's container logs.
    pub log_root: PathBuf,
    /// The claims' data.
    pub claim_root: PathBuf,
    /// The record of each Job's pod that finished.
    pub completion_root: PathBuf,
    /// The record of each pod that ended in this boot.
    pub ended_root: PathBuf,
    /// The cgroup filesystem, where each pod's cgroup is made.
    pub cgroup_root: PathBuf,
    /// How volumes are mounted.
    pub mounter: Arc<dyn Mounter>,
}

impl PodFiles {
    /// The directories under `root` (`/` on a node), mounted by `mounter`.
    pub fn under(root: &Path, mounter: Arc<dyn Mounter>) -> PodFiles {
        PodFiles {
            data_root: under(root, POD_DATA_ROOT),
            log_root: under(root, POD_LOG_ROOT),
            claim_root: under(root, claims::CLAIM_ROOT),
            completion_root: under(root, completions::COMPLETION_ROOT),
            ended_root: under(root, completions::ENDED_ROOT),
            cgroup_root: under(root, CGROUP_FS),
            mounter,
        }
    }

    /// The pod's log directory.
    pub fn log_directory(&self, pod: &DesiredPod) -> PathBuf {
        self.log_root.join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
    }

    /// The data directory of pod `uid` (its emptyDir volumes and subPath binds).
    pub fn data_directory(&self, uid: &str) -> PathBuf {
        self.data_root.join(uid)
    }

    /// The volumes of pod `uid`.
    pub fn volumes(&self, uid: &str) -> PodVolumes<'_> {
        PodVolumes::new(self.data_directory(uid), self.mounter.as_ref())
            .with_claims_at(self.claim_root.clone())
    }
}
