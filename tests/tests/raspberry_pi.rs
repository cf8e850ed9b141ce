//! The Raspberry Pi images as a Pi's firmware will find them (overlays/rpi-arm64 and
//! rpi-armv7): built by image-builder, then read back independently of it. The hybrid MBR
//! lists the boot partition as FAT32 where the firmware looks; the GPT holds the boot
//! partition and the root slots by label; the boot partition holds the firmware, config.txt,
//! U-Boot for every model config.txt names, Cairn's boot script and environment, the models'
//! device trees, and slot A's kernel and initramfs as the build report describes them; ROOT-A
//! holds the report's squashfs.
//!
//! Then both images boot under QEMU to machined's API in maintenance mode, as far as QEMU's
//! Pis go:
//! - the 64-bit image on `raspi3b`, a Pi 3 Model B: QEMU loads U-Boot and the device tree from
//!   the image's boot partition as the Pi's firmware would, and U-Boot runs the boot script
//!   from the SD card;
//! - the 32-bit image on `raspi2b`, a Pi 2 Model B, from slot A's kernel, initramfs and
//!   command line on the card, which QEMU loads with the Pi 2's device tree from the card:
//!   QEMU does not run the 32-bit U-Boots. `rpi_2` stops on `raspi2b` ("Loading Environment
//!   from FAT... ### ERROR ### Please RESET the board ###") and `rpi_3_32b` prints nothing on
//!   `raspi3b`.
//!
//! Nothing reaches the API: QEMU's USB network device does not enumerate under Linux's dwc2
//! driver (`dwc2 ... Not connected`). And QEMU's model of the Pi's watchdog resets the machine
//! the moment one is armed (it models the reset, not the countdown), so the images booted here
//! leave the watchdog's driver unloaded.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_api::disk::boot_entry::slot_command_line;
use cairn_api::disk::hybrid_mbr;
use cairn_api::disk::uboot_state::{ScriptState, ENV_COPIES};
use cairn_api::image::{Slot, ESP_LABEL, ROOT_A_LABEL, ROOT_B_LABEL};
use cairn_qemu::{wait_for_marker, QemuError};
use cairn_tests::boards::{Board, RPI_ARM64, RPI_ARMV7};
use cairn_tests::disk::{fat_file, file_in_image, partition};
use cairn_tests::image_cache::{cached_build, ImageRequest};
use image_builder::uboot::{boot_script, BOOT_SCRIPT_PATH};
use sha2::{Digest, Sha256};

/// The magic number every flattened device tree starts with.
const FDT_MAGIC: [u8; 4] = [0xd0, 0x0d, 0xfe, 0xed];

#[test]
fn rpi_arm64_image_has_what_the_firmware_and_u_boot_need() {
    check_image(&RPI_ARM64, &["u-boot.bin"], &["start4.elf", "fixup4.dat"]);
}

#[test]
fn rpi_armv7_image_has_what_the_firmware_and_u_boot_need() {
    check_image(&RPI_ARMV7, &["u-boot-rpi2.bin", "u-boot-rpi3.bin"], &[]);
}

/// Builds `board`'s image (or takes it from the cache) and checks it, with `u_boots` the
/// U-Boot binaries its config.txt loads and `more_firmware` its firmware beyond the Pi 3's.
fn check_image(board: &Board, u_boots: &[&str], more_firmware: &[&str]) {
    let request = ImageRequest { board, bootstrap_token: None, signing_key: None, extra_args: &[] };
    let output = cached_build(&request).unwrap();
    let report: toml::Value =
        toml::from_str(&std::fs::read_to_string(output.join("report.toml")).unwrap()).unwrap();
    let disk = output.join(board.image());
    let description = board.description();

    // The MBR the firmware reads lists the boot partition, where the GPT has it.
    let (boot_offset, boot_bytes) = partition(&disk, ESP_LABEL).unwrap();
    let mut lba0 = [0u8; 512];
    std::fs::File::open(&disk).unwrap().read_exact(&mut lba0).unwrap();
    assert!(hybrid_mbr::is_hybrid(&lba0), "{}: LBA 0 is no hybrid MBR", disk.display());
    let entry = &lba0[446..462];
    let sector = |at: usize| u64::from(u32::from_le_bytes(entry[at..at + 4].try_into().unwrap()));
    assert_eq!(entry[4], hybrid_mbr::FAT32_LBA);
    assert_eq!((sector(8) * 512, sector(12) * 512), (boot_offset, boot_bytes));
    for label in [ROOT_A_LABEL, ROOT_B_LABEL] {
        partition(&disk, label).unwrap();
    }

    let file = |path: &str| {
        fat_file(&disk, ESP_LABEL, path)
            .unwrap()
            .unwrap_or_else(|| panic!("{}: no {path} on the boot partition", board.name))
    };
    // The firmware: the Pi 3's second stage and GPU firmware, and the Pi 4's where it boots.
    for name in ["bootcode.bin", "start.elf", "fixup.dat"].iter().chain(more_firmware) {
        assert!(file(name).len() > 1000, "{name} is too small to be the firmware");
    }
    let config = String::from_utf8(file("config.txt")).unwrap();
    let board_config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../overlays")
        .join(board.name)
        .join("config.txt");
    assert_eq!(config, std::fs::read_to_string(board_config).unwrap());
    assert!(config.contains("enable_uart=1") && config.contains("upstream_kernel=1"), "{config}");
    assert_eq!(config.contains("arm_64bit=1"), board.arch().name() == "arm64", "{config}");
    for u_boot in u_boots {
        assert!(config.contains(&format!("kernel={u_boot}")), "config.txt loads no {u_boot}");
        let binary = file(u_boot);
        let banner = b"U-Boot 20";
        assert!(binary.windows(banner.len()).any(|w| w == banner), "{u_boot} is no U-Boot");
    }
    assert_eq!(file(BOOT_SCRIPT_PATH), boot_script(board.arch()).unwrap());
    let state = ScriptState::parse(&file(ENV_COPIES[0])).unwrap();
    assert_eq!(state, ScriptState::parse(&file(ENV_COPIES[1])).unwrap());
    assert_eq!((state.boots(), state.trial), (Slot::A, None));
    for tree in &description.boot.device_trees {
        let name = tree.rsplit('/').next().unwrap();
        assert_eq!(file(name)[..4], FDT_MAGIC, "{name} is no device tree");
    }

    // Slot A's kernel and initramfs, as the report describes them.
    let kernel = file("/cairn/a/vmlinuz");
    let release = report["kernel"].as_str().unwrap();
    match board.arch().name() {
        // An arm64 Image: its magic, and the release in its banner.
        "arm64" => {
            assert_eq!(&kernel[56..60], b"ARM\x64");
            let banner = format!("Linux version {release}");
            assert!(kernel.windows(banner.len()).any(|w| w == banner.as_bytes()), "{release}");
        }
        // A zImage (compressed: its banner is not readable), by its magic.
        _ => assert_eq!(kernel[0x24..0x28], [0x18, 0x28, 0x6f, 0x01]),
    }
    let initramfs = file("/cairn/a/initramfs.zst");
    assert_eq!(initramfs.len() as u64, report["initramfs_bytes"].as_integer().unwrap() as u64);
    assert_eq!(String::from_utf8(file("/cairn/a/version")).unwrap(), "0.1.0\n");
    let cmdline = state.kernel_args(Slot::A).unwrap_or_default().join(" ");
    assert!(cmdline.contains("cgroup_enable=memory cgroup_memory=1"), "{cmdline}");
    assert!(cmdline.contains(&format!("console={}", description.console.serial)), "{cmdline}");

    // ROOT-A's squashfs is the report's, and knows it boots through U-Boot.
    assert_eq!(file_in_image(&disk, "/usr/lib/cairn/bootloader").unwrap(), b"u-boot\n");
    let outputs = report["outputs"].as_array().unwrap();
    let raw = outputs.iter().find(|o| o["name"].as_str() == Some(&board.image())).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(&disk).unwrap(), &mut hasher).unwrap();
    assert_eq!(raw["sha256"].as_str().unwrap(), cairn_api::bundle::hex(&hasher.finalize()));
    let (image_mib, boot_mib) = (raw["bytes"].as_integer().unwrap() >> 20, boot_bytes >> 20);
    println!("{}: a {image_mib} MiB image, a {boot_mib} MiB boot partition", board.name);
}

/// A QEMU process, killed when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The markers of a first boot to the maintenance API, in the order they appear: U-Boot's
/// boot script, the kernel, machined.
const FIRST_BOOT: [&str; 6] = [
    "cairn-boot: booting slot a",
    "Booting Linux",
    "machined[stage1]: slot A: root ROOT-A is /dev/mmcblk0p2",
    "created STATE and EPHEMERAL",
    "maintenance mode: API certificate fingerprint",
    "API listening on",
];

#[test]
fn rpi_arm64_boots_to_the_maintenance_api_under_qemu_raspi3b() {
    let args = ["--extra-kernel-args", "module_blacklist=bcm2835_wdt"];
    let card = SdCard::of(&RPI_ARM64, &args);
    // What the Pi's firmware hands over: U-Boot, and the model's device tree.
    let load = [
        "-kernel".into(),
        card.boot_file("u-boot.bin").into(),
        "-dtb".into(),
        card.boot_file("bcm2837-rpi-3-b.dtb").into(),
    ];
    // The Pi 3's serial port on GPIO 14/15 is its mini UART, QEMU's second serial port.
    card.boot("qemu-system-aarch64", "raspi3b", 1, &load, &FIRST_BOOT);
}

/// QEMU does not get the 32-bit U-Boots going (the module's doc says how far they get), so
/// it loads what the boot script would: slot A's kernel, initramfs and command line from the
/// card, with the Pi 2's device tree. Everything after U-Boot is the image's own.
#[test]
fn rpi_armv7_boots_to_the_maintenance_api_under_qemu_raspi2b() {
    let card = SdCard::of(&RPI_ARMV7, &[]);
    let state = ScriptState::parse(&card.file(ENV_COPIES[0])).unwrap();
    let args = state.kernel_args(Slot::A).expect("slot A's command line");
    // A Pi 2 has no mini UART console (ttyS1, the Pi 3's): with it named last, /dev/console
    // is not the serial port and stage 1's lines would not show. And the image the
    // structural test checks, with the watchdog's driver refused here rather than in the
    // build (see the module's doc).
    let mut kept: Vec<String> =
        args.iter().filter(|a| !a.starts_with("console=ttyS1")).cloned().collect();
    kept.push("module_blacklist=bcm2835_wdt".into());
    let cmdline = slot_command_line(Slot::A, &kept);
    let load = [
        "-kernel".into(),
        card.boot_file("/cairn/a/vmlinuz").into(),
        "-initrd".into(),
        card.boot_file("/cairn/a/initramfs.zst").into(),
        "-dtb".into(),
        card.boot_file("bcm2836-rpi-2-b.dtb").into(),
        "-append".into(),
        cmdline.into(),
    ];
    // The Pi 2's serial port on GPIO 14/15 is its PL011, QEMU's first serial port.
    card.boot("qemu-system-arm", "raspi2b", 0, &load, &FIRST_BOOT[1..]);
}

/// A board's image on an SD card for QEMU, in a directory of its own.
struct SdCard {
    dir: tempfile::TempDir,
    card: PathBuf,
}

impl SdCard {
    /// `board`'s image built with `build_args` (or taken from the cache), on a card.
    fn of(board: &Board, build_args: &[&str]) -> SdCard {
        let request = ImageRequest {
            board,
            bootstrap_token: None,
            signing_key: None,
            extra_args: build_args,
        };
        let image = cached_build(&request).unwrap().join(board.image());
        let dir = tempfile::tempdir().unwrap();
        // QEMU's SD cards are a power of two in size: a 4 GiB card, the image at its start.
        let card = dir.path().join("sd.raw");
        std::fs::copy(&image, &card).unwrap();
        std::fs::File::options().write(true).open(&card).unwrap().set_len(4 << 30).unwrap();
        SdCard { dir, card }
    }

    /// The file at `path` on the card's boot partition.
    fn file(&self, path: &str) -> Vec<u8> {
        fat_file(&self.card, ESP_LABEL, path)
            .unwrap()
            .unwrap_or_else(|| panic!("no {path} on the boot partition"))
    }

    /// The file at `path` on the card's boot partition, copied out for QEMU to load.
    fn boot_file(&self, path: &str) -> PathBuf {
        let copy = self.dir.path().join(path.rsplit('/').next().unwrap());
        std::fs::write(&copy, self.file(path)).unwrap();
        copy
    }

    /// Boots the card on QEMU's `machine` with `load` (what QEMU loads in place of the Pi's
    /// firmware) and waits for `markers` in turn on the serial port numbered `serial`.
    fn boot(&self, qemu: &str, machine: &str, serial: usize, load: &[OsString], markers: &[&str]) {
        let console = self.dir.path().join("console.log");
        let mut command = Command::new(qemu);
        command.args(["-M", machine, "-m", "1G", "-smp", "4", "-accel", "tcg"]).args(load);
        command.arg("-drive").arg(format!("file={},if=sd,format=raw", self.card.display()));
        for port in 0..=serial {
            command.arg("-serial");
            match port == serial {
                true => command.arg(format!("file:{}", console.display())),
                false => command.arg("null"),
            };
        }
        let child = command
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{qemu} (qemu-system-arm): {e}"));
        let mut qemu = Qemu(child);
        let started = Instant::now();
        let mut from = 0;
        for marker in markers {
            let exited =
                || qemu.0.try_wait().map_err(|e| QemuError::Io { what: "qemu".into(), source: e });
            from = wait_for_marker(&console, marker, from, Duration::from_secs(900), exited)
                .unwrap_or_else(|e| panic!("{e}"));
            println!("{machine}: {marker:?} after {:.1?}", started.elapsed());
        }
    }
}
