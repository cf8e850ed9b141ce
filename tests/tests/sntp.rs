//! machined's SNTP client against this crate's test server: two implementations of the
//! protocol that share no code, so a mistake in one shows in the other.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_tests::sntp::{Answer, Server, ServerClock};
use machined::time::sntp::{self, Refusal, SntpError};

const HOUR: Duration = Duration::from_secs(3600);
/// Loopback round trips are well under this, even on a loaded machine.
const TOLERANCE_NANOS: i64 = 250_000_000;
const SECOND: i64 = 1_000_000_000;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn assert_near(nanos: i64, expected: i64) {
    assert!((nanos - expected).abs() < TOLERANCE_NANOS, "{nanos} ns, expected {expected} ns");
}

#[tokio::test]
async fn offsets_of_servers_ahead_and_behind() {
    for (clock, expected) in
        [(ServerClock::Ahead(HOUR), 3600 * SECOND), (ServerClock::Behind(HOUR), -3600 * SECOND)]
    {
        let server = Server::start(loopback(), clock).unwrap();
        let sample = sntp::query(server.address(), Duration::from_secs(5)).await.unwrap();
        assert_near(sample.offset.as_nanos(), expected);
        assert!(sample.delay < Duration::from_millis(250), "{:?}", sample.delay);
        assert_eq!((sample.server, sample.stratum), (server.address(), 1));
        assert_eq!(server.requests(), 1);
    }
}

#[tokio::test]
async fn a_server_past_the_2036_wrap() {
    // 2040-01-01: NTP's 32-bit seconds have wrapped; the client must not read 1904.
    let then = UNIX_EPOCH + Duration::from_secs(2_208_988_800);
    let server = Server::start(loopback(), ServerClock::Fixed(then)).unwrap();
    let before = SystemTime::now();
    let sample = sntp::query(server.address(), Duration::from_secs(5)).await.unwrap();
    let expected = then.duration_since(before).unwrap().as_nanos() as i64;
    assert_near(sample.offset.as_nanos(), expected);
}

#[tokio::test]
async fn over_ipv6_and_by_name() {
    let server = Server::start("[::1]:0".parse().unwrap(), ServerClock::Ahead(HOUR)).unwrap();
    let name = format!("[::1]:{}", server.address().port());
    let sample = sntp::query_first(&[name], Duration::from_secs(5)).await.unwrap();
    assert_near(sample.offset.as_nanos(), 3600 * SECOND);

    let server = Server::start(loopback(), ServerClock::Behind(HOUR)).unwrap();
    let name = format!("localhost:{}", server.address().port());
    let addresses = sntp::resolve(&name).await.unwrap();
    assert!(addresses.contains(&server.address()), "{addresses:?}");
    let sample = sntp::query_first(&[name], Duration::from_secs(5)).await.unwrap();
    assert_near(sample.offset.as_nanos(), -3600 * SECOND);
}

/// The refusal a server answering as `answer` gets, and how long the query took.
async fn refused(answer: Answer, timeout: Duration) -> (SntpError, Duration) {
    let server = Server::start_answering(loopback(), ServerClock::Ahead(HOUR), answer).unwrap();
    let started = Instant::now();
    let error = sntp::query(server.address(), timeout).await.unwrap_err();
    assert_eq!(server.requests(), 1, "{answer:?}");
    (error, started.elapsed())
}

#[tokio::test]
async fn a_wrong_originate_timestamp_is_refused() {
    let timeout = Duration::from_millis(500);
    let (error, took) = refused(Answer::WrongOriginate, timeout).await;
    assert!(matches!(error, SntpError::Refused { reason: Refusal::Originate, .. }), "{error}");
    // Ignored rather than final: a spoofer cannot cut a query short.
    assert!(took >= timeout, "{took:?}");
    assert!(error.to_string().contains("does not echo our transmit timestamp"), "{error}");
}

#[tokio::test]
async fn a_kiss_of_death_is_refused_with_its_code() {
    let (error, _) = refused(Answer::KissOfDeath(*b"RATE"), Duration::from_secs(5)).await;
    let SntpError::Refused { reason: Refusal::KissOfDeath { code }, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(code, "RATE");
    assert!(error.to_string().contains("kiss-o'-death \"RATE\""), "{error}");
}

#[tokio::test]
async fn an_unsynchronised_server_is_refused() {
    let (error, _) = refused(Answer::Unsynchronised, Duration::from_secs(5)).await;
    assert!(matches!(error, SntpError::Refused { reason: Refusal::Unsynchronised, .. }), "{error}");
}

#[tokio::test]
async fn silence_and_replies_from_elsewhere_time_out() {
    for answer in [Answer::Silent, Answer::FromAnotherPort] {
        let timeout = Duration::from_millis(300);
        let (error, took) = refused(answer, timeout).await;
        assert!(matches!(error, SntpError::Timeout { .. }), "{answer:?}: {error}");
        assert!(took >= timeout && took < timeout + Duration::from_secs(5), "{answer:?}: {took:?}");
        assert!(error.to_string().contains("no reply within 300ms"), "{error}");
    }
}

#[tokio::test]
async fn the_next_server_is_asked_when_one_fails() {
    let silent =
        Server::start_answering(loopback(), ServerClock::Ahead(HOUR), Answer::Silent).unwrap();
    let good = Server::start(loopback(), ServerClock::Ahead(HOUR)).unwrap();
    let servers = [silent.address().to_string(), good.address().to_string()];
    let sample = sntp::query_first(&servers, Duration::from_millis(300)).await.unwrap();
    assert_eq!(sample.server, good.address());
    assert_eq!((silent.requests(), good.requests()), (1, 1));
}
