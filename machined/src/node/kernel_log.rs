//! The kernel log as `Dmesg` serves it: one reader of `/dev/kmsg` for every caller, keeping
//! the newest records in a ring that calls copy and follow. A reader per call would cost a
//! file descriptor per stream, and a client could hold as many streams as it liked.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::inspect::kmsg::{KernelRecord, Kmsg};
use crate::logs::ring::Ring;

/// Records kept: more than a boot logs (the kernel itself keeps 128–256 KiB of text, about
/// two thousand records, with Debian's kernels).
const KEPT_RECORDS: usize = 4096;
/// How long the reader waits before reading again after an error.
const RETRY: Duration = Duration::from_secs(1);

/// The kernel log, read once for all callers.
pub struct KernelLog {
    ring: Ring<KernelRecord>,
}

impl KernelLog {
    /// Opens `/dev/kmsg`, reads what the kernel kept, and follows it from then on.
    pub async fn start() -> io::Result<Arc<KernelLog>> {
        let mut kmsg = Kmsg::open()?;
        let log = Arc::new(KernelLog { ring: Ring::new(KEPT_RECORDS) });
        // The backlog is in the ring before the first caller reads it.
        while let Some(record) = kmsg.next(false).await? {
            log.ring.push(record);
        }
        let reader = log.clone();
        tokio::spawn(async move {
            loop {
                match kmsg.next(true).await {
                    Ok(Some(record)) => reader.ring.push(record),
                    Ok(None) => tokio::time::sleep(RETRY).await,
                    Err(e) => {
                        tracing::warn!("reading /dev/kmsg: {e}");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        });
        Ok(log)
    }

    /// The records kept.
    pub fn ring(&self) -> &Ring<KernelRecord> {
        &self.ring
    }
}
