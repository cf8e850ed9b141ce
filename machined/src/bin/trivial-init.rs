//! `trivial-init`: the floor the boot bench (`cargo bench -p cairn-tests --bench boot`)
//! measures Cairn's boots against. Put as `/init` over the image's own initramfs, it mounts
//! devtmpfs (the initramfs has no `/dev/console`, so the kernel gave it no output), prints
//! [`MARKER`] on the console and powers off: the kernel's and an init's cost, none of Cairn's.

use std::io::Write;

use nix::mount::{mount, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};

/// What the bench waits for on the console (the bench holds the same text).
const MARKER: &str = "cairn trivial init: reached";

fn main() {
    // Already mounted is fine: the console is there either way.
    let _ = mount(Some("devtmpfs"), "/dev", Some("devtmpfs"), MsFlags::empty(), None::<&str>);
    if let Ok(mut console) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(console, "{MARKER}");
    }
    // Returns only on failure; PID 1 then exits and the kernel panics, after the marker.
    let _ = reboot(RebootMode::RB_POWER_OFF);
}
