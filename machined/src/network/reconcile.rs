//! Makes the system's network match a [`Plan`]: links up with their MTU, DHCP leases held
//! and renewed, static and leased addresses and routes added, the ones no longer planned
//! removed, and the resolvers written. Only what machined itself added is ever removed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
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
use crate::files::durable;

/// How long a link may take to report a carrier.
const CARRIER_WAIT: Duration = Duration::from_secs(10);
/// When DHCP fails, the next try.
const DHCP_RETRY: Duration = Duration::from_secs(30);
/// When a planned link is missing or has no carrier, the next look.
const LINK_RETRY: Duration = Duration::from_secs(30);
/// Renewals come no sooner than this, whatever a server says.
const MIN_RENEWAL: Duration = Duration::from_secs(30);

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
    /// The end of the lease.
    expires: Instant,
}

/// A link as netlink lists it.
#[derive(Clone)]
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
    retry_at: Option<Instant>,
    addresses: BTreeSet<AddressOn>,
    routes: BTreeSet<RouteVia>,
    resolvers: Vec<IpAddr>,
}

impl NetworkState {
    /// When a lease must be renewed, a failed DHCP retried or a missing link looked for.
    pub fn next_due(&self) -> Option<Instant> {
        self.leases.values().map(|h| h.due).chain(self.retry_at).min()
    }

    /// One pass: brings the system to `plan`. Fails only when the netlink socket does; what
    /// cannot be done for one link is reported and the rest still happens.
    pub async fn reconcile(
        &mut self,
        handle: &Handle,
        plan: &Plan,
    ) -> Result<Report, NetworkError> {
        let mut report = Report::default();
        let mut links = list(handle).await?;
        bring_up(handle, &links, &mut report).await;
        let mut want_addresses = BTreeSet::new();
        let mut want_routes = BTreeSet::new();
        let mut dhcp_links = BTreeSet::new();
        let mut all_found = true;
        for link_plan in &plan.links {
            let Some(link) = find(handle, &mut links, link_plan, &mut report).await? else {
                all_found = false;
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
                let set =
                    handle.link().set(LinkUnspec::new_with_index(link.index).mtu(mtu).build());
                if let Err(e) = set.execute().await {
                    report.problems.push(format!("{}: MTU {mtu}: {e}", link.name));
                }
            }
            // By default the kernel drops every address of a subnet with its primary one;
            // replacing a leased address by a static one in the same subnet would lose both.
            let promote = format!("/proc/sys/net/ipv4/conf/{}/promote_secondaries", link.name);
            if let Err(e) = std::fs::write(&promote, "1") {
                report.problems.push(format!("{promote}: {e}"));
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
                if let Some(lease) = self.lease(&link, &mut report).await {
                    leased_network(link.index, &lease, &mut want_addresses, &mut want_routes);
                }
            }
        }
        // A link that is missing now (a carrier lost for a while) keeps its lease for the
        // retry; its addresses are put back then.
        self.retry_at = (!all_found).then(|| Instant::now() + LINK_RETRY);
        if all_found {
            self.leases.retain(|name, _| dhcp_links.contains(name));
        }

        // New addresses first, then stale routes and addresses out, then every wanted route
        // (again): the kernel drops the routes of an address that goes.
        for address in want_addresses.difference(&self.addresses.clone()) {
            let added = handle
                .address()
                .add(address.index, address.address.addr(), address.address.prefix_len())
                .execute()
                .await;
            let on = format!("{}: {}", name_of(address.index, &links), address.address);
            match added {
                Ok(()) => {
                    self.addresses.insert(*address);
                    report.changes.push(on);
                }
                // There already, and not put there by us: not ours to remove later.
                Err(e) if errno(&e) == Some(nix::libc::EEXIST) => {}
                Err(e) => report.problems.push(format!("{on}: {e}")),
            }
        }
        for route in self.routes.difference(&want_routes).copied().collect::<Vec<_>>() {
            let removed = handle.route().del(route_message(&route)).execute().await;
            self.routes.remove(&route);
            match removed {
                Err(e) if !gone(&e, nix::libc::ESRCH) => report
                    .problems
                    .push(format!("removing {}: {e}", describe_route(&route, &links))),
                _ => report.changes.push(format!("removed {}", describe_route(&route, &links))),
            }
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
            let removed = handle.address().del(message).execute().await;
            self.addresses.remove(&address);
            let from = format!("{} from {}", address.address, name_of(address.index, &links));
            match removed {
                Err(e) if !gone(&e, nix::libc::EADDRNOTAVAIL) => {
                    report.problems.push(format!("removing {from}: {e}"))
                }
                _ => report.changes.push(format!("removed {from}")),
            }
        }
        // On-link routes first: a gateway is reached through them.
        let mut ordered: Vec<&RouteVia> = want_routes.iter().collect();
        ordered.sort_by_key(|route| route.gateway.is_some());
        for route in ordered {
            // Replace: a route to the same network with the same metric (another link's,
            // or one the kernel learned) gives way to the configured one.
            match handle.route().add(route_message(route)).replace().execute().await {
                Ok(()) => {
                    if self.routes.insert(*route) {
                        report.changes.push(describe_route(route, &links));
                    }
                }
                // A gateway off every network of the link, say: the config's to fix.
                Err(e) => {
                    self.routes.remove(route);
                    report.problems.push(format!("{}: {e}", describe_route(route, &links)))
                }
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
        if resolvers != self.resolvers || !Path::new(RESOLV_CONF).exists() {
            let text: String = resolvers.iter().map(|r| format!("nameserver {r}\n")).collect();
            match durable::write_atomically(Path::new(RESOLV_CONF), text.as_bytes(), 0o644) {
                Ok(()) => {
                    report.changes.push(format!("DNS {resolvers:?}"));
                    self.resolvers = resolvers;
                }
                Err(e) => report.problems.push(format!("{RESOLV_CONF}: {e}")),
            }
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
                let now = Instant::now();
                let held = Held {
                    lease: Some(lease.clone()),
                    due: now + (lease.lease_time / 2).max(MIN_RENEWAL),
                    expires: now + lease.lease_time.max(MIN_RENEWAL),
                };
                self.leases.insert(link.name.clone(), held);
                Some(lease)
            }
            Err(e) => {
                report.problems.push(format!("{e}; retrying in {DHCP_RETRY:?}"));
                // An unexpired lease keeps serving until the retry; an expired one is gone.
                let now = Instant::now();
                let held = self.leases.entry(link.name.clone()).or_insert(Held {
                    lease: None,
                    due: now,
                    expires: now,
                });
                held.due = now + DHCP_RETRY;
                if held.expires <= now {
                    held.lease = None;
                }
                held.lease.clone()
            }
        }
    }
}

/// The address and routes a lease gives a link: a default route through its router, and a
/// host route to a router outside the leased network (as cloud DHCP servers hand out).
fn leased_network(
    index: u32,
    lease: &Lease,
    addresses: &mut BTreeSet<AddressOn>,
    routes: &mut BTreeSet<RouteVia>,
) {
    let network = IpNet::new(IpAddr::V4(lease.address), lease.prefix_len)
        .expect("a DHCP prefix length is at most 32");
    addresses.insert(AddressOn { index, address: network });
    let Some(router) = lease.router else { return };
    let router = IpAddr::V4(router);
    if !network.contains(&router) {
        let host = IpNet::new(router, 32).expect("32 is a valid IPv4 prefix length");
        routes.insert(RouteVia { index, destination: host, gateway: None, metric: None });
    }
    routes.insert(RouteVia {
        index,
        destination: "0.0.0.0/0".parse().expect("a valid network"),
        gateway: Some(router),
        metric: None,
    });
}

/// Brings `links` up (no carrier shows on a link that is down).
async fn bring_up(handle: &Handle, links: &[Link], report: &mut Report) {
    for link in links {
        let up = handle.link().set(LinkUnspec::new_with_index(link.index).up().build());
        if let Err(e) = up.execute().await {
            report.problems.push(format!("{}: bringing it up: {e}", link.name));
        }
    }
}

/// Finds the planned link; for the first link with a carrier, waits for one, bringing up the
/// links that appear meanwhile (a USB adapter found late, as a Raspberry Pi 3's own Ethernet
/// is).
async fn find(
    handle: &Handle,
    links: &mut Vec<Link>,
    plan: &LinkPlan,
    report: &mut Report,
) -> Result<Option<Link>, NetworkError> {
    let deadline = Instant::now() + CARRIER_WAIT;
    loop {
        let found = links.iter().find(|l| match &plan.link {
            LinkSelector::Named(name) => l.name == *name,
            LinkSelector::FirstWithCarrier => !l.loopback && l.carrier && l.mac.is_some(),
        });
        match (found, &plan.link) {
            (Some(link), _) => return Ok(Some(link.clone())),
            (None, LinkSelector::Named(_)) => return Ok(None),
            (None, LinkSelector::FirstWithCarrier) if Instant::now() > deadline => return Ok(None),
            (None, LinkSelector::FirstWithCarrier) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let known: BTreeSet<u32> = links.iter().map(|l| l.index).collect();
                *links = list(handle).await?;
                let new: Vec<Link> =
                    links.iter().filter(|l| !known.contains(&l.index)).cloned().collect();
                bring_up(handle, &new, report).await;
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

/// The kernel's errno in a netlink error.
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(e) => Some(-e.raw_code()),
        _ => None,
    }
}

/// Whether a removal failed only because the thing (or its whole link) is gone already.
fn gone(error: &rtnetlink::Error, not_found: i32) -> bool {
    errno(error).is_some_and(|e| e == not_found || e == nix::libc::ENODEV)
}
