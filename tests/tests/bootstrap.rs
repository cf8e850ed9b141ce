//! Maintenance mode without trust on first use: a pinned certificate fingerprint, or a
//! bootstrap token both sides prove they know, bound to the TLS session so that a relay in
//! the middle gains nothing; and the token as the way back for a node in recovery mode.

use std::path::Path;
use std::sync::Arc;

use cairn_tests::{ctl, free_port, Cluster, CtlRun, Node};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "5f0c2a9e8b7d4c1a6e3f2b9d8c7a6b5e";

/// `ctl --insecure apply-config` of `config` to `node`, proving the token in `token`.
fn apply_with_token(node: &str, config: &str, token: &Path) -> CtlRun {
    let token = token.to_str().unwrap();
    ctl(None, &["-i", "-n", node, "apply-config", "-f", config, "--bootstrap-token-file", token])
}

fn with_token(root: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join("etc/cairn"))?;
    std::fs::write(root.join("etc/cairn/bootstrap-token"), format!("{TOKEN}\n"))
}

#[test]
fn a_pinned_fingerprint_refuses_any_other_certificate() {
    let cluster = Cluster::generate("edge").unwrap();
    let node = Node::start().unwrap();
    let n = node.address.as_str();
    let config = cluster.path("node.yaml");
    let config = config.to_str().unwrap();

    let wrong = "ab".repeat(32);
    let refused =
        ctl(None, &["-i", "--fingerprint", &wrong, "-n", n, "apply-config", "-f", config]).failed();
    assert!(refused.stderr.contains(&format!("not the pinned {wrong}")), "{}", refused.stderr);
    assert!(node.stored_config().is_none(), "a config went to an unpinned node");

    // Without a pin, ctl warns that nothing was checked.
    let unpinned = ctl(None, &["-i", "-n", n, "version"]).ok();
    assert!(!unpinned.stderr.contains("warning"), "{}", unpinned.stderr);

    let fingerprint = node.fingerprint().expect("the fingerprint on the console");
    let pin = ["-i", "--fingerprint", &fingerprint, "-n", n];
    ctl(None, &[&pin[..], &["apply-config", "-f", config]].concat()).ok();
    assert!(node.stored_config().is_some());
    ctl(Some(&cluster.admin()), &["-n", n, "version"]).ok();
}

#[test]
fn a_node_with_a_bootstrap_token_takes_a_config_only_from_who_knows_it() {
    let cluster = Cluster::generate("edge").unwrap();
    let node = Node::start_with(with_token).unwrap();
    let n = node.address.as_str();
    let config = cluster.path("node.yaml");
    let config = config.to_str().unwrap();
    let right = cluster.path("token");
    std::fs::write(&right, TOKEN).unwrap();
    let wrong = cluster.path("wrong-token");
    std::fs::write(&wrong, TOKEN.replace('5', "6")).unwrap();

    let anonymous = ctl(None, &["-i", "-n", n, "apply-config", "-f", config]).failed();
    assert!(anonymous.stderr.contains("warning: nothing checks"), "{}", anonymous.stderr);
    assert!(
        anonymous.stderr.contains("this node has a bootstrap token")
            && anonymous.stderr.contains("--bootstrap-token-file"),
        "{}",
        anonymous.stderr
    );
    let guessed = apply_with_token(n, config, &wrong).failed();
    assert!(guessed.stderr.contains("bootstrap proof does not match"), "{}", guessed.stderr);
    assert!(node.stored_config().is_none(), "a config was taken without the token");

    // A node without the token (an impostor) cannot prove it: the config is never sent.
    let impostor = Node::start().unwrap();
    let fooled = apply_with_token(&impostor.address, config, &right).failed();
    assert!(fooled.stderr.contains("no bootstrap token"), "{}", fooled.stderr);
    assert!(impostor.stored_config().is_none());

    // A relay that terminates TLS on each side passes the proofs on unchanged: they are bound
    // to the client's session, not the node's, and fail.
    let relay = tokio::runtime::Runtime::new().unwrap();
    let relay_address = relay.block_on(start_relay(node.address.clone()));
    let relayed = apply_with_token(&relay_address, config, &right).failed();
    assert!(relayed.stderr.contains("bootstrap proof does not match"), "{}", relayed.stderr);
    assert!(node.stored_config().is_none(), "a relayed proof was accepted");

    let applied = apply_with_token(n, config, &right).ok();
    assert!(!applied.stderr.contains("warning"), "{}", applied.stderr);
    assert!(node.stored_config().is_some());
    ctl(Some(&cluster.admin()), &["-n", n, "version"]).ok();

    // Configured, the token opens nothing: Bootstrap and anonymous applies are refused.
    let late = apply_with_token(n, config, &right).failed();
    assert!(late.stderr.contains("requires a client certificate"), "{}", late.stderr);
}

#[test]
fn in_recovery_a_token_holder_can_give_the_node_a_config_and_nobody_else() {
    let cluster = Cluster::generate("edge").unwrap();
    let mut node = Node::start_with(with_token).unwrap();
    let config = cluster.path("node.yaml");
    let config = config.to_str().unwrap();
    let right = cluster.path("token");
    std::fs::write(&right, TOKEN).unwrap();
    apply_with_token(&node.address, config, &right).ok();

    // The config breaks, and with it the only copy of the CAs (worst case): only the token
    // is left to recover the node.
    let state = node.root().join("system/state");
    std::fs::remove_dir_all(state.join("trust")).unwrap();
    std::fs::write(state.join("config.yaml"), "machine: [damaged\n").unwrap();
    node.restart().unwrap();
    let n = node.address.as_str();
    assert!(
        node.output().contains("only a client proving the bootstrap token"),
        "{}",
        node.output()
    );
    let version = ctl(None, &["-i", "-n", n, "version"]).ok().stdout;
    assert!(version.contains("recovery: the stored config does not load"), "{version}");

    let anonymous = ctl(None, &["-i", "-n", n, "apply-config", "-f", config]).failed();
    assert!(anonymous.stderr.contains("--bootstrap-token-file"), "{}", anonymous.stderr);
    let wrong = cluster.path("wrong-token");
    std::fs::write(&wrong, TOKEN.replace('5', "6")).unwrap();
    let guessed = apply_with_token(n, config, &wrong).failed();
    assert!(guessed.stderr.contains("bootstrap proof does not match"), "{}", guessed.stderr);
    assert!(node.stored_config().is_none(), "a config was taken without the token");

    apply_with_token(n, config, &right).ok();
    assert!(node.stored_config().is_some());
    let version = ctl(Some(&cluster.admin()), &["-n", n, "version"]).ok().stdout;
    assert!(version.contains("configured"), "{version}");
}

#[test]
fn an_unusable_token_fails_closed() {
    let cluster = Cluster::generate("edge").unwrap();
    let node = Node::start_with(|root| {
        std::fs::create_dir_all(root.join("etc/cairn"))?;
        std::fs::write(root.join("etc/cairn/bootstrap-token"), "guessable\n")
    })
    .unwrap();
    let config = cluster.path("node.yaml");
    let refused =
        ctl(None, &["-i", "-n", &node.address, "apply-config", "-f", config.to_str().unwrap()])
            .failed();
    assert!(refused.stderr.contains("bootstrap token is unusable"), "{}", refused.stderr);
    assert!(node.stored_config().is_none());
}

/// A man in the middle: TLS with its own certificate towards the client, TLS to `node`
/// behind it, bytes copied between the two. Returns its address.
async fn start_relay(node: String) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let upstream_tls = ctl::connect::insecure_tls(None).unwrap();
    let port = free_port();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { return };
            let (acceptor, upstream_tls, node) =
                (acceptor.clone(), upstream_tls.clone(), node.clone());
            tokio::spawn(async move {
                let Ok(mut client) = acceptor.accept(client).await else { return };
                let Ok(tcp) = TcpStream::connect(&node).await else { return };
                let name = ServerName::try_from("127.0.0.1").unwrap();
                let connector = tokio_rustls::TlsConnector::from(upstream_tls);
                let Ok(mut upstream) = connector.connect(name, tcp).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    format!("127.0.0.1:{port}")
}
