//! How many of a corpus of real manifests Cairn's kubelet accepts, and what refuses the rest:
//! `cargo run -p cairn-tests --example manifest-acceptance -- DIR`. Every Pod, and the pod
//! template of every Deployment, DaemonSet, StatefulSet, ReplicaSet, Job and CronJob, in the
//! YAML files of DIR is checked as `machine.pods` are; other kinds are skipped. Prints one
//! line per workload, the acceptance, and the refused fields by how many workloads each
//! refuses (paths without list indices).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize as _;
use serde_yaml::{Mapping, Value};

/// A workload's pod, as Cairn would run it: its kind and name, and the Pod document.
struct Workload {
    kind: String,
    name: String,
    pod: Value,
}

/// The Pod of a workload object; None for kinds that run no pod.
fn workload(object: &Value) -> Option<Workload> {
    let kind = object.get("kind")?.as_str()?.to_string();
    let name = object.get("metadata")?.get("name")?.as_str().unwrap_or_default().to_string();
    let template = match kind.as_str() {
        "Pod" => return Some(Workload { kind, name, pod: object.clone() }),
        "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" | "Job" => {
            object.get("spec")?.get("template")?
        }
        "CronJob" => object.get("spec")?.get("jobTemplate")?.get("spec")?.get("template")?,
        _ => return None,
    };
    let mut metadata = template.get("metadata").cloned().unwrap_or(Value::Mapping(Mapping::new()));
    if let Value::Mapping(map) = &mut metadata {
        map.insert("name".into(), Value::String(name.clone()));
        if let Some(namespace) = object.get("metadata")?.get("namespace") {
            map.insert("namespace".into(), namespace.clone());
        }
    }
    let mut pod = Mapping::new();
    pod.insert("apiVersion".into(), "v1".into());
    pod.insert("kind".into(), "Pod".into());
    pod.insert("metadata".into(), metadata);
    pod.insert("spec".into(), template.get("spec")?.clone());
    Some(Workload { kind, name, pod: Value::Mapping(pod) })
}

/// A problem's field, without list indices or the reason: what to count refusals by.
fn field_of(problem: &str) -> String {
    let path = problem.split(": ").next().unwrap_or(problem);
    let mut field = String::new();
    let mut in_index = false;
    for ch in path.chars() {
        match ch {
            '[' => in_index = true,
            ']' => in_index = false,
            _ if !in_index => field.push(ch),
            _ => {}
        }
    }
    field.trim_start_matches("manifest.").to_string()
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).context("usage: manifest-acceptance DIR")?;
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let (mut accepted, mut total) = (0, 0);
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    for path in &files {
        let text = std::fs::read_to_string(path)?;
        let file = Path::new(path).file_name().unwrap_or_default().to_string_lossy();
        for document in serde_yaml::Deserializer::from_str(&text) {
            // After a syntax error the rest of the file cannot be read.
            let object = match Value::deserialize(document) {
                Ok(object) => object,
                Err(e) => {
                    println!("{file}: not YAML from here on, the rest skipped: {e}");
                    break;
                }
            };
            let Some(workload) = workload(&object) else { continue };
            total += 1;
            let bytes = serde_yaml::to_string(&workload.pod)?;
            let what = format!("{file}: {} {}", workload.kind, workload.name);
            match cairn_api::config::pod::decode_pod(bytes.as_bytes(), "manifest") {
                Ok(_) => {
                    accepted += 1;
                    println!("{what}: accepted");
                }
                Err(problems) => {
                    let mut fields: Vec<String> =
                        problems.iter().map(|p| field_of(&p.to_string())).collect();
                    fields.sort();
                    fields.dedup();
                    for field in &fields {
                        *refusals.entry(field.clone()).or_default() += 1;
                    }
                    println!("{what}: refused: {}", problems[0]);
                }
            }
        }
    }
    let share = if total == 0 { 0.0 } else { 100.0 * accepted as f64 / total as f64 };
    println!("\naccepted {accepted} of {total} workloads ({share:.0}%) in {} files", files.len());
    let mut by_count: Vec<_> = refusals.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!("refused fields, by the workloads each refuses:");
    for (field, count) in by_count {
        println!("{count:4}  {field}");
    }
    Ok(())
}
