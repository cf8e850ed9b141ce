//! `boot-check`: decides whether this boot's slot is good. When the slot was booted on
//! trial (its entry has a try counter), it waits until the node is healthy and blesses the
//! slot; if the health deadline passes first, it gives the slot up and reboots, and the
//! bootloader boots the other slot. At every boot it also settles the last update's
//! record: a node that came back on the slot it left says so, and why. Runs only as PID 1.

use std::sync::Arc;
use std::time::Duration;

use cairn_api::config::MachineConfig;
use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::ContainerStatus;
use tokio::sync::watch;

use super::record::{self, UpdateState};
use super::{Slots, Updater};
use crate::boot::control::BootState;
use crate::node::power::{PowerAction, PowerControl};
use crate::service::{Service, ServiceContext, Supervisor};
use crate::workloads::kubelet::{Kubelet, PodRecord};

/// How often health is checked while on trial.
const CHECK_INTERVAL: Duration = Duration::from_secs(3);
/// The services a healthy node runs (those it has: containerd and the kubelet run only
/// as PID 1).
const VITAL_SERVICES: [&str; 3] = ["apid", "containerd", "kubelet"];

/// The boot-check service.
pub struct BootCheck {
    updater: Arc<Updater>,
    config: watch::Receiver<Option<Arc<MachineConfig>>>,
    supervisor: Arc<Supervisor>,
    kubelet: Option<Arc<Kubelet>>,
    power: Arc<PowerControl>,
}

impl BootCheck {
    /// Checks the boot of the slots `updater` knows: healthy is `supervisor`'s vital
    /// services up and the pods of the running config (`config`) started by `kubelet`; a
    /// slot given up reboots through `power`.
    pub fn new(
        updater: Arc<Updater>,
        config: watch::Receiver<Option<Arc<MachineConfig>>>,
        supervisor: Arc<Supervisor>,
        kubelet: Option<Arc<Kubelet>>,
        power: Arc<PowerControl>,
    ) -> Self {
        BootCheck { updater, config, supervisor, kubelet, power }
    }
}

impl Service for BootCheck {
    fn id(&self) -> &'static str {
        "boot-check"
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let updater = &self.updater;
            updater.clear_spool();
            let slots = match updater.slots() {
                Ok(slots) => slots,
                Err(e) => {
                    ctx.log(e.to_string());
                    return Ok(());
                }
            };
            let state = slots.control.state()?;
            settle_record(updater, slots, &state);
            let Some(entry) = state.slot(slots.booted).entry.clone() else {
                ctx.log(format!("slot {} has no boot entry: nothing to bless", slots.booted));
                ctx.ready();
                ctx.stop.cancelled().await;
                return Ok(());
            };
            let Some(counter) = entry.counter else {
                ctx.log(format!("slot {} is blessed ({})", slots.booted, entry.name));
                ctx.ready();
                ctx.stop.cancelled().await;
                return Ok(());
            };
            let config = self.config.borrow().clone();
            let deadline = config
                .map(|c| c.machine.update.health_deadline())
                .unwrap_or_else(|| cairn_api::config::Update::default().health_deadline());
            // Both bootloaders count a try before they start the kernel.
            let count = match counter.done {
                0 => "a boot the bootloader did not count".to_string(),
                done => format!("boot {done} of {}", done + counter.left),
            };
            ctx.log(format!(
                "slot {} is on trial ({}, {count}): it has {}s to become healthy",
                slots.booted,
                entry.name,
                deadline.as_secs()
            ));
            ctx.running();
            let until = tokio::time::Instant::now() + deadline;
            let mut problem = String::new();
            loop {
                match health(&self) {
                    Ok(()) => {
                        bless(updater, slots)?;
                        ctx.log(format!("healthy: slot {} is blessed", slots.booted));
                        ctx.ready();
                        break;
                    }
                    Err(now) => {
                        if now != problem {
                            ctx.log(format!("not healthy yet: {now}"));
                        }
                        problem = now;
                    }
                }
                if tokio::time::Instant::now() >= until {
                    let reason = format!("not healthy within {}s: {problem}", deadline.as_secs());
                    ctx.log(format!("{reason}; slot {} is given up", slots.booted));
                    give_up(updater, slots, &reason)?;
                    self.power.request(PowerAction::Reboot);
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(CHECK_INTERVAL) => {}
                    _ = ctx.stop.cancelled() => return Ok(()),
                }
            }
            ctx.stop.cancelled().await;
            Ok(())
        })
    }
}

/// Whether the node is healthy: the vital services it has are up and every pod of the
/// config has started each of its containers at least once (a pod that starts and then
/// crashes is its own business, not the system's). The error says what is not.
fn health(check: &BootCheck) -> Result<(), String> {
    let services = check.supervisor.list();
    for id in VITAL_SERVICES {
        if let Some(service) = services.iter().find(|s| s.id == id) {
            if !service.state.is_up() {
                return Err(format!("{id} is {}", service.state.as_str()));
            }
        }
    }
    let wanted = check.config.borrow().as_ref().map_or(0, |config| config.machine.pods.len());
    if wanted == 0 {
        return Ok(());
    }
    let Some(kubelet) = &check.kubelet else {
        return Err("the kubelet has not started".into());
    };
    let pods: Vec<_> = kubelet.pods().into_iter().filter(|p| p.source == "config").collect();
    if pods.len() < wanted {
        return Err(format!("{} of {wanted} configured pods are known", pods.len()));
    }
    // A pod this node's labels do not admit waits whatever system runs: not the system's fault.
    for record in pods.iter().filter(|p| !is_unscheduled(p)) {
        let statuses = record.pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
        let containers = record.pod.spec.as_ref().map_or(0, |s| s.containers.len());
        let started = statuses.map_or(0, |s| s.iter().filter(|c| has_started(c)).count());
        if started < containers {
            let waiting = statuses
                .into_iter()
                .flatten()
                .find(|c| !has_started(c))
                .and_then(|c| c.state.as_ref()?.waiting.as_ref())
                .map(|w| {
                    format!(
                        " ({}{})",
                        w.reason.as_deref().unwrap_or("waiting"),
                        w.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            return Err(format!(
                "pod {}: {started} of {containers} containers started{waiting}",
                record.key
            ));
        }
    }
    Ok(())
}

/// Whether the kubelet holds the pod back as not for this node (PodScheduled false).
fn is_unscheduled(record: &PodRecord) -> bool {
    let conditions = record.pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.into_iter().flatten().any(|c| c.type_ == "PodScheduled" && c.status == "False")
}

/// Whether the container has run at all.
fn has_started(status: &ContainerStatus) -> bool {
    let state = |s: Option<&k8s_openapi::api::core::v1::ContainerState>| {
        s.is_some_and(|s| s.running.is_some() || s.terminated.is_some())
    };
    state(status.state.as_ref()) || state(status.last_state.as_ref()) || status.restart_count > 0
}

/// Blesses the booted slot: its entry loses the counter; the update succeeded.
fn bless(updater: &Updater, slots: &Slots) -> anyhow::Result<()> {
    slots.control.bless(slots.booted)?;
    if let Some(mut last) = updater.record().load() {
        if last.state == UpdateState::Pending && last.slot == slots.booted {
            last.state = UpdateState::Succeeded;
            last.finished_at = record::now();
            updater.record().save(&last)?;
        }
    }
    Ok(())
}

/// Gives the booted slot up: the reason goes on record for the slot that boots next, and the
/// bootloader does not try the slot again.
fn give_up(updater: &Updater, slots: &Slots, reason: &str) -> anyhow::Result<()> {
    if let Some(mut last) = updater.record().load() {
        if last.state == UpdateState::Pending && last.slot == slots.booted {
            last.reason = reason.to_string();
            updater.record().save(&last)?;
        }
    }
    slots.control.give_up(slots.booted)?;
    Ok(())
}

/// A pending update whose slot is not the one booted has rolled back: records that, with
/// the reason the given-up system left, or else what its entry shows.
fn settle_record(updater: &Updater, slots: &Slots, state: &BootState) {
    let Some(mut last) = updater.record().load() else { return };
    if last.state != UpdateState::Pending || last.slot == slots.booted {
        return;
    }
    if last.reason.is_empty() {
        let target = last.slot;
        last.reason = match &state.slot(target).entry {
            Some(entry) if entry.is_given_up() => format!(
                "slot {target} did not come up: its {} boot tries ran out before machined \
                 could check it (kernel or early boot failure)",
                entry.counter.map_or(0, |c| c.done)
            ),
            _ => format!("slot {target} was not booted"),
        };
    }
    last.state = UpdateState::RolledBack;
    last.finished_at = record::now();
    tracing::warn!("the update to {} rolled back: {}", last.to_version, last.reason);
    if let Err(e) = updater.record().save(&last) {
        tracing::error!("{e}");
    }
}
