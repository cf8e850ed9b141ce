//! machined: Cairn's PID 1.
//!
//! It runs as the init process of a Cairn node, or — for development and tests — as an
//! ordinary process that keeps its state under a directory of its own
//! (`machined --root DIR --listen ADDR`). Everything that is not about being PID 1 works the
//! same in both: the configuration store, the API, roles, the service runtime
//! ([`service`]), the facts services depend on ([`facts`]) and the logs.
//!
//! The modules below go from the edge inwards: the API calls the node's use-cases, which
//! drive the layers under them.

// The edge.
// The gRPC API: TLS listener, admission, roles, conversion.
pub mod api;
// Command-line options.
pub mod cli;

// Use-cases.
// Read-only views for operators without a shell: resources, disks, mounts, files.
pub mod inspect;
// What an operator can ask of a node: apply, upgrade, roll back, power, manifests, follows.
pub mod node;

// Layers.
// Stage 1, boot control, the root, STATE and EPHEMERAL, PID 1's mounts.
pub mod boot;
// The machine config: stored, compared, put into effect on the host.
pub mod config;
// The node's certificates, the API's TLS, bootstrap trust.
pub mod identity;
// Network: links, DHCP, addresses, routes, resolvers.
pub mod network;
// The clock: SNTP, the time floor.
pub mod time;
// A/B updates: receive a bundle, install it in the other slot, bless or roll back.
pub mod update;
// The embedded kubelet and its CRI client.
pub mod workloads;

// The runtime underneath.
// Typed facts on watch channels.
pub mod facts;
// Where things are kept, and durable writes.
pub mod files;
// Service logs, machined's kernel-log lines, events.
pub mod logs;
// The service runtime: order, restarts, status.
pub mod service;
// The services machined runs itself (containerd, network, time, settings...).
pub mod services;
// machined as a process: start-up, reaping, power, memory.
pub mod system;
