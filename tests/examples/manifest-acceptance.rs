//! How many of a corpus of real manifests a node accepts, and what refuses the rest:
//! `cargo run -p cairn-tests --example manifest-acceptance -- DIR`. Every YAML file of DIR is
//! read as `ctl apply -f` reads it; each Pod, Deployment, DaemonSet, StatefulSet, ReplicaSet,
//! Job and CronJob in it counts as accepted when no problem is found in its document. Prints
//! one line per workload, the acceptance, the files taken whole, and the refused fields by how
//! many workloads each refuses (paths without list indices).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use cairn_api::config::documents;
use cairn_api::config::Problem;
use serde::Deserialize as _;
use serde_yaml::Value;

/// A workload of the corpus: its kind and name.
struct Workload {
    kind: String,
    name: String,
}

/// The workload an object is; None for kinds that run no pod.
fn workload(object: &Value) -> Option<Workload> {
    let kind = object.get("kind")?.as_str()?.to_string();
    let name = object.get("metadata")?.get("name")?.as_str().unwrap_or_default().to_string();
    matches!(
        kind.as_str(),
        "Pod" | "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" | "Job" | "CronJob"
    )
    .then_some(Workload { kind, name })
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
    // Without the file's name: `web.yaml.spec...` (its indices went above) to `spec...`.
    match field.split_once(".yaml.").or_else(|| field.split_once(".yml.")) {
        Some((_, rest)) => rest.to_string(),
        None => field,
    }
}

/// The problems of document `index` of `file` (those at `file[index]` and below, and those
/// of the whole file).
fn problems_of<'a>(problems: &'a [Problem], file: &str, index: usize) -> Vec<&'a Problem> {
    let at = format!("{file}[{index}]");
    problems
        .iter()
        .filter(|p| {
            p.path == file
                || p.path
                    .strip_prefix(&at)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).context("usage: manifest-acceptance DIR")?;
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let (mut accepted, mut total, mut whole_files) = (0, 0, 0);
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    for path in &files {
        let text = std::fs::read_to_string(path)?;
        let file = Path::new(path).file_name().unwrap_or_default().to_string_lossy();
        // As `ctl apply -f` reads it.
        let problems = documents::decode(text.as_bytes(), &file).err().unwrap_or_default();
        if problems.is_empty() {
            whole_files += 1;
        }
        for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
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
            let what = format!("{file}: {} {}", workload.kind, workload.name);
            let refused = problems_of(&problems, &file, index);
            if refused.is_empty() {
                accepted += 1;
                println!("{what}: accepted");
                continue;
            }
            let mut fields: Vec<String> =
                refused.iter().map(|p| field_of(&p.to_string())).collect();
            fields.sort();
            fields.dedup();
            for field in &fields {
                *refusals.entry(field.clone()).or_default() += 1;
            }
            println!("{what}: refused: {}", refused[0]);
        }
    }
    let share = if total == 0 { 0.0 } else { 100.0 * accepted as f64 / total as f64 };
    println!("\naccepted {accepted} of {total} workloads ({share:.0}%) in {} files", files.len());
    println!("files `ctl apply -f` takes whole: {whole_files} of {}", files.len());
    let mut by_count: Vec<_> = refusals.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!("refused fields, by the workloads each refuses:");
    for (field, count) in by_count {
        println!("{count:4}  {field}");
    }
    Ok(())
}
