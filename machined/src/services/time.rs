//! `time`: keeps the clock right with SNTP (see [`crate::time`]) and publishes its state as
//! the clock fact. Runs only as PID 1: an ordinary process leaves the host's clock alone.
//!
//! The first sync since boot steps the clock; later ones slew it unless the offset is large.
//! A correction that would set the clock below the image's time floor is refused: that floor
//! cannot be ahead of true time, so such a server is wrong. Each sync records the time on
//! STATE (at most once per [`floor::RECORD_INTERVAL`], to spare SD cards), the floor the next
//! boot starts from.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cairn_api::config::MachineConfig;
use futures_util::future::BoxFuture;

use crate::facts::Clock;
use crate::machine::Machine;
use crate::service::{self, Service, ServiceContext};
use crate::time::clock::{Clock as _, Correction, SystemClock};
use crate::time::floor::{self, Floor};
use crate::time::sntp;

/// Time between syncs once synchronised.
const POLL: Duration = Duration::from_secs(15 * 60);
/// First retry delay after a failed sync; doubles up to [`RETRY_MAX`].
const RETRY_START: Duration = Duration::from_secs(2);
/// Longest delay between retries while unsynchronised.
const RETRY_MAX: Duration = Duration::from_secs(64);

/// The servers a config says to ask: its own, or [`sntp::DEFAULT_SERVERS`].
pub fn servers(config: Option<&MachineConfig>) -> Vec<String> {
    match config.map(|c| &c.machine.time.servers) {
        Some(servers) if !servers.is_empty() => servers.clone(),
        _ => sntp::DEFAULT_SERVERS.iter().map(|s| s.to_string()).collect(),
    }
}

/// The time service.
pub struct TimeSync {
    machine: Arc<Machine>,
    /// The image's floor: no server may set the clock below it.
    image_floor: Option<Floor>,
}

impl TimeSync {
    /// Keeps the clock of `machine`'s node, never below `image_floor`.
    pub fn new(machine: Arc<Machine>, image_floor: Option<Floor>) -> Self {
        TimeSync { machine, image_floor }
    }

    /// One sync: asks the servers, corrects the clock; returns the clock fact and whether
    /// the clock was stepped.
    async fn sync(&self, servers: &[String], first: bool) -> Result<(Clock, bool), String> {
        let sample =
            sntp::query_first(servers, sntp::DEFAULT_TIMEOUT).await.map_err(|e| e.to_string())?;
        let now = SystemClock.now();
        if let Some(image_floor) = &self.image_floor {
            image_floor.check(now, sample.offset).map_err(|e| e.to_string())?;
        }
        let correction = Correction::for_offset(sample.offset, first);
        correction.apply(&SystemClock).map_err(|e| e.to_string())?;
        let offset_seconds = sample.offset.as_nanos() as f64 / 1e9;
        let clock = Clock::Synchronised {
            source: sample.server.to_string(),
            offset_seconds,
            at: SystemTime::now(),
            correction: correction.to_string(),
            raised_to_floor: self.machine.facts().clock.borrow().raised_to_floor(),
        };
        Ok((clock, matches!(correction, Correction::Step(_))))
    }
}

impl Service for TimeSync {
    fn id(&self) -> &'static str {
        "time"
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let facts = self.machine.facts().clone();
            let floor_path = self.machine.layout().time_floor_path();
            let mut config = self.machine.watch_config();
            let mut synced_once = false;
            let mut recorded: Option<Instant> = None;
            let mut retry = RETRY_START;
            ctx.ready();
            loop {
                let current = config.borrow_and_update().clone();
                let wait = if current.as_ref().is_some_and(|c| c.machine.time.disabled) {
                    facts.clock.send_replace(Clock::Disabled);
                    None
                } else {
                    let servers = servers(current.as_deref());
                    // DNS and a timeout per address can take long; a stop must not wait.
                    let synced = tokio::select! {
                        _ = ctx.stop.cancelled() => return Ok(()),
                        synced = self.sync(&servers, !synced_once) => synced,
                    };
                    match synced {
                        Ok((clock, stepped)) => {
                            ctx.log(describe(&clock));
                            facts.clock.send_replace(clock);
                            synced_once = true;
                            retry = RETRY_START;
                            // After a step at once: the next boot must not start from
                            // the time before it.
                            if stepped
                                || recorded.is_none_or(|at| at.elapsed() >= floor::RECORD_INTERVAL)
                            {
                                match floor::record(&floor_path, SystemTime::now()) {
                                    Ok(()) => recorded = Some(Instant::now()),
                                    Err(e) => ctx.log(e.to_string()),
                                }
                            }
                            Some(POLL)
                        }
                        Err(why) => {
                            ctx.log(format!(
                                "sync failed: {why}; next try in {}s",
                                retry.as_secs()
                            ));
                            // A clock synchronised before stays trusted through a failure.
                            facts.clock.send_modify(|clock| {
                                if let Clock::Unsynchronised { last_error, .. } = clock {
                                    *last_error = Some(why);
                                }
                            });
                            let wait = retry;
                            retry = (retry * 2).min(RETRY_MAX);
                            Some(wait)
                        }
                    }
                };
                tokio::select! {
                    _ = ctx.stop.cancelled() => return Ok(()),
                    changed = config.changed() => changed?,
                    _ = service::until(wait.map(|wait| tokio::time::Instant::now() + wait)) => {}
                }
            }
        })
    }
}

fn describe(clock: &Clock) -> String {
    match clock {
        Clock::Synchronised { source, correction, .. } => {
            format!("synchronised with {source}: {correction}")
        }
        other => format!("{other:?}"),
    }
}
