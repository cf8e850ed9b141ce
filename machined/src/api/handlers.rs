//! The `MachineService` handlers: authorize, convert, call the node's use-case, convert back.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_api::arch::Arch;
use cairn_api::machine::{self as pb, machine_service_server::MachineService};
use futures_util::Stream;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::api::auth::{authorize, Call, Caller};
use crate::api::connection::ConnectionInfo;
use crate::api::places::{Place, Pool};
use crate::api::status::read_error;
use crate::api::upgrade;
use crate::config::apply::{Action, ApplyMode};
use crate::facts::Clock;
use crate::inspect;
use crate::logs::events::unix_millis;
use crate::logs::ring::{Ring, Sequenced};
use crate::node::apply::ApplyRequest;
use crate::node::config::NodeMode;
use crate::node::follow::{self, FollowRequest};
use crate::node::power::PowerAction;
use crate::node::Node;
use crate::update::record::{UpdateRecord, UpdateState};

/// Try timeout when the client sets none, as in Talos.
const DEFAULT_TRY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes per `Read` chunk.
const READ_CHUNK: usize = 64 * 1024;
/// Entries one `List` returns at most.
const LIST_LIMIT: usize = 100_000;
/// `Read`s and `List`s under way at once, all callers together: each holds a blocking
/// thread or a file, and tokio's blocking pool is shared with the rest of PID 1.
const FILE_STREAMS: usize = 16;
/// `Read`s and `List`s under way at once from one client network.
const FILE_STREAMS_PER_NETWORK: usize = 4;
/// `Logs`, `Dmesg` and `Events` streams open at once, all callers together: each holds a task
/// and a channel of records...
const RING_STREAMS: usize = 256;
/// ...and from one client network.
const RING_STREAMS_PER_NETWORK: usize = 16;
/// Messages a stream may have waiting for a slow client.
const STREAM_BUFFER: usize = 64;
/// `Read` chunks waiting for a slow client: each is [`READ_CHUNK`] bytes.
const READ_CHUNKS_BUFFERED: usize = 4;
/// How long an `Upgrade` may wait for its client's next message.
const UPGRADE_STALL_TIMEOUT: Duration = Duration::from_secs(60);

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The API's handlers.
pub struct MachineApi {
    node: Arc<Node>,
    file_streams: Pool,
    ring_streams: Pool,
}

impl MachineApi {
    /// Handlers for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        let file_streams = Pool::new(
            FILE_STREAMS,
            FILE_STREAMS_PER_NETWORK,
            "file reads, listings and container logs",
        );
        let ring_streams =
            Pool::new(RING_STREAMS, RING_STREAMS_PER_NETWORK, "log, kernel log and event streams");
        MachineApi { node, file_streams, ring_streams }
    }

    /// A place among the `Read`s, `List`s and `ContainerLogs` under way, or a refusal when
    /// the caller's network, or everyone together, has all there are.
    fn file_stream_place<T>(&self, request: &Request<T>) -> Result<Place, Status> {
        place(&self.file_streams, request)
    }

    /// A place among the `Logs`, `Dmesg` and `Events` streams open.
    fn ring_stream_place<T>(&self, request: &Request<T>) -> Result<Place, Status> {
        place(&self.ring_streams, request)
    }

    /// What `caller` may read and list: everything for those who see secrets.
    fn file_scope(&self, caller: Caller) -> inspect::files::Scope {
        if caller.sees_secrets() {
            inspect::files::Scope::Everything
        } else {
            inspect::files::Scope::Only(self.node.layout().readable_places())
        }
    }

    fn authorize<T>(&self, request: &Request<T>, call: Call) -> Result<Caller, Status> {
        let certs = connection(request).and_then(|c| c.tls.peer_certs());
        authorize(self.node.configuration().mode(), certs.as_deref().map(Vec::as_slice), call)
    }
}

/// The connection a request came on (absent only for requests that did not come over apid's
/// listener, which there are none of).
fn connection<T>(request: &Request<T>) -> Option<&ConnectionInfo> {
    request.extensions().get::<ConnectionInfo>()
}

/// A place in `pool` for the client of `request`, or a refusal when its network, or everyone
/// together, has all there are.
fn place<T>(pool: &Pool, request: &Request<T>) -> Result<Place, Status> {
    let address = connection(request)
        .and_then(|c| c.tls.get_ref().remote_addr())
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    pool.take(address)
        .map_err(|why| Status::resource_exhausted(format!("{why}; try again when one ends")))
}

/// The TLS session binding of the connection a request came on.
fn channel_binding<T>(request: &Request<T>) -> Option<&[u8]> {
    connection(request).and_then(|c| c.channel_binding.as_ref()).map(|b| b.as_slice())
}

/// Streams what `produce` sends; it stops when the client goes away.
fn stream<T: Send + 'static, F>(
    produce: impl FnOnce(mpsc::Sender<Result<T, Status>>) -> F,
) -> ResponseStream<T>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    stream_buffering(STREAM_BUFFER, produce)
}

/// [`stream`], with at most `buffered` messages waiting for the client.
fn stream_buffering<T: Send + 'static, F>(
    buffered: usize,
    produce: impl FnOnce(mpsc::Sender<Result<T, Status>>) -> F,
) -> ResponseStream<T>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(buffered);
    tokio::spawn(produce(tx));
    Box::pin(ReceiverStream::new(rx))
}

/// Streams what `request` asks for of `ring`, holding `place` meanwhile.
fn ring_stream<T, U>(
    ring: &Ring<T>,
    request: FollowRequest,
    place: Place,
    convert: impl Fn(Sequenced<T>) -> U + Send + 'static,
) -> ResponseStream<U>
where
    T: Clone + Send + 'static,
    U: Send + 'static,
{
    let followed = follow::take(ring, request);
    stream(|tx| async move {
        let _place = place;
        follow::send(followed, tx, convert).await
    })
}

/// What a `tail` field asks for: negative is everything.
fn tail(n: i32) -> Option<usize> {
    usize::try_from(n).ok()
}

#[tonic::async_trait]
impl MachineService for MachineApi {
    async fn version(
        &self,
        request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        self.authorize(&request, Call::Version)?;
        let version = self.node.version().await?;
        let slots = version.slots;
        Ok(Response::new(pb::VersionResponse {
            version: version.version,
            // Cairn's name for it (`arm64`, as bundles and boards say), not Rust's (`aarch64`).
            arch: Arch::built_for().map_or(std::env::consts::ARCH, Arch::name).to_string(),
            kernel: version.kernel,
            hostname: version.hostname,
            mode: match version.mode {
                NodeMode::Maintenance => pb::NodeMode::Maintenance,
                NodeMode::Configured => pb::NodeMode::Configured,
                NodeMode::Recovery { .. } => pb::NodeMode::Recovery,
            } as i32,
            // An ordinary process was booted from no slot.
            slot: slots.booted.map_or("none".to_string(), |slot| slot.to_string()),
            pid1: std::process::id() == 1,
            other_slot_version: slots.other_version.unwrap_or_default(),
            last_update: slots.last.map(outcome),
            recovery_reason: version.recovery_reason.unwrap_or_default(),
        }))
    }

    async fn bootstrap(
        &self,
        request: Request<pb::BootstrapRequest>,
    ) -> Result<Response<pb::BootstrapResponse>, Status> {
        if self.authorize(&request, Call::Bootstrap)? != Caller::Anonymous {
            return Err(Status::failed_precondition(
                "the node is configured: the bootstrap token no longer matters",
            ));
        }
        let node_proof = self
            .node
            .configuration()
            .bootstrap_trust()
            .answer(channel_binding(&request), &request.get_ref().client_proof)
            .map_err(Status::permission_denied)?;
        Ok(Response::new(pb::BootstrapResponse { node_proof }))
    }

    async fn apply_configuration(
        &self,
        request: Request<pb::ApplyConfigurationRequest>,
    ) -> Result<Response<pb::ApplyConfigurationResponse>, Status> {
        let caller = self.authorize(&request, Call::ApplyConfiguration)?;
        // Anonymous means maintenance mode (the first config, from whomever the bootstrap
        // trust admits) or recovery mode (only with the token).
        let first_config_only = caller == Caller::Anonymous;
        if first_config_only {
            let configuration = self.node.configuration();
            let (trust, binding) = (configuration.bootstrap_trust(), channel_binding(&request));
            let proof = &request.get_ref().bootstrap_proof;
            match configuration.mode() {
                NodeMode::Recovery { .. } => trust.admits_in_recovery(binding, proof),
                _ => trust.admits(binding, proof),
            }
            .map_err(Status::permission_denied)?;
        }
        let request = request.into_inner();
        let mode = match pb::ApplyMode::try_from(request.mode).unwrap_or(pb::ApplyMode::Unspecified)
        {
            pb::ApplyMode::Unspecified | pb::ApplyMode::Auto => ApplyMode::Auto,
            pb::ApplyMode::NoReboot => ApplyMode::NoReboot,
            pb::ApplyMode::Reboot => ApplyMode::Reboot,
            pb::ApplyMode::Staged => ApplyMode::Staged,
            pb::ApplyMode::Try => ApplyMode::Try(match request.try_timeout_seconds {
                0 => DEFAULT_TRY_TIMEOUT,
                s => Duration::from_secs(s.into()),
            }),
        };
        let apply = ApplyRequest { mode, dry_run: request.dry_run, first_config_only };
        let report = self.node.apply_config(request.data, apply).await?;
        Ok(Response::new(pb::ApplyConfigurationResponse {
            problems: report.problems,
            summary: report.summary,
            changes: report.plan.changes,
            mode: match report.plan.action {
                Action::Live => pb::ApplyMode::NoReboot,
                Action::Reboot => pb::ApplyMode::Reboot,
                Action::Stage => pb::ApplyMode::Staged,
                Action::Try(_) => pb::ApplyMode::Try,
            } as i32,
        }))
    }

    async fn get_configuration(
        &self,
        request: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        let caller = self.authorize(&request, Call::GetConfiguration)?;
        let staged = request.into_inner().staged;
        let config = self.node.config(staged)?;
        let redacted = !caller.sees_secrets();
        let yaml = if redacted { config.redacted().to_yaml() } else { config.to_yaml() };
        Ok(Response::new(pb::GetConfigurationResponse { data: yaml.into_bytes(), redacted }))
    }

    async fn reboot(
        &self,
        request: Request<pb::RebootRequest>,
    ) -> Result<Response<pb::PowerResponse>, Status> {
        self.authorize(&request, Call::Reboot)?;
        self.node.power(PowerAction::Reboot);
        Ok(Response::new(pb::PowerResponse { message: "rebooting".into() }))
    }

    async fn shutdown(
        &self,
        request: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::PowerResponse>, Status> {
        self.authorize(&request, Call::Shutdown)?;
        self.node.power(PowerAction::PowerOff);
        Ok(Response::new(pb::PowerResponse { message: "shutting down".into() }))
    }

    async fn service_list(
        &self,
        request: Request<pb::ServiceListRequest>,
    ) -> Result<Response<pb::ServiceListResponse>, Status> {
        self.authorize(&request, Call::ServiceList)?;
        let services = self
            .node
            .services()
            .into_iter()
            .map(|s| pb::ServiceInfo {
                id: s.id.to_string(),
                state: s.state.as_str().to_string(),
                waiting_for: s.waiting_for.unwrap_or_default(),
                health: s.health.describe(),
                last_exit: s.last_exit.unwrap_or_default(),
                restarts: s.restarts,
                since_unix_millis: s.since_unix_millis,
                events: s
                    .events
                    .into_iter()
                    .map(|e| pb::ServiceEvent {
                        unix_millis: e.unix_millis,
                        state: e.state.as_str().into(),
                        message: e.message,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ServiceListResponse { services }))
    }

    async fn service_start(
        &self,
        request: Request<pb::ServiceRequest>,
    ) -> Result<Response<pb::ServiceActionResponse>, Status> {
        self.authorize(&request, Call::ServiceStart)?;
        let id = request.into_inner().id;
        self.node.start_service(&id)?;
        Ok(Response::new(pb::ServiceActionResponse { message: format!("service {id:?} started") }))
    }

    async fn service_stop(
        &self,
        request: Request<pb::ServiceRequest>,
    ) -> Result<Response<pb::ServiceActionResponse>, Status> {
        self.authorize(&request, Call::ServiceStop)?;
        let id = request.into_inner().id;
        self.node.stop_service(&id).await?;
        Ok(Response::new(pb::ServiceActionResponse { message: format!("service {id:?} stopped") }))
    }

    async fn service_restart(
        &self,
        request: Request<pb::ServiceRequest>,
    ) -> Result<Response<pb::ServiceActionResponse>, Status> {
        self.authorize(&request, Call::ServiceRestart)?;
        let id = request.into_inner().id;
        self.node.restart_service(&id)?;
        Ok(Response::new(pb::ServiceActionResponse {
            message: format!("service {id:?} is restarting"),
        }))
    }

    type LogsStream = ResponseStream<pb::LogEntry>;

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        self.authorize(&request, Call::Logs)?;
        let place = self.ring_stream_place(&request)?;
        let request = request.into_inner();
        let ring = self.node.log(&request.id)?;
        let follow = FollowRequest { tail: tail(request.tail_lines), follow: request.follow };
        Ok(Response::new(ring_stream(&ring, follow, place, |r| pb::LogEntry {
            unix_micros: r.item.unix_micros,
            message: r.item.message,
        })))
    }

    type DmesgStream = ResponseStream<pb::KernelLogEntry>;

    async fn dmesg(
        &self,
        request: Request<pb::DmesgRequest>,
    ) -> Result<Response<Self::DmesgStream>, Status> {
        self.authorize(&request, Call::Dmesg)?;
        let place = self.ring_stream_place(&request)?;
        let request = request.into_inner();
        let ring = self.node.kernel_log().await?.ring();
        let follow = FollowRequest { tail: tail(request.tail), follow: request.follow };
        Ok(Response::new(ring_stream(ring, follow, place, |r| pb::KernelLogEntry {
            facility: r.item.facility,
            priority: r.item.priority,
            sequence: r.item.sequence,
            boot_micros: r.item.boot_micros,
            message: r.item.message,
        })))
    }

    type EventsStream = ResponseStream<pb::Event>;

    async fn events(
        &self,
        request: Request<pb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        self.authorize(&request, Call::Events)?;
        let place = self.ring_stream_place(&request)?;
        let request = request.into_inner();
        let ring = self.node.events().ring();
        let follow = FollowRequest { tail: tail(request.tail), follow: request.follow };
        Ok(Response::new(ring_stream(ring, follow, place, |r| pb::Event {
            id: r.seq,
            unix_millis: r.item.unix_millis,
            kind: r.item.kind.as_str().to_string(),
            message: r.item.message,
        })))
    }

    async fn time(
        &self,
        request: Request<pb::TimeRequest>,
    ) -> Result<Response<pb::TimeResponse>, Status> {
        self.authorize(&request, Call::Time)?;
        let (clock, servers) = self.node.time();
        let mut response =
            pb::TimeResponse { unix_millis: unix_millis(), servers, ..Default::default() };
        let millis =
            |time: SystemTime| time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        response.raised_to_floor_unix_millis = clock.raised_to_floor().map_or(0, millis);
        response.state = match clock {
            Clock::Unsynchronised { last_error, .. } => {
                response.last_error = last_error.unwrap_or_default();
                "unsynchronised"
            }
            Clock::Synchronised { source, offset_seconds, at, last_error, .. } => {
                response.last_error = last_error.unwrap_or_default();
                response.source = source;
                response.offset_seconds = offset_seconds;
                response.last_sync_unix_millis = millis(at);
                "sntp"
            }
            Clock::Host => "host",
            Clock::Disabled => "disabled",
        }
        .into();
        Ok(Response::new(response))
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        self.authorize(&request, Call::Stats)?;
        let stats =
            inspect::stats::read().map_err(|e| Status::internal(format!("reading /proc: {e}")))?;
        let memory = &stats.memory;
        Ok(Response::new(pb::StatsResponse {
            memory: Some(pb::MemoryStats {
                total_bytes: memory.mem_total,
                free_bytes: memory.mem_free,
                available_bytes: memory.mem_available.unwrap_or(memory.mem_free),
                buffers_bytes: memory.buffers,
                cached_bytes: memory.cached,
            }),
            cpus: stats
                .cpus
                .into_iter()
                .map(|c| pb::CpuStats {
                    name: c.name,
                    user_seconds: c.user,
                    nice_seconds: c.nice,
                    system_seconds: c.system,
                    idle_seconds: c.idle,
                    iowait_seconds: c.iowait,
                    irq_seconds: c.irq,
                    softirq_seconds: c.softirq,
                    steal_seconds: c.steal,
                })
                .collect(),
            load1: stats.load[0],
            load5: stats.load[1],
            load15: stats.load[2],
            uptime_seconds: stats.uptime_seconds,
            machined_rss_bytes: stats.machined_rss_bytes,
            processes: stats.processes,
        }))
    }

    async fn disks(
        &self,
        request: Request<pb::DisksRequest>,
    ) -> Result<Response<pb::DisksResponse>, Status> {
        self.authorize(&request, Call::Disks)?;
        let disks =
            inspect::disks::list().map_err(|e| Status::internal(format!("/sys/block: {e}")))?;
        let disks = disks
            .into_iter()
            .map(|d| pb::Disk {
                dev_path: format!("/dev/{}", d.name),
                name: d.name,
                size_bytes: d.size_bytes,
                model: d.model,
                serial: d.serial,
                rotational: d.rotational,
                read_only: d.read_only,
                removable: d.removable,
            })
            .collect();
        Ok(Response::new(pb::DisksResponse { disks }))
    }

    async fn mounts(
        &self,
        request: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        self.authorize(&request, Call::Mounts)?;
        let mounts =
            inspect::mounts::list().map_err(|e| Status::internal(format!("mountinfo: {e}")))?;
        let mounts = mounts
            .into_iter()
            .map(|m| pb::Mount {
                source: m.source,
                target: m.target,
                fs_type: m.fs_type,
                options: m.options,
                size_bytes: m.size_bytes,
                available_bytes: m.available_bytes,
            })
            .collect();
        Ok(Response::new(pb::MountsResponse { mounts }))
    }

    type ListStream = ResponseStream<pb::FileInfo>;

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let caller = self.authorize(&request, Call::List)?;
        let permit = self.file_stream_place(&request)?;
        let request = request.into_inner();
        let root = absolute(&request.root)?;
        let scope = self.file_scope(caller);
        let (tx, rx) = mpsc::channel(64);
        // The walk streams as it goes: the client's pace bounds what is held in memory.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut first = true;
            let listed =
                inspect::files::list(&root, request.recursion_depth, LIST_LIMIT, &scope, |e| {
                    let item = if std::mem::take(&mut first) && !e.error.is_empty() {
                        // Sent in the stream's trailers, past the reach of apid's message cut.
                        let root = cairn_api::text::shortened(&request.root, 240);
                        Err(Status::not_found(format!("{root}: {}", e.error)))
                    } else {
                        Ok(pb::FileInfo {
                            path: e.path,
                            size: e.size,
                            mode: e.mode,
                            is_dir: e.is_dir,
                            link_target: e.link_target,
                            modified_unix: e.modified_unix,
                            error: e.error,
                        })
                    };
                    let go_on = item.is_ok();
                    tx.blocking_send(item).is_ok() && go_on
                });
            if let Err(e) = listed {
                let _ = tx.blocking_send(Err(read_error(e)));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ReadStream = ResponseStream<pb::FileChunk>;

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let caller = self.authorize(&request, Call::Read)?;
        let permit = self.file_stream_place(&request)?;
        let path = absolute(&request.get_ref().path)?;
        let scope = self.file_scope(caller);
        let (file, _) =
            tokio::task::spawn_blocking(move || inspect::files::open_regular(&path, &scope))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(read_error)?;
        let mut file = tokio::fs::File::from_std(file);
        Ok(Response::new(stream_buffering(READ_CHUNKS_BUFFERED, |tx| async move {
            let _permit = permit;
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                let chunk = match file.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => Ok(pb::FileChunk { data: buf[..n].to_vec() }),
                    Err(e) => Err(Status::internal(format!("reading: {e}"))),
                };
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        })))
    }

    async fn pods(
        &self,
        request: Request<pb::PodsRequest>,
    ) -> Result<Response<pb::PodsResponse>, Status> {
        let caller = self.authorize(&request, Call::Pods)?;
        let pods = self
            .node
            .pods()?
            .into_iter()
            .map(|mut record| {
                if !caller.sees_secrets() {
                    cairn_api::config::redact_pod(&mut record.pod);
                }
                pb::PodInfo {
                    namespace: record.pod.metadata.namespace.clone().unwrap_or_default(),
                    name: record.pod.metadata.name.clone().unwrap_or_default(),
                    source: record.source,
                    pod_json: serde_json::to_string(&record.pod).expect("a Pod always serializes"),
                }
            })
            .collect();
        Ok(Response::new(pb::PodsResponse { pods }))
    }

    async fn pod_events(
        &self,
        request: Request<pb::PodEventsRequest>,
    ) -> Result<Response<pb::PodEventsResponse>, Status> {
        self.authorize(&request, Call::PodEvents)?;
        let events = self
            .node
            .pod_events(&request.into_inner().pod)?
            .into_iter()
            .map(|event| pb::PodEvent {
                namespace: event.involved.namespace,
                pod: event.involved.pod,
                pod_uid: event.involved.uid,
                field_path: event.involved.field_path,
                r#type: event.kind.as_str().into(),
                reason: event.reason,
                message: event.message,
                count: event.count,
                first_unix_millis: event.first_unix_millis,
                last_unix_millis: event.last_unix_millis,
            })
            .collect();
        Ok(Response::new(pb::PodEventsResponse { events }))
    }

    async fn pod_restart(
        &self,
        request: Request<pb::PodRequest>,
    ) -> Result<Response<pb::PodActionResponse>, Status> {
        self.authorize(&request, Call::PodRestart)?;
        self.node.restart_pod(&request.into_inner().name)?;
        Ok(Response::new(pb::PodActionResponse {}))
    }

    type ContainerLogsStream = ResponseStream<pb::LogEntry>;

    async fn container_logs(
        &self,
        request: Request<pb::ContainerLogsRequest>,
    ) -> Result<Response<Self::ContainerLogsStream>, Status> {
        self.authorize(&request, Call::ContainerLogs)?;
        let place = self.file_stream_place(&request)?;
        let request = request.into_inner();
        let path = self.node.container_log(&request.pod, &request.container, request.previous)?;
        let (lines_tx, mut lines) = mpsc::channel(64);
        let reader = tokio::spawn(crate::workloads::kubelet::logs::send(
            path.clone(),
            tail(request.tail_lines),
            request.follow,
            lines_tx,
        ));
        Ok(Response::new(stream(move |tx| async move {
            let _place = place;
            while let Some(line) = lines.recv().await {
                let entry = pb::LogEntry { unix_micros: line.unix_micros, message: line.message };
                if tx.send(Ok(entry)).await.is_err() {
                    return;
                }
            }
            if let Ok(Err(e)) = reader.await {
                let _ = tx.send(Err(Status::not_found(format!("{}: {e}", path.display())))).await;
            }
        })))
    }

    async fn manifest_apply(
        &self,
        request: Request<pb::ManifestApplyRequest>,
    ) -> Result<Response<pb::ManifestResponse>, Status> {
        self.authorize(&request, Call::ManifestApply)?;
        let pod = self.node.apply_manifest(&request.into_inner().manifest)?;
        Ok(Response::new(pb::ManifestResponse { pod }))
    }

    async fn manifest_delete(
        &self,
        request: Request<pb::PodRequest>,
    ) -> Result<Response<pb::ManifestResponse>, Status> {
        self.authorize(&request, Call::ManifestDelete)?;
        let pod = self.node.delete_manifest(&request.into_inner().name)?;
        Ok(Response::new(pb::ManifestResponse { pod }))
    }

    async fn objects_apply(
        &self,
        request: Request<pb::ObjectsRequest>,
    ) -> Result<Response<pb::ObjectsResponse>, Status> {
        self.authorize(&request, Call::ObjectsApply)?;
        let pb::ObjectsRequest { documents, source } = request.into_inner();
        let (changes, skipped) = self.node.apply_objects(&documents, &source_name(&source))?;
        Ok(Response::new(objects_response(changes, skipped)))
    }

    async fn objects_delete(
        &self,
        request: Request<pb::ObjectsRequest>,
    ) -> Result<Response<pb::ObjectsResponse>, Status> {
        self.authorize(&request, Call::ObjectsDelete)?;
        let pb::ObjectsRequest { documents, source } = request.into_inner();
        let (changes, skipped) = self.node.delete_objects(&documents, &source_name(&source))?;
        Ok(Response::new(objects_response(changes, skipped)))
    }

    async fn objects_get(
        &self,
        request: Request<pb::ObjectsGetRequest>,
    ) -> Result<Response<pb::ObjectsGetResponse>, Status> {
        let caller = self.authorize(&request, Call::ObjectsGet)?;
        let pb::ObjectsGetRequest { kind, name } = request.into_inner();
        let objects = self
            .node
            .objects(&kind, &name)?
            .into_iter()
            .map(|kept| {
                let object =
                    if caller.sees_secrets() { kept.object } else { kept.object.redacted() };
                pb::StoredObject {
                    source: kept.source.into(),
                    object_json: serde_json::to_string(&object).expect("objects always serialize"),
                }
            })
            .collect();
        Ok(Response::new(pb::ObjectsGetResponse { objects }))
    }

    type UpgradeStream = ResponseStream<pb::UpgradeProgress>;

    async fn upgrade(
        &self,
        request: Request<tonic::Streaming<pb::UpgradeRequest>>,
    ) -> Result<Response<Self::UpgradeStream>, Status> {
        self.authorize(&request, Call::Upgrade)?;
        let mut incoming = request.into_inner();
        let first = tokio::time::timeout(UPGRADE_STALL_TIMEOUT, incoming.message())
            .await
            .map_err(|_| upgrade::stalled())?;
        let options = match first? {
            Some(pb::UpgradeRequest { part: Some(pb::upgrade_request::Part::Options(o)) }) => o,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of an upgrade carries its options",
                ))
            }
        };
        // Refused before the client sends the whole bundle.
        self.node.begin_upgrade()?;
        let node = self.node.clone();
        Ok(Response::new(stream(move |tx| {
            upgrade::run(node, incoming, UPGRADE_STALL_TIMEOUT, options, tx)
        })))
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        self.authorize(&request, Call::Rollback)?;
        let chosen = self.node.rollback(request.into_inner().stage).await?;
        Ok(Response::new(pb::RollbackResponse {
            slot: chosen.slot.to_string(),
            version: chosen.version,
        }))
    }
}

/// The last update, as the API reports it.
fn outcome(record: UpdateRecord) -> pb::UpdateOutcome {
    pb::UpdateOutcome {
        state: match record.state {
            UpdateState::Pending => pb::UpdateState::Pending,
            UpdateState::Succeeded => pb::UpdateState::Succeeded,
            UpdateState::RolledBack => pb::UpdateState::RolledBack,
        } as i32,
        slot: record.slot.to_string(),
        from_version: record.from_version,
        to_version: record.to_version,
        reason: record.reason,
        started_at: record.started_at,
        finished_at: record.finished_at,
    }
}

fn absolute(path: &str) -> Result<PathBuf, Status> {
    let path = Path::new(path);
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Err(Status::invalid_argument(format!("{path:?} is not an absolute path")))
    }
}

/// The name a client gave its file, for messages: a short single line (`documents` without).
fn source_name(source: &str) -> String {
    let line: String = source.chars().filter(|ch| !ch.is_control()).take(80).collect();
    if line.is_empty() {
        "documents".into()
    } else {
        line
    }
}

fn objects_response(
    changes: Vec<crate::workloads::applied::Change>,
    skipped: Vec<String>,
) -> pb::ObjectsResponse {
    let changes = changes
        .into_iter()
        .map(|change| pb::ObjectChange {
            kind: change.kind,
            namespace: change.namespace,
            name: change.name,
            action: change.action.into(),
        })
        .collect();
    pb::ObjectsResponse { changes, skipped }
}
