//! machined for the image: built from the workspace for the board's architecture, release
//! and static (as `/init` it runs before any shared library is there), or taken prebuilt;
//! either way checked to be a static executable for that architecture.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cairn_api::arch::Arch;
use goblin::elf::header::{EM_AARCH64, EM_ARM, EM_X86_64};

/// The workspace package that is machined.
const PACKAGE: &str = "machined";

/// machined could not be built or is unfit for the image.
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
    /// cargo ran and failed.
    #[error("building machined for {target} failed ({status}); cargo's errors are above")]
    Build {
        /// The Rust target.
        target: &'static str,
        /// cargo's exit status.
        status: std::process::ExitStatus,
    },
    /// cargo succeeded without naming the executable.
    #[error("cargo built no machined executable for {0}")]
    NoExecutable(&'static str),
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

/// Builds machined from `workspace` for `arch` with cargo (`$CARGO`, else `cargo` on the
/// PATH); returns the executable's path. cargo's progress goes to stderr.
pub fn build(workspace: &Path, arch: Arch) -> Result<PathBuf, MachinedError> {
    let target = arch.rust_target();
    let cargo_error =
        |source| MachinedError::Cargo { workspace: workspace.display().to_string(), source };
    let workspace = workspace.canonicalize().map_err(cargo_error)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(&workspace)
        .args(["build", "--release", "--locked", "-p", PACKAGE, "--target", target])
        .args(["--message-format", "json-render-diagnostics"])
        // With --target, these reach only the target's crates, not build scripts.
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags(&workspace).join("\x1f"))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(cargo_error)?;
    let messages = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut executable = None;
    for line in messages.lines() {
        let line = line.map_err(cargo_error)?;
        if let Some(path) = machined_executable(&line) {
            executable = Some(path);
        }
    }
    let status = child.wait().map_err(cargo_error)?;
    if !status.success() {
        return Err(MachinedError::Build { target, status });
    }
    executable.ok_or(MachinedError::NoExecutable(target))
}

/// Static linking, and source paths that do not depend on where the workspace, cargo's
/// registry and the target directory are: panic messages carry them, and the image must be
/// the same from any checkout.
fn rustflags(workspace: &Path) -> Vec<String> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let mut flags = vec![
        "-Ctarget-feature=+crt-static".to_string(),
        format!("--remap-path-prefix={}=/cairn", workspace.display()),
    ];
    if let Some(cargo_home) = cargo_home {
        flags.push(format!("--remap-path-prefix={}=/cargo", cargo_home.display()));
    }
    // Generated code is included from the target directory; wherever it is, it reads as the
    // default one. (rustc applies the last matching prefix.)
    if let Some(target_dir) = std::env::var_os("CARGO_TARGET_DIR") {
        // As cargo takes it: relative to the workspace, links not resolved.
        let target_dir = workspace.join(target_dir);
        flags.push(format!("--remap-path-prefix={}=/cairn/target", target_dir.display()));
    }
    flags
}

/// The executable in one of cargo's JSON messages, if it is machined's.
fn machined_executable(message: &str) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(message).ok()?;
    if message["reason"] != "compiler-artifact" || message["target"]["name"] != PACKAGE {
        return None;
    }
    message["executable"].as_str().map(PathBuf::from)
}

/// Reads machined from `path` and checks that it is a static executable for `arch`.
pub fn load(path: &Path, arch: Arch) -> Result<Vec<u8>, MachinedError> {
    let display = path.display().to_string();
    let data = std::fs::read(path)
        .map_err(|source| MachinedError::Read { path: display.clone(), source })?;
    check(&data, arch).map_err(|reason| MachinedError::Unfit { path: display, reason })?;
    Ok(data)
}

fn check(data: &[u8], arch: Arch) -> Result<(), String> {
    let elf = goblin::elf::Elf::parse(data).map_err(|e| format!("not an ELF executable: {e}"))?;
    let machine = match arch {
        Arch::X86_64 => EM_X86_64,
        Arch::Arm64 => EM_AARCH64,
        Arch::Armv7 => EM_ARM,
    };
    if elf.header.e_machine != machine {
        return Err(format!(
            "built for ELF machine {}, not {arch} ({})",
            elf.header.e_machine,
            arch.rust_target()
        ));
    }
    if elf.interpreter.is_some() || !elf.libraries.is_empty() {
        return Err(format!(
            "dynamically linked (needs {}); machined runs as /init before any library is \
             there: build it with RUSTFLAGS=\"-C target-feature=+crt-static\"",
            elf.interpreter
                .into_iter()
                .chain(elf.libraries.iter().copied())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_executable_in_cargo_messages() {
        let artifact = r#"{"reason":"compiler-artifact","target":{"name":"machined","kind":["bin"]},"executable":"/t/release/machined"}"#;
        assert_eq!(machined_executable(artifact), Some(PathBuf::from("/t/release/machined")));
        let library = r#"{"reason":"compiler-artifact","target":{"name":"machined","kind":["lib"]},"executable":null}"#;
        assert_eq!(machined_executable(library), None);
        let other =
            r#"{"reason":"compiler-artifact","target":{"name":"ctl"},"executable":"/t/ctl"}"#;
        assert_eq!(machined_executable(other), None);
        assert_eq!(machined_executable(r#"{"reason":"build-finished","success":true}"#), None);
    }

    #[test]
    fn refuses_dynamic_foreign_and_non_elf_files() {
        // This test's own executable is dynamically linked x86_64 (on this project's hosts).
        let exe = std::env::current_exe().unwrap();
        let error = load(&exe, Arch::X86_64).unwrap_err().to_string();
        assert!(error.contains("dynamically linked") && error.contains("crt-static"), "{error}");
        let error = load(&exe, Arch::Arm64).unwrap_err().to_string();
        assert!(error.contains("not arm64"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("machined");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let error = load(&script, Arch::X86_64).unwrap_err().to_string();
        assert!(error.contains("not an ELF executable"), "{error}");
    }
}
