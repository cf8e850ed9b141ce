//! Container logs. containerd writes each run's output to a file in the pod's log
//! directory, in the CRI format (`2024-05-01T10:00:00.123456789Z stdout F text`, `P` for a
//! partial line). The kubelet rotates a file past [`MAX_LOG_BYTES`] (one rotated file kept,
//! then containerd reopens its log), so a chatty pod cannot fill EPHEMERAL; and it reads the
//! files back for `ctl logs POD`: a tail from the file's end, the rest a chunk at a time as
//! the client takes the lines, on blocking threads, with each line cut at [`MAX_LINE_BYTES`].

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::chrono::DateTime;
use tokio::sync::mpsc;

use crate::workloads::cri::{v1, Cri};

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
    cri: &dyn Cri,
    log_dir: &Path,
    runs: impl Iterator<Item = &'a v1::ContainerStatus>,
) {
    let running = i32::from(v1::ContainerState::ContainerRunning);
    for run in runs.filter(|r| r.state == running && !r.log_path.is_empty()) {
        let path = log_dir.join(&run.log_path);
        let full = tokio::fs::metadata(&path).await.is_ok_and(|m| m.len() > MAX_LOG_BYTES);
        if full && tokio::fs::rename(&path, rotated(&path)).await.is_ok() {
            let _ = cri.reopen_container_log(&run.id).await;
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

/// The longest line sent whole; the rest of a longer one is dropped, with [`cut_marker`]
/// saying so. containerd splits output into `P` records of 16 KiB, so this keeps four of
/// them: any line meant for a reader, while a program that writes megabytes without a
/// newline cannot make machined hold them.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How far into a record its header (time, stream, tag) must end; a CRI header is under
/// 50 bytes. A record without one in reach is skipped, so no undecoded bytes pile up.
const MAX_HEADER_BYTES: usize = 128;
/// How much of a file one read takes, forwards or (for a tail) backwards.
const CHUNK_BYTES: usize = 64 * 1024;

/// What ends a line cut at [`MAX_LINE_BYTES`].
fn cut_marker() -> String {
    format!(" … [line cut at {MAX_LINE_BYTES} bytes]")
}

/// The header of a CRI record: `TIME STREAM TAG TEXT`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Header {
    unix_micros: u64,
    stderr: bool,
    /// A `P` record: the line goes on in the next record.
    partial: bool,
    /// Where the text starts, counted from the record's start (may be past its end).
    text_start: usize,
}

impl Header {
    /// Parses the header from `window`: the record's first [`MAX_HEADER_BYTES`] at most,
    /// with its newline if that is among them. `None` when the three fields do not end in
    /// the window: the decoder and the tail scan both skip such a record.
    fn parse(window: &[u8]) -> Option<Header> {
        let window = &window[..window.len().min(MAX_HEADER_BYTES)];
        let body = window.split(|&b| b == b'\n').next().unwrap_or(window);
        let ended = body.len() < window.len();
        let mut fields = body.splitn(4, |&b| b == b' ');
        let (time, stream, tag) = (fields.next()?, fields.next()?, fields.next()?);
        // Without a space after it, the tag ends only where the record does.
        if fields.next().is_none() && !ended {
            return None;
        }
        let unix_micros = std::str::from_utf8(time)
            .ok()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or(0, |t| t.timestamp_micros().max(0) as u64);
        Some(Header {
            unix_micros,
            stderr: stream == b"stderr",
            partial: tag == b"P",
            text_start: time.len() + stream.len() + tag.len() + 3,
        })
    }
}

/// The record the decoder is in, once its header is read.
#[derive(Debug, Clone, Copy)]
enum Record {
    Text(Header),
    /// No header: skipped up to its newline.
    Malformed,
}

/// Joins CRI-format records into lines (partial records wait for their end), holding at
/// most [`MAX_HEADER_BYTES`] of a record and [`MAX_LINE_BYTES`] of a line.
#[derive(Default)]
struct Decoder {
    /// The start of the record being read, until its header can be parsed.
    head: Vec<u8>,
    /// The record being read, once past its header.
    record: Option<Record>,
    /// The text of the line so far.
    line: Vec<u8>,
    /// Whether text of this line was dropped past [`MAX_LINE_BYTES`].
    cut: bool,
}

impl Decoder {
    /// Decodes `bytes` (the next part of the file) into the complete lines it ends.
    fn feed(&mut self, mut bytes: &[u8]) -> Vec<LogLine> {
        let mut lines = Vec::new();
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|&b| b == b'\n');
            if self.record.is_some() {
                let text_end = newline.unwrap_or(bytes.len());
                if let Some(Record::Text(_)) = self.record {
                    self.push_text(&bytes[..text_end]);
                }
                bytes = &bytes[text_end..];
                if newline.is_some() {
                    bytes = &bytes[1..];
                    self.end_record(&mut lines);
                }
                continue;
            }
            let room = MAX_HEADER_BYTES - self.head.len();
            let take = newline.map_or(bytes.len(), |i| i + 1).min(room);
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            let ended = self.head.last() == Some(&b'\n');
            if !ended && self.head.len() < MAX_HEADER_BYTES {
                continue;
            }
            let head = std::mem::take(&mut self.head);
            self.record = Some(match Header::parse(&head) {
                Some(header) => {
                    let body_end = head.len() - usize::from(ended);
                    self.push_text(&head[header.text_start.min(body_end)..body_end]);
                    Record::Text(header)
                }
                None => Record::Malformed,
            });
            self.head = head;
            self.head.clear();
            if ended {
                self.end_record(&mut lines);
            }
        }
        lines
    }

    /// Adds text to the line, up to [`MAX_LINE_BYTES`].
    fn push_text(&mut self, text: &[u8]) {
        let room = MAX_LINE_BYTES - self.line.len();
        self.cut |= text.len() > room;
        self.line.extend_from_slice(&text[..text.len().min(room)]);
    }

    /// Ends the record being read: a line when it is not a partial one.
    fn end_record(&mut self, lines: &mut Vec<LogLine>) {
        let Some(Record::Text(header)) = self.record.take() else {
            return;
        };
        if header.partial {
            return;
        }
        let mut text = std::mem::take(&mut self.line);
        let cut = std::mem::take(&mut self.cut);
        if cut {
            drop_split_char(&mut text);
        }
        let mut message = String::from(if header.stderr { "stderr: " } else { "" });
        message.push_str(&String::from_utf8_lossy(&text));
        if cut {
            message.push_str(&cut_marker());
        }
        lines.push(LogLine { unix_micros: header.unix_micros, message });
    }
}

/// Drops the last character of `text` when a cut left only its first bytes.
fn drop_split_char(text: &mut Vec<u8>) {
    let from = text.len().saturating_sub(4);
    let Some(lead) = (from..text.len()).rev().find(|&i| text[i] & 0xC0 != 0x80) else {
        return;
    };
    if std::str::from_utf8(&text[lead..]).is_err_and(|e| e.error_len().is_none()) {
        text.truncate(lead);
    }
}

/// Reads `buf.len()` bytes of `file` at `offset` (fewer at its end): the count.
fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A container's log file, read in chunks: the blocking half of [`send`].
struct LogReader {
    path: PathBuf,
    file: File,
    inode: u64,
    /// Where the next read starts.
    offset: u64,
    decoder: Decoder,
    buf: Vec<u8>,
    /// The bytes read from files so far.
    bytes_read: u64,
}

impl LogReader {
    fn open(path: PathBuf) -> io::Result<LogReader> {
        let file = File::open(&path)?;
        let inode = file.metadata()?.ino();
        Ok(LogReader {
            path,
            file,
            inode,
            offset: 0,
            decoder: Decoder::default(),
            buf: vec![0; CHUNK_BYTES],
            bytes_read: 0,
        })
    }

    /// Moves to the start of the last `lines` complete lines, reading backwards from the end
    /// in blocks of `block` bytes: a tail costs what it holds, not what the file does.
    fn seek_tail(&mut self, lines: usize, block: usize) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        let mut buf = Vec::new();
        // The newline ending the record after the scan's position: records are counted
        // once whole, so an unfinished last record never counts.
        let mut record_end: Option<u64> = None;
        let mut ended = 0;
        let mut block_end = len;
        loop {
            let block_start = block_end.saturating_sub(block as u64);
            // A record's header may reach into the block after: read that much more.
            let read_end = len.min(block_end + MAX_HEADER_BYTES as u64);
            buf.resize((read_end - block_start) as usize, 0);
            let got = read_at(&self.file, block_start, &mut buf)?;
            self.bytes_read += got as u64;
            buf.truncate(got);
            let scanned = ((block_end - block_start) as usize).min(got);
            // Each newline starts the record after it; the file's start starts the first.
            let starts = buf[..scanned]
                .iter()
                .enumerate()
                .rev()
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| Some(i))
                .chain((block_start == 0).then_some(None));
            for newline in starts {
                let start = newline.map_or(0, |i| i + 1);
                if let Some(end) = record_end {
                    let window_end = (end - block_start + 1) as usize;
                    let window_end = window_end.min(start + MAX_HEADER_BYTES).min(buf.len());
                    let window = &buf[start..window_end];
                    let ends_line = Header::parse(window).is_some_and(|h| !h.partial);
                    if ends_line {
                        ended += 1;
                        if ended > lines {
                            // The line before the tail ends here.
                            self.offset = end + 1;
                            return Ok(());
                        }
                    }
                }
                record_end = newline.map(|i| block_start + i as u64);
            }
            if block_start == 0 {
                self.offset = 0;
                return Ok(());
            }
            block_end = block_start;
        }
    }

    /// Reads and decodes the next chunk: the lines it completed, `None` at the file's end.
    fn read_chunk(&mut self) -> io::Result<Option<Vec<LogLine>>> {
        let got = read_at(&self.file, self.offset, &mut self.buf)?;
        if got == 0 {
            return Ok(None);
        }
        self.offset += got as u64;
        self.bytes_read += got as u64;
        Ok(Some(self.decoder.feed(&self.buf[..got])))
    }

    /// Whether another file is at the path now: a rotation renamed this one, and containerd
    /// opened a new one, so nothing more is written to this file.
    fn replaced(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.ino() != self.inode)
    }

    /// Goes on in the file now at the path (staying with this one if it has gone again).
    fn reopen(&mut self) -> io::Result<()> {
        if let Ok(file) = File::open(&self.path) {
            self.inode = file.metadata()?.ino();
            self.file = file;
            self.offset = 0;
        }
        Ok(())
    }
}

/// The last `lines` lines of the log file `path` as text, a line each, of which the last
/// `max_bytes` at most: what a container that failed said last.
pub fn tail_text(path: &Path, lines: usize, max_bytes: usize) -> io::Result<String> {
    let mut reader = LogReader::open(path.to_path_buf())?;
    reader.seek_tail(lines, CHUNK_BYTES)?;
    let mut text = String::new();
    let keep_last = |text: &mut String| {
        if text.len() > max_bytes {
            let mut start = text.len() - max_bytes;
            while !text.is_char_boundary(start) {
                start += 1;
            }
            text.drain(..start);
        }
    };
    while let Some(chunk) = reader.read_chunk()? {
        for line in chunk {
            text.push_str(&line.message);
            text.push('\n');
        }
        keep_last(&mut text);
    }
    text.truncate(text.trim_end_matches('\n').len());
    Ok(text)
}

/// Runs `work` on a blocking thread, so file I/O stays off the async workers.
async fn off_workers<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| io::Error::other(format!("log reader failed: {e}")))?
}

/// Runs `work` on `reader` off the async workers, handing the reader back.
async fn blocking<T: Send + 'static>(
    mut reader: LogReader,
    work: impl FnOnce(&mut LogReader) -> io::Result<T> + Send + 'static,
) -> io::Result<(LogReader, T)> {
    off_workers(move || work(&mut reader).map(|out| (reader, out))).await
}

/// Sends the lines of the log file `path` (the last `tail`, or all), then with `follow`
/// the lines written after, across rotations, until the receiver goes away. The file is
/// read a chunk at a time, each once the lines before it are sent: the channel paces it.
pub async fn send(
    path: PathBuf,
    tail: Option<usize>,
    follow: bool,
    tx: mpsc::Sender<LogLine>,
) -> io::Result<()> {
    let mut reader = off_workers(move || {
        let mut reader = LogReader::open(path)?;
        if let Some(lines) = tail {
            reader.seek_tail(lines, CHUNK_BYTES)?;
        }
        Ok(reader)
    })
    .await?;
    let mut replaced = false;
    loop {
        let chunk;
        (reader, chunk) = blocking(reader, LogReader::read_chunk).await?;
        if let Some(lines) = chunk {
            for line in lines {
                if tx.send(line).await.is_err() {
                    return Ok(());
                }
            }
            continue;
        }
        if replaced {
            // The rotated file is read to its end: read on in the new one.
            (reader, ()) = blocking(reader, LogReader::reopen).await?;
            replaced = false;
            continue;
        }
        if !follow {
            return Ok(());
        }
        tokio::select! {
            _ = tx.closed() => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        (reader, replaced) = blocking(reader, |reader| Ok(reader.replaced())).await?;
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

    /// A CRI record of `text`.
    fn record(stream: &str, tag: &str, text: &str) -> String {
        format!("2024-05-01T10:00:00.000000001Z {stream} {tag} {text}\n")
    }

    /// Writes `lines` numbered full-line records of `width` bytes of text to `path`: their texts.
    fn write_numbered(path: &Path, lines: usize, width: usize) -> Vec<String> {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(File::create(path).unwrap());
        let texts: Vec<String> = (0..lines).map(|i| format!("{i:0width$}")).collect();
        for text in &texts {
            file.write_all(record("stdout", "F", text).as_bytes()).unwrap();
        }
        file.flush().unwrap();
        texts
    }

    /// The rest of the file from where `reader` stands, decoded.
    fn read_rest(reader: &mut LogReader) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(chunk) = reader.read_chunk().unwrap() {
            lines.extend(chunk.into_iter().map(|l| l.message));
        }
        lines
    }

    async fn collect(path: PathBuf, tail: Option<usize>) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(4);
        let reader = tokio::spawn(send(path, tail, false, tx));
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line.message);
        }
        reader.await.unwrap().unwrap();
        lines
    }

    #[test]
    fn a_tail_of_a_large_file_reads_only_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let texts = write_numbered(&path, 100_000, 70);
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > 10 * 1024 * 1024, "{len}");
        let mut reader = LogReader::open(path).unwrap();
        reader.seek_tail(10, CHUNK_BYTES).unwrap();
        assert_eq!(read_rest(&mut reader), texts[texts.len() - 10..]);
        // One block back, then the ten lines forwards.
        let tail_bytes = 10 * record("stdout", "F", &texts[0]).len() as u64;
        let bound = (CHUNK_BYTES + MAX_HEADER_BYTES) as u64 + tail_bytes;
        assert!(reader.bytes_read <= bound, "{} of {len} bytes read", reader.bytes_read);
    }

    #[tokio::test]
    async fn a_tail_counts_joined_partial_records_as_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let file = [
            record("stdout", "F", "a"),
            record("stdout", "P", "b1 "),
            record("stdout", "P", "b2 "),
            record("stderr", "F", "b3"),
            record("stdout", "P", "c1 "),
            record("stdout", "F", "c2"),
            record("stdout", "P", "unfinished"),
        ]
        .concat();
        std::fs::write(&path, file).unwrap();
        assert_eq!(collect(path.clone(), Some(2)).await, ["stderr: b1 b2 b3", "c1 c2"]);
        assert_eq!(collect(path.clone(), Some(0)).await, Vec::<String>::new());
        assert_eq!(collect(path, Some(9)).await, ["a", "stderr: b1 b2 b3", "c1 c2"]);
    }

    #[test]
    fn tails_match_a_whole_decode_at_any_block_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let no_header = format!("{} stdout F text\n", "9".repeat(MAX_HEADER_BYTES));
        let file = [
            record("stdout", "P", "first "),
            record("stdout", "F", "line"),
            "garbage\n".into(),
            "\n".into(),
            record("stderr", "F", ""),
            record("stdout", "P", "split "),
            "2024-05-01T10:00:00Z stdout P\n".into(),
            no_header,
            record("stdout", "F", "joined"),
            "2024-05-01T10:00:00Z stdout F\n".into(),
            record("stdout", "F", &"long ".repeat(100)),
            record("stdout", "P", "trailing"),
            "2024-05-01T10:00:00Z stdout F no newl".into(),
        ]
        .concat();
        std::fs::write(&path, &file).unwrap();
        let whole: Vec<String> =
            Decoder::default().feed(file.as_bytes()).into_iter().map(|l| l.message).collect();
        assert_eq!(whole.len(), 5, "{whole:?}");
        for block in [1, 2, 3, 7, 64, 129, 4096] {
            for n in 0..=whole.len() + 1 {
                let mut reader = LogReader::open(path.clone()).unwrap();
                reader.seek_tail(n, block).unwrap();
                let want = &whole[whole.len().saturating_sub(n)..];
                assert_eq!(read_rest(&mut reader), want, "tail {n} in blocks of {block}");
            }
        }
    }

    #[test]
    fn long_lines_are_cut_and_the_next_line_is_whole() {
        let mut decoder = Decoder::default();
        let piece = "x".repeat(16 * 1024);
        let mut lines = Vec::new();
        for _ in 0..10 {
            lines.extend(decoder.feed(record("stdout", "P", &piece).as_bytes()));
        }
        lines.extend(decoder.feed(record("stdout", "F", "end").as_bytes()));
        lines.extend(decoder.feed(record("stdout", "F", "next").as_bytes()));
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].message, format!("{}{}", "x".repeat(MAX_LINE_BYTES), cut_marker()));
        assert_eq!(lines[1].message, "next");
    }

    #[test]
    fn a_record_without_a_newline_is_held_within_bounds() {
        let mut decoder = Decoder::default();
        // One byte first, so the cut splits a two-byte character.
        assert!(decoder.feed(b"2024-05-01T10:00:00Z stderr F a").is_empty());
        let chunk = "é".repeat(32 * 1024);
        for _ in 0..64 {
            assert!(decoder.feed(chunk.as_bytes()).is_empty());
            assert!(decoder.head.len() <= MAX_HEADER_BYTES && decoder.line.len() <= MAX_LINE_BYTES);
        }
        let lines = decoder.feed(format!("\n{}", record("stdout", "F", "after")).as_bytes());
        let text = format!("a{}", "é".repeat((MAX_LINE_BYTES - 1) / 2));
        assert_eq!(lines[0].message, format!("stderr: {text}{}", cut_marker()));
        assert_eq!(lines[1].message, "after");
    }

    #[tokio::test]
    async fn without_a_tail_a_big_file_streams_as_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let texts = write_numbered(&path, 20_000, 200);
        let (tx, mut rx) = mpsc::channel(1);
        let reader = tokio::spawn(send(path.clone(), None, false, tx));
        assert_eq!(rx.recv().await.unwrap().message, texts[0]);
        // The end of the file is read only once the lines before it are taken: a change
        // there now still shows.
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - 4;
        bytes[at..at + 3].copy_from_slice(b"new");
        std::fs::write(&path, bytes).unwrap();
        let mut last = None;
        let mut count = 1;
        while let Some(line) = rx.recv().await {
            count += 1;
            last = Some(line.message);
        }
        reader.await.unwrap().unwrap();
        assert_eq!(count, texts.len());
        assert!(last.unwrap().ends_with("new"));
    }

    #[tokio::test]
    async fn following_stops_when_the_receiver_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write_numbered(&path, 1_000, 10);
        // While sending: the channel is full.
        let (tx, mut rx) = mpsc::channel(1);
        let reader = tokio::spawn(send(path.clone(), None, true, tx));
        rx.recv().await.unwrap();
        drop(rx);
        let ended = tokio::time::timeout(Duration::from_secs(2), reader).await;
        ended.expect("a follower went on without a receiver").unwrap().unwrap();
        // While waiting for more.
        let (tx, mut rx) = mpsc::channel(1);
        let reader = tokio::spawn(send(path, Some(1), true, tx));
        rx.recv().await.unwrap();
        tokio::time::sleep(FOLLOW_POLL * 2).await;
        drop(rx);
        let ended = tokio::time::timeout(FOLLOW_POLL * 2, reader).await;
        ended.expect("a follower went on without a receiver").unwrap().unwrap();
    }
}
