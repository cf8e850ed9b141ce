//! The child-process runner: a service that is a program (containerd), started through the
//! [`Reaper`] so its exit status comes back to it, its output going to its log ring, stopped
//! with SIGTERM and, after a grace period, SIGKILL.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Dependency, HealthCheck, Service, ServiceContext};
use crate::system::reaper::Reaper;

/// The longest line kept from a process's output; a longer one is cut into pieces, so a
/// process printing without newlines cannot make machined buffer without end.
const MAX_LINE_BYTES: usize = 8 * 1024;

/// The longest grace between SIGTERM and SIGKILL: the kill must come before the supervisor
/// gives up on the stop.
pub const MAX_GRACE: Duration = Duration::from_secs(super::supervisor::STOP_TIMEOUT.as_secs() - 3);

/// Builds the command line each time the service starts (it may depend on the config).
pub type CommandFactory = Box<dyn Fn() -> anyhow::Result<Command> + Send + Sync>;
/// A health check of a running process.
pub type ProcessHealth = Box<dyn Fn() -> HealthCheck + Send + Sync>;

/// A service that runs a program.
pub struct ProcessService {
    id: &'static str,
    reaper: Arc<Reaper>,
    command: CommandFactory,
    dependencies: Vec<Dependency>,
    health: Option<ProcessHealth>,
    grace: Duration,
}

impl ProcessService {
    /// A service `id` running what `command` builds, once `dependencies` hold. Without a
    /// health check it is ready as soon as the program has started.
    pub fn new(
        id: &'static str,
        reaper: Arc<Reaper>,
        dependencies: Vec<Dependency>,
        command: CommandFactory,
    ) -> Self {
        ProcessService {
            id,
            reaper,
            command,
            dependencies,
            health: None,
            grace: Duration::from_secs(10),
        }
    }

    /// Readiness and health come from `check` instead.
    pub fn with_health(mut self, check: ProcessHealth) -> Self {
        self.health = Some(check);
        self
    }

    /// How long a stop waits after SIGTERM before SIGKILL (default 10 s, at most
    /// [`MAX_GRACE`], so the kill comes before the supervisor gives up on the stop).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace.min(MAX_GRACE);
        self
    }

    async fn run_once(&self, ctx: ServiceContext) -> anyhow::Result<()> {
        let mut command = (self.command)()?;
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let program = command.get_program().to_string_lossy().into_owned();
        let mut spawned = self
            .reaper
            .spawn(&mut command)
            .map_err(|e| anyhow::anyhow!("starting {program}: {e}"))?;
        let pid = Pid::from_raw(spawned.child.id() as i32);
        // Whatever ends this run early (an error below, the supervisor abandoning it) must not
        // leave the program running unsupervised.
        let mut running = KillOnDrop(Some(pid));
        for output in [
            spawned
                .child
                .stdout
                .take()
                .map(|o| tokio::process::ChildStdout::from_std(o).map(boxed)),
            spawned
                .child
                .stderr
                .take()
                .map(|e| tokio::process::ChildStderr::from_std(e).map(boxed)),
        ]
        .into_iter()
        .flatten()
        {
            tokio::spawn(forward_lines(output?, ctx.clone()));
        }
        ctx.log(format!("started {program} (pid {pid})"));
        match self.health {
            Some(_) => ctx.running(),
            None => ctx.ready(),
        }
        let status = tokio::select! {
            // An exit that came with the stop wins: its pid may be reused already.
            biased;
            status = &mut spawned.exit => status,
            _ = ctx.stop.cancelled() => {
                let status = self.terminate(pid, &mut spawned.exit, &ctx).await;
                running.0 = None;
                ctx.log(format!("{program} stopped: {}", describe(status)));
                return Ok(());
            }
        };
        running.0 = None;
        let status = status.map_err(|_| anyhow::anyhow!("{program}: its exit status was lost"))?;
        // A daemon that ends by itself, even with status 0, is restarted.
        anyhow::bail!("{program} {}", describe(Ok(status)))
    }

    /// SIGTERM, then SIGKILL once the grace period is over; waits for the exit.
    async fn terminate(
        &self,
        pid: Pid,
        exit: &mut tokio::sync::oneshot::Receiver<WaitStatus>,
        ctx: &ServiceContext,
    ) -> Result<WaitStatus, tokio::sync::oneshot::error::RecvError> {
        // Not signalled once reaped: the pid may belong to another process by now.
        if let Ok(status) = exit.try_recv() {
            return Ok(status);
        }
        let _ = kill(pid, Signal::SIGTERM);
        match tokio::time::timeout(self.grace, &mut *exit).await {
            Ok(status) => status,
            Err(_) => {
                ctx.log(format!(
                    "no exit {}s after SIGTERM; sending SIGKILL",
                    self.grace.as_secs()
                ));
                if let Ok(status) = exit.try_recv() {
                    return Ok(status);
                }
                let _ = kill(pid, Signal::SIGKILL);
                exit.await
            }
        }
    }
}

impl Service for ProcessService {
    fn id(&self) -> &'static str {
        self.id
    }

    fn dependencies(&self) -> Vec<Dependency> {
        self.dependencies.clone()
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move { self.run_once(ctx).await })
    }

    fn health_check(self: Arc<Self>) -> Option<HealthCheck> {
        self.health.as_ref().map(|check| check())
    }
}

/// SIGKILLs the process when dropped while it still holds a pid.
struct KillOnDrop(Option<Pid>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

fn boxed<R: AsyncRead + Send + Unpin + 'static>(reader: R) -> Box<dyn AsyncRead + Send + Unpin> {
    Box::new(reader)
}

/// Copies a process's output into its log, a line at a time (long lines in pieces).
async fn forward_lines(mut output: Box<dyn AsyncRead + Send + Unpin>, ctx: ServiceContext) {
    let mut pending = Vec::with_capacity(1024);
    let mut buffer = [0u8; 4096];
    loop {
        let read = match output.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &buffer[..read] {
            if byte == b'\n' || pending.len() == MAX_LINE_BYTES {
                ctx.log(String::from_utf8_lossy(&pending).into_owned());
                pending.clear();
                if byte == b'\n' {
                    continue;
                }
            }
            pending.push(byte);
        }
    }
    if !pending.is_empty() {
        ctx.log(String::from_utf8_lossy(&pending).into_owned());
    }
}

/// `exited with status 1`, `killed by SIGKILL`: how a process ended.
fn describe(status: Result<WaitStatus, tokio::sync::oneshot::error::RecvError>) -> String {
    match status {
        Ok(WaitStatus::Exited(_, code)) => format!("exited with status {code}"),
        Ok(WaitStatus::Signaled(_, signal, core)) => {
            format!("killed by {}{}", signal.as_str(), if core { " (core dumped)" } else { "" })
        }
        Ok(other) => format!("ended ({other:?})"),
        Err(_) => "ended (status lost)".into(),
    }
}
