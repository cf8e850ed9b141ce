//! The netboot step, for boards with `[netboot]`: in `netboot/`, the kernel (`vmlinuz`), an
//! initramfs that carries the root squashfs (`initramfs.img`) and the loader's script. A
//! node booted from them is diskless: stage 1 mounts the squashfs from the initramfs once it
//! has the SHA-256 the command line names ([`ROOT_SHA256_ARG`]).

use std::path::{Path, PathBuf};

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
use crate::serve::{CONFIG_ARGS_VARIABLE, CONFIG_SCRIPT};
use crate::tree::FileTree;

/// The folder of the netboot files in the build's output.
pub const NETBOOT_DIR: &str = "netboot";
const KERNEL: &str = "vmlinuz";
const INITRAMFS: &str = "initramfs.img";
/// The iPXE script, beside the kernel and the initramfs it fetches.
pub const IPXE_SCRIPT: &str = "boot.ipxe";

/// What the script says of the system it boots.
pub struct Described<'a> {
    /// The system's version.
    pub version: &'a str,
    /// The board's name.
    pub board: &'a str,
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
        NetbootLoader::Ipxe => (IPXE_SCRIPT, ipxe_script(described, &kernel_args)),
    };
    let files = [
        (KERNEL, slot.kernel.to_vec()),
        (INITRAMFS, initramfs_with_root(slot.initramfs, slot.rootfs, mtime)?),
        (script.0, script.1.into_bytes()),
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
    let Described { version, board } = described;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_boots_the_kernel_with_the_roots_hash() {
        let args = root_args(b"squashfs");
        let script = ipxe_script(
            &Described { version: "1.2.3", board: "generic-x86_64" },
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
    fn the_initramfs_carries_the_root_before_the_images_own_archive() {
        let bytes = initramfs_with_root(b"compressed", b"root bytes", 7).unwrap();
        let mut root = FileTree::new();
        root.file("/root.squashfs", 0o400, b"root bytes".to_vec()).unwrap();
        let cpio = initramfs::cpio_newc(&root, 7).unwrap();
        assert_eq!(bytes, [cpio.as_slice(), b"compressed"].concat());
        assert_eq!(cpio.len() % 4, 0, "the next archive starts aligned");
    }
}
