//! Child exits, for PID 1 (or a subreaper): every exited child is reaped, so none stays a
//! zombie, and the status of a child someone started through [`Reaper::spawn`] goes to them.
//!
//! A plain `waitpid(-1)` loop would steal the status of every child machined supervises
//! (containerd, its shims), as they are children of PID 1 too. So the reaper first *looks* at
//! the next exited child without reaping it (`waitid(P_ALL, WNOWAIT)`), then reaps it by pid
//! and hands the status to whoever registered that pid; a pid nobody registered (an orphan
//! the kernel reparented to PID 1) is reaped silently. Registration happens under the same
//! lock as the fork, so a child that exits at once is never taken for an orphan.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// Where exit statuses go.
#[derive(Default)]
pub struct Reaper {
    /// The children someone waits for, by pid.
    waiting: Mutex<HashMap<Pid, oneshot::Sender<WaitStatus>>>,
    /// Orphans reaped so far.
    orphans: AtomicU64,
}

/// A child started through the reaper, and its exit status to come.
pub struct Spawned {
    /// The child (its pipes); never `wait` on it, the status comes through `exit`.
    pub child: Child,
    /// Resolves with the child's exit status once it has been reaped.
    pub exit: oneshot::Receiver<WaitStatus>,
}

impl Reaper {
    /// A reaper with nothing registered.
    pub fn new() -> Arc<Reaper> {
        Arc::default()
    }

    /// Starts `command` and registers its pid before the reaper can see it exit.
    pub fn spawn(&self, command: &mut Command) -> io::Result<Spawned> {
        let mut waiting = self.lock();
        let child = command.spawn()?;
        let (tx, exit) = oneshot::channel();
        waiting.insert(Pid::from_raw(child.id() as i32), tx);
        Ok(Spawned { child, exit })
    }

    /// Runs `command` to its end with its standard output discarded; returns its exit
    /// status and what it wrote to its standard error.
    pub async fn output(&self, command: &mut Command) -> io::Result<(WaitStatus, String)> {
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut spawned = self.spawn(command)?;
        let stderr = spawned.child.stderr.take().expect("stderr is piped");
        let errors = tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            let _ = io::Read::read_to_string(&mut io::BufReader::new(stderr), &mut text);
            text
        });
        let status = spawned.exit.await.map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the reaper stopped before the child exited")
        })?;
        Ok((status, errors.await.unwrap_or_default()))
    }

    /// How many children nobody waited for were reaped.
    pub fn orphans_reaped(&self) -> u64 {
        self.orphans.load(Ordering::Relaxed)
    }

    /// Reaps every child that has exited; returns how many.
    pub fn reap_exited(&self) -> usize {
        let mut waiting = self.lock();
        let mut reaped = 0;
        loop {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            let pid = match waitid(Id::All, flags) {
                Ok(status) => match status.pid() {
                    Some(pid) => pid,
                    None => return reaped, // StillAlive: nothing has exited.
                },
                Err(Errno::EINTR) => continue,
                Err(_) => return reaped, // ECHILD: no children at all.
            };
            let status = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(status) => status,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    tracing::error!("reaping {pid}: {errno}");
                    return reaped;
                }
            };
            reaped += 1;
            match waiting.remove(&pid) {
                // The receiver may have gone; the child is reaped all the same.
                Some(tx) => drop(tx.send(status)),
                None => {
                    self.orphans.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Reaps at every SIGCHLD, for as long as the runtime runs.
    pub async fn run(self: Arc<Self>) {
        let Ok(mut children) = signal(SignalKind::child()) else {
            tracing::error!("cannot watch SIGCHLD: exited children will stay zombies");
            return;
        };
        // Children that exited before the handler was installed sent their signal already.
        self.reap_exited();
        while children.recv().await.is_some() {
            self.reap_exited();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Pid, oneshot::Sender<WaitStatus>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}
