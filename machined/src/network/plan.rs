//! What the network should look like, from the machine config: which links get DHCP,
//! which static addresses and routes, which resolvers. Pure data; [`super::reconcile`]
//! makes the system match it.

use std::net::IpAddr;

use cairn_api::config::{Interface, Network};
use ipnet::IpNet;

/// Which link a [`LinkPlan`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkSelector {
    /// The link with this name.
    Named(String),
    /// The first Ethernet link that gets a carrier (a node with no network config).
    FirstWithCarrier,
}

/// A static route, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    /// Destination network.
    pub destination: IpNet,
    /// Next hop; none for an on-link route.
    pub gateway: Option<IpAddr>,
    /// Metric (the kernel's priority).
    pub metric: Option<u32>,
}

/// What one link should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPlan {
    /// The link.
    pub link: LinkSelector,
    /// Run DHCPv4 on it.
    pub dhcp: bool,
    /// Static addresses.
    pub addresses: Vec<IpNet>,
    /// Static routes through it.
    pub routes: Vec<RoutePlan>,
    /// MTU.
    pub mtu: Option<u32>,
}

/// The whole network's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Per link.
    pub links: Vec<LinkPlan>,
    /// Resolvers from the config; when empty, those DHCP gives.
    pub nameservers: Vec<IpAddr>,
}

impl Plan {
    /// The plan for a config's network section; none (maintenance mode) or a section that
    /// names no link means DHCP on the first Ethernet link with a carrier. Validation has
    /// refused values that do not parse, so an error here means a config that skipped it:
    /// it names every such value with its path, and nothing is left out silently.
    pub fn from_config(network: Option<&Network>) -> Result<Plan, Vec<String>> {
        let mut parser = Parser::default();
        let nameservers = network
            .map(|n| {
                n.nameservers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        parser.address(format!("machine.network.nameservers[{i}]"), s)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let links = match network.filter(|n| !n.interfaces.is_empty()) {
            None => vec![LinkPlan {
                link: LinkSelector::FirstWithCarrier,
                dhcp: true,
                addresses: Vec::new(),
                routes: Vec::new(),
                mtu: None,
            }],
            Some(network) => network
                .interfaces
                .iter()
                .enumerate()
                .map(|(i, interface)| {
                    parser.link(format!("machine.network.interfaces[{i}]"), interface)
                })
                .collect(),
        };
        match parser.errors.is_empty() {
            true => Ok(Plan { links, nameservers }),
            false => Err(parser.errors),
        }
    }
}

/// Parses a config's values, noting each that fails with its path.
#[derive(Default)]
struct Parser {
    errors: Vec<String>,
}

impl Parser {
    fn address(&mut self, path: String, text: &str) -> Option<IpAddr> {
        let parsed = text.parse().ok();
        if parsed.is_none() {
            self.errors.push(format!("{path}: {text:?} is not an IP address"));
        }
        parsed
    }

    fn network(&mut self, path: String, text: &str) -> Option<IpNet> {
        let parsed = text.parse().ok();
        if parsed.is_none() {
            self.errors.push(format!("{path}: {text:?} is not an IP network"));
        }
        parsed
    }

    fn link(&mut self, path: String, interface: &Interface) -> LinkPlan {
        let addresses = interface
            .addresses
            .iter()
            .enumerate()
            .filter_map(|(j, a)| self.network(format!("{path}.addresses[{j}]"), a))
            .collect();
        let mut routes = Vec::new();
        for (j, route) in interface.routes.iter().enumerate() {
            let destination = self.network(format!("{path}.routes[{j}].network"), &route.network);
            let gateway = match &route.gateway {
                Some(g) => self.address(format!("{path}.routes[{j}].gateway"), g).map(Some),
                None => Some(None),
            };
            if let (Some(destination), Some(gateway)) = (destination, gateway) {
                routes.push(RoutePlan { destination, gateway, metric: route.metric });
            }
        }
        LinkPlan {
            link: LinkSelector::Named(interface.interface.clone()),
            dhcp: interface.dhcp,
            addresses,
            routes,
            mtu: interface.mtu,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(yaml: &str) -> Network {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn no_config_means_dhcp_on_the_first_link_with_a_carrier() {
        for plan in
            [Plan::from_config(None).unwrap(), Plan::from_config(Some(&network("{}"))).unwrap()]
        {
            assert_eq!(plan.links.len(), 1);
            assert_eq!(plan.links[0].link, LinkSelector::FirstWithCarrier);
            assert!(plan.links[0].dhcp);
        }
    }

    #[test]
    fn configured_links_get_exactly_what_they_name() {
        let plan = Plan::from_config(Some(&network(
            "interfaces:\n\
             - interface: eth0\n  addresses: [10.0.0.5/24, 'fd00::5/64']\n  mtu: 1400\n  \
               routes: [{network: 0.0.0.0/0, gateway: 10.0.0.1, metric: 50}, {network: 10.9.0.0/16}]\n\
             - interface: eth1\n  dhcp: true\n\
             nameservers: [1.1.1.1]\n",
        )))
        .unwrap();
        assert_eq!(plan.nameservers, ["1.1.1.1".parse::<IpAddr>().unwrap()]);
        let eth0 = &plan.links[0];
        assert_eq!(eth0.link, LinkSelector::Named("eth0".into()));
        assert!(!eth0.dhcp);
        assert_eq!(eth0.mtu, Some(1400));
        assert_eq!(eth0.addresses, ["10.0.0.5/24".parse().unwrap(), "fd00::5/64".parse().unwrap()]);
        assert_eq!(
            eth0.routes,
            [
                RoutePlan {
                    destination: "0.0.0.0/0".parse().unwrap(),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                    metric: Some(50)
                },
                RoutePlan {
                    destination: "10.9.0.0/16".parse().unwrap(),
                    gateway: None,
                    metric: None
                },
            ]
        );
        assert!(plan.links[1].dhcp && plan.links[1].addresses.is_empty());
    }

    #[test]
    fn values_that_do_not_parse_are_named_never_dropped() {
        let errors = Plan::from_config(Some(&network(
            "interfaces:\n\
             - interface: eth0\n  addresses: [10.0.0.5/24, 10.0.0.300/24]\n  \
               routes: [{network: 10.9.0.0/16, gateway: nope}]\n\
             nameservers: [1.1.1.1, dns.example]\n",
        )))
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "machine.network.nameservers[1]: \"dns.example\" is not an IP address",
                "machine.network.interfaces[0].addresses[1]: \"10.0.0.300/24\" is not an IP network",
                "machine.network.interfaces[0].routes[0].gateway: \"nope\" is not an IP address",
            ]
        );
    }
}
