//! Container probes with the upstream semantics: a startup probe holds the other two back
//! until it succeeds; liveness failing `failureThreshold` times in a row (startup too) has
//! the container killed, so its restart policy decides what follows; readiness decides
//! whether the container counts as ready. Defaults as upstream: every 10 s, a 1 s timeout,
//! one success, three failures. Probes run exec through CRI `ExecSync`, HTTP or HTTPS GET
//! (the pod's certificate unverified, as upstream), or a TCP connect.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ExecAction, GRPCAction, HTTPGetAction, LifecycleHandler, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::workloads::cri::Cri;

/// gRPC's health checking protocol, which grpc probes call.
#[allow(missing_docs, clippy::all)]
mod health {
    tonic::include_proto!("grpc.health.v1");
}

/// What a probe is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
        }
    }

    /// As an event's message starts.
    fn title(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// What one round of due probes found.
#[derive(Debug, Default)]
pub struct ProbeRound {
    /// Each probe that failed, as its `Unhealthy` event says: `Liveness probe failed: ...`.
    pub failures: Vec<String>,
    /// Why the container must be killed, if it must.
    pub kill: Option<String>,
}

/// One probe of one container run.
struct Prober {
    kind: Kind,
    spec: Probe,
    due: Instant,
    successes: i32,
    failures: i32,
    /// The outcome so far: None until the thresholds decide.
    passing: Option<bool>,
}

impl Prober {
    fn new(kind: Kind, spec: &Probe, started: Instant) -> Prober {
        let delay = spec.initial_delay_seconds.unwrap_or(0).max(0) as u64;
        Prober {
            kind,
            spec: spec.clone(),
            due: started + Duration::from_secs(delay),
            successes: 0,
            failures: 0,
            passing: None,
        }
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.spec.period_seconds.unwrap_or(10).max(1) as u64)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.spec.timeout_seconds.unwrap_or(1).max(1) as u64)
    }

    /// Counts one result; whether the thresholds changed the outcome.
    fn record(&mut self, ok: bool) {
        if ok {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= self.spec.success_threshold.unwrap_or(1).max(1) {
                self.passing = Some(true);
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= self.spec.failure_threshold.unwrap_or(3).max(1) {
                self.passing = Some(false);
            }
        }
    }
}

/// Where the probes of a container reach it.
pub struct Target<'a> {
    /// The container's id, for exec probes.
    pub container_id: &'a str,
    /// The pod's IP (the node's loopback for host-network pods), for HTTP and TCP probes.
    pub ip: IpAddr,
    /// The container, for named ports.
    pub container: &'a Container,
}

/// The probes of one container run.
pub struct Probes {
    startup: Option<Prober>,
    liveness: Option<Prober>,
    readiness: Option<Prober>,
}

impl Probes {
    /// The probes of `container`, counted from its start at `started`.
    pub fn new(container: &Container, started: Instant) -> Probes {
        let make =
            |kind, spec: &Option<Probe>| spec.as_ref().map(|s| Prober::new(kind, s, started));
        Probes {
            startup: make(Kind::Startup, &container.startup_probe),
            liveness: make(Kind::Liveness, &container.liveness_probe),
            readiness: make(Kind::Readiness, &container.readiness_probe),
        }
    }

    /// Whether the container has started: no startup probe, or it succeeded.
    pub fn started(&self) -> bool {
        self.startup.as_ref().is_none_or(|p| p.passing == Some(true))
    }

    /// Whether the container is ready: started, and its readiness probe (if any) passes.
    pub fn ready(&self) -> bool {
        self.started() && self.readiness.as_ref().is_none_or(|p| p.passing == Some(true))
    }

    /// Runs the probes that are due: which failed, and whether the container must be killed.
    pub async fn run_due(&mut self, cri: &dyn Cri, target: &Target<'_>) -> ProbeRound {
        let now = Instant::now();
        let started = self.started();
        let due = [&mut self.startup, &mut self.liveness, &mut self.readiness]
            .into_iter()
            .flatten()
            .filter(|p| p.due <= now && (p.kind == Kind::Startup) != started);
        let mut round = ProbeRound::default();
        for prober in due {
            prober.due = now + prober.period();
            let result = run(cri, Action::from(&prober.spec), prober.timeout(), target).await;
            prober.record(result.is_ok());
            let Err(why) = result else { continue };
            round.failures.push(format!("{} probe failed: {why}", prober.kind.title()));
            if prober.passing == Some(false) && prober.kind != Kind::Readiness {
                round.kill = Some(format!(
                    "{} probe failed {} times: {why}",
                    prober.kind.as_str(),
                    prober.failures
                ));
                break;
            }
        }
        round
    }
}

/// The port a probe names, by number or by the name of one of the container's ports.
fn port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
            .ok_or_else(|| format!("no port named {name}"))?,
    };
    u16::try_from(number).map_err(|_| format!("port {number} is out of range"))
}

/// The probe's host, else the pod's IP.
fn host(host: &Option<String>, target: &Target<'_>) -> Result<IpAddr, String> {
    match host.as_deref().filter(|h| !h.is_empty()) {
        Some(h) => h.parse().map_err(|_| format!("host {h} is not an IP address")),
        None => Ok(target.ip),
    }
}

/// What a probe or a lifecycle hook does: one of exec, HTTP GET and TCP connect.
pub struct Action<'a> {
    exec: Option<&'a ExecAction>,
    http_get: Option<&'a HTTPGetAction>,
    tcp_socket: Option<&'a TCPSocketAction>,
    /// Probes only.
    grpc: Option<&'a GRPCAction>,
}

impl<'a> From<&'a Probe> for Action<'a> {
    fn from(probe: &'a Probe) -> Action<'a> {
        let (exec, http_get) = (probe.exec.as_ref(), probe.http_get.as_ref());
        let (tcp_socket, grpc) = (probe.tcp_socket.as_ref(), probe.grpc.as_ref());
        Action { exec, http_get, tcp_socket, grpc }
    }
}

impl<'a> From<&'a LifecycleHandler> for Action<'a> {
    fn from(hook: &'a LifecycleHandler) -> Action<'a> {
        let (exec, http_get) = (hook.exec.as_ref(), hook.http_get.as_ref());
        Action { exec, http_get, tcp_socket: hook.tcp_socket.as_ref(), grpc: None }
    }
}

/// One run of a probe's or hook's action: Ok when it passes, else why not.
pub async fn run(
    cri: &dyn Cri,
    action: Action<'_>,
    timeout: Duration,
    target: &Target<'_>,
) -> Result<(), String> {
    if let Some(exec) = action.exec {
        let command = exec.command.clone().unwrap_or_default();
        let reply = cri
            .exec_sync(target.container_id, command, timeout)
            .await
            .map_err(|e| e.message().to_string())?;
        return match reply.exit_code {
            0 => Ok(()),
            code => Err(format!("exec exited with {code}")),
        };
    }
    let connect = |ip: IpAddr, port: u16| async move {
        tokio::time::timeout(timeout, TcpStream::connect((ip, port)))
            .await
            .map_err(|_| format!("{ip}:{port}: timed out after {}s", timeout.as_secs()))?
            .map_err(|e| format!("{ip}:{port}: {e}"))
    };
    if let Some(grpc) = action.grpc {
        let port =
            u16::try_from(grpc.port).map_err(|_| format!("port {} is out of range", grpc.port))?;
        return grpc_check(target.ip, port, grpc.service.as_deref().unwrap_or_default(), timeout)
            .await;
    }
    if let Some(tcp) = action.tcp_socket {
        connect(host(&tcp.host, target)?, port(&tcp.port, target.container)?).await?;
        return Ok(());
    }
    if let Some(http) = action.http_get {
        let ip = host(&http.host, target)?;
        let port = port(&http.port, target.container)?;
        let path = http.path.as_deref().unwrap_or("/");
        let mut stream = connect(ip, port).await?;
        let answer = async {
            if http.scheme.as_deref() != Some("HTTPS") {
                return http_status(&mut stream, ip, port, path, http).await;
            }
            let name = rustls::pki_types::ServerName::IpAddress(ip.into());
            let mut tls = unverified_tls().connect(name, stream).await?;
            http_status(&mut tls, ip, port, path, http).await
        };
        let status = tokio::time::timeout(timeout, answer)
            .await
            .map_err(|_| format!("GET {path}: no answer within {}s", timeout.as_secs()))?
            .map_err(|e| format!("GET {path}: {e}"))?;
        return match status {
            200..=399 => Ok(()),
            code => Err(format!("GET {path}: HTTP {code}")),
        };
    }
    Err("no handler".into())
}

/// Calls the gRPC health service at `ip`:`port` (plain HTTP/2, as upstream) about `service`
/// (empty: the server as a whole): Ok when it answers SERVING.
async fn grpc_check(ip: IpAddr, port: u16, service: &str, timeout: Duration) -> Result<(), String> {
    use health::health_check_response::ServingStatus;
    let address = std::net::SocketAddr::new(ip, port);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout);
    let check = async {
        let channel = endpoint.connect().await.map_err(|e| format!("{address}: {e}"))?;
        let mut client = health::health_client::HealthClient::new(channel);
        let request = health::HealthCheckRequest { service: service.into() };
        client.check(request).await.map_err(|e| format!("{address}: rpc error: {}", e.message()))
    };
    let reply = tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| {
            format!("{address}: health rpc did not complete within {}s", timeout.as_secs())
        })??
        .into_inner();
    match ServingStatus::try_from(reply.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        status => Err(format!(
            "service unhealthy (responded with {:?})",
            status.map_or("UNKNOWN", |s| s.as_str_name())
        )),
    }
}

/// The TLS client of HTTPS probes and hooks: as upstream's, it takes the pod's certificate
/// unverified (a pod's is most often self-signed).
fn unverified_tls() -> tokio_rustls::TlsConnector {
    static CONNECTOR: std::sync::OnceLock<tokio_rustls::TlsConnector> = std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let config = cairn_api::tls::unverified_client(None)
                .expect("the default provider supports the default protocol versions");
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        })
        .clone()
}

/// Sends a GET and reads the status code of the answer (the probe needs nothing more).
async fn http_status(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    ip: IpAddr,
    port: u16,
    path: &str,
    http: &k8s_openapi::api::core::v1::HTTPGetAction,
) -> std::io::Result<u16> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/cairn\r\nAccept: */*\r\nConnection: close\r\n");
    for header in http.http_headers.iter().flatten() {
        request.push_str(&format!("{}: {}\r\n", header.name, header.value));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .filter(|_| line.starts_with("HTTP/"))
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(yaml: &str) -> Probe {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn thresholds_decide_the_outcome() {
        let mut prober = Prober::new(
            Kind::Liveness,
            &probe("{failureThreshold: 2, successThreshold: 2, exec: {command: [x]}}"),
            Instant::now(),
        );
        prober.record(true);
        assert_eq!(prober.passing, None);
        prober.record(true);
        assert_eq!(prober.passing, Some(true));
        prober.record(false);
        assert_eq!(prober.passing, Some(true));
        prober.record(false);
        assert_eq!(prober.passing, Some(false));
    }

    #[tokio::test]
    async fn http_probes_read_the_status_of_a_real_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for answer in ["HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.0 500 Oops\r\n\r\n"] {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = socket.read(&mut buf).await.unwrap();
                assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /healthz HTTP/1.1"));
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let http: k8s_openapi::api::core::v1::HTTPGetAction =
            serde_yaml::from_str(&format!("{{path: /healthz, port: {port}}}")).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for expected in [204, 500] {
            let mut stream = TcpStream::connect((ip, port)).await.unwrap();
            assert_eq!(
                http_status(&mut stream, ip, port, "/healthz", &http).await.unwrap(),
                expected
            );
        }
    }

    #[tokio::test]
    async fn https_probes_take_a_self_signed_certificate() {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let cert = rcgen::generate_simple_self_signed(vec!["pod.local".into()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(socket).await.unwrap();
            let mut buf = [0u8; 1024];
            let n = tls.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /ready HTTP/1.1"));
            tls.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
            tls.shutdown().await.unwrap();
        });
        let http: HTTPGetAction =
            serde_yaml::from_str(&format!("{{path: /ready, port: {port}, scheme: HTTPS}}"))
                .unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let stream = TcpStream::connect((ip, port)).await.unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(ip.into());
        let mut tls = unverified_tls().connect(name, stream).await.unwrap();
        assert_eq!(http_status(&mut tls, ip, port, "/ready", &http).await.unwrap(), 200);
    }

    /// A health service that answers `status` about every service.
    struct Health(health::health_check_response::ServingStatus);

    #[tonic::async_trait]
    impl health::health_server::Health for Health {
        async fn check(
            &self,
            _: tonic::Request<health::HealthCheckRequest>,
        ) -> Result<tonic::Response<health::HealthCheckResponse>, tonic::Status> {
            Ok(tonic::Response::new(health::HealthCheckResponse { status: self.0 as i32 }))
        }
    }

    #[tokio::test]
    async fn grpc_probes_ask_the_health_service() {
        use health::health_check_response::ServingStatus;
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let timeout = Duration::from_secs(5);
        for (status, expected) in [
            (ServingStatus::Serving, Ok(())),
            (
                ServingStatus::NotServing,
                Err("service unhealthy (responded with \"NOT_SERVING\")".to_string()),
            ),
        ] {
            let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let server = tonic::transport::Server::builder()
                .add_service(health::health_server::HealthServer::new(Health(status)))
                .serve_with_incoming(incoming);
            let server = tokio::spawn(server);
            assert_eq!(grpc_check(ip, port, "", timeout).await, expected);
            server.abort();
        }
        // Nothing listens there any more.
        let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        assert!(grpc_check(ip, port, "", timeout).await.is_err());
    }

    #[test]
    fn named_ports_are_the_containers() {
        let container: Container =
            serde_yaml::from_str("{name: c, ports: [{name: http, containerPort: 8080}]}").unwrap();
        assert_eq!(port(&IntOrString::String("http".into()), &container), Ok(8080));
        assert!(port(&IntOrString::String("dns".into()), &container).is_err());
        assert!(port(&IntOrString::Int(70000), &container).is_err());
    }
}
