//! The machine config on STATE: the running config and a staged one, each written
//! atomically (temp file, fsync, rename, fsync the directory), so a power cut leaves the old
//! file or the new one, never a torn one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cairn_api::config::{ConfigError, MachineConfig};

use crate::durable;
use crate::layout::NodeLayout;

/// A config file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A stored config no longer validates.
    #[error("{path}: stored config is invalid: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ConfigError,
    },
}

/// The configs on STATE.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    layout: NodeLayout,
}

impl ConfigStore {
    /// The store of a node.
    pub fn new(layout: NodeLayout) -> Self {
        ConfigStore { layout }
    }

    /// The running config, if the node has been configured.
    pub fn load(&self) -> Result<Option<MachineConfig>, StoreError> {
        read_config(&self.layout.config_path())
    }

    /// The staged config, if one waits for the next start.
    pub fn load_staged(&self) -> Result<Option<MachineConfig>, StoreError> {
        read_config(&self.layout.staged_config_path())
    }

    /// Makes `config` the running config.
    pub fn save(&self, config: &MachineConfig) -> Result<(), StoreError> {
        save_config(&self.layout.config_path(), config)
    }

    /// Stages `config` for the next start.
    pub fn stage(&self, config: &MachineConfig) -> Result<(), StoreError> {
        save_config(&self.layout.staged_config_path(), config)
    }

    /// Drops a staged config (a later live apply supersedes it).
    pub fn discard_staged(&self) -> Result<(), StoreError> {
        let path = self.layout.staged_config_path();
        match fs::remove_file(&path) {
            Ok(()) => {
                // Or a power cut could bring the superseded config back at the next start.
                let dir = self.layout.state_dir();
                durable::sync_dir(&dir).map_err(|source| StoreError::Io { path: dir, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Moves a running config that cannot be used aside (kept for the operator to read with
    /// `ctl read`, never deleted), so the node can start without it. Returns where it went.
    pub fn set_aside_running(&self) -> Result<PathBuf, StoreError> {
        let from = self.layout.config_path();
        let to = self.layout.state_dir().join("config.invalid.yaml");
        fs::rename(&from, &to).map_err(|source| StoreError::Io { path: from, source })?;
        let dir = self.layout.state_dir();
        durable::sync_dir(&dir).map_err(|source| StoreError::Io { path: dir, source })?;
        Ok(to)
    }

    /// At start: a staged config becomes the running one. Returns whether there was one.
    pub fn promote_staged(&self) -> Result<bool, StoreError> {
        let staged = self.layout.staged_config_path();
        if !staged.exists() {
            return Ok(false);
        }
        let target = self.layout.config_path();
        fs::rename(&staged, &target).map_err(|source| StoreError::Io { path: staged, source })?;
        let dir = self.layout.state_dir();
        durable::sync_dir(&dir).map_err(|source| StoreError::Io { path: dir, source })?;
        Ok(true)
    }
}

fn read_config(path: &Path) -> Result<Option<MachineConfig>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => MachineConfig::from_yaml(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Invalid { path: path.into(), source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io { path: path.into(), source }),
    }
}

/// Writes a config (mode 0600: configs hold keys) atomically.
fn save_config(path: &Path, config: &MachineConfig) -> Result<(), StoreError> {
    durable::write_atomically(path, config.to_yaml().as_bytes(), 0o600)
        .map_err(|source| StoreError::Io { path: path.into(), source })
}
