//! A pod's `dnsPolicy` and `dnsConfig`, checked as the API server checks them. A node has no
//! cluster DNS, so `ClusterFirst` and `ClusterFirstWithHostNet` resolve as `Default` does,
//! through the node's resolvers, as the upstream kubelet does when no cluster DNS is set.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::PodSpec;

use super::validate::Checker;

/// The policies Kubernetes knows.
const POLICIES: [&str; 4] = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];

/// The most nameservers a resolver reads (glibc's MAXNS).
pub const MAX_NAMESERVERS: usize = 3;

/// The most search domains Kubernetes allows.
pub const MAX_SEARCHES: usize = 32;

/// Checks `spec`'s DNS settings; problem paths start with `path` (`...spec`).
pub(super) fn check(c: &mut Checker, spec: &PodSpec, path: &str) {
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    if !POLICIES.contains(&policy) {
        let allowed = POLICIES.join(", ");
        c.fail(format!("{path}.dnsPolicy"), format!("{policy:?} is not one of {allowed}"));
    }
    let config = spec.dns_config.as_ref();
    let nameservers = config.and_then(|c| c.nameservers.as_deref()).unwrap_or_default();
    let searches = config.and_then(|c| c.searches.as_deref()).unwrap_or_default();
    if policy == "None" {
        c.check(!nameservers.is_empty(), format!("{path}.dnsConfig.nameservers"), || {
            "needs at least one nameserver with dnsPolicy None".to_string()
        });
    }
    c.check(nameservers.len() <= MAX_NAMESERVERS, format!("{path}.dnsConfig.nameservers"), || {
        format!("has {} entries; a resolver reads at most {MAX_NAMESERVERS}", nameservers.len())
    });
    for (i, server) in nameservers.iter().enumerate() {
        c.check(
            server.parse::<IpAddr>().is_ok(),
            format!("{path}.dnsConfig.nameservers[{i}]"),
            || format!("{server:?} is not an IP address"),
        );
    }
    c.check(searches.len() <= MAX_SEARCHES, format!("{path}.dnsConfig.searches"), || {
        format!("has {} entries; at most {MAX_SEARCHES} are allowed", searches.len())
    });
    for (i, option) in
        config.and_then(|c| c.options.as_deref()).unwrap_or_default().iter().enumerate()
    {
        c.check(
            option.name.as_deref().is_some_and(|n| !n.is_empty()),
            format!("{path}.dnsConfig.options[{i}].name"),
            || "is required".to_string(),
        );
    }
}
