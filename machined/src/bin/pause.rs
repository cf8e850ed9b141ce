//! `pause`: PID 1 of every pod sandbox (the `localhost/pause:latest` image image-builder bakes
//! into Cairn images). It holds the pod's namespaces open and does nothing else: it reaps the
//! processes the kernel hands it (orphans of a shared PID namespace), and exits 0 on SIGINT or
//! SIGTERM.
//!
//! The three signals are blocked and taken with `sigwait`, as tini does, rather than caught by
//! handlers: no async-signal-safety to get right, no `unsafe`, and a blocked signal reaches
//! even a namespace's init, which the kernel otherwise shields from signals it has no handler
//! for. Blocked signals stay pending, so one that arrives while children are reaped is taken
//! on the next wait.

use std::process::ExitCode;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

fn main() -> ExitCode {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGCHLD] {
        signals.add(signal);
    }
    if let Err(e) = signals.thread_block() {
        eprintln!("pause: blocking SIGINT, SIGTERM and SIGCHLD: {e}");
        return ExitCode::FAILURE;
    }
    // Children that ended before the signals were blocked sent their SIGCHLD already.
    reap_exited_children();
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => reap_exited_children(),
            Ok(_) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pause: waiting for signals: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
}

/// Collects every child that has exited; returns when none is left to collect (one SIGCHLD
/// may stand for several exits).
fn reap_exited_children() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
