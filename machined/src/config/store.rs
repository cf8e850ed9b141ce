//! The machine config on STATE: the running config and a staged one, each written
//! atomically (temp file, fsync, rename, fsync the directory), so a power cut leaves the old
//! file or the new one, never a torn one.
//!
//! Beside them, in `trust/`, the last known trust: the client CA and the node CA of the last
//! config stored or loaded. A configured node whose config stops loading (a damaged file, a
//! release with stricter validation) must not fall back to taking a config from anyone: it
//! waits in recovery mode, trusting these. They are files of their own because the config
//! that held them may be the thing that broke.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_api::config::{shape, ConfigError, MachineConfig};

use crate::files::durable;
use crate::files::layout::NodeLayout;

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

/// The CA files of the last known trust, under STATE's `trust/`.
const CLIENT_CA_FILE: &str = "client-ca.crt";
const NODE_CA_CRT_FILE: &str = "node-ca.crt";
const NODE_CA_KEY_FILE: &str = "node-ca.key";
/// Where a config that no longer loads is kept, in STATE.
const SET_ASIDE_FILE: &str = "config.invalid.yaml";

/// The trust of the last config that loaded, kept for recovery mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastKnownTrust {
    /// `machine.clientCa.crt`: its admins may recover the node.
    pub client_ca: String,
    /// `machine.nodeCa` (certificate, key): the API keeps proving itself with it, so an admin's
    /// ctl can tell the node from an impostor before it sends a config holding keys.
    pub node_ca: Option<(String, String)>,
}

impl LastKnownTrust {
    fn of(config: &MachineConfig) -> Self {
        let node_ca = &config.machine.node_ca;
        LastKnownTrust {
            client_ca: config.machine.client_ca.crt.clone(),
            node_ca: node_ca.key.clone().map(|key| (node_ca.crt.clone(), key)),
        }
    }

    /// Takes the CAs from a config that no longer validates, read leniently as plain YAML
    /// (within the same size and nesting limits); none when it has no client CA there.
    pub fn from_damaged(bytes: &[u8]) -> Option<Self> {
        shape::check(bytes).ok()?;
        let doc: serde_yaml::Value = serde_yaml::from_slice(bytes).ok()?;
        let machine = doc.get("machine")?;
        let text =
            |ca: &str, field: &str| machine.get(ca)?.get(field)?.as_str().map(str::to_string);
        let client_ca = text("clientCa", "crt")?;
        let node_ca = text("nodeCa", "crt").zip(text("nodeCa", "key"));
        Some(LastKnownTrust { client_ca, node_ca })
    }
}

/// What STATE holds at start.
#[derive(Debug)]
pub enum Stored {
    /// No config, and none ever loaded: a new node, for maintenance mode.
    Nothing,
    /// The running config (shared: it becomes the machine's).
    Config(Arc<MachineConfig>),
    /// The node was configured, but its config does not load: recovery mode.
    Damaged(Damage),
}

/// A configured node's config that does not load.
#[derive(Debug, Clone)]
pub struct Damage {
    /// Why, in words.
    pub reason: String,
    /// Whom to trust meanwhile (none found: only the bootstrap token can recover the node).
    pub trust: Option<LastKnownTrust>,
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

    /// Makes `config` the running config, and its CAs the last known trust.
    pub fn save(&self, config: &MachineConfig) -> Result<(), StoreError> {
        save_config(&self.layout.config_path(), config)?;
        self.keep_trust_logged(config);
        Ok(())
    }

    /// What STATE holds at start, after a staged config became the running one. A config
    /// that no longer validates is set aside (kept, never deleted); one that cannot be read
    /// stays in place for a later start. Either way a node that was configured stays in
    /// hands it was in: recovery mode, never maintenance mode. Never fails: PID 1 must not
    /// exit over its config.
    pub fn open(&self) -> Stored {
        match self.load() {
            Ok(Some(config)) => {
                // Nodes configured before the trust was kept get it here, at their next good start.
                self.keep_trust_logged(&config);
                Stored::Config(Arc::new(config))
            }
            Ok(None) => {
                let set_aside = self.set_aside_path();
                let trust = self.last_known_trust();
                if trust.is_none() && !set_aside.exists() {
                    return Stored::Nothing;
                }
                // An older release set a damaged config aside and went to maintenance mode;
                // or config.yaml went missing: the node was configured all the same.
                let reason = format!(
                    "{} is missing, though the node was configured",
                    self.layout.config_path().display()
                );
                Stored::Damaged(Damage { trust: self.recovery_trust(trust, &set_aside), reason })
            }
            Err(e @ StoreError::Invalid { .. }) => {
                let damaged = match self.set_aside_running() {
                    Ok(kept) => {
                        tracing::error!("{e}; it is kept as {}", kept.display());
                        kept
                    }
                    Err(set_aside) => {
                        tracing::error!("{e}; {set_aside}");
                        self.layout.config_path()
                    }
                };
                let trust = self.last_known_trust();
                Stored::Damaged(Damage {
                    trust: self.recovery_trust(trust, &damaged),
                    reason: e.to_string(),
                })
            }
            Err(e @ StoreError::Io { .. }) => {
                tracing::error!("{e}; the file stays in place");
                let trust = self.last_known_trust();
                let config = self.layout.config_path();
                Stored::Damaged(Damage {
                    trust: self.recovery_trust(trust, &config),
                    reason: e.to_string(),
                })
            }
        }
    }

    /// The last known trust, else the CAs read leniently from `damaged`; says in the log
    /// which, or that only the bootstrap token is left.
    fn recovery_trust(
        &self,
        kept: Option<LastKnownTrust>,
        damaged: &Path,
    ) -> Option<LastKnownTrust> {
        if kept.is_some() {
            return kept;
        }
        let lenient = fs::read(damaged).ok().and_then(|bytes| LastKnownTrust::from_damaged(&bytes));
        match &lenient {
            Some(_) => tracing::warn!(
                "no copy of the last known client CA in {}: trusting machine.clientCa.crt as read from {}",
                self.trust_dir().display(),
                damaged.display()
            ),
            None => tracing::error!(
                "no copy of the last known client CA in {}, and none readable in {}: only a client proving the bootstrap token can give this node a config",
                self.trust_dir().display(),
                damaged.display()
            ),
        }
        lenient
    }

    /// The last known trust, if one was kept (an unreadable copy counts as none, logged).
    pub fn last_known_trust(&self) -> Option<LastKnownTrust> {
        let dir = self.trust_dir();
        let read = |name: &str| match fs::read_to_string(dir.join(name)) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::error!("{}: {e}", dir.join(name).display());
                None
            }
        };
        let client_ca = read(CLIENT_CA_FILE)?;
        let node_ca = read(NODE_CA_CRT_FILE).zip(read(NODE_CA_KEY_FILE));
        Some(LastKnownTrust { client_ca, node_ca })
    }

    /// Makes `config`'s CAs the last known trust; files already right are not rewritten
    /// (flash wears). The key is written before the certificate and the client CA last, so
    /// a power cut leaves at worst a node CA that no longer matches (recovery then serves a
    /// self-signed certificate), never a client CA without the rest.
    pub fn keep_trust(&self, config: &MachineConfig) -> Result<(), StoreError> {
        let trust = LastKnownTrust::of(config);
        let dir = self.trust_dir();
        let mut files = Vec::new();
        if let Some((crt, key)) = &trust.node_ca {
            files.push((NODE_CA_KEY_FILE, key.as_str(), 0o600));
            files.push((NODE_CA_CRT_FILE, crt.as_str(), 0o644));
        }
        files.push((CLIENT_CA_FILE, trust.client_ca.as_str(), 0o644));
        for (name, text, mode) in files {
            let path = dir.join(name);
            if fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
                continue;
            }
            durable::write_atomically(&path, text.as_bytes(), mode)
                .map_err(|source| StoreError::Io { path, source })?;
        }
        Ok(())
    }

    /// [`Self::keep_trust`], for when the config itself is stored or running already: a
    /// failure is logged (the next good start tries again), not the config's failure.
    fn keep_trust_logged(&self, config: &MachineConfig) {
        if let Err(e) = self.keep_trust(config) {
            tracing::error!("keeping the last known client CA: {e}; a config that stops loading could then be recovered only with the bootstrap token");
        }
    }

    fn trust_dir(&self) -> PathBuf {
        self.layout.state_dir().join("trust")
    }

    fn set_aside_path(&self) -> PathBuf {
        self.layout.state_dir().join(SET_ASIDE_FILE)
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
        let to = self.set_aside_path();
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

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn ca_pem() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn indent(pem: &str) -> String {
        pem.lines().map(|l| format!("      {l}\n")).collect()
    }

    /// A valid config's YAML, with `extra` appended under `machine`.
    pub(crate) fn config_yaml(extra: &str) -> String {
        let ((client, _), (node, node_key)) = (ca_pem(), ca_pem());
        format!(
            "version: v1alpha1\nmachine:\n  clientCa:\n    crt: |\n{}  nodeCa:\n    crt: |\n{}    key: |\n{}{extra}",
            indent(&client),
            indent(&node),
            indent(&node_key)
        )
    }

    fn store() -> (tempfile::TempDir, ConfigStore, NodeLayout) {
        let root = tempfile::tempdir().unwrap();
        let layout = NodeLayout::new(root.path());
        (root, ConfigStore::new(layout.clone()), layout)
    }

    fn damaged(stored: Stored) -> Damage {
        match stored {
            Stored::Damaged(damage) => damage,
            other => panic!("expected recovery, got {other:?}"),
        }
    }

    #[test]
    fn storing_or_loading_a_config_keeps_its_cas_apart() {
        let (_root, store, layout) = store();
        let config = MachineConfig::from_yaml(config_yaml("").as_bytes()).unwrap();
        store.save(&config).unwrap();
        let trust = store.last_known_trust().unwrap();
        assert_eq!(trust, LastKnownTrust::of(&config));
        let key = layout.state_dir().join("trust").join(NODE_CA_KEY_FILE);
        assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

        // A node configured by an older release has no copy until its next good start.
        fs::remove_dir_all(layout.state_dir().join("trust")).unwrap();
        assert!(store.last_known_trust().is_none());
        assert!(matches!(store.open(), Stored::Config(_)));
        assert_eq!(store.last_known_trust().unwrap(), trust);
    }

    #[test]
    fn a_configured_node_whose_config_breaks_is_damaged_never_new() {
        let (_root, store, layout) = store();
        assert!(matches!(store.open(), Stored::Nothing));
        let config = MachineConfig::from_yaml(config_yaml("").as_bytes()).unwrap();
        store.save(&config).unwrap();
        fs::write(layout.config_path(), "version: v1alpha1\nmachine: [damaged\n").unwrap();

        let damage = damaged(store.open());
        assert!(damage.reason.contains("stored config is invalid"), "{}", damage.reason);
        assert_eq!(damage.trust, Some(LastKnownTrust::of(&config)));
        let kept = fs::read_to_string(layout.state_dir().join(SET_ASIDE_FILE)).unwrap();
        assert!(kept.contains("[damaged"));

        // The next start finds no config.yaml: still recovery, with the same trust.
        let damage = damaged(store.open());
        assert!(damage.reason.contains("is missing, though the node was configured"));
        assert_eq!(damage.trust, Some(LastKnownTrust::of(&config)));
    }

    #[test]
    fn without_a_copy_the_cas_come_from_the_damaged_file_leniently() {
        let (_root, store, layout) = store();
        // Valid YAML that a stricter release refuses (here: an unknown field).
        let yaml = config_yaml("  retired: true\n");
        let written = serde_yaml::from_str::<serde_yaml::Value>(&yaml).unwrap();
        fs::create_dir_all(layout.state_dir()).unwrap();
        fs::write(layout.config_path(), &yaml).unwrap();
        let trust = damaged(store.open()).trust.expect("the CAs read leniently");
        let field = |ca: &str, f: &str| written["machine"][ca][f].as_str().unwrap().to_string();
        assert_eq!(trust.client_ca, field("clientCa", "crt"));
        assert_eq!(trust.node_ca, Some((field("nodeCa", "crt"), field("nodeCa", "key"))));

        // Unreadable as YAML: nobody is trusted (only the bootstrap token is left).
        fs::write(layout.state_dir().join(SET_ASIDE_FILE), "machine: [damaged\n").unwrap();
        assert_eq!(damaged(store.open()).trust, None);
    }

    #[test]
    fn a_config_that_cannot_be_read_stays_in_place_and_the_node_in_recovery() {
        let (_root, store, layout) = store();
        let config = MachineConfig::from_yaml(config_yaml("").as_bytes()).unwrap();
        store.save(&config).unwrap();
        fs::remove_file(layout.config_path()).unwrap();
        fs::create_dir(layout.config_path()).unwrap();
        let damage = damaged(store.open());
        assert_eq!(damage.trust, Some(LastKnownTrust::of(&config)));
        assert!(layout.config_path().is_dir());
        assert!(!layout.state_dir().join(SET_ASIDE_FILE).exists());
    }
}
