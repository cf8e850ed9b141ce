//! The power scenarios, each on a copy of the configured node: a reboot (it comes back
//! configured, its pod running, its certificate naming its DHCP address), the ACPI power
//! button then a start with the RTC in 2000 (like a board without one: it starts at its
//! time floor, syncs, and ctl connects), and a power cut (QEMU killed) then a start with no
//! network at all (still configured, its pod and the Deployment applied before the cut
//! running again, the data it wrote to its claim kept).

use std::time::{Duration, Instant};

use cairn_tests::boards::PowerOn;
use cairn_tests::{ctl, eventually, serving_cert_names};

use super::node::{assert_config_in_effect, assert_time_from, ConfiguredNode};
use super::pods::{self, WEB_HOST_PORT};

/// A reboot brings it back with its config and its pod.
pub fn reboot(configured: &ConfiguredNode) {
    let dir = configured.scenario_dir();
    let admin = configured.admin();
    let mut node = configured.start(dir.path(), PowerOn::Online);
    let n = node.address();
    let before = node.vm.console().len();
    let rebooted = Instant::now();
    ctl(Some(&admin), &["-n", &n, "reboot"]).ok();
    node.wait_configured(before, &admin, "a reboot");
    println!("ctl reboot to the API answering, configured: {:.1?}", rebooted.elapsed());
    assert_config_in_effect(&admin, &n);
    pods::wait_web(&admin, &n, &node.forwarded(WEB_HOST_PORT), Duration::from_secs(180));
    // The certificate was issued at boot, before the addresses were up; it follows them.
    let names = || serving_cert_names(&n).unwrap();
    assert!(
        eventually(Duration::from_secs(60), || names().iter().any(|name| name == "10.0.2.15")),
        "the serving certificate does not name the node's address: {:?}",
        names()
    );
}

/// The power button (ACPI, through QMP) powers it off cleanly; on again with the RTC far
/// behind, like a board without one (QEMU's PC RTC cannot start in 1970: the kernel reads its
/// two-digit year 70 as 2070), the node starts at the time floor it recorded on STATE (not
/// in 2000, where every certificate is invalid), syncs with the host's server, and ctl
/// connects.
pub fn power_button_and_clock(configured: &ConfiguredNode) {
    let dir = configured.scenario_dir();
    let admin = configured.admin();
    let mut node = configured.start(dir.path(), PowerOn::Online);
    let pressed = Instant::now();
    let status = node.vm.stop(Duration::from_secs(120)).unwrap();
    println!("power button to QEMU exit: {:.1?}", pressed.elapsed());
    assert!(status.success(), "QEMU: {status}");
    let console = node.vm.console();
    assert!(console.contains("power key pressed"), "{console}");
    let behind = PowerOn::ClockAt("2000-01-01");
    node.power_on(behind, &admin, "a clean power-off, with the RTC in 2000");
    let time = assert_time_from(&admin, &node.address(), &configured.time_server_at);
    assert_ne!(time["raised_to_floor"], "", "the clock was not raised to a floor: {time}");
}

/// Objects applied just before the power cut: a Deployment reading a ConfigMap and counting
/// its starts on a claim (synced, as a program that means to keep data does).
const APPLIED: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: greeting}
data: {greeting.txt: "hello from an applied ConfigMap"}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: greeter-data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: greeter}
spec:
  selector: {matchLabels: {app: greeter}}
  template:
    metadata: {labels: {app: greeter}}
    spec:
      terminationGracePeriodSeconds: 2
      volumes:
        - {name: greeting, configMap: {name: greeting}}
        - {name: data, persistentVolumeClaim: {claimName: greeter-data}}
      containers:
        - name: main
          image: localhost/busybox:latest
          command: [sh, -c, "cat /etc/greeting/greeting.txt; echo; echo started >> /data/starts; sync; echo synced; exec sleep 3600"]
          volumeMounts: [{name: greeting, mountPath: /etc/greeting}, {name: data, mountPath: /data}]
"#;

/// A power cut (QEMU killed) loses nothing: the node comes back configured and, with no
/// network at all (no DHCP, no time server, no registry), runs its pod again, and the
/// Deployment applied with `ctl apply -f` just before the cut, with its claim's data.
pub fn power_cut(configured: &ConfiguredNode) {
    let dir = configured.scenario_dir();
    let admin = configured.admin();
    let mut node = configured.start(dir.path(), PowerOn::Online);
    let file = dir.path().join("greeter.yaml");
    std::fs::write(&file, APPLIED).unwrap();
    let out = ctl(Some(&admin), &["-n", &node.address(), "apply", "-f", file.to_str().unwrap()]);
    assert!(out.ok().stdout.contains("deployment/greeter created"));
    let starts = |n: &str| {
        let file = "/var/lib/cairn/claims/default/greeter-data/starts";
        ctl(Some(&admin), &["-n", n, "read", file]).stdout.lines().count()
    };
    // Cut only once the start is on the disk: seen in the page cache is not yet kept.
    let n = node.address();
    let greeter =
        pods::wait_pod_named(&admin, &n, "greeter-", Duration::from_secs(120), pods::ready);
    let name = greeter["metadata"]["name"].as_str().unwrap().to_owned();
    let logs = |n: &str| ctl(Some(&admin), &["-n", n, "logs", &name]).stdout;
    let synced = eventually(Duration::from_secs(60), || logs(&n).contains("synced"));
    assert!(synced, "the greeter did not sync its claim before the cut: {}", logs(&n));
    assert_eq!(starts(&n), 1, "the greeter's claim before the cut");
    node.vm.power_off_hard().unwrap();
    let powered = Instant::now();
    node.power_on(PowerOn::Offline, &admin, "a power cut, offline");
    let n = node.address();
    pods::wait_pod(&admin, &n, "web", Duration::from_secs(180), pods::ready);
    println!("power on (offline) to the pod Ready: {:.1?}", powered.elapsed());
    pods::wait_web(&admin, &n, &node.forwarded(WEB_HOST_PORT), Duration::from_secs(30));
    pods::wait_pod(&admin, &n, &name, Duration::from_secs(120), pods::ready);
    let greeted = eventually(Duration::from_secs(30), || {
        logs(&n).contains("hello from an applied ConfigMap")
    });
    assert!(greeted, "{}", logs(&n));
    // Its claim kept the start before the cut, and counts the one after.
    assert!(eventually(Duration::from_secs(30), || starts(&n) == 2), "starts: {}", starts(&n));
}
