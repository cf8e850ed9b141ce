//! `ctl gen`: the cluster's two CAs, client certificates per role, and a node config.
//!
//! The client CA signs API client certificates; nodes get only its certificate. The node CA
//! signs each node's serving certificate; nodes hold its key. A stolen node thus gives away
//! the node CA (it can pose as a node) but not the client CA (it cannot administer nodes).
//! `secrets.yaml` keeps both keys: whoever holds the client CA's can mint admin certificates,
//! so it is written 0600 and belongs in a vault, not on a laptop's desktop.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use cairn_api::config::{CertificateAuthority, ConfigVersion, Machine, MachineConfig};
use cairn_api::role::Role;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ctlconfig::{Context, CtlConfig};

/// How long a generated CA lasts.
const CA_VALIDITY: time::Duration = time::Duration::days(3650);

/// The cluster's secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Secrets {
    /// The cluster's name.
    pub name: String,
    /// Signs API client certificates.
    pub client_ca: CertificateAuthority,
    /// Signs the nodes' serving certificates.
    pub node_ca: CertificateAuthority,
}

impl Secrets {
    /// Reads a secrets file, explaining the first format (one CA) if that is what it holds.
    pub fn load(path: &Path) -> anyhow::Result<Secrets> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_yaml::from_str(&text).map_err(|e| {
            let old = serde_yaml::from_str::<serde_yaml::Value>(&text)
                .is_ok_and(|doc| doc.get("ca").is_some());
            if old {
                anyhow::anyhow!("{}: it holds a single CA, as older ctl versions wrote; nodes no longer accept one. Run `ctl gen config` for new secrets and node config, apply the config to each node with the old admin context, then use the new ctlconfig", path.display())
            } else {
                anyhow::anyhow!("{}: not a secrets file: {e}", path.display())
            }
        })
    }
}

/// A PEM certificate and key.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Certificate, PEM.
    pub crt: String,
    /// Private key, PEM.
    pub key: String,
}

/// A new CA named after the cluster and what it signs (`purpose`).
pub fn generate_ca(name: &str, purpose: &str) -> anyhow::Result<CertificateAuthority> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, format!("{name} {purpose} CA"));
    params.distinguished_name.push(DnType::OrganizationName, "cairn");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key)?;
    Ok(CertificateAuthority { crt: cert.pem(), key: Some(key.serialize_pem()) })
}

/// A client certificate for `role`, signed by the client CA `ca`, valid from an hour ago (clock skew) for
/// `valid_for`.
pub fn issue_client(
    ca: &CertificateAuthority,
    role: Role,
    valid_for: Duration,
) -> anyhow::Result<Credential> {
    let ca_key = KeyPair::from_pem(ca.key.as_deref().context("the CA has no key")?)
        .context("reading the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca.crt, ca_key).context("reading the CA certificate")?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, role.organization().trim_start_matches("os:"));
    params.distinguished_name.push(DnType::OrganizationName, role.organization());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::try_from(valid_for).context("validity too long")?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Credential { crt: cert.pem(), key: key.serialize_pem() })
}

/// `ctl gen config NAME`: writes `node.yaml`, `secrets.yaml` and an admin `ctlconfig`.
pub fn config(name: &str, dir: &Path, nodes: &[String], force: bool) -> anyhow::Result<()> {
    let files = ["node.yaml", "secrets.yaml", "ctlconfig"].map(|f| dir.join(f));
    if !force {
        if let Some(existing) = files.iter().find(|f| f.exists()) {
            bail!("{} exists; pass --force to overwrite", existing.display());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let client_ca = generate_ca(name, "API client")?;
    let node_ca = generate_ca(name, "node")?;
    let node = MachineConfig {
        version: ConfigVersion::V1Alpha1,
        machine: Machine {
            client_ca: CertificateAuthority { crt: client_ca.crt.clone(), key: None },
            node_ca: node_ca.clone(),
            cert_sans: Vec::new(),
            hostname: None,
            network: Default::default(),
            time: Default::default(),
            install: Default::default(),
            ephemeral: Default::default(),
            kernel: Default::default(),
            sysctls: Default::default(),
            files: Vec::new(),
            pods: Vec::new(),
            objects: Vec::new(),
            kubelet: Default::default(),
            registries: Default::default(),
            update: Default::default(),
        },
        cluster: None,
    };
    let secrets = Secrets { name: name.to_string(), client_ca, node_ca };
    let admin = client_config(&secrets, Role::Admin, nodes, Duration::from_secs(365 * 86400))?;
    write_private(&files[0], node.to_yaml().as_bytes())?;
    write_private(&files[1], serde_yaml::to_string(&secrets)?.as_bytes())?;
    admin.save(&files[2])?;
    for file in &files {
        println!("wrote {}", file.display());
    }
    Ok(())
}

/// `ctl gen client`: a client config for `role`.
pub fn client(
    secrets: &Path,
    role: Role,
    output: &Path,
    nodes: &[String],
    valid_for: Duration,
    force: bool,
) -> anyhow::Result<()> {
    if output.exists() && !force {
        bail!("{} exists; pass --force to overwrite", output.display());
    }
    let secrets = Secrets::load(secrets)?;
    client_config(&secrets, role, nodes, valid_for)?.save(output)?;
    println!("wrote {} ({role})", output.display());
    Ok(())
}

fn client_config(
    secrets: &Secrets,
    role: Role,
    nodes: &[String],
    valid_for: Duration,
) -> anyhow::Result<CtlConfig> {
    let credential = issue_client(&secrets.client_ca, role, valid_for)?;
    let context = Context {
        nodes: nodes.to_vec(),
        ca: secrets.node_ca.crt.clone(),
        crt: credential.crt,
        key: credential.key,
    };
    Ok(CtlConfig::single(&secrets.name, context))
}

/// Writes a file only its owner can read, creating its directory.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file =
        OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // An existing file keeps its mode on open; make sure it ends up private.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_validate_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        config("edge", dir.path(), &["10.0.0.5".into()], false).unwrap();
        let node = std::fs::read(dir.path().join("node.yaml")).unwrap();
        MachineConfig::from_yaml(&node).unwrap();
        for f in ["node.yaml", "secrets.yaml", "ctlconfig"] {
            let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions();
            assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600, "{f}");
        }
        let ctlconfig = CtlConfig::load(&dir.path().join("ctlconfig")).unwrap();
        assert_eq!(ctlconfig.context, "edge");
        assert_eq!(ctlconfig.contexts["edge"].nodes, ["10.0.0.5"]);
        assert!(config("edge", dir.path(), &[], false).is_err(), "refuses to overwrite");

        // The node trusts the client CA without holding its key, and serves with the node CA.
        let node = MachineConfig::from_yaml(&node).unwrap();
        let secrets = Secrets::load(&dir.path().join("secrets.yaml")).unwrap();
        assert_eq!(node.machine.client_ca.key, None);
        assert_eq!(node.machine.client_ca.crt, secrets.client_ca.crt);
        assert_eq!(node.machine.node_ca, secrets.node_ca);
        assert_eq!(ctlconfig.contexts["edge"].ca, secrets.node_ca.crt);
    }

    #[test]
    fn single_ca_secrets_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("secrets.yaml");
        std::fs::write(&old, "name: edge\nca: {crt: x, key: y}\n").unwrap();
        let error = client(
            &old,
            Role::Reader,
            &dir.path().join("out"),
            &[],
            Duration::from_secs(60),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("single CA") && error.contains("ctl gen config"), "{error}");
    }

    #[test]
    fn client_certificates_carry_the_role() {
        let ca = generate_ca("edge", "API client").unwrap();
        let reader = issue_client(&ca, Role::Reader, Duration::from_secs(3600)).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(reader.crt.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let orgs: Vec<_> =
            cert.subject().iter_organization().map(|o| o.as_str().unwrap().to_string()).collect();
        assert_eq!(orgs, ["os:reader"]);
    }
}
