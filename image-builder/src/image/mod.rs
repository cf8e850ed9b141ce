//! Assembling an image from fetched packages and the machined and pause binaries, as a
//! pipeline of steps, one module each: [`kernel`] (its modules resolved), [`initramfs`],
//! [`rootfs`] (with the preloaded container images), [`boot_files`] (the boot partition as
//! the board's `[boot]` describes it), the disk ([`crate::disk`], laid out by the board's
//! `[disk]`), [`netboot`] (a diskless node's files, for boards with `[netboot]`), and
//! [`outputs`] (`.raw.zst`, update bundle, report). Every step is
//! deterministic: same inputs, same bytes.

pub mod boot_files;
pub mod initramfs;
pub mod kernel;
pub mod netboot;
pub mod outputs;
pub mod rootfs;

use std::io;
use std::path::{Path, PathBuf};

use cairn_api::board::Board;
use cairn_api::bootstrap::BootstrapToken;
use cairn_api::bundle::SigningKey;
use kernel_config::module_index::ModuleError;

use crate::apt::AptError;
use crate::deb::DebError;
use crate::disk::{self, DiskError, DiskLayout};
use crate::initramfs::InitramfsError;
use crate::machined::{self, MachinedError, Program};
use crate::packages::PackageSet;
use crate::preload::PreloadError;
use crate::profile::Profile;
use crate::rootfs::RootfsError;
use crate::signing::SigningError;
use crate::squashfs::SquashfsError;
use crate::tree::TreeError;

use boot_files::{BootSources, SlotA};
use kernel::Kernel;
use outputs::SlotArtifacts;
pub use outputs::{BuildReport, OutputFile, PackageUsed, PreloadedImage};

/// An image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading inputs or writing outputs failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The kernel package is not as expected.
    #[error("kernel package: {0}")]
    Kernel(String),
    /// The boot partition's bootloader files could not be made.
    #[error("boot partition: {0}")]
    BootPartition(String),
    /// The network loader's script could not be made.
    #[error("netboot: {0}")]
    Netboot(String),
    /// The kernel lacks what Cairn needs.
    #[error("the kernel does not meet Cairn's requirements:\n  {}", .0.join("\n  "))]
    UnfitKernel(Vec<String>),
    /// A package could not be unpacked.
    #[error(transparent)]
    Deb(#[from] DebError),
    /// Modules could not be resolved.
    #[error(transparent)]
    Modules(#[from] ModuleError),
    /// Root filesystem content could not be taken.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// A tree refused a path.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The initramfs could not be written.
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    /// The squashfs could not be written.
    #[error(transparent)]
    Squashfs(#[from] SquashfsError),
    /// The disk could not be written.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// machined or pause is unfit for the image.
    #[error(transparent)]
    Machined(#[from] MachinedError),
    /// The container images could not be made.
    #[error(transparent)]
    Preload(#[from] PreloadError),
    /// Hashing an output failed.
    #[error(transparent)]
    Hash(#[from] AptError),
    /// The update bundle could not be written.
    #[error(transparent)]
    Signing(#[from] SigningError),
}

/// What a build takes.
pub struct ImageInputs<'a> {
    /// The board.
    pub board: &'a Board,
    /// The profile.
    pub profile: &'a Profile,
    /// The fetched packages.
    pub packages: &'a PackageSet,
    /// machined, static, built for the board's architecture.
    pub machined: &'a Path,
    /// pause, static, built for the board's architecture.
    pub pause: &'a Path,
    /// The time every file carries (SOURCE_DATE_EPOCH).
    pub mtime: u32,
    /// The image's time floor ([`cairn_api::image::TIME_FLOOR_PATH`]), seconds since 1970:
    /// SOURCE_DATE_EPOCH when given; `None` takes the build date of the newest package.
    pub time_floor: Option<u64>,
    /// A bootstrap token: the node then takes its first config only from a client that
    /// proves it knows it.
    pub bootstrap_token: Option<&'a BootstrapToken>,
    /// The system's version (semver), in `/etc/os-release` and update bundles.
    pub version: &'a str,
    /// Kernel arguments after the board's, in the boot entry and the bundle.
    pub extra_kernel_args: &'a [String],
    /// With a signing key, the image trusts its public half for updates and the build also
    /// writes `cairn-<arch>-<version>.bundle`, signed with it.
    pub update: Option<UpdateSigning<'a>>,
}

/// How a build signs its update bundle.
pub struct UpdateSigning<'a> {
    /// The key.
    pub key: &'a SigningKey,
    /// The oldest running version the bundle may replace.
    pub min_version: &'a str,
}

/// Builds the image into `output` (`cairn-<arch>.raw`, `.raw.zst`, `report.toml`), using
/// `scratch` for intermediate files.
pub fn build(
    inputs: &ImageInputs<'_>,
    output: &Path,
    scratch: &Path,
) -> Result<BuildReport, ImageError> {
    let board = inputs.board;
    let arch = board.arch;
    std::fs::create_dir_all(output)
        .map_err(|source| ImageError::Io { path: output.into(), source })?;

    let kernel = Kernel::load(&inputs.packages.kernel, arch, scratch)?;
    let machined = machined::load(inputs.machined, Program::Machined, arch)?;
    let pause = machined::load(inputs.pause, Program::Pause, arch)?;
    let initramfs = initramfs::build(&kernel, &machined, inputs.mtime)?;
    let pool = rootfs::unpack_packages(inputs.packages, arch)?;
    let root = rootfs::build(inputs, &pool, &kernel, machined, &pause)?;

    let kernel_args: Vec<String> =
        board.kernel_args().into_iter().chain(inputs.extra_kernel_args.iter().cloned()).collect();
    let slot_a = SlotA {
        version: inputs.version,
        kernel: kernel.image()?,
        initramfs: &initramfs,
        kernel_args: &kernel_args,
    };
    let device_tree = |path: &str| kernel.device_tree(path);
    let sources = BootSources { packages: &pool, device_tree: &device_tree };
    let boot_partition = boot_files::build(arch, &board.boot, &sources, &slot_a)?;

    let raw = output.join(format!("cairn-{arch}.raw"));
    let layout = DiskLayout::for_board(arch, &board.disk);
    disk::write(&raw, &layout, &boot_partition, &root.image, inputs.mtime)?;

    let artifacts = SlotArtifacts {
        kernel: slot_a.kernel,
        initramfs: &initramfs,
        rootfs: &root.image,
        kernel_args: &kernel_args,
    };
    let mut written = outputs::write(inputs, raw, &artifacts, output)?;
    if let Some(netboot) = &board.netboot {
        let described =
            netboot::Described { version: inputs.version, board: &board.name, arch: board.arch };
        written.extend(netboot::write(netboot, &described, &artifacts, inputs.mtime, output)?);
    }
    let report = BuildReport {
        arch: arch.name().to_string(),
        source_date_epoch: inputs.mtime,
        time_floor: root.time_floor,
        initramfs_bytes: initramfs.len() as u64,
        initramfs_modules: kernel.initramfs_modules.len(),
        rootfs_bytes: root.image.len() as u64,
        rootfs_modules: kernel.rootfs_modules.len(),
        bootstrap_token: inputs.bootstrap_token.is_some(),
        outputs: outputs::describe(&written, output)?,
        images: root.images,
        packages: outputs::packages_used(inputs),
        kernel: kernel.release,
    };
    outputs::write_report(&report, output)?;
    Ok(report)
}
