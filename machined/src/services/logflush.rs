//! `logflush`: appends the in-memory logs to `/var/log` now and then, rarely, because SD
//! cards wear. Reboot and shutdown flush too. It starts once EPHEMERAL is mounted (on a
//! first boot, after it is formatted); until then the rings keep every line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::facts::Fact;
use crate::logs::LogBook;
use crate::service::{Dependency, Service, ServiceContext};

/// Flushes logs every `interval`.
pub struct LogFlush {
    logs: Arc<LogBook>,
    dir: PathBuf,
    interval: Duration,
}

impl LogFlush {
    /// A flusher of `logs` into `dir`.
    pub fn new(logs: Arc<LogBook>, dir: PathBuf, interval: Duration) -> Self {
        LogFlush { logs, dir, interval }
    }
}

impl Service for LogFlush {
    fn id(&self) -> &'static str {
        "logflush"
    }

    fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Fact(Fact::EphemeralVolume, None)]
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            ctx.ready();
            loop {
                tokio::select! {
                    _ = ctx.stop.cancelled() => break,
                    _ = tokio::time::sleep(self.interval) => self.logs.flush_to_disk(&self.dir),
                }
            }
            self.logs.flush_to_disk(&self.dir);
            Ok(())
        })
    }
}
