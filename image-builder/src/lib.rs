//! image-builder: turns Debian packages and a machined binary into Cairn images.
//!
//! - [`tree`]: a file tree in memory, the common input of every image format.
//! - [`apt`]: Debian packages through the host's apt, with an isolated state per
//!   architecture (the host's dpkg state is never touched; apt verifies signatures).
//! - [`profile`]: profiles, the packages and files every image carries, as data (boards
//!   are `cairn_api::board`).
//! - [`packages`]: the package set of a build, resolved, locked and downloaded.
//! - [`lockfile`]: the versions and SHA-256s a build used, and will use again.
//! - [`deb`]: unpacking `.deb` files.
//! - [`executable`]: the static-executable check every program without libraries passes.
//! - [`toolchain`]: the compilers for a board's architecture (cross builds: a rustup target or
//!   Debian's rustc 1.85, and Debian's cross gcc), or what is missing and how to get it.
//! - [`machined`]: machined and pause built static for the board's architecture, and checked.
//! - [`rootfs`]: the files taken from packages, with the libraries they need.
//! - [`initramfs`]: deterministic newc cpio archives, zstd-compressed.
//! - [`squashfs`]: deterministic squashfs root filesystems.
//! - [`oci`]: OCI image-layout archives, written deterministically and checked when read.
//! - [`busybox`]: the files of the busybox container image, applets read from the binary.
//! - [`preload`]: the container images every image carries (pause, busybox, listed archives).
//! - [`signing`]: the key pair update bundles are signed with, and offline bundle checks.
//! - [`uboot`]: the U-Boot boot script of ARM boards, as U-Boot's `source` reads it.
//! - [`disk`]: GPT disk images with a boot partition (FAT32) and root slots.
//! - [`flash`]: an image written to an SD card, USB stick or file, refused where that would
//!   be a mistake, and read back and compared.
//! - [`image`]: all of the above, assembled step by step into a bootable disk image, an
//!   update bundle and a report.

pub mod apt;
pub mod busybox;
pub mod deb;
pub mod disk;
pub mod executable;
pub mod flash;
pub mod image;
pub mod initramfs;
pub mod lockfile;
pub mod machined;
pub mod oci;
pub mod packages;
pub mod preload;
pub mod profile;
pub mod rootfs;
pub mod serve;
pub mod signing;
pub mod squashfs;
pub mod toolchain;
pub mod tree;
pub mod uboot;

/// The last component of `path`, for messages and names taken from host paths ("" for none).
pub(crate) fn file_name(path: &std::path::Path) -> String {
    path.file_name().unwrap_or_default().to_string_lossy().into_owned()
}
