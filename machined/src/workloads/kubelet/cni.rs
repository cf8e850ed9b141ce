//! The pod network: one CNI bridge (`cni0`) with host-local addresses from the pod subnet,
//! masquerading to the outside, and portmap for `hostPort`. containerd's CRI plugin reads the
//! conflist from its CNI config directory and calls the plugins for each sandbox.

use std::path::Path;

use ipnet::Ipv4Net;

/// The conflist's file name; containerd uses the first file of its directory.
const CONFLIST: &str = "10-cairn.conflist";
/// Where host-local keeps its leases: `/run`, since sandboxes do not survive a reboot.
const IPAM_DIR: &str = "/run/cairn/ipam";

/// The conflist for `subnet`.
pub fn conflist(subnet: Ipv4Net) -> String {
    let config = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "cairn",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": IPAM_DIR,
                    "ranges": [[{ "subnet": subnet.trunc().to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    });
    serde_json::to_string_pretty(&config).expect("JSON values serialize")
}

/// Writes the conflist into `dir` (containerd's CNI config directory).
pub fn write(dir: &Path, subnet: Ipv4Net) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    crate::files::durable::write_atomically(&dir.join(CONFLIST), conflist(subnet).as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_gets_the_subnet_and_portmap_follows() {
        let config: serde_json::Value =
            serde_json::from_str(&conflist("10.244.0.7/24".parse().unwrap())).unwrap();
        assert_eq!(config["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "10.244.0.0/24");
        assert_eq!(config["plugins"][1]["type"], "portmap");
    }
}
