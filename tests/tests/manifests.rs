//! Pod manifests stored on a node with `ctl pod apply`/`ctl pod delete`, against a real
//! machined (host mode: it stores them on its STATE; the kubelet that runs them is exercised
//! in the QEMU test).

use cairn_tests::{configured_node, ctl};

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: batch}\nspec:\n  containers: [{name: main, image: localhost/busybox:latest, command: [true]}]\n";

#[test]
fn manifests_are_checked_stored_and_removed() {
    let (cluster, node) = configured_node();
    let admin = cluster.admin();
    let n = node.address.as_str();
    let dir = tempfile::tempdir().unwrap();
    let manifests = node.root().join("system/state/manifests");

    // A pod with a field the kubelet does not implement is refused; nothing is stored.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        POD.replace("spec:\n", "spec:\n  initContainers: [{name: i, image: i}]\n"),
    )
    .unwrap();
    let refused =
        ctl(Some(&admin), &["-n", n, "pod", "apply", "-f", bad.to_str().unwrap()]).failed();
    assert!(
        refused.stderr.contains("manifest.spec.initContainers: not supported"),
        "{}",
        refused.stderr
    );
    assert!(!manifests.exists() || std::fs::read_dir(&manifests).unwrap().count() == 0);

    // A good one is stored under its namespace and name; only admins may.
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, POD).unwrap();
    let reader = cluster.client("os:reader");
    let denied =
        ctl(Some(&reader), &["-n", n, "pod", "apply", "-f", good.to_str().unwrap()]).failed();
    assert!(denied.stderr.contains("os:admin"), "{}", denied.stderr);
    let stored = ctl(Some(&admin), &["-n", n, "pod", "apply", "-f", good.to_str().unwrap()]).ok();
    assert!(stored.stdout.contains("pod default/batch stored"), "{}", stored.stdout);
    assert_eq!(std::fs::read_to_string(manifests.join("default_batch.yaml")).unwrap(), POD);

    // This machined runs no kubelet (only a node's PID 1 does), and says so.
    let pods = ctl(Some(&admin), &["-n", n, "pods"]).failed();
    assert!(pods.stderr.contains("runs no kubelet"), "{}", pods.stderr);

    ctl(Some(&admin), &["-n", n, "pod", "delete", "batch"]).ok();
    assert!(!manifests.join("default_batch.yaml").exists());
    let again = ctl(Some(&admin), &["-n", n, "pod", "delete", "batch"]).failed();
    assert!(again.stderr.contains("no manifest defines pod default/batch"), "{}", again.stderr);
}
