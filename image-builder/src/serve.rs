//! `image-builder serve`: a boot server for labs and CI. It serves a build's `netboot/`
//! folder over HTTP and, with a machine config, the config and `cairn.ipxe`: a script that
//! names the config's URL and SHA-256 on the kernel command line, then chains the build's
//! `boot.ipxe`. Every request is logged (who fetched what).
//!
//! The config's URL uses the host the node asked for `cairn.ipxe` by, so the same server
//! works behind QEMU's user network (the host is 10.0.2.2 there) and on a lab network.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_api::bundle::hex;
use cairn_api::image::{CONFIG_SHA256_ARG, CONFIG_URL_ARG};
use futures_util::TryStreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::image::netboot::IPXE_SCRIPT;

/// The script that boots with the config: what DHCP should hand out as the boot file.
pub const CONFIG_SCRIPT: &str = "cairn.ipxe";
/// The config's path on the server.
pub const CONFIG_PATH: &str = "config.yaml";
/// The iPXE variable the build's `boot.ipxe` appends to the kernel command line.
pub const CONFIG_ARGS_VARIABLE: &str = "cairn-config";
/// The file beside a U-Boot board's `boot.scr.uimg` (by TFTP) that names the config.
pub const UBOOT_CONFIG_FILE: &str = "cairn-config.txt";
/// The U-Boot variable `boot.scr.uimg` imports from [`UBOOT_CONFIG_FILE`] and appends to the
/// kernel command line.
pub const UBOOT_CONFIG_VARIABLE: &str = "cairn_config";
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, std::io::Error>;

/// What the server serves.
pub struct BootServer {
    dir: PathBuf,
    config: Option<ServedConfig>,
}

/// The config, and its SHA-256 for `cairn.ipxe`.
struct ServedConfig {
    bytes: Bytes,
    sha256: String,
}

impl BootServer {
    /// Serves the files of `dir` (a build's `netboot/`) and, if given, `config`.
    pub fn new(dir: PathBuf, config: Option<Vec<u8>>) -> Self {
        let config = config.map(|bytes| ServedConfig {
            sha256: hex(&Sha256::digest(&bytes)),
            bytes: Bytes::from(bytes),
        });
        BootServer { dir, config }
    }

    /// The served config's SHA-256 (hex), if there is one.
    pub fn config_sha256(&self) -> Option<&str> {
        self.config.as_ref().map(|config| config.sha256.as_str())
    }

    /// Accepts connections on `listener` until the process ends; `log` gets a line a request.
    pub async fn run(self: Arc<Self>, listener: TcpListener, log: fn(&str)) -> std::io::Result<()> {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = slots.clone().acquire_owned().await.expect("the semaphore stays open");
            let (stream, peer) = listener.accept().await?;
            let server = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.answer(peer, &request, log).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                drop(permit);
            });
        }
    }

    async fn answer(
        &self,
        peer: SocketAddr,
        request: &Request<Incoming>,
        log: fn(&str),
    ) -> Response<Body> {
        let path = request.uri().path();
        let response = match *request.method() {
            Method::GET | Method::HEAD => self.get(path, request.headers().get(header::HOST)).await,
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD"),
        };
        let bytes = response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
        log(&format!(
            "{peer} {} {path} -> {} ({} bytes)",
            request.method(),
            response.status().as_u16(),
            bytes.unwrap_or("?")
        ));
        if request.method() == Method::HEAD {
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, empty());
        }
        response
    }

    async fn get(&self, path: &str, host: Option<&header::HeaderValue>) -> Response<Body> {
        let name = path.trim_start_matches('/');
        match (&self.config, name) {
            (Some(config), CONFIG_PATH) => bytes(config.bytes.clone(), "application/yaml"),
            (Some(config), CONFIG_SCRIPT) => {
                match host.and_then(|h| h.to_str().ok()).filter(|h| is_host(h)) {
                    Some(host) => bytes(config_script(host, &config.sha256).into(), "text/plain"),
                    None => status(StatusCode::BAD_REQUEST, "no usable Host header"),
                }
            }
            _ => self.file(name).await,
        }
    }

    async fn file(&self, name: &str) -> Response<Body> {
        let Some(path) = inside(&self.dir, name) else {
            return status(StatusCode::NOT_FOUND, "not found");
        };
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(_) => return status(StatusCode::NOT_FOUND, "not found"),
        };
        let length = match file.metadata().await {
            Ok(metadata) if metadata.is_file() => metadata.len(),
            _ => return status(StatusCode::NOT_FOUND, "not found"),
        };
        let stream = tokio_util::io::ReaderStream::new(file).map_ok(Frame::data);
        Response::builder()
            .header(header::CONTENT_LENGTH, length)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .expect("a valid response")
    }
}

/// `cairn.ipxe`: the URL on `host` of the config whose SHA-256 is `sha256` (hex), with that
/// hash, then the build's script.
pub fn config_script(host: &str, sha256: &str) -> String {
    format!(
        "#!ipxe\n\
         # Written by image-builder serve: {IPXE_SCRIPT} with this server's config.\n\
         set {CONFIG_ARGS_VARIABLE} {}\n\
         chain {IPXE_SCRIPT}\n",
        config_args(host, sha256)
    )
}

/// [`UBOOT_CONFIG_FILE`]'s line for the config on `host` whose SHA-256 is `sha256` (hex).
pub fn uboot_config_line(host: &str, sha256: &str) -> String {
    format!("{UBOOT_CONFIG_VARIABLE}={}\n", config_args(host, sha256))
}

/// The kernel arguments that name the config on `host` whose SHA-256 is `sha256` (hex).
fn config_args(host: &str, sha256: &str) -> String {
    format!("{CONFIG_URL_ARG}=http://{host}/{CONFIG_PATH} {CONFIG_SHA256_ARG}={sha256}")
}

/// Whether `host` is a plain `HOST[:PORT]`: it goes into a script.
fn is_host(host: &str) -> bool {
    !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

/// `dir/name` when `name` is a relative path that stays inside `dir`.
fn inside(dir: &Path, name: &str) -> Option<PathBuf> {
    let relative = Path::new(name);
    let plain = relative.components().all(|c| matches!(c, Component::Normal(_)));
    (plain && !name.is_empty()).then(|| dir.join(relative))
}

fn bytes(body: Bytes, content_type: &str) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body).map_err(|never| match never {}).boxed())
        .expect("a valid response")
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = bytes(Bytes::from_static(text.as_bytes()), "text/plain");
    *response.status_mut() = code;
    response
}

fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn start(dir: &Path, config: Option<&[u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = Arc::new(BootServer::new(dir.into(), config.map(<[u8]>::to_vec)));
        tokio::spawn(server.run(listener, |_| {}));
        address
    }

    async fn get(address: SocketAddr, path: &str, host: &str) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn serves_the_builds_files_and_nothing_outside_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("netboot")).unwrap();
        std::fs::write(dir.path().join("netboot/vmlinuz"), b"kernel").unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        let address = start(&dir.path().join("netboot"), None).await;
        let answer = get(address, "/vmlinuz", "h").await;
        assert!(
            answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("\r\n\r\nkernel"),
            "{answer}"
        );
        for path in ["/../secret", "/%2e%2e/secret", "/", "/config.yaml", "/cairn.ipxe"] {
            assert!(get(address, path, "h").await.starts_with("HTTP/1.1 404"), "{path}");
        }
    }

    #[tokio::test]
    async fn with_a_config_the_script_names_it_on_the_host_the_node_asked() {
        let dir = tempfile::tempdir().unwrap();
        let address = start(dir.path(), Some(b"version: v1alpha1\n")).await;
        let answer = get(address, "/cairn.ipxe", "10.0.2.2:8000").await;
        let script = answer.split("\r\n\r\n").nth(1).unwrap();
        let sha256 = hex(&Sha256::digest(b"version: v1alpha1\n"));
        assert_eq!(script, config_script("10.0.2.2:8000", &sha256));
        assert!(script.contains(&format!(
            "set cairn-config cairn.config=http://10.0.2.2:8000/config.yaml cairn.config.sha256={sha256}\n",
        )));
        assert!(script.ends_with("chain boot.ipxe\n"));
        assert!(get(address, "/config.yaml", "h").await.ends_with("\r\n\r\nversion: v1alpha1\n"));
        let injected = get(address, "/cairn.ipxe", "h\nkernel evil").await;
        assert!(injected.starts_with("HTTP/1.1 400"), "{injected}");
    }
}
