//! The compilers that build machined for a board's architecture. For the host's own, the
//! host's rustc as it is. For another (cross builds): a rustc with that target's std, and
//! Debian's cross gcc, which links the executables and compiles the C in machined's tree
//! (ring, zstd-sys) through the `cc` crate.
//!
//! The rustc is the host's (`$RUSTC`, else `rustc`) when it has the target's std (a rustup
//! target), else Debian's rustc-web 1.85 unpacked with dpkg (not installed) in the directory
//! `$CAIRN_CROSS_RUST` names, with the std of the target's Debian architecture unpacked beside
//! it (`libstd-rust-web-dev` and `libstd-rust-web-1.85`; DESIGN.md §8). `cargo xtask
//! cross-toolchain` sets up both that directory and the cross gcc packages.
//!
//! Both compilers share the target directory: cargo keys every artifact, build scripts and
//! proc macros included, by the rustc that built it, so neither rebuilds the other's (measured:
//! a host build after a cross build with Debian's rustc found all 169 units fresh).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use cairn_api::arch::Arch;

/// The variable that names an unpacked Debian rustc for cross builds.
pub const CROSS_RUST_VARIABLE: &str = "CAIRN_CROSS_RUST";

/// What choosing a toolchain asks of the host.
pub trait ToolchainHost {
    /// The host rustc's library directory for `target` (`rustc --print target-libdir
    /// --target TARGET`), or None if rustc does not know the target.
    fn rustc_target_libdir(&self, target: &str) -> Option<PathBuf>;
    /// The names of the entries of `dir` (none if it cannot be read).
    fn list(&self, dir: &Path) -> Vec<String>;
    /// Whether `path` exists.
    fn has_file(&self, path: &Path) -> bool;
    /// Whether `program` is an executable on `PATH`.
    fn has_program(&self, program: &str) -> bool;
    /// An environment variable of image-builder's.
    fn var(&self, name: &str) -> Option<OsString>;
}

/// A piece of a cross toolchain is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolchainError {
    /// image-builder runs on a machine whose architecture Cairn does not know.
    #[error(
        "image-builder runs on {0}, which no Cairn board has: cross builds are set up for \
         x86_64, arm64 and armv7 hosts"
    )]
    UnknownHost(&'static str),
    /// The host's rustc lacks the target's std and no unpacked rustc is named.
    #[error(
        "no std for {target}: the host's rustc lacks it and ${variable} is not set; run `cargo \
         xtask cross-toolchain` and set {variable} to the directory it prints (Debian's rustc \
         1.85 with the std of arm64 and armhf), or `rustup target add {target}`"
    )]
    NoStd {
        /// The Rust target.
        target: &'static str,
        /// [`CROSS_RUST_VARIABLE`].
        variable: &'static str,
    },
    /// The named directory holds no rustc.
    #[error(
        "{variable}={root}: no {rustc} (Debian's rustc-web 1.85 unpacked with dpkg -x); run \
         `cargo xtask cross-toolchain`"
    )]
    NoUnpackedRustc {
        /// [`CROSS_RUST_VARIABLE`].
        variable: &'static str,
        /// The directory.
        root: String,
        /// The compiler it lacks.
        rustc: String,
    },
    /// The named directory's rustc has no std for the target.
    #[error(
        "{variable}={root}: no std for {target} (no libstd-*.rlib in {libdir}): unpack \
         libstd-rust-web-dev and libstd-rust-web-1.85 for {debian_arch} of rustc's version \
         there, as `cargo xtask cross-toolchain` does"
    )]
    NoUnpackedStd {
        /// [`CROSS_RUST_VARIABLE`].
        variable: &'static str,
        /// The directory.
        root: String,
        /// The Rust target.
        target: &'static str,
        /// Where its std should be.
        libdir: String,
        /// The Debian architecture of the std packages.
        debian_arch: &'static str,
    },
    /// The cross C compiler is not installed.
    #[error(
        "{program} is not on PATH (it links {target} executables and compiles the C of ring \
         and zstd-sys): install the Debian package {package}, or run `cargo xtask \
         cross-toolchain`"
    )]
    NoCrossGcc {
        /// The compiler.
        program: String,
        /// The Rust target.
        target: &'static str,
        /// The Debian package that has it.
        package: String,
    },
}

/// The rustc a build runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rustc {
    /// The host's (`$RUSTC`, else `rustc`), as cargo finds it.
    Host,
    /// Debian's, unpacked under `root` (`usr/bin/rustc`), with the target's std beside it.
    Unpacked {
        /// The directory it was unpacked into.
        root: PathBuf,
        /// Where its shared libraries are (it is not installed: the loader must be told).
        library_dir: PathBuf,
    },
}

/// The compilers for one build of machined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    target: &'static str,
    rustc: Rustc,
    /// The GNU triple of Debian's cross gcc (`aarch64-linux-gnu`), for a foreign target.
    cross_gcc: Option<&'static str>,
}

impl Toolchain {
    /// The compilers that build for `arch` on this machine (whose architecture is
    /// `host_arch`), or what is missing and how to get it.
    pub fn select(
        arch: Arch,
        host_arch: Result<Arch, &'static str>,
        host: &impl ToolchainHost,
    ) -> Result<Toolchain, ToolchainError> {
        let target = arch.rust_target();
        let host_arch = host_arch.map_err(ToolchainError::UnknownHost)?;
        if arch == host_arch {
            return Ok(Toolchain { target, rustc: Rustc::Host, cross_gcc: None });
        }
        let host_has_std = host.rustc_target_libdir(target).is_some_and(|dir| has_std(host, &dir));
        let rustc = if host_has_std { Rustc::Host } else { unpacked_rustc(arch, host_arch, host)? };
        let gnu = gnu_triple(arch);
        let gcc = format!("{gnu}-gcc");
        if !host.has_program(&gcc) {
            return Err(ToolchainError::NoCrossGcc {
                program: gcc,
                target,
                package: format!("gcc-{gnu}"),
            });
        }
        Ok(Toolchain { target, rustc, cross_gcc: Some(gnu) })
    }

    /// The rustc it runs.
    pub fn rustc(&self) -> &Rustc {
        &self.rustc
    }

    /// The variables cargo runs with: the rustc and the library path it needs, the cross
    /// gcc as linker, and as the `cc` crate's compiler and archiver for the target.
    pub fn cargo_env(&self) -> Vec<(String, OsString)> {
        let mut env = Vec::new();
        if let Rustc::Unpacked { root, library_dir } = &self.rustc {
            env.push(("RUSTC".to_string(), unpacked_rustc_path(root).into_os_string()));
            env.push(("LD_LIBRARY_PATH".to_string(), library_dir.clone().into_os_string()));
        }
        if let Some(gnu) = self.cross_gcc {
            let cargo_target = self.target.to_uppercase().replace('-', "_");
            let cc_target = self.target.replace('-', "_");
            let gcc = OsString::from(format!("{gnu}-gcc"));
            env.push((format!("CARGO_TARGET_{cargo_target}_LINKER"), gcc.clone()));
            env.push((format!("CC_{cc_target}"), gcc));
            env.push((format!("AR_{cc_target}"), format!("{gnu}-ar").into()));
        }
        env
    }
}

/// The GNU triple Debian names `arch`'s cross tools and library directories with.
pub fn gnu_triple(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64-linux-gnu",
        Arch::Arm64 => "aarch64-linux-gnu",
        Arch::Armv7 => "arm-linux-gnueabihf",
    }
}

/// Where an unpacked Debian rustc under `root` keeps `target`'s std.
pub fn unpacked_std_dir(root: &Path, target: &str) -> PathBuf {
    root.join("usr/lib/rustlib").join(target).join("lib")
}

/// An unpacked Debian rustc's compiler.
fn unpacked_rustc_path(root: &Path) -> PathBuf {
    root.join("usr/bin/rustc")
}

/// Whether a file of a target's library directory is its std (`libstd-<hash>.rlib`).
pub fn is_std_rlib(name: &str) -> bool {
    name.starts_with("libstd-") && name.ends_with(".rlib")
}

/// Whether `dir` holds a std.
fn has_std(host: &impl ToolchainHost, dir: &Path) -> bool {
    host.list(dir).iter().any(|name| is_std_rlib(name))
}

/// The rustc `$CAIRN_CROSS_RUST` names, checked to have `arch`'s std.
fn unpacked_rustc(
    arch: Arch,
    host_arch: Arch,
    host: &impl ToolchainHost,
) -> Result<Rustc, ToolchainError> {
    let target = arch.rust_target();
    let variable = CROSS_RUST_VARIABLE;
    let root = PathBuf::from(host.var(variable).ok_or(ToolchainError::NoStd { target, variable })?);
    let rustc = unpacked_rustc_path(&root);
    if !host.has_file(&rustc) {
        return Err(ToolchainError::NoUnpackedRustc {
            variable,
            root: root.display().to_string(),
            rustc: rustc.display().to_string(),
        });
    }
    let libdir = unpacked_std_dir(&root, target);
    if !has_std(host, &libdir) {
        return Err(ToolchainError::NoUnpackedStd {
            variable,
            root: root.display().to_string(),
            target,
            libdir: libdir.display().to_string(),
            debian_arch: arch.debian(),
        });
    }
    let library_dir = root.join("usr/lib").join(gnu_triple(host_arch));
    Ok(Rustc::Unpacked { root, library_dir })
}

/// The machine image-builder runs on.
pub struct System;

impl ToolchainHost for System {
    fn rustc_target_libdir(&self, target: &str) -> Option<PathBuf> {
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let output = std::process::Command::new(rustc)
            .args(["--print", "target-libdir", "--target", target])
            .output()
            .ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        output.status.success().then(|| PathBuf::from(text.trim()))
    }

    fn list(&self, dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries.filter_map(|entry| entry.ok()?.file_name().into_string().ok()).collect()
            })
            .unwrap_or_default()
    }

    fn has_file(&self, path: &Path) -> bool {
        path.exists()
    }

    fn has_program(&self, program: &str) -> bool {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    }

    fn var(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }
}

/// The architecture of the machine image-builder runs on, or its name when Cairn has none.
pub fn host_arch() -> Result<Arch, &'static str> {
    Arch::built_for().ok_or(std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// A host with rustup's x86_64 only, Debian's cross gcc, and what a test adds.
    #[derive(Default)]
    struct FakeHost {
        libdirs: BTreeMap<String, PathBuf>,
        dirs: BTreeMap<PathBuf, Vec<String>>,
        files: BTreeSet<PathBuf>,
        programs: BTreeSet<String>,
        vars: BTreeMap<String, OsString>,
    }

    impl FakeHost {
        fn new() -> FakeHost {
            let mut host = FakeHost::default();
            let rustup = PathBuf::from("/rustup/lib/rustlib/x86_64-unknown-linux-gnu/lib");
            host.libdirs.insert("x86_64-unknown-linux-gnu".into(), rustup.clone());
            host.dirs.insert(rustup, vec!["libstd-1a2b.rlib".into()]);
            // rustc knows every target, but prints a directory that is not there.
            for target in ["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf"] {
                host.libdirs.insert(target.into(), format!("/rustup/lib/rustlib/{target}").into());
            }
            host.programs
                .extend(["aarch64-linux-gnu-gcc".into(), "arm-linux-gnueabihf-gcc".into()]);
            host
        }

        /// With Debian's rustc unpacked in `/c/rust` and the std of `targets`, named by
        /// `$CAIRN_CROSS_RUST`.
        fn with_unpacked(mut self, targets: &[&str]) -> FakeHost {
            self.vars.insert(CROSS_RUST_VARIABLE.into(), "/c/rust".into());
            self.files.insert("/c/rust/usr/bin/rustc".into());
            for target in targets {
                let std = vec!["libcore-9f.rlib".into(), "libstd-f7c1.rlib".into()];
                self.dirs.insert(unpacked_std_dir(Path::new("/c/rust"), target), std);
            }
            self
        }
    }

    impl ToolchainHost for FakeHost {
        fn rustc_target_libdir(&self, target: &str) -> Option<PathBuf> {
            self.libdirs.get(target).cloned()
        }
        fn list(&self, dir: &Path) -> Vec<String> {
            self.dirs.get(dir).cloned().unwrap_or_default()
        }
        fn has_file(&self, path: &Path) -> bool {
            self.files.contains(path)
        }
        fn has_program(&self, program: &str) -> bool {
            self.programs.contains(program)
        }
        fn var(&self, name: &str) -> Option<OsString> {
            self.vars.get(name).cloned()
        }
    }

    fn env(toolchain: &Toolchain) -> Vec<String> {
        toolchain
            .cargo_env()
            .into_iter()
            .map(|(name, value)| format!("{name}={}", value.to_string_lossy()))
            .collect()
    }

    #[test]
    fn the_host_s_own_architecture_builds_with_the_host_s_rustc_as_it_is() {
        let toolchain =
            Toolchain::select(Arch::X86_64, Ok(Arch::X86_64), &FakeHost::new()).unwrap();
        assert_eq!(toolchain.rustc(), &Rustc::Host);
        assert!(toolchain.cargo_env().is_empty());
    }

    #[test]
    fn a_rustup_target_builds_with_the_host_s_rustc_and_debian_s_cross_gcc() {
        let mut host = FakeHost::new().with_unpacked(&["aarch64-unknown-linux-gnu"]);
        let rustup = PathBuf::from("/rustup/lib/rustlib/aarch64-unknown-linux-gnu");
        host.dirs.insert(rustup, vec!["libstd-77.rlib".into()]);
        let toolchain = Toolchain::select(Arch::Arm64, Ok(Arch::X86_64), &host).unwrap();
        assert_eq!(toolchain.rustc(), &Rustc::Host);
        assert_eq!(
            env(&toolchain),
            [
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc",
                "CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc",
                "AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar",
            ]
        );
    }

    #[test]
    fn without_a_rustup_target_the_unpacked_rustc_builds_with_its_library_path() {
        let host = FakeHost::new().with_unpacked(&["armv7-unknown-linux-gnueabihf"]);
        let toolchain = Toolchain::select(Arch::Armv7, Ok(Arch::X86_64), &host).unwrap();
        assert_eq!(
            env(&toolchain),
            [
                "RUSTC=/c/rust/usr/bin/rustc",
                "LD_LIBRARY_PATH=/c/rust/usr/lib/x86_64-linux-gnu",
                "CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc",
                "CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc",
                "AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar",
            ]
        );
    }

    #[test]
    fn each_missing_piece_is_an_error_that_says_how_to_get_it() {
        let select = |host: &FakeHost, arch| {
            Toolchain::select(arch, Ok(Arch::X86_64), host).unwrap_err().to_string()
        };
        assert_eq!(
            select(&FakeHost::new(), Arch::Arm64),
            "no std for aarch64-unknown-linux-gnu: the host's rustc lacks it and \
             $CAIRN_CROSS_RUST is not set; run `cargo xtask cross-toolchain` and set \
             CAIRN_CROSS_RUST to the directory it prints (Debian's rustc 1.85 with the std of \
             arm64 and armhf), or `rustup target add aarch64-unknown-linux-gnu`"
        );
        let mut host = FakeHost::new().with_unpacked(&["aarch64-unknown-linux-gnu"]);
        assert_eq!(
            select(&host, Arch::Armv7),
            "CAIRN_CROSS_RUST=/c/rust: no std for armv7-unknown-linux-gnueabihf (no \
             libstd-*.rlib in /c/rust/usr/lib/rustlib/armv7-unknown-linux-gnueabihf/lib): \
             unpack libstd-rust-web-dev and libstd-rust-web-1.85 for armhf of rustc's version \
             there, as `cargo xtask cross-toolchain` does"
        );
        host.programs.remove("aarch64-linux-gnu-gcc");
        assert_eq!(
            select(&host, Arch::Arm64),
            "aarch64-linux-gnu-gcc is not on PATH (it links aarch64-unknown-linux-gnu \
             executables and compiles the C of ring and zstd-sys): install the Debian package \
             gcc-aarch64-linux-gnu, or run `cargo xtask cross-toolchain`"
        );
        host.files.clear();
        assert_eq!(
            select(&host, Arch::Arm64),
            "CAIRN_CROSS_RUST=/c/rust: no /c/rust/usr/bin/rustc (Debian's rustc-web 1.85 \
             unpacked with dpkg -x); run `cargo xtask cross-toolchain`"
        );
        let error = Toolchain::select(Arch::Arm64, Err("riscv64"), &host).unwrap_err();
        assert_eq!(error, ToolchainError::UnknownHost("riscv64"));
    }

    #[test]
    fn an_arm_host_names_its_own_library_directory_for_the_unpacked_rustc() {
        let mut host = FakeHost::new().with_unpacked(&["x86_64-unknown-linux-gnu"]);
        host.libdirs.clear();
        host.programs.insert("x86_64-linux-gnu-gcc".into());
        let toolchain = Toolchain::select(Arch::X86_64, Ok(Arch::Arm64), &host).unwrap();
        let Rustc::Unpacked { library_dir, .. } = toolchain.rustc() else {
            panic!("{toolchain:?}");
        };
        assert_eq!(library_dir, Path::new("/c/rust/usr/lib/aarch64-linux-gnu"));
    }
}
