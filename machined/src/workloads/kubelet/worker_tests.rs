//! The worker against an in-memory runtime: restarts and their back-off, init containers,
//! hooks, probes, a lost sandbox, adoption, Jobs, pulls, volumes and the status it
//! publishes. Time is tokio's paused clock, moved by hand; each `sync` is one relist.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};
use tokio::sync::watch;

use cairn_api::config::objects::LocalObject;

use super::*;
use crate::workloads::cri::fake::FakeCri;
use crate::workloads::kubelet::volumes::RecordingMounter;

/// A worker of one pod, and what it reports to.
struct Harness {
    worker: Worker,
    cri: Arc<FakeCri>,
    registry: Registry,
    events: PodEvents,
    objects: watch::Sender<Arc<LocalObjects>>,
    dir: tempfile::TempDir,
}

const IMAGE: &str = "registry.example/app:v1";

fn pod(yaml: &str) -> DesiredPod {
    DesiredPod::new("config", serde_yaml::from_str(yaml).unwrap()).unwrap()
}

/// A harness for `pod`, whose images the node has.
fn harness(pod: DesiredPod) -> Harness {
    let cri = Arc::new(FakeCri::default());
    cri.add_image(IMAGE);
    let dir = tempfile::tempdir().unwrap();
    let files = PodFiles::under(dir.path(), Arc::new(RecordingMounter::default()));
    let (objects, feed) = watch::channel(Arc::new(LocalObjects::default()));
    let (registry, events) = (Registry::default(), PodEvents::default());
    let runtime: Runtime = (cri.clone(), files);
    let reporting = (registry.clone(), events.clone());
    let worker = Worker::new(runtime, pod, reporting, Arc::new(|_| {}), feed);
    Harness { worker, cri, registry, events, objects, dir }
}

impl Harness {
    /// One relist, then the status published.
    async fn sync(&mut self) {
        let _ = self.worker.sync().await;
        self.worker.publish();
    }

    /// A new worker for the same pod on the same runtime and files, as after a restart of
    /// the kubelet or of machined.
    fn restarted_kubelet(self) -> Harness {
        let runtime = (self.worker.cri.clone(), self.worker.files.clone());
        let reporting = (self.registry.clone(), self.events.clone());
        let feed = self.objects.subscribe();
        let worker =
            Worker::new(runtime, self.worker.pod.clone(), reporting, Arc::new(|_| {}), feed);
        Harness { worker, ..self }
    }

    fn status(&self) -> PodStatus {
        let registry = self.registry.lock().unwrap();
        registry.values().next().expect("published").pod.status.clone().unwrap()
    }

    fn phase(&self) -> String {
        self.status().phase.unwrap()
    }

    fn container(&self, name: &str) -> ContainerStatus {
        let status = self.status();
        let all = status.init_container_statuses.into_iter().flatten();
        let mut all = all.chain(status.container_statuses.into_iter().flatten());
        all.find(|c| c.name == name).expect("a status for the container")
    }

    /// The container's waiting reason, if it waits.
    fn waiting(&self, name: &str) -> Option<String> {
        let state = self.container(name).state?;
        state.waiting.and_then(|w| w.reason)
    }

    /// The events so far, as `reason` or `reason container`.
    fn events(&self) -> Vec<String> {
        let list = self.events.list(None).into_iter();
        list.map(|e| {
            let container = e.involved.field_path.split(['{', '}']).nth(1).unwrap_or_default();
            format!("{} {container}", e.reason).trim_end().to_string()
        })
        .collect()
    }

    /// The runtime's calls that changed something, since the last look.
    fn calls(&self) -> Vec<String> {
        self.cri.take_calls()
    }
}

/// Runs `worker` as the kubelet does; the token removes its pod.
fn spawn(worker: Worker) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let remove = CancellationToken::new();
    let (detach, shutdown) = (CancellationToken::new(), CancellationToken::new());
    let leave = Leave { remove: remove.clone(), detach, shutdown };
    (tokio::spawn(worker.run(leave, Arc::default())), remove)
}

async fn advance(seconds: u64) {
    tokio::time::advance(Duration::from_secs(seconds)).await;
}

#[tokio::test(start_paused = true)]
async fn a_crashing_container_restarts_at_once_then_after_a_doubling_back_off() {
    let mut h = harness(pod(
        "metadata: {name: web}\nspec: {containers: [{name: app, image: registry.example/app:v1}]}",
    ));
    h.sync().await;
    assert_eq!(h.calls(), ["run_pod_sandbox web", "create_container app", "start_container app"]);
    assert_eq!(h.phase(), "Running");
    // Ready once the worker sees it running, with no readiness probe to wait for.
    h.sync().await;
    assert!(h.container("app").ready);
    assert_eq!(h.events(), ["Pulled app", "Created app", "Started app"]);

    // The first crash restarts at once, as upstream; the run before stays for --previous.
    assert!(h.cri.exit("app", 1));
    h.sync().await;
    assert_eq!(h.calls(), ["create_container app", "start_container app"]);
    let app = h.container("app");
    assert_eq!(app.restart_count, 1);
    let last = app.last_state.and_then(|s| s.terminated).expect("the run that ended");
    assert_eq!(last.exit_code, 1);
    assert_eq!(h.cri.runs("app").len(), 2);

    // The second waits 10 s, in CrashLoopBackOff.
    assert!(h.cri.exit("app", 1));
    h.sync().await;
    assert_eq!(h.waiting("app").as_deref(), Some("CrashLoopBackOff"));
    assert!(h.calls().is_empty());
    assert!(h.events().contains(&"BackOff app".to_string()));
    advance(9).await;
    h.sync().await;
    assert!(h.calls().is_empty());
    advance(1).await;
    h.sync().await;
    // The run before the previous one is removed, with its log.
    assert_eq!(h.calls(), ["create_container app", "remove_container app", "start_container app"]);
    assert_eq!(h.container("app").restart_count, 2);
    assert_eq!(h.cri.runs("app").len(), 2);

    // Then 20 s.
    assert!(h.cri.exit("app", 2));
    h.sync().await;
    advance(19).await;
    h.sync().await;
    assert_eq!(h.waiting("app").as_deref(), Some("CrashLoopBackOff"));
    advance(1).await;
    h.sync().await;
    assert!(h.cri.running("app"));
    assert_eq!(h.container("app").restart_count, 3);
}

#[tokio::test(start_paused = true)]
async fn restart_policies_decide_what_runs_again() {
    let yaml = |policy: &str| {
        format!("metadata: {{name: once}}\nspec: {{restartPolicy: {policy}, containers: [{{name: app, image: {IMAGE}}}]}}")
    };
    // OnFailure: a success ends the pod.
    let mut h = harness(pod(&yaml("OnFailure")));
    h.sync().await;
    h.cri.exit("app", 0);
    h.sync().await;
    advance(60).await;
    h.sync().await;
    assert_eq!(h.cri.runs("app").len(), 1);
    assert_eq!(h.phase(), "Succeeded");
    // Never: a failure ends it too.
    let mut h = harness(pod(&yaml("Never")));
    h.sync().await;
    h.cri.exit("app", 3);
    h.sync().await;
    advance(60).await;
    h.sync().await;
    assert_eq!(h.cri.runs("app").len(), 1);
    assert_eq!(h.phase(), "Failed");
    let app = h.container("app");
    assert_eq!(app.state.and_then(|s| s.terminated).map(|t| t.exit_code), Some(3));
}

#[tokio::test(start_paused = true)]
async fn init_containers_run_one_at_a_time_before_the_containers() {
    let mut h = harness(pod(&format!(
        "metadata: {{name: web}}\nspec:\n  initContainers: [{{name: fetch, image: {IMAGE}}}, {{name: migrate, image: {IMAGE}}}]\n  containers: [{{name: app, image: {IMAGE}}}]\n"
    )));
    h.sync().await;
    assert_eq!(
        h.calls(),
        ["run_pod_sandbox web", "create_container fetch", "start_container fetch"]
    );
    assert_eq!(h.phase(), "Pending");
    assert_eq!(h.waiting("app").as_deref(), Some("PodInitializing"));
    h.sync().await;
    assert!(h.calls().is_empty(), "nothing else starts while fetch runs");

    // A failed init container runs again (Always reads as OnFailure for it); then the next.
    h.cri.exit("fetch", 1);
    h.sync().await;
    assert_eq!(h.calls(), ["create_container fetch", "start_container fetch"]);
    h.cri.exit("fetch", 0);
    h.sync().await;
    assert_eq!(h.calls(), ["create_container migrate", "start_container migrate"]);
    h.cri.exit("migrate", 0);
    h.sync().await;
    assert_eq!(h.calls(), ["create_container app", "start_container app"]);
    assert_eq!(h.phase(), "Running");
    assert_eq!(h.container("fetch").restart_count, 1);
    let conditions = h.status().conditions.unwrap();
    let initialized = conditions.iter().find(|c| c.type_ == "Initialized").unwrap();
    assert_eq!(initialized.status, "True");

    // Once the containers ran, the init containers are not run again for a crash.
    h.cri.exit("app", 1);
    h.sync().await;
    assert_eq!(h.calls(), ["create_container app", "start_container app"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_init_container_fails_a_pod_that_never_restarts() {
    let mut h = harness(pod(&format!(
        "metadata: {{name: job}}\nspec:\n  restartPolicy: Never\n  initContainers: [{{name: check, image: {IMAGE}}}]\n  containers: [{{name: app, image: {IMAGE}}}]\n"
    )));
    h.sync().await;
    h.cri.exit("check", 1);
    h.sync().await;
    advance(60).await;
    h.sync().await;
    assert_eq!(h.phase(), "Failed");
    assert!(h.cri.runs("app").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_post_start_hook_kills_its_container_without_pre_stop() {
    let mut h = harness(pod(&format!(
        "metadata: {{name: web}}\nspec:\n  containers:\n  - name: app\n    image: {IMAGE}\n    lifecycle:\n      postStart: {{exec: {{command: [warm-up]}}}}\n      preStop: {{exec: {{command: [drain]}}}}\n"
    )));
    h.cri.set_exec_exit("warm-up", 1);
    h.sync().await;
    assert_eq!(
        h.calls(),
        [
            "run_pod_sandbox web",
            "create_container app",
            "start_container app",
            "exec_sync warm-up",
            "stop_container app 30s"
        ]
    );
    assert!(h.events().contains(&"FailedPostStartHook app".to_string()));
    // Its restart policy (Always) decides: it runs again, and this time the hook passes.
    h.cri.set_exec_exit("warm-up", 0);
    h.sync().await;
    assert_eq!(h.calls(), ["create_container app", "start_container app", "exec_sync warm-up"]);
    assert!(h.cri.running("app"));
}

#[tokio::test(start_paused = true)]
async fn liveness_failures_kill_the_container_and_readiness_follows_its_probe() {
    let mut h = harness(pod(&format!(
        "metadata: {{name: web}}\nspec:\n  containers:\n  - name: app\n    image: {IMAGE}\n    livenessProbe: {{exec: {{command: [alive]}}, periodSeconds: 5, failureThreshold: 2}}\n    readinessProbe: {{exec: {{command: [ready]}}, periodSeconds: 5}}\n"
    )));
    h.cri.set_exec_exit("ready", 1);
    h.sync().await;
    h.calls();
    assert!(!h.container("app").ready);
    assert_eq!(h.phase(), "Running");
    let ready_condition = |h: &Harness| {
        let conditions = h.status().conditions.unwrap();
        conditions.into_iter().find(|c| c.type_ == "Ready").unwrap().status
    };
    assert_eq!(ready_condition(&h), "False");
    h.cri.set_exec_exit("ready", 0);
    advance(5).await;
    h.sync().await;
    assert!(h.container("app").ready);
    assert_eq!(ready_condition(&h), "True");

    // Two liveness failures in a row: killed with the pod's grace, and restarted at once.
    h.cri.set_exec_exit("alive", 1);
    advance(5).await;
    h.sync().await;
    assert!(h.cri.running("app"), "one failure is under the threshold");
    h.calls();
    advance(5).await;
    h.sync().await;
    let calls = h.calls();
    assert!(calls.contains(&"stop_container app 30s".to_string()), "{calls:?}");
    let events = h.events();
    assert!(
        events.contains(&"Unhealthy app".to_string())
            && events.contains(&"Killing app".to_string())
    );
    h.cri.set_exec_exit("alive", 0);
    h.sync().await;
    assert!(h.cri.running("app"));
    assert_eq!(h.container("app").restart_count, 1);
    assert!(!h.container("app").ready, "a new run is not ready until its probe passes");
}

#[tokio::test(start_paused = true)]
async fn a_lost_sandbox_is_replaced_and_its_init_containers_run_again() {
    let mut h = harness(pod(&format!(
        "metadata: {{name: web}}\nspec:\n  initContainers: [{{name: setup, image: {IMAGE}}}]\n  containers: [{{name: app, image: {IMAGE}}}]\n"
    )));
    h.sync().await;
    h.cri.exit("setup", 0);
    h.sync().await;
    assert!(h.cri.running("app"));
    h.calls();

    // A reboot or a containerd restart: the sandbox and its containers are stopped.
    h.cri.stop_all_sandboxes();
    h.sync().await;
    let calls = h.calls();
    assert_eq!(
        calls,
        [
            "run_pod_sandbox web",
            "create_container setup",
            "start_container setup",
            "stop_pod_sandbox sandbox-1",
            "remove_pod_sandbox sandbox-1"
        ]
    );
    assert!(h.events().contains(&"SandboxChanged".to_string()));
    assert_eq!(h.phase(), "Pending");
    h.cri.exit("setup", 0);
    h.sync().await;
    assert!(h.cri.running("app"));
    assert_eq!(h.cri.sandbox_count(), (1, 1));
    // The runs of the lost sandbox count as restarts.
    assert_eq!(h.container("app").restart_count, 1);
}

#[tokio::test(start_paused = true)]
async fn a_new_kubelet_adopts_the_running_sandbox_and_its_counts() {
    let mut h = harness(pod(&format!(
        "metadata: {{name: web}}\nspec: {{containers: [{{name: app, image: {IMAGE}}}]}}"
    )));
    h.sync().await;
    h.cri.exit("app", 1);
    h.sync().await;
    let id = h.container("app").container_id;
    h.calls();
    let mut h = h.restarted_kubelet();
    h.sync().await;
    assert!(h.calls().is_empty(), "nothing is created again");
    let app = h.container("app");
    assert_eq!((app.container_id, app.restart_count), (id, 1));
    assert_eq!(h.phase(), "Running");
}

#[tokio::test(start_paused = true)]
async fn teardown_runs_pre_stop_then_removes_the_sandbox_logs_volumes_and_record() {
    let mut h = harness(pod(&format!(
        "metadata: {{name: web}}\nspec:\n  terminationGracePeriodSeconds: 20\n  volumes: [{{name: scratch, emptyDir: {{}}}}]\n  containers:\n  - name: app\n    image: {IMAGE}\n    volumeMounts: [{{name: scratch, mountPath: /scratch}}]\n    lifecycle: {{preStop: {{exec: {{command: [drain]}}}}}}\n"
    )));
    h.sync().await;
    let data = h.worker.files.data_directory(&h.worker.pod.uid);
    let logs = h.worker.files.log_directory(&h.worker.pod);
    assert!(data.exists() && logs.exists());
    h.calls();
    h.worker.teardown().await;
    let calls = h.calls();
    assert_eq!(calls[0], "exec_sync drain");
    // preStop ran within the grace; SIGTERM gets what is left of it.
    assert!(calls[1].starts_with("stop_container app "), "{calls:?}");
    assert_eq!(calls[2..], ["stop_pod_sandbox sandbox-1", "remove_pod_sandbox sandbox-1"]);
    assert_eq!(h.cri.sandbox_count(), (0, 0));
    assert!(!data.exists() && !logs.exists());
    assert!(h.registry.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_jobs_pod_runs_failures_again_up_to_its_limit_and_its_end_outlives_the_kubelet() {
    let mut job = pod(&format!(
        "metadata: {{name: backup}}\nspec: {{restartPolicy: Never, containers: [{{name: dump, image: {IMAGE}}}]}}"
    ));
    job.restart_limit = Some(1);
    let mut h = harness(job);
    h.sync().await;
    h.cri.exit("dump", 1);
    h.sync().await;
    assert_eq!(h.cri.runs("dump").len(), 2, "one retry, whatever the restart policy");
    h.cri.exit("dump", 1);
    h.sync().await;
    advance(600).await;
    h.sync().await;
    assert_eq!(h.cri.runs("dump").len(), 2, "the backoffLimit is spent");
    assert_eq!(h.phase(), "Failed");
    let h = h.restarted_kubelet();
    assert_eq!(h.worker.ended_before().as_deref(), Some("Failed"));
}

#[tokio::test(start_paused = true)]
async fn an_image_no_registry_has_backs_off_until_it_can_be_pulled() {
    let mut h = harness(pod(
        "metadata: {name: web}\nspec: {containers: [{name: app, image: registry.example/new:v2}]}",
    ));
    h.sync().await;
    assert_eq!(h.calls(), ["run_pod_sandbox web", "pull_image registry.example/new:v2"]);
    assert_eq!(h.waiting("app").as_deref(), Some("ErrImagePull"));
    assert!(h.events().ends_with(&[
        "Pulling app".into(),
        "Failed app".into(),
        "BackOff app".into()
    ]));
    h.sync().await;
    assert_eq!(h.waiting("app").as_deref(), Some("ImagePullBackOff"));
    assert!(h.calls().is_empty(), "no pull during the back-off");
    h.cri.add_registry_image("registry.example/new:v2");
    advance(10).await;
    h.sync().await;
    assert_eq!(
        h.calls(),
        ["pull_image registry.example/new:v2", "create_container app", "start_container app"]
    );
    assert_eq!(h.phase(), "Running");
}

#[tokio::test(start_paused = true)]
async fn a_sandbox_that_cannot_be_made_is_retried_with_the_crash_back_off() {
    let mut h = harness(pod(&format!(
        "metadata: {{name: web}}\nspec: {{containers: [{{name: app, image: {IMAGE}}}]}}"
    )));
    h.cri.fail_next("run_pod_sandbox", tonic::Status::internal("no IP addresses left"));
    h.sync().await;
    assert_eq!(h.waiting("app").as_deref(), Some("ContainerCreating"));
    assert!(h.events().contains(&"FailedCreatePodSandBox".to_string()));
    h.sync().await;
    assert!(h.calls().is_empty(), "retried at the next relist, not at once");
    advance(1).await;
    h.sync().await;
    assert!(h.cri.running("app"));
    assert_eq!(h.phase(), "Running");
}

#[tokio::test(start_paused = true)]
async fn a_changed_config_map_reaches_the_running_pods_volume() {
    let mut h = harness(pod(&format!(
        "metadata: {{name: web}}\nspec:\n  volumes: [{{name: settings, configMap: {{name: app-settings}}}}]\n  containers:\n  - name: app\n    image: {IMAGE}\n    volumeMounts: [{{name: settings, mountPath: /etc/app}}]\n"
    )));
    let objects = |mode: &str| {
        let yaml = format!("- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: app-settings}}, data: {{mode: {mode}}}}}");
        let list: Vec<LocalObject> = serde_yaml::from_str(&yaml).unwrap();
        Arc::new(LocalObjects::new(&list))
    };
    h.objects.send_replace(objects("slow"));
    h.sync().await;
    assert!(h.cri.running("app"));
    let file = find(h.dir.path(), "mode").expect("the volume's file");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "slow");
    h.objects.send_replace(objects("fast"));
    h.sync().await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "fast");
    assert_eq!(h.cri.runs("app").len(), 1, "the container is not restarted for it");
}

/// The first file named `name` under `dir` as a container sees it: not in the atomic
/// writer's hidden, timestamped directories.
fn find(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if entry.file_name() == name && !path.is_dir() {
            return Some(path);
        }
        let hidden = entry.file_name().to_string_lossy().starts_with("..");
        if entry.file_type().ok()?.is_dir() && !hidden {
            if let Some(found) = find(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

#[tokio::test(start_paused = true)]
async fn a_sidecar_starts_in_its_turn_and_runs_beside_the_containers() {
    let mut h = harness(pod(&format!(
        "metadata: {{name: web}}\nspec:\n  initContainers:\n  - {{name: proxy, image: {IMAGE}, restartPolicy: Always, startupProbe: {{exec: {{command: [up]}}, periodSeconds: 1, failureThreshold: 10}}}}\n  - {{name: setup, image: {IMAGE}}}\n  containers: [{{name: app, image: {IMAGE}}}]\n"
    )));
    h.cri.set_exec_exit("up", 1);
    h.sync().await;
    assert_eq!(
        h.calls(),
        ["run_pod_sandbox web", "create_container proxy", "start_container proxy"]
    );
    // The next init container waits for the sidecar to have started (its startup probe).
    for _ in 0..3 {
        advance(1).await;
        h.sync().await;
    }
    assert_eq!(h.calls(), ["exec_sync up", "exec_sync up", "exec_sync up"]);
    assert_eq!(h.waiting("app").as_deref(), Some("PodInitializing"));
    h.cri.set_exec_exit("up", 0);
    advance(1).await;
    h.sync().await;
    assert_eq!(h.calls(), ["exec_sync up", "create_container setup", "start_container setup"]);
    h.cri.exit("setup", 0);
    h.sync().await;
    assert_eq!(h.calls(), ["create_container app", "start_container app"]);
    assert!(h.cri.running("proxy"));
    h.sync().await;
    assert_eq!(h.phase(), "Running");
    assert!(h.status().conditions.unwrap().iter().all(|c| c.status == "True"));

    // A sidecar that crashes is restarted, the containers untouched; the pod stays initialized.
    h.cri.exit("proxy", 1);
    h.sync().await;
    assert_eq!(h.calls(), ["create_container proxy", "start_container proxy"]);
    assert_eq!(h.container("proxy").restart_count, 1);
    let conditions = h.status().conditions.unwrap();
    let initialized = conditions.iter().find(|c| c.type_ == "Initialized").unwrap();
    assert_eq!(initialized.status, "True");
    assert_eq!(h.cri.runs("app").len(), 1);

    // Torn down, the containers stop first, then the sidecar.
    h.worker.teardown().await;
    let stops: Vec<String> =
        h.calls().into_iter().filter(|call| call.starts_with("stop_container")).collect();
    assert_eq!(stops, ["stop_container app 30s", "stop_container proxy 30s"]);
}

#[tokio::test(start_paused = true)]
async fn a_jobs_sidecar_is_stopped_once_its_containers_are_done() {
    let mut h = harness(pod(&format!(
        "metadata: {{name: report}}\nspec:\n  restartPolicy: Never\n  initContainers: [{{name: shipper, image: {IMAGE}, restartPolicy: Always}}]\n  containers: [{{name: main, image: {IMAGE}}}]\n"
    )));
    h.sync().await;
    h.sync().await;
    assert!(h.cri.running("shipper") && h.cri.running("main"));
    h.calls();
    h.cri.exit("main", 0);
    h.sync().await;
    assert_eq!(h.calls(), ["stop_container shipper 30s", "stop_pod_sandbox sandbox-1"]);
    h.sync().await;
    advance(60).await;
    h.sync().await;
    assert!(h.calls().is_empty(), "the sidecar is not run again");
    assert_eq!(h.phase(), "Succeeded", "the sidecar's end does not fail the pod");
    let shipper = h.container("shipper");
    assert!(!shipper.ready, "{shipper:?}");
    assert!(shipper.state.and_then(|s| s.terminated).is_some(), "the stop is seen");
}

#[tokio::test(start_paused = true)]
async fn a_pod_past_its_ephemeral_storage_limit_is_evicted_and_not_run_again() {
    let mut h = harness(pod(&format!(
        "metadata: {{name: web}}\nspec:\n  containers: [{{name: app, image: {IMAGE}, resources: {{limits: {{ephemeral-storage: 10Mi}}}}}}]\n"
    )));
    h.cri.set_writable_layer("app", 1 << 20);
    h.sync().await;
    h.sync().await;
    assert_eq!(h.phase(), "Running");
    h.calls();
    // Measured every 10 s: a write past the limit is found at the next measure.
    h.cri.set_writable_layer("app", 11 << 20);
    h.sync().await;
    assert!(h.calls().is_empty());
    advance(10).await;
    h.sync().await;
    assert_eq!(h.calls(), ["stop_container app 0s", "stop_pod_sandbox sandbox-1"]);
    let status = h.status();
    assert_eq!(
        (status.phase.as_deref(), status.reason.as_deref()),
        (Some("Failed"), Some("Evicted"))
    );
    let message = status.message.unwrap();
    // Upstream checks the pod's total (its one container's limit here) first.
    assert_eq!(
        message,
        "Pod ephemeral local storage usage exceeds the total limit of containers 10Mi."
    );
    assert!(h.events().contains(&"Evicted".to_string()));
    let app = h.container("app");
    assert_eq!(app.state.and_then(|s| s.terminated).map(|t| t.exit_code), Some(137));
    advance(60).await;
    h.sync().await;
    assert!(h.calls().is_empty(), "an evicted pod is not run again");
}

/// A harness of pod `once` (`restartPolicy: Never`) whose container `app` runs, the calls
/// that made it taken.
async fn running_once() -> Harness {
    let mut h = harness(pod(&format!(
        "metadata: {{name: once}}\nspec: {{restartPolicy: Never, containers: [{{name: app, image: {IMAGE}}}]}}"
    )));
    h.sync().await;
    h.sync().await;
    h.calls();
    h
}

#[tokio::test(start_paused = true)]
async fn a_pod_that_ended_stops_its_sandbox_and_a_new_kubelet_does_not_run_it_again() {
    let mut h = running_once().await;
    h.cri.exit("app", 0);
    h.sync().await;
    assert_eq!(h.phase(), "Succeeded");
    // Its address and host ports go with its sandbox; its container stays, for its logs.
    assert_eq!(h.calls(), ["stop_pod_sandbox sandbox-1"]);
    assert_eq!(h.cri.sandbox_count(), (1, 0));
    h.sync().await;
    assert!(h.calls().is_empty());
    // The kubelet starts again in this boot: the stopped sandbox is no lost one.
    let h = h.restarted_kubelet();
    let (running, remove) = spawn(h.worker);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(h.cri.take_calls().is_empty(), "the pod is not run again");
    let phase = h.registry.lock().unwrap().values().next().and_then(|r| r.pod.status.clone());
    assert_eq!(phase.and_then(|s| s.phase).as_deref(), Some("Succeeded"));
    remove.cancel();
    running.await.unwrap();
    assert_eq!(h.cri.sandbox_count(), (0, 0));
    let ended = h.dir.path().join("run/cairn/pods-ended");
    assert_eq!(std::fs::read_dir(ended).unwrap().count(), 0, "its record goes with it");
}

#[tokio::test(start_paused = true)]
async fn a_sandbox_that_would_not_stop_is_stopped_at_a_later_relist_not_replaced() {
    let mut h = running_once().await;
    h.cri.fail_next("stop_pod_sandbox", tonic::Status::internal("the network plugin timed out"));
    h.cri.exit("app", 1);
    h.sync().await;
    assert_eq!(h.phase(), "Failed");
    assert_eq!(h.cri.sandbox_count(), (1, 1), "the stop failed");
    // Meanwhile containerd restarted: the sandbox stopped is no lost one to make anew.
    h.cri.stop_all_sandboxes();
    h.calls();
    h.sync().await;
    assert_eq!(h.calls(), ["stop_pod_sandbox sandbox-1"], "tried again, nothing made anew");
    assert_eq!(h.cri.sandbox_count(), (1, 0));
    h.sync().await;
    assert!(h.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_adopted_pod_with_init_containers_ends_and_is_recorded() {
    let mut h = harness(pod(&format!(
        "metadata: {{name: once}}\nspec:\n  restartPolicy: Never\n  initContainers: [{{name: fetch, image: {IMAGE}}}]\n  containers: [{{name: app, image: {IMAGE}}}]\n"
    )));
    h.sync().await;
    h.cri.exit("fetch", 0);
    h.sync().await;
    h.sync().await;
    assert!(h.cri.running("app"));
    // A new kubelet adopts the running pod, then its container ends.
    let mut h = h.restarted_kubelet();
    h.sync().await;
    h.calls();
    h.cri.exit("app", 0);
    h.sync().await;
    assert_eq!(h.phase(), "Succeeded");
    assert_eq!(h.calls(), ["stop_pod_sandbox sandbox-1"]);
    assert_eq!(h.worker.ended_before().as_deref(), Some("Succeeded"));
}

#[tokio::test(start_paused = true)]
async fn an_evicted_pod_of_a_deployment_is_replaced_at_once_then_backing_off() {
    let mut web = pod(&format!(
        "metadata: {{name: web}}\nspec:\n  containers: [{{name: app, image: {IMAGE}, resources: {{limits: {{ephemeral-storage: 10Mi}}}}}}]\n"
    ));
    web.replaced_when_failed = true;
    let h = harness(web);
    // Every run of it writes past its limit.
    h.cri.set_writable_layer("app", 11 << 20);
    let (running, remove) = spawn(h.worker);
    let sandboxes = |calls: &[String]| calls.iter().filter(|c| *c == "run_pod_sandbox web").count();
    // Evicted at its first measure, as it starts, and run anew at once.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let calls = h.cri.take_calls();
    assert_eq!(sandboxes(&calls), 2, "{calls:?}");
    assert!(calls.contains(&"stop_container app 0s".to_string()), "{calls:?}");
    // Evicted again: replaced 10 s later, then 20 s after that.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sandboxes(&h.cri.take_calls()), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sandboxes(&h.cri.take_calls()), 1);
    tokio::time::sleep(Duration::from_secs(18)).await;
    assert_eq!(sandboxes(&h.cri.take_calls()), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sandboxes(&h.cri.take_calls()), 1);
    let count = |reason: &str| {
        let events = h.events.list(None).into_iter();
        events.filter(|e| e.reason == reason).map(|e| e.count).sum::<u32>()
    };
    assert_eq!((count("Evicted"), count("Replaced")), (4, 3));
    remove.cancel();
    running.await.unwrap();
    assert_eq!(h.cri.sandbox_count(), (0, 0), "removed with its last run");
}

#[tokio::test(start_paused = true)]
async fn a_restarting_sidecar_holds_back_no_init_container_and_ends_with_a_failed_pod() {
    let mut h = harness(pod(&format!(
        "metadata: {{name: once}}\nspec:\n  restartPolicy: Never\n  initContainers:\n  - {{name: proxy, image: {IMAGE}, restartPolicy: Always}}\n  - {{name: first, image: {IMAGE}}}\n  - {{name: second, image: {IMAGE}}}\n  containers: [{{name: app, image: {IMAGE}}}]\n"
    )));
    h.sync().await;
    h.sync().await;
    assert!(h.cri.running("first"));
    // Once it has started, a sidecar's crash does not hold the next init containers back.
    h.cri.exit("proxy", 1);
    h.cri.exit("first", 0);
    h.sync().await;
    let calls = h.calls();
    assert!(calls.contains(&"start_container second".to_string()), "{calls:?}");
    assert!(calls.contains(&"start_container proxy".to_string()), "{calls:?}");
    // An init container failing for good fails the pod, and its sidecar is stopped.
    h.cri.exit("second", 1);
    h.sync().await;
    assert_eq!(h.calls(), ["stop_container proxy 30s", "stop_pod_sandbox sandbox-1"]);
    h.sync().await;
    assert_eq!(h.phase(), "Failed");
    assert!(!h.cri.running("proxy") && h.cri.runs("app").is_empty());
}
