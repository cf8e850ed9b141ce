//! machined's log lines in the kernel's log, through `/dev/kmsg`, so `ctl dmesg` shows them
//! among the kernel's. They go in at debug priority with their level in the text: the kernel
//! then keeps them off the console, where machined writes them itself. (Echoed by the kernel,
//! a line could reach a TCG guest's serial console only when the next kernel message came,
//! tens of seconds late; the console must show where a boot is.)

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::Arc;

use crate::logs::EventSink;

const DEV_KMSG: &str = "/dev/kmsg";
/// Without this the kernel keeps only ten user-space lines per five seconds, and a boot
/// says more than that.
const DEVKMSG_RATELIMIT: &str = "/proc/sys/kernel/printk_devkmsg";
/// The kernel refuses longer records; longer lines are cut.
const MAX_RECORD: usize = 960;

/// The kernel log, open for writing.
#[derive(Debug, Clone)]
pub struct Kmsg {
    file: Arc<File>,
    ident: &'static str,
}

impl Kmsg {
    /// Opens `/dev/kmsg`; each line is prefixed with `ident`. Lifts the kernel's rate limit
    /// on user-space lines (unless the command line fixed `printk.devkmsg`).
    pub fn open(ident: &'static str) -> io::Result<Kmsg> {
        let file = OpenOptions::new().write(true).open(DEV_KMSG)?;
        // The kernel wants the newline. A command line that set printk.devkmsg locks it;
        // that choice stands.
        let _ = std::fs::write(DEVKMSG_RATELIMIT, "on\n");
        Ok(Kmsg { file: Arc::new(file), ident })
    }

    /// Writes one record per line of `text`.
    pub fn write(&self, text: &str) {
        for line in text.lines().filter(|l| !l.is_empty()) {
            // 7: debug, below the console's default loglevel.
            let mut record = format!("<7>{}: {line}", self.ident);
            if record.len() > MAX_RECORD {
                let mut cut = MAX_RECORD;
                while !record.is_char_boundary(cut) {
                    cut -= 1;
                }
                record.truncate(cut);
            }
            // One write is one record. A lost log line must not stop machined.
            let _ = (&*self.file).write_all(record.as_bytes());
        }
    }
}

impl EventSink for Kmsg {
    fn deliver(&self, text: &str) {
        self.write(text);
    }
}
