//! What `--device` names and whether it may be overwritten: a whole disk nobody uses (not a
//! partition, nothing mounted or swapped on it, not held by device-mapper or RAID, not the
//! disk the host runs from), or a regular file. Read from the kernel's sysfs, mountinfo and
//! swaps, whose roots a test can point at a tree of its own.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::FlashError;
use crate::file_name;

/// Where the kernel describes block devices and mounts.
#[derive(Debug, Clone)]
pub struct HostView {
    /// sysfs: `dev/block/MAJ:MIN` links to each block device's directory.
    pub sys: PathBuf,
    /// This process's mountinfo.
    pub mountinfo: PathBuf,
    /// The active swap areas.
    pub swaps: PathBuf,
}

impl HostView {
    /// The running kernel's.
    pub fn real() -> HostView {
        HostView {
            sys: "/sys".into(),
            mountinfo: "/proc/self/mountinfo".into(),
            swaps: "/proc/swaps".into(),
        }
    }
}

/// Where the image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A whole disk.
    Disk {
        /// Its kernel name: `sdb`, `mmcblk0`, `loop3`.
        name: String,
        /// Bytes.
        size: u64,
        /// What it calls itself (vendor and model), where the kernel knows.
        model: String,
    },
    /// A regular file, created or replaced.
    File,
}

impl Target {
    /// Looks at `path` and refuses what must not be overwritten. A path that does not exist
    /// becomes a file, except under /dev, where it is a device that is not there.
    pub fn inspect(path: &Path, host: &HostView) -> Result<Target, FlashError> {
        let device = path.to_path_buf();
        let metadata = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path.starts_with("/dev") => {
                return Ok(Target::File)
            }
            Err(source) => return Err(FlashError::Device { device, source }),
            Ok(metadata) => metadata,
        };
        let kind = metadata.file_type();
        if kind.is_file() {
            return Ok(Target::File);
        }
        if !kind.is_block_device() {
            return Err(FlashError::NotADisk { device });
        }
        let rdev = metadata.rdev();
        let number = format!("{}:{}", nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        check_disk(&device, &number, host)
    }
}

/// The checks on the block device `number` (`MAJ:MIN`), which `device` names.
fn check_disk(device: &Path, number: &str, host: &HostView) -> Result<Target, FlashError> {
    let dir = block_dir(host, number)
        .ok_or_else(|| FlashError::NotADisk { device: device.to_path_buf() })?;
    if let Some(disk) = disk_of_partition(&dir) {
        return Err(FlashError::Partition { device: device.to_path_buf(), disk });
    }
    let name = file_name(&dir);
    let parts = partitions(&dir);
    let mountinfo = read(&host.mountinfo)?;
    let mounts = parse_mountinfo(&mountinfo);
    if let Some(root) = mounts.iter().find(|m| m.mount_point == "/") {
        if disks_under(host, &root.number).contains(&name) {
            return Err(FlashError::HostDisk {
                device: device.to_path_buf(),
                root: root.source.clone(),
            });
        }
    }
    let mine: BTreeSet<String> =
        std::iter::once(name.clone()).chain(parts.iter().map(|p| file_name(p))).collect();
    let numbers: Vec<String> =
        std::iter::once(&dir).chain(&parts).filter_map(|d| read_trimmed(&d.join("dev"))).collect();
    if let Some(mount) = mounts.iter().find(|m| numbers.contains(&m.number)) {
        return Err(FlashError::InUse {
            device: device.to_path_buf(),
            by: format!("{} is mounted on {}", mount.source, mount.mount_point),
        });
    }
    for swap in read(&host.swaps)?.lines().skip(1) {
        let area = swap.split_whitespace().next().unwrap_or_default();
        if mine.contains(area.rsplit('/').next().unwrap_or_default()) {
            return Err(FlashError::InUse {
                device: device.to_path_buf(),
                by: format!("{area} is a swap area"),
            });
        }
    }
    for held in std::iter::once(&dir).chain(&parts) {
        if let Some(holder) = entries(&held.join("holders")).first() {
            return Err(FlashError::InUse {
                device: device.to_path_buf(),
                by: format!("{} is held by {}", file_name(held), file_name(holder)),
            });
        }
    }
    let sectors: u64 = read_trimmed(&dir.join("size")).and_then(|s| s.parse().ok()).unwrap_or(0);
    let model = ["vendor", "model"]
        .iter()
        .filter_map(|f| read_trimmed(&dir.join("device").join(f)))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    // sysfs counts 512-byte sectors whatever the device's own sector size.
    Ok(Target::Disk { name, size: sectors * 512, model })
}

/// A mount, as mountinfo lists it.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    /// The mounted device's `MAJ:MIN`.
    number: String,
    mount_point: String,
    source: String,
}

/// mountinfo's lines: `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [TAGS...] - TYPE SOURCE ...`.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(Mount {
                number: fields.get(2)?.to_string(),
                mount_point: unescape(fields.get(4)?),
                source: unescape(fields.get(dash + 2)?),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\NNN` octal.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The sysfs directory of block device `number`, if it is one.
fn block_dir(host: &HostView, number: &str) -> Option<PathBuf> {
    host.sys.join("dev/block").join(number).canonicalize().ok()
}

/// The disk `dir` is a partition of, or `None` for a whole disk.
fn disk_of_partition(dir: &Path) -> Option<String> {
    match dir.join("partition").exists() {
        true => dir.parent().map(file_name),
        false => None,
    }
}

/// The whole disks under block device `number`: itself or its disk, and, through device-mapper
/// and RAID, the disks of what it is made of.
fn disks_under(host: &HostView, number: &str) -> BTreeSet<String> {
    let mut disks = BTreeSet::new();
    let mut pending: Vec<PathBuf> = block_dir(host, number).into_iter().collect();
    while let Some(dir) = pending.pop() {
        match disk_of_partition(&dir) {
            Some(disk) => {
                disks.insert(disk);
                pending.extend(dir.parent().map(Path::to_path_buf));
            }
            None => {
                if disks.insert(file_name(&dir)) {
                    pending.extend(
                        entries(&dir.join("slaves")).iter().filter_map(|s| s.canonicalize().ok()),
                    );
                }
            }
        }
    }
    disks
}

/// The partitions of the disk at `dir`: its subdirectories that have a `partition` file.
fn partitions(dir: &Path) -> Vec<PathBuf> {
    entries(dir).into_iter().filter(|d| d.join("partition").exists()).collect()
}

/// A directory's entries, sorted; none when it cannot be read.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    found.sort();
    found
}

fn read(path: &Path) -> Result<String, FlashError> {
    std::fs::read_to_string(path)
        .map_err(|source| FlashError::Host { path: path.to_path_buf(), source })
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A sysfs, mountinfo and swaps of a host with an NVMe disk it runs from (`/` on
    /// nvme0n1p2, /boot/efi on nvme0n1p1), an SD card reader (`mmcblk0`, partition 1 mounted
    /// on /media/card), a USB stick with one partition (`sdb`, idle), a disk held by
    /// device-mapper (`sdc`, its partition under LVM), and a disk with a swap partition
    /// (`sdd`).
    struct FakeHost {
        _dir: tempfile::TempDir,
        view: HostView,
    }

    impl FakeHost {
        fn new() -> FakeHost {
            let dir = tempfile::tempdir().unwrap();
            let sys = dir.path().join("sys");
            let blocks = sys.join("devices/virtual/block");
            let disk = |name: &str, number: &str, sectors: u64, parts: &[(&str, &str)]| {
                let d = blocks.join(name);
                std::fs::create_dir_all(d.join("holders")).unwrap();
                std::fs::create_dir_all(d.join("slaves")).unwrap();
                std::fs::write(d.join("dev"), format!("{number}\n")).unwrap();
                std::fs::write(d.join("size"), format!("{sectors}\n")).unwrap();
                symlink(&d, sys.join("dev/block").join(number)).unwrap();
                for (part, number) in parts {
                    let p = d.join(part);
                    std::fs::create_dir_all(p.join("holders")).unwrap();
                    std::fs::write(p.join("dev"), format!("{number}\n")).unwrap();
                    std::fs::write(p.join("partition"), "1\n").unwrap();
                    symlink(&p, sys.join("dev/block").join(number)).unwrap();
                }
                d
            };
            std::fs::create_dir_all(sys.join("dev/block")).unwrap();
            disk("nvme0n1", "259:0", 1_000_000, &[("nvme0n1p1", "259:1"), ("nvme0n1p2", "259:2")]);
            disk("mmcblk0", "179:0", 62_333_952, &[("mmcblk0p1", "179:1")]);
            let stick = disk("sdb", "8:16", 60_437_492, &[("sdb1", "8:17")]);
            std::fs::create_dir_all(stick.join("device")).unwrap();
            std::fs::write(stick.join("device/vendor"), "SanDisk \n").unwrap();
            std::fs::write(stick.join("device/model"), "Ultra Fit       \n").unwrap();
            let lvm = disk("sdc", "8:32", 2_000_000, &[("sdc1", "8:33")]);
            let dm = disk("dm-0", "254:0", 1_990_000, &[]);
            symlink(lvm.join("sdc1"), dm.join("slaves/sdc1")).unwrap();
            symlink(&dm, lvm.join("sdc1/holders/dm-0")).unwrap();
            disk("sdd", "8:48", 2_000_000, &[("sdd1", "8:49")]);
            let mountinfo = dir.path().join("mountinfo");
            std::fs::write(
                &mountinfo,
                "25 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n\
                 26 25 0:22 / /sys rw,relatime shared:2 - sysfs sysfs rw\n\
                 27 25 259:1 / /boot/efi rw shared:3 - vfat /dev/nvme0n1p1 rw\n\
                 40 25 179:1 / /media/my\\040card rw,nosuid - vfat /dev/mmcblk0p1 rw\n",
            )
            .unwrap();
            let swaps = dir.path().join("swaps");
            std::fs::write(
                &swaps,
                "Filename\tType\tSize\tUsed\tPriority\n/dev/sdd1  partition\t1000\t0\t-2\n",
            )
            .unwrap();
            FakeHost { view: HostView { sys, mountinfo, swaps }, _dir: dir }
        }

        fn check(&self, number: &str) -> Result<Target, String> {
            check_disk(Path::new("/dev/x"), number, &self.view).map_err(|e| e.to_string())
        }
    }

    #[test]
    fn an_idle_whole_disk_may_be_written_and_says_what_it_is() {
        let host = FakeHost::new();
        let target = host.check("8:16").unwrap();
        let model = "SanDisk Ultra Fit".to_string();
        assert_eq!(target, Target::Disk { name: "sdb".into(), size: 60_437_492 * 512, model });
    }

    #[test]
    fn a_partition_is_refused_naming_its_disk() {
        let error = FakeHost::new().check("8:17").unwrap_err();
        assert_eq!(error, "/dev/x is a partition of sdb: flash the whole disk (/dev/sdb)");
    }

    #[test]
    fn the_disk_the_host_runs_from_is_refused() {
        let error = FakeHost::new().check("259:0").unwrap_err();
        assert_eq!(error, "/dev/x is the disk this host runs from (/ is /dev/nvme0n1p2)");
    }

    #[test]
    fn a_disk_with_a_mounted_partition_is_refused() {
        let error = FakeHost::new().check("179:0").unwrap_err();
        assert_eq!(error, "/dev/x is in use: /dev/mmcblk0p1 is mounted on /media/my card");
    }

    #[test]
    fn a_disk_under_device_mapper_is_refused() {
        let error = FakeHost::new().check("8:32").unwrap_err();
        assert_eq!(error, "/dev/x is in use: sdc1 is held by dm-0");
    }

    #[test]
    fn a_disk_with_swap_on_it_is_refused() {
        let error = FakeHost::new().check("8:48").unwrap_err();
        assert_eq!(error, "/dev/x is in use: /dev/sdd1 is a swap area");
    }

    #[test]
    fn the_host_disk_is_found_through_device_mapper() {
        let host = FakeHost::new();
        assert_eq!(disks_under(&host.view, "254:0"), BTreeSet::from(["dm-0".into(), "sdc".into()]));
    }

    #[test]
    fn a_device_sysfs_does_not_know_is_not_a_disk() {
        assert_eq!(FakeHost::new().check("1:3").unwrap_err(), "/dev/x is not a disk");
    }

    #[test]
    fn paths_say_what_they_are() {
        let host = FakeHost::new();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("card.img");
        assert_eq!(Target::inspect(&file, &host.view).unwrap(), Target::File);
        std::fs::write(&file, b"old").unwrap();
        assert_eq!(Target::inspect(&file, &host.view).unwrap(), Target::File);
        let dir_error = Target::inspect(dir.path(), &host.view).unwrap_err().to_string();
        assert_eq!(dir_error, format!("{} is not a disk", dir.path().display()));
        let gone = Target::inspect(Path::new("/dev/sdz9"), &host.view).unwrap_err().to_string();
        assert_eq!(gone, "/dev/sdz9: No such file or directory (os error 2)");
        let null = Target::inspect(Path::new("/dev/null"), &host.view).unwrap_err().to_string();
        assert_eq!(null, "/dev/null is not a disk");
    }

    #[test]
    fn mountinfo_fields_are_unescaped() {
        let mounts = parse_mountinfo("1 0 8:1 / /a\\040b\\134c rw master:2 - ext4 /dev/sda1 rw\n");
        let expected = Mount {
            number: "8:1".into(),
            mount_point: "/a b\\c".into(),
            source: "/dev/sda1".into(),
        };
        assert_eq!(mounts, [expected]);
    }
}
