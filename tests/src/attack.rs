//! The clients of the API security review's attacks, shared by the host-mode tests
//! (`tests/attacks.rs`) and the load bench: requests whose bodies never finish, connections
//! that never speak, kernel-log streams held open. Each attacker speaks from a source address
//! of its own: all of 127.0.0.0/8 is loopback on Linux, so binding one needs no setup, and
//! machined counts its limits per /24.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_api::machine::machine_service_client::MachineServiceClient;
use cairn_api::machine::DmesgRequest;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long TCP, TLS and HTTP/2 together may take to come up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A gRPC client of the node's API.
pub type Api = MachineServiceClient<Channel>;

/// The source address of host `host` in test network `network`: 127.`network`.0.`host`.
pub fn source(network: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, network, 0, host)
}

/// A TCP connection to `target` from `source`.
pub async fn open(source: Ipv4Addr, target: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))?
}

/// TLS over a connection from `source` (the serving certificate names 127.0.0.1).
async fn tls_from(
    source: Ipv4Addr,
    target: SocketAddr,
    tls: Arc<ClientConfig>,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = open(source, target).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::from(std::net::IpAddr::from(Ipv4Addr::LOCALHOST));
    TlsConnector::from(tls).connect(name, tcp).await
}

/// Opens a gRPC client to `target` from `source`: `ctl::connect::connect`'s shape, with the
/// socket bound first.
pub async fn connect_from(
    source: Ipv4Addr,
    target: SocketAddr,
    tls: Arc<ClientConfig>,
) -> anyhow::Result<Api> {
    let endpoint =
        Endpoint::from_shared(format!("http://{target}"))?.connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let tls = tls.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(tls_from(source, target, tls).await?)) }
        }))
        .await?;
    Ok(MachineServiceClient::new(channel))
}

type PartialBody =
    StreamBody<tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, io::Error>>>;

/// Requests whose bodies never finish, held open until dropped.
pub struct PartialBodies {
    /// Streams whose request the server took (it had not answered when they were counted).
    pub open: usize,
    /// Streams answered or reset before their body was whole.
    pub refused: Arc<AtomicUsize>,
    connections: Vec<JoinHandle<()>>,
    streams: Vec<JoinHandle<()>>,
    _senders: Vec<hyper::client::conn::http2::SendRequest<PartialBody>>,
    _bodies: Vec<mpsc::Sender<Result<Frame<Bytes>, io::Error>>>,
}

impl PartialBodies {
    /// Resolves when the server has closed every connection.
    pub async fn closed(&mut self) {
        for connection in &mut self.connections {
            let _ = connection.await;
        }
    }
}

impl Drop for PartialBodies {
    fn drop(&mut self) {
        self.connections.iter().chain(&self.streams).for_each(JoinHandle::abort);
    }
}

/// From `source`, `connections` HTTP/2 connections with `streams` requests each to `method`
/// (a path such as `/cairn.machine.v1alpha1.MachineService/ApplyConfiguration`), whose gRPC
/// message declares `declared` bytes and sends `sent` of them, then nothing more.
pub async fn partial_bodies(
    source: Ipv4Addr,
    target: SocketAddr,
    tls: Arc<ClientConfig>,
    (connections, streams): (usize, usize),
    method: &str,
    (declared, sent): (usize, usize),
) -> anyhow::Result<PartialBodies> {
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&(declared as u32).to_be_bytes());
    let first = Bytes::from([prefix, vec![0x0a; sent]].concat());
    let refused = Arc::new(AtomicUsize::new(0));
    let (mut connection_tasks, mut tasks, mut bodies, mut senders) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..connections {
        let io = TokioIo::new(tls_from(source, target, tls.clone()).await?);
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        connection_tasks.push(tokio::spawn(async move {
            let _ = connection.await;
        }));
        for _ in 0..streams {
            let (body_tx, body_rx) = mpsc::channel(1);
            body_tx.send(Ok(Frame::data(first.clone()))).await?;
            let body: PartialBody =
                StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(body_rx));
            let request = hyper::Request::post(format!("http://127.0.0.1{method}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(body)?;
            let mut sender = sender.clone();
            let refused = refused.clone();
            tasks.push(tokio::spawn(async move {
                // Any answer before the body is whole is a refusal: the server read no further.
                if sender.ready().await.is_ok() {
                    let _ = sender.send_request(request).await;
                }
                refused.fetch_add(1, Ordering::Relaxed);
            }));
            bodies.push(body_tx);
        }
        // Held, or the client would close a connection that has no request.
        senders.push(sender);
    }
    // Give the server a moment to take (or refuse) what was sent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let open = connections * streams - refused.load(Ordering::Relaxed);
    Ok(PartialBodies {
        open,
        refused,
        connections: connection_tasks,
        streams: tasks,
        _senders: senders,
        _bodies: bodies,
    })
}

/// Counts of [`silent_connections`].
#[derive(Debug, Default)]
pub struct SilentCounts {
    /// Connections opened.
    pub opened: AtomicUsize,
    /// Connections the server closed (or refused).
    pub closed: AtomicUsize,
}

/// `count` TCP connections from `source` that never send a byte, each opened again as soon as
/// the server closes it, until `stop` changes or is dropped.
pub fn silent_connections(
    source: Ipv4Addr,
    target: SocketAddr,
    count: usize,
    counts: Arc<SilentCounts>,
    stop: watch::Receiver<()>,
) -> Vec<JoinHandle<()>> {
    (0..count)
        .map(|_| {
            let (counts, mut stop) = (counts.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let held = async {
                        let mut tcp = open(source, target).await?;
                        counts.opened.fetch_add(1, Ordering::Relaxed);
                        let mut byte = [0u8; 1];
                        // Ends when the server closes the connection.
                        let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut byte).await;
                        io::Result::Ok(())
                    };
                    tokio::select! {
                        _ = held => {}
                        _ = stop.changed() => return,
                    }
                    counts.closed.fetch_add(1, Ordering::Relaxed);
                    // A closed connection comes straight back; a refused connect backs off.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect()
}

/// Kernel-log streams held open from one source.
pub struct KernelLogStreams {
    /// Streams the server answered with records.
    pub open: usize,
    /// Refusals, by message.
    pub refusals: Vec<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for KernelLogStreams {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// `count` `Dmesg --follow` streams from `source`, over connections of 16 streams each.
pub async fn kernel_log_streams(
    source: Ipv4Addr,
    target: SocketAddr,
    tls: Arc<ClientConfig>,
    count: usize,
) -> anyhow::Result<KernelLogStreams> {
    let mut streams = KernelLogStreams { open: 0, refusals: Vec::new(), tasks: Vec::new() };
    let mut api = None;
    for i in 0..count {
        if i % 16 == 0 {
            api = Some(connect_from(source, target, tls.clone()).await?);
        }
        let mut api = api.clone().expect("connected above");
        let request = DmesgRequest { follow: true, tail: 1 };
        match api.dmesg(request).await {
            Ok(response) => {
                streams.open += 1;
                let mut stream = response.into_inner();
                streams.tasks.push(tokio::spawn(async move {
                    while let Ok(Some(_)) = stream.message().await {}
                }));
            }
            Err(status) => streams.refusals.push(status.message().to_string()),
        }
    }
    Ok(streams)
}
