//! The `pause` program (PID 1 of pod sandboxes), run as built: it waits until signalled, exits
//! 0 promptly on SIGTERM and SIGINT, and reaps the children it inherits.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const PAUSE: &str = env!("CARGO_BIN_EXE_pause");

/// How long anything asked of pause may take.
const PROMPTLY: Duration = Duration::from_secs(5);

/// Polls `done` until it gives a value or [`PROMPTLY`] has passed.
fn within<T>(mut done: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        if let Some(value) = done() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` is pause and has taken `signal` in hand: blocked while it reaps (`SigBlk:`
/// of `/proc/PID/status`) or waited for in `sigtimedwait` (which unblocks the signals it waits
/// for while it sleeps; `/proc/PID/wchan`). A signal sent now is pause's to handle.
fn ready(pid: u32, signal: Signal) -> bool {
    let proc = format!("/proc/{pid}");
    let is_pause = std::fs::read_link(format!("{proc}/exe"))
        .is_ok_and(|exe| exe == std::path::Path::new(PAUSE));
    let blocked = std::fs::read_to_string(format!("{proc}/status")).is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("SigBlk:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (signal as i32 - 1)) != 0)
    });
    let waiting = std::fs::read_to_string(format!("{proc}/wchan"))
        .is_ok_and(|wchan| wchan.contains("sigtimedwait"));
    is_pause && (blocked || waiting)
}

/// A child killed when the test ends, passed or not.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn signal_when_ready(Reaped(child): &mut Reaped, signal: Signal) -> ExitStatus {
    let pid = child.id();
    assert!(within(|| ready(pid, signal).then_some(())).is_some(), "pause never took {signal}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(child.try_wait().unwrap().is_none(), "pause exited unasked");
    kill(Pid::from_raw(pid as i32), signal).unwrap();
    within(|| child.try_wait().unwrap())
        .unwrap_or_else(|| panic!("pause still runs {PROMPTLY:?} after {signal}"))
}

#[test]
fn waits_and_exits_0_on_sigterm_and_sigint() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut child = Reaped(Command::new(PAUSE).spawn().unwrap());
        let status = signal_when_ready(&mut child, signal);
        assert_eq!(status.code(), Some(0), "after {signal}: {status}");
    }
}

#[test]
fn reaps_the_children_it_inherits() {
    // The shell starts two children and becomes pause: they are pause's children now. One has
    // ended before pause starts, the other ends while it waits.
    let mut child = Reaped(
        Command::new("sh")
            .args(["-c", "true & echo $!; sleep 0.3 & echo $!; exec \"$0\"", PAUSE])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let orphans: Vec<u32> =
        (0..2).map(|_| lines.next().unwrap().unwrap().parse().unwrap()).collect();
    for orphan in &orphans {
        // A child nobody reaps stays a zombie; a reaped one leaves /proc.
        let gone =
            within(|| (!std::path::Path::new(&format!("/proc/{orphan}")).exists()).then_some(()));
        assert!(gone.is_some(), "child {orphan} of pause was never reaped");
    }
    let status = signal_when_ready(&mut child, Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "{status}");
}
