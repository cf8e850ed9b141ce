//! Cairn's U-Boot boot script (image-builder's `uboot/boot.cmd`) under Debian's U-Boot for
//! QEMU's `virt` boards, on a disk laid out as image-builder lays it out, with both copies of
//! the environment (`cairn_api::disk::uboot_state`) written by the Rust code and read back
//! after each boot: U-Boot counts a trial down in the other copy, falls back to the other
//! slot once the tries ran out, and skips a torn copy.
//!
//! The slots' kernels are dummies: `booti`/`bootz` refuse them, and a trial that does not
//! start resets (QEMU runs with `-no-reboot`, so a reset ends it: one QEMU run per boot).
//! Real kernels boot through the same script in the QEMU suite's `qemu_arm64` and `qemu_armv7`
//! scenarios (tests/tests/boot.rs).
//!
//! Needs qemu-system-arm (both QEMU binaries) and u-boot-qemu (`cargo xtask test` installs
//! them). TCG only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cairn_api::arch::Arch;
use cairn_api::disk::entry_name::TryCounter;
use cairn_api::disk::partition_table::Mbr;
use cairn_api::disk::uboot_env::UbootEnv;
use cairn_api::disk::uboot_state::{InForce, ScriptState, ENV_COPIES};
use cairn_api::image::Slot;
use cairn_tests::disk::{fat_file, write_fat_file};
use image_builder::disk::DiskLayout;
use image_builder::tree::FileTree;
use image_builder::uboot::{boot_script, BOOT_SCRIPT_PATH};

/// The boot partition's label.
const BOOT_LABEL: &str = "BOOT";
/// How long one boot may take to reach the script's last marker under TCG.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// A kernel argument every slot boots with, to see in the script's markers.
const CONSOLE: &str = "console=ttyAMA0";

/// Held while a QEMU runs.
static ONE_QEMU: Mutex<()> = Mutex::new(());

/// QEMU's `virt` board with Debian's U-Boot for it.
struct Machine {
    arch: Arch,
    qemu: &'static str,
    machine: &'static str,
    cpu: &'static str,
    u_boot: &'static str,
}

const ARM64: Machine = Machine {
    arch: Arch::Arm64,
    qemu: "qemu-system-aarch64",
    machine: "virt",
    cpu: "cortex-a72",
    u_boot: "/usr/lib/u-boot/qemu_arm64/u-boot.bin",
};

const ARMV7: Machine = Machine {
    arch: Arch::Armv7,
    qemu: "qemu-system-arm",
    // No ECAM above 4 GiB, which a 32-bit guest cannot reach.
    machine: "virt,highmem=off",
    cpu: "cortex-a15",
    u_boot: "/usr/lib/u-boot/qemu_arm/u-boot.bin",
};

/// One boot under QEMU, its console going to a file.
struct Boot {
    child: Child,
    console: PathBuf,
    started: Instant,
}

impl Boot {
    /// Starts `machine`'s U-Boot on `disk` (virtio); a reset ends QEMU.
    fn start(machine: &Machine, disk: &Path, console: PathBuf) -> anyhow::Result<Boot> {
        let _ = std::fs::remove_file(&console);
        let child = Command::new(machine.qemu)
            .args(["-M", machine.machine, "-cpu", machine.cpu, "-accel", "tcg", "-m", "256"])
            .args(["-bios", machine.u_boot, "-nodefaults", "-display", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-drive")
            .arg(format!("if=none,format=raw,id=disk,file={}", disk.display()))
            .args(["-device", "virtio-blk-device,drive=disk"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} (install qemu-system-arm)", machine.qemu))?;
        Ok(Boot { child, console, started: Instant::now() })
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Waits for `marker` on the console, or for QEMU to end (a reset); returns the console.
    fn wait(&mut self, marker: &str) -> anyhow::Result<String> {
        loop {
            let console = self.console();
            if console.contains(marker) {
                return Ok(console);
            }
            if let Some(status) = self.child.try_wait()? {
                let console = self.console();
                if console.contains(marker) {
                    return Ok(console);
                }
                bail!("QEMU ended ({status}) before {marker:?}; console:\n{console}");
            }
            if self.started.elapsed() > BOOT_TIMEOUT {
                bail!("no {marker:?} within {BOOT_TIMEOUT:?}; console:\n{console}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) for QEMU to end by itself, as the script's reset ends it.
    fn wait_end(&mut self) -> anyhow::Result<()> {
        while self.child.try_wait()?.is_none() {
            if self.started.elapsed() > BOOT_TIMEOUT {
                bail!("QEMU did not end within {BOOT_TIMEOUT:?}; console:\n{}", self.console());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Boot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A disk as image-builder lays one out, its boot partition holding the script for
/// `arch`, `env` as copy 0, and dummy kernels and initramfs for both slots.
fn disk(path: &Path, arch: Arch, env: &ScriptState) -> anyhow::Result<()> {
    let mut files = FileTree::new();
    files.file(BOOT_SCRIPT_PATH, 0o644, boot_script(arch)?)?;
    files.file(ENV_COPIES[0], 0o644, env.render()?)?;
    for slot in ["a", "b"] {
        files.file(format!("/cairn/{slot}/vmlinuz"), 0o644, format!("not a kernel ({slot})"))?;
        files.file(format!("/cairn/{slot}/initramfs.zst"), 0o644, "not an initramfs")?;
    }
    let mib = 1 << 20;
    let layout = DiskLayout {
        arch,
        esp_label: BOOT_LABEL.into(),
        root_labels: ["ROOT-A".into(), "ROOT-B".into()],
        size_bytes: 44 * mib,
        esp_bytes: 40 * mib,
        root_slot_bytes: mib,
        // The Raspberry Pi boards' MBR: U-Boot must find the GPT's boot partition through it.
        mbr: Mbr::Hybrid,
    };
    image_builder::disk::write(path, &layout, &files, &[], 0)?;
    Ok(())
}

/// Both copies of the environment as they are on `disk`.
fn copies(disk: &Path) -> anyhow::Result<[Option<Vec<u8>>; 2]> {
    Ok([fat_file(disk, BOOT_LABEL, ENV_COPIES[0])?, fat_file(disk, BOOT_LABEL, ENV_COPIES[1])?])
}

/// The copy in force on `disk`, after checking that each copy U-Boot wrote is exactly what
/// the Rust code renders for it.
fn in_force(disk: &Path) -> anyhow::Result<InForce> {
    let copies = copies(disk)?;
    for bytes in copies.iter().flatten() {
        if let Ok(env) = UbootEnv::parse(bytes) {
            assert_eq!(&env.render()?, bytes, "U-Boot's export is not the Rust rendering");
        }
    }
    Ok(InForce::find([copies[0].as_deref(), copies[1].as_deref()])?)
}

/// The script's markers on `console`, in order.
fn markers(console: &str) -> Vec<&str> {
    console.lines().filter_map(|line| line.trim_end().strip_prefix("cairn-boot: ")).collect()
}

/// B on trial with three tries, A its fallback: U-Boot counts B's boots in alternate
/// copies, skips a torn copy, then boots A with no help; a blessed slot boots uncounted.
fn trial_counts_down_then_falls_back(machine: &Machine) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    let args = vec![CONSOLE.to_string()];
    let first = ScriptState {
        generation: 1,
        slot: Slot::B,
        trial: Some(TryCounter { left: 3, done: 0 }),
        kernel_args: [Some(args.clone()), Some(args)],
    };
    disk(&path, machine.arch, &first).unwrap();
    // One QEMU at a time: the host's cores are shared.
    let _one = ONE_QEMU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Boots once until `marker`; a trial that did not start then resets, which ends QEMU.
    let boot = |n: usize, marker: &str, resets: bool| -> String {
        let console = dir.path().join(format!("console-{n}.log"));
        let mut vm = Boot::start(machine, &path, console).unwrap();
        let text = vm.wait(marker).unwrap();
        let at = vm.started.elapsed().as_secs_f64();
        if resets {
            vm.wait_end().unwrap();
        }
        eprintln!("{} boot {n}: {marker:?} after {at:.1} s", machine.qemu);
        text
    };
    let trial = |left: u32, done: u32| Some(TryCounter { left, done });

    // Boot 1: the first try is counted in copy 1; the dummy kernel does not start: reset.
    let console = boot(1, "cairn-boot: slot b did not start", true);
    assert_eq!(
        markers(&console)[..2],
        ["cairn/env.1 is missing or damaged", "slot b, trial, 2 tries left"]
    );
    let found = in_force(&path).unwrap();
    assert_eq!((found.copy, found.state.generation, found.state.trial), (1, 2, trial(2, 1)));
    assert_eq!(ScriptState::parse(&copies(&path).unwrap()[0].clone().unwrap()).unwrap(), first);

    // A power cut tore copy 1 while it was written: copy 0 is in force again, and counted.
    let torn = vec![0xa5; 4096];
    write_fat_file(&path, BOOT_LABEL, ENV_COPIES[1], &torn).unwrap();
    let console = boot(2, "cairn-boot: slot b did not start", true);
    assert_eq!(
        markers(&console)[..2],
        ["cairn/env.1 is missing or damaged", "slot b, trial, 2 tries left"]
    );
    let found = in_force(&path).unwrap();
    assert_eq!((found.copy, found.state.generation, found.state.trial), (1, 2, trial(2, 1)));

    // Boots 3 and 4 use up the tries, alternating copies.
    for (n, left, copy) in [(3, 1, 0), (4, 0, 1)] {
        let console = boot(n, "cairn-boot: slot b did not start", true);
        assert!(markers(&console).contains(&&*format!("slot b, trial, {left} tries left")));
        let found = in_force(&path).unwrap();
        let done = 3 - left;
        assert_eq!((found.copy, found.state.trial), (copy, trial(left, done)), "boot {n}");
        assert_eq!(found.state.generation, u64::from(done) + 1);
    }

    // Boot 5: no tries left: A boots, and nothing is written.
    let before = copies(&path).unwrap();
    let console = boot(5, "cairn-boot: slot a did not start", false);
    let seen = markers(&console);
    assert!(seen.contains(&"trial of b failed, booting a"), "{seen:?}");
    assert!(seen.contains(&"booting slot a: cairn.slot=a console=ttyAMA0"), "{seen:?}");
    assert_eq!(copies(&path).unwrap(), before);
    let found = in_force(&path).unwrap();
    assert_eq!(found.state.boots(), Slot::A);

    // Boot 6: machined's next commit, A blessed with other arguments, in copy 0 at the next
    // generation: U-Boot takes it and boots A with nothing to count or write.
    let blessed = ScriptState {
        slot: Slot::A,
        trial: None,
        kernel_args: [Some(vec!["quiet".into()]), found.state.kernel_args[1].clone()],
        ..found.state.clone()
    };
    let (copy, bytes) = found.successor(&blessed).unwrap();
    assert_eq!(copy, ENV_COPIES[0]);
    write_fat_file(&path, BOOT_LABEL, copy, &bytes).unwrap();
    let before = copies(&path).unwrap();
    let console = boot(6, "cairn-boot: slot a did not start", false);
    assert_eq!(markers(&console)[..2], ["slot a", "booting slot a: cairn.slot=a quiet"]);
    assert_eq!(copies(&path).unwrap(), before);
}

#[test]
fn arm64_u_boot_counts_a_trial_down_and_falls_back() {
    trial_counts_down_then_falls_back(&ARM64);
}

#[test]
fn armv7_u_boot_counts_a_trial_down_and_falls_back() {
    trial_counts_down_then_falls_back(&ARMV7);
}
