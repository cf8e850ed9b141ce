//! Update signing: `image-builder keygen` makes the ed25519 key pair bundles are signed with,
//! and `image-builder inspect` checks a bundle offline, all the way: the signature, every
//! chunk's hash, and each artifact's decompressed size and SHA-256.
//!
//! `signing.key` holds the private key as base64 of its PKCS#8 document (mode 0600);
//! `signing.pub` the public key as base64 of its 32 bytes, the form
//! `machine.update.trustedKeys` takes.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use cairn_api::bundle::{
    self, Artifact, ArtifactInput, ArtifactKind, ArtifactSink, BundleInfo, Manifest, SigningKey,
    Target, TrustedKey,
};
use sha2::{Digest, Sha256};

/// The private key's file name in a keygen directory.
pub const PRIVATE_KEY_FILE: &str = "signing.key";
/// The public key's file name in a keygen directory.
pub const PUBLIC_KEY_FILE: &str = "signing.pub";

/// Why signing or checking failed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// keygen would replace a private key.
    #[error("{0} exists: keygen never replaces a signing key (nodes trust its public half)")]
    Exists(PathBuf),
    /// A key file holds no usable key.
    #[error("{path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The bundle was refused.
    #[error("{path}: {source}")]
    Bundle {
        /// The bundle.
        path: PathBuf,
        /// Why.
        source: bundle::BundleError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SigningError + '_ {
    move |source| SigningError::Io { path: path.to_path_buf(), source }
}

/// Writes a new key pair into `dir`; refuses to replace an existing private key.
pub fn keygen(dir: &Path) -> Result<TrustedKey, SigningError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let private = dir.join(PRIVATE_KEY_FILE);
    let pkcs8 = SigningKey::generate_pkcs8()
        .map_err(|reason| SigningError::Key { path: private.clone(), reason })?;
    let public = SigningKey::from_pkcs8(&pkcs8)
        .map_err(|reason| SigningError::Key { path: private.clone(), reason })?
        .public();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => SigningError::Exists(private.clone()),
            _ => SigningError::Io { path: private.clone(), source: e },
        })?;
    writeln!(file, "{}", base64::engine::general_purpose::STANDARD.encode(&pkcs8))
        .and_then(|()| file.sync_all())
        .map_err(io(&private))?;
    let public_path = dir.join(PUBLIC_KEY_FILE);
    std::fs::write(&public_path, format!("{}\n", public.to_base64())).map_err(io(&public_path))?;
    Ok(public)
}

/// The signing key in `path` (a keygen `signing.key`).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, SigningError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let key_error = |reason: String| SigningError::Key { path: path.to_path_buf(), reason };
    let pkcs8 = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| key_error(format!("not base64: {e}")))?;
    SigningKey::from_pkcs8(&pkcs8).map_err(key_error)
}

/// The public key in `path` (a keygen `signing.pub`).
pub fn load_public_key(path: &Path) -> Result<TrustedKey, SigningError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    TrustedKey::from_base64(&text)
        .map_err(|reason| SigningError::Key { path: path.to_path_buf(), reason })
}

/// Writes the bundle of `artifacts` (kind, content; compressed here with zstd), each at its
/// kind's target, to `path`, signed with `key`.
pub fn write_bundle(
    path: &Path,
    info: BundleInfo<'_>,
    artifacts: &[(ArtifactKind, &[u8])],
    key: &SigningKey,
) -> Result<Manifest, SigningError> {
    // The kernel, the initramfs and the squashfs are compressed already; a fast level keeps
    // the build quick for the little there is to gain.
    let compressed = artifacts
        .iter()
        .map(|(_, content)| zstd::encode_all(*content, 3))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(path))?;
    let inputs: Vec<ArtifactInput<'_>> = artifacts
        .iter()
        .zip(&compressed)
        .map(|((kind, content), compressed)| ArtifactInput::of_kind(*kind, content, compressed))
        .collect();
    let file = std::fs::File::create(path).map_err(io(path))?;
    let mut out = std::io::BufWriter::new(file);
    let manifest = bundle::write(&mut out, info, &inputs, key)
        .map_err(|source| SigningError::Bundle { path: path.to_path_buf(), source })?;
    out.flush().map_err(io(path))?;
    Ok(manifest)
}

/// Decompresses each artifact as it streams by and checks its size and SHA-256.
struct Verify {
    decoder: Option<(Target, zstd::stream::write::Decoder<'static, HashingCounter>)>,
}

/// Counts and hashes what is written to it.
#[derive(Default)]
struct HashingCounter {
    hash: Sha256,
    bytes: u64,
}

impl std::io::Write for HashingCounter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.hash.update(data);
        self.bytes += data.len() as u64;
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ArtifactSink for Verify {
    fn accept(&mut self, _: &Manifest) -> Result<(), String> {
        Ok(())
    }

    fn chunk(&mut self, artifact: &Artifact, bytes: &[u8]) -> Result<(), String> {
        let (kind, target) = (artifact.kind, artifact.target());
        if self.decoder.as_ref().is_none_or(|(t, _)| *t != target) {
            let decoder = zstd::stream::write::Decoder::new(HashingCounter::default())
                .map_err(|e| format!("{kind}: {e}"))?;
            self.decoder = Some((target, decoder));
        }
        let (_, decoder) = self.decoder.as_mut().expect("set above");
        decoder.write_all(bytes).map_err(|e| format!("{kind}: not zstd: {e}"))
    }

    fn finish(&mut self, artifact: &Artifact) -> Result<(), String> {
        let kind = artifact.kind;
        let (_, mut decoder) = self.decoder.take().ok_or_else(|| format!("{kind}: empty"))?;
        decoder.flush().map_err(|e| format!("{kind}: not zstd: {e}"))?;
        let counter = decoder.into_inner();
        let sha256: String = counter.hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if counter.bytes != artifact.size || sha256 != artifact.sha256 {
            return Err(format!(
                "{kind}: decompresses to {} bytes with SHA-256 {sha256}, not {} bytes with {}",
                counter.bytes, artifact.size, artifact.sha256
            ));
        }
        Ok(())
    }
}

/// Checks the bundle at `path` against `key` completely; returns its manifest.
pub fn inspect(path: &Path, key: &TrustedKey) -> Result<Manifest, SigningError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut verify = Verify { decoder: None };
    bundle::read(std::io::BufReader::new(file), std::slice::from_ref(key), &mut verify)
        .map_err(|source| SigningError::Bundle { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use cairn_api::arch::Arch;

    /// A bundle whose rootfs is `rootfs` but compresses to `rootfs_zst`.
    fn lying_bundle(path: &Path, key: &SigningKey, rootfs: &[u8], rootfs_zst: &[u8]) {
        let kernel = zstd::encode_all(&b"kernel"[..], 3).unwrap();
        let initramfs = zstd::encode_all(&b"initramfs"[..], 3).unwrap();
        let inputs = [
            ArtifactInput::of_kind(ArtifactKind::Kernel, b"kernel", &kernel),
            ArtifactInput::of_kind(ArtifactKind::Initramfs, b"initramfs", &initramfs),
            ArtifactInput::of_kind(ArtifactKind::Rootfs, rootfs, rootfs_zst),
        ];
        let file = std::fs::File::create(path).unwrap();
        bundle::write(file, info(), &inputs, key).unwrap();
    }

    fn info() -> BundleInfo<'static> {
        BundleInfo {
            version: "0.2.0",
            arch: Arch::X86_64,
            boards: vec!["generic-x86_64".into()],
            min_version: "0.1.0",
            build_time: 0,
            kernel_args: Vec::new(),
        }
    }

    #[test]
    fn keygen_keys_sign_bundles_that_inspect_checks_fully() {
        let dir = tempfile::tempdir().unwrap();
        let public = keygen(dir.path()).unwrap();
        let private = dir.path().join(PRIVATE_KEY_FILE);
        assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(keygen(dir.path()), Err(SigningError::Exists(_))), "replaced a key");
        assert_eq!(load_public_key(&dir.path().join(PUBLIC_KEY_FILE)).unwrap(), public);
        let key = load_signing_key(&private).unwrap();

        let rootfs = vec![42u8; 100_000];
        let good = dir.path().join("good.bundle");
        let artifacts = [
            (ArtifactKind::Kernel, &b"kernel"[..]),
            (ArtifactKind::Initramfs, &b"initramfs"[..]),
            (ArtifactKind::Rootfs, &rootfs[..]),
        ];
        write_bundle(&good, info(), &artifacts, &key).unwrap();
        assert_eq!(inspect(&good, &public).unwrap().version, "0.2.0");

        // Signed and chunk-hashed, but its rootfs decompresses to something else.
        let lying = dir.path().join("lying.bundle");
        lying_bundle(&lying, &key, &rootfs, &zstd::encode_all(&b"other"[..], 3).unwrap());
        let error = inspect(&lying, &public).unwrap_err().to_string();
        assert!(error.contains("rootfs: decompresses to 5 bytes"), "{error}");

        let stranger = keygen(&dir.path().join("other")).unwrap();
        let error = inspect(&good, &stranger).unwrap_err().to_string();
        assert!(error.contains("not signed by a trusted key"), "{error}");
    }
}
