//! The pods the QEMU suite and the boot bench give nodes, and their state as `ctl pods`
//! shows it.

use std::path::Path;

use serde_json::Value;

use crate::ctl;

/// `web` serves HTTP on hostPort 8080 from an emptyDir; `GET /cgi-bin/crash` kills its
/// server, so its container ends. Its environment holds a secret, which readers must not see.
pub const WEB_POD: &str = r#"
    - apiVersion: v1
      kind: Pod
      metadata: {name: web, labels: {app: web}}
      spec:
        volumes: [{name: www, emptyDir: {}}]
        containers:
          - name: httpd
            image: localhost/busybox:latest
            command: [sh, -c]
            args:
              - |
                mkdir -p /www/cgi-bin
                echo hello from a cairn pod > /www/index.html
                echo '#!/bin/sh' > /www/cgi-bin/crash
                echo 'echo Content-Type: text/plain; echo; echo bye; killall httpd' >> /www/cgi-bin/crash
                chmod +x /www/cgi-bin/crash
                echo serving
                httpd -f -p 80 -h /www &
                wait
            env: [{name: WEB_TOKEN, value: s3cret-for-admins}]
            ports: [{containerPort: 80, hostPort: 8080}]
            volumeMounts: [{name: www, mountPath: /www}]
            resources: {limits: {memory: 64Mi, cpu: 250m}}
            readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 2}
"#;

/// The node's config with `pods` (YAML list items) under `machine.pods`.
pub fn with_pods(config: &str, pods: &str) -> String {
    format!("{}  pods:{pods}", config)
}

/// `ctl pods -o json`: the pods as Kubernetes objects (none when ctl fails).
pub fn pods(admin: &Path, n: &str) -> Vec<Value> {
    let run = ctl(Some(admin), &["-n", n, "-o", "json", "pods"]);
    serde_json::from_str(&run.stdout).unwrap_or_default()
}

/// Whether the pod is Ready.
pub fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Whether every pod named in `names` is listed in `pods` and Ready.
pub fn all_ready(pods: &[Value], names: &[&str]) -> bool {
    names.iter().all(|name| pods.iter().any(|p| p["metadata"]["name"] == *name && ready(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: &str) -> Value {
        serde_json::json!({
            "metadata": {"name": name},
            "status": {"conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": ready},
            ]},
        })
    }

    #[test]
    fn ready_means_the_ready_condition_is_true() {
        assert!(ready(&pod("web", "True")));
        assert!(!ready(&pod("web", "False")));
        assert!(!ready(&serde_json::json!({"metadata": {"name": "web"}})));
    }

    #[test]
    fn all_ready_needs_every_named_pod_listed_and_ready() {
        let listed = [pod("web", "True"), pod("sleeper", "False")];
        assert!(all_ready(&listed, &["web"]));
        assert!(!all_ready(&listed, &["web", "sleeper"]));
        assert!(!all_ready(&listed, &["web", "missing"]));
    }

    #[test]
    fn pods_go_under_machine_pods() {
        let config = with_pods("machine:\n  hostname: a\n", WEB_POD);
        let parsed: serde_yaml::Value = serde_yaml::from_str(&config).unwrap();
        assert_eq!(parsed["machine"]["pods"][0]["metadata"]["name"], "web");
    }
}
