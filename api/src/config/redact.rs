//! Secrets removed from a config for callers who may not see them.

use super::MachineConfig;

/// What a redacted secret reads as.
pub const REDACTED: &str = "******";

impl MachineConfig {
    /// A copy with every secret replaced by [`REDACTED`]: CA keys, the bootstrap token, the
    /// contents of `files` (they hold credentials as often as not), the values of pods'
    /// environment variables, and credentials in registry mirror URLs.
    pub fn redacted(&self) -> MachineConfig {
        let mut config = self.clone();
        let hide = |secret: &mut Option<String>| {
            if secret.is_some() {
                *secret = Some(REDACTED.to_string());
            }
        };
        hide(&mut config.machine.node_ca.key);
        for file in &mut config.machine.files {
            file.content = REDACTED.to_string();
        }
        for pod in &mut config.machine.pods {
            let Some(spec) = &mut pod.spec else { continue };
            let containers =
                spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten());
            for var in containers.flat_map(|c| c.env.iter_mut().flatten()) {
                hide(&mut var.value);
            }
        }
        for mirror in config.machine.registries.mirrors.values_mut() {
            for endpoint in &mut mirror.endpoints {
                *endpoint = without_userinfo(endpoint);
            }
        }
        if let Some(cluster) = &mut config.cluster {
            hide(&mut cluster.token);
            if let Some(ca) = &mut cluster.ca {
                hide(&mut ca.key);
            }
        }
        config
    }
}

/// `scheme://user:password@host/...` with the user and password replaced by [`REDACTED`].
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{REDACTED}{}", &rest[at..]),
        None => url.to_string(),
    }
}
