//! Figures, not assertions: how much an idle configured node writes to its disk (flash wears),
//! in total, per partition and per process. Boots the x86_64 image under QEMU, configures it
//! with three quiet pods (a web server with a readiness probe, a sleeper, a pod that logs a line
//! every 10 s), lets it settle, then reads the disk's `/proc/diskstats` and each process's
//! `/proc/PID/io` through `ctl` at the start and the end of an idle window, and prints the
//! writes scaled to an hour. Run with `cargo bench -p cairn-tests --bench flash` (needs QEMU,
//! like the QEMU suite).
//!
//! The steady state: one-time writes are over before the window opens: the first boot's
//! formatting, the image import, the pods' start, and ext4's lazy inode-table init (its kernel
//! thread, `ext4lazyinit`, exits when done: the bench waits for that), then one more
//! [`SETTLE`]. The window ([`WINDOW`], or `CAIRN_FLASH_WINDOW_SECS`) spans several periods of
//! every periodic writer (the logger's line every 10 s, the log flush every minute, ext4's
//! journal commit and the kernel's write-back of dirty pages, at most every 5 minutes), so it
//! counts each of them a whole number of times or nearly: the figure is the rate of an idle
//! hour. It is a few minutes, not an hour, because the machine that runs it is shared. The
//! time floor (recorded at most hourly) is left out of a window this short: one small atomic
//! replace an hour on STATE.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cairn_qemu::Vm;
use cairn_tests::boards::{PowerOn, GENERIC_X86_64};
use cairn_tests::disk::NodeDisk;
use cairn_tests::image_cache::{self, ImageRequest};
use cairn_tests::{bin_dir, ctl, eventually, fingerprint_in, Cluster};

/// The idle window, unless `CAIRN_FLASH_WINDOW_SECS` says otherwise.
const WINDOW: Duration = Duration::from_secs(600);
/// How long the node idles after its one-time writes before the window opens.
const SETTLE: Duration = Duration::from_secs(60);
/// The longest wait for ext4's lazy inode-table init to end.
const LAZY_INIT_LIMIT: Duration = Duration::from_secs(300);
/// `ctl` calls run at once when reading every process's files.
const READERS: usize = 6;

/// Three quiet pods, as an edge node might run: a web server (probed every 10 s), a sleeper,
/// and a logger.
const QUIET_PODS: &str = r#"  pods:
    - apiVersion: v1
      kind: Pod
      metadata: {name: web}
      spec:
        containers:
          - name: httpd
            image: localhost/busybox:latest
            command: [sh, -c, "mkdir -p /www && echo quiet > /www/index.html && exec httpd -f -p 80 -h /www"]
            ports: [{containerPort: 80, hostPort: 8080}]
            readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 10}
    - apiVersion: v1
      kind: Pod
      metadata: {name: sleeper}
      spec:
        containers:
          - {name: main, image: localhost/busybox:latest, command: [sleep, "1000000"]}
    - apiVersion: v1
      kind: Pod
      metadata: {name: logger}
      spec:
        containers:
          - name: main
            image: localhost/busybox:latest
            command: [sh, -c, "while true; do echo \"$(date) still here, nothing to report\"; sleep 10; done"]
"#;

/// One process, as `/proc/PID/stat` and `/proc/PID/io` show it.
#[derive(Debug, Clone)]
struct Process {
    comm: String,
    /// Bytes it caused to be written to storage (`write_bytes`).
    write_bytes: u64,
}

/// What the node had written at one moment.
struct Snapshot {
    at: Instant,
    /// Sectors written per block device (`/proc/diskstats`).
    sectors: BTreeMap<String, u64>,
    /// The processes that write, by PID: user space and the kernel's ext4 threads.
    processes: BTreeMap<u32, Process>,
    /// Each ext4 journal's commits so far, by its `/proc/fs/jbd2` name (`vda5-8`).
    journals: BTreeMap<String, JournalCommits>,
    /// Every file on STATE and EPHEMERAL: its size and modification time.
    files: BTreeMap<String, (u64, String)>,
}

/// The first line of `/proc/fs/jbd2/DEV/info`: `12 transactions (9 requested), each up to ...`.
/// A requested commit is one a process forced (fsync) before the commit interval ran out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct JournalCommits {
    transactions: u64,
    requested: u64,
}

impl JournalCommits {
    fn parse(info: &str) -> Option<JournalCommits> {
        let mut words = info.split_whitespace();
        let transactions = words.next()?.parse().ok()?;
        (words.next()? == "transactions").then_some(())?;
        let requested = words.next()?.strip_prefix('(')?.parse().ok()?;
        Some(JournalCommits { transactions, requested })
    }
}

/// Talks to the node with `ctl`.
struct NodeReader<'a> {
    admin: &'a Path,
    address: &'a str,
}

impl NodeReader<'_> {
    fn read(&self, path: &str) -> Option<String> {
        let run = ctl(Some(self.admin), &["-n", self.address, "read", path]);
        run.success.then_some(run.stdout)
    }

    fn pids(&self) -> anyhow::Result<Vec<u32>> {
        let run = ctl(Some(self.admin), &["-n", self.address, "-o", "json", "ls", "/proc"]).ok();
        let rows: Vec<serde_json::Value> = serde_json::from_str(&run.stdout)?;
        Ok(rows
            .iter()
            .filter_map(|row| row["name"].as_str()?.strip_prefix("/proc/")?.parse().ok())
            .collect())
    }

    /// `pid`'s command name and parent, from `/proc/PID/stat` (`pid (comm) state ppid ...`).
    fn stat(&self, pid: u32) -> Option<(String, u32)> {
        let stat = self.read(&format!("/proc/{pid}/stat"))?;
        let (head, tail) = stat.rsplit_once(')')?;
        let comm = head.split_once('(')?.1.to_string();
        let ppid = tail.split_whitespace().nth(1)?.parse().ok()?;
        Some((comm, ppid))
    }

    fn write_bytes(&self, pid: u32) -> Option<u64> {
        let io = self.read(&format!("/proc/{pid}/io"))?;
        io.lines().find_map(|l| l.strip_prefix("write_bytes:")?.trim().parse().ok())
    }

    /// The processes worth watching: every user-space one (the kernel's threads are children
    /// of kthreadd, PID 2) and the kernel's ext4 threads, read `READERS` at a time.
    fn processes(&self) -> anyhow::Result<BTreeMap<u32, Process>> {
        let pids = self.pids()?;
        let chunks: Vec<&[u32]> = pids.chunks(pids.len().div_ceil(READERS).max(1)).collect();
        let found = std::thread::scope(|scope| {
            let readers: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .filter_map(|&pid| {
                                let (comm, ppid) = self.stat(pid)?;
                                let kernel = pid == 2 || ppid == 2;
                                let ext4 = comm.starts_with("jbd2") || comm == "ext4lazyinit";
                                if kernel && !ext4 {
                                    return None;
                                }
                                Some((pid, Process { comm, write_bytes: self.write_bytes(pid)? }))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            readers.into_iter().flat_map(|r| r.join().expect("a reader thread")).collect()
        });
        Ok(found)
    }

    fn journals(&self) -> anyhow::Result<BTreeMap<String, JournalCommits>> {
        let run =
            ctl(Some(self.admin), &["-n", self.address, "-o", "json", "ls", "/proc/fs/jbd2"]).ok();
        let rows: Vec<serde_json::Value> = serde_json::from_str(&run.stdout)?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let path = row["name"].as_str()?;
                let info = self.read(&format!("{path}/info"))?;
                let name = path.rsplit('/').next()?.to_string();
                Some((name, JournalCommits::parse(&info)?))
            })
            .collect())
    }

    /// Every file under the writable mounts, with its size and modification time.
    fn files(&self) -> anyhow::Result<BTreeMap<String, (u64, String)>> {
        let mut files = BTreeMap::new();
        for dir in ["/var", "/system/state"] {
            let args = ["-n", self.address, "-o", "json", "ls", "--depth", "-1", dir];
            let rows: Vec<serde_json::Value> =
                serde_json::from_str(&ctl(Some(self.admin), &args).ok().stdout)?;
            files.extend(rows.iter().filter_map(|row| {
                let entry = (row["size"].as_u64()?, row["modified"].as_str()?.to_string());
                Some((row["name"].as_str()?.to_string(), entry))
            }));
        }
        Ok(files)
    }

    fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let diskstats = self.read("/proc/diskstats").context("reading /proc/diskstats")?;
        let at = Instant::now();
        // major minor name reads merged sectors ms writes merged sectors ...
        let sectors = diskstats
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                Some((fields.get(2)?.to_string(), fields.get(9)?.parse().ok()?))
            })
            .filter(|(name, _): &(String, u64)| name.starts_with("vd"))
            .collect();
        Ok(Snapshot {
            at,
            sectors,
            processes: self.processes()?,
            journals: self.journals()?,
            files: self.files()?,
        })
    }
}

fn mib_per_hour(bytes: u64, window: Duration) -> f64 {
    bytes as f64 / 1048576.0 * 3600.0 / window.as_secs_f64()
}

/// Prints what was written between `start` and `end`, per device and per command name.
fn report(start: &Snapshot, end: &Snapshot, labels: &BTreeMap<String, &str>) {
    let window = end.at - start.at;
    println!("\nidle writes over {:.0} s, scaled to an hour:", window.as_secs_f64());
    println!("{:<28} {:>12} {:>10}", "device", "KiB written", "MiB/hour");
    let mut disk_bytes = 0;
    for (name, &after) in &end.sectors {
        let bytes = after.saturating_sub(start.sectors.get(name).copied().unwrap_or(0)) * 512;
        let label = labels.get(name).map_or(name.clone(), |l| format!("{name} ({l})"));
        if !name.chars().last().is_some_and(|c| c.is_ascii_digit()) {
            disk_bytes = bytes;
        }
        println!("{label:<28} {:>12} {:>10.3}", bytes / 1024, mib_per_hour(bytes, window));
    }
    let mut by_comm: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for (pid, process) in &end.processes {
        // A process born during the window wrote all it shows within it.
        let before = start.processes.get(pid).map_or(0, |p| p.write_bytes);
        let entry = by_comm.entry(process.comm.as_str()).or_default();
        entry.0 += 1;
        entry.1 += process.write_bytes.saturating_sub(before);
    }
    println!(
        "\n{:<28} {:>12} {:>10}   (write_bytes of /proc/PID/io: pages each dirtied)",
        "writer (processes)", "KiB written", "MiB/hour"
    );
    let mut attributed = 0;
    for (comm, (count, bytes)) in by_comm.iter().filter(|(_, (_, bytes))| *bytes > 0) {
        attributed += bytes;
        let label = format!("{comm} ({count})");
        println!("{label:<28} {:>12} {:>10.3}", bytes / 1024, mib_per_hour(*bytes, window));
    }
    println!("\n{:<28} {:>12} {:>10}", "journal commits", "in window", "forced");
    for (name, after) in &end.journals {
        let before = start.journals.get(name).copied().unwrap_or_default();
        let label = format!(
            "{name} ({})",
            labels.get(name.split('-').next().unwrap_or("")).unwrap_or(&"?")
        );
        println!(
            "{label:<28} {:>12} {:>10}",
            after.transactions - before.transactions,
            after.requested - before.requested
        );
    }
    println!("\nfiles changed in the window (size now, growth):");
    for (name, (size, modified)) in &end.files {
        let before = start.files.get(name);
        if before.is_none_or(|(_, was)| was != modified) {
            let growth = *size as i64 - before.map_or(0, |(size, _)| *size as i64);
            println!("  {name} {size} {growth:+}");
        }
    }
    let rest = disk_bytes.saturating_sub(attributed);
    println!(
        "{:<28} {:>12} {:>10.3}   (ext4's journal and metadata, processes gone)",
        "the rest",
        rest / 1024,
        mib_per_hour(rest, window)
    );
}

fn main() -> anyhow::Result<()> {
    let window = std::env::var("CAIRN_FLASH_WINDOW_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(WINDOW, Duration::from_secs);
    let board = &GENERIC_X86_64;
    let request = ImageRequest { board, bootstrap_token: None, signing_key: None, extra_args: &[] };
    let image = image_cache::cached_build(&request)?;
    let target = bin_dir().parent().context("the target dir")?;
    let dir = tempfile::Builder::new().prefix("flash-bench.").tempdir_in(target)?;
    let disk =
        NodeDisk::copy(&image.join(board.image()), &dir.path().join("disk.raw"), board.disk_bytes)?;
    let vm_config =
        board.vm_config(disk.qemu_image(), &dir.path().join("vm"), &[], PowerOn::Online);
    let mut vm = Vm::start(&vm_config)?;
    let at = vm.wait_for("API listening on", 0, Duration::from_secs(600))?;
    vm.wait_for("network: Ready", at, Duration::from_secs(120))?;
    let n = vm.api_address.clone();
    eventually(Duration::from_secs(60), || ctl(None, &["--insecure", "-n", &n, "version"]).success);

    let cluster = Cluster::generate("flash")?;
    let config = cluster.node_config_with("node.yaml", |text| text + QUIET_PODS);
    let fingerprint = fingerprint_in(&vm.console()).context("no fingerprint on the console")?;
    let pin = ["--insecure", "--fingerprint", &fingerprint, "-n", &n];
    ctl(None, &[&pin[..], &["apply-config", "--file", config.to_str().unwrap()]].concat()).ok();
    let admin = cluster.admin();
    let configured = Instant::now();
    let all_ready = eventually(Duration::from_secs(600), || {
        let run = ctl(Some(&admin), &["-n", &n, "-o", "json", "pods"]);
        let pods: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap_or_default();
        pods.len() == 3
            && pods.iter().all(|pod| {
                pod["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
    });
    anyhow::ensure!(
        all_ready,
        "the pods did not all get Ready:\n{}",
        ctl(Some(&admin), &["-n", &n, "pods"]).stdout
    );
    println!("configured to three pods Ready: {:.0?}", configured.elapsed());

    let reader = NodeReader { admin: &admin, address: &n };
    let lazy_init = Instant::now();
    let done = eventually(LAZY_INIT_LIMIT, || {
        reader.processes().is_ok_and(|p| p.values().all(|p| p.comm != "ext4lazyinit"))
    });
    println!(
        "ext4's lazy inode-table init {} after {:.0?} more",
        if done { "ended" } else { "still ran" },
        lazy_init.elapsed()
    );
    std::thread::sleep(SETTLE);

    let start = reader.snapshot()?;
    println!("idling for {window:.0?}...");
    std::thread::sleep(window);
    let end = reader.snapshot()?;
    let state = board.state_device();
    let state = state.trim_start_matches("/dev/");
    let number: u32 = state.trim_start_matches(|c: char| !c.is_ascii_digit()).parse()?;
    let ephemeral =
        format!("{}{}", state.trim_end_matches(|c: char| c.is_ascii_digit()), number + 1);
    let labels = BTreeMap::from([(state.to_string(), "STATE"), (ephemeral, "EPHEMERAL")]);
    report(&start, &end, &labels);
    println!("\nthe newest lines of each log that grew (who is chatty):");
    for (name, (size, _)) in end.files.iter().filter(|(name, _)| name.ends_with(".log")) {
        if start.files.get(name).is_some_and(|(before, _)| before == size) {
            continue;
        }
        let text = reader.read(name).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[lines.len().saturating_sub(3)..] {
            println!("  {name}: {}", line.chars().take(200).collect::<String>());
        }
    }
    let mounts = reader.read("/proc/mounts").unwrap_or_default();
    for line in mounts.lines().filter(|l| l.contains(" ext4 ")) {
        println!("mount: {line}");
    }
    vm.stop(Duration::from_secs(120))?;
    Ok(())
}
