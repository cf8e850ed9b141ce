//! Workloads: the embedded kubelet and its CRI client to containerd.

pub mod cri;
pub mod kubelet;
