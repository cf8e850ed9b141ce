//! A TLS client's check of a server it has no CA for: any certificate is taken (or only the
//! one a check accepts: a pinned fingerprint), and the handshake's signatures are still
//! verified, so the session is encrypted to whoever holds that certificate's key. `ctl
//! --insecure` talks so to a node in maintenance mode (its certificate is self-signed); the
//! kubelet's HTTPS probes and hooks reach pods so, as upstream's do (with no verification).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::ring::default_provider;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// Accepts or refuses the server's certificate (its end entity).
pub type CertificateCheck =
    Arc<dyn Fn(&CertificateDer<'_>) -> Result<(), rustls::Error> + Send + Sync>;

/// TLS settings of a client without a certificate that takes any server certificate `check`
/// accepts (any at all without one).
pub fn unverified_client(check: Option<CertificateCheck>) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(default_provider());
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UnverifiedServer { provider, check }))
        .with_no_client_auth())
}

/// The verifier of [`unverified_client`].
struct UnverifiedServer {
    provider: Arc<CryptoProvider>,
    check: Option<CertificateCheck>,
}

impl std::fmt::Debug for UnverifiedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnverifiedServer").field("checked", &self.check.is_some()).finish()
    }
}

impl ServerCertVerifier for UnverifiedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(check) = &self.check {
            check(end_entity)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
