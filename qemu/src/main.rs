//! `cairn-qemu run --image FILE --board NAME`: boots a Cairn image under QEMU as its board's
//! description says, and follows its console.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cairn_api::board::Board;
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
    /// Boot an image and print its console until QEMU exits. Ctrl-C presses the guest's
    /// power button and waits for a clean power-off (a second Ctrl-C kills QEMU).
    Run {
        /// The disk image; it is used in place.
        #[arg(long)]
        image: PathBuf,
        /// The board it is for, a folder of --overlays.
        #[arg(long, default_value = "generic-x86_64")]
        board: String,
        /// Where the boards are.
        #[arg(long, default_value = "overlays")]
        overlays: PathBuf,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// Where the console log and firmware variables go.
        #[arg(long, default_value = "target/cairn-qemu")]
        work_dir: PathBuf,
    },
}

/// How long a guest may take to power off after the power button.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    let Command::Run { image, board, overlays, memory, work_dir } = Cli::parse().command;
    let board = match Board::load(&overlays, &board) {
        Ok(board) => board,
        Err(e) => {
            eprintln!("cairn-qemu: {e}");
            return ExitCode::FAILURE;
        }
    };
    let interrupts = match cairn_qemu::watch_interrupts() {
        Ok(count) => count,
        Err(errno) => {
            eprintln!("cairn-qemu: watching for Ctrl-C: {errno}");
            return ExitCode::FAILURE;
        }
    };
    let config = VmConfig {
        disk: Some(image),
        board,
        memory_mib: memory,
        work_dir,
        own_process_group: true,
        rtc_base: None,
        forwards: Vec::new(),
        offline: false,
    };
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
    let mut stopping_since = None;
    loop {
        let interrupted = interrupts.load(Ordering::SeqCst);
        if interrupted == 1 && stopping_since.is_none() {
            stopping_since = Some(Instant::now());
            eprintln!("cairn-qemu: pressing the power button (Ctrl-C again kills QEMU)");
            if let Err(e) = vm.request_power_off() {
                eprintln!("cairn-qemu: {e}");
            }
        }
        if interrupted > 1 || stopping_since.is_some_and(|t| t.elapsed() > STOP_TIMEOUT) {
            eprintln!("cairn-qemu: killing QEMU");
            if let Err(e) = vm.power_off_hard() {
                eprintln!("cairn-qemu: {e}");
            }
            return ExitCode::FAILURE;
        }
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
