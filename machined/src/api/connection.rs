//! The limits on API connections: how many at once (in all, and from one address), how long
//! one may stay silent, and how long one outlives the client CA it was authenticated under.
//!
//! Certificates are checked only at the handshake, so a connection made under an old CA
//! would keep its rights after the operator replaced that CA; [`Connection`] ends it once the
//! CA in force is no longer the one it started under (after a short grace, so the reply to the
//! apply that changed it still goes out).

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_api::bootstrap;

use crate::api::places::{Place, Pool};
use cairn_api::config::MachineConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// Connections open at once, handshakes included. Each costs two file descriptors at most
/// and some tens of KiB; PID 1's descriptor limit is far above this.
pub const MAX_CONNECTIONS: usize = 2048;
/// Connections open at once from one IP address.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Handshakes under way at once: a connection that has not authenticated yet (a client
/// without a certificate, or one that sends nothing) holds one of these, not a place among
/// the authenticated, so idle strangers cannot crowd out admins.
pub const MAX_HANDSHAKES: usize = 256;
/// Handshakes under way at once from one IP address.
pub const MAX_HANDSHAKES_PER_ADDRESS: usize = 16;
/// A connection that moves no byte for this long is closed (HTTP/2 keepalive pings, which
/// the server sends more often, keep a live client's streams open).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long a connection lives on after the CA it was made under was replaced.
pub const CA_CHANGE_GRACE: Duration = Duration::from_secs(2);

/// Hands out places for connections and for handshakes.
#[derive(Clone)]
pub struct ConnectionLimits {
    connections: Pool,
    handshakes: Pool,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            connections: Pool::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS, "connections"),
            handshakes: Pool::new(MAX_HANDSHAKES, MAX_HANDSHAKES_PER_ADDRESS, "handshakes"),
        }
    }
}

impl ConnectionLimits {
    /// Places for a new connection from `address`: one for its life, and one to give back
    /// when its handshake ends; or why there are none.
    pub fn admit(&self, address: IpAddr) -> Result<(Place, Place), String> {
        let handshake = self.handshakes.take(address)?;
        Ok((self.connections.take(address)?, handshake))
    }
}

/// What handlers learn about the connection a request came on.
#[derive(Clone)]
pub struct ConnectionInfo {
    /// The peer's address and verified certificates.
    pub tls: TlsConnectInfo<TcpConnectInfo>,
    /// Keying material exported from this TLS session, which bootstrap-token proofs are
    /// bound to (see `cairn_api::bootstrap`).
    pub channel_binding: Option<[u8; bootstrap::BINDING_LEN]>,
}

/// An API connection under the limits above.
pub struct Connection {
    stream: TlsStream<TcpStream>,
    channel_binding: Option<[u8; bootstrap::BINDING_LEN]>,
    _place: Place,
    idle: Pin<Box<Sleep>>,
    ca_replaced: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Connection {
    /// Wraps an authenticated stream; `config` is the machine's running config, whose CA
    /// at this moment is the one the connection was authenticated under.
    pub fn new(
        stream: TlsStream<TcpStream>,
        place: Place,
        config: watch::Receiver<Option<Arc<MachineConfig>>>,
    ) -> Self {
        let channel_binding = stream
            .get_ref()
            .1
            .export_keying_material([0; bootstrap::BINDING_LEN], bootstrap::EXPORTER_LABEL, None)
            .ok();
        Connection {
            stream,
            channel_binding,
            _place: place,
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            ca_replaced: Box::pin(ca_replaced(config)),
        }
    }

    /// An error once the connection must end; also resets the idle timer on activity.
    fn check(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.ca_replaced.as_mut().poll(cx).is_ready() {
            return Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the API's CA changed since this connection was authenticated",
            ));
        }
        if self.idle.as_mut().poll(cx).is_ready() {
            return Some(io::Error::new(io::ErrorKind::TimedOut, "idle connection closed"));
        }
        None
    }

    fn active(&mut self) {
        self.idle.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
    }
}

/// Resolves `CA_CHANGE_GRACE` after the client CA differs from the one in force when called.
async fn ca_replaced(mut config: watch::Receiver<Option<Arc<MachineConfig>>>) {
    let ca = |config: &Option<Arc<MachineConfig>>| {
        config.as_ref().map(|c| c.machine.client_ca.crt.clone())
    };
    let original = ca(&config.borrow_and_update());
    loop {
        if config.changed().await.is_err() {
            return std::future::pending().await;
        }
        if ca(&config.borrow_and_update()) != original {
            tokio::time::sleep(CA_CHANGE_GRACE).await;
            return;
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(error) = self.check(cx) {
            return Poll::Ready(Err(error));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.active();
        }
        result
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.check(cx) {
            return Poll::Ready(Err(error));
        }
        let result = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.active();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo { tls: self.stream.connect_info(), channel_binding: self.channel_binding }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limits_and_frees_places() {
        let limits = ConnectionLimits::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        // Handshakes from one address run out first; done ones give their place back.
        let handshaking: Vec<_> =
            (0..MAX_HANDSHAKES_PER_ADDRESS).map(|_| limits.admit(a).unwrap()).collect();
        assert_eq!(limits.admit(a).err().unwrap(), "too many handshakes from this address");
        let mut established: Vec<_> = handshaking.into_iter().map(|(place, _)| place).collect();
        while established.len() < MAX_CONNECTIONS_PER_ADDRESS {
            established.push(limits.admit(a).unwrap().0);
        }
        assert_eq!(limits.admit(a).err().unwrap(), "too many connections from this address");
        let other = limits.admit(b).unwrap();
        drop(established);
        assert!(limits.admit(a).is_ok());
        drop(other);
        assert!(limits.connections.is_empty() && limits.handshakes.is_empty());
    }
}
