//! What the network should look like, from the machine config: which links get DHCP,
//! which static addresses and routes, which resolvers. Pure data; [`super::reconcile`]
//! makes the system match it.

use std::net::IpAddr;

use cairn_api::config::Network;
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
    /// names no link means DHCP on the first Ethernet link with a carrier. Values were
    /// validated with the config; any that do not parse are left out.
    pub fn from_config(network: Option<&Network>) -> Plan {
        let nameservers = network
            .map(|n| n.nameservers.iter().filter_map(|s| s.parse().ok()).collect())
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
                .map(|i| LinkPlan {
                    link: LinkSelector::Named(i.interface.clone()),
                    dhcp: i.dhcp,
                    addresses: i.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                    routes: i
                        .routes
                        .iter()
                        .filter_map(|r| {
                            Some(RoutePlan {
                                destination: r.network.parse().ok()?,
                                gateway: match &r.gateway {
                                    Some(g) => Some(g.parse().ok()?),
                                    None => None,
                                },
                                metric: r.metric,
                            })
                        })
                        .collect(),
                    mtu: i.mtu,
                })
                .collect(),
        };
        Plan { links, nameservers }
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
        for plan in [Plan::from_config(None), Plan::from_config(Some(&network("{}")))] {
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
        )));
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
}
