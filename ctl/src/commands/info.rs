//! Read-only views: version (with the slots and the last update), services, stats, disks, mounts.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_api::machine as pb;
use serde_json::json;

use super::follow::{outcome_json, outcome_summary};
use super::{report, row, Session};
use crate::cli::OutputFormat;
use crate::output::timestamp;

pub(super) async fn version(session: &Session) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move { Ok(c.version(pb::VersionRequest {}).await?.into_inner()) })
        .await;
    // A table shows the last update in words; JSON and YAML keep its fields.
    let table = session.format == OutputFormat::Table;
    report(session.format, results, |node, v| {
        let mode = match pb::NodeMode::try_from(v.mode) {
            Ok(pb::NodeMode::Maintenance) => "maintenance".to_string(),
            Ok(pb::NodeMode::Configured) => "configured".to_string(),
            Ok(pb::NodeMode::Recovery) => recovery_mode(&v.recovery_reason),
            _ => "unknown".to_string(),
        };
        let (other_slot, last_update) = if table {
            let other = if v.other_slot_version.is_empty() { "-" } else { &v.other_slot_version };
            (json!(other), json!(outcome_summary(v.last_update.as_ref())))
        } else {
            (json!(v.other_slot_version), outcome_json(v.last_update.as_ref()))
        };
        vec![row(
            node,
            json!({
                "version": v.version, "slot": v.slot, "other_slot": other_slot,
                "last_update": last_update, "arch": v.arch, "kernel": v.kernel,
                "hostname": v.hostname, "mode": mode, "pid1": v.pid1,
            }),
        )]
    })
}

/// What a node in recovery mode needs, in words.
fn recovery_mode(reason: &str) -> String {
    format!(
        "recovery: the stored config does not load ({reason}); apply a config as an admin of the last known client CA, or with the bootstrap token"
    )
}

pub(super) async fn services(session: &Session) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move {
            Ok(c.service_list(pb::ServiceListRequest {}).await?.into_inner())
        })
        .await;
    report(session.format, results, |node, list| {
        list.services
            .into_iter()
            .map(|s| {
                let state = match s.waiting_for.as_str() {
                    "" => s.state,
                    what => format!("{} for {what}", s.state),
                };
                row(
                    node,
                    json!({
                        "service": s.id, "state": state, "health": s.health,
                        "since": age(s.since_unix_millis), "restarts": s.restarts,
                        "last_exit": s.last_exit,
                    }),
                )
            })
            .collect()
    })
}

pub(super) async fn stats(session: &Session) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move { Ok(c.stats(pb::StatsRequest {}).await?.into_inner()) })
        .await;
    report(session.format, results, |node, s| {
        let memory = s.memory.unwrap_or_default();
        let cores = s.cpus.iter().filter(|c| c.name != "cpu").count();
        vec![row(
            node,
            json!({
                "memory_total_bytes": memory.total_bytes,
                "memory_available_bytes": memory.available_bytes,
                "cpus": cores,
                "load": format!("{:.2} {:.2} {:.2}", s.load1, s.load5, s.load15),
                "uptime": humantime::format_duration(Duration::from_secs(s.uptime_seconds as u64)).to_string(),
                "processes": s.processes,
                "machined_rss_bytes": s.machined_rss_bytes,
            }),
        )]
    })
}

pub(super) async fn disks(session: &Session) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move { Ok(c.disks(pb::DisksRequest {}).await?.into_inner()) })
        .await;
    report(session.format, results, |node, list| {
        list.disks
            .into_iter()
            .map(|d| {
                row(node, json!({
                    "dev": d.dev_path, "size_bytes": d.size_bytes, "model": d.model, "serial": d.serial,
                    "type": if d.rotational { "HDD" } else { "SSD" }, "removable": d.removable, "read_only": d.read_only,
                }))
            })
            .collect()
    })
}

pub(super) async fn mounts(session: &Session) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move { Ok(c.mounts(pb::MountsRequest {}).await?.into_inner()) })
        .await;
    report(session.format, results, |node, list| {
        list.mounts
            .into_iter()
            .map(|m| {
                row(node, json!({
                    "source": m.source, "target": m.target, "type": m.fs_type,
                    "size_bytes": m.size_bytes, "available_bytes": m.available_bytes, "options": m.options,
                }))
            })
            .collect()
    })
}

pub(super) async fn time(session: &Session) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move { Ok(c.time(pb::TimeRequest {}).await?.into_inner()) })
        .await;
    report(session.format, results, |node, t| {
        let when = |unix_millis: u64| match unix_millis {
            0 => String::new(),
            _ => timestamp(unix_millis),
        };
        // How far the node's clock is from this machine's, as far as a round trip allows.
        let local = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        let behind = (local as i128 - i128::from(t.unix_millis)) as f64 / 1000.0;
        vec![row(
            node,
            json!({
                "time": timestamp(t.unix_millis),
                "node_behind_seconds": format!("{behind:+.1}"),
                "state": t.state,
                "source": t.source,
                "offset_seconds": if t.last_sync_unix_millis == 0 { String::new() } else { format!("{:+.6}", t.offset_seconds) },
                "last_sync": when(t.last_sync_unix_millis),
                "raised_to_floor": when(t.raised_to_floor_unix_millis),
                "servers": t.servers.join(","),
                "last_error": t.last_error,
            }),
        )]
    })
}

/// How long ago a time was, to the second: "3m 12s".
fn age(unix_millis: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let seconds = now.saturating_sub(unix_millis) / 1000;
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}
