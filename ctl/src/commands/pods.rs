//! Pods: `ctl pods` (as `kubectl get pods` shows them), `ctl containers`, `ctl pod
//! restart|apply|delete`, and `ctl logs POD[/CONTAINER]`.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use cairn_api::config::pod::SIDECAR_RESTART_POLICY;
use cairn_api::machine as pb;
use cairn_api::timestamp::rfc3339_micros;
use serde_json::{json, Value};

use super::{report, report_errors, report_results, row, Session};
use crate::cli::OutputFormat;
use crate::fanout::NodeResult;
use crate::output::{print_stream_record, Row};

/// The pods of every node, as JSON Pod objects.
async fn pods(session: &Session) -> Vec<NodeResult<Vec<Value>>> {
    session
        .targets
        .each(|_, mut c| async move {
            let pods = c.pods(pb::PodsRequest {}).await?.into_inner().pods;
            pods.iter()
                .map(|p| serde_json::from_str(&p.pod_json).map_err(anyhow::Error::from))
                .collect()
        })
        .await
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The STATUS column of `kubectl get pods`: the phase, unless a container says more (its
/// waiting or termination reason, the last container first).
pub fn pod_status_column(pod: &Value) -> String {
    let mut reason = match text(pod, "/status/reason") {
        "" => text(pod, "/status/phase").to_string(),
        reason => reason.to_string(),
    };
    let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array);
    let mut running = false;
    for status in statuses.into_iter().flatten().rev() {
        let waiting = text(status, "/state/waiting/reason");
        let terminated = status.pointer("/state/terminated");
        if !waiting.is_empty() {
            reason = waiting.into();
        } else if let Some(terminated) = terminated {
            reason = match text(terminated, "/reason") {
                "" => format!("ExitCode:{}", terminated["exitCode"]),
                r => r.into(),
            };
        } else if status.pointer("/state/running").is_some() && status["ready"] == true {
            running = true;
        }
    }
    if reason == "Completed" && running {
        reason = "Running".into();
    }
    reason
}

fn age(pod: &Value) -> String {
    let Some(start) = pod.pointer("/status/startTime").and_then(Value::as_str) else {
        return "-".into();
    };
    let Ok(start) = humantime::parse_rfc3339_weak(start) else { return "-".into() };
    let seconds = SystemTime::now().duration_since(start).unwrap_or_default().as_secs();
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

/// The pod's row: the table's columns, or the whole object for JSON and YAML.
fn pod_row(format: OutputFormat, node: &str, pod: Value) -> Row {
    if format != OutputFormat::Table {
        return row(node, pod);
    }
    let list = |pointer: &str| {
        let list = pod.pointer(pointer).and_then(Value::as_array);
        list.map(Vec::as_slice).unwrap_or_default()
    };
    // Sidecars (init containers with `restartPolicy: Always`) count as containers, as
    // kubectl counts them.
    let sidecars: Vec<&Value> = list("/spec/initContainers")
        .iter()
        .filter(|c| c["restartPolicy"] == SIDECAR_RESTART_POLICY)
        .filter_map(|c| {
            list("/status/initContainerStatuses").iter().find(|s| s["name"] == c["name"])
        })
        .collect();
    let statuses: Vec<&Value> = list("/status/containerStatuses").iter().chain(sidecars).collect();
    let ready = statuses.iter().filter(|s| s["ready"] == true).count();
    let restarts: i64 = statuses.iter().filter_map(|s| s["restartCount"].as_i64()).sum();
    let name = match text(&pod, "/metadata/namespace") {
        "default" | "" => text(&pod, "/metadata/name").to_string(),
        namespace => format!("{namespace}/{}", text(&pod, "/metadata/name")),
    };
    let ip = match text(&pod, "/status/podIP") {
        "" => "<none>",
        ip => ip,
    };
    row(
        node,
        json!({
            "name": name,
            "ready": format!("{ready}/{}", statuses.len()),
            "status": pod_status_column(&pod),
            "restarts": restarts,
            "age": age(&pod),
            "ip": ip,
        }),
    )
}

pub(super) async fn list(session: &Session) -> anyhow::Result<ExitCode> {
    let format = session.format;
    report(format, pods(session).await, |node, pods| {
        pods.into_iter().map(|pod| pod_row(format, node, pod)).collect()
    })
}

/// A container's state as one word, with its reason.
fn container_state(status: &Value) -> String {
    let state = &status["state"];
    if let Some(reason) = state.pointer("/waiting/reason").and_then(Value::as_str) {
        return format!("Waiting ({reason})");
    }
    if let Some(terminated) = state.get("terminated") {
        return format!(
            "Terminated ({}, exit {})",
            text(terminated, "/reason"),
            terminated["exitCode"]
        );
    }
    if state.get("running").is_some() {
        return if status["ready"] == true {
            "Running".into()
        } else {
            "Running (not ready)".into()
        };
    }
    "Unknown".into()
}

pub(super) async fn containers(session: &Session) -> anyhow::Result<ExitCode> {
    report(session.format, pods(session).await, |node, pods| {
        let mut rows = Vec::new();
        for pod in pods {
            let pod_name = text(&pod, "/metadata/name").to_string();
            let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array);
            for status in statuses.into_iter().flatten() {
                let id = text(status, "/containerID").trim_start_matches("containerd://");
                rows.push(row(
                    node,
                    json!({
                        "pod": pod_name,
                        "container": status["name"],
                        "image": status["image"],
                        "state": container_state(status),
                        "restarts": status["restartCount"],
                        "id": id.get(..13).unwrap_or(id),
                    }),
                ));
            }
        }
        rows
    })
}

pub(super) async fn restart(session: &Session, name: &str) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move {
            c.pod_restart(pb::PodRequest { name: name.to_string() }).await?;
            Ok(format!("pod {name} restarting"))
        })
        .await;
    report_results(session.format, results)
}

pub(super) async fn apply(session: &Session, file: &Path) -> anyhow::Result<ExitCode> {
    let manifest = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let results = session
        .targets
        .each(|_, mut c| {
            let request = pb::ManifestApplyRequest { manifest: manifest.clone() };
            async move {
                let pod = c.manifest_apply(request).await?.into_inner().pod;
                Ok(format!("pod {pod} stored; the kubelet runs it"))
            }
        })
        .await;
    report_results(session.format, results)
}

pub(super) async fn delete(session: &Session, name: &str) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move {
            let request = pb::PodRequest { name: name.to_string() };
            let pod = c.manifest_delete(request).await?.into_inner().pod;
            Ok(format!("pod {pod} removed; the kubelet stops it"))
        })
        .await;
    report_results(session.format, results)
}

/// What `ctl logs` reads: a service's log or a container's.
pub struct LogsTarget<'a> {
    /// A service id, or `POD[/CONTAINER]`.
    pub name: &'a str,
    /// Keep printing new lines.
    pub follow: bool,
    /// Only the last N lines.
    pub tail: i32,
    /// The previous run of the container.
    pub previous: bool,
}

/// Prints a service's log, or, when no service has that name (or `--previous` or a
/// `POD/CONTAINER` asks for it), a container's.
pub(super) async fn logs(session: &Session, target: &LogsTarget<'_>) -> anyhow::Result<ExitCode> {
    let prefix = session.targets.nodes.len() > 1;
    let container_only = target.previous || target.name.contains('/');
    let results = session
        .targets
        .each(|node, mut c| async move {
            let service = pb::LogsRequest {
                id: target.name.to_string(),
                tail_lines: target.tail,
                follow: target.follow,
            };
            let mut stream = match container_only {
                true => None,
                false => match c.logs(service).await {
                    Ok(stream) => Some(stream.into_inner()),
                    Err(status) if status.code() == tonic::Code::NotFound => None,
                    Err(status) => return Err(status.into()),
                },
            };
            if stream.is_none() {
                let (pod, container) = target.name.split_once('/').unwrap_or((target.name, ""));
                let request = pb::ContainerLogsRequest {
                    pod: pod.into(),
                    container: container.into(),
                    tail_lines: target.tail,
                    follow: target.follow,
                    previous: target.previous,
                };
                stream = Some(c.container_logs(request).await?.into_inner());
            }
            let mut stream = stream.expect("set above");
            while let Some(entry) = stream.message().await? {
                let time = rfc3339_micros(entry.unix_micros);
                let record = row(&node, json!({"time": time, "message": entry.message}));
                let text = format!("{time} {}", entry.message);
                print_stream_record(session.format, &node, prefix, &text, record)?;
            }
            Ok(())
        })
        .await;
    Ok(report_errors(results))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_column_says_what_kubectl_says() {
        let pod = |statuses: Value| json!({"status": {"phase": "Running", "containerStatuses": statuses}});
        assert_eq!(
            pod_status_column(&pod(json!([{"ready": true, "state": {"running": {}}}]))),
            "Running"
        );
        assert_eq!(
            pod_status_column(&pod(json!([
                {"ready": true, "state": {"running": {}}},
                {"ready": false, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]))),
            "CrashLoopBackOff"
        );
        assert_eq!(
            pod_status_column(&pod(
                json!([{"ready": false, "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}])
            )),
            "OOMKilled"
        );
        assert_eq!(
            pod_status_column(&pod(
                json!([{"ready": false, "state": {"terminated": {"exitCode": 2}}}])
            )),
            "ExitCode:2"
        );
    }

    #[test]
    fn sidecars_count_in_the_ready_and_restarts_columns_as_kubectl_counts_them() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"initContainers": [{"name": "setup"}, {"name": "proxy", "restartPolicy": "Always"}]},
            "status": {
                "phase": "Running",
                "initContainerStatuses": [
                    {"name": "setup", "ready": false, "restartCount": 1},
                    {"name": "proxy", "ready": true, "restartCount": 2}
                ],
                "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0}]
            }
        });
        let row = pod_row(OutputFormat::Table, "node", pod);
        assert_eq!((&row["ready"], &row["restarts"]), (&json!("1/2"), &json!(2)));
    }
}
