//! Makes the system's network match a [`Plan`]: links up with their MTU, DHCP leases held
//! and renewed, static and leased addresses and routes added, the ones no longer planned
//! removed, and the resolvers written. Only what machined itself added is ever removed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{RouteMessage, RouteScope};
use rtnetlink::{AddressMessageBuilder, Handle, LinkUnspec, RouteMessageBuilder};
use tokio::time::Instant;

use super::dhcp::{self, Lease};
use super::plan::{LinkPlan, LinkSelector, Plan};
use super::{NetworkError, RESOLV_CONF};

/// How long a link may take to report a carrier.
const CARRIER_WAIT: Duration = Duration::from_secs(10);
/// When DHCP fails, the next try.
const DHCP_RETRY: Duration = Duration::from_secs(30);

/// An address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct AddressOn {
    index: u32,
    address: IpNet,
}

/// A route through a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RouteVia {
    index: u32,
    destination: IpNet,
    gateway: Option<IpAddr>,
    metric: Option<u32>,
}

/// A DHCP lease held on a link, or the time of the next try.
struct Held {
    lease: Option<Lease>,
    /// Renewal (half the lease) or, after a failure, the retry.
    due: Instant,
}

/// A link as netlink lists it.
struct Link {
    index: u32,
    name: String,
    mac: Option<[u8; 6]>,
    loopback: bool,
    carrier: bool,
}

/// What a pass did, for the service's log.
#[derive(Debug, Default)]
pub struct Report {
    /// Changes made, one per line.
    pub changes: Vec<String>,
    /// What could not be done; the rest was.
    pub problems: Vec<String>,
    /// The hardware address of the first planned link found, to name the host by.
    pub primary_mac: Option<[u8; 6]>,
}

/// What machined has put on the system's network.
#[derive(Default)]
pub struct NetworkState {
    leases: BTreeMap<String, Held>,
    addresses: BTreeSet<AddressOn>,
    routes: BTreeSet<RouteVia>,
    resolvers: Vec<IpAddr>,
}

impl NetworkState {
    /// When a lease must be renewed or a failed DHCP retried.
    pub fn next_due(&self) -> Option<Instant> {
        self.leases.values().map(|h| h.due).min()
    }

    /// One pass: brings the system to `plan`. Fails only when netlink itself does; what
    /// cannot be done for one link is reported and the rest still happens.
    pub async fn reconcile(
        &mut self,
        handle: &Handle,
        plan: &Plan,
    ) -> Result<Report, NetworkError> {
        let mut report = Report::default();
        let mut links = list(handle).await?;
        for link in &links {
            handle
                .link()
                .set(LinkUnspec::new_with_index(link.index).up().build())
                .execute()
                .await?;
        }
        let mut want_addresses = BTreeSet::new();
        let mut want_routes = BTreeSet::new();
        let mut dhcp_links = BTreeSet::new();
        for link_plan in &plan.links {
            let Some(link) = find(handle, &mut links, link_plan).await? else {
                report.problems.push(match &link_plan.link {
                    LinkSelector::Named(name) => format!("{name}: no such link"),
                    LinkSelector::FirstWithCarrier => {
                        format!("no Ethernet link got a carrier within {CARRIER_WAIT:?}")
                    }
                });
                continue;
            };
            report.primary_mac = report.primary_mac.or(link.mac);
            if let Some(mtu) = link_plan.mtu {
                handle
                    .link()
                    .set(LinkUnspec::new_with_index(link.index).mtu(mtu).build())
                    .execute()
                    .await?;
            }
            for address in &link_plan.addresses {
                want_addresses.insert(AddressOn { index: link.index, address: *address });
            }
            for route in &link_plan.routes {
                want_routes.insert(RouteVia {
                    index: link.index,
                    destination: route.destination,
                    gateway: route.gateway,
                    metric: route.metric,
                });
            }
            if link_plan.dhcp {
                dhcp_links.insert(link.name.clone());
                let lease = self.lease(&link, &mut report).await;
                if let Some(lease) = lease {
                    want_addresses.insert(AddressOn {
                        index: link.index,
                        address: IpNet::new(IpAddr::V4(lease.address), lease.prefix_len)
                            .expect("a DHCP prefix length is at most 32"),
                    });
                    if let Some(router) = lease.router {
                        want_routes.insert(RouteVia {
                            index: link.index,
                            destination: "0.0.0.0/0".parse().expect("a valid network"),
                            gateway: Some(IpAddr::V4(router)),
                            metric: None,
                        });
                    }
                }
            }
        }
        self.leases.retain(|name, _| dhcp_links.contains(name));

        // Routes first out, addresses first in: a route needs its source network.
        for route in self.routes.difference(&want_routes).copied().collect::<Vec<_>>() {
            ignore(handle.route().del(route_message(&route)).execute().await, nix::libc::ESRCH)?;
            self.routes.remove(&route);
            report.changes.push(format!("removed {}", describe_route(&route, &links)));
        }
        for address in self.addresses.difference(&want_addresses).copied().collect::<Vec<_>>() {
            let message = match address.address {
                IpNet::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
                    .index(address.index)
                    .address(a.addr(), a.prefix_len())
                    .build(),
                IpNet::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
                    .index(address.index)
                    .address(a.addr(), a.prefix_len())
                    .build(),
            };
            ignore(handle.address().del(message).execute().await, nix::libc::EADDRNOTAVAIL)?;
            self.addresses.remove(&address);
            report.changes.push(format!(
                "removed {} from {}",
                address.address,
                name_of(address.index, &links)
            ));
        }
        for address in want_addresses.difference(&self.addresses.clone()) {
            let added = handle
                .address()
                .add(address.index, address.address.addr(), address.address.prefix_len())
                .execute()
                .await;
            let on = format!("{}: {}", name_of(address.index, &links), address.address);
            match ignore(added, nix::libc::EEXIST) {
                Ok(()) => {
                    self.addresses.insert(*address);
                    report.changes.push(on);
                }
                Err(e) => report.problems.push(format!("{on}: {e}")),
            }
        }
        for route in want_routes.difference(&self.routes.clone()) {
            match ignore(
                handle.route().add(route_message(route)).execute().await,
                nix::libc::EEXIST,
            ) {
                Ok(()) => {
                    self.routes.insert(*route);
                    report.changes.push(describe_route(route, &links));
                }
                // A gateway off every network of the link, say: the config's to fix.
                Err(e) => report.problems.push(format!("{}: {e}", describe_route(route, &links))),
            }
        }

        let resolvers = if plan.nameservers.is_empty() {
            let mut leased: Vec<IpAddr> = Vec::new();
            for held in self.leases.values() {
                for dns in held.lease.iter().flat_map(|l| &l.dns) {
                    if !leased.contains(&IpAddr::V4(*dns)) {
                        leased.push(IpAddr::V4(*dns));
                    }
                }
            }
            leased
        } else {
            plan.nameservers.clone()
        };
        if resolvers != self.resolvers || !std::path::Path::new(RESOLV_CONF).exists() {
            let text: String = resolvers.iter().map(|r| format!("nameserver {r}\n")).collect();
            std::fs::write(RESOLV_CONF, text)?;
            report.changes.push(format!("DNS {resolvers:?}"));
            self.resolvers = resolvers;
        }
        Ok(report)
    }

    /// The link's lease: the one held while it is not due, else a new one from DHCP.
    async fn lease(&mut self, link: &Link, report: &mut Report) -> Option<Lease> {
        if let Some(held) = self.leases.get(&link.name) {
            if held.due > Instant::now() {
                return held.lease.clone();
            }
        }
        let Some(mac) = link.mac else {
            report.problems.push(format!("{}: no hardware address for DHCP", link.name));
            return None;
        };
        match dhcp::acquire(&link.name, mac).await {
            Ok(lease) => {
                report.changes.push(format!(
                    "{}: DHCP lease {}/{} for {}s",
                    link.name,
                    lease.address,
                    lease.prefix_len,
                    lease.lease_time.as_secs()
                ));
                let due = Instant::now() + lease.lease_time / 2;
                self.leases.insert(link.name.clone(), Held { lease: Some(lease.clone()), due });
                Some(lease)
            }
            Err(e) => {
                report.problems.push(format!("{e}; retrying in {DHCP_RETRY:?}"));
                // An unexpired lease keeps serving until the retry.
                let held = self
                    .leases
                    .entry(link.name.clone())
                    .or_insert(Held { lease: None, due: Instant::now() });
                held.due = Instant::now() + DHCP_RETRY;
                held.lease.clone()
            }
        }
    }
}

/// Finds the planned link; for the first link with a carrier, waits for one.
async fn find(
    handle: &Handle,
    links: &mut Vec<Link>,
    plan: &LinkPlan,
) -> Result<Option<Link>, NetworkError> {
    let deadline = Instant::now() + CARRIER_WAIT;
    loop {
        let found = links.iter().find(|l| match &plan.link {
            LinkSelector::Named(name) => l.name == *name,
            LinkSelector::FirstWithCarrier => !l.loopback && l.carrier && l.mac.is_some(),
        });
        match (found, &plan.link) {
            (Some(link), _) => {
                return Ok(Some(Link { name: link.name.clone(), ..*link }));
            }
            (None, LinkSelector::Named(_)) => return Ok(None),
            (None, LinkSelector::FirstWithCarrier) if Instant::now() > deadline => return Ok(None),
            (None, LinkSelector::FirstWithCarrier) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                *links = list(handle).await?;
            }
        }
    }
}

async fn list(handle: &Handle) -> Result<Vec<Link>, NetworkError> {
    let messages: Vec<LinkMessage> = handle.link().get().execute().try_collect().await?;
    Ok(messages.iter().filter_map(link_of).collect())
}

fn link_of(message: &LinkMessage) -> Option<Link> {
    let flags = message.header.flags;
    let mut name = None;
    let mut mac = None;
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            _ => {}
        }
    }
    Some(Link {
        index: message.header.index,
        name: name?,
        mac,
        loopback: flags.contains(LinkFlags::Loopback),
        carrier: flags.contains(LinkFlags::LowerUp),
    })
}

fn route_message(route: &RouteVia) -> RouteMessage {
    let mut message = match (route.destination, route.gateway) {
        (IpNet::V4(net), gateway) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(net.addr(), net.prefix_len())
                .output_interface(route.index);
            if let Some(IpAddr::V4(gateway)) = gateway {
                b = b.gateway(gateway);
            }
            b.build()
        }
        (IpNet::V6(net), gateway) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(net.addr(), net.prefix_len())
                .output_interface(route.index);
            if let Some(IpAddr::V6(gateway)) = gateway {
                b = b.gateway(gateway);
            }
            b.build()
        }
    };
    if route.gateway.is_none() {
        message.header.scope = RouteScope::Link;
    }
    if let Some(metric) = route.metric {
        message.attributes.push(rtnetlink::packet_route::route::RouteAttribute::Priority(metric));
    }
    message
}

fn name_of(index: u32, links: &[Link]) -> String {
    links
        .iter()
        .find(|l| l.index == index)
        .map_or_else(|| format!("link {index}"), |l| l.name.clone())
}

fn describe_route(route: &RouteVia, links: &[Link]) -> String {
    let mut text = format!("route {}", route.destination);
    if let Some(gateway) = route.gateway {
        text.push_str(&format!(" via {gateway}"));
    }
    text.push_str(&format!(" dev {}", name_of(route.index, links)));
    if let Some(metric) = route.metric {
        text.push_str(&format!(" metric {metric}"));
    }
    text
}

/// Treats the kernel's `errno` answer (already there, already gone) as success.
fn ignore(result: Result<(), rtnetlink::Error>, errno: i32) -> Result<(), rtnetlink::Error> {
    match result {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -errno => Ok(()),
        other => other,
    }
}
