//! ctl: generates Cairn PKI and machine configs, and drives nodes over mutually
//! authenticated gRPC — one node or many at once (`-n a,b,c`).

pub mod cli;
pub mod commands;
pub mod connect;
pub mod ctlconfig;
pub mod errors;
pub mod fanout;
pub mod gen;
pub mod output;

use std::process::ExitCode;

/// Runs one ctl invocation; `Ok` carries the exit code (non-zero when any node failed).
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(commands::dispatch(cli))
}
