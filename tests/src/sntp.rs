//! A host-side SNTP server for tests: it answers NTP client requests (mode 3) with server
//! replies (mode 4) that tell the time it is given, or with one of the faults a client must
//! refuse. It shares no code with machined's client, so each checks the other.
//!
//! A QEMU guest on user networking reaches the host's 127.0.0.1 at 10.0.2.2: start the
//! server on `127.0.0.1:0` and put `10.0.2.2:<port>` in the node's `machine.time.servers`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from 1900-01-01, where NTP time starts, to 1970-01-01.
const NTP_TO_UNIX_SECONDS: u64 = 2_208_988_800;
/// How often the server thread looks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(50);

/// What time the server tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerClock {
    /// The host's clock, this much ahead.
    Ahead(Duration),
    /// The host's clock, this much behind.
    Behind(Duration),
    /// Always this time (from 1970; after 2036-02-07 NTP's 32-bit seconds wrap, which
    /// clients must place by their top bit).
    Fixed(SystemTime),
}

impl ServerClock {
    fn now(self) -> SystemTime {
        match self {
            ServerClock::Ahead(by) => SystemTime::now() + by,
            ServerClock::Behind(by) => SystemTime::now() - by,
            ServerClock::Fixed(time) => time,
        }
    }
}

/// How the server answers requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Correct replies.
    Honest,
    /// Replies whose originate timestamp is not the request's transmit timestamp, as a
    /// spoofer's guess or a stale reply would be.
    WrongOriginate,
    /// Kiss-o'-death replies (stratum 0, leap indicator 3) with this code, e.g. `*b"RATE"`.
    KissOfDeath([u8; 4]),
    /// Replies with leap indicator 3: the server's clock is unsynchronised.
    Unsynchronised,
    /// Correct replies, sent from another port than the one asked.
    FromAnotherPort,
    /// No reply at all (requests are still counted).
    Silent,
}

/// A running SNTP server; it stops when dropped.
pub struct Server {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
    clock: Arc<Mutex<ServerClock>>,
    answer: Arc<Mutex<Answer>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts a server on `bind` (port 0: any free port) telling `clock`'s time.
    pub fn start(bind: SocketAddr, clock: ServerClock) -> io::Result<Server> {
        Server::start_answering(bind, clock, Answer::Honest)
    }

    /// Starts a server on `bind` telling `clock`'s time, answering as `answer` says.
    pub fn start_answering(
        bind: SocketAddr,
        clock: ServerClock,
        answer: Answer,
    ) -> io::Result<Server> {
        let socket = UdpSocket::bind(bind)?;
        socket.set_read_timeout(Some(STOP_POLL))?;
        let address = socket.local_addr()?;
        // For Answer::FromAnotherPort: same address, another port.
        let other = UdpSocket::bind((address.ip(), 0))?;
        let requests = Arc::new(AtomicUsize::new(0));
        let clock = Arc::new(Mutex::new(clock));
        let answer = Arc::new(Mutex::new(answer));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name(format!("sntp-server-{address}")).spawn({
            let (requests, clock, answer, stop) =
                (requests.clone(), clock.clone(), answer.clone(), stop.clone());
            move || serve(&socket, &other, &clock, &requests, &answer, &stop)
        })?;
        Ok(Server { address, requests, clock, answer, stop, thread: Some(thread) })
    }

    /// Where the server listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// How many client requests it has received.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Changes the time it tells from the next request on (a server that jumps).
    pub fn set_clock(&self, clock: ServerClock) {
        *self.clock.lock().expect("clock lock") = clock;
    }

    /// Changes how it answers from the next request on.
    pub fn set_answer(&self, answer: Answer) {
        *self.answer.lock().expect("answer lock") = answer;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    socket: &UdpSocket,
    other: &UdpSocket,
    clock: &Mutex<ServerClock>,
    requests: &AtomicUsize,
    answer: &Mutex<Answer>,
    stop: &AtomicBool,
) {
    let mut buffer = [0u8; 1024];
    while !stop.load(Ordering::SeqCst) {
        // Timeouts (to look at `stop`) and stray ICMP errors alike: go round again.
        let Ok((length, client)) = socket.recv_from(&mut buffer) else { continue };
        let clock = *clock.lock().expect("clock lock");
        let received = clock.now();
        let request = &buffer[..length];
        if length < 48 || request[0] & 0b111 != 3 {
            continue;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let answer = *answer.lock().expect("answer lock");
        let from = match answer {
            Answer::Silent => continue,
            Answer::FromAnotherPort => other,
            _ => socket,
        };
        let _ = from.send_to(&reply(request, received, clock.now(), answer), client);
    }
}

/// The 48-byte reply to `request` (RFC 4330 § 5) that `answer` calls for.
fn reply(request: &[u8], received: SystemTime, sent: SystemTime, answer: Answer) -> [u8; 48] {
    let mut reply = [0u8; 48];
    let leap = match answer {
        Answer::Unsynchronised | Answer::KissOfDeath(_) => 3,
        _ => 0,
    };
    // The request's version if it is 3 or 4, else 4.
    let version = match (request[0] >> 3) & 0b111 {
        v @ (3 | 4) => v,
        _ => 4,
    };
    reply[0] = leap << 6 | version << 3 | 4;
    reply[1] = if let Answer::KissOfDeath(_) = answer { 0 } else { 1 };
    reply[2] = request[2]; // poll, echoed
    reply[3] = (-20i8).to_be_bytes()[0]; // precision: about a microsecond
    reply[8..12].copy_from_slice(&0x0000_0010u32.to_be_bytes()); // root dispersion
    let reference_id = match answer {
        Answer::KissOfDeath(code) => code,
        _ => *b"TEST",
    };
    reply[12..16].copy_from_slice(&reference_id);
    reply[16..24].copy_from_slice(&ntp_timestamp(received));
    reply[24..32].copy_from_slice(&request[40..48]);
    if answer == Answer::WrongOriginate {
        reply[31] ^= 1;
    }
    reply[32..40].copy_from_slice(&ntp_timestamp(received));
    reply[40..48].copy_from_slice(&ntp_timestamp(sent));
    reply
}

/// `time` as an NTP timestamp: 32-bit seconds since 1900 (wrapping in 2036) and a 32-bit
/// fraction, big-endian.
fn ntp_timestamp(time: SystemTime) -> [u8; 8] {
    let since_1970 = time.duration_since(UNIX_EPOCH).expect("a server time from 1970 on");
    let seconds = (since_1970.as_secs() + NTP_TO_UNIX_SECONDS) % (1 << 32);
    let fraction = (u64::from(since_1970.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32 | fraction).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(transmit: [u8; 8]) -> [u8; 48] {
        let mut request = [0u8; 48];
        request[0] = 0x23; // version 4, client
        request[2] = 6;
        request[40..].copy_from_slice(&transmit);
        request
    }

    #[test]
    fn timestamps_count_from_1900_and_wrap_in_2036() {
        let at = |seconds: u64, nanos: u32| UNIX_EPOCH + Duration::new(seconds, nanos);
        assert_eq!(ntp_timestamp(at(0, 0)), [0x83, 0xaa, 0x7e, 0x80, 0, 0, 0, 0]);
        // 2026-01-01 and a half second.
        assert_eq!(
            ntp_timestamp(at(1_767_225_600, 500_000_000)),
            [0xed, 0, 0x37, 0x80, 0x80, 0, 0, 0]
        );
        // 2040-01-01: era 1, 123 010 304 s after 2036-02-07 06:28:16.
        assert_eq!(ntp_timestamp(at(2_208_988_800, 0))[..4], 123_010_304u32.to_be_bytes());
    }

    #[test]
    fn replies_echo_the_request_and_tell_the_time() {
        let time = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let transmit = [1, 2, 3, 4, 5, 6, 7, 8];
        let honest = reply(&request(transmit), time, time, Answer::Honest);
        assert_eq!(honest[..4], [0x24, 1, 6, 0xec]);
        assert_eq!(honest[12..16], *b"TEST");
        assert_eq!(honest[24..32], transmit);
        assert_eq!(honest[32..40], [0xed, 0, 0x37, 0x80, 0, 0, 0, 0]);
        assert_eq!(honest[40..48], honest[32..40]);

        let kiss = reply(&request(transmit), time, time, Answer::KissOfDeath(*b"RATE"));
        assert_eq!((kiss[0] >> 6, kiss[1], &kiss[12..16]), (3, 0, &b"RATE"[..]));
        let spoof = reply(&request(transmit), time, time, Answer::WrongOriginate);
        assert_ne!(spoof[24..32], transmit);
        let unsynchronised = reply(&request(transmit), time, time, Answer::Unsynchronised);
        assert_eq!(unsynchronised[0], 0xe4);
    }

    #[test]
    fn the_server_answers_and_counts_over_udp() {
        let time = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let server =
            Server::start("127.0.0.1:0".parse().unwrap(), ServerClock::Fixed(time)).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        client.send_to(&request([9; 8]), server.address()).unwrap();
        let mut buffer = [0u8; 100];
        let (length, from) = client.recv_from(&mut buffer).unwrap();
        assert_eq!((length, from), (48, server.address()));
        assert_eq!(buffer[24..32], [9; 8]);
        assert_eq!(buffer[40..44], [0xed, 0, 0x37, 0x80]);
        // Not a client request: no answer, not counted.
        client.send_to(&[0x24; 48], server.address()).unwrap();
        server.set_answer(Answer::FromAnotherPort);
        client.send_to(&request([9; 8]), server.address()).unwrap();
        let (_, from) = client.recv_from(&mut buffer).unwrap();
        assert_eq!(from.ip(), server.address().ip());
        assert_ne!(from.port(), server.address().port());
        assert_eq!(server.requests(), 2);
        // A server that jumps: 2100-01-01.
        server.set_answer(Answer::Honest);
        server.set_clock(ServerClock::Fixed(UNIX_EPOCH + Duration::from_secs(4_102_444_800)));
        client.send_to(&request([9; 8]), server.address()).unwrap();
        client.recv_from(&mut buffer).unwrap();
        assert_eq!(buffer[40..44], 4_102_444_800u32.wrapping_add(2_208_988_800).to_be_bytes());
    }
}
