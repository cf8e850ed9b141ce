//! The CRI v1 client: the kubelet's only way to reach containerd, as the upstream kubelet
//! does, over containerd's Unix socket. The messages and clients are generated at build time
//! from Kubernetes' `api.proto` (see `build.rs`).

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::Channel;

/// The generated CRI v1 messages and clients.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

use v1::image_service_client::ImageServiceClient;
use v1::runtime_service_client::RuntimeServiceClient;

/// Both CRI services over one connection.
#[derive(Clone)]
pub struct Cri {
    /// Sandboxes and containers.
    pub runtime: RuntimeServiceClient<Channel>,
    /// Images.
    pub images: ImageServiceClient<Channel>,
}

impl Cri {
    /// Connects to the runtime's socket; the connection is re-established on demand after
    /// the runtime restarts.
    pub async fn connect(socket: impl Into<PathBuf>) -> anyhow::Result<Cri> {
        let channel = super::channel::connect(socket).await?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }
}

/// A request with a deadline other than [`CALL_TIMEOUT`](super::channel::CALL_TIMEOUT).
pub fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}
