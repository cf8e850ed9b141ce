//! machined: Cairn's PID 1.
//!
//! It runs as the init process of a Cairn node, or — for development and tests — as an
//! ordinary process that keeps its state under a directory of its own
//! (`machined --root DIR --listen ADDR`). Everything that is not about being PID 1 works the
//! same in both: the configuration store, the API, roles, the service runtime
//! ([`service`]), the facts services depend on ([`facts`]) and the logs.

pub mod api;
pub mod apply;
pub mod beneath;
pub mod boot;
pub mod bootstrap_trust;
pub mod cli;
pub mod config_store;
pub mod cri;
pub mod durable;
pub mod events;
pub mod facts;
pub mod host_settings;
pub mod inspect;
pub mod kmsg_log;
pub mod kubelet;
pub mod layout;
pub mod logs;
pub mod memory;
pub mod network;
pub mod node;
pub mod pid1;
pub mod pki;
pub mod power;
pub mod reaper;
pub mod ring;
pub mod runtime;
pub mod service;
pub mod services;
pub mod storage;
pub mod time;
pub mod tls;
pub mod update;
