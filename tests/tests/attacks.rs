//! The attacks of the API security review, each tried again against a real machined process:
//! a reader reaching secrets or side effects through `read`, configs that cost PID 1 time or
//! memory, a session that outlives the CA it was made under, an apid restart with streams
//! open, a stored config that no longer loads (which once handed the node to anyone).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_tests::{bin_dir, configured_node, ctl, eventually, Cluster, Node};

#[test]
fn readers_read_only_regular_files_and_never_state() {
    let (cluster, node) = configured_node();
    let n = node.address.as_str();
    let reader = cluster.client("os:reader");

    // A FIFO without a writer used to block a worker thread for good; each such read held one.
    let fifo = node.root().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let started = Instant::now();
    let refused = ctl(Some(&reader), &["-n", n, "read", fifo.to_str().unwrap()]).failed();
    assert!(refused.stderr.contains("is a FIFO, not a regular file"), "{}", refused.stderr);
    assert!(started.elapsed() < Duration::from_secs(20), "the FIFO read blocked");

    // Devices: opening one has side effects (/dev/watchdog), and a block device holds STATE.
    for (path, kind) in [("/dev/zero", "a character device"), ("/dev/null", "a character device")] {
        let refused = ctl(Some(&reader), &["-n", n, "read", path]).failed();
        assert!(refused.stderr.contains(kind), "{path}: {}", refused.stderr);
    }
    if let Some(block) = first_block_device() {
        let refused = ctl(Some(&reader), &["-n", n, "read", &block]).failed();
        assert!(refused.stderr.contains("a block device"), "{block}: {}", refused.stderr);
    }
    let refused = ctl(Some(&reader), &["-n", n, "read", "/proc/kmsg"]).failed();
    assert!(refused.stderr.contains("consumes the kernel's messages"), "{}", refused.stderr);

    // A link to STATE is STATE.
    let link = node.root().join("innocent");
    std::os::unix::fs::symlink(node.root().join("system/state/config.yaml"), &link).unwrap();
    let refused = ctl(Some(&reader), &["-n", n, "read", link.to_str().unwrap()]).failed();
    assert!(refused.stderr.contains("is on STATE"), "{}", refused.stderr);

    // Beyond STATE: the kernel's memory, processes' environments, workloads' files on /var.
    let var_file = node.root().join("var/app/credentials");
    std::fs::create_dir_all(var_file.parent().unwrap()).unwrap();
    std::fs::write(&var_file, "password").unwrap();
    let mut secrets = vec![
        ("/proc/1/environ".to_string(), "belongs to a process"),
        ("/proc/cmdline".to_string(), "may hold the bootstrap token"),
        (var_file.display().to_string(), "is on /var"),
    ];
    if std::path::Path::new("/proc/kcore").exists() {
        secrets.push(("/proc/kcore".to_string(), "is the kernel's memory"));
    }
    for (path, why) in &secrets {
        let refused = ctl(Some(&reader), &["-n", n, "read", path]).failed();
        assert!(refused.stderr.contains(why), "{path}: {}", refused.stderr);
        assert!(refused.stderr.contains("needs os:admin"), "{path}: {}", refused.stderr);
    }
    let admin_reads = ctl(Some(&cluster.admin()), &["-n", n, "read", &secrets[2].0]).ok();
    assert_eq!(admin_reads.stdout, "password");

    // Regular files still read, and the node still answers.
    let meminfo = ctl(Some(&reader), &["-n", n, "read", "/proc/meminfo"]).ok().stdout;
    assert!(meminfo.contains("MemTotal:"), "{meminfo}");
    ctl(Some(&reader), &["-n", n, "version"]).ok();
}

/// `ctl logs machined -f` as the cluster's admin: a session that stays open.
fn follow_logs(cluster: &Cluster, n: &str) -> std::process::Child {
    let mut follower = Command::new(bin_dir().join("ctl"))
        .args(["-n", n, "logs", "machined", "-f"])
        .env("CTLCONFIG", cluster.admin())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(follower.try_wait().unwrap().is_none(), "the follower ended early");
    follower
}

fn first_block_device() -> Option<String> {
    std::fs::read_dir("/sys/class/block")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
        .find(|p| std::path::Path::new(p).exists())
}

#[test]
fn hostile_configs_are_refused_quickly_and_pid_1_lives() {
    let node = Node::start().unwrap();
    let n = node.address.as_str();
    let dir = tempfile::tempdir().unwrap();
    let apply = |name: &str, text: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let started = Instant::now();
        let run = ctl(None, &["--insecure", "-n", n, "apply-config", "-f", path.to_str().unwrap()]);
        assert!(!run.success, "{name} was accepted");
        assert!(started.elapsed() < Duration::from_secs(15), "{name} took {:?}", started.elapsed());
        run.stderr
    };

    // Aliases multiply: this used to reach gigabytes resident.
    let mut laughs = String::from("version: v1alpha1\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        laughs +=
            &format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n");
    }
    let stderr = apply("laughs.yaml", laughs.as_bytes());
    assert!(stderr.contains("anchors and aliases are not accepted"), "{stderr}");

    // Deep nesting used to parse in quadratic time: 96 KB took 13 s.
    let deep = format!("version: v1alpha1\nmachine: {}", "[".repeat(96 * 1024));
    let stderr = apply("deep.yaml", deep.as_bytes());
    assert!(stderr.contains("recursion limit") || stderr.contains("nested deeper"), "{stderr}");

    let mut big = b"version: v1alpha1\n".to_vec();
    big.resize(1024 * 1024 + 16 * 1024, b'#');
    let stderr = apply("big.yaml", &big);
    assert!(stderr.contains("at most 1048576"), "{stderr}");

    ctl(None, &["--insecure", "-n", n, "version"]).ok();
    assert!(node.stored_config().is_none(), "a refused config was stored");
}

#[test]
fn a_new_ca_ends_sessions_made_under_the_old_one() {
    let (cluster, node) = configured_node();
    let n = node.address.as_str();

    // A long-lived admin session under the first CA.
    let mut follower = follow_logs(&cluster, n);

    // Apid restarts with that stream open: the new apid must get the port back.
    ctl(Some(&cluster.admin()), &["-n", n, "service", "apid", "restart"]).ok();
    let back = eventually(Duration::from_secs(20), || {
        ctl(Some(&cluster.admin()), &["-n", n, "version"]).success
    });
    assert!(back, "apid did not come back after a restart:\n{}", node.output());

    // The restart may have ended the follower; start another for the CA change.
    let _ = follower.kill();
    let _ = follower.wait();
    let mut follower = follow_logs(&cluster, n);

    // The operator moves the node to a new CA.
    let successor = Cluster::generate("successor").unwrap();
    ctl(
        Some(&cluster.admin()),
        &["-n", n, "apply-config", "-f", successor.path("node.yaml").to_str().unwrap()],
    )
    .ok();
    let ended = eventually(Duration::from_secs(15), || follower.try_wait().unwrap().is_some());
    if !ended {
        let _ = follower.kill();
    }
    let mut stderr = String::new();
    follower.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(ended, "a session under the old CA lived on after the CA changed");
    ctl(Some(&successor.admin()), &["-n", n, "version"]).ok();
    ctl(Some(&cluster.admin()), &["-n", n, "version"]).failed();
}

/// Replaces `node`'s stored config with `text` and restarts it, as a damaged file or a
/// release with stricter validation would find it.
fn damage_and_restart(node: &mut Node, text: &str) {
    std::fs::write(node.root().join("system/state/config.yaml"), text).unwrap();
    node.restart().unwrap();
}

const RECOVERY_ADVICE: &str =
    "apply a config as an admin of the last known client CA, or with the bootstrap token";

#[test]
fn a_stored_config_that_no_longer_loads_leaves_the_node_to_its_admins() {
    let (cluster, mut node) = configured_node();
    let state = node.root().join("system/state");
    damage_and_restart(&mut node, "version: v1alpha1\nmachine: [damaged\n");
    let n = node.address.as_str();

    // Anyone may ask what state the node is in, and why.
    let version = ctl(None, &["--insecure", "-n", n, "version"]).ok().stdout;
    assert!(version.contains("recovery: the stored config does not load ("), "{version}");
    assert!(version.contains("stored config is invalid"), "{version}");
    assert!(version.contains(RECOVERY_ADVICE), "{version}");
    assert!(node.output().contains("recovery mode"), "{}", node.output());

    // The takeover: an anonymous client applying its own config, to read the old node CA key.
    let attacker = Cluster::generate("attacker").unwrap();
    let attack = attacker.path("node.yaml");
    let taken = ctl(None, &["--insecure", "-n", n, "apply-config", "-f", attack.to_str().unwrap()]);
    let refused = taken.failed();
    assert!(refused.stderr.contains("recovery mode"), "{}", refused.stderr);
    assert!(refused.stderr.contains("no bootstrap token"), "{}", refused.stderr);
    assert!(node.stored_config().is_none(), "an anonymous client's config was stored");
    ctl(Some(&attacker.admin()), &["-n", n, "version"]).failed();

    // The damaged config is kept; of the old CA's clients only its admins may read it.
    let kept = state.join("config.invalid.yaml");
    let kept = kept.to_str().unwrap();
    let reader = cluster.client("os:reader");
    let denied = ctl(Some(&reader), &["-n", n, "read", kept]).failed();
    assert!(denied.stderr.contains("only os:admin is served"), "{}", denied.stderr);
    let admin = cluster.admin();
    let read = ctl(Some(&admin), &["-n", n, "read", kept]).ok();
    assert!(read.stdout.contains("[damaged"), "{}", read.stdout);

    // The admin checks the node as before (its certificate is still the node CA's) and
    // recovers it.
    let version = ctl(Some(&admin), &["-n", n, "version"]).ok().stdout;
    assert!(version.contains("recovery: "), "{version}");
    let good = cluster.path("node.yaml");
    ctl(Some(&admin), &["-n", n, "apply-config", "-f", good.to_str().unwrap()]).ok();
    let version = ctl(Some(&admin), &["-n", n, "version"]).ok().stdout;
    assert!(version.contains("configured"), "{version}");
    assert!(node.stored_config().is_some());
    // Configured again, STATE stays closed to readers: the damaged config as the rest.
    let denied = ctl(Some(&reader), &["-n", n, "read", kept]).failed();
    assert!(denied.stderr.contains("is on STATE"), "{}", denied.stderr);
    node.restart().unwrap();
    let version = ctl(Some(&admin), &["-n", &node.address, "version"]).ok().stdout;
    assert!(version.contains("configured"), "{version}");

    // A config that cannot be read (here: not a file) is an I/O error, which may pass: it
    // stays where it is instead of being set aside, and the node is in recovery meanwhile.
    std::fs::remove_file(state.join("config.yaml")).unwrap();
    std::fs::create_dir(state.join("config.yaml")).unwrap();
    node.restart().unwrap();
    let version = ctl(None, &["--insecure", "-n", &node.address, "version"]).ok().stdout;
    assert!(version.contains("recovery: "), "{version}");
    assert!(state.join("config.yaml").is_dir(), "the unreadable config was moved");
    assert!(node.output().contains("the file stays in place"), "{}", node.output());
}

#[test]
fn a_node_set_aside_before_the_trust_was_kept_trusts_the_damaged_files_client_ca() {
    let (cluster, mut node) = configured_node();
    let state = node.root().join("system/state");
    // As an older release left it: no copy of the CAs, the config set aside, none running.
    std::fs::remove_dir_all(state.join("trust")).unwrap();
    let stored = String::from_utf8(node.stored_config().unwrap()).unwrap();
    std::fs::write(state.join("config.invalid.yaml"), format!("{stored}\nretired: true\n"))
        .unwrap();
    std::fs::remove_file(state.join("config.yaml")).unwrap();
    node.restart().unwrap();
    let n = node.address.as_str();

    assert!(node.output().contains("as read from"), "{}", node.output());
    let version = ctl(None, &["--insecure", "-n", n, "version"]).ok().stdout;
    assert!(version.contains("is missing, though the node was configured"), "{version}");
    let good = cluster.path("node.yaml");
    let anyone = ctl(None, &["--insecure", "-n", n, "apply-config", "-f", good.to_str().unwrap()]);
    let anyone = anyone.failed();
    assert!(anyone.stderr.contains("recovery mode"), "{}", anyone.stderr);
    ctl(Some(&cluster.admin()), &["-n", n, "apply-config", "-f", good.to_str().unwrap()]).ok();
    assert!(node.stored_config().is_some());
    assert!(state.join("trust/client-ca.crt").exists(), "the trust was not kept again");
}

/// node.yaml with `machine.clientCa.crt` replaced by `crt(client CA, node CA)`.
fn with_client_ca(cluster: &Cluster, name: &str, crt: impl Fn(&str, &str) -> String) -> String {
    let path = cluster.node_config_with(name, |text| {
        let mut config: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let client = config["machine"]["clientCa"]["crt"].as_str().unwrap().to_string();
        let node = config["machine"]["nodeCa"]["crt"].as_str().unwrap().to_string();
        config["machine"]["clientCa"]["crt"] = crt(&client, &node).into();
        serde_yaml::to_string(&config).unwrap()
    });
    path.to_str().unwrap().to_string()
}

#[test]
fn a_client_ca_that_holds_the_node_ca_is_refused_everywhere() {
    let (cluster, node) = configured_node();
    let (admin, n) = (cluster.admin(), node.address.as_str());
    let stored = node.stored_config().unwrap();
    // The node CA's key is on every node: whatever it signs must never pass as a client.
    let forged = cluster
        .client_signed_by("nodeCa", "os:admin", time::Duration::hours(-1), time::Duration::hours(1))
        .unwrap();
    ctl(Some(&forged), &["-n", n, "version"]).failed();

    let disguises = [
        with_client_ca(&cluster, "bundled.yaml", |client, node| format!("{client}{node}")),
        with_client_ca(&cluster, "crlf.yaml", |_, node| node.replace('\n', "\r\n") + "\n\n"),
    ];
    for config in &disguises {
        let local = ctl(None, &["validate", "-f", config.as_str()]).failed();
        assert!(
            local.stderr.contains("machine.clientCa.crt: has the public key of machine.nodeCa"),
            "{config}: {}",
            local.stderr
        );
        let applied = ctl(Some(&admin), &["-n", n, "apply-config", "-f", config.as_str()]).failed();
        assert!(
            applied.stderr.contains("machine.clientCa.crt: has the public key of machine.nodeCa"),
            "{config}: {}",
            applied.stderr
        );
    }
    assert_eq!(node.stored_config().unwrap(), stored);
    ctl(Some(&forged), &["-n", n, "version"]).failed();
    ctl(Some(&admin), &["-n", n, "version"]).ok();
}
