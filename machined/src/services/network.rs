//! `network`: configures the node's network at boot and renews the DHCP lease at half its
//! time. Runs only as PID 1: an ordinary process leaves the host's network alone.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::network;
use crate::supervisor::{Service, ServiceContext};

/// The network service.
pub struct Network;

impl Service for Network {
    fn id(&self) -> &'static str {
        "network"
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let handle = network::connect()?;
            let mut configured = network::configure(&handle).await?;
            let lease = &configured.lease;
            ctx.log(format!(
                "{}: {}/{} via {:?}, DNS {:?}, lease {}s",
                configured.link,
                lease.address,
                lease.prefix_len,
                lease.router,
                lease.dns,
                lease.lease_time.as_secs()
            ));
            tracing::info!(
                "network: {} has {}/{}",
                configured.link,
                lease.address,
                lease.prefix_len
            );
            name_host(&configured.mac);
            ctx.ready();
            loop {
                tokio::select! {
                    _ = ctx.stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(configured.lease.lease_time / 2) => {}
                }
                configured = network::configure(&handle).await?;
                ctx.log(format!(
                    "{}: lease renewed ({})",
                    configured.link, configured.lease.address
                ));
            }
        })
    }
}

/// Gives a node that has no host name `cairn-` and the last three bytes of its MAC, so nodes
/// on one network tell apart (the machine config's hostname, when applied, wins).
fn name_host(mac: &[u8; 6]) {
    let current = crate::machine::kernel_hostname();
    if current.is_empty() || current == "(none)" || current == "localhost" {
        let name = format!("cairn-{:02x}{:02x}{:02x}", mac[3], mac[4], mac[5]);
        match nix::unistd::sethostname(&name) {
            Ok(()) => tracing::info!("host name: {name}"),
            Err(errno) => tracing::warn!("setting the host name {name}: {errno}"),
        }
    }
}
