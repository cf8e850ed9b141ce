//! The API's bounds under the attacks of the security review (issue 17), against a real
//! machined process: requests that never finish, connections that never speak, kernel-log
//! streams held open. Each checks what an attacker could do to the node, and that an admin
//! still gets in meanwhile. The attackers speak from loopback sources of their own
//! (`cairn_tests::attack`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_tests::attack::{self, SilentCounts};
use cairn_tests::{configured_node, ctl, proc_status_kib, Cluster, Node};
use ctl::connect::{insecure_tls, mutual_tls};
use ctl::ctlconfig::CtlConfig;
use tokio::sync::watch;

const APPLY: &str = "/cairn.machine.v1alpha1.MachineService/ApplyConfiguration";
/// machined may grow by this much, at most, under a flood of unfinished requests: the
/// budget of strangers' request bytes (8 MiB) with room for the connections themselves.
const FLOOD_GROWTH_LIMIT_KIB: u64 = 64 * 1024;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

fn target(node: &Node) -> SocketAddr {
    node.address.parse().unwrap()
}

fn rss_kib(node: &Node) -> u64 {
    proc_status_kib(node.pid().unwrap(), "VmRSS").unwrap()
}

fn open_fds(node: &Node) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", node.pid().unwrap())).unwrap().count()
}

fn tls_of(cluster: &Cluster, role: &str) -> Arc<rustls::ClientConfig> {
    let path = cluster.client(role);
    let config = CtlConfig::load(&path).unwrap();
    mutual_tls(config.context(&path, None).unwrap()).unwrap()
}

/// Samples machined's RSS until `stop` is dropped; returns the peak.
fn sample_peak(node: &Node) -> (watch::Sender<()>, std::thread::JoinHandle<u64>) {
    let pid = node.pid().unwrap();
    let (stop, stopped) = watch::channel(());
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while stopped.has_changed().is_ok() {
            peak = peak.max(proc_status_kib(pid, "VmRSS").unwrap_or(0));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    });
    (stop, sampler)
}

/// The finding: 64 connections × 32 streams of unfinished 1 MiB configs from one address
/// took a node in maintenance mode (no credentials needed) from 15 MB to 2.28 GB.
#[test]
fn unfinished_requests_from_strangers_stay_within_their_budget() {
    let node = Node::start().unwrap();
    let idle = rss_kib(&node);
    let (stop, sampler) = sample_peak(&node);
    let tls = insecure_tls(None).unwrap();
    let rt = runtime();
    let floods = rt.block_on(async {
        let mut floods = Vec::new();
        for network in 0..4u8 {
            let source = attack::source(20 + network, 1);
            let flood = attack::partial_bodies(
                source,
                target(&node),
                tls.clone(),
                (16, 32),
                APPLY,
                (1 << 20, 192 * 1024),
            )
            .await
            .unwrap();
            floods.push(flood);
        }
        floods
    });
    let held: Vec<usize> = floods.iter().map(|f| f.open).collect();
    drop(stop);
    let peak = sampler.join().unwrap();
    eprintln!("machined RSS: idle {idle} KiB, peak {peak} KiB under 2048 unfinished requests; streams held per network: {held:?}");
    // A network's share of the budget is two configs at their largest.
    assert!(held.iter().all(|&n| n <= 2), "streams held per network: {held:?}");
    assert!(
        peak < idle + FLOOD_GROWTH_LIMIT_KIB,
        "machined grew from {idle} KiB to {peak} KiB under the flood"
    );
    drop(floods);
    drop(rt);
    // The node still answers, and the memory the flood took is given back.
    ctl(None, &["--insecure", "-n", &node.address, "version"]).ok();
    let returned = cairn_tests::eventually(Duration::from_secs(20), || {
        rss_kib(&node) < idle + FLOOD_GROWTH_LIMIT_KIB / 4
    });
    assert!(
        returned,
        "machined stayed at {} KiB after the flood ended (idle: {idle} KiB)",
        rss_kib(&node)
    );
}

/// A reader may not apply a config, so its config-sized requests are refused before their
/// body is read: 8 readers' connections held a configured node at 292 MB.
#[test]
fn a_call_the_caller_may_not_make_is_refused_unread() {
    let (cluster, node) = configured_node();
    let idle = rss_kib(&node);
    let reader = tls_of(&cluster, "os:reader");
    let rt = runtime();
    let flood = rt.block_on(attack::partial_bodies(
        attack::source(30, 1),
        target(&node),
        reader,
        (8, 32),
        APPLY,
        (1 << 20, 192 * 1024),
    ));
    let flood = flood.unwrap();
    assert_eq!(flood.open, 0, "requests a reader may not make were read");
    assert_eq!(flood.refused.load(Ordering::Relaxed), 8 * 32);
    let after = rss_kib(&node);
    assert!(after < idle + 16 * 1024, "machined grew from {idle} KiB to {after} KiB");
    drop(flood);
    drop(rt);
    ctl(Some(&cluster.admin()), &["-n", &node.address, "version"]).ok();
}

/// The finding: 16 addresses × 16 connections that never send a byte filled the handshake
/// places, and an admin's `ctl version` failed 12 times of 12. Now the oldest silent
/// handshake gives way to the newest, and the silent ones come straight back.
#[test]
fn admins_get_in_while_sixteen_networks_hold_silent_connections() {
    let (cluster, node) = configured_node();
    let rt = runtime();
    let counts = Arc::new(SilentCounts::default());
    let (stop, stopped) = watch::channel(());
    let _guard = rt.enter();
    let tasks: Vec<_> = (0..16u8)
        .flat_map(|network| {
            let source = attack::source(40 + network, 1);
            attack::silent_connections(source, target(&node), 16, counts.clone(), stopped.clone())
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let opened = counts.opened.load(Ordering::Relaxed);
    assert!(opened >= 200, "the attack opened only {opened} connections");
    let mut failures = Vec::new();
    for _ in 0..12 {
        let run = ctl(Some(&cluster.admin()), &["-n", &node.address, "version"]);
        if !run.success {
            failures.push(run.stderr);
        }
    }
    let fds = open_fds(&node);
    drop(stop);
    rt.block_on(async {
        for task in tasks {
            let _ = task.await;
        }
    });
    eprintln!(
        "silent connections opened {}, closed by the node {}; machined fds {fds}",
        counts.opened.load(Ordering::Relaxed),
        counts.closed.load(Ordering::Relaxed)
    );
    assert!(failures.is_empty(), "admin calls failed {} times of 12: {failures:?}", failures.len());
}

/// The finding: each `Dmesg` opened `/dev/kmsg`; one address held 2048 descriptors, ten
/// exhausted PID 1's limit and admins timed out. Now one reader serves every stream, and one
/// network holds only part of the streams.
#[test]
fn admins_get_in_while_ten_networks_hold_kernel_log_streams() {
    if let Err(e) = std::fs::File::open("/dev/kmsg") {
        eprintln!("skipped: machined in host mode reads the host's /dev/kmsg, and here: {e}");
        return;
    }
    let (cluster, node) = configured_node();
    let reader = tls_of(&cluster, "os:reader");
    let fds_before = open_fds(&node);
    let rt = runtime();
    let streams = rt.block_on(async {
        let mut all = Vec::new();
        for network in 0..10u8 {
            let source = attack::source(60 + network, 1);
            all.push(
                attack::kernel_log_streams(source, target(&node), reader.clone(), 48)
                    .await
                    .unwrap(),
            );
        }
        all
    });
    let fds = open_fds(&node);
    let started = Instant::now();
    ctl(Some(&cluster.admin()), &["-n", &node.address, "version"]).ok();
    let admin_latency = started.elapsed();
    let held: Vec<usize> = streams.iter().map(|s| s.open).collect();
    eprintln!("kernel-log streams held per network {held:?}; machined fds {fds_before} → {fds}; admin version in {admin_latency:?}");
    assert!(held.iter().all(|&n| (1..=16).contains(&n)), "streams per network: {held:?}");
    let refusal = &streams[0].refusals[0];
    assert!(refusal.contains("too many log, kernel log and event streams"), "{refusal}");
    // Ten networks' connections (3 each) and one /dev/kmsg, not a descriptor per stream.
    assert!(fds < fds_before + 60, "machined holds {fds} descriptors (was {fds_before})");
    drop(streams);
}

/// The finding: the server's own keepalive pings kept a connection that made no request
/// open for ever (400 s seen). A connection that asks nothing is closed soon.
#[test]
fn a_connection_that_makes_no_request_is_closed() {
    let node = Node::start().unwrap();
    let rt = runtime();
    let started = Instant::now();
    let closed = rt.block_on(async {
        let tls = insecure_tls(None).unwrap();
        let mut flood = attack::partial_bodies(
            attack::source(80, 1),
            target(&node),
            tls,
            (1, 0),
            APPLY,
            (0, 0),
        )
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(60), flood.closed()).await.is_ok()
    });
    let after = started.elapsed();
    assert!(closed, "a connection without requests was still open after {after:?}");
    eprintln!("a connection without requests was closed after {after:?}");
}
