//! Following a node through the reboot into an upgraded or rolled-back slot (`--wait`), and
//! the words for an update's outcome (also `ctl version`'s LAST_UPDATE).

use std::time::Duration;

use cairn_api::machine as pb;
use pb::UpdateState;
use serde_json::json;
use tokio::time::{sleep, timeout, Instant};

use super::Session;
use crate::connect::{connect, NodeAddress};
use crate::errors::describe;
use crate::output::{print_stream_record, Row};

/// How often the node is asked while it reboots.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// One poll's limit: a node going down can leave a call hanging rather than failing.
const POLL_LIMIT: Duration = Duration::from_secs(15);
/// The whole wait's limit: a trial boot that fails may take two reboots and a health check.
const WAIT_LIMIT: Duration = Duration::from_secs(20 * 60);

/// Where an upgrade or rollback sends a node: the slot it must come up on and that slot's
/// version ("" when the node did not say).
#[derive(Debug, Clone)]
pub(super) struct BootTarget {
    pub slot: String,
    pub version: String,
}

impl std::fmt::Display for BootTarget {
    /// "slot B (0.2.0)", or "slot B" without a version.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version.as_str() {
            "" => write!(f, "slot {}", self.slot),
            version => write!(f, "slot {} ({version})", self.slot),
        }
    }
}

/// What the node's answers so far say.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Not there yet: down, still on the old slot, or on trial.
    Waiting,
    /// Runs the target, blessed.
    Running,
    /// Came back on the slot it left; the message says where and why.
    RolledBack(String),
}

/// Judges a node's `Version` answers, one poll after another, while it reboots into a target.
struct BootWatch<'a> {
    target: &'a BootTarget,
    /// Whether a poll failed: the node went down, so what it says now is from after the reboot.
    seen_down: bool,
}

impl BootWatch<'_> {
    /// Takes one poll's answer (`None`: it failed) and says where the node is.
    fn observe(&mut self, answer: Option<&pb::VersionResponse>) -> Verdict {
        let Some(v) = answer else {
            self.seen_down = true;
            return Verdict::Waiting;
        };
        let Some(outcome) = &v.last_update else {
            return Verdict::Waiting;
        };
        let target = self.target;
        let is_target = |version: &str| target.version.is_empty() || version == target.version;
        match outcome.state() {
            // Success needs the target slot, which the node before the reboot never runs (an
            // update always goes to the slot not running), so no earlier answer can pass.
            UpdateState::Succeeded if v.slot == target.slot && is_target(&v.version) => {
                Verdict::Running
            }
            // A rollback from an earlier attempt at the same version may still show before the
            // reboot; after one, a rollback from this version is this update's.
            UpdateState::RolledBack if self.seen_down && is_target(&outcome.to_version) => {
                let why = match outcome.reason.as_str() {
                    "" => String::new(),
                    reason => format!(": {reason}"),
                };
                Verdict::RolledBack(format!("rolled back to slot {} ({}){why}", v.slot, v.version))
            }
            _ => Verdict::Waiting,
        }
    }
}

/// Polls `node` until it runs `target` (prints so and returns), went back to its old slot,
/// or [`WAIT_LIMIT`] passes (errors). Prints how the node fares, on stderr, as it changes.
pub(super) async fn follow(
    session: &Session,
    node: &NodeAddress,
    target: &BootTarget,
) -> anyhow::Result<()> {
    let label = node.to_string();
    let deadline = Instant::now() + WAIT_LIMIT;
    let mut watch = BootWatch { target, seen_down: false };
    let mut status = String::new();
    eprintln!("node {label}: waiting for {target} to boot and prove healthy");
    loop {
        let answer = poll(session, node).await;
        let verdict = watch.observe(answer.as_ref().ok());
        let now = match &answer {
            Ok(v) => format!(
                "up: {} on slot {}, last update: {}",
                v.version,
                v.slot,
                outcome_summary(v.last_update.as_ref())
            ),
            Err(_) => "down".to_string(),
        };
        if now != status {
            eprintln!("node {label}: {now}");
            status = now;
        }
        match verdict {
            Verdict::Running => {
                let line = format!("node {label} runs {} on slot {}", target.version, target.slot);
                return print_step(session, &label, true, "running", target, &line);
            }
            Verdict::RolledBack(message) => anyhow::bail!(message),
            Verdict::Waiting => {}
        }
        if Instant::now() >= deadline {
            let last = match answer {
                Ok(_) => status,
                Err(e) => format!("unreachable: {e}"),
            };
            let limit = humantime::format_duration(WAIT_LIMIT);
            anyhow::bail!("did not come up on {target} within {limit}; last seen: {last}");
        }
        sleep(POLL_EVERY).await;
    }
}

/// One `Version` call on a fresh connection (the old one died with the reboot).
async fn poll(session: &Session, node: &NodeAddress) -> Result<pb::VersionResponse, String> {
    let targets = &session.targets;
    let call = async {
        let mut client = connect(node, targets.tls.clone()).await?;
        Ok(client.version(pb::VersionRequest {}).await?.into_inner())
    };
    match timeout(POLL_LIMIT, call).await {
        Ok(result) => result.map_err(|e| describe(&e, targets.client_auth)),
        Err(_) => Err("no answer".into()),
    }
}

/// Prints a step of an update: a line (after the node's label when there are several nodes
/// and the line does not name it), or a JSON object with the event, version and slot.
pub(super) fn print_step(
    session: &Session,
    node: &str,
    names_node: bool,
    event: &str,
    target: &BootTarget,
    line: &str,
) -> anyhow::Result<()> {
    let prefix = session.targets.nodes.len() > 1 && !names_node;
    let record = json!({"event": event, "version": target.version, "slot": target.slot});
    let record = match record {
        serde_json::Value::Object(map) => map,
        _ => Row::new(),
    };
    print_stream_record(session.format, node, prefix, line, record)
}

/// LAST_UPDATE in words: "succeeded 0.1.0→0.2.0", "rolled back 0.2.0: WHY", "pending 0.2.0",
/// or "-".
pub(super) fn outcome_summary(outcome: Option<&pb::UpdateOutcome>) -> String {
    let Some(o) = outcome else {
        return "-".into();
    };
    match o.state() {
        UpdateState::Pending => format!("pending {}", o.to_version),
        UpdateState::Succeeded => format!("succeeded {}→{}", o.from_version, o.to_version),
        UpdateState::RolledBack if o.reason.is_empty() => format!("rolled back {}", o.to_version),
        UpdateState::RolledBack => format!("rolled back {}: {}", o.to_version, o.reason),
        UpdateState::Unspecified => "-".into(),
    }
}

/// The outcome as JSON/YAML show it, its state in lower case; null when there was none.
pub(super) fn outcome_json(outcome: Option<&pb::UpdateOutcome>) -> serde_json::Value {
    let Some(o) = outcome else {
        return serde_json::Value::Null;
    };
    let state = match o.state() {
        UpdateState::Pending => "pending",
        UpdateState::Succeeded => "succeeded",
        UpdateState::RolledBack => "rolled_back",
        UpdateState::Unspecified => "unknown",
    };
    json!({
        "state": state, "slot": o.slot, "from_version": o.from_version,
        "to_version": o.to_version, "reason": o.reason,
        "started_at": o.started_at, "finished_at": o.finished_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(state: UpdateState, to: &str, reason: &str) -> pb::UpdateOutcome {
        pb::UpdateOutcome {
            state: state as i32,
            slot: "B".into(),
            from_version: "0.1.0".into(),
            to_version: to.into(),
            reason: reason.into(),
            ..Default::default()
        }
    }

    fn answer(version: &str, slot: &str, last: Option<pb::UpdateOutcome>) -> pb::VersionResponse {
        pb::VersionResponse {
            version: version.into(),
            slot: slot.into(),
            last_update: last,
            ..Default::default()
        }
    }

    /// Feeds polls (`None`: failed) to a watch for slot B running 0.2.0; the verdicts.
    fn verdicts(polls: &[Option<pb::VersionResponse>]) -> Vec<Verdict> {
        let target = BootTarget { slot: "B".into(), version: "0.2.0".into() };
        let mut watch = BootWatch { target: &target, seen_down: false };
        polls.iter().map(|p| watch.observe(p.as_ref())).collect()
    }

    #[test]
    fn waits_through_the_reboot_and_the_trial_then_succeeds() {
        let pending = || Some(outcome(UpdateState::Pending, "0.2.0", ""));
        let polls = [
            Some(answer("0.1.0", "A", pending())),
            None,
            Some(answer("0.2.0", "B", pending())),
            Some(answer("0.2.0", "B", Some(outcome(UpdateState::Succeeded, "0.2.0", "")))),
        ];
        use Verdict::*;
        assert_eq!(verdicts(&polls), [Waiting, Waiting, Waiting, Running]);
    }

    #[test]
    fn success_on_the_old_slot_or_another_version_is_not_ours() {
        let succeeded = || Some(outcome(UpdateState::Succeeded, "0.2.0", ""));
        let polls = [
            // The node before the reboot, blessed by an earlier update.
            Some(answer("0.1.0", "A", Some(outcome(UpdateState::Succeeded, "0.1.0", "")))),
            Some(answer("0.1.0", "A", succeeded())),
            Some(answer("0.3.0", "B", succeeded())),
        ];
        assert!(verdicts(&polls).iter().all(|v| *v == Verdict::Waiting));
    }

    #[test]
    fn a_rollback_counts_only_after_the_node_was_down() {
        let rolled_back = || Some(outcome(UpdateState::RolledBack, "0.2.0", "kubelet unhealthy"));
        let polls = [
            Some(answer("0.1.0", "A", rolled_back())),
            None,
            Some(answer("0.1.0", "A", rolled_back())),
        ];
        let message = "rolled back to slot A (0.1.0): kubelet unhealthy".to_string();
        use Verdict::*;
        assert_eq!(verdicts(&polls), [Waiting, Waiting, RolledBack(message)]);
    }

    #[test]
    fn a_rollback_of_another_version_is_not_ours() {
        let other = Some(outcome(UpdateState::RolledBack, "0.1.5", "boot failed"));
        assert_eq!(
            verdicts(&[None, Some(answer("0.1.0", "A", other))]),
            [Verdict::Waiting, Verdict::Waiting]
        );
    }

    #[test]
    fn a_target_without_version_needs_only_the_slot() {
        let target = BootTarget { slot: "A".into(), version: String::new() };
        let mut watch = BootWatch { target: &target, seen_down: false };
        let blessed = answer("0.1.0", "A", Some(outcome(UpdateState::Succeeded, "0.1.0", "")));
        assert_eq!(watch.observe(Some(&blessed)), Verdict::Running);
    }

    #[test]
    fn outcomes_in_words() {
        assert_eq!(outcome_summary(None), "-");
        let summary = |state, reason| outcome_summary(Some(&outcome(state, "0.2.0", reason)));
        assert_eq!(summary(UpdateState::Pending, ""), "pending 0.2.0");
        assert_eq!(summary(UpdateState::Succeeded, ""), "succeeded 0.1.0→0.2.0");
        assert_eq!(summary(UpdateState::RolledBack, ""), "rolled back 0.2.0");
        assert_eq!(summary(UpdateState::RolledBack, "no network"), "rolled back 0.2.0: no network");
        assert_eq!(summary(UpdateState::Unspecified, ""), "-");
    }

    #[test]
    fn outcome_as_json() {
        assert!(outcome_json(None).is_null());
        let value = outcome_json(Some(&outcome(UpdateState::RolledBack, "0.2.0", "why")));
        assert_eq!(value["state"], "rolled_back");
        assert_eq!(value["to_version"], "0.2.0");
        assert_eq!(value["reason"], "why");
    }
}
