//! Checks of the config's CAs: every block a certificate (a CA's), keys where they belong,
//! and a client CA that the node's own key cannot stand in for.
//!
//! Certificates are read with the PEM reader machined's TLS uses, so validation sees exactly
//! the certificates machined will trust. Two CAs are told apart by their public keys, not their
//! text: the same certificate with other line breaks, or the node CA hidden in a client CA
//! bundle, would otherwise let the node CA's key (on every node) sign `os:admin` clients.

use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::PrivateKeyDer;
use x509_parser::prelude::FromDer as _;

use super::schema::CertificateAuthority;
use super::validate::Checker;

/// Whether a CA's key belongs in the config.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum KeyRule {
    /// The node signs with it.
    Required,
    /// It would let a stolen node sign what the node must only verify.
    Forbidden,
    /// Either way.
    Optional,
}

/// The public key of one certificate of a CA's bundle.
pub(super) struct CaKey {
    /// Its place in the bundle, from 0.
    index: usize,
    /// The key's bits (SubjectPublicKeyInfo's BIT STRING): one key under any encoding of the
    /// certificate that holds it.
    key: Vec<u8>,
}

/// Every block of `ca.crt` (a bundle, during a rotation) must be a CA certificate, and the key
/// present or absent as `key_rule` says. Returns the public keys of the certificates that
/// parsed, and that of the key if it has one.
pub(super) fn check_ca(
    c: &mut Checker,
    path: &str,
    ca: &CertificateAuthority,
    key_rule: KeyRule,
) -> (Vec<CaKey>, Option<Vec<u8>>) {
    let crt_path = format!("{path}.crt");
    let mut keys = Vec::new();
    let mut count = 0;
    for (index, section) in <(SectionKind, Vec<u8>)>::pem_slice_iter(ca.crt.as_bytes()).enumerate()
    {
        count += 1;
        let which = block(index);
        match section {
            Err(e) => {
                c.fail(&crt_path, format!("is not valid PEM{which}: {e}"));
                // The reader cannot resynchronise after a broken block.
                break;
            }
            Ok((SectionKind::Certificate, der)) => match ca_certificate_key(&der) {
                Ok(key) => keys.push(CaKey { index, key }),
                Err(reason) => c.fail(&crt_path, format!("{reason}{which}")),
            },
            Ok((kind, _)) => c.fail(
                &crt_path,
                format!("holds a {kind:?} block{which}: only certificates belong here"),
            ),
        }
    }
    if count == 0 {
        c.fail(&crt_path, "is not a PEM certificate: no BEGIN CERTIFICATE block");
    }
    let key = match (&ca.key, key_rule) {
        (Some(_), KeyRule::Forbidden) => {
            c.fail(
                format!("{path}.key"),
                "must not be on the node: whoever holds it can administer every node; keep it in secrets.yaml",
            );
            None
        }
        (Some(key), _) => match private_key_public_bits(key) {
            Ok(bits) => bits,
            Err(reason) => {
                c.fail(format!("{path}.key"), reason);
                None
            }
        },
        (None, KeyRule::Required) => {
            c.fail(
                format!("{path}.key"),
                "is required: the node issues its serving certificate with it",
            );
            None
        }
        (None, _) => None,
    };
    (keys, key)
}

/// Refuses every client CA certificate whose public key is the node CA's (from its
/// certificates or its key): the node CA's key is on every node, and whatever it signs would
/// then pass as a client, admins included.
pub(super) fn check_client_ca_is_not_node_ca(
    c: &mut Checker,
    client: &[CaKey],
    node: &[CaKey],
    node_key: Option<&[u8]>,
) {
    for cert in client {
        let same = node.iter().any(|n| n.key == cert.key) || node_key == Some(&cert.key[..]);
        let which = block(cert.index);
        c.check(!same, "machine.clientCa.crt", || {
            format!("has the public key of machine.nodeCa{which}: the two CAs must differ, or the key every node holds could sign client (admin) certificates")
        });
    }
}

/// Where in a bundle a problem is: nothing for the first block, which is often the only one.
fn block(index: usize) -> String {
    if index == 0 {
        String::new()
    } else {
        format!(" (block {})", index + 1)
    }
}

/// The public key bits of a CA certificate in DER; the error says why it is not one.
fn ca_certificate_key(der: &[u8]) -> Result<Vec<u8>, String> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("is not a valid certificate: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("is not a valid certificate: {} bytes after it", rest.len()));
    }
    if !cert.is_ca() {
        return Err("is a certificate but not a CA certificate (basicConstraints CA:TRUE)".into());
    }
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// The public key bits of a PEM private key: `None` for a key rustls reads but cannot sign
/// with (it has no public key to compare).
fn private_key_public_bits(pem: &str) -> Result<Option<Vec<u8>>, String> {
    let der =
        PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| "is not a PEM private key")?;
    let Ok(signer) = rustls::crypto::ring::sign::any_supported_type(&der) else {
        return Ok(None);
    };
    let Some(spki) = signer.public_key() else { return Ok(None) };
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref())
        .map_err(|e| format!("its public key does not parse: {e}"))?;
    Ok(Some(spki.subject_public_key.data.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(key: &rcgen::KeyPair) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(key).unwrap().pem()
    }

    fn authority(crt: &str, key: Option<&rcgen::KeyPair>) -> CertificateAuthority {
        CertificateAuthority { crt: crt.into(), key: key.map(|k| k.serialize_pem()) }
    }

    /// The problems of a client CA `client` beside the node CA `node`.
    fn problems(client: &CertificateAuthority, node: &CertificateAuthority) -> Vec<String> {
        let mut c = Checker::default();
        let (client, _) = check_ca(&mut c, "machine.clientCa", client, KeyRule::Forbidden);
        let (node, node_key) = check_ca(&mut c, "machine.nodeCa", node, KeyRule::Required);
        check_client_ca_is_not_node_ca(&mut c, &client, &node, node_key.as_deref());
        c.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_client_ca_bundle_holding_the_node_ca_is_refused() {
        let (client_key, node_key) =
            (rcgen::KeyPair::generate().unwrap(), rcgen::KeyPair::generate().unwrap());
        let (client_crt, node_crt) = (ca(&client_key), ca(&node_key));
        let node = authority(&node_crt, Some(&node_key));
        assert_eq!(problems(&authority(&client_crt, None), &node), Vec::<String>::new());

        let bundle = format!("{client_crt}{node_crt}");
        assert_eq!(
            problems(&authority(&bundle, None), &node),
            ["machine.clientCa.crt: has the public key of machine.nodeCa (block 2): the two CAs must differ, or the key every node holds could sign client (admin) certificates"]
        );
        // The same certificate in other whitespace, as CRLF lines.
        let crlf = format!("\n\n{}  \n", node_crt.replace('\n', "\r\n"));
        let found = problems(&authority(&crlf, None), &node);
        assert!(
            found.len() == 1 && found[0].contains("public key of machine.nodeCa:"),
            "{found:?}"
        );
        // Another certificate for the node CA's key (reissued, other name): same key, refused.
        let mut params = rcgen::CertificateParams::new(vec!["other".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let reissued = params.self_signed(&node_key).unwrap().pem();
        let found = problems(&authority(&format!("{client_crt}{reissued}"), None), &node);
        assert!(found.len() == 1 && found[0].contains("(block 2)"), "{found:?}");
        // A node CA whose certificate does not match its key: the key counts too.
        let mismatched = authority(&ca(&rcgen::KeyPair::generate().unwrap()), Some(&node_key));
        let found = problems(&authority(&node_crt, None), &mismatched);
        assert!(found.len() == 1 && found[0].contains("public key of machine.nodeCa"), "{found:?}");
    }

    #[test]
    fn every_block_must_be_a_ca_certificate() {
        let node_key = rcgen::KeyPair::generate().unwrap();
        let node = authority(&ca(&node_key), Some(&node_key));
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client_crt = ca(&client_key);
        let leaf = rcgen::CertificateParams::new(vec!["leaf".to_string()])
            .unwrap()
            .self_signed(&client_key)
            .unwrap()
            .pem();
        let cases = [
            ("", "machine.clientCa.crt: is not a PEM certificate: no BEGIN CERTIFICATE block"),
            ("not a pem", "machine.clientCa.crt: is not a PEM certificate: no BEGIN CERTIFICATE block"),
            (
                &format!("{client_crt}{}", client_key.serialize_pem()),
                "machine.clientCa.crt: holds a PrivateKey block (block 2): only certificates belong here",
            ),
            (
                &format!("{client_crt}{leaf}"),
                "machine.clientCa.crt: is a certificate but not a CA certificate (basicConstraints CA:TRUE) (block 2)",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "machine.clientCa.crt: is not a valid certificate: ",
            ),
            (
                &client_crt.replace("-----END CERTIFICATE-----", ""),
                "machine.clientCa.crt: is not valid PEM: ",
            ),
        ];
        for (crt, want) in cases {
            let found = problems(&authority(crt, None), &node);
            assert!(found.len() == 1 && found[0].starts_with(want), "{crt:?}: {found:?}");
        }
    }
}
