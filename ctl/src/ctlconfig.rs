//! The client config: named contexts, each with nodes, the CA that signs the nodes'
//! certificates, and a client certificate and key (PEM). Default path
//! `~/.config/cairn/ctlconfig`; `--ctlconfig` or `CTLCONFIG` override it.
//!
//! ```yaml
//! context: edge
//! contexts:
//!   edge:
//!     nodes: [10.0.0.5]
//!     ca: "-----BEGIN CERTIFICATE-----..."
//!     crt: "-----BEGIN CERTIFICATE-----..."
//!     key: "-----BEGIN PRIVATE KEY-----..."
//! ```

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtlConfig {
    /// The context used when `--context` is not given.
    pub context: String,
    /// Contexts by name.
    pub contexts: BTreeMap<String, Context>,
}

/// One set of nodes and the credentials to reach them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// Default nodes, HOST[:PORT].
    #[serde(default)]
    pub nodes: Vec<String>,
    /// CA certificate that signs node certificates, PEM.
    pub ca: String,
    /// Client certificate, PEM.
    pub crt: String,
    /// Client private key, PEM.
    pub key: String,
}

/// The client config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CtlConfigError {
    /// No file there.
    #[error("no client config at {0}: create one with `ctl gen config`, or pass --ctlconfig FILE")]
    Missing(PathBuf),
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Not a client config.
    #[error("{path}: not a valid client config: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_yaml::Error,
    },
    /// The context named does not exist.
    #[error("{path}: no context named {name:?} (it has: {known})")]
    UnknownContext {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The names it has.
        known: String,
    },
}

/// Where the client config is when nothing says otherwise.
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("cairn/ctlconfig")
}

impl CtlConfig {
    /// A file with one context, which is current.
    pub fn single(name: &str, context: Context) -> Self {
        CtlConfig {
            context: name.to_string(),
            contexts: BTreeMap::from([(name.to_string(), context)]),
        }
    }

    /// Reads the file at `path`.
    pub fn load(path: &Path) -> Result<Self, CtlConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => CtlConfigError::Missing(path.into()),
            _ => CtlConfigError::Io { path: path.into(), source },
        })?;
        serde_yaml::from_str(&text)
            .map_err(|source| CtlConfigError::Parse { path: path.into(), source })
    }

    /// The named context, or the current one.
    pub fn context(&self, path: &Path, name: Option<&str>) -> Result<&Context, CtlConfigError> {
        let name = name.unwrap_or(&self.context);
        self.contexts.get(name).ok_or_else(|| CtlConfigError::UnknownContext {
            path: path.into(),
            name: name.to_string(),
            known: self.contexts.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// Writes the file with mode 0600 (it holds a private key).
    pub fn save(&self, path: &Path) -> Result<(), CtlConfigError> {
        let yaml = serde_yaml::to_string(self).expect("a client config always serializes");
        crate::gen::write_private(path, yaml.as_bytes())
            .map_err(|source| CtlConfigError::Io { path: path.into(), source })
    }
}
