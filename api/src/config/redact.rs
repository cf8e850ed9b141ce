//! Secrets removed from a config, and from pods, for callers who may not see them.

use k8s_openapi::api::core::v1::Pod;

use super::MachineConfig;

/// What a redacted secret reads as.
pub const REDACTED: &str = "******";

impl MachineConfig {
    /// A copy with every secret replaced by [`REDACTED`]: CA keys, the bootstrap token, the
    /// contents of `files` (they hold credentials as often as not), the values of pods'
    /// environment variables and of Secrets, and credentials in registry mirror URLs.
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
        config.machine.pods.iter_mut().for_each(redact_pod);
        config.machine.objects = config.machine.objects.iter().map(|o| o.redacted()).collect();
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

/// Replaces `pod`'s secrets with [`REDACTED`]: the values of its containers' environment
/// variables. Every output that carries a pod spec (the config, the kubelet's pods) goes
/// through here, so a secret hidden in one is hidden in all.
pub fn redact_pod(pod: &mut Pod) {
    let Some(spec) = &mut pod.spec else { return };
    let containers = spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten());
    for var in containers.flat_map(|c| c.env.iter_mut().flatten()) {
        if var.value.is_some() {
            var.value = Some(REDACTED.to_string());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_env_values_are_hidden_and_nothing_else() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {
                "initContainers": [{"name": "init", "env": [{"name": "SEED", "value": "s1"}]}],
                "containers": [{"name": "web", "image": "busybox", "env": [
                    {"name": "PASSWORD", "value": "s2"},
                    {"name": "EMPTY"},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                ]}],
            },
        }))
        .unwrap();
        let before = pod.clone();
        redact_pod(&mut pod);
        let spec = pod.spec.as_ref().unwrap();
        let env = spec.containers[0].env.as_ref().unwrap();
        let values: Vec<_> = env.iter().map(|v| v.value.as_deref()).collect();
        assert_eq!(values, [Some(REDACTED), None, None]);
        assert_eq!(
            env[2].value_from,
            before.spec.as_ref().unwrap().containers[0].env.as_ref().unwrap()[2].value_from
        );
        let init = spec.init_containers.as_ref().unwrap();
        assert_eq!(init[0].env.as_ref().unwrap()[0].value.as_deref(), Some(REDACTED));
        assert_eq!(spec.containers[0].image.as_deref(), Some("busybox"));
        // A pod without a spec has nothing to hide.
        let mut bare = Pod::default();
        redact_pod(&mut bare);
        assert_eq!(bare, Pod::default());
    }
}
