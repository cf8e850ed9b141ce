//! The `Upgrade` call's transport: the client's stream of bundle bytes read as the source of
//! the upgrade use-case ([`Node::upgrade`]), and its steps streamed back as progress messages.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use cairn_api::machine::{self as pb, upgrade_request::Part};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::node::upgrade::{UpgradeOptions, UpgradeStep};
use crate::node::Node;
use crate::update::Phase;

/// Chunks in flight between the client's stream and the updater: enough to keep both busy,
/// few enough that a slow disk slows the client down rather than filling memory.
const CHUNKS_IN_FLIGHT: usize = 8;

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

impl From<UpgradeStep> for pb::UpgradeProgress {
    fn from(step: UpgradeStep) -> pb::UpgradeProgress {
        let done = |phase: pb::UpgradePhase, chosen: crate::update::Chosen| pb::UpgradeProgress {
            phase: phase as i32,
            done_bytes: 0,
            total_bytes: 0,
            version: chosen.version,
            slot: chosen.slot.to_string(),
        };
        match step {
            UpgradeStep::Progress(progress) => pb::UpgradeProgress {
                phase: match progress.phase {
                    Phase::Receiving => pb::UpgradePhase::Receiving,
                    Phase::Writing => pb::UpgradePhase::Writing,
                } as i32,
                done_bytes: progress.done,
                total_bytes: progress.total,
                version: progress.version,
                slot: progress.slot.to_string(),
            },
            UpgradeStep::Staged(chosen) => done(pb::UpgradePhase::Staged, chosen),
            UpgradeStep::Rebooting(chosen) => done(pb::UpgradePhase::Rebooting, chosen),
        }
    }
}

/// Runs the upgrade with the bundle `incoming` carries (after its options message) and
/// reports on `tx`.
pub async fn run(
    node: Arc<Node>,
    incoming: Streaming<pb::UpgradeRequest>,
    stall: Duration,
    options: pb::UpgradeOptions,
    tx: mpsc::Sender<Result<pb::UpgradeProgress, Status>>,
) {
    let (chunks_tx, chunks) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let forwarding = tokio::spawn(forward(incoming, stall, chunks_tx));
    let source = ChunkReader { chunks, current: Vec::new(), offset: 0 };
    let options = UpgradeOptions { force: options.force, stage: options.stage };
    node.upgrade(source, options, tx).await;
    forwarding.abort();
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
