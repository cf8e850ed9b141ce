//! The local demo: a machined process as a node, configured and driven with ctl, left
//! running for you to explore. `cargo run -p cairn-tests --example local-node`
//! (the QEMU-booted image takes its place when the image builder lands).

use std::path::Path;

use cairn_tests::{bin_dir, ctl, Cluster, Node};

fn step(ctlconfig: Option<&Path>, args: &[&str]) {
    println!("\n$ ctl {}", args.join(" "));
    let run = ctl(ctlconfig, args).ok();
    print!("{}", run.stdout);
}

fn main() -> anyhow::Result<()> {
    let cluster = Cluster::generate("demo")?;
    let node = Node::start()?;
    let n = node.address.as_str();
    let config = cluster.path("node.yaml");
    let admin = cluster.admin();
    println!(
        "machined is running under {} and listening on {n} in maintenance mode.",
        node.root().display()
    );
    step(None, &["--insecure", "-n", n, "version"]);
    step(None, &["--insecure", "-n", n, "apply-config", "--file", config.to_str().unwrap()]);
    step(Some(&admin), &["-n", n, "version"]);
    step(Some(&admin), &["-n", n, "services"]);
    step(Some(&admin), &["-n", n, "events"]);
    println!(
        "\nThe node now accepts only mutual TLS. Try, in another terminal:\n\n  export CTLCONFIG={}\n  {}/ctl -n {n} stats\n  {}/ctl -n {n} logs machined -f\n\nPress Ctrl-C to stop the node.",
        admin.display(),
        bin_dir().display(),
        bin_dir().display()
    );
    // Keep the cluster files and the node alive until the user interrupts us.
    let _keep = (cluster, node);
    loop {
        std::thread::park();
    }
}
