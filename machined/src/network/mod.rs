//! The node's network: links up, DHCPv4 on the first Ethernet link with a carrier, its
//! address, default route and DNS servers (`/run/resolv.conf`). Through rtnetlink; no
//! external tools.

pub mod dhcp;

use std::net::IpAddr;
use std::time::Duration;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// How long a link may take to report a carrier.
const CARRIER_WAIT: Duration = Duration::from_secs(10);
/// Where the resolver configuration goes (`/etc/resolv.conf` links here).
pub const RESOLV_CONF: &str = "/run/resolv.conf";

/// The network could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// Netlink failed.
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    /// The netlink socket could not be opened.
    #[error("netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    /// No link to configure.
    #[error("no Ethernet link got a carrier within {CARRIER_WAIT:?}")]
    NoLink,
    /// DHCP failed.
    #[error(transparent)]
    Dhcp(#[from] dhcp::DhcpError),
}

/// A configured link.
#[derive(Debug, Clone)]
pub struct Configured {
    /// Its name.
    pub link: String,
    /// Its hardware address.
    pub mac: [u8; 6],
    /// What DHCP granted.
    pub lease: dhcp::Lease,
}

/// Opens a netlink connection (its driver runs as a task).
pub fn connect() -> Result<Handle, NetworkError> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Brings every link up and configures the first Ethernet link with a carrier by DHCP.
pub async fn configure(handle: &Handle) -> Result<Configured, NetworkError> {
    let links: Vec<LinkMessage> = handle.link().get().execute().try_collect().await?;
    for link in &links {
        handle
            .link()
            .set(LinkUnspec::new_with_index(link.header.index).up().build())
            .execute()
            .await?;
    }
    let deadline = tokio::time::Instant::now() + CARRIER_WAIT;
    let (index, name, mac) = loop {
        let links: Vec<LinkMessage> = handle.link().get().execute().try_collect().await?;
        if let Some(found) = links.iter().find_map(ethernet_with_carrier) {
            break found;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(NetworkError::NoLink);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lease = dhcp::acquire(&name, mac).await?;
    apply(handle, index, &lease).await?;
    Ok(Configured { link: name, mac, lease })
}

/// Puts a lease on link `index`: address, default route, resolvers.
pub async fn apply(handle: &Handle, index: u32, lease: &dhcp::Lease) -> Result<(), NetworkError> {
    match handle.address().add(index, IpAddr::V4(lease.address), lease.prefix_len).execute().await {
        // A renewal of the same lease finds the address in place.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::EEXIST => {}
        other => other?,
    }
    if let Some(router) = lease.router {
        let route = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .output_interface(index)
            .gateway(router)
            .build();
        match handle.route().add(route).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::EEXIST => {}
            other => other?,
        }
    }
    let resolv: String = lease.dns.iter().map(|d| format!("nameserver {d}\n")).collect();
    std::fs::write(RESOLV_CONF, resolv)?;
    Ok(())
}

/// `(index, name, mac)` of an Ethernet link whose carrier is up.
fn ethernet_with_carrier(link: &LinkMessage) -> Option<(u32, String, [u8; 6])> {
    let flags = link.header.flags;
    if flags.contains(LinkFlags::Loopback) || !flags.contains(LinkFlags::LowerUp) {
        return None;
    }
    let mut name = None;
    let mut mac = None;
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(a) if a.len() == 6 => {
                mac = <[u8; 6]>::try_from(a.as_slice()).ok()
            }
            _ => {}
        }
    }
    Some((link.header.index, name?, mac?))
}
