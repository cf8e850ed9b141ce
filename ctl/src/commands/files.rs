//! Files on the node: `ls` and `read`.

use std::io::Write;
use std::process::ExitCode;

use cairn_api::machine as pb;
use serde_json::json;

use super::{report, row, Session};
use crate::output::timestamp;

pub(super) async fn list(session: &Session, path: &str, depth: i32) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move {
            let mut stream = c
                .list(pb::ListRequest { root: path.to_string(), recursion_depth: depth })
                .await?
                .into_inner();
            let mut entries = Vec::new();
            while let Some(entry) = stream.message().await? {
                entries.push(entry);
            }
            Ok(entries)
        })
        .await;
    report(session.format, results, |node, entries| {
        entries
            .into_iter()
            .map(|e| {
                let name = match (e.link_target.is_empty(), e.error.is_empty()) {
                    (_, false) => format!("{} (error: {})", e.path, e.error),
                    (false, true) => format!("{} -> {}", e.path, e.link_target),
                    (true, true) => e.path,
                };
                row(node, json!({"mode": mode_string(e.mode), "size": e.size, "modified": timestamp(e.modified_unix.saturating_mul(1000)), "name": name}))
            })
            .collect()
    })
}

pub(super) async fn read(session: &Session, path: &str) -> anyhow::Result<ExitCode> {
    let (node, result) = session
        .targets
        .one("read", |_, mut c| async move {
            let mut stream = c.read(pb::ReadRequest { path: path.to_string() }).await?.into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = stream.message().await? {
                out.write_all(&chunk.data)?;
            }
            out.flush()?;
            Ok(())
        })
        .await?;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: node {node}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `st_mode` as `ls -l` shows it: `drwxr-xr-x`.
fn mode_string(mode: u32) -> String {
    let kind = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '-',
    };
    let mut text = String::from(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        text.push(if bits & 4 != 0 { 'r' } else { '-' });
        text.push(if bits & 2 != 0 { 'w' } else { '-' });
        text.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string(0o040755), "drwxr-xr-x");
        assert_eq!(mode_string(0o100600), "-rw-------");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
    }
}
