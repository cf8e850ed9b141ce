//! The demo: builds the x86_64 image, boots it under QEMU (q35, OVMF, TCG), configures the
//! node with ctl and talks to it over mTLS, then leaves it running for you. `cargo run -p cairn-tests --example qemu-node`
//! (needs qemu-system-x86 and ovmf; `.ci/run` shows how to install them).

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use cairn_api::arch::Arch;
use cairn_qemu::{Vm, VmConfig};
use cairn_tests::{bin_dir, build_image, ctl, eventually, fingerprint_in, Cluster};

fn main() -> anyhow::Result<()> {
    // Ctrl-C powers the node off cleanly (through its power button) instead of killing QEMU.
    let interrupts = cairn_qemu::watch_interrupts()?;
    let dir = bin_dir().parent().expect("target dir").join("demo");
    std::fs::create_dir_all(&dir)?;
    println!("building the image (the first build downloads ~160 MB of Debian packages)...");
    print!("{}", build_image(&dir, None));
    let disk = dir.join("disk.raw");
    std::fs::copy(dir.join("cairn-x86_64.raw"), &disk)?;
    std::fs::OpenOptions::new().write(true).open(&disk)?.set_len(4 << 30)?;
    let mut vm = Vm::start(&VmConfig {
        image: disk,
        arch: Arch::X86_64,
        memory_mib: 1024,
        work_dir: dir.join("vm"),
        own_process_group: true,
        rtc_base: None,
    })?;
    println!(
        "booting under QEMU (software emulation: about a minute); console: {}",
        vm.console_path().display()
    );
    let at = vm.wait_for("API listening on", 0, Duration::from_secs(300))?;
    vm.wait_for("network: Ready", at, Duration::from_secs(60))?;
    let n = vm.api_address.clone();
    eventually(Duration::from_secs(60), || ctl(None, &["--insecure", "-n", &n, "version"]).success);
    for args in [["version"], ["disks"]] {
        println!("\n$ ctl --insecure -n {n} {}", args[0]);
        print!("{}", ctl(None, &["--insecure", "-n", &n, args[0]]).stdout);
    }
    let cluster = Cluster::generate("demo")?;
    let config = cluster.path("node.yaml");
    // The console printed the maintenance certificate's fingerprint: pin it, as an operator
    // reading the node's screen would.
    let fingerprint = fingerprint_in(&vm.console()).context("no fingerprint on the console")?;
    println!(
        "\n$ ctl --insecure --fingerprint {fingerprint} -n {n} apply-config --file {}",
        config.display()
    );
    let pin = ["--insecure", "--fingerprint", &fingerprint, "-n", &n];
    print!(
        "{}",
        ctl(None, &[&pin[..], &["apply-config", "--file", config.to_str().unwrap()]].concat())
            .stdout
    );
    let admin = cluster.admin();
    for args in [["version"], ["services"], ["mounts"]] {
        println!("\n$ ctl -n {n} {}", args[0]);
        print!("{}", ctl(Some(&admin), &["-n", &n, args[0]]).stdout);
    }
    println!(
        "\nThe node is configured and speaks mTLS only. Try, in another terminal:\n\n  export CTLCONFIG={}\n  {}/ctl -n {n} logs machined\n\nPods are not there yet. Press Ctrl-C to power the node off.",
        admin.display(),
        bin_dir().display()
    );
    // Keep the client config until the node goes.
    let _keep = cluster;
    while vm.wait_exit(Duration::from_millis(300))?.is_none() {
        if interrupts.load(Ordering::SeqCst) > 0 {
            println!("\npressing the node's power button...");
            let status = vm.stop(Duration::from_secs(120))?;
            println!("the node powered off; QEMU exited ({status})");
            break;
        }
    }
    Ok(())
}
