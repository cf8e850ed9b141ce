//! The `Upgrade` call: the client's stream of bundle bytes fed to the (blocking) updater,
//! and its progress streamed back, phase by phase.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use cairn_api::machine::{self as pb, upgrade_request::Part};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::machine::{Machine, PowerAction};
use crate::update::{Chosen, Phase, Progress, UpdateError};

/// Chunks in flight between the client's stream and the updater: enough to keep both busy,
/// few enough that a slow disk slows the client down rather than filling memory.
const CHUNKS_IN_FLIGHT: usize = 8;

/// The gRPC status of an update error.
pub fn status(e: UpdateError) -> Status {
    match e {
        UpdateError::Bundle(_) => Status::invalid_argument(e.to_string()),
        UpdateError::Unavailable(_) => Status::failed_precondition(e.to_string()),
        UpdateError::Io(_) => Status::internal(e.to_string()),
    }
}

/// The error of an upgrade whose client stopped sending.
pub fn stalled() -> Status {
    Status::deadline_exceeded(
        "the upgrade stream stalled: the client sent nothing for too long, and an update in progress holds the update lock",
    )
}

/// Reads the bytes of a client's stream, on a blocking thread.
struct ChunkReader {
    chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    offset: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.offset == self.current.len() {
            match self.chunks.blocking_recv() {
                Some(chunk) => (self.current, self.offset) = (chunk?, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.offset);
        buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

/// Passes the chunks of `incoming` on until it ends; a broken stream, or one with no
/// message for `stall`, is a read error.
async fn forward(
    mut incoming: Streaming<pb::UpgradeRequest>,
    stall: Duration,
    chunks: mpsc::Sender<io::Result<Vec<u8>>>,
) {
    loop {
        let Ok(message) = tokio::time::timeout(stall, incoming.message()).await else {
            let stalled = io::Error::new(io::ErrorKind::TimedOut, stalled().message().to_string());
            let _ = chunks.send(Err(stalled)).await;
            return;
        };
        let next = match message {
            Ok(None) => return,
            Ok(Some(pb::UpgradeRequest { part: Some(Part::Chunk(bytes)) })) => Ok(bytes),
            Ok(Some(_)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "only the first message may carry options; the others carry bundle bytes",
            )),
            Err(status) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the bundle stream broke off: {}", status.message()),
            )),
        };
        let failed = next.is_err();
        if chunks.send(next).await.is_err() || failed {
            return;
        }
    }
}

/// The progress message of `progress`.
fn message(progress: &Progress) -> pb::UpgradeProgress {
    let phase = match progress.phase {
        Phase::Receiving => pb::UpgradePhase::Receiving,
        Phase::Writing => pb::UpgradePhase::Writing,
    };
    pb::UpgradeProgress {
        phase: phase as i32,
        done_bytes: progress.done,
        total_bytes: progress.total,
        version: progress.version.clone(),
        slot: progress.slot.to_string(),
    }
}

/// Installs the bundle `incoming` carries (after its options message) and reports on `tx`;
/// reboots into it unless `options.stage`.
pub async fn run(
    machine: Arc<Machine>,
    incoming: Streaming<pb::UpgradeRequest>,
    stall: Duration,
    options: pb::UpgradeOptions,
    tx: mpsc::Sender<Result<pb::UpgradeProgress, Status>>,
) {
    let (chunks_tx, chunks) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let forwarding = tokio::spawn(forward(incoming, stall, chunks_tx));
    let keys = match machine.config(false) {
        Ok(config) => config.map(|c| c.machine.update.trusted_keys.clone()).unwrap_or_default(),
        Err(e) => {
            let _ = tx.send(Err(Status::internal(e.to_string()))).await;
            return;
        }
    };
    let progress_tx = tx.clone();
    let updater = machine.updater().clone();
    let installed = tokio::task::spawn_blocking(move || {
        let reader = ChunkReader { chunks, current: Vec::new(), offset: 0 };
        // One message per phase change and per percent: progress, not a flood.
        let mut last: Option<(i32, u64)> = None;
        let mut report = |progress: Progress| {
            let message = message(&progress);
            let percent = message.done_bytes * 100 / message.total_bytes.max(1);
            if last != Some((message.phase, percent)) {
                last = Some((message.phase, percent));
                let _ = progress_tx.blocking_send(Ok(message));
            }
        };
        updater.install(reader, &keys, options.force, &mut report)
    })
    .await;
    forwarding.abort();
    let Chosen { slot, version } = match installed {
        Ok(Ok(chosen)) => chosen,
        Ok(Err(e)) => {
            tracing::warn!("upgrade: {e}");
            let _ = tx.send(Err(status(e))).await;
            return;
        }
        Err(e) => {
            let _ = tx.send(Err(Status::internal(format!("the updater failed: {e}")))).await;
            return;
        }
    };
    let done = |phase: pb::UpgradePhase| pb::UpgradeProgress {
        phase: phase as i32,
        done_bytes: 0,
        total_bytes: 0,
        version: version.clone(),
        slot: slot.to_string(),
    };
    let _ = tx.send(Ok(done(pb::UpgradePhase::Staged))).await;
    if !options.stage {
        let _ = tx.send(Ok(done(pb::UpgradePhase::Rebooting))).await;
        machine.power(PowerAction::Reboot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tonic_prost::ProstDecoder;

    /// A client stream that has sent nothing, and never will.
    fn silent_client() -> (mpsc::Sender<bytes::Bytes>, Streaming<pb::UpgradeRequest>) {
        let (tx, rx) = mpsc::channel::<bytes::Bytes>(1);
        let frames = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            |bytes| Ok::<_, Status>(http_body::Frame::data(bytes)),
        );
        let body = http_body_util::StreamBody::new(frames);
        let decoder = ProstDecoder::<pb::UpgradeRequest>::new(Default::default());
        (tx, Streaming::new_request(decoder, body, None, None))
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_sending_ends_the_upgrade() {
        let (_client, incoming) = silent_client();
        let (chunks_tx, mut chunks) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let forwarding = tokio::spawn(forward(incoming, Duration::from_secs(60), chunks_tx));
        let error = chunks.recv().await.expect("an error, not the end").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("the upgrade stream stalled"), "{error}");
        forwarding.await.unwrap();
    }
}
