//! One task per pod: it creates the pod's sandbox and containers through CRI, restarts
//! containers as the restart policy and back-off say, runs probes, rotates logs, publishes
//! the pod's status, and on stop tears everything down. Every second it looks again
//! (like the upstream kubelet's relist), so a container killed behind its back, a sandbox
//! lost to a containerd restart, or a reboot is noticed and repaired.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use cairn_api::config::pod::is_sidecar;

use crate::workloads::cri::{v1, Cri};

use super::backoff::{Backoff, RESET_AFTER};
use super::downward;
use super::events::{EventType, Involved, PodEvents};
use super::lifecycle;
use super::objects::LocalObjects;
use super::pod_cgroup;
use super::pod_files::PodFiles;
use super::probe::{Probes, Target};
use super::source::DesiredPod;
use super::status::{self, ContainerView};
use super::storage::{self, StorageLimits, StorageUsage};
use super::{
    completions, images, logs, pull_secrets, spec, termination, ContainerLogs, PodRecord, Registry,
};

/// How often the worker looks at its pod.
const RELIST: Duration = Duration::from_secs(1);

/// The pod's sandbox, as created.
struct Sandbox {
    id: String,
    ip: Option<String>,
    /// Its attempt number, which its config carries.
    attempt: u32,
}

/// What the worker tracks of one container.
#[derive(Default)]
struct Track {
    view: ContainerView,
    /// The attempt number of the next run.
    next_attempt: u32,
    /// When the crash back-off lets the next restart happen.
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// When the pull back-off lets the next pull happen.
    pull_retry_at: Option<Instant>,
    pull_backoff: Backoff,
    /// The probes of the current run, and which run that is.
    probes: Option<(String, Probes)>,
    /// The termination message of the latest run that ended, once read, and which run.
    termination_message: Option<(String, String)>,
    /// A sidecar that started in this sandbox: the init containers after it no longer wait
    /// for it when it restarts, as upstream.
    sidecar_started: bool,
}

/// The log files `kubectl logs [--previous]` would read for a container.
fn container_logs(view: &ContainerView) -> ContainerLogs {
    let path = |run: Option<&v1::ContainerStatus>| {
        run.map(|r| PathBuf::from(&r.log_path)).filter(|p| p.is_absolute())
    };
    let previous =
        if view.waiting.is_some() { view.current.as_ref() } else { view.previous.as_ref() };
    ContainerLogs { current: path(view.current.as_ref()), previous: path(previous) }
}

/// How a worker ends.
pub struct Leave {
    /// The pod is no longer wanted: tear it down.
    pub remove: CancellationToken,
    /// The kubelet stops: leave the pod running for the next one to adopt.
    pub detach: CancellationToken,
    /// The node goes down: stop the containers (each with its grace, at most
    /// [`SHUTDOWN_GRACE`]) and the sandbox; the next boot makes new ones.
    pub shutdown: CancellationToken,
}

/// The longest grace a container gets when the node goes down (the supervisor gives the
/// kubelet 15 s to stop).
const SHUTDOWN_GRACE: i64 = 10;

/// What workers run their pods with: the runtime, and where pods' files go.
pub type Runtime = (Arc<dyn Cri>, PodFiles);

/// The worker of one pod.
pub struct Worker {
    cri: Arc<dyn Cri>,
    /// Where the pod's logs and volumes go.
    files: PodFiles,
    pod: DesiredPod,
    registry: Registry,
    log: Arc<dyn Fn(String) + Send + Sync>,
    sandbox: Option<Sandbox>,
    /// Failed sandbox creations back off like crashes.
    sandbox_backoff: Backoff,
    sandbox_retry_at: Option<Instant>,
    tracks: Vec<Track>,
    start_time: Option<Time>,
    /// Sandboxes of earlier runs (a reboot, a containerd restart), removed once the new one
    /// and its containers started: each removal tears a network down, which takes seconds
    /// on a slow board and is not on the way to a running pod.
    stale_sandboxes: Vec<String>,
    /// The ConfigMaps and Secrets its volumes and variables read, as they change.
    objects: watch::Receiver<Arc<LocalObjects>>,
    /// How many of `tracks` (the first ones) are init containers.
    init_count: usize,
    /// Where its Kubernetes-style events go.
    events: PodEvents,
    /// An earlier sandbox stopped or went (a reboot, a containerd restart): the next one
    /// created says so.
    sandbox_changed: bool,
    /// What the pod may write to the node's disk, when it sets limits; and when it was last
    /// measured.
    storage: Option<(StorageLimits, Option<Instant>)>,
    /// Why the pod was evicted: it is not run again (until restarted on request), unless
    /// its controller replaces it.
    evicted: Option<String>,
    /// When this run began; and how long after its eviction a pod its controller replaces is
    /// run anew, which doubles with each eviction as a crash back-off does.
    began: Instant,
    replacement_backoff: Backoff,
    /// When the evicted pod is run anew.
    replace_at: Option<Instant>,
    /// The pod ended and its sandbox is stopped, which freed its address and host ports.
    sandbox_stopped: bool,
}

impl Worker {
    /// A worker for `pod`, run through `cri` with its files in `files`; it publishes into
    /// `registry` and `events`, logs through `log` and reads ConfigMaps and Secrets from
    /// `objects`.
    pub fn new(
        (cri, files): Runtime,
        pod: DesiredPod,
        (registry, events): (Registry, PodEvents),
        log: Arc<dyn Fn(String) + Send + Sync>,
        objects: watch::Receiver<Arc<LocalObjects>>,
    ) -> Worker {
        let init_count = spec::init_containers(&pod.pod).len();
        let tracks = spec::all_containers(&pod.pod)
            .enumerate()
            .map(|(index, c)| Track {
                view: ContainerView {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    sidecar: index < init_count && is_sidecar(c),
                    ..Default::default()
                },
                ..Default::default()
            })
            .collect();
        Worker {
            cri,
            files,
            registry,
            log,
            sandbox: None,
            sandbox_backoff: Backoff::default(),
            sandbox_retry_at: None,
            tracks,
            start_time: None,
            stale_sandboxes: Vec::new(),
            init_count,
            objects,
            events,
            sandbox_changed: false,
            storage: StorageLimits::of(&pod.pod).map(|limits| (limits, None)),
            evicted: None,
            began: Instant::now(),
            replacement_backoff: Backoff::default(),
            replace_at: None,
            sandbox_stopped: false,
            pod,
        }
    }

    /// Tears the pod down and returns a worker that runs it afresh.
    async fn afresh(mut self) -> Worker {
        self.teardown().await;
        let reporting = (self.registry.clone(), self.events.clone());
        let runtime = (self.cri.clone(), self.files.clone());
        Worker::new(runtime, self.pod.clone(), reporting, self.log.clone(), self.objects.clone())
    }

    /// The evicted pod run anew, as its controller replaces it with a new pod; the back-off
    /// goes on with the new run.
    async fn replaced(self) -> Worker {
        (self.log)(format!("pod {}: evicted; its controller runs it anew", self.pod.key()));
        let message = "Replacing the evicted pod with a new one";
        self.event(None, EventType::Normal, "Replaced", message);
        let backoff = self.replacement_backoff.clone();
        let mut fresh = self.afresh().await;
        fresh.replacement_backoff = backoff;
        fresh
    }

    /// What an event about the pod, or its container at `index`, is about.
    fn involved(&self, index: Option<usize>) -> Involved {
        let field_path = index.map_or_else(String::new, |index| {
            let list = if index < self.init_count { "initContainers" } else { "containers" };
            format!("spec.{list}{{{}}}", self.tracks[index].view.name)
        });
        Involved {
            namespace: self.pod.namespace.clone(),
            pod: self.pod.name.clone(),
            uid: self.pod.uid.clone(),
            field_path,
        }
    }

    /// Records an event about the pod, or its container at `index`.
    fn event(&self, index: Option<usize>, kind: EventType, reason: &str, message: &str) {
        self.events.record(&self.involved(index), kind, reason, message);
    }

    /// Runs the pod until `leave` says how to end; `restart` tears it down and starts it
    /// afresh (`ctl pod restart`).
    pub async fn run(mut self, leave: Leave, restart: Arc<Notify>) {
        (self.log)(format!(
            "pod {}: starting (uid {}, from {})",
            self.pod.key(),
            self.pod.uid,
            self.pod.source
        ));
        let node = crate::node::config::kernel_hostname();
        let assigned = format!("Successfully assigned {} to {node}", self.pod.key());
        self.event(None, EventType::Normal, "Scheduled", &assigned);
        if let Some(account) = service_account(&self.pod.pod) {
            let why = format!(
                "no token of service account {account:?} is mounted: this node has no API \
                 server to issue one"
            );
            (self.log)(format!("pod {}: {why}", self.pod.key()));
            self.event(None, EventType::Warning, "NoServiceAccountToken", &why);
        }
        let ended = self.ended_before();
        if ended.as_deref() == Some("Failed") && self.pod.replaced_when_failed {
            self = self.replaced().await;
        } else if let Some(phase) = ended {
            (self.log)(format!(
                "pod {}: it ended before ({phase}); it is not run again",
                self.pod.key()
            ));
            // Its sandbox may still run, when the kubelet stopped as the pod ended.
            let ready = i32::from(v1::PodSandboxState::SandboxReady);
            for sandbox in self.sandboxes().await.unwrap_or_default() {
                if sandbox.state == ready {
                    self.stop_sandbox(&sandbox.id).await;
                }
            }
            self.publish_finished(&phase);
            tokio::select! {
                _ = leave.remove.cancelled() => {
                    self.teardown().await;
                    return (self.log)(format!("pod {}: removed", self.pod.key()));
                }
                _ = leave.detach.cancelled() => return,
                _ = leave.shutdown.cancelled() => return,
                // `ctl pod restart` runs the pod again.
                _ = restart.notified() => {
                    (self.log)(format!("pod {}: running it again on request", self.pod.key()));
                    self.teardown().await;
                }
            }
        }
        self.publish();
        // The same failure every second (containerd restarting) is logged once.
        let mut last_error = None;
        loop {
            let error = self.sync().await.err().map(|e| e.to_string());
            if error.is_some() && error != last_error {
                (self.log)(format!(
                    "pod {}: {}",
                    self.pod.key(),
                    error.as_deref().unwrap_or_default()
                ));
            }
            last_error = error;
            self.publish();
            tokio::select! {
                _ = leave.remove.cancelled() => break,
                _ = leave.detach.cancelled() => return,
                _ = leave.shutdown.cancelled() => return self.stop_for_shutdown().await,
                _ = restart.notified() => {
                    (self.log)(format!("pod {}: restarting on request", self.pod.key()));
                    self.event(None, EventType::Normal, "Killing", "Stopping the pod: a restart was requested");
                    self = self.afresh().await;
                }
                _ = until(self.replace_at) => self = self.replaced().await,
                _ = tokio::time::sleep(RELIST) => {}
            }
        }
        self.teardown().await;
        (self.log)(format!("pod {}: stopped and removed", self.pod.key()));
    }

    /// The phase the pod ended in before this worker: a Job's pod on an earlier boot too, any
    /// pod earlier in this boot (under a kubelet that stopped since).
    fn ended_before(&self) -> Option<String> {
        let job = self
            .pod
            .restart_limit
            .and_then(|_| completions::recorded(&self.files.completion_root, &self.pod.uid));
        job.or_else(|| completions::recorded(&self.files.ended_root, &self.pod.uid))
    }

    /// Publishes a pod that ended before, as it ended.
    fn publish_finished(&self, phase: &str) {
        let mut pod: Pod = self.pod.pod.clone();
        pod.metadata.namespace = Some(self.pod.namespace.clone());
        pod.metadata.uid = Some(self.pod.uid.clone());
        pod.status = Some(status::finished(phase));
        let record = PodRecord {
            key: self.pod.key(),
            source: self.pod.source.clone(),
            uid: self.pod.uid.clone(),
            pod,
            logs: Default::default(),
        };
        self.registry.lock().unwrap().insert(self.pod.key(), record);
    }

    /// Publishes the pod and its status for the API.
    fn publish(&self) {
        let mut pod: Pod = self.pod.pod.clone();
        pod.metadata.namespace = Some(self.pod.namespace.clone());
        pod.metadata.uid = Some(self.pod.uid.clone());
        pod.metadata.creation_timestamp = self.start_time.clone();
        pod.status = Some(self.status());
        let record = PodRecord {
            key: self.pod.key(),
            source: self.pod.source.clone(),
            uid: self.pod.uid.clone(),
            pod,
            logs: self
                .tracks
                .iter()
                .map(|t| (t.view.name.clone(), container_logs(&t.view)))
                .collect(),
        };
        self.registry.lock().unwrap().insert(self.pod.key(), record);
    }

    /// The pod's status, from what the worker knows of its sandbox and containers.
    fn status(&self) -> PodStatus {
        let views: Vec<ContainerView> = self.tracks.iter().map(|t| t.view.clone()).collect();
        let (init, views) = views.split_at(self.init_count);
        let mut status = status::pod_status(
            self.sandbox.is_some() && !self.sandbox_stopped,
            self.sandbox.as_ref().and_then(|s| s.ip.clone()),
            self.start_time.clone(),
            (init, views),
        );
        if let Some(message) = &self.evicted {
            status::evicted(&mut status, message);
        }
        status
    }

    /// The phase the pod ended in (Succeeded or Failed, an eviction too); None while it runs.
    fn ended(&self) -> Option<String> {
        let phase = self.status().phase?;
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    }

    /// One look at the pod: sandbox first, then each container in order, then the
    /// sandboxes of earlier runs. Once it ended nothing of it runs again (a replacement is
    /// a new worker): its end is recorded and its sandbox stopped.
    async fn sync(&mut self) -> anyhow::Result<()> {
        if let Some(phase) = self.ended() {
            self.end(&phase).await;
            return Ok(());
        }
        if self.objects.has_changed().unwrap_or(false) {
            self.refresh_volumes();
        }
        let sandbox = self.ensure_sandbox().await;
        if sandbox.is_ok() {
            if self.sync_init().await {
                for index in self.init_count..self.tracks.len() {
                    self.sync_container(index).await;
                }
            }
            self.check_storage().await;
            // Also when an init container failed for good: the pod is done, its sidecars too.
            if self.finished() {
                self.stop_sidecars(spec::grace_seconds(&self.pod.pod)).await;
                let sidecars = (0..self.init_count).filter(|i| self.tracks[*i].view.sidecar);
                self.settle(sidecars.collect::<Vec<_>>()).await;
            }
        }
        for id in std::mem::take(&mut self.stale_sandboxes) {
            self.remove_sandbox(&id).await;
        }
        sandbox?;
        logs::rotate(
            self.cri.as_ref(),
            &self.files.log_directory(&self.pod),
            self.tracks.iter().filter_map(|t| t.view.current.as_ref()),
        )
        .await;
        if let Some(phase) = self.ended() {
            self.end(&phase).await;
        }
        Ok(())
    }

    /// Records that the pod ended in `phase` (for this boot; a Job's pod for good), then
    /// stops its sandbox, as upstream does: its network goes (its address, its host ports),
    /// its containers stay for their status and logs. Until the stop succeeds, it is tried
    /// again at each relist.
    async fn end(&mut self, phase: &str) {
        if self.sandbox_stopped {
            return;
        }
        let job = self.pod.restart_limit.map(|_| &self.files.completion_root);
        for root in job.into_iter().chain([&self.files.ended_root]) {
            if let Err(e) = completions::record(root, &self.pod.uid, phase) {
                (self.log)(format!("pod {}: recording its end: {e}", self.pod.key()));
            }
        }
        match self.sandbox.as_ref().map(|s| s.id.clone()) {
            Some(id) => self.sandbox_stopped = self.stop_sandbox(&id).await,
            None => self.sandbox_stopped = true,
        }
    }

    /// Measures what the pod wrote to the node's disk, every [`storage::CHECK_EVERY`] when it
    /// sets limits, and evicts it when it passed them.
    async fn check_storage(&mut self) {
        let Some((limits, checked_at)) = &mut self.storage else { return };
        let now = Instant::now();
        if checked_at.is_some_and(|at| now < at + storage::CHECK_EVERY) {
            return;
        }
        *checked_at = Some(now);
        let limits = limits.clone();
        let mut layers = Vec::new();
        for track in &self.tracks {
            let Some(run) = &track.view.current else { continue };
            let layer = self.cri.writable_layer_bytes(&run.id).await.unwrap_or_default();
            layers.push((track.view.name.clone(), layer));
        }
        let log_dir = self.files.log_directory(&self.pod);
        let volumes = self.files.volumes(&self.pod.uid);
        let dirs: Vec<(String, PathBuf)> =
            limits.empty_dirs().map(|name| (name.into(), volumes.volume_dir(name))).collect();
        // The walks read the disk: off the async workers.
        let measured = tokio::task::spawn_blocking(move || {
            let containers = layers.into_iter().map(|(name, layer)| {
                let logs = storage::disk_usage(&log_dir.join(&name));
                (name, layer + logs)
            });
            let empty_dirs = dirs.into_iter().map(|(name, dir)| (name, storage::disk_usage(&dir)));
            StorageUsage { containers: containers.collect(), empty_dirs: empty_dirs.collect() }
        });
        let Ok(usage) = measured.await else { return };
        if let Some(message) = limits.exceeded(&usage) {
            self.evict(message).await;
        }
    }

    /// Evicts the pod, for `message`: its containers are killed at once (as upstream evicts
    /// for local storage) and not run again, unless its controller replaces it: then it is
    /// run anew (a new pod upstream), at once the first time, then backing off.
    async fn evict(&mut self, message: String) {
        (self.log)(format!("pod {}: evicted: {}", self.pod.key(), message.trim_end()));
        self.event(None, EventType::Warning, "Evicted", message.trim_end());
        self.stop_all(0).await;
        self.settle(0..self.tracks.len()).await;
        self.evicted = Some(message);
        if self.pod.replaced_when_failed {
            if self.began.elapsed() >= RESET_AFTER {
                self.replacement_backoff.reset();
            }
            self.replace_at = Some(Instant::now() + self.replacement_backoff.failed());
        }
    }

    /// Brings the configMap and secret volumes of the running pod up to date with the
    /// objects, which changed.
    fn refresh_volumes(&mut self) {
        let objects = self.objects.borrow_and_update().clone();
        let volumes = (self.files.volumes(&self.pod.uid))
            .with_fs_group(spec::fs_group(&self.pod.pod))
            .with_objects(&objects, &self.pod.namespace);
        let declared = self.pod.pod.spec.as_ref().and_then(|s| s.volumes.as_deref());
        for line in volumes.refresh_projections(declared.unwrap_or_default()) {
            (self.log)(format!("pod {}: {line}", self.pod.key()));
        }
    }

    /// Runs the init containers in order, each to completion (a sidecar until it has
    /// started); true once all have (on this sandbox: a new one runs them again). Sidecars are
    /// kept running from then on.
    async fn sync_init(&mut self) -> bool {
        // A container that ran in this sandbox means its init containers had all succeeded
        // (an adopted sandbox whose init runs containerd no longer reports), as upstream.
        if self.tracks[self.init_count..].iter().any(|t| t.view.current.is_some()) {
            for index in 0..self.init_count {
                if self.tracks[index].view.sidecar {
                    self.sync_container(index).await;
                } else {
                    self.tracks[index].view.done = true;
                }
            }
            return true;
        }
        for index in 0..self.init_count {
            let through = |track: &Track| match track.view.sidecar {
                true => track.sidecar_started,
                false => track.view.done && succeeded(&track.view),
            };
            if through(&self.tracks[index]) && !self.tracks[index].view.sidecar {
                continue;
            }
            self.sync_container(index).await;
            let track = &mut self.tracks[index];
            track.sidecar_started |= track.view.sidecar && track.view.started;
            if !through(&self.tracks[index]) {
                // The containers wait for it, as upstream says.
                for track in &mut self.tracks[self.init_count..] {
                    track.view.waiting = Some(("PodInitializing".into(), String::new()));
                }
                return false;
            }
        }
        for track in &mut self.tracks[self.init_count..] {
            if track.view.waiting.as_ref().is_some_and(|(reason, _)| reason == "PodInitializing") {
                track.view.waiting = None;
            }
        }
        true
    }

    /// The pod's sandboxes as containerd has them (also those of earlier boots).
    async fn sandboxes(&mut self) -> anyhow::Result<Vec<v1::PodSandbox>> {
        let filter = v1::PodSandboxFilter {
            label_selector: [(spec::label::POD_UID.to_string(), self.pod.uid.clone())].into(),
            ..Default::default()
        };
        Ok(self.cri.list_pod_sandbox(Some(filter)).await?)
    }

    /// Runs the sandbox unless it runs; one that stopped (a reboot, a containerd restart) is
    /// replaced, and its containers' runs are counted as restarts.
    async fn ensure_sandbox(&mut self) -> anyhow::Result<()> {
        let ready = i32::from(v1::PodSandboxState::SandboxReady);
        let sandboxes = self.sandboxes().await?;
        if let Some(current) = &self.sandbox {
            if sandboxes.iter().any(|s| s.id == current.id && s.state == ready) {
                return Ok(());
            }
            (self.log)(format!(
                "pod {}: sandbox {} is gone or stopped; recreating the pod",
                self.pod.key(),
                current.id
            ));
            self.sandbox = None;
            self.sandbox_changed = true;
        }
        // Adopt a ready sandbox (the kubelet restarted), or count and remove stopped ones.
        let mut attempt = 0;
        for sandbox in &sandboxes {
            attempt = attempt.max(sandbox.metadata.as_ref().map_or(0, |m| m.attempt + 1));
            let adopting = sandbox.state == ready && self.sandbox.is_none();
            for run in self.containers_of(&sandbox.id).await? {
                let Some(meta) = run.metadata.clone() else { continue };
                let status =
                    if adopting { self.container_status(&run.id).await.ok() } else { None };
                let Some(track) = self.tracks.iter_mut().find(|t| t.view.name == meta.name) else {
                    continue;
                };
                track.next_attempt = track.next_attempt.max(meta.attempt + 1);
                // The latest run is the one to watch.
                if status.is_some() && track.next_attempt == meta.attempt + 1 {
                    track.view.restarts = meta.attempt as i32;
                    track.view.current = status;
                }
            }
            if !adopting {
                self.sandbox_changed = true;
            }
            if adopting {
                let ip = self.sandbox_ip(&sandbox.id).await;
                let attempt = sandbox.metadata.as_ref().map_or(0, |m| m.attempt);
                self.sandbox = Some(Sandbox { id: sandbox.id.clone(), ip, attempt });
                (self.log)(format!(
                    "pod {}: adopted running sandbox {}",
                    self.pod.key(),
                    sandbox.id
                ));
            } else {
                self.stale_sandboxes.push(sandbox.id.clone());
            }
        }
        if self.sandbox.is_some() {
            return Ok(());
        }
        for (index, track) in self.tracks.iter_mut().enumerate() {
            track.view.current = None;
            track.probes = None;
            // A new sandbox runs the init containers again, as after a reboot upstream.
            if index < self.init_count {
                track.view.done = false;
                track.sidecar_started = false;
            }
        }
        if self.sandbox_retry_at.is_some_and(|at| Instant::now() < at) {
            return Ok(());
        }
        let log_directory = self.files.log_directory(&self.pod);
        let mut config = spec::sandbox_config(&self.pod, attempt, &log_directory);
        let node_resolv = std::fs::read_to_string(crate::network::RESOLV_CONF).unwrap_or_default();
        config.dns_config = spec::dns_config(&self.pod.pod, &node_resolv);
        std::fs::create_dir_all(&log_directory)?;
        // The pod's cgroup is made with its limits before the runtime makes its sandbox's in it.
        let created =
            match pod_cgroup::create(&self.files.cgroup_root, &self.pod.uid, &self.pod.pod) {
                Ok(()) => {
                    self.cri.run_pod_sandbox(config).await.map_err(|e| e.message().to_string())
                }
                Err(e) => Err(format!("making the pod's cgroup: {e}")),
            };
        let id = match created {
            Ok(id) => id,
            Err(e) => {
                // Retried with the crash back-off; the containers say why they wait.
                let delay = self.sandbox_backoff.failed().max(RELIST);
                self.sandbox_retry_at = Some(Instant::now() + delay);
                let why = format!("creating the sandbox: {e}");
                for track in &mut self.tracks {
                    track.view.waiting = Some(("ContainerCreating".into(), why.clone()));
                }
                let failed = format!("Failed to create pod sandbox: {e}");
                self.event(None, EventType::Warning, "FailedCreatePodSandBox", &failed);
                anyhow::bail!("{why}; retrying in {}s", delay.as_secs());
            }
        };
        self.sandbox_backoff.reset();
        self.sandbox_retry_at = None;
        if std::mem::take(&mut self.sandbox_changed) {
            let message = "Pod sandbox changed, it will be killed and re-created.";
            self.event(None, EventType::Normal, "SandboxChanged", message);
        }
        let ip = self.sandbox_ip(&id).await;
        (self.log)(format!(
            "pod {}: sandbox {id} running, IP {}",
            self.pod.key(),
            ip.as_deref().unwrap_or("(node's)")
        ));
        self.start_time = Some(status::now());
        self.sandbox = Some(Sandbox { id, ip, attempt });
        Ok(())
    }

    /// Why `image` may not run a container that must not run as root; None when it may.
    async fn image_user_problem(&mut self, image: &str) -> Option<String> {
        match self.cri.image_status(image).await {
            Ok(status) => {
                let image = status.unwrap_or_default();
                spec::image_user_problem(image.uid.map(|uid| uid.value), &image.username)
            }
            Err(e) => Some(format!("asking containerd for the user of {image}: {}", e.message())),
        }
    }

    async fn sandbox_ip(&mut self, id: &str) -> Option<String> {
        let status = self.cri.pod_sandbox_status(id).await.ok()??;
        status.network.map(|n| n.ip).filter(|ip| !ip.is_empty())
    }

    async fn containers_of(&mut self, sandbox: &str) -> anyhow::Result<Vec<v1::Container>> {
        let filter = v1::ContainerFilter { pod_sandbox_id: sandbox.into(), ..Default::default() };
        Ok(self.cri.list_containers(filter).await?)
    }

    async fn container_status(&mut self, id: &str) -> Result<v1::ContainerStatus, tonic::Status> {
        self.cri.container_status(id).await
    }

    /// Stops and removes a sandbox with its containers.
    async fn remove_sandbox(&mut self, id: &str) {
        if let Err(e) = self.cri.stop_pod_sandbox(id).await {
            (self.log)(format!("pod {}: stopping sandbox {id}: {}", self.pod.key(), e.message()));
        }
        if let Err(e) = self.cri.remove_pod_sandbox(id).await {
            (self.log)(format!("pod {}: removing sandbox {id}: {}", self.pod.key(), e.message()));
        }
    }

    /// Whether the restart policy restarts a run of container `index` that ended with
    /// `exit_code`. An init container that succeeded is done; one that failed is run again
    /// unless the policy is Never (Always reads as OnFailure for it, as upstream). A Job's pod
    /// runs a failure again up to its limit, whatever the policy.
    fn restarts(&self, index: usize, exit_code: i32) -> bool {
        // A sidecar runs as long as the pod does, whatever its policy or limit.
        if self.tracks[index].view.sidecar {
            return !self.finished();
        }
        if let Some(limit) = self.pod.restart_limit {
            // A Job's pod: a failure runs again, up to the Job's backoffLimit.
            return exit_code != 0 && self.tracks[index].view.restarts < limit;
        }
        match (spec::restart_policy(&self.pod.pod), index < self.init_count) {
            ("Never", _) => false,
            ("OnFailure", _) | (_, true) => exit_code != 0,
            _ => true,
        }
    }

    async fn sync_container(&mut self, index: usize) {
        let container = spec::container_at(&self.pod.pod, index).clone();
        let current_id = self.tracks[index].view.current.as_ref().map(|c| c.id.clone());
        if let Some(id) = current_id {
            match self.container_status(&id).await {
                Ok(status) => {
                    let status = self.with_termination_message(index, status).await;
                    self.tracks[index].view.current = Some(status);
                }
                Err(e) if e.code() == tonic::Code::NotFound => {
                    self.tracks[index].view.current = None
                }
                Err(e) => {
                    (self.log)(format!(
                        "pod {}: status of {}: {}",
                        self.pod.key(),
                        container.name,
                        e.message()
                    ));
                    return;
                }
            }
        }
        let now = Instant::now();
        let Some(current) = self.tracks[index].view.current.clone() else {
            return self.start_container(index, now).await;
        };
        match v1::ContainerState::try_from(current.state) {
            Ok(v1::ContainerState::ContainerRunning) => {
                self.watch_running(index, &current, now).await
            }
            Ok(v1::ContainerState::ContainerCreated) => {
                if let Err(e) = self.cri.start_container(&current.id).await {
                    self.tracks[index].view.waiting =
                        Some(("RunContainerError".into(), e.message().into()));
                }
            }
            _ => {
                let track = &mut self.tracks[index];
                track.view.started = false;
                track.view.ready = false;
                track.probes = None;
                if track.view.done {
                    return;
                }
                if !self.restarts(index, current.exit_code) {
                    let track = &mut self.tracks[index];
                    track.view.done = true;
                    track.view.waiting = None;
                    return;
                }
                if self.tracks[index].retry_at.is_none() {
                    let message = format!(
                        "Back-off restarting failed container {} in pod {}_{}({})",
                        container.name, self.pod.name, self.pod.namespace, self.pod.uid
                    );
                    self.event(Some(index), EventType::Warning, "BackOff", &message);
                }
                let track = &mut self.tracks[index];
                let retry_at = *track.retry_at.get_or_insert_with(|| {
                    let ran = Duration::from_nanos(
                        (current.finished_at - current.started_at).max(0) as u64,
                    );
                    if ran >= RESET_AFTER {
                        track.backoff.reset();
                    }
                    now + track.backoff.failed()
                });
                if now < retry_at {
                    let delay = retry_at.saturating_duration_since(now).as_secs();
                    track.view.waiting = Some((
                        "CrashLoopBackOff".into(),
                        format!(
                            "back-off {delay}s restarting failed container={} pod={}",
                            container.name,
                            self.pod.key()
                        ),
                    ));
                    return;
                }
                self.start_container(index, now).await;
            }
        }
    }

    /// `status` of a run of the container at `index`, with its termination message once it
    /// ended: read (off the async workers) the first time the worker sees that run ended,
    /// whichever way it learnt of the run (started, adopted, looked at again).
    async fn with_termination_message(
        &mut self,
        index: usize,
        mut status: v1::ContainerStatus,
    ) -> v1::ContainerStatus {
        if status.state != i32::from(v1::ContainerState::ContainerExited) {
            return status;
        }
        let read = match &self.tracks[index].termination_message {
            Some((run, message)) if *run == status.id => Some(message.clone()),
            _ => None,
        };
        let message = match read {
            Some(message) => message,
            None => {
                let container = spec::container_at(&self.pod.pod, index).clone();
                let attempt = status.metadata.as_ref().map_or(0, |m| m.attempt);
                let data_dir = self.files.data_directory(&self.pod.uid);
                let file = termination::message_file(&data_dir, &container.name, attempt);
                let log = self.files.log_directory(&self.pod).join(&status.log_path);
                let exit_code = status.exit_code;
                let message = tokio::task::spawn_blocking(move || {
                    termination::message(&container, &file, exit_code, &log)
                })
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
                self.tracks[index].termination_message = Some((status.id.clone(), message.clone()));
                message
            }
        };
        if !message.is_empty() {
            status.message = message;
        }
        status
    }

    /// Probes a running container, and kills it when liveness or startup fails.
    async fn watch_running(&mut self, index: usize, current: &v1::ContainerStatus, now: Instant) {
        let container = spec::container_at(&self.pod.pod, index).clone();
        let ip = self.probe_ip();
        let track = &mut self.tracks[index];
        track.view.waiting = None;
        track.retry_at = None;
        if track.probes.as_ref().is_none_or(|(id, _)| *id != current.id) {
            track.probes = Some((current.id.clone(), Probes::new(&container, now)));
        }
        let (_, probes) = track.probes.as_mut().expect("set above");
        let target = Target { container_id: &current.id, ip, container: &container };
        let round = probes.run_due(self.cri.as_ref(), &target).await;
        for failure in &round.failures {
            self.event(Some(index), EventType::Warning, "Unhealthy", failure);
        }
        let track = &mut self.tracks[index];
        let (_, probes) = track.probes.as_ref().expect("set above");
        track.view.started = probes.started();
        track.view.ready = probes.ready();
        if let Some(why) = round.kill {
            (self.log)(format!(
                "pod {}: container {}: {why}; killing it",
                self.pod.key(),
                container.name
            ));
            let grace = spec::grace_seconds(&self.pod.pod);
            let why = format!("Container {} {why}, will be restarted", container.name);
            self.stop_containers(vec![(current.id.clone(), index)], grace, Some(&why)).await;
        }
    }

    /// Where HTTP and TCP probes and hooks reach the pod: its IP, or the node's loopback on
    /// the host network.
    fn probe_ip(&self) -> IpAddr {
        let ip = self.sandbox.as_ref().and_then(|s| s.ip.as_deref());
        match (spec::host_network(&self.pod.pod), ip) {
            (false, Some(ip)) => ip.parse().unwrap_or(IpAddr::from([127, 0, 0, 1])),
            _ => IpAddr::from([127, 0, 0, 1]),
        }
    }

    /// Stops the containers `runs` (id, and index in the pod) all at once, each given `grace`
    /// seconds: its preStop hook runs within them, then SIGTERM, then what is left of them
    /// (at least 2 s, as upstream) before SIGKILL; with no grace at all (an eviction), SIGKILL
    /// at once and no hook. `why` is the `Killing` event's message, when it is not a plain
    /// stop.
    async fn stop_containers(&self, runs: Vec<(String, usize)>, grace: i64, why: Option<&str>) {
        let ip = self.probe_ip();
        let stops = runs.into_iter().map(|(id, index)| {
            let cri = self.cri.clone();
            let container = spec::container_at(&self.pod.pod, index).clone();
            let key = self.pod.key();
            let (events, involved) = (self.events.clone(), self.involved(Some(index)));
            let killing =
                why.map_or_else(|| format!("Stopping container {}", container.name), String::from);
            async move {
                events.record(&involved, EventType::Normal, "Killing", &killing);
                let mut left = Duration::from_secs(grace.max(0) as u64);
                let mut failures = Vec::new();
                let pre_stop = container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref());
                if let Some(hook) = pre_stop.filter(|_| grace > 0) {
                    let started = Instant::now();
                    let target = Target { container_id: &id, ip, container: &container };
                    if let Err(e) = lifecycle::run(cri.as_ref(), hook, left, &target).await {
                        let failed = format!("PreStopHook failed: {e}");
                        events.record(&involved, EventType::Warning, "FailedPreStopHook", &failed);
                        failures.push(format!(
                            "container {}: preStop hook failed: {e}",
                            container.name
                        ));
                    }
                    left = left.saturating_sub(started.elapsed()).max(Duration::from_secs(2));
                }
                if let Err(e) = cri.stop_container(&id, left).await {
                    failures.push(format!("stopping container {id}: {}", e.message()));
                }
                failures.into_iter().map(|f| format!("pod {key}: {f}")).collect::<Vec<_>>()
            }
        });
        for failure in futures_util::future::join_all(stops).await.into_iter().flatten() {
            (self.log)(failure);
        }
    }

    /// Creates and starts the next run of a container (pulling its image first if needed);
    /// the run before the previous one is removed, so `--previous` logs stay.
    async fn start_container(&mut self, index: usize, now: Instant) {
        let container = spec::container_at(&self.pod.pod, index).clone();
        let Some((sandbox_id, sandbox_attempt)) =
            self.sandbox.as_ref().map(|s| (s.id.clone(), s.attempt))
        else {
            return;
        };
        let track = &mut self.tracks[index];
        if track.pull_retry_at.is_some_and(|at| now < at) {
            let message = track.view.waiting.take().map(|(_, m)| m).unwrap_or_default();
            track.view.waiting = Some(("ImagePullBackOff".into(), message));
            return;
        }
        let (events, involved) = (self.events.clone(), self.involved(Some(index)));
        let mut report = |kind, reason: &str, message: String| {
            events.record(&involved, kind, reason, &message);
        };
        let credentials = {
            let objects = self.objects.borrow();
            let image = container.image.as_deref().unwrap_or_default();
            pull_secrets::for_image(&objects, &self.pod.namespace, &self.pod.pod, image)
        };
        for problem in &credentials.problems {
            let message = format!(
                "Unable to retrieve some image pull secrets ({problem}); attempting to pull the \
                 image may not succeed."
            );
            report(EventType::Warning, "FailedToRetrieveImagePullSecret", message);
        }
        let pulled = images::ensure(self.cri.as_ref(), &container, &credentials.auths, &mut report);
        let image = match pulled.await {
            Ok(image) => image,
            Err(e) => {
                self.event(
                    Some(index),
                    EventType::Warning,
                    "Failed",
                    &format!("Error: {}", e.message),
                );
                let image = container.image.as_deref().unwrap_or_default();
                let backoff = format!("Back-off pulling image {image:?}");
                self.event(Some(index), EventType::Normal, "BackOff", &backoff);
                let track = &mut self.tracks[index];
                let delay = track.pull_backoff.failed().max(Duration::from_secs(1));
                track.pull_retry_at = Some(now + delay);
                track.view.waiting = Some((e.reason.into(), e.message.clone()));
                (self.log)(format!(
                    "pod {}: container {}: {}",
                    self.pod.key(),
                    container.name,
                    e.message
                ));
                return;
            }
        };
        let user_problem = match spec::needs_image_user(&self.pod.pod, &container) {
            true => self.image_user_problem(&image).await,
            false => None,
        };
        let track = &mut self.tracks[index];
        track.pull_backoff.reset();
        track.pull_retry_at = None;
        if let Some(problem) = user_problem {
            track.view.waiting = Some(("CreateContainerConfigError".into(), problem));
            return;
        }
        let attempt = track.next_attempt;
        let config = {
            // The node's facts are read only for a container whose env or volumes ask for them.
            let volumes = self.pod.pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
            let downward = container.env.iter().flatten().any(|e| e.value_from.is_some())
                || volumes.into_iter().flatten().any(|v| v.downward_api.is_some());
            let placement = match downward {
                true => placement(self.sandbox.as_ref().and_then(|s| s.ip.clone())),
                false => downward::Placement::default(),
            };
            let objects = self.objects.borrow().clone();
            let volumes = (self.files.volumes(&self.pod.uid))
                .with_fs_group(spec::fs_group(&self.pod.pod))
                .with_objects(&objects, &self.pod.namespace)
                .with_downward(&self.pod, &placement);
            let facts = (&placement, objects.as_ref());
            spec::container_config(&self.pod, &container, attempt, &image, &volumes, facts)
        };
        let mut config = match config {
            Ok(config) => config,
            Err(e) => {
                track.view.waiting = Some(("CreateContainerConfigError".into(), e.to_string()));
                let reason = match e {
                    spec::ConfigError::Mount(_) => "FailedMount",
                    spec::ConfigError::Other(_) => "Failed",
                };
                self.event(Some(index), EventType::Warning, reason, &format!("Error: {e}"));
                return;
            }
        };
        match termination::mount(&self.files.data_directory(&self.pod.uid), &container, attempt) {
            Ok(mount) => config.mounts.push(mount),
            Err(e) => {
                let why = format!("preparing its termination message file: {e}");
                track.view.waiting = Some(("CreateContainerConfigError".into(), why.clone()));
                self.event(
                    Some(index),
                    EventType::Warning,
                    "FailedMount",
                    &format!("Error: {why}"),
                );
                return;
            }
        }
        let log_directory = self.files.log_directory(&self.pod);
        let sandbox_config = spec::sandbox_config(&self.pod, sandbox_attempt, &log_directory);
        let id = match self.cri.create_container(&sandbox_id, config, sandbox_config).await {
            Ok(id) => id,
            Err(e) => {
                track.view.waiting = Some(("CreateContainerError".into(), e.message().into()));
                self.event(
                    Some(index),
                    EventType::Warning,
                    "Failed",
                    &format!("Error: {}", e.message()),
                );
                return;
            }
        };
        self.event(
            Some(index),
            EventType::Normal,
            "Created",
            &format!("Created container {}", container.name),
        );
        let track = &mut self.tracks[index];
        track.next_attempt += 1;
        track.retry_at = None;
        let older = std::mem::replace(&mut track.view.previous, track.view.current.take());
        if let Some(older) = older {
            let _ = self.cri.remove_container(&older.id).await;
            let _ = std::fs::remove_file(log_directory.join(&older.log_path));
            let older_attempt = older.metadata.as_ref().map_or(0, |m| m.attempt);
            let data_dir = self.files.data_directory(&self.pod.uid);
            termination::forget(&data_dir, &container.name, older_attempt);
        }
        if let Err(e) = self.cri.start_container(&id).await {
            self.tracks[index].view.waiting =
                Some(("RunContainerError".into(), e.message().into()));
            self.event(
                Some(index),
                EventType::Warning,
                "Failed",
                &format!("Error: {}", e.message()),
            );
        } else {
            self.tracks[index].view.waiting = None;
            self.event(
                Some(index),
                EventType::Normal,
                "Started",
                &format!("Started container {}", container.name),
            );
            self.post_start(index, &container, &id).await;
        }
        let status = self.container_status(&id).await.ok();
        let track = &mut self.tracks[index];
        track.view.restarts = attempt as i32;
        track.view.current = status;
    }

    /// Runs the container's postStart hook, if it has one; a hook that fails has the
    /// container killed (its preStop hook is not run), so its restart policy decides.
    async fn post_start(
        &mut self,
        index: usize,
        container: &k8s_openapi::api::core::v1::Container,
        id: &str,
    ) {
        let Some(hook) = container.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
            return;
        };
        let target = Target { container_id: id, ip: self.probe_ip(), container };
        let timeout = lifecycle::POST_START_TIMEOUT;
        let Err(e) = lifecycle::run(self.cri.as_ref(), hook, timeout, &target).await else {
            return;
        };
        (self.log)(format!(
            "pod {}: container {}: postStart hook failed: {e}; killing it",
            self.pod.key(),
            container.name
        ));
        let failed = format!("PostStartHook failed: {e}");
        self.event(Some(index), EventType::Warning, "FailedPostStartHook", &failed);
        let grace = spec::grace_seconds(&self.pod.pod);
        let _ = self.cri.stop_container(id, Duration::from_secs(grace.max(0) as u64)).await;
    }

    /// Whether the pod is done: its containers ended and are not restarted, or an init
    /// container failed and is not run again. Its sidecars are stopped then, as upstream.
    fn finished(&self) -> bool {
        let (init, containers) = self.tracks.split_at(self.init_count);
        let init_failed =
            init.iter().any(|t| t.view.done && !t.view.sidecar && !succeeded(&t.view));
        init_failed || containers.iter().all(|t| t.view.done)
    }

    /// Stops sandbox `id` of the pod that ended; whether it is stopped (or gone).
    async fn stop_sandbox(&self, id: &str) -> bool {
        match self.cri.stop_pod_sandbox(id).await {
            Ok(()) => true,
            Err(e) if e.code() == tonic::Code::NotFound => true,
            Err(e) => {
                let message = e.message();
                (self.log)(format!("pod {}: stopping sandbox {id}: {message}", self.pod.key()));
                false
            }
        }
    }

    /// Reads back the last runs of the containers at `indexes`, which were stopped for good:
    /// they are done, with the state they ended in.
    async fn settle(&mut self, indexes: impl IntoIterator<Item = usize>) {
        for index in indexes {
            let Some(id) = self.tracks[index].view.current.as_ref().map(|c| c.id.clone()) else {
                continue;
            };
            let status = self.container_status(&id).await.ok();
            let view = &mut self.tracks[index].view;
            view.current = status.or(view.current.take());
            (view.waiting, view.started, view.ready, view.done) = (None, false, false, true);
            self.tracks[index].probes = None;
        }
    }

    /// Stops the sidecars that run, the last first, sharing `grace` seconds.
    async fn stop_sidecars(&self, grace: i64) {
        let started = Instant::now();
        let sidecars =
            self.running_containers().into_iter().filter(|(_, i)| self.tracks[*i].view.sidecar);
        for run in sidecars.collect::<Vec<_>>().into_iter().rev() {
            // Each gets what is left, at least 2 s as upstream gives SIGTERM.
            let left = (grace - started.elapsed().as_secs() as i64).max(2);
            self.stop_containers(vec![run], left, None).await;
        }
    }

    /// Stops the running containers with `grace` seconds: all at once, then the sidecars (the
    /// last first) with what is left of it, so they serve the containers to the end.
    async fn stop_all(&self, grace: i64) {
        let started = Instant::now();
        let containers =
            self.running_containers().into_iter().filter(|(_, i)| !self.tracks[*i].view.sidecar);
        self.stop_containers(containers.collect(), grace, None).await;
        self.stop_sidecars((grace - started.elapsed().as_secs() as i64).max(0)).await;
    }

    /// Stops the running containers all at once (sidecars too: the node's shutdown has no
    /// time to stop them after), each with its grace up to [`SHUTDOWN_GRACE`], then the
    /// sandbox.
    async fn stop_for_shutdown(mut self) {
        let grace = spec::grace_seconds(&self.pod.pod).min(SHUTDOWN_GRACE);
        self.stop_containers(self.running_containers(), grace, None).await;
        if let Some(sandbox) = self.sandbox.take() {
            let _ = self.cri.stop_pod_sandbox(&sandbox.id).await;
        }
    }

    /// The containers running now: their ids and indices in the pod.
    fn running_containers(&self) -> Vec<(String, usize)> {
        let running =
            |c: &&v1::ContainerStatus| c.state == i32::from(v1::ContainerState::ContainerRunning);
        self.tracks
            .iter()
            .enumerate()
            .filter_map(|(index, t)| {
                t.view.current.as_ref().filter(running).map(|c| (c.id.clone(), index))
            })
            .collect()
    }

    /// Stops the containers (each with the grace period) and removes the sandbox, the
    /// pod's logs and volumes, and its record.
    async fn teardown(&mut self) {
        self.stop_all(spec::grace_seconds(&self.pod.pod)).await;
        for sandbox in self.sandboxes().await.unwrap_or_default() {
            self.remove_sandbox(&sandbox.id).await;
        }
        self.sandbox = None;
        if let Err(e) = pod_cgroup::remove(&self.files.cgroup_root, &self.pod.uid) {
            (self.log)(format!("pod {}: removing its cgroup: {e}", self.pod.key()));
        }
        let _ = std::fs::remove_dir_all(self.files.log_directory(&self.pod));
        completions::forget(&self.files.completion_root, &self.pod.uid);
        completions::forget(&self.files.ended_root, &self.pod.uid);
        // Its tmpfs and subPath binds are unmounted before anything is deleted.
        let removed = self.files.volumes(&self.pod.uid).remove();
        if let Err(e) = removed {
            (self.log)(format!("pod {}: removing its volumes: {e}", self.pod.key()));
        }
        let mut registry = self.registry.lock().unwrap();
        // A replacement (same name, new uid) may already have published its record.
        if registry.get(&self.pod.key()).is_some_and(|r| r.uid == self.pod.uid) {
            registry.remove(&self.pod.key());
        }
    }
}

/// Resolves at `at`; never without one.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The service account whose token the pod would have mounted in a cluster: the one it names
/// (or `default`, when it names none but asks for the token), unless it declines the token.
fn service_account(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let named = spec.service_account_name.clone().or_else(|| spec.service_account.clone());
    match spec.automount_service_account_token {
        Some(false) => None,
        Some(true) => Some(named.unwrap_or_else(|| "default".into())),
        None => named,
    }
}

/// Where a pod runs, for the downward API: `pod_ip` is its sandbox's address (none on the
/// host network, where the node's is the pod's).
fn placement(pod_ip: Option<String>) -> downward::Placement {
    use procfs::Current as _;
    let host_ip = node_address().map(|ip| ip.to_string()).unwrap_or_default();
    downward::Placement {
        pod_ip: pod_ip.unwrap_or_else(|| host_ip.clone()),
        host_ip,
        node_name: crate::node::config::kernel_hostname(),
        cpu_millis: std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1000,
        memory_bytes: procfs::Meminfo::current().map_or(0, |m| m.mem_total),
    }
}

/// The node's address on its default route: the source the kernel picks for a packet out
/// (a UDP socket's connect only looks the route up; nothing is sent). None with no route.
fn node_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // An address of TEST-NET-1 (RFC 5737): routed by the default route, never a local one.
    socket.connect("192.0.2.1:9").ok()?;
    socket.local_addr().ok().map(|address| address.ip())
}

/// Whether a container's latest run ended with exit code 0.
fn succeeded(view: &ContainerView) -> bool {
    view.current.as_ref().is_some_and(|c| {
        c.state == i32::from(v1::ContainerState::ContainerExited) && c.exit_code == 0
    })
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
