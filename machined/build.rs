//! Generates machined's gRPC clients with protox (pure Rust), so no system `protoc` is needed.
//! Only clients: machined calls containerd, which serves.
//!
//! - CRI v1, from Kubernetes' upstream `api.proto` (vendored unchanged in `proto/runtime/v1/`):
//!   the kubelet's way to run pods.
//! - containerd's own content, images, leases, snapshots and diff services (vendored unchanged,
//!   Apache-2.0, from containerd 1.7's `api/`, in `proto/github.com/containerd/containerd/`):
//!   the import of the images baked into the OS image.
//! - gRPC's health checking protocol (`proto/grpc/health/v1/`): the kubelet's grpc probes;
//!   its server too, which the probes' tests answer with.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let containerd = "github.com/containerd/containerd/api/services";
    let descriptors = protox::compile(
        [
            "runtime/v1/api.proto".to_string(),
            format!("{containerd}/content/v1/content.proto"),
            format!("{containerd}/images/v1/images.proto"),
            format!("{containerd}/leases/v1/leases.proto"),
            format!("{containerd}/snapshots/v1/snapshots.proto"),
            format!("{containerd}/diff/v1/diff.proto"),
        ],
        ["proto"],
    )?;
    tonic_prost_build::configure().build_server(false).compile_fds(descriptors)?;
    let health = protox::compile(["grpc/health/v1/health.proto"], ["proto"])?;
    tonic_prost_build::configure().build_server(true).compile_fds(health)?;
    Ok(())
}
