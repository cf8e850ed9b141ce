//! Harness for whole-system tests: builds `machined` and `ctl`, starts real machined
//! processes on free loopback ports with roots of their own, and runs `ctl` against them
//! as an operator would. (QEMU-booted images join these scenarios when images exist.)

pub mod attack;
pub mod boards;
pub mod boot_figures;
pub mod disk;
pub mod floor;
pub mod image_cache;
pub mod pods;
pub mod registry;
pub mod scenario;
pub mod sntp;
pub mod steps;
pub mod timing;
pub mod vm_slots;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a machined gets to open its API port.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The directory holding the freshly built `machined` and `ctl`.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Test binaries live in target/<profile>/deps; the programs in target/<profile>.
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "machined", "-p", "ctl", "-p", "image-builder"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "cargo build -p machined -p ctl -p image-builder failed");
        dir
    })
}

/// Files in test images carry this time (SOURCE_DATE_EPOCH).
pub const SOURCE_DATE_EPOCH: &str = "1767225600";

/// The workspace's root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace")
}

/// Builds `board`'s image into `output` with image-builder, which builds machined from this
/// workspace (packages cached in $CAIRN_CACHE, or target/cairn-cache), with a bootstrap token
/// baked in and an update bundle signed with `signing_key` when given, and image-builder's
/// `extra_args` (`--version`, `--extra-kernel-args`); returns the build report.
pub fn build_image(
    board: &boards::Board,
    output: &Path,
    bootstrap_token: Option<&Path>,
    signing_key: Option<&Path>,
    extra_args: &[&str],
) -> String {
    let workspace = workspace();
    let cache = std::env::var_os("CAIRN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin_dir().parent().expect("target dir").join("cairn-cache"));
    let mut build = Command::new(bin_dir().join("image-builder"));
    build
        .current_dir(workspace)
        .args(["build", "--board", board.name, "--cache"])
        .arg(&cache)
        .arg("--output")
        .arg(output)
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH);
    if let Some(token) = bootstrap_token {
        build.arg("--bootstrap-token-file").arg(token);
    }
    if let Some(key) = signing_key {
        build.arg("--signing-key").arg(key);
    }
    build.args(extra_args);
    let status = build.status().expect("running image-builder");
    assert!(status.success(), "image-builder build failed");
    std::fs::read_to_string(output.join("report.toml")).expect("report.toml")
}

/// The board `name`, as the workspace's `overlays/` describes it.
pub fn board(name: &str) -> cairn_api::board::Board {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
    cairn_api::board::Board::load(&workspace.join("overlays"), name).expect("board description")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("binding port 0").port()
}

/// A machined process with a root directory of its own.
pub struct Node {
    child: Option<Child>,
    root: tempfile::TempDir,
    /// `127.0.0.1:PORT`, as `ctl -n` takes it.
    pub address: String,
}

impl Node {
    /// Starts machined and waits until its API port is open.
    pub fn start() -> anyhow::Result<Node> {
        Node::start_with(|_| Ok(()))
    }

    /// Starts machined on a root that `prepare` filled first (as an image would be).
    pub fn start_with(prepare: impl FnOnce(&Path) -> std::io::Result<()>) -> anyhow::Result<Node> {
        let root = tempfile::tempdir()?;
        prepare(root.path())?;
        let mut node = Node { child: None, root, address: String::new() };
        // A free port can be taken by a parallel test before machined binds it: try another.
        for _ in 0..5 {
            node.address = format!("127.0.0.1:{}", free_port());
            match node.spawn() {
                Ok(()) => return Ok(node),
                Err(e) if node.output().contains("Address already in use") => {
                    if let Some(mut child) = node.child.take() {
                        child.kill()?;
                        child.wait()?;
                    }
                    eprintln!("retrying on another port: {e:#}");
                }
                Err(e) => return Err(e),
            }
        }
        bail!("machined found no free port")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.root.path().join("machined.out"))?;
        let child = Command::new(bin_dir().join("machined"))
            .args(["--root"])
            .arg(self.root.path())
            .args(["--listen", &self.address, "--log-flush-interval", "1s"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting machined")?;
        self.child = Some(child);
        self.wait_listening()
    }

    /// Waits until this machined says its API listens and the port accepts connections
    /// (the port alone could belong to another process).
    fn wait_listening(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let marker = format!("API listening on {}", self.address);
        while Instant::now() < deadline {
            let output = self.output();
            if output.contains(&marker) && TcpStream::connect(&self.address).is_ok() {
                return Ok(());
            }
            if output.contains("Address already in use") {
                bail!("{} is taken", self.address);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "machined on {} did not open its port within {START_TIMEOUT:?}:\n{}",
            self.address,
            self.output()
        )
    }

    /// Kills machined (SIGKILL, no clean shutdown) and starts it again on the same root.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        self.spawn()
    }

    /// Waits (bounded) for machined to exit by itself; returns whether it exited cleanly.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let child = self.child.as_mut().context("not running")?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("machined did not exit within {timeout:?}")
    }

    /// Applies the first config, as an operator does in maintenance mode: `ctl --insecure`,
    /// pinning the certificate fingerprint the node printed.
    pub fn configure(&self, config: &Path) {
        let config = config.to_str().expect("utf-8 path");
        let fingerprint =
            self.fingerprint().expect("a node in maintenance mode prints its fingerprint");
        let pin = ["--insecure", "--fingerprint", &fingerprint, "-n", &self.address];
        ctl(None, &[&pin[..], &["apply-config", "-f", config]].concat()).ok();
    }

    /// The maintenance certificate's fingerprint, as machined last printed it.
    pub fn fingerprint(&self) -> Option<String> {
        fingerprint_in(&self.output())
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The node's root directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The stored running config, if any.
    pub fn stored_config(&self) -> Option<Vec<u8>> {
        std::fs::read(self.root.path().join("system/state/config.yaml")).ok()
    }

    /// What machined printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.root.path().join("machined.out")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The result of one `ctl` run.
#[derive(Debug)]
pub struct CtlRun {
    /// Whether it exited 0.
    pub success: bool,
    /// Its exit status (none: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CtlRun {
    /// Panics with the whole run when it failed.
    pub fn ok(self) -> CtlRun {
        assert!(self.success, "ctl failed:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Panics with the whole run when it succeeded.
    pub fn failed(self) -> CtlRun {
        assert!(
            !self.success,
            "ctl should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `ctl` with `args`, using the client config `ctlconfig` (if any).
pub fn ctl(ctlconfig: Option<&Path>, args: &[&str]) -> CtlRun {
    let Output { status, stdout, stderr } =
        ctl_command(ctlconfig, args).output().expect("running ctl");
    CtlRun {
        success: status.success(),
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The command that runs ctl with `args` and `ctlconfig` (none: no config at all, never the
/// developer's own), its input closed.
pub fn ctl_command(ctlconfig: Option<&Path>, args: &[&str]) -> Command {
    let mut command = Command::new(bin_dir().join("ctl"));
    command.args(args).stdin(Stdio::null());
    command.env("CTLCONFIG", ctlconfig.unwrap_or(Path::new("/nonexistent/ctlconfig")));
    command
}

/// Those of `services` that are not in state Ready on `node`, each with the state it is in
/// (`ctl -o json services`; the table's "Waiting for containerd (Ready)" is not Ready).
pub fn services_not_ready(ctlconfig: Option<&Path>, node: &str, services: &[&str]) -> Vec<String> {
    let listed = ctl(ctlconfig, &["-n", node, "-o", "json", "services"]).ok().stdout;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&listed).expect("ctl's JSON");
    services
        .iter()
        .filter_map(|name| {
            let state = rows.iter().find(|r| r["service"] == *name).map(|r| r["state"].clone());
            match state {
                Some(state) if state == "Ready" => None,
                Some(state) => Some(format!("{name}: {state}")),
                None => Some(format!("{name}: not listed")),
            }
        })
        .collect()
}

/// A fresh cluster (`ctl gen config edge`) and a node configured with its node.yaml.
pub fn configured_node() -> (Cluster, Node) {
    let cluster = Cluster::generate("edge").expect("ctl gen config");
    let node = Node::start().expect("starting machined");
    node.configure(&cluster.path("node.yaml"));
    (cluster, node)
}

/// The files of `ctl gen config`: node.yaml, secrets.yaml, ctlconfig (admin).
pub struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Runs `ctl gen config NAME`.
    pub fn generate(name: &str) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        ctl(
            None,
            &["gen", "config", name, "--output-dir", dir.path().to_str().context("utf-8 path")?],
        )
        .ok();
        Ok(Cluster { dir })
    }

    /// A file in the cluster directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The admin client config.
    pub fn admin(&self) -> PathBuf {
        self.path("ctlconfig")
    }

    /// A client config for `role` (`ctl gen client`), named `role` in the cluster directory.
    pub fn client(&self, role: &str) -> PathBuf {
        let output = self.path(role);
        let secrets = self.path("secrets.yaml");
        ctl(
            None,
            &[
                "gen",
                "client",
                "--secrets",
                secrets.to_str().unwrap(),
                "--role",
                role,
                "--output",
                output.to_str().unwrap(),
            ],
        )
        .ok();
        output
    }

    /// node.yaml with `edit` applied to its text, written as `name` in the cluster directory.
    pub fn node_config_with(&self, name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
        let text = std::fs::read_to_string(self.path("node.yaml")).expect("node.yaml");
        let path = self.path(name);
        std::fs::write(&path, edit(text)).expect("writing a node config");
        path
    }

    /// A client config whose certificate, signed by `signer` (`clientCa`, or `nodeCa` as a
    /// stolen node could) for `organization`, is valid only between the given offsets from
    /// now (negative: in the past).
    pub fn client_signed_by(
        &self,
        signer: &str,
        organization: &str,
        from: time::Duration,
        to: time::Duration,
    ) -> anyhow::Result<PathBuf> {
        let secrets: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(self.path("secrets.yaml"))?)?;
        let ca = &secrets[signer];
        let ca_crt = ca["crt"].as_str().with_context(|| format!("secrets {signer}.crt"))?;
        let ca_key = ca["key"].as_str().with_context(|| format!("secrets {signer}.key"))?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(ca_crt, rcgen::KeyPair::from_pem(ca_key)?)?;
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(rcgen::DnType::OrganizationName, organization);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + from;
        params.not_after = now + to;
        let cert = params.signed_by(&key, &issuer)?;
        let node_ca_crt = secrets["nodeCa"]["crt"].as_str().context("secrets nodeCa.crt")?;
        let mut context = serde_yaml::Mapping::new();
        context.insert("ca".into(), node_ca_crt.into());
        context.insert("crt".into(), cert.pem().into());
        context.insert("key".into(), key.serialize_pem().into());
        let mut contexts = serde_yaml::Mapping::new();
        contexts.insert("custom".into(), serde_yaml::Value::Mapping(context));
        let mut file = serde_yaml::Mapping::new();
        file.insert("context".into(), "custom".into());
        file.insert("contexts".into(), serde_yaml::Value::Mapping(contexts));
        let path = self.path(&format!("custom-{signer}-{organization}-{}", from.whole_seconds()));
        std::fs::write(&path, serde_yaml::to_string(&file)?)?;
        Ok(path)
    }

    /// A client config signed by the client CA, valid only between the given offsets.
    pub fn client_valid_between(
        &self,
        organization: &str,
        from: time::Duration,
        to: time::Duration,
    ) -> anyhow::Result<PathBuf> {
        self.client_signed_by("clientCa", organization, from, to)
    }
}

/// The last maintenance-certificate fingerprint machined printed in `log` (its output, or a
/// node's console), as an operator would copy it.
pub fn fingerprint_in(log: &str) -> Option<String> {
    const MARKER: &str = "API certificate fingerprint ";
    let at = log.rfind(MARKER)? + MARKER.len();
    log[at..].split_whitespace().next().map(str::to_string)
}

/// The names (DNS and IP SANs) in the certificate the API at `address` presents, read from
/// a TLS handshake as a client sees it.
pub fn serving_cert_names(address: &str) -> anyhow::Result<Vec<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cert = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(address).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let tls = ctl::connect::insecure_tls(None)?;
        let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
        let certs = stream.get_ref().1.peer_certificates().context("no certificate")?;
        anyhow::Ok(certs[0].to_vec())
    })?;
    let (_, cert) = x509_parser::parse_x509_certificate(&cert)?;
    let san = cert.subject_alternative_name()?.context("no subjectAltName")?;
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*ip).ok()?).to_string()),
                16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*ip).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect())
}

/// A figure of a process's `/proc/PID/status`, in KiB (`VmRSS`, `VmHWM`...), if it has it.
pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// `GET path` from `address` (`HOST:PORT`) over plain HTTP/1.0: the status code and the body,
/// or None when nothing answers within 5 s.
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let address: std::net::SocketAddr = address.parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}
