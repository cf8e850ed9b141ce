//! The netboot scenario (a diskless node): no boot disk, the board's network loader boots
//! the build's `netboot/` files as a user's lab would. A PC: QEMU's BIOS runs the network
//! card's iPXE, which takes its script from `image-builder serve` on the host (QEMU's user
//! network's gateway), and everything else over HTTP. An ARM board: its U-Boot, finding no
//! disk, loads `boot.scr.uimg`, the kernel and the initramfs by QEMU's TFTP, and the config's
//! arguments from `cairn-config.txt` beside them; the config itself comes from `serve`.
//! Pointed at the served config with another hash, the node stays in maintenance mode. With
//! the served config's hash, the node fetches it, comes up with mTLS and runs the web pod
//! from the image's own busybox; `ctl upgrade` is refused (its boot server installs new
//! versions). The config names a blank data disk for `/var` (`machine.ephemeral.disk`):
//! formatted on the first boot, kept on the next. After a reboot the node does all of it
//! again, from nothing kept but that disk.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_api::board::NetbootLoader;
use cairn_api::bundle::hex;
use cairn_qemu::{NetworkBoot, Vm, VmConfig};
use cairn_tests::boards::{Board, PowerOn};
use cairn_tests::{bin_dir, ctl, eventually, Cluster};
use image_builder::image::netboot::UBOOT_SCRIPT;
use image_builder::serve::{config_script, uboot_config_line, UBOOT_CONFIG_FILE};
use sha2::{Digest, Sha256};

use super::node::ConfiguredNode;
use super::pods::{self, WEB_HOST_PORT};

/// The script `image-builder serve --config` writes.
const CONFIG_SCRIPT: &str = "cairn.ipxe";
/// A script of the test's: the served config's URL with another config's hash.
const WRONG_HASH_SCRIPT: &str = "wrong-hash.ipxe";
/// What the console says once the API serves.
const API_LISTENING: &str = "API listening on 0.0.0.0:50000";
/// The data disk as the guest sees it (the board's disk is virtio).
const DATA_DISK: &str = "/dev/vda";
/// `notes` adds the boot's ID to a file on EPHEMERAL at each start.
const NOTES_POD: &str = r#"
    - apiVersion: v1
      kind: Pod
      metadata: {name: notes}
      spec:
        volumes: [{name: notes, hostPath: {path: /var/lib/notes, type: DirectoryOrCreate}}]
        containers:
          - name: main
            image: localhost/busybox:latest
            command: [sh, -c, "cat /proc/sys/kernel/random/boot_id >> /notes/boots && exec sleep 3600"]
            volumeMounts: [{name: notes, mountPath: /notes}]
"#;
/// Where `notes` writes, on the node.
const NOTES_FILE: &str = "/var/lib/notes/boots";

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
        format!("http://{}/{script}", self.guest_host())
    }

    /// Its `HOST:PORT` as the guest reaches it.
    fn guest_host(&self) -> String {
        format!("10.0.2.2:{}", self.port)
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

/// A folder with the build's netboot files (and the test's own script or config line).
fn served_dir(dir: &Path, netboot: &Path) -> PathBuf {
    let served = dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    for entry in std::fs::read_dir(netboot).unwrap() {
        let name = entry.unwrap().file_name();
        std::os::unix::fs::symlink(netboot.join(&name), served.join(&name)).unwrap();
    }
    served
}

/// The config a node is pointed at.
enum Pointed<'a> {
    /// The served config, with its hash.
    Served,
    /// The served config's URL with this other hash.
    WrongHash(&'a str),
}

/// Where a node boots from: the served folder, its server and the board's network loader.
struct Lab<'a> {
    board: &'a Board,
    loader: NetbootLoader,
    served: PathBuf,
    server: BootServer,
    /// The served config's SHA-256, hex.
    config_sha256: String,
}

impl Lab<'_> {
    /// Boots the board, pointed at `config`, with no disk or with `data_disk`, its files in
    /// `dir`.
    fn boot(&self, dir: &Path, config: Pointed<'_>, data_disk: Option<&Path>) -> Vm {
        let vm = self.board.vm_config(PathBuf::new(), dir, &[WEB_HOST_PORT], PowerOn::Online);
        let vm = VmConfig { disk: data_disk.map(Path::to_path_buf), ..vm };
        let sha256 = match config {
            Pointed::Served => &self.config_sha256,
            Pointed::WrongHash(sha256) => sha256,
        };
        let netboot = match (self.loader, config) {
            (NetbootLoader::Ipxe, Pointed::Served) => {
                NetworkBoot { bootfile: self.server.url(CONFIG_SCRIPT), tftp_dir: None }
            }
            (NetbootLoader::Ipxe, Pointed::WrongHash(_)) => {
                let script = config_script(&self.server.guest_host(), sha256);
                std::fs::write(self.served.join(WRONG_HASH_SCRIPT), script).unwrap();
                NetworkBoot { bootfile: self.server.url(WRONG_HASH_SCRIPT), tftp_dir: None }
            }
            (NetbootLoader::UBoot, _) => {
                let line = uboot_config_line(&self.server.guest_host(), sha256);
                std::fs::write(self.served.join(UBOOT_CONFIG_FILE), line).unwrap();
                NetworkBoot { bootfile: UBOOT_SCRIPT.into(), tftp_dir: Some(self.served.clone()) }
            }
        };
        Vm::start_network(&vm, &netboot).unwrap()
    }

    /// The files the node fetches from `serve` at each boot (the rest by TFTP, if any).
    fn fetched_by_http(&self, first_boot: bool) -> &'static [&'static str] {
        match (self.loader, first_boot) {
            (NetbootLoader::Ipxe, true) => {
                &["/cairn.ipxe", "/boot.ipxe", "/vmlinuz", "/initramfs.img", "/config.yaml"]
            }
            (NetbootLoader::Ipxe, false) => &["/cairn.ipxe", "/config.yaml"],
            (NetbootLoader::UBoot, _) => &["/config.yaml"],
        }
    }
}

pub fn scenario(configured: &ConfiguredNode) {
    let board = configured.board;
    let scenario_dir = configured.scenario_dir();
    let dir = scenario_dir.path();
    let cluster = Cluster::generate("netboot").unwrap();
    let admin = cluster.admin();
    let config = cluster.node_config_with("node.yaml", |text| {
        let text = format!("{text}  ephemeral: {{disk: {DATA_DISK}}}\n");
        pods::with_pods(&text, &format!("{}{NOTES_POD}", pods::WEB_POD))
    });
    let data_disk = dir.join("data.raw");
    std::fs::File::create(&data_disk).unwrap().set_len(1 << 30).unwrap();
    let served = served_dir(dir, &configured.image.join("netboot"));
    let server = BootServer::start(&served, &config);
    let loader = board.description().netboot.as_ref().expect("a board with [netboot]").loader;
    let config_sha256 = hex(&Sha256::digest(std::fs::read(&config).unwrap()));
    let lab = Lab { board, loader, served, server, config_sha256 };
    let server = &lab.server;

    // The served config with another hash: refused, the node stays in maintenance mode. The
    // refusal is machined's, the same on every board: the PC's boot covers it, and a U-Boot
    // board (emulated, slower) spends its CI time on what is its own.
    if lab.loader == NetbootLoader::Ipxe {
        let wrong_hash = "0".repeat(64);
        let mut vm = lab.boot(&dir.join("wrong-hash"), Pointed::WrongHash(&wrong_hash), None);
        let refused = "has SHA-256";
        vm.wait_for(refused, 0, Duration::from_secs(300)).unwrap_or_else(|e| {
            panic!("{e}; served:\n{}\nconsole:\n{}", server.log(), vm.console())
        });
        let console = vm.console();
        assert!(console.contains("the node stays in maintenance mode"), "{console}");
        // The config can be refused before the API listens.
        vm.wait_for(API_LISTENING, 0, Duration::from_secs(120)).unwrap();
        let n = vm.api_address.clone();
        let version = ctl(None, &["--insecure", "-n", &n, "version"]).ok().stdout;
        assert!(version.contains("maintenance"), "{version}");
        vm.power_off_hard().unwrap();
    }

    // The served config with its hash: configured, the web pod answers, `/var` is on the
    // data disk.
    let logged = server.logged();
    let started = Instant::now();
    let mut vm = lab.boot(&dir.join("vm"), Pointed::Served, Some(&data_disk));
    let n = vm.api_address.clone();
    let web = vm.forwarded[&WEB_HOST_PORT].clone();
    wait_configured(&mut vm, 0, &admin, server);
    // A figure for people (`--nocapture`), beside the disk boot's in the first_boot scenario.
    println!(
        "QEMU start to the mTLS API by network boot (configured from the URL): {:.1?}",
        started.elapsed()
    );
    pods::wait_web(&admin, &n, &web, Duration::from_secs(240));
    println!("QEMU start to the web pod's answer by network boot: {:.1?}", started.elapsed());
    // Stage 1 gave the initramfs's memory back before the switch (the squashfs lives on
    // behind its loop device).
    let console = vm.console();
    let freed = console.lines().find(|l| l.contains("freed the initramfs: "));
    println!("{}", freed.unwrap_or_else(|| panic!("the initramfs was not freed:\n{console}")));
    for path in lab.fetched_by_http(true) {
        assert_eq!(server.served_since(logged, path), 1, "{path}; served:\n{}", server.log());
    }
    assert_diskless(&admin, &n, &configured.image.join(board.bundle("0.1.0")));
    let first_boot = notes(&admin, &n, 1);

    // A reboot starts from nothing kept but the data disk: the node takes its config from the
    // URL again, and finds EPHEMERAL as it left it.
    let before = vm.console().len();
    ctl(Some(&admin), &["-n", &n, "reboot"]).ok();
    let after = vm.wait_for("machined[stage1]: machined", before, Duration::from_secs(240));
    wait_configured(&mut vm, after.unwrap(), &admin, server);
    pods::wait_web(&admin, &n, &web, Duration::from_secs(240));
    for path in lab.fetched_by_http(false) {
        assert_eq!(server.served_since(logged, path), 2, "{path}; served:\n{}", server.log());
    }
    let both_boots = notes(&admin, &n, 2);
    assert_eq!(both_boots[0], first_boot[0], "EPHEMERAL was not kept");
    assert_ne!(both_boots[1], both_boots[0], "{both_boots:?}");

    ctl(Some(&admin), &["-n", &n, "shutdown"]).ok();
    assert!(vm.wait_exit(Duration::from_secs(120)).unwrap().is_some(), "QEMU did not exit");
}

/// Waits for a boot's API (its console from byte `from` on) and for the node to answer,
/// configured by the URL, over mTLS.
fn wait_configured(vm: &mut Vm, from: usize, admin: &Path, server: &BootServer) {
    let api = vm.wait_for(API_LISTENING, from, Duration::from_secs(300));
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

/// Waits for `notes` to have written `boots` boot IDs; returns them.
fn notes(admin: &Path, n: &str, boots: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let written = eventually(Duration::from_secs(120), || {
        let read = ctl(Some(admin), &["-n", n, "read", NOTES_FILE]);
        lines = read.stdout.lines().map(str::to_string).collect();
        lines.len() >= boots
    });
    let pods = ctl(Some(admin), &["-n", n, "pods"]).stdout;
    assert!(written, "{NOTES_FILE} holds {lines:?}, not {boots} boots; pods:\n{pods}");
    assert_eq!(lines.len(), boots, "{lines:?}");
    lines
}

/// The root is the squashfs from the initramfs, STATE is memory, `/var` is on the data disk,
/// and updates are refused with why; prints what the diskless node's memory holds.
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
    let state = mount("/system/state").expect("a STATE mount");
    assert_eq!(state["type"], "tmpfs", "{state}");
    let ephemeral = mount("/var").expect("an EPHEMERAL mount");
    assert_eq!((&ephemeral["type"], &ephemeral["source"]), (&"ext4".into(), &DATA_DISK.into()));
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
