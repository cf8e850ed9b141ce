//! The demo: builds the x86_64 image, boots it under QEMU (q35, OVMF, TCG) and talks to the
//! node with ctl, then leaves it running for you. `cargo run -p cairn-tests --example qemu-node`
//! (needs qemu-system-x86 and ovmf; `.ci/run` shows how to install them).

use std::time::Duration;

use cairn_api::arch::Arch;
use cairn_qemu::{Vm, VmConfig};
use cairn_tests::{bin_dir, build_image, ctl, eventually};

fn main() -> anyhow::Result<()> {
    let dir = bin_dir().parent().expect("target dir").join("demo");
    std::fs::create_dir_all(&dir)?;
    println!("building the image (the first build downloads ~160 MB of Debian packages)...");
    print!("{}", build_image(&dir));
    let disk = dir.join("disk.raw");
    std::fs::copy(dir.join("cairn-x86_64.raw"), &disk)?;
    std::fs::OpenOptions::new().write(true).open(&disk)?.set_len(4 << 30)?;
    let mut vm = Vm::start(&VmConfig {
        image: disk,
        arch: Arch::X86_64,
        memory_mib: 1024,
        work_dir: dir.join("vm"),
    })?;
    println!(
        "booting under QEMU (software emulation: about a minute); console: {}",
        vm.console_path().display()
    );
    let at = vm.wait_for("API listening on", 0, Duration::from_secs(300))?;
    vm.wait_for("network: Running", at, Duration::from_secs(60))?;
    let n = vm.api_address.clone();
    eventually(Duration::from_secs(60), || ctl(None, &["--insecure", "-n", &n, "version"]).success);
    for args in [["version"], ["disks"]] {
        println!("\n$ ctl --insecure -n {n} {}", args[0]);
        print!("{}", ctl(None, &["--insecure", "-n", &n, args[0]]).stdout);
    }
    println!(
        "\nThe node is up in maintenance mode. Try:\n  {}/ctl --insecure -n {n} version\n\nApplying a config needs the STATE partition, which machined does not create yet.\nPress Ctrl-C to stop the node.",
        bin_dir().display()
    );
    while vm.wait_exit(Duration::from_secs(3600))?.is_none() {}
    Ok(())
}
