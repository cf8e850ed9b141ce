//! Images: those baked into the OS image are there before any pod (see [`super::import`]);
//! others are pulled through CRI (with the mirrors of `machine.registries`).
//!
//! Pull policies follow Kubernetes, with one change for nodes that may be offline for good:
//! when an `Always` pull fails and the image is already on the node, the local copy runs (the
//! upstream kubelet would leave the pod in ImagePullBackOff until the registry is back).
//! `localhost/` images exist only as baked-in archives: they are never pulled.

use k8s_openapi::api::core::v1::Container;

use crate::workloads::cri::{v1, Cri};

use super::events::EventType;

/// Why a container's image is not there: `reason` is what `kubectl get pods` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageError {
    /// `ErrImagePull` or `ErrImageNeverPull`.
    pub reason: &'static str,
    /// What failed.
    pub message: String,
}

/// The image reference of `container`, as written (containerd normalizes it).
fn image_name(container: &Container) -> &str {
    container.image.as_deref().unwrap_or_default()
}

/// Whether the reference has a tag or digest other than `latest`.
fn pinned(image: &str) -> bool {
    if image.contains('@') {
        return true;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').is_some_and(|(_, tag)| tag != "latest")
}

/// `imagePullPolicy`, with Kubernetes' default: `Always` for `:latest` or no tag,
/// `IfNotPresent` otherwise.
pub fn pull_policy(container: &Container) -> &str {
    match container.image_pull_policy.as_deref() {
        Some(policy) => policy,
        None if pinned(image_name(container)) => "IfNotPresent",
        None => "Always",
    }
}

/// The image id containerd has for `image`, if it has it.
async fn local_image(cri: &dyn Cri, image: &str) -> Result<Option<String>, tonic::Status> {
    Ok(cri.image_status(image).await?.map(|i| i.id))
}

/// Makes sure `container`'s image is on the node, pulling it as its policy says (with each of
/// `auths` in turn, the pod's credentials for its registry; anonymously without any);
/// returns the image id to create the container from. `report` is told what happened, as
/// the events `Pulling`, `Pulled` and `Failed`.
pub async fn ensure(
    cri: &dyn Cri,
    container: &Container,
    auths: &[v1::AuthConfig],
    report: &mut (dyn FnMut(EventType, &str, String) + Send),
) -> Result<String, ImageError> {
    let image = image_name(container);
    let present = format!("Container image {image:?} already present on machine");
    let pull_failed = |message: String| ImageError { reason: "ErrImagePull", message };
    let local = local_image(cri, image)
        .await
        .map_err(|e| pull_failed(format!("asking containerd for {image}: {}", e.message())))?;
    let policy = pull_policy(container);
    let local_only = image.starts_with("localhost/");
    match (&local, policy) {
        (Some(id), "IfNotPresent" | "Never") => {
            report(EventType::Normal, "Pulled", present);
            return Ok(id.clone());
        }
        (Some(id), _) if local_only => {
            report(EventType::Normal, "Pulled", present);
            return Ok(id.clone());
        }
        (None, "Never") => {
            return Err(ImageError {
                reason: "ErrImageNeverPull",
                message: format!("{image} is not on the node and imagePullPolicy is Never"),
            })
        }
        (None, _) if local_only => {
            return Err(ImageError {
                reason: "ErrImageNeverPull",
                message: format!(
                    "{image} is not on the node: localhost/ images come only from the archives baked into the OS image"
                ),
            })
        }
        _ => {}
    }
    report(EventType::Normal, "Pulling", format!("Pulling image {image:?}"));
    let started = std::time::Instant::now();
    let attempts: Vec<Option<&v1::AuthConfig>> = match auths {
        [] => vec![None],
        auths => auths.iter().map(Some).collect(),
    };
    let mut last_error = String::new();
    for auth in attempts {
        match cri.pull_image(image, auth.cloned()).await {
            Ok(pulled) => {
                let took = started.elapsed().as_secs_f64();
                report(
                    EventType::Normal,
                    "Pulled",
                    format!("Successfully pulled image {image:?} in {took:.3}s"),
                );
                return Ok(pulled);
            }
            Err(status) => last_error = status.message().to_string(),
        }
    }
    let failed = format!("Failed to pull image {image:?}: {last_error}");
    match local {
        Some(id) => {
            report(EventType::Warning, "Failed", format!("{failed}; running the copy on the node"));
            Ok(id)
        }
        None => Err(pull_failed(format!("pulling {image}: {last_error}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image: &str, policy: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn latest_or_untagged_images_are_pulled_always_others_if_not_present() {
        assert_eq!(pull_policy(&container("busybox", None)), "Always");
        assert_eq!(pull_policy(&container("localhost:5000/busybox:latest", None)), "Always");
        assert_eq!(pull_policy(&container("localhost:5000/busybox", None)), "Always");
        assert_eq!(pull_policy(&container("busybox:1.37", None)), "IfNotPresent");
        assert_eq!(pull_policy(&container("busybox@sha256:abc", None)), "IfNotPresent");
        assert_eq!(pull_policy(&container("busybox", Some("Never"))), "Never");
    }
}
