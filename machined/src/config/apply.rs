//! Applying a machine config: what changes, whether that needs a reboot, and what the
//! requested mode turns into.

use std::time::Duration;

use cairn_api::config::MachineConfig;
use serde_yaml::Value;

/// Config paths whose changes only take effect at boot.
const REBOOT_PATHS: &[&str] = &["machine.install", "machine.ephemeral", "machine.kernel"];

/// How the operator asked for a config to be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// Live when possible, otherwise reboot.
    Auto,
    /// Live; refuse changes that need a reboot.
    NoReboot,
    /// Store and reboot.
    Reboot,
    /// Store for the next boot.
    Staged,
    /// Live, not stored, reverted after the timeout.
    Try(Duration),
}

/// What the node will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Store and apply now.
    Live,
    /// Store and reboot.
    Reboot,
    /// Store as staged.
    Stage,
    /// Apply now without storing; revert after the timeout.
    Try(Duration),
}

/// An apply request the node refuses before changing anything.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// `no-reboot` with changes that need one.
    #[error("changes to {} need a reboot; apply with --mode auto, reboot or staged", .0.join(", "))]
    NeedsReboot(Vec<String>),
    /// `try` with nothing to return to.
    #[error("--mode try needs a previous config to return to; this node has none yet (maintenance mode)")]
    TryWithoutPrevious,
    /// `try` with a zero timeout.
    #[error("--mode try needs a timeout above zero")]
    TryWithoutTimeout,
}

/// The outcome of planning: the action and the changed paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What the node will do.
    pub action: Action,
    /// YAML paths whose values change (all top-level sections on a first config).
    pub changes: Vec<String>,
}

/// Decides what applying `new` over `current` in `mode` means.
pub fn plan(
    current: Option<&MachineConfig>,
    new: &MachineConfig,
    mode: ApplyMode,
) -> Result<Plan, PlanError> {
    let changes = changed_paths(current, new);
    // A first config changes everything, but nothing that was running needs a reboot.
    let needs_reboot: Vec<String> = match current {
        None => Vec::new(),
        Some(_) => changes
            .iter()
            .filter(|path| REBOOT_PATHS.iter().any(|prefix| path.starts_with(prefix)))
            .cloned()
            .collect(),
    };
    let action = match mode {
        ApplyMode::Auto if needs_reboot.is_empty() => Action::Live,
        ApplyMode::Auto | ApplyMode::Reboot => Action::Reboot,
        ApplyMode::NoReboot if needs_reboot.is_empty() => Action::Live,
        ApplyMode::NoReboot => return Err(PlanError::NeedsReboot(needs_reboot)),
        ApplyMode::Staged => Action::Stage,
        ApplyMode::Try(_) if current.is_none() => return Err(PlanError::TryWithoutPrevious),
        ApplyMode::Try(timeout) if timeout.is_zero() => return Err(PlanError::TryWithoutTimeout),
        ApplyMode::Try(timeout) => Action::Try(timeout),
    };
    Ok(Plan { action, changes })
}

/// The YAML paths whose values differ between `old` and `new`.
pub fn changed_paths(old: Option<&MachineConfig>, new: &MachineConfig) -> Vec<String> {
    let to_value =
        |c: &MachineConfig| serde_yaml::to_value(c).expect("a machine config always serializes");
    // A first config is compared with an empty document: every section it sets is a change.
    let old = old.map_or_else(|| Value::Mapping(Default::default()), to_value);
    let mut paths = Vec::new();
    diff(Some(&old), Some(&to_value(new)), String::new(), &mut paths);
    paths
}

fn diff(old: Option<&Value>, new: Option<&Value>, path: String, out: &mut Vec<String>) {
    match (old, new) {
        (Some(Value::Mapping(a)), Some(Value::Mapping(b))) => {
            let mut keys: Vec<&Value> = a.keys().chain(b.keys()).collect();
            keys.sort_by_key(|k| key_name(k));
            keys.dedup();
            for key in keys {
                let child = if path.is_empty() {
                    key_name(key)
                } else {
                    format!("{path}.{}", key_name(key))
                };
                diff(a.get(key), b.get(key), child, out);
            }
        }
        (Some(Value::Sequence(a)), Some(Value::Sequence(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(Some(x), Some(y), format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a != b => out.push(path),
        _ => {}
    }
}

fn key_name(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> MachineConfig {
        // Validation is not the point here; build the value directly.
        serde_yaml::from_str(&format!(
            "version: v1alpha1\nmachine:\n  clientCa: {{crt: x}}\n  nodeCa: {{crt: x, key: y}}\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn changed_paths_name_leaves() {
        let old = config("  hostname: a\n  network: {nameservers: [1.1.1.1, 8.8.8.8]}\n");
        let new = config(
            "  hostname: b\n  network: {nameservers: [1.1.1.1, 9.9.9.9]}\n  sysctls: {vm.x: '1'}\n",
        );
        assert_eq!(
            changed_paths(Some(&old), &new),
            ["machine.hostname", "machine.network.nameservers[1]", "machine.sysctls"]
        );
        assert!(changed_paths(Some(&old), &old).is_empty());
        assert_eq!(changed_paths(None, &old), ["machine", "version"]);
    }

    #[test]
    fn modes_resolve_by_what_changes() {
        let old = config("");
        let kernel = config("  kernel: {args: [quiet]}\n");
        let host = config("  hostname: b\n");
        assert_eq!(plan(Some(&old), &host, ApplyMode::Auto).unwrap().action, Action::Live);
        assert_eq!(plan(Some(&old), &kernel, ApplyMode::Auto).unwrap().action, Action::Reboot);
        assert!(
            matches!(plan(Some(&old), &kernel, ApplyMode::NoReboot), Err(PlanError::NeedsReboot(p)) if p == ["machine.kernel"])
        );
        assert_eq!(plan(None, &kernel, ApplyMode::NoReboot).unwrap().action, Action::Live);
        assert!(matches!(
            plan(None, &host, ApplyMode::Try(Duration::from_secs(5))),
            Err(PlanError::TryWithoutPrevious)
        ));
        assert!(matches!(
            plan(Some(&old), &host, ApplyMode::Try(Duration::ZERO)),
            Err(PlanError::TryWithoutTimeout)
        ));
        assert_eq!(plan(Some(&old), &host, ApplyMode::Staged).unwrap().action, Action::Stage);
    }
}
