//! `cairn-qemu run --image FILE`: boots a Cairn image under QEMU and follows its console.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cairn_api::arch::Arch;
use cairn_qemu::{Vm, VmConfig};
use clap::{Parser, Subcommand};

/// Boots Cairn images under QEMU.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot an image and print its console until QEMU exits (Ctrl-C stops it).
    Run {
        /// The disk image; it is used in place.
        #[arg(long)]
        image: PathBuf,
        /// Its architecture.
        #[arg(long, default_value = "x86_64")]
        arch: Arch,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// Where the console log and firmware variables go.
        #[arg(long, default_value = "target/cairn-qemu")]
        work_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let Command::Run { image, arch, memory, work_dir } = Cli::parse().command;
    let config = VmConfig { image, arch, memory_mib: memory, work_dir };
    let mut vm = match Vm::start(&config) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("cairn-qemu: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "cairn-qemu: console in {}; the node's API is forwarded to {}",
        vm.console_path().display(),
        vm.api_address
    );
    eprintln!("cairn-qemu: once it is up: ctl --insecure -n {} version", vm.api_address);
    let mut shown = 0;
    loop {
        let console = std::fs::read(vm.console_path()).unwrap_or_default();
        if console.len() > shown {
            let mut out = std::io::stdout();
            let _ = out.write_all(&console[shown..]).and_then(|()| out.flush());
            shown = console.len();
        }
        match vm.wait_exit(Duration::from_millis(300)) {
            Ok(Some(status)) => {
                eprintln!("cairn-qemu: QEMU exited ({status})");
                return ExitCode::SUCCESS;
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("cairn-qemu: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
}
