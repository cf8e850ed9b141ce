//! Container lifecycle hooks, as the upstream kubelet runs them: `postStart` right after the
//! container starts (it is not started until the hook returns, and a hook that fails has it
//! killed, so its restart policy decides), `preStop` before it is stopped, within its grace
//! period. A hook runs exec through CRI `ExecSync`, an HTTP GET or a TCP connect, as probes
//! do, or sleeps.

use std::time::Duration;

use k8s_openapi::api::core::v1::LifecycleHandler;

use super::probe::{self, Action, Target};
use crate::workloads::cri::Cri;

/// The longest a postStart hook may run: the upstream kubelet waits for it without a bound,
/// which would hold the pod's worker forever.
pub const POST_START_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `hook` against `target` for at most `timeout`: Ok when it succeeds, else why not.
pub async fn run(
    cri: &dyn Cri,
    hook: &LifecycleHandler,
    timeout: Duration,
    target: &Target<'_>,
) -> Result<(), String> {
    if let Some(sleep) = &hook.sleep {
        let seconds = u64::try_from(sleep.seconds).unwrap_or_default();
        tokio::time::sleep(Duration::from_secs(seconds).min(timeout)).await;
        return Ok(());
    }
    probe::run(cri, Action::from(hook), timeout, target).await
}
