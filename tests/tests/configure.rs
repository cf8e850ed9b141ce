//! A node's life with its config: maintenance mode, first apply, mTLS, restarts, modes.

use std::process::Command;
use std::time::Duration;

use cairn_tests::{
    configured_node, ctl, eventually, services_not_ready, serving_cert_names, Cluster, Node,
};

fn version_field(
    ctlconfig: Option<&std::path::Path>,
    node: &Node,
    insecure: bool,
    field: &str,
) -> String {
    let mut args = vec!["-n", node.address.as_str(), "-o", "json", "version"];
    if insecure {
        args.insert(0, "--insecure");
    }
    let run = ctl(ctlconfig, &args).ok();
    let rows: serde_json::Value = serde_json::from_str(&run.stdout).expect("json output");
    rows[0][field].as_str().map(str::to_string).unwrap_or_else(|| rows[0][field].to_string())
}

#[test]
fn maintenance_apply_then_mutual_tls_and_state_survives_restart() {
    let cluster = Cluster::generate("edge").unwrap();
    let admin = cluster.admin();
    let mut node = Node::start().unwrap();
    let n = node.address.clone();

    // Maintenance mode: anonymous TLS, three calls only.
    assert_eq!(version_field(None, &node, true, "mode"), "maintenance");
    ctl(None, &["-i", "-n", &n, "disks"]).ok();
    let refused = ctl(None, &["-i", "-n", &n, "services"]).failed();
    assert!(refused.stderr.contains("maintenance mode"), "{}", refused.stderr);
    // Without --insecure the self-signed maintenance certificate is not trusted.
    let untrusted = ctl(Some(&admin), &["-n", &n, "version"]).failed();
    assert!(
        untrusted.stderr.contains("not signed by this context's node CA")
            && untrusted.stderr.contains("--fingerprint"),
        "{}",
        untrusted.stderr
    );

    let node_yaml = cluster.path("node.yaml");
    let applied =
        ctl(None, &["-i", "-n", &n, "apply-config", "--file", node_yaml.to_str().unwrap()]).ok();
    assert!(applied.stdout.contains("applied"), "{}", applied.stdout);

    // Configured: mTLS with the config's CA; anonymous callers are turned away at TLS, and told why.
    assert_eq!(version_field(Some(&admin), &node, false, "mode"), "configured");
    let anonymous = ctl(None, &["-i", "-n", &n, "version"]).failed();
    assert!(anonymous.stderr.contains("requires a client certificate"), "{}", anonymous.stderr);
    let services = ctl(Some(&admin), &["-n", &n, "services"]).ok().stdout;
    assert!(services.starts_with("NODE"), "{services}");
    let vital = ["apid", "logflush", "addresses", "serving-cert", "settings"];
    assert_eq!(services_not_ready(Some(&admin), &n, &vital), Vec::<String>::new());

    // A hard kill and restart keeps the config: still configured, still mTLS.
    node.restart().unwrap();
    assert_eq!(version_field(Some(&admin), &node, false, "mode"), "configured");
    let logs = ctl(Some(&admin), &["-n", &n, "logs", "machined", "--tail", "50"]).ok().stdout;
    assert!(logs.contains("machined 0.1.0 starting"), "{logs}");
    let events = ctl(Some(&admin), &["-n", &n, "events"]).ok().stdout;
    assert!(events.contains("apid: Ready"), "{events}");
    let status = ctl(Some(&admin), &["-n", &n, "read", "/proc/self/status"]).ok().stdout;
    assert!(status.contains("Name:\tmachined"), "{status}");
    ctl(Some(&admin), &["-n", &n, "stats"]).ok();
    ctl(Some(&admin), &["-n", &n, "mounts"]).ok();
    let listing =
        ctl(Some(&admin), &["-n", &n, "ls", node.root().to_str().unwrap(), "--depth", "-1"])
            .ok()
            .stdout;
    assert!(listing.contains("system/state/config.yaml"), "{listing}");
    // Times as people read them, RFC 3339 UTC, in a table and in JSON alike.
    let today = format!("{}T", time::OffsetDateTime::now_utc().date());
    let config_row = listing.lines().find(|l| l.contains("system/state/config.yaml")).unwrap();
    assert!(config_row.split_whitespace().any(|w| w.starts_with(&today)), "{config_row}");
    let state = node.root().join("system/state");
    let json = ctl(Some(&admin), &["-n", &n, "-o", "json", "ls", state.to_str().unwrap()]).ok();
    let entries: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).unwrap();
    let modified = entries[0]["modified"].as_str().unwrap_or_default();
    assert!(modified.starts_with(&today) && modified.ends_with('Z'), "{}", json.stdout);
}

#[test]
fn invalid_config_is_rejected_with_paths_and_changes_nothing() {
    let cluster = Cluster::generate("edge").unwrap();
    let admin = cluster.admin();
    let node = Node::start().unwrap();
    let n = node.address.clone();
    let bad = cluster.node_config_with("bad.yaml", |text| {
        text + "  hostname: -nope-\n  network:\n    interfaces:\n      - interface: eth0\n        addresses: [10.0.0.5/24, 10.0.0.300/24]\n"
    });

    // Refused in maintenance mode: still in maintenance, nothing stored.
    let rejected =
        ctl(None, &["-i", "-n", &n, "apply-config", "-f", bad.to_str().unwrap()]).failed();
    assert!(
        rejected.stderr.contains(
            r#"machine.network.interfaces[0].addresses[1]: "10.0.0.300/24" is not an IP network"#
        ),
        "{}",
        rejected.stderr
    );
    assert!(rejected.stderr.contains("machine.hostname:"), "{}", rejected.stderr);
    assert!(node.stored_config().is_none());
    assert_eq!(version_field(None, &node, true, "mode"), "maintenance");

    // Refused when configured: the stored config and the running one are untouched.
    let good = cluster.path("node.yaml");
    node.configure(&good);
    let stored = node.stored_config().unwrap();
    let running = ctl(Some(&admin), &["-n", &n, "get-config"]).ok().stdout;
    let events_before = ctl(Some(&admin), &["-n", &n, "events"]).ok().stdout.lines().count();
    let rejected =
        ctl(Some(&admin), &["-n", &n, "apply-config", "-f", bad.to_str().unwrap()]).failed();
    assert!(rejected.stderr.contains("rejected: invalid config"), "{}", rejected.stderr);
    let unknown = cluster.node_config_with("unknown.yaml", |text| text + "  hostnme: typo\n");
    let rejected =
        ctl(Some(&admin), &["-n", &n, "apply-config", "-f", unknown.to_str().unwrap()]).failed();
    assert!(rejected.stderr.contains("unknown field `hostnme`"), "{}", rejected.stderr);
    assert_eq!(node.stored_config().unwrap(), stored);
    assert_eq!(ctl(Some(&admin), &["-n", &n, "get-config"]).ok().stdout, running);
    assert_eq!(ctl(Some(&admin), &["-n", &n, "events"]).ok().stdout.lines().count(), events_before);

    // ctl validate says the same without a node.
    let local = ctl(None, &["validate", "-f", bad.to_str().unwrap()]).failed();
    assert!(
        local.stderr.contains("machine.network.interfaces[0].addresses[1]"),
        "{}",
        local.stderr
    );
    ctl(None, &["validate", "-f", good.to_str().unwrap()]).ok();
}

#[test]
fn try_mode_reverts_after_its_timeout() {
    let cluster = Cluster::generate("edge").unwrap();
    let admin = cluster.admin();
    let node = Node::start().unwrap();
    let n = node.address.clone();
    let first = cluster.node_config_with("first.yaml", |text| text + "  hostname: first\n");
    let trial = cluster.node_config_with("trial.yaml", |text| text + "  hostname: trial\n");

    // No previous config to return to: try is refused in maintenance mode.
    let refused = ctl(
        None,
        &["-i", "-n", &n, "apply-config", "-f", trial.to_str().unwrap(), "--mode", "try"],
    )
    .failed();
    assert!(refused.stderr.contains("needs a previous config"), "{}", refused.stderr);

    node.configure(&first);
    let stored = node.stored_config().unwrap();
    let tried = ctl(
        Some(&admin),
        &[
            "-n",
            &n,
            "apply-config",
            "-f",
            trial.to_str().unwrap(),
            "--mode",
            "try",
            "--timeout",
            "2s",
        ],
    )
    .ok();
    assert!(tried.stdout.contains("machine.hostname"), "{}", tried.stdout);
    assert_eq!(version_field(Some(&admin), &node, false, "hostname"), "trial");
    // A trial is never stored: a reboot during it would also bring the old config back.
    assert_eq!(node.stored_config().unwrap(), stored);
    assert!(
        eventually(Duration::from_secs(15), || version_field(
            Some(&admin),
            &node,
            false,
            "hostname"
        ) == "first"),
        "the trial config did not revert"
    );
    let events = ctl(Some(&admin), &["-n", &n, "events"]).ok().stdout;
    assert!(events.contains("restored after the trial ended"), "{events}");
}

#[test]
fn staged_and_dry_run_and_reboot_and_shutdown() {
    let cluster = Cluster::generate("edge").unwrap();
    let admin = cluster.admin();
    let mut node = Node::start().unwrap();
    let n = node.address.clone();
    let first = cluster.node_config_with("first.yaml", |text| text + "  hostname: first\n");
    let second = cluster.node_config_with("second.yaml", |text| text + "  hostname: second\n");
    let kernel = cluster.node_config_with("kernel.yaml", |text| {
        text + "  hostname: first\n  kernel: {args: [quiet]}\n"
    });
    node.configure(&first);

    // A dry run reports and changes nothing.
    let dry =
        ctl(Some(&admin), &["-n", &n, "apply-config", "-f", second.to_str().unwrap(), "--dry-run"])
            .ok();
    assert!(
        dry.stdout.contains("dry run") && dry.stdout.contains("machine.hostname"),
        "{}",
        dry.stdout
    );
    assert_eq!(version_field(Some(&admin), &node, false, "hostname"), "first");

    // no-reboot refuses what needs a reboot, and names it.
    let refused = ctl(
        Some(&admin),
        &["-n", &n, "apply-config", "-f", kernel.to_str().unwrap(), "--mode", "no-reboot"],
    )
    .failed();
    assert!(
        refused.stderr.contains("changes to machine.kernel need a reboot"),
        "{}",
        refused.stderr
    );

    // Staged: visible as staged, running only after the next start.
    ctl(
        Some(&admin),
        &["-n", &n, "apply-config", "-f", second.to_str().unwrap(), "--mode", "staged"],
    )
    .ok();
    assert!(ctl(Some(&admin), &["-n", &n, "get-config", "--staged"])
        .ok()
        .stdout
        .contains("hostname: second"));
    assert_eq!(version_field(Some(&admin), &node, false, "hostname"), "first");

    // Reboot (machined re-executes itself: same process, fresh start) promotes it.
    let pid = node.pid();
    ctl(Some(&admin), &["-n", &n, "reboot"]).ok();
    assert!(
        eventually(Duration::from_secs(20), || {
            ctl(Some(&admin), &["-n", &n, "-o", "json", "version"])
                .stdout
                .contains("\"hostname\": \"second\"")
        }),
        "the staged config did not take over after the reboot:\n{}",
        node.output()
    );
    assert_eq!(node.pid(), pid);
    let flushed = std::fs::read_to_string(node.root().join("var/log/machined.log")).unwrap();
    assert!(flushed.contains("reboot requested"), "{flushed}");

    // Shutdown ends the process cleanly.
    ctl(Some(&admin), &["-n", &n, "shutdown"]).ok();
    assert!(node.wait_exit(Duration::from_secs(15)).unwrap(), "machined did not exit cleanly");
}

#[test]
fn config_files_are_written_under_var_and_follow_changes() {
    use std::os::unix::fs::PermissionsExt;

    let cluster = Cluster::generate("edge").unwrap();
    let admin = cluster.admin();
    let node = Node::start().unwrap();
    let n = node.address.clone();
    let with_file = |name: &str, content: &str| {
        cluster.node_config_with(name, |text| {
            text + &format!(
                "  files:\n    - path: /var/lib/app/settings.conf\n      content: \"{content}\"\n      permissions: 0o600\n"
            )
        })
    };
    node.configure(&with_file("first.yaml", "level=1\\n"));
    let path = node.root().join("var/lib/app/settings.conf");
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(&path)
            .is_ok_and(|t| t == "level=1\n")),
        "{} was not written",
        path.display()
    );
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o600);

    // A live apply rewrites it; the service's log says what it did.
    let second = with_file("second.yaml", "level=2\\n");
    ctl(Some(&admin), &["-n", &n, "apply-config", "-f", second.to_str().unwrap()]).ok();
    assert!(eventually(Duration::from_secs(10), || std::fs::read_to_string(&path)
        .is_ok_and(|t| t == "level=2\n")));
    let logs = ctl(Some(&admin), &["-n", &n, "logs", "settings"]).ok().stdout;
    assert!(logs.contains("file /var/lib/app/settings.conf: written"), "{logs}");

    // What cannot be put into effect is in the reply, not only in the logs: a file whose
    // place a directory holds. The rest of the config is in effect; ctl exits 3.
    std::fs::create_dir_all(node.root().join("var/lib/app/blocked")).unwrap();
    let blocked = cluster.node_config_with("blocked.yaml", |text| {
        text + "  files:\n    - {path: /var/lib/app/settings.conf, content: \"level=3\\n\"}\n"
            + "    - {path: /var/lib/app/blocked, content: \"x\"}\n"
    });
    let run = ctl(Some(&admin), &["-n", &n, "apply-config", "-f", blocked.to_str().unwrap()]);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stdout.contains("applied"), "{run:?}");
    let warning = run.stderr.lines().find(|l| l.starts_with("warning: not in effect:"));
    assert!(warning.is_some_and(|w| w.contains("settings: file /var/lib/app/blocked")), "{run:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "level=3\n");
}

#[test]
fn the_serving_certificate_follows_the_node_addresses() {
    // An address comes and goes on the loopback link, as a DHCP lease would on eth0.
    let address = "127.0.0.77";
    let (_cluster, node) = configured_node();
    let ip = |verb: &str| {
        Command::new("ip").args(["addr", verb, &format!("{address}/32"), "dev", "lo"]).status()
    };
    if !ip("add").is_ok_and(|s| s.success()) {
        eprintln!("skipped: adding an address needs CAP_NET_ADMIN");
        return;
    }
    let names = || serving_cert_names(&node.address).unwrap();
    let gained = eventually(Duration::from_secs(15), || names().iter().any(|n| n == address));
    let removed = ip("del").is_ok_and(|s| s.success());
    assert!(gained, "the certificate does not name {address}: {:?}", names());
    assert!(removed);
    let lost = eventually(Duration::from_secs(15), || !names().iter().any(|n| n == address));
    assert!(lost, "the certificate still names {address}: {:?}", names());
    assert!(names().iter().any(|n| n == "127.0.0.1"), "{:?}", names());
}
