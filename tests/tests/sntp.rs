//! machined's SNTP client against this crate's test server: two implementations of the
//! protocol that share no code, so a mistake in one shows in the other. And machined's
//! synchroniser, on a clock of the test's own, against servers that jump.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_tests::sntp::{Answer, Server, ServerClock};
use machined::time::clock::{Clock, ClockError, Offset};
use machined::time::discipline::Others;
use machined::time::floor::Floor;
use machined::time::sntp::{self, Refusal, SntpError};
use machined::time::sync::{Synced, Synchroniser};

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

/// 2100-01-01T00:00:00Z.
const YEAR_2100: u64 = 4_102_444_800;

/// The host's clock moved by the steps it is given; the host's own is never touched.
struct TestClock {
    /// How far it is ahead of the host's clock.
    ahead: Mutex<Offset>,
}

impl TestClock {
    fn behind_host_by(by: Duration) -> TestClock {
        TestClock { ahead: Mutex::new(Offset::from_nanos(-(by.as_nanos() as i64))) }
    }

    /// How far the clock is from the host's, in nanoseconds.
    fn off_host(&self) -> i64 {
        self.ahead.lock().unwrap().as_nanos()
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        self.ahead.lock().unwrap().applied_to(SystemTime::now()).unwrap()
    }

    fn step(&self, offset: Offset) -> Result<(), ClockError> {
        let mut ahead = self.ahead.lock().unwrap();
        *ahead = Offset::from_nanos(ahead.as_nanos() + offset.as_nanos());
        Ok(())
    }

    fn slew(&self, _: Offset) -> Result<(), ClockError> {
        Ok(())
    }
}

fn synchroniser(clock: TestClock, floor: &Path) -> Synchroniser<TestClock> {
    Synchroniser::new(clock, None, floor.into(), Duration::from_secs(2))
}

/// The recorded floor, in seconds since 1970.
fn floor_seconds(path: &Path) -> Option<u64> {
    let floor = Floor::read(path).unwrap()?;
    Some(floor.time.duration_since(UNIX_EPOCH).unwrap().as_secs())
}

fn host_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn stepped(synced: &Synced) -> bool {
    matches!(synced.decision.correction, Some((machined::time::clock::Correction::Step(_), _)))
}

fn floor_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("time-floor");
    (dir, path)
}

#[tokio::test]
async fn a_lone_server_that_jumps_to_2100_moves_neither_the_clock_nor_the_floor() {
    let server = Server::start(loopback(), ServerClock::Ahead(Duration::ZERO)).unwrap();
    let servers = [server.address().to_string()];
    let (_dir, floor) = floor_path();
    let mut sync = synchroniser(TestClock::behind_host_by(HOUR), &floor);

    // The first sync steps to the server, but one server's step is no floor yet.
    let first = sync.sync(&servers).await.unwrap();
    assert!(stepped(&first), "{:?}", first.decision);
    assert_near(sync.clock().off_host(), 0);
    assert!(first.floor.is_none() && !floor.exists(), "{:?}", first.floor);
    // The next sync agrees with the clock: confirmed, recorded.
    let second = sync.sync(&servers).await.unwrap();
    assert!(matches!(second.floor, Some(Ok(_))), "{:?}", second.floor);
    let recorded = floor_seconds(&floor).unwrap();
    assert!(recorded.abs_diff(host_seconds()) < 5, "{recorded}");

    server.set_clock(ServerClock::Fixed(UNIX_EPOCH + Duration::from_secs(YEAR_2100)));
    let jump = sync.sync(&servers).await.unwrap();
    assert_eq!(jump.decision.correction, None);
    let refused = jump.decision.refused.expect("the jump is refused");
    assert_eq!(refused.others, Others::NoneConfigured);
    assert!(refused.to_string().contains("only server configured"), "{refused}");
    assert_near(sync.clock().off_host(), 0);
    assert_eq!(floor_seconds(&floor), Some(recorded));
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn a_jump_after_the_first_sync_needs_two_distinct_servers_that_agree() {
    let a = Server::start(loopback(), ServerClock::Ahead(Duration::ZERO)).unwrap();
    // Another address: two ports of one host are one server.
    let b =
        Server::start("127.0.0.2:0".parse().unwrap(), ServerClock::Ahead(Duration::ZERO)).unwrap();
    let servers = [a.address().to_string(), b.address().to_string()];
    let (_dir, floor) = floor_path();
    let mut sync = synchroniser(TestClock::behind_host_by(Duration::ZERO), &floor);
    // A clock that already agrees with the first server is confirmed at once.
    let first = sync.sync(&servers).await.unwrap();
    assert!(matches!(first.floor, Some(Ok(_))), "{:?}", first.floor);
    let recorded = floor_seconds(&floor).unwrap();

    // `a` jumps, `b` does not: the clock follows `b`, and the jump is reported.
    let year_2100 = ServerClock::Fixed(UNIX_EPOCH + Duration::from_secs(YEAR_2100));
    a.set_clock(year_2100);
    let outvoted = sync.sync(&servers).await.unwrap();
    let (_, followed) = outvoted.decision.correction.as_ref().unwrap();
    assert_eq!(followed.sample.server, b.address());
    let refused = outvoted.decision.refused.as_ref().expect("the jump is reported");
    assert!(matches!(refused.others, Others::Disagree(_)), "{refused}");
    assert_near(sync.clock().off_host(), 0);
    assert_eq!(floor_seconds(&floor), Some(recorded));

    // Both jump: two distinct servers agree, and the clock and the floor follow.
    b.set_clock(year_2100);
    let agreed = sync.sync(&servers).await.unwrap();
    assert!(stepped(&agreed) && agreed.decision.refused.is_none(), "{:?}", agreed.decision);
    assert!(sync.clock().now() >= UNIX_EPOCH + Duration::from_secs(YEAR_2100 - 5));
    assert!(matches!(agreed.floor, Some(Ok(_))), "{:?}", agreed.floor);
    assert!(floor_seconds(&floor).unwrap().abs_diff(YEAR_2100) < 5);
}
