//! The subcommands: local ones (gen, validate, completion) and those that talk to nodes.

mod config;
mod control;
mod describe;
mod files;
mod follow;
mod info;
mod objects;
mod pods;
mod rollback;
mod streams;
mod upgrade;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory;

use crate::cli::{Cli, Command, GenCommand, OutputFormat, PodAction};
use crate::connect::{insecure_tls, mutual_tls, NodeAddress};
use crate::ctlconfig::{self, CtlConfig};
use crate::fanout::{NodeResult, Targets};
use crate::output::{print_rows, Row};

/// What every node command needs: where to go, how, and how to print.
pub struct Session {
    /// The nodes and their TLS settings.
    pub targets: Targets,
    /// Output format.
    pub format: OutputFormat,
    /// Whether the nodes' certificates are pinned (`--fingerprint`).
    pub pinned: bool,
}

/// Runs the command `cli` names.
pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Gen(GenCommand::Config { name, output_dir, node, force }) => {
            crate::gen::config(name, output_dir, node, *force)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Gen(GenCommand::Client { secrets, role, output, node, valid_for, force }) => {
            crate::gen::client(secrets, *role, output, node, *valid_for, *force)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Validate { file } => return config::validate(file),
        Command::Completion { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "ctl", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let session = session(&cli)?;
    match cli.command {
        Command::Version => info::version(&session).await,
        Command::Services => info::services(&session).await,
        Command::Stats => info::stats(&session).await,
        Command::Time => info::time(&session).await,
        Command::Disks => info::disks(&session).await,
        Command::Mounts => info::mounts(&session).await,
        Command::ApplyConfig(args) => config::apply(&session, &args).await,
        Command::GetConfig { staged } => config::get(&session, staged).await,
        Command::Service { id, action } => control::service(&session, &id, action).await,
        Command::Reboot => control::reboot(&session).await,
        Command::Shutdown => control::shutdown(&session).await,
        Command::Upgrade(args) => upgrade::upgrade(&session, &args).await,
        Command::Rollback { stage, wait } => rollback::rollback(&session, stage, wait).await,
        Command::Logs { id, follow, tail, previous } => {
            let target =
                pods::LogsTarget { name: &id, follow, tail: streams::tail(tail), previous };
            pods::logs(&session, &target).await
        }
        Command::Pods => pods::list(&session).await,
        Command::Containers => pods::containers(&session).await,
        Command::Pod { action: PodAction::Restart { name } } => {
            pods::restart(&session, &name).await
        }
        Command::Pod { action: PodAction::Apply { file } } => pods::apply(&session, &file).await,
        Command::Pod { action: PodAction::Delete { name } } => pods::delete(&session, &name).await,
        Command::Apply { file } => objects::apply(&session, &file, false).await,
        Command::Delete { file } => objects::apply(&session, &file, true).await,
        Command::Get { kind, name: None } if matches!(kind.as_str(), "events" | "event" | "ev") => {
            describe::list(&session).await
        }
        Command::Get { kind, name } => {
            let kind = if kind == "all" { "" } else { kind.as_str() };
            objects::get(&session, kind, name.as_deref().unwrap_or_default()).await
        }
        Command::Describe { kind, name } => match kind.as_str() {
            "pod" | "pods" | "po" => describe::pod(&session, &name).await,
            other => anyhow::bail!("ctl describe: {other:?} is not a kind it describes: only pods"),
        },
        Command::Dmesg { follow, tail } => streams::dmesg(&session, follow, tail).await,
        Command::Events { follow, tail } => streams::events(&session, follow, tail).await,
        Command::List { path, depth } => files::list(&session, &path, depth).await,
        Command::Read { path } => files::read(&session, &path).await,
        Command::Gen(_) | Command::Validate { .. } | Command::Completion { .. } => {
            unreachable!("handled above")
        }
    }
}

/// Resolves nodes and TLS settings from the flags and the client config.
fn session(cli: &Cli) -> anyhow::Result<Session> {
    let path = cli.ctlconfig.clone().unwrap_or_else(ctlconfig::default_path);
    // --insecure needs no client config, but takes its nodes when there is one.
    let loaded = match CtlConfig::load(&path) {
        Ok(config) => Some(config),
        Err(ctlconfig::CtlConfigError::Missing(_)) if cli.insecure => None,
        Err(e) => return Err(e.into()),
    };
    let context = match &loaded {
        Some(config) => Some(config.context(&path, cli.context.as_deref())?),
        None => None,
    };
    let nodes: Vec<String> = if cli.nodes.is_empty() {
        context.map(|c| c.nodes.clone()).unwrap_or_default()
    } else {
        cli.nodes.clone()
    };
    if nodes.is_empty() {
        anyhow::bail!(
            "no nodes: pass -n HOST[:PORT] or add nodes to the context in {}",
            path.display()
        );
    }
    let nodes =
        nodes.iter().map(|n| NodeAddress::parse(n.trim())).collect::<anyhow::Result<Vec<_>>>()?;
    if cli.fingerprint.is_some() && nodes.len() > 1 {
        anyhow::bail!(
            "--fingerprint pins one node's certificate: give one node, not {}",
            nodes.len()
        );
    }
    let tls = match (cli.insecure, context) {
        (true, _) => insecure_tls(cli.fingerprint)?,
        (false, Some(context)) => {
            mutual_tls(context).with_context(|| format!("context in {}", path.display()))?
        }
        (false, None) => unreachable!("a missing client config is an error without --insecure"),
    };
    Ok(Session {
        targets: Targets { nodes, tls, client_auth: !cli.insecure },
        format: cli.format,
        pinned: cli.fingerprint.is_some(),
    })
}

/// Prints the rows of the nodes that answered and the errors of those that did not;
/// non-zero exit when any failed.
fn report<T>(
    format: OutputFormat,
    results: Vec<NodeResult<T>>,
    rows_of: impl Fn(&str, T) -> Vec<Row>,
) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    let mut failed = false;
    for (node, result) in results {
        match result {
            Ok(value) => rows.extend(rows_of(&node, value)),
            Err(e) => {
                eprintln!("error: node {node}: {e}");
                failed = true;
            }
        }
    }
    print_rows(format, &rows)?;
    Ok(exit_code(failed))
}

/// Prints each node's one-line result of an action, and the errors of those that failed.
fn report_results(
    format: OutputFormat,
    results: Vec<NodeResult<String>>,
) -> anyhow::Result<ExitCode> {
    report(format, results, |node, message| {
        vec![row(node, serde_json::json!({ "result": message }))]
    })
}

/// Prints only the errors of a command whose output was printed as it came.
fn report_errors<T>(results: Vec<NodeResult<T>>) -> ExitCode {
    let mut failed = false;
    for (node, result) in results {
        if let Err(e) = result {
            eprintln!("error: node {node}: {e}");
            failed = true;
        }
    }
    exit_code(failed)
}

fn exit_code(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A row that starts with the node.
fn row(node: &str, cells: serde_json::Value) -> Row {
    let mut row = Row::new();
    row.insert("node".into(), node.into());
    if let serde_json::Value::Object(cells) = cells {
        row.extend(cells);
    }
    row
}
