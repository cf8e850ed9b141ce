//! A board's configured node, made once per test binary by its first boot (the `first_boot`
//! scenario): the image (with a bootstrap token) booted as a user would boot it, through the
//! bootloader and machined's stage 1 (the first boot creates STATE and EPHEMERAL and reaches
//! the API in maintenance mode, with one kernel start), configured over `ctl --insecure` pinned to the
//! certificate fingerprint on the console and proving the token (static addresses, a route,
//! resolvers, a host name, a sysctl, a file and an SNTP server the test runs on the host, all
//! checked on the node), given the `web` pod, and shut down (QEMU exits). Scenarios start
//! from copies of its disk.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cairn_api::bundle::{testing, SigningKey};
use cairn_api::image::Slot;
use cairn_qemu::Vm;
use cairn_tests::boards::{Board, PowerOn};
use cairn_tests::disk::NodeDisk;
use cairn_tests::image_cache::{self, ImageRequest};
use cairn_tests::sntp::{Server, ServerClock};
use cairn_tests::{
    bin_dir, ctl, eventually, fingerprint_in, free_port, scenario, services_not_ready, Cluster,
};

use super::pods::{self, HOSTNET_PORT, MIRRORED_REGISTRY, WEB_HOST_PORT};
use super::updates;

/// The bootstrap token baked into the images: the node takes its first config only from
/// who knows it.
const BOOTSTRAP_TOKEN: &str = "c41r9-b007-5ecr3t-0123456789abcdef\n";

/// The inputs every build of the suite shares: the bootstrap token and the key bundles are
/// signed with (made once, kept with the images, so the cache's entries stay valid).
pub struct BuildInputs {
    dir: PathBuf,
}

impl BuildInputs {
    /// The cached inputs, made now if no run made them before.
    pub fn cached() -> BuildInputs {
        let dir = image_cache::cached("inputs", |dir| {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("bootstrap-token"), BOOTSTRAP_TOKEN)?;
            let keygen = std::process::Command::new(bin_dir().join("image-builder"))
                .args(["keygen", "--output"])
                .arg(dir.join("keys"))
                .status()?;
            anyhow::ensure!(keygen.success(), "image-builder keygen failed");
            Ok(())
        })
        .expect("the build inputs");
        BuildInputs { dir }
    }

    /// The bootstrap token file.
    pub fn token(&self) -> PathBuf {
        self.dir.join("bootstrap-token")
    }

    /// The signing key (PKCS#8).
    pub fn signing_key(&self) -> PathBuf {
        self.dir.join("keys/signing.key")
    }

    /// Its public half.
    pub fn public_key(&self) -> PathBuf {
        self.dir.join("keys/signing.pub")
    }

    /// The output directory of `board`'s build with image-builder's `extra_args`, cached.
    pub fn build(&self, board: &Board, extra_args: &[&str]) -> PathBuf {
        let (token, key) = (self.token(), self.signing_key());
        let request = ImageRequest {
            board,
            bootstrap_token: Some(&token),
            signing_key: Some(&key),
            extra_args,
        };
        image_cache::cached_build(&request)
            .unwrap_or_else(|e| panic!("building {} {extra_args:?}: {e:#}", board.name))
    }
}

/// A configured node's disk, shut down cleanly, and what talks to it.
pub struct ConfiguredNode {
    /// Its board.
    pub board: &'static Board,
    /// Where its disk and the scenarios' disks live.
    dir: PathBuf,
    /// The disk, never booted again: scenarios start from copies.
    disk: PathBuf,
    /// The build it was made from (0.1.0).
    pub image: PathBuf,
    /// The build inputs.
    pub inputs: BuildInputs,
    /// Its cluster's files: the admin's and others' client configs.
    pub cluster: Cluster,
    /// Its config, without pods.
    pub config: String,
    /// A key its config trusts for updates, besides the image's.
    pub config_key: SigningKey,
    /// The node's time server: the host's clock, reached at QEMU's gateway address.
    _time_server: Server,
    /// `10.0.2.2:PORT`, as the config names the time server.
    pub time_server_at: String,
    /// The host port its config mirrors a registry to (the pod scenario runs the registry).
    pub registry_port: u16,
}

/// The configured node of `board` kept in `cell`: made by the first caller; a failure to
/// make it (the `first_boot` scenario's) fails every scenario that needs it.
pub fn once(
    cell: &'static OnceLock<Result<ConfiguredNode, String>>,
    board: &'static Board,
) -> &'static ConfiguredNode {
    let made = cell.get_or_init(|| {
        let first_boot = || {
            let inputs = BuildInputs::cached();
            let image = inputs.build(board, &[]);
            scenario::run(board, "first_boot", || make(board, inputs, image))
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(first_boot)).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    });
    match made {
        Ok(node) => node,
        Err(e) => panic!("the configured {} node could not be made: {e}", board.name),
    }
}

/// Boots a copy of `board`'s `image` (a build's directory) for the first time, configures it
/// and shuts it down.
fn make(board: &'static Board, inputs: BuildInputs, image: PathBuf) -> ConfiguredNode {
    let target = bin_dir().parent().expect("target dir");
    let dir = target.join("cairn-nodes").join(board.name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A copy, grown as a user's disk would be bigger than the image.
    let disk = dir.join("configured.raw");
    let fresh = NodeDisk::copy(&image.join(board.image()), &disk, board.disk_bytes).unwrap();
    let time_server =
        Server::start("127.0.0.1:0".parse().unwrap(), ServerClock::Ahead(Duration::ZERO)).unwrap();
    let time_server_at = format!("10.0.2.2:{}", time_server.address().port());
    let registry_port = free_port();

    let started = Instant::now();
    let mut node = NodeVm::boot(board, fresh, &dir.join("first-boot"), PowerOn::Online);
    let vm = &mut node.vm;
    let at = vm
        .wait_for("machined[stage1]: switching to /usr/sbin/machined", 0, Duration::from_secs(240))
        .unwrap();
    let at = vm.wait_for("API listening on 0.0.0.0:50000", at, Duration::from_secs(60)).unwrap();
    vm.wait_for("network: Ready", at, Duration::from_secs(60)).unwrap();
    let console = vm.console();
    // The new partitions were made known to the running kernel: no reboot to read them.
    let stage1_starts = console.matches("machined[stage1]: switching to").count();
    assert_eq!(stage1_starts, 1, "one kernel start on first boot; console:\n{console}");
    let root = format!("slot A: root ROOT-A is {}", board.root_device(Slot::A));
    assert!(console.contains(&root), "{console}");

    let n = node.address();
    let mut version = serde_json::Value::Null;
    assert!(
        eventually(Duration::from_secs(60), || {
            let run = ctl(None, &["--insecure", "-n", &n, "-o", "json", "version"]);
            version = serde_json::from_str(&run.stdout).unwrap_or_default();
            run.success
        }),
        "ctl could not reach the node; console:\n{}",
        node.vm.console()
    );
    // Figures for people (`--nocapture`), not assertions: TCG speed varies.
    println!("QEMU start to API ready (first boot): {:.1?}", started.elapsed());
    let row = &version[0];
    assert_eq!(row["mode"], "maintenance", "{version}");
    assert_eq!(row["arch"], board.arch().to_string());
    assert_eq!(row["slot"], "A");
    assert_eq!(row["pid1"], true);
    assert!(row["kernel"].as_str().unwrap().starts_with(board.kernel_series), "{version}");
    assert!(row["hostname"].as_str().unwrap().starts_with("cairn-"), "{version}");

    let disks = ctl(None, &["--insecure", "-n", &n, "disks"]).ok().stdout;
    let size = format!("{:.1} GiB", board.disk_bytes as f64 / f64::from(1 << 30));
    assert!(disks.lines().any(|l| l.contains(board.disk_device()) && l.contains(&size)), "{disks}");
    let refused = ctl(None, &["--insecure", "-n", &n, "services"]).failed();
    assert!(refused.stderr.contains("maintenance mode"), "{}", refused.stderr);

    // This boot created STATE and EPHEMERAL, formatted and mounted them (EPHEMERAL in the
    // background: containerd waits for it). Configure the node: from now on it speaks mTLS
    // only.
    assert!(console.contains("created STATE and EPHEMERAL"), "{console}");
    let state = format!("STATE ({}) mounted on /system/state", board.state_device());
    assert!(console.contains(&state), "{console}");
    let cluster = Cluster::generate("qemu").unwrap();
    let admin = cluster.admin();
    let config_key = testing::key();
    let config_file = cluster.node_config_with("node.yaml", |text| {
        config_for(text, &time_server_at, &config_key, registry_port)
    });
    // Pinned to the certificate whose fingerprint the console showed, and proving the token:
    // no trust on first use. Without the token the node refuses.
    let fingerprint = fingerprint_in(&node.vm.console()).expect("the fingerprint on the console");
    let pin = ["--insecure", "--fingerprint", &fingerprint, "-n", &n];
    let apply = [&pin[..], &["apply-config", "-f", config_file.to_str().unwrap()]].concat();
    let refused = ctl(None, &apply).failed();
    assert!(refused.stderr.contains("this node has a bootstrap token"), "{}", refused.stderr);
    let token = inputs.token();
    let with_token = ["--bootstrap-token-file", token.to_str().unwrap()];
    let applied = ctl(None, &[&apply[..], &with_token[..]].concat()).ok();
    assert!(applied.stdout.contains("applied"), "{}", applied.stdout);
    let version = ctl(Some(&admin), &["-n", &n, "version"]).ok().stdout;
    assert!(version.contains("configured") && version.contains("qemu-node"), "{version}");
    assert_config_in_effect(&admin, &n);
    assert_time_from(&admin, &n, &time_server_at);
    let stats = ctl(Some(&admin), &["-n", &n, "-o", "json", "stats"]).ok().stdout;
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    println!(
        "machined RSS on the configured node: {:.1} MiB, {} processes",
        stats[0]["machined_rss_bytes"].as_f64().unwrap_or_default() / 1048576.0,
        stats[0]["processes"]
    );
    assert_mounts(&admin, &n);
    assert_services_ready(&admin, &n);
    // machined logs into the kernel log too.
    let dmesg = ctl(Some(&admin), &["-n", &n, "dmesg"]).ok().stdout;
    assert!(dmesg.contains("Linux version"), "{dmesg}");
    assert!(
        dmesg.lines().any(|l| l.contains("machined:") && l.contains("API listening on")),
        "{dmesg}"
    );
    let status = ctl(Some(&admin), &["-n", &n, "read", "/proc/1/status"]).ok().stdout;
    assert!(status.contains("Name:\tmachined"), "{status}");

    // A pod added by apply-config, no reboot: the one the scenarios find running.
    let config = std::fs::read_to_string(&config_file).unwrap();
    let web = dir.join("web.yaml");
    std::fs::write(&web, pods::with_pods(&config, pods::WEB_POD)).unwrap();
    let applied = Instant::now();
    ctl(Some(&admin), &["-n", &n, "apply-config", "-f", web.to_str().unwrap()]).ok();
    let first_answer =
        pods::wait_web(&admin, &n, &node.forwarded(WEB_HOST_PORT), Duration::from_secs(180));
    println!(
        "apply-config to the web pod's first HTTP answer: {:.1?}",
        applied.elapsed().max(first_answer)
    );

    // Shutdown powers the machine off: QEMU exits.
    ctl(Some(&admin), &["-n", &n, "shutdown"]).ok();
    assert!(
        node.vm.wait_exit(Duration::from_secs(120)).unwrap().is_some(),
        "QEMU did not exit after shutdown"
    );
    ConfiguredNode {
        board,
        dir,
        disk,
        image,
        inputs,
        cluster,
        config,
        config_key,
        _time_server: time_server,
        time_server_at,
        registry_port,
    }
}

/// node.yaml (`text`) with the suite's settings. QEMU's user network is 10.0.2.0/24: the
/// node keeps DHCP's 10.0.2.15 (the API port is forwarded there) as a static address, gains
/// a second one, a default route with a metric and its own resolvers; it syncs with the
/// host's time server, trusts `config_key` for updates and mirrors a registry to the host's.
fn config_for(
    text: String,
    time_server_at: &str,
    config_key: &SigningKey,
    registry: u16,
) -> String {
    text + &format!("  time: {{servers: [\"{time_server_at}\"]}}\n")
        + &updates::update_config(config_key)
        + &format!(
            "  registries: {{mirrors: {{{MIRRORED_REGISTRY}: {{endpoints: [\"http://10.0.2.2:{registry}\"]}}}}}}\n"
        )
        + concat!(
            "  hostname: qemu-node\n",
            "  sysctls: {vm.swappiness: \"13\"}\n",
            "  files:\n",
            "    - {path: /var/lib/e2e/hello, content: \"hello from the config\\n\"}\n",
            "  network:\n",
            "    interfaces:\n",
            "      - interface: eth0\n",
            "        addresses: [10.0.2.15/24, 10.0.2.99/24]\n",
            "        routes: [{network: 0.0.0.0/0, gateway: 10.0.2.2, metric: 100}]\n",
            "    nameservers: [10.0.2.3, 192.0.2.53]\n",
        )
}

impl ConfiguredNode {
    /// The admin's client config.
    pub fn admin(&self) -> PathBuf {
        self.cluster.admin()
    }

    /// A directory for one scenario's disk and VM files, removed when dropped.
    pub fn scenario_dir(&self) -> tempfile::TempDir {
        tempfile::tempdir_in(&self.dir).unwrap()
    }

    /// Boots a qcow2 overlay of the configured disk in `dir` and waits until the node
    /// answers, configured.
    pub fn start(&self, dir: &Path, power_on: PowerOn) -> NodeVm {
        let disk = NodeDisk::overlay(&self.disk, &dir.join("disk.qcow2")).unwrap();
        self.start_from(disk, dir, power_on)
    }

    /// Boots a whole copy of the configured disk (for scenarios that read it from the host
    /// while it runs) and waits until the node answers, configured.
    pub fn start_copy(&self, dir: &Path, power_on: PowerOn) -> NodeVm {
        let disk = NodeDisk::copy(&self.disk, &dir.join("disk.raw"), 0).unwrap();
        self.start_from(disk, dir, power_on)
    }

    fn start_from(&self, disk: NodeDisk, dir: &Path, power_on: PowerOn) -> NodeVm {
        let mut node = NodeVm::boot(self.board, disk, &dir.join("vm"), power_on);
        node.wait_configured(0, &self.admin(), "starting from the configured disk");
        node
    }
}

/// A node's disk and the VM running it.
pub struct NodeVm {
    board: &'static Board,
    /// The disk.
    pub disk: NodeDisk,
    work_dir: PathBuf,
    /// The VM.
    pub vm: Vm,
}

impl NodeVm {
    /// Starts a VM from `disk`, its files in `work_dir`.
    fn boot(board: &'static Board, disk: NodeDisk, work_dir: &Path, power_on: PowerOn) -> NodeVm {
        let vm = start_vm(board, &disk, work_dir, power_on);
        NodeVm { board, disk, work_dir: work_dir.to_path_buf(), vm }
    }

    /// `127.0.0.1:PORT`, forwarded to the node's API.
    pub fn address(&self) -> String {
        self.vm.api_address.clone()
    }

    /// `127.0.0.1:PORT`, forwarded to the node's `port`.
    pub fn forwarded(&self, port: u16) -> String {
        self.vm.forwarded[&port].clone()
    }

    /// Starts the VM again from the same disk (after it stopped) and waits until the node
    /// answers, configured, over mTLS.
    pub fn power_on(&mut self, power_on: PowerOn, admin: &Path, after: &str) {
        self.vm = start_vm(self.board, &self.disk, &self.work_dir, power_on);
        self.wait_configured(0, admin, after);
    }

    /// Waits for a boot's API (its console from byte `from` on) and for the node to answer,
    /// configured, over mTLS.
    pub fn wait_configured(&mut self, from: usize, admin: &Path, after: &str) {
        self.vm.wait_for("API listening on 0.0.0.0:50000", from, Duration::from_secs(240)).unwrap();
        let n = self.address();
        assert!(
            eventually(Duration::from_secs(90), || {
                ctl(Some(admin), &["-n", &n, "version"]).stdout.contains("configured")
            }),
            "the node did not come back configured after {after}; console:\n{}",
            self.vm.console()
        );
    }
}

/// Starts `board`'s VM from `disk`, with the pods' ports forwarded.
fn start_vm(board: &Board, disk: &NodeDisk, work_dir: &Path, power_on: PowerOn) -> Vm {
    let config =
        board.vm_config(disk.qemu_image(), work_dir, &[WEB_HOST_PORT, HOSTNET_PORT], power_on);
    Vm::start(&config).unwrap()
}

/// The root is the read-only squashfs; STATE and `/var` are ext4.
fn assert_mounts(admin: &Path, n: &str) {
    let mounts = ctl(Some(admin), &["-n", n, "-o", "json", "mounts"]).ok().stdout;
    let mounts: Vec<serde_json::Value> = serde_json::from_str(&mounts).unwrap();
    let root = mounts.iter().find(|m| m["target"] == "/").expect("a root mount");
    assert_eq!(root["type"], "squashfs");
    assert!(root["options"].as_str().unwrap().starts_with("ro"), "{root}");
    assert!(mounts.iter().any(|m| m["target"] == "/system/state" && m["type"] == "ext4"));
    assert!(mounts.iter().any(|m| m["target"] == "/var" && m["type"] == "ext4"));
}

/// Every service comes up (containerd takes several seconds under TCG), containerd runs
/// supervised, its output in its log, and the kubelet imported the images baked into the
/// OS image.
fn assert_services_ready(admin: &Path, n: &str) {
    let all = [
        "apid",
        "logflush",
        "network",
        "settings",
        "power-button",
        "addresses",
        "serving-cert",
        "time",
        "containerd",
        "kubelet",
    ];
    let mut not_ready = Vec::new();
    let ready = eventually(Duration::from_secs(120), || {
        not_ready = services_not_ready(Some(admin), n, &all);
        not_ready.is_empty()
    });
    assert!(
        ready,
        "not ready: {not_ready:?}\ncontainerd's log:\n{}",
        ctl(Some(admin), &["-n", n, "logs", "containerd"]).stdout
    );
    assert!(ctl(Some(admin), &["-n", n, "logs", "machined"])
        .ok()
        .stdout
        .contains("stage 2 (PID 1)"));
    let containerd = ctl(Some(admin), &["-n", n, "logs", "containerd"]).ok().stdout;
    assert!(containerd.contains("containerd successfully booted"), "{containerd}");
    let kubelet = ctl(Some(admin), &["-n", n, "logs", "kubelet"]).ok().stdout;
    assert!(kubelet.contains("pause.tar") && kubelet.contains("busybox.tar"), "{kubelet}");
}

/// The node's clock is synchronised with `server` and agrees with the host's; returns
/// `ctl time`'s row.
pub fn assert_time_from(admin: &Path, n: &str, server: &str) -> serde_json::Value {
    let mut row = serde_json::Value::Null;
    let synced = eventually(Duration::from_secs(60), || {
        let run = ctl(Some(admin), &["-n", n, "-o", "json", "time"]);
        row = serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap_or_default()[0].clone();
        row["state"] == "sntp" && row["source"] == server
    });
    assert!(
        synced,
        "the node did not sync with {server}: {row}\n{}",
        ctl(Some(admin), &["-n", n, "logs", "time"]).stdout
    );
    let behind: f64 = row["node_behind_seconds"].as_str().unwrap().parse().unwrap();
    assert!(behind.abs() < 10.0, "the node's clock is {behind}s off the host's: {row}");
    row
}

/// What a file on the node must look like.
type Expectation = dyn Fn(&str) -> bool;

/// The config's host name, sysctl, file, addresses, route and resolvers are in effect.
pub fn assert_config_in_effect(admin: &Path, n: &str) {
    let read = |path: &str| ctl(Some(admin), &["-n", n, "read", path]).stdout;
    let expectations: [(&str, &Expectation); 6] = [
        ("/proc/sys/kernel/hostname", &|t| t == "qemu-node\n"),
        ("/proc/sys/vm/swappiness", &|t| t == "13\n"),
        ("/var/lib/e2e/hello", &|t| t == "hello from the config\n"),
        ("/proc/net/fib_trie", &|t| t.contains("10.0.2.99") && t.contains("10.0.2.15")),
        ("/run/resolv.conf", &|t| t == "nameserver 10.0.2.3\nnameserver 192.0.2.53\n"),
        // Destination 0, gateway 10.0.2.2 (little-endian hex), metric 100.
        ("/proc/net/route", &|t| {
            t.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 6
                    && f[0] == "eth0"
                    && f[1] == "00000000"
                    && f[2] == "0202000A"
                    && f[6] == "100"
            })
        }),
    ];
    for (path, expected) in expectations {
        assert!(
            eventually(Duration::from_secs(30), || expected(&read(path))),
            "{path} is not as configured:\n{}\nnetwork log:\n{}\nsettings log:\n{}",
            read(path),
            ctl(Some(admin), &["-n", n, "logs", "network"]).stdout,
            ctl(Some(admin), &["-n", n, "logs", "settings"]).stdout
        );
    }
}
