//! `watchdog`: arms the hardware watchdog, where the machine has one (`/dev/watchdog`; in
//! QEMU, `-device i6300esb`), and feeds it from machined's runtime. Should machined or the
//! kernel hang, the feeding stops and the watchdog resets the machine; on a slot booted on
//! trial that reset is one more spent try, so a hang also ends in a rollback. Runs only as
//! PID 1.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::service::{Service, ServiceContext};

/// The device; opening it arms the watchdog.
const DEVICE: &str = "/dev/watchdog";
/// Where the driver says how long the watchdog waits for food.
const TIMEOUT_PATH: &str = "/sys/class/watchdog/watchdog0/timeout";

/// The watchdog service.
pub struct Watchdog;

impl Service for Watchdog {
    fn id(&self) -> &'static str {
        "watchdog"
    }

    /// The safety net stays while the node runs; it is disarmed only at power-off or reboot.
    fn stoppable(&self) -> bool {
        false
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let mut device = match std::fs::OpenOptions::new().write(true).open(DEVICE) {
                Ok(device) => device,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    ctx.log("this machine has no hardware watchdog");
                    ctx.ready();
                    ctx.stop.cancelled().await;
                    return Ok(());
                }
                Err(e) => anyhow::bail!("{DEVICE}: {e}"),
            };
            let timeout = std::fs::read_to_string(TIMEOUT_PATH)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(30);
            // Fed at a third of its timeout: two missed meals are not yet a reset.
            let period = Duration::from_secs((timeout / 3).max(1));
            ctx.log(format!("armed: it resets the machine after {timeout}s without food"));
            ctx.ready();
            loop {
                device.write_all(b"\0").map_err(|e| anyhow::anyhow!("{DEVICE}: {e}"))?;
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    // The magic close disarms it: a power-off that takes longer than the
                    // timeout must not turn into a reset.
                    _ = ctx.stop.cancelled() => {
                        device.write_all(b"V").map_err(|e| anyhow::anyhow!("{DEVICE}: {e}"))?;
                        ctx.log("disarmed");
                        return Ok(());
                    }
                }
            }
        })
    }
}
