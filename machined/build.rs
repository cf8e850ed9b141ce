//! Generates the CRI v1 client from Kubernetes' upstream `api.proto` (vendored unchanged in
//! `proto/runtime/v1/`), with protox (pure Rust), so no system `protoc` is needed. Only the
//! client: machined is a CRI caller, containerd the runtime.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["runtime/v1/api.proto"], ["proto"])?;
    tonic_prost_build::configure().build_server(false).compile_fds(descriptors)?;
    Ok(())
}
