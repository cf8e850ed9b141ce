//! The host as xtask sees it: its programs and files, whether we are root, and running
//! commands — the only side effects; the other modules plan what to run.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What went wrong on the host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A program or file is missing, and the package that has it.
    #[error("{what} not found ({why}): install the Debian package {package}{hint}")]
    Missing {
        /// The program or file.
        what: String,
        /// Why it is needed.
        why: String,
        /// The Debian package that has it.
        package: String,
        /// What else to know (e.g. that xtask could not install it).
        hint: String,
    },
    /// Packages are missing and nothing can install them as root.
    #[error(
        "installing {packages} needs root, and this host has no sudo: run this as root, or install the package sudo"
    )]
    NoRoot {
        /// The packages, space-separated.
        packages: String,
    },
    /// Packages must come from bookworm-backports, which apt does not know, and apt's
    /// sources name no Debian mirror to add it from.
    #[error(
        "{packages} come from {suite}, and apt's sources name no Debian mirror to add it from: add {suite} to apt's sources, or install them from it yourself"
    )]
    NoMirror {
        /// The packages, space-separated.
        packages: String,
        /// The suite.
        suite: &'static str,
    },
    /// A command could not be started.
    #[error("could not start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("`{command}` failed ({status})")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// Preparing an isolated apt state failed.
    #[error(transparent)]
    Apt(#[from] image_builder::apt::AptError),
    /// Something else failed on the way: the place and why.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// A command to run: a program, its arguments, environment, directory and input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The program (looked up on `PATH`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables set for it.
    pub env: Vec<(String, String)>,
    /// Where it runs (none: where xtask runs).
    pub dir: Option<PathBuf>,
    /// Written to its standard input.
    pub stdin: Option<String>,
}

impl Invocation {
    /// `program args...`.
    pub fn new(program: &str, args: &[&str]) -> Invocation {
        Invocation {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            dir: None,
            stdin: None,
        }
    }

    /// With one more argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Invocation {
        self.args.push(arg.into());
        self
    }

    /// With one more variable.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Invocation {
        self.env.push((name.to_string(), value.into()));
        self
    }

    /// Running in `dir`.
    pub fn in_dir(mut self, dir: &Path) -> Invocation {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// With `text` on its standard input.
    pub fn with_stdin(mut self, text: String) -> Invocation {
        self.stdin = Some(text);
        self
    }

    /// As root: itself when xtask is root, else through sudo (as `sudo env NAME=VALUE
    /// program...`, since sudo resets the environment).
    pub fn privileged(self, root: bool) -> Invocation {
        if root {
            return self;
        }
        let mut args: Vec<String> = Vec::new();
        if !self.env.is_empty() {
            args.push("env".into());
            args.extend(self.env.iter().map(|(name, value)| format!("{name}={value}")));
        }
        args.push(self.program);
        args.extend(self.args);
        Invocation { program: "sudo".into(), args, env: Vec::new(), ..self }
    }
}

/// As a shell would show it: `NAME=VALUE program 'an arg'`.
impl fmt::Display for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted = |word: &str| {
            if !word.is_empty()
                && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:+~%,".contains(&b))
            {
                word.to_string()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        };
        let words = self
            .env
            .iter()
            .map(|(name, value)| format!("{name}={}", quoted(value)))
            .chain(std::iter::once(quoted(&self.program)))
            .chain(self.args.iter().map(|a| quoted(a)));
        write!(f, "{}", words.collect::<Vec<_>>().join(" "))
    }
}

/// The host: what xtask checks and runs.
pub trait Host {
    /// Whether `program` is an executable on `PATH`.
    fn has_program(&self, program: &str) -> bool;
    /// Whether `path` exists.
    fn has_file(&self, path: &Path) -> bool;
    /// Whether xtask runs as root.
    fn is_root(&self) -> bool;
    /// The text of `path`, if it can be read.
    fn read(&self, path: &Path) -> Option<String>;
    /// The names of the entries of `dir` (none if it cannot be read).
    fn list(&self, dir: &Path) -> Vec<String>;
    /// Creates `dir` and its parents.
    fn create_dir(&mut self, dir: &Path) -> Result<(), HostError>;
    /// Runs `invocation` on xtask's terminal; an error unless it exits 0.
    fn run(&mut self, invocation: &Invocation) -> Result<(), HostError>;
    /// Runs `invocation` and returns its standard output, whatever its exit status.
    fn stdout(&mut self, invocation: &Invocation) -> Result<String, HostError>;
    /// Replaces xtask with `invocation`; returns only if that failed.
    fn exec(&mut self, invocation: &Invocation) -> HostError;
}

/// The machine xtask runs on.
pub struct System;

impl System {
    fn command(invocation: &Invocation) -> Command {
        let mut command = Command::new(&invocation.program);
        command.args(&invocation.args).envs(invocation.env.iter().map(|(n, v)| (n, v)));
        if let Some(dir) = &invocation.dir {
            command.current_dir(dir);
        }
        command.stdin(if invocation.stdin.is_some() { Stdio::piped() } else { Stdio::inherit() });
        command
    }

    /// Starts `command`, feeds it its input and waits for it.
    fn complete(
        invocation: &Invocation,
        mut command: Command,
    ) -> Result<std::process::Output, HostError> {
        let spawn = |source| HostError::Spawn { command: invocation.to_string(), source };
        let mut child = command.spawn().map_err(spawn)?;
        if let (Some(text), Some(mut stdin)) = (&invocation.stdin, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).map_err(|source| HostError::Io {
                what: format!("writing to `{invocation}`"),
                source,
            })?;
        }
        child.wait_with_output().map_err(spawn)
    }
}

impl Host for System {
    fn has_program(&self, program: &str) -> bool {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    }

    fn has_file(&self, path: &Path) -> bool {
        path.exists()
    }

    fn is_root(&self) -> bool {
        // The effective uid: the second field of the `Uid:` line.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .is_some_and(|euid| euid == "0")
    }

    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    fn list(&self, dir: &Path) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect()
    }

    fn create_dir(&mut self, dir: &Path) -> Result<(), HostError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| HostError::Io { what: format!("creating {}", dir.display()), source })
    }

    fn run(&mut self, invocation: &Invocation) -> Result<(), HostError> {
        let output = System::complete(invocation, System::command(invocation))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(HostError::Failed { command: invocation.to_string(), status: output.status })
        }
    }

    fn stdout(&mut self, invocation: &Invocation) -> Result<String, HostError> {
        let mut command = System::command(invocation);
        command.stdout(Stdio::piped()).stderr(Stdio::null());
        let output = System::complete(invocation, command)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn exec(&mut self, invocation: &Invocation) -> HostError {
        use std::os::unix::process::CommandExt as _;
        let source = System::command(invocation).exec();
        HostError::Spawn { command: invocation.to_string(), source }
    }
}

#[cfg(test)]
pub mod fake {
    //! A host made of sets: programs, files, root or not; it records what would run.

    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::packages::{Need, Provides};

    /// A pretend host.
    #[derive(Debug, Default)]
    pub struct FakeHost {
        pub programs: BTreeSet<String>,
        pub files: BTreeMap<PathBuf, String>,
        pub root: bool,
        /// What `stdout` answers, by program.
        pub answers: BTreeMap<String, String>,
        /// Programs that fail when run.
        pub failing: BTreeSet<String>,
        /// Every command run, as a shell shows it.
        pub ran: Vec<String>,
    }

    impl FakeHost {
        pub fn with_programs(programs: &[&str]) -> FakeHost {
            FakeHost {
                programs: programs.iter().map(|p| p.to_string()).collect(),
                ..FakeHost::default()
            }
        }

        /// A host with apt, dpkg and sudo, and what `needs` provide; dpkg knows `installed`.
        pub fn with_needs(needs: &[Need], installed: &[&str]) -> FakeHost {
            let mut host = FakeHost::with_programs(&["apt-get", "dpkg-query", "sudo"]);
            for need in needs {
                match &need.provides {
                    Some(Provides::Program(p)) => drop(host.programs.insert(p.clone())),
                    Some(Provides::File(f)) => drop(host.files.insert(f.clone(), String::new())),
                    None => {}
                }
            }
            let answer: String = installed.iter().map(|p| format!("{p} installed\n")).collect();
            host.answers.insert("dpkg-query".into(), answer);
            host
        }

        /// A host that has every one of `needs`.
        pub fn warm(needs: &[Need]) -> FakeHost {
            let all: Vec<&str> = needs.iter().map(|n| n.package.as_str()).collect();
            FakeHost::with_needs(needs, &all)
        }
    }

    impl Host for FakeHost {
        fn has_program(&self, program: &str) -> bool {
            self.programs.contains(program)
        }
        fn has_file(&self, path: &Path) -> bool {
            self.files.contains_key(path)
        }
        fn is_root(&self) -> bool {
            self.root
        }
        fn read(&self, path: &Path) -> Option<String> {
            self.files.get(path).cloned()
        }
        fn list(&self, dir: &Path) -> Vec<String> {
            let names = self.files.keys().filter(|p| p.parent() == Some(dir));
            names.filter_map(|p| Some(p.file_name()?.to_str()?.to_string())).collect()
        }
        fn create_dir(&mut self, _: &Path) -> Result<(), HostError> {
            Ok(())
        }
        fn run(&mut self, invocation: &Invocation) -> Result<(), HostError> {
            self.ran.push(invocation.to_string());
            if self.failing.contains(&invocation.program) {
                use std::os::unix::process::ExitStatusExt as _;
                let status = std::process::ExitStatus::from_raw(1 << 8);
                return Err(HostError::Failed { command: invocation.to_string(), status });
            }
            Ok(())
        }
        fn stdout(&mut self, invocation: &Invocation) -> Result<String, HostError> {
            self.ran.push(invocation.to_string());
            Ok(self.answers.get(&invocation.program).cloned().unwrap_or_default())
        }
        fn exec(&mut self, invocation: &Invocation) -> HostError {
            self.ran.push(format!("exec {invocation}"));
            HostError::Spawn {
                command: invocation.to_string(),
                source: std::io::ErrorKind::Other.into(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_shows_as_a_shell_line_quoting_what_needs_it() {
        let command = Invocation::new("apt-get", &["download", "libllvm19=1:19.1.7-3~deb12u1"])
            .arg("two words")
            .env("DEBIAN_FRONTEND", "noninteractive");
        assert_eq!(
            command.to_string(),
            "DEBIAN_FRONTEND=noninteractive apt-get download libllvm19=1:19.1.7-3~deb12u1 'two words'"
        );
    }

    #[test]
    fn privileged_is_the_command_itself_for_root_and_sudo_env_otherwise() {
        let command = Invocation::new("apt-get", &["install", "ovmf"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        assert_eq!(command.clone().privileged(true), command);
        assert_eq!(
            command.privileged(false).to_string(),
            "sudo env DEBIAN_FRONTEND=noninteractive apt-get install ovmf"
        );
        assert_eq!(
            Invocation::new("apt-get", &["update"]).privileged(false).to_string(),
            "sudo apt-get update"
        );
    }

    #[test]
    fn the_system_finds_programs_on_path_and_runs_them() {
        let mut host = System;
        assert!(host.has_program("sh"));
        assert!(!host.has_program("no-such-program-anywhere"));
        let echo = Invocation::new("sh", &["-c", "cat; echo \" $X\""])
            .env("X", "there")
            .with_stdin("hello".into());
        assert_eq!(host.stdout(&echo).unwrap(), "hello there\n");
        let error = host.run(&Invocation::new("sh", &["-c", "exit 3"])).unwrap_err();
        assert_eq!(error.to_string(), "`sh -c 'exit 3'` failed (exit status: 3)");
        let error = host.run(&Invocation::new("no-such-program-anywhere", &[])).unwrap_err();
        assert!(
            error.to_string().starts_with("could not start `no-such-program-anywhere`: "),
            "{error}"
        );
    }
}
