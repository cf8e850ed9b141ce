//! A first config from a URL on the kernel command line, as a diskless node takes one at
//! every boot: `cairn.config=http://HOST[:PORT]/PATH cairn.config.sha256=HEX`. Plain HTTP
//! crosses networks anyone may answer on, so what is trusted is the hash the command line
//! names (it came with the kernel, from the boot server), not the network: a config with
//! another hash is refused, whoever served it.

use std::time::Duration;

use bytes::Bytes;
use cairn_api::bundle::{hex, sha256_from_hex};
use cairn_api::config::shape::MAX_CONFIG_BYTES;
use cairn_api::image::{CONFIG_SHA256_ARG, CONFIG_URL_ARG};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{header, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use crate::boot::cmdline;

/// Where the first config comes from, and the hash it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigUrl {
    /// `http://HOST[:PORT]/PATH`.
    pub url: Uri,
    /// The SHA-256 the config must have.
    pub sha256: [u8; 32],
}

/// The kernel command line names a config URL machined cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigUrlError {
    /// No hash beside the URL.
    #[error("{CONFIG_URL_ARG}= needs {CONFIG_SHA256_ARG}= and 64 hex digits, the config's SHA-256: without it anyone on the network could serve the node a config")]
    NoHash,
    /// Not an `http://` URL.
    #[error("{CONFIG_URL_ARG}={0:?}: not an http://HOST[:PORT]/PATH URL")]
    NotHttp(String),
}

impl ConfigUrl {
    /// The config URL `cmdline` names, if it names one.
    pub fn from_cmdline(cmdline: &str) -> Result<Option<ConfigUrl>, ConfigUrlError> {
        let Some(text) = cmdline::value(cmdline, CONFIG_URL_ARG) else {
            return Ok(None);
        };
        let url: Uri = text.parse().map_err(|_| ConfigUrlError::NotHttp(text.into()))?;
        if url.scheme_str() != Some("http") || url.host().is_none() {
            return Err(ConfigUrlError::NotHttp(text.into()));
        }
        let sha256 = cmdline::value(cmdline, CONFIG_SHA256_ARG)
            .and_then(sha256_from_hex)
            .ok_or(ConfigUrlError::NoHash)?;
        Ok(Some(ConfigUrl { url, sha256 }))
    }
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

/// GETs the config at `source`, in at most `limit`, and checks its size and hash.
pub async fn fetch(source: &ConfigUrl, limit: Duration) -> Result<Vec<u8>, FetchError> {
    let body = tokio::time::timeout(limit, get(&source.url))
        .await
        .map_err(|_| FetchError::Unreachable(format!("no answer within {}s", limit.as_secs())))??;
    let actual = Sha256::digest(&body);
    if actual.as_slice() != source.sha256 {
        return Err(FetchError::HashMismatch {
            actual: hex(&actual),
            expected: hex(&source.sha256),
        });
    }
    Ok(body.to_vec())
}

async fn get(url: &Uri) -> Result<Bytes, FetchError> {
    let unreachable = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| FetchError::Unreachable(format!("{what}: {e}"))
    };
    let http_error = |e: hyper::Error| FetchError::Unreachable(format!("HTTP: {e}"));
    let host = url.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(unreachable(&format!("connecting to {host}:{port}")))?;
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

    /// A server that answers every request with `status` and `body`; returns its address.
    async fn serve(status: &'static str, body: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = vec![0u8; 4096];
                let n = stream.read(&mut request).await.unwrap();
                assert!(request[..n].starts_with(b"GET /node.yaml HTTP/1.1\r\n"));
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&[head.as_bytes(), &body].concat()).await;
            }
        });
        address
    }

    fn source(address: &str, sha256: &str) -> ConfigUrl {
        let cmdline =
            format!("quiet cairn.config=http://{address}/node.yaml cairn.config.sha256={sha256}");
        ConfigUrl::from_cmdline(&cmdline).unwrap().unwrap()
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
        assert_eq!(config.sha256, [0xaa; 32]);
        assert_eq!(
            ConfigUrl::from_cmdline("cairn.config=http://10.0.2.2/n.yaml"),
            Err(ConfigUrlError::NoHash)
        );
        for url in ["https://10.0.2.2/n.yaml", "ftp://h/x", "/n.yaml", "http://"] {
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
        let body = fetch(&source(&address, &digest(CONFIG)), Duration::from_secs(5)).await;
        assert_eq!(body.unwrap(), CONFIG);
    }

    #[tokio::test]
    async fn another_config_is_refused_for_good() {
        let address = serve("200 OK", b"version: v1alpha1\nevil: true\n".to_vec()).await;
        let error = fetch(&source(&address, &digest(CONFIG)), Duration::from_secs(5)).await;
        let error = error.unwrap_err();
        assert!(matches!(error, FetchError::HashMismatch { .. }) && error.is_final(), "{error}");
    }

    #[tokio::test]
    async fn a_huge_answer_is_cut_off() {
        let address = serve("200 OK", vec![b'#'; MAX_CONFIG_BYTES + 1]).await;
        let error = fetch(&source(&address, &digest(CONFIG)), Duration::from_secs(5)).await;
        assert!(matches!(error, Err(FetchError::TooLarge)), "{error:?}");
    }

    #[tokio::test]
    async fn a_server_not_ready_is_asked_again() {
        let address = serve("404 Not Found", Vec::new()).await;
        let error = fetch(&source(&address, &digest(CONFIG)), Duration::from_secs(5)).await;
        let error = error.unwrap_err();
        assert!(!error.is_final() && error.to_string().contains("404"), "{error}");
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let nobody = source(&closed.to_string(), &digest(CONFIG));
        let error = fetch(&nobody, Duration::from_secs(5)).await.unwrap_err();
        assert!(!error.is_final() && error.to_string().contains("connecting"), "{error}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let error = fetch(&source(&address, &digest(CONFIG)), Duration::from_millis(200)).await;
        assert!(error.unwrap_err().to_string().contains("no answer within"));
        drop(listener);
    }
}
