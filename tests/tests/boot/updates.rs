//! The update scenarios, each on a copy of the configured node running the image's 0.1.0
//! from slot A, cut off every network: bundles refused with nothing changed (ESP and ROOT
//! partitions compared by hash), A→B keeping the config and the pod then an older version
//! refused and forced (B→A), a kernel that never reaches init and a system that never gets
//! healthy (both back on the old slot by themselves), and a power cut in the middle of
//! writing.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_api::bundle::{testing, SigningKey};
use cairn_api::image::{Slot, ESP_LABEL, ROOT_A_LABEL, ROOT_B_LABEL};
use cairn_tests::boards::PowerOn;
use cairn_tests::disk::partition_sha256;
use cairn_tests::{bin_dir, ctl, eventually};
use serde_json::Value;

use super::node::{ConfiguredNode, NodeVm};
use super::pods::{self, WEB_HOST_PORT};

/// How long a slot on trial has to get healthy (the config's `healthDeadlineSeconds`): long
/// enough for an emulated ARM board to bring its pod up.
const HEALTH_DEADLINE_SECONDS: u32 = 90;

/// The deadline of the scenario whose system never gets healthy: it waits the deadline out,
/// so a shorter one saves that much of CI's budget on every board. Still long enough for the
/// test to see the new system answer on trial.
const UNHEALTHY_DEADLINE_SECONDS: u32 = 40;

/// The version image-builder gives an image unless told otherwise: the configured node's.
pub const IMAGE_VERSION: &str = "0.1.0";

/// The image-builder arguments of the bundles beyond the image's own: 0.2.0; 0.3.0, whose
/// kernel panics before init; 0.3.1, which boots but where no pod gets its bridge network.
const BUILDS: [(&str, &[&str]); 3] = [
    ("0.2.0", &[]),
    ("0.3.0", &["--extra-kernel-args", "rdinit=/nonexistent panic=1"]),
    ("0.3.1", &["--extra-kernel-args", "module_blacklist=bridge"]),
];

/// Update bundles by version, all signed with the image's key.
pub struct Bundles(BTreeMap<String, PathBuf>);

impl Bundles {
    /// The bundles of `versions` for the configured node's board, built (once per set of
    /// inputs) unless cached.
    pub fn built(configured: &ConfiguredNode, versions: &[&str]) -> Bundles {
        let board = configured.board;
        let bundles = versions.iter().map(|&version| {
            let output = if version == IMAGE_VERSION {
                configured.image.clone()
            } else {
                let (_, extra) = BUILDS
                    .iter()
                    .find(|(v, _)| *v == version)
                    .unwrap_or_else(|| panic!("no build of {version}"));
                let args = [&["--version", version][..], extra].concat();
                configured.inputs.build(board, &args)
            };
            (version.to_string(), output.join(board.bundle(version)))
        });
        Bundles(bundles.collect())
    }

    /// The bundle of `version`.
    fn get(&self, version: &str) -> &Path {
        self.0.get(version).unwrap_or_else(|| panic!("the bundle of {version} was not built"))
    }
}

/// Writes 50 MiB to ROOT-B (`ROOT_B`, the board's device) as plainly as it gets: dd from
/// /dev/zero, synced at the end, timed.
const DD_POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: dd}
spec:
  restartPolicy: Never
  volumes: [{name: slot, hostPath: {path: ROOT_B, type: BlockDevice}}]
  containers:
    - name: dd
      image: localhost/busybox:latest
      command: [sh, -c, "time dd if=/dev/zero of=/slot bs=1M count=50 conv=fsync"]
      securityContext: {privileged: true}
      volumeMounts: [{name: slot, mountPath: /slot}]
"#;

/// The config's `machine.update`: `key` is trusted besides the image's key, and the health
/// deadline is short enough for a test.
pub fn update_config(key: &SigningKey) -> String {
    format!(
        "  update: {{trustedKeys: [\"{}\"], {}}}\n",
        key.public().to_base64(),
        health_deadline(HEALTH_DEADLINE_SECONDS)
    )
}

/// The config's health deadline entry.
fn health_deadline(seconds: u32) -> String {
    format!("healthDeadlineSeconds: {seconds}")
}

/// A small bundle for `arch`, signed with `key`: fine to refuse, not to install.
fn crafted(dir: &Path, name: &str, key: &SigningKey, arch: cairn_api::arch::Arch) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, testing::bundle(key, "0.9.0", arch, b"rootfs")).unwrap();
    path
}

/// `bundle` changed by `change`, written to `dir/name`.
fn altered(dir: &Path, name: &str, bundle: &Path, change: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(bundle).unwrap();
    change(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The hashes of what the node boots from.
fn boot_hashes(disk: &Path) -> Vec<String> {
    [ESP_LABEL, ROOT_A_LABEL, ROOT_B_LABEL]
        .iter()
        .map(|label| partition_sha256(disk, label).unwrap())
        .collect()
}

/// `ctl version -o json`'s row for the node.
fn version(admin: &Path, n: &str) -> Value {
    let run = ctl(Some(admin), &["-n", n, "-o", "json", "version"]).ok();
    serde_json::from_str::<Value>(&run.stdout).unwrap()[0].clone()
}

/// The node runs `version` from `slot`, with `other` in the other slot.
fn assert_runs(admin: &Path, n: &str, version_: &str, slot: &str, other: &str) -> Value {
    let row = version(admin, n);
    assert_eq!(
        (row["version"].as_str(), row["slot"].as_str(), row["other_slot"].as_str()),
        (Some(version_), Some(slot), Some(other)),
        "{row}"
    );
    row
}

/// `ctl upgrade` of `bundle`, with `extra` arguments.
fn upgrade(admin: &Path, n: &str, bundle: &Path, extra: &[&str]) -> cairn_tests::CtlRun {
    let args = [&["-n", n, "upgrade", "--image", bundle.to_str().unwrap()][..], extra].concat();
    ctl(Some(admin), &args)
}

/// `bundle` is refused with an error containing `says`, and nothing the node boots changes.
fn assert_refused(admin: &Path, n: &str, disk: &Path, bundle: &Path, says: &str) {
    let before = boot_hashes(disk);
    let run = upgrade(admin, n, bundle, &[]).failed();
    assert!(run.stderr.contains(says), "{}: {}", bundle.display(), run.stderr);
    assert_eq!(boot_hashes(disk), before, "{} changed the disk", bundle.display());
}

/// Starts a copy of the configured node (a whole one when `read_from_host`, for the checks
/// that hash its partitions while it runs), with no network but the forwarded ports; it runs
/// 0.1.0 from slot A, blessed, its watchdog armed (on a board that has one).
fn start(configured: &ConfiguredNode, dir: &Path, read_from_host: bool) -> NodeVm {
    let node = if read_from_host {
        configured.start_copy(dir, PowerOn::Offline)
    } else {
        configured.start(dir, PowerOn::Offline)
    };
    let (admin, n) = (configured.admin(), node.address());
    let log = |service: &str| ctl(Some(&admin), &["-n", &n, "logs", service]).stdout;
    let mut expected = vec![("boot-check", "slot A is blessed")];
    if configured.board.has_watchdog() {
        expected.push(("watchdog", "armed"));
    }
    for (service, says) in expected {
        let said = eventually(Duration::from_secs(30), || log(service).contains(says));
        assert!(said, "{service}: {}", log(service));
    }
    assert_runs(&admin, &n, IMAGE_VERSION, "A", "");
    node
}

/// Refused: an unknown key, the wrong architecture (signed with the config's key),
/// truncated, a flipped byte in the rootfs; nothing the node boots changes.
pub fn refused(configured: &ConfiguredNode, bundles: &Bundles) {
    let dir = configured.scenario_dir();
    let dir = dir.path();
    let admin = &configured.admin();
    let node = start(configured, dir, true);
    let (n, disk) = (&node.address(), node.disk.raw().unwrap());
    let second = bundles.get("0.2.0");
    let arch = configured.board.arch();
    let stranger = testing::key();
    let unknown = crafted(dir, "unknown-key.bundle", &stranger, arch);
    assert_refused(admin, n, disk, &unknown, "not signed by a trusted key");
    let other = other_arch(arch);
    let foreign = crafted(dir, "other-arch.bundle", &configured.config_key, other);
    let says = format!("the bundle is for {other}, this node is {arch}");
    assert_refused(admin, n, disk, &foreign, &says);
    let truncated = altered(dir, "truncated.bundle", second, |b| b.truncate(b.len() * 3 / 5));
    assert_refused(admin, n, disk, &truncated, "bundle refused");
    let flipped = altered(dir, "flipped.bundle", second, |b| {
        let at = b.len() * 4 / 5;
        b[at] ^= 0x20;
    });
    assert_refused(admin, n, disk, &flipped, "rootfs: chunk");
    assert_runs(admin, n, IMAGE_VERSION, "A", "");
}

/// An architecture that is not `arch`.
fn other_arch(arch: cairn_api::arch::Arch) -> cairn_api::arch::Arch {
    use cairn_api::arch::Arch;
    if arch == Arch::Arm64 {
        Arch::X86_64
    } else {
        Arch::Arm64
    }
}

/// A → B: the config and the pod come along; then an older version is refused, unless
/// forced: B → A.
pub fn a_to_b_and_back(configured: &ConfiguredNode, bundles: &Bundles) {
    let dir = configured.scenario_dir();
    let admin = &configured.admin();
    let node = start(configured, dir.path(), true);
    let (n, disk) = (&node.address(), node.disk.raw().unwrap());
    let log = |service: &str| ctl(Some(admin), &["-n", n, "logs", service]).ok().stdout;
    let started = Instant::now();
    let run = upgrade(admin, n, bundles.get("0.2.0"), &["--wait"]).ok();
    println!("ctl upgrade --wait to 0.2.0 answering: {:.1?}", started.elapsed());
    assert!(run.stdout.contains("runs 0.2.0 on slot B"), "{}", run.stdout);
    let row = assert_runs(admin, n, "0.2.0", "B", IMAGE_VERSION);
    assert_eq!(row["last_update"]["state"], "succeeded", "{row}");
    assert_eq!(row["hostname"], "qemu-node", "{row}");
    assert!(log("boot-check").contains("slot B is blessed"), "{}", log("boot-check"));
    pods::wait_web(admin, n, &node.forwarded(WEB_HOST_PORT), Duration::from_secs(180));
    // machined's log reaches the console through the kernel log.
    let written = format!("bytes to {}", &configured.board.root_device(Slot::B));
    if let Some(line) = node.vm.console().lines().find(|l| l.contains(&written)) {
        println!("update write into ROOT-B: {line}");
    }

    let first = bundles.get(IMAGE_VERSION);
    assert_refused(admin, n, disk, first, "older than the running 0.2.0");
    let run = upgrade(admin, n, first, &["--force", "--wait"]).ok();
    assert!(run.stdout.contains("runs 0.1.0 on slot A"), "{}", run.stdout);
    assert_runs(admin, n, IMAGE_VERSION, "A", "0.2.0");
}

/// A kernel that never reaches init: the bootloader's counter brings slot A back.
pub fn bad_kernel(configured: &ConfiguredNode, bundles: &Bundles) {
    let dir = configured.scenario_dir();
    let admin = &configured.admin();
    let node = start(configured, dir.path(), false);
    let n = &node.address();
    let started = Instant::now();
    let run = upgrade(admin, n, bundles.get("0.3.0"), &["--wait"]).failed();
    println!(
        "ctl upgrade --wait to a kernel that panics, back on the old slot: {:.1?}",
        started.elapsed()
    );
    assert!(run.stderr.contains("rolled back to slot A"), "{}", run.stderr);
    assert!(run.stderr.contains("boot tries ran out"), "{}", run.stderr);
    let row = assert_runs(admin, n, IMAGE_VERSION, "A", "0.3.0");
    assert_eq!(row["last_update"]["state"], "rolled_back", "{row}");
    assert!(node.vm.console().contains("Kernel panic"), "no panic on the console");
}

/// A system that boots but never gets healthy: machined gives it up at the deadline. Then
/// the figure to compare the update's writes with: a plain sequential write of about the
/// rootfs's size to the same disk, by dd in a privileged pod, into slot B (which holds only
/// the given-up system now).
pub fn unhealthy(configured: &ConfiguredNode, bundles: &Bundles) {
    let dir = configured.scenario_dir();
    let admin = &configured.admin();
    let node = start(configured, dir.path(), false);
    let n = &node.address();
    let short = configured.config.replace(
        &health_deadline(HEALTH_DEADLINE_SECONDS),
        &health_deadline(UNHEALTHY_DEADLINE_SECONDS),
    );
    assert_ne!(short, configured.config, "no health deadline in the config");
    let config = dir.path().join("short-deadline.yaml");
    std::fs::write(&config, pods::with_pods(&short, pods::WEB_POD)).unwrap();
    ctl(Some(admin), &["-n", n, "apply-config", "-f", config.to_str().unwrap()]).ok();
    let started = Instant::now();
    let waiting = {
        let (admin, n, bundle) = (admin.to_path_buf(), n.clone(), bundles.get("0.3.1").to_owned());
        std::thread::spawn(move || upgrade(&admin, &n, &bundle, &["--wait"]))
    };
    // While it runs on trial, slot A is its fallback: another update is refused.
    let on_trial = eventually(Duration::from_secs(300), || {
        let run = ctl(Some(admin), &["-n", n, "-o", "json", "version"]);
        run.success
            && serde_json::from_str::<Value>(&run.stdout).is_ok_and(|v| v[0]["version"] == "0.3.1")
    });
    assert!(on_trial, "0.3.1 never answered");
    let refused = upgrade(admin, n, bundles.get("0.2.0"), &[]).failed();
    assert!(refused.stderr.contains("slot B is on trial"), "{}", refused.stderr);
    let run = waiting.join().unwrap().failed();
    println!(
        "ctl upgrade --wait to an unhealthy system, back on the old slot: {:.1?}",
        started.elapsed()
    );
    // What the node found wrong at its deadline: the web pod, which gets no bridge network,
    // once the boot got that far; on a host too busy for that (CI builds beside the VMs), a
    // vital service or the kubelet still on its way. Either is the system not healthy.
    let deadline = format!("not healthy within {UNHEALTHY_DEADLINE_SECONDS}s: ");
    let reason = run.stderr.split(&deadline).nth(1).unwrap_or_else(|| panic!("{}", run.stderr));
    println!("the reason it gave: {}", reason.lines().next().unwrap_or_default());
    let problems = [
        "pod default/web: ",
        "containerd is ",
        "kubelet is ",
        "the kubelet has not started",
        "configured pods are known",
    ];
    assert!(problems.iter().any(|p| reason.contains(p)), "{}", run.stderr);
    assert_runs(admin, n, IMAGE_VERSION, "A", "0.3.1");
    pods::wait_web(admin, n, &node.forwarded(WEB_HOST_PORT), Duration::from_secs(180));

    let dd = dir.path().join("dd.yaml");
    std::fs::write(&dd, DD_POD.replace("ROOT_B", &configured.board.root_device(Slot::B))).unwrap();
    ctl(Some(admin), &["-n", n, "pod", "apply", "-f", dd.to_str().unwrap()]).ok();
    pods::wait_pod(admin, n, "dd", Duration::from_secs(120), |p| {
        p["status"]["phase"] == "Succeeded"
    });
    let copied = ctl(Some(admin), &["-n", n, "logs", "dd"]).ok().stdout;
    // busybox's `time` says how long: `real 0m 3.10s`.
    let took = copied.lines().find(|l| l.contains("real")).unwrap_or_default();
    println!("plain sequential write of 52428800 bytes to ROOT-B: {took}");
    ctl(Some(admin), &["-n", n, "pod", "delete", "dd"]).ok();
}

/// The power goes while the slot is written: the old slot boots, the next upgrade works.
pub fn power_cut_while_writing(configured: &ConfiguredNode, bundles: &Bundles) {
    let dir = configured.scenario_dir();
    let admin = &configured.admin();
    let mut node = start(configured, dir.path(), false);
    let n = node.address();
    let second = bundles.get("0.2.0");
    let mut child = Command::new(bin_dir().join("ctl"))
        .env("CTLCONFIG", admin)
        .args(["-n", &n, "upgrade", "--image", second.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        let writing = line.contains("writing slot B");
        seen.push(line);
        if writing {
            node.vm.power_off_hard().unwrap();
            break;
        }
    }
    let _ = child.wait();
    assert!(seen.iter().any(|l| l.contains("writing slot B")), "{seen:?}");
    node.power_on(PowerOn::Offline, admin, "a power cut while writing slot B");
    let n = node.address();
    assert_runs(admin, &n, IMAGE_VERSION, "A", "");
    let run = upgrade(admin, &n, second, &["--wait"]).ok();
    assert!(run.stdout.contains("runs 0.2.0 on slot B"), "{}", run.stdout);
    pods::wait_web(admin, &n, &node.forwarded(WEB_HOST_PORT), Duration::from_secs(180));
}
