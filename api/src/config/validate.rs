//! Value checks, run after parsing; every problem is collected, none stops the others.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine;
use ipnet::IpNet;

use super::ca::{check_ca, check_client_ca_is_not_node_ca, KeyRule};
use super::schema::*;
use crate::text::shortened;

/// One thing wrong in a config: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// YAML path, e.g. `machine.network.interfaces[0].addresses[1]`.
    pub path: String,
    /// Why the value is refused.
    pub reason: String,
}

impl Problem {
    /// The problems, one a line; past [`MAX_LISTED_PROBLEMS`], a count of the rest.
    pub(super) fn list(problems: &[Problem]) -> String {
        let mut lines: Vec<String> =
            problems.iter().take(MAX_LISTED_PROBLEMS).map(|p| format!("  {p}")).collect();
        if problems.len() > MAX_LISTED_PROBLEMS {
            lines.push(format!("  ... and {} more", problems.len() - MAX_LISTED_PROBLEMS));
        }
        lines.join("\n")
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Problems an error message lists at most (all of them stay in [`MachineConfig::validate`]'s
/// result).
const MAX_LISTED_PROBLEMS: usize = 50;

/// The labels under `kubernetes.io/` (and `beta.kubernetes.io/`) a node sets of itself, which
/// `machine.kubelet.nodeLabels` may not set.
const NODE_OWN_LABELS: [&str; 3] = ["os", "arch", "hostname"];

/// The longest path or reason kept: reasons quote the refused value, and map keys in paths
/// are the client's too.
const MAX_REASON_CHARS: usize = 240;

/// Collects problems while walking the config.
#[derive(Default)]
pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
}

impl Checker {
    pub(super) fn fail(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            path: shortened(&path.into(), MAX_REASON_CHARS),
            reason: shortened(&reason.into(), MAX_REASON_CHARS),
        });
    }

    pub(super) fn check(
        &mut self,
        ok: bool,
        path: impl Into<String>,
        reason: impl FnOnce() -> String,
    ) {
        if !ok {
            self.fail(path, reason());
        }
    }
}

impl MachineConfig {
    /// Every problem in the config's values; empty when it is valid. Pods are checked as serde
    /// read them, without the fields Kubernetes does not know: [`MachineConfig::from_yaml`],
    /// which has the YAML as written, reports those too.
    pub fn validate(&self) -> Vec<Problem> {
        self.validate_as_written(&[], &[])
    }

    /// [`MachineConfig::validate`], with `machine.pods` and `machine.objects` as written (by
    /// index) to find fields unknown to Kubernetes.
    pub(super) fn validate_as_written(
        &self,
        written_pods: &[serde_yaml::Value],
        written_objects: &[serde_yaml::Value],
    ) -> Vec<Problem> {
        let mut c = Checker::default();
        let m = &self.machine;
        let (client, _) = check_ca(&mut c, "machine.clientCa", &m.client_ca, KeyRule::Forbidden);
        let (node, node_key) = check_ca(&mut c, "machine.nodeCa", &m.node_ca, KeyRule::Required);
        check_client_ca_is_not_node_ca(&mut c, &client, &node, node_key.as_deref());
        for (i, san) in m.cert_sans.iter().enumerate() {
            c.check(
                san.parse::<IpAddr>().is_ok() || is_dns_name(san),
                format!("machine.certSANs[{i}]"),
                || format!("{san:?} is neither an IP address nor a DNS name"),
            );
        }
        if let Some(hostname) = &m.hostname {
            c.check(is_dns_name(hostname), "machine.hostname", || {
                format!("{hostname:?} is not a valid host name (RFC 1123: letters, digits and '-', labels of 1-63 characters)")
            });
        }
        check_network(&mut c, &m.network);
        for (i, server) in m.time.servers.iter().enumerate() {
            c.check(is_time_server(server), format!("machine.time.servers[{i}]"), || {
                format!("{server:?} is not an IP address or host name, with an optional :PORT")
            });
        }
        for (disk, path) in [
            (&m.install.disk, "machine.install.disk"),
            (&m.ephemeral.disk, "machine.ephemeral.disk"),
        ] {
            if let Some(disk) = disk {
                c.check(disk.starts_with("/dev/") && disk.len() > 5, path, || {
                    format!("{disk:?} is not a device path under /dev/")
                });
            }
        }
        c.check(!m.ephemeral.wipe || m.ephemeral.disk.is_some(), "machine.ephemeral.wipe", || {
            "true without machine.ephemeral.disk: there is no disk to wipe".to_string()
        });
        for (i, arg) in m.kernel.args.iter().enumerate() {
            c.check(
                !arg.is_empty() && !arg.contains(char::is_whitespace),
                format!("machine.kernel.args[{i}]"),
                || format!("{arg:?} must be one non-empty word (no spaces)"),
            );
        }
        for (i, module) in m.kernel.modules.iter().enumerate() {
            let name = &module.name;
            c.check(
                !name.is_empty()
                    && name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'),
                format!("machine.kernel.modules[{i}].name"),
                || format!("{name:?} is not a kernel module name"),
            );
            for (j, parameter) in module.parameters.iter().enumerate() {
                c.check(
                    parameter.contains('=') && !parameter.contains(char::is_whitespace),
                    format!("machine.kernel.modules[{i}].parameters[{j}]"),
                    || format!("{parameter:?} is not key=value"),
                );
            }
        }
        for (key, value) in &m.sysctls {
            let path = format!("machine.sysctls.{key:?}");
            c.check(
                !key.is_empty()
                    && !key.starts_with(['.', '/'])
                    && !key.contains("..")
                    && key.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-/".contains(ch)),
                &path,
                || "is not a sysctl name (like net.ipv4.ip_forward)".to_string(),
            );
            c.check(!value.contains('\n'), path, || "value must be a single line".to_string());
        }
        check_files(&mut c, &m.files);
        super::pod::check_pods(&mut c, &m.pods, written_pods, "machine.pods");
        let paths: Vec<String> =
            (0..m.objects.len()).map(|i| format!("machine.objects[{i}]")).collect();
        super::objects::check_objects(&mut c, &m.objects, written_objects, &paths);
        let pods = m.pods.len() + m.objects.iter().map(|o| o.pods().len()).sum::<usize>();
        let most = super::objects::MAX_REPLICAS as usize;
        c.check(pods <= most, "machine.objects", || {
            format!("with machine.pods, would run {pods} pods; a node runs at most {most}")
        });
        if let Some(subnet) = &m.kubelet.pod_subnet {
            let prefix = subnet.parse::<ipnet::Ipv4Net>().map(|net| net.prefix_len());
            c.check(
                prefix.is_ok_and(|len| (8..=28).contains(&len)),
                "machine.kubelet.podSubnet",
                || {
                    format!(
                        "{subnet:?} is not an IPv4 subnet in CIDR form with a prefix of /8 to /28"
                    )
                },
            );
        }
        for (key, value) in &m.kubelet.node_labels {
            let path = format!("machine.kubelet.nodeLabels.{key:?}");
            let own = ["kubernetes.io/", "beta.kubernetes.io/"].iter().any(|prefix| {
                key.strip_prefix(prefix).is_some_and(|k| NODE_OWN_LABELS.contains(&k))
            });
            c.check(!own, &path, || "is a label the node sets of itself".to_string());
            let problems = [super::labels::key_problem(key), super::labels::value_problem(value)];
            for problem in problems.into_iter().flatten() {
                c.fail(&path, problem);
            }
        }
        for (registry, mirror) in &m.registries.mirrors {
            if let Err(reason) = Registries::check_mirror_key(registry) {
                c.fail(format!("machine.registries.mirrors.{registry:?}"), reason);
            }
            for (i, endpoint) in mirror.endpoints.iter().enumerate() {
                c.check(
                    is_http_url(endpoint),
                    format!("machine.registries.mirrors.{registry:?}.endpoints[{i}]"),
                    || format!("{endpoint:?} is not an http:// or https:// URL"),
                );
            }
        }
        for (i, key) in m.update.trusted_keys.iter().enumerate() {
            let decoded = base64::engine::general_purpose::STANDARD.decode(key.trim());
            c.check(
                matches!(decoded, Ok(ref bytes) if bytes.len() == 32),
                format!("machine.update.trustedKeys[{i}]"),
                || "is not an ed25519 public key (base64 of 32 bytes)".to_string(),
            );
        }
        if let Some(seconds) = m.update.health_deadline_seconds {
            let (min, max) = (crate::config::Update::MIN_HEALTH_DEADLINE_SECONDS, 86_400);
            c.check((min..=max).contains(&seconds), "machine.update.healthDeadlineSeconds", || {
                format!("{seconds} is not between {min} and {max}")
            });
        }
        if let Some(cluster) = &self.cluster {
            check_cluster(&mut c, cluster);
        }
        c.problems
    }
}

fn check_network(c: &mut Checker, network: &Network) {
    let mut names = HashSet::new();
    for (i, link) in network.interfaces.iter().enumerate() {
        let path = format!("machine.network.interfaces[{i}]");
        let name = &link.interface;
        c.check(
            !name.is_empty()
                && name.len() <= 15
                && !name.contains(['/', ' '])
                && name != "."
                && name != "..",
            format!("{path}.interface"),
            || format!("{name:?} is not a link name (1-15 characters, no '/' or spaces)"),
        );
        c.check(names.insert(name.as_str()), format!("{path}.interface"), || {
            format!("{name:?} is configured more than once")
        });
        for (j, address) in link.addresses.iter().enumerate() {
            c.check(address.parse::<IpNet>().is_ok(), format!("{path}.addresses[{j}]"), || {
                format!("{address:?} is not an IP network")
            });
        }
        for (j, route) in link.routes.iter().enumerate() {
            let network = &route.network;
            let parsed = network.parse::<IpNet>();
            match &parsed {
                Ok(net) => {
                    c.check(net.trunc() == *net, format!("{path}.routes[{j}].network"), || {
                        format!("{network:?} has host bits set; the network is {}", net.trunc())
                    })
                }
                Err(_) => c.fail(
                    format!("{path}.routes[{j}].network"),
                    format!("{network:?} is not an IP network"),
                ),
            }
            if let Some(gateway) = &route.gateway {
                match (gateway.parse::<IpAddr>(), &parsed) {
                    (Err(_), _) => c.fail(
                        format!("{path}.routes[{j}].gateway"),
                        format!("{gateway:?} is not an IP address"),
                    ),
                    (Ok(ip), Ok(net)) => c.check(
                        ip.is_ipv4() == matches!(net, IpNet::V4(_)),
                        format!("{path}.routes[{j}].gateway"),
                        || format!("{gateway:?} is not of the same IP version as {network:?}"),
                    ),
                    (Ok(_), Err(_)) => {}
                }
            }
        }
        if let Some(mtu) = link.mtu {
            c.check((68..=65535).contains(&mtu), format!("{path}.mtu"), || {
                format!("{mtu} is outside 68..65535")
            });
        }
    }
    for (i, server) in network.nameservers.iter().enumerate() {
        c.check(
            server.parse::<IpAddr>().is_ok(),
            format!("machine.network.nameservers[{i}]"),
            || format!("{server:?} is not an IP address"),
        );
    }
}

fn check_files(c: &mut Checker, files: &[MachineFile]) {
    for (i, file) in files.iter().enumerate() {
        let path = &file.path;
        c.check(
            path.starts_with("/var/")
                && !path["/var/".len()..].split('/').any(|part| matches!(part, "" | "." | "..")),
            format!("machine.files[{i}].path"),
            || format!("{path:?} must be an absolute path under /var/ without empty, '.' or '..' parts (the rest of the system is read-only)"),
        );
        if let Some(permissions) = file.permissions {
            c.check(permissions <= 0o7777, format!("machine.files[{i}].permissions"), || {
                format!("{permissions:#o} has bits beyond 0o7777")
            });
        }
    }
}

fn check_cluster(c: &mut Checker, cluster: &Cluster) {
    let endpoint = &cluster.control_plane.endpoint;
    c.check(
        endpoint.starts_with("https://") && endpoint.len() > 8,
        "cluster.controlPlane.endpoint",
        || format!("{endpoint:?} is not an https:// URL"),
    );
    if let Some(token) = &cluster.token {
        let valid = token.split_once('.').is_some_and(|(id, secret)| {
            let ok = |s: &str, n| {
                s.len() == n && s.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            };
            ok(id, 6) && ok(secret, 16)
        });
        c.check(valid, "cluster.token", || {
            "is not a bootstrap token ([a-z0-9]{6}.[a-z0-9]{16})".to_string()
        });
    }
    if let Some(ca) = &cluster.ca {
        check_ca(c, "cluster.ca", ca, KeyRule::Optional);
    }
}

/// An RFC 1123 label: 1-63 lower- or upper-case letters, digits and inner '-'.
pub(super) fn is_dns_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// A DNS name of RFC 1123 labels joined by '.', at most 253 characters.
pub(super) fn is_dns_name(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, `ntp.example`, each with an optional
/// `:PORT` (an IPv6 address then in brackets).
fn is_time_server(server: &str) -> bool {
    server.parse::<IpAddr>().is_ok() || is_host_port(server)
}

/// `host[:port]`: a DNS name, an IPv4 address or an IPv6 address in brackets, with an
/// optional port of 1-65535.
fn is_host_port(text: &str) -> bool {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if v6.parse::<Ipv6Addr>().is_ok() => (None, port),
            _ => return false,
        },
        None => match text.find(':') {
            Some(at) => (Some(&text[..at]), &text[at..]),
            None => (Some(text), ""),
        },
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|digits| {
            !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits.parse::<u16>().is_ok_and(|p| p != 0)
        });
    port_ok && host.is_none_or(|host| host.parse::<Ipv4Addr>().is_ok() || is_dns_name(host))
}

impl Registries {
    /// The mirrors key that stands for every registry.
    pub const ANY: &str = "*";

    /// Whether `key` may name a registry in [`Registries::mirrors`]: [`Registries::ANY`] or
    /// the registry's `host[:port]`, as image references write it. The key becomes a
    /// directory name on the node, so nothing else (no `/`, no `..`) is accepted.
    pub fn check_mirror_key(key: &str) -> Result<(), String> {
        if key == Self::ANY || is_host_port(key) {
            Ok(())
        } else {
            Err(format!("{key:?} is not a registry host (HOST or HOST:PORT, an IPv6 address in brackets) or \"*\""))
        }
    }
}

#[cfg(test)]
#[test]
fn time_servers_are_addresses_or_names_with_an_optional_port() {
    for good in [
        "192.0.2.1",
        "192.0.2.1:1123",
        "2001:db8::1",
        "[2001:db8::1]",
        "[2001:db8::1]:1123",
        "time.example",
        "time.example:1123",
    ] {
        assert!(is_time_server(good), "{good}");
    }
    for bad in [
        "",
        "time.example:",
        "time.example:0",
        "time.example:99999",
        "[2001:db8::1",
        "a b",
        "2001:db8::1:1123:x",
        "ntp.example:123:4",
        "time.example:+80",
    ] {
        assert!(!is_time_server(bad), "{bad}");
    }
}

#[cfg(test)]
#[test]
fn registry_mirror_keys_are_hosts_with_an_optional_port() {
    for good in [
        "*",
        "docker.io",
        "localhost",
        "localhost:5000",
        "registry.example:443",
        "10.0.2.2:5000",
        "[2001:db8::1]",
        "[2001:db8::1]:5000",
    ] {
        assert_eq!(Registries::check_mirror_key(good), Ok(()), "{good}");
    }
    for bad in [
        "",
        "**",
        "../../../../system/state/escaped",
        "..",
        ".",
        "a/b",
        "_default",
        "docker.io.",
        "docker.io:",
        "docker.io:0",
        "docker.io:65536",
        "2001:db8::1",
        "[2001:db8::1",
        "[docker.io]",
        "docker io",
        "https://docker.io",
    ] {
        let error = Registries::check_mirror_key(bad).unwrap_err();
        assert!(error.contains("is not a registry host"), "{bad}: {error}");
    }
}

fn is_http_url(url: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        url.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
    })
}
