//! `time`: keeps the clock right with SNTP (see [`crate::time`]) and publishes its state as
//! the clock fact. Runs only as PID 1: an ordinary process leaves the host's clock alone.
//!
//! Each sync is [`Synchroniser::sync`]: the first since boot steps the clock; after it, one
//! server alone moves it by at most a second (and the drift since the last sync), and a
//! larger step needs distinct servers that agree (see [`crate::time::discipline`]); a refused step is logged and shown as the clock
//! fact's `last_error`. A correction that would set the clock below the image's time floor
//! is refused: that floor cannot be ahead of true time, so such a server is wrong. Confirmed
//! times are recorded on STATE (at most once per [`RECORD_INTERVAL`], to spare SD
//! cards), the floor the next boot starts from. A failed sync is retried with a growing
//! delay, and at once when the node's addresses change.
//!
//! [`RECORD_INTERVAL`]: crate::time::floor::RECORD_INTERVAL

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn_api::config::MachineConfig;
use futures_util::future::BoxFuture;

use crate::facts::{Clock, Facts};
use crate::service::{self, Service, ServiceContext};
use crate::time::clock::SystemClock;
use crate::time::floor::Floor;
use crate::time::sntp;
use crate::time::sync::{Synced, Synchroniser};

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
    facts: Arc<Facts>,
    /// Held across restarts of the service: a restart is not a first sync, which one server
    /// alone may make.
    synchroniser: tokio::sync::Mutex<Synchroniser<SystemClock>>,
}

impl TimeSync {
    /// Keeps the clock as the running config of `facts` says, never below `image_floor`,
    /// keeping the last good time in `floor_path`; publishes it as the clock fact.
    pub fn new(facts: Arc<Facts>, image_floor: Option<Floor>, floor_path: PathBuf) -> Self {
        let synchroniser =
            Synchroniser::new(SystemClock, image_floor, floor_path, sntp::DEFAULT_TIMEOUT);
        TimeSync { facts, synchroniser: tokio::sync::Mutex::new(synchroniser) }
    }

    /// The clock fact after `synced`, from the fact before it (`previous`); `None` when
    /// nothing was corrected (a refused step), and only the error is to be noted.
    fn fact(synced: &Synced, previous: &Clock) -> Option<Clock> {
        let (correction, reading) = synced.decision.correction.as_ref()?;
        Some(Clock::Synchronised {
            source: reading.sample.server.to_string(),
            offset_seconds: reading.sample.offset.as_nanos() as f64 / 1e9,
            at: SystemTime::now(),
            correction: correction.to_string(),
            raised_to_floor: previous.raised_to_floor(),
            last_error: synced.decision.refused.as_ref().map(ToString::to_string),
        })
    }
}

impl Service for TimeSync {
    fn id(&self) -> &'static str {
        "time"
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let facts = self.facts.clone();
            let mut synchroniser = self.synchroniser.lock().await;
            let mut config = facts.config.subscribe();
            let mut addresses = facts.addresses.subscribe();
            let mut retry = RETRY_START;
            let mut last_failure: Option<String> = None;
            ctx.ready();
            loop {
                let current = config.borrow_and_update().clone();
                // Only an address change after this attempt is news.
                addresses.borrow_and_update();
                let mut failed = false;
                let wait = if current.as_ref().is_some_and(|c| c.machine.time.disabled) {
                    facts.clock.send_replace(Clock::Disabled);
                    None
                } else {
                    let servers = servers(current.as_deref());
                    // DNS and a timeout per address can take long; a stop must not wait.
                    let synced = tokio::select! {
                        _ = ctx.stop.cancelled() => return Ok(()),
                        synced = synchroniser.sync(&servers) => synced,
                    };
                    match synced {
                        Ok(synced) => {
                            for failure in &synced.unanswered {
                                ctx.log(format!(
                                    "checking a large step with another server: {failure}"
                                ));
                            }
                            if let Some(refused) = &synced.decision.refused {
                                ctx.log(refused.to_string());
                            }
                            let previous = facts.clock.borrow().clone();
                            match Self::fact(&synced, &previous) {
                                Some(clock) => {
                                    ctx.log(describe(&clock));
                                    facts.clock.send_replace(clock);
                                }
                                None => note_error(&facts.clock, synced.decision.refused),
                            }
                            if let Some(Err(e)) = synced.floor {
                                ctx.log(e.to_string());
                            }
                            retry = RETRY_START;
                            last_failure = None;
                            Some(POLL)
                        }
                        Err(why) => {
                            // An offline node fails the same way every minute: logged once
                            // (each line reaches the flash), the clock fact keeps the latest.
                            let reason = why.to_string();
                            if last_failure.as_ref() != Some(&reason) {
                                ctx.log(format!(
                                    "sync failed: {reason}; retried every {}s at most, the same failure not logged again",
                                    RETRY_MAX.as_secs()
                                ));
                                last_failure = Some(reason);
                            }
                            // A clock synchronised before stays trusted through a failure.
                            note_error(&facts.clock, Some(why));
                            failed = true;
                            let wait = retry;
                            retry = (retry * 2).min(RETRY_MAX);
                            Some(wait)
                        }
                    }
                };
                tokio::select! {
                    _ = ctx.stop.cancelled() => return Ok(()),
                    changed = config.changed() => changed?,
                    // A failed sync is tried again as soon as the node's addresses or routes
                    // change (DHCP answered): a clock left at its floor must not wait out a
                    // backoff meant for an unreachable server.
                    changed = addresses.changed(), if failed => {
                        changed?;
                        retry = RETRY_START;
                    }
                    _ = service::until(wait.map(|wait| tokio::time::Instant::now() + wait)) => {}
                }
            }
        })
    }
}

/// Notes `why` as the clock fact's last error, whether it is synchronised or not.
fn note_error(clock: &tokio::sync::watch::Sender<Clock>, why: Option<impl ToString>) {
    clock.send_modify(|clock| {
        if let Clock::Unsynchronised { last_error, .. } | Clock::Synchronised { last_error, .. } =
            clock
        {
            *last_error = why.map(|why| why.to_string());
        }
    });
}

fn describe(clock: &Clock) -> String {
    match clock {
        Clock::Synchronised { source, correction, .. } => {
            format!("synchronised with {source}: {correction}")
        }
        other => format!("{other:?}"),
    }
}
