//! A first config from a URL on the kernel command line, as a diskless node takes one at
//! every boot: `cairn.config=http[s]://HOST[:PORT]/PATH cairn.config.sha256=HEX`.
//!
//! Plain HTTP crosses networks anyone may answer on, so over `http://` what is trusted is
//! the hash the command line names (it came with the kernel, from the boot server), not the
//! network: a config with another hash is refused, whoever served it, and a URL without one
//! is refused at boot. Over `https://` the server's certificate must chain to a public CA
//! (Mozilla's list, built into machined: a node has no CA of its own before its first
//! config), which also keeps the config's secrets (its CA keys, the bootstrap token) from
//! whoever shares the network; the hash, when given, is checked as well. A handshake that
//! fails is retried like an unreachable server: on a board without a real-time clock a
//! certificate looks "not valid yet" until SNTP has set the time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_api::bundle::{hex, sha256_from_hex};
use cairn_api::config::shape::MAX_CONFIG_BYTES;
use cairn_api::image::{CONFIG_SHA256_ARG, CONFIG_URL_ARG};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{header, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::crypto::ring::default_provider;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::boot::cmdline;

/// Where the first config comes from, and the hash it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigUrl {
    /// `http://HOST[:PORT]/PATH` or `https://...`.
    pub url: Uri,
    /// The SHA-256 the config must have; always there for `http://`.
    pub sha256: Option<[u8; 32]>,
}

/// The kernel command line names a config URL machined cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigUrlError {
    /// An `http://` URL without a hash beside it.
    #[error("an http:// {CONFIG_URL_ARG}= needs {CONFIG_SHA256_ARG}=, the config's SHA-256: without it anyone on the network could serve the node a config (or use https://)")]
    NoHash,
    /// The hash is not 64 hex digits.
    #[error("{CONFIG_SHA256_ARG}={0:?}: not 64 hex digits, a SHA-256")]
    BadHash(String),
    /// Not an `http://` or `https://` URL.
    #[error("{CONFIG_URL_ARG}={0:?}: not an http:// or https://HOST[:PORT]/PATH URL")]
    NotHttp(String),
}

impl ConfigUrl {
    /// The config URL `cmdline` names, if it names one.
    pub fn from_cmdline(cmdline: &str) -> Result<Option<ConfigUrl>, ConfigUrlError> {
        let Some(text) = cmdline::value(cmdline, CONFIG_URL_ARG) else {
            return Ok(None);
        };
        let url: Uri = text.parse().map_err(|_| ConfigUrlError::NotHttp(text.into()))?;
        let secure = match url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(ConfigUrlError::NotHttp(text.into())),
        };
        if url.host().is_none() {
            return Err(ConfigUrlError::NotHttp(text.into()));
        }
        let sha256 = match cmdline::value(cmdline, CONFIG_SHA256_ARG) {
            Some(hash) => {
                Some(sha256_from_hex(hash).ok_or_else(|| ConfigUrlError::BadHash(hash.into()))?)
            }
            None if secure => None,
            None => return Err(ConfigUrlError::NoHash),
        };
        Ok(Some(ConfigUrl { url, sha256 }))
    }
}

/// TLS for `https://` configs: the public CAs of Mozilla's list, HTTP/1.1.
pub fn public_ca_tls() -> Arc<ClientConfig> {
    tls_trusting(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })
}

/// TLS for `https://` configs trusting `roots`.
fn tls_trusting(roots: RootCertStore) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls's default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Fetching the config failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server could not be reached, or did not answer with the config (yet).
    #[error("{0}")]
    Unreachable(String),
    /// The answer is larger than any config.
    #[error("the answer is larger than {MAX_CONFIG_BYTES} bytes, the largest config")]
    TooLarge,
    /// The answer is not the config the command line names.
    #[error("the answer has SHA-256 {actual}, the kernel command line says {expected}: refused")]
    HashMismatch {
        /// What it hashes to.
        actual: String,
        /// What the command line says.
        expected: String,
    },
}

impl FetchError {
    /// Whether asking again cannot help: the server answered, with something else.
    pub fn is_final(&self) -> bool {
        !matches!(self, FetchError::Unreachable(_))
    }
}

/// GETs the config at `source` (over `tls` for `https://`), in at most `limit`, and checks
/// its size and hash.
pub async fn fetch(
    source: &ConfigUrl,
    tls: &Arc<ClientConfig>,
    limit: Duration,
) -> Result<Vec<u8>, FetchError> {
    let body = tokio::time::timeout(limit, get(&source.url, tls))
        .await
        .map_err(|_| FetchError::Unreachable(format!("no answer within {}s", limit.as_secs())))??;
    let actual = Sha256::digest(&body);
    match source.sha256 {
        Some(expected) if actual.as_slice() != expected => {
            Err(FetchError::HashMismatch { actual: hex(&actual), expected: hex(&expected) })
        }
        _ => Ok(body.to_vec()),
    }
}

async fn get(url: &Uri, tls: &Arc<ClientConfig>) -> Result<Bytes, FetchError> {
    let host = url.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let secure = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| FetchError::Unreachable(format!("connecting to {host}:{port}: {e}")))?;
    if !secure {
        return request(stream, url, host).await;
    }
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| FetchError::Unreachable(format!("{host}: {e}")))?;
    let stream = TlsConnector::from(tls.clone())
        .connect(name, stream)
        .await
        .map_err(|e| FetchError::Unreachable(format!("TLS with {host}:{port}: {e}")))?;
    request(stream, url, host).await
}

/// GETs `url` over `stream`, an answer of at most [`MAX_CONFIG_BYTES`].
async fn request<S>(stream: S, url: &Uri, host: &str) -> Result<Bytes, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_error = |e: hyper::Error| FetchError::Unreachable(format!("HTTP: {e}"));
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http_error)?;
    let connection = tokio::spawn(connection);
    let authority = url.authority().map_or(host, |a| a.as_str());
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(header::HOST, authority)
        .header(header::USER_AGENT, concat!("cairn-machined/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Unreachable(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(http_error)?;
    let status = response.status();
    if status != StatusCode::OK {
        connection.abort();
        return Err(FetchError::Unreachable(format!("the server answered {status}")));
    }
    let body = Limited::new(response.into_body(), MAX_CONFIG_BYTES).collect().await;
    connection.abort();
    match body {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(FetchError::TooLarge)
        }
        Err(e) => Err(FetchError::Unreachable(format!("reading the answer: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const CONFIG: &[u8] = b"version: v1alpha1\n";

    fn digest(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// A server that answers every request with `status` and `body`, over TLS with `tls`
    /// if given; returns its address.
    async fn serve_with(
        status: &'static str,
        body: Vec<u8>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let body = body.clone();
                match &tls {
                    None => answer(stream, status, body).await,
                    Some(tls) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                        if let Ok(stream) = acceptor.accept(stream).await {
                            answer(stream, status, body).await
                        }
                    }
                }
            }
        });
        address
    }

    async fn serve(status: &'static str, body: Vec<u8>) -> String {
        serve_with(status, body, None).await
    }

    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, status: &str, body: Vec<u8>) {
        let mut request = vec![0u8; 4096];
        let n = stream.read(&mut request).await.unwrap();
        assert!(request[..n].starts_with(b"GET /node.yaml HTTP/1.1\r\n"));
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(&[head.as_bytes(), &body].concat()).await;
        let _ = stream.shutdown().await;
    }

    /// A CA, and TLS for a server at 127.0.0.1 with a certificate it signed.
    fn server_tls() -> (RootCertStore, Arc<rustls::ServerConfig>) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let issuer = Issuer::from_ca_cert_der(ca_cert.der(), ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        (roots, Arc::new(server))
    }

    fn source(address: &str, sha256: &str) -> ConfigUrl {
        let cmdline =
            format!("quiet cairn.config=http://{address}/node.yaml cairn.config.sha256={sha256}");
        ConfigUrl::from_cmdline(&cmdline).unwrap().unwrap()
    }

    fn https_source(address: &str) -> ConfigUrl {
        let cmdline = format!("quiet cairn.config=https://{address}/node.yaml");
        ConfigUrl::from_cmdline(&cmdline).unwrap().unwrap()
    }

    async fn fetch_plain(source: &ConfigUrl, limit: Duration) -> Result<Vec<u8>, FetchError> {
        fetch(source, &public_ca_tls(), limit).await
    }

    #[test]
    fn the_url_needs_its_hash_and_http() {
        assert_eq!(ConfigUrl::from_cmdline("quiet"), Ok(None));
        let sha = "a".repeat(64);
        let config = ConfigUrl::from_cmdline(&format!(
            "cairn.config=http://10.0.2.2:8080/n.yaml cairn.config.sha256={sha}"
        ))
        .unwrap()
        .unwrap();
        assert_eq!((config.url.host(), config.url.port_u16()), (Some("10.0.2.2"), Some(8080)));
        assert_eq!(config.sha256, Some([0xaa; 32]));
        assert_eq!(
            ConfigUrl::from_cmdline("cairn.config=http://10.0.2.2/n.yaml"),
            Err(ConfigUrlError::NoHash)
        );
        let https = ConfigUrl::from_cmdline("cairn.config=https://boot.example/n.yaml").unwrap();
        assert_eq!(https.map(|c| c.sha256), Some(None));
        assert_eq!(
            ConfigUrl::from_cmdline("cairn.config=https://h/n.yaml cairn.config.sha256=+f"),
            Err(ConfigUrlError::BadHash("+f".into()))
        );
        for url in ["ftp://h/x", "/n.yaml", "http://"] {
            let cmdline = format!("cairn.config={url} cairn.config.sha256={sha}");
            assert_eq!(
                ConfigUrl::from_cmdline(&cmdline),
                Err(ConfigUrlError::NotHttp(url.into())),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn the_config_with_the_named_hash_is_taken() {
        let address = serve("200 OK", CONFIG.to_vec()).await;
        let body = fetch_plain(&source(&address, &digest(CONFIG)), Duration::from_secs(5)).await;
        assert_eq!(body.unwrap(), CONFIG);
    }

    #[tokio::test]
    async fn another_config_is_refused_for_good() {
        let address = serve("200 OK", b"version: v1alpha1\nevil: true\n".to_vec()).await;
        let error = fetch_plain(&source(&address, &digest(CONFIG)), Duration::from_secs(5)).await;
        let error = error.unwrap_err();
        assert!(matches!(error, FetchError::HashMismatch { .. }) && error.is_final(), "{error}");
    }

    #[tokio::test]
    async fn a_huge_answer_is_cut_off() {
        let address = serve("200 OK", vec![b'#'; MAX_CONFIG_BYTES + 1]).await;
        let error = fetch_plain(&source(&address, &digest(CONFIG)), Duration::from_secs(5)).await;
        assert!(matches!(error, Err(FetchError::TooLarge)), "{error:?}");
    }

    #[tokio::test]
    async fn a_server_not_ready_is_asked_again() {
        let address = serve("404 Not Found", Vec::new()).await;
        let error = fetch_plain(&source(&address, &digest(CONFIG)), Duration::from_secs(5)).await;
        let error = error.unwrap_err();
        assert!(!error.is_final() && error.to_string().contains("404"), "{error}");
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let nobody = source(&closed.to_string(), &digest(CONFIG));
        let error = fetch_plain(&nobody, Duration::from_secs(5)).await.unwrap_err();
        assert!(!error.is_final() && error.to_string().contains("connecting"), "{error}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let error =
            fetch_plain(&source(&address, &digest(CONFIG)), Duration::from_millis(200)).await;
        assert!(error.unwrap_err().to_string().contains("no answer within"));
        drop(listener);
    }

    #[tokio::test]
    async fn an_https_config_from_a_trusted_server_is_taken_without_a_hash() {
        let (roots, server) = server_tls();
        let address = serve_with("200 OK", CONFIG.to_vec(), Some(server)).await;
        let source = https_source(&address);
        let body = fetch(&source, &tls_trusting(roots), Duration::from_secs(5)).await;
        assert_eq!(body.unwrap(), CONFIG);
    }

    #[tokio::test]
    async fn an_https_server_no_public_ca_vouches_for_is_asked_again() {
        let (_, server) = server_tls();
        let address = serve_with("200 OK", CONFIG.to_vec(), Some(server)).await;
        let error = fetch_plain(&https_source(&address), Duration::from_secs(5)).await;
        let error = error.unwrap_err();
        assert!(!error.is_final(), "{error}");
        assert!(error.to_string().starts_with("TLS with 127.0.0.1:"), "{error}");
        assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    }

    #[tokio::test]
    async fn an_https_config_with_another_hash_is_refused() {
        let (roots, server) = server_tls();
        let address = serve_with("200 OK", b"evil: true\n".to_vec(), Some(server)).await;
        let mut source = https_source(&address);
        source.sha256 = Some(Sha256::digest(CONFIG).into());
        let error = fetch(&source, &tls_trusting(roots), Duration::from_secs(5)).await;
        assert!(matches!(error, Err(FetchError::HashMismatch { .. })), "{error:?}");
    }
}
