//! Writing a bundle (image-builder; tests).

use std::io::Write;

use sha2::{Digest, Sha256};

use super::{
    hex, Artifact, ArtifactKind, BundleError, Encoding, Manifest, SigningKey, Target, CHUNK_BYTES,
    CLASSIC_FORMAT, FORMAT, MANIFEST_ENTRY, SIGNATURE_ENTRY,
};
use crate::arch::Arch;

/// One artifact to put in a bundle.
pub struct ArtifactInput<'a> {
    /// What it is.
    pub kind: ArtifactKind,
    /// Where it goes.
    pub target: Target,
    /// Its content.
    pub content: &'a [u8],
    /// The same, zstd-compressed (the caller compresses; this crate does not link zstd).
    pub compressed: &'a [u8],
}

impl<'a> ArtifactInput<'a> {
    /// An artifact of `kind` at its kind's own target ([`ArtifactKind::target`]).
    pub fn of_kind(kind: ArtifactKind, content: &'a [u8], compressed: &'a [u8]) -> Self {
        ArtifactInput { kind, target: kind.target(), content, compressed }
    }
}

/// The fields of a manifest a build decides.
pub struct BundleInfo<'a> {
    /// The system's version (semver).
    pub version: &'a str,
    /// The architecture.
    pub arch: Arch,
    /// The boards it fits.
    pub boards: Vec<String>,
    /// The oldest version it may replace.
    pub min_version: &'a str,
    /// Build time, seconds since 1970 (SOURCE_DATE_EPOCH for reproducible bundles).
    pub build_time: u64,
    /// The kernel arguments of its boot entry, after the slot's own.
    pub kernel_args: Vec<String>,
}

/// Writes a bundle of `artifacts` (at least kernel, initramfs, rootfs) signed with `key` to `out`;
/// returns its manifest. Every entry is dated `build_time`, so equal inputs give equal bytes.
///
/// A bundle that is exactly kernel, initramfs and rootfs at their kinds' targets is written in
/// [`CLASSIC_FORMAT`], which nodes of every release read, so they can update to it; any other
/// list needs [`FORMAT`].
pub fn write(
    out: impl Write,
    info: BundleInfo<'_>,
    artifacts: &[ArtifactInput<'_>],
    key: &SigningKey,
) -> Result<Manifest, BundleError> {
    let classic = artifacts.iter().map(|a| a.kind).eq(ArtifactKind::ALL)
        && artifacts.iter().all(|a| a.target == a.kind.target());
    let manifest = Manifest {
        format: if classic { CLASSIC_FORMAT } else { FORMAT },
        version: info.version.into(),
        arch: info.arch,
        boards: info.boards,
        min_version: info.min_version.into(),
        build_time: info.build_time,
        kernel_args: info.kernel_args,
        artifacts: artifacts
            .iter()
            .map(|a| Artifact {
                kind: a.kind,
                target: (!classic).then(|| a.target.clone()),
                encoding: (!classic).then_some(Encoding::Zstd),
                size: a.content.len() as u64,
                sha256: hex(&Sha256::digest(a.content)),
                compressed_size: a.compressed.len() as u64,
                chunks: a
                    .compressed
                    .chunks(CHUNK_BYTES as usize)
                    .map(|c| hex(&Sha256::digest(c)))
                    .collect(),
            })
            .collect(),
    };
    manifest.check().map_err(BundleError::Manifest)?;
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    let signature = key.sign(&manifest_bytes);
    let mut tar = tar::Builder::new(out);
    let mut append = |name: &str, data: &[u8]| -> std::io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(info.build_time);
        header.set_cksum();
        tar.append_data(&mut header, name, data)
    };
    append(MANIFEST_ENTRY, &manifest_bytes)?;
    append(SIGNATURE_ENTRY, &signature)?;
    for (artifact, input) in manifest.artifacts.iter().zip(artifacts) {
        append(&artifact.entry(), input.compressed)?;
    }
    tar.into_inner()?.flush()?;
    Ok(manifest)
}
