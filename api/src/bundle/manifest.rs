//! The manifest, its checks, and its signature.

use std::fmt;

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use super::{
    BundleError, CHUNK_BYTES, CLASSIC_FORMAT, FORMAT, MAX_ARTIFACTS, MAX_ARTIFACT_BYTES,
    MAX_BOARDS, MAX_KERNEL_ARGS,
};
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
    /// [`FORMAT`], or [`CLASSIC_FORMAT`] in bundles written before artifacts had targets.
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
    /// The artifacts, in the order the stream has them: at least a kernel, an initramfs and a
    /// root filesystem.
    pub artifacts: Vec<Artifact>,
}

/// One artifact of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Artifact {
    /// What it is.
    pub kind: ArtifactKind,
    /// Where it goes; absent in [`CLASSIC_FORMAT`] manifests, where the kind says
    /// ([`Artifact::target`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// How its bytes in the bundle are encoded; absent in [`CLASSIC_FORMAT`] manifests
    /// (zstd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// Its size once decompressed.
    pub size: u64,
    /// SHA-256 (hex) of its decompressed content.
    pub sha256: String,
    /// Its size in the bundle (zstd).
    pub compressed_size: u64,
    /// SHA-256 (hex) of each [`CHUNK_BYTES`] chunk of its compressed bytes, in order.
    pub chunks: Vec<String>,
}

impl Artifact {
    /// Where it goes: its own target, or (classic manifests) its kind's.
    pub fn target(&self) -> Target {
        self.target.clone().unwrap_or_else(|| self.kind.target())
    }

    /// Its entry in the tar stream: `<kind>.zst` in classic manifests, else its target with
    /// `/` for `:` and its encoding's extension (`slot/root.zst`), unique as targets are.
    pub fn entry(&self) -> String {
        let encoding = self.encoding.unwrap_or(Encoding::Zstd);
        match &self.target {
            None => format!("{}.{}", self.kind, encoding.extension()),
            Some(target) => format!("{}.{}", target.entry_stem(), encoding.extension()),
        }
    }
}

/// How an artifact's bytes are encoded in the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Encoding {
    /// A zstd frame.
    Zstd,
}

impl Encoding {
    /// The extension of its entries in the tar stream.
    pub fn extension(self) -> &'static str {
        match self {
            Encoding::Zstd => "zst",
        }
    }
}

/// Where an artifact goes on the node, written `boot:<file>` or `slot:root`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Target {
    /// A file among the slot's boot files, by name (`boot:vmlinuz`): the boot control puts
    /// it where the slot's bootloader reads it.
    Boot(String),
    /// The slot's root partition (`slot:root`).
    SlotRoot,
}

impl Target {
    /// The prefix of boot files' targets.
    const BOOT: &'static str = "boot:";
    /// The root partition's target.
    const SLOT_ROOT: &'static str = "slot:root";

    /// Its tar entry name before the encoding's extension.
    fn entry_stem(&self) -> String {
        self.to_string().replace(':', "/")
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Boot(file) => write!(f, "{}{file}", Target::BOOT),
            Target::SlotRoot => f.write_str(Target::SLOT_ROOT),
        }
    }
}

impl TryFrom<String> for Target {
    type Error = String;

    fn try_from(text: String) -> Result<Target, String> {
        if text == Target::SLOT_ROOT {
            return Ok(Target::SlotRoot);
        }
        let file = text.strip_prefix(Target::BOOT).ok_or_else(|| {
            format!("target {text:?} is neither {}<file> nor {}", Target::BOOT, Target::SLOT_ROOT)
        })?;
        let plain = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_');
        if file.is_empty() || file.len() > 64 || file.starts_with('.') || !file.bytes().all(plain) {
            return Err(format!("target {text:?}: {file:?} is not a plain file name"));
        }
        Ok(Target::Boot(file.to_string()))
    }
}

impl From<Target> for String {
    fn from(target: Target) -> String {
        target.to_string()
    }
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

    /// Where it goes: the file names the slot's boot entry reads, or the root partition.
    pub fn target(self) -> Target {
        match self {
            ArtifactKind::Kernel => Target::Boot("vmlinuz".into()),
            ArtifactKind::Initramfs => Target::Boot("initramfs.zst".into()),
            ArtifactKind::Rootfs => Target::SlotRoot,
        }
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
        if self.format != FORMAT && self.format != CLASSIC_FORMAT {
            return Err(format!(
                "format {} is neither {FORMAT} nor {CLASSIC_FORMAT}, the ones this node reads",
                self.format
            ));
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
        self.check_artifact_list()?;
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

    /// Whether the artifacts are a system: in a classic manifest, kernel, initramfs and
    /// rootfs in that order with no target or encoding; else each with both, every target
    /// once, and each kind once, at its own target (where the boot entry looks for it).
    fn check_artifact_list(&self) -> Result<(), String> {
        let kinds: Vec<ArtifactKind> = self.artifacts.iter().map(|a| a.kind).collect();
        if self.format == CLASSIC_FORMAT {
            if kinds != ArtifactKind::ALL {
                return Err(format!(
                    "artifacts must be kernel, initramfs, rootfs in that order, not {kinds:?}"
                ));
            }
            return match self.artifacts.iter().any(|a| a.target.is_some() || a.encoding.is_some()) {
                true => {
                    Err(format!("format {CLASSIC_FORMAT}: artifacts have no target or encoding"))
                }
                false => Ok(()),
            };
        }
        if self.artifacts.len() > MAX_ARTIFACTS {
            return Err(format!("artifacts: more than {MAX_ARTIFACTS}"));
        }
        let mut targets = Vec::new();
        for artifact in &self.artifacts {
            let kind = artifact.kind;
            let Some(target) = &artifact.target else {
                return Err(format!("{kind}: no target"));
            };
            if artifact.encoding.is_none() {
                return Err(format!("{kind}: no encoding"));
            }
            if *target != kind.target() {
                return Err(format!("{kind}: target {target} is not {}", kind.target()));
            }
            if targets.contains(&target) {
                return Err(format!("{kind}: a second artifact for {target}"));
            }
            targets.push(target);
        }
        match ArtifactKind::ALL.iter().find(|kind| !kinds.contains(kind)) {
            Some(missing) => Err(format!("artifacts: no {missing}")),
            None => Ok(()),
        }
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

    /// A manifest exactly as bundles of format 1 have it (image-builder before targets).
    const CLASSIC: &str = r#"{
  "format": 1,
  "version": "0.2.0",
  "arch": "x86_64",
  "boards": [
    "generic-x86_64"
  ],
  "minVersion": "0.1.0",
  "buildTime": 1767225600,
  "kernelArgs": [
    "console=ttyS0"
  ],
  "artifacts": [
    {
      "kind": "kernel",
      "size": 6,
      "sha256": "1111111111111111111111111111111111111111111111111111111111111111",
      "compressedSize": 15,
      "chunks": [
        "2222222222222222222222222222222222222222222222222222222222222222"
      ]
    },
    {
      "kind": "initramfs",
      "size": 9,
      "sha256": "3333333333333333333333333333333333333333333333333333333333333333",
      "compressedSize": 18,
      "chunks": [
        "4444444444444444444444444444444444444444444444444444444444444444"
      ]
    },
    {
      "kind": "rootfs",
      "size": 4,
      "sha256": "5555555555555555555555555555555555555555555555555555555555555555",
      "compressedSize": 13,
      "chunks": [
        "6666666666666666666666666666666666666666666666666666666666666666"
      ]
    }
  ]
}"#;

    #[test]
    fn classic_manifests_read_with_their_kinds_targets_and_entries() {
        let manifest = Manifest::parse(CLASSIC.as_bytes()).unwrap();
        let read: Vec<(String, String)> =
            manifest.artifacts.iter().map(|a| (a.target().to_string(), a.entry())).collect();
        assert_eq!(
            read,
            [
                ("boot:vmlinuz".into(), "kernel.zst".into()),
                ("boot:initramfs.zst".into(), "initramfs.zst".into()),
                ("slot:root".into(), "rootfs.zst".into()),
            ]
        );
        // Written back, it is the same text: nothing new appears in a classic manifest.
        assert_eq!(serde_json::to_string_pretty(&manifest).unwrap(), CLASSIC);
        let mut reordered = manifest.clone();
        reordered.artifacts.swap(0, 1);
        assert!(reordered.check().unwrap_err().starts_with("artifacts must be kernel, initramfs"));
        let mut targeted = manifest.clone();
        targeted.artifacts[0].target = Some(Target::Boot("vmlinuz".into()));
        assert_eq!(targeted.check().unwrap_err(), "format 1: artifacts have no target or encoding");
    }

    #[test]
    fn artifacts_name_their_target_and_encoding() {
        let mut manifest = Manifest::parse(CLASSIC.as_bytes()).unwrap();
        manifest.format = FORMAT;
        assert_eq!(manifest.check().unwrap_err(), "kernel: no target");
        for artifact in &mut manifest.artifacts {
            artifact.target = Some(artifact.kind.target());
            artifact.encoding = Some(Encoding::Zstd);
        }
        manifest.check().unwrap();
        let entries: Vec<String> = manifest.artifacts.iter().map(Artifact::entry).collect();
        assert_eq!(entries, ["boot/vmlinuz.zst", "boot/initramfs.zst.zst", "slot/root.zst"]);
        let text = serde_json::to_string(&manifest.artifacts[2]).unwrap();
        assert!(text.starts_with(r#"{"kind":"rootfs","target":"slot:root","encoding":"zstd","#));

        let mut moved = manifest.clone();
        moved.artifacts[0].target = Some(Target::Boot("kernel.efi".into()));
        assert_eq!(
            moved.check().unwrap_err(),
            "kernel: target boot:kernel.efi is not boot:vmlinuz"
        );
        let mut twice = manifest.clone();
        twice.artifacts.push(manifest.artifacts[2].clone());
        assert_eq!(twice.check().unwrap_err(), "rootfs: a second artifact for slot:root");
        let mut short = manifest.clone();
        short.artifacts.remove(1);
        assert_eq!(short.check().unwrap_err(), "artifacts: no initramfs");
        let mut unknown = manifest;
        unknown.format = 3;
        assert_eq!(
            unknown.check().unwrap_err(),
            "format 3 is neither 2 nor 1, the ones this node reads"
        );
    }

    #[test]
    fn targets_parse_and_render_back() {
        for text in ["boot:vmlinuz", "boot:bcm2711-rpi-4-b.dtb", "slot:root"] {
            assert_eq!(Target::try_from(text.to_string()).unwrap().to_string(), text);
        }
        for (text, error) in [
            ("slot:hash", "target \"slot:hash\" is neither boot:<file> nor slot:root"),
            ("boot:", "target \"boot:\": \"\" is not a plain file name"),
            ("boot:../x", "target \"boot:../x\": \"../x\" is not a plain file name"),
            ("boot:a/b", "target \"boot:a/b\": \"a/b\" is not a plain file name"),
        ] {
            assert_eq!(Target::try_from(text.to_string()).unwrap_err(), error, "{text}");
        }
    }
}
