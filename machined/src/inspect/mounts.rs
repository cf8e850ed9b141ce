//! Mounted filesystems with their usage, from `/proc/self/mountinfo` and statvfs.

use nix::sys::statvfs::statvfs;
use procfs::process::Process;

/// One mount.
#[derive(Debug, Clone)]
pub struct Mount {
    /// What is mounted (device, or a name like `proc`).
    pub source: String,
    /// Where.
    pub target: String,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount options, e.g. `ro,relatime`.
    pub options: String,
    /// Filesystem size in bytes (0 where statvfs fails).
    pub size_bytes: u64,
    /// Bytes available to unprivileged users.
    pub available_bytes: u64,
}

/// machined's view of the mounts.
pub fn list() -> procfs::ProcResult<Vec<Mount>> {
    let infos = Process::myself()?.mountinfo()?;
    Ok(infos
        .into_iter()
        .map(|info| {
            let mut options: Vec<String> = info
                .mount_options
                .iter()
                .map(|(k, v)| v.as_ref().map_or_else(|| k.clone(), |v| format!("{k}={v}")))
                .collect();
            // rw/ro first, as mount(8) shows it; the rest sorted (the kernel's order is lost).
            options.sort_by_key(|o| (o != "rw" && o != "ro", o.clone()));
            // The statvfs fields are 32-bit on some 32-bit targets, hence the conversions.
            #[allow(clippy::useless_conversion)]
            let (size_bytes, available_bytes) = statvfs(&info.mount_point)
                .map(|s| {
                    let block = u64::from(s.fragment_size());
                    (u64::from(s.blocks()) * block, u64::from(s.blocks_available()) * block)
                })
                .unwrap_or((0, 0));
            Mount {
                source: info.mount_source.unwrap_or_default(),
                target: info.mount_point.to_string_lossy().into_owned(),
                fs_type: info.fs_type,
                options: options.join(","),
                size_bytes,
                available_bytes,
            }
        })
        .collect())
}
