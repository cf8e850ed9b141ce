//! Debian's rustc 1.85 (the workspace's floor, for cross builds; DESIGN.md §8), unpacked
//! into the cache, not installed: it must not replace the host's toolchain. apt verifies the
//! downloads against the archive's signatures.

use std::path::{Path, PathBuf};

use crate::host::{Host, HostError, Invocation};
use crate::packages;

/// The packages, `(name, version)`: the compiler, its std and the LLVM it links.
const PACKAGES: [(&str, &str); 4] = [
    ("rustc-web", "1.85.0+dfsg3-1~deb12u3"),
    ("libstd-rust-web-1.85", "1.85.0+dfsg3-1~deb12u3"),
    ("libstd-rust-web-dev", "1.85.0+dfsg3-1~deb12u3"),
    ("libllvm19", "1:19.1.7-3~deb12u1"),
];

/// Where the toolchain is unpacked, and its downloads kept.
#[derive(Debug, Clone)]
pub struct Rust185 {
    root: PathBuf,
    debs: PathBuf,
}

impl Rust185 {
    /// In `cache`: `rust-1.85/` and `debs/`.
    pub fn in_cache(cache: &Path) -> Rust185 {
        Rust185 { root: cache.join("rust-1.85"), debs: cache.join("debs") }
    }

    /// The compiler.
    pub fn rustc(&self) -> PathBuf {
        self.root.join("usr/bin/rustc")
    }

    /// Where its shared libraries are (it is not installed, so the loader must be told).
    fn library_path(&self) -> PathBuf {
        self.root.join("usr/lib/x86_64-linux-gnu")
    }

    /// `command` with this rustc instead of the host's.
    pub fn with_rustc(&self, command: Invocation) -> Invocation {
        command.env("RUSTC", path(&self.rustc())).env("LD_LIBRARY_PATH", path(&self.library_path()))
    }

    /// `rustc --version`, with this rustc.
    pub fn version(&self) -> Invocation {
        Invocation::new(&path(&self.rustc()), &["--version"])
            .env("LD_LIBRARY_PATH", path(&self.library_path()))
    }

    /// Downloads the packages into the download directory (no sandbox user: as root apt
    /// would warn that its `_apt` user cannot write there).
    fn download(&self) -> Invocation {
        let command =
            Invocation::new("apt-get", &["download", "-qq", "-o", "APT::Sandbox::User=root"]);
        PACKAGES
            .iter()
            .fold(command, |c, (name, version)| c.arg(format!("{name}={version}")))
            .in_dir(&self.debs)
    }

    /// Of the files `names` in the download directory, those of [`PACKAGES`] at their
    /// versions, as apt names them (`name_version_arch.deb`, an epoch's `:` as `%3a`).
    fn downloaded(&self, names: &[String]) -> Vec<PathBuf> {
        PACKAGES
            .iter()
            .filter_map(|(name, version)| {
                let prefix = format!("{name}_{}_", version.replace(':', "%3a"));
                names.iter().find(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .map(|name| self.debs.join(name))
            .collect()
    }

    /// Downloads and unpacks the toolchain unless it is there; `apt_updated` says whether
    /// apt's lists are fresh (if not, a failed download updates them and tries again).
    pub fn ensure(&self, host: &mut impl Host, apt_updated: bool) -> Result<(), HostError> {
        if host.has_file(&self.rustc()) {
            return Ok(());
        }
        host.create_dir(&self.debs)?;
        host.create_dir(&self.root)?;
        if !self.have_all(host) {
            println!("$ {}", self.download());
            if let Err(error) = host.run(&self.download()) {
                if apt_updated {
                    return Err(error);
                }
                let update = packages::apt_update().privileged(host.is_root());
                println!("{error}; updating apt's lists and trying again\n$ {update}");
                host.run(&update)?;
                host.run(&self.download())?;
            }
        }
        for deb in self.downloaded(&host.list(&self.debs)) {
            host.run(&Invocation::new("dpkg", &["-x", &path(&deb), &path(&self.root)]))?;
        }
        Ok(())
    }

    fn have_all(&self, host: &impl Host) -> bool {
        self.downloaded(&host.list(&self.debs)).len() == PACKAGES.len()
    }
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    #[test]
    fn the_downloads_are_found_by_package_and_version_as_apt_names_them() {
        let rust = Rust185::in_cache(Path::new("/c"));
        let names: Vec<String> = [
            "rustc-web_1.85.0+dfsg3-1~deb12u3_amd64.deb",
            "rustc-web_1.85.0+dfsg3-1~deb12u2_amd64.deb",
            "libstd-rust-web-1.85_1.85.0+dfsg3-1~deb12u3_amd64.deb",
            "libllvm19_1%3a19.1.7-3~deb12u1_amd64.deb",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            rust.downloaded(&names),
            [
                PathBuf::from("/c/debs/rustc-web_1.85.0+dfsg3-1~deb12u3_amd64.deb"),
                PathBuf::from("/c/debs/libstd-rust-web-1.85_1.85.0+dfsg3-1~deb12u3_amd64.deb"),
                PathBuf::from("/c/debs/libllvm19_1%3a19.1.7-3~deb12u1_amd64.deb"),
            ]
        );
    }

    #[test]
    fn the_download_names_each_version_and_runs_in_the_download_directory() {
        let download = Rust185::in_cache(Path::new("/c")).download();
        assert_eq!(download.dir.as_deref(), Some(Path::new("/c/debs")));
        assert_eq!(
            download.to_string(),
            "apt-get download -qq -o APT::Sandbox::User=root rustc-web=1.85.0+dfsg3-1~deb12u3 libstd-rust-web-1.85=1.85.0+dfsg3-1~deb12u3 libstd-rust-web-dev=1.85.0+dfsg3-1~deb12u3 libllvm19=1:19.1.7-3~deb12u1"
        );
    }

    #[test]
    fn cargo_runs_with_the_unpacked_rustc_and_its_libraries() {
        let rust = Rust185::in_cache(Path::new("/c"));
        let check = rust.with_rustc(Invocation::new("cargo", &["check"]));
        assert_eq!(
            check.to_string(),
            "RUSTC=/c/rust-1.85/usr/bin/rustc LD_LIBRARY_PATH=/c/rust-1.85/usr/lib/x86_64-linux-gnu cargo check"
        );
    }

    #[test]
    fn an_unpacked_toolchain_is_not_fetched_again() {
        let rust = Rust185::in_cache(Path::new("/c"));
        let mut host = FakeHost::default();
        host.files.insert(rust.rustc(), String::new());
        rust.ensure(&mut host, false).unwrap();
        assert!(host.ran.is_empty(), "{:?}", host.ran);
    }

    #[test]
    fn a_failed_download_with_stale_lists_updates_them_and_tries_again() {
        let rust = Rust185::in_cache(Path::new("/c"));
        let mut host = FakeHost::default();
        host.failing.insert("apt-get".into());
        let error = rust.ensure(&mut host, false).unwrap_err().to_string();
        assert!(error.starts_with("`apt-get download "), "{error}");
        let download = rust.download().to_string();
        assert_eq!(host.ran, [download.as_str(), "sudo apt-get update -qq", &download]);
        host.ran.clear();
        rust.ensure(&mut host, true).unwrap_err();
        assert_eq!(host.ran.len(), 1, "fresh lists: no second update {:?}", host.ran);
    }
}
