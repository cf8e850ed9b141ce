//! What the node runs: version, kernel, host name, mode, slots and the last update.

use super::config::NodeMode;
use super::{blocking, Node, NodeError};
use crate::update::SlotStatus;

/// The node's version and state, for `Version`.
#[derive(Debug)]
pub struct NodeVersion {
    /// Cairn's version.
    pub version: String,
    /// The kernel's release.
    pub kernel: String,
    /// The host name the node goes by.
    pub hostname: String,
    /// Whether the node has a config.
    pub mode: NodeMode,
    /// The slots and the last update.
    pub slots: SlotStatus,
    /// In recovery mode, why the stored config does not load.
    pub recovery_reason: Option<String>,
}

impl Node {
    /// The node's version and state.
    pub async fn version(&self) -> Result<NodeVersion, NodeError> {
        let uname = nix::sys::utsname::uname().map_err(NodeError::Uname)?;
        let updater = self.parts.updater.clone();
        let slots = blocking(move || updater.status()).await?;
        let configuration = self.configuration();
        Ok(NodeVersion {
            version: self.parts.updater.release().version.clone(),
            kernel: uname.release().to_string_lossy().into_owned(),
            hostname: configuration.hostname(),
            mode: configuration.mode(),
            slots,
            recovery_reason: configuration.recovery_reason().map(str::to_string),
        })
    }
}
