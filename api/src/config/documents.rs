//! Files of Kubernetes documents as users have them, for `ctl apply -f`: multi-document YAML
//! (or JSON, or a `kind: List`), each document an object of a kind the node keeps
//! ([`LocalObject`]) or of a kind that needs a cluster (Services, Ingresses, RBAC, custom
//! resources...), which is skipped with a line saying so, so that a real file applies (kinds
//! a node should run and does not yet, CronJobs, are refused by name). A file
//! is accepted or refused as one: any refused object refuses it, each problem named by the
//! document's place in the file (`web.yaml[2].spec.template.spec.containers[0].image`).

use serde::Deserialize as _;
use serde_yaml::Value;

use super::objects::{check_objects, LocalObject, KINDS};
use super::validate::{Checker, Problem};
use super::{shape, yaml11_numbers};

/// The objects of one file, and what was skipped.
#[derive(Debug, Default)]
pub struct Documents {
    /// The objects, in the file's order.
    pub objects: Vec<LocalObject>,
    /// One line per skipped document: its kind and name, and why.
    pub skipped: Vec<String>,
}

/// Decodes the file `bytes`, named `source` in problems, within [`shape`]'s limits.
pub fn decode(bytes: &[u8], source: &str) -> Result<Documents, Vec<Problem>> {
    let mut c = Checker::default();
    if let Err(reason) = shape::check(bytes) {
        c.fail(source, reason);
        return Err(c.problems);
    }
    // UTF-8, as the shape check found.
    let text = String::from_utf8_lossy(bytes);
    let text = yaml11_numbers::rewritten(&text, yaml11_numbers::Pods::Document);
    let mut documents = Documents::default();
    let (mut written, mut paths) = (Vec::new(), Vec::new());
    for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let at = format!("{source}[{index}]");
        let value = match Value::deserialize(document) {
            Ok(value) => value,
            Err(e) => {
                // After a syntax error the rest of the file cannot be read.
                c.fail(at, e.to_string());
                break;
            }
        };
        let items = match value.get("kind").and_then(Value::as_str) {
            Some("List") => value.get("items").and_then(Value::as_sequence).cloned(),
            _ => None,
        };
        let listed = match items {
            Some(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("{at}.items[{i}]"), v))
                .collect(),
            None if value.is_null() => Vec::new(),
            None => vec![(at, value)],
        };
        for (at, value) in listed {
            let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
            if let Some(instead) = not_yet(&kind) {
                c.fail(
                    format!("{at}.kind"),
                    format!("{kind} is not supported by Cairn yet: {instead}"),
                );
                continue;
            }
            if !kind.is_empty() && !is_kept(&kind) {
                let name = value
                    .get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("(no name)");
                documents.skipped.push(format!("{at}: {kind} {name} skipped: it needs a cluster"));
                continue;
            }
            match LocalObject::from_value(value.clone()) {
                Ok(object) => {
                    documents.objects.push(object);
                    written.push(value);
                    paths.push(at);
                }
                Err(reason) => c.fail(at, reason),
            }
        }
    }
    check_objects(&mut c, &documents.objects, &written, &paths);
    match c.problems.is_empty() {
        true => Ok(documents),
        false => Err(c.problems),
    }
}

/// For a kind a node should run but does not yet, what to do instead: refused, not skipped,
/// since skipping would leave work undone without an error.
fn not_yet(kind: &str) -> Option<&'static str> {
    match kind {
        "CronJob" => Some("apply its jobTemplate as a Job to run it once"),
        _ => None,
    }
}

/// Whether a node keeps objects of `kind`.
fn is_kept(kind: &str) -> bool {
    KINDS.split(", ").any(|kept| kept == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: site, namespace: shop}
data: {index.html: hello}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  strategy: {type: RollingUpdate}
  template:
    metadata: {labels: {app: web}, creationTimestamp: null}
    spec:
      containers:
        - name: httpd
          image: busybox
          resources: {limits: {cpu: 0.5}}
          volumeMounts: [{name: site, mountPath: /www}]
      volumes: [{name: site, configMap: {name: site, defaultMode: 0444}}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
---
"#;

    #[test]
    fn a_real_file_applies_with_cluster_kinds_skipped() {
        let documents = decode(FILE.as_bytes(), "shop.yaml").unwrap();
        let keys: Vec<String> = documents.objects.iter().map(LocalObject::key).collect();
        assert_eq!(keys, ["Namespace//shop", "ConfigMap/shop/site", "Deployment/shop/web"]);
        assert_eq!(documents.skipped, ["shop.yaml[3]: Service web skipped: it needs a cluster"]);
        let pods = documents.objects[2].pods();
        let names: Vec<&str> = pods.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
        let hash = &pods[0].metadata.labels.as_ref().unwrap()["pod-template-hash"];
        assert_eq!(names, [format!("web-{hash}-0"), format!("web-{hash}-1")]);
        assert_eq!(pods[0].metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(pods[0].metadata.labels.as_ref().unwrap()["app"], "web");
    }

    #[test]
    fn one_refused_object_refuses_the_file_naming_its_place() {
        let bad = FILE
            .replace("replicas: 2", "replicas: 2\n  paused: true")
            .replace(
                "labels: {app: web}, creationTimestamp",
                "labels: {app: api}, creationTimestamp",
            )
            .replace("image: busybox", "image: busybox\n          imagePullPolcy: Always");
        let problems: Vec<String> = decode(bad.as_bytes(), "shop.yaml")
            .unwrap_err()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            problems,
            [
                "shop.yaml[2].spec.paused: not supported by Cairn's kubelet",
                "shop.yaml[2].spec.template.metadata.labels: do not match spec.selector: app=\"web\" is not among them",
                "shop.yaml[2].spec.template.spec.containers[0].imagePullPolcy: unknown field",
            ]
        );
    }

    #[test]
    fn lists_are_their_items_and_stateful_sets_have_ordinals() {
        let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
             "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                      "template": {"metadata": {"labels": {"app": "db"}},
                                   "spec": {"containers": [{"name": "db", "image": "redis",
                                             "volumeMounts": [{"name": "rows", "mountPath": "/data"}]}],
                                            "volumes": [{"name": "rows", "persistentVolumeClaim": {"claimName": "rows"}}]}},
                      "volumeClaimTemplates": [{"metadata": {"name": "rows"},
                                                "spec": {"accessModes": ["ReadWriteOnce"],
                                                         "resources": {"requests": {"storage": "1Gi"}}}}]}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"}}]}"#;
        let documents = decode(list.as_bytes(), "db.json").unwrap();
        let pods = documents.objects[0].pods();
        assert_eq!(pods[1].metadata.name.as_deref(), Some("db-1"));
        let spec = pods[1].spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("db-1"));
        // The claim template's volume replaces the template's volume of that name.
        let volumes = spec.volumes.as_ref().unwrap();
        assert_eq!(volumes.len(), 1);
        let claim = volumes[0].persistent_volume_claim.as_ref().unwrap();
        assert_eq!(claim.claim_name, "rows-db-1");
        assert!(documents.skipped[0].starts_with("db.json[0].items[1]: Role r skipped"));
    }

    #[test]
    fn kinds_not_run_yet_are_refused_not_skipped() {
        let cron = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: pi}\nspec: {}\n";
        let problems = decode(cron.as_bytes(), "pi.yaml").unwrap_err();
        assert_eq!(problems[0].path, "pi.yaml[0].kind");
        assert!(problems[0].reason.starts_with("CronJob is not supported by Cairn yet"));
    }

    #[test]
    fn jobs_run_one_pod_to_one_completion() {
        let job = concat!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: pi}\n",
            "spec:\n  backoffLimit: 2\n  template:\n    spec:\n      restartPolicy: Never\n",
            "      containers: [{name: pi, image: perl, command: [perl, -e, print 1]}]\n",
        );
        let documents = decode(job.as_bytes(), "pi.yaml").unwrap();
        let job = &documents.objects[0];
        assert_eq!(job.restart_limit(), Some(2));
        let pods = job.pods();
        let name = pods[0].metadata.name.as_deref().unwrap();
        assert!(name.starts_with("pi-") && name.len() == 8, "{name}");
        assert_eq!(pods[0].metadata.labels.as_ref().unwrap()["job-name"], "pi");
        let wrong = concat!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: pi}\n",
            "spec:\n  completions: 3\n  template:\n    spec:\n      restartPolicy: Always\n",
            "      containers: [{name: pi, image: perl}]\n",
        );
        let problems: Vec<String> = decode(wrong.as_bytes(), "pi.yaml")
            .unwrap_err()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            problems,
            [
                "pi.yaml[0].spec.completions: 3 is not supported: a node runs a Job's pod once at a time (1 is)",
                "pi.yaml[0].spec.template.spec.restartPolicy: Always is not allowed for a Job: Never or OnFailure is required",
            ]
        );
    }

    #[test]
    fn documents_without_a_kind_and_broken_yaml_are_refused() {
        let problems = decode(b"metadata: {name: x}\n", "f.yaml").unwrap_err();
        assert!(problems[0].to_string().starts_with("f.yaml[0]: kind is required"), "{problems:?}");
        let problems = decode(b"kind: ConfigMap\n---\n: : :\n", "f.yaml").unwrap_err();
        let broken = problems.iter().find(|p| p.path == "f.yaml[1]");
        assert!(broken.is_some_and(|p| p.reason.contains("line 3")), "{problems:?}");
    }
}
