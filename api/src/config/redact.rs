//! Secrets removed from a config for callers who may not see them.

use super::MachineConfig;

/// What a redacted secret reads as.
pub const REDACTED: &str = "******";

impl MachineConfig {
    /// A copy with every secret (CA keys, the bootstrap token) replaced by [`REDACTED`].
    pub fn redacted(&self) -> MachineConfig {
        let mut config = self.clone();
        let hide = |secret: &mut Option<String>| {
            if secret.is_some() {
                *secret = Some(REDACTED.to_string());
            }
        };
        hide(&mut config.machine.ca.key);
        if let Some(cluster) = &mut config.cluster {
            hide(&mut cluster.token);
            if let Some(ca) = &mut cluster.ca {
                hide(&mut ca.key);
            }
        }
        config
    }
}
