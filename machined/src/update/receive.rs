//! Receiving a bundle: the manifest checked against this node, then every artifact
//! decompressed into a spool directory on EPHEMERAL and verified against the manifest's
//! size and SHA-256. Nothing of the slot is touched until the whole bundle has been
//! received and verified, so a truncated or corrupt bundle changes nothing the node boots,
//! not even the slot it would have replaced.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use cairn_api::arch::Arch;
use cairn_api::bundle::{hex, Artifact, ArtifactKind, ArtifactSink, Manifest, Target};
use sha2::{Digest, Sha256};

/// What this node accepts.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The node's architecture.
    pub arch: Arch,
    /// Its board (image-builder's name), when the image says.
    pub board: Option<String>,
    /// The version running.
    pub running: semver::Version,
    /// Whether an older version may replace it.
    pub force: bool,
    /// The size of the slot's ROOT partition.
    pub root_bytes: u64,
    /// Room for the spool.
    pub free_bytes: u64,
}

impl Policy {
    /// Whether `manifest` may be installed here; the error says why not.
    pub fn check(&self, manifest: &Manifest) -> Result<(), String> {
        if manifest.arch != self.arch {
            return Err(format!("the bundle is for {}, this node is {}", manifest.arch, self.arch));
        }
        if let Some(board) = &self.board {
            if !manifest.boards.contains(board) {
                return Err(format!(
                    "the bundle is for the boards {}, this node is a {board}",
                    manifest.boards.join(", ")
                ));
            }
        }
        let (version, min) = (manifest.semver(), manifest.min_semver());
        if self.running < min {
            return Err(format!(
                "version {version} replaces {min} or later, this node runs {}: install a \
                 version in between first",
                self.running
            ));
        }
        if version < self.running && !self.force {
            return Err(format!(
                "version {version} is older than the running {}; a downgrade needs --force",
                self.running
            ));
        }
        let rootfs = artifact(manifest, ArtifactKind::Rootfs).size;
        if rootfs > self.root_bytes {
            return Err(format!(
                "the rootfs is {rootfs} bytes, the slot's partition {}",
                self.root_bytes
            ));
        }
        let needed: u64 = manifest.artifacts.iter().map(|a| a.size).sum();
        if needed > self.free_bytes {
            return Err(format!(
                "receiving it needs {needed} bytes on EPHEMERAL, {} are free",
                self.free_bytes
            ));
        }
        Ok(())
    }
}

/// The manifest's entry for `kind` (a checked manifest has each kind once).
pub fn artifact(manifest: &Manifest, kind: ArtifactKind) -> &Artifact {
    manifest.artifacts.iter().find(|a| a.kind == kind).expect("a checked manifest has every kind")
}

/// The spool file of the artifact for `target` in `dir` (`boot-vmlinuz`, `slot-root`).
pub fn spooled(dir: &Path, target: &Target) -> PathBuf {
    dir.join(target.to_string().replace(':', "-"))
}

/// A file being written with its length and SHA-256, never past `limit` bytes.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
    limit: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Counts and hashes what goes into `inner`; refuses more than `limit` bytes.
    fn new(inner: W, limit: u64) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), written: 0, limit }
    }

    /// The writer, the length and the SHA-256 (hex) of what was written.
    fn finish(self) -> (W, u64, String) {
        (self.inner, self.written, hex(&self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.written + bytes.len() as u64 > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than the {} bytes the manifest says", self.limit),
            ));
        }
        let n = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Checks what was written against `artifact`.
fn check_written(artifact: &Artifact, written: u64, sha256: &str) -> Result<(), String> {
    if written != artifact.size || sha256 != artifact.sha256 {
        return Err(format!(
            "{}: {written} bytes with SHA-256 {sha256}, where the manifest says {} bytes with {}",
            artifact.kind, artifact.size, artifact.sha256
        ));
    }
    Ok(())
}

type Decoding = zstd::stream::write::Decoder<'static, HashingWriter<BufWriter<File>>>;

/// The sink that checks a bundle's manifest against the [`Policy`] and spools its verified
/// artifacts into a directory.
pub struct Receiver<'a> {
    dir: PathBuf,
    policy: &'a Policy,
    manifest: Option<Manifest>,
    current: Option<Decoding>,
    received: u64,
    progress: &'a mut dyn FnMut(&Manifest, u64),
}

impl<'a> Receiver<'a> {
    /// Spools into `dir` (which exists); `progress` hears of the compressed bytes verified.
    pub fn new(
        dir: PathBuf,
        policy: &'a Policy,
        progress: &'a mut dyn FnMut(&Manifest, u64),
    ) -> Self {
        Receiver { dir, policy, manifest: None, current: None, received: 0, progress }
    }
}

impl ArtifactSink for Receiver<'_> {
    fn accept(&mut self, manifest: &Manifest) -> Result<(), String> {
        self.policy.check(manifest)?;
        self.manifest = Some(manifest.clone());
        (self.progress)(manifest, 0);
        Ok(())
    }

    fn chunk(&mut self, artifact: &Artifact, bytes: &[u8]) -> Result<(), String> {
        let kind = artifact.kind;
        if self.current.is_none() {
            let path = spooled(&self.dir, &artifact.target());
            let file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let limit = artifact.size;
            let writer = HashingWriter::new(BufWriter::with_capacity(1 << 20, file), limit);
            let decoder = zstd::stream::write::Decoder::new(writer)
                .map_err(|e| format!("{kind}: zstd: {e}"))?;
            self.current = Some(decoder);
        }
        let decoder = self.current.as_mut().expect("set above");
        decoder.write_all(bytes).map_err(|e| format!("{kind}: decompressing: {e}"))?;
        self.received += bytes.len() as u64;
        let manifest = self.manifest.as_ref().expect("artifacts come after the manifest");
        (self.progress)(manifest, self.received);
        Ok(())
    }

    fn finish(&mut self, artifact: &Artifact) -> Result<(), String> {
        let kind = artifact.kind;
        let mut decoder = self
            .current
            .take()
            .ok_or_else(|| format!("{kind}: no bytes (an empty artifact is not a system)"))?;
        decoder.flush().map_err(|e| format!("{kind}: decompressing: {e}"))?;
        let (buffered, written, sha256) = decoder.into_inner().finish();
        buffered.into_inner().map_err(|e| format!("{kind}: {}", e.error()))?;
        check_written(artifact, written, &sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_api::bundle::testing::{self, BOARD};
    use cairn_api::bundle::{read, BundleError, SigningKey};

    fn bundle(key: &SigningKey, version: &str, rootfs: &[u8]) -> Vec<u8> {
        testing::bundle(key, version, Arch::X86_64, rootfs)
    }

    fn policy() -> Policy {
        Policy {
            arch: Arch::X86_64,
            board: Some(BOARD.into()),
            running: semver::Version::new(0, 2, 0),
            force: false,
            root_bytes: 1 << 20,
            free_bytes: 1 << 30,
        }
    }

    fn receive(
        bytes: &[u8],
        key: &SigningKey,
        policy: &Policy,
    ) -> (tempfile::TempDir, Result<Manifest, BundleError>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = 0;
        let mut progress = |_: &Manifest, n: u64| seen = n;
        let mut sink = Receiver::new(dir.path().to_path_buf(), policy, &mut progress);
        let result = read(bytes, &[key.public()], &mut sink);
        (dir, result, seen)
    }

    #[test]
    fn a_good_bundle_is_spooled_decompressed() {
        let key = testing::key();
        let rootfs: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let bytes = bundle(&key, "0.3.0", &rootfs);
        let (dir, result, seen) = receive(&bytes, &key, &policy());
        let manifest = result.unwrap();
        assert_eq!(seen, manifest.artifacts.iter().map(|a| a.compressed_size).sum::<u64>());
        assert_eq!(std::fs::read(dir.path().join("slot-root")).unwrap(), rootfs);
        assert_eq!(std::fs::read(dir.path().join("boot-vmlinuz")).unwrap(), b"kernel");
    }

    #[test]
    fn the_policy_refuses_what_does_not_fit_the_node() {
        let key = testing::key();
        let refused = |bytes: &[u8], policy: &Policy| match receive(bytes, &key, policy).1 {
            Err(BundleError::Refused(why)) => why,
            other => panic!("{other:?}"),
        };
        let older = bundle(&key, "0.1.5", b"root");
        assert_eq!(
            refused(&older, &policy()),
            "version 0.1.5 is older than the running 0.2.0; a downgrade needs --force"
        );
        assert!(receive(&older, &key, &Policy { force: true, ..policy() }).1.is_ok());
        let newer = bundle(&key, "0.3.0", b"root");
        let too_old = Policy { running: semver::Version::new(0, 0, 9), ..policy() };
        assert!(refused(&newer, &too_old).contains("replaces 0.1.0 or later, this node runs 0.0.9"));
        let arm = Policy { arch: Arch::Arm64, ..policy() };
        assert_eq!(refused(&newer, &arm), "the bundle is for x86_64, this node is arm64");
        let pi = Policy { board: Some("rpi4".into()), ..policy() };
        assert_eq!(
            refused(&newer, &pi),
            "the bundle is for the boards generic-x86_64, this node is a rpi4"
        );
        let small = Policy { root_bytes: 2, ..policy() };
        assert_eq!(refused(&newer, &small), "the rootfs is 4 bytes, the slot's partition 2");
        let full = Policy { free_bytes: 3, ..policy() };
        assert!(refused(&newer, &full).starts_with("receiving it needs 19 bytes on EPHEMERAL"));
    }

    #[test]
    fn writers_stop_at_their_limit_and_checks_compare_size_and_hash() {
        let mut writer = HashingWriter::new(Vec::new(), 4);
        writer.write_all(b"abcd").unwrap();
        assert!(writer.write_all(b"e").is_err());
        let (inner, written, sha256) = writer.finish();
        assert_eq!((inner.as_slice(), written), (&b"abcd"[..], 4));
        let artifact = Artifact {
            kind: ArtifactKind::Kernel,
            target: None,
            encoding: None,
            size: 4,
            sha256: sha256.clone(),
            compressed_size: 1,
            chunks: vec![],
        };
        assert!(check_written(&artifact, 4, &sha256).is_ok());
        assert!(check_written(&artifact, 3, &sha256).unwrap_err().starts_with("kernel: 3 bytes"));
    }
}
