//! The bundle reader against hostile streams: random truncations, flipped bytes, and
//! manifests that are signed but say anything. Every one must end in a clean error (or, for a
//! stream left intact, success), never a panic, and nothing may be passed on past a damaged
//! chunk.

use super::testing::{bundle, key, tar_of, Rng};
use super::{read, Artifact, ArtifactSink, Manifest, CHUNK_BYTES};
use crate::arch::Arch;

/// Counts what the reader passed on.
#[derive(Default)]
struct Count {
    chunks: usize,
    finished: usize,
}

impl ArtifactSink for Count {
    fn accept(&mut self, _: &Manifest) -> Result<(), String> {
        Ok(())
    }
    fn chunk(&mut self, _: &Artifact, _: &[u8]) -> Result<(), String> {
        self.chunks += 1;
        Ok(())
    }
    fn finish(&mut self, _: &Artifact) -> Result<(), String> {
        self.finished += 1;
        Ok(())
    }
}

#[test]
fn truncated_and_corrupted_bundles_end_in_clean_errors() {
    let key = key();
    let trusted = [key.public()];
    // The rootfs spans two chunks.
    let good = bundle(&key, "1.2.3", Arch::Arm64, &Rng(7).bytes(CHUNK_BYTES as usize + 4096));
    let mut sink = Count::default();
    read(&good[..], &trusted, &mut sink).unwrap();
    assert_eq!((sink.chunks, sink.finished), (4, 3));

    let mut rng = Rng(0x5eed_cafe);
    for round in 0..300 {
        let mut damaged = good.clone();
        let what = match round % 3 {
            0 => {
                damaged.truncate(rng.below(good.len() - 1024));
                "truncated"
            }
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(damaged.len() - 1024);
                    damaged[at] ^= 1 << rng.below(8);
                }
                "flipped"
            }
            _ => {
                let at = rng.below(damaged.len() - 1024);
                let len = 1 + rng.below(600);
                for b in damaged.iter_mut().skip(at).take(len) {
                    *b = rng.next_u64() as u8;
                }
                "overwritten"
            }
        };
        let mut sink = Count::default();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            read(&damaged[..], &trusted, &mut sink)
        }));
        let result = result.unwrap_or_else(|_| panic!("round {round}: {what} bundle panicked"));
        // A change that lands in tar padding leaves the bundle intact: then it must read.
        if let Err(e) = result {
            assert!(!e.to_string().is_empty(), "round {round}: empty error");
            assert!(sink.finished < 3, "round {round}: {what}: all artifacts finished, then {e}");
        }
    }
}

#[test]
fn signed_manifests_that_say_anything_are_refused_cleanly() {
    let key = key();
    let trusted = [key.public()];
    let mut rng = Rng(42);
    let hostile = [
        r#"{"format":1}"#.to_string(),
        "[]".into(),
        "null".into(),
        format!(
            r#"{{"format":1,"version":"1.0.0","arch":"x86_64","boards":["b"],"minVersion":"1.0.0","buildTime":0,"kernelArgs":[],"artifacts":[{}]}}"#,
            r#"{"kind":"kernel","size":1,"sha256":"00","compressedSize":99999999999,"chunks":[]}"#
        ),
        format!(
            r#"{{"format":1,"version":"1.0.0","arch":"x86_64","boards":[{}],"minVersion":"1.0.0","buildTime":0,"kernelArgs":[],"artifacts":[]}}"#,
            vec!["\"b\""; 100].join(",")
        ),
        "{".repeat(10_000),
    ];
    for (i, manifest) in hostile.iter().enumerate() {
        let junk: Vec<u8> = (0..rng.below(2000)).map(|_| rng.next_u64() as u8).collect();
        let signature = key.sign(manifest.as_bytes());
        let stream = tar_of(&[
            ("manifest", manifest.as_bytes()),
            ("manifest.sig", &signature),
            ("kernel.zst", &junk),
        ]);
        let error = read(&stream[..], &trusted, &mut Count::default()).unwrap_err();
        assert!(error.to_string().starts_with("manifest:"), "case {i}: {error}");
    }
}
