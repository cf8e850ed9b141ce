//! A DHCPv4 client (RFC 2131): DISCOVER, OFFER, REQUEST, ACK, over a UDP socket bound to
//! the link. Only what a node needs: an address, its prefix, the router and DNS servers.
//! Written by hand: the message format is small and stable, and the crates that encode it
//! bring a DNS library along.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use tokio::net::UdpSocket;

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The fixed part of a message, before the cookie and options.
const FIXED_LEN: usize = 236;
/// Tries per exchange, each waiting longer.
const TRIES: u32 = 4;

/// Message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Client looks for servers.
    Discover = 1,
    /// Server offers an address.
    Offer = 2,
    /// Client asks for the offered address.
    Request = 3,
    /// Server refuses.
    Nak = 6,
    /// Server confirms.
    Ack = 5,
}

/// What a server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Our address.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The default gateway.
    pub router: Option<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// The server that granted it.
    pub server: Ipv4Addr,
    /// How long it lasts.
    pub lease_time: Duration,
}

/// DHCP failed.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// Socket trouble.
    #[error("DHCP on {link}: {source}")]
    Io {
        /// The link.
        link: String,
        /// What failed.
        source: std::io::Error,
    },
    /// No server answered.
    #[error("DHCP on {0}: no answer from any server")]
    NoAnswer(String),
    /// The server refused our request.
    #[error("DHCP on {0}: the server refused the address (NAK)")]
    Refused(String),
}

/// A client message.
pub fn encode(
    kind: MessageType,
    xid: u32,
    mac: [u8; 6],
    requested: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<u8> {
    let mut m = vec![0u8; FIXED_LEN];
    m[0] = 1; // BOOTREQUEST
    m[1] = 1; // Ethernet
    m[2] = 6; // hardware address length
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[10] = 0x80; // broadcast flag: we cannot receive unicast before we have an address
    m[28..34].copy_from_slice(&mac);
    m.extend_from_slice(&MAGIC_COOKIE);
    m.extend_from_slice(&[53, 1, kind as u8]);
    if let Some((address, server)) = requested {
        m.extend_from_slice(&[50, 4]);
        m.extend_from_slice(&address.octets());
        m.extend_from_slice(&[54, 4]);
        m.extend_from_slice(&server.octets());
    }
    // Parameters wanted: subnet mask, router, DNS, lease time.
    m.extend_from_slice(&[55, 4, 1, 3, 6, 51, 255]);
    m
}

/// A server reply to our transaction `xid`: its type, the offered address and lease.
pub fn decode(bytes: &[u8], xid: u32) -> Option<(MessageType, Lease)> {
    if bytes.len() < FIXED_LEN + 4
        || bytes[0] != 2
        || bytes[4..8] != xid.to_be_bytes()
        || bytes[FIXED_LEN..FIXED_LEN + 4] != MAGIC_COOKIE
    {
        return None;
    }
    let address = Ipv4Addr::new(bytes[16], bytes[17], bytes[18], bytes[19]);
    let mut lease = Lease {
        address,
        prefix_len: 24,
        router: None,
        dns: Vec::new(),
        server: Ipv4Addr::UNSPECIFIED,
        lease_time: Duration::from_secs(3600),
    };
    let mut kind = None;
    let mut options = &bytes[FIXED_LEN + 4..];
    while let [code, rest @ ..] = options {
        match code {
            0 => {
                options = rest;
                continue;
            }
            255 => break,
            _ => {}
        }
        let [len, rest @ ..] = rest else { break };
        let len = usize::from(*len);
        if rest.len() < len {
            break;
        }
        let (value, rest) = rest.split_at(len);
        let addresses = || value.chunks_exact(4).map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]));
        match (code, value) {
            (53, [t]) => {
                kind = match t {
                    2 => Some(MessageType::Offer),
                    5 => Some(MessageType::Ack),
                    6 => Some(MessageType::Nak),
                    _ => None,
                }
            }
            (1, [a, b, c, d]) => {
                lease.prefix_len = u32::from_be_bytes([*a, *b, *c, *d]).count_ones() as u8
            }
            (3, _) => lease.router = addresses().next(),
            (6, _) => lease.dns = addresses().collect(),
            (51, [a, b, c, d]) => {
                lease.lease_time = Duration::from_secs(u32::from_be_bytes([*a, *b, *c, *d]).into())
            }
            (54, _) => lease.server = addresses().next().unwrap_or(Ipv4Addr::UNSPECIFIED),
            _ => {}
        }
        options = rest;
    }
    Some((kind?, lease))
}

/// Gets a lease on `link` (whose hardware address is `mac`).
pub async fn acquire(link: &str, mac: [u8; 6]) -> Result<Lease, DhcpError> {
    let io = |source| DhcpError::Io { link: link.to_string(), source };
    let socket = client_socket(link).map_err(io)?;
    // Different per boot and link; no need for cryptographic randomness.
    let xid = std::process::id()
        ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]])
        ^ (crate::logs::events::unix_millis() as u32);
    let offer =
        exchange(&socket, &encode(MessageType::Discover, xid, mac, None), xid, MessageType::Offer)
            .await
            .map_err(io)?;
    let Some(offer) = offer else { return Err(DhcpError::NoAnswer(link.into())) };
    let request = encode(MessageType::Request, xid, mac, Some((offer.address, offer.server)));
    match exchange(&socket, &request, xid, MessageType::Ack).await.map_err(io)? {
        Some(lease) => Ok(Lease {
            server: if lease.server.is_unspecified() { offer.server } else { lease.server },
            ..lease
        }),
        None => Err(DhcpError::Refused(link.into())),
    }
}

/// Broadcasts `message` until a reply of type `want` comes (retrying with growing waits);
/// `None` when the server said NAK or nobody answered.
async fn exchange(
    socket: &UdpSocket,
    message: &[u8],
    xid: u32,
    want: MessageType,
) -> std::io::Result<Option<Lease>> {
    let server = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);
    let mut buf = vec![0u8; 1500];
    for attempt in 0..TRIES {
        socket.send_to(message, server).await?;
        let wait = Duration::from_secs(2u64 << attempt);
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            let (n, _) = received?;
            match decode(&buf[..n], xid) {
                Some((kind, lease)) if kind == want => return Ok(Some(lease)),
                Some((MessageType::Nak, _)) => return Ok(None),
                _ => {}
            }
        }
    }
    Ok(None)
}

fn client_socket(link: &str) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.bind_device(Some(link.as_bytes()))?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT).into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    #[test]
    fn discover_bytes() {
        let m = encode(MessageType::Discover, 0xdeadbeef, MAC, None);
        assert_eq!(&m[..12], &[1, 1, 6, 0, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0x80, 0]);
        assert_eq!(&m[28..34], &MAC);
        assert_eq!(&m[236..], &[99, 130, 83, 99, 53, 1, 1, 55, 4, 1, 3, 6, 51, 255]);
    }

    #[test]
    fn decodes_a_qemu_style_ack() {
        let mut reply = encode(MessageType::Request, 7, MAC, None);
        reply[0] = 2;
        reply[16..20].copy_from_slice(&[10, 0, 2, 15]);
        reply.truncate(240);
        reply.extend_from_slice(&[
            53, 1, 5, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2, 6, 4, 10, 0, 2, 3, 51, 4, 0, 1,
            81, 128, 54, 4, 10, 0, 2, 2, 255,
        ]);
        let (kind, lease) = decode(&reply, 7).unwrap();
        assert_eq!(kind, MessageType::Ack);
        assert_eq!(
            lease,
            Lease {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix_len: 24,
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                server: Ipv4Addr::new(10, 0, 2, 2),
                lease_time: Duration::from_secs(86400),
            }
        );
        assert!(decode(&reply, 8).is_none(), "another transaction");
        assert!(decode(&reply[..100], 7).is_none(), "truncated");
    }
}
