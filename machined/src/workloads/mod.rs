//! Workloads: the embedded kubelet, its CRI client to containerd and their connection.

pub mod applied;
pub mod channel;
pub mod cri;
pub mod kubelet;
