//! Streams printed as they arrive: the kernel log, machine events (logs: [`super::pods`]).

use std::process::ExitCode;

use cairn_api::machine as pb;
use cairn_api::timestamp::rfc3339_micros;
use serde_json::json;
use tonic::Streaming;

use super::{report_errors, Session};
use crate::output::{print_stream_record, Row};

/// Prints every message of a node's stream as `line` renders it.
async fn drain<T>(
    session: &Session,
    node: &str,
    mut stream: Streaming<T>,
    line: impl Fn(&T) -> (String, Row),
) -> anyhow::Result<()> {
    let prefix = session.targets.nodes.len() > 1;
    while let Some(message) = stream.message().await? {
        let (text, record) = line(&message);
        print_stream_record(session.format, node, prefix, &text, record)?;
    }
    Ok(())
}

/// `--tail N` as the API takes it: negative for all.
pub(super) fn tail(n: Option<u32>) -> i32 {
    n.map_or(-1, |n| n.min(i32::MAX as u32) as i32)
}

pub(super) async fn dmesg(
    session: &Session,
    follow: bool,
    tail_records: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let request = pb::DmesgRequest { follow, tail: tail(tail_records) };
    let results = session
        .targets
        .each(|node, mut c| {
            async move {
                let stream = c.dmesg(request).await?.into_inner();
                drain(session, &node, stream, |r: &pb::KernelLogEntry| {
                    let seconds = r.boot_micros as f64 / 1e6;
                    (
                        format!("[{seconds:>12.6}] {}", r.message),
                        row(json!({"boot_seconds": seconds, "priority": r.priority, "facility": r.facility, "message": r.message})),
                    )
                })
                .await
            }
        })
        .await;
    Ok(report_errors(results))
}

pub(super) async fn events(
    session: &Session,
    follow: bool,
    tail_events: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let request = pb::EventsRequest { tail: tail(tail_events), follow };
    let results = session
        .targets
        .each(|node, mut c| async move {
            let stream = c.events(request).await?.into_inner();
            drain(session, &node, stream, |e: &pb::Event| {
                let time = rfc3339_micros(e.unix_millis * 1000);
                (
                    format!("{time} {:<8} {}", e.kind, e.message),
                    row(json!({"id": e.id, "time": time, "kind": e.kind, "message": e.message})),
                )
            })
            .await
        })
        .await;
    Ok(report_errors(results))
}

fn row(value: serde_json::Value) -> Row {
    match value {
        serde_json::Value::Object(map) => map,
        _ => Row::new(),
    }
}
