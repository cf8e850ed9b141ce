//! The CRI v1 client: the kubelet's only way to reach containerd, as the upstream kubelet
//! does, over containerd's Unix socket. The messages and clients are generated at build time
//! from Kubernetes' `api.proto` (see `build.rs`).

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// The generated CRI v1 messages and clients.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

use v1::image_service_client::ImageServiceClient;
use v1::runtime_service_client::RuntimeServiceClient;

/// How long a CRI call may take unless it says otherwise (pulls and stops do).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

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
        let socket = socket.into();
        // The URI is a placeholder that HTTP/2 needs; the connector dials the socket.
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(Duration::from_secs(5))
            .timeout(CALL_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move { tokio::net::UnixStream::connect(socket).await.map(TokioIo::new) }
            }))
            .await?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }
}

/// A request with a deadline other than [`CALL_TIMEOUT`].
pub fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}
