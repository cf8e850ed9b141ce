//! Booting Cairn images under QEMU, as a user would, the way the board's `[qemu]`
//! description says (for generic-x86_64: `qemu-system-x86_64 -M q35` with OVMF as pflash,
//! the image as a virtio disk, a virtio network card, an i6300esb watchdog, a virtio RNG): user networking
//! with the API port forwarded to a free loopback port, and the first serial port captured
//! to a file that tests search for markers. Software emulation (TCG) only: KVM guests hang
//! on this project's machines.
//!
//! For comparison, [`Vm::start_kernel`] boots a kernel and initramfs directly, as QEMU's
//! `-kernel` does, on the same machine, CPUs, memory and devices, without the firmware and
//! bootloader: a trivial init booted so is the floor a boot of the image is measured against.
//!
//! A VM stops gracefully as the board powers off (the ACPI power button, pressed over QMP
//! with `system_powerdown`, which machined answers with a clean power-off) or hard, by
//! killing QEMU, for fault tests.

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

use cairn_api::board::{Board, NetbootLoader, PowerOff, Qemu};
use nix::sys::signal::{SigSet, Signal};

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
    /// The board's description has no `[qemu]`.
    #[error("board {0} has no [qemu] description: QEMU cannot boot it")]
    NotEmulated(String),
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
    /// The disk image (used in place: copy it first to keep the original); `None` for a
    /// diskless machine.
    pub disk: Option<PathBuf>,
    /// The board the image is for: its `[qemu]` description says how to boot it.
    pub board: Board,
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

/// A kernel booted directly (`-kernel`, `-initrd`, `-append`), with no firmware of the
/// board's, but the same disk, network and watchdog as an image boot.
#[derive(Debug, Clone)]
pub struct DirectKernel {
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initramfs: PathBuf,
    /// The kernel command line.
    pub command_line: String,
}

/// A boot from the network, by the board's network loader (`[netboot]`). iPXE: QEMU's BIOS
/// runs the network card's iPXE, which takes the `bootfile` URL from QEMU's DHCP server (a
/// script on an HTTP server the guest reaches, e.g. `http://10.0.2.2:PORT/boot.ipxe`: the
/// host is the user network's gateway). U-Boot: the board's U-Boot, finding no disk, asks
/// DHCP and loads its script from `tftp_dir`, which QEMU's user network serves by TFTP.
#[derive(Debug, Clone)]
pub struct NetworkBoot {
    /// What DHCP hands out as the boot file.
    pub bootfile: String,
    /// A folder QEMU serves by TFTP.
    pub tftp_dir: Option<PathBuf>,
}

/// What QEMU boots.
#[derive(Debug, Clone, Copy)]
enum Boot<'a> {
    /// The board's firmware, then the image on the disk.
    Image,
    /// A kernel, directly.
    Kernel(&'a DirectKernel),
    /// iPXE, from the network.
    Network(&'a NetworkBoot),
}

/// A running VM.
#[derive(Debug)]
pub struct Vm {
    child: Option<Child>,
    /// How QEMU ended, once it has.
    exit: Option<ExitStatus>,
    console: PathBuf,
    qmp_socket: PathBuf,
    /// How the guest is asked to power off.
    power_off: PowerOff,
    /// `127.0.0.1:PORT`, forwarded to the guest's API port.
    pub api_address: String,
    /// `127.0.0.1:PORT` forwarded to each of [`VmConfig::forwards`], by guest port.
    pub forwarded: std::collections::BTreeMap<u16, String>,
}

impl Vm {
    /// Starts QEMU (it boots the firmware, then the image's bootloader).
    pub fn start(config: &VmConfig) -> Result<Vm, QemuError> {
        Vm::launch(config, Boot::Image)
    }

    /// Starts QEMU on `config`'s machine, CPUs, memory, disk and network booting `kernel`
    /// directly: no firmware of the board's (QEMU's own BIOS loads it), so no bootloader
    /// either; a reboot or power-off of the guest ends QEMU.
    pub fn start_kernel(config: &VmConfig, kernel: &DirectKernel) -> Result<Vm, QemuError> {
        Vm::launch(config, Boot::Kernel(kernel))
    }

    /// Starts QEMU on `config`'s machine booting from the network as `netboot` says, by the
    /// board's network loader: QEMU's own BIOS (not the board's firmware) and the network
    /// card's iPXE, or the board's U-Boot. A reboot of the guest boots from the network again.
    pub fn start_network(config: &VmConfig, netboot: &NetworkBoot) -> Result<Vm, QemuError> {
        Vm::launch(config, Boot::Network(netboot))
    }

    fn launch(config: &VmConfig, boot: Boot<'_>) -> Result<Vm, QemuError> {
        let qemu = config
            .board
            .qemu
            .as_ref()
            .ok_or_else(|| QemuError::NotEmulated(config.board.name.clone()))?;
        fs::create_dir_all(&config.work_dir)
            .map_err(io_error(format!("creating {}", config.work_dir.display())))?;
        let firmware = &qemu.firmware;
        let paths = VmPaths {
            vars: config.work_dir.join("vars.fd"),
            console: config.work_dir.join("console.log"),
            qmp_socket: config.work_dir.join("qmp.sock"),
        };
        if let (Boot::Image, Some(vars)) = (boot, &firmware.vars) {
            fs::copy(vars, &paths.vars).map_err(io_error(format!(
                "copying {} (install the {} package)",
                vars.display(),
                firmware.package
            )))?;
        }
        let _ = fs::remove_file(&paths.qmp_socket);
        let port = free_port().map_err(io_error("finding a free port"))?;
        let mut forwarded = Vec::new();
        for &guest in &config.forwards {
            forwarded.push((guest, free_port().map_err(io_error("finding a free port"))?));
        }
        let mut command = Command::new(&qemu.binary);
        if config.own_process_group {
            command.process_group(0);
        }
        let child = command
            .args(arguments(config, qemu, boot, &paths, port, &forwarded))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io_error(format!("starting {} (install {})", qemu.binary, qemu.package)))?;
        Ok(Vm {
            child: Some(child),
            exit: None,
            console: paths.console,
            qmp_socket: paths.qmp_socket,
            power_off: qemu.power_off,
            api_address: format!("127.0.0.1:{port}"),
            forwarded: forwarded
                .into_iter()
                .map(|(guest, host)| (guest, format!("127.0.0.1:{host}")))
                .collect(),
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
        let console = self.console.clone();
        wait_for_marker(&console, marker, from, timeout, || self.try_exit())
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

    /// Asks the guest to power off as the board does and waits until it has; kills QEMU if
    /// it has not within `timeout`.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus, QemuError> {
        if let Some(status) = self.try_exit()? {
            return Ok(status);
        }
        self.request_power_off()?;
        match self.wait_exit(timeout)? {
            Some(status) => Ok(status),
            None => {
                self.power_off_hard()?;
                Err(QemuError::StopTimeout(timeout))
            }
        }
    }

    /// Asks the guest to power off as the board's `[qemu] power_off` says; returns at once.
    pub fn request_power_off(&self) -> Result<(), QemuError> {
        match self.power_off {
            PowerOff::AcpiPowerButton | PowerOff::GpioPowerKey => self.press_power_button(),
        }
    }

    /// Presses the guest's power button (ACPI, or the board's GPIO power key); returns at once.
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

/// The files of one VM in its work directory.
struct VmPaths {
    /// The writable copy of the firmware's variable store.
    vars: PathBuf,
    /// The first serial port's output.
    console: PathBuf,
    /// The QMP socket.
    qmp_socket: PathBuf,
}

/// QEMU's command line for `config` booting `boot` on the machine `qemu` describes: for the
/// image, with the API forwarded from host port `api_port` and each (guest, host) port of
/// `forwarded`.
fn arguments(
    config: &VmConfig,
    qemu: &Qemu,
    boot: Boot<'_>,
    paths: &VmPaths,
    api_port: u16,
    forwarded: &[(u16, u16)],
) -> Vec<String> {
    let mut args = machine_arguments(config, qemu);
    match boot {
        Boot::Image => args.extend(firmware_arguments(qemu, paths)),
        Boot::Kernel(kernel) => args.extend([
            "-kernel".into(),
            kernel.kernel.display().to_string(),
            "-initrd".into(),
            kernel.initramfs.display().to_string(),
            "-append".into(),
            kernel.command_line.clone(),
            "-no-reboot".into(),
        ]),
        Boot::Network(_) => match config.board.netboot.as_ref().map(|n| n.loader) {
            Some(NetbootLoader::UBoot) => args.extend(firmware_arguments(qemu, paths)),
            // QEMU's BIOS, which runs the network card's iPXE ROM.
            Some(NetbootLoader::Ipxe) | None => args.extend(["-boot".into(), "order=n".into()]),
        },
    }
    let netboot = match boot {
        Boot::Network(netboot) => Some(netboot),
        Boot::Image | Boot::Kernel(_) => None,
    };
    args.extend(device_arguments(config, qemu, api_port, forwarded, netboot));
    args.extend([
        "-serial".into(),
        format!("file:{}", paths.console.display()),
        "-monitor".into(),
        "none".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", paths.qmp_socket.display()),
    ]);
    args
}

/// The machine, CPUs, memory, clock and accelerator: the same whatever boots.
fn machine_arguments(config: &VmConfig, qemu: &Qemu) -> Vec<String> {
    let mut args: Vec<String> = vec!["-M".into(), qemu.machine.clone()];
    if let Some(cpu) = &qemu.cpu {
        args.extend(["-cpu".into(), cpu.clone()]);
    }
    args.extend([
        "-m".into(),
        config.memory_mib.to_string(),
        "-smp".into(),
        qemu.cpus.to_string(),
        "-nographic".into(),
        "-no-user-config".into(),
        "-accel".into(),
        "tcg".into(),
        "-rtc".into(),
        format!("base={}", config.rtc_base.as_deref().unwrap_or("utc")),
    ]);
    args
}

/// The board's firmware: UEFI's code and a copy of its variables as pflash, or a ROM image.
fn firmware_arguments(qemu: &Qemu, paths: &VmPaths) -> Vec<String> {
    let code = qemu.firmware.code.display();
    match qemu.firmware.vars {
        Some(_) => vec![
            "-drive".into(),
            format!("if=pflash,format=raw,readonly=on,file={code}"),
            "-drive".into(),
            format!("if=pflash,format=raw,file={}", paths.vars.display()),
        ],
        None => vec!["-bios".into(), code.to_string()],
    }
}

/// The image as the board's disk, its network card (with the boot file from DHCP, and a
/// TFTP folder, for a network boot) and its watchdog.
fn device_arguments(
    config: &VmConfig,
    qemu: &Qemu,
    api_port: u16,
    forwarded: &[(u16, u16)],
    netboot: Option<&NetworkBoot>,
) -> Vec<String> {
    let mut netdev =
        format!("user,id=net0,hostfwd=tcp:127.0.0.1:{api_port}-:{}", cairn_api::API_PORT);
    for (guest, host) in forwarded {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
    }
    if let Some(netboot) = netboot {
        netdev.push_str(&format!(",bootfile={}", netboot.bootfile));
        if let Some(dir) = &netboot.tftp_dir {
            netdev.push_str(&format!(",tftp={}", dir.display()));
        }
    }
    if config.offline {
        netdev.push_str(",restrict=on");
    }
    let mut args = Vec::new();
    if let Some(disk) = &config.disk {
        let drive = format!("file={},format=raw,if={}", disk.display(), qemu.disk.qemu_name());
        args.extend(["-drive".to_string(), drive]);
    }
    args.extend([
        "-netdev".into(),
        netdev,
        "-device".into(),
        format!("{},netdev=net0", qemu.network),
    ]);
    if let Some(watchdog) = &qemu.watchdog {
        // When machined stops feeding it, it resets the machine (QEMU's default action).
        args.extend(["-device".into(), watchdog.clone()]);
    }
    if let Some(rng) = &qemu.rng {
        args.extend(["-device".into(), rng.clone()]);
    }
    args
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last 40 lines of a console, for error messages.
/// Waits until `marker` appears in the console log `console` after byte `from`, for at most
/// `timeout`, while `exited` says the emulator still runs; returns where the marker ends.
pub fn wait_for_marker(
    console: &Path,
    marker: &str,
    from: usize,
    timeout: Duration,
    mut exited: impl FnMut() -> Result<Option<ExitStatus>, QemuError>,
) -> Result<usize, QemuError> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = String::from_utf8_lossy(&fs::read(console).unwrap_or_default()).into_owned();
        if let Some(at) = text.get(from..).and_then(|rest| rest.find(marker)) {
            return Ok(from + at + marker.len());
        }
        if let Some(status) = exited()? {
            return Err(QemuError::Exited { status, marker: marker.into(), tail: tail(&text) });
        }
        if Instant::now() > deadline {
            return Err(QemuError::Timeout { marker: marker.into(), timeout, tail: tail(&text) });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

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

    fn generic_x86_64() -> Board {
        let overlays = Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays");
        Board::load(&overlays, "generic-x86_64").unwrap()
    }

    fn config(board: Board, dir: &Path) -> VmConfig {
        VmConfig {
            disk: Some(dir.join("x.raw")),
            board,
            memory_mib: 512,
            work_dir: dir.into(),
            own_process_group: false,
            rtc_base: None,
            forwards: vec![8080],
            offline: true,
        }
    }

    fn paths_in(dir: &Path) -> VmPaths {
        VmPaths {
            vars: dir.join("vars.fd"),
            console: dir.join("console.log"),
            qmp_socket: dir.join("qmp.sock"),
        }
    }

    #[test]
    fn the_command_line_follows_the_board() {
        let dir = Path::new("/w");
        let config = config(generic_x86_64(), dir);
        let paths = paths_in(dir);
        let forwarded = [(8080, 4000)];
        let qemu = config.board.qemu.as_ref().unwrap();
        let args = arguments(&config, qemu, Boot::Image, &paths, 3000, &forwarded).join(" ");
        assert_eq!(
            args,
            "-M q35 -m 512 -smp 2 -nographic -no-user-config -accel tcg -rtc base=utc \
             -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
             -drive if=pflash,format=raw,file=/w/vars.fd -drive file=/w/x.raw,format=raw,if=virtio \
             -netdev user,id=net0,hostfwd=tcp:127.0.0.1:3000-:50000,\
             hostfwd=tcp:127.0.0.1:4000-:8080,restrict=on -device virtio-net-pci,netdev=net0 \
             -device i6300esb -device virtio-rng-pci -serial file:/w/console.log -monitor none \
             -qmp unix:/w/qmp.sock,server=on,wait=off"
        );

        let mut board = generic_x86_64();
        let described = board.qemu.as_mut().unwrap();
        described.cpu = Some("max".into());
        described.watchdog = None;
        let config = VmConfig { rtc_base: Some("2000-01-01".into()), ..config };
        let args = arguments(&config, described, Boot::Image, &paths, 3000, &forwarded).join(" ");
        assert!(args.starts_with("-M q35 -cpu max -m 512 "), "{args}");
        assert!(args.contains(" -rtc base=2000-01-01 ") && !args.contains("i6300esb"), "{args}");
    }

    #[test]
    fn a_direct_kernel_boots_on_the_same_machine_and_devices_without_firmware() {
        let dir = Path::new("/w");
        let config = config(generic_x86_64(), dir);
        let paths = paths_in(dir);
        let kernel = DirectKernel {
            kernel: "/k/vmlinuz".into(),
            initramfs: "/k/initrd".into(),
            command_line: "console=ttyS0 quiet".into(),
        };
        let qemu = config.board.qemu.as_ref().unwrap();
        let args = arguments(&config, qemu, Boot::Kernel(&kernel), &paths, 3000, &[]);
        assert_eq!(
            args.join(" "),
            "-M q35 -m 512 -smp 2 -nographic -no-user-config -accel tcg -rtc base=utc \
             -kernel /k/vmlinuz -initrd /k/initrd -append console=ttyS0 quiet -no-reboot \
             -drive file=/w/x.raw,format=raw,if=virtio \
             -netdev user,id=net0,hostfwd=tcp:127.0.0.1:3000-:50000,restrict=on \
             -device virtio-net-pci,netdev=net0 -device i6300esb -device virtio-rng-pci \
             -serial file:/w/console.log -monitor none -qmp unix:/w/qmp.sock,server=on,wait=off"
        );
        assert_eq!(
            args[args.iter().position(|a| a == "-append").unwrap() + 1],
            "console=ttyS0 quiet"
        );
    }

    #[test]
    fn a_network_boot_has_no_disk_and_gets_its_bootfile_from_dhcp() {
        let dir = Path::new("/w");
        let config = VmConfig { disk: None, offline: false, ..config(generic_x86_64(), dir) };
        let netboot =
            NetworkBoot { bootfile: "http://10.0.2.2:8000/boot.ipxe".into(), tftp_dir: None };
        let qemu = config.board.qemu.as_ref().unwrap();
        let args = arguments(&config, qemu, Boot::Network(&netboot), &paths_in(dir), 3000, &[]);
        assert_eq!(
            args.join(" "),
            "-M q35 -m 512 -smp 2 -nographic -no-user-config -accel tcg -rtc base=utc \
             -boot order=n -netdev user,id=net0,hostfwd=tcp:127.0.0.1:3000-:50000,\
             bootfile=http://10.0.2.2:8000/boot.ipxe -device virtio-net-pci,netdev=net0 \
             -device i6300esb -device virtio-rng-pci \
             -serial file:/w/console.log -monitor none -qmp unix:/w/qmp.sock,server=on,wait=off"
        );
    }

    #[test]
    fn a_uboot_board_boots_its_firmware_and_gets_a_tftp_folder() {
        let dir = Path::new("/w");
        let overlays = Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays");
        let board = Board::load(&overlays, "qemu-arm64").unwrap();
        let config =
            VmConfig { disk: None, offline: false, forwards: vec![], ..config(board, dir) };
        let netboot =
            NetworkBoot { bootfile: "boot.scr.uimg".into(), tftp_dir: Some("/w/tftp".into()) };
        let qemu = config.board.qemu.as_ref().unwrap();
        let args = arguments(&config, qemu, Boot::Network(&netboot), &paths_in(dir), 3000, &[]);
        let args = args.join(" ");
        assert!(
            args.contains(
                " -bios /usr/lib/u-boot/qemu_arm64/u-boot.bin -netdev user,id=net0,\
             hostfwd=tcp:127.0.0.1:3000-:50000,bootfile=boot.scr.uimg,tftp=/w/tftp "
            ),
            "{args}"
        );
        assert!(!args.contains("-boot order=n"), "{args}");
    }

    #[test]
    fn a_board_without_qemu_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let board = Board { qemu: None, ..generic_x86_64() };
        assert!(matches!(
            Vm::start(&config(board, dir.path())),
            Err(QemuError::NotEmulated(name)) if name == "generic-x86_64"
        ));
    }
}
