//! Booting Cairn images under QEMU, as a user would: `qemu-system-x86_64 -M q35` with OVMF
//! as pflash, the image as a virtio disk, user networking with the API port forwarded to a
//! free loopback port, and the serial console captured to a file that tests search for
//! markers. Software emulation (TCG) only: KVM guests hang on this project's machines.
//!
//! A VM stops gracefully through QMP (`system_powerdown`: the ACPI power button, which
//! machined answers with a clean power-off) or hard, by killing QEMU, for fault tests.

pub mod qmp;

use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_api::arch::Arch;
use nix::sys::signal::{SigSet, Signal};

/// The UEFI firmware Debian's `ovmf` package installs.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The firmware's variable store template; each VM gets a copy.
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// A VM could not be started or did not behave.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// Files or processes failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What failed.
        source: io::Error,
    },
    /// Not supported yet.
    #[error("booting {0} images is not supported yet (x86_64 only)")]
    Arch(Arch),
    /// A marker did not appear on the console in time.
    #[error("{marker:?} did not appear on the console within {timeout:?}; console tail:\n{tail}")]
    Timeout {
        /// The marker.
        marker: String,
        /// How long we waited.
        timeout: Duration,
        /// The console's last lines.
        tail: String,
    },
    /// The guest did not power off after the power button.
    #[error("the guest did not power off within {0:?} of the power button; QEMU was killed")]
    StopTimeout(Duration),
    /// QEMU exited while we waited for the guest.
    #[error("QEMU exited ({status}) before {marker:?} appeared; console tail:\n{tail}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// The marker.
        marker: String,
        /// The console's last lines.
        tail: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> QemuError {
    let what = what.into();
    move |source| QemuError::Io { what, source }
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The disk image (used in place: copy it first to keep the original).
    pub image: PathBuf,
    /// The image's architecture.
    pub arch: Arch,
    /// Guest memory.
    pub memory_mib: u32,
    /// Where the console log and the firmware variables go.
    pub work_dir: PathBuf,
    /// Start QEMU in a process group of its own, so that a terminal's Ctrl-C reaches only
    /// the caller, which then stops the VM itself (see [`watch_interrupts`]). Otherwise
    /// Ctrl-C ends QEMU with the caller, as tests want.
    pub own_process_group: bool,
    /// Where the emulated real-time clock starts (`-rtc base=`, e.g. `2000-01-01`, to boot
    /// like a board without RTC); the host's UTC time when `None`.
    pub rtc_base: Option<String>,
    /// Guest TCP ports forwarded from free host ports besides the API's (see
    /// [`Vm::forwarded`]), e.g. a pod's `hostPort`.
    pub forwards: Vec<u16>,
    /// Cut the guest off every network (`restrict=on`): forwarded ports still reach it, but
    /// nothing it sends leaves QEMU, not even to the gateway.
    pub offline: bool,
}

/// A running VM.
#[derive(Debug)]
pub struct Vm {
    child: Option<Child>,
    /// How QEMU ended, once it has.
    exit: Option<ExitStatus>,
    console: PathBuf,
    qmp_socket: PathBuf,
    /// `127.0.0.1:PORT`, forwarded to the guest's API port.
    pub api_address: String,
    /// `127.0.0.1:PORT` forwarded to each of [`VmConfig::forwards`], by guest port.
    pub forwarded: std::collections::BTreeMap<u16, String>,
}

impl Vm {
    /// Starts QEMU (it boots the firmware, then the image's bootloader).
    pub fn start(config: &VmConfig) -> Result<Vm, QemuError> {
        if config.arch != Arch::X86_64 {
            return Err(QemuError::Arch(config.arch));
        }
        fs::create_dir_all(&config.work_dir)
            .map_err(io_error(format!("creating {}", config.work_dir.display())))?;
        let vars = config.work_dir.join("OVMF_VARS.fd");
        fs::copy(OVMF_VARS, &vars)
            .map_err(io_error(format!("copying {OVMF_VARS} (install the ovmf package)")))?;
        let console = config.work_dir.join("console.log");
        let qmp_socket = config.work_dir.join("qmp.sock");
        let _ = fs::remove_file(&qmp_socket);
        let port = free_port().map_err(io_error("finding a free port"))?;
        let api_port = cairn_api::API_PORT;
        let mut netdev = format!("user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:{api_port}");
        let mut forwarded = std::collections::BTreeMap::new();
        for &guest in &config.forwards {
            let host = free_port().map_err(io_error("finding a free port"))?;
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
            forwarded.insert(guest, format!("127.0.0.1:{host}"));
        }
        if config.offline {
            netdev.push_str(",restrict=on");
        }
        let mut qemu = Command::new("qemu-system-x86_64");
        if config.own_process_group {
            qemu.process_group(0);
        }
        let child = qemu
            .args([
                "-M",
                "q35",
                "-m",
                &config.memory_mib.to_string(),
                "-smp",
                "2",
                "-nographic",
                "-no-user-config",
            ])
            .args(["-accel", "tcg"])
            .args(["-rtc", &format!("base={}", config.rtc_base.as_deref().unwrap_or("utc"))])
            .args(["-drive", &format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}")])
            .args(["-drive", &format!("if=pflash,format=raw,file={}", vars.display())])
            .args(["-drive", &format!("file={},format=raw,if=virtio", config.image.display())])
            .args(["-netdev", &netdev])
            .args(["-device", "virtio-net-pci,netdev=net0"])
            // A hardware watchdog, as a PC has; when machined stops feeding it, it resets
            // the machine (QEMU's default watchdog action).
            .args(["-device", "i6300esb"])
            .args(["-serial", &format!("file:{}", console.display()), "-monitor", "none"])
            .args(["-qmp", &format!("unix:{},server=on,wait=off", qmp_socket.display())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io_error("starting qemu-system-x86_64 (install qemu-system-x86)"))?;
        Ok(Vm {
            child: Some(child),
            exit: None,
            console,
            qmp_socket,
            api_address: format!("127.0.0.1:{port}"),
            forwarded,
        })
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// The console log's path.
    pub fn console_path(&self) -> &Path {
        &self.console
    }

    /// Waits until `marker` appears on the console after byte `from` (an earlier
    /// `console().len()`, to wait for the next boot's markers); returns where it ends.
    pub fn wait_for(
        &mut self,
        marker: &str,
        from: usize,
        timeout: Duration,
    ) -> Result<usize, QemuError> {
        let deadline = Instant::now() + timeout;
        loop {
            let console = self.console();
            if let Some(at) = console.get(from..).and_then(|rest| rest.find(marker)) {
                return Ok(from + at + marker.len());
            }
            if let Some(status) = self.try_exit()? {
                return Err(QemuError::Exited {
                    status,
                    marker: marker.into(),
                    tail: tail(&console),
                });
            }
            if Instant::now() > deadline {
                return Err(QemuError::Timeout {
                    marker: marker.into(),
                    timeout,
                    tail: tail(&console),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits (bounded) for QEMU to exit by itself, as after a guest power-off.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, QemuError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(None)
    }

    /// Presses the power button (ACPI) and waits for the guest to power off; kills QEMU if it
    /// has not within `timeout`.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus, QemuError> {
        if let Some(status) = self.try_exit()? {
            return Ok(status);
        }
        self.press_power_button()?;
        match self.wait_exit(timeout)? {
            Some(status) => Ok(status),
            None => {
                self.power_off_hard()?;
                Err(QemuError::StopTimeout(timeout))
            }
        }
    }

    /// Presses the guest's ACPI power button; returns at once.
    pub fn press_power_button(&self) -> Result<(), QemuError> {
        qmp::Qmp::connect(&self.qmp_socket)
            .and_then(|mut qmp| qmp.execute("system_powerdown"))
            .map(drop)
            .map_err(io_error(format!("QMP on {}", self.qmp_socket.display())))
    }

    /// Pulls the plug: kills QEMU at once, as a power cut would.
    pub fn power_off_hard(&mut self) -> Result<(), QemuError> {
        if let Some(mut child) = self.child.take() {
            child.kill().map_err(io_error("killing qemu"))?;
            self.exit = Some(child.wait().map_err(io_error("waiting for qemu"))?);
        }
        Ok(())
    }

    fn try_exit(&mut self) -> Result<Option<ExitStatus>, QemuError> {
        let Some(child) = self.child.as_mut() else { return Ok(self.exit) };
        let status = child.try_wait().map_err(io_error("waiting for qemu"))?;
        if status.is_some() {
            self.child = None;
            self.exit = status;
        }
        Ok(status)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.power_off_hard();
    }
}

/// Counts SIGINT and SIGTERM from a thread of their own, so a program can stop its VMs
/// cleanly on Ctrl-C. Call it before starting any thread: the signals are blocked in the
/// caller's thread, and threads started later inherit that.
pub fn watch_interrupts() -> nix::Result<Arc<AtomicUsize>> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        while signals.wait().is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    Ok(count)
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last 40 lines of a console, for error messages.
fn tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = tail(&text);
        assert!(t.starts_with("line 60") && t.ends_with("line 99"));
    }

    #[test]
    fn only_x86_64_for_now() {
        let dir = tempfile::tempdir().unwrap();
        let config = VmConfig {
            image: dir.path().join("x.raw"),
            arch: Arch::Arm64,
            memory_mib: 512,
            work_dir: dir.path().into(),
            own_process_group: false,
            rtc_base: None,
            forwards: Vec::new(),
            offline: false,
        };
        assert!(matches!(Vm::start(&config), Err(QemuError::Arch(Arch::Arm64))));
    }
}
