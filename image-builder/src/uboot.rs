//! The U-Boot boot script of ARM boards (DESIGN §2), kept as hush source in
//! `uboot/boot.cmd`, and its image as U-Boot's `source` reads it: what
//! `mkimage -A <arch> -O linux -T script -C none -n <name> -d boot.cmd` writes, with the
//! time stamp 0 (as `SOURCE_DATE_EPOCH=0`) so images are reproducible.
//!
//! Written here rather than by `mkimage`: 64 bytes of header do not need u-boot-tools on
//! every host that builds an image, and the tests compare them with `mkimage`'s.

use cairn_api::arch::Arch;

/// The script's source.
pub const BOOT_SCRIPT_SOURCE: &str = include_str!("uboot/boot.cmd");
/// Where U-Boot's distro boot looks for the script on the boot partition.
pub const BOOT_SCRIPT_PATH: &str = "/boot.scr";

/// The name in the script image's header.
const NAME: &str = "Cairn A/B boot";
/// The name in a diskless node's script image's header.
const NETBOOT_NAME: &str = "Cairn netboot";
/// A legacy image's magic number.
const MAGIC: u32 = 0x2705_1956;
/// `IH_OS_LINUX`.
const OS_LINUX: u8 = 5;
/// `IH_TYPE_SCRIPT`.
const TYPE_SCRIPT: u8 = 6;
/// `IH_COMP_NONE`.
const COMPRESSION_NONE: u8 = 0;
/// The header's size; the name field is its last 32 bytes.
const HEADER_SIZE: usize = 64;

/// U-Boot's code for `arch` (`IH_ARCH_*`), for the architectures U-Boot boots Cairn on.
fn uboot_arch(arch: Arch) -> anyhow::Result<u8> {
    match arch {
        Arch::Arm64 => Ok(22),
        Arch::Armv7 => Ok(2),
        Arch::X86_64 => anyhow::bail!("x86_64 boots through UEFI, not a U-Boot script"),
    }
}

/// The boot script's image for `arch`.
pub fn boot_script(arch: Arch) -> anyhow::Result<Vec<u8>> {
    Ok(script_image(uboot_arch(arch)?, NAME, BOOT_SCRIPT_SOURCE.as_bytes()))
}

/// The image of a diskless node's script, `source`, for `arch`.
pub fn netboot_script(arch: Arch, source: &str) -> anyhow::Result<Vec<u8>> {
    Ok(script_image(uboot_arch(arch)?, NETBOOT_NAME, source.as_bytes()))
}

/// A legacy script image of `script` for U-Boot architecture `arch`, named `name`: the
/// header (big-endian, its CRC computed with its own field zero), then the script as a
/// one-part multi-file payload (its length, a zero length ending the list, the script).
fn script_image(arch: u8, name: &str, script: &[u8]) -> Vec<u8> {
    let length = u32::try_from(script.len()).expect("a boot script is smaller than 4 GiB");
    let mut data = Vec::with_capacity(8 + script.len());
    data.extend_from_slice(&length.to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(script);
    let mut header = Vec::with_capacity(HEADER_SIZE);
    header.extend_from_slice(&MAGIC.to_be_bytes());
    header.extend_from_slice(&0u32.to_be_bytes()); // header CRC, below
    header.extend_from_slice(&0u32.to_be_bytes()); // time stamp
    header.extend_from_slice(&(data.len() as u32).to_be_bytes());
    header.extend_from_slice(&0u32.to_be_bytes()); // load address
    header.extend_from_slice(&0u32.to_be_bytes()); // entry point
    header.extend_from_slice(&crc32fast::hash(&data).to_be_bytes());
    header.extend_from_slice(&[OS_LINUX, arch, TYPE_SCRIPT, COMPRESSION_NONE]);
    header.extend_from_slice(name.as_bytes());
    header.resize(HEADER_SIZE, 0);
    let crc = crc32fast::hash(&header);
    header[4..8].copy_from_slice(&crc.to_be_bytes());
    header.extend_from_slice(&data);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SOURCE_DATE_EPOCH=0 mkimage -A arm64 -O linux -T script -C none -n "Cairn A/B boot"`
    /// of `echo hi\n` (u-boot-tools 2023.01).
    #[test]
    fn a_script_image_is_mkimages() {
        let expected: &[u8] = &[
            0x27, 0x05, 0x19, 0x56, 0xe0, 0xb1, 0x63, 0x8d, 0, 0, 0, 0, 0, 0, 0, 0x10, //
            0, 0, 0, 0, 0, 0, 0, 0, 0xd9, 0x34, 0x01, 0x62, 0x05, 0x16, 0x06, 0x00, //
            b'C', b'a', b'i', b'r', b'n', b' ', b'A', b'/', b'B', b' ', b'b', b'o', b'o', b't', 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
            0, 0, 0, 8, 0, 0, 0, 0, b'e', b'c', b'h', b'o', b' ', b'h', b'i', b'\n',
        ];
        assert_eq!(script_image(22, NAME, b"echo hi\n"), expected);
    }

    /// The real script, against `mkimage` itself where u-boot-tools is installed.
    #[test]
    fn the_boot_script_matches_mkimage_when_it_is_installed() {
        let image = boot_script(Arch::Arm64).unwrap();
        assert_eq!(&image[HEADER_SIZE + 8..], BOOT_SCRIPT_SOURCE.as_bytes());
        assert_eq!(boot_script(Arch::Armv7).unwrap()[29], 2);
        assert!(boot_script(Arch::X86_64).is_err());
        let dir = tempfile::tempdir().unwrap();
        let (source, output) = (dir.path().join("boot.cmd"), dir.path().join("boot.scr"));
        std::fs::write(&source, BOOT_SCRIPT_SOURCE).unwrap();
        let run = std::process::Command::new("mkimage")
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-n", NAME])
            .arg("-d")
            .arg(&source)
            .arg(&output)
            .output();
        match run {
            Ok(run) if run.status.success() => {
                assert_eq!(image, std::fs::read(&output).unwrap());
            }
            Ok(run) => panic!("mkimage failed: {}", String::from_utf8_lossy(&run.stderr)),
            Err(e) => eprintln!("mkimage not run ({e}): compared with recorded bytes only"),
        }
    }
}
