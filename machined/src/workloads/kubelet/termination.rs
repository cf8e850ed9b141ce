//! Termination messages, as upstream: each run of a container gets an empty file of the
//! kubelet's mounted at its `terminationMessagePath` (`/dev/termination-log` by default),
//! where it may say why it ended; when it ends, the file (its first [`MESSAGE_LIMIT`] bytes)
//! becomes its terminated state's message. With `terminationMessagePolicy:
//! FallbackToLogsOnError`, a run that failed and wrote nothing there gets the tail of its log
//! instead: its last [`FALLBACK_LINES`] lines, at most [`FALLBACK_BYTES`] of them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

use crate::workloads::cri::v1;

use super::logs;

/// Where a container's message goes unless it says otherwise.
pub const DEFAULT_PATH: &str = "/dev/termination-log";

/// The most of a message file that is kept.
const MESSAGE_LIMIT: u64 = 4096;

/// How much of a failed run's log its message may be, when it falls back to the log.
const FALLBACK_LINES: usize = 80;
const FALLBACK_BYTES: usize = 2048;

/// The host file behind run `attempt` of `container`, under the pod's data directory.
pub fn message_file(data_dir: &Path, container: &str, attempt: u32) -> PathBuf {
    data_dir.join("termination").join(format!("{container}-{attempt}"))
}

/// Creates run `attempt`'s empty message file and returns its mount at the container's
/// `terminationMessagePath`. The file is writable by anyone: the container may run as any
/// user (as upstream, which makes it 0666 too).
pub fn mount(data_dir: &Path, container: &Container, attempt: u32) -> io::Result<v1::Mount> {
    let file = message_file(data_dir, &container.name, attempt);
    fs::create_dir_all(file.parent().expect("the file is in a directory"))?;
    OpenOptions::new().write(true).create(true).truncate(true).mode(0o666).open(&file)?;
    // The process umask took bits off the mode it was created with.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o666))?;
    let path = container.termination_message_path.as_deref().filter(|p| !p.is_empty());
    Ok(v1::Mount {
        container_path: path.unwrap_or(DEFAULT_PATH).into(),
        host_path: file.to_string_lossy().into_owned(),
        ..Default::default()
    })
}

/// Removes run `attempt`'s message file (with the run itself).
pub fn forget(data_dir: &Path, container: &str, attempt: u32) {
    let _ = fs::remove_file(message_file(data_dir, container, attempt));
}

/// The message of a run of `container` that ended with `exit_code`: what it wrote into its
/// message file `file`, else, when its policy says so and it failed, the tail of its log
/// `log`. None when there is nothing to say.
pub fn message(container: &Container, file: &Path, exit_code: i32, log: &Path) -> Option<String> {
    let mut written = Vec::new();
    if let Ok(file) = File::open(file) {
        let _ = file.take(MESSAGE_LIMIT).read_to_end(&mut written);
    }
    if !written.is_empty() {
        return Some(String::from_utf8_lossy(&written).into_owned());
    }
    let policy = container.termination_message_policy.as_deref();
    if policy != Some("FallbackToLogsOnError") || exit_code == 0 {
        return None;
    }
    let tail = logs::tail_text(log, FALLBACK_LINES, FALLBACK_BYTES).ok()?;
    Some(tail).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(yaml: &str) -> Container {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn each_run_gets_an_empty_file_any_user_may_write_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let web = container("{name: web, terminationMessagePath: /tmp/why}");
        let mount = mount(dir.path(), &web, 2).unwrap();
        assert_eq!(mount.container_path, "/tmp/why");
        let file = message_file(dir.path(), "web", 2);
        assert_eq!(mount.host_path, file.to_string_lossy());
        fs::write(&file, "old").unwrap();
        // A run made again starts with nothing to say.
        let mount = super::mount(dir.path(), &container("{name: web}"), 2).unwrap();
        assert_eq!(mount.container_path, DEFAULT_PATH);
        assert_eq!(fs::metadata(&file).unwrap().len(), 0);
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o666);
        forget(dir.path(), "web", 2);
        assert!(!file.exists());
    }

    #[test]
    fn the_message_is_the_file_else_the_log_of_a_failure_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("message");
        let log = dir.path().join("0.log");
        let lines: String = (0..100)
            .map(|n| format!("2026-12-07T10:00:00.000000000Z stdout F line {n}\n"))
            .collect();
        fs::write(&log, lines).unwrap();
        let plain = container("{name: web}");
        let fallback = container("{name: web, terminationMessagePolicy: FallbackToLogsOnError}");
        fs::write(&file, "").unwrap();
        assert_eq!(message(&plain, &file, 1, &log), None);
        assert_eq!(message(&fallback, &file, 0, &log), None);
        let tail = message(&fallback, &file, 1, &log).unwrap();
        assert!(tail.ends_with("line 99") && tail.starts_with("line 20\n"), "{tail:?}");
        fs::write(&file, "x".repeat(5000)).unwrap();
        assert_eq!(message(&fallback, &file, 1, &log).unwrap().len(), MESSAGE_LIMIT as usize);
    }
}
