//! `serving-cert`: keeps the API's serving certificate naming the node's current addresses
//! and host name, and dated by a trusted clock. At boot the certificate is issued before
//! DHCP or static addresses are up, and maybe before the clock is synchronised (a board
//! without RTC starts at its time floor), so without this a node reached at its own address
//! would fail TLS name checks, or present a certificate dated from the wrong time.
//!
//! The addresses and the clock come as facts; a periodic check catches what announces
//! nothing (a host name from DHCP).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::facts::Fact;
use crate::facts::Facts;
use crate::node::config::{Configuration, Reissue};
use crate::service::{Dependency, Service, ServiceContext};

/// How often the names are checked without a change of the facts.
const RECHECK: Duration = Duration::from_secs(30);

/// The serving-certificate service.
pub struct ServingCert {
    configuration: Arc<Configuration>,
    facts: Arc<Facts>,
}

impl ServingCert {
    /// Re-issues the serving certificate of `configuration` as the addresses, host name and
    /// clock of `facts` change.
    pub fn new(configuration: Arc<Configuration>, facts: Arc<Facts>) -> Self {
        ServingCert { configuration, facts }
    }

    fn follow(&self, ctx: &ServiceContext, when: Reissue) {
        match self.configuration.follow_serving_names(when) {
            Ok(true) => ctx.log("serving certificate re-issued"),
            Ok(false) => {}
            Err(e) => ctx.log(format!("re-issuing the serving certificate: {e}")),
        }
    }
}

impl Service for ServingCert {
    fn id(&self) -> &'static str {
        "serving-cert"
    }

    fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Fact(Fact::Addresses, None)]
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let facts = &self.facts;
            let (mut addresses, mut clock) = (facts.addresses.subscribe(), facts.clock.subscribe());
            let mut config = facts.config.subscribe();
            ctx.ready();
            // A certificate issued before the clock was trusted carries dates from the wrong
            // time: issued again once it can be trusted, here (at start) or when it changes.
            let mut when = Reissue::ClockTrusted;
            let mut recheck = tokio::time::interval(RECHECK);
            loop {
                if clock.borrow_and_update().is_trusted() {
                    when = Reissue::ClockTrusted;
                }
                self.follow(&ctx, when);
                when = tokio::select! {
                    _ = ctx.stop.cancelled() => return Ok(()),
                    _ = recheck.tick() => Reissue::NamesChanged,
                    changed = addresses.changed() => { changed?; Reissue::NamesChanged }
                    changed = clock.changed() => { changed?; Reissue::NamesChanged }
                    // A config change issues a certificate itself; the next comparison starts
                    // from it.
                    changed = config.changed() => { changed?; Reissue::NamesChanged }
                };
            }
        })
    }
}
