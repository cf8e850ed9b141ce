//! Stage 1: `/init` in the initramfs. Mounts the kernel's filesystems, loads the modules
//! that reach the disk (coldplug: those the devices present ask for, then those of the
//! devices that appear behind them, from uevents, until the root shows), finds the root the
//! kernel command line names ([`RootSource`]: the slot's root partition, by label, or on a
//! diskless node the squashfs the initramfs carries, once its hash is checked), mounts it
//! read-only, frees the initramfs ([`initramfs`]) and hands over to machined on it. A
//! failure reboots after a pause, so the
//! bootloader's try counter can fall back to the other slot.

use std::convert::Infallible;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_api::bundle::hex;
use cairn_api::image::module_table::LoadWhen;
use cairn_api::image::{INITRAMFS_ROOT_PATH, MACHINED_PATH};
use nix::mount::{mount, MsFlags};
use sha2::{Digest, Sha256};

use super::coldplug::{self, Coldplug, Loaded};
use super::initramfs;
use super::loop_device::{self, LoopError};
use super::partitions;
use super::root_source::{RootSource, RootSourceError};
use super::uevents::{UeventError, UeventSocket};
use crate::logs::kmsg::Kmsg;

/// Where the root filesystem is mounted before the switch.
const NEW_ROOT: &str = "/newroot";
/// How long to wait for the root partition to appear (disk drivers probe asynchronously).
const ROOT_WAIT: Duration = Duration::from_secs(30);
/// How long to wait for a uevent before looking for the root again.
const UEVENT_WAIT: Duration = Duration::from_millis(50);
/// How long a fatal error stays on the console before the reboot.
const FATAL_PAUSE: Duration = Duration::from_secs(10);

/// Stage 1 failed.
#[derive(Debug, thiserror::Error)]
pub enum Stage1Error {
    /// A mount failed.
    #[error("mounting {target}: {errno}")]
    Mount {
        /// The mount point.
        target: String,
        /// Why.
        errno: nix::errno::Errno,
    },
    /// The module table could not be read.
    #[error(transparent)]
    Modules(#[from] coldplug::ColdplugError),
    /// The kernel's uevents could not be heard.
    #[error(transparent)]
    Uevents(#[from] UeventError),
    /// The command line names no root stage 1 can mount.
    #[error(transparent)]
    Root(#[from] RootSourceError),
    /// The root in the initramfs is not the one the command line names.
    #[error("{INITRAMFS_ROOT_PATH} has SHA-256 {actual}, the kernel command line says {expected}: damaged on its way, or not this kernel's")]
    RootHash {
        /// What it hashes to.
        actual: String,
        /// What the command line says.
        expected: String,
    },
    /// The root in the initramfs could not be made a block device.
    #[error(transparent)]
    Loop(#[from] LoopError),
    /// The root partition did not appear.
    #[error("no partition labelled {0} appeared within {ROOT_WAIT:?}")]
    NoRoot(&'static str),
    /// Switching to the root filesystem failed.
    #[error("switching root: {0}")]
    Switch(nix::errno::Errno),
    /// Reading a kernel interface failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// Mounts the root filesystem `source` names on [`NEW_ROOT`], read-only.
fn mount_root(
    source: RootSource,
    modules: &Coldplug,
    uevents: &UeventSocket,
) -> Result<(), Stage1Error> {
    let (root, device) = match source {
        RootSource::SlotPartition(slot) => {
            let label = slot.root_label();
            (label, wait_for_partition(label, modules, uevents)?)
        }
        RootSource::Initramfs { sha256 } => {
            let file = Path::new(INITRAMFS_ROOT_PATH);
            check_hash(file, &sha256)?;
            (INITRAMFS_ROOT_PATH, loop_device::attach_read_only(file)?)
        }
    };
    console(&format!("{source}: root {root} is {}", device.display()));
    mount_fs(&device.to_string_lossy(), NEW_ROOT, "squashfs", MsFlags::MS_RDONLY)
}

/// Checks that `file` hashes to `expected`.
fn check_hash(file: &Path, expected: &[u8; 32]) -> Result<(), Stage1Error> {
    let io_error = |source| Stage1Error::Io { path: file.into(), source };
    let mut reader = std::fs::File::open(file).map_err(io_error)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut reader, &mut hasher).map_err(io_error)?;
    let actual = hasher.finalize();
    if actual.as_slice() != expected {
        return Err(Stage1Error::RootHash { actual: hex(&actual), expected: hex(expected) });
    }
    Ok(())
}

/// The partition labelled `label`, once it shows; until then, loads the modules of the
/// devices that appear (`uevents`).
fn wait_for_partition(
    label: &'static str,
    modules: &Coldplug,
    uevents: &UeventSocket,
) -> Result<PathBuf, Stage1Error> {
    let deadline = Instant::now() + ROOT_WAIT;
    loop {
        if let Some(device) = partitions::find_by_label(Path::new("/sys/class/block"), label) {
            return Ok(device);
        }
        if Instant::now() > deadline {
            return Err(Stage1Error::NoRoot(label));
        }
        let modaliases = uevents.next_modaliases(Path::new("/sys/devices"))?;
        report(&modules.load_for_devices(&modaliases), "for a new device");
    }
}

/// Runs stage 1; never returns.
pub fn run() -> ! {
    let error = match boot() {
        Ok(never) => match never {},
        Err(e) => e,
    };
    console(&format!("FATAL: {error}; rebooting in {}s", FATAL_PAUSE.as_secs()));
    std::thread::sleep(FATAL_PAUSE);
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Says what a round of loading did, if anything.
fn report(loaded: &Loaded, what: &str) {
    if loaded.count > 0 {
        console(&format!("loaded {} modules {what}", loaded.count));
    }
    for failure in &loaded.failures {
        console(&format!("module: {failure}"));
    }
}

/// Stage 1's messages go to the console (the kernel gives init /dev/console as stderr) and,
/// once /dev is mounted, to the kernel log.
fn console(message: &str) {
    eprintln!("machined[stage1]: {message}");
    if let Ok(kmsg) = Kmsg::open("machined[stage1]") {
        kmsg.write(message);
    }
}

fn mount_fs(source: &str, target: &str, fstype: &str, flags: MsFlags) -> Result<(), Stage1Error> {
    std::fs::create_dir_all(target)
        .map_err(|source| Stage1Error::Io { path: target.into(), source })?;
    mount(Some(source), target, Some(fstype), flags, None::<&str>)
        .map_err(|errno| Stage1Error::Mount { target: target.into(), errno })
}

fn boot() -> Result<Infallible, Stage1Error> {
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount_fs("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID)?;
    mount_fs("proc", "/proc", "proc", quiet | MsFlags::MS_NODEV)?;
    mount_fs("sysfs", "/sys", "sysfs", quiet | MsFlags::MS_NODEV)?;
    mount_fs("tmpfs", "/run", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
    console(&format!("machined {} stage 1", env!("CARGO_PKG_VERSION")));

    let release = nix::sys::utsname::uname()
        .map_err(Stage1Error::Switch)?
        .release()
        .to_string_lossy()
        .into_owned();
    let modules = Coldplug::open(&Path::new("/usr/lib/modules").join(&release))?;
    // Subscribed before the devices are read, so none falls between the two.
    let uevents = UeventSocket::open(Some(UEVENT_WAIT))?;
    report(&modules.load_when(LoadWhen::Boot), &format!("for {release}"));
    let devices = coldplug::device_modaliases(Path::new("/sys/devices"));
    report(&modules.load_for_devices(&devices), &format!("for {} devices", devices.len()));

    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|source| Stage1Error::Io { path: "/proc/cmdline".into(), source })?;
    let source = RootSource::from_cmdline(&cmdline)?;
    mount_root(source, &modules, &uevents)?;

    // The kernel filesystems move along; then the new root becomes / (switch_root).
    for fs in ["/dev", "/proc", "/sys", "/run"] {
        let target = format!("{NEW_ROOT}{fs}");
        mount(Some(fs), target.as_str(), None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .map_err(|errno| Stage1Error::Mount { target, errno })?;
    }
    match initramfs::free() {
        Ok(freed) => console(&format!(
            "freed the initramfs: {} files, {:.1} MiB",
            freed.files,
            freed.bytes as f64 / (1024.0 * 1024.0)
        )),
        Err(e) => console(&format!("the initramfs stays in memory: {e}")),
    }
    nix::unistd::chdir(NEW_ROOT).map_err(Stage1Error::Switch)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(Stage1Error::Switch)?;
    nix::unistd::chroot(".").map_err(Stage1Error::Switch)?;
    nix::unistd::chdir("/").map_err(Stage1Error::Switch)?;
    console(&format!("switching to {MACHINED_PATH}"));
    let program = CString::new(MACHINED_PATH).expect("no NUL in the path");
    let error = nix::unistd::execv(&program, std::slice::from_ref(&program))
        .map_err(Stage1Error::Switch)?;
    match error {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_in_the_initramfs_must_have_the_named_hash() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("root.squashfs");
        std::fs::write(&file, b"hsqs and the rest").unwrap();
        let named: [u8; 32] = Sha256::digest(b"hsqs and the rest").into();
        check_hash(&file, &named).unwrap();
        let error = check_hash(&file, &[0; 32]).unwrap_err().to_string();
        assert!(error.contains(&hex(&named)) && error.contains(&"0".repeat(64)), "{error}");
        assert!(matches!(
            check_hash(&dir.path().join("none"), &named),
            Err(Stage1Error::Io { .. })
        ));
    }
}
