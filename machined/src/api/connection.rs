//! The limits on API connections: how many at once (in all, and from one address), how long
//! one may stay silent, and how long one outlives the client CA it was authenticated under.
//!
//! Certificates are checked only at the handshake, so a connection made under an old CA
//! would keep its rights after the operator replaced that CA; [`Connection`] ends it once the
//! CA in force is no longer the one it started under (after a short grace, so the reply to the
//! apply that changed it still goes out).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_api::config::MachineConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

/// Connections open at once, handshakes included.
pub const MAX_CONNECTIONS: usize = 512;
/// Connections open at once from one IP address.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// A connection that moves no byte for this long is closed (HTTP/2 keepalive pings, which
/// the server sends more often, keep a live client's streams open).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long a connection lives on after the CA it was made under was replaced.
pub const CA_CHANGE_GRACE: Duration = Duration::from_secs(2);

/// Hands out places for connections, in all and per address.
#[derive(Clone)]
pub struct ConnectionLimits {
    total: Arc<Semaphore>,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A place for one connection; given back when dropped.
pub struct ConnectionPermit {
    _total: OwnedSemaphorePermit,
    address: IpAddr,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            total: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            per_address: Arc::default(),
        }
    }
}

impl ConnectionLimits {
    /// A place for a connection from `address`, or why there is none.
    pub fn admit(&self, address: IpAddr) -> Result<ConnectionPermit, &'static str> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| "too many connections to the API")?;
        let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(address).or_default();
        if *count >= MAX_CONNECTIONS_PER_ADDRESS {
            return Err("too many connections from this address");
        }
        *count += 1;
        Ok(ConnectionPermit { _total: total, address, per_address: self.per_address.clone() })
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// An API connection under the limits above.
pub struct Connection {
    stream: TlsStream<TcpStream>,
    _permit: ConnectionPermit,
    idle: Pin<Box<Sleep>>,
    ca_replaced: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Connection {
    /// Wraps an authenticated stream; `config` is the machine's running config, whose CA
    /// at this moment is the one the connection was authenticated under.
    pub fn new(
        stream: TlsStream<TcpStream>,
        permit: ConnectionPermit,
        config: watch::Receiver<Option<Arc<MachineConfig>>>,
    ) -> Self {
        Connection {
            stream,
            _permit: permit,
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
    type ConnectInfo = <TlsStream<TcpStream> as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
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
        let held: Vec<_> =
            (0..MAX_CONNECTIONS_PER_ADDRESS).map(|_| limits.admit(a).unwrap()).collect();
        assert_eq!(limits.admit(a).err(), Some("too many connections from this address"));
        let other = limits.admit(b).unwrap();
        drop(held);
        assert!(limits.admit(a).is_ok());
        drop(other);
        assert!(limits.per_address.lock().unwrap().is_empty());
    }
}
