//! Reboot and power-off as the node does them: an event, a short grace so the reply reaches
//! the caller, services stopped, logs flushed, then the [`Power`] backend.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::logs::events::{EventBus, EventKind};
use crate::logs::LogBook;
use crate::service::Supervisor;
use crate::system::power::Power;

/// How long machined waits before a reboot or power-off, so the reply reaches the caller.
const POWER_GRACE: Duration = Duration::from_millis(300);

/// Reboot or power-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Restart.
    Reboot,
    /// Turn off.
    PowerOff,
}

/// The handle that reboots or powers the node off, and tells whether that has begun.
pub struct PowerControl {
    events: Arc<EventBus>,
    supervisor: Arc<Supervisor>,
    logs: Arc<LogBook>,
    log_dir: PathBuf,
    power: Box<dyn Power>,
    /// Set once a reboot or power-off has begun: services stopping then stop for good.
    powering_down: AtomicBool,
}

impl PowerControl {
    /// Powers down through `power`, after stopping `supervisor`'s services and flushing
    /// `logs` to `log_dir`.
    pub fn new(
        events: Arc<EventBus>,
        supervisor: Arc<Supervisor>,
        logs: Arc<LogBook>,
        log_dir: PathBuf,
        power: Box<dyn Power>,
    ) -> Arc<PowerControl> {
        Arc::new(PowerControl {
            events,
            supervisor,
            logs,
            log_dir,
            power,
            powering_down: AtomicBool::new(false),
        })
    }

    /// Whether a reboot or power-off has begun.
    pub fn powering_down(&self) -> bool {
        self.powering_down.load(Ordering::SeqCst)
    }

    /// Reboots or powers off after a short grace, stopping services and flushing logs first.
    pub fn request(self: &Arc<Self>, action: PowerAction) {
        let what = match action {
            PowerAction::Reboot => "reboot",
            PowerAction::PowerOff => "power-off",
        };
        self.events.publish(EventKind::Power, format!("{what} requested"));
        self.powering_down.store(true, Ordering::SeqCst);
        let control = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(POWER_GRACE).await;
            control.supervisor.stop_all().await;
            control.logs.flush_to_disk(&control.log_dir);
            let result = match action {
                PowerAction::Reboot => control.power.reboot(),
                PowerAction::PowerOff => control.power.power_off(),
            };
            if let Err(e) = result {
                tracing::error!("{what} failed: {e:#}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    use crate::facts::Facts;

    /// Records what it was asked to do.
    #[derive(Clone, Default)]
    struct RecordingPower(Arc<Mutex<Vec<&'static str>>>);

    impl Power for RecordingPower {
        fn reboot(&self) -> anyhow::Result<()> {
            self.0.lock().unwrap().push("reboot");
            Ok(())
        }

        fn power_off(&self) -> anyhow::Result<()> {
            self.0.lock().unwrap().push("power-off");
            Ok(())
        }
    }

    fn control(dir: &std::path::Path, power: RecordingPower) -> (Arc<PowerControl>, Arc<LogBook>) {
        let events = Arc::new(EventBus::default());
        let logs = Arc::new(LogBook::default());
        let supervisor = Arc::new(Supervisor::new(Facts::new(None), events.clone(), logs.clone()));
        let control =
            PowerControl::new(events, supervisor, logs.clone(), dir.to_path_buf(), Box::new(power));
        (control, logs)
    }

    #[tokio::test(start_paused = true)]
    async fn a_reboot_waits_its_grace_then_flushes_logs_and_reboots() {
        let dir = tempfile::tempdir().unwrap();
        let power = RecordingPower::default();
        let (control, logs) = control(dir.path(), power.clone());
        logs.push("apid", "a line");
        assert!(!control.powering_down());
        control.request(PowerAction::Reboot);
        assert!(control.powering_down());
        tokio::time::sleep(POWER_GRACE / 2).await;
        assert!(power.0.lock().unwrap().is_empty(), "the reply is given its grace");
        tokio::time::sleep(POWER_GRACE).await;
        assert_eq!(*power.0.lock().unwrap(), ["reboot"]);
        let flushed = std::fs::read_to_string(dir.path().join("apid.log")).unwrap();
        assert!(flushed.contains("a line"), "{flushed}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_power_off_is_an_event_then_a_power_off() {
        let dir = tempfile::tempdir().unwrap();
        let power = RecordingPower::default();
        let (control, _) = control(dir.path(), power.clone());
        control.request(PowerAction::PowerOff);
        let events = control.events.ring().snapshot(None);
        assert_eq!(events.last().unwrap().item.message, "power-off requested");
        tokio::time::sleep(POWER_GRACE * 2).await;
        assert_eq!(*power.0.lock().unwrap(), ["power-off"]);
    }
}
