//! Figures, not assertions: one configured machined under the load of the security issue.
//! 1000 idle strangers hold connections open without a certificate, 1000 clients call
//! `Version` over mutual TLS at once, and an admin calls `Version` every 100 ms through it
//! all. Prints latencies, refusals and machined's memory. Run with
//! `cargo bench -p cairn-tests --bench load`.
//!
//! machined limits connections per source address (machined/src/api/connection.rs), so the
//! sources are spread the way a real fleet's would be: the clients over 64 loopback addresses
//! (127.0.1.x, at most 16 each, so no client meets a per-address limit), the strangers over
//! four (127.0.2.x, 250 each, so the per-address limits refuse most of them: the defence
//! measured here), and the admin on one of its own (127.0.3.1). All of 127.0.0.0/8 is
//! loopback on Linux, so binding these needs no setup.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cairn_api::machine::machine_service_client::MachineServiceClient;
use cairn_api::machine::VersionRequest;
use cairn_tests::{proc_status_kib, Cluster, Node};
use ctl::connect::mutual_tls;
use ctl::ctlconfig::CtlConfig;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Barrier};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

/// Clients calling `Version` over mutual TLS, each on a connection of its own.
const CLIENTS: usize = 1000;
/// Source addresses the clients are spread over: 127.0.1.1 and up.
const CLIENT_SOURCES: usize = 64;
/// `Version` calls each client makes, one after the other, once all have connected.
const CALLS_PER_CLIENT: usize = 10;
/// A client refused at connect tries again (with backoff) until this long after it started.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// Idle strangers: connections that never send a byte (even ones) or that send a
/// ClientHello without a certificate to follow and then sit (odd ones).
const STRANGERS: usize = 1000;
/// Source addresses the strangers are spread over: 127.0.2.1 and up.
const STRANGER_SOURCES: usize = 4;
/// A stranger reconnects this long after the server closed its connection (an immediate
/// reconnect would measure an accept flood, a different attack).
const STRANGER_RECONNECT: Duration = Duration::from_secs(1);
/// A stranger's connection the server keeps longer than this counts as held, not refused.
const HELD_AFTER: Duration = Duration::from_secs(1);
/// machined drops a handshake that has not finished by then (machined/src/api/server.rs).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The strangers get this head start, to fill the places they can take before clients come.
const STRANGER_HEAD_START: Duration = Duration::from_secs(2);
/// Strangers and admin run at least this long, so strangers see two handshake timeouts.
const LOAD_MIN: Duration = Duration::from_secs(25);
/// The admin's source address.
const ADMIN_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 3, 1);
/// The admin calls `Version` this often (a tick missed while a call is slow is skipped).
const ADMIN_INTERVAL: Duration = Duration::from_millis(100);
/// An admin call without an answer by then counts as failed.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// A client call without an answer by then counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long TCP, TLS and HTTP/2 together may take to come up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for machined to settle before the idle figure and after the load.
const SETTLE: Duration = Duration::from_secs(3);
/// machined's memory and descriptors are sampled this often.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

type Api = MachineServiceClient<Channel>;

fn main() -> anyhow::Result<()> {
    let cluster = Cluster::generate("bench")?;
    let reader_tls = tls_of(&cluster.client("os:reader"))?;
    let admin_tls = tls_of(&cluster.admin())?;
    let node = Node::start()?;
    node.configure(&cluster.path("node.yaml"));
    std::thread::sleep(SETTLE);
    let pid = node.pid().context("machined is not running")?;
    let port = node.address.rsplit_once(':').context("address without a port")?.1.parse()?;
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    let idle_rss = rss_kib(pid);
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(load(target, pid, reader_tls, admin_tls))?;
    // Dropping the runtime closes every connection the load left open.
    drop(runtime);
    std::thread::sleep(SETTLE);
    let after = (rss_kib(pid), open_fds(pid));
    report.print(idle_rss, after);
    println!(
        "load phase {:.1} s; {:.1} s from the configured node to these figures",
        report.load_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Mutual-TLS settings from a ctlconfig's current context.
fn tls_of(path: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let config = CtlConfig::load(path)?;
    mutual_tls(config.context(path, None)?)
}

/// What one run measured.
struct Report {
    strangers: StrangerCounts,
    clients: Vec<ClientReport>,
    /// From the first client's start to the last one's end.
    burst: (Instant, Instant),
    admin: Vec<AdminCall>,
    peak: Peak,
    load_time: Duration,
}

async fn load(
    target: SocketAddr,
    pid: u32,
    reader_tls: Arc<ClientConfig>,
    admin_tls: Arc<ClientConfig>,
) -> anyhow::Result<Report> {
    let load_started = Instant::now();
    let counts = Arc::new(StrangerCounts::default());
    let sampler = Sampler::start(pid, counts.clone());
    let (stop, stopped) = watch::channel(());

    let hello: Arc<[u8]> = client_hello()?.into();
    let strangers: Vec<_> = (0..STRANGERS)
        .map(|i| {
            let source = Ipv4Addr::new(127, 0, 2, (i % STRANGER_SOURCES) as u8 + 1);
            let hello = (i % 2 == 1).then(|| hello.clone());
            tokio::spawn(stranger(source, target, hello, counts.clone(), stopped.clone()))
        })
        .collect();
    tokio::time::sleep(STRANGER_HEAD_START).await;

    let admin = tokio::spawn(admin(target, admin_tls, stopped.clone()));
    tokio::time::sleep(ADMIN_INTERVAL * 5).await;

    let burst_started = Instant::now();
    let connected = Arc::new(Barrier::new(CLIENTS));
    let done = Arc::new(Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(client(i, target, reader_tls.clone(), connected.clone(), done.clone()))
        })
        .collect();
    let mut clients = Vec::with_capacity(CLIENTS);
    for task in tasks {
        clients.push(task.await?);
    }
    let burst = (burst_started, Instant::now());

    tokio::time::sleep_until((load_started + LOAD_MIN).into()).await;
    drop(stop);
    for task in strangers {
        task.await?;
    }
    let admin = admin.await?;
    let load_time = load_started.elapsed();
    let peak = sampler.stop();
    let strangers = Arc::try_unwrap(counts).ok().context("a stranger outlived the load")?;
    Ok(Report { strangers, clients, burst, admin, peak, load_time })
}

/// Opens a gRPC client to `target` from `source`: `ctl::connect::connect`'s shape, with the
/// socket bound first. The serving certificate names 127.0.0.1.
async fn connect_from(
    source: Ipv4Addr,
    target: SocketAddr,
    tls: Arc<ClientConfig>,
) -> anyhow::Result<Api> {
    let endpoint =
        Endpoint::from_shared(format!("http://{target}"))?.connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let tls = tls.clone();
            async move {
                let tcp = open(source, target).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::from(std::net::IpAddr::from(Ipv4Addr::LOCALHOST));
                let stream = TlsConnector::from(tls).connect(name, tcp).await?;
                Ok::<_, io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(MachineServiceClient::new(channel))
}

/// A TCP connection to `target` from `source`.
async fn open(source: Ipv4Addr, target: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))?
}

/// What one client saw.
struct ClientReport {
    /// Failed connection attempts, why.
    connect_errors: Vec<String>,
    /// TCP + TLS + HTTP/2 of the attempt that succeeded.
    handshake: Option<Duration>,
    /// From the client's start to connected, retries included.
    ready: Option<Duration>,
    calls: Vec<Duration>,
    call_errors: Vec<String>,
    calls_started: Instant,
    calls_finished: Instant,
}

/// Connects (retrying when refused), waits for every client to be done connecting, makes
/// its calls, and keeps its connection until every client is done calling.
async fn client(
    index: usize,
    target: SocketAddr,
    tls: Arc<ClientConfig>,
    connected: Arc<Barrier>,
    done: Arc<Barrier>,
) -> ClientReport {
    let source = Ipv4Addr::new(127, 0, 1, (index % CLIENT_SOURCES) as u8 + 1);
    let started = Instant::now();
    let (mut connect_errors, mut handshake, mut ready, mut api) = (Vec::new(), None, None, None);
    for attempt in 0.. {
        let attempt_started = Instant::now();
        match connect_from(source, target, tls.clone()).await {
            Ok(connected) => {
                handshake = Some(attempt_started.elapsed());
                ready = Some(started.elapsed());
                api = Some(connected);
                break;
            }
            Err(e) => connect_errors.push(brief(&e)),
        }
        if started.elapsed() > CONNECT_DEADLINE {
            break;
        }
        tokio::time::sleep(backoff(index, attempt)).await;
    }
    connected.wait().await;

    let calls_started = Instant::now();
    let (mut calls, mut call_errors) = (Vec::new(), Vec::new());
    if let Some(api) = api.as_mut() {
        for _ in 0..CALLS_PER_CLIENT {
            let call_started = Instant::now();
            match tokio::time::timeout(CALL_TIMEOUT, api.version(VersionRequest::default())).await {
                Ok(Ok(_)) => calls.push(call_started.elapsed()),
                Ok(Err(status)) => {
                    call_errors.push(format!("{:?}: {}", status.code(), status.message()))
                }
                Err(_) => call_errors.push(format!("no answer within {CALL_TIMEOUT:?}")),
            }
        }
    }
    let calls_finished = Instant::now();
    done.wait().await;
    ClientReport {
        connect_errors,
        handshake,
        ready,
        calls,
        call_errors,
        calls_started,
        calls_finished,
    }
}

/// 50 ms doubling to 1.6 s, plus up to 100 ms spread so refused clients do not return
/// together.
fn backoff(index: usize, attempt: u32) -> Duration {
    let base = 50u64 << attempt.min(5);
    let spread = (index as u64 * 7919 + u64::from(attempt) * 104_729) % 100;
    Duration::from_millis(base + spread)
}

/// One admin call: when, and its latency or why it failed.
struct AdminCall {
    at: Instant,
    outcome: Result<Duration, String>,
}

/// Calls `Version` every `ADMIN_INTERVAL` on a connection of its own (made again when lost)
/// until `stop` changes.
async fn admin(
    target: SocketAddr,
    tls: Arc<ClientConfig>,
    mut stop: watch::Receiver<()>,
) -> Vec<AdminCall> {
    let mut api: Option<Api> = None;
    let mut ticks = tokio::time::interval(ADMIN_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut calls = Vec::new();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return calls,
        }
        let at = Instant::now();
        let outcome =
            match tokio::time::timeout(ADMIN_TIMEOUT, admin_call(&mut api, target, &tls)).await {
                Ok(Ok(())) => Ok(at.elapsed()),
                Ok(Err(e)) => Err(brief(&e)),
                Err(_) => Err(format!("no answer within {ADMIN_TIMEOUT:?}")),
            };
        if outcome.is_err() {
            api = None;
        }
        calls.push(AdminCall { at, outcome });
    }
}

async fn admin_call(
    api: &mut Option<Api>,
    target: SocketAddr,
    tls: &Arc<ClientConfig>,
) -> anyhow::Result<()> {
    if api.is_none() {
        *api = Some(connect_from(ADMIN_SOURCE, target, tls.clone()).await?);
    }
    api.as_mut().context("connected")?.version(VersionRequest::default()).await?;
    Ok(())
}

/// What the strangers saw, counted as they go.
#[derive(Default)]
struct StrangerCounts {
    opened: AtomicUsize,
    connect_failed: AtomicUsize,
    /// Closed by the server within `HELD_AFTER`.
    refused: AtomicUsize,
    /// Closed by the server around the handshake timeout.
    timed_out: AtomicUsize,
    /// Closed by the server at some other time.
    closed_otherwise: AtomicUsize,
    /// Connections open longer than `HELD_AFTER`, now: in machined's handshake, or still
    /// in the kernel's accept queue when machined's accept loop falls behind.
    held: AtomicUsize,
}

/// A ClientHello with no certificate to follow (rustls gives the same for any client).
fn client_hello() -> anyhow::Result<Vec<u8>> {
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
    let name = ServerName::from(std::net::IpAddr::from(Ipv4Addr::LOCALHOST));
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name)?;
    let mut hello = Vec::new();
    connection.write_tls(&mut hello)?;
    Ok(hello)
}

/// Holds a connection open from `source`, sending nothing after `hello` (if any), and opens
/// another `STRANGER_RECONNECT` after the server closes it, until `stop` changes.
async fn stranger(
    source: Ipv4Addr,
    target: SocketAddr,
    hello: Option<Arc<[u8]>>,
    counts: Arc<StrangerCounts>,
    mut stop: watch::Receiver<()>,
) {
    loop {
        let opened = tokio::select! {
            opened = open(source, target) => opened,
            _ = stop.changed() => return,
        };
        let Ok(mut tcp) = opened else {
            counts.connect_failed.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::time::sleep(STRANGER_RECONNECT) => continue,
                _ = stop.changed() => return,
            }
        };
        counts.opened.fetch_add(1, Ordering::Relaxed);
        let since = Instant::now();
        let mut held = false;
        let mut stopping = false;
        // A failed write means the server closed already: refused, as below.
        if tcp.write_all(hello.as_deref().unwrap_or_default()).await.is_ok() {
            let mark = tokio::time::sleep(HELD_AFTER);
            tokio::pin!(mark);
            let mut buffer = [0u8; 4096];
            loop {
                tokio::select! {
                    read = tcp.read(&mut buffer) => match read {
                        Ok(0) | Err(_) => break,
                        // The server's half of the handshake: never answered.
                        Ok(_) => {}
                    },
                    _ = &mut mark, if !held => {
                        held = true;
                        counts.held.fetch_add(1, Ordering::Relaxed);
                    }
                    _ = stop.changed() => {
                        stopping = true;
                        break;
                    }
                }
            }
        }
        if held {
            counts.held.fetch_sub(1, Ordering::Relaxed);
        }
        if stopping {
            return;
        }
        let lasted = since.elapsed();
        let kind = if lasted < HELD_AFTER {
            &counts.refused
        } else if lasted >= HANDSHAKE_TIMEOUT - Duration::from_secs(1) {
            &counts.timed_out
        } else {
            &counts.closed_otherwise
        };
        kind.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(STRANGER_RECONNECT) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The highest figures seen while sampling.
#[derive(Debug, Default, Clone, Copy)]
struct Peak {
    rss_kib: u64,
    fds: usize,
    strangers_held: usize,
}

/// Samples machined's memory and descriptors, and the strangers held, on a thread of its own
/// (so a busy runtime cannot delay it).
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Peak>,
}

impl Sampler {
    fn start(pid: u32, counts: Arc<StrangerCounts>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = Peak::default();
            while !stopping.load(Ordering::Relaxed) {
                peak.rss_kib = peak.rss_kib.max(rss_kib(pid));
                peak.fds = peak.fds.max(open_fds(pid));
                peak.strangers_held = peak.strangers_held.max(counts.held.load(Ordering::Relaxed));
                std::thread::sleep(SAMPLE_INTERVAL);
            }
            peak
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> Peak {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS").unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(Iterator::count).unwrap_or(0)
}

/// An error on one line, cut short.
fn brief(error: &anyhow::Error) -> String {
    format!("{error:#}").chars().take(120).collect()
}

impl Report {
    fn print(&self, idle_rss: u64, (after_rss, after_fds): (u64, usize)) {
        let s = &self.strangers;
        let count = |n: &AtomicUsize| n.load(Ordering::Relaxed);
        println!(
            "idle strangers: {STRANGERS} on {STRANGER_SOURCES} addresses (half silent, half \
             stopped after a ClientHello), reconnecting {STRANGER_RECONNECT:?} after each close"
        );
        println!(
            "  {} connections opened: {} refused at once, {} held until the handshake timeout, \
             {} closed otherwise (after 1-9 s); {} TCP connects failed; at most {} open over 1 s at \
             once (in a handshake, or waiting in the accept queue)",
            count(&s.opened),
            count(&s.refused),
            count(&s.timed_out),
            count(&s.closed_otherwise),
            count(&s.connect_failed),
            self.peak.strangers_held
        );

        let connected = self.clients.iter().filter(|c| c.handshake.is_some()).count();
        let first_try =
            self.clients.iter().filter(|c| c.handshake.is_some() && c.connect_errors.is_empty());
        let refused: Vec<&String> = self.clients.iter().flat_map(|c| &c.connect_errors).collect();
        let refused_clients = self.clients.iter().filter(|c| !c.connect_errors.is_empty()).count();
        println!("mTLS clients: {CLIENTS} on {CLIENT_SOURCES} addresses");
        println!(
            "  {connected} connected ({} at the first attempt), {} never; {} clients refused at \
             least once, {} failed attempts in all{}",
            first_try.count(),
            CLIENTS - connected,
            refused_clients,
            refused.len(),
            most_common(refused)
        );
        let handshakes: Vec<Duration> = self.clients.iter().filter_map(|c| c.handshake).collect();
        let ready: Vec<Duration> = self.clients.iter().filter_map(|c| c.ready).collect();
        println!("  connect (TCP + TLS + HTTP/2), successful attempt: {}", summary(handshakes));
        println!("  connected, from the client's start (retries included): {}", summary(ready));

        let calls: Vec<Duration> = self.clients.iter().flat_map(|c| c.calls.clone()).collect();
        let call_errors: Vec<&String> = self.clients.iter().flat_map(|c| &c.call_errors).collect();
        let calls_started = self.clients.iter().map(|c| c.calls_started).min();
        let calls_finished = self.clients.iter().map(|c| c.calls_finished).max();
        let span = match (calls_started, calls_finished) {
            (Some(start), Some(end)) => end - start,
            _ => Duration::ZERO,
        };
        println!(
            "  Version under load ({CALLS_PER_CLIENT} per client, back to back): {} answered, {} \
             failed{}; {:.0} calls/s over {:.1} s",
            calls.len(),
            call_errors.len(),
            most_common(call_errors),
            calls.len() as f64 / span.as_secs_f64().max(f64::EPSILON),
            span.as_secs_f64()
        );
        println!("  latency: {}", summary(calls));

        let (start, end) = self.burst;
        let during: Vec<&AdminCall> =
            self.admin.iter().filter(|c| c.at >= start && c.at <= end).collect();
        println!(
            "admin (Version every {ADMIN_INTERVAL:?}, own connection, {ADMIN_TIMEOUT:?} timeout)"
        );
        println!(
            "  during the client burst ({:.1} s): {}",
            (end - start).as_secs_f64(),
            admin_summary(&during)
        );
        println!("  whole load phase: {}", admin_summary(&self.admin.iter().collect::<Vec<_>>()));

        println!(
            "machined VmRSS: {idle_rss} KiB idle before, {} KiB peak during, {after_rss} KiB \
             {SETTLE:?} after; open descriptors: {} at most, {after_fds} after",
            self.peak.rss_kib, self.peak.fds
        );
    }
}

fn admin_summary(calls: &[&AdminCall]) -> String {
    let answered: Vec<Duration> = calls.iter().filter_map(|c| c.outcome.clone().ok()).collect();
    let failures: Vec<&String> = calls.iter().filter_map(|c| c.outcome.as_ref().err()).collect();
    format!(
        "{}/{} answered{}; {}",
        answered.len(),
        calls.len(),
        most_common(failures),
        summary(answered)
    )
}

/// Nearest-rank percentile of sorted `times`.
fn percentile(times: &[Duration], p: usize) -> Duration {
    if times.is_empty() {
        return Duration::ZERO;
    }
    let rank = (times.len() * p).div_ceil(100);
    times[rank.saturating_sub(1).min(times.len() - 1)]
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
        ms(percentile(&times, 50)),
        ms(percentile(&times, 90)),
        ms(percentile(&times, 99)),
        ms(times.last().copied().unwrap_or_default()),
        times.len()
    )
}

/// ` (most often: "why" ×N)`, or nothing when there were no errors.
fn most_common(errors: Vec<&String>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for error in errors {
        *counts.entry(error).or_default() += 1;
    }
    match counts.into_iter().max_by_key(|(_, n)| *n) {
        Some((why, n)) => format!(" (most often: {why:?} ×{n})"),
        None => String::new(),
    }
}
