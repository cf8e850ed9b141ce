//! An SNTP client (RFC 4330: NTPv4 packets in client mode): one request, one reply, checked
//! and turned into a clock [`Offset`].
//!
//! Written by hand: the packet is 48 bytes of fixed fields, and what matters is the checking
//! of the reply, which is done here in full:
//!
//! - the request's transmit timestamp is 64 random bits, not the time (a client's
//!   transmit timestamp is only echoed back, RFC 4330 § 5), and a reply must echo them in
//!   its originate timestamp: a spoofer off the path cannot guess them, and a stale reply
//!   does not match. Replies that do not match are ignored (an attacker cannot end a query by
//!   sending one), so such a query ends in a timeout that names the last one;
//! - the socket is connected to the server: the kernel drops datagrams from any other
//!   address or port;
//! - a matching reply must be version 3 or 4, mode 4 (server), not a kiss-o'-death
//!   (stratum 0, whose code is named), not unsynchronised (leap indicator 3), of stratum
//!   1 to 15, with nonzero receive and transmit timestamps.
//!
//! Timestamps count seconds since 1900 in 32 bits, which wrap in 2036. As RFC 4330 § 3
//! says, a timestamp with the top bit set is 1968–2036 (since 1900), one without it
//! 2036–2104 (since 2036-02-07 06:28:16 UTC). The local ends of the exchange are taken from
//! the system clock and a monotonic one, never from NTP's 32-bit seconds, so a node booted
//! in 1970 measures an offset of decades as exactly as one of milliseconds.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;

use crate::time::clock::{unix_nanos, Clock, Offset, SystemClock};

/// Asked when the machine config names no servers: Cloudflare's anycast NTP service (as
/// Talos does). Not `pool.ntp.org`: the pool asks vendors not to make it a product's default.
pub const DEFAULT_SERVERS: &[&str] = &["time.cloudflare.com"];
/// The NTP port, for servers named without one.
pub const PORT: u16 = 123;
/// How long a query waits for its reply, unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// The length of an NTP packet without extension fields or MAC.
pub const PACKET_LEN: usize = 48;
/// Seconds from 1900-01-01 (the start of NTP era 0) to 1970-01-01.
const ERA0_TO_UNIX: i128 = 2_208_988_800;
/// Seconds in an NTP era.
const ERA: i128 = 1 << 32;

/// A 64-bit NTP timestamp: seconds since the start of the era and a binary fraction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The timestamp with these 64 bits (seconds in the high 32, the fraction in the low).
    pub const fn from_bits(bits: u64) -> Timestamp {
        Timestamp(bits)
    }

    /// The 64 bits.
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// Whether it is zero ("no time").
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Nanoseconds since 1970 (negative before), placing it in 1968–2104 by its top bit
    /// (RFC 4330 § 3).
    pub fn unix_nanos(self) -> i128 {
        let seconds = i128::from(self.0 >> 32);
        let era_start = if seconds & 0x8000_0000 != 0 { 0 } else { ERA };
        let fraction = i128::from(self.0 & 0xffff_ffff);
        (era_start + seconds - ERA0_TO_UNIX) * 1_000_000_000 + ((fraction * 1_000_000_000) >> 32)
    }
}

/// The leap indicator that means "clock not synchronised".
pub const LEAP_UNSYNCHRONISED: u8 = 3;
/// The mode of a client's request.
pub const MODE_CLIENT: u8 = 3;
/// The mode of a server's reply.
pub const MODE_SERVER: u8 = 4;

/// The 48-byte header of an NTP packet (RFC 4330 § 4). Extension fields and MACs after it
/// are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Packet {
    /// Leap indicator (2 bits): 0–2 announce leap seconds, 3 means unsynchronised.
    pub leap: u8,
    /// Version number (3 bits).
    pub version: u8,
    /// Mode (3 bits): 3 client, 4 server.
    pub mode: u8,
    /// Stratum: 0 kiss-o'-death, 1 primary, 2–15 secondary, 16 unsynchronised.
    pub stratum: u8,
    /// Poll interval, log2 seconds.
    pub poll: i8,
    /// Clock precision, log2 seconds.
    pub precision: i8,
    /// Round-trip delay to the reference, 16.16 fixed-point seconds.
    pub root_delay: u32,
    /// Dispersion to the reference, 16.16 fixed-point seconds.
    pub root_dispersion: u32,
    /// The reference's identifier; with stratum 0, the kiss code in ASCII.
    pub reference_id: [u8; 4],
    /// When the server's clock was last set.
    pub reference: Timestamp,
    /// The request's transmit timestamp, echoed.
    pub originate: Timestamp,
    /// When the request reached the server.
    pub receive: Timestamp,
    /// When the reply left the server (for a request: the client's nonce).
    pub transmit: Timestamp,
}

impl Packet {
    /// A client request (version 4, mode 3) carrying `transmit`, everything else zero
    /// (RFC 4330 § 5).
    pub fn request(transmit: Timestamp) -> Packet {
        Packet { version: 4, mode: MODE_CLIENT, transmit, ..Packet::default() }
    }

    /// The packet's bytes.
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut bytes = [0u8; PACKET_LEN];
        bytes[0] = (self.leap & 0b11) << 6 | (self.version & 0b111) << 3 | (self.mode & 0b111);
        bytes[1] = self.stratum;
        bytes[2] = self.poll.to_be_bytes()[0];
        bytes[3] = self.precision.to_be_bytes()[0];
        bytes[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        bytes[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        bytes[12..16].copy_from_slice(&self.reference_id);
        for (at, timestamp) in
            [(16, self.reference), (24, self.originate), (32, self.receive), (40, self.transmit)]
        {
            bytes[at..at + 8].copy_from_slice(&timestamp.to_bits().to_be_bytes());
        }
        bytes
    }

    /// The packet in `bytes`; `None` if they are too short for one.
    pub fn decode(bytes: &[u8]) -> Option<Packet> {
        let bytes: &[u8; PACKET_LEN] = bytes.get(..PACKET_LEN)?.try_into().ok()?;
        let u32_at = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let timestamp_at = |at: usize| {
            Timestamp::from_bits(u64::from(u32_at(at)) << 32 | u64::from(u32_at(at + 4)))
        };
        Some(Packet {
            leap: bytes[0] >> 6,
            version: (bytes[0] >> 3) & 0b111,
            mode: bytes[0] & 0b111,
            stratum: bytes[1],
            poll: i8::from_be_bytes([bytes[2]]),
            precision: i8::from_be_bytes([bytes[3]]),
            root_delay: u32_at(4),
            root_dispersion: u32_at(8),
            reference_id: [bytes[12], bytes[13], bytes[14], bytes[15]],
            reference: timestamp_at(16),
            originate: timestamp_at(24),
            receive: timestamp_at(32),
            transmit: timestamp_at(40),
        })
    }

    /// Refuses a reply (already matched to our request) that must not set a clock.
    pub fn check_reply(&self) -> Result<(), Refusal> {
        if !matches!(self.version, 3 | 4) {
            return Err(Refusal::Version(self.version));
        }
        if self.mode != MODE_SERVER {
            return Err(Refusal::Mode(self.mode));
        }
        if self.stratum == 0 {
            let code = String::from_utf8_lossy(&self.reference_id);
            return Err(Refusal::KissOfDeath {
                code: code.trim_end_matches('\0').escape_default().to_string(),
            });
        }
        if self.leap == LEAP_UNSYNCHRONISED {
            return Err(Refusal::Unsynchronised);
        }
        if self.stratum > 15 {
            return Err(Refusal::Stratum(self.stratum));
        }
        if self.receive.is_zero() {
            return Err(Refusal::ZeroTimestamp("receive"));
        }
        if self.transmit.is_zero() {
            return Err(Refusal::ZeroTimestamp("transmit"));
        }
        Ok(())
    }
}

/// Why a reply was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Too short for an NTP packet (ignored: it may not be the server's).
    #[error("a {0}-byte reply, too short for NTP")]
    Short(usize),
    /// It does not echo our transmit timestamp (ignored: stale or spoofed).
    #[error("a reply that does not echo our transmit timestamp (stale or spoofed)")]
    Originate,
    /// An NTP version other than 3 or 4.
    #[error("NTP version {0}, not 3 or 4")]
    Version(u8),
    /// Not a server's reply.
    #[error("mode {0}, not 4 (server)")]
    Mode(u8),
    /// A kiss-o'-death: the server will not serve us (`DENY`, `RSTR`) or asks us to back
    /// off (`RATE`).
    #[error("kiss-o'-death {code:?}: the server refuses to serve this client")]
    KissOfDeath {
        /// The kiss code, e.g. `RATE`.
        code: String,
    },
    /// The server's own clock is not synchronised.
    #[error("the server's clock is not synchronised (leap indicator 3)")]
    Unsynchronised,
    /// A stratum out of 1..=15 (16: unsynchronised).
    #[error("stratum {0}, not 1 to 15")]
    Stratum(u8),
    /// A timestamp the offset needs is zero.
    #[error("a zero {0} timestamp")]
    ZeroTimestamp(&'static str),
}

/// What one exchange with a server measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The server's address.
    pub server: SocketAddr,
    /// How far the server's time is ahead of our clock (negative: behind).
    pub offset: Offset,
    /// The round trip, less the server's own processing time.
    pub delay: Duration,
    /// The server's stratum (1: it has a reference clock).
    pub stratum: u8,
}

impl Sample {
    /// The sample from `reply`, to a request sent at `sent` (our clock) that took `round_trip`
    /// (a monotonic clock) to answer: RFC 4330 § 5's offset `((T2 - T1) + (T3 - T4)) / 2`
    /// and delay `(T4 - T1) - (T3 - T2)`, in nanoseconds since 1970.
    pub fn from_reply(
        server: SocketAddr,
        sent: SystemTime,
        round_trip: Duration,
        reply: &Packet,
    ) -> Sample {
        let t1 = unix_nanos(sent);
        let t4 = t1 + round_trip.as_nanos() as i128;
        let (t2, t3) = (reply.receive.unix_nanos(), reply.transmit.unix_nanos());
        let delay = ((t4 - t1) - (t3 - t2)).clamp(0, u64::MAX.into()) as u64;
        Sample {
            server,
            offset: Offset::saturating(((t2 - t1) + (t3 - t4)) / 2),
            delay: Duration::from_nanos(delay),
            stratum: reply.stratum,
        }
    }
}

/// SNTP failed.
#[derive(Debug, thiserror::Error)]
pub enum SntpError {
    /// A server name that is neither an address nor `host[:port]`.
    #[error("time server {server:?}: {reason}")]
    BadName {
        /// The name as given.
        server: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A server name that could not be resolved.
    #[error("time server {server}: resolving the name: {source}")]
    Resolve {
        /// The name.
        server: String,
        /// What failed.
        source: io::Error,
    },
    /// A server name with no addresses.
    #[error("time server {server}: the name has no addresses")]
    NoAddress {
        /// The name.
        server: String,
    },
    /// The socket failed (e.g. `Connection refused`: nothing listens on the server's port).
    #[error("time server {server}: {source}")]
    Io {
        /// The server.
        server: SocketAddr,
        /// What failed.
        source: io::Error,
    },
    /// No reply came in time.
    #[error("time server {server}: no reply within {}", humantime::format_duration(*.after))]
    Timeout {
        /// The server.
        server: SocketAddr,
        /// How long we waited.
        after: Duration,
    },
    /// The reply was refused (or, with [`Refusal::Short`] and [`Refusal::Originate`], the
    /// only replies within the timeout were ignored).
    #[error("time server {server}: {reason}")]
    Refused {
        /// The server.
        server: SocketAddr,
        /// Why.
        reason: Refusal,
    },
    /// Every server failed ([`query_first`]); empty when there were none to ask.
    #[error("no time server answered{}", list(.0))]
    NoAnswer(Vec<SntpError>),
}

fn list(failures: &[SntpError]) -> String {
    if failures.is_empty() {
        return ": none to ask".into();
    }
    let failures: Vec<String> = failures.iter().map(ToString::to_string).collect();
    format!(": {}", failures.join("; "))
}

/// Asks the server at `server` for the time once, waiting up to `timeout` for its reply.
pub async fn query(server: SocketAddr, timeout: Duration) -> Result<Sample, SntpError> {
    query_for(&SystemClock, server, timeout).await
}

/// [`query`], measuring the offset from `clock`.
pub async fn query_for(
    clock: &impl Clock,
    server: SocketAddr,
    timeout: Duration,
) -> Result<Sample, SntpError> {
    let io = |source| SntpError::Io { server, source };
    let any: IpAddr =
        if server.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let socket = UdpSocket::bind((any, 0)).await.map_err(io)?;
    // Only the server's address and port get through a connected socket.
    socket.connect(server).await.map_err(io)?;
    let nonce = Timestamp::from_bits(nonce());
    let deadline = tokio::time::Instant::now() + timeout;
    let (sent, started) = (clock.now(), Instant::now());
    socket.send(&Packet::request(nonce).encode()).await.map_err(io)?;
    let mut buffer = [0u8; 1024];
    let mut ignored = None;
    loop {
        let Ok(received) = tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await else {
            return Err(match ignored {
                Some(reason) => SntpError::Refused { server, reason },
                None => SntpError::Timeout { server, after: timeout },
            });
        };
        let length = received.map_err(io)?;
        let round_trip = started.elapsed();
        let Some(reply) = Packet::decode(&buffer[..length]) else {
            ignored = Some(Refusal::Short(length));
            continue;
        };
        if reply.originate != nonce {
            ignored = Some(Refusal::Originate);
            continue;
        }
        reply.check_reply().map_err(|reason| SntpError::Refused { server, reason })?;
        return Ok(Sample::from_reply(server, sent, round_trip, &reply));
    }
}

/// Asks `servers` (names as [`resolve`] takes them) in order, each of a name's addresses in
/// turn, and returns the first good sample; the error lists every failure.
pub async fn query_first(
    servers: &[impl AsRef<str>],
    timeout: Duration,
) -> Result<Sample, SntpError> {
    query_first_indexed(&SystemClock, servers, timeout).await.map(|(_, sample)| sample)
}

/// [`query_first`], measuring offsets from `clock`, with the index in `servers` of the
/// server that answered.
pub async fn query_first_indexed(
    clock: &impl Clock,
    servers: &[impl AsRef<str>],
    timeout: Duration,
) -> Result<(usize, Sample), SntpError> {
    let mut failures = Vec::new();
    for (index, server) in servers.iter().enumerate() {
        if let Some(sample) = ask(clock, server.as_ref(), timeout, &mut failures).await {
            return Ok((index, sample));
        }
    }
    Err(SntpError::NoAnswer(failures))
}

/// Asks the server named `server` (as [`resolve`] takes it), each of its addresses in turn,
/// measuring offsets from `clock`, and returns the first good sample; the error lists every
/// failure.
pub async fn query_server(
    clock: &impl Clock,
    server: &str,
    timeout: Duration,
) -> Result<Sample, SntpError> {
    let mut failures = Vec::new();
    ask(clock, server, timeout, &mut failures).await.ok_or(SntpError::NoAnswer(failures))
}

/// The first good sample from `server`'s addresses; failures are added to `failures`.
async fn ask(
    clock: &impl Clock,
    server: &str,
    timeout: Duration,
    failures: &mut Vec<SntpError>,
) -> Option<Sample> {
    let addresses = match resolve(server).await {
        Ok(addresses) => addresses,
        Err(e) => {
            failures.push(e);
            return None;
        }
    };
    for address in addresses {
        match query_for(clock, address, timeout).await {
            Ok(sample) => return Some(sample),
            Err(e) => failures.push(e),
        }
    }
    None
}

/// The addresses of a server named as the machine config names them: an address
/// (`192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`), a host name (`time.cloudflare.com`), or
/// either with a port (`192.0.2.1:1123`, `[2001:db8::1]:1123`, `ntp.example:1123`); port
/// [`PORT`] by default.
pub async fn resolve(server: &str) -> Result<Vec<SocketAddr>, SntpError> {
    let (host, port) = match target(server)? {
        Target::Address(address) => return Ok(vec![address]),
        Target::Host(host, port) => (host, port),
    };
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| SntpError::Resolve { server: server.into(), source })?
        .collect();
    if addresses.is_empty() {
        return Err(SntpError::NoAddress { server: server.into() });
    }
    Ok(addresses)
}

/// What a server name names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Address(SocketAddr),
    Host(&'a str, u16),
}

fn target(server: &str) -> Result<Target<'_>, SntpError> {
    let bad = |reason| SntpError::BadName { server: server.into(), reason };
    let name = server.trim();
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if let Ok(address) = name.parse::<SocketAddr>() {
        return Ok(Target::Address(address));
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(Target::Address((ip, PORT).into()));
    }
    if let Some(inner) = name.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(ip)) => Ok(Target::Address((ip, PORT).into())),
            _ => Err(bad("expected [IPv6 address] or [IPv6 address]:port")),
        };
    }
    let (host, port) = match name.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| bad("invalid port"))?),
        None => (name, PORT),
    };
    if host.is_empty() || host.contains(':') || host.contains(char::is_whitespace) {
        return Err(bad("expected an address or a host name, with an optional :port"));
    }
    Ok(Target::Host(host, port))
}

/// 64 unpredictable, nonzero bits from the kernel's CSPRNG (getrandom(2) through ring):
/// an off-path spoofer must guess them to have a reply accepted.
fn nonce() -> u64 {
    use ring::rand::{SecureRandom, SystemRandom};
    let random = SystemRandom::new();
    loop {
        let mut bytes = [0u8; 8];
        if random.fill(&mut bytes).is_ok() {
            let bits = u64::from_ne_bytes(bytes);
            if bits != 0 {
                return bits;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i128 = 1_000_000_000;

    /// The NTP timestamp of `nanos` since 1970 (this module only decodes them).
    fn timestamp(nanos: i128) -> Timestamp {
        let seconds = (nanos.div_euclid(SECOND) + ERA0_TO_UNIX).rem_euclid(ERA) as u64;
        let fraction = ((nanos.rem_euclid(SECOND) << 32) / SECOND) as u64;
        Timestamp::from_bits(seconds << 32 | fraction)
    }

    #[test]
    fn timestamps_map_to_1968_through_2104() {
        let at = |seconds: u64, fraction: u64| Timestamp::from_bits(seconds << 32 | fraction);
        assert_eq!(at(2_208_988_800, 0).unix_nanos(), 0, "1970");
        assert_eq!(at(2_208_988_800, 1 << 31).unix_nanos(), SECOND / 2);
        assert_eq!(at(2_208_988_799, 0).unix_nanos(), -SECOND, "1969, since 1900");
        assert_eq!(at(0x8000_0000, 0).unix_nanos(), (0x8000_0000 - ERA0_TO_UNIX) * SECOND, "1968");
        // 2025-01-01, 2036-02-07 06:28:15 (the last second of era 0) and what follows.
        assert_eq!(at(3_944_678_400, 0).unix_nanos(), 1_735_689_600 * SECOND);
        assert_eq!(at(u32::MAX.into(), 0).unix_nanos(), 2_085_978_495 * SECOND);
        assert_eq!(at(0, 0).unix_nanos(), 2_085_978_496 * SECOND, "era 1 begins");
        assert_eq!(at(0x7fff_ffff, 0).unix_nanos(), (2_085_978_496 + 0x7fff_ffff) * SECOND);
        for nanos in [0, 1_767_225_600 * SECOND + 123_456_789, 2_208_988_800 * SECOND] {
            let back = timestamp(nanos).unix_nanos();
            assert!((nanos - back).abs() <= 1, "{nanos} came back as {back}");
        }
    }

    #[test]
    fn packets_encode_to_exact_bytes() {
        let request = Packet::request(Timestamp::from_bits(0x0102_0304_0506_0708));
        let mut expected = [0u8; PACKET_LEN];
        expected[0] = 0x23; // LI 0, version 4, mode 3
        expected[40..].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(request.encode(), expected);
        assert_eq!(Packet::decode(&expected), Some(request));

        let reply = Packet {
            leap: 3,
            version: 3,
            mode: MODE_SERVER,
            stratum: 2,
            poll: 6,
            precision: -20,
            root_delay: 0x0001_8000,
            root_dispersion: 0x0000_0010,
            reference_id: *b"GPS\0",
            reference: Timestamp::from_bits(0x1111_1111_2222_2222),
            originate: Timestamp::from_bits(0x3333_3333_4444_4444),
            receive: Timestamp::from_bits(0x5555_5555_6666_6666),
            transmit: Timestamp::from_bits(0x7777_7777_8888_8888),
        };
        let bytes = reply.encode();
        assert_eq!(
            bytes[..16],
            [0xdc, 2, 6, 0xec, 0, 1, 0x80, 0, 0, 0, 0, 0x10, b'G', b'P', b'S', 0]
        );
        assert_eq!(bytes[16..20], [0x11; 4]);
        assert_eq!(bytes[44..], [0x88; 4]);
        // Trailing extension fields or a MAC are ignored; short packets are not packets.
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[0xff; 20]);
        assert_eq!(Packet::decode(&longer), Some(reply));
        assert_eq!(Packet::decode(&bytes[..47]), None);
    }

    fn good_reply() -> Packet {
        Packet {
            version: 4,
            mode: MODE_SERVER,
            stratum: 1,
            reference_id: *b"GPS\0",
            receive: timestamp(1_767_225_600 * SECOND),
            transmit: timestamp(1_767_225_600 * SECOND + 1000),
            ..Packet::default()
        }
    }

    #[test]
    fn replies_that_must_not_set_a_clock_are_refused() {
        assert_eq!(good_reply().check_reply(), Ok(()));
        assert_eq!(Packet { version: 3, ..good_reply() }.check_reply(), Ok(()));
        let cases = [
            (Packet { version: 2, ..good_reply() }, Refusal::Version(2)),
            (Packet { mode: 3, ..good_reply() }, Refusal::Mode(3)),
            (Packet { mode: 5, ..good_reply() }, Refusal::Mode(5)),
            (
                Packet { stratum: 0, leap: 3, reference_id: *b"RATE", ..good_reply() },
                Refusal::KissOfDeath { code: "RATE".into() },
            ),
            (
                Packet { stratum: 0, reference_id: *b"X\0\0\0", ..good_reply() },
                Refusal::KissOfDeath { code: "X".into() },
            ),
            (Packet { leap: 3, ..good_reply() }, Refusal::Unsynchronised),
            (Packet { stratum: 16, ..good_reply() }, Refusal::Stratum(16)),
            (
                Packet { receive: Timestamp::default(), ..good_reply() },
                Refusal::ZeroTimestamp("receive"),
            ),
            (
                Packet { transmit: Timestamp::default(), ..good_reply() },
                Refusal::ZeroTimestamp("transmit"),
            ),
        ];
        for (reply, refusal) in cases {
            assert_eq!(reply.check_reply(), Err(refusal), "{reply:?}");
        }
        let server: SocketAddr = "192.0.2.1:123".parse().unwrap();
        let reason = Refusal::KissOfDeath { code: "DENY".into() };
        assert_eq!(
            SntpError::Refused { server, reason }.to_string(),
            "time server 192.0.2.1:123: kiss-o'-death \"DENY\": the server refuses to serve this \
             client"
        );
    }

    #[test]
    fn offset_and_delay_follow_rfc_4330() {
        let server: SocketAddr = "192.0.2.1:123".parse().unwrap();
        // Our clock says 1970 + 5 s; the server is at 2026 and answers 10 ms each way,
        // after 1 ms of its own.
        let t1 = 5 * SECOND;
        let true_time = 1_767_225_600 * SECOND;
        let ms = SECOND / 1000;
        let reply = Packet {
            receive: timestamp(true_time + 10 * ms),
            transmit: timestamp(true_time + 11 * ms),
            ..good_reply()
        };
        let sent = SystemTime::UNIX_EPOCH + Duration::from_secs(5);
        let sample = Sample::from_reply(server, sent, Duration::from_millis(21), &reply);
        let expected = (true_time - t1) as i64;
        assert!((sample.offset.as_nanos() - expected).abs() <= 1, "{}", sample.offset);
        assert_eq!(sample.delay, Duration::from_millis(20));
        assert_eq!((sample.server, sample.stratum), (server, 1));

        // A clock an hour ahead of the server, past the 2036 wrap.
        let t1 = 2_200_000_000 * SECOND;
        let reply = Packet {
            receive: timestamp(t1 - 3600 * SECOND),
            transmit: timestamp(t1 - 3600 * SECOND),
            ..good_reply()
        };
        let sent = SystemTime::UNIX_EPOCH + Duration::from_secs(2_200_000_000);
        let sample = Sample::from_reply(server, sent, Duration::ZERO, &reply);
        assert!((sample.offset.as_nanos() + 3600 * SECOND as i64).abs() <= 1, "{}", sample.offset);
        assert_eq!(sample.delay, Duration::ZERO);
    }

    #[test]
    fn server_names_take_addresses_hosts_and_ports() {
        let address = |s: &str| Target::Address(s.parse().unwrap());
        let cases = [
            ("192.0.2.1", address("192.0.2.1:123")),
            ("192.0.2.1:1123", address("192.0.2.1:1123")),
            ("2001:db8::1", address("[2001:db8::1]:123")),
            ("[2001:db8::1]", address("[2001:db8::1]:123")),
            ("[2001:db8::1]:1123", address("[2001:db8::1]:1123")),
            (" time.cloudflare.com ", Target::Host("time.cloudflare.com", 123)),
            ("ntp.example:1123", Target::Host("ntp.example", 1123)),
        ];
        for (name, expected) in cases {
            assert_eq!(target(name).unwrap(), expected, "{name}");
        }
        for bad in [
            "",
            "  ",
            "ntp.example:",
            "ntp.example:99999",
            "[2001:db8::1",
            "[ntp]:1",
            "a b",
            ":123",
        ] {
            assert!(matches!(target(bad), Err(SntpError::BadName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn nonces_are_nonzero_and_differ() {
        let nonces: std::collections::HashSet<u64> = (0..1000).map(|_| nonce()).collect();
        assert_eq!(nonces.len(), 1000);
        assert!(!nonces.contains(&0));
    }

    /// Answers one request on `socket` as a server whose clock is `ahead` of ours, with
    /// `edit` applied to the reply, from `from` (the same socket when `None`).
    async fn answer(
        socket: UdpSocket,
        ahead: Duration,
        edit: impl FnOnce(&mut Packet),
        from: Option<UdpSocket>,
    ) {
        let mut buffer = [0u8; 1024];
        let (length, client) = socket.recv_from(&mut buffer).await.unwrap();
        let request = Packet::decode(&buffer[..length]).unwrap();
        assert_eq!((request.mode, request.version), (MODE_CLIENT, 4));
        let now = unix_nanos(SystemTime::now() + ahead);
        let mut reply = Packet {
            originate: request.transmit,
            receive: timestamp(now),
            transmit: timestamp(now),
            ..good_reply()
        };
        edit(&mut reply);
        from.as_ref().unwrap_or(&socket).send_to(&reply.encode(), client).await.unwrap();
    }

    async fn server() -> (UdpSocket, SocketAddr) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        (socket, address)
    }

    #[tokio::test]
    async fn a_query_measures_a_server_an_hour_ahead() {
        let (socket, address) = server().await;
        let hour = Duration::from_secs(3600);
        let responder = tokio::spawn(answer(socket, hour, |_| {}, None));
        let sample = query(address, Duration::from_secs(5)).await.unwrap();
        responder.await.unwrap();
        let error = sample.offset.as_nanos() - 3600 * SECOND as i64;
        assert!(error.abs() < 250_000_000, "offset {}", sample.offset);
        assert!(sample.delay < Duration::from_millis(250), "{:?}", sample.delay);
        assert_eq!(sample.server, address);
    }

    #[tokio::test]
    async fn unmatched_and_foreign_replies_are_ignored() {
        let (socket, address) = server().await;
        let spoof = |reply: &mut Packet| {
            reply.originate = Timestamp::from_bits(reply.originate.to_bits() ^ 1)
        };
        tokio::spawn(answer(socket, Duration::ZERO, spoof, None));
        let error = query(address, Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(error, SntpError::Refused { reason: Refusal::Originate, .. }), "{error}");

        // A correct reply, but from another port.
        let (socket, address) = server().await;
        let (other, _) = server().await;
        tokio::spawn(answer(socket, Duration::ZERO, |_| {}, Some(other)));
        let error = query(address, Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(error, SntpError::Timeout { .. }), "{error}");
        assert!(error.to_string().ends_with("no reply within 300ms"), "{error}");
    }

    #[tokio::test]
    async fn a_kiss_of_death_ends_the_query() {
        let (socket, address) = server().await;
        let kiss = |reply: &mut Packet| {
            reply.stratum = 0;
            reply.reference_id = *b"RSTR";
        };
        tokio::spawn(answer(socket, Duration::ZERO, kiss, None));
        let error = query(address, Duration::from_secs(5)).await.unwrap_err();
        assert!(error.to_string().contains("kiss-o'-death \"RSTR\""), "{error}");
    }

    #[tokio::test]
    async fn query_first_goes_on_to_the_next_server() {
        let (_silent, silent) = server().await;
        let (socket, address) = server().await;
        tokio::spawn(answer(socket, Duration::ZERO, |_| {}, None));
        let servers = [silent.to_string(), "nonsense:x".into(), address.to_string()];
        let sample = query_first(&servers, Duration::from_millis(300)).await.unwrap();
        assert_eq!(sample.server, address);

        let error = query_first(&servers[..2], Duration::from_millis(100)).await.unwrap_err();
        let SntpError::NoAnswer(failures) = &error else { panic!("{error}") };
        assert!(matches!(failures[..], [SntpError::Timeout { .. }, SntpError::BadName { .. }]));
        assert!(error.to_string().starts_with("no time server answered: time server 127.0.0.1:"));
        // Which server answered, and one server's addresses alone.
        let (socket, address) = server().await;
        tokio::spawn(answer(socket, Duration::ZERO, |_| {}, None));
        let servers = [silent.to_string(), address.to_string()];
        let (index, sample) =
            query_first_indexed(&SystemClock, &servers, Duration::from_millis(300)).await.unwrap();
        assert_eq!((index, sample.server), (1, address));
        let error =
            query_server(&SystemClock, &servers[0], Duration::from_millis(100)).await.unwrap_err();
        assert!(
            matches!(&error, SntpError::NoAnswer(f) if matches!(f[..], [SntpError::Timeout { .. }]))
        );
        let none: [&str; 0] = [];
        let error = query_first(&none, Duration::from_millis(100)).await.unwrap_err();
        assert_eq!(error.to_string(), "no time server answered: none to ask");
    }
}
