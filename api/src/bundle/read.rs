//! Reading a bundle from a stream, verifying as it goes.

use std::io::Read;

use sha2::{Digest, Sha256};

use super::entries::Entries;
use super::{
    hex, Artifact, BundleError, Manifest, TrustedKey, CHUNK_BYTES, MANIFEST_ENTRY,
    MAX_MANIFEST_BYTES, SIGNATURE_ENTRY,
};

/// Where a bundle's contents go, once verified.
pub trait ArtifactSink {
    /// The manifest, signed by a trusted key, before any artifact byte: the caller checks
    /// architecture, board and versions here; an error refuses the bundle.
    fn accept(&mut self, manifest: &Manifest) -> Result<(), String>;
    /// The next chunk of `artifact`'s encoded bytes, checked against its hash.
    fn chunk(&mut self, artifact: &Artifact, bytes: &[u8]) -> Result<(), String>;
    /// Every chunk of `artifact` has been passed on.
    fn finish(&mut self, artifact: &Artifact) -> Result<(), String>;
}

/// The bytes of the manifest, the first entry of `entries`.
fn manifest_bytes<R: Read>(entries: &mut Entries<R>) -> Result<Vec<u8>, BundleError> {
    let size = entries.expect(MANIFEST_ENTRY, |size| match size {
        0 => Err("empty".into()),
        s if s > MAX_MANIFEST_BYTES => Err(format!("{s} bytes, more than {MAX_MANIFEST_BYTES}")),
        _ => Ok(()),
    })?;
    let mut bytes = vec![0u8; size as usize];
    entries.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// The manifest at the head of `stream`, parsed but not verified: for saying what a file is
/// before sending it (`ctl upgrade`). Only [`read`] says whether a bundle can be trusted.
pub fn peek_manifest<R: Read>(stream: R) -> Result<Manifest, BundleError> {
    Manifest::parse(&manifest_bytes(&mut Entries::new(stream))?)
}

/// Reads the bundle in `stream`: checks the manifest's signature against `trusted`, hands it
/// to `sink` to accept, then passes each artifact on a verified chunk at a time. Returns the
/// manifest once the whole bundle has been read and verified.
pub fn read<R: Read>(
    stream: R,
    trusted: &[TrustedKey],
    sink: &mut impl ArtifactSink,
) -> Result<Manifest, BundleError> {
    let mut entries = Entries::new(stream);

    let bytes = manifest_bytes(&mut entries)?;
    let mut signature = [0u8; 64];
    entries.expect(SIGNATURE_ENTRY, |size| match size {
        64 => Ok(()),
        s => Err(format!("{s} bytes, not the 64 of an ed25519 signature")),
    })?;
    entries.read_exact(&mut signature)?;
    // The signature first: nothing of an unsigned manifest is believed, not even its format.
    if !trusted.iter().any(|key| key.verifies(&bytes, &signature)) {
        return Err(BundleError::Untrusted(trusted.len()));
    }
    let manifest = Manifest::parse(&bytes)?;
    sink.accept(&manifest).map_err(BundleError::Refused)?;

    let mut buffer = vec![0u8; CHUNK_BYTES as usize];
    for artifact in &manifest.artifacts {
        let kind = artifact.kind;
        let expected = artifact.compressed_size;
        entries.expect(&artifact.entry(), |size| {
            if size == expected {
                Ok(())
            } else {
                Err(format!("{size} bytes where the manifest says {expected}"))
            }
        })?;
        let mut left = expected;
        for (index, chunk_hash) in artifact.chunks.iter().enumerate() {
            let length = left.min(CHUNK_BYTES) as usize;
            entries.read_exact(&mut buffer[..length])?;
            left -= length as u64;
            if hex(&Sha256::digest(&buffer[..length])) != *chunk_hash {
                return Err(BundleError::Corrupt {
                    kind,
                    reason: format!(
                        "chunk {index} (bytes {} on) does not match its hash",
                        index as u64 * CHUNK_BYTES
                    ),
                });
            }
            sink.chunk(artifact, &buffer[..length]).map_err(BundleError::Refused)?;
        }
        sink.finish(artifact).map_err(BundleError::Refused)?;
    }
    entries.expect_end()?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use crate::bundle::testing::{self, Rng};
    use crate::bundle::{ArtifactKind, SigningKey};

    /// Records what a reader passed on.
    #[derive(Default)]
    pub(crate) struct Collect {
        pub accepted: Option<Manifest>,
        pub bytes: Vec<(ArtifactKind, usize)>,
        pub finished: Vec<ArtifactKind>,
    }

    impl ArtifactSink for Collect {
        fn accept(&mut self, manifest: &Manifest) -> Result<(), String> {
            self.accepted = Some(manifest.clone());
            Ok(())
        }
        fn chunk(&mut self, artifact: &Artifact, bytes: &[u8]) -> Result<(), String> {
            self.bytes.push((artifact.kind, bytes.len()));
            Ok(())
        }
        fn finish(&mut self, artifact: &Artifact) -> Result<(), String> {
            self.finished.push(artifact.kind);
            Ok(())
        }
    }

    /// A bundle whose rootfs spans two chunks, and its signing key.
    fn bundle() -> (Vec<u8>, SigningKey) {
        let key = testing::key();
        let rootfs = Rng(1).bytes(CHUNK_BYTES as usize + 10);
        (testing::bundle(&key, "0.2.0", Arch::X86_64, &rootfs), key)
    }

    /// The compressed size of `kind` in `manifest`.
    fn compressed(manifest: &Manifest, kind: ArtifactKind) -> usize {
        manifest.artifacts.iter().find(|a| a.kind == kind).unwrap().compressed_size as usize
    }

    #[test]
    fn a_signed_bundle_reads_back_chunk_by_chunk() {
        let (bytes, key) = bundle();
        let mut sink = Collect::default();
        let manifest = read(&bytes[..], &[key.public()], &mut sink).unwrap();
        assert_eq!(manifest.version, "0.2.0");
        let rootfs = compressed(&manifest, ArtifactKind::Rootfs);
        assert!(rootfs > CHUNK_BYTES as usize);
        assert_eq!(
            sink.bytes,
            [
                (ArtifactKind::Kernel, compressed(&manifest, ArtifactKind::Kernel)),
                (ArtifactKind::Initramfs, compressed(&manifest, ArtifactKind::Initramfs)),
                (ArtifactKind::Rootfs, CHUNK_BYTES as usize),
                (ArtifactKind::Rootfs, rootfs - CHUNK_BYTES as usize)
            ]
        );
        assert_eq!(sink.accepted, Some(manifest));
        assert_eq!(sink.finished, ArtifactKind::ALL);
    }

    /// `manifest` in format 2: every artifact with its kind's target and zstd.
    fn targeted(manifest: &mut Manifest) {
        manifest.format = crate::bundle::FORMAT;
        for artifact in &mut manifest.artifacts {
            artifact.target = Some(artifact.kind.target());
            artifact.encoding = Some(crate::bundle::Encoding::Zstd);
        }
    }

    /// `bundle`'s content as a bundle of format 2, signed with `key`: the manifest with
    /// targets and encodings, entries named after the targets, the rootfs first.
    fn in_format_2(bundle: &[u8], key: &SigningKey) -> Vec<u8> {
        let mut manifest = peek_manifest(bundle).unwrap();
        let mut entries = Entries::new(bundle);
        let mut artifacts = Vec::new();
        entries.expect(MANIFEST_ENTRY, |_| Ok(())).unwrap();
        entries.expect(SIGNATURE_ENTRY, |_| Ok(())).unwrap();
        for artifact in &manifest.artifacts {
            let size = entries.expect(&artifact.entry(), |_| Ok(())).unwrap();
            let mut bytes = vec![0u8; size as usize];
            entries.read_exact(&mut bytes).unwrap();
            artifacts.push(bytes);
        }
        targeted(&mut manifest);
        manifest.artifacts.rotate_right(1);
        artifacts.rotate_right(1);
        let names: Vec<String> = manifest.artifacts.iter().map(Artifact::entry).collect();
        let text = serde_json::to_vec_pretty(&manifest).unwrap();
        let signature = key.sign(&text);
        let mut entries: Vec<(&str, &[u8])> =
            vec![(MANIFEST_ENTRY, &text), (SIGNATURE_ENTRY, &signature)];
        entries.extend(names.iter().map(String::as_str).zip(artifacts.iter().map(Vec::as_slice)));
        testing::tar_of(&entries)
    }

    #[test]
    fn a_system_of_kernel_initramfs_and_rootfs_is_written_in_the_classic_format() {
        let (bytes, _) = bundle();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("\"format\": 1,") && !text.contains("\"target\""), "{text}");
        let manifest = peek_manifest(&bytes[..]).unwrap();
        let entries: Vec<String> = manifest.artifacts.iter().map(Artifact::entry).collect();
        assert_eq!(entries, ["kernel.zst", "initramfs.zst", "rootfs.zst"]);
    }

    #[test]
    fn a_bundle_of_format_2_reads_as_the_classic_one() {
        let (bytes, key) = bundle();
        let new = in_format_2(&bytes, &key);
        assert!(String::from_utf8_lossy(&new).contains("\"format\": 2,"));
        let mut sink = Collect::default();
        let manifest = read(&new[..], &[key.public()], &mut sink).unwrap();
        assert_eq!(
            sink.finished,
            [ArtifactKind::Rootfs, ArtifactKind::Kernel, ArtifactKind::Initramfs]
        );
        let mut classic = Collect::default();
        read(&bytes[..], &[key.public()], &mut classic).unwrap();
        let sorted = |mut bytes: Vec<(ArtifactKind, usize)>| {
            bytes.sort_by_key(|(kind, _)| kind.name());
            bytes
        };
        assert_eq!(sorted(sink.bytes), sorted(classic.bytes));
        let targets: Vec<String> =
            manifest.artifacts.iter().map(|a| a.target().to_string()).collect();
        assert_eq!(targets, ["slot:root", "boot:vmlinuz", "boot:initramfs.zst"]);
    }

    #[test]
    fn an_unknown_key_is_refused_before_the_manifest_is_believed() {
        let (bytes, _) = bundle();
        let other = testing::key();
        let mut sink = Collect::default();
        let error = read(&bytes[..], &[other.public()], &mut sink).unwrap_err();
        assert!(matches!(error, BundleError::Untrusted(1)), "{error}");
        assert!(sink.accepted.is_none() && sink.bytes.is_empty());
    }

    #[test]
    fn a_flipped_byte_stops_the_stream_at_its_chunk() {
        let (mut bytes, key) = bundle();
        // The last rootfs byte sits just before the tar stream's padding and end blocks.
        let rootfs = compressed(&peek_manifest(&bytes[..]).unwrap(), ArtifactKind::Rootfs);
        let end = bytes.len() - 1024 - (512 - rootfs % 512) % 512;
        bytes[end - 1] ^= 1;
        let mut sink = Collect::default();
        let error = read(&bytes[..], &[key.public()], &mut sink).unwrap_err();
        assert!(error.to_string().contains("rootfs: chunk 1"), "{error}");
        // The first rootfs chunk was good and went on; the bad one did not.
        assert_eq!(sink.bytes.last(), Some(&(ArtifactKind::Rootfs, CHUNK_BYTES as usize)));
        assert!(!sink.finished.contains(&ArtifactKind::Rootfs));
    }

    #[test]
    fn a_refusal_by_the_caller_stops_before_any_artifact() {
        struct Refuse;
        impl ArtifactSink for Refuse {
            fn accept(&mut self, m: &Manifest) -> Result<(), String> {
                Err(format!("{} is for {}", m.version, m.arch))
            }
            fn chunk(&mut self, _: &Artifact, _: &[u8]) -> Result<(), String> {
                panic!("no chunk after a refusal")
            }
            fn finish(&mut self, _: &Artifact) -> Result<(), String> {
                panic!("no finish after a refusal")
            }
        }
        let (bytes, key) = bundle();
        let error = read(&bytes[..], &[key.public()], &mut Refuse).unwrap_err();
        assert_eq!(error.to_string(), "0.2.0 is for x86_64");
    }

    #[test]
    fn manifests_with_inconsistent_values_are_refused() {
        let (bytes, key) = bundle();
        let mut sink = Collect::default();
        let manifest = read(&bytes[..], &[key.public()], &mut sink).unwrap();
        let broken = |edit: &dyn Fn(&mut Manifest)| {
            let mut m = manifest.clone();
            edit(&mut m);
            m.check().unwrap_err()
        };
        assert!(broken(&|m| m.version = "two".into()).contains("not semver"));
        assert!(broken(&|m| m.min_version = "9.0.0".into()).contains("above version"));
        assert!(broken(&|m| m.artifacts.truncate(2))
            .contains("artifacts must be kernel, initramfs, rootfs in that order"));
        assert_eq!(
            broken(&|m| {
                targeted(m);
                m.artifacts.truncate(2)
            }),
            "artifacts: no rootfs"
        );
        assert!(broken(&|m| m.artifacts[2].chunks.pop().map(drop).unwrap_or(()))
            .contains("chunk hashes"));
        assert!(broken(&|m| m.boards = vec!["../x".into()]).contains("not a board name"));
        assert!(broken(&|m| m.format = 3).contains("format 3"));
        assert!(broken(&|m| m.kernel_args = vec!["a b".into()]).contains("one printable word"));
    }

    #[test]
    fn a_peek_reads_the_manifest_and_names_what_is_not_a_bundle() {
        let (bytes, _) = bundle();
        assert_eq!(peek_manifest(&bytes[..]).unwrap().version, "0.2.0");
        let error = peek_manifest(&[0u8; 2048][..]).unwrap_err().to_string();
        assert!(error.contains("the stream ends where manifest should be"), "{error}");
        let error = peek_manifest(&[b'x'; 2048][..]).unwrap_err().to_string();
        assert_eq!(error, "not a Cairn bundle: no tar header where manifest should be");
    }

    /// A stream of `head`, then zeros without end, that counts what was read.
    struct Counted {
        head: Vec<u8>,
        read: u64,
    }

    impl Read for Counted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let at = self.read as usize;
            let n = if at < self.head.len() {
                let n = buf.len().min(self.head.len() - at);
                buf[..n].copy_from_slice(&self.head[at..at + n]);
                n
            } else {
                buf.fill(0);
                buf.len()
            };
            self.read += n as u64;
            Ok(n)
        }
    }

    #[test]
    fn extension_entries_before_the_manifest_are_refused_before_their_data() {
        // The tar crate used to read a long name or PAX record whole: 2 GiB took 3.1 GB.
        const CLAIMED: u64 = 64 * 1024 * 1024;
        let (bundle, key) = bundle();
        for (kind, flag) in [
            (tar::EntryType::GNULongName, 'L'),
            (tar::EntryType::GNULongLink, 'K'),
            (tar::EntryType::XHeader, 'x'),
            (tar::EntryType::XGlobalHeader, 'g'),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            // As GNU tar writes it (`set_path` would drop the "./").
            header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
            header.set_size(CLAIMED);
            header.set_cksum();
            let want = format!("not a Cairn bundle: entry \"././@LongLink\" of type '{flag}' ({kind:?}) where manifest should be: a bundle holds only plain files");

            let mut stream = Counted { head: header.as_bytes().to_vec(), read: 0 };
            let error = read(&mut stream, &[key.public()], &mut Collect::default()).unwrap_err();
            assert_eq!(error.to_string(), want);
            assert_eq!(stream.read, 512, "{kind:?}: read past its header");

            let mut stream = Counted { head: header.as_bytes().to_vec(), read: 0 };
            assert_eq!(peek_manifest(&mut stream).unwrap_err().to_string(), want);
            assert_eq!(stream.read, 512, "{kind:?}: peeked past its header");

            // Before the bundle's own manifest, with data that fits: refused all the same.
            header.set_size(512);
            header.set_cksum();
            let mut prefixed = header.as_bytes().to_vec();
            prefixed.extend_from_slice(&[b'a'; 512]);
            prefixed.extend_from_slice(&bundle);
            let error = read(&prefixed[..], &[key.public()], &mut Collect::default()).unwrap_err();
            assert!(error.to_string().contains(&format!("of type '{flag}'")), "{error}");
        }
    }

    #[test]
    fn keys_round_trip_through_base64() {
        let key = testing::key();
        let public = key.public();
        assert_eq!(TrustedKey::from_base64(&public.to_base64()).unwrap(), public);
        assert!(TrustedKey::from_base64("AAAA").unwrap_err().contains("3 bytes, not 32"));
        assert!(public.verifies(b"m", &key.sign(b"m")));
        assert!(!public.verifies(b"n", &key.sign(b"m")));
    }
}
