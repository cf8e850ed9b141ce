//! The `v1alpha1` schema. Field names are camelCase, as in Kubernetes and Talos.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

/// Leaves sections that say nothing out of serialized configs.
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The schema version of a machine config document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigVersion {
    /// The first, still evolving schema.
    #[serde(rename = "v1alpha1")]
    V1Alpha1,
}

/// A whole machine config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MachineConfig {
    /// Schema version.
    pub version: ConfigVersion,
    /// This node.
    pub machine: Machine,
    /// The Kubernetes cluster the node joins, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
}

/// Settings of the node itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Machine {
    /// The CA that signs API client certificates: its certificate only (one or more, PEM,
    /// to rotate it without a gap). Its key stays with the operator, so a stolen node cannot
    /// mint client certificates.
    pub client_ca: CertificateAuthority,
    /// The CA the node issues its serving certificate with (naming its current addresses),
    /// certificate and key. A stolen node gives this one away: it can impersonate nodes,
    /// never administer them.
    pub node_ca: CertificateAuthority,
    /// Extra names and addresses for the node's serving certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cert_sans: Vec<String>,
    /// Host name; when absent the node keeps the one it has (DHCP's, or `cairn-<mac>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Links, addresses, routes and resolvers.
    #[serde(default, skip_serializing_if = "is_default")]
    pub network: Network,
    /// Time synchronisation.
    #[serde(default, skip_serializing_if = "is_default")]
    pub time: Time,
    /// Where the node installs itself.
    #[serde(default, skip_serializing_if = "is_default")]
    pub install: Install,
    /// Where a diskless node keeps `/var`; changes take effect at the next boot.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ephemeral: Ephemeral,
    /// Kernel command line and modules; changes take effect at the next boot.
    #[serde(default, skip_serializing_if = "is_default")]
    pub kernel: Kernel,
    /// Kernel parameters set through `/proc/sys`, e.g. `net.ipv4.ip_forward: "1"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// Files written under `/var` (the only writable place).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<MachineFile>,
    /// Static pods: Kubernetes Pod objects the node runs without a control plane.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<Pod>,
    /// ConfigMaps and Secrets the pods read (volumes, environment), kept by the node itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<super::objects::LocalObject>,
    /// The embedded kubelet.
    #[serde(default, skip_serializing_if = "is_default")]
    pub kubelet: Kubelet,
    /// Image registry mirrors.
    #[serde(default, skip_serializing_if = "is_default")]
    pub registries: Registries,
    /// Update trust.
    #[serde(default, skip_serializing_if = "is_default")]
    pub update: Update,
}

/// A CA certificate and, where the holder needs to sign, its key (PEM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CertificateAuthority {
    /// The CA certificate, PEM.
    pub crt: String,
    /// The CA private key, PEM. A secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Network settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    /// Per-link settings. Links not listed get DHCP on the first one with a carrier.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// DNS resolvers, IP addresses; they take precedence over DHCP's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
}

/// One network link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Interface {
    /// Link name, e.g. `eth0`.
    pub interface: String,
    /// Run a DHCPv4 client on it.
    #[serde(default)]
    pub dhcp: bool,
    /// Static addresses in CIDR form, e.g. `10.0.0.5/24`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Static routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// MTU in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Route {
    /// Destination in CIDR form; `0.0.0.0/0` for the default route.
    pub network: String,
    /// Next hop; absent for an on-link route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Route metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

/// Time synchronisation settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Time {
    /// SNTP servers, host names or addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// Turn time synchronisation off.
    #[serde(default)]
    pub disabled: bool,
}

/// Installation settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Install {
    /// The disk to install to, e.g. `/dev/vda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
}

/// EPHEMERAL (`/var`: container images, pod data, logs) of a diskless node, which is memory
/// unless a disk is named. A node that boots from a disk keeps it there, whatever this says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ephemeral {
    /// A whole disk for it, e.g. `/dev/vda`: formatted ext4 (labelled EPHEMERAL) if blank,
    /// and kept across boots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// Format the disk even when it holds something else (a partition table, another file
    /// system): what it holds is lost. Without it such a disk is left alone and `/var` is not
    /// mounted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wipe: bool,
}

/// Kernel settings; they need a reboot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kernel {
    /// Extra kernel command-line arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra modules to load at boot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<KernelModule>,
}

/// A kernel module to load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KernelModule {
    /// Module name, e.g. `br_netfilter`.
    pub name: String,
    /// Module parameters, `key=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<String>,
}

/// A file the node writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MachineFile {
    /// Absolute path under `/var`.
    pub path: String,
    /// The content.
    pub content: String,
    /// Permission bits; default 0o644.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<u32>,
    /// How to write it.
    #[serde(default)]
    pub op: FileOp,
}

/// How a [`MachineFile`] is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileOp {
    /// Create it, or replace what is there.
    #[default]
    Create,
    /// Append to what is there.
    Append,
}

/// Settings of the embedded kubelet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kubelet {
    /// The IPv4 subnet pods get their addresses from (on the `cni0` bridge), in CIDR form;
    /// [`Kubelet::DEFAULT_POD_SUBNET`] when absent. Pods created after a change get addresses
    /// from the new subnet; running pods keep theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_subnet: Option<String>,
    /// Labels of this node beside those it has of itself (`kubernetes.io/os`, `.../arch`,
    /// `.../hostname`): what pods' `nodeSelector` and node affinity are matched against. A pod
    /// that does not match waits as Pending; a label added later lets it start.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
}

impl Kubelet {
    /// The pod subnet when the config names none (Flannel's default range, one node's share).
    pub const DEFAULT_POD_SUBNET: &str = "10.244.0.0/24";

    /// The pod subnet in force.
    pub fn pod_subnet(&self) -> &str {
        self.pod_subnet.as_deref().unwrap_or(Self::DEFAULT_POD_SUBNET)
    }
}

/// Image registry settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Registries {
    /// Mirrors per registry host (`docker.io`, `*` for all).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mirrors: BTreeMap<String, Mirror>,
}

/// Where to pull a registry's images from instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mirror {
    /// Mirror URLs, tried in order.
    pub endpoints: Vec<String>,
}

/// Update settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Update {
    /// Ed25519 public keys (base64 of the 32 raw bytes) trusted to sign update bundles, in
    /// addition to the keys built into the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<String>,
    /// How long a slot booted on trial has to become healthy (API up, containerd and the
    /// kubelet running, every configured pod started) before machined gives it up and
    /// reboots into the other slot; [`Update::DEFAULT_HEALTH_DEADLINE_SECONDS`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_deadline_seconds: Option<u32>,
}

impl Update {
    /// The health deadline when the config names none.
    pub const DEFAULT_HEALTH_DEADLINE_SECONDS: u32 = 600;
    /// The shortest deadline: a slow board must have time to boot and start its pods.
    pub const MIN_HEALTH_DEADLINE_SECONDS: u32 = 30;

    /// The health deadline in force.
    pub fn health_deadline(&self) -> std::time::Duration {
        let seconds = self.health_deadline_seconds.unwrap_or(Self::DEFAULT_HEALTH_DEADLINE_SECONDS);
        std::time::Duration::from_secs(seconds.into())
    }
}

/// The Kubernetes cluster the node joins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cluster {
    /// Cluster name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The API server to join.
    pub control_plane: ControlPlane,
    /// Bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`. A secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The cluster CA certificate (PEM), to trust the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CertificateAuthority>,
}

/// Where the Kubernetes API server is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlane {
    /// `https://host:port`.
    pub endpoint: String,
}
