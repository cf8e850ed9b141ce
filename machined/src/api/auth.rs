//! Who may call what: the least role per call, the calls open in maintenance mode, and
//! the few served in recovery mode.

use cairn_api::role::Role;
use rustls::pki_types::CertificateDer;
use tonic::Status;

use crate::node::config::NodeMode;

/// An API call, for authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Call {
    Version,
    Bootstrap,
    ApplyConfiguration,
    GetConfiguration,
    Reboot,
    Shutdown,
    ServiceList,
    ServiceStart,
    ServiceStop,
    ServiceRestart,
    Logs,
    Dmesg,
    Events,
    Stats,
    Time,
    Disks,
    Mounts,
    List,
    Read,
    Pods,
    PodRestart,
    PodEvents,
    ContainerLogs,
    ManifestApply,
    ManifestDelete,
    ObjectsApply,
    ObjectsDelete,
    ObjectsGet,
    Upgrade,
    Rollback,
}

impl Call {
    /// The least role that may make this call.
    pub fn required_role(self) -> Role {
        use Call::*;
        match self {
            ApplyConfiguration | Bootstrap | ManifestApply | ManifestDelete | ObjectsApply
            | ObjectsDelete | Upgrade | Rollback => Role::Admin,
            Reboot | Shutdown | ServiceStart | ServiceStop | ServiceRestart | PodRestart => {
                Role::Operator
            }
            Version | GetConfiguration | ServiceList | Logs | Dmesg | Events | Stats | Time
            | Disks | Mounts | List | Read | Pods | PodEvents | ContainerLogs | ObjectsGet => {
                Role::Reader
            }
        }
    }

    /// Whether a node without a config answers this call (to anyone).
    pub fn open_in_maintenance(self) -> bool {
        matches!(self, Call::Version | Call::Disks | Call::Bootstrap | Call::ApplyConfiguration)
    }

    /// Whether a node in recovery mode serves this call to an admin of the last known client
    /// CA: what it takes to see why the config broke and to put a good one in place. Version
    /// and Disks as in maintenance mode; List and Read to find and read the set-aside config
    /// (STATE is admin-only, as ever); Logs for machined's own account; ApplyConfiguration
    /// to recover; Reboot to try again after a passing fault (an unreadable disk). Nothing
    /// runs to be inspected or changed, and GetConfiguration has no config to return.
    pub fn open_in_recovery(self) -> bool {
        use Call::*;
        matches!(self, Version | Disks | List | Read | Logs | ApplyConfiguration | Reboot)
    }
}

/// What to do in recovery mode, for messages.
const RECOVERY_HELP: &str = "the node is in recovery mode: its stored config does not load (ctl version says why); apply a config as an admin of the last known client CA (its ctlconfig context, without --insecure), or with the bootstrap token";

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Anyone, in maintenance mode; in recovery mode, a client that must still prove the
    /// bootstrap token to apply a config.
    Anonymous,
    /// A client with a verified certificate carrying this role.
    Role(Role),
}

impl Caller {
    /// Whether the caller may see secrets.
    pub fn sees_secrets(self) -> bool {
        match self {
            Caller::Anonymous => false,
            Caller::Role(role) => role.grants(Role::Admin),
        }
    }

    /// Whether the caller holds at least `role` (anonymous callers hold none).
    pub fn holds(self, role: Role) -> bool {
        matches!(self, Caller::Role(held) if held.grants(role))
    }
}

/// Decides whether a call is allowed, given the node's mode and the client's certificate
/// chain as TLS verified it (leaf first).
pub fn authorize(
    mode: NodeMode,
    peer_certs: Option<&[CertificateDer<'_>]>,
    call: Call,
) -> Result<Caller, Status> {
    match mode {
        NodeMode::Maintenance if call.open_in_maintenance() => Ok(Caller::Anonymous),
        NodeMode::Maintenance => Err(Status::failed_precondition(format!(
            "the node is in maintenance mode: only Version, Disks, Bootstrap and ApplyConfiguration are served until a config is applied (not {call:?})"
        ))),
        NodeMode::Configured => {
            let leaf = peer_certs.and_then(|c| c.first()).ok_or_else(|| {
                Status::unauthenticated(
                    "the node is configured: calls need a client certificate signed by its CA (drop --insecure and use a ctlconfig context)",
                )
            })?;
            let role = role_of(leaf)?;
            let required = call.required_role();
            if role.grants(required) {
                Ok(Caller::Role(role))
            } else {
                Err(Status::permission_denied(format!("role {role} may not call {call:?}: it needs {required}")))
            }
        }
        NodeMode::Recovery { bootstrap_token } => match peer_certs.and_then(|c| c.first()) {
            // TLS verified the chain against the last known client CA.
            Some(leaf) => {
                let role = role_of(leaf)?;
                match call {
                    // Anyone with a certificate may ask what state the node is in.
                    Call::Version => Ok(Caller::Role(role)),
                    _ if !call.open_in_recovery() => Err(Status::failed_precondition(format!(
                        "{RECOVERY_HELP}; until then only Version, Disks, List, Read, Logs, ApplyConfiguration and Reboot are served (not {call:?})"
                    ))),
                    _ if role.grants(Role::Admin) => Ok(Caller::Role(role)),
                    _ => Err(Status::permission_denied(format!(
                        "{RECOVERY_HELP}; until then only os:admin is served, not {role}"
                    ))),
                }
            }
            None => match call {
                Call::Version => Ok(Caller::Anonymous),
                // The handlers check the proof.
                Call::Bootstrap | Call::ApplyConfiguration if bootstrap_token => {
                    Ok(Caller::Anonymous)
                }
                Call::Bootstrap | Call::ApplyConfiguration => Err(Status::permission_denied(format!(
                    "{RECOVERY_HELP}; this node has no bootstrap token, so only an admin can"
                ))),
                _ => Err(Status::unauthenticated(format!(
                    "{RECOVERY_HELP}; calls other than Version need an admin's client certificate"
                ))),
            },
        },
    }
}

/// The strongest role among the certificate's subject Organizations.
fn role_of(cert: &CertificateDer<'_>) -> Result<Role, Status> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| Status::unauthenticated(format!("unreadable client certificate: {e}")))?;
    let organizations: Vec<&str> =
        parsed.subject().iter_organization().filter_map(|o| o.as_str().ok()).collect();
    Role::strongest(organizations.iter().copied()).ok_or_else(|| {
        Status::permission_denied(format!(
            "the client certificate grants no role: its Organization {organizations:?} is none of os:admin, os:operator, os:reader"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(organizations: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        for o in organizations {
            params.distinguished_name.push(rcgen::DnType::OrganizationName, *o);
        }
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn maintenance_mode_opens_three_calls_to_anyone() {
        assert_eq!(
            authorize(NodeMode::Maintenance, None, Call::Version).unwrap(),
            Caller::Anonymous
        );
        assert_eq!(
            authorize(NodeMode::Maintenance, None, Call::ApplyConfiguration).unwrap(),
            Caller::Anonymous
        );
        let err = authorize(NodeMode::Maintenance, None, Call::Reboot).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn recovery_mode_serves_admins_a_few_calls_and_anonymous_clients_only_with_a_token() {
        let admin = [cert_with(&["os:admin"])];
        let reader = [cert_with(&["os:reader"])];
        let no_token = NodeMode::Recovery { bootstrap_token: false };
        let token = NodeMode::Recovery { bootstrap_token: true };
        for mode in [no_token, token] {
            for call in [Call::ApplyConfiguration, Call::Read, Call::List, Call::Reboot] {
                assert_eq!(authorize(mode, Some(&admin), call).unwrap(), Caller::Role(Role::Admin));
            }
            let refused = authorize(mode, Some(&admin), Call::ManifestApply).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
            assert!(refused.message().contains("recovery mode"), "{}", refused.message());
            assert!(authorize(mode, Some(&admin), Call::GetConfiguration).is_err());
            // A reader of the old CA may ask the state, nothing else (STATE holds the keys).
            assert!(authorize(mode, Some(&reader), Call::Version).is_ok());
            let denied = authorize(mode, Some(&reader), Call::Read).unwrap_err();
            assert_eq!(denied.code(), tonic::Code::PermissionDenied);
            assert_eq!(authorize(mode, None, Call::Version).unwrap(), Caller::Anonymous);
            assert_eq!(
                authorize(mode, None, Call::Disks).unwrap_err().code(),
                tonic::Code::Unauthenticated
            );
        }
        // Never anonymous applies without a token to prove.
        for call in [Call::ApplyConfiguration, Call::Bootstrap] {
            let refused = authorize(no_token, None, call).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied);
            assert!(refused.message().contains("admin of the last known client CA"));
            assert!(refused.message().contains("no bootstrap token"), "{}", refused.message());
            assert_eq!(authorize(token, None, call).unwrap(), Caller::Anonymous);
        }
    }

    #[test]
    fn configured_mode_enforces_roles() {
        let reader = [cert_with(&["os:reader"])];
        let operator = [cert_with(&["os:operator"])];
        let nobody = [cert_with(&["acme"])];
        let mode = NodeMode::Configured;
        assert_eq!(authorize(mode, Some(&reader), Call::Logs).unwrap(), Caller::Role(Role::Reader));
        let denied = authorize(mode, Some(&reader), Call::ApplyConfiguration).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied
            .message()
            .contains("role os:reader may not call ApplyConfiguration: it needs os:admin"));
        assert!(authorize(mode, Some(&operator), Call::Reboot).is_ok());
        assert!(authorize(mode, Some(&operator), Call::ApplyConfiguration).is_err());
        assert_eq!(
            authorize(mode, Some(&nobody), Call::Version).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            authorize(mode, None, Call::Version).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
