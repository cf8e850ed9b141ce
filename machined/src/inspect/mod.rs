//! Read-only views of the node for operators without a shell: resource use, disks, mounts,
//! the kernel log and files.

pub mod disks;
pub mod files;
pub mod kmsg;
pub mod mounts;
pub mod stats;
