//! Update bundles: what image-builder writes and machined's updater reads.
//!
//! A bundle is a tar stream (ustar) of, in this order:
//!
//! 1. `manifest`: JSON ([`Manifest`]): format, version (semver), architecture, the boards it
//!    fits, the oldest version it may replace, build time, the kernel arguments of its boot
//!    entry, and the list of artifacts;
//! 2. `manifest.sig`: the 64-byte ed25519 signature of the manifest's exact bytes;
//! 3. one entry per artifact, in the manifest's order.
//!
//! Each artifact ([`Artifact`]) says what it is (`kind`), where it goes (`target`:
//! `boot:<file>` for a file among the slot's boot files, `slot:root` for the slot's root
//! partition), how its bytes are encoded in the bundle (`encoding`: `zstd`), its size once
//! decoded and the SHA-256 of that content, its size in the bundle and the SHA-256 of every
//! [`CHUNK_BYTES`] chunk of those bytes. Its entry is named after its target:
//! `boot/vmlinuz.zst`, `boot/initramfs.zst.zst`, `slot/root.zst`. The list is open: a device
//! tree, a verity hash tree or a delta is one more artifact with its own kind and target. A
//! system has at least a kernel (`boot:vmlinuz`), an initramfs (`boot:initramfs.zst`) and a
//! rootfs (`slot:root`).
//!
//! Format 1 ([`CLASSIC_FORMAT`]) is the form of a bundle whose artifacts are exactly `kernel`,
//! `initramfs`, `rootfs` in that order, with no `target` or `encoding` (their kinds' targets,
//! zstd), in entries named `<kind>.zst`. Every release reads it, so a writer uses it whenever
//! the artifacts fit it, and nodes of older releases can update to the bundle; format 2
//! ([`FORMAT`]) is for every other list.
//!
//! Every entry is a plain file (type `0`) with a name that fits its header: a reader refuses
//! GNU long names, PAX headers and every other type before reading their data.
//!
//! A reader checks the signature before it passes on a byte of an artifact, and each chunk
//! against its hash before passing it on, so a corrupt bundle is caught within 4 MiB of the
//! damage. Nothing in a bundle makes the reader allocate without limit: the manifest is at
//! most [`MAX_MANIFEST_BYTES`], artifacts are read a chunk at a time, and every count and size
//! is bounded ([`MAX_ARTIFACT_BYTES`]).

mod entries;
mod manifest;
mod read;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod write;

#[cfg(test)]
mod fuzz_tests;

pub use manifest::{Artifact, ArtifactKind, Encoding, Manifest, SigningKey, Target, TrustedKey};
pub use read::{peek_manifest, read, ArtifactSink};
pub use write::{write, ArtifactInput, BundleInfo};

/// The manifest format with targets and encodings, written when the artifacts need it.
pub const FORMAT: u32 = 2;
/// The first manifest format: kernel, initramfs and rootfs, by kind alone.
pub const CLASSIC_FORMAT: u32 = 1;
/// The manifest's entry name.
pub const MANIFEST_ENTRY: &str = "manifest";
/// The signature's entry name.
pub const SIGNATURE_ENTRY: &str = "manifest.sig";
/// The largest manifest accepted.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
/// The size of the chunks of compressed bytes that are hashed one by one.
pub const CHUNK_BYTES: u64 = 4 * 1024 * 1024;
/// The largest artifact accepted, compressed or not.
pub const MAX_ARTIFACT_BYTES: u64 = 8 * 1024 * 1024 * 1024;
/// The most boards a manifest may name.
pub const MAX_BOARDS: usize = 32;
/// The most artifacts a manifest may list.
pub const MAX_ARTIFACTS: usize = 64;
/// The most kernel arguments a manifest may carry.
pub const MAX_KERNEL_ARGS: usize = 64;

/// Lowercase hex, as the manifest writes hashes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A SHA-256 written as 64 hex digits in either case ([`hex`]'s form): its 32 bytes, or
/// `None` for anything else (a sign, a space or a 65th digit included).
pub fn sha256_from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(bytes)
}

/// Why a bundle was refused. Every variant names what was wrong; nothing was passed on past
/// the point of the error.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading the stream failed.
    #[error("reading the bundle: {0}")]
    Io(#[from] std::io::Error),
    /// The tar stream does not have the entries it must, in order.
    #[error("not a Cairn bundle: {0}")]
    Layout(String),
    /// The manifest does not parse or its values are wrong.
    #[error("manifest: {0}")]
    Manifest(String),
    /// No trusted key made the signature.
    #[error("manifest.sig: the manifest is not signed by a trusted key ({0} keys tried)")]
    Untrusted(usize),
    /// An artifact's bytes are not what the manifest says.
    #[error("{kind}: {reason}")]
    Corrupt {
        /// The artifact.
        kind: ArtifactKind,
        /// What differs.
        reason: String,
    },
    /// The caller refused the manifest (architecture, board, version) or failed to take an
    /// artifact.
    #[error("{0}")]
    Refused(String),
}

#[cfg(test)]
mod hex_tests {
    use super::*;

    #[test]
    fn a_sha256_reads_back_from_its_hex_and_nothing_else_passes() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 8) as u8);
        assert_eq!(sha256_from_hex(&hex(&bytes)), Some(bytes));
        assert_eq!(sha256_from_hex(&hex(&bytes).to_uppercase()), Some(bytes));
        for wrong in
            ["ab".repeat(31), "ab".repeat(33), "+f".repeat(32), "é".repeat(32), "g".repeat(64)]
        {
            assert_eq!(sha256_from_hex(&wrong), None, "{wrong}");
        }
    }
}
