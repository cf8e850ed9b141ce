//! Boot times side by side in one run, as figures (issue 19's goals beside them, PASS or
//! MISS, never an assertion): the image's own kernel, initramfs and command line with a
//! trivial `/init` (the floor), against Cairn's second boot to the maintenance API, a
//! configured node's boot to its mTLS API and to its pods Ready, and a fresh disk's first
//! boot to the API, each from QEMU's start, on the board's machine with the same disk and
//! network. Like for like, QEMU loads the kernel directly in all of them, as the bootloader
//! would; one more row boots as a user's VM does, through OVMF and systemd-boot, to show
//! what the firmware adds.
//!
//! `cargo bench -p cairn-tests --bench boot`; `CAIRN_BENCH_RUNS` sets the runs of each (3);
//! `CAIRN_BENCH_KEEP=DIR` keeps every boot's console (`DIR/run-N/<boot>/console.log`), and
//! the configured boot's kubelet and containerd logs beside its console
//! (`DIR/run-N/configured/<service>.log`), to see where a boot's time went.
//! Needs what the QEMU suite needs (qemu-system-x86, ovmf, qemu-utils, the Debian archive).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cairn_api::image::Slot;
use cairn_qemu::{DirectKernel, Vm, VmConfig};
use cairn_tests::boards::{Board, PowerOn, GENERIC_X86_64};
use cairn_tests::boot_figures::{kernel_starts, Figures, Measure, Run};
use cairn_tests::disk::NodeDisk;
use cairn_tests::floor::{self, BootFiles};
use cairn_tests::image_cache::{self, ImageRequest};
use cairn_tests::pods::{self, WEB_POD};
use cairn_tests::sntp::{Server, ServerClock};
use cairn_tests::{bin_dir, ctl, ctl_command, fingerprint_in, Cluster};

/// The variable that sets how many times each boot runs.
const RUNS_VARIABLE: &str = "CAIRN_BENCH_RUNS";
/// The variable that names a directory to keep the runs' consoles and disks in.
const KEEP_VARIABLE: &str = "CAIRN_BENCH_KEEP";

/// What machined prints once its API listens (then `ctl` is tried).
const API_LISTENING: &str = "API listening on 0.0.0.0:50000";

/// The pods the configured node runs: the QEMU suite's `web`, from the image's own busybox.
const CONFIGURED_PODS: [&str; 1] = ["web"];

/// Longest wait for any one boot: a failed run, not a hung bench.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    // cargo runs this program as the workspace's rustc wrapper while it builds trivial-init.
    if let Some(e) = image_builder::machined::run_as_rustc_wrapper() {
        eprintln!("running rustc: {e}");
        return ExitCode::FAILURE;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boot bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let board = &GENERIC_X86_64;
    let runs: usize = match std::env::var(RUNS_VARIABLE) {
        Ok(value) => value.parse().with_context(|| format!("{RUNS_VARIABLE}={value:?}"))?,
        Err(_) => 3,
    };
    let request = ImageRequest { board, bootstrap_token: None, signing_key: None, extra_args: &[] };
    let build = image_cache::cached_build(&request)?;
    let image = build.join(board.image());
    let scratch = tempfile::tempdir_in(bin_dir().parent().context("the target dir")?)?;
    let keep_dir = std::env::var_os(KEEP_VARIABLE).map(PathBuf::from);
    let work = keep_dir.as_deref().unwrap_or(scratch.path());
    let boot_files = BootFiles::read(&image, &board.description().disk.boot_label, Slot::A)?;
    let init = floor::trivial_init(board.arch())?;
    let floor = boot_files.write_with_init(&init, &work.join("floor"))?;
    let cairn = boot_files.write(&work.join("cairn"))?;
    let time_server = Server::start("127.0.0.1:0".parse()?, ServerClock::Ahead(Duration::ZERO))?;
    let cluster = Cluster::generate("bench")?;

    let mut figures = Figures::default();
    let mut configured: Option<PathBuf> = None;
    for i in 0..runs {
        let dir = work.join(format!("run-{i}"));
        eprintln!("boot bench: run {} of {runs}", i + 1);
        std::fs::create_dir_all(&dir)?;
        let disk = NodeDisk::copy(&image, &dir.join("disk.raw"), board.disk_bytes)?;
        // The floor sees the same devices, the fresh disk among them: the kernel reads none.
        record(&mut figures, Measure::TrivialInit, floor_boot(board, &floor, &disk, &dir));
        let first = boot_to_maintenance(board, &disk, &dir.join("first"), Boot::Direct(&cairn));
        record(&mut figures, Measure::FirstBoot, first.map(powered_off));
        let through_firmware = boot_to_maintenance(board, &disk, &dir.join("fw"), Boot::Firmware);
        record(&mut figures, Measure::FirmwareMaintenanceApi, through_firmware.map(powered_off));
        let again = boot_to_maintenance(board, &disk, &dir.join("again"), Boot::Direct(&cairn));
        let mut again_vm = None;
        record(
            &mut figures,
            Measure::MaintenanceApi,
            again.map(|(run, vm)| {
                again_vm = Some(vm);
                run
            }),
        );
        if let Some(mut vm) = again_vm {
            if configured.is_none() {
                // The node every configured boot starts from: this disk, configured.
                let server = format!("10.0.2.2:{}", time_server.address().port());
                match configure(&mut vm, &cluster, &server) {
                    Ok(()) => {
                        let kept = work.join("configured.raw");
                        std::fs::rename(disk.raw().context("a raw disk")?, &kept)?;
                        configured = Some(kept);
                    }
                    Err(e) => eprintln!("boot bench: configuring the node: {e:#}"),
                }
            } else {
                power_off(&mut vm);
            }
        }
        match &configured {
            Some(configured) => {
                let (api, ready) =
                    configured_boot(board, configured, &cairn, &cluster.admin(), &dir);
                record(&mut figures, Measure::ConfiguredApi, api);
                record(&mut figures, Measure::PodsReady, ready);
            }
            None => {
                eprintln!("boot bench: no configured node, so no configured boots");
                figures.record_failure(Measure::ConfiguredApi);
                figures.record_failure(Measure::PodsReady);
            }
        }
        if keep_dir.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let machine = board.description().qemu.as_ref().context("[qemu]")?;
    println!(
        "Boot times of {} under TCG (QEMU -M {}, {} vCPUs, {} MiB), wall time from QEMU's \
         start, {runs} run(s) each; the kernel booted directly by QEMU unless said:\n",
        board.name, machine.machine, machine.cpus, board.memory_mib
    );
    println!("{}", figures.table());
    Ok(())
}

/// Adds a run, or a failure (said on stderr).
fn record(figures: &mut Figures, measure: Measure, run: anyhow::Result<Run>) {
    match run {
        Ok(run) => figures.record(measure, run),
        Err(e) => {
            eprintln!("boot bench: {}: {e:#}", measure.label());
            figures.record_failure(measure);
        }
    }
}

/// How a boot starts.
#[derive(Clone, Copy)]
enum Boot<'a> {
    /// The board's firmware and bootloader, as a user's VM does.
    Firmware,
    /// QEMU loads the slot's kernel and initramfs with its command line itself, as the floor.
    Direct(&'a DirectKernel),
}

impl Boot<'_> {
    fn start(self, config: &VmConfig) -> anyhow::Result<Vm> {
        Ok(match self {
            Boot::Firmware => Vm::start(config)?,
            Boot::Direct(kernel) => Vm::start_kernel(config, kernel)?,
        })
    }
}

/// The floor: `kernel` with trivial-init, until its marker is on the console.
fn floor_boot(
    board: &Board,
    kernel: &DirectKernel,
    disk: &NodeDisk,
    dir: &Path,
) -> anyhow::Result<Run> {
    let config = board.vm_config(disk.qemu_image(), &dir.join("floor"), &[], PowerOn::Offline);
    let started = Instant::now();
    let mut vm = Vm::start_kernel(&config, kernel)?;
    vm.wait_for(floor::MARKER, 0, BOOT_TIMEOUT)?;
    let run = Run { took: started.elapsed(), kernel_starts: kernel_starts(&vm.console()) };
    if vm.wait_exit(Duration::from_secs(30))?.is_none() {
        eprintln!("boot bench: the trivial init did not power off; QEMU is killed");
    }
    Ok(run)
}

/// Powers the node off with its power button, as a user would before booting it again.
fn power_off(vm: &mut Vm) {
    if let Err(e) = vm.stop(Duration::from_secs(60)) {
        eprintln!("boot bench: powering off: {e}");
    }
}

/// A run whose VM is then powered off.
fn powered_off((run, mut vm): (Run, Vm)) -> Run {
    power_off(&mut vm);
    run
}

/// Boots `disk` until `ctl version` answers in maintenance mode; returns the run and the VM.
fn boot_to_maintenance(
    board: &Board,
    disk: &NodeDisk,
    dir: &Path,
    boot: Boot<'_>,
) -> anyhow::Result<(Run, Vm)> {
    let config = board.vm_config(disk.qemu_image(), dir, &[], PowerOn::Online);
    let started = Instant::now();
    let mut vm = boot.start(&config)?;
    let run = wait_api(&mut vm, started, None, "maintenance")
        .with_context(|| format!("console:\n{}", vm.console()))?;
    Ok((run, vm))
}

/// Waits for the API's marker on `vm`'s console, then until `ctl version` (with `ctlconfig`,
/// else `--insecure`) answers with `mode` in it; the run counts from `started`.
fn wait_api(
    vm: &mut Vm,
    started: Instant,
    ctlconfig: Option<&Path>,
    mode: &str,
) -> anyhow::Result<Run> {
    vm.wait_for(API_LISTENING, 0, BOOT_TIMEOUT)?;
    let n = vm.api_address.clone();
    let args: &[&str] = match ctlconfig {
        Some(_) => &["-n", &n, "version"],
        None => &["--insecure", "-n", &n, "version"],
    };
    poll(started, Duration::from_millis(100), || answers(ctlconfig, args, mode))
        .with_context(|| format!("ctl version did not answer {mode:?}"))?;
    Ok(Run { took: started.elapsed(), kernel_starts: kernel_starts(&vm.console()) })
}

/// How long one `ctl version` of [`wait_api`] may take. A call made before the node has its
/// address does not fail: QEMU's user network holds the connection and retries the guest with
/// TCP's backoff (1 s, then 3 s...), so one early call would measure that backoff, not the node.
const ATTEMPT_LIMIT: Duration = Duration::from_millis(500);

/// Whether ctl with `args` prints `mode` within [`ATTEMPT_LIMIT`] (it is killed after that).
fn answers(ctlconfig: Option<&Path>, args: &[&str], mode: &str) -> bool {
    let mut command = ctl_command(ctlconfig, args);
    let Ok(mut child) = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn() else {
        return false;
    };
    let deadline = Instant::now() + ATTEMPT_LIMIT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stdout = String::new();
            let read = child.stdout.take().map(|mut out| out.read_to_string(&mut stdout));
            return status.success() && read.is_some_and(|r| r.is_ok()) && stdout.contains(mode);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Calls `check` every `every` until it holds, up to [`BOOT_TIMEOUT`] after `started`.
fn poll(started: Instant, every: Duration, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    while started.elapsed() < BOOT_TIMEOUT {
        if check() {
            return Ok(());
        }
        std::thread::sleep(every);
    }
    bail!("not within {BOOT_TIMEOUT:?}")
}

/// Applies the first config to the node in maintenance mode on `vm` (pinned to the
/// fingerprint on its console): time from `time_server`, the `web` pod. Waits for the pods,
/// then shuts the node down.
fn configure(vm: &mut Vm, cluster: &Cluster, time_server: &str) -> anyhow::Result<()> {
    let config = cluster.node_config_with("bench.yaml", |text| {
        let text = text + &format!("  time: {{servers: [\"{time_server}\"]}}\n");
        pods::with_pods(&text, WEB_POD)
    });
    let n = vm.api_address.clone();
    let fingerprint = fingerprint_in(&vm.console()).context("no fingerprint on the console")?;
    let config = config.to_str().context("a UTF-8 path")?;
    let pin = ["--insecure", "--fingerprint", &fingerprint, "-n", &n];
    let applied = ctl(None, &[&pin[..], &["apply-config", "-f", config]].concat());
    anyhow::ensure!(applied.success, "apply-config failed: {}", applied.stderr);
    let admin = cluster.admin();
    poll(Instant::now(), Duration::from_millis(500), || {
        pods::all_ready(&pods::pods(&admin, &n), &CONFIGURED_PODS)
    })
    .with_context(|| format!("the pods did not get Ready; console:\n{}", vm.console()))?;
    let shutdown = ctl(Some(&admin), &["-n", &n, "shutdown"]);
    anyhow::ensure!(shutdown.success, "ctl shutdown failed: {}", shutdown.stderr);
    vm.wait_exit(Duration::from_secs(120))?.context("QEMU did not exit after the shutdown")?;
    Ok(())
}

/// Boots an overlay of the configured disk until the mTLS API answers, configured, then
/// until every configured pod is Ready.
fn configured_boot(
    board: &Board,
    configured: &Path,
    kernel: &DirectKernel,
    admin: &Path,
    dir: &Path,
) -> (anyhow::Result<Run>, anyhow::Result<Run>) {
    let boot = || -> anyhow::Result<(Vm, Instant, Run)> {
        let disk = NodeDisk::overlay(configured, &dir.join("configured.qcow2"))?;
        let config =
            board.vm_config(disk.qemu_image(), &dir.join("configured"), &[], PowerOn::Online);
        let started = Instant::now();
        let mut vm = Vm::start_kernel(&config, kernel)?;
        let run = wait_api(&mut vm, started, Some(admin), "configured")
            .with_context(|| format!("console:\n{}", vm.console()))?;
        Ok((vm, started, run))
    };
    let (vm, started, api) = match boot() {
        Ok(booted) => booted,
        Err(e) => return (Err(e), Err(anyhow::anyhow!("no API, so no pods"))),
    };
    let n = vm.api_address.clone();
    let ready = poll(started, Duration::from_millis(500), || {
        pods::all_ready(&pods::pods(admin, &n), &CONFIGURED_PODS)
    })
    .map(|()| Run { took: started.elapsed(), kernel_starts: kernel_starts(&vm.console()) })
    .with_context(|| {
        format!("{:?} not Ready: {}", CONFIGURED_PODS, ctl(Some(admin), &["-n", &n, "pods"]).stdout)
    });
    // What the kubelet and containerd did meanwhile, with their times, beside the console.
    for service in ["kubelet", "containerd"] {
        let logs = ctl(Some(admin), &["-n", &n, "logs", service]).stdout;
        let _ = std::fs::write(dir.join("configured").join(format!("{service}.log")), logs);
    }
    (Ok(api), ready)
}
