//! Block devices, from `/sys/block`, for choosing an install disk.

use std::fs;
use std::io;
use std::path::Path;

/// One block device.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    /// Kernel name, e.g. `vda`.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Vendor model string, if the device has one.
    pub model: String,
    /// Serial number, if the device has one.
    pub serial: String,
    /// Spinning disk.
    pub rotational: bool,
    /// Read-only device.
    pub read_only: bool,
    /// Removable medium (SD card readers, USB sticks).
    pub removable: bool,
}

/// Every block device with a medium, by name; RAM disks and unused loop devices are left out.
pub fn list() -> io::Result<Vec<Disk>> {
    list_under(Path::new("/sys/block"))
}

fn list_under(sys_block: &Path) -> io::Result<Vec<Disk>> {
    let mut disks = Vec::new();
    for entry in fs::read_dir(sys_block)? {
        let dir = entry?.path();
        let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let attr = |file: &str| {
            fs::read_to_string(dir.join(file)).map(|s| s.trim().to_string()).unwrap_or_default()
        };
        // The kernel counts sizes in 512-byte sectors, whatever the device's block size.
        let size_bytes = attr("size").parse::<u64>().unwrap_or(0) * 512;
        if size_bytes == 0 || name.starts_with("ram") {
            continue;
        }
        let serial = match attr("device/serial") {
            s if s.is_empty() => attr("serial"),
            s => s,
        };
        disks.push(Disk {
            size_bytes,
            model: attr("device/model"),
            serial,
            rotational: attr("queue/rotational") == "1",
            read_only: attr("ro") == "1",
            removable: attr("removable") == "1",
            name,
        });
    }
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(disks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sysfs_attributes() {
        let sys = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = sys.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write("vda/size", "2048\n");
        write("vda/device/model", "QEMU HARDDISK  \n");
        write("vda/queue/rotational", "1\n");
        write("vda/ro", "0\n");
        write("vda/removable", "0\n");
        write("ram0/size", "8192\n");
        write("loop0/size", "0\n");
        let disks = list_under(sys.path()).unwrap();
        assert_eq!(disks.len(), 1);
        assert_eq!(disks[0].name, "vda");
        assert_eq!(disks[0].size_bytes, 1024 * 1024);
        assert_eq!(disks[0].model, "QEMU HARDDISK");
        assert!(disks[0].rotational && !disks[0].read_only);
    }
}
