//! The outputs step: the disk image compressed (`.raw.zst`), the signed update bundle, and
//! the build report (`report.toml`) naming every output with its SHA-256.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use cairn_api::bundle::{ArtifactKind, BundleInfo};
use serde::Serialize;

use super::{ImageError, ImageInputs, UpdateSigning};
use crate::apt::sha256_file;
use crate::signing;

/// What a build made, for people and for CI.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// Architecture.
    pub arch: String,
    /// Kernel release.
    pub kernel: String,
    /// The time files carry.
    pub source_date_epoch: u32,
    /// The time floor the image gives its nodes' clocks, seconds since 1970.
    pub time_floor: u64,
    /// Initramfs size (compressed), bytes.
    pub initramfs_bytes: u64,
    /// Modules in the initramfs.
    pub initramfs_modules: usize,
    /// Root squashfs size, bytes.
    pub rootfs_bytes: u64,
    /// Modules on the root filesystem.
    pub rootfs_modules: usize,
    /// Whether the image holds a bootstrap token (never the token itself).
    pub bootstrap_token: bool,
    /// Output files.
    pub outputs: Vec<OutputFile>,
    /// The container images on the root filesystem, as OCI archives.
    pub images: Vec<PreloadedImage>,
    /// Packages used.
    pub packages: Vec<PackageUsed>,
}

/// One output file.
#[derive(Debug, Clone, Serialize)]
pub struct OutputFile {
    /// Its path in the output folder (`cairn-x86_64.raw`, `netboot/vmlinuz`).
    pub name: String,
    /// Size, bytes.
    pub bytes: u64,
    /// SHA-256.
    pub sha256: String,
}

/// One container image the image carries.
#[derive(Debug, Clone, Serialize)]
pub struct PreloadedImage {
    /// Its full name, e.g. `localhost/pause:latest`.
    pub name: String,
    /// The archive holding it, on the root filesystem.
    pub archive: String,
    /// The archive's size, bytes.
    pub archive_bytes: u64,
    /// The digest of its manifest (or index), `sha256:...`: what containerd lists it by.
    pub manifest_digest: String,
}

/// One package.
#[derive(Debug, Clone, Serialize)]
pub struct PackageUsed {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// SHA-256 of the `.deb`.
    pub sha256: String,
}

/// What an update bundle carries: one slot's boot and root files.
pub struct SlotArtifacts<'a> {
    /// The kernel image.
    pub kernel: &'a [u8],
    /// The compressed initramfs.
    pub initramfs: &'a [u8],
    /// The root squashfs.
    pub rootfs: &'a [u8],
    /// The slot's kernel command line after its own argument.
    pub kernel_args: &'a [String],
}

/// `raw.zst` beside the disk image `raw`, and with `inputs.update` the signed bundle of
/// `slot` in `output`: every file written, the disk image first.
pub fn write(
    inputs: &ImageInputs<'_>,
    raw: PathBuf,
    slot: &SlotArtifacts<'_>,
    output: &Path,
) -> Result<Vec<PathBuf>, ImageError> {
    let zst = raw.with_extension("raw.zst");
    compress(&raw, &zst).map_err(|source| ImageError::Io { path: zst.clone(), source })?;
    let mut written = vec![raw, zst];
    if let Some(update) = &inputs.update {
        written.push(write_bundle(inputs, update, slot, output)?);
    }
    Ok(written)
}

/// `cairn-<arch>-<version>.bundle` in `output`, signed with the update key.
fn write_bundle(
    inputs: &ImageInputs<'_>,
    update: &UpdateSigning<'_>,
    slot: &SlotArtifacts<'_>,
    output: &Path,
) -> Result<PathBuf, ImageError> {
    let arch = inputs.board.arch;
    let path = output.join(format!("cairn-{arch}-{}.bundle", inputs.version));
    let artifacts = [
        (ArtifactKind::Kernel, slot.kernel),
        (ArtifactKind::Initramfs, slot.initramfs),
        (ArtifactKind::Rootfs, slot.rootfs),
    ];
    let info = BundleInfo {
        version: inputs.version,
        arch,
        boards: vec![inputs.board.name.clone()],
        min_version: update.min_version,
        build_time: u64::from(inputs.mtime),
        kernel_args: slot.kernel_args.to_vec(),
    };
    signing::write_bundle(&path, info, &artifacts, update.key)?;
    Ok(path)
}

/// Names (in `output`), sizes and SHA-256s of the `written` files.
pub fn describe(written: &[PathBuf], output: &Path) -> Result<Vec<OutputFile>, ImageError> {
    let mut outputs = Vec::new();
    for path in written {
        let bytes = std::fs::metadata(path)
            .map_err(|source| ImageError::Io { path: path.clone(), source })?
            .len();
        let name = path.strip_prefix(output).unwrap_or(path).to_string_lossy().into_owned();
        outputs.push(OutputFile { name, bytes, sha256: sha256_file(path)? });
    }
    Ok(outputs)
}

/// The packages of the build, kernel first.
pub fn packages_used(inputs: &ImageInputs<'_>) -> Vec<PackageUsed> {
    std::iter::once(&inputs.packages.kernel)
        .chain(&inputs.packages.packages)
        .map(|f| PackageUsed {
            name: f.record.name.clone(),
            version: f.record.version.clone(),
            sha256: f.record.sha256.clone(),
        })
        .collect()
}

/// Writes `report` as `output/report.toml`.
pub fn write_report(report: &BuildReport, output: &Path) -> Result<(), ImageError> {
    let path = output.join("report.toml");
    let text = toml::to_string(report).expect("a report always serializes");
    std::fs::write(&path, text).map_err(|source| ImageError::Io { path, source })
}

/// `.raw.zst`: single-threaded zstd, so the bytes are the same every time, with the raw size
/// in its header (what `flash` checks the device against before writing).
fn compress(raw: &Path, zst: &Path) -> io::Result<()> {
    let input = File::open(raw)?;
    let size = input.metadata()?.len();
    let mut input = BufReader::new(input);
    let mut encoder = zstd::Encoder::new(BufWriter::new(File::create(zst)?), 3)?;
    encoder.set_pledged_src_size(Some(size))?;
    io::copy(&mut input, &mut encoder)?;
    encoder.finish()?.flush()
}
