//! Where a node keeps things, relative to its root (`/` on a node).
//!
//! STATE (machine config, node identity) is mounted at `/system/state`; EPHEMERAL at `/var`.

use std::path::{Path, PathBuf};

/// `path` (absolute on the node) under `root`.
pub fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The node's paths.
#[derive(Debug, Clone)]
pub struct NodeLayout {
    root: PathBuf,
}

impl NodeLayout {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        NodeLayout { root: root.into() }
    }

    /// The STATE partition's mount point.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("system/state")
    }

    /// The running machine config.
    pub fn config_path(&self) -> PathBuf {
        self.state_dir().join("config.yaml")
    }

    /// Pod manifests (one Pod per `*.yaml` file), run by the kubelet beside `machine.pods`.
    pub fn manifest_dir(&self) -> PathBuf {
        self.state_dir().join("manifests")
    }

    /// The objects applied with `ctl apply -f` (see `workloads::applied`).
    pub fn applied_objects_path(&self) -> PathBuf {
        self.state_dir().join("objects.json")
    }

    /// A config applied with `--mode staged`, promoted at the next start.
    pub fn staged_config_path(&self) -> PathBuf {
        self.state_dir().join("config.staged.yaml")
    }

    /// The last known-good time, a floor for the clock (see [`crate::time::floor`]).
    pub fn time_floor_path(&self) -> PathBuf {
        self.state_dir().join("time-floor")
    }

    /// The image's build time, a floor for the clock (in the read-only image).
    pub fn image_time_floor_path(&self) -> PathBuf {
        under(&self.root, cairn_api::image::TIME_FLOOR_PATH)
    }

    /// Where image-builder puts the bootstrap token it was given (in the read-only image).
    pub fn bootstrap_token_path(&self) -> PathBuf {
        under(&self.root, cairn_api::image::BOOTSTRAP_TOKEN_PATH)
    }

    /// EPHEMERAL's mount point: the node's only writable place besides STATE.
    pub fn var_dir(&self) -> PathBuf {
        self.root.join("var")
    }

    /// Where service logs are flushed (on EPHEMERAL).
    pub fn log_dir(&self) -> PathBuf {
        self.var_dir().join("log")
    }

    /// The places without secrets, where readers may read and list.
    pub fn readable_places(&self) -> crate::inspect::files::ReadablePlaces {
        crate::inspect::files::ReadablePlaces::new(&self.root, &self.state_dir(), &self.var_dir())
    }

    /// The root itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
}
