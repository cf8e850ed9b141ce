//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::connect::Fingerprint;

/// ctl: manage Cairn nodes.
#[derive(Debug, Parser)]
#[command(name = "ctl", version, about, propagate_version = true)]
pub struct Cli {
    /// Client config file (contexts with nodes, CA and client certificate).
    #[arg(long, global = true, env = "CTLCONFIG", value_name = "FILE")]
    pub ctlconfig: Option<PathBuf>,
    /// Context to use instead of the file's current one.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Nodes to talk to, HOST[:PORT] (port 50000 by default), comma-separated.
    #[arg(
        short = 'n',
        long = "nodes",
        global = true,
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    pub nodes: Vec<String>,
    /// No client certificate, and no CA check of the node: for nodes in maintenance mode.
    /// Pin the node's certificate with --fingerprint, or prove a shared secret with
    /// apply-config's --bootstrap-token-file.
    #[arg(short = 'i', long, global = true)]
    pub insecure: bool,
    /// With --insecure: the SHA-256 fingerprint of the node's certificate, as its console
    /// printed it; any other certificate is refused before a byte is sent.
    #[arg(long, global = true, requires = "insecure", value_name = "SHA256")]
    pub fingerprint: Option<Fingerprint>,
    /// Output format.
    #[arg(short = 'o', long = "format", global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// A JSON array (streams: one JSON object per line).
    Json,
    /// A YAML list.
    Yaml,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate PKI and configs.
    #[command(subcommand)]
    Gen(GenCommand),
    /// Check a machine config file without a node.
    Validate {
        /// The machine config.
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Show the nodes' versions.
    Version,
    /// Send a machine config to the nodes.
    ApplyConfig(ApplyConfigArgs),
    /// Print the running (or staged) machine config.
    GetConfig {
        /// The staged config instead of the running one.
        #[arg(long)]
        staged: bool,
    },
    /// List services.
    Services,
    /// Start, stop or restart a service.
    Service {
        /// Service id, as `ctl services` shows it.
        id: String,
        /// What to do.
        action: ServiceAction,
    },
    /// Print a service's logs (`machined` for machined's own), or a pod container's.
    Logs {
        /// Service id, or POD[/CONTAINER] (POD: NAME or NAMESPACE/NAME; a service of that
        /// name wins).
        id: String,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<u32>,
        /// The container's previous run (the one that ended).
        #[arg(short, long)]
        previous: bool,
    },
    /// List the pods the node runs, like `kubectl get pods` (`-o yaml`: the whole objects).
    Pods,
    /// List the pods' containers.
    Containers,
    /// Act on a pod.
    Pod {
        /// What to do.
        #[command(subcommand)]
        action: PodAction,
    },
    /// Store the Kubernetes objects of a file, a directory of files or `-` (standard input)
    /// on the node, like `kubectl apply -f`: Pods, Deployments, ReplicaSets, DaemonSets,
    /// StatefulSets, Jobs, ConfigMaps, Secrets, PersistentVolumeClaims and Namespaces; kinds
    /// that need a cluster
    /// (Services, RBAC...) are skipped with a warning. Each file is applied whole or not at
    /// all; the kubelet runs what it holds, across reboots, with no network.
    Apply {
        /// FILE, DIR or `-`.
        #[arg(short, long, value_name = "PATH")]
        file: PathBuf,
    },
    /// Remove the objects a file names from the node, like `kubectl delete -f`.
    Delete {
        /// FILE, DIR or `-`.
        #[arg(short, long, value_name = "PATH")]
        file: PathBuf,
    },
    /// List the objects the node keeps (its config's and those applied), like `kubectl get`
    /// (`-o yaml`: the objects; Secrets' values for os:admin only).
    Get {
        /// configmaps (cm), secrets, namespaces (ns), persistentvolumeclaims (pvc), pods,
        /// deployments (deploy), replicasets (rs), daemonsets (ds), statefulsets (sts), jobs,
        /// or `all`; or events (ev): the pods' Kubernetes-style events.
        kind: String,
        /// One object's name.
        name: Option<String>,
    },
    /// Show a pod as `kubectl describe pod` does: its state, containers, conditions and
    /// events (Scheduled, Pulled, Started, BackOff, Unhealthy...).
    Describe {
        /// `pod` (or `pods`, `po`).
        kind: String,
        /// NAME or NAMESPACE/NAME.
        name: String,
    },
    /// Print the kernel log.
    Dmesg {
        /// Keep printing new records.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N records.
        #[arg(long, value_name = "N")]
        tail: Option<u32>,
    },
    /// Print machine events (config, mode, services, power).
    Events {
        /// Keep printing new events.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N events.
        #[arg(long, value_name = "N")]
        tail: Option<u32>,
    },
    /// Show memory, CPU, load and uptime.
    Stats,
    /// Show the nodes' time: the clock, how it is kept, the last sync's offset.
    Time,
    /// List block devices.
    Disks,
    /// List mounts.
    Mounts,
    /// List files.
    #[command(name = "ls")]
    List {
        /// Absolute path on the node.
        path: String,
        /// Descend this many levels below PATH (-1: no limit).
        #[arg(short, long, default_value_t = 0, allow_negative_numbers = true)]
        depth: i32,
    },
    /// Print a file (one node only).
    Read {
        /// Absolute path on the node.
        path: String,
    },
    /// Reboot the nodes.
    Reboot,
    /// Power the nodes off.
    Shutdown,
    /// Install a signed update bundle into the slot not running and reboot into it, on
    /// trial: the node goes back to the old slot if the new one does not come up healthy
    /// (one node only).
    Upgrade(UpgradeArgs),
    /// Make the other slot the next boot's again, on trial, and reboot into it.
    Rollback {
        /// Only make it the next boot's; do not reboot.
        #[arg(long)]
        stage: bool,
        /// Follow the node through the reboot until it runs the other slot (exit 0) or
        /// went back (exit 1).
        #[arg(long, conflicts_with = "stage")]
        wait: bool,
    },
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `ctl pod ...`
#[derive(Debug, Subcommand)]
pub enum PodAction {
    /// Tear the pod down and start it afresh (its restart counts start over).
    Restart {
        /// NAME or NAMESPACE/NAME.
        name: String,
    },
    /// Store a Pod manifest on the node (beside the config's pods); the kubelet runs it.
    Apply {
        /// The Pod, YAML.
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Remove a pod's manifest from the node; the kubelet stops the pod.
    Delete {
        /// NAME or NAMESPACE/NAME.
        name: String,
    },
}

/// `ctl gen ...`
#[derive(Debug, Subcommand)]
pub enum GenCommand {
    /// A new CA, a node config and an admin client config.
    Config {
        /// Name of the cluster; also the client context's name.
        name: String,
        /// Where to write node.yaml, secrets.yaml and ctlconfig.
        #[arg(long, value_name = "DIR", default_value = ".")]
        output_dir: PathBuf,
        /// Nodes to put in the client context.
        #[arg(long = "node", value_name = "HOST[:PORT]")]
        node: Vec<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// A client config with a certificate for a role, signed by the CA in secrets.yaml.
    Client {
        /// The secrets.yaml of `ctl gen config`.
        #[arg(long, value_name = "FILE")]
        secrets: PathBuf,
        /// os:admin, os:operator or os:reader.
        #[arg(long)]
        role: cairn_api::role::Role,
        /// The client config to write.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// Nodes to put in the context.
        #[arg(long = "node", value_name = "HOST[:PORT]")]
        node: Vec<String>,
        /// How long the certificate is valid, e.g. 30d, 1y.
        #[arg(long, value_name = "DURATION", default_value = "1y", value_parser = humantime::parse_duration)]
        valid_for: Duration,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

/// `ctl apply-config` options.
#[derive(Debug, Args)]
pub struct ApplyConfigArgs {
    /// The machine config.
    #[arg(short, long)]
    pub file: PathBuf,
    /// How to apply it.
    #[arg(short, long, value_enum, default_value_t = ApplyModeArg::Auto)]
    pub mode: ApplyModeArg,
    /// With --mode try: how long before the previous config comes back.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Report what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --insecure, for a node built with a bootstrap token: the token. The node must
    /// prove it knows it too before the config is sent.
    #[arg(long, value_name = "FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
}

/// `ctl upgrade` options.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The update bundle (`cairn-<arch>-<version>.bundle`, from image-builder).
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// Only install it and make it the next boot's; do not reboot.
    #[arg(long)]
    pub stage: bool,
    /// Follow the node through the reboot until it runs the new version (exit 0) or went
    /// back to the old slot (exit 1); up to 20 minutes.
    #[arg(long, conflicts_with = "stage")]
    pub wait: bool,
    /// Install a version older than the running one (never one below the bundle's minimum).
    #[arg(long)]
    pub force: bool,
}

/// `--mode` of `ctl apply-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApplyModeArg {
    /// Live when possible, otherwise reboot.
    Auto,
    /// Live; refuse changes that need a reboot.
    NoReboot,
    /// Store it and reboot.
    Reboot,
    /// Store it for the next boot.
    Staged,
    /// Live, not stored; the previous config returns after --timeout.
    Try,
}

/// `ctl service ID ACTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceAction {
    /// Start it.
    Start,
    /// Stop it.
    Stop,
    /// Restart it.
    Restart,
}
