//! The netboot scenario (a diskless PC): no disk, QEMU's BIOS runs the network card's iPXE,
//! which takes its script from `image-builder serve` on the host (QEMU's user network's
//! gateway) as a user's lab would. A script naming another config's hash leaves the node in
//! maintenance mode. Booted with the served config's hash, the node fetches it, comes up
//! with mTLS and runs the web pod from the image's own busybox; `ctl upgrade` is refused (its
//! boot server installs new versions); after a reboot it does all of it again, from nothing
//! kept.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_qemu::{NetworkBoot, Vm, VmConfig};
use cairn_tests::boards::{Board, PowerOn};
use cairn_tests::{bin_dir, ctl, eventually, Cluster};

use super::node::ConfiguredNode;
use super::pods::{self, WEB_HOST_PORT};

/// The script `image-builder serve --config` writes.
const CONFIG_SCRIPT: &str = "cairn.ipxe";
/// A script of the test's: the served config's URL with another config's hash.
const WRONG_HASH_SCRIPT: &str = "wrong-hash.ipxe";

/// `image-builder serve` on the host, and what it logged.
struct BootServer {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl BootServer {
    /// Serves `dir` with `config`, on a free port of the host's loopback (QEMU's user
    /// network reaches it at 10.0.2.2).
    fn start(dir: &Path, config: &Path) -> BootServer {
        let mut child = Command::new(bin_dir().join("image-builder"))
            .args(["serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting image-builder serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("serve's first line").unwrap();
        let port = first.rsplit(' ').next().and_then(|p| p.parse().ok());
        let port = port.unwrap_or_else(|| panic!("no port in serve's {first:?}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        BootServer { child, port, log }
    }

    /// The URL of `script` as the guest reaches it.
    fn url(&self, script: &str) -> String {
        format!("http://10.0.2.2:{}/{script}", self.port)
    }

    /// How many lines it logged so far.
    fn logged(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// How many times `path` was served whole since `logged` lines.
    fn served_since(&self, logged: usize, path: &str) -> usize {
        let needle = format!(" GET {path} -> 200 ");
        self.log.lock().unwrap().iter().skip(logged).filter(|l| l.contains(&needle)).count()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for BootServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A folder with the build's netboot files and the test's own script.
fn served_dir(dir: &Path, netboot: &Path) -> PathBuf {
    let served = dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    for name in ["vmlinuz", "initramfs.img", "boot.ipxe"] {
        std::os::unix::fs::symlink(netboot.join(name), served.join(name)).unwrap();
    }
    served
}

/// Boots `board` with no disk from `bootfile`, its files in `dir`.
fn boot(board: &Board, dir: &Path, bootfile: String) -> Vm {
    let config = board.vm_config(PathBuf::new(), dir, &[WEB_HOST_PORT], PowerOn::Online);
    let config = VmConfig { disk: None, ..config };
    Vm::start_network(&config, &NetworkBoot { bootfile }).unwrap()
}

pub fn scenario(configured: &ConfiguredNode) {
    let board = configured.board;
    let scenario_dir = configured.scenario_dir();
    let dir = scenario_dir.path();
    let cluster = Cluster::generate("netboot").unwrap();
    let admin = cluster.admin();
    let config =
        cluster.node_config_with("node.yaml", |text| pods::with_pods(&text, pods::WEB_POD));
    let served = served_dir(dir, &configured.image.join("netboot"));
    let server = BootServer::start(&served, &config);
    let wrong = format!(
        "#!ipxe\nset cairn-config cairn.config={} cairn.config.sha256={}\nchain boot.ipxe\n",
        server.url("config.yaml"),
        "0".repeat(64)
    );
    std::fs::write(served.join(WRONG_HASH_SCRIPT), wrong).unwrap();

    // The served config with another hash: refused, the node stays in maintenance mode.
    let mut vm = boot(board, &dir.join("wrong-hash"), server.url(WRONG_HASH_SCRIPT));
    let refused = "has SHA-256";
    vm.wait_for(refused, 0, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}; served:\n{}\nconsole:\n{}", server.log(), vm.console()));
    let console = vm.console();
    assert!(console.contains("the node stays in maintenance mode"), "{console}");
    let n = vm.api_address.clone();
    let version = ctl(None, &["--insecure", "-n", &n, "version"]).ok().stdout;
    assert!(version.contains("maintenance"), "{version}");
    vm.power_off_hard().unwrap();

    // The served config with its hash: configured, the web pod answers.
    let logged = server.logged();
    let started = Instant::now();
    let mut vm = boot(board, &dir.join("vm"), server.url(CONFIG_SCRIPT));
    let n = vm.api_address.clone();
    let web = vm.forwarded[&WEB_HOST_PORT].clone();
    wait_configured(&mut vm, 0, &admin, &server);
    // A figure for people (`--nocapture`), beside the disk boot's in the first_boot scenario.
    println!(
        "QEMU start to the mTLS API by PXE (configured from the URL): {:.1?}",
        started.elapsed()
    );
    pods::wait_web(&admin, &n, &web, Duration::from_secs(240));
    println!("QEMU start to the web pod's answer by PXE: {:.1?}", started.elapsed());
    for path in ["/cairn.ipxe", "/boot.ipxe", "/vmlinuz", "/initramfs.img", "/config.yaml"] {
        assert_eq!(server.served_since(logged, path), 1, "{path}; served:\n{}", server.log());
    }
    assert_diskless(&admin, &n, &configured.image.join(board.bundle("0.1.0")));

    // A reboot starts from nothing kept: the node takes its config from the URL again.
    let before = vm.console().len();
    ctl(Some(&admin), &["-n", &n, "reboot"]).ok();
    let after = vm.wait_for("machined[stage1]: machined", before, Duration::from_secs(240));
    wait_configured(&mut vm, after.unwrap(), &admin, &server);
    pods::wait_web(&admin, &n, &web, Duration::from_secs(240));
    for path in ["/cairn.ipxe", "/config.yaml"] {
        assert_eq!(server.served_since(logged, path), 2, "{path}; served:\n{}", server.log());
    }

    ctl(Some(&admin), &["-n", &n, "shutdown"]).ok();
    assert!(vm.wait_exit(Duration::from_secs(120)).unwrap().is_some(), "QEMU did not exit");
}

/// Waits for a boot's API (its console from byte `from` on) and for the node to answer,
/// configured by the URL, over mTLS.
fn wait_configured(vm: &mut Vm, from: usize, admin: &Path, server: &BootServer) {
    let api = vm.wait_for("API listening on 0.0.0.0:50000", from, Duration::from_secs(300));
    api.unwrap_or_else(|e| panic!("{e}; served:\n{}\nconsole:\n{}", server.log(), vm.console()));
    let n = vm.api_address.clone();
    assert!(
        eventually(Duration::from_secs(120), || {
            ctl(Some(admin), &["-n", &n, "version"]).stdout.contains("configured")
        }),
        "the node was not configured from the URL; served:\n{}\nconsole:\n{}",
        server.log(),
        vm.console()
    );
}

/// The root is the squashfs from the initramfs, STATE and `/var` are memory, and updates
/// are refused with why; prints what the diskless node's memory holds.
fn assert_diskless(admin: &Path, n: &str, bundle: &Path) {
    let mounts = ctl(Some(admin), &["-n", n, "-o", "json", "mounts"]).ok().stdout;
    let mounts: Vec<serde_json::Value> = serde_json::from_str(&mounts).unwrap();
    let mount = |target: &str| mounts.iter().find(|m| m["target"] == target).cloned();
    let root = mount("/").expect("a root mount");
    assert_eq!(
        (&root["type"], &root["source"]),
        (&"squashfs".into(), &"/dev/loop0".into()),
        "{root}"
    );
    for target in ["/system/state", "/var"] {
        assert_eq!(mount(target).map(|m| m["type"].clone()), Some("tmpfs".into()), "{target}");
    }
    let refused = ctl(Some(admin), &["-n", n, "upgrade", "--image", bundle.to_str().unwrap()]);
    let refused = refused.failed();
    assert!(refused.stderr.contains("diskless"), "{}", refused.stderr);

    let stats = ctl(Some(admin), &["-n", n, "-o", "json", "stats"]).ok().stdout;
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let meminfo = ctl(Some(admin), &["-n", n, "read", "/proc/meminfo"]).ok().stdout;
    let kib = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix(" kB")?.parse::<f64>().ok())
    };
    println!(
        "diskless node: machined RSS {:.1} MiB; memory in tmpfs and the initramfs (Shmem) {:.1} MiB; used {:.1} MiB of {:.1} MiB",
        stats[0]["machined_rss_bytes"].as_f64().unwrap_or_default() / 1048576.0,
        kib("Shmem:").unwrap_or_default() / 1024.0,
        (kib("MemTotal:").unwrap_or_default() - kib("MemAvailable:").unwrap_or_default()) / 1024.0,
        kib("MemTotal:").unwrap_or_default() / 1024.0,
    );
}
