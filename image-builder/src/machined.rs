//! machined and pause for the image, and the boot bench's trivial init: the programs of the
//! workspace's machined package, built for the board's architecture, release and static
//! (machined runs as `/init` before any shared library is there; pause is the only file of
//! its container image; trivial-init stands in for machined as `/init`), in one cargo
//! invocation, or taken prebuilt; either way checked to be static executables for that
//! architecture.
//!
//! Panic messages carry source paths, and the image must be the same from any checkout, so
//! paths are remapped: cargo's registry to `/cargo`, the target directory to
//! `/cairn/target` (in `RUSTFLAGS`, which key every crate's build and do not depend on the
//! checkout), and the workspace to `/cairn`, for the workspace's own crates only. That last
//! one differs between checkouts, so it does not go into `RUSTFLAGS` (cargo would rebuild
//! every dependency for a clone at a new path): cargo runs image-builder itself as the
//! workspace's rustc wrapper (`RUSTC_WORKSPACE_WRAPPER`), which adds it (see
//! [`run_as_rustc_wrapper`]). The workspace's crates are rebuilt for each checkout anyway:
//! their sources are somewhere else.
//!
//! For another architecture than the host's, [`toolchain`](crate::toolchain) chooses the
//! compilers (a rustup target, or Debian's rustc 1.85 named by `$CAIRN_CROSS_RUST`, and
//! Debian's cross gcc) and says what is missing.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cairn_api::arch::Arch;

use crate::executable::{self, ExecutableError};
use crate::toolchain::{self, Toolchain, ToolchainError};

/// The workspace package that holds machined, pause and trivial-init.
const PACKAGE: &str = "machined";

/// Set (to a `--remap-path-prefix=...` flag) when cargo runs image-builder as the workspace's
/// rustc wrapper: the flag it adds to rustc's arguments.
const WRAPPER_FLAG_VARIABLE: &str = "CAIRN_RUSTC_WRAPPER_FLAG";

/// A program of the machined package that images carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// Cairn's PID 1 (`/init` of the initramfs, then `/usr/sbin/machined`).
    Machined,
    /// PID 1 of pod sandboxes, the only file of `localhost/pause:latest`.
    Pause,
    /// The boot bench's floor: an `/init` that prints a marker and powers off.
    TrivialInit,
}

impl Program {
    /// Every program, in the order cargo is asked for them.
    pub const ALL: [Program; 3] = [Program::Machined, Program::Pause, Program::TrivialInit];

    /// The binary's name in the package (`--bin NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Program::Machined => "machined",
            Program::Pause => "pause",
            Program::TrivialInit => "trivial-init",
        }
    }

    /// Why it must be static.
    fn runs(self) -> &'static str {
        match self {
            Program::Machined => "machined runs as /init before any library is there",
            Program::Pause => "pause is the only file of its container image",
            Program::TrivialInit => "trivial-init runs as /init before any library is there",
        }
    }
}

impl std::fmt::Display for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The executables [`build`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programs {
    /// machined.
    pub machined: PathBuf,
    /// pause.
    pub pause: PathBuf,
    /// trivial-init (not part of images: the boot bench boots it).
    pub trivial_init: PathBuf,
}

/// machined, pause or trivial-init could not be built or is unfit for the image.
#[derive(Debug, thiserror::Error)]
pub enum MachinedError {
    /// cargo could not be run.
    #[error("running cargo in {workspace}: {source}")]
    Cargo {
        /// The workspace.
        workspace: String,
        /// Why.
        source: std::io::Error,
    },
    /// No compilers for the architecture.
    #[error(transparent)]
    Toolchain(#[from] ToolchainError),
    /// image-builder's own executable, which cargo runs as rustc wrapper, is not known.
    #[error("finding image-builder's own executable (cargo runs it as rustc wrapper): {0}")]
    OwnExecutable(std::io::Error),
    /// cargo ran and failed.
    #[error(
        "building machined, pause and trivial-init for {target} failed ({status}); cargo's \
         errors are above"
    )]
    Build {
        /// The Rust target.
        target: &'static str,
        /// cargo's exit status.
        status: std::process::ExitStatus,
    },
    /// cargo succeeded without naming one of the executables.
    #[error("cargo built no {program} executable for {target}")]
    NoExecutable {
        /// The program missing.
        program: Program,
        /// The Rust target.
        target: &'static str,
    },
    /// The binary could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The binary is no executable for the board.
    #[error("{path}: {reason}")]
    Unfit {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Builds machined, pause and trivial-init from `workspace` for `arch` with one cargo
/// invocation (`$CARGO`, else `cargo` on the PATH) and the compilers
/// [`Toolchain::select`] chooses on this machine; returns the executables' paths. cargo's
/// progress goes to stderr.
pub fn build(workspace: &Path, arch: Arch) -> Result<Programs, MachinedError> {
    let target = arch.rust_target();
    let toolchain = Toolchain::select(arch, toolchain::host_arch(), &toolchain::System)?;
    let cargo_error =
        |source| MachinedError::Cargo { workspace: workspace.display().to_string(), source };
    let workspace = workspace.canonicalize().map_err(cargo_error)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let wrapper = std::env::current_exe().map_err(MachinedError::OwnExecutable)?;
    let mut child = Command::new(cargo)
        .current_dir(&workspace)
        .args(["build", "--release", "--locked", "-p", PACKAGE, "--target", target])
        .args(Program::ALL.iter().flat_map(|program| ["--bin", program.name()]))
        .args(["--message-format", "json-render-diagnostics"])
        .envs(toolchain.cargo_env())
        // With --target, these reach only the target's crates, not build scripts.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            rustflags(cargo_home().as_deref(), &target_dir(&workspace)).join("\x1f"),
        )
        .env("RUSTC_WORKSPACE_WRAPPER", wrapper)
        .env(WRAPPER_FLAG_VARIABLE, workspace_remap(&workspace))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(cargo_error)?;
    let messages = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let (mut machined, mut pause, mut trivial_init) = (None, None, None);
    for line in messages.lines() {
        let line = line.map_err(cargo_error)?;
        match executable_in(&line) {
            Some((Program::Machined, path)) => machined = Some(path),
            Some((Program::Pause, path)) => pause = Some(path),
            Some((Program::TrivialInit, path)) => trivial_init = Some(path),
            None => {}
        }
    }
    let status = child.wait().map_err(cargo_error)?;
    if !status.success() {
        return Err(MachinedError::Build { target, status });
    }
    let missing = |program| MachinedError::NoExecutable { program, target };
    Ok(Programs {
        machined: machined.ok_or_else(|| missing(Program::Machined))?,
        pause: pause.ok_or_else(|| missing(Program::Pause))?,
        trivial_init: trivial_init.ok_or_else(|| missing(Program::TrivialInit))?,
    })
}

/// Static linking, and source paths that depend neither on the checkout nor on where cargo's
/// registry (`cargo_home`) and `target_dir` are. Nothing here names the workspace unless the
/// target directory lies inside it (as cargo's default `target/` does; a new checkout has a
/// new one).
fn rustflags(cargo_home: Option<&Path>, target_dir: &Path) -> Vec<String> {
    let mut flags = vec!["-Ctarget-feature=+crt-static".to_string()];
    if let Some(cargo_home) = cargo_home {
        flags.push(format!("--remap-path-prefix={}=/cargo", cargo_home.display()));
    }
    // Generated code is included from the target directory; wherever it is, it reads as the
    // default one. (rustc applies the last matching prefix: this one wins over the
    // workspace's, which the wrapper puts before every other argument.)
    flags.push(format!("--remap-path-prefix={}=/cairn/target", target_dir.display()));
    flags
}

/// cargo's home, as cargo finds it.
fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
}

/// The target directory, as cargo takes it: `CARGO_TARGET_DIR` relative to the workspace,
/// links not resolved, else the workspace's `target/`.
fn target_dir(workspace: &Path) -> PathBuf {
    workspace.join(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()))
}

/// The flag that maps the workspace's sources to `/cairn`, for the workspace's own crates.
fn workspace_remap(workspace: &Path) -> OsString {
    let mut flag = OsString::from("--remap-path-prefix=");
    flag.push(workspace);
    flag.push("=/cairn");
    flag
}

/// When cargo runs image-builder as the workspace's rustc wrapper (during [`build`]), runs
/// rustc with the workspace's remap flag added and never returns, but with the error of
/// starting rustc; otherwise returns None at once. `main` calls it first.
pub fn run_as_rustc_wrapper() -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    let flag = std::env::var_os(WRAPPER_FLAG_VARIABLE)?;
    let (rustc, args) = wrapped_rustc(std::env::args_os().skip(1), flag)?;
    Some(Command::new(rustc).args(args).exec())
}

/// rustc and its arguments as the wrapper runs them, from the wrapper's own arguments (rustc
/// first, as cargo passes them): the flag goes first, so that flags given later (the target
/// directory's remap in `RUSTFLAGS`) win over it. None without a rustc.
fn wrapped_rustc(
    mut wrapper_args: impl Iterator<Item = OsString>,
    flag: OsString,
) -> Option<(OsString, Vec<OsString>)> {
    let rustc = wrapper_args.next()?;
    Some((rustc, std::iter::once(flag).chain(wrapper_args).collect()))
}

/// The program and executable in one of cargo's JSON messages, if it is one of ours.
fn executable_in(message: &str) -> Option<(Program, PathBuf)> {
    let message: serde_json::Value = serde_json::from_str(message).ok()?;
    if message["reason"] != "compiler-artifact" {
        return None;
    }
    let target = &message["target"];
    if !target["kind"].as_array()?.iter().any(|kind| kind == "bin") {
        return None;
    }
    let program = Program::ALL.into_iter().find(|p| target["name"] == p.name())?;
    Some((program, PathBuf::from(message["executable"].as_str()?)))
}

/// Reads `program` from `path` and checks that it is a static executable for `arch`.
pub fn load(path: &Path, program: Program, arch: Arch) -> Result<Vec<u8>, MachinedError> {
    let display = path.display().to_string();
    let data = std::fs::read(path)
        .map_err(|source| MachinedError::Read { path: display.clone(), source })?;
    executable::check_static(&data, arch).map_err(|e| {
        let reason = match e {
            ExecutableError::Dynamic(_) => format!(
                "{e}; {}: build it with RUSTFLAGS=\"-C target-feature=+crt-static\"",
                program.runs()
            ),
            other => other.to_string(),
        };
        MachinedError::Unfit { path: display, reason }
    })?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_executable_in_cargo_messages() {
        let machined = r#"{"reason":"compiler-artifact","target":{"name":"machined","kind":["bin"]},"executable":"/t/release/machined"}"#;
        assert_eq!(
            executable_in(machined),
            Some((Program::Machined, PathBuf::from("/t/release/machined")))
        );
        let pause = r#"{"reason":"compiler-artifact","target":{"name":"pause","kind":["bin"]},"executable":"/t/release/pause"}"#;
        assert_eq!(executable_in(pause), Some((Program::Pause, PathBuf::from("/t/release/pause"))));
        let init = r#"{"reason":"compiler-artifact","target":{"name":"trivial-init","kind":["bin"]},"executable":"/t/release/trivial-init"}"#;
        assert_eq!(
            executable_in(init),
            Some((Program::TrivialInit, PathBuf::from("/t/release/trivial-init")))
        );
        let library = r#"{"reason":"compiler-artifact","target":{"name":"machined","kind":["lib"]},"executable":null}"#;
        assert_eq!(executable_in(library), None);
        let other = r#"{"reason":"compiler-artifact","target":{"name":"ctl","kind":["bin"]},"executable":"/t/ctl"}"#;
        assert_eq!(executable_in(other), None);
        assert_eq!(executable_in(r#"{"reason":"build-finished","success":true}"#), None);
    }

    #[test]
    fn the_wrapper_puts_the_workspace_remap_before_cargo_and_rustflags_arguments() {
        let args =
            ["/bin/rustc", "--crate-name", "machined", "--remap-path-prefix=/t=/cairn/target"];
        let (rustc, args) = wrapped_rustc(
            args.into_iter().map(OsString::from),
            workspace_remap(Path::new("/src/cairn")),
        )
        .unwrap();
        assert_eq!(rustc, "/bin/rustc");
        assert_eq!(
            args,
            [
                "--remap-path-prefix=/src/cairn=/cairn",
                "--crate-name",
                "machined",
                "--remap-path-prefix=/t=/cairn/target"
            ]
        );
        assert_eq!(wrapped_rustc(std::iter::empty(), "--x".into()), None);
    }

    #[test]
    fn rustflags_name_the_registry_and_target_directory_but_not_the_workspace() {
        let flags = rustflags(Some(Path::new("/root/.cargo")), Path::new("/cache/target"));
        assert_eq!(
            flags,
            [
                "-Ctarget-feature=+crt-static",
                "--remap-path-prefix=/root/.cargo=/cargo",
                "--remap-path-prefix=/cache/target=/cairn/target"
            ]
        );
        assert_eq!(rustflags(None, Path::new("/t")).len(), 2);
    }

    #[test]
    fn refuses_dynamic_foreign_and_non_elf_files_naming_the_program() {
        // This test's own executable is dynamically linked x86_64 (on this project's hosts).
        let exe = std::env::current_exe().unwrap();
        let error = load(&exe, Program::Machined, Arch::X86_64).unwrap_err().to_string();
        assert!(error.contains("dynamically linked") && error.contains("crt-static"), "{error}");
        assert!(error.contains("/init"), "{error}");
        let error = load(&exe, Program::Pause, Arch::X86_64).unwrap_err().to_string();
        assert!(error.contains("pause is the only file"), "{error}");
        let error = load(&exe, Program::Pause, Arch::Arm64).unwrap_err().to_string();
        assert!(error.contains("not arm64"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("machined");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let error = load(&script, Program::Machined, Arch::X86_64).unwrap_err().to_string();
        assert!(error.contains("not an ELF executable"), "{error}");
    }
}
