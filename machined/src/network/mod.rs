//! The node's network, as the machine config says (or DHCP on the first Ethernet link with a
//! carrier when it says nothing): links, DHCPv4 leases, static addresses and routes, and the
//! resolvers in `/run/resolv.conf`. Through rtnetlink; no external tools.
//!
//! - [`plan`]: what the config asks for.
//! - [`reconcile`]: the system brought to the plan, again at each config change and renewal.
//! - [`dhcp`]: the DHCPv4 client.

pub mod dhcp;
pub mod plan;
pub mod reconcile;

use rtnetlink::Handle;

/// Where the resolver configuration goes (`/etc/resolv.conf` links here).
pub const RESOLV_CONF: &str = "/run/resolv.conf";

/// The network could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// Netlink failed.
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    /// A socket or file could not be used.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Opens a netlink connection (its driver runs as a task).
pub fn connect() -> Result<Handle, NetworkError> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(connection);
    Ok(handle)
}
