//! The pod scenario, on a copy of the configured node (which runs `web`): pods added by
//! `apply-config` with no reboot, reached over HTTP through a hostPort, killed,
//! crash-looping, failing liveness, over their memory or disk limit, on the node's network, reading
//! ConfigMaps and Secrets (a change reaching a running pod), pulled through a mirror, refused
//! when they ask for what the kubelet does not do, run from a stored manifest, applied from a
//! kubectl-style file (a Deployment, a DaemonSet, a Job, a claim) and deleted by it, removed
//! and restarted. (The power scenarios bring `web` back after a
//! reboot and with the network cut.)

use std::path::Path;
use std::time::{Duration, Instant};

use cairn_tests::boards::PowerOn;
use cairn_tests::disk::file_in_image;
use cairn_tests::registry::Registry;
use cairn_tests::{ctl, eventually, http_get};
use serde_json::Value;

use super::node::ConfiguredNode;

/// The pod's port on the node (forwarded by QEMU from the host).
pub const WEB_HOST_PORT: u16 = 8080;

/// The value of `web`'s one environment variable: shown to admins, hidden from readers.
const WEB_ENV_VALUE: &str = "s3cret-for-admins";

pub use cairn_tests::pods::{pods, ready, with_pods, WEB_POD};

/// Pods that fail in the ways the kubelet must handle.
const FAILING_PODS: &str = r#"
    - apiVersion: v1
      kind: Pod
      metadata: {name: crasher}
      spec:
        containers:
          - {name: main, image: localhost/busybox:latest, command: [sh, -c, "echo crashing; exit 3"]}
    - apiVersion: v1
      kind: Pod
      metadata: {name: liveness}
      spec:
        terminationGracePeriodSeconds: 2
        containers:
          - name: main
            image: localhost/busybox:latest
            command: [sh, -c, "touch /tmp/healthy; sleep 20; rm /tmp/healthy; sleep 3600"]
            livenessProbe: {exec: {command: [test, -f, /tmp/healthy]}, periodSeconds: 2, failureThreshold: 2}
    - apiVersion: v1
      kind: Pod
      metadata: {name: hog}
      spec:
        restartPolicy: Never
        terminationGracePeriodSeconds: 2
        containers:
          - name: main
            image: localhost/busybox:latest
            command: [sh, -c, "x=$(head -c 100000000 /dev/zero | tr '\\0' a); sleep 3600"]
            resources: {limits: {memory: 16Mi}}
    - apiVersion: v1
      kind: Pod
      metadata: {name: filler}
      spec:
        terminationGracePeriodSeconds: 2
        containers:
          - name: main
            image: localhost/busybox:latest
            command: [sh, -c, "head -c 16777216 /dev/zero > /fill; sync; exec sleep 3600"]
            resources: {limits: {ephemeral-storage: 8Mi}}
    - apiVersion: v1
      kind: Pod
      metadata: {name: sleeper}
      spec:
        # Room for its preStop hook, an exec that takes seconds under TCG; it then ends at
        # once on SIGTERM.
        terminationGracePeriodSeconds: 20
        securityContext:
          runAsUser: 1000
          runAsGroup: 2000
          fsGroup: 3000
          supplementalGroups: [4000]
          seccompProfile: {type: RuntimeDefault}
          sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "80"}]
        volumes: [{name: scratch, emptyDir: {}}]
        containers:
          - name: main
            image: localhost/busybox:latest
            command:
              - sh
              - -c
              - |
                id; touch /probe
                touch /scratch/made && echo "made in scratch, group $(stat -c %g /scratch/made)"
                grep Seccomp: /proc/self/status
                echo "unprivileged ports from $(cat /proc/sys/net/ipv4/ip_unprivileged_port_start)"
                until [ -f /scratch/hook ]; do sleep 0.2; done
                echo "postStart wrote: $(cat /scratch/hook)"
                trap 'exit 0' TERM
                sleep 3600 & wait
            volumeMounts: [{name: scratch, mountPath: /scratch}]
            lifecycle:
              postStart: {exec: {command: [sh, -c, "echo hello > /scratch/hook"]}}
              preStop: {exec: {command: [sh, -c, "echo bye > /scratch/stopping"]}}
            securityContext: {runAsNonRoot: true, readOnlyRootFilesystem: true}
    - apiVersion: v1
      kind: Pod
      metadata: {name: hostnet}
      spec:
        hostNetwork: true
        terminationGracePeriodSeconds: 2
        volumes: [{name: site, configMap: {name: hostnet-site, defaultMode: 0444}}]
        containers:
          - name: main
            image: localhost/busybox:latest
            command: [httpd, -f, -p, "8081", -h, /www]
            ports: [{containerPort: 8081, hostPort: 8081}]
            volumeMounts: [{name: site, mountPath: /www, readOnly: true}]
"#;

/// The objects the pods read: the host-network pod's page, the batch pod's password.
const OBJECTS: &str = r#"
    - apiVersion: v1
      kind: ConfigMap
      metadata: {name: hostnet-site}
      data: {index.html: "on the node network\n"}
    - apiVersion: v1
      kind: Secret
      metadata: {name: batch-creds}
      type: Opaque
      stringData: {password: PASSWORD_VALUE}
"#;

/// The batch pod's password: in a Secret, shown to admins, hidden from readers.
const BATCH_PASSWORD: &str = "s3cret-from-a-secret";

/// The config `config` with `objects` (YAML list items) under `machine.objects`.
fn with_objects(config: String, objects: &str) -> String {
    format!("{config}  objects:{}", objects.replace("PASSWORD_VALUE", BATCH_PASSWORD))
}

/// A pod for nodes in another zone: this node's labels do not admit it, so it waits.
const ELSEWHERE_POD: &str = r#"
    - apiVersion: v1
      kind: Pod
      metadata: {name: elsewhere}
      spec:
        nodeSelector: {kubernetes.io/os: linux, cairn.test/zone: moon}
        containers:
          - {name: main, image: localhost/busybox:latest, command: [sleep, "3600"]}
"#;

/// A file as `kubectl apply -f` takes it: a Deployment whose two replicas want one host port
/// (the second waits, as on a one-node cluster), reading a ConfigMap and a Secret and writing
/// to a claim; a DaemonSet; a Service, which needs a cluster and is skipped.
const APPLIED_FILE: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: api-data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: api-settings}
data: {MODE: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: api-token}
data: {token: dDBrZW4tYXBwbGllZA==}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, labels: {app: api}}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: main
          image: localhost/busybox:latest
          command: [sh, -c, 'hostname >> /data/runs; echo "mode $MODE, token $TOKEN"; exec sleep 3600']
          volumeMounts: [{name: data, mountPath: /data}]
          envFrom: [{configMapRef: {name: api-settings}}]
          env: [{name: TOKEN, valueFrom: {secretKeyRef: {name: api-token, key: token}}}]
          ports: [{containerPort: 8082, hostPort: 8082}]
      volumes: [{name: data, persistentVolumeClaim: {claimName: api-data}}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      volumes: [{name: scratch, emptyDir: {}}]
      # A sidecar: started first, kept beside the Job's runs, stopped once the Job is done.
      initContainers:
        - name: shipper
          image: localhost/busybox:latest
          restartPolicy: Always
          command: [sh, -c, 'trap "exit 0" TERM; echo shipping; while true; do sleep 1; done']
      containers:
        - name: main
          image: localhost/busybox:latest
          # Fails its first run, saying why in its termination message: the Job runs it again.
          command: [sh, -c, 'if [ -f /scratch/tried ]; then echo job done; else touch /scratch/tried; echo first try failed > /dev/termination-log; exit 1; fi']
          volumeMounts: [{name: scratch, mountPath: /scratch}]
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec: {selector: {app: api}, ports: [{port: 8082}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: main
          image: localhost/busybox:latest
          command: [sh, -c, 'cat /etc/podinfo/labels; ls /host; exec sleep 3600']
          volumeMounts:
            - {name: podinfo, mountPath: /etc/podinfo}
            # containerd takes it only from a shared (or slave) mount of the node's.
            - {name: host, mountPath: /host, readOnly: true, mountPropagation: HostToContainer}
      volumes:
        - name: podinfo
          downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
        - {name: host, hostPath: {path: /var/lib/cairn}}
"#;

/// The applied Secret's token (base64 in the file).
const APPLIED_TOKEN: &str = "t0ken-applied";

/// The host-network pod's port on the node.
pub const HOSTNET_PORT: u16 = 8081;

/// The registry name the node's config mirrors to the host's registry.
pub const MIRRORED_REGISTRY: &str = "registry.cairn.test";

/// A pod whose image comes from the host's registry through the mirror, and one whose image
/// is not there.
const PULLED_PODS: &str = r#"
    - apiVersion: v1
      kind: Pod
      metadata: {name: pulled}
      spec:
        terminationGracePeriodSeconds: 2
        containers:
          - {name: main, image: "registry.cairn.test/cairn/busybox:v1", command: [sleep, "3600"]}
    - apiVersion: v1
      kind: Pod
      metadata: {name: missing}
      spec:
        containers:
          - {name: main, image: "registry.cairn.test/cairn/busybox:missing"}
"#;

/// A pod asking for what Cairn's kubelet does not do.
const UNSUPPORTED_POD: &str = r#"
    - apiVersion: v1
      kind: Pod
      metadata: {name: debugged}
      spec:
        ephemeralContainers: [{name: debug, image: localhost/busybox:latest}]
        containers: [{name: main, image: localhost/busybox:latest}]
"#;

fn pod<'a>(pods: &'a [Value], name: &str) -> Option<&'a Value> {
    pods.iter().find(|p| p["metadata"]["name"] == name)
}

fn container(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

fn restarts(pod: Option<&Value>) -> i64 {
    pod.map_or(0, |p| container(p)["restartCount"].as_i64().unwrap_or(0))
}

/// Waits until `check` holds for `name`; panics with the pods and the kubelet's log.
pub fn wait_pod(
    admin: &Path,
    n: &str,
    name: &str,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Vec::new();
    let held = eventually(limit, || {
        last = pods(admin, n);
        pod(&last, name).is_some_and(&check)
    });
    assert!(
        held,
        "pod {name} did not get there: {}\n{}\nkubelet's log:\n{}",
        serde_json::to_string_pretty(&pod(&last, name)).unwrap(),
        ctl(Some(admin), &["-n", n, "pods"]).stdout,
        ctl(Some(admin), &["-n", n, "logs", "kubelet", "--tail", "60"]).stdout
    );
    pod(&last, name).unwrap().clone()
}

/// Waits until a pod whose name starts with `prefix` (a workload's) exists and `check` holds
/// for it; returns it.
pub fn wait_pod_named(
    admin: &Path,
    n: &str,
    prefix: &str,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let named = |pods: &[Value]| {
        pods.iter()
            .find(|p| p["metadata"]["name"].as_str().is_some_and(|name| name.starts_with(prefix)))
            .cloned()
    };
    let held = eventually(limit, || named(&pods(admin, n)).is_some_and(|p| check(&p)));
    assert!(
        held,
        "no pod {prefix}* got there:\n{}\nkubelet's log:\n{}",
        ctl(Some(admin), &["-n", n, "pods"]).stdout,
        ctl(Some(admin), &["-n", n, "logs", "kubelet", "--tail", "60"]).stdout
    );
    named(&pods(admin, n)).unwrap()
}

/// Waits until the pod's page answers at `web` (the host's forward of hostPort 8080);
/// returns how long it took.
pub fn wait_web(admin: &Path, n: &str, web: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    let answered = eventually(limit, || {
        http_get(web, "/")
            .is_some_and(|(code, body)| code == 200 && body == "hello from a cairn pod\n")
    });
    if !answered {
        // Only what concerns `web`: the whole listing is long enough to be cut in CI's log.
        let kubelet = ctl(Some(admin), &["-n", n, "logs", "kubelet", "--tail", "400"]).stdout;
        let about_web: Vec<&str> = kubelet.lines().filter(|l| l.contains("web")).collect();
        panic!(
            "the web pod did not answer at {web}: {:?}\n{}\n{}\nkubelet's log about web:\n{}\n\
             containerd's log:\n{}",
            http_get(web, "/"),
            ctl(Some(admin), &["-n", n, "pods"]).stdout,
            serde_json::to_string_pretty(&pod(&pods(admin, n), "web")).unwrap(),
            about_web[about_web.len().saturating_sub(40)..].join("\n"),
            ctl(Some(admin), &["-n", n, "logs", "containerd", "--tail", "30"]).stdout
        );
    }
    started.elapsed()
}

/// The resident memory of the process named `name` on the node, in MiB.
fn rss_mib(admin: &Path, n: &str, name: &str) -> Option<f64> {
    let listing = ctl(Some(admin), &["-n", n, "-o", "json", "ls", "/proc"]).stdout;
    let entries: Vec<Value> = serde_json::from_str(&listing).unwrap_or_default();
    entries.iter().filter_map(|e| e["name"].as_str()).find_map(|path| {
        let pid = path.trim_start_matches("/proc/");
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let status = ctl(Some(admin), &["-n", n, "read", &format!("{path}/status")]).stdout;
        if status.lines().next()? != format!("Name:\t{name}") {
            return None;
        }
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    })
}

/// Prints machined's and containerd's resident memory (figures for the note, `--nocapture`).
pub fn print_memory(admin: &Path, n: &str, when: &str) {
    for name in ["machined", "containerd"] {
        match rss_mib(admin, n, name) {
            Some(mib) => println!("{name} RSS {when}: {mib:.1} MiB"),
            None => println!("{name} RSS {when}: not found"),
        }
    }
}

/// Applies `config`; returns ctl's run.
fn apply(admin: &Path, n: &str, config: &Path) -> cairn_tests::CtlRun {
    ctl(Some(admin), &["-n", n, "apply-config", "-f", config.to_str().unwrap()])
}

/// Runs the pod scenario on a copy of the configured node, with the host's registry (holding
/// the image's own busybox under another name) at the port its config mirrors.
pub fn scenario(configured: &ConfiguredNode) {
    let dir = configured.scenario_dir();
    let admin = configured.admin();
    let reader = configured.cluster.client("os:reader");
    let registry = Registry::start_on(configured.registry_port).unwrap();
    let busybox = dir.path().join("busybox.tar");
    let raw = configured.image.join(configured.board.image());
    std::fs::write(&busybox, file_in_image(&raw, "/usr/share/cairn/images/busybox.tar").unwrap())
        .unwrap();
    registry.push(&busybox, "cairn/busybox:v1").unwrap();
    let node = configured.start(dir.path(), PowerOn::Online);
    let (web, hostnet) = (node.forwarded(WEB_HOST_PORT), node.forwarded(HOSTNET_PORT));
    let n = node.address();
    checks(&admin, &reader, &n, dir.path(), &configured.config, &web, &hostnet);
}

/// Runs the pod checks on a configured node whose config is `base` (written to files in
/// `dir`); `web` and `hostnet` are the host's forwards of ports 8080 and 8081. Leaves `web`
/// running alone.
fn checks(admin: &Path, reader: &Path, n: &str, dir: &Path, base: &str, web: &str, hostnet: &str) {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // Added by apply-config, no reboot, beside `web`.
    let every_pod = format!("{WEB_POD}{FAILING_PODS}{PULLED_PODS}{ELSEWHERE_POD}");
    let all = write("pods.yaml", with_objects(with_pods(base, &every_pod), OBJECTS));
    apply(admin, n, &all).ok();
    wait_web(admin, n, web, Duration::from_secs(180));
    let web_pod = wait_pod(admin, n, "web", Duration::from_secs(60), ready);
    let ip = web_pod["status"]["podIP"].as_str().unwrap_or_default();
    assert!(ip.starts_with("10.244.0."), "{web_pod}");
    let table = ctl(Some(admin), &["-n", n, "pods"]).ok().stdout;
    assert!(
        table.lines().any(|l| l.contains("web") && l.contains("1/1") && l.contains("Running")),
        "{table}"
    );

    // Its limits are the container cgroup's.
    let uid = web_pod["metadata"]["uid"].as_str().unwrap();
    let id =
        container(&web_pod)["containerID"].as_str().unwrap().trim_start_matches("containerd://");
    let cgroup = format!("/sys/fs/cgroup/kubepods/pod{uid}/{id}");
    let read =
        |file: &str| ctl(Some(admin), &["-n", n, "read", &format!("{cgroup}/{file}")]).stdout;
    assert_eq!(read("memory.max"), "67108864\n");
    assert_eq!(read("cpu.max"), "25000 100000\n");
    // The pod's own cgroup above it is limited to its containers' sum (one container here),
    // as upstream's kubelet limits it.
    let pod_cgroup = format!("/sys/fs/cgroup/kubepods/pod{uid}");
    let read_pod =
        |file: &str| ctl(Some(admin), &["-n", n, "read", &format!("{pod_cgroup}/{file}")]).stdout;
    assert_eq!(read_pod("memory.max"), "67108864\n");
    assert_eq!(read_pod("cpu.max"), "25000 100000\n");

    // Its env is for admins: a reader sees the pod with the value hidden, and none of
    // containerd's files, where the container's spec carries it.
    let as_reader = ctl(Some(reader), &["-n", n, "-o", "yaml", "pods"]).ok().stdout;
    assert!(as_reader.contains("WEB_TOKEN") && as_reader.contains("******"), "{as_reader}");
    assert!(!as_reader.contains(WEB_ENV_VALUE), "{as_reader}");
    let as_admin = ctl(Some(admin), &["-n", n, "-o", "yaml", "pods"]).ok().stdout;
    assert!(as_admin.contains(WEB_ENV_VALUE), "{as_admin}");
    let spec = format!("/run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json");
    assert!(ctl(Some(admin), &["-n", n, "read", &spec]).ok().stdout.contains(WEB_ENV_VALUE));
    let refused = ctl(Some(reader), &["-n", n, "read", &spec]).failed();
    assert!(refused.stderr.contains("needs os:admin"), "{}", refused.stderr);
    let logs = ctl(Some(admin), &["-n", n, "logs", "web"]).ok().stdout;
    assert!(logs.contains("serving"), "{logs}");

    // Its server killed: the container ends and is restarted, the count grows.
    let _ = http_get(web, "/cgi-bin/crash");
    wait_pod(admin, n, "web", Duration::from_secs(60), |p| restarts(Some(p)) >= 1 && ready(p));
    wait_web(admin, n, web, Duration::from_secs(60));
    let previous = ctl(Some(admin), &["-n", n, "logs", "web", "--previous"]).ok().stdout;
    assert!(previous.contains("serving"), "{previous}");

    // A crash loop backs off: 0 s, 10 s, 20 s...
    let crasher = wait_pod(admin, n, "crasher", Duration::from_secs(120), |p| {
        restarts(Some(p)) >= 2 && container(p)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    assert_eq!(container(&crasher)["lastState"]["terminated"]["exitCode"], 3, "{crasher}");
    // Liveness failing twice kills the container; it is restarted.
    wait_pod(admin, n, "liveness", Duration::from_secs(120), |p| restarts(Some(p)) >= 1);
    let kubelet = ctl(Some(admin), &["-n", n, "logs", "kubelet"]).ok().stdout;
    assert!(kubelet.contains("liveness probe failed"), "{kubelet}");
    // Over its memory limit: OOMKilled, and with restartPolicy Never it stays so.
    let hog = wait_pod(admin, n, "hog", Duration::from_secs(120), |p| {
        container(p)["state"]["terminated"]["reason"] == "OOMKilled"
    });
    assert_eq!(hog["status"]["phase"], "Failed", "{hog}");
    // Over its ephemeral-storage limit (its writable layer): evicted, as upstream evicts.
    let filler = wait_pod(admin, n, "filler", Duration::from_secs(120), |p| {
        p["status"]["reason"] == "Evicted"
    });
    assert_eq!(filler["status"]["phase"], "Failed", "{filler}");
    let message = filler["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("exceeds the total limit of containers 8Mi"), "{filler}");
    // Not for this node: Pending, with the scheduler's reason, and never started.
    let elsewhere = wait_pod(admin, n, "elsewhere", Duration::from_secs(30), |p| {
        p["status"]["phase"] == "Pending"
    });
    let scheduled = &elsewhere["status"]["conditions"][0];
    assert_eq!(scheduled["type"], "PodScheduled", "{elsewhere}");
    assert_eq!(scheduled["status"], "False", "{elsewhere}");
    let reason = scheduled["message"].as_str().unwrap_or_default();
    assert!(reason.contains("didn't match Pod's node affinity/selector"), "{elsewhere}");
    assert!(elsewhere["status"]["containerStatuses"].is_null(), "{elsewhere}");
    // Its user, group and read-only root, as it saw them.
    wait_pod(admin, n, "sleeper", Duration::from_secs(60), ready);
    let sleeper = ctl(Some(admin), &["-n", n, "logs", "sleeper"]).ok().stdout;
    assert!(
        sleeper.contains("uid=1000 gid=2000") && sleeper.contains("Read-only file system"),
        "{sleeper}"
    );
    // The pod's security context: its fsGroup and supplemental groups joined, the fsGroup
    // owning what is made in an emptyDir, seccomp filtering, the pod's sysctl.
    let groups = sleeper.lines().find(|l| l.contains("uid=")).unwrap_or_default();
    assert!(groups.contains("3000") && groups.contains("4000"), "{sleeper}");
    assert!(sleeper.contains("made in scratch, group 3000"), "{sleeper}");
    assert!(sleeper.contains("Seccomp:\t2"), "{sleeper}");
    assert!(sleeper.contains("unprivileged ports from 80"), "{sleeper}");
    // Its postStart hook wrote what the container waited for.
    let sleeper_logs = || ctl(Some(admin), &["-n", n, "logs", "sleeper"]).stdout;
    let hooked =
        eventually(Duration::from_secs(30), || sleeper_logs().contains("postStart wrote: hello"));
    assert!(hooked, "{}", sleeper_logs());
    // On the node's network: reached at the node's port, no portmap involved.
    wait_pod(admin, n, "hostnet", Duration::from_secs(60), ready);
    let page = eventually(Duration::from_secs(30), || {
        http_get(hostnet, "/").is_some_and(|(_, body)| body == "on the node network\n")
    });
    assert!(page, "the host-network pod did not answer: {:?}", http_get(hostnet, "/"));
    // Its page is a ConfigMap's key: changed in the config, it changes in the running pod.
    let hostnet_uid = pod(&pods(admin, n), "hostnet").unwrap()["metadata"]["uid"].clone();
    let changed = OBJECTS.replace("on the node network", "changed while it ran");
    apply(admin, n, &write("objects.yaml", with_objects(with_pods(base, &every_pod), &changed)))
        .ok();
    let page = eventually(Duration::from_secs(30), || {
        http_get(hostnet, "/").is_some_and(|(_, body)| body == "changed while it ran\n")
    });
    assert!(page, "the ConfigMap's change did not reach the pod: {:?}", http_get(hostnet, "/"));
    assert_eq!(pod(&pods(admin, n), "hostnet").unwrap()["metadata"]["uid"], hostnet_uid);
    // The Secret's value is for admins.
    let as_reader = ctl(Some(reader), &["-n", n, "get-config"]).ok().stdout;
    assert!(as_reader.contains("batch-creds") && !as_reader.contains(BATCH_PASSWORD));
    let as_admin = ctl(Some(admin), &["-n", n, "get-config"]).ok().stdout;
    assert!(as_admin.contains(BATCH_PASSWORD), "{as_admin}");
    // Pulled from the host's registry through the configured mirror; a missing image backs off.
    let pulled = wait_pod(admin, n, "pulled", Duration::from_secs(120), ready);
    assert!(
        container(&pulled)["imageID"]
            .as_str()
            .is_some_and(|id| id.starts_with("registry.cairn.test/cairn/busybox@sha256:")),
        "{pulled}"
    );
    wait_pod(admin, n, "missing", Duration::from_secs(120), |p| {
        container(p)["state"]["waiting"]["reason"] == "ImagePullBackOff"
    });
    print_memory(admin, n, &format!("with {} pods", pods(admin, n).len()));

    // A pod with a field the kubelet does not implement is refused; nothing changes.
    let before: Vec<Value> = pods(admin, n).iter().map(|p| p["metadata"]["uid"].clone()).collect();
    let unsupported =
        write("unsupported.yaml", with_pods(base, &format!("{WEB_POD}{UNSUPPORTED_POD}")));
    let refused = apply(admin, n, &unsupported).failed();
    assert!(
        refused.stderr.contains("machine.pods[1].spec.ephemeralContainers")
            && refused.stderr.contains("not supported"),
        "{}",
        refused.stderr
    );
    let after: Vec<Value> = pods(admin, n).iter().map(|p| p["metadata"]["uid"].clone()).collect();
    assert_eq!(before, after, "a refused config changed the pods");

    // A manifest stored with `ctl pod apply` runs beside the config's pods; a batch pod
    // completes, and goes with its manifest. It runs with one capability and no privilege
    // escalation, and prints what the kernel says of that.
    let batch = write(
        "batch.yaml",
        concat!(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: batch}\n",
            "spec:\n  restartPolicy: Never\n",
            // What a scheduler reads, and this node admits.
            "  nodeSelector: {kubernetes.io/os: linux}\n",
            "  serviceAccountName: batch\n",
            "  tolerations: [{operator: Exists}]\n",
            // The node's resolvers, and more.
            "  dnsConfig: {searches: [cairn.test], options: [{name: ndots, value: \"3\"}]}\n",
            "  volumes:\n",
            "  - {name: creds, secret: {secretName: batch-creds, items: [{key: password, path: pw}]}}\n",
            "  - {name: work, emptyDir: {}}\n",
            // Two init containers, in order, before the container.
            "  initContainers:\n",
            "  - {name: first, image: localhost/busybox:latest, command: [sh, -c, 'echo one > /work/steps'], volumeMounts: [{name: work, mountPath: /work}]}\n",
            "  - {name: second, image: localhost/busybox:latest, command: [sh, -c, 'echo two >> /work/steps'], volumeMounts: [{name: work, mountPath: /work}]}\n",
            "  containers:\n",
            "  - name: main\n",
            "    image: localhost/busybox:latest\n",
            "    command: [sh, -c, \"grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; echo on $NODE at $IP; cat /etc/resolv.conf; echo password $PASSWORD, file $(cat /creds/pw); echo steps $(cat /work/steps); echo batch done\"]\n",
            "    volumeMounts: [{name: creds, mountPath: /creds}, {name: work, mountPath: /work}]\n",
            "    env:\n",
            "    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: batch-creds, key: password}}}\n",
            "    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}\n",
            "    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}\n",
            "    securityContext:\n",
            "      allowPrivilegeEscalation: false\n",
            "      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}\n",
        )
        .to_string(),
    );
    ctl(Some(admin), &["-n", n, "pod", "apply", "-f", batch.to_str().unwrap()]).ok();
    let done = wait_pod(admin, n, "batch", Duration::from_secs(120), |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(container(&done)["state"]["terminated"]["reason"], "Completed", "{done}");
    let inits = done["status"]["initContainerStatuses"].as_array().cloned().unwrap_or_default();
    let completed = |c: &Value| c["state"]["terminated"]["reason"] == "Completed";
    assert!(inits.len() == 2 && inits.iter().all(completed), "{done}");
    let table = ctl(Some(admin), &["-n", n, "pods"]).ok().stdout;
    assert!(table.lines().any(|l| l.contains("batch") && l.contains("Completed")), "{table}");
    let logs = ctl(Some(admin), &["-n", n, "logs", "batch"]).ok().stdout;
    assert!(logs.contains("batch done"), "{logs}");
    // CAP_NET_BIND_SERVICE (10) alone.
    assert!(logs.contains("CapEff:\t0000000000000400"), "{logs}");
    assert!(logs.contains("NoNewPrivs:\t1"), "{logs}");
    // The downward API: the node's name and the pod's address.
    assert!(logs.contains("on qemu-node at 10.244.0."), "{logs}");
    assert!(logs.contains("nameserver 10.0.2.3") && logs.contains("cairn.test"), "{logs}");
    assert!(logs.contains("ndots:3"), "{logs}");
    // The Secret, as a variable and as a file of its volume.
    let password = format!("password {BATCH_PASSWORD}, file {BATCH_PASSWORD}");
    assert!(logs.contains(&password), "{logs}");
    assert!(logs.contains("steps one two"), "{logs}");
    ctl(Some(admin), &["-n", n, "pod", "delete", "batch"]).ok();

    // A file as kubectl takes it: stored whole, the Service skipped with a warning.
    let applied = write("applied.yaml", APPLIED_FILE.to_string());
    let file = applied.to_str().unwrap();
    let applied_at = Instant::now();
    let out = ctl(Some(admin), &["-n", n, "apply", "-f", file]).ok().stdout;
    for line in
        ["configmap/api-settings created", "deployment/api created", "daemonset/agent created"]
    {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(out.contains("warning: applied.yaml[5]: Service api skipped"), "{out}");
    let named = |prefix: &str| -> Vec<Value> {
        pods(admin, n)
            .into_iter()
            .filter(|p| p["metadata"]["name"].as_str().is_some_and(|name| name.starts_with(prefix)))
            .collect()
    };
    // One replica runs, with the ConfigMap and the Secret in its environment; the other waits
    // for the host port, as the scheduler would say.
    let placed = eventually(Duration::from_secs(120), || {
        let api = named("api-");
        api.len() == 2 && api.iter().any(ready) && named("agent-").iter().any(ready)
    });
    assert!(placed, "{}", ctl(Some(admin), &["-n", n, "pods"]).stdout);
    println!("ctl apply -f to its pods Ready: {:.1?}", applied_at.elapsed());
    print_memory(admin, n, &format!("with {} pods", pods(admin, n).len()));
    let api = named("api-");
    let (running, waiting) = if ready(&api[0]) { (&api[0], &api[1]) } else { (&api[1], &api[0]) };
    let reason = waiting["status"]["conditions"][0]["message"].as_str().unwrap_or_default();
    assert!(reason.contains("didn't have free ports"), "{waiting}");
    let replica = running["metadata"]["name"].as_str().unwrap();
    let greeting = format!("mode fast, token {APPLIED_TOKEN}");
    let logged = eventually(Duration::from_secs(30), || {
        ctl(Some(admin), &["-n", n, "logs", replica]).stdout.contains(&greeting)
    });
    assert!(logged, "{}", ctl(Some(admin), &["-n", n, "logs", replica]).stdout);
    // Its claim is a directory of the node's, kept when the pod starts afresh.
    let runs_file = "/var/lib/cairn/claims/default/api-data/runs";
    let runs = || ctl(Some(admin), &["-n", n, "read", runs_file]).stdout;
    assert_eq!(runs(), format!("{replica}\n"));
    ctl(Some(admin), &["-n", n, "pod", "restart", replica]).ok();
    let kept = eventually(Duration::from_secs(90), || runs() == format!("{replica}\n{replica}\n"));
    assert!(kept, "{}", runs());
    // The Job's failed run ran again, and it completed.
    let job = wait_pod_named(admin, n, "once-", Duration::from_secs(120), |p| {
        let shipper = &p["status"]["initContainerStatuses"][0]["state"];
        p["status"]["phase"] == "Succeeded" && shipper.get("terminated").is_some()
    });
    assert_eq!(container(&job)["restartCount"], 1, "{job}");
    // Its sidecar ran beside both runs, and was stopped (not failed) once the Job was done.
    let shipper = &job["status"]["initContainerStatuses"][0];
    assert_eq!(shipper["restartCount"], 0, "{job}");
    assert_eq!(shipper["state"]["terminated"]["exitCode"], 0, "{job}");
    // The pods' events say so, as `kubectl describe pod` and `kubectl get events` show them.
    let job_name = job["metadata"]["name"].as_str().unwrap();
    let described = ctl(Some(reader), &["-n", n, "describe", "pod", job_name]).ok().stdout;
    assert!(described.contains("Back-off restarting failed container main"), "{described}");
    let started_twice = |l: &&str| l.contains("Started container main") && l.contains("(x2 over");
    assert!(described.lines().any(|l| started_twice(&l)), "{described}");
    // The failed run's termination message is its last state's.
    assert!(described.contains("Message:       first try failed"), "{described}");
    println!("ctl describe pod {job_name}:\n{described}");
    // The DaemonSet's pod read its labels from its downwardAPI volume, and the node's pod
    // directory through a mount that propagates from the node.
    let agent = named("agent-")[0]["metadata"]["name"].as_str().unwrap().to_string();
    let agent_log = ctl(Some(admin), &["-n", n, "logs", &agent]).ok().stdout;
    assert!(agent_log.contains("app=\"agent\"") && agent_log.contains("pods"), "{agent_log}");
    let events = ctl(Some(reader), &["-n", n, "get", "events"]).ok().stdout;
    assert!(events.contains("FailedScheduling") && events.contains("free ports"), "{events}");
    let listed = ctl(Some(admin), &["-n", n, "get", "deployments"]).ok().stdout;
    assert!(listed.contains("api") && listed.contains("2 replicas"), "{listed}");
    // The Secret's value is for admins.
    let as_reader = ctl(Some(reader), &["-n", n, "-o", "yaml", "get", "secrets"]).ok().stdout;
    assert!(as_reader.contains("api-token") && !as_reader.contains("dDBrZW4t"), "{as_reader}");
    // Deleted by the same file: the pods go.
    let out = ctl(Some(admin), &["-n", n, "delete", "-f", file]).ok().stdout;
    assert!(out.contains("deployment/api deleted"), "{out}");
    // The deleted claim's data is gone from its place at once (removed once its pod is).
    assert!(out.contains("persistentvolumeclaim/api-data deleted"), "{out}");
    let claims = ctl(Some(admin), &["-n", n, "ls", "/var/lib/cairn/claims/default"]).ok().stdout;
    assert!(!claims.contains("api-data"), "{claims}");
    let gone = eventually(Duration::from_secs(90), || {
        ["api-", "agent-", "once-"].iter().all(|prefix| named(prefix).is_empty())
    });
    assert!(gone, "{}", ctl(Some(admin), &["-n", n, "pods"]).stdout);

    // Pods removed from the config go; web, unchanged, keeps running (same uid).
    let web_only = write("web.yaml", with_pods(base, WEB_POD));
    apply(admin, n, &web_only).ok();
    let gone = eventually(Duration::from_secs(90), || {
        let names: Vec<Value> =
            pods(admin, n).iter().map(|p| p["metadata"]["name"].clone()).collect();
        names == ["web"]
    });
    assert!(gone, "{}", ctl(Some(admin), &["-n", n, "pods"]).stdout);
    assert_eq!(pod(&pods(admin, n), "web").unwrap()["metadata"]["uid"], uid);
    // The sleeper's postStart hook ran without failing. Its preStop hook ran as it went; an
    // exec into a container while eight pods are torn down at once under TCG has failed in
    // runc ("read init-p: connection reset by peer"), which, as upstream, only costs the
    // hook: the pod went all the same (above).
    let kubelet = ctl(Some(admin), &["-n", n, "logs", "kubelet"]).ok().stdout;
    let failed: Vec<&str> =
        kubelet.lines().filter(|l| l.contains("postStart hook failed")).collect();
    assert!(failed.is_empty(), "{failed:#?}");

    // `ctl pod restart` starts it afresh: a new sandbox, its restart count back to 0.
    let sandbox_before = container(pod(&pods(admin, n), "web").unwrap())["containerID"].clone();
    ctl(Some(admin), &["-n", n, "pod", "restart", "web"]).ok();
    wait_pod(admin, n, "web", Duration::from_secs(120), |p| {
        ready(p) && restarts(Some(p)) == 0 && container(p)["containerID"] != sandbox_before
    });
    wait_web(admin, n, web, Duration::from_secs(60));
}
