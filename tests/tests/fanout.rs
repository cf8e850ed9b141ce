//! One command, many nodes.

use cairn_tests::{ctl, free_port, Cluster, Node};

#[test]
fn fan_out_reports_every_node_and_fails_when_one_is_down() {
    let cluster = Cluster::generate("fleet").unwrap();
    let config = cluster.path("node.yaml");
    let nodes: Vec<Node> = (0..2).map(|_| Node::start().unwrap()).collect();
    for node in &nodes {
        node.configure(&config);
    }
    let down = format!("127.0.0.1:{}", free_port());
    let list = format!("{},{},{}", nodes[0].address, down, nodes[1].address);

    let run = ctl(Some(&cluster.admin()), &["-n", &list, "version"]).failed();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("NODE"), "{}", run.stdout);
    for node in &nodes {
        assert!(
            lines.iter().any(|l| l.starts_with(&node.address) && l.contains("configured")),
            "{}",
            run.stdout
        );
    }
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert_eq!(
        run.stderr.trim(),
        format!("error: node {down}: connection refused (is machined running and listening on that port?)")
    );

    let json = ctl(Some(&cluster.admin()), &["-n", &list, "-o", "json", "services"]).failed();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(rows.len(), 10, "five services on each of two nodes: {}", json.stdout);
    assert!(rows.iter().all(|r| r["node"] != down.as_str()));
}
