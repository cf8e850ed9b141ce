//! ctl: generates Cairn PKI and machine configs, and drives nodes over mutually
//! authenticated gRPC — one node or many at once (`-n a,b,c`).
//!
//! Updates are A/B: `ctl upgrade --image F` streams a signed bundle (image-builder's) to a
//! node, which verifies it, writes it to the slot not running and reboots into it on trial;
//! a slot that does not come up healthy is left for the old one. `ctl rollback` boots the
//! other slot again, the same way. With `--wait` both follow the node through the reboot and
//! exit 0 only when it runs the new slot, blessed; `ctl version` shows both slots and the
//! last update.

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
