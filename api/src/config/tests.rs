use super::*;

fn ca_pem() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("      {l}\n")).collect()
}

fn config_yaml(machine_extra: &str) -> String {
    let (client_crt, _) = ca_pem();
    let (node_crt, node_key) = ca_pem();
    format!(
        "version: v1alpha1\nmachine:\n  clientCa:\n    crt: |\n{}  nodeCa:\n    crt: |\n{}    key: |\n{}{machine_extra}",
        indent(&client_crt),
        indent(&node_crt),
        indent(&node_key)
    )
}

#[test]
fn minimal_config_is_valid_and_round_trips() {
    let yaml = config_yaml("  hostname: edge-1\n");
    let config = MachineConfig::from_yaml(yaml.as_bytes()).unwrap();
    assert_eq!(config.machine.hostname.as_deref(), Some("edge-1"));
    let again = MachineConfig::from_yaml(config.to_yaml().as_bytes()).unwrap();
    assert_eq!(again, config);
}

#[test]
fn unknown_field_names_its_path() {
    let yaml =
        config_yaml("  network:\n    interfaces:\n      - interface: eth0\n        dhcpp: true\n");
    let err = MachineConfig::from_yaml(yaml.as_bytes()).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("machine.network.interfaces[0]: unknown field `dhcpp`"), "{text}");
    assert!(text.contains("unknown field `dhcpp`"), "{text}");
}

#[test]
fn a_wipe_needs_a_disk() {
    let ok = config_yaml("  ephemeral: {disk: /dev/vda, wipe: true}\n");
    let config = MachineConfig::from_yaml(ok.as_bytes()).unwrap();
    assert_eq!(config.machine.ephemeral.disk.as_deref(), Some("/dev/vda"));
    let yaml = config_yaml("  ephemeral: {wipe: true}\n");
    let err = MachineConfig::from_yaml(yaml.as_bytes()).unwrap_err();
    assert_eq!(
        err.problems(),
        ["machine.ephemeral.wipe: true without machine.ephemeral.disk: there is no disk to wipe"]
    );
}

#[test]
fn unknown_version_is_refused() {
    let yaml = config_yaml("").replace("v1alpha1", "v9");
    let err = MachineConfig::from_yaml(yaml.as_bytes()).unwrap_err();
    assert!(err.to_string().starts_with("version: unknown variant `v9`"), "{err}");
}

#[test]
fn every_value_problem_is_reported_with_its_path() {
    let yaml = config_yaml(concat!(
        "  hostname: -bad-\n",
        "  network:\n",
        "    interfaces:\n",
        "      - interface: eth0\n",
        "        addresses: [10.0.0.5/24, 10.0.0.300/24]\n",
        "        routes: [{network: 0.0.0.0/0, gateway: nope}, {network: 10.1.0.1/16},\n",
        "                 {network: \"::/0\", gateway: 10.0.0.1}]\n",
        "      - interface: eth0\n",
        "    nameservers: [1.1.1.1, dns.example]\n",
        "  files: [{path: /etc/passwd, content: x}, {path: /var//etc/passwd, content: x}]\n",
        "  update: {trustedKeys: [abc], healthDeadlineSeconds: 5}\n",
        "  ephemeral: {disk: vda, wipe: true}\n",
        "  kubelet: {nodeLabels: {zone: shed-3, kubernetes.io/arch: arm, \"bad key\": x}}\n",
        "  pods:\n",
        "    - apiVersion: v1\n",
        "      kind: Pod\n",
        "      metadata: {name: Web}\n",
        "      spec: {containers: [{name: web}]}\n",
    ));
    let err = MachineConfig::from_yaml(yaml.as_bytes()).unwrap_err();
    let problems = err.problems();
    let expected = [
        "machine.hostname: \"-bad-\" is not a valid host name",
        "machine.network.interfaces[0].addresses[1]: \"10.0.0.300/24\" is not an IP network",
        "machine.network.interfaces[0].routes[0].gateway: \"nope\" is not an IP address",
        "machine.network.interfaces[0].routes[1].network: \"10.1.0.1/16\" has host bits set; the network is 10.1.0.0/16",
        "machine.network.interfaces[0].routes[2].gateway: \"10.0.0.1\" is not of the same IP version as \"::/0\"",
        "machine.network.interfaces[1].interface: \"eth0\" is configured more than once",
        "machine.network.nameservers[1]: \"dns.example\" is not an IP address",
        "machine.files[0].path: \"/etc/passwd\" must be an absolute path under /var/",
        "machine.files[1].path: \"/var//etc/passwd\" must be an absolute path under /var/",
        "machine.update.trustedKeys[0]: is not an ed25519 public key",
        "machine.update.healthDeadlineSeconds: 5 is not between 30 and 86400",
        "machine.ephemeral.disk: \"vda\" is not a device path under /dev/",
        "machine.kubelet.nodeLabels.\"bad key\": \"bad key\" is no label key",
        "machine.kubelet.nodeLabels.\"kubernetes.io/arch\": is a label the node sets of itself",
        "machine.pods[0].metadata.name: \"Web\" is not a DNS label",
        "machine.pods[0].spec.containers[0].image: is required",
    ];
    for want in expected {
        assert!(problems.iter().any(|p| p.starts_with(want)), "missing {want:?} in {problems:#?}");
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
}

#[test]
fn pods_are_decoded_strictly_among_the_other_problems() {
    let pod = "    - apiVersion: v1\n      kind: Pod\n      metadata: {name: web}\n      spec:\n";
    let yaml = config_yaml(&format!(
        "  hostname: -bad-\n  pods:\n{pod}{}{pod}{}",
        "        ephemeralContainers: [{name: debug, image: busybox}]\n        containers: [{name: web, image: busybox, imagePullPolcy: Always}]\n",
        "        containers: [{name: web, image: busybox, resources: {limits: {memory: 64Mi}}}]\n",
    ));
    let problems = MachineConfig::from_yaml(yaml.as_bytes()).unwrap_err().problems();
    assert_eq!(
        problems[1..],
        [
            "machine.pods[0].spec.ephemeralContainers: not supported by Cairn's kubelet",
            "machine.pods[0].spec.containers[0].imagePullPolcy: unknown field",
            "machine.pods[1].metadata.name: default/web is defined more than once",
        ]
    );
    assert!(problems[0].starts_with("machine.hostname: "), "{problems:?}");

    // Without the YAML as written, validate still refuses what the kubelet does not support.
    let mut config = MachineConfig::from_yaml(config_yaml("").as_bytes()).unwrap();
    let pod = format!("{pod}        ephemeralContainers: [{{name: debug, image: busybox}}]\n        containers: [{{name: web, image: busybox}}]\n");
    config.machine.pods = serde_yaml::from_str(&pod).unwrap();
    let problems: Vec<String> = config.validate().iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        ["machine.pods[0].spec.ephemeralContainers: not supported by Cairn's kubelet"]
    );
}

#[test]
fn unquoted_decimal_quantities_read_as_written_and_hide_no_other_problem() {
    let pod = concat!(
        "    - apiVersion: v1\n      kind: Pod\n      metadata: {name: web}\n      spec:\n",
        "        containers:\n",
        "          - name: web\n            image: busybox\n",
        "            resources: {limits: {cpu: 0.15, memory: 1e9}, requests: {cpu: .1}}\n",
    );
    let yaml = config_yaml(&format!("  pods:\n{pod}"));
    let config = MachineConfig::from_yaml(yaml.as_bytes()).unwrap();
    let resources = config.machine.pods[0].spec.as_ref().unwrap().containers[0].resources.clone();
    let limits = resources.unwrap().limits.unwrap();
    assert_eq!((limits["cpu"].0.as_str(), limits["memory"].0.as_str()), ("0.15", "1e9"));

    // Beside other problems, those are what the error names: serde's with its line.
    let misspelt = yaml.replace("image: busybox", "image: busybox\n            imagePullPolcy: x");
    let problems = MachineConfig::from_yaml(misspelt.as_bytes()).unwrap_err().problems();
    assert_eq!(problems, ["machine.pods[0].spec.containers[0].imagePullPolcy: unknown field"]);
    let late = yaml.replace("image: busybox", "image: busybox\n            stdin: later");
    let text = MachineConfig::from_yaml(late.as_bytes()).unwrap_err().to_string();
    let line = late.lines().position(|l| l.contains("stdin")).unwrap() + 1;
    assert!(text.contains("stdin: invalid type: string \"later\""), "{text}");
    assert!(text.contains(&format!("line {line} ")), "{text}");

    // A pod manifest of its own too.
    let manifest: String = pod.lines().map(|l| format!("{}\n", &l[6..])).collect();
    let decoded = pod::decode_pod(manifest.as_bytes(), "web.yaml").unwrap();
    let limits = decoded.spec.unwrap().containers[0].resources.clone().unwrap().limits.unwrap();
    assert_eq!(limits["cpu"].0, "0.15");
}

#[test]
fn client_ca_is_certificates_only_and_node_ca_has_a_key() {
    let (client_crt, client_key) = ca_pem();
    let (second_crt, _) = ca_pem();
    let yaml = format!(
        "version: v1alpha1\nmachine:\n  clientCa:\n    crt: |\n{}    key: |\n{}  nodeCa:\n    crt: not a pem\n",
        indent(&client_crt),
        indent(&client_key)
    );
    let problems = MachineConfig::from_yaml(yaml.as_bytes()).unwrap_err().problems();
    for want in [
        "machine.clientCa.key: must not be on the node",
        "machine.nodeCa.crt: is not a PEM certificate",
        "machine.nodeCa.key: is required",
    ] {
        assert!(problems.iter().any(|p| p.starts_with(want)), "missing {want:?} in {problems:#?}");
    }
    assert_eq!(problems.len(), 3, "{problems:#?}");

    // A bundle of two client CAs (a rotation under way) is fine; the node CA among them is not,
    // nor the same CA on both sides (this test used to accept the first: a text comparison).
    let (node_crt, node_key) = ca_pem();
    let with_client_ca = |crt: &str| {
        format!(
            "version: v1alpha1\nmachine:\n  clientCa:\n    crt: |\n{}  nodeCa:\n    crt: |\n{}    key: |\n{}",
            indent(crt),
            indent(&node_crt),
            indent(&node_key)
        )
    };
    MachineConfig::from_yaml(with_client_ca(&format!("{client_crt}{second_crt}")).as_bytes())
        .unwrap();
    for client in [format!("{client_crt}{node_crt}"), node_crt.clone()] {
        let problems =
            MachineConfig::from_yaml(with_client_ca(&client).as_bytes()).unwrap_err().problems();
        assert!(
            problems.len() == 1
                && problems[0]
                    .starts_with("machine.clientCa.crt: has the public key of machine.nodeCa"),
            "{problems:?}"
        );
    }
}

#[test]
fn single_ca_configs_are_refused_with_directions() {
    let (crt, key) = ca_pem();
    let yaml = format!(
        "version: v1alpha1\nmachine:\n  ca:\n    crt: |\n{}    key: |\n{}",
        indent(&crt),
        indent(&key)
    );
    let error = MachineConfig::from_yaml(yaml.as_bytes()).unwrap_err().to_string();
    assert_eq!(error, SINGLE_CA);
    assert!(error.contains("ctl gen config"), "{error}");
}

#[test]
fn redaction_hides_secrets_only() {
    let yaml = config_yaml(concat!(
        "  hostname: edge-1\n",
        "  files: [{path: /var/app/token, content: s3cret-file}]\n",
        "  registries: {mirrors: {docker.io: {endpoints: [\"https://bob:pw@mirror.local/v2\", \"http://open.local\"]}}}\n",
        "  pods:\n  - apiVersion: v1\n    kind: Pod\n    metadata: {name: web}\n",
        "    spec: {containers: [{name: web, image: busybox, env: [{name: PASSWORD, value: s3cret-env}]}]}\n",
        "cluster:\n  controlPlane: {endpoint: \"https://10.0.0.1:6443\"}\n  token: abcdef.0123456789abcdef\n",
    ));
    let config = MachineConfig::from_yaml(yaml.as_bytes()).unwrap();
    let redacted = config.redacted();
    let text = redacted.to_yaml();
    for secret in ["s3cret-file", "s3cret-env", "bob:pw"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(text.contains("https://******@mirror.local/v2") && text.contains("http://open.local"));
    assert!(text.contains("name: PASSWORD") && text.contains("/var/app/token"), "{text}");
    assert_eq!(redacted.machine.node_ca.key.as_deref(), Some(REDACTED));
    assert_eq!(redacted.cluster.as_ref().unwrap().token.as_deref(), Some(REDACTED));
    assert_eq!(redacted.machine.node_ca.crt, config.machine.node_ca.crt);
    assert!(!redacted.to_yaml().contains("PRIVATE KEY"));
}

#[test]
fn errors_do_not_echo_huge_values() {
    let yaml = config_yaml(&format!("  hostname: {}\n", "a".repeat(1024 * 1024 - 8192)));
    let error = MachineConfig::from_yaml(yaml.as_bytes()).unwrap_err().to_string();
    assert!(
        error.contains("machine.hostname") && error.contains("more bytes left out"),
        "{error:.300}"
    );
    assert!(error.len() < 1024, "{} bytes", error.len());
    let many: String = (0..500).map(|_| "  - \"bad name!\"\n").collect();
    let error = MachineConfig::from_yaml(config_yaml(&format!("  certSans:\n{many}")).as_bytes())
        .unwrap_err()
        .to_string();
    assert!(error.contains("... and 450 more"), "{error:.300}");
}

#[test]
fn registry_mirror_keys_must_be_hosts() {
    let yaml = config_yaml(concat!(
        "  registries:\n    mirrors:\n",
        "      \"../../../../system/state/escaped\": {endpoints: [\"http://10.0.2.2:5000\"]}\n",
        "      \"localhost:5000\": {endpoints: [\"http://10.0.2.2:5000\"]}\n",
        "      \"*\": {endpoints: [\"http://10.0.2.2:5000\"]}\n",
    ));
    let problems = MachineConfig::from_yaml(yaml.as_bytes()).unwrap_err().problems();
    assert_eq!(
        problems,
        ["machine.registries.mirrors.\"../../../../system/state/escaped\": \"../../../../system/state/escaped\" is not a registry host (HOST or HOST:PORT, an IPv6 address in brackets) or \"*\""]
    );
}

#[test]
fn the_configs_objects_may_not_run_more_pods_than_a_node_does() {
    let deployment = |replicas: u32| {
        format!(
            "  objects:\n    - {{apiVersion: apps/v1, kind: Deployment, metadata: {{name: web}}, spec: {{replicas: {replicas}, selector: {{matchLabels: {{a: b}}}}, template: {{metadata: {{labels: {{a: b}}}}, spec: {{containers: [{{name: c, image: i}}]}}}}}}}}\n"
        )
    };
    assert!(MachineConfig::from_yaml(config_yaml(&deployment(110)).as_bytes()).is_ok());
    let pod = "    - {apiVersion: v1, kind: Pod, metadata: {name: one}, spec: {containers: [{name: c, image: i}]}}\n";
    let too_many = config_yaml(&format!("{}  pods:\n{pod}", deployment(110)));
    let problems = MachineConfig::from_yaml(too_many.as_bytes()).unwrap_err().problems();
    assert_eq!(
        problems,
        ["machine.objects: with machine.pods, would run 111 pods; a node runs at most 110"]
    );
}
