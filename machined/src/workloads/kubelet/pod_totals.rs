//! A pod's total of one resource, as upstream sums it for the pod's cgroup and for eviction
//! (`PodLimits`, `PodRequests`): the larger of what runs together at the end (the containers
//! and the sidecars) and what runs together during any init container (that container and
//! the sidecars started before it), init containers running one at a time.

use k8s_openapi::api::core::v1::{Container, Pod};

use cairn_api::config::pod::is_sidecar;

use super::spec;

/// What a container that does not state the amount counts for in its pod's total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unstated {
    /// It may take the node's, so the pod has no total (a cgroup limit).
    Unbounded,
    /// It adds nothing, and the pod has a total only when some container states one (a
    /// request, or a limit enforced by eviction).
    Nothing,
}

/// The total over `pod` of the amount `amount` reads from each container (None: not stated;
/// an error names a quantity that does not parse); None when the pod has no total.
pub fn pod_total(
    pod: &Pod,
    unstated: Unstated,
    amount: impl Fn(&Container) -> Result<Option<u64>, String>,
) -> Result<Option<u64>, String> {
    let mut stated_by_any = false;
    // Each container's amount, None standing for unbounded.
    let mut each = |container: &Container| -> Result<Option<u64>, String> {
        let stated = amount(container)?;
        stated_by_any |= stated.is_some();
        Ok(match unstated {
            Unstated::Unbounded => stated,
            Unstated::Nothing => Some(stated.unwrap_or(0)),
        })
    };
    let add = |a: Option<u64>, b: Option<u64>| Some(a?.saturating_add(b?));
    let max = |a: Option<u64>, b: Option<u64>| Some(a?.max(b?));
    let mut sidecars = Some(0);
    let mut largest_init = Some(0);
    for container in spec::init_containers(pod) {
        let own = each(container)?;
        if is_sidecar(container) {
            sidecars = add(sidecars, own);
        } else {
            largest_init = max(largest_init, add(own, sidecars));
        }
    }
    let mut at_the_end = sidecars;
    for container in spec::containers(pod) {
        at_the_end = add(at_the_end, each(container)?);
    }
    let total = max(at_the_end, largest_init);
    Ok(total.filter(|_| stated_by_any || unstated == Unstated::Unbounded))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod of `(amount, sidecar)` init containers and `amount` containers.
    fn pod(init: &[(Option<u64>, bool)], containers: &[Option<u64>]) -> Pod {
        let container = |i: usize, amount: &Option<u64>, sidecar: bool| {
            serde_json::json!({
                "name": format!("c{i}"),
                "image": "busybox",
                "args": amount.map(|a| vec![a.to_string()]),
                "restartPolicy": sidecar.then_some("Always"),
            })
        };
        let init: Vec<_> = init.iter().enumerate().map(|(i, (a, s))| container(i, a, *s)).collect();
        let containers: Vec<_> =
            containers.iter().enumerate().map(|(i, a)| container(10 + i, a, false)).collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"initContainers": init, "containers": containers},
        }))
        .unwrap()
    }

    /// The amount each test container states: its first argument.
    fn amount(container: &Container) -> Result<Option<u64>, String> {
        let first = container.args.as_ref().and_then(|args| args.first());
        first.map(|a| a.parse().map_err(|_| format!("{a:?}"))).transpose()
    }

    fn total(pod: &Pod, unstated: Unstated) -> Option<u64> {
        pod_total(pod, unstated, amount).unwrap()
    }

    #[test]
    fn the_containers_sum_unless_an_init_container_takes_more() {
        let small_init = pod(&[(Some(100), false)], &[Some(200), Some(300)]);
        assert_eq!(total(&small_init, Unstated::Unbounded), Some(500));
        let large_init = pod(&[(Some(900), false), (Some(100), false)], &[Some(200)]);
        assert_eq!(total(&large_init, Unstated::Unbounded), Some(900));
    }

    #[test]
    fn sidecars_count_with_the_containers_and_the_init_containers_after_them() {
        // The init container runs beside the first sidecar only: 50 + 600 against 50 + 70 + 10.
        let pod = pod(&[(Some(50), true), (Some(600), false), (Some(70), true)], &[Some(10)]);
        assert_eq!(total(&pod, Unstated::Unbounded), Some(650));
        assert_eq!(total(&pod, Unstated::Nothing), Some(650));
    }

    #[test]
    fn an_unstated_amount_is_unbounded_or_nothing() {
        let one_unstated = pod(&[(None, false)], &[Some(200)]);
        assert_eq!(total(&one_unstated, Unstated::Unbounded), None);
        assert_eq!(total(&one_unstated, Unstated::Nothing), Some(200));
        let none_stated = pod(&[(None, true)], &[None]);
        assert_eq!(total(&none_stated, Unstated::Unbounded), None);
        assert_eq!(total(&none_stated, Unstated::Nothing), None);
        let only_init = pod(&[(Some(300), false)], &[None]);
        assert_eq!(total(&only_init, Unstated::Nothing), Some(300));
    }

    #[test]
    fn an_amount_that_does_not_parse_is_an_error() {
        let mut pod = pod(&[], &[Some(1)]);
        pod.spec.as_mut().unwrap().containers[0].args = Some(vec!["lots".into()]);
        assert_eq!(pod_total(&pod, Unstated::Nothing, amount), Err("\"lots\"".into()));
    }
}
