//! The kubelet, inside machined. It speaks CRI to containerd (like the upstream kubelet),
//! runs the pods of every [`source::PodSource`] (the config's pods and objects, the manifest
//! directory on STATE, the objects applied with `ctl apply -f`), and keeps them running with no control plane: after a reboot with no
//! network, the pods come back from the config and the images baked into the OS image.
//!
//! At start it imports the baked-in images, writes the pod network's CNI config, then runs
//! one [`worker::Worker`] per pod. A pod whose object changes gets a new uid and is replaced;
//! a pod no source has any more is torn down; sandboxes of pods nobody wants (left by a crash
//! or an earlier config) are removed.

mod atomic_writer;
mod backoff;
pub mod claims;
mod cni;
mod completions;
mod downward;
pub mod events;
mod images;
mod import;
mod lifecycle;
pub mod logs;
pub mod manifests;
mod objects;
mod placement;
mod pod_cgroup;
mod pod_files;
mod pod_totals;
mod probe;
mod pull_secrets;
mod source;
mod spec;
mod status;
mod storage;
mod subpath;
mod termination;
mod volumes;
mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{select_all, BoxFuture};
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use cairn_api::config::pod::DEFAULT_NAMESPACE;
use cairn_api::config::MachineConfig;

use crate::files::layout::{under, NodeLayout};
use crate::node::power::PowerControl;
use crate::service::{Dependency, Service, ServiceContext};
use crate::services::containerd;
use crate::workloads::cri::{v1, Cri, CriClient};

use events::{EventType, Involved, PodEvent, PodEvents};
use objects::LocalObjects;
use pod_files::PodFiles;
use source::{AppliedObjects, ConfigPods, DesiredPod, ManifestDir, PodSource};

/// How often the kubelet looks for sandboxes nobody wants.
const ORPHAN_SWEEP: Duration = Duration::from_secs(30);

/// What the kubelet knows of one pod, for the API.
#[derive(Debug, Clone)]
pub struct PodRecord {
    /// `namespace/name`.
    pub key: String,
    /// Where it came from (`config`, `manifest:FILE`).
    pub source: String,
    /// Its uid.
    pub uid: String,
    /// The pod as given, with its namespace, uid and status filled in.
    pub pod: Pod,
    /// The log files of each container: its latest run's, and the run before (during a
    /// back-off, the run that ended), as `kubectl logs [--previous]` reads them.
    pub logs: BTreeMap<String, ContainerLogs>,
}

/// Where a container's output is.
#[derive(Debug, Clone, Default)]
pub struct ContainerLogs {
    /// The latest run's log file.
    pub current: Option<PathBuf>,
    /// The previous run's.
    pub previous: Option<PathBuf>,
}

/// The pods the kubelet runs, by `namespace/name`.
pub type Registry = Arc<Mutex<BTreeMap<String, PodRecord>>>;

/// A pod's worker, as the kubelet holds it.
struct RunningPod {
    uid: String,
    /// Its namespace and the claims it mounts, which stay while it runs or is torn down.
    claims: (String, Vec<String>),
    remove: CancellationToken,
    restart: Arc<Notify>,
    task: JoinHandle<()>,
}

/// The kubelet service.
pub struct Kubelet {
    layout: NodeLayout,
    config: watch::Receiver<Option<Arc<MachineConfig>>>,
    power: Arc<PowerControl>,
    registry: Registry,
    events: PodEvents,
    restarts: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Kubelet {
    /// The kubelet of the node laid out as `layout`, running the pods of the running config
    /// `config` carries and of its manifest directory; `power` tells whether the node is going
    /// down (the pods then stop).
    pub fn new(
        layout: NodeLayout,
        config: watch::Receiver<Option<Arc<MachineConfig>>>,
        power: Arc<PowerControl>,
    ) -> Kubelet {
        Kubelet {
            layout,
            config,
            power,
            registry: Registry::default(),
            events: PodEvents::default(),
            restarts: Mutex::default(),
        }
    }

    /// The pods' events kept, oldest first; those of pod `pod` (`namespace`, `name`) only
    /// when it is given.
    pub fn events(&self, pod: Option<(&str, &str)>) -> Vec<PodEvent> {
        self.events.list(pod)
    }

    /// The pods it runs, by `namespace/name`, with their status.
    pub fn pods(&self) -> Vec<PodRecord> {
        self.registry.lock().unwrap().values().cloned().collect()
    }

    /// Finds a pod by `name` (any namespace; `default` first) or `namespace/name`.
    pub fn find(&self, name: &str) -> Option<PodRecord> {
        let registry = self.registry.lock().unwrap();
        if name.contains('/') {
            return registry.get(name).cloned();
        }
        registry
            .get(&format!("{DEFAULT_NAMESPACE}/{name}"))
            .or_else(|| registry.values().find(|r| r.pod.metadata.name.as_deref() == Some(name)))
            .cloned()
    }

    /// Tears the pod `key` (`namespace/name`) down and starts it afresh; false when no
    /// worker runs it (it is being removed).
    pub fn restart(&self, key: &str) -> bool {
        let restarts = self.restarts.lock().unwrap();
        restarts.get(key).map(|notify| notify.notify_one()).is_some()
    }

    /// The pod subnet `config` names (validated on apply), or the default.
    fn pod_subnet(config: Option<&MachineConfig>) -> ipnet::Ipv4Net {
        let kubelet = config.map(|c| c.machine.kubelet.clone()).unwrap_or_default();
        kubelet.pod_subnet().parse().unwrap_or_else(|_| {
            cairn_api::config::Kubelet::DEFAULT_POD_SUBNET.parse().expect("the default parses")
        })
    }

    /// The pods every source wants, the first source winning a name both use.
    fn desired(
        &self,
        sources: &[Box<dyn PodSource>],
        ctx: &ServiceContext,
    ) -> BTreeMap<String, DesiredPod> {
        let mut desired = BTreeMap::new();
        for source in sources {
            let (pods, problems) = source.pods();
            for problem in problems {
                ctx.log(format!("refused: {problem}"));
            }
            for pod in pods {
                if let Some(first) = desired.get(&pod.key()) {
                    let first: &DesiredPod = first;
                    ctx.log(format!(
                        "{} from {} ignored: {} already defines it",
                        pod.key(),
                        pod.source,
                        first.source
                    ));
                    continue;
                }
                desired.insert(pod.key(), pod);
            }
        }
        desired
    }

    /// The node as the scheduler sees it, with the config's labels.
    fn node(config: Option<&MachineConfig>) -> placement::Node {
        let labels = config.map(|c| c.machine.kubelet.node_labels.clone()).unwrap_or_default();
        let arch = cairn_api::arch::Arch::built_for()
            .expect("machined runs on an architecture Cairn knows");
        placement::Node::new(&crate::node::config::kernel_hostname(), arch, &labels)
    }

    /// Takes the pods that do not run yet and cannot run on `node` (its labels, host ports
    /// or pod (anti-)affinity, against the pods placed before them) out of `desired`: each is
    /// published as Pending with the scheduler's reason, and logged when that reason is new.
    /// `placed` holds the uids of the pods placed already (their workers run, or their
    /// sandboxes did when the kubelet started): they keep their place, as a bound pod does
    /// (see [`placement::unplaceable`]).
    /// `waiting` holds the reasons of the pass before, by `namespace/name`; a pod that no
    /// longer waits loses its Pending record (to its worker's, or to nothing).
    fn hold_unplaceable(
        &self,
        desired: &mut BTreeMap<String, DesiredPod>,
        placed_uids: &HashSet<String>,
        (node, files): (&placement::Node, &PodFiles),
        waiting: &mut BTreeMap<String, (String, String)>,
        ctx: &ServiceContext,
    ) {
        // Ended: as published, or as recorded (before its worker started again).
        let ended: HashSet<String> = {
            let registry = self.registry.lock().unwrap();
            let ended = |pod: &&DesiredPod| {
                let record = registry.get(&pod.key()).filter(|r| r.uid == pod.uid);
                let phase = record.and_then(|r| r.pod.status.as_ref()?.phase.as_deref());
                let recorded = || {
                    let job = pod.restart_limit.map(|_| &files.completion_root);
                    let mut roots = job.into_iter().chain([&files.ended_root]);
                    roots.any(|root| completions::recorded(root, &pod.uid).is_some())
                };
                let ended = matches!(phase, Some("Succeeded" | "Failed")) || recorded();
                ended && !pod.replaced_when_failed
            };
            desired.values().filter(ended).map(|pod| pod.uid.clone()).collect()
        };
        let mut refused = placement::unplaceable(node, desired, placed_uids, &ended);
        let mut now = BTreeMap::new();
        desired.retain(|key, pod| {
            let Some(reason) = refused.remove(key) else { return true };
            if waiting.get(key) != Some(&(pod.uid.clone(), reason.clone())) {
                ctx.log(format!("pod {key}: not scheduled on this node: {reason}"));
                let involved = Involved {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    uid: pod.uid.clone(),
                    field_path: String::new(),
                };
                self.events.record(&involved, EventType::Warning, "FailedScheduling", &reason);
            }
            let mut record = pod.pod.clone();
            record.metadata.namespace = Some(pod.namespace.clone());
            record.metadata.uid = Some(pod.uid.clone());
            record.status = Some(status::unscheduled(&reason));
            let record = PodRecord {
                key: key.clone(),
                source: pod.source.clone(),
                uid: pod.uid.clone(),
                pod: record,
                logs: BTreeMap::new(),
            };
            self.registry.lock().unwrap().insert(key.clone(), record);
            now.insert(key.clone(), (pod.uid.clone(), reason));
            false
        });
        let mut registry = self.registry.lock().unwrap();
        for (key, (uid, _)) in waiting.iter() {
            if !now.contains_key(key) && registry.get(key).is_some_and(|r| &r.uid == uid) {
                registry.remove(key);
            }
        }
        *waiting = now;
    }

    /// Starts workers for new pods (reading ConfigMaps and Secrets from `objects`) and stops
    /// those of pods that went or changed; returns the workers told to stop, which tear their
    /// pods down (preStop hooks, grace periods) from here on.
    fn reconcile(
        &self,
        (runtime, objects): (&worker::Runtime, &watch::Receiver<Arc<LocalObjects>>),
        desired: &BTreeMap<String, DesiredPod>,
        running: &mut BTreeMap<String, RunningPod>,
        (detach, shutdown): (&CancellationToken, &CancellationToken),
        ctx: &ServiceContext,
    ) -> Vec<RunningPod> {
        let gone: Vec<String> = running
            .iter()
            .filter(|(key, pod)| desired.get(*key).is_none_or(|d| d.uid != pod.uid))
            .map(|(key, _)| key.clone())
            .collect();
        let stopping: Vec<RunningPod> = gone.iter().filter_map(|key| running.remove(key)).collect();
        for pod in &stopping {
            pod.remove.cancel();
        }
        for (key, pod) in desired {
            if running.contains_key(key) {
                continue;
            }
            let remove = CancellationToken::new();
            let restart = Arc::new(Notify::new());
            let log_ctx = ctx.clone();
            let worker = worker::Worker::new(
                runtime.clone(),
                pod.clone(),
                (self.registry.clone(), self.events.clone()),
                Arc::new(move |line| log_ctx.log(line)),
                objects.clone(),
            );
            let leave = worker::Leave {
                remove: remove.clone(),
                detach: detach.clone(),
                shutdown: shutdown.clone(),
            };
            let task = tokio::spawn(worker.run(leave, restart.clone()));
            let claims = claims_of(&pod.pod).map(String::from).collect();
            let claims = (pod.namespace.clone(), claims);
            running.insert(
                key.clone(),
                RunningPod { uid: pod.uid.clone(), claims, remove, restart, task },
            );
        }
        *self.restarts.lock().unwrap() =
            running.iter().map(|(key, pod)| (key.clone(), pod.restart.clone())).collect();
        stopping
    }

    /// The uids of the pods whose sandboxes are ready.
    async fn live_pod_uids(cri: &dyn Cri) -> anyhow::Result<HashSet<String>> {
        let ready = i32::from(v1::PodSandboxState::SandboxReady);
        let sandboxes = cri.list_pod_sandbox(None).await?;
        let live = sandboxes.into_iter().filter(|sandbox| sandbox.state == ready);
        Ok(live.filter_map(|mut sandbox| sandbox.labels.remove(spec::label::POD_UID)).collect())
    }

    /// Removes sandboxes of pods no worker runs (a crash, or a config replaced while the
    /// kubelet was not running), then their volumes.
    async fn sweep_orphans(
        (cri, files): &worker::Runtime,
        wanted: &[String],
        ctx: &ServiceContext,
    ) -> anyhow::Result<()> {
        let sandboxes = cri.list_pod_sandbox(None).await?;
        // The volumes of a pod whose sandbox could not be stopped stay: it may still run.
        let mut running = Vec::new();
        for sandbox in sandboxes {
            let Some(uid) = sandbox.labels.get(spec::label::POD_UID) else { continue };
            if wanted.contains(uid) {
                continue;
            }
            ctx.log(format!("removing sandbox {} of a pod no source has (uid {uid})", sandbox.id));
            if cri.stop_pod_sandbox(&sandbox.id).await.is_err() {
                running.push(uid.clone());
            }
            let _ = cri.remove_pod_sandbox(&sandbox.id).await;
        }
        let keep = |uid: &str| wanted.iter().chain(&running).any(|kept| kept == uid);
        for line in volumes::sweep(files.mounter.as_ref(), &files.data_root, keep) {
            ctx.log(line);
        }
        pod_cgroup::sweep(&files.cgroup_root, keep);
        Ok(())
    }

    async fn serve(self: Arc<Self>, ctx: ServiceContext) -> anyhow::Result<()> {
        let cri: Arc<dyn Cri> = Arc::new(CriClient::connect(containerd::SOCKET).await?);
        let version = cri.version().await?;
        ctx.log(format!(
            "CRI: {} {} (API {})",
            version.runtime_name, version.runtime_version, version.runtime_api_version
        ));
        let root = self.layout.root().to_path_buf();
        let files = PodFiles::under(&root, Arc::new(volumes::HostMounter));
        let images_dir = under(&root, import::IMAGES_DIR);
        let started = std::time::Instant::now();
        for line in import::import_archives(containerd::SOCKET, &images_dir).await? {
            ctx.log(line);
        }
        ctx.log(format!("baked-in images imported in {} ms", started.elapsed().as_millis()));
        let cni_dir = under(&root, containerd::CNI_CONF_DIR);
        let mut subnet = None;
        let mut registries = None;
        ctx.ready();

        // Changes from here on: the first pass reads the config as it is.
        let mut config_feed = self.config.clone();
        config_feed.mark_unchanged();
        let applied = AppliedObjects::new(self.layout.applied_objects_path());
        let mut sources: Vec<Box<dyn PodSource>> = vec![
            Box::new(ConfigPods::new(config_feed)),
            Box::new(ManifestDir::new(self.layout.manifest_dir())),
            Box::new(applied.share()),
        ];
        let detach = CancellationToken::new();
        let shutdown = CancellationToken::new();
        // Workers see the objects change; the first pass fills them in.
        let (objects, objects_feed) = watch::channel(Arc::new(LocalObjects::default()));
        let mut running = BTreeMap::new();
        // Pods whose sandboxes run were placed by the kubelet before this one: the first pass
        // keeps their place rather than weigh them afresh against pods that wait.
        let mut adopted = Self::live_pod_uids(cri.as_ref()).await.unwrap_or_default();
        let runtime = (cri, files);
        let mut waiting = BTreeMap::new();
        let mut stopping = Vec::new();
        let mut sweep = tokio::time::interval(ORPHAN_SWEEP);
        loop {
            // The config's network settings: the pod subnet, the registry mirrors.
            let config = self.config.borrow().clone();
            let wanted_subnet = Self::pod_subnet(config.as_deref());
            if subnet != Some(wanted_subnet) {
                cni::write(&cni_dir, wanted_subnet)?;
                ctx.log(format!("pod subnet {wanted_subnet}"));
                subnet = Some(wanted_subnet);
            }
            let wanted = config.as_ref().map(|c| c.machine.registries.clone()).unwrap_or_default();
            if registries.as_ref() != Some(&wanted) {
                containerd::write_hosts(&root, config.as_deref())?;
                registries = Some(wanted);
            }
            objects.send_if_modified(|current| {
                let wanted = LocalObjects::of(config.as_deref(), &applied.objects().0);
                let changed = **current != wanted;
                if changed {
                    *current = Arc::new(wanted);
                }
                changed
            });
            let mut desired = self.desired(&sources, &ctx);
            // Every pod a source wants, placed or not, and whether every source could be read:
            // what a finished Job's record is kept for.
            let wanted_uids: Vec<String> = desired.values().map(|pod| pod.uid.clone()).collect();
            let sources_read = applied.objects().1.is_none();
            let node = Self::node(config.as_deref());
            let placed_uids =
                running.values().map(|pod: &RunningPod| pod.uid.clone()).chain(adopted.drain());
            let placed_uids = placed_uids.collect();
            let place = (&node, &runtime.1);
            self.hold_unplaceable(&mut desired, &placed_uids, place, &mut waiting, &ctx);
            stopping.extend(self.reconcile(
                (&runtime, &objects_feed),
                &desired,
                &mut running,
                (&detach, &shutdown),
                &ctx,
            ));
            let changed: Vec<BoxFuture<'_, ()>> = sources.iter_mut().map(|s| s.changed()).collect();
            tokio::select! {
                _ = ctx.stop.cancelled() => break,
                _ = select_all(changed) => {}
                _ = sweep.tick() => {
                    // A pod being torn down is no orphan: its sandbox goes when its worker
                    // is done with it, after its hooks.
                    stopping.retain(|pod| !pod.task.is_finished());
                    let wanted: Vec<String> =
                        running.values().chain(&stopping).map(|p| p.uid.clone()).collect();
                    if let Err(e) = Self::sweep_orphans(&runtime, &wanted, &ctx).await {
                        ctx.log(format!("looking for orphaned sandboxes: {e}"));
                    }
                    // A deleted claim's data goes once no pod that mounts it runs or is being
                    // torn down.
                    let in_use = |namespace: &str, name: &str| {
                        running.values().chain(&stopping).any(|pod| {
                            pod.claims.0 == namespace && pod.claims.1.iter().any(|c| c == name)
                        })
                    };
                    for line in claims::sweep_retired(&runtime.1.claim_root, in_use) {
                        ctx.log(line);
                    }
                    // A Job's record goes with its pod; not while a source could not be read.
                    if sources_read {
                        let kept = |uid: &str| wanted_uids.iter().any(|w| w == uid);
                        completions::sweep(&runtime.1.completion_root, kept);
                        completions::sweep(&runtime.1.ended_root, kept);
                    }
                }
            }
        }
        // At a reboot or power-off the pods stop, each given its grace (up to a limit); else
        // they keep running and the next kubelet adopts them.
        if self.power.powering_down() {
            ctx.log("stopping the pods: the node is going down");
            shutdown.cancel();
        } else {
            detach.cancel();
        }
        for pod in running.into_values().chain(stopping) {
            let _ = pod.task.await;
        }
        Ok(())
    }
}

/// The claims `pod` mounts.
fn claims_of(pod: &Pod) -> impl Iterator<Item = &str> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes.filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.as_str()))
}

impl Service for Kubelet {
    fn id(&self) -> &'static str {
        "kubelet"
    }

    fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Service("containerd")]
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(self.serve(ctx))
    }
}
