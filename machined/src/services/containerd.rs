//! `containerd`: the container runtime the kubelet will drive over CRI, as a supervised child
//! process. It starts once EPHEMERAL is mounted (its images and snapshots live in
//! `/var/lib/containerd`), its output is its log (`ctl logs containerd`), and it is ready once
//! its socket accepts connections. Runs only as PID 1. Its shims double-fork away from it and
//! end up children of PID 1: the reaper reaps them when they exit.
//!
//! machined writes containerd's config at each start: the CRI plugin with the overlayfs
//! snapshotter and runc v2 on the cgroupfs driver (there is no systemd), CNI directories, the
//! pause image Cairn builds, and registry mirrors from `machine.registries`, as containerd's
//! per-registry `hosts.toml` files (read at each pull, so a new config needs no restart: the
//! kubelet rewrites them whenever the config's registries change, see [`write_hosts`]).

use std::fmt::Write as _;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cairn_api::config::{MachineConfig, Registries};
use cairn_api::image::PAUSE_IMAGE;
use tokio::sync::watch;

use crate::facts::Fact;
use crate::files::layout::under;
use crate::service::{Dependency, HealthCheck, ProcessService};
use crate::system::reaper::Reaper;
use crate::workloads::cri::{Cri, CriClient};

/// containerd's gRPC socket (CRI included).
pub const SOCKET: &str = "/run/containerd/containerd.sock";
/// The CRI plugin's snapshotter: where the images' layers are unpacked for containers.
pub const SNAPSHOTTER: &str = "overlayfs";
/// Where the CNI plugins are.
const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The CNI network configs (the kubelet writes them; `/run`: made from the config at boot).
pub const CNI_CONF_DIR: &str = "/run/cairn/cni";
/// Where machined writes containerd's config (`/run`: made from the config at each start).
const CONFIG_DIR: &str = "/run/cairn/containerd";
/// The per-registry `hosts.toml` directories.
const HOSTS_DIR: &str = "/run/cairn/containerd/certs.d";
/// Mirror URLs may carry `user:password`: only root (containerd) reads the `hosts.toml` files
/// and their directories, from the moment they exist.
const HOSTS_DIR_MODE: u32 = 0o700;
const HOSTS_FILE_MODE: u32 = 0o600;

/// The containerd service of the node under `root`, with its files made from the running
/// config `config` carries at each start; `reaper` reaps it.
pub fn service(
    root: PathBuf,
    config: watch::Receiver<Option<Arc<MachineConfig>>>,
    reaper: Arc<Reaper>,
) -> ProcessService {
    let command = Box::new(move || {
        let config = config.borrow().clone();
        let path = write_config(&root, config.as_deref())?;
        let mut command = Command::new(root.join("usr/bin/containerd"));
        command.arg("--config").arg(path).env_clear().env("PATH", "/usr/bin:/usr/sbin");
        Ok(command)
    });
    ProcessService::new(
        "containerd",
        reaper,
        vec![
            Dependency::Fact(Fact::EphemeralVolume, None),
            // overlay for its snapshots; bridge and netfilter for the pods' CNI network.
            Dependency::Fact(Fact::ServiceModules, None),
        ],
        command,
    )
    // Healthy once its CRI server answers, not when the socket first takes connections:
    // containerd listens before its CRI plugin is initialized, and the kubelet's first call
    // then failed ("server is not initialized yet") and waited out a restart delay.
    .with_health(Box::new(|| -> HealthCheck {
        Box::pin(async {
            let cri = CriClient::connect(SOCKET).await.map_err(|e| format!("{SOCKET}: {e}"))?;
            match tokio::time::timeout(CRI_CHECK_TIMEOUT, cri.version()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(status)) => Err(format!("CRI: {}", status.message())),
                Err(_) => Err(format!("CRI: no answer in {}s", CRI_CHECK_TIMEOUT.as_secs())),
            }
        })
    }))
}

/// How long the health check's CRI call may take.
const CRI_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Writes containerd's config and the registries' `hosts.toml` files; returns the config's
/// path.
fn write_config(root: &Path, config: Option<&MachineConfig>) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(under(root, CONFIG_DIR))?;
    std::fs::create_dir_all(under(root, CNI_CONF_DIR))?;
    write_hosts(root, config)?;
    let path = under(root, CONFIG_DIR).join("config.toml");
    crate::files::durable::write_atomically(&path, render().as_bytes(), 0o644)?;
    Ok(path)
}

/// containerd's config (version 2, containerd 1.7).
fn render() -> String {
    let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
    format!(
        r#"# Written by machined at each start of containerd; changes here are lost.
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "{SOCKET}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"

[{cri}.containerd]
  snapshotter = "{SNAPSHOTTER}"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "/usr/sbin/runc"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{CNI_CONF_DIR}"

[{cri}.registry]
  config_path = "{HOSTS_DIR}"
"#
    )
}

/// Writes the registries' `hosts.toml` files of `config` for the node under `root`.
pub fn write_hosts(root: &Path, config: Option<&MachineConfig>) -> anyhow::Result<()> {
    write_hosts_in(&under(root, HOSTS_DIR), config)
}

/// One directory per mirrored registry (`_default` for `*`), each with a `hosts.toml` naming
/// its mirrors in order; the directories of registries no longer mirrored are removed. The
/// directories are made [`HOSTS_DIR_MODE`] and the files [`HOSTS_FILE_MODE`] as they are
/// created (a mode set afterwards leaves a moment when anyone may read).
fn write_hosts_in(dir: &Path, config: Option<&MachineConfig>) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let private_dir = |path: &Path| DirBuilder::new().mode(HOSTS_DIR_MODE).create(path);
    private_dir(dir)?;
    let Some(config) = config else { return Ok(()) };
    for (registry, mirror) in &config.machine.registries.mirrors {
        // Validation refused such keys already; a key becomes a directory name, so it is
        // checked again where a `..` would do harm.
        Registries::check_mirror_key(registry).map_err(|why| {
            anyhow::anyhow!("machine.registries.mirrors: {why}; no hosts.toml written for it")
        })?;
        let name = if registry == Registries::ANY { "_default" } else { registry.as_str() };
        let registry_dir = dir.join(name);
        private_dir(&registry_dir)?;
        crate::files::durable::write_atomically(
            &registry_dir.join("hosts.toml"),
            hosts_toml(&mirror.endpoints).as_bytes(),
            HOSTS_FILE_MODE,
        )?;
    }
    Ok(())
}

/// A `hosts.toml` that tries `endpoints` in order for pulls.
fn hosts_toml(endpoints: &[String]) -> String {
    let mut text = String::new();
    for endpoint in endpoints {
        let _ = writeln!(text, "[host.{endpoint:?}]\n  capabilities = [\"pull\", \"resolve\"]\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_become_hosts_files_and_old_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("certs.d");
        std::fs::create_dir_all(hosts.join("old.example")).unwrap();
        // Parsed without validation: only the registries matter here.
        let config: MachineConfig = serde_yaml::from_str(concat!(
            "version: v1alpha1\n",
            "machine:\n",
            "  clientCa: {crt: client}\n",
            "  nodeCa: {crt: node, key: key}\n",
            "  registries:\n",
            "    mirrors:\n",
            "      docker.io: {endpoints: [\"http://10.0.2.2:5000\", \"https://mirror.example\"]}\n",
            "      \"*\": {endpoints: [\"http://10.0.2.2:5000\"]}\n",
        ))
        .unwrap();
        write_hosts_in(&hosts, Some(&config)).unwrap();
        assert!(!hosts.join("old.example").exists());
        assert_eq!(
            std::fs::read_to_string(hosts.join("docker.io/hosts.toml")).unwrap(),
            "[host.\"http://10.0.2.2:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n\
             [host.\"https://mirror.example\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n"
        );
        assert!(hosts.join("_default/hosts.toml").exists());
    }

    #[test]
    fn only_root_reads_mirror_credentials() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("certs.d");
        // One left open by an older machined: replaced, not reused.
        std::fs::create_dir_all(hosts.join("docker.io")).unwrap();
        std::fs::set_permissions(&hosts, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config: MachineConfig = serde_yaml::from_str(concat!(
            "version: v1alpha1\n",
            "machine:\n",
            "  clientCa: {crt: client}\n",
            "  nodeCa: {crt: node, key: key}\n",
            "  registries:\n",
            "    mirrors:\n",
            "      docker.io: {endpoints: [\"https://bob:pw@mirror.example\"]}\n",
        ))
        .unwrap();
        write_hosts_in(&hosts, Some(&config)).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&hosts), 0o700);
        assert_eq!(mode(&hosts.join("docker.io")), 0o700);
        assert_eq!(mode(&hosts.join("docker.io/hosts.toml")), 0o600);
    }

    #[test]
    fn a_mirror_key_that_is_not_a_host_writes_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("etc/containerd/certs.d");
        let config: MachineConfig = serde_yaml::from_str(concat!(
            "version: v1alpha1\n",
            "machine:\n",
            "  clientCa: {crt: client}\n",
            "  nodeCa: {crt: node, key: key}\n",
            "  registries:\n",
            "    mirrors:\n",
            "      \"../../../escaped\": {endpoints: [\"http://10.0.2.2:5000\"]}\n",
        ))
        .unwrap();
        let error = write_hosts_in(&hosts, Some(&config)).unwrap_err().to_string();
        assert!(error.contains("\"../../../escaped\" is not a registry host"), "{error}");
        assert!(!dir.path().join("escaped").exists());
    }
}
