//! Pod manifests stored on a node with `ctl pod apply`/`ctl pod delete`, and Kubernetes files
//! with `ctl apply -f`/`get`/`delete -f`, against a real machined (host mode: it stores them
//! on its STATE; the kubelet that runs them is exercised in the QEMU test).

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
        POD.replace("spec:\n", "spec:\n  ephemeralContainers: [{name: i, image: i}]\n"),
    )
    .unwrap();
    let refused =
        ctl(Some(&admin), &["-n", n, "pod", "apply", "-f", bad.to_str().unwrap()]).failed();
    assert!(
        refused.stderr.contains("manifest.spec.ephemeralContainers: not supported"),
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

/// A file as `kubectl apply -f` takes it.
const FILE: &str = r#"apiVersion: v1
kind: Secret
metadata: {name: token}
stringData: {token: s3cret-of-a-file}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: main
          image: localhost/busybox:latest
          env: [{name: TOKEN, valueFrom: {secretKeyRef: {name: token, key: token}}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
"#;

#[test]
fn objects_are_applied_whole_listed_and_deleted() {
    let (cluster, node) = configured_node();
    let admin = cluster.admin();
    let reader = cluster.client("os:reader");
    let n = node.address.as_str();
    let dir = tempfile::tempdir().unwrap();
    let store = node.root().join("system/state/objects.json");
    let file = dir.path().join("web.yaml");
    let path = file.to_str().unwrap();

    // A file with one refused document is refused whole, naming the document's field.
    std::fs::write(
        &file,
        FILE.replace(
            "replicas: 2",
            "replicas: 2
  paused: true",
        ),
    )
    .unwrap();
    let refused = ctl(Some(&admin), &["-n", n, "apply", "-f", path]).failed();
    assert!(
        refused.stderr.contains("web.yaml[1].spec.paused: not supported"),
        "{}",
        refused.stderr
    );
    assert!(!store.exists(), "a refused file stores nothing");

    // Only admins apply; the Service is skipped with a warning.
    std::fs::write(&file, FILE).unwrap();
    let denied = ctl(Some(&reader), &["-n", n, "apply", "-f", path]).failed();
    assert!(denied.stderr.contains("os:admin"), "{}", denied.stderr);
    let out = ctl(Some(&admin), &["-n", n, "apply", "-f", path]).ok().stdout;
    assert!(
        out.contains("secret/token created") && out.contains("deployment/web created"),
        "{out}"
    );
    assert!(out.contains("warning: web.yaml[2]: Service web skipped: it needs a cluster"), "{out}");
    let again = ctl(Some(&admin), &["-n", n, "apply", "-f", path]).ok().stdout;
    assert!(again.contains("deployment/web unchanged"), "{again}");

    // Listed by kind; a Secret's value only for admins.
    let listed = ctl(Some(&reader), &["-n", n, "get", "deploy"]).ok().stdout;
    assert!(listed.contains("web") && listed.contains("2 replicas"), "{listed}");
    let as_reader = ctl(Some(&reader), &["-n", n, "-o", "yaml", "get", "secrets"]).ok().stdout;
    assert!(as_reader.contains("token") && !as_reader.contains("s3cret-of-a-file"), "{as_reader}");
    let as_admin =
        ctl(Some(&admin), &["-n", n, "-o", "json", "get", "secret", "token"]).ok().stdout;
    assert!(as_admin.contains("s3cret-of-a-file"), "{as_admin}");
    let unknown = ctl(Some(&admin), &["-n", n, "get", "services"]).failed();
    assert!(
        unknown.stderr.contains("\"services\" is not a kind the node keeps"),
        "{}",
        unknown.stderr
    );

    // Deleted by the same file, from standard input too.
    let mut delete = cairn_tests::ctl_command(Some(&admin), &["-n", n, "delete", "-f", "-"]);
    let mut child = delete
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(FILE.as_bytes()).unwrap();
    let deleted = child.wait_with_output().unwrap();
    let deleted = String::from_utf8_lossy(&deleted.stdout);
    assert!(
        deleted.contains("deployment/web deleted") && deleted.contains("secret/token deleted"),
        "{deleted}"
    );
    assert_eq!(std::fs::read_to_string(&store).unwrap(), "[]");
}
