//! The CRI v1 client: the kubelet's only way to reach containerd, as the upstream kubelet
//! does, over containerd's Unix socket. The messages and clients are generated at build time
//! from Kubernetes' `api.proto` (see `build.rs`).
//!
//! The kubelet calls the runtime through the [`Cri`] trait, the calls it makes and nothing
//! more, so its logic (restarts, init containers, hooks, probes, status) runs in unit tests
//! against [`fake::FakeCri`].

#[cfg(test)]
pub mod fake;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::Channel;
use tonic::Status;

/// The generated CRI v1 messages and clients.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

use v1::image_service_client::ImageServiceClient;
use v1::runtime_service_client::RuntimeServiceClient;

/// How long a sandbox may take to come up: its network is set up within the call, which
/// takes seconds on a slow board.
const SANDBOX_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a pull may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// What a stop may take beyond the container's grace: the runtime's own work after SIGKILL.
const STOP_SLACK: Duration = Duration::from_secs(10);

/// What an exec may take beyond its own timeout, for the runtime to report it.
const EXEC_SLACK: Duration = Duration::from_secs(5);

/// The CRI calls the kubelet makes, each with the deadline it needs.
#[async_trait]
pub trait Cri: Send + Sync {
    /// The runtime's name and versions.
    async fn version(&self) -> Result<v1::VersionResponse, Status>;
    /// Creates and starts a sandbox; returns its id.
    async fn run_pod_sandbox(&self, config: v1::PodSandboxConfig) -> Result<String, Status>;
    /// Stops a sandbox and its containers.
    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), Status>;
    /// Removes a sandbox and its containers.
    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), Status>;
    /// A sandbox's status (its network among it), if the runtime reports one.
    async fn pod_sandbox_status(&self, id: &str) -> Result<Option<v1::PodSandboxStatus>, Status>;
    /// The sandboxes `filter` selects (all without one).
    async fn list_pod_sandbox(
        &self,
        filter: Option<v1::PodSandboxFilter>,
    ) -> Result<Vec<v1::PodSandbox>, Status>;
    /// Creates a container in sandbox `sandbox_id`; returns its id.
    async fn create_container(
        &self,
        sandbox_id: &str,
        config: v1::ContainerConfig,
        sandbox_config: v1::PodSandboxConfig,
    ) -> Result<String, Status>;
    /// Starts a created container.
    async fn start_container(&self, id: &str) -> Result<(), Status>;
    /// Stops a container: SIGTERM, then SIGKILL once `grace` has passed.
    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), Status>;
    /// Removes a container.
    async fn remove_container(&self, id: &str) -> Result<(), Status>;
    /// The containers `filter` selects.
    async fn list_containers(
        &self,
        filter: v1::ContainerFilter,
    ) -> Result<Vec<v1::Container>, Status>;
    /// A container's status; `NotFound` when the runtime has no such container.
    async fn container_status(&self, id: &str) -> Result<v1::ContainerStatus, Status>;
    /// The bytes a container's writable layer takes on the node's disk.
    async fn writable_layer_bytes(&self, id: &str) -> Result<u64, Status>;
    /// Runs `cmd` in a container for at most `timeout`; its exit code and output.
    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<v1::ExecSyncResponse, Status>;
    /// Has the runtime reopen a container's log file (after it was rotated).
    async fn reopen_container_log(&self, id: &str) -> Result<(), Status>;
    /// The image `image` names, if the node has it.
    async fn image_status(&self, image: &str) -> Result<Option<v1::Image>, Status>;
    /// Pulls `image` (with `auth`, anonymously without); returns the image's reference.
    async fn pull_image(&self, image: &str, auth: Option<v1::AuthConfig>)
        -> Result<String, Status>;
}

/// The CRI services of a runtime, over one connection to its socket.
#[derive(Clone)]
pub struct CriClient {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl CriClient {
    /// Connects to the runtime's socket; the connection is re-established on demand after
    /// the runtime restarts.
    pub async fn connect(socket: impl Into<PathBuf>) -> anyhow::Result<CriClient> {
        let channel = super::channel::connect(socket).await?;
        Ok(CriClient {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }
}

#[async_trait]
impl Cri for CriClient {
    async fn version(&self) -> Result<v1::VersionResponse, Status> {
        Ok(self.runtime.clone().version(v1::VersionRequest::default()).await?.into_inner())
    }

    async fn run_pod_sandbox(&self, config: v1::PodSandboxConfig) -> Result<String, Status> {
        let request = v1::RunPodSandboxRequest { config: Some(config), runtime_handler: "".into() };
        let request = with_timeout(request, SANDBOX_TIMEOUT);
        Ok(self.runtime.clone().run_pod_sandbox(request).await?.into_inner().pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        let request = v1::StopPodSandboxRequest { pod_sandbox_id: id.into() };
        self.runtime.clone().stop_pod_sandbox(request).await.map(drop)
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        let request = v1::RemovePodSandboxRequest { pod_sandbox_id: id.into() };
        self.runtime.clone().remove_pod_sandbox(request).await.map(drop)
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<Option<v1::PodSandboxStatus>, Status> {
        let request = v1::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false };
        Ok(self.runtime.clone().pod_sandbox_status(request).await?.into_inner().status)
    }

    async fn list_pod_sandbox(
        &self,
        filter: Option<v1::PodSandboxFilter>,
    ) -> Result<Vec<v1::PodSandbox>, Status> {
        let request = v1::ListPodSandboxRequest { filter };
        Ok(self.runtime.clone().list_pod_sandbox(request).await?.into_inner().items)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: v1::ContainerConfig,
        sandbox_config: v1::PodSandboxConfig,
    ) -> Result<String, Status> {
        let request = v1::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        Ok(self.runtime.clone().create_container(request).await?.into_inner().container_id)
    }

    async fn start_container(&self, id: &str) -> Result<(), Status> {
        let request = v1::StartContainerRequest { container_id: id.into() };
        self.runtime.clone().start_container(request).await.map(drop)
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), Status> {
        let request =
            v1::StopContainerRequest { container_id: id.into(), timeout: grace.as_secs() as i64 };
        let request = with_timeout(request, grace + STOP_SLACK);
        self.runtime.clone().stop_container(request).await.map(drop)
    }

    async fn remove_container(&self, id: &str) -> Result<(), Status> {
        let request = v1::RemoveContainerRequest { container_id: id.into() };
        self.runtime.clone().remove_container(request).await.map(drop)
    }

    async fn list_containers(
        &self,
        filter: v1::ContainerFilter,
    ) -> Result<Vec<v1::Container>, Status> {
        let request = v1::ListContainersRequest { filter: Some(filter) };
        Ok(self.runtime.clone().list_containers(request).await?.into_inner().containers)
    }

    async fn container_status(&self, id: &str) -> Result<v1::ContainerStatus, Status> {
        let request = v1::ContainerStatusRequest { container_id: id.into(), verbose: false };
        let reply = self.runtime.clone().container_status(request).await?.into_inner();
        reply.status.ok_or_else(|| Status::not_found(id))
    }

    async fn writable_layer_bytes(&self, id: &str) -> Result<u64, Status> {
        let request = v1::ContainerStatsRequest { container_id: id.into() };
        let stats = self.runtime.clone().container_stats(request).await?.into_inner().stats;
        let layer = stats.and_then(|s| s.writable_layer).and_then(|l| l.used_bytes);
        Ok(layer.map_or(0, |used| used.value))
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<v1::ExecSyncResponse, Status> {
        let request =
            v1::ExecSyncRequest { container_id: id.into(), cmd, timeout: timeout.as_secs() as i64 };
        let request = with_timeout(request, timeout + EXEC_SLACK);
        Ok(self.runtime.clone().exec_sync(request).await?.into_inner())
    }

    async fn reopen_container_log(&self, id: &str) -> Result<(), Status> {
        let request = v1::ReopenContainerLogRequest { container_id: id.into() };
        self.runtime.clone().reopen_container_log(request).await.map(drop)
    }

    async fn image_status(&self, image: &str) -> Result<Option<v1::Image>, Status> {
        let request = v1::ImageStatusRequest {
            image: Some(v1::ImageSpec { image: image.into(), ..Default::default() }),
            verbose: false,
        };
        Ok(self.images.clone().image_status(request).await?.into_inner().image)
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<v1::AuthConfig>,
    ) -> Result<String, Status> {
        let request = v1::PullImageRequest {
            image: Some(v1::ImageSpec { image: image.into(), ..Default::default() }),
            auth,
            ..Default::default()
        };
        let request = with_timeout(request, PULL_TIMEOUT);
        Ok(self.images.clone().pull_image(request).await?.into_inner().image_ref)
    }
}

/// A request with a deadline other than [`CALL_TIMEOUT`](super::channel::CALL_TIMEOUT).
fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}
