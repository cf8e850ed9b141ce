//! The API's TLS settings: server-only TLS in maintenance mode, mutual TLS trusting the
//! machine config's client CA once configured, and in recovery mode client certificates of
//! the last known client CA asked for but not required (a client proving the bootstrap token
//! has none).
//!
//! A node that booted without a real-time clock runs at its time floor until SNTP corrects
//! it, behind the time its clients' certificates were issued at. While the clock is known
//! untrusted, a client certificate that is "not valid yet" is checked as of its own
//! `notBefore` instead: everything else about it (the CA's signature, the chain, the key's
//! use) is checked as ever. The API then need not wait for a time server before it serves,
//! and an air-gapped node is reachable at all.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::ring::default_provider;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{pem::PemObject, CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

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

/// Whether the node's clock is trusted now (synchronised, or set by an operator), asked at
/// each handshake.
pub type ClockTrust = Arc<dyn Fn() -> bool + Send + Sync>;

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
    clock: &ClockTrust,
) -> Result<Arc<ServerConfig>, TlsError> {
    with_client_ca(client_ca_pem, identity, clock, true)
}

/// Recovery mode: a client certificate signed by `client_ca_pem` is verified when one is
/// offered (a certificate that does not verify ends the handshake), but a client may offer
/// none, so that `ctl version` can say what happened and a bootstrap-token holder can
/// connect. Each call then decides what an anonymous caller may do.
pub fn recovery(
    client_ca_pem: &str,
    identity: ServingIdentity,
    clock: &ClockTrust,
) -> Result<Arc<ServerConfig>, TlsError> {
    with_client_ca(client_ca_pem, identity, clock, false)
}

fn with_client_ca(
    client_ca_pem: &str,
    identity: ServingIdentity,
    clock: &ClockTrust,
    required: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(default_provider());
    let verifier = client_verifier(client_ca_pem, &provider, clock, required)?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)?;
    Ok(finish(config))
}

/// Verifies client certificates against `client_ca_pem` (one or more CA certificates),
/// allowing for an untrusted `clock`; `required`: a client must offer one.
fn client_verifier(
    client_ca_pem: &str,
    provider: &Arc<CryptoProvider>,
    clock: &ClockTrust,
    required: bool,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsError::Ca(e.to_string()))?;
        roots.add(cert).map_err(|e| TlsError::Ca(e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let verifier = if required { verifier } else { verifier.allow_unauthenticated() };
    let inner = verifier.build().map_err(|e| TlsError::Ca(e.to_string()))?;
    Ok(Arc::new(ClockAwareVerifier { inner, clock: clock.clone() }))
}

/// A client certificate verifier that, while the clock is untrusted, checks a certificate
/// "not valid yet" as of its `notBefore` (see the module docs).
struct ClockAwareVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    clock: ClockTrust,
}

impl std::fmt::Debug for ClockAwareVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClockAwareVerifier").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl ClientCertVerifier for ClockAwareVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.inner.verify_client_cert(end_entity, intermediates, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
                not_before,
                ..
            })) if !(self.clock)() => {
                tracing::debug!(
                    "a client certificate valid from {}s after 1970 is checked as of then: the clock is not synchronised",
                    not_before.as_secs()
                );
                self.inner.verify_client_cert(end_entity, intermediates, not_before)
            }
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn finish(mut config: ServerConfig) -> Arc<ServerConfig> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use time::{Duration, OffsetDateTime};

    use super::*;

    /// A CA's PEM and a client certificate it signed, valid from `from` to `until` (relative
    /// to now).
    fn client_cert(from: Duration, until: Duration) -> (String, CertificateDer<'static>) {
        let now = OffsetDateTime::now_utc();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.not_before = now - Duration::days(1) + from;
        ca.not_after = now + Duration::days(3650);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_ca_cert_der(ca_cert.der(), ca_key).unwrap();
        let mut client = CertificateParams::new(Vec::new()).unwrap();
        client.not_before = now + from;
        client.not_after = now + until;
        let cert = client.signed_by(&KeyPair::generate().unwrap(), &issuer).unwrap();
        (ca_cert.pem(), cert.der().clone())
    }

    fn verify(ca_pem: &str, cert: &CertificateDer<'_>, trusted: bool) -> Result<(), rustls::Error> {
        let clock: ClockTrust = Arc::new(move || trusted);
        let provider = Arc::new(default_provider());
        let verifier = client_verifier(ca_pem, &provider, &clock, true).unwrap();
        verifier.verify_client_cert(cert, &[], UnixTime::now()).map(|_| ())
    }

    #[test]
    fn a_clock_behind_accepts_certificates_issued_after_it() {
        let (ca, cert) = client_cert(Duration::days(30), Duration::days(60));
        assert!(verify(&ca, &cert, false).is_ok());
        let refused = verify(&ca, &cert, true).unwrap_err();
        assert!(
            matches!(
                refused,
                rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext { .. })
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn an_untrusted_clock_still_checks_the_issuer_and_expiry() {
        let (_, cert) = client_cert(Duration::days(30), Duration::days(60));
        let (other_ca, _) = client_cert(Duration::ZERO, Duration::days(1));
        assert!(verify(&other_ca, &cert, false).is_err());
        let (ca, expired) = client_cert(-Duration::days(2), -Duration::days(1));
        assert!(verify(&ca, &expired, false).is_err());
    }
}
