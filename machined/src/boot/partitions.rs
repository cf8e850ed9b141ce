//! Finding partitions by GPT label, through sysfs (`PARTNAME=` in each block device's
//! `uevent`), as the kernel reports them: no udev, no blkid.

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
}
