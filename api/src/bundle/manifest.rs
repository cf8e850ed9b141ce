//! The manifest, its checks, and its signature.

use std::fmt;

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use super::{BundleError, CHUNK_BYTES, FORMAT, MAX_ARTIFACT_BYTES, MAX_BOARDS, MAX_KERNEL_ARGS};
use crate::arch::Arch;

/// Kernel arguments a bundle must not set, and why. Its arguments follow the slot's own in the
/// boot entry, and machined takes the last of each.
const RESERVED_KERNEL_ARGS: [(&str, &str); 2] = [
    (
        crate::image::SLOT_ARG,
        "is the slot's own argument: a bundle's would win and make machined mount the other slot's root",
    ),
    (
        crate::bootstrap::KERNEL_PARAMETER,
        "is a node's maintenance-mode secret: in a bundle anyone holding it could read it, and it would be set on every node the bundle updates (image-builder's --bootstrap-token-file puts it in an image)",
    ),
];

/// Why a bundle may not carry the kernel argument `arg`, if it may not.
fn refused_kernel_arg(arg: &str) -> Option<String> {
    if arg.contains('"') {
        // The kernel lets quotes span arguments; machined's reading of the command line does not.
        return Some(format!(
            "{arg:?} has a '\"': quotes would join it with the arguments after it"
        ));
    }
    let key = arg.split_once('=').map_or(arg, |(key, _)| key);
    RESERVED_KERNEL_ARGS
        .iter()
        .find(|(reserved, _)| key == *reserved)
        .map(|(_, why)| format!("{arg:?} {why}"))
}

/// What a bundle carries and for what it is meant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The system's version (semver).
    pub version: String,
    /// The architecture its programs are built for.
    pub arch: Arch,
    /// The boards it fits (image-builder's board names).
    pub boards: Vec<String>,
    /// The oldest running version it may replace (semver); older nodes need a stepping stone.
    pub min_version: String,
    /// When it was built, seconds since 1970.
    pub build_time: u64,
    /// The kernel command-line arguments its boot entry gets after the slot's own.
    pub kernel_args: Vec<String>,
    /// The kernel, initramfs and root filesystem, in the order the stream has them.
    pub artifacts: Vec<Artifact>,
}

/// One artifact of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Artifact {
    /// Which one.
    pub kind: ArtifactKind,
    /// Its size once decompressed.
    pub size: u64,
    /// SHA-256 (hex) of its decompressed content.
    pub sha256: String,
    /// Its size in the bundle (zstd).
    pub compressed_size: u64,
    /// SHA-256 (hex) of each [`CHUNK_BYTES`] chunk of its compressed bytes, in order.
    pub chunks: Vec<String>,
}

/// The artifacts a system is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ArtifactKind {
    /// The kernel (an EFI executable on x86_64).
    Kernel,
    /// The initramfs (machined's stage 1).
    Initramfs,
    /// The root filesystem (squashfs), written to the slot's ROOT partition.
    Rootfs,
}

impl ArtifactKind {
    /// Every kind, in the order bundles carry them.
    pub const ALL: [ArtifactKind; 3] =
        [ArtifactKind::Kernel, ArtifactKind::Initramfs, ArtifactKind::Rootfs];

    /// Its name in manifests and errors.
    pub fn name(self) -> &'static str {
        match self {
            ArtifactKind::Kernel => "kernel",
            ArtifactKind::Initramfs => "initramfs",
            ArtifactKind::Rootfs => "rootfs",
        }
    }

    /// Its entry in the tar stream.
    pub fn entry(self) -> String {
        format!("{}.zst", self.name())
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Manifest {
    /// Parses and checks a manifest's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, BundleError> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Manifest(e.to_string()))?;
        manifest.check().map_err(BundleError::Manifest)?;
        Ok(manifest)
    }

    /// The version, parsed.
    pub fn semver(&self) -> semver::Version {
        semver::Version::parse(&self.version).expect("checked on parse")
    }

    /// The oldest version it may replace, parsed.
    pub fn min_semver(&self) -> semver::Version {
        semver::Version::parse(&self.min_version).expect("checked on parse")
    }

    /// Whether its values are consistent; the error says which is not.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format {} is not {FORMAT}, the one this node reads", self.format));
        }
        let version = semver::Version::parse(&self.version)
            .map_err(|e| format!("version {:?} is not semver: {e}", self.version))?;
        let min = semver::Version::parse(&self.min_version)
            .map_err(|e| format!("minVersion {:?} is not semver: {e}", self.min_version))?;
        if min > version {
            return Err(format!("minVersion {min} is above version {version}"));
        }
        if self.boards.is_empty() || self.boards.len() > MAX_BOARDS {
            return Err(format!("boards: between 1 and {MAX_BOARDS} are needed"));
        }
        if let Some(board) = self.boards.iter().find(|b| {
            b.is_empty()
                || b.len() > 64
                || !b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        }) {
            return Err(format!("boards: {board:?} is not a board name"));
        }
        if self.kernel_args.len() > MAX_KERNEL_ARGS {
            return Err(format!("kernelArgs: more than {MAX_KERNEL_ARGS}"));
        }
        if let Some(arg) = self
            .kernel_args
            .iter()
            .find(|a| a.is_empty() || a.len() > 256 || !a.bytes().all(|c| c.is_ascii_graphic()))
        {
            return Err(format!("kernelArgs: {arg:?} is not one printable word"));
        }
        if let Some(why) = self.kernel_args.iter().find_map(|arg| refused_kernel_arg(arg)) {
            return Err(format!("kernelArgs: {why}"));
        }
        let kinds: Vec<ArtifactKind> = self.artifacts.iter().map(|a| a.kind).collect();
        if kinds != ArtifactKind::ALL {
            return Err(format!(
                "artifacts must be kernel, initramfs, rootfs in that order, not {kinds:?}"
            ));
        }
        for artifact in &self.artifacts {
            let kind = artifact.kind;
            if artifact.size > MAX_ARTIFACT_BYTES || artifact.compressed_size > MAX_ARTIFACT_BYTES {
                return Err(format!("{kind}: larger than {MAX_ARTIFACT_BYTES} bytes"));
            }
            if !is_sha256_hex(&artifact.sha256) {
                return Err(format!("{kind}: sha256 is not 64 lowercase hex digits"));
            }
            let chunks = artifact.compressed_size.div_ceil(CHUNK_BYTES);
            if artifact.chunks.len() as u64 != chunks {
                return Err(format!(
                    "{kind}: {} chunk hashes for {} compressed bytes ({chunks} chunks of {CHUNK_BYTES})",
                    artifact.chunks.len(),
                    artifact.compressed_size
                ));
            }
            if artifact.chunks.iter().any(|c| !is_sha256_hex(c)) {
                return Err(format!("{kind}: a chunk hash is not 64 lowercase hex digits"));
            }
        }
        Ok(())
    }
}

/// A public key trusted to sign bundles (ed25519, 32 raw bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey(pub [u8; 32]);

impl TrustedKey {
    /// A key written as base64 of its 32 bytes (`machine.update.trustedKeys`, `signing.pub`).
    pub fn from_base64(text: &str) -> Result<TrustedKey, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        let bytes: [u8; 32] =
            bytes.try_into().map_err(|b: Vec<u8>| format!("{} bytes, not 32", b.len()))?;
        Ok(TrustedKey(bytes))
    }

    /// Base64 of its 32 bytes.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// Whether `signature` is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, self.0).verify(message, signature).is_ok()
    }
}

/// A key that signs bundles (ed25519, kept as PKCS#8).
pub struct SigningKey(Ed25519KeyPair);

impl SigningKey {
    /// A new random key, as PKCS#8 bytes (what `image-builder keygen` stores).
    pub fn generate_pkcs8() -> Result<Vec<u8>, String> {
        let rng = ring::rand::SystemRandom::new();
        Ed25519KeyPair::generate_pkcs8(&rng)
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| "generating an ed25519 key failed".to_string())
    }

    /// The key in PKCS#8 bytes.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, String> {
        Ed25519KeyPair::from_pkcs8(pkcs8)
            .map(SigningKey)
            .map_err(|e| format!("not an ed25519 PKCS#8 key: {e}"))
    }

    /// Its public half.
    pub fn public(&self) -> TrustedKey {
        let bytes: [u8; 32] =
            self.0.public_key().as_ref().try_into().expect("ed25519 public keys are 32 bytes");
        TrustedKey(bytes)
    }

    /// Its signature over `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0.sign(message).as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{peek_manifest, testing};

    fn with_args(args: &[&str]) -> Result<(), String> {
        let bundle = testing::bundle(&testing::key(), "1.0.0", Arch::X86_64, b"rootfs");
        let mut manifest = peek_manifest(&bundle[..]).unwrap();
        manifest.kernel_args = args.iter().map(|a| a.to_string()).collect();
        manifest.check()
    }

    #[test]
    fn a_bundle_may_not_set_the_slot_or_the_bootstrap_token() {
        assert_eq!(
            with_args(&["console=ttyS0", "quiet", "cairn.slots=x", "xcairn.slot=b"]),
            Ok(())
        );
        for arg in [
            "cairn.slot=b",
            "cairn.slot",
            "cairn.slot=",
            "cairn.bootstrap_token=00112233445566778899aabbccddeeff",
        ] {
            let error = with_args(&["console=ttyS0", arg]).unwrap_err();
            assert!(error.starts_with(&format!("kernelArgs: {arg:?} is ")), "{arg}: {error}");
        }
        assert_eq!(
            with_args(&["cairn.slot=b"]).unwrap_err(),
            "kernelArgs: \"cairn.slot=b\" is the slot's own argument: a bundle's would win and make machined mount the other slot's root"
        );
        let error = with_args(&["x=\"a", "cairn.slot=b\""]).unwrap_err();
        assert!(error.contains("quotes would join it"), "{error}");
    }
}
