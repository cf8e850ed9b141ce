//! The gRPC connection to containerd's Unix socket, shared by the CRI client and the image
//! import (containerd's own services).

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long a call may take unless it says otherwise (pulls and stops do).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Connects to the gRPC server on `socket`; the connection is re-established on demand after
/// the server restarts.
pub async fn connect(socket: impl Into<PathBuf>) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.into();
    // The URI is a placeholder that HTTP/2 needs; the connector dials the socket.
    Endpoint::from_static("http://containerd.invalid")
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { tokio::net::UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
}
