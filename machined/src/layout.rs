//! Where a node keeps things, relative to its root (`/` on a node).
//!
//! STATE (machine config, node identity) is mounted at `/system/state`; EPHEMERAL at `/var`.

use std::path::{Path, PathBuf};

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

    /// A config applied with `--mode staged`, promoted at the next start.
    pub fn staged_config_path(&self) -> PathBuf {
        self.state_dir().join("config.staged.yaml")
    }

    /// EPHEMERAL's mount point: the node's only writable place besides STATE.
    pub fn var_dir(&self) -> PathBuf {
        self.root.join("var")
    }

    /// Where service logs are flushed (on EPHEMERAL).
    pub fn log_dir(&self) -> PathBuf {
        self.var_dir().join("log")
    }

    /// The root itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
}
