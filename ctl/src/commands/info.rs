//! Read-only views: version, services, stats, disks, mounts.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_api::machine as pb;
use serde_json::json;

use super::{report, row, Session};

pub(super) async fn version(session: &Session) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move { Ok(c.version(pb::VersionRequest {}).await?.into_inner()) })
        .await;
    report(session.format, results, |node, v| {
        let mode = match pb::NodeMode::try_from(v.mode) {
            Ok(pb::NodeMode::Maintenance) => "maintenance",
            Ok(pb::NodeMode::Configured) => "configured",
            _ => "unknown",
        };
        vec![row(
            node,
            json!({
                "version": v.version, "arch": v.arch, "kernel": v.kernel, "hostname": v.hostname,
                "mode": mode, "slot": v.slot, "pid1": v.pid1,
            }),
        )]
    })
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
                let last = s.events.last().map(|e| e.message.clone()).unwrap_or_default();
                row(
                    node,
                    json!({
                        "service": s.id, "state": s.state, "since": age(s.since_unix_millis),
                        "restarts": s.restarts, "last_event": last,
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

/// How long ago a time was, to the second: "3m 12s".
fn age(unix_millis: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let seconds = now.saturating_sub(unix_millis) / 1000;
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}
