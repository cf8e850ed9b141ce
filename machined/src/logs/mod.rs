//! Logs: one in-memory ring per source (machined itself, each service), followed by
//! `ctl logs -f`, and appended to `/var/log/<id>.log` now and then ([`LogBook::flush_to`]);
//! machined's lines on the consoles and in the kernel's log; and the node's events.

pub mod console;
pub mod events;
pub mod kmsg;
pub mod ring;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::{DefaultFields, Format, Full};
use tracing_subscriber::fmt::{self, MakeWriter};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

use crate::logs::console::ConsoleOut;
use crate::logs::kmsg::Kmsg;
use crate::logs::ring::Ring;

/// A service's log file on EPHEMERAL is rotated past this size (one old generation kept).
pub const LOG_FILE_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Lines kept per source.
const LINES_PER_SOURCE: usize = 5000;

/// The log source of machined itself.
pub const MACHINED: &str = "machined";

/// One log line.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Wall-clock time.
    pub unix_micros: u64,
    /// The line, without its newline.
    pub message: String,
}

/// All log rings of the node.
#[derive(Debug, Default)]
pub struct LogBook {
    rings: Mutex<BTreeMap<String, Arc<Ring<LogLine>>>>,
    flushed: Mutex<HashMap<String, u64>>,
}

impl LogBook {
    /// The ring of `id`, created on first use.
    pub fn ring(&self, id: &str) -> Arc<Ring<LogLine>> {
        let mut rings = self.rings.lock().expect("log book lock");
        rings.entry(id.to_string()).or_insert_with(|| Arc::new(Ring::new(LINES_PER_SOURCE))).clone()
    }

    /// The ring of `id`, if anything ever logged there.
    pub fn existing(&self, id: &str) -> Option<Arc<Ring<LogLine>>> {
        self.rings.lock().expect("log book lock").get(id).cloned()
    }

    /// Appends a line to `id`'s ring.
    pub fn push(&self, id: &str, message: impl Into<String>) {
        let unix_micros =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        self.ring(id).push(LogLine { unix_micros, message: message.into() });
    }

    /// [`LogBook::flush_to`] with files of at most [`LOG_FILE_MAX_BYTES`]; a failure is
    /// logged, not returned: the rings keep the lines for the next try.
    pub fn flush_to_disk(&self, dir: &Path) {
        if let Err(e) = self.flush_to(dir, LOG_FILE_MAX_BYTES) {
            tracing::warn!("flushing logs to {}: {e}", dir.display());
        }
    }

    /// Appends the lines not yet written to `dir/<id>.log`, creating `dir` if needed. A file
    /// that would grow past `max_file_bytes` is first moved to `<id>.log.1` (replacing the one
    /// before), so each log takes at most twice that on EPHEMERAL however chatty it is. Then
    /// syncs `dir`'s file system once: one journal commit for all the files (a sync per file
    /// cost a commit each, ~75 KiB of an SD card's writes apiece).
    pub fn flush_to(&self, dir: &Path, max_file_bytes: u64) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let rings: Vec<_> = self.rings.lock().expect("log book lock").clone().into_iter().collect();
        let mut flushed = self.flushed.lock().expect("log flush lock");
        let mut wrote = false;
        for (id, ring) in rings {
            let last = flushed.get(&id).copied().unwrap_or(0);
            let fresh = ring.since(last);
            let Some(newest) = fresh.last().map(|r| r.seq) else {
                continue;
            };
            let mut text = String::new();
            for record in &fresh {
                text.push_str(&format_line(&record.item));
                text.push('\n');
            }
            let path = dir.join(format!("{id}.log"));
            let size = std::fs::symlink_metadata(&path).map_or(0, |m| m.len());
            if size > 0 && size + text.len() as u64 > max_file_bytes {
                std::fs::rename(&path, dir.join(format!("{id}.log.1")))?;
            }
            // O_NOFOLLOW: /var is writable by pods (hostPath); a planted link must not redirect.
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&path)?;
            file.write_all(text.as_bytes())?;
            flushed.insert(id, newest);
            wrote = true;
        }
        if wrote {
            nix::unistd::syncfs(File::open(dir)?)?;
        }
        Ok(())
    }

    /// Sends machined's own `tracing` output to its ring, to `console` and, on a node, to the
    /// kernel log.
    pub fn install_tracing(self: &Arc<Self>, console: ConsoleOut, kernel_log: Option<Kmsg>) {
        let filter = tracing_subscriber::EnvFilter::try_from_env("MACHINED_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(plain_layer(RingSink(self.ring(MACHINED))))
            .with(kernel_log.map(plain_layer))
            .with(fmt::layer().with_writer(SinkWriters(console)).with_target(false))
            .try_init();
    }
}

/// `2026-11-22T10:00:00.123456Z message`, as in files and `ctl logs`.
pub fn format_line(line: &LogLine) -> String {
    format!("{} {}", cairn_api::timestamp::rfc3339_micros(line.unix_micros), line.message)
}

/// Lines without time or target: rings and the kernel stamp their own time.
fn plain_layer<Sub, S>(sink: S) -> fmt::Layer<Sub, DefaultFields, Format<Full, ()>, SinkWriters<S>>
where
    Sub: tracing::Subscriber + for<'a> LookupSpan<'a>,
    S: EventSink,
{
    fmt::layer().with_ansi(false).without_time().with_target(false).with_writer(SinkWriters(sink))
}

/// Where a formatted `tracing` event goes.
pub trait EventSink: Clone + Send + Sync + 'static {
    /// Takes one event's text (one or more lines).
    fn deliver(&self, text: &str);
}

/// Gives `tracing` a writer per event that hands the event to a sink when dropped.
pub struct SinkWriters<S>(pub S);

/// Collects one event's bytes.
pub struct EventWriter<S: EventSink> {
    sink: S,
    buffer: Vec<u8>,
}

impl<'a, S: EventSink> MakeWriter<'a> for SinkWriters<S> {
    type Writer = EventWriter<S>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter { sink: self.0.clone(), buffer: Vec::new() }
    }
}

impl<S: EventSink> Write for EventWriter<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: EventSink> Drop for EventWriter<S> {
    fn drop(&mut self) {
        self.sink.deliver(&String::from_utf8_lossy(&self.buffer));
    }
}

/// machined's own ring, one record per line.
#[derive(Clone)]
struct RingSink(Arc<Ring<LogLine>>);

impl EventSink for RingSink {
    fn deliver(&self, text: &str) {
        let unix_micros =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        for line in text.lines().filter(|l| !l.is_empty()) {
            self.0.push(LogLine { unix_micros, message: line.to_string() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_appends_only_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let book = LogBook::default();
        book.push("svc", "one");
        book.flush_to(dir.path(), 1 << 20).unwrap();
        book.push("svc", "two");
        book.flush_to(dir.path(), 1 << 20).unwrap();
        book.flush_to(dir.path(), 1 << 20).unwrap();
        let lines = |name: &str| -> Vec<String> {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            text.lines().map(|l| l.split_once(' ').unwrap().1.to_string()).collect()
        };
        assert_eq!(lines("svc.log"), ["one", "two"]);

        // Past the cap the file rotates: one old generation is kept, no more.
        // (Lines of 100 bytes against a 150-byte cap: every flush rotates.)
        let long = |c: &str| c.repeat(100);
        for word in ["a", "b", "c"] {
            book.push("svc", long(word));
            book.flush_to(dir.path(), 150).unwrap();
        }
        assert_eq!(lines("svc.log"), [long("c")]);
        assert_eq!(lines("svc.log.1"), [long("b")]);
        assert!(!dir.path().join("svc.log.2").exists());
    }
}
