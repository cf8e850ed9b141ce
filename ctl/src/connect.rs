//! Connections to nodes: TLS done here with rustls (verified against the context's CA, with
//! the context's client certificate; or, with `--insecure`, unverified and anonymous), then
//! gRPC over it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cairn_api::bootstrap;
use cairn_api::machine::machine_service_client::MachineServiceClient;
use cairn_api::tls::{unverified_client, CertificateCheck};
use hyper_util::rt::TokioIo;
use rustls::crypto::ring::default_provider;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CertificateError, ClientConfig, OtherError, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::ctlconfig::Context;

/// How long to wait for TCP and TLS to come up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a connection with calls open is pinged.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping's answer may take before the connection's calls fail.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A node's address, HOST:PORT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl NodeAddress {
    /// Parses `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`; the port defaults to 50000.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let default = cairn_api::API_PORT;
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) =
                rest.split_once(']').with_context(|| format!("{text:?}: missing ']'"))?;
            (host, after.strip_prefix(':'))
        } else if text.matches(':').count() == 1 {
            let (host, port) = text.split_once(':').expect("one colon");
            (host, Some(port))
        } else {
            (text, None)
        };
        if host.is_empty() {
            anyhow::bail!("{text:?}: empty host");
        }
        let port = match port {
            Some(p) => p.parse().with_context(|| format!("{text:?}: {p:?} is not a port"))?,
            None => default,
        };
        Ok(NodeAddress { host: host.to_string(), port })
    }
}

impl std::fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// TLS settings for verified, certificate-authenticated connections.
pub fn mutual_tls(context: &Context) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(context.ca.as_bytes()) {
        roots.add(cert.context("reading the context's CA")?).context("adding the context's CA")?;
    }
    let chain = CertificateDer::pem_slice_iter(context.crt.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the context's client certificate")?;
    let key = PrivateKeyDer::from_pem_slice(context.key.as_bytes())
        .context("reading the context's client key")?;
    let config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("using the context's client certificate")?;
    Ok(finish(config))
}

/// A certificate's SHA-256 fingerprint, as a node in maintenance mode prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl std::str::FromStr for Fingerprint {
    type Err = String;

    /// 64 hex digits, in either case, with or without `:` between bytes and a `sha256:` prefix.
    fn from_str(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let hex: String = trimmed
            .strip_prefix("sha256:")
            .or_else(|| trimmed.strip_prefix("SHA256:"))
            .unwrap_or(trimmed)
            .chars()
            .filter(|c| *c != ':')
            .collect();
        cairn_api::bundle::sha256_from_hex(&hex)
            .map(Fingerprint)
            .ok_or_else(|| format!("{text:?} is not a SHA-256 fingerprint (64 hex digits)"))
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl Fingerprint {
    /// The fingerprint of `cert`.
    pub fn of(cert: &CertificateDer<'_>) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert);
        Fingerprint(digest.as_ref().try_into().expect("SHA-256 is 32 bytes"))
    }
}

/// TLS settings for `--insecure`: no client certificate; the server's certificate is
/// checked only against `pinned`, when given (a maintenance-mode node's is self-signed);
/// signatures are still checked, so the session is encrypted to whoever holds that
/// certificate's key.
pub fn insecure_tls(pinned: Option<Fingerprint>) -> anyhow::Result<Arc<ClientConfig>> {
    let check = pinned.map(|pinned| -> CertificateCheck {
        Arc::new(move |cert| {
            let found = Fingerprint::of(cert);
            if found == pinned {
                return Ok(());
            }
            let mismatch = Arc::new(FingerprintMismatch { pinned, found });
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(mismatch))))
        })
    });
    Ok(finish(unverified_client(check)?))
}

fn finish(mut config: ClientConfig) -> Arc<ClientConfig> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Keying material exported from a TLS session, which bootstrap-token proofs are bound to.
pub type ChannelBinding = [u8; bootstrap::BINDING_LEN];

/// Opens a gRPC client to `node`.
pub async fn connect(
    node: &NodeAddress,
    tls: Arc<ClientConfig>,
) -> anyhow::Result<MachineServiceClient<Channel>> {
    Ok(connect_bound(node, tls).await?.0)
}

/// Opens a gRPC client to `node`, with its TLS session's channel binding.
pub async fn connect_bound(
    node: &NodeAddress,
    tls: Arc<ClientConfig>,
) -> anyhow::Result<(MachineServiceClient<Channel>, ChannelBinding)> {
    let (channel, binding) = channel(node, tls).await?;
    let client = MachineServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    Ok((client, binding))
}

/// Opens an HTTP/2 channel to `node` over TCP and TLS, with the TLS session's channel
/// binding.
pub async fn channel(
    node: &NodeAddress,
    tls: Arc<ClientConfig>,
) -> anyhow::Result<(Channel, ChannelBinding)> {
    let server_name = ServerName::try_from(node.host.clone())
        .with_context(|| format!("{:?} is not a host name", node.host))?;
    let binding = Arc::new(std::sync::Mutex::new(None));
    let binding_out = binding.clone();
    let target = node.to_string();
    // The URI only names the authority for HTTP/2; the connector below does TCP and TLS.
    // HTTP/2 pings find a node that went away mid-call (a reset, a cut cable): its TCP
    // connection stays open on this side, and a call would otherwise wait forever.
    let endpoint = Endpoint::from_shared(format!("http://{target}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let (tls, server_name, target) = (tls.clone(), server_name.clone(), target.clone());
            let binding = binding.clone();
            async move {
                let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out")
                    })??;
                tcp.set_nodelay(true)?;
                let stream = TlsConnector::from(tls).connect(server_name, tcp).await?;
                let exported = stream
                    .get_ref()
                    .1
                    .export_keying_material(
                        [0; bootstrap::BINDING_LEN],
                        bootstrap::EXPORTER_LABEL,
                        None,
                    )
                    .map_err(std::io::Error::other)?;
                *binding.lock().unwrap_or_else(|p| p.into_inner()) = Some(exported);
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    let binding = binding_out.lock().unwrap_or_else(|p| p.into_inner()).take();
    Ok((channel, binding.context("the TLS session exported no keying material")?))
}

/// The server's certificate is not the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("the node's certificate has fingerprint {found}, not the pinned {pinned}: another machine answered at this address, or something relays the connection; nothing was sent")]
pub struct FingerprintMismatch {
    /// What `--fingerprint` said.
    pub pinned: Fingerprint,
    /// What the server presented.
    pub found: Fingerprint,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_the_usual_spellings() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let fingerprint: Fingerprint = hex.parse().unwrap();
        assert_eq!(fingerprint.to_string(), hex);
        let colons = hex.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap());
        let colons = colons.collect::<Vec<_>>().join(":").to_uppercase();
        assert_eq!(format!("SHA256:{colons}").parse::<Fingerprint>().unwrap(), fingerprint);
        assert!("abc".parse::<Fingerprint>().unwrap_err().contains("64 hex digits"));
        assert!(hex.replace('0', "g").parse::<Fingerprint>().is_err());
    }

    #[test]
    fn parses_node_addresses() {
        let parse = |s| NodeAddress::parse(s).unwrap().to_string();
        assert_eq!(parse("10.0.0.5"), "10.0.0.5:50000");
        assert_eq!(parse("node:123"), "node:123");
        assert_eq!(parse("::1"), "[::1]:50000");
        assert_eq!(parse("[::1]:7"), "[::1]:7");
        assert!(NodeAddress::parse("host:notaport").is_err());
        assert!(NodeAddress::parse(":5").is_err());
    }
}
