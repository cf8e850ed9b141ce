//! `apid`: the API server as a supervised service. It terminates TLS itself, with whatever
//! settings the node's configuration holds at each new connection, so applying a config switches the
//! node from maintenance TLS to mutual TLS without a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cairn_api::machine::machine_service_server::MachineServiceServer;
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http;
use tower::util::MapResponseLayer;

use crate::api::admission::{Admission, AdmissionLayer, LARGE_MESSAGE_BYTES};
use crate::api::connection::{Connection, ConnectionLimits};
use crate::api::handlers::MachineApi;
use crate::node::config::Configuration;
use crate::node::Node;
use crate::service::{Service, ServiceContext};

/// The header that carries an error reply's message.
const GRPC_MESSAGE: &str = "grpc-message";
/// A client that has not finished its TLS handshake by then is dropped: a handshake takes
/// milliseconds, and seconds over the worst links a node is managed over.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one line a second about refused connections and failed handshakes.
const HANDSHAKE_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Requests in flight on one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 32;
/// The HTTP/2 flow-control windows: what a client may send before the server reads it. A
/// request refused by admission is reset, unread; one admitted is read as its budget allows.
/// 256 KiB per stream keeps an upgrade at 5 MB/s over a 50 ms round trip.
const STREAM_WINDOW_BYTES: u32 = 256 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 512 * 1024;
/// Request headers: gRPC's are a few hundred bytes.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// How often apid looks whether request memory should be given back to the system.
const MEMORY_RETURN_INTERVAL: Duration = Duration::from_secs(5);
/// Request bytes lent since the last look that make giving memory back worth its cost...
const MEMORY_RETURN_AFTER_BYTES: usize = 4 << 20;
/// ...or connections closed (each held TLS and HTTP/2 buffers of some tens of KiB).
const MEMORY_RETURN_AFTER_CONNECTIONS: usize = 100;
/// HTTP/2 pings find dead peers.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long open streams may drain when apid stops.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// The longest error message sent (percent-encoded bytes): clients accept 16 KiB of
/// headers, and above 64 KiB hyper closes the whole connection.
const MAX_STATUS_MESSAGE_BYTES: usize = 4096;

/// The API server.
pub struct Apid {
    node: Arc<Node>,
    listen: SocketAddr,
}

impl Apid {
    /// The API server of `node`, on `listen`.
    pub fn new(node: Arc<Node>, listen: SocketAddr) -> Self {
        Apid { node, listen }
    }
}

impl Service for Apid {
    fn id(&self) -> &'static str {
        "apid"
    }

    fn stoppable(&self) -> bool {
        false
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let listener = TcpListener::bind(self.listen)
                .await
                .with_context(|| format!("binding {}", self.listen))?;
            let (tx, rx) = mpsc::channel::<Result<Connection, std::io::Error>>(64);
            let configuration = self.node.configuration().clone();
            let admission = Admission::new(Arc::new(move || configuration.mode()));
            let limits = ConnectionLimits::default();
            let returner = tokio::spawn(return_memory(admission.clone(), limits.clone()));
            // The accept loop owns the listener and ends at the stop signal, so a restarted
            // apid can bind the port again even while old streams drain.
            let acceptor = tokio::spawn(accept_loop(
                listener,
                self.node.configuration().clone(),
                limits,
                tx,
                ctx.clone(),
            ));
            ctx.log(format!(
                "API listening on {} ({:?} mode)",
                self.listen,
                self.node.configuration().mode()
            ));
            tracing::info!("API listening on {}", self.listen);
            ctx.ready();
            // Admission bounds each call's messages; tonic's own limit is the largest of them.
            let service = MachineServiceServer::new(MachineApi::new(self.node.clone()))
                .max_decoding_message_size(LARGE_MESSAGE_BYTES);
            let serve = tonic::transport::Server::builder()
                .layer(MapResponseLayer::new(clip_status_message))
                .layer(AdmissionLayer(admission))
                .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
                .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize)
                .initial_stream_window_size(STREAM_WINDOW_BYTES)
                .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
                .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
                .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
                .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
                .add_service(service)
                .serve_with_incoming_shutdown(ReceiverStream::new(rx), ctx.stop.cancelled());
            // Graceful shutdown waits for open streams (`logs -f` never ends by itself):
            // give them a moment, then drop them.
            let stop = ctx.stop.clone();
            let result = tokio::select! {
                result = serve => result.context("serving the API"),
                _ = async { stop.cancelled().await; tokio::time::sleep(STOP_GRACE).await } => Ok(()),
            };
            acceptor.abort();
            returner.abort();
            result
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    configuration: Arc<Configuration>,
    limits: ConnectionLimits,
    connections: mpsc::Sender<Result<Connection, std::io::Error>>,
    ctx: ServiceContext,
) {
    let tls = configuration.tls();
    let handshake_failures = RateLimitedLog::new(HANDSHAKE_LOG_INTERVAL);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = ctx.stop.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, typically: wait for some to be freed.
                ctx.log(format!("accept: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (place, handshake) = match limits.admit(peer.ip()) {
            Ok(places) => places,
            Err(why) => {
                handshake_failures.log(&ctx, || format!("refused {peer}: {why}"));
                continue;
            }
        };
        // Small request/response exchanges: without this, Nagle and delayed ACKs add ~40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            ctx.log(format!("TCP_NODELAY for {peer}: {e}"));
        }
        let acceptor = TlsAcceptor::from(tls.borrow().clone());
        let connections = connections.clone();
        let ctx = ctx.clone();
        let config = configuration.watch_config();
        let handshake_failures = handshake_failures.clone();
        tokio::spawn(async move {
            let handshake_result = tokio::select! {
                result = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => result,
                _ = handshake.evicted() => {
                    handshake_failures.log(&ctx, || {
                        format!("dropped the handshake with {peer}: newer ones needed its place")
                    });
                    return;
                }
            };
            drop(handshake);
            match handshake_result {
                Ok(Ok(stream)) => {
                    let _ = connections.send(Ok(Connection::new(stream, place, config))).await;
                }
                Ok(Err(e)) => handshake_failures
                    .log(&ctx, || format!("TLS handshake with {peer} failed: {e}")),
                Err(_) => {
                    handshake_failures.log(&ctx, || format!("TLS handshake with {peer} timed out"))
                }
            }
        });
    }
}

/// Gives the memory of finished requests and connections back to the system after a burst
/// of them. The allocator keeps freed memory for reuse, so a node that took a flood would
/// otherwise stay at its peak for good; trimming costs a walk of the heap, so it runs only
/// when enough was freed to matter.
async fn return_memory(admission: Arc<Admission>, limits: ConnectionLimits) {
    let (mut lent, mut closed) = (0, 0);
    loop {
        tokio::time::sleep(MEMORY_RETURN_INTERVAL).await;
        lent += admission.take_lent();
        closed += limits.take_closed();
        // While requests still hold bytes, their memory is not free yet: look again later.
        let burst = lent >= MEMORY_RETURN_AFTER_BYTES || closed >= MEMORY_RETURN_AFTER_CONNECTIONS;
        if burst && admission.held() == 0 {
            (lent, closed) = (0, 0);
            let _ = tokio::task::spawn_blocking(crate::system::memory::return_free_memory).await;
        }
    }
}

/// Cuts an error reply's message (`grpc-message`, percent-encoded) to
/// [`MAX_STATUS_MESSAGE_BYTES`]: messages quote what the client sent (a service name, a
/// path), and one too long for the client's header limit would lose the answer, or every
/// call on the connection.
fn clip_status_message<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let Some(message) = headers.get(GRPC_MESSAGE) else { return response };
    let bytes = message.as_bytes();
    if bytes.len() <= MAX_STATUS_MESSAGE_BYTES {
        return response;
    }
    let cut = char_boundary_before(bytes, MAX_STATUS_MESSAGE_BYTES);
    let mut clipped = bytes[..cut].to_vec();
    clipped.extend_from_slice(
        format!("%E2%80%A6 ({} more bytes left out)", bytes.len() - cut).as_bytes(),
    );
    if let Ok(value) = http::HeaderValue::from_bytes(&clipped) {
        headers.insert(GRPC_MESSAGE, value);
    }
    response
}

/// The longest prefix of the percent-encoded UTF-8 `message`, at most `max` bytes, that
/// splits neither a `%XX` escape nor the escapes of one multi-byte character.
fn char_boundary_before(message: &[u8], max: usize) -> usize {
    let escaped_byte = |at: usize| {
        let hex = message.get(at + 1..at + 3)?;
        u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    let mut at = 0;
    loop {
        let len = match message.get(at) {
            None => return at,
            Some(b'%') => match escaped_byte(at) {
                // A lead byte says how many bytes its character has, each one escape.
                Some(lead) => 3 * (lead.leading_ones() as usize).max(1),
                None => 1,
            },
            Some(_) => 1,
        };
        if at + len > max {
            return at;
        }
        at += len;
    }
}

/// Logs a kind of line at most once per interval, saying how many were left out: a flood
/// of bad handshakes must not flood the log (or the disk it is flushed to).
#[derive(Clone)]
struct RateLimitedLog {
    interval: Duration,
    state: Arc<std::sync::Mutex<(Option<tokio::time::Instant>, u64)>>,
}

impl RateLimitedLog {
    fn new(interval: Duration) -> Self {
        RateLimitedLog { interval, state: Arc::default() }
    }

    fn log(&self, ctx: &ServiceContext, line: impl FnOnce() -> String) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, suppressed) = &mut *state;
        let now = tokio::time::Instant::now();
        if last.is_some_and(|last| now.duration_since(last) < self.interval) {
            *suppressed += 1;
            return;
        }
        *last = Some(now);
        let line = line();
        match std::mem::take(suppressed) {
            0 => ctx.log(line),
            n => ctx.log(format!("{line} ({n} similar lines left out)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_status_messages_are_cut_between_escapes() {
        let long = format!("{}%2F{}", "a".repeat(MAX_STATUS_MESSAGE_BYTES - 2), "b".repeat(9000));
        let response = http::Response::builder().header(GRPC_MESSAGE, &long).body(()).unwrap();
        let clipped = clip_status_message(response);
        let message = clipped.headers()[GRPC_MESSAGE].to_str().unwrap();
        assert!(message.len() < MAX_STATUS_MESSAGE_BYTES + 64, "{}", message.len());
        assert!(message.ends_with("a%E2%80%A6 (9003 more bytes left out)"), "{message:.80}");
        // "é" is %C3%A9: its two escapes stay together.
        let accent = format!("{}%C3%A9", "a".repeat(MAX_STATUS_MESSAGE_BYTES - 4));
        assert_eq!(
            char_boundary_before(accent.as_bytes(), MAX_STATUS_MESSAGE_BYTES),
            MAX_STATUS_MESSAGE_BYTES - 4
        );
        assert_eq!(char_boundary_before(b"ab%C3%A9", 8), 8);
        let short = http::Response::builder().header(GRPC_MESSAGE, "no").body(()).unwrap();
        assert_eq!(clip_status_message(short).headers()[GRPC_MESSAGE], "no");
    }
}
