//! A real OCI registry on the host (Debian's `docker-registry`), for pull tests: a node
//! under QEMU reaches it at the gateway address, 10.0.2.2. Images go in with `skopeo`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// A registry serving from a temporary directory on a loopback port, stopped on drop.
pub struct Registry {
    child: Child,
    port: u16,
    _storage: tempfile::TempDir,
}

impl Registry {
    /// Starts `docker-registry` (from the `docker-registry` package) on `port` (one a node's
    /// config already names).
    pub fn start_on(port: u16) -> anyhow::Result<Registry> {
        let storage = tempfile::tempdir()?;
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.path().join("data").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting docker-registry (install the docker-registry package)")?;
        let registry = Registry { child, port, _storage: storage };
        let up = crate::eventually(Duration::from_secs(20), || {
            crate::http_get(&format!("127.0.0.1:{port}"), "/v2/")
                .is_some_and(|(code, _)| code == 200)
        });
        if !up {
            bail!("docker-registry did not answer on 127.0.0.1:{port}");
        }
        Ok(registry)
    }

    /// Its port (on the host's loopback; 10.0.2.2 from a QEMU guest).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Copies the image in the OCI archive `archive` to `REPOSITORY:TAG` in this registry.
    pub fn push(&self, archive: &Path, reference: &str) -> anyhow::Result<()> {
        let output = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://127.0.0.1:{}/{reference}", self.port))
            .output()
            .context("running skopeo (install the skopeo package)")?;
        if !output.status.success() {
            bail!("skopeo copy failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
