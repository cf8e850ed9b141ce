//! The x86_64 image: built twice by image-builder (byte-identical), then booted as a user
//! would boot it (q35, OVMF as pflash, the image grown to 4 GiB as a virtio disk, user
//! networking with the API port forwarded), through systemd-boot and machined's stage 1 to
//! the API in maintenance mode, reached with `ctl --insecure`.
//!
//! Needs qemu-system-x86 and ovmf (`.ci/run` installs them) and the Debian archive (the
//! packages are cached in $CAIRN_CACHE, or target/cairn-cache).

use std::time::Duration;

use cairn_api::arch::Arch;
use cairn_qemu::{Vm, VmConfig};
use cairn_tests::{build_image, ctl, eventually};

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
    vm.power_off_hard().unwrap();
}
