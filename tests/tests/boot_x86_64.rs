//! The x86_64 image, with a bootstrap token: built twice by image-builder (byte-identical),
//! then booted as a user would boot it (q35, OVMF as pflash, the image grown to 4 GiB as a virtio disk, user
//! networking with the API port forwarded), through systemd-boot and machined's stage 1; the
//! first boot creates STATE and EPHEMERAL, the second reaches the API in maintenance mode;
//! then the node is configured over `ctl --insecure`, pinned to the certificate fingerprint
//! on the console and proving the token (static addresses, a route, resolvers,
//! a host name, a sysctl and a file, all checked on the node, and an SNTP server the test runs
//! on the host), driven over mTLS, rebooted (it comes back configured, its certificate naming
//! its DHCP address), powered off with the ACPI power button and on again with the RTC in
//! 2000 (like a board without one: it starts at its time floor, syncs, and ctl connects), cut
//! off (QEMU killed) and on again (still configured each time), and shut down (QEMU exits).
//!
//! Needs qemu-system-x86 and ovmf (`.ci/run` installs them) and the Debian archive (the
//! packages are cached in $CAIRN_CACHE, or target/cairn-cache).

mod boot_x86_64 {
    pub mod pods;
    pub mod updates;
}

use std::time::Duration;

use boot_x86_64::pods::{self, HOSTNET_PORT, MIRRORED_REGISTRY, WEB_HOST_PORT};
use boot_x86_64::updates::{self, Bundles};
use cairn_api::bundle::testing;
use cairn_qemu::{Vm, VmConfig};
use cairn_tests::disk::file_in_image;
use cairn_tests::registry::Registry;
use cairn_tests::sntp::{Server, ServerClock};
use cairn_tests::{
    build_image, ctl, eventually, fingerprint_in, services_not_ready, serving_cert_names, Cluster,
};

#[test]
fn x86_64_image_is_reproducible_and_boots_to_the_api() {
    let _timing = cairn_tests::timing::Scenario::start("generic-x86_64/whole-suite");
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    // Built with a bootstrap token: the node takes its first config only from who knows it.
    let token = first.path().join("bootstrap-token");
    std::fs::write(&token, "c41r9-b007-5ecr3t-0123456789abcdef\n").unwrap();
    // And an update bundle, signed with a fresh key: byte-identical too (ed25519 is
    // deterministic), and checked offline by image-builder inspect.
    let keys = first.path().join("keys");
    let image_builder = cairn_tests::bin_dir().join("image-builder");
    let keygen = std::process::Command::new(&image_builder)
        .args(["keygen", "--output"])
        .arg(&keys)
        .status()
        .unwrap();
    assert!(keygen.success());
    let signing_key = keys.join("signing.key");
    let report = build_image(first.path(), Some(&token), Some(&signing_key), &[]);
    assert_eq!(
        build_image(second.path(), Some(&token), Some(&signing_key), &[]),
        report,
        "two builds of the same inputs differ"
    );
    // The systems the node is updated to: a good one, one whose kernel panics, one that
    // never gets healthy.
    let later = tempfile::tempdir().unwrap();
    let bundle_of = |version: &str, extra: &[&str]| {
        let output = later.path().join(version);
        let args = [&["--version", version][..], extra].concat();
        build_image(&output, Some(&token), Some(&signing_key), &args);
        output.join(format!("cairn-x86_64-{version}.bundle"))
    };
    let [second_bundle, bad_kernel, unhealthy] =
        updates::BUILDS.map(|(version, extra)| bundle_of(version, extra));
    let bundles = Bundles {
        first: first.path().join("cairn-x86_64-0.1.0.bundle"),
        second: second_bundle,
        bad_kernel,
        unhealthy,
    };
    let bundle = first.path().join("cairn-x86_64-0.1.0.bundle");
    let inspect = std::process::Command::new(&image_builder)
        .arg("inspect")
        .arg(&bundle)
        .arg("--key")
        .arg(keys.join("signing.pub"))
        .output()
        .unwrap();
    let inspected = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        inspect.status.success() && inspected.contains("\"version\": \"0.1.0\""),
        "{inspected}"
    );
    let size = |name: &str| std::fs::metadata(first.path().join(name)).unwrap().len() as f64 / 1e6;
    println!(
        "update bundle {:.1} MB, disk image .raw.zst {:.1} MB",
        size("cairn-x86_64-0.1.0.bundle"),
        size("cairn-x86_64.raw.zst")
    );
    assert!(report.contains("bootstrap_token = true"), "{report}");
    assert!(report.contains("name = \"cairn-x86_64.raw.zst\""), "{report}");

    // The host's registry, holding the image's own busybox under another name, for pulls.
    let registry = Registry::start().unwrap();
    let busybox = first.path().join("busybox.tar");
    let raw = first.path().join("cairn-x86_64.raw");
    std::fs::write(&busybox, file_in_image(&raw, "/usr/share/cairn/images/busybox.tar").unwrap())
        .unwrap();
    registry.push(&busybox, "cairn/busybox:v1").unwrap();

    // Boot a copy, grown as a user's disk would be bigger than the image.
    let vm_dir = tempfile::tempdir().unwrap();
    let disk = vm_dir.path().join("disk.raw");
    std::fs::copy(first.path().join("cairn-x86_64.raw"), &disk).unwrap();
    std::fs::OpenOptions::new().write(true).open(&disk).unwrap().set_len(4 << 30).unwrap();
    let vm_config = VmConfig {
        image: disk,
        board: cairn_tests::board("generic-x86_64"),
        memory_mib: 1024,
        work_dir: vm_dir.path().join("vm"),
        own_process_group: false,
        rtc_base: None,
        forwards: vec![WEB_HOST_PORT, HOSTNET_PORT],
        offline: false,
    };
    // The node's time server: the host's clock, reached at QEMU's gateway address.
    let time_server =
        Server::start("127.0.0.1:0".parse().unwrap(), ServerClock::Ahead(Duration::ZERO)).unwrap();
    let time_server_at = format!("10.0.2.2:{}", time_server.address().port());
    let started = std::time::Instant::now();
    let mut vm = Vm::start(&vm_config).unwrap();
    let at = vm
        .wait_for("machined[stage1]: switching to /usr/sbin/machined", 0, Duration::from_secs(240))
        .unwrap();
    let at = vm.wait_for("API listening on 0.0.0.0:50000", at, Duration::from_secs(60)).unwrap();
    vm.wait_for("network: Ready", at, Duration::from_secs(60)).unwrap();
    let console = vm.console();
    assert!(console.contains("slot A: root ROOT-A is /dev/vda2"), "{console}");

    let n = vm.api_address.clone();
    let mut version = serde_json::Value::Null;
    assert!(
        eventually(Duration::from_secs(60), || {
            let run = ctl(None, &["--insecure", "-n", &n, "-o", "json", "version"]);
            version = serde_json::from_str(&run.stdout).unwrap_or_default();
            run.success
        }),
        "ctl could not reach the node; console:\n{}",
        vm.console()
    );
    // Figures for people (`--nocapture`), not assertions: TCG speed varies.
    println!("QEMU start to API ready (first boot, with its reboot): {:.1?}", started.elapsed());
    let node = &version[0];
    assert_eq!(node["mode"], "maintenance", "{version}");
    assert_eq!(node["arch"], "x86_64");
    assert_eq!(node["slot"], "A");
    assert_eq!(node["pid1"], true);
    assert!(node["kernel"].as_str().unwrap().starts_with("6.12"), "{version}");
    assert!(node["hostname"].as_str().unwrap().starts_with("cairn-"), "{version}");

    let disks = ctl(None, &["--insecure", "-n", &n, "disks"]).ok().stdout;
    assert!(disks.lines().any(|l| l.contains("/dev/vda") && l.contains("4.0 GiB")), "{disks}");
    let refused = ctl(None, &["--insecure", "-n", &n, "services"]).failed();
    assert!(refused.stderr.contains("maintenance mode"), "{}", refused.stderr);

    // The first boot created STATE and EPHEMERAL and rebooted; this boot formatted and
    // mounted them. Configure the node: from now on it speaks mTLS only.
    assert!(console.contains("created STATE and EPHEMERAL"), "{console}");
    assert!(console.contains("STATE (/dev/vda4) mounted on /system/state"), "{console}");
    let cluster = Cluster::generate("qemu").unwrap();
    let admin = cluster.admin();
    // QEMU's user network is 10.0.2.0/24: the node keeps DHCP's 10.0.2.15 (the API port is
    // forwarded there) as a static address, gains a second one, a default route with a
    // metric and its own resolvers.
    // A key trusted by the config, besides the image's.
    let config_key = testing::key();
    let config = cluster.node_config_with("node.yaml", |text| {
        text + &format!("  time: {{servers: [\"{time_server_at}\"]}}\n")
            + &updates::update_config(&config_key)
            + &format!(
                "  registries: {{mirrors: {{{MIRRORED_REGISTRY}: {{endpoints: [\"http://10.0.2.2:{}\"]}}}}}}\n",
                registry.port()
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
    });
    // Pinned to the certificate whose fingerprint the console showed, and proving the token:
    // no trust on first use. Without the token the node refuses.
    let fingerprint = fingerprint_in(&vm.console()).expect("the fingerprint on the console");
    let pin = ["--insecure", "--fingerprint", &fingerprint, "-n", &n];
    let apply = [&pin[..], &["apply-config", "-f", config.to_str().unwrap()]].concat();
    let refused = ctl(None, &apply).failed();
    assert!(refused.stderr.contains("this node has a bootstrap token"), "{}", refused.stderr);
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
    let mounts = ctl(Some(&admin), &["-n", &n, "-o", "json", "mounts"]).ok().stdout;
    let mounts: Vec<serde_json::Value> = serde_json::from_str(&mounts).unwrap();
    let root = mounts.iter().find(|m| m["target"] == "/").expect("a root mount");
    assert_eq!(root["type"], "squashfs");
    assert!(root["options"].as_str().unwrap().starts_with("ro"), "{root}");
    assert!(mounts.iter().any(|m| m["target"] == "/system/state" && m["type"] == "ext4"));
    assert!(mounts.iter().any(|m| m["target"] == "/var" && m["type"] == "ext4"));
    // Every service comes up (containerd takes several seconds under TCG).
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
        not_ready = services_not_ready(Some(&admin), &n, &all);
        not_ready.is_empty()
    });
    assert!(
        ready,
        "not ready: {not_ready:?}\ncontainerd's log:\n{}",
        ctl(Some(&admin), &["-n", &n, "logs", "containerd"]).stdout
    );
    assert!(ctl(Some(&admin), &["-n", &n, "logs", "machined"])
        .ok()
        .stdout
        .contains("stage 2 (PID 1)"));
    // containerd runs supervised, its output in its log.
    let containerd = ctl(Some(&admin), &["-n", &n, "logs", "containerd"]).ok().stdout;
    assert!(containerd.contains("containerd successfully booted"), "{containerd}");
    // The kubelet imported the images baked into the OS image.
    let kubelet = ctl(Some(&admin), &["-n", &n, "logs", "kubelet"]).ok().stdout;
    assert!(kubelet.contains("pause.tar") && kubelet.contains("busybox.tar"), "{kubelet}");

    // Pods: added, reached, killed, crash-looping, probed, OOM-killed, refused, removed.
    let base = std::fs::read_to_string(&config).unwrap();
    let web = vm.forwarded[&WEB_HOST_PORT].clone();
    let hostnet = vm.forwarded[&HOSTNET_PORT].clone();
    let reader = cluster.client("os:reader");
    pods::scenarios(&admin, &reader, &n, vm_dir.path(), &base, &web, &hostnet);
    // machined logs into the kernel log too.
    let dmesg = ctl(Some(&admin), &["-n", &n, "dmesg"]).ok().stdout;
    assert!(dmesg.contains("Linux version"), "{dmesg}");
    assert!(
        dmesg.lines().any(|l| l.contains("machined:") && l.contains("API listening on")),
        "{dmesg}"
    );
    let status = ctl(Some(&admin), &["-n", &n, "read", "/proc/1/status"]).ok().stdout;
    assert!(status.contains("Name:\tmachined"), "{status}");

    // A reboot brings it back with its config.
    let before = vm.console().len();
    let rebooted = std::time::Instant::now();
    ctl(Some(&admin), &["-n", &n, "reboot"]).ok();
    wait_configured(&mut vm, before, &admin, "a reboot");
    println!("ctl reboot to the API answering, configured: {:.1?}", rebooted.elapsed());
    assert_config_in_effect(&admin, &n);
    pods::wait_web(&admin, &n, &vm.forwarded[&WEB_HOST_PORT], Duration::from_secs(180));
    // The certificate was issued at boot, before the addresses were up; it follows them.
    let names = || serving_cert_names(&n).unwrap();
    assert!(
        eventually(Duration::from_secs(60), || names().iter().any(|name| name == "10.0.2.15")),
        "the serving certificate does not name the node's address: {:?}",
        names()
    );
    // The power button (ACPI, through QMP) powers it off cleanly; power it on again.
    let pressed = std::time::Instant::now();
    let status = vm.stop(Duration::from_secs(120)).unwrap();
    println!("power button to QEMU exit: {:.1?}", pressed.elapsed());
    assert!(status.success(), "QEMU: {status}");
    let console = vm.console();
    assert!(console.contains("power key pressed"), "{console}");
    // On again, with the RTC far behind, like a board without one (QEMU's PC RTC cannot
    // start in 1970: the kernel reads its two-digit year 70 as 2070): the node starts at the
    // time floor it recorded on STATE (not in 2000, where every certificate is invalid), syncs
    // with the host's server, and ctl connects.
    let behind = VmConfig { rtc_base: Some("2000-01-01".into()), ..vm_config.clone() };
    let mut vm = power_on(&behind, &admin, "a clean power-off, with the RTC in 2000");
    let time = assert_time_from(&admin, &vm.api_address.clone(), &time_server_at);
    assert_ne!(time["raised_to_floor"], "", "the clock was not raised to a floor: {time}");

    // A power cut (QEMU killed) loses nothing: the node comes back configured and, with
    // no network at all (no DHCP, no time server, no registry), runs its pod again.
    vm.power_off_hard().unwrap();
    let offline = VmConfig { offline: true, ..vm_config.clone() };
    let powered = std::time::Instant::now();
    let vm = power_on(&offline, &admin, "a power cut, offline");
    let n = vm.api_address.clone();
    pods::wait_pod(&admin, &n, "web", Duration::from_secs(180), pods::ready);
    println!("power on (offline) to the pod Ready: {:.1?}", powered.elapsed());
    pods::wait_web(&admin, &n, &vm.forwarded[&WEB_HOST_PORT], Duration::from_secs(30));

    // Updates: refused, A→B, B→A, rolled back by the counter and by the deadline, cut off.
    let mut vm = updates::scenarios(vm, &offline, &admin, &bundles, &config_key, vm_dir.path());
    let n = vm.api_address.clone();

    // Shutdown powers the machine off: QEMU exits.
    ctl(Some(&admin), &["-n", &n, "shutdown"]).ok();
    assert!(
        vm.wait_exit(Duration::from_secs(120)).unwrap().is_some(),
        "QEMU did not exit after shutdown"
    );
}

/// Starts the VM again and waits until the node answers, configured, over mTLS.
fn power_on(config: &VmConfig, admin: &std::path::Path, after: &str) -> Vm {
    let mut vm = Vm::start(config).unwrap();
    wait_configured(&mut vm, 0, admin, after);
    vm
}

/// Waits for a boot's API (its console from byte `from` on) and for the node to answer,
/// configured, over mTLS.
fn wait_configured(vm: &mut Vm, from: usize, admin: &std::path::Path, after: &str) {
    vm.wait_for("API listening on 0.0.0.0:50000", from, Duration::from_secs(240)).unwrap();
    let n = vm.api_address.clone();
    assert!(
        eventually(Duration::from_secs(90), || {
            ctl(Some(admin), &["-n", &n, "version"]).stdout.contains("configured")
        }),
        "the node did not come back configured after {after}; console:\n{}",
        vm.console()
    );
}

/// The node's clock is synchronised with `server` and agrees with the host's; returns
/// `ctl time`'s row.
fn assert_time_from(admin: &std::path::Path, n: &str, server: &str) -> serde_json::Value {
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
fn assert_config_in_effect(admin: &std::path::Path, n: &str) {
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
