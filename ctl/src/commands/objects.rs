//! Kubernetes objects kept by the node: `ctl apply -f`, `ctl delete -f` and `ctl get`, as
//! kubectl has them. Files are read here (a file, every `*.yaml`, `*.yml` and `*.json` of a
//! directory, or `-` for standard input) and checked by the node, which accepts or refuses
//! each file as one.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use cairn_api::machine as pb;
use serde_json::{json, Value};

use super::{report, row, Session};
use crate::cli::OutputFormat;

/// One file of documents: its name for messages, and its bytes.
struct DocumentFile {
    name: String,
    bytes: Vec<u8>,
}

/// The files `path` names: itself, the manifests of a directory (sorted), or standard input.
fn files(path: &Path) -> anyhow::Result<Vec<DocumentFile>> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).context("reading standard input")?;
        return Ok(vec![DocumentFile { name: "stdin".into(), bytes }]);
    }
    let paths: Vec<PathBuf> = if path.is_dir() {
        let entries =
            std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
            .collect();
        paths.sort();
        paths
    } else {
        vec![path.to_path_buf()]
    };
    paths
        .into_iter()
        .map(|path| {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            Ok(DocumentFile { name, bytes })
        })
        .collect()
}

/// `kind/name` as kubectl prints an object (`configmap/site`), with its namespace unless it
/// is `default`.
fn object_name(kind: &str, namespace: &str, name: &str) -> String {
    let kind = kind.to_ascii_lowercase();
    match namespace {
        "" | "default" => format!("{kind}/{name}"),
        namespace => format!("{kind}/{name} -n {namespace}"),
    }
}

/// `ctl apply -f PATH` (`delete`: `ctl delete -f PATH`).
pub(super) async fn apply(
    session: &Session,
    path: &Path,
    delete: bool,
) -> anyhow::Result<ExitCode> {
    let files = files(path)?;
    let results = session
        .targets
        .each(|_, mut c| {
            let requests: Vec<pb::ObjectsRequest> = files
                .iter()
                .map(|f| pb::ObjectsRequest { documents: f.bytes.clone(), source: f.name.clone() })
                .collect();
            async move {
                let mut lines = Vec::new();
                for request in requests {
                    let response = match delete {
                        false => c.objects_apply(request).await?,
                        true => c.objects_delete(request).await?,
                    };
                    let pb::ObjectsResponse { changes, skipped } = response.into_inner();
                    for change in changes {
                        let name = object_name(&change.kind, &change.namespace, &change.name);
                        lines.push(format!("{name} {}", change.action));
                    }
                    lines.extend(skipped.into_iter().map(|line| format!("warning: {line}")));
                }
                Ok(lines)
            }
        })
        .await;
    report(session.format, results, |node, lines| {
        lines.into_iter().map(|line| row(node, json!({ "result": line }))).collect()
    })
}

/// `ctl get KIND [NAME]`: a table of the objects, or the objects themselves (`-o yaml|json`).
pub(super) async fn get(session: &Session, kind: &str, name: &str) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move {
            let request = pb::ObjectsGetRequest { kind: kind.to_string(), name: name.to_string() };
            let objects = c.objects_get(request).await?.into_inner().objects;
            objects
                .into_iter()
                .map(|o| Ok((o.source, serde_json::from_str::<Value>(&o.object_json)?)))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .await;
    let format = session.format;
    report(format, results, |node, objects| {
        objects
            .into_iter()
            .map(|(source, object)| match format {
                OutputFormat::Table => row(node, summary(&object, &source)),
                _ => row(node, object),
            })
            .collect()
    })
}

/// An object's columns: what kubectl shows of its kind, and where it comes from.
fn summary(object: &Value, source: &str) -> Value {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or("");
    let count =
        |pointer: &str| object.pointer(pointer).and_then(Value::as_object).map_or(0, |m| m.len());
    let kind = text("/kind");
    let detail = match kind {
        "ConfigMap" => format!("{} keys", count("/data") + count("/binaryData")),
        "Secret" => format!("{} keys", count("/data") + count("/stringData")),
        "Deployment" | "ReplicaSet" | "StatefulSet" => {
            let replicas = object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            format!("{replicas} replicas")
        }
        "DaemonSet" => "1 pod on this node".into(),
        "Job" => {
            let limit = object.pointer("/spec/backoffLimit").and_then(Value::as_i64).unwrap_or(6);
            format!("1 completion, {limit} retries")
        }
        "PersistentVolumeClaim" => {
            let size = text("/spec/resources/requests/storage");
            format!("{size} requested (not enforced)")
        }
        _ => String::new(),
    };
    json!({
        "kind": kind,
        "namespace": text("/metadata/namespace"),
        "name": text("/metadata/name"),
        "detail": detail,
        "source": source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_give_their_manifests_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.yaml", "a.json", "notes.txt", "c.yml"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let names: Vec<String> = files(dir.path()).unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["a.json", "b.yaml", "c.yml"]);
        let one = files(&dir.path().join("b.yaml")).unwrap();
        assert_eq!((one[0].name.as_str(), one[0].bytes.as_slice()), ("b.yaml", &b"b.yaml"[..]));
        assert!(files(&dir.path().join("missing.yaml")).is_err());
    }

    #[test]
    fn objects_read_as_kubectl_shows_them() {
        assert_eq!(object_name("ConfigMap", "default", "site"), "configmap/site");
        assert_eq!(object_name("Deployment", "shop", "web"), "deployment/web -n shop");
        let deployment = json!({"kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 2}});
        assert_eq!(summary(&deployment, "applied")["detail"], "2 replicas");
        let secret =
            json!({"kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "", "b": ""}});
        assert_eq!(summary(&secret, "config")["detail"], "2 keys");
    }
}
