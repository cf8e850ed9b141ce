//! `addresses`: publishes the node's addresses and default gateways as a fact
//! ([`crate::facts::Addresses`]), read from the kernel at start and again at every netlink
//! address or route notification (a burst of them is taken as one).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use rtnetlink::{new_multicast_connection, MulticastGroup};

use crate::facts::{Addresses, Facts};
use crate::service::{Service, ServiceContext};

/// Quiet time after a notification before the kernel is asked, so a link coming up with
/// several addresses and routes makes one change of the fact.
const SETTLE: Duration = Duration::from_millis(500);

/// The addresses service.
pub struct AddressWatch {
    facts: Arc<Facts>,
}

impl AddressWatch {
    /// Publishes into `facts`.
    pub fn new(facts: Arc<Facts>) -> Self {
        AddressWatch { facts }
    }

    fn publish(&self) {
        let now = read_addresses();
        self.facts.addresses.send_if_modified(|known| {
            let changed = *known != now;
            *known = now;
            changed
        });
    }
}

impl Service for AddressWatch {
    fn id(&self) -> &'static str {
        "addresses"
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let (connection, _, mut notifications) = new_multicast_connection(&[
                MulticastGroup::Ipv4Ifaddr,
                MulticastGroup::Ipv6Ifaddr,
                MulticastGroup::Ipv4Route,
                MulticastGroup::Ipv6Route,
            ])?;
            let connection = tokio::spawn(connection);
            // Subscribed first, read second: nothing that changes in between is missed.
            self.publish();
            ctx.ready();
            let result = loop {
                tokio::select! {
                    _ = ctx.stop.cancelled() => break Ok(()),
                    notification = notifications.next() => {
                        if notification.is_none() {
                            break Err(anyhow::anyhow!("the netlink notifications ended"));
                        }
                        // Let the burst pass, then drop what queued meanwhile.
                        tokio::time::sleep(SETTLE).await;
                        while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, notifications.next()).await {}
                    }
                }
                self.publish();
            };
            connection.abort();
            result
        })
    }
}

/// The node's addresses (from `getifaddrs`) and default gateways (from `/proc/net`).
fn read_addresses() -> Addresses {
    let mut addresses: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .map(|interfaces| {
            interfaces
                .filter_map(|interface| {
                    let address = interface.address?;
                    match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
                        (Some(v4), _) => Some(IpAddr::V4(v4.ip())),
                        (_, Some(v6)) => Some(IpAddr::V6(v6.ip())),
                        _ => None,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    addresses.sort();
    addresses.dedup();
    let mut default_gateways: Vec<IpAddr> = std::fs::read_to_string("/proc/net/route")
        .map(|table| ipv4_default_gateways(&table))
        .unwrap_or_default();
    default_gateways.extend(
        std::fs::read_to_string("/proc/net/ipv6_route")
            .map(|table| ipv6_default_gateways(&table))
            .unwrap_or_default(),
    );
    default_gateways.sort();
    default_gateways.dedup();
    Addresses { addresses, default_gateways, known: true }
}

/// Gateways of the default routes in `/proc/net/route` (hex, in the kernel's byte order).
fn ipv4_default_gateways(table: &str) -> Vec<IpAddr> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (destination, gateway, mask) = (fields.get(1)?, fields.get(2)?, fields.get(7)?);
            if *destination != "00000000" || *mask != "00000000" {
                return None;
            }
            let gateway = u32::from_str_radix(gateway, 16).ok()?;
            (gateway != 0).then(|| IpAddr::V4(Ipv4Addr::from(gateway.to_le_bytes())))
        })
        .collect()
}

/// Gateways of the default routes in `/proc/net/ipv6_route` (32 hex digits per address).
fn ipv6_default_gateways(table: &str) -> Vec<IpAddr> {
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (destination, prefix, next_hop) = (fields.first()?, fields.get(1)?, fields.get(4)?);
            if destination.chars().any(|c| c != '0') || *prefix != "00" {
                return None;
            }
            let gateway = Ipv6Addr::from(u128::from_str_radix(next_hop, 16).ok()?);
            (!gateway.is_unspecified()).then_some(IpAddr::V6(gateway))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_gateways_are_read_from_the_kernel_tables() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(ipv4_default_gateways(v4), ["10.0.2.2".parse::<IpAddr>().unwrap()]);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
                  fec00000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        assert_eq!(ipv6_default_gateways(v6), ["fe80::1".parse::<IpAddr>().unwrap()]);
    }
}
