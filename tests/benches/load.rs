//! Figures, not assertions: one configured machined under the load of the security issue.
//! 1000 idle strangers hold connections open without a certificate, 1000 clients call
//! `Version` over mutual TLS at once, and an admin calls `Version` every 100 ms through it
//! all. Then the attacks of the second review, one at a time, each with the admin calling
//! through it: readers' requests that never finish, 16 networks of silent connections, 10
//! networks of kernel-log streams. Prints latencies, refusals and machined's peak memory and
//! descriptors under each. Run with `cargo bench -p cairn-tests --bench load`.
//!
//! machined limits connections per source network, a /24 (machined/src/api/places.rs), so the
//! sources are spread the way a real fleet's would be: the clients over 64 networks
//! (127.10.0.1 to 127.73.0.1, at most 16 each, so no client meets a per-network limit), the
//! strangers over four (127.2.0.1 to 127.5.0.1, 250 each, so the per-network limits refuse
//! most of them: the defence measured here), and the admin on one of its own (127.200.0.1).
//! All of 127.0.0.0/8 is loopback on Linux, so binding these needs no setup.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cairn_api::machine::VersionRequest;
use cairn_tests::attack::{self, connect_from, open, Api, SilentCounts};
use cairn_tests::{proc_status_kib, Cluster, Node};
use ctl::connect::mutual_tls;
use ctl::ctlconfig::CtlConfig;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Barrier};

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
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long each attack of the second review runs, the admin calling through it.
const ATTACK_TIME: Duration = Duration::from_secs(10);
const METHODS: &str = "/cairn.machine.v1alpha1.MachineService/";
/// The strangers get this head start, to fill the places they can take before clients come.
const STRANGER_HEAD_START: Duration = Duration::from_secs(2);
/// Strangers and admin run at least this long, so strangers see two handshake timeouts.
const LOAD_MIN: Duration = Duration::from_secs(25);
/// The admin's source address.
const ADMIN_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 200, 0, 1);
/// The admin calls `Version` this often (a tick missed while a call is slow is skipped).
const ADMIN_INTERVAL: Duration = Duration::from_millis(100);
/// An admin call without an answer by then counts as failed.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// A client call without an answer by then counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for machined to settle before the idle figure and after the load.
const SETTLE: Duration = Duration::from_secs(3);
/// machined's memory and descriptors are sampled this often.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

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
    let report = runtime.block_on(load(target, pid, reader_tls.clone(), admin_tls.clone()))?;
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

    println!(
        "\nattacks, one at a time, {ATTACK_TIME:?} each (admin calls every {ADMIN_INTERVAL:?}):"
    );
    let idle_rss = rss_kib(pid);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let phases = [
        runtime.block_on(attack_phase(
            "unfinished requests",
            (target, pid),
            admin_tls.clone(),
            unfinished_requests(target, reader_tls.clone()),
        ))?,
        runtime.block_on(attack_phase(
            "silent connections",
            (target, pid),
            admin_tls.clone(),
            silent_connections(target),
        ))?,
        runtime.block_on(attack_phase(
            "kernel-log streams",
            (target, pid),
            admin_tls,
            kernel_log_streams(target, reader_tls),
        ))?,
    ];
    drop(runtime);
    for phase in &phases {
        phase.print(idle_rss);
    }
    Ok(())
}

/// What one attack cost the node, and what the admin saw meanwhile.
struct AttackFigures {
    name: &'static str,
    detail: String,
    peak: Peak,
    admin: Vec<AdminCall>,
}

impl AttackFigures {
    fn print(&self, idle_rss: u64) {
        println!("{}: {}", self.name, self.detail);
        println!(
            "  machined VmRSS {} KiB at most (idle {idle_rss} KiB), {} descriptors at most; admin: {}",
            self.peak.rss_kib,
            self.peak.fds,
            admin_summary(&self.admin.iter().collect::<Vec<_>>())
        );
    }
}

/// Runs the attack `start` begins for [`ATTACK_TIME`], the admin calling through it.
async fn attack_phase<G>(
    name: &'static str,
    (target, pid): (SocketAddr, u32),
    admin_tls: Arc<ClientConfig>,
    start: impl std::future::Future<Output = anyhow::Result<(G, String)>>,
) -> anyhow::Result<AttackFigures> {
    let sampler = Sampler::start(pid, Arc::new(StrangerCounts::default()));
    let (stop, stopped) = watch::channel(());
    let admin = tokio::spawn(admin(target, admin_tls, stopped));
    let (attack, detail) = start.await.with_context(|| format!("starting {name}"))?;
    tokio::time::sleep(ATTACK_TIME).await;
    drop(stop);
    let admin = admin.await?;
    let peak = sampler.stop();
    drop(attack);
    tokio::time::sleep(SETTLE).await;
    Ok(AttackFigures { name, detail, peak, admin })
}

/// Readers from 8 networks, 16 connections each, every stream a request whose body never
/// ends: a config-sized `ApplyConfiguration` (which readers may not make) or a `Read` as
/// large as it may be.
async fn unfinished_requests(
    target: SocketAddr,
    tls: Arc<ClientConfig>,
) -> anyhow::Result<(Vec<attack::PartialBodies>, String)> {
    let (mut floods, mut held, mut refused) = (Vec::new(), 0, 0);
    for network in 0..8u8 {
        let source = attack::source(100 + network, 1);
        for (method, declared) in [("ApplyConfiguration", 1 << 20), ("Read", 16 * 1024)] {
            let path = format!("{METHODS}{method}");
            let flood = attack::partial_bodies(
                source,
                target,
                tls.clone(),
                (8, 32),
                &path,
                (declared, declared / 2),
            )
            .await?;
            held += flood.open;
            refused += flood.refused.load(Ordering::Relaxed);
            floods.push(flood);
        }
    }
    let detail = format!(
        "8 reader networks × 16 connections × 32 streams (half ApplyConfiguration of 1 MiB, half Read of 16 KiB, each half sent): {held} held, {refused} refused"
    );
    Ok((floods, detail))
}

/// 16 networks × 16 TCP connections that never send a byte, reopened as soon as closed.
async fn silent_connections(
    target: SocketAddr,
) -> anyhow::Result<((watch::Sender<()>, Arc<SilentCounts>), String)> {
    let counts = Arc::new(SilentCounts::default());
    let (stop, stopped) = watch::channel(());
    for network in 0..16u8 {
        let source = attack::source(120 + network, 1);
        attack::silent_connections(source, target, 16, counts.clone(), stopped.clone());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let detail = format!(
        "16 networks × 16 silent connections, reopened when closed ({} opened in the first second)",
        counts.opened.load(Ordering::Relaxed)
    );
    Ok(((stop, counts), detail))
}

/// Readers from 10 networks, each asking for 48 `Dmesg --follow` streams.
async fn kernel_log_streams(
    target: SocketAddr,
    tls: Arc<ClientConfig>,
) -> anyhow::Result<(Vec<attack::KernelLogStreams>, String)> {
    let mut all = Vec::new();
    for network in 0..10u8 {
        let source = attack::source(140 + network, 1);
        all.push(attack::kernel_log_streams(source, target, tls.clone(), 48).await?);
    }
    let held: usize = all.iter().map(|s| s.open).sum();
    let refusals: Vec<&String> = all.iter().flat_map(|s| &s.refusals).collect();
    let detail = format!(
        "10 reader networks × 48 Dmesg --follow streams: {held} held, {} refused{}",
        refusals.len(),
        most_common(refusals)
    );
    Ok((all, detail))
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
            let source = attack::source(2 + (i % STRANGER_SOURCES) as u8, 1);
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
    let source = attack::source(10 + (index % CLIENT_SOURCES) as u8, 1);
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
            "idle strangers: {STRANGERS} on {STRANGER_SOURCES} networks (half silent, half \
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
        println!("mTLS clients: {CLIENTS} on {CLIENT_SOURCES} networks");
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
