//! The machine config: one YAML document per node, `version: v1alpha1`.
//!
//! Parsing is strict: an unknown field anywhere is an error naming its path. Pods are Kubernetes
//! objects, which serde reads leniently: [`pod`] finds their unknown fields, and those Cairn's
//! kubelet does not support. After parsing, [`MachineConfig::validate`] checks every value and
//! reports *all* problems at once, each with its YAML path, so an operator can fix a file in one
//! go:
//!
//! ```text
//! machine.network.interfaces[0].addresses[1]: "10.0.0.300/24" is not an IP network
//! ```
//!
//! Later schema versions get their own module; old versions stay readable.

mod ca;
pub mod dns;
pub mod documents;
pub mod env;
mod labels;
pub mod objects;
pub mod pod;
mod redact;
mod scheduling;
mod schema;
pub mod security_context;
pub mod shape;
mod validate;
mod yaml11_numbers;

pub use redact::{redact_pod, REDACTED};
pub use schema::*;
pub use validate::Problem;

/// Why a machine config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The YAML does not fit the schema (syntax, unknown field, wrong type).
    #[error("{message}")]
    Parse {
        /// What serde_yaml said: the path, the reason and the line.
        message: String,
    },
    /// The YAML fits the schema but values are wrong; every problem is listed.
    #[error("{} problem(s):\n{}", .0.len(), Problem::list(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// Every problem as `path: reason`, one per entry.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Parse { .. } => vec![self.to_string()],
            ConfigError::Invalid(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The longest parse error kept (it quotes the refused value).
const MAX_PARSE_ERROR_CHARS: usize = 1024;

/// Why a config of the first format, with one CA for both sides, is refused.
pub const SINGLE_CA: &str = "machine.ca: a single CA for clients and node is no longer accepted: its key, on every node, let a stolen node mint admin certificates. Regenerate with `ctl gen config NAME` (a clientCa whose key stays in secrets.yaml, and a nodeCa), then issue new client configs with `ctl gen client`";

/// Whether the document has the first format's `machine.ca` (only asked once parsing failed,
/// to explain why).
fn has_single_ca(bytes: &[u8]) -> bool {
    serde_yaml::from_slice::<serde_yaml::Value>(bytes)
        .is_ok_and(|doc| doc.get("machine").and_then(|m| m.get("ca")).is_some())
}

impl MachineConfig {
    /// Parses and validates a config, within [`shape`]'s limits.
    pub fn from_yaml(bytes: &[u8]) -> Result<Self, ConfigError> {
        shape::check(bytes).map_err(|message| ConfigError::Parse { message })?;
        // UTF-8, as the shape check found.
        let text = String::from_utf8_lossy(bytes);
        let text = yaml11_numbers::rewritten(&text, yaml11_numbers::Pods::MachinePods);
        let bytes = text.as_bytes();
        // serde_yaml's message already names the path and the line.
        let config: MachineConfig = serde_yaml::from_slice(bytes).map_err(|e| {
            let message = if has_single_ca(bytes) {
                SINGLE_CA.to_string()
            } else {
                // serde_yaml quotes the refused value, whatever its size.
                crate::text::shortened(&e.to_string(), MAX_PARSE_ERROR_CHARS)
            };
            ConfigError::Parse { message }
        })?;
        // serde dropped the pods' (and objects') fields that Kubernetes does not know: they are found in the
        // YAML as written.
        let written: serde_yaml::Value =
            serde_yaml::from_slice(bytes).map_err(|e| ConfigError::Parse {
                message: crate::text::shortened(&e.to_string(), MAX_PARSE_ERROR_CHARS),
            })?;
        let list = |field: &str| {
            written
                .get("machine")
                .and_then(|machine| machine.get(field))
                .and_then(serde_yaml::Value::as_sequence)
                .map_or(&[][..], Vec::as_slice)
        };
        let problems = config.validate_as_written(list("pods"), list("objects"));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The config as YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a machine config always serializes")
    }
}

#[cfg(test)]
mod tests;
