//! Registry credentials from a pod's `imagePullSecrets`: Secrets of type
//! `kubernetes.io/dockerconfigjson` (the `.dockerconfigjson` key) or the older
//! `kubernetes.io/dockercfg` (`.dockercfg`), matched to an image's registry as the upstream
//! kubelet's keyring matches them: by host (`*.` globs one label), then by path prefix.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

use crate::workloads::cri::v1;

use super::objects::LocalObjects;

/// One registry's entry of a Docker config.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Entry {
    username: String,
    password: String,
    /// base64 of `username:password`.
    auth: String,
    identitytoken: String,
    registrytoken: String,
}

/// A `.dockerconfigjson`: the entries under `auths`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DockerConfig {
    auths: BTreeMap<String, Entry>,
}

/// What the secrets of a pod give for one image.
#[derive(Debug, Default)]
pub struct PullCredentials {
    /// The credentials whose registry matches the image, the most specific first.
    pub auths: Vec<v1::AuthConfig>,
    /// The secrets that are missing or unreadable, with why: upstream's
    /// `FailedToRetrieveImagePullSecret` events.
    pub problems: Vec<String>,
}

/// The registry host and the repository path of `image`, as Docker reads a name: a first
/// component with a dot or a colon, or `localhost`, is a registry; else it is Docker Hub's.
fn registry_and_path(image: &str) -> (String, String) {
    let name = image.split('@').next().unwrap_or(image);
    // A tag is after the last colon that follows the last slash.
    let name = match name.rsplit_once(':') {
        Some((before, tag)) if !tag.contains('/') => before,
        _ => name,
    };
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (canonical_host(first), rest.to_string())
        }
        _ => ("docker.io".into(), name.to_string()),
    }
}

/// Docker Hub's other names as the one it has in image names.
fn canonical_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        other => other.to_string(),
    }
}

/// The host and path a Docker config's key names: `https://index.docker.io/v1/`,
/// `registry.example.com:5000/team`, `*.example.com`.
fn key_host_and_path(key: &str) -> (String, String) {
    let key = key.trim_start_matches("https://").trim_start_matches("http://");
    let key = key.trim_end_matches('/');
    let (host, path) = key.split_once('/').unwrap_or((key, ""));
    // Docker Hub's key names its API version, not a repository.
    let path = if matches!(path, "v1" | "v2") { "" } else { path };
    (canonical_host(host), path.to_string())
}

/// Whether the key `key` is for `image`'s registry (and repository, when it names a path).
fn matches(key: &str, (host, path): &(String, String)) -> bool {
    let (key_host, key_path) = key_host_and_path(key);
    let host_matches = match key_host.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .and_then(|label| label.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => key_host == *host,
    };
    let path_matches = key_path.is_empty()
        || *path == key_path
        || path.strip_prefix(&key_path).is_some_and(|rest| rest.starts_with('/'));
    host_matches && path_matches
}

/// Why a secret's `key` is no Docker config, without quoting it: serde's messages quote the
/// value they met, a secret's, and events are for readers.
fn unreadable(key: &str, e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "not JSON",
        _ => "JSON, not of a Docker config's shape",
    };
    format!("{key} is {what} (line {}, column {})", e.line(), e.column())
}

/// The entries of a secret's data: its `.dockerconfigjson` (`{"auths": {...}}`) or its
/// `.dockercfg` (the entries themselves).
fn entries(data: &BTreeMap<String, Vec<u8>>) -> Result<BTreeMap<String, Entry>, String> {
    if let Some(json) = data.get(".dockerconfigjson") {
        let config: DockerConfig =
            serde_json::from_slice(json).map_err(|e| unreadable(".dockerconfigjson", &e))?;
        return Ok(config.auths);
    }
    if let Some(json) = data.get(".dockercfg") {
        return serde_json::from_slice(json).map_err(|e| unreadable(".dockercfg", &e));
    }
    Err("it has neither .dockerconfigjson nor .dockercfg".into())
}

/// The credentials the `imagePullSecrets` of `pod` (in `namespace`, reading `objects`) give
/// for pulling `image`.
pub fn for_image(
    objects: &LocalObjects,
    namespace: &str,
    pod: &Pod,
    image: &str,
) -> PullCredentials {
    let mut found = PullCredentials::default();
    let secrets = pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten());
    let target = registry_and_path(image);
    let mut matched: Vec<(usize, v1::AuthConfig)> = Vec::new();
    for reference in secrets {
        let name = &reference.name;
        let Some(data) = objects.secret(namespace, name) else {
            found.problems.push(format!("secret {name:?} not found"));
            continue;
        };
        let entries = match entries(data) {
            Ok(entries) => entries,
            Err(e) => {
                found.problems.push(format!("secret {name:?}: {e}"));
                continue;
            }
        };
        for (key, entry) in entries {
            if !matches(&key, &target) {
                continue;
            }
            let auth = v1::AuthConfig {
                username: entry.username,
                password: entry.password,
                auth: entry.auth,
                // Empty, as upstream leaves it for a Docker config's entries: containerd
                // takes them for whichever host of the registry it reaches (a mirror, Docker
                // Hub's registry-1), where a bare host here would be no URL and be dropped.
                server_address: String::new(),
                identity_token: entry.identitytoken,
                registry_token: entry.registrytoken,
            };
            matched.push((key_host_and_path(&key).1.len(), auth));
        }
    }
    // The key that names the longest path is the most specific.
    matched.sort_by_key(|(specificity, _)| std::cmp::Reverse(*specificity));
    found.auths = matched.into_iter().map(|(_, auth)| auth).collect();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_api::config::objects::LocalObject;

    #[test]
    fn images_are_read_as_docker_names_them() {
        let read = |image: &str| registry_and_path(image);
        assert_eq!(read("busybox"), ("docker.io".into(), "busybox".into()));
        assert_eq!(read("grafana/agent:v0.40"), ("docker.io".into(), "grafana/agent".into()));
        assert_eq!(
            read("registry.example.com:5000/team/app@sha256:ab"),
            ("registry.example.com:5000".into(), "team/app".into())
        );
        assert_eq!(read("localhost/busybox:latest"), ("localhost".into(), "busybox".into()));
    }

    #[test]
    fn keys_match_by_host_glob_and_path() {
        let image = registry_and_path("eu.registry.example.com/team/app:1");
        assert!(matches("https://eu.registry.example.com/v2/", &image));
        assert!(matches("*.registry.example.com", &image));
        assert!(matches("eu.registry.example.com/team", &image));
        assert!(!matches("eu.registry.example.com/tea", &image));
        assert!(!matches("*.example.com", &image));
        assert!(!matches("registry.example.com", &image));
        assert!(matches("https://index.docker.io/v1/", &registry_and_path("grafana/agent")));
    }

    #[test]
    fn a_pods_secrets_give_the_matching_credentials_most_specific_first() {
        let list: Vec<LocalObject> = serde_yaml::from_str(concat!(
            "- apiVersion: v1\n",
            "  kind: Secret\n",
            "  metadata: {name: regcred, namespace: shop}\n",
            "  type: kubernetes.io/dockerconfigjson\n",
            "  stringData:\n",
            "    .dockerconfigjson: '{\"auths\": {\"registry.example.com\": {\"auth\": \"dTpw\"}, ",
            "\"registry.example.com/team\": {\"username\": \"team\", \"password\": \"pw\"}, ",
            "\"other.example.com\": {\"username\": \"x\"}}}'\n",
            "- apiVersion: v1\n",
            "  kind: Secret\n",
            "  metadata: {name: plain, namespace: shop}\n",
            "  stringData: {password: pw}\n",
            "- apiVersion: v1\n",
            "  kind: Secret\n",
            "  metadata: {name: odd, namespace: shop}\n",
            "  stringData: {.dockerconfigjson: '{\"auths\": {\"reg\": \"dXNlcjpwYXNz\"}}'}\n",
        ))
        .unwrap();
        let objects = LocalObjects::new(&list);
        let pod: Pod = serde_yaml::from_str(
            "spec: {imagePullSecrets: [{name: regcred}, {name: plain}, {name: gone}, {name: odd}], containers: []}",
        )
        .unwrap();
        let found = for_image(&objects, "shop", &pod, "registry.example.com/team/app:1");
        let users: Vec<(&str, &str)> =
            found.auths.iter().map(|a| (a.username.as_str(), a.auth.as_str())).collect();
        assert_eq!(users, [("team", ""), ("", "dTpw")]);
        assert_eq!(found.auths[0].server_address, "");
        assert_eq!(
            found.problems,
            [
                "secret \"plain\": it has neither .dockerconfigjson nor .dockercfg",
                "secret \"gone\" not found",
                // Its value is not quoted: events are for readers.
                "secret \"odd\": .dockerconfigjson is JSON, not of a Docker config's shape (line 1, column 32)",
            ]
        );
        // Another namespace's pod reads its own namespace's secrets.
        let elsewhere = for_image(&objects, "default", &pod, "registry.example.com/team/app:1");
        assert!(elsewhere.auths.is_empty() && elsewhere.problems.len() == 4);
    }
}
