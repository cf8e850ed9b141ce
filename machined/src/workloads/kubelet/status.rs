//! Pod status as Kubernetes reports it (what `kubectl get pod -o yaml` shows): phase,
//! conditions, container states with their reasons, restart counts and the pod IP, built
//! from what the pod worker knows and containerd's container statuses.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::{DateTime, Utc};

use crate::workloads::cri::v1;

/// What the worker knows of one container of the pod.
#[derive(Debug, Clone, Default)]
pub struct ContainerView {
    /// Its name in the pod.
    pub name: String,
    /// The image the pod asks for.
    pub image: String,
    /// Why it is not running, as (reason, message), e.g. `CrashLoopBackOff`.
    pub waiting: Option<(String, String)>,
    /// containerd's status of its latest run.
    pub current: Option<v1::ContainerStatus>,
    /// containerd's status of the run before it.
    pub previous: Option<v1::ContainerStatus>,
    /// Started (its startup probe passed, or it has none) and running.
    pub started: bool,
    /// Ready: started, and its readiness probe passes.
    pub ready: bool,
    /// How many times it was restarted.
    pub restarts: i32,
    /// Ended, and its restart policy does not restart it.
    pub done: bool,
    /// An init container that runs beside the containers
    /// (see [`cairn_api::config::pod::is_sidecar`]).
    pub sidecar: bool,
}

/// A CRI timestamp (nanoseconds since 1970) as a Kubernetes time; None for 0.
fn time(nanos: i64) -> Option<Time> {
    (nanos > 0).then(|| Time(DateTime::<Utc>::from_timestamp_nanos(nanos)))
}

/// The time now, as Kubernetes writes it.
pub fn now() -> Time {
    let since_epoch =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Time(DateTime::<Utc>::from_timestamp_nanos(since_epoch.as_nanos() as i64))
}

/// The Kubernetes state of one CRI container run.
fn run_state(status: &v1::ContainerStatus) -> ContainerState {
    match v1::ContainerState::try_from(status.state) {
        Ok(v1::ContainerState::ContainerRunning) => ContainerState {
            running: Some(ContainerStateRunning { started_at: time(status.started_at) }),
            ..Default::default()
        },
        Ok(v1::ContainerState::ContainerExited) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: status.exit_code,
                reason: Some(match status.reason.as_str() {
                    "" if status.exit_code == 0 => "Completed".into(),
                    "" => "Error".into(),
                    reason => reason.into(),
                }),
                message: Some(status.message.clone()).filter(|m| !m.is_empty()),
                started_at: time(status.started_at),
                finished_at: time(status.finished_at),
                container_id: Some(format!("containerd://{}", status.id)),
                ..Default::default()
            }),
            ..Default::default()
        },
        _ => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        },
    }
}

fn container_status(view: &ContainerView) -> ContainerStatus {
    let state = match (&view.waiting, &view.current) {
        (Some((reason, message)), _) => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: Some(message.clone()).filter(|m| !m.is_empty()),
            }),
            ..Default::default()
        },
        (None, Some(current)) => run_state(current),
        (None, None) => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        },
    };
    // While the latest run waits for its restart, it is the "last state".
    let last = if view.waiting.is_some() { view.current.as_ref() } else { view.previous.as_ref() };
    ContainerStatus {
        name: view.name.clone(),
        image: view.image.clone(),
        image_id: view.current.as_ref().map(|c| c.image_ref.clone()).unwrap_or_default(),
        container_id: view.current.as_ref().map(|c| format!("containerd://{}", c.id)),
        ready: view.ready,
        started: Some(view.started),
        restart_count: view.restarts,
        state: Some(state),
        last_state: last.map(run_state),
        ..Default::default()
    }
}

fn condition(kind: &str, status: bool) -> PodCondition {
    PodCondition {
        type_: kind.into(),
        status: if status { "True" } else { "False" }.into(),
        ..Default::default()
    }
}

/// Whether a container run ended.
fn exited(view: &ContainerView) -> Option<i32> {
    view.current
        .as_ref()
        .filter(|c| c.state == i32::from(v1::ContainerState::ContainerExited))
        .map(|c| c.exit_code)
}

/// The status of a pod that cannot run on this node, as the scheduler leaves one it cannot
/// place: Pending, not scheduled, with `reason`.
pub fn unscheduled(reason: &str) -> PodStatus {
    PodStatus {
        phase: Some("Pending".into()),
        conditions: Some(vec![PodCondition {
            reason: Some("Unschedulable".into()),
            message: Some(reason.into()),
            ..condition("PodScheduled", false)
        }]),
        ..Default::default()
    }
}

/// Marks `status` as an evicted pod's, for `message` (what it passed): Failed, not ready.
pub fn evicted(status: &mut PodStatus, message: &str) {
    status.phase = Some("Failed".into());
    status.reason = Some("Evicted".into());
    status.message = Some(message.trim_end().into());
    for condition in status.conditions.iter_mut().flatten() {
        if matches!(condition.type_.as_str(), "Ready" | "ContainersReady") {
            condition.status = "False".into();
        }
    }
}

/// The status of a pod that ended before in `phase`: a Job's on an earlier boot, any pod's
/// under a kubelet that stopped since.
pub fn finished(phase: &str) -> PodStatus {
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(vec![
            condition("PodScheduled", true),
            condition("Initialized", true),
            condition("Ready", false),
        ]),
        ..Default::default()
    }
}

/// The pod's status: `sandbox_ready` once its sandbox runs, `ip` its address, `init` and
/// `containers` what the worker knows of its init containers and containers.
pub fn pod_status(
    sandbox_ready: bool,
    ip: Option<String>,
    start_time: Option<Time>,
    (init, containers): (&[ContainerView], &[ContainerView]),
) -> PodStatus {
    let (sidecars, run_once): (Vec<&ContainerView>, Vec<&ContainerView>) =
        init.iter().partition(|c| c.sidecar);
    let init_failed = run_once.iter().any(|c| c.done && exited(c) != Some(0));
    // Sidecars count once started; a sidecar restarting later does not undo it, as upstream.
    let containers_ran = containers.iter().any(|c| c.current.is_some());
    let initialized = run_once.iter().all(|c| c.done && exited(c) == Some(0))
        && (containers_ran || sidecars.iter().all(|c| c.started));
    let all_done = !containers.is_empty() && containers.iter().all(|c| c.done);
    let phase = if init_failed {
        "Failed"
    } else if !initialized {
        "Pending"
    } else if all_done {
        if containers.iter().all(|c| exited(c) == Some(0)) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if sandbox_ready && containers.iter().all(|c| c.current.is_some()) {
        "Running"
    } else {
        "Pending"
    };
    // A sidecar's readiness is the pod's too; its end, once the containers are done, is not.
    let ready = sandbox_ready
        && containers.iter().all(|c| c.ready)
        && sidecars.iter().all(|c| c.ready || all_done);
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(vec![
            condition("PodScheduled", true),
            condition("Initialized", initialized),
            condition("PodReadyToStartContainers", sandbox_ready),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ]),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        start_time,
        container_statuses: Some(containers.iter().map(container_status).collect()),
        init_container_statuses: Some(init.iter().map(container_status).collect())
            .filter(|statuses: &Vec<_>| !statuses.is_empty()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited_run(exit_code: i32, reason: &str) -> v1::ContainerStatus {
        v1::ContainerStatus {
            id: "abc".into(),
            state: v1::ContainerState::ContainerExited.into(),
            exit_code,
            reason: reason.into(),
            ..Default::default()
        }
    }

    #[test]
    fn crash_loops_show_the_waiting_reason_and_the_last_exit() {
        let view = ContainerView {
            name: "c".into(),
            waiting: Some(("CrashLoopBackOff".into(), "back-off 10s".into())),
            current: Some(exited_run(137, "OOMKilled")),
            restarts: 2,
            ..Default::default()
        };
        let status = pod_status(true, Some("10.244.0.5".into()), None, (&[], &[view]));
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let container = &status.container_statuses.unwrap()[0];
        let waiting = container.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = container.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (137, Some("OOMKilled")));
        assert_eq!(container.restart_count, 2);
        assert_eq!(status.pod_ip.as_deref(), Some("10.244.0.5"));
    }

    #[test]
    fn init_containers_hold_the_pod_pending_and_a_failed_one_fails_it() {
        let init = |code: Option<i32>, done| ContainerView {
            name: "init".into(),
            current: code.map(|code| exited_run(code, "")),
            done,
            ..Default::default()
        };
        let main = ContainerView {
            name: "main".into(),
            waiting: Some(("PodInitializing".into(), String::new())),
            ..Default::default()
        };
        let waiting =
            pod_status(true, None, None, (&[init(None, false)], std::slice::from_ref(&main)));
        assert_eq!(waiting.phase.as_deref(), Some("Pending"));
        let initialized = &waiting.conditions.as_ref().unwrap()[1];
        assert_eq!(
            (initialized.type_.as_str(), initialized.status.as_str()),
            ("Initialized", "False")
        );
        assert_eq!(waiting.init_container_statuses.unwrap()[0].name, "init");
        let failed =
            pod_status(true, None, None, (&[init(Some(1), true)], std::slice::from_ref(&main)));
        assert_eq!(failed.phase.as_deref(), Some("Failed"));
        let done = pod_status(true, None, None, (&[init(Some(0), true)], &[main]));
        assert_eq!(done.conditions.unwrap()[1].status, "True");
    }

    #[test]
    fn finished_pods_succeed_or_fail_by_their_exit_codes() {
        let done = |code| ContainerView {
            current: Some(exited_run(code, "")),
            done: true,
            ..Default::default()
        };
        assert_eq!(
            pod_status(true, None, None, (&[], &[done(0)])).phase.as_deref(),
            Some("Succeeded")
        );
        let failed = pod_status(true, None, None, (&[], &[done(0), done(1)]));
        assert_eq!(failed.phase.as_deref(), Some("Failed"));
        let terminated =
            failed.container_statuses.unwrap()[1].state.clone().unwrap().terminated.unwrap();
        assert_eq!(terminated.reason.as_deref(), Some("Error"));
        assert_eq!(
            pod_status(false, None, None, (&[], &[ContainerView::default()])).phase.as_deref(),
            Some("Pending")
        );
    }
}
