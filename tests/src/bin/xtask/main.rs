//! `cargo xtask`: the README's two commands. `demo` installs what the demo needs (QEMU, its
//! firmware, a C toolchain; through sudo when not root) and runs it; `test` installs what the
//! tests need and runs every check CI runs, then prints where the time went.

mod checks;
mod cross;
mod demo;
mod host;
mod packages;
mod rust185;
mod sources;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use crate::host::{HostError, System};

/// The set-up and the checks of Cairn's workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
enum Xtask {
    /// Installs what the demo needs (asking for root through sudo), then runs it: builds the
    /// x86_64 image, boots it under QEMU and configures it.
    Demo,
    /// Installs what the tests need, then runs what CI runs: formatting, lints, the build with
    /// Debian's rustc 1.85, every test; ends with where the time went.
    Test {
        /// Where Debian's rustc 1.85 and its build output go [default: the target dir's
        /// `xtask/`].
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
    },
    /// Installs the cross gcc for arm64 and armv7, and unpacks Debian's rustc 1.85 with the
    /// std of both into the cache; prints the CAIRN_CROSS_RUST line that points image-builder
    /// at it (for hosts whose rustc has no rustup target for them).
    CrossToolchain {
        /// Where the toolchain goes [default: the target dir's `xtask/`, as for `test`].
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let outcome = run(Xtask::parse());
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            match &error {
                // A failed command's own exit code, as a shell script's `set -e` gives it.
                HostError::Failed { status, .. } => status
                    .code()
                    .and_then(|c| u8::try_from(c).ok())
                    .filter(|c| *c != 0)
                    .map_or(ExitCode::FAILURE, ExitCode::from),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// The target directory's `xtask/`.
fn default_cache(workspace: &std::path::Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from);
    target.unwrap_or_else(|| workspace.join("target")).join("xtask")
}

fn run(command: Xtask) -> Result<(), HostError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = cairn_tests::workspace();
    let board = cairn_tests::boards::GENERIC_X86_64.description();
    let mut host = System;
    match command {
        Xtask::Demo => Err(demo::run(&mut host, board, &cargo, workspace)),
        Xtask::CrossToolchain { cache } => {
            let cache = cache.unwrap_or_else(|| default_cache(workspace));
            println!("{}", cross::run(&mut host, &cache)?);
            Ok(())
        }
        Xtask::Test { cache } => {
            // Ctrl-C reaches the running check too (the terminal's process group) and stops it;
            // xtask only notes it (a handler, which children do not inherit), so it lives on to
            // print where the time went, as .ci/run's exit trap did.
            let interrupts = || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let signal = runtime.block_on(async { signal(SignalKind::interrupt()) })?;
                std::io::Result::Ok((runtime, signal))
            };
            let _interrupts = interrupts()
                .map_err(|source| HostError::Io { what: "watching for Ctrl-C".into(), source })?;
            let cache = cache.unwrap_or_else(|| default_cache(workspace));
            let timings =
                tempfile::Builder::new().prefix("cairn-timings.").tempfile().map_err(|source| {
                    HostError::Io {
                        what: "creating the QEMU scenarios' timings file".into(),
                        source,
                    }
                })?;
            let setup = checks::Setup {
                cargo,
                workspace: workspace.to_path_buf(),
                cache,
                timings: timings.path().to_path_buf(),
            };
            checks::run(&mut host, board, &setup)
        }
    }
}
