//! Cairn's contracts, shared by every binary.
//!
//! - [`machine`]: the gRPC API served by machined and called by `ctl`
//!   (`proto/cairn/machine/v1alpha1/machine.proto`, compiled at build time with protox).
//! - [`arch`]: the architectures Cairn runs on.
//! - `board` (feature `board`): a board as a description (`overlays/<board>/board.toml`),
//!   read by image-builder, the qemu crate and the tests.
//! - [`config`]: the machine config: versioned, strict YAML, validated with path-qualified errors.
//! - `disk` (feature `disk`): the GPT and the Boot Loader Spec entries that image-builder
//!   writes and machined grows, tries and blesses.
//! - [`bundle`]: signed update bundles, written by image-builder and read by machined's
//!   updater (and by `ctl upgrade`, to show what it sends).
//! - [`image`]: what images and machined agree on (labels, paths).
//! - [`oci`]: OCI image-layout archives (the images baked into an OS image): their types and
//!   a checking reader, for image-builder and machined's import.
//! - [`role`]: the roles a client certificate's Organization grants.
//! - [`timestamp`]: how times are written in logs.
//! - [`tls`]: the TLS client of a server there is no CA for (a node in maintenance mode, a
//!   pod's HTTPS probe).

pub mod arch;
#[cfg(feature = "board")]
pub mod board;
pub mod bootstrap;
pub mod bundle;
pub mod config;
#[cfg(feature = "disk")]
pub mod disk;
pub mod image;
pub mod oci;
pub mod role;
pub mod text;
pub mod timestamp;
pub mod tls;

/// The generated gRPC types and stubs of `cairn.machine.v1alpha1`.
#[allow(missing_docs, clippy::all)]
pub mod machine {
    tonic::include_proto!("cairn.machine.v1alpha1");
}

/// The TCP port machined serves its API on.
pub const API_PORT: u16 = 50000;
