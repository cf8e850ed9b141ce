//! Machine configs: validate locally, apply to nodes, read back.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use cairn_api::bootstrap::{BootstrapToken, Side};
use cairn_api::config::MachineConfig;
use cairn_api::machine as pb;
use serde_json::json;

use super::{report, row, Session};
use crate::cli::{ApplyConfigArgs, ApplyModeArg, OutputFormat};
use crate::connect::ChannelBinding;
use crate::fanout::Client;

pub(super) fn validate(file: &Path) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    match MachineConfig::from_yaml(&bytes) {
        Ok(_) => {
            println!("{}: valid", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: invalid:", file.display());
            for problem in e.problems() {
                eprintln!("  {problem}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

pub(super) async fn apply(session: &Session, args: &ApplyConfigArgs) -> anyhow::Result<ExitCode> {
    let data =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let request = pb::ApplyConfigurationRequest {
        data,
        mode: match args.mode {
            ApplyModeArg::Auto => pb::ApplyMode::Auto,
            ApplyModeArg::NoReboot => pb::ApplyMode::NoReboot,
            ApplyModeArg::Reboot => pb::ApplyMode::Reboot,
            ApplyModeArg::Staged => pb::ApplyMode::Staged,
            ApplyModeArg::Try => pb::ApplyMode::Try,
        } as i32,
        dry_run: args.dry_run,
        try_timeout_seconds: u32::try_from(args.timeout.as_secs())
            .context("--timeout is too long")?,
        bootstrap_proof: Vec::new(),
    };
    let token = match &args.bootstrap_token_file {
        Some(_) if session.targets.client_auth => anyhow::bail!(
            "--bootstrap-token-file is for a node in maintenance or recovery mode, from a client without a certificate: add --insecure"
        ),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(BootstrapToken::parse(&text).with_context(|| path.display().to_string())?)
        }
        None => None,
    };
    if !session.targets.client_auth && token.is_none() && !session.pinned {
        eprintln!("warning: nothing checks that the node is the one you mean, and the config (with its node CA key) goes to whoever answers: pin the certificate with --fingerprint (printed on the node's console), or build the image with a bootstrap token and pass --bootstrap-token-file");
    }
    let results = session
        .targets
        .each_bound(|_, mut c, binding| {
            let mut request = request.clone();
            let token = token.clone();
            async move {
                if let Some(token) = token {
                    request.bootstrap_proof = prove_bootstrap(&mut c, &token, &binding).await?;
                }
                Ok(c.apply_configuration(request).await?.into_inner())
            }
        })
        .await;
    let problems: Vec<String> = results
        .iter()
        .filter_map(|(node, result)| Some((node, result.as_ref().ok()?)))
        .flat_map(|(node, r)| r.problems.iter().map(move |p| format!("node {node}: {p}")))
        .collect();
    let code = report(session.format, results, |node, r| {
        let mode = pb::ApplyMode::try_from(r.mode).map_or("unknown", |m| match m {
            pb::ApplyMode::NoReboot => "no-reboot",
            pb::ApplyMode::Reboot => "reboot",
            pb::ApplyMode::Staged => "staged",
            pb::ApplyMode::Try => "try",
            pb::ApplyMode::Auto | pb::ApplyMode::Unspecified => "auto",
        });
        vec![row(node, json!({"mode": mode, "summary": r.summary, "changes": r.changes}))]
    })?;
    for problem in &problems {
        eprintln!("warning: not in effect: {problem}");
    }
    // The config is running, but not all of it: a script must notice. A node that did not
    // take the config at all (exit 1) weighs more.
    Ok(if problems.is_empty() || code == ExitCode::FAILURE {
        code
    } else {
        ExitCode::from(NOT_ALL_IN_EFFECT)
    })
}

/// `apply-config`'s exit status when the config was applied but parts of it could not be put
/// into effect (each is printed as a warning).
pub const NOT_ALL_IN_EFFECT: u8 = 3;

/// Proves to the node that we know `token`, and makes it prove the same, on this session;
/// returns our proof for the apply that follows.
async fn prove_bootstrap(
    client: &mut Client,
    token: &BootstrapToken,
    binding: &ChannelBinding,
) -> anyhow::Result<Vec<u8>> {
    let client_proof = token.proof(Side::Client, binding);
    let request = pb::BootstrapRequest { client_proof: client_proof.clone() };
    let node_proof = client.bootstrap(request).await?.into_inner().node_proof;
    if !token.verify(Side::Node, binding, &node_proof) {
        anyhow::bail!("the node could not prove it knows the bootstrap token: it is not a node built with this token, or something relays the connection; the config was not sent");
    }
    Ok(client_proof)
}

pub(super) async fn get(session: &Session, staged: bool) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move {
            Ok(c.get_configuration(pb::GetConfigurationRequest { staged }).await?.into_inner())
        })
        .await;
    if session.format != OutputFormat::Table {
        return report(session.format, results, |node, r| {
            vec![row(
                node,
                json!({"redacted": r.redacted, "config": String::from_utf8_lossy(&r.data)}),
            )]
        });
    }
    // Plain YAML documents, one per node, each headed by its node.
    let mut failed = false;
    for (node, result) in results {
        match result {
            Ok(r) => print!(
                "--- # node {node}{}\n{}",
                if r.redacted { " (secrets redacted)" } else { "" },
                String::from_utf8_lossy(&r.data)
            ),
            Err(e) => {
                eprintln!("error: node {node}: {e}");
                failed = true;
            }
        }
    }
    Ok(super::exit_code(failed))
}
