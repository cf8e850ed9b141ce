//! The limits on API connections: how many at once (in all, and from one network), how long
//! one may go without a request, and how long one outlives the client CA it was authenticated
//! under.
//!
//! A connection is idle when it has no request open and has started none for a while. Only
//! the client's requests count: bytes on the wire do not, since the server's own HTTP/2
//! keepalive pings (and their answers) would keep a silent stranger's connection for ever.
//!
//! Certificates are checked only at the handshake, so a connection made under an old CA
//! would keep its rights after the operator replaced that CA; [`Connection`] ends it once the
//! CA in force is no longer the one it started under (after a short grace, so the reply to the
//! apply that changed it still goes out).

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_api::bootstrap;

use crate::api::handshakes::{HandshakePlace, Handshakes};
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
/// Connections open at once from one network (a /24 or a /64).
pub const MAX_CONNECTIONS_PER_NETWORK: usize = 64;
/// Handshakes under way at once: a connection that has not authenticated yet (a client
/// without a certificate, or one that sends nothing) holds one of these, not a place among
/// the authenticated, so idle strangers cannot crowd out admins. When all are taken, the
/// oldest is dropped for the newcomer.
pub const MAX_HANDSHAKES: usize = 256;
/// Handshakes under way at once from one network.
pub const MAX_HANDSHAKES_PER_NETWORK: usize = 16;
/// A connection with no request open is closed this long after its last one ended.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// A connection that has made no request yet is closed this long after its handshake: a
/// client connects to call, so a silent one only holds a place.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection lives on after the CA it was made under was replaced.
pub const CA_CHANGE_GRACE: Duration = Duration::from_secs(2);

/// Hands out places for connections and for handshakes, and counts the connections closed.
#[derive(Clone)]
pub struct ConnectionLimits {
    connections: Pool,
    handshakes: Handshakes,
    closed: Arc<AtomicUsize>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            connections: Pool::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_NETWORK, "connections"),
            handshakes: Handshakes::new(MAX_HANDSHAKES, MAX_HANDSHAKES_PER_NETWORK),
            closed: Arc::default(),
        }
    }
}

impl ConnectionLimits {
    /// Places for a new connection from `address`: one for its life, and one to give back
    /// when its handshake ends; or why there are none.
    pub fn admit(&self, address: IpAddr) -> Result<(ConnectionPlace, HandshakePlace), String> {
        let handshake = self.handshakes.take(address)?;
        let place = ConnectionPlace {
            _place: self.connections.take(address)?,
            closed: self.closed.clone(),
        };
        Ok((place, handshake))
    }

    /// Connections closed since the last call.
    pub fn take_closed(&self) -> usize {
        self.closed.swap(0, Ordering::Relaxed)
    }
}

/// A connection's place; given back, and counted as closed, when dropped.
pub struct ConnectionPlace {
    _place: Place,
    closed: Arc<AtomicUsize>,
}

impl Drop for ConnectionPlace {
    fn drop(&mut self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The requests of one connection, which keep it from being idle.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<ActivityState>,
}

#[derive(Debug)]
struct ActivityState {
    open: usize,
    requested: bool,
    since: Instant,
}

/// An open request; ends when dropped (with the response's last byte).
pub struct OpenRequest(Arc<Activity>);

impl Activity {
    fn new() -> Arc<Self> {
        let state = ActivityState { open: 0, requested: false, since: Instant::now() };
        Arc::new(Activity { state: Mutex::new(state) })
    }

    /// Marks a request open until the returned guard is dropped.
    pub fn open(self: &Arc<Self>) -> OpenRequest {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.open += 1;
        state.requested = true;
        OpenRequest(self.clone())
    }

    /// When the connection becomes idle, as things stand; `None` while a request is open.
    fn idle_at(&self) -> Option<Instant> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let timeout = if state.requested { IDLE_TIMEOUT } else { FIRST_REQUEST_TIMEOUT };
        (state.open == 0).then_some(state.since + timeout)
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        state.open -= 1;
        state.since = Instant::now();
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
    /// The connection's requests.
    pub activity: Arc<Activity>,
}

/// An API connection under the limits above.
pub struct Connection {
    stream: TlsStream<TcpStream>,
    channel_binding: Option<[u8; bootstrap::BINDING_LEN]>,
    _place: ConnectionPlace,
    activity: Arc<Activity>,
    idle: Pin<Box<Sleep>>,
    ca_replaced: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Connection {
    /// Wraps an authenticated stream; `config` is the machine's running config, whose CA
    /// at this moment is the one the connection was authenticated under.
    pub fn new(
        stream: TlsStream<TcpStream>,
        place: ConnectionPlace,
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
            activity: Activity::new(),
            idle: Box::pin(tokio::time::sleep(FIRST_REQUEST_TIMEOUT)),
            ca_replaced: Box::pin(ca_replaced(config)),
        }
    }

    /// An error once the connection must end.
    fn check(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.ca_replaced.as_mut().poll(cx).is_ready() {
            return Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the API's CA changed since this connection was authenticated",
            ));
        }
        // The timer only says when to look again: requests may have come and gone since.
        while self.idle.as_mut().poll(cx).is_ready() {
            match self.activity.idle_at() {
                Some(at) if at <= Instant::now() => {
                    return Some(io::Error::new(io::ErrorKind::TimedOut, "idle connection closed"))
                }
                Some(at) => self.idle.as_mut().reset(at),
                None => self.idle.as_mut().reset(Instant::now() + IDLE_TIMEOUT),
            }
        }
        None
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
        Pin::new(&mut self.stream).poll_read(cx, buf)
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
        Pin::new(&mut self.stream).poll_write(cx, data)
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
        ConnectionInfo {
            tls: self.stream.connect_info(),
            channel_binding: self.channel_binding,
            activity: self.activity.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limits_and_frees_places() {
        let limits = ConnectionLimits::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.1.2".parse().unwrap();
        // Handshakes from one network run out first; done ones give their place back.
        let handshaking: Vec<_> =
            (0..MAX_HANDSHAKES_PER_NETWORK).map(|_| limits.admit(a).unwrap()).collect();
        assert_eq!(limits.admit(a).err().unwrap(), "too many handshakes from this network");
        let mut established: Vec<_> = handshaking.into_iter().map(|(place, _)| place).collect();
        while established.len() < MAX_CONNECTIONS_PER_NETWORK {
            established.push(limits.admit(a).unwrap().0);
        }
        assert_eq!(limits.admit(a).err().unwrap(), "too many connections from this network");
        let other = limits.admit(b).unwrap();
        drop(established);
        assert!(limits.admit(a).is_ok());
        drop(other);
        assert!(limits.connections.is_empty() && limits.handshakes.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn only_requests_keep_a_connection_from_idling() {
        let activity = Activity::new();
        let started = Instant::now();
        assert_eq!(activity.idle_at(), Some(started + FIRST_REQUEST_TIMEOUT));
        let request = activity.open();
        assert_eq!(activity.idle_at(), None, "a connection with a request open is not idle");
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(activity.idle_at(), None);
        drop(request);
        assert_eq!(activity.idle_at(), Some(started + Duration::from_secs(3600) + IDLE_TIMEOUT));
    }
}
