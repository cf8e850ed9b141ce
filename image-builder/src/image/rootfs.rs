//! The root filesystem step: the base layout, the profile's files with their libraries
//! ([`crate::rootfs`]), machined, the image's time floor, keys and token, the rootfs
//! modules and the preloaded container images, as a squashfs ([`crate::squashfs`]).

use std::path::PathBuf;

use cairn_api::arch::Arch;
use cairn_api::image::{
    BOOTLOADER_PATH, BOOTSTRAP_TOKEN_PATH, MACHINED_PATH, TIME_FLOOR_PATH, UPDATE_KEYS_PATH,
};

use super::kernel::Kernel;
use super::outputs::PreloadedImage;
use super::{ImageError, ImageInputs};
use crate::deb::{self, unpack_into, DebError};
use crate::packages::PackageSet;
use crate::preload::{self, PreloadInputs};
use crate::profile::multiarch;
use crate::rootfs;
use crate::squashfs;
use crate::tree::FileTree;

/// A built root filesystem.
pub struct RootFs {
    /// The squashfs.
    pub image: Vec<u8>,
    /// The container images it carries.
    pub images: Vec<PreloadedImage>,
    /// The time floor it gives its nodes' clocks, seconds since 1970.
    pub time_floor: u64,
}

/// Every file of the build's packages, with the links of a merged /usr: what the root
/// filesystem and the boot partition take their files from.
pub fn unpack_packages(packages: &PackageSet, arch: Arch) -> Result<FileTree, ImageError> {
    let mut pool = FileTree::new();
    for fetched in &packages.packages {
        unpack_into(&fetched.deb, &mut pool, |_| true)?;
    }
    for (link, target) in merged_usr_links(arch) {
        if pool.get(link).is_none() {
            pool.symlink(link, target)?;
        }
    }
    Ok(pool)
}

/// The root filesystem of the image `inputs` describe, from `pool`.
pub fn build(
    inputs: &ImageInputs<'_>,
    pool: &FileTree,
    kernel: &Kernel,
    machined: Vec<u8>,
    pause: &[u8],
) -> Result<RootFs, ImageError> {
    let arch = inputs.board.arch;
    let mut root = base_layout(arch, inputs.version, &inputs.board.name)?;
    let library_dirs = vec![format!("/usr/lib/{}", multiarch(arch)), "/usr/lib".to_string()];
    rootfs::take_with_libraries(pool, &mut root, &inputs.profile.files_for(arch), &library_dirs)?;
    rootfs::add_links(&mut root, &inputs.profile.links_for(arch))?;
    root.file(rootfs::CA_BUNDLE, 0o644, rootfs::ca_bundle(pool))?;
    root.file(MACHINED_PATH, 0o755, machined)?;
    let time_floor = time_floor(inputs)?;
    root.file(TIME_FLOOR_PATH, 0o644, format!("{time_floor}\n"))?;
    let bootloader = inputs.board.boot.bootloader.name();
    root.file(BOOTLOADER_PATH, 0o644, format!("{bootloader}\n"))?;
    if let Some(token) = inputs.bootstrap_token {
        root.file(BOOTSTRAP_TOKEN_PATH, 0o400, token.expose().as_bytes().to_vec())?;
    }
    if let Some(update) = &inputs.update {
        root.file(UPDATE_KEYS_PATH, 0o644, format!("{}\n", update.key.public().to_base64()))?;
    }
    kernel.add_modules(&mut root, &kernel.rootfs_modules)?;
    let listed: Vec<PathBuf> =
        inputs.profile.images.iter().chain(&inputs.board.images).cloned().collect();
    let archives = preload::build(&PreloadInputs {
        arch,
        pause,
        packages: pool,
        archives: &listed,
        epoch: u64::from(inputs.mtime),
    })?;
    let mut images = Vec::new();
    for archive in archives {
        for image in &archive.images {
            images.push(PreloadedImage {
                name: image.name.clone(),
                archive: archive.path.clone(),
                archive_bytes: archive.bytes.len() as u64,
                manifest_digest: image.digest.to_string(),
            });
        }
        root.file(&archive.path, 0o644, archive.bytes)?;
    }
    let image = squashfs::build(&root, inputs.mtime)?;
    Ok(RootFs { image, images, time_floor })
}

/// The image's time floor: the one given, else the build date of the newest package (fixed
/// for a given package set, and earlier than any time the image can boot at).
fn time_floor(inputs: &ImageInputs<'_>) -> Result<u64, DebError> {
    if let Some(given) = inputs.time_floor {
        return Ok(given);
    }
    let mut newest = 0;
    for fetched in std::iter::once(&inputs.packages.kernel).chain(&inputs.packages.packages) {
        newest = newest.max(deb::built_at(&fetched.deb)?);
    }
    Ok(newest)
}

/// The links of a merged /usr (Debian's layout since bookworm; no package ships them).
fn merged_usr_links(arch: Arch) -> Vec<(&'static str, &'static str)> {
    let mut links = vec![("/bin", "usr/bin"), ("/sbin", "usr/sbin"), ("/lib", "usr/lib")];
    if arch == Arch::X86_64 {
        // The x86_64 ELF interpreter is /lib64/ld-linux-x86-64.so.2.
        links.push(("/lib64", "usr/lib64"));
    }
    links
}

/// Directories, mount points and the merged-/usr links every root filesystem has, and the
/// os-release naming the system's `version` and `board` (the updater checks bundles
/// against both).
fn base_layout(arch: Arch, version: &str, board: &str) -> Result<FileTree, ImageError> {
    let mut root = FileTree::new();
    for dir in [
        "/dev",
        "/proc",
        "/sys",
        "/run",
        "/tmp",
        "/var",
        "/system/state",
        "/etc/ssl/certs",
        "/usr/bin",
        "/usr/sbin",
        "/usr/lib",
    ] {
        root.dir(dir, if dir == "/tmp" { 0o1777 } else { 0o755 })?;
    }
    for (link, target) in merged_usr_links(arch) {
        root.symlink(link, target)?;
    }
    // machined writes the resolvers it learns (DHCP, config) on /run.
    root.symlink("/etc/resolv.conf", "../run/resolv.conf")?;
    // containerd gives every pod a copy (with the pod's own name added).
    root.file(
        "/etc/hosts",
        0o644,
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )?;
    root.file(
        "/etc/os-release",
        0o644,
        format!(
            "NAME=Cairn\nID=cairn\nVERSION_ID={version}\nVARIANT_ID={board}\n\
             PRETTY_NAME=\"Cairn {version}\"\n"
        ),
    )?;
    Ok(root)
}
