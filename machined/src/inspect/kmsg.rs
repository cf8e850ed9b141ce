//! The kernel log, read record by record from `/dev/kmsg`.
//!
//! The kernel logs its command line at boot ("Kernel command line: ...", and again among
//! "Unknown kernel command line parameters"), bootstrap token included when the node was
//! given one there; `ctl dmesg` is a reader call, so the token's value is hidden in every
//! record read here (see [`without_bootstrap_token`]).

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;

use cairn_api::bootstrap::KERNEL_PARAMETER;
use cairn_api::config::REDACTED;
use tokio::io::unix::AsyncFd;

/// One kernel log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRecord {
    /// Syslog facility (0 = kernel).
    pub facility: u32,
    /// Syslog priority, 0 (emergency) to 7 (debug).
    pub priority: u32,
    /// The kernel's sequence number.
    pub sequence: u64,
    /// Microseconds since boot.
    pub boot_micros: u64,
    /// The text; continuation lines are dropped.
    pub message: String,
}

/// Parses one `/dev/kmsg` record: `PRIO,SEQ,MICROS,FLAGS[,...];MESSAGE\n[ KEY=VALUE\n...]`.
pub fn parse(record: &[u8]) -> Option<KernelRecord> {
    let text = String::from_utf8_lossy(record);
    let (header, rest) = text.split_once(';')?;
    let mut fields = header.split(',');
    let prival: u32 = fields.next()?.parse().ok()?;
    let sequence = fields.next()?.parse().ok()?;
    let boot_micros = fields.next()?.parse().ok()?;
    let message = without_bootstrap_token(rest.lines().next().unwrap_or_default()).into_owned();
    Some(KernelRecord {
        facility: prival >> 3,
        priority: prival & 7,
        sequence,
        boot_micros,
        message,
    })
}

/// `message` with the value of every `cairn.bootstrap_token=` replaced by [`REDACTED`]. A
/// token has no spaces or quotes (see `cairn_api::bootstrap`), so its value ends at the first
/// of either (the kernel quotes the parameters it did not know).
pub fn without_bootstrap_token(message: &str) -> Cow<'_, str> {
    let key = format!("{KERNEL_PARAMETER}=");
    if !message.contains(&key) {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(&key) {
        let value_start = at + key.len();
        out.push_str(&rest[..value_start]);
        out.push_str(REDACTED);
        rest = &rest[value_start..];
        let value_end = rest.find(|c: char| c.is_whitespace() || c == '"').unwrap_or(rest.len());
        rest = &rest[value_end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// An open reader of the kernel log, from its oldest kept record.
pub struct Kmsg {
    file: AsyncFd<File>,
}

impl Kmsg {
    /// Opens `/dev/kmsg` (needs CAP_SYSLOG, or root).
    pub fn open() -> io::Result<Self> {
        let file =
            OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open("/dev/kmsg")?;
        // The deprecation is about fds closed behind tokio's back; AsyncFd owns this File, so
        // it stays open while registered. The replacement is an `unsafe fn`.
        #[allow(deprecated)]
        let file = AsyncFd::new(file)?;
        Ok(Kmsg { file })
    }

    /// The next record; with `follow`, waits for one, otherwise `None` at the end.
    pub async fn next(&mut self, follow: bool) -> io::Result<Option<KernelRecord>> {
        // One read returns one whole record; the kernel caps records below this.
        let mut buf = vec![0u8; 8192];
        loop {
            match (&mut self.file.get_ref()).read(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    if let Some(record) = parse(&buf[..n]) {
                        return Ok(Some(record));
                    }
                }
                // Records were overwritten while we read: carry on with the oldest kept one.
                Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !follow {
                        return Ok(None);
                    }
                    self.file.readable().await?.clear_ready();
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records() {
        let record =
            parse(b"6,339,5140900,-;NET: Registered protocol family 10\n SUBSYSTEM=net\n").unwrap();
        assert_eq!(
            record,
            KernelRecord {
                facility: 0,
                priority: 6,
                sequence: 339,
                boot_micros: 5_140_900,
                message: "NET: Registered protocol family 10".into()
            }
        );
        assert_eq!(parse(b"30,1,2,c;x").unwrap().facility, 3);
        assert!(parse(b"garbage").is_none());
    }

    #[test]
    fn the_bootstrap_token_is_hidden() {
        let token = "0123456789abcdef0123456789abcdef";
        let record = format!(
            "5,0,0,-;Kernel command line: console=ttyS0 cairn.bootstrap_token={token} quiet\n"
        );
        assert_eq!(
            parse(record.as_bytes()).unwrap().message,
            "Kernel command line: console=ttyS0 cairn.bootstrap_token=****** quiet"
        );
        let unknown = format!(
            "4,1,0,-;Unknown kernel command line parameters \"cairn.slot=a \
             cairn.bootstrap_token={token}\", will be passed to user space."
        );
        let message = parse(unknown.as_bytes()).unwrap().message;
        assert!(!message.contains(token), "{message}");
        assert!(message.ends_with("cairn.bootstrap_token=******\", will be passed to user space."));
        // Twice, at the very end, empty.
        assert_eq!(
            without_bootstrap_token("cairn.bootstrap_token=a x cairn.bootstrap_token=b"),
            "cairn.bootstrap_token=****** x cairn.bootstrap_token=******"
        );
        assert_eq!(
            without_bootstrap_token("cairn.bootstrap_token="),
            "cairn.bootstrap_token=******"
        );
        assert!(matches!(without_bootstrap_token("NET: up"), Cow::Borrowed("NET: up")));
    }
}
