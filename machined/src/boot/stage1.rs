//! Stage 1: `/init` in the initramfs. Mounts the kernel's filesystems, loads the modules
//! that reach the disk (coldplug: those the devices present ask for, then those of the
//! devices that appear behind them, from uevents, until the root shows), finds the root the
//! kernel command line names ([`RootSource`]: the slot's root partition, by label), mounts it
//! read-only and hands over to machined on it. A failure reboots after a pause, so the
//! bootloader's try counter can fall back to the other slot.

use std::convert::Infallible;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_api::image::module_table::LoadWhen;
use cairn_api::image::MACHINED_PATH;
use nix::mount::{mount, MsFlags};

use super::coldplug::{self, Coldplug, Loaded};
use super::partitions;
use super::root_source::RootSource;
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
    /// No slot on the command line.
    #[error("no {}=a|b on the kernel command line", cairn_api::image::SLOT_ARG)]
    NoSlot,
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

/// Mounts the root filesystem `source` names on [`NEW_ROOT`], read-only; until its partition
/// shows, loads the modules of the devices that appear (`uevents`).
fn mount_root(
    source: RootSource,
    modules: &Coldplug,
    uevents: &UeventSocket,
) -> Result<(), Stage1Error> {
    let label = source.partition_label();
    let deadline = Instant::now() + ROOT_WAIT;
    let device = loop {
        if let Some(device) = partitions::find_by_label(Path::new("/sys/class/block"), label) {
            break device;
        }
        if Instant::now() > deadline {
            return Err(Stage1Error::NoRoot(label));
        }
        let modaliases = uevents.next_modaliases(Path::new("/sys/devices"))?;
        report(&modules.load_for_devices(&modaliases), "for a new device");
    };
    console(&format!("{source}: root {label} is {}", device.display()));
    mount_fs(&device.to_string_lossy(), NEW_ROOT, "squashfs", MsFlags::MS_RDONLY)
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
    let source = RootSource::from_cmdline(&cmdline).ok_or(Stage1Error::NoSlot)?;
    mount_root(source, &modules, &uevents)?;

    // The kernel filesystems move along; then the new root becomes / (switch_root).
    for fs in ["/dev", "/proc", "/sys", "/run"] {
        let target = format!("{NEW_ROOT}{fs}");
        mount(Some(fs), target.as_str(), None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .map_err(|errno| Stage1Error::Mount { target, errno })?;
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
