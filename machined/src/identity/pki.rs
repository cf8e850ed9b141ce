//! The node's own certificates: a throwaway self-signed one for maintenance mode, and a
//! serving certificate issued with the machine config's node CA, naming the node's current
//! addresses, so `ctl` can verify it like any TLS server.

use std::net::IpAddr;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// How long a serving certificate lasts; the node issues a fresh one at every start.
const SERVING_VALIDITY: Duration = Duration::days(365);

/// A certificate chain and its private key, ready for rustls.
#[derive(Debug)]
pub struct ServingIdentity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
}

/// Why the node could not make a certificate.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The node CA in the machine config cannot sign.
    #[error("machine.nodeCa cannot issue the serving certificate: {0}")]
    Ca(rcgen::Error),
    /// Key generation or signing failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The names the node answers to: its host name, the loopback names, `addresses` (those on
/// its links), and the configured extra SANs.
pub fn node_names(hostname: &str, addresses: &[IpAddr], extra: &[String]) -> Vec<String> {
    let mut names = vec![hostname.to_string(), "localhost".to_string()];
    let loopback: [IpAddr; 2] = [[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
    names.extend(loopback.iter().chain(addresses).map(ToString::to_string));
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// A certificate's SHA-256 fingerprint: lowercase hex, as `ctl --fingerprint` takes it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    cairn_api::bundle::hex(&Sha256::digest(cert))
}

/// A self-signed certificate for maintenance mode, where clients connect with `--insecure`.
pub fn maintenance_identity(names: &[String]) -> Result<ServingIdentity, PkiError> {
    let key = KeyPair::generate()?;
    let params = serving_params(names)?;
    let cert = params.self_signed(&key)?;
    Ok(identity(cert.der().clone(), &key))
}

/// A serving certificate for `names`, signed by the config's node CA.
pub fn issue_serving(
    ca_crt_pem: &str,
    ca_key_pem: &str,
    names: &[String],
) -> Result<ServingIdentity, PkiError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(PkiError::Ca)?;
    let issuer = Issuer::from_ca_cert_pem(ca_crt_pem, ca_key).map_err(PkiError::Ca)?;
    let key = KeyPair::generate()?;
    let cert = serving_params(names)?.signed_by(&key, &issuer)?;
    Ok(identity(cert.der().clone(), &key))
}

fn serving_params(names: &[String]) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
    params.distinguished_name.push(DnType::OrganizationName, "cairn");
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + SERVING_VALIDITY;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

fn identity(cert: CertificateDer<'static>, key: &KeyPair) -> ServingIdentity {
    ServingIdentity {
        chain: vec![cert],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_include_loopback_and_extras() {
        let names = node_names("edge-1", &["10.0.2.15".parse().unwrap()], &["node.example".into()]);
        for want in ["edge-1", "localhost", "127.0.0.1", "::1", "10.0.2.15", "node.example"] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
    }

    #[test]
    fn serving_certificate_is_signed_by_the_ca() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let identity =
            issue_serving(&ca_cert.pem(), &ca_key.serialize_pem(), &["edge-1".into()]).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&identity.chain[0]).unwrap();
        let (_, ca_parsed) = x509_parser::parse_x509_certificate(ca_cert.der()).unwrap();
        assert_eq!(leaf.issuer(), ca_parsed.subject());
        assert!(issue_serving(&ca_cert.pem(), "junk", &[]).is_err());
    }
}
