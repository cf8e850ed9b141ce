//! Container logs. containerd writes each run's output to a file in the pod's log
//! directory, in the CRI format (`2024-05-01T10:00:00.123456789Z stdout F text`, `P` for a
//! partial line). The kubelet rotates a file past [`MAX_LOG_BYTES`] (one rotated file kept,
//! then containerd reopens its log), so a chatty pod cannot fill EPHEMERAL; and it reads the
//! files back for `ctl logs POD`.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::chrono::DateTime;
use tokio::sync::mpsc;

use crate::cri::{v1, Cri};

/// The size at which a container's log file is rotated.
pub const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;
/// How often a followed log is read again.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// The rotated copy of a log file.
fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Rotates the log files of `runs` (in the pod's `log_dir`) that passed [`MAX_LOG_BYTES`].
pub async fn rotate<'a>(
    cri: &mut Cri,
    log_dir: &Path,
    runs: impl Iterator<Item = &'a v1::ContainerStatus>,
) {
    let running = i32::from(v1::ContainerState::ContainerRunning);
    for run in runs.filter(|r| r.state == running && !r.log_path.is_empty()) {
        let path = log_dir.join(&run.log_path);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > MAX_LOG_BYTES)
            && std::fs::rename(&path, rotated(&path)).is_ok()
        {
            let reopen = v1::ReopenContainerLogRequest { container_id: run.id.clone() };
            let _ = cri.runtime.reopen_container_log(reopen).await;
        }
    }
}

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// When containerd read it.
    pub unix_micros: u64,
    /// The line, `stderr: ` first when it came from standard error.
    pub message: String,
}

/// Joins CRI-format records into lines (partial records wait for their end).
#[derive(Default)]
struct Decoder {
    partial: String,
    pending: Vec<u8>,
}

impl Decoder {
    /// Decodes `bytes` (the next part of the file) into the complete lines it ends.
    fn feed(&mut self, bytes: &[u8]) -> Vec<LogLine> {
        self.pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let record: Vec<u8> = self.pending.drain(..=end).collect();
            let record = String::from_utf8_lossy(&record[..record.len() - 1]).into_owned();
            let mut fields = record.splitn(4, ' ');
            let (Some(time), Some(stream), Some(tag)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let text = fields.next().unwrap_or("");
            self.partial.push_str(text);
            if tag == "P" {
                continue;
            }
            let unix_micros = DateTime::parse_from_rfc3339(time)
                .map(|t| t.timestamp_micros().max(0) as u64)
                .unwrap_or(0);
            let text = std::mem::take(&mut self.partial);
            let message = if stream == "stderr" { format!("stderr: {text}") } else { text };
            lines.push(LogLine { unix_micros, message });
        }
        lines
    }
}

/// Sends the lines of the log file `path` (the last `tail`, or all), then with `follow`
/// the lines written after, across rotations, until the receiver goes away.
pub async fn send(
    path: PathBuf,
    tail: Option<usize>,
    follow: bool,
    tx: mpsc::Sender<LogLine>,
) -> std::io::Result<()> {
    let mut decoder = Decoder::default();
    let mut file = std::fs::File::open(&path)?;
    let mut inode = file.metadata()?.ino();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let lines = decoder.feed(&bytes);
    let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
    for line in lines.into_iter().skip(skip) {
        if tx.send(line).await.is_err() {
            return Ok(());
        }
    }
    if !follow {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = tx.closed() => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        // A rotation renames the file and containerd opens a new one: read on from there.
        let reopened = std::fs::metadata(&path).is_ok_and(|m| m.ino() != inode);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        if reopened {
            if let Ok(new) = std::fs::File::open(&path) {
                inode = new.metadata()?.ino();
                file = new;
                file.seek(SeekFrom::Start(0))?;
                file.read_to_end(&mut bytes)?;
            }
        }
        for line in decoder.feed(&bytes) {
            if tx.send(line).await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_records_join_and_streams_are_marked() {
        let mut decoder = Decoder::default();
        let lines = decoder.feed(
            b"2024-05-01T10:00:00.000001Z stdout P hel\n2024-05-01T10:00:00.5Z stdout F lo\n2024-05-01T10:00:01Z stderr F oops\n2024-05-01T10:00:02Z std",
        );
        assert_eq!(
            lines,
            [
                LogLine { unix_micros: 1_714_557_600_500_000, message: "hello".into() },
                LogLine { unix_micros: 1_714_557_601_000_000, message: "stderr: oops".into() },
            ]
        );
        let rest = decoder.feed(b"out F end\n");
        assert_eq!(rest[0].message, "end");
    }

    #[tokio::test]
    async fn following_reads_on_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            "2024-05-01T10:00:00Z stdout F one\n2024-05-01T10:00:01Z stdout F two\n",
        )
        .unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let reader = tokio::spawn(send(path.clone(), Some(1), true, tx));
        assert_eq!(rx.recv().await.unwrap().message, "two");
        std::fs::rename(&path, rotated(&path)).unwrap();
        std::fs::write(&path, "2024-05-01T10:00:02Z stdout F three\n").unwrap();
        assert_eq!(rx.recv().await.unwrap().message, "three");
        drop(rx);
        reader.await.unwrap().unwrap();
    }
}
