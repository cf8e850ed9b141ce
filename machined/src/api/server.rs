//! `apid`: the API server as a supervised service. It terminates TLS itself, with whatever
//! settings the machine holds at each new connection, so applying a config switches the
//! node from maintenance TLS to mutual TLS without a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cairn_api::machine::machine_service_server::MachineServiceServer;
use futures_util::future::BoxFuture;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::handlers::MachineApi;
use crate::machine::Machine;
use crate::supervisor::{Service, ServiceContext};

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The API server.
pub struct Apid {
    machine: Arc<Machine>,
    listen: SocketAddr,
}

impl Apid {
    /// The API server of `machine`, on `listen`.
    pub fn new(machine: Arc<Machine>, listen: SocketAddr) -> Self {
        Apid { machine, listen }
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
            let (tx, rx) = mpsc::channel::<Result<TlsStream<TcpStream>, std::io::Error>>(64);
            let acceptor =
                tokio::spawn(accept_loop(listener, self.machine.clone(), tx, ctx.clone()));
            ctx.log(format!("API listening on {} ({:?} mode)", self.listen, self.machine.mode()));
            tracing::info!("API listening on {}", self.listen);
            ctx.ready();
            let result = tonic::transport::Server::builder()
                .add_service(MachineServiceServer::new(MachineApi::new(self.machine.clone())))
                .serve_with_incoming_shutdown(ReceiverStream::new(rx), ctx.stop.cancelled())
                .await;
            acceptor.abort();
            result.context("serving the API")
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    machine: Arc<Machine>,
    connections: mpsc::Sender<Result<TlsStream<TcpStream>, std::io::Error>>,
    ctx: ServiceContext,
) {
    let tls = machine.tls();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                ctx.log(format!("accept: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
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
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = connections.send(Ok(stream)).await;
                }
                Ok(Err(e)) => ctx.log(format!("TLS handshake with {peer} failed: {e}")),
                Err(_) => ctx.log(format!("TLS handshake with {peer} timed out")),
            }
        });
    }
}
