//! Who gets in, and what each role may do.

use cairn_tests::{configured_node, ctl, Cluster};

#[test]
fn clients_without_a_valid_certificate_are_refused() {
    let (cluster, node) = configured_node();
    let n = node.address.as_str();

    let anonymous = ctl(None, &["-i", "-n", n, "version"]).failed();
    assert!(anonymous.stderr.contains("requires a client certificate"), "{}", anonymous.stderr);

    let other = Cluster::generate("other").unwrap();
    let foreign = ctl(Some(&other.admin()), &["-n", n, "version"]).failed();
    // Its CA does not trust the node either; both sides refuse.
    assert!(foreign.stderr.contains(&format!("error: node {n}: TLS:")), "{}", foreign.stderr);

    // A certificate from another CA, with the right CA to trust the node: the node refuses it.
    let foreign_cert = {
        let mut text = std::fs::read_to_string(other.admin()).unwrap();
        let ours: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(cluster.admin()).unwrap()).unwrap();
        let mut theirs: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        theirs["contexts"]["other"]["ca"] = ours["contexts"]["edge"]["ca"].clone();
        text = serde_yaml::to_string(&theirs).unwrap();
        let path = cluster.path("foreign");
        std::fs::write(&path, text).unwrap();
        path
    };
    let refused = ctl(Some(&foreign_cert), &["-n", n, "version"]).failed();
    assert!(refused.stderr.contains("refused our client certificate"), "{}", refused.stderr);

    let expired = cluster
        .client_valid_between("os:admin", time::Duration::days(-30), time::Duration::days(-1))
        .unwrap();
    let refused = ctl(Some(&expired), &["-n", n, "version"]).failed();
    assert!(refused.stderr.contains("refused our client certificate"), "{}", refused.stderr);

    // What a stolen node holds: the node CA's key. A certificate it signs is no client's.
    let from_stolen_node = cluster
        .client_signed_by("nodeCa", "os:admin", time::Duration::hours(-1), time::Duration::hours(1))
        .unwrap();
    let refused = ctl(Some(&from_stolen_node), &["-n", n, "version"]).failed();
    assert!(refused.stderr.contains("refused our client certificate"), "{}", refused.stderr);
    let node_config = std::fs::read_to_string(cluster.path("node.yaml")).unwrap();
    let secrets = std::fs::read_to_string(cluster.path("secrets.yaml")).unwrap();
    let client_ca_key: serde_yaml::Value = serde_yaml::from_str(&secrets).unwrap();
    let client_ca_key = client_ca_key["clientCa"]["key"].as_str().unwrap();
    assert!(!node_config.contains(client_ca_key.trim()), "the client CA's key is on the node");

    let no_role = cluster
        .client_valid_between("acme", time::Duration::hours(-1), time::Duration::hours(1))
        .unwrap();
    let refused = ctl(Some(&no_role), &["-n", n, "version"]).failed();
    assert!(refused.stderr.contains("grants no role"), "{}", refused.stderr);

    // Still healthy for a proper admin.
    ctl(Some(&cluster.admin()), &["-n", n, "version"]).ok();
}

#[test]
fn roles_limit_what_clients_may_do() {
    let (cluster, node) = configured_node();
    let n = node.address.as_str();
    let admin = cluster.admin();
    let operator = cluster.client("os:operator");
    let reader = cluster.client("os:reader");
    let config = cluster.path("node.yaml");
    let config = config.to_str().unwrap();
    let state_file = node.root().join("system/state/config.yaml");
    let state_file = state_file.to_str().unwrap();

    // Readers read, but never secrets, and change nothing.
    for args in
        [vec!["version"], vec!["services"], vec!["stats"], vec!["events"], vec!["logs", "machined"]]
    {
        let mut full = vec!["-n", n];
        full.extend(args);
        ctl(Some(&reader), &full).ok();
    }
    let redacted = ctl(Some(&reader), &["-n", n, "get-config"]).ok().stdout;
    assert!(redacted.contains("******") && !redacted.contains("PRIVATE KEY"), "{redacted}");
    assert!(redacted.contains("secrets redacted"), "{redacted}");
    let denied = |who: &std::path::Path, args: &[&str], needs: &str| {
        let mut full = vec!["-n", n];
        full.extend_from_slice(args);
        let run = ctl(Some(who), &full).failed();
        assert!(
            run.stderr.contains("permission denied") && run.stderr.contains(needs),
            "{args:?}: {}",
            run.stderr
        );
    };
    denied(&reader, &["apply-config", "-f", config], "needs os:admin");
    denied(&reader, &["reboot"], "needs os:operator");
    denied(&reader, &["shutdown"], "needs os:operator");
    denied(&reader, &["service", "logflush", "restart"], "needs os:operator");
    denied(&reader, &["read", state_file], "needs os:admin");

    // Operators also run services, but may not configure or see secrets.
    ctl(Some(&operator), &["-n", n, "service", "logflush", "stop"]).ok();
    ctl(Some(&operator), &["-n", n, "service", "logflush", "start"]).ok();
    ctl(Some(&operator), &["-n", n, "service", "logflush", "restart"]).ok();
    let apid = ctl(Some(&operator), &["-n", n, "service", "apid", "stop"]).failed();
    assert!(apid.stderr.contains("cannot be stopped"), "{}", apid.stderr);
    let unknown = ctl(Some(&operator), &["-n", n, "service", "nope", "start"]).failed();
    assert!(unknown.stderr.contains("unknown service"), "{}", unknown.stderr);
    denied(&operator, &["apply-config", "-f", config], "needs os:admin");
    denied(&operator, &["read", state_file], "needs os:admin");
    assert!(!ctl(Some(&operator), &["-n", n, "get-config"]).ok().stdout.contains("PRIVATE KEY"));

    // Admins see everything.
    assert!(ctl(Some(&admin), &["-n", n, "get-config"]).ok().stdout.contains("PRIVATE KEY"));
    assert!(ctl(Some(&admin), &["-n", n, "read", state_file]).ok().stdout.contains("PRIVATE KEY"));
    ctl(Some(&admin), &["-n", n, "apply-config", "-f", config]).ok();
}

#[test]
fn readers_reach_only_places_without_secrets() {
    let (cluster, node) = configured_node();
    let n = node.address.as_str();
    let (admin, reader) = (cluster.admin(), cluster.client("os:reader"));
    let root = node.root();
    let at = |path: &str| root.join(path).to_str().unwrap().to_string();
    // What containerd keeps of a container (its env among it), and a pod's link to it from
    // the one place on /var readers may read.
    let spec = root.join("run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/config.json");
    std::fs::create_dir_all(spec.parent().unwrap()).unwrap();
    std::fs::write(&spec, r#"{"env": ["PASSWORD=s3cret"]}"#).unwrap();
    std::fs::create_dir_all(root.join("var/log")).unwrap();
    std::os::unix::fs::symlink(root.join("run/containerd"), root.join("var/log/run")).unwrap();
    std::fs::create_dir_all(root.join("usr/share")).unwrap();
    std::fs::write(root.join("usr/share/notes"), "public").unwrap();

    let refused = |args: &[&str], why: &str| {
        let mut full = vec!["-n", n];
        full.extend_from_slice(args);
        let run = ctl(Some(&reader), &full).failed();
        assert!(run.stderr.contains("permission denied"), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(why) && run.stderr.contains("needs os:admin"),
            "{args:?}: {}",
            run.stderr
        );
    };
    let spec_path = spec.to_str().unwrap();
    let through_link = at("var/log/run/io.containerd.runtime.v2.task/k8s.io/abc/config.json");
    refused(&["read", spec_path], "is outside the places readers may read");
    refused(&["read", &through_link], "is outside the places readers may read");
    refused(&["read", &at("machined.out")], "is outside the places readers may read");
    refused(&["read", "/proc/1/environ"], "belongs to a process");
    refused(&["ls", &at("system/state")], "is on STATE");
    refused(&["ls", &at("run/containerd")], "is outside the places readers may read");
    refused(&["ls", "/proc/self/fd"], "belongs to a process");

    // Allowed places still read, and a listing shows the way to them, nothing else.
    let notes = ctl(Some(&reader), &["-n", n, "read", &at("usr/share/notes")]).ok().stdout;
    assert_eq!(notes, "public");
    let meminfo = ctl(Some(&reader), &["-n", n, "read", "/proc/meminfo"]).ok().stdout;
    assert!(meminfo.contains("MemTotal:"), "{meminfo}");
    let status = ctl(Some(&reader), &["-n", n, "read", "/proc/self/status"]).ok().stdout;
    assert!(status.contains("Name:\tmachined"), "{status}");
    let listing = ctl(Some(&reader), &["-n", n, "ls", &at(""), "--depth", "-1"]).ok().stdout;
    assert!(listing.contains("usr/share/notes") && listing.contains("var/log/run ->"), "{listing}");
    for hidden in ["system", "config.yaml", "machined.out", "io.containerd"] {
        assert!(!listing.contains(hidden), "{hidden} in {listing}");
    }
    let process = ctl(Some(&reader), &["-n", n, "ls", "/proc/self/"]).ok().stdout;
    assert!(process.contains("/proc/self ->"), "{process}");

    // Admins read everything, as before.
    let read = ctl(Some(&admin), &["-n", n, "read", &through_link]).ok().stdout;
    assert!(read.contains("s3cret"), "{read}");
    let state = ctl(Some(&admin), &["-n", n, "ls", &at("system/state")]).ok().stdout;
    assert!(state.contains("config.yaml"), "{state}");
    ctl(Some(&admin), &["-n", n, "ls", "/proc/self/fd"]).ok();
}
