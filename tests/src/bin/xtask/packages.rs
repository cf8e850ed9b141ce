//! The Debian packages the demo and the tests need, which of them the host lacks (as dpkg
//! sees it), the apt commands that install those, and the check that each left what it is
//! needed for.

use std::collections::BTreeSet;
use std::path::PathBuf;

use cairn_api::board::Board;
use image_builder::toolchain;

use crate::host::{Host, HostError, Invocation};
use crate::rust185::CROSS;
use crate::sources::{self, BACKPORTS};

/// Where apt takes a package from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// The host's own suites.
    Host,
    /// [`BACKPORTS`]: QEMU and its tools, which must match the host's qemu-utils.
    Backports,
}

/// What a package leaves on the host, checked once it is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provides {
    /// A program on `PATH`.
    Program(String),
    /// A file.
    File(PathBuf),
}

/// A package xtask needs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The Debian package.
    pub package: String,
    /// Where apt takes it from.
    pub suite: Suite,
    /// What it leaves that xtask checks.
    pub provides: Option<Provides>,
    /// Why it is needed.
    pub why: &'static str,
}

impl Need {
    fn new(package: &str, suite: Suite, provides: Option<Provides>, why: &'static str) -> Need {
        Need { package: package.to_string(), suite, provides, why }
    }
}

/// What the demo needs to build `board`'s image and boot it under QEMU.
pub fn demo(board: &Board) -> Vec<Need> {
    let program = |name: &str| Some(Provides::Program(name.to_string()));
    let mut needs = vec![
        Need::new("gcc", Suite::Host, program("cc"), "Rust links with it; ring and zstd compile C"),
        Need::new("libc6-dev", Suite::Host, None, "the C library to link with"),
        Need::new(
            "debian-archive-keyring",
            Suite::Host,
            Some(Provides::File("/usr/share/keyrings/debian-archive-keyring.gpg".into())),
            "image-builder checks Debian's packages with it",
        ),
        Need::new("qemu-utils", Suite::Backports, program("qemu-img"), "makes the node's disk"),
    ];
    if let Some(qemu) = &board.qemu {
        needs.push(Need::new(
            &qemu.package,
            Suite::Backports,
            program(&qemu.binary),
            "boots the image",
        ));
        let firmware = Some(Provides::File(qemu.firmware.code.clone()));
        needs.push(Need::new(
            &qemu.firmware.package,
            Suite::Backports,
            firmware,
            "the VM's firmware",
        ));
    }
    needs
}

/// What cross builds of machined need besides Debian's rustc: for each of [`CROSS`], the
/// cross gcc (linker, and compiler of ring's and zstd's C) and the C library to link
/// statically (a Recommends of the gcc, which apt here does not install).
pub fn cross() -> Vec<Need> {
    CROSS
        .into_iter()
        .flat_map(|arch| {
            let gnu = toolchain::gnu_triple(arch);
            let libc = format!("libc6-dev-{}-cross", arch.debian());
            [
                Need::new(
                    &format!("gcc-{gnu}"),
                    Suite::Host,
                    Some(Provides::Program(format!("{gnu}-gcc"))),
                    "links cross-built machined and compiles ring and zstd's C",
                ),
                Need::new(&libc, Suite::Host, None, "the C library cross builds link statically"),
            ]
        })
        .collect()
}

/// What the tests need: the demo's, the cross builds', and the tools of image-builder's tests
/// (mkimage; mkfs.ext4 for the flash test, whose losetup, mount and umount every Debian has),
/// of the pull scenario and of the U-Boot test.
pub fn tests(board: &Board) -> Vec<Need> {
    let program = |name: &str| Some(Provides::Program(name.to_string()));
    let mut needs = demo(board);
    needs.extend(cross());
    needs.extend([
        Need::new("gpg", Suite::Host, program("gpg"), "image-builder's tests sign a mirror"),
        Need::new("gpg-agent", Suite::Host, None, "gpg signs through it"),
        Need::new(
            "docker-registry",
            Suite::Host,
            program("docker-registry"),
            "the registry pods pull from",
        ),
        Need::new("skopeo", Suite::Host, program("skopeo"), "puts an image in that registry"),
        Need::new(
            "qemu-system-arm",
            Suite::Backports,
            program("qemu-system-aarch64"),
            "the U-Boot test boots QEMU's arm64 and armv7 virt boards",
        ),
        Need::new(
            "u-boot-qemu",
            Suite::Host,
            Some(Provides::File("/usr/lib/u-boot/qemu_arm64/u-boot.bin".into())),
            "the U-Boot test runs the boot script under Debian's U-Boot for QEMU",
        ),
        Need::new(
            "u-boot-tools",
            Suite::Host,
            program("mkimage"),
            "image-builder's test compares the boot script's image with mkimage's",
        ),
        Need::new(
            "e2fsprogs",
            Suite::Host,
            program("mkfs.ext4"),
            "the flash test refuses a loop device with a filesystem mounted",
        ),
    ]);
    needs
}

/// Asks dpkg which of `needs` are installed.
pub fn dpkg_query(needs: &[Need]) -> Invocation {
    let query = Invocation::new(
        "dpkg-query",
        &["--show", "--showformat=${Package} ${db:Status-Status}\\n"],
    );
    needs.iter().fold(query, |query, need| query.arg(&need.package))
}

/// The packages [`dpkg_query`]'s answer says are installed (not just known, or removed with
/// their configuration left).
pub fn installed(answer: &str) -> BTreeSet<&str> {
    answer
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, status)| status.trim() == "installed")
        .map(|(package, _)| package)
        .collect()
}

/// Those of `needs` that are not installed.
pub fn missing<'a>(needs: &'a [Need], installed: &BTreeSet<&str>) -> Vec<&'a Need> {
    needs.iter().filter(|need| !installed.contains(need.package.as_str())).collect()
}

/// A command to run as root, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// Why, in words.
    pub why: String,
    /// The command (through sudo unless xtask is root).
    pub invocation: Invocation,
}

/// What installs `missing`: [`BACKPORTS`] added to apt's sources from `mirror` when a
/// package needs it and `lists` lack it, apt's lists updated, then the packages; as root.
pub fn install_actions(
    missing: &[&Need],
    lists: &[(PathBuf, String)],
    mirror: Option<&str>,
    root: bool,
) -> Result<Vec<Action>, HostError> {
    let mut actions = Vec::new();
    let names = |suite| -> Vec<&str> {
        missing.iter().filter(|n| n.suite == suite).map(|n| n.package.as_str()).collect()
    };
    let (host, backports) = (names(Suite::Host), names(Suite::Backports));
    if !backports.is_empty() && !sources::has_suite(lists, BACKPORTS) {
        let mirror = mirror.ok_or_else(|| HostError::NoMirror {
            packages: backports.join(" "),
            suite: BACKPORTS,
        })?;
        actions.push(Action {
            why: format!(
                "add {BACKPORTS} to apt's sources (QEMU must match the host's qemu-utils)"
            ),
            invocation: Invocation::new("tee", &[sources::ADDED])
                .with_stdin(sources::backports_entry(mirror)),
        });
    }
    if !missing.is_empty() {
        actions.push(Action { why: "update apt's package lists".into(), invocation: apt_update() });
    }
    let install = |packages: &[&str], from: &[&str]| {
        let command =
            Invocation::new("apt-get", &["install", "-y", "-qq", "--no-install-recommends"])
                .env("DEBIAN_FRONTEND", "noninteractive");
        let command = from.iter().chain(packages).fold(command, |c, a| c.arg(*a));
        Action { why: format!("install {}", packages.join(" ")), invocation: command }
    };
    if !host.is_empty() {
        actions.push(install(&host, &[]));
    }
    if !backports.is_empty() {
        actions.push(install(&backports, &["-t", BACKPORTS]));
    }
    Ok(actions
        .into_iter()
        .map(|a| Action { invocation: a.invocation.privileged(root), ..a })
        .collect())
}

/// `apt-get update`, quietly.
pub fn apt_update() -> Invocation {
    Invocation::new("apt-get", &["update", "-qq"])
}

/// Installs what of `needs` the host lacks (nothing runs when dpkg has them all, so a warm
/// run does not pay for `apt-get update`), then checks that each need left what it provides.
/// Returns whether apt's lists were updated.
pub fn ensure(host: &mut impl Host, needs: &[Need]) -> Result<bool, HostError> {
    let has_apt = host.has_program("apt-get") && host.has_program("dpkg-query");
    let updated = has_apt && install_missing(host, needs)?;
    let hint = if has_apt {
        ""
    } else {
        " (xtask installs with apt-get and dpkg, which this host lacks: package apt)"
    };
    match needs.iter().find_map(|need| Some((need, need.provides.as_ref()?.lacking(host)?))) {
        Some((need, what)) => Err(HostError::Missing {
            what,
            why: need.why.to_string(),
            package: need.package.clone(),
            hint: hint.to_string(),
        }),
        None => Ok(updated),
    }
}

/// Installs those of `needs` dpkg does not have, as root; returns whether there were any.
fn install_missing(host: &mut impl Host, needs: &[Need]) -> Result<bool, HostError> {
    let answer = host.stdout(&dpkg_query(needs))?;
    let missing = missing(needs, &installed(&answer));
    if missing.is_empty() {
        println!("all {} packages are installed; apt is not needed", needs.len());
        return Ok(false);
    }
    let root = host.is_root();
    if !root && !host.has_program("sudo") {
        let packages: Vec<&str> = missing.iter().map(|n| n.package.as_str()).collect();
        return Err(HostError::NoRoot { packages: packages.join(" ") });
    }
    for need in &missing {
        println!("missing: {} ({})", need.package, need.why);
    }
    let lists = sources::read_all(host);
    let mirror = sources::mirror(&lists);
    let asking = if root { "" } else { " (as root, through sudo)" };
    for action in install_actions(&missing, &lists, mirror.as_deref(), root)? {
        println!("{}{asking}:\n  $ {}", action.why, action.invocation);
        host.run(&action.invocation)?;
    }
    Ok(true)
}

impl Provides {
    /// Its name when `host` lacks it.
    fn lacking(&self, host: &impl Host) -> Option<String> {
        match self {
            Provides::Program(program) => (!host.has_program(program)).then(|| program.clone()),
            Provides::File(path) => (!host.has_file(path)).then(|| path.display().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    fn board() -> Board {
        cairn_tests::board("generic-x86_64")
    }

    fn packages(needs: &[&Need]) -> Vec<String> {
        needs.iter().map(|n| n.package.clone()).collect()
    }

    #[test]
    fn the_demo_needs_the_board_s_qemu_and_firmware_from_backports() {
        let needs = demo(&board());
        let backports: Vec<&str> = needs
            .iter()
            .filter(|n| n.suite == Suite::Backports)
            .map(|n| n.package.as_str())
            .collect();
        assert_eq!(backports, ["qemu-utils", "qemu-system-x86", "ovmf"]);
        let qemu = needs.iter().find(|n| n.package == "qemu-system-x86").unwrap();
        assert_eq!(qemu.provides, Some(Provides::Program("qemu-system-x86_64".into())));
        let ovmf = needs.iter().find(|n| n.package == "ovmf").unwrap();
        assert_eq!(ovmf.provides, Some(Provides::File("/usr/share/OVMF/OVMF_CODE_4M.fd".into())));
        let tests = tests(&board());
        assert!(tests.starts_with(&needs));
        assert!(tests.iter().any(|n| n.package == "docker-registry"));
        let arm = tests.iter().find(|n| n.package == "qemu-system-arm").unwrap();
        assert_eq!(arm.suite, Suite::Backports);
        assert!(tests.iter().any(|n| n.package == "u-boot-qemu" && n.suite == Suite::Host));
    }

    #[test]
    fn dpkg_s_answer_counts_only_installed_packages() {
        let answer =
            "gcc installed\novmf config-files\nskopeo not-installed\nqemu-utils installed\n";
        assert_eq!(installed(answer), BTreeSet::from(["gcc", "qemu-utils"]));
        let needs = demo(&board());
        assert_eq!(
            packages(&missing(&needs, &installed(answer))),
            ["libc6-dev", "debian-archive-keyring", "qemu-system-x86", "ovmf"]
        );
        assert_eq!(
            dpkg_query(&needs[..2]).to_string(),
            "dpkg-query --show '--showformat=${Package} ${db:Status-Status}\\n' gcc libc6-dev"
        );
    }

    #[test]
    fn missing_packages_install_with_backports_added_from_the_host_s_mirror() {
        let needs = demo(&board());
        let missing: Vec<&Need> = needs.iter().filter(|n| n.package != "gcc").collect();
        let lists = [(PathBuf::from("/etc/apt/sources.list"), String::new())];
        let actions = install_actions(&missing, &lists, Some("http://m/debian"), true).unwrap();
        let commands: Vec<String> = actions.iter().map(|a| a.invocation.to_string()).collect();
        assert_eq!(
            commands,
            [
                "tee /etc/apt/sources.list.d/cairn-backports.sources",
                "apt-get update -qq",
                "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libc6-dev debian-archive-keyring",
                "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-utils qemu-system-x86 ovmf",
            ]
        );
        assert_eq!(
            actions[0].invocation.stdin.as_deref(),
            Some(sources::backports_entry("http://m/debian").as_str())
        );
    }

    #[test]
    fn without_root_each_action_goes_through_sudo_and_known_backports_are_not_added_again() {
        let needs = demo(&board());
        let missing: Vec<&Need> = needs.iter().filter(|n| n.package == "ovmf").collect();
        let lists = [(PathBuf::from(sources::ADDED), sources::backports_entry("http://m/debian"))];
        let actions = install_actions(&missing, &lists, None, false).unwrap();
        let commands: Vec<String> = actions.iter().map(|a| a.invocation.to_string()).collect();
        assert_eq!(
            commands,
            [
                "sudo apt-get update -qq",
                "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports ovmf",
            ]
        );
    }

    #[test]
    fn backports_with_no_mirror_to_add_them_from_is_an_error_naming_the_packages() {
        let needs = demo(&board());
        let missing: Vec<&Need> = needs.iter().filter(|n| n.package == "ovmf").collect();
        let error = install_actions(&missing, &[], None, true).unwrap_err().to_string();
        assert_eq!(
            error,
            "ovmf come from bookworm-backports, and apt's sources name no Debian mirror to add it from: add bookworm-backports to apt's sources, or install them from it yourself"
        );
    }

    #[test]
    fn a_warm_host_runs_nothing_but_dpkg_query() {
        let needs = tests(&board());
        let mut host = FakeHost::warm(&needs);
        assert!(!ensure(&mut host, &needs).unwrap());
        assert_eq!(host.ran.len(), 1);
        assert!(host.ran[0].starts_with("dpkg-query --show "), "{:?}", host.ran);
    }

    #[test]
    fn a_cold_host_installs_through_sudo_when_not_root() {
        let needs = demo(&board());
        let mut host = FakeHost::with_needs(
            &needs,
            &["gcc", "libc6-dev", "debian-archive-keyring", "qemu-utils"],
        );
        host.files.insert(sources::ADDED.into(), sources::backports_entry("http://m/debian"));
        assert!(ensure(&mut host, &needs).unwrap());
        assert_eq!(
            host.ran[1..],
            [
                "sudo apt-get update -qq",
                "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 ovmf",
            ]
        );
    }

    #[test]
    fn missing_packages_without_root_or_sudo_are_an_error_naming_them() {
        let needs = demo(&board());
        let mut host = FakeHost::with_needs(&needs, &[]);
        host.programs.remove("sudo");
        let error = ensure(&mut host, &needs).unwrap_err().to_string();
        assert_eq!(
            error,
            "installing gcc libc6-dev debian-archive-keyring qemu-utils qemu-system-x86 ovmf needs root, and this host has no sudo: run this as root, or install the package sudo"
        );
    }

    #[test]
    fn a_missing_tool_is_an_error_naming_its_package() {
        let needs = demo(&board());
        let mut host = FakeHost::warm(&needs);
        host.programs.remove("qemu-system-x86_64");
        assert_eq!(
            ensure(&mut host, &needs).unwrap_err().to_string(),
            "qemu-system-x86_64 not found (boots the image): install the Debian package qemu-system-x86"
        );
        host.programs.remove("apt-get");
        host.programs.remove("cc");
        assert_eq!(
            ensure(&mut host, &needs).unwrap_err().to_string(),
            "cc not found (Rust links with it; ring and zstd compile C): install the Debian package gcc (xtask installs with apt-get and dpkg, which this host lacks: package apt)"
        );
    }

    #[test]
    fn a_failed_install_is_an_error_naming_the_command() {
        let needs = demo(&board());
        let mut host = FakeHost::with_needs(
            &needs,
            &["gcc", "libc6-dev", "debian-archive-keyring", "qemu-utils", "ovmf"],
        );
        host.root = true;
        host.files.insert(sources::ADDED.into(), sources::backports_entry("http://m/debian"));
        host.failing.insert("apt-get".into());
        let error = ensure(&mut host, &needs).unwrap_err().to_string();
        assert_eq!(error, "`apt-get update -qq` failed (exit status: 1)");
    }
}
