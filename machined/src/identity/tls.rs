//! The API's TLS settings: server-only TLS in maintenance mode, mutual TLS trusting the
//! machine config's client CA once configured, and in recovery mode client certificates of
//! the last known client CA asked for but not required (a client proving the bootstrap token
//! has none).

use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::{pem::PemObject, CertificateDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::identity::pki::ServingIdentity;

/// The TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The client CA certificate in the config is unusable.
    #[error("machine.clientCa.crt: {0}")]
    Ca(String),
    /// rustls refused the settings.
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

/// TLS without client authentication, for maintenance mode.
pub fn maintenance(identity: ServingIdentity) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    Ok(finish(config))
}

/// Mutual TLS: a client certificate signed by (one of) `client_ca_pem` and valid is required at the handshake,
/// so a client without one is turned away before it can send a byte of a request (letting it
/// through to be told in words let anyone hold buffers and connections); every call then
/// checks the role.
pub fn mutual(
    client_ca_pem: &str,
    identity: ServingIdentity,
) -> Result<Arc<ServerConfig>, TlsError> {
    with_client_ca(client_ca_pem, identity, true)
}

/// Recovery mode: a client certificate signed by `client_ca_pem` is verified when one is
/// offered (a certificate that does not verify ends the handshake), but a client may offer
/// none, so that `ctl version` can say what happened and a bootstrap-token holder can
/// connect. Each call then decides what an anonymous caller may do.
pub fn recovery(
    client_ca_pem: &str,
    identity: ServingIdentity,
) -> Result<Arc<ServerConfig>, TlsError> {
    with_client_ca(client_ca_pem, identity, false)
}

fn with_client_ca(
    client_ca_pem: &str,
    identity: ServingIdentity,
    required: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsError::Ca(e.to_string()))?;
        roots.add(cert).map_err(|e| TlsError::Ca(e.to_string()))?;
    }
    let provider = Arc::new(default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let verifier = if required { verifier } else { verifier.allow_unauthenticated() };
    let verifier = verifier.build().map_err(|e| TlsError::Ca(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)?;
    Ok(finish(config))
}

fn finish(mut config: ServerConfig) -> Arc<ServerConfig> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}
