//! `cargo xtask test`: what CI runs, as timed steps — the host's packages (the cross gcc
//! among them), Debian's rustc 1.85 with the arm std for cross builds, formatting, lints, the
//! build with rustc 1.85, every test — then where the time went, the QEMU scenarios' times
//! included.

use std::path::PathBuf;

use cairn_api::board::Board;
use cairn_tests::steps::Steps;
use cairn_tests::timing::TIMINGS_VARIABLE;
use image_builder::toolchain::CROSS_RUST_VARIABLE;

use crate::host::{Host, HostError, Invocation};
use crate::packages;
use crate::rust185::Rust185;

/// Where the checks run and keep things.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The cargo to run.
    pub cargo: String,
    /// The workspace's root.
    pub workspace: PathBuf,
    /// Where Debian's rustc 1.85 and its build output go.
    pub cache: PathBuf,
    /// The file the QEMU scenarios append their times to.
    pub timings: PathBuf,
}

/// The checks after the set-up, each a step: its name and its command.
fn checks(setup: &Setup, rust: &Rust185) -> Vec<(&'static str, Invocation)> {
    let cargo = |args: &[&str]| Invocation::new(&setup.cargo, args).in_dir(&setup.workspace);
    let all = ["--workspace", "--all-targets", "--locked"];
    // rustup's cargo drives Debian's rustc (Debian's cargo-web needs libpcre3): the language
    // and std are what must fit 1.85. Its own target dir: the two compilers' outputs differ.
    let build_185 = rust
        .with_rustc(cargo(&["check"]))
        .env("CARGO_TARGET_DIR", setup.cache.join("target-1.85").display().to_string());
    vec![
        ("format", cargo(&["fmt", "--all", "--check"])),
        ("lints", cargo(&[&["clippy"][..], &all, &["--", "-D", "warnings"]].concat())),
        ("build with rustc 1.85", all.iter().fold(build_185, |c, a| c.arg(*a))),
        (
            "tests (the README's test command)",
            cargo(&["test", "--workspace", "--locked"])
                .env(TIMINGS_VARIABLE, setup.timings.display().to_string())
                // The ARM boards' images need machined cross-built by that rustc.
                .env(CROSS_RUST_VARIABLE, rust.root().display().to_string()),
        ),
    ]
}

/// Runs every step, stopping at the first that fails, then prints where the time went.
pub fn run(host: &mut impl Host, board: &Board, setup: &Setup) -> Result<(), HostError> {
    let mut steps = Steps::new();
    let result = run_steps(&mut steps, host, board, setup);
    print!("{}", steps.summary(result.is_err()));
    print!("{}", scenarios(&host.read(&setup.timings).unwrap_or_default()));
    result
}

fn run_steps(
    steps: &mut Steps,
    host: &mut impl Host,
    board: &Board,
    setup: &Setup,
) -> Result<(), HostError> {
    steps.start("host packages");
    let apt_updated = packages::ensure(host, &packages::tests(board))?;
    steps.start("Debian rustc 1.85 and the arm std");
    let rust = Rust185::in_cache(&setup.cache);
    rust.ensure(host, apt_updated)?;
    rust.ensure_cross(host)?;
    host.run(&rust.version())?;
    for (step, command) in checks(setup, &rust) {
        steps.start(step);
        println!("$ {command}");
        host.run(&command)?;
    }
    Ok(())
}

/// The QEMU scenarios' lines, under a heading, when there are any.
fn scenarios(lines: &str) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("\nQEMU scenarios:\n{lines}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    fn setup() -> Setup {
        Setup {
            cargo: "cargo".into(),
            workspace: "/w".into(),
            cache: "/c".into(),
            timings: "/tmp/timings".into(),
        }
    }

    #[test]
    fn the_checks_are_ci_s_in_order() {
        let setup = setup();
        let commands: Vec<(&str, String)> = checks(&setup, &Rust185::in_cache(&setup.cache))
            .into_iter()
            .map(|(step, command)| {
                assert_eq!(command.dir.as_deref(), Some(setup.workspace.as_path()));
                (step, command.to_string())
            })
            .collect();
        assert_eq!(
            commands,
            [
                ("format", "cargo fmt --all --check".to_string()),
                ("lints", "cargo clippy --workspace --all-targets --locked -- -D warnings".into()),
                (
                    "build with rustc 1.85",
                    "RUSTC=/c/rust-1.85/usr/bin/rustc LD_LIBRARY_PATH=/c/rust-1.85/usr/lib/x86_64-linux-gnu CARGO_TARGET_DIR=/c/target-1.85 cargo check --workspace --all-targets --locked".into()
                ),
                (
                    "tests (the README's test command)",
                    "CAIRN_TIMINGS=/tmp/timings CAIRN_CROSS_RUST=/c/rust-1.85 cargo test --workspace --locked".into()
                ),
            ]
        );
    }

    #[test]
    fn scenario_times_follow_the_table_only_when_there_are_some() {
        assert_eq!(scenarios(""), "");
        assert_eq!(
            scenarios("scenario generic-x86_64/pods: 93.2 s\n"),
            "\nQEMU scenarios:\nscenario generic-x86_64/pods: 93.2 s\n"
        );
    }

    #[test]
    fn a_warm_host_runs_the_checks_and_stops_at_the_first_failure() {
        let board = cairn_tests::board("generic-x86_64");
        let needs = packages::tests(&board);
        let mut host = FakeHost::warm(&needs);
        let setup = setup();
        let rust = Rust185::in_cache(&setup.cache);
        host.files.insert(rust.rustc(), String::new());
        for arch in crate::rust185::CROSS {
            let std = image_builder::toolchain::unpacked_std_dir(rust.root(), arch.rust_target());
            host.files.insert(std.join("libstd-f7c1952303da7ec4.rlib"), String::new());
        }
        run(&mut host, &board, &setup).unwrap();
        let ran: Vec<&str> = host
            .ran
            .iter()
            .map(|c| c.split_whitespace().find(|w| !w.contains('=')).unwrap())
            .collect();
        assert_eq!(
            ran,
            ["dpkg-query", "/c/rust-1.85/usr/bin/rustc", "cargo", "cargo", "cargo", "cargo"]
        );
        host.ran.clear();
        host.failing.insert("cargo".into());
        let error = run(&mut host, &board, &setup).unwrap_err().to_string();
        assert_eq!(error, "`cargo fmt --all --check` failed (exit status: 1)");
        assert_eq!(host.ran.len(), 3, "{:?}", host.ran);
    }
}
