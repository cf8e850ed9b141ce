//! Debian's rustc 1.85 (the workspace's floor, for cross builds; DESIGN.md §8), unpacked
//! into the cache, not installed: it must not replace the host's toolchain. apt verifies the
//! downloads against the archive's signatures.
//!
//! For cross builds, the std of arm64 and armhf of the same version is unpacked beside it
//! (where image-builder's `toolchain` looks when `$CAIRN_CROSS_RUST` names the directory).
//! Those come through an isolated apt state per architecture (image-builder's, bookworm only):
//! the host's dpkg gets no foreign architecture (the mirror's bookworm-security armhf index
//! failed its size check when one was added).

use std::path::{Path, PathBuf};

use cairn_api::arch::Arch;
use image_builder::apt::{self, AptState, DEBIAN_KEYRING};
use image_builder::toolchain;

use crate::host::{Host, HostError, Invocation};
use crate::packages;
use crate::sources;

/// The version of rustc and of every std unpacked with it: they must match exactly.
const RUST_VERSION: &str = "1.85.0+dfsg3-1~deb12u3";

/// The packages, `(name, version)`: the compiler, its std and the LLVM it links.
const PACKAGES: [(&str, &str); 4] = [
    ("rustc-web", RUST_VERSION),
    ("libstd-rust-web-1.85", RUST_VERSION),
    ("libstd-rust-web-dev", RUST_VERSION),
    ("libllvm19", "1:19.1.7-3~deb12u1"),
];

/// The architecture the unpacked rustc runs on (CI's machines are amd64).
const HOST: Arch = Arch::X86_64;

/// The packages of a foreign architecture's std: its rlibs, and the shared std they name.
const STD_PACKAGES: [&str; 2] = ["libstd-rust-web-dev", "libstd-rust-web-1.85"];

/// The architectures whose std is unpacked for cross builds.
pub const CROSS: [Arch; 2] = [Arch::Arm64, Arch::Armv7];

/// The suite the foreign std comes from: rustc-web's own.
const STD_SUITE: &str = "bookworm";

/// Where the toolchain is unpacked, and its downloads kept.
#[derive(Debug, Clone)]
pub struct Rust185 {
    root: PathBuf,
    debs: PathBuf,
    apt: PathBuf,
}

impl Rust185 {
    /// In `cache`: `rust-1.85/`, `debs/` and `apt/` (the foreign architectures' apt states).
    pub fn in_cache(cache: &Path) -> Rust185 {
        Rust185 { root: cache.join("rust-1.85"), debs: cache.join("debs"), apt: cache.join("apt") }
    }

    /// The directory it is unpacked into: what `$CAIRN_CROSS_RUST` names for image-builder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The compiler.
    pub fn rustc(&self) -> PathBuf {
        self.root.join("usr/bin/rustc")
    }

    /// Where its shared libraries are (it is not installed, so the loader must be told).
    fn library_path(&self) -> PathBuf {
        self.root.join("usr/lib").join(toolchain::gnu_triple(HOST))
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
    /// versions for the host.
    fn downloaded(&self, names: &[String]) -> Vec<PathBuf> {
        self.downloaded_of(names, PACKAGES.iter().copied(), HOST)
    }

    /// Of the files `names` in the download directory, those of `packages` (name, version)
    /// for `arch`, as apt names them.
    fn downloaded_of<'a>(
        &self,
        names: &[String],
        packages: impl Iterator<Item = (&'a str, &'a str)>,
        arch: Arch,
    ) -> Vec<PathBuf> {
        packages
            .map(|(name, version)| apt::deb_file_name_of(name, version, arch.debian()))
            .filter(|file| names.contains(file))
            .map(|file| self.debs.join(file))
            .collect()
    }

    /// The downloaded std packages of `arch`.
    fn downloaded_std(&self, names: &[String], arch: Arch) -> Vec<PathBuf> {
        let packages = STD_PACKAGES.iter().map(|name| (*name, RUST_VERSION));
        self.downloaded_of(names, packages, arch)
    }

    /// Whether `arch`'s std is unpacked.
    fn has_std(&self, host: &impl Host, arch: Arch) -> bool {
        let dir = toolchain::unpacked_std_dir(&self.root, arch.rust_target());
        host.list(&dir).iter().any(|name| toolchain::is_std_rlib(name))
    }

    /// Updates the package indexes of `apt`, an isolated state for a foreign architecture.
    fn std_update(apt: &AptState) -> Invocation {
        let command = Invocation::new("apt-get", &[]);
        apt.options().into_iter().fold(command, Invocation::arg).arg("-qq").arg("update")
    }

    /// Downloads `arch`'s std packages through `apt`, an isolated state for it.
    fn std_download(&self, apt: &AptState) -> Invocation {
        let command = Invocation::new("apt-get", &[]);
        let command = apt.options().into_iter().fold(command, Invocation::arg);
        // No sandbox user: as root apt would warn that its `_apt` user cannot write there.
        let command = ["download", "-qq", "-o", "APT::Sandbox::User=root"]
            .into_iter()
            .fold(command, Invocation::arg);
        STD_PACKAGES
            .iter()
            .fold(command, |c, name| c.arg(format!("{name}={RUST_VERSION}")))
            .in_dir(&self.debs)
    }

    /// Downloads and unpacks the std of each of [`CROSS`] beside the rustc, unless it is
    /// there; its packages come from the host's Debian mirror.
    pub fn ensure_cross(&self, host: &mut impl Host) -> Result<(), HostError> {
        let missing: Vec<Arch> = CROSS.into_iter().filter(|a| !self.has_std(host, *a)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mirror = sources::mirror(&sources::read_all(host));
        let mirror = mirror.ok_or_else(|| HostError::NoMirror {
            packages: STD_PACKAGES.join(" "),
            suite: STD_SUITE,
        })?;
        host.create_dir(&self.debs)?;
        for arch in missing {
            if self.downloaded_std(&host.list(&self.debs), arch).len() < STD_PACKAGES.len() {
                let apt =
                    AptState::new(&self.apt, &mirror, Path::new(DEBIAN_KEYRING), STD_SUITE, arch)?;
                for command in [Self::std_update(&apt), self.std_download(&apt)] {
                    println!("$ {command}");
                    host.run(&command)?;
                }
            }
            for deb in self.downloaded_std(&host.list(&self.debs), arch) {
                host.run(&Invocation::new("dpkg", &["-x", &path(&deb), &path(&self.root)]))?;
            }
            if !self.has_std(host, arch) {
                return Err(HostError::Missing {
                    what: path(&toolchain::unpacked_std_dir(&self.root, arch.rust_target())),
                    why: "the std of cross builds".into(),
                    package: format!("libstd-rust-web-dev:{}", arch.debian()),
                    hint: format!(" at version {RUST_VERSION}, unpacked with dpkg -x"),
                });
            }
        }
        Ok(())
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
    fn the_downloads_of_a_foreign_std_are_found_by_architecture() {
        let rust = Rust185::in_cache(Path::new("/c"));
        let names: Vec<String> = [
            "libstd-rust-web-dev_1.85.0+dfsg3-1~deb12u3_amd64.deb",
            "libstd-rust-web-dev_1.85.0+dfsg3-1~deb12u3_armhf.deb",
            "libstd-rust-web-1.85_1.85.0+dfsg3-1~deb12u3_arm64.deb",
            "libstd-rust-web-dev_1.85.0+dfsg3-1~deb12u3_arm64.deb",
            "libstd-rust-web-1.85_1.85.0+dfsg3-1~deb12u2_armhf.deb",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            rust.downloaded_std(&names, Arch::Arm64),
            [
                PathBuf::from("/c/debs/libstd-rust-web-dev_1.85.0+dfsg3-1~deb12u3_arm64.deb"),
                PathBuf::from("/c/debs/libstd-rust-web-1.85_1.85.0+dfsg3-1~deb12u3_arm64.deb"),
            ]
        );
        assert_eq!(
            rust.downloaded_std(&names, Arch::Armv7),
            [PathBuf::from("/c/debs/libstd-rust-web-dev_1.85.0+dfsg3-1~deb12u3_armhf.deb")]
        );
        // The host's own std is the amd64 one, never a foreign one of the same name.
        assert_eq!(
            rust.downloaded(&names),
            [PathBuf::from("/c/debs/libstd-rust-web-dev_1.85.0+dfsg3-1~deb12u3_amd64.deb")]
        );
    }

    /// A host whose apt sources name a Debian mirror.
    fn host_with_mirror() -> FakeHost {
        let mut host = FakeHost::default();
        host.files
            .insert("/etc/apt/sources.list".into(), "deb http://m/debian bookworm main\n".into());
        host
    }

    #[test]
    fn a_missing_foreign_std_comes_through_an_isolated_apt_state_and_is_unpacked() {
        let cache = tempfile::tempdir().unwrap();
        let rust = Rust185::in_cache(cache.path());
        let mut host = host_with_mirror();
        let arm64_std = toolchain::unpacked_std_dir(rust.root(), "aarch64-unknown-linux-gnu");
        host.files.insert(arm64_std.join("libstd-f7c1952303da7ec4.rlib"), String::new());
        let armhf_debs = ["libstd-rust-web-dev", "libstd-rust-web-1.85"]
            .map(|name| rust.debs.join(apt::deb_file_name_of(name, RUST_VERSION, "armhf")));
        // Downloaded already (the fake host runs nothing: the test puts them there).
        for deb in &armhf_debs {
            host.files.insert(deb.clone(), String::new());
        }
        let error = rust.ensure_cross(&mut host).unwrap_err().to_string();
        let unpack = |deb: &Path| format!("dpkg -x {} {}", deb.display(), rust.root().display());
        assert_eq!(host.ran, [unpack(&armhf_debs[0]), unpack(&armhf_debs[1])]);
        // The fake dpkg unpacks nothing: the check after it names what is still missing.
        assert!(error.contains("armv7-unknown-linux-gnueabihf/lib not found"), "{error}");
        assert!(error.contains("libstd-rust-web-dev:armhf"), "{error}");

        host.files.retain(|path, _| !path.starts_with(&rust.debs));
        host.ran.clear();
        rust.ensure_cross(&mut host).unwrap_err();
        let state = cache.path().join("apt/bookworm-armhf");
        let sources = std::fs::read_to_string(state.join("etc/sources.list")).unwrap();
        assert_eq!(
            sources,
            format!("deb [signed-by={DEBIAN_KEYRING}] http://m/debian bookworm main non-free-firmware\n")
        );
        let [update, download] = &host.ran[..2] else { panic!("{:?}", host.ran) };
        let confined =
            format!("apt-get -o Dir::Etc::SourceList={}/etc/sources.list ", state.display());
        assert!(update.starts_with(&confined), "{update}");
        assert!(update.contains(" -o APT::Architectures::=armhf "), "{update}");
        assert!(update.ends_with(" -qq update"), "{update}");
        assert!(download.starts_with(&confined), "{download}");
        assert!(
            download.ends_with(
                " download -qq -o APT::Sandbox::User=root \
                 libstd-rust-web-dev=1.85.0+dfsg3-1~deb12u3 \
                 libstd-rust-web-1.85=1.85.0+dfsg3-1~deb12u3"
            ),
            "{download}"
        );
    }

    #[test]
    fn unpacked_foreign_std_is_not_fetched_again_and_no_mirror_is_an_error_naming_the_packages() {
        let rust = Rust185::in_cache(Path::new("/c"));
        let mut host = FakeHost::default();
        let error = rust.ensure_cross(&mut host).unwrap_err().to_string();
        assert_eq!(
            error,
            "libstd-rust-web-dev libstd-rust-web-1.85 come from bookworm, and apt's sources name \
             no Debian mirror to add it from: add bookworm to apt's sources, or install them from \
             it yourself"
        );
        for arch in CROSS {
            let std = toolchain::unpacked_std_dir(rust.root(), arch.rust_target());
            host.files.insert(std.join("libstd-f7c1952303da7ec4.rlib"), String::new());
        }
        rust.ensure_cross(&mut host).unwrap();
        assert!(host.ran.is_empty(), "{:?}", host.ran);
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
