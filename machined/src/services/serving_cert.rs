//! `serving-cert`: keeps the API's serving certificate naming the node's current addresses
//! and host name. At boot the certificate is issued before DHCP or static addresses are up,
//! so without this a node reached at its own address would fail TLS name checks.
//!
//! Address changes arrive as netlink notifications (a burst of them is taken as one); a
//! periodic check catches what sends none (a host name from DHCP).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use rtnetlink::{new_multicast_connection, MulticastGroup};

use crate::machine::Machine;
use crate::supervisor::{Service, ServiceContext};

/// Quiet time after an address notification before the names are checked, so a link coming
/// up with several addresses costs one certificate.
const SETTLE: Duration = Duration::from_millis(500);
/// How often the names are checked without a notification.
const RECHECK: Duration = Duration::from_secs(30);

/// The serving-certificate service.
pub struct ServingCert {
    machine: Arc<Machine>,
}

impl ServingCert {
    /// Follows `machine`'s addresses.
    pub fn new(machine: Arc<Machine>) -> Self {
        ServingCert { machine }
    }

    fn follow(&self, ctx: &ServiceContext) {
        match self.machine.follow_serving_names() {
            Ok(true) => ctx.log("serving certificate re-issued for the node's current names"),
            Ok(false) => {}
            Err(e) => ctx.log(format!("re-issuing the serving certificate: {e}")),
        }
    }
}

impl Service for ServingCert {
    fn id(&self) -> &'static str {
        "serving-cert"
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let (connection, _, mut notifications) = new_multicast_connection(&[
                MulticastGroup::Ipv4Ifaddr,
                MulticastGroup::Ipv6Ifaddr,
            ])?;
            let connection = tokio::spawn(connection);
            let mut config = self.machine.watch_config();
            ctx.ready();
            let mut recheck = tokio::time::interval(RECHECK);
            let result = loop {
                tokio::select! {
                    _ = ctx.stop.cancelled() => break Ok(()),
                    _ = recheck.tick() => {}
                    // A config change re-issues the certificate itself; the new one is the
                    // base the next comparison starts from.
                    changed = config.changed() => {
                        if changed.is_err() { break Ok(()) }
                        continue;
                    }
                    notification = notifications.next() => {
                        if notification.is_none() {
                            break Err(anyhow::anyhow!("the netlink notifications ended"));
                        }
                        // Let the burst pass, then drop what queued meanwhile.
                        tokio::time::sleep(SETTLE).await;
                        while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, notifications.next()).await {}
                    }
                }
                self.follow(&ctx);
            };
            connection.abort();
            result
        })
    }
}
