//! The demo: builds the x86_64 image, boots it under QEMU (q35, OVMF, TCG), configures the
//! node with ctl (a pod serving HTTP on hostPort 8080 among it), talks to it over mTLS, fetches
//! the pod's page from the host, then leaves it running for you. Each phase prints the time
//! it took. `cargo xtask demo` installs what it needs (qemu-system-x86, ovmf) and runs it;
//! `cargo run -p cairn-tests --example qemu-node` runs it alone.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use cairn_qemu::{Vm, VmConfig};
use cairn_tests::boards::{PowerOn, GENERIC_X86_64};
use cairn_tests::disk::NodeDisk;
use cairn_tests::steps::Steps;
use cairn_tests::{bin_dir, build_image, ctl, eventually, fingerprint_in, http_get, Cluster};

/// The pod's port on the node; QEMU forwards a free port of the host to it.
const HOST_PORT: u16 = 8080;

/// A pod serving a page with busybox's httpd, from the image baked into the OS image.
const POD: &str = r#"  pods:
    - apiVersion: v1
      kind: Pod
      metadata: {name: hello}
      spec:
        containers:
          - name: httpd
            image: localhost/busybox:latest
            command: [sh, -c, "mkdir -p /www && echo hello from a Cairn pod > /www/index.html && exec httpd -f -p 80 -h /www"]
            ports: [{containerPort: 80, hostPort: 8080}]
            readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 2}
"#;

fn main() -> anyhow::Result<()> {
    // Ctrl-C powers the node off cleanly (through its power button) instead of killing QEMU.
    let interrupts = cairn_qemu::watch_interrupts()?;
    let mut steps = Steps::new();
    steps.start("build the image");
    println!("(machined, ctl and image-builder first; the first build downloads ~160 MB of Debian packages)");
    let dir = bin_dir().parent().expect("target dir").join("demo");
    std::fs::create_dir_all(&dir)?;
    let board = &GENERIC_X86_64;
    print!("{}", build_image(board, &dir, None, None, &[]));
    let disk = NodeDisk::copy(&dir.join(board.image()), &dir.join("disk.raw"), board.disk_bytes)?;
    let vm_dir = dir.join("vm");
    let vm_config = board.vm_config(disk.qemu_image(), &vm_dir, &[HOST_PORT], PowerOn::Online);
    steps.start("boot to the API");
    let mut vm = Vm::start(&VmConfig { own_process_group: true, ..vm_config })?;
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
    steps.start("configure the node");
    let cluster = Cluster::generate("demo")?;
    let config = cluster.node_config_with("node.yaml", |text| text + POD);
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
    let web = vm.forwarded[&HOST_PORT].clone();
    steps.start("the pod answers");
    println!("(the node imports its images and starts the sandbox)");
    let answered = eventually(Duration::from_secs(300), || {
        http_get(&web, "/").is_some_and(|(code, _)| code == 200)
    });
    steps.finish(!answered);
    println!("\n$ ctl -n {n} pods");
    print!("{}", ctl(Some(&admin), &["-n", &n, "pods"]).stdout);
    match http_get(&web, "/") {
        Some((code, body)) if answered => println!("\n$ curl http://{web}/\n{body}(HTTP {code})"),
        _ => println!(
            "\nthe pod did not answer at {web}; see `ctl logs kubelet` and `ctl pods -o yaml`"
        ),
    }
    print!("{}", steps.summary(false));
    println!(
        "\nThe node is configured and speaks mTLS only. Try, in another terminal:\n\n  export CTLCONFIG={}\n  {bin}/ctl -n {n} logs machined\n  {bin}/ctl -n {n} pods -o yaml\n  {bin}/ctl -n {n} logs hello\n  curl http://{web}/\n\nPress Ctrl-C to power the node off.",
        admin.display(),
        bin = bin_dir().display()
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
