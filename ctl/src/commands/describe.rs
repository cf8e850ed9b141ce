//! The pods' Kubernetes-style events: `ctl get events` (as `kubectl get events` lists them)
//! and `ctl describe pod NAME` (the pod's state, containers and events, as `kubectl describe
//! pod` shows them).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_api::machine as pb;
use serde_json::{json, Value};

use super::{report, row, Session};
use crate::cli::OutputFormat;
use crate::fanout::NodeResult;

/// The events of pod `pod` (empty: of every pod) on every node.
async fn events(session: &Session, pod: &str) -> Vec<NodeResult<Vec<pb::PodEvent>>> {
    session
        .targets
        .each(|_, mut c| async move {
            let request = pb::PodEventsRequest { pod: pod.to_string() };
            Ok(c.pod_events(request).await?.into_inner().events)
        })
        .await
}

/// How long ago `unix_millis` was, as kubectl says it: `45s`, `3m12s`, `5h`, `2d`.
fn ago(unix_millis: u64, now_millis: u64) -> String {
    let seconds = now_millis.saturating_sub(unix_millis) / 1000;
    match seconds {
        0..120 => format!("{seconds}s"),
        120..600 => format!("{}m{}s", seconds / 60, seconds % 60),
        600..10800 => format!("{}m", seconds / 60),
        10800..172800 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}

/// The age column of an event: `30s`, or `30s (x4 over 5m)` when it happened more than once.
fn event_age(event: &pb::PodEvent, now_millis: u64) -> String {
    let last = ago(event.last_unix_millis, now_millis);
    match event.count {
        0 | 1 => last,
        count => format!("{last} (x{count} over {})", ago(event.first_unix_millis, now_millis)),
    }
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The event as a row: its columns, or all of it for JSON and YAML.
fn event_row(format: OutputFormat, node: &str, event: pb::PodEvent, now_millis: u64) -> super::Row {
    let object = match event.namespace.as_str() {
        "default" => format!("pod/{}", event.pod),
        namespace => format!("{namespace}/pod/{}", event.pod),
    };
    let object = match event.field_path.as_str() {
        "" => object,
        path => format!("{object} ({path})"),
    };
    let cells = match format {
        OutputFormat::Table => json!({
            "last_seen": event_age(&event, now_millis),
            "type": event.r#type,
            "reason": event.reason,
            "object": object,
            "message": event.message,
        }),
        _ => json!({
            "namespace": event.namespace,
            "pod": event.pod,
            "podUID": event.pod_uid,
            "fieldPath": event.field_path,
            "type": event.r#type,
            "reason": event.reason,
            "message": event.message,
            "count": event.count,
            "firstTimestamp": crate::output::timestamp(event.first_unix_millis),
            "lastTimestamp": crate::output::timestamp(event.last_unix_millis),
        }),
    };
    row(node, cells)
}

/// `ctl get events`: every pod's events, oldest first.
pub(super) async fn list(session: &Session) -> anyhow::Result<ExitCode> {
    let format = session.format;
    let now = now_millis();
    report(format, events(session, "").await, |node, events| {
        events.into_iter().map(|event| event_row(format, node, event, now)).collect()
    })
}

/// `ctl describe pod NAME`: the pod as `kubectl describe pod` shows it, on each node; with
/// `-o json|yaml`, the Pod object and its events.
pub(super) async fn pod(session: &Session, name: &str) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move {
            let pods = c.pods(pb::PodsRequest {}).await?.into_inner().pods;
            let key = |p: &pb::PodInfo| format!("{}/{}", p.namespace, p.name);
            // As the node finds a pod by name: NAMESPACE/NAME, else default's, else any.
            let found = pods
                .iter()
                .find(|p| key(p) == name || key(p) == format!("default/{name}"))
                .or_else(|| pods.iter().find(|p| !name.contains('/') && p.name == name))
                .ok_or_else(|| anyhow::anyhow!("no pod {name} on this node"))?;
            let pod: Value = serde_json::from_str(&found.pod_json)?;
            let request = pb::PodEventsRequest { pod: key(found) };
            let mut events = c.pod_events(request).await?.into_inner().events;
            // Those of this pod, not of an earlier one of its name, as kubectl filters them.
            let uid = text(&pod, "/metadata/uid").to_string();
            events.retain(|event| uid.is_empty() || event.pod_uid == uid);
            Ok((found.source.clone(), pod, events))
        })
        .await;
    let format = session.format;
    let now = now_millis();
    if format != OutputFormat::Table {
        return report(format, results, |node, (_, pod, events)| {
            let events: Vec<super::Row> =
                events.into_iter().map(|e| event_row(format, node, e, now)).collect();
            vec![row(node, json!({ "pod": pod, "events": events }))]
        });
    }
    let mut failed = false;
    let several = results.len() > 1;
    for (node, result) in results {
        match result {
            Ok((source, pod, events)) => {
                if several {
                    println!("--- node {node}");
                }
                print!("{}", describe_pod(&pod, &source, &events, now));
            }
            Err(e) => {
                eprintln!("error: node {node}: {e}");
                failed = true;
            }
        }
    }
    Ok(super::exit_code(failed))
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// `key=value` pairs of a map, one per line after the first, aligned under it.
fn pairs(value: &Value, pointer: &str) -> String {
    let Some(map) = value.pointer(pointer).and_then(Value::as_object) else {
        return "<none>".into();
    };
    let lines: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), String::from)))
        .collect();
    match lines.is_empty() {
        true => "<none>".into(),
        false => lines.join(&format!("\n{:15}", "")),
    }
}

/// A container's state lines: `Running`, `Waiting` with its reason, `Terminated` with its
/// reason and exit code; and its last state when it ran before.
fn container_states(out: &mut String, status: &Value) {
    let state = |out: &mut String, title: &str, state: &Value| {
        if let Some(waiting) = state.get("waiting") {
            let _ = writeln!(out, "    {title:<15}Waiting");
            let _ = writeln!(out, "      Reason:        {}", text(waiting, "/reason"));
            if !text(waiting, "/message").is_empty() {
                let _ = writeln!(out, "      Message:       {}", text(waiting, "/message"));
            }
        } else if let Some(running) = state.get("running") {
            let _ = writeln!(out, "    {title:<15}Running");
            let _ = writeln!(out, "      Started:       {}", text(running, "/startedAt"));
        } else if let Some(terminated) = state.get("terminated") {
            let _ = writeln!(out, "    {title:<15}Terminated");
            let _ = writeln!(out, "      Reason:        {}", text(terminated, "/reason"));
            let _ = writeln!(out, "      Exit Code:     {}", terminated["exitCode"]);
            let message = text(terminated, "/message").trim_end();
            if !message.is_empty() {
                let _ = writeln!(out, "      Message:       {message}");
            }
            let _ = writeln!(out, "      Started:       {}", text(terminated, "/startedAt"));
            let _ = writeln!(out, "      Finished:      {}", text(terminated, "/finishedAt"));
        }
    };
    state(out, "State:", &status["state"]);
    if status.get("lastState").and_then(Value::as_object).is_some_and(|s| !s.is_empty()) {
        state(out, "Last State:", &status["lastState"]);
    }
}

/// The containers of one list (`containers` or `initContainers`) with their statuses.
fn containers(out: &mut String, pod: &Value, title: &str, list: &str, statuses: &str) {
    let Some(containers) = pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array) else {
        return;
    };
    let statuses = pod.pointer(&format!("/status/{statuses}")).and_then(Value::as_array);
    let _ = writeln!(out, "{title}:");
    for container in containers {
        let name = text(container, "/name");
        let _ = writeln!(out, "  {name}:");
        let _ = writeln!(out, "    Image:         {}", text(container, "/image"));
        let status = statuses.into_iter().flatten().find(|s| text(s, "/name") == name);
        if let Some(status) = status {
            let id = text(status, "/containerID");
            if !id.is_empty() {
                let _ = writeln!(out, "    Container ID:  {id}");
            }
            container_states(out, status);
            let _ = writeln!(out, "    Ready:         {}", status["ready"]);
            let _ = writeln!(out, "    Restart Count: {}", status["restartCount"]);
        }
    }
}

/// The pod, its containers and its events, as `kubectl describe pod` lays them out.
fn describe_pod(pod: &Value, source: &str, events: &[pb::PodEvent], now_millis: u64) -> String {
    let mut out = String::new();
    let field = |out: &mut String, name: &str, value: &str| {
        let value = if value.is_empty() { "<none>" } else { value };
        let _ = writeln!(out, "{:15}{value}", format!("{name}:"));
    };
    field(&mut out, "Name", text(pod, "/metadata/name"));
    field(&mut out, "Namespace", text(pod, "/metadata/namespace"));
    field(&mut out, "Source", source);
    field(&mut out, "Start Time", text(pod, "/status/startTime"));
    field(&mut out, "Labels", &pairs(pod, "/metadata/labels"));
    field(&mut out, "Status", &super::pods::pod_status_column(pod));
    if !text(pod, "/status/message").is_empty() {
        field(&mut out, "Message", text(pod, "/status/message"));
    }
    field(&mut out, "IP", text(pod, "/status/podIP"));
    containers(&mut out, pod, "Init Containers", "initContainers", "initContainerStatuses");
    containers(&mut out, pod, "Containers", "containers", "containerStatuses");
    if let Some(conditions) = pod.pointer("/status/conditions").and_then(Value::as_array) {
        let types = conditions.iter().map(|c| text(c, "/type").len());
        let width = types.max().unwrap_or(0).max(4) + 3;
        let _ = writeln!(out, "Conditions:\n  {:<width$}Status", "Type");
        for condition in conditions {
            let (kind, status) = (text(condition, "/type"), text(condition, "/status"));
            let _ = writeln!(out, "  {kind:<width$}{status}");
        }
    }
    if events.is_empty() {
        let _ = writeln!(out, "Events:        <none>");
        return out;
    }
    let ages: Vec<String> = events.iter().map(|e| event_age(e, now_millis)).collect();
    let reason_width = events.iter().map(|e| e.reason.len()).max().unwrap_or(0).max(6) + 2;
    let age_width = ages.iter().map(String::len).max().unwrap_or(0).max(3) + 2;
    let _ = writeln!(out, "Events:");
    let header = ("Type", "Reason", "Age", "Message");
    let _ = writeln!(
        out,
        "  {:<9}{:<reason_width$}{:<age_width$}{}",
        header.0, header.1, header.2, header.3
    );
    for (event, age) in events.iter().zip(ages) {
        let _ = writeln!(
            out,
            "  {:<9}{:<reason_width$}{age:<age_width$}{}",
            event.r#type, event.reason, event.message
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(reason: &str, count: u32, first: u64, last: u64) -> pb::PodEvent {
        pb::PodEvent {
            namespace: "default".into(),
            pod: "web".into(),
            field_path: "spec.containers{nginx}".into(),
            r#type: "Warning".into(),
            reason: reason.into(),
            message: format!("{reason} happened"),
            count,
            first_unix_millis: first,
            last_unix_millis: last,
            ..Default::default()
        }
    }

    #[test]
    fn ages_read_as_kubectl_writes_them() {
        let now = 1_000_000_000;
        assert_eq!(ago(now - 45_000, now), "45s");
        assert_eq!(ago(now - 192_000, now), "3m12s");
        assert_eq!(ago(now - 1_800_000, now), "30m");
        assert_eq!(ago(now - 5 * 3_600_000, now), "5h");
        assert_eq!(ago(now - 3 * 86_400_000, now), "3d");
        assert_eq!(
            event_age(&event("BackOff", 4, now - 300_000, now - 2_000), now),
            "2s (x4 over 5m0s)"
        );
    }

    #[test]
    fn a_pod_is_described_with_its_containers_and_events() {
        let pod: Value = serde_json::from_str(
            r#"{"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]},
                "status": {"phase": "Running", "podIP": "10.244.0.7",
                  "conditions": [{"type": "Ready", "status": "False"}],
                  "containerStatuses": [{"name": "nginx", "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                    "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}}]}}"#,
        )
        .unwrap();
        let now = 1_000_000_000;
        let text =
            describe_pod(&pod, "applied", &[event("BackOff", 3, now - 60_000, now - 1_000)], now);
        for line in [
            "Name:          web",
            "Labels:        app=web",
            "Status:        CrashLoopBackOff",
            "    Image:         nginx:1.27",
            "      Reason:        CrashLoopBackOff",
            "    Last State:    Terminated",
            "      Exit Code:     1",
            "    Restart Count: 3",
            "  Ready   False",
            "  Warning  BackOff  1s (x3 over 60s)  BackOff happened",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
    }
}
