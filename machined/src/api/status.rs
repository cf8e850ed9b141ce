//! The gRPC status of every error a use-case or an inspection returns: the one place where
//! errors become status codes.

use cairn_api::role::Role;
use tonic::Status;

use crate::inspect::files::ReadError;
use crate::node::config::ApplyError;
use crate::node::NodeError;
use crate::service::SupervisorError;
use crate::update::UpdateError;
use crate::workloads::applied::AppliedError;
use crate::workloads::kubelet::manifests::ManifestError;

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        match e {
            NodeError::Apply(e) => apply_error(e),
            NodeError::Update(e) => update_error(e),
            NodeError::Manifest(e) => manifest_error(e),
            NodeError::Objects(e) => objects_error(e),
            NodeError::Service(e) => supervisor_error(e),
            NodeError::ApplyTimedOut(_) => Status::deadline_exceeded(e.to_string()),
            NodeError::NoConfig { .. } | NodeError::NoPod(_) | NodeError::PodBeingRemoved(_) => {
                Status::not_found(e.to_string())
            }
            NodeError::NoLogs(_) | NodeError::NoContainer { .. } | NodeError::NoRun { .. } => {
                Status::not_found(e.to_string())
            }
            NodeError::ContainerNotNamed { .. } => Status::invalid_argument(e.to_string()),
            NodeError::NoKubelet => Status::failed_precondition(e.to_string()),
            NodeError::FellBehind(_) => Status::data_loss(e.to_string()),
            NodeError::KernelLog(_) => Status::unavailable(e.to_string()),
            NodeError::Store(_) | NodeError::Uname(_) | NodeError::Task(_) => {
                Status::internal(e.to_string())
            }
        }
    }
}

fn apply_error(e: ApplyError) -> Status {
    match e {
        ApplyError::Invalid(e) => Status::invalid_argument(format!("invalid config: {e}")),
        ApplyError::Plan(e) => Status::failed_precondition(e.to_string()),
        ApplyError::Pki(e) => Status::invalid_argument(e.to_string()),
        ApplyError::Tls(e) => Status::invalid_argument(e.to_string()),
        ApplyError::Store(e) => Status::internal(e.to_string()),
        ApplyError::AlreadyConfigured => Status::permission_denied(e.to_string()),
    }
}

fn update_error(e: UpdateError) -> Status {
    match e {
        UpdateError::Bundle(_) => Status::invalid_argument(e.to_string()),
        UpdateError::Unavailable(_) => Status::failed_precondition(e.to_string()),
        UpdateError::Io(_) => Status::internal(e.to_string()),
    }
}

fn supervisor_error(e: SupervisorError) -> Status {
    match e {
        SupervisorError::UnknownService(_) => Status::not_found(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

fn objects_error(e: AppliedError) -> Status {
    match e {
        AppliedError::Invalid(_) | AppliedError::UnknownKind(_) => {
            Status::invalid_argument(e.to_string())
        }
        AppliedError::InConfig(_)
        | AppliedError::TooLarge(_)
        | AppliedError::TooManyPods(_)
        | AppliedError::PodNameTaken { .. } => Status::failed_precondition(e.to_string()),
        AppliedError::Io { .. } => Status::internal(e.to_string()),
    }
}

fn manifest_error(e: ManifestError) -> Status {
    match e {
        ManifestError::Invalid(_) | ManifestError::BadName(_) => {
            Status::invalid_argument(e.to_string())
        }
        ManifestError::InConfig(_) => Status::failed_precondition(e.to_string()),
        ManifestError::NotFound(_) => Status::not_found(e.to_string()),
        ManifestError::Io { .. } => Status::internal(e.to_string()),
    }
}

/// The status of a `Read` or `List` that failed.
pub fn read_error(e: ReadError) -> Status {
    match e {
        ReadError::Io { .. } => Status::not_found(e.to_string()),
        ReadError::NotRegular { .. } | ReadError::Consuming { .. } => {
            Status::invalid_argument(e.to_string())
        }
        ReadError::NotReadable { .. } => {
            Status::permission_denied(format!("{e}: reading or listing it needs {}", Role::Admin))
        }
    }
}
