//! Errors in words an operator can act on: which node, and why (connection refused, TLS
//! trust or certificate problems, the role's permissions).

use std::error::Error as StdError;

use rustls::{AlertDescription, CertificateError};
use tonic::{Code, Status};

/// Explains a failure to connect to, or a failed call on, a node; `client_auth` says
/// whether we presented a client certificate.
pub fn describe(error: &anyhow::Error, client_auth: bool) -> String {
    if let Some(status) = error.downcast_ref::<Status>() {
        return describe_status(status, client_auth);
    }
    let chain: Vec<&(dyn StdError + 'static)> = error.chain().collect();
    explain_chain(&chain).unwrap_or_else(|| format!("{error:#}"))
}

fn describe_status(status: &Status, client_auth: bool) -> String {
    let mut chain: Vec<&(dyn StdError + 'static)> = Vec::new();
    let mut source = status.source();
    while let Some(e) = source {
        chain.push(e);
        source = e.source();
    }
    if let Some(tls) = explain_chain(&chain) {
        return tls;
    }
    // In TLS 1.3 the server judges our certificate after the client considers the handshake
    // done: its alert is lost and the first request finds the connection closed (as a broken
    // pipe, a reset or a cancelled request, depending on timing).
    let transport_failed =
        chain.iter().any(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
    if transport_failed {
        return if client_auth {
            "TLS: the node closed the connection right after the handshake: it most likely refused our client certificate (not signed by the node's CA, or expired or not yet valid)".into()
        } else {
            format!(
                "the node closed the connection ({}): it most likely requires a client certificate, as a configured node does; use a ctlconfig context instead of --insecure",
                status.message()
            )
        };
    }
    let what = match status.code() {
        Code::PermissionDenied => "permission denied",
        Code::Unauthenticated => "not authenticated",
        Code::InvalidArgument => "rejected",
        Code::FailedPrecondition => "refused",
        Code::NotFound => "not found",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "timed out",
        _ => "failed",
    };
    format!("{what}: {}", status.message())
}

/// Finds the TLS or socket error in a chain of causes and explains it.
fn explain_chain(chain: &[&(dyn StdError + 'static)]) -> Option<String> {
    for error in chain {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(explain_tls(tls));
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return Some(explain_tls(tls));
            }
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    return Some(
                        "connection refused (is machined running and listening on that port?)"
                            .into(),
                    )
                }
                std::io::ErrorKind::TimedOut => return Some("connection timed out".into()),
                std::io::ErrorKind::ConnectionReset => {
                    return Some("connection reset by the node".into())
                }
                _ => {}
            }
        }
    }
    None
}

fn explain_tls(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "TLS: the node's certificate is not signed by this context's node CA: a node of another cluster, or something else answers at this address (a node still in maintenance mode prints its certificate's fingerprint on its console: pin it with --insecure --fingerprint)".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(why))) => {
            format!("TLS: {why}")
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => {
            "TLS: the node's certificate does not name the address used (add it to machine.certSANs)".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "TLS: the node's certificate has expired (is the node's clock right?)".into()
        }
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "TLS: the node requires a client certificate: it is configured, so drop --insecure".into()
        }
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError),
        ) => format!(
            "TLS: the node refused our client certificate ({alert:?}): it must be signed by the node's CA and valid now"
        ),
        other => format!("TLS: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_tls_inside_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        let text = describe(&anyhow::Error::new(io).context("connecting"), true);
        assert!(
            text.starts_with("TLS: the node refused our client certificate (UnknownCA)"),
            "{text}"
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(describe(&anyhow::Error::new(refused), true).starts_with("connection refused"));
    }

    #[test]
    fn explains_a_pinned_certificate_mismatch() {
        let mismatch = crate::connect::FingerprintMismatch {
            pinned: "aa".repeat(32).parse().unwrap(),
            found: "bb".repeat(32).parse().unwrap(),
        };
        let tls = rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(mismatch),
        )));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let text = describe(&anyhow::Error::new(io), false);
        assert!(text.starts_with("TLS: the node's certificate has fingerprint bbbb"), "{text}");
        assert!(text.contains("nothing was sent"), "{text}");
    }

    #[test]
    fn explains_statuses() {
        let status =
            Status::permission_denied("role os:reader may not call Reboot: it needs os:operator");
        assert_eq!(
            describe(&anyhow::Error::new(status), true),
            "permission denied: role os:reader may not call Reboot: it needs os:operator"
        );
    }
}
