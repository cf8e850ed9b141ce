//! The netboot step, for boards with `[netboot]`: in `netboot/`, the kernel (`vmlinuz`), an
//! initramfs that carries the root squashfs (`initramfs.img`) and the loader's script. A
//! node booted from them is diskless: stage 1 mounts the squashfs from the initramfs once it
//! has the SHA-256 the command line names ([`ROOT_SHA256_ARG`]).

use std::path::{Path, PathBuf};

use cairn_api::arch::Arch;
use cairn_api::board::{Netboot, NetbootLoader};
use cairn_api::bundle::hex;
use cairn_api::image::{
    CONFIG_SHA256_ARG, CONFIG_URL_ARG, INITRAMFS_ROOT_PATH, ROOT_ARG, ROOT_IN_INITRAMFS,
    ROOT_SHA256_ARG,
};
use sha2::{Digest, Sha256};

use super::outputs::SlotArtifacts;
use super::ImageError;
use crate::initramfs;
use crate::serve::{CONFIG_ARGS_VARIABLE, CONFIG_SCRIPT, UBOOT_CONFIG_FILE, UBOOT_CONFIG_VARIABLE};
use crate::tree::FileTree;
use crate::uboot;

/// The folder of the netboot files in the build's output.
pub const NETBOOT_DIR: &str = "netboot";
const KERNEL: &str = "vmlinuz";
const INITRAMFS: &str = "initramfs.img";
/// The iPXE script, beside the kernel and the initramfs it fetches.
pub const IPXE_SCRIPT: &str = "boot.ipxe";
/// The U-Boot script, under the name U-Boot's distro boot asks TFTP for after DHCP.
pub const UBOOT_SCRIPT: &str = "boot.scr.uimg";

/// What the script says of the system it boots.
pub struct Described<'a> {
    /// The system's version.
    pub version: &'a str,
    /// The board's name.
    pub board: &'a str,
    /// The board's architecture.
    pub arch: Arch,
}

/// Writes `output/netboot/` for `slot`'s files; returns the files written.
pub fn write(
    netboot: &Netboot,
    described: &Described<'_>,
    slot: &SlotArtifacts<'_>,
    mtime: u32,
    output: &Path,
) -> Result<Vec<PathBuf>, ImageError> {
    let dir = output.join(NETBOOT_DIR);
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let mut kernel_args = root_args(slot.rootfs);
    kernel_args.extend(slot.kernel_args.iter().cloned());
    let script = match netboot.loader {
        NetbootLoader::Ipxe => (IPXE_SCRIPT, ipxe_script(described, &kernel_args).into_bytes()),
        NetbootLoader::UBoot => {
            let source = uboot_script(described, &kernel_args);
            let image = uboot::netboot_script(described.arch, &source)
                .map_err(|e| ImageError::Netboot(format!("{UBOOT_SCRIPT}: {e}")))?;
            (UBOOT_SCRIPT, image)
        }
    };
    let files = [
        (KERNEL, slot.kernel.to_vec()),
        (INITRAMFS, initramfs_with_root(slot.initramfs, slot.rootfs, mtime)?),
        script,
    ];
    let mut written = Vec::new();
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(io_error(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// The kernel arguments that name the root in the initramfs, with its hash.
fn root_args(rootfs: &[u8]) -> Vec<String> {
    vec![
        format!("{ROOT_ARG}={ROOT_IN_INITRAMFS}"),
        format!("{ROOT_SHA256_ARG}={}", hex(&Sha256::digest(rootfs))),
    ]
}

/// An uncompressed cpio holding the root squashfs, then the image's compressed initramfs:
/// the kernel unpacks one archive after the other into the same tree (as it does an early
/// microcode archive), and squashfs compresses the root already.
fn initramfs_with_root(initramfs: &[u8], rootfs: &[u8], mtime: u32) -> Result<Vec<u8>, ImageError> {
    let mut root = FileTree::new();
    root.file(INITRAMFS_ROOT_PATH, 0o400, rootfs.to_vec())?;
    let mut bytes = initramfs::cpio_newc(&root, mtime)?;
    bytes.extend_from_slice(initramfs);
    Ok(bytes)
}

/// `boot.ipxe`: fetches the kernel and the initramfs from where the script came from.
fn ipxe_script(described: &Described<'_>, kernel_args: &[String]) -> String {
    let Described { version, board, .. } = described;
    format!(
        "#!ipxe\n\
         # Cairn {version} for {board}, diskless: the root squashfs is inside {INITRAMFS}, and\n\
         # stage 1 mounts it only if it has the SHA-256 {ROOT_SHA256_ARG}= names. STATE and\n\
         # EPHEMERAL are memory: the node starts in maintenance mode at every boot, waiting\n\
         # for `ctl apply-config`; new versions are installed here, not by `ctl upgrade`.\n\
         # A script that sets {CONFIG_ARGS_VARIABLE} to `{CONFIG_URL_ARG}=URL {CONFIG_SHA256_ARG}=HEX`\n\
         # before chaining this one (`image-builder serve --config` serves {CONFIG_SCRIPT}) makes\n\
         # the node take that config once its network is up, if it has that SHA-256\n\
         # (an https:// URL whose server a public CA vouches for may leave the hash out).\n\
         kernel {KERNEL} initrd={INITRAMFS} {} ${{{CONFIG_ARGS_VARIABLE}}}\n\
         initrd {INITRAMFS}\n\
         boot\n",
        kernel_args.join(" ")
    )
}

/// `boot.scr.uimg`'s source: loads the kernel and the initramfs by TFTP from the server
/// the script came from, and the config's kernel arguments from [`UBOOT_CONFIG_FILE`] if the
/// server has one. The file is loaded where the kernel goes next, not over this script.
/// `booti` starts an arm64 Image; on a 32-bit U-Boot it is absent or fails, and `bootz`
/// starts the zImage.
fn uboot_script(described: &Described<'_>, kernel_args: &[String]) -> String {
    let Described { version, board, .. } = described;
    format!(
        "# Cairn {version} for {board}, diskless: U-Boot's distro boot runs this script when it\n\
         # finds no disk to boot, after DHCP, from the TFTP server DHCP named. The root squashfs\n\
         # is inside {INITRAMFS}, and stage 1 mounts it only if it has the SHA-256\n\
         # {ROOT_SHA256_ARG}= names. STATE and EPHEMERAL are memory (unless the config names a\n\
         # disk for EPHEMERAL): the node starts afresh at every boot; new versions are\n\
         # installed here, not by `ctl upgrade`.\n\
         # A file {UBOOT_CONFIG_FILE} beside this one holding the line\n\
         #   {UBOOT_CONFIG_VARIABLE}={CONFIG_URL_ARG}=URL {CONFIG_SHA256_ARG}=HEX\n\
         # (`image-builder serve --config` prints it) makes the node take that config once its\n\
         # network is up, if it has that SHA-256. Without it the node waits for\n\
         # `ctl apply-config` in maintenance mode.\n\
         setenv {UBOOT_CONFIG_VARIABLE}\n\
         if tftpboot ${{kernel_addr_r}} {UBOOT_CONFIG_FILE}; then\n\
         \x20 env import -t ${{kernel_addr_r}} ${{filesize}} {UBOOT_CONFIG_VARIABLE}\n\
         fi\n\
         setenv bootargs \"{} ${{{UBOOT_CONFIG_VARIABLE}}}\"\n\
         echo \"cairn-netboot: ${{bootargs}}\"\n\
         if tftpboot ${{kernel_addr_r}} {KERNEL} && tftpboot ${{ramdisk_addr_r}} {INITRAMFS}; then\n\
         \x20 booti ${{kernel_addr_r}} ${{ramdisk_addr_r}}:${{filesize}} ${{fdtcontroladdr}}\n\
         \x20 bootz ${{kernel_addr_r}} ${{ramdisk_addr_r}}:${{filesize}} ${{fdtcontroladdr}}\n\
         fi\n\
         echo \"cairn-netboot: could not load or start the kernel\"\n",
        kernel_args.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_boots_the_kernel_with_the_roots_hash() {
        let args = root_args(b"squashfs");
        let script = ipxe_script(
            &Described { version: "1.2.3", board: "generic-x86_64", arch: Arch::X86_64 },
            &[args, vec!["console=ttyS0".into()]].concat(),
        );
        let lines: Vec<&str> = script.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "kernel vmlinuz initrd=initramfs.img cairn.root=initramfs cairn.root.sha256=\
                 5cce3f70c6cb9f62ab53e322fa3975d02128080e1341e41de3a8dd3712cf1607 console=ttyS0 \
                 ${cairn-config}",
                "initrd initramfs.img",
                "boot",
            ][..]
        );
        assert!(script.starts_with("#!ipxe\n# Cairn 1.2.3 for generic-x86_64, diskless"));
    }

    #[test]
    fn the_uboot_script_loads_the_config_line_then_boots_the_kernel_with_the_roots_hash() {
        let described = Described { version: "1.2.3", board: "qemu-arm64", arch: Arch::Arm64 };
        let args = [root_args(b"squashfs"), vec!["console=ttyAMA0,115200".into()]].concat();
        let script = uboot_script(&described, &args);
        let lines: Vec<&str> = script.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "setenv cairn_config",
                "if tftpboot ${kernel_addr_r} cairn-config.txt; then",
                "  env import -t ${kernel_addr_r} ${filesize} cairn_config",
                "fi",
                "setenv bootargs \"cairn.root=initramfs cairn.root.sha256=\
                 5cce3f70c6cb9f62ab53e322fa3975d02128080e1341e41de3a8dd3712cf1607 \
                 console=ttyAMA0,115200 ${cairn_config}\"",
                "echo \"cairn-netboot: ${bootargs}\"",
                "if tftpboot ${kernel_addr_r} vmlinuz && tftpboot ${ramdisk_addr_r} initramfs.img; then",
                "  booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}",
                "  bootz ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}",
                "fi",
                "echo \"cairn-netboot: could not load or start the kernel\"",
            ][..]
        );
        assert!(script.starts_with("# Cairn 1.2.3 for qemu-arm64, diskless"));
        let image = uboot::netboot_script(Arch::Arm64, &script).unwrap();
        assert!(image.ends_with(script.as_bytes()));
        assert_eq!(
            crate::serve::uboot_config_line("10.0.2.2:8080", "ab"),
            "cairn_config=cairn.config=http://10.0.2.2:8080/config.yaml cairn.config.sha256=ab\n"
        );
    }

    #[test]
    fn the_initramfs_carries_the_root_before_the_images_own_archive() {
        let bytes = initramfs_with_root(b"compressed", b"root bytes", 7).unwrap();
        let mut root = FileTree::new();
        root.file("/root.squashfs", 0o400, b"root bytes".to_vec()).unwrap();
        let cpio = initramfs::cpio_newc(&root, 7).unwrap();
        assert_eq!(bytes, [cpio.as_slice(), b"compressed"].concat());
        assert_eq!(cpio.len() % 4, 0, "the next archive starts aligned");
    }
}
