//! The Raspberry Pi images as a Pi's firmware will find them (overlays/rpi-arm64 and
//! rpi-armv7): built by image-builder, then read back independently of it. The hybrid MBR
//! lists the boot partition as FAT32 where the firmware looks; the GPT holds the boot
//! partition and the root slots by label; the boot partition holds the firmware, config.txt,
//! U-Boot for every model config.txt names, Cairn's boot script and environment, the models'
//! device trees, and slot A's kernel and initramfs as the build report describes them; ROOT-A
//! holds the report's squashfs.
//!
//! Then the 64-bit image boots under QEMU's `raspi3b`, a Pi 3 Model B: QEMU loads U-Boot and
//! the device tree from the image's boot partition as the Pi's firmware would, U-Boot runs the
//! boot script from the SD card, and the console must show machined's API starting in
//! maintenance mode. That is as far as QEMU's Pi goes: its USB network device does not
//! enumerate under Linux's dwc2 driver (`dwc2 ... Not connected`), so nothing reaches the API,
//! and its model of the Pi's watchdog resets the machine the moment one is armed (it models
//! the reset, not the countdown), so the image booted here leaves the watchdog's driver
//! unloaded. The 32-bit image does not boot under QEMU: U-Boot's `rpi_2` stops on `raspi2b`
//! ("Loading Environment from FAT... ### ERROR ### Please RESET the board ###") and
//! `rpi_3_32b` prints nothing on `raspi3b`.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// The markers of a first boot to the maintenance API, in the order they appear.
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
    let request = ImageRequest {
        board: &RPI_ARM64,
        bootstrap_token: None,
        signing_key: None,
        extra_args: &args,
    };
    let output = cached_build(&request).unwrap();
    let image = output.join(RPI_ARM64.image());
    let dir = tempfile::tempdir().unwrap();
    // QEMU's SD cards are a power of two in size: a 4 GiB card, the image at its start.
    let card = dir.path().join("sd.raw");
    std::fs::copy(&image, &card).unwrap();
    std::fs::File::options().write(true).open(&card).unwrap().set_len(4 << 30).unwrap();
    // What the Pi's firmware hands over: U-Boot, and the model's device tree.
    let mut firmware = Vec::new();
    for name in ["u-boot.bin", "bcm2837-rpi-3-b.dtb"] {
        let path = dir.path().join(name);
        std::fs::write(&path, fat_file(&card, ESP_LABEL, name).unwrap().unwrap()).unwrap();
        firmware.push(path);
    }
    let console = dir.path().join("console.log");
    // The Pi 3's serial port on GPIO 14/15 is its mini UART, QEMU's second serial port.
    let child = Command::new("qemu-system-aarch64")
        .args(["-M", "raspi3b", "-m", "1G", "-smp", "4", "-accel", "tcg", "-kernel"])
        .arg(&firmware[0])
        .arg("-dtb")
        .arg(&firmware[1])
        .arg("-drive")
        .arg(format!("file={},if=sd,format=raw", card.display()))
        .args(["-serial", "null", "-serial"])
        .arg(format!("file:{}", console.display()))
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("qemu-system-aarch64 (qemu-system-arm)");
    let mut qemu = Qemu(child);
    let started = Instant::now();
    let mut from = 0;
    for marker in FIRST_BOOT {
        let exited =
            || qemu.0.try_wait().map_err(|e| QemuError::Io { what: "qemu".into(), source: e });
        from = wait_for_marker(&console, marker, from, Duration::from_secs(900), exited)
            .unwrap_or_else(|e| panic!("{e}"));
        println!("raspi3b: {marker:?} after {:.1?}", started.elapsed());
    }
}
