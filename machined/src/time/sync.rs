//! One sync: asks the configured servers, lets the [`Discipline`] decide, corrects the clock
//! and records the floor when the discipline says the time is confirmed. The other servers
//! are asked only when the first answer wants a step one server may not make alone.
//!
//! Generic over the [`Clock`], so a test can run the whole exchange against real SNTP
//! servers without touching the host's clock (`tests/tests/sntp.rs`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::time::clock::{Clock, ClockError};
use crate::time::discipline::{Decision, Discipline, Reading};
use crate::time::floor::{self, ConfirmedTime, Floor, FloorError};
use crate::time::sntp::{self, SntpError};

/// A sync failed: no server answered, the correction fell below the image's floor, or the
/// clock refused it.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// No server answered.
    #[error(transparent)]
    Sntp(#[from] SntpError),
    /// The correction would set the clock below the image's floor.
    #[error(transparent)]
    BelowFloor(#[from] FloorError),
    /// The clock could not be set.
    #[error(transparent)]
    Clock(#[from] ClockError),
}

/// What a sync did.
#[derive(Debug)]
pub struct Synced {
    /// What was decided, and applied if it holds a correction.
    pub decision: Decision,
    /// The floor recorded (`None`: the time was not confirmed, or not due).
    pub floor: Option<Result<ConfirmedTime, FloorError>>,
    /// The other servers asked about a large step that did not answer.
    pub unanswered: Vec<SntpError>,
}

/// Keeps one clock synchronised across syncs.
pub struct Synchroniser<C> {
    clock: C,
    image_floor: Option<Floor>,
    floor_path: PathBuf,
    timeout: Duration,
    discipline: Discipline,
}

impl<C: Clock> Synchroniser<C> {
    /// Synchronises `clock` (not yet synchronised), never below `image_floor`, recording
    /// confirmed times at `floor_path`; each query waits `timeout` for its reply.
    pub fn new(
        clock: C,
        image_floor: Option<Floor>,
        floor_path: PathBuf,
        timeout: Duration,
    ) -> Synchroniser<C> {
        Synchroniser { clock, image_floor, floor_path, timeout, discipline: Discipline::new() }
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// One sync with `servers` (names as [`sntp::resolve`] takes them). A refused step is
    /// not an error: the clock is left alone and [`Decision::refused`] says why.
    pub async fn sync(&mut self, servers: &[String]) -> Result<Synced, SyncError> {
        let (index, sample) = sntp::query_first_indexed(&self.clock, servers, self.timeout).await?;
        let first = Reading { server: servers[index].clone(), sample };
        let mut unanswered = Vec::new();
        let instant = Instant::now();
        let decision = match self.discipline.decide(&first, instant) {
            Some(decision) => decision,
            None => {
                // Those before `index` have just failed to answer.
                let others = &servers[index + 1..];
                let asked = futures_util::future::join_all(
                    others
                        .iter()
                        .map(|server| sntp::query_server(&self.clock, server, self.timeout)),
                )
                .await;
                let mut readings = Vec::new();
                for (server, result) in others.iter().zip(asked) {
                    match result {
                        Ok(sample) => readings.push(Reading { server: server.clone(), sample }),
                        Err(e) => unanswered.push(e),
                    }
                }
                self.discipline.decide_with_others(&first, &readings, servers.len(), instant)
            }
        };
        if let Some((correction, _)) = &decision.correction {
            if let Some(image_floor) = &self.image_floor {
                image_floor.check(self.clock.now(), correction.offset())?;
            }
            correction.apply(&self.clock)?;
            self.discipline.applied(&decision, instant);
        }
        let instant = Instant::now();
        let floor = self.discipline.floor_due(&decision, self.clock.now(), instant).map(|time| {
            floor::record(&self.floor_path, time)?;
            self.discipline.floor_recorded(instant);
            Ok(time)
        });
        Ok(Synced { decision, floor, unanswered })
    }
}
