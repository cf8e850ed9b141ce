//! Where machined's lines are shown: as PID 1, every console the kernel writes to, not only
//! `/dev/console`, which is the last one the command line names. A Raspberry Pi boots with
//! `console=tty1 console=ttyS1`: an operator at its screen must see the API's certificate
//! fingerprint as one at its serial port does. Elsewhere, stderr.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use crate::logs::EventSink;

/// The consoles the kernel prints to, by name (`tty0 ttyS0`).
pub const ACTIVE_CONSOLES: &str = "/sys/class/tty/console/active";

/// Where machined's console lines go.
#[derive(Debug, Clone)]
pub enum ConsoleOut {
    /// The process's stderr (machined as an ordinary process, or no console could be opened).
    Stderr,
    /// Each of the kernel's consoles, opened for writing.
    Terminals(Arc<[File]>),
}

impl ConsoleOut {
    /// Opens, under `dev`, each console named in `active` (the kernel's list, see
    /// [`ACTIVE_CONSOLES`]). Falls back to stderr, which is `/dev/console`, when the list cannot
    /// be read or none of them opens; says which could not be opened.
    pub fn kernel_consoles(active: &Path, dev: &Path) -> ConsoleOut {
        let Ok(names) = std::fs::read_to_string(active) else { return ConsoleOut::Stderr };
        let mut terminals = Vec::new();
        for name in names.split_whitespace() {
            // O_NOCTTY: PID 1 must not take a terminal as its controlling one (a hangup on it
            // would then be sent to PID 1).
            let opened = OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NOCTTY)
                .open(dev.join(name));
            match opened {
                Ok(file) => terminals.push(file),
                Err(e) => eprintln!(
                    "machined: console {name}: {e}; its screen will not show machined's lines"
                ),
            }
        }
        if terminals.is_empty() {
            ConsoleOut::Stderr
        } else {
            ConsoleOut::Terminals(terminals.into())
        }
    }
}

impl EventSink for ConsoleOut {
    fn deliver(&self, text: &str) {
        // A console that fails a write must not stop machined, nor the others.
        match self {
            ConsoleOut::Stderr => drop(io::stderr().write_all(text.as_bytes())),
            ConsoleOut::Terminals(terminals) => {
                for mut terminal in terminals.iter() {
                    let _ = terminal.write_all(text.as_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_active_console_gets_each_line() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("active");
        std::fs::write(&active, "tty1 ttyS1 ttyGONE\n").unwrap();
        for tty in ["tty1", "ttyS1"] {
            std::fs::write(dir.path().join(tty), "").unwrap();
        }
        let out = ConsoleOut::kernel_consoles(&active, dir.path());
        let ConsoleOut::Terminals(terminals) = &out else { panic!("{out:?}") };
        assert_eq!(terminals.len(), 2, "the console that does not exist is left out");
        out.deliver("fingerprint ab12\n");
        for tty in ["tty1", "ttyS1"] {
            assert_eq!(
                std::fs::read_to_string(dir.path().join(tty)).unwrap(),
                "fingerprint ab12\n"
            );
        }
    }

    #[test]
    fn stderr_when_no_console_opens() {
        let dir = tempfile::tempdir().unwrap();
        let missing = ConsoleOut::kernel_consoles(&dir.path().join("active"), dir.path());
        assert!(matches!(missing, ConsoleOut::Stderr));
        std::fs::write(dir.path().join("active"), "ttyGONE\n").unwrap();
        let none_opens = ConsoleOut::kernel_consoles(&dir.path().join("active"), dir.path());
        assert!(matches!(none_opens, ConsoleOut::Stderr));
    }
}
