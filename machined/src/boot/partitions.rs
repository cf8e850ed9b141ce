//! Finding partitions through sysfs, as the kernel reports them (no udev, no blkid): by GPT
//! label (`PARTNAME=` in each block device's `uevent`), or by number on their disk.

use std::fs;
use std::path::{Path, PathBuf};

/// The device node of the partition labelled `label`, if the kernel has seen it.
pub fn find_by_label(sys_class_block: &Path, label: &str) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> =
        fs::read_dir(sys_class_block).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    entries.into_iter().find_map(|dir| {
        let uevent = fs::read_to_string(dir.join("uevent")).ok()?;
        device_with_label(&uevent, label)
    })
}

/// The device node of partition `number` of `disk` (`/dev/vda`), if the kernel has it: how a
/// partition added while the disk is in use is found, as the kernel then knows no label.
pub fn find_by_number(sys_class_block: &Path, disk: &Path, number: u32) -> Option<PathBuf> {
    let number = number.to_string();
    fs::read_dir(sys_class_block.join(disk.file_name()?)).ok()?.find_map(|entry| {
        let entry = entry.ok()?;
        let partition = fs::read_to_string(entry.path().join("partition")).ok()?;
        (partition.trim() == number).then(|| Path::new("/dev").join(entry.file_name()))
    })
}

/// `/dev/<DEVNAME>` when a uevent's `PARTNAME` is `label`.
fn device_with_label(uevent: &str, label: &str) -> Option<PathBuf> {
    let field = |key: &str| uevent.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='));
    (field("PARTNAME")? == label)
        .then(|| Path::new("/dev").join(field("DEVNAME").unwrap_or_default()))
        .filter(|p| p != Path::new("/dev"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_partitions_by_label() {
        let sys = tempfile::tempdir().unwrap();
        for (name, uevent) in [
            ("vda", "MAJOR=253\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n"),
            (
                "vda1",
                "MAJOR=253\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=EFI\n",
            ),
            (
                "vda2",
                "MAJOR=253\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=ROOT-A\n",
            ),
        ] {
            fs::create_dir_all(sys.path().join(name)).unwrap();
            fs::write(sys.path().join(name).join("uevent"), uevent).unwrap();
        }
        assert_eq!(find_by_label(sys.path(), "ROOT-A"), Some(PathBuf::from("/dev/vda2")));
        assert_eq!(find_by_label(sys.path(), "ROOT-B"), None);
        assert_eq!(find_by_label(&sys.path().join("missing"), "ROOT-A"), None);
    }

    #[test]
    fn finds_partitions_by_number_on_their_disk() {
        let sys = tempfile::tempdir().unwrap();
        let disk = sys.path().join("nvme0n1");
        for (name, number) in [("nvme0n1p1", "1\n"), ("nvme0n1p12", "12\n")] {
            fs::create_dir_all(disk.join(name)).unwrap();
            fs::write(disk.join(name).join("partition"), number).unwrap();
        }
        fs::create_dir_all(disk.join("queue")).unwrap();
        let dev = Path::new("/dev/nvme0n1");
        assert_eq!(find_by_number(sys.path(), dev, 12), Some(PathBuf::from("/dev/nvme0n1p12")));
        assert_eq!(find_by_number(sys.path(), dev, 1), Some(PathBuf::from("/dev/nvme0n1p1")));
        assert_eq!(find_by_number(sys.path(), dev, 2), None);
        assert_eq!(find_by_number(sys.path(), Path::new("/dev/vda"), 1), None);
    }
}
