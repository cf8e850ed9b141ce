//! Connections to nodes: TLS done here with rustls (verified against the context's CA, with
//! the context's client certificate; or, with `--insecure`, unverified and anonymous), then
//! gRPC over it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cairn_api::machine::machine_service_client::MachineServiceClient;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::ring::default_provider;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::ctlconfig::Context;

/// How long to wait for TCP and TLS to come up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// TLS settings for `--insecure`: no server verification, no client certificate.
pub fn insecure_tls() -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_no_client_auth();
    Ok(finish(config))
}

fn finish(mut config: ClientConfig) -> Arc<ClientConfig> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Opens a gRPC client to `node`.
pub async fn connect(
    node: &NodeAddress,
    tls: Arc<ClientConfig>,
) -> anyhow::Result<MachineServiceClient<Channel>> {
    let server_name = ServerName::try_from(node.host.clone())
        .with_context(|| format!("{:?} is not a host name", node.host))?;
    let target = node.to_string();
    // The URI only names the authority for HTTP/2; the connector below does TCP and TLS.
    let endpoint =
        Endpoint::from_shared(format!("http://{target}"))?.connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let (tls, server_name, target) = (tls.clone(), server_name.clone(), target.clone());
            async move {
                let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out")
                    })??;
                tcp.set_nodelay(true)?;
                let stream = TlsConnector::from(tls).connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(MachineServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

/// Accepts any server certificate (signatures are still checked, so the session is
/// encrypted to whoever holds that certificate's key): maintenance mode only.
#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
