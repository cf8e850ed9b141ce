//! The x86_64 image: built twice by image-builder (byte-identical), then booted as a user
//! would boot it (q35, OVMF as pflash, the image grown to 4 GiB as a virtio disk, user
//! networking with the API port forwarded), through systemd-boot and machined's stage 1; the
//! first boot creates STATE and EPHEMERAL, the second reaches the API in maintenance mode;
//! then the node is configured over `ctl --insecure`, driven over mTLS, rebooted (it comes
//! back configured) and shut down (QEMU exits).
//!
//! Needs qemu-system-x86 and ovmf (`.ci/run` installs them) and the Debian archive (the
//! packages are cached in $CAIRN_CACHE, or target/cairn-cache).

use std::time::Duration;

use cairn_api::arch::Arch;
use cairn_qemu::{Vm, VmConfig};
use cairn_tests::{build_image, ctl, eventually, Cluster};

#[test]
fn x86_64_image_is_reproducible_and_boots_to_the_api() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let report = build_image(first.path());
    assert_eq!(build_image(second.path()), report, "two builds of the same inputs differ");
    assert!(report.contains("name = \"cairn-x86_64.raw.zst\""), "{report}");

    // Boot a copy, grown as a user's disk would be bigger than the image.
    let vm_dir = tempfile::tempdir().unwrap();
    let disk = vm_dir.path().join("disk.raw");
    std::fs::copy(first.path().join("cairn-x86_64.raw"), &disk).unwrap();
    std::fs::OpenOptions::new().write(true).open(&disk).unwrap().set_len(4 << 30).unwrap();
    let mut vm = Vm::start(&VmConfig {
        image: disk,
        arch: Arch::X86_64,
        memory_mib: 1024,
        work_dir: vm_dir.path().join("vm"),
    })
    .unwrap();
    let at = vm
        .wait_for("machined[stage1]: switching to /usr/sbin/machined", 0, Duration::from_secs(240))
        .unwrap();
    let at = vm.wait_for("API listening on 0.0.0.0:50000", at, Duration::from_secs(60)).unwrap();
    vm.wait_for("network: Running", at, Duration::from_secs(60)).unwrap();
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
    let config = cluster.node_config_with("node.yaml", |text| text + "  hostname: qemu-node\n");
    let applied =
        ctl(None, &["--insecure", "-n", &n, "apply-config", "-f", config.to_str().unwrap()]).ok();
    assert!(applied.stdout.contains("applied"), "{}", applied.stdout);
    let version = ctl(Some(&admin), &["-n", &n, "version"]).ok().stdout;
    assert!(version.contains("configured") && version.contains("qemu-node"), "{version}");
    let mounts = ctl(Some(&admin), &["-n", &n, "-o", "json", "mounts"]).ok().stdout;
    let mounts: Vec<serde_json::Value> = serde_json::from_str(&mounts).unwrap();
    let root = mounts.iter().find(|m| m["target"] == "/").expect("a root mount");
    assert_eq!(root["type"], "squashfs");
    assert!(root["options"].as_str().unwrap().starts_with("ro"), "{root}");
    assert!(mounts.iter().any(|m| m["target"] == "/system/state" && m["type"] == "ext4"));
    assert!(mounts.iter().any(|m| m["target"] == "/var" && m["type"] == "ext4"));
    let services = ctl(Some(&admin), &["-n", &n, "services"]).ok().stdout;
    for service in ["apid", "logflush", "network"] {
        assert!(
            services.lines().any(|l| l.contains(service) && l.contains("Running")),
            "{services}"
        );
    }
    assert!(ctl(Some(&admin), &["-n", &n, "logs", "machined"])
        .ok()
        .stdout
        .contains("stage 2 (PID 1)"));
    assert!(ctl(Some(&admin), &["-n", &n, "dmesg"]).ok().stdout.contains("Linux version"));
    let status = ctl(Some(&admin), &["-n", &n, "read", "/proc/1/status"]).ok().stdout;
    assert!(status.contains("Name:\tmachined"), "{status}");

    // A reboot brings it back with its config.
    let before = vm.console().len();
    ctl(Some(&admin), &["-n", &n, "reboot"]).ok();
    vm.wait_for("API listening on 0.0.0.0:50000", before, Duration::from_secs(240)).unwrap();
    assert!(
        eventually(Duration::from_secs(90), || {
            ctl(Some(&admin), &["-n", &n, "version"]).stdout.contains("configured")
        }),
        "the node did not come back configured; console:\n{}",
        vm.console()
    );
    // Shutdown powers the machine off: QEMU exits.
    ctl(Some(&admin), &["-n", &n, "shutdown"]).ok();
    assert!(
        vm.wait_exit(Duration::from_secs(120)).unwrap().is_some(),
        "QEMU did not exit after shutdown"
    );
}
