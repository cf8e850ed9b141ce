//! `logflush`: appends the in-memory logs to `/var/log` now and then, rarely, because SD
//! cards wear. Reboot and shutdown flush too.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::machine::Machine;
use crate::service::{Service, ServiceContext};

/// Flushes logs every `interval`.
pub struct LogFlush {
    machine: Arc<Machine>,
    interval: Duration,
}

impl LogFlush {
    /// A flusher for `machine`'s logs.
    pub fn new(machine: Arc<Machine>, interval: Duration) -> Self {
        LogFlush { machine, interval }
    }
}

impl Service for LogFlush {
    fn id(&self) -> &'static str {
        "logflush"
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            ctx.ready();
            loop {
                tokio::select! {
                    _ = ctx.stop.cancelled() => break,
                    _ = tokio::time::sleep(self.interval) => self.machine.flush_logs(),
                }
            }
            self.machine.flush_logs();
            Ok(())
        })
    }
}
