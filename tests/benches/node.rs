//! Figures, not assertions: machined's idle memory, the round trip of `ctl version`, and
//! the time to fan one command out to 100 local nodes. Run with `cargo bench -p cairn-tests`.

use std::time::{Duration, Instant};

use cairn_tests::{ctl, proc_status_kib, Cluster, Node};

const ROUND_TRIPS: usize = 30;
const FLEET: usize = 100;
const FAN_OUTS: usize = 5;

fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS").unwrap_or(0)
}

fn timed(runs: usize, mut run: impl FnMut()) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn summary(times: &[Duration]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p95 = times[(times.len() * 95 / 100).min(times.len() - 1)];
    format!(
        "median {:.1} ms, p95 {:.1} ms, min {:.1} ms (n={})",
        ms(times[times.len() / 2]),
        ms(p95),
        ms(times[0]),
        times.len()
    )
}

fn main() -> anyhow::Result<()> {
    let cluster = Cluster::generate("bench")?;
    let admin = cluster.admin();
    let config = cluster.path("node.yaml");

    let node = Node::start()?;
    std::thread::sleep(Duration::from_secs(2));
    let maintenance_rss = rss_kib(node.pid().unwrap());
    node.configure(&config);
    // Let the first flush and the TLS switch settle, then measure idle.
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "machined idle RSS: {maintenance_rss} KiB in maintenance mode, {} KiB configured",
        rss_kib(node.pid().unwrap())
    );

    let times = timed(ROUND_TRIPS, || {
        ctl(Some(&admin), &["-n", &node.address, "version"]).ok();
    });
    println!(
        "ctl version round trip (process start, mTLS handshake, call, exit): {}",
        summary(&times)
    );

    let fleet: Vec<Node> = (0..FLEET).map(|_| Node::start()).collect::<anyhow::Result<_>>()?;
    for node in &fleet {
        node.configure(&config);
    }
    let list = fleet.iter().map(|n| n.address.as_str()).collect::<Vec<_>>().join(",");
    let times = timed(FAN_OUTS, || {
        let run = ctl(Some(&admin), &["-n", &list, "version"]).ok();
        assert_eq!(run.stdout.lines().count(), FLEET + 1, "every node answers");
    });
    println!("ctl version fan-out to {FLEET} local machined instances: {}", summary(&times));
    let total_kib: u64 = fleet.iter().filter_map(Node::pid).map(rss_kib).sum();
    println!("{FLEET} idle configured machined instances: {} KiB RSS in total", total_kib);
    Ok(())
}
