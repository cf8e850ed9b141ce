//! Small signed bundles for tests (feature `testing`): a kernel, an initramfs and a rootfs
//! given by the test, compressed with zstd like image-builder's.

use super::{write, ArtifactInput, ArtifactKind, BundleInfo, SigningKey};
use crate::arch::Arch;

/// The board the bundles are for.
pub const BOARD: &str = "generic-x86_64";
/// The oldest version the bundles may replace.
pub const MIN_VERSION: &str = "0.1.0";

/// A fresh signing key.
pub fn key() -> SigningKey {
    SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().expect("a new key")).expect("its own key")
}

/// A bundle of `version` for `arch` and [`BOARD`] holding `rootfs`, signed with `key`.
pub fn bundle(key: &SigningKey, version: &str, arch: Arch, rootfs: &[u8]) -> Vec<u8> {
    let contents: [(ArtifactKind, &[u8]); 3] = [
        (ArtifactKind::Kernel, b"kernel"),
        (ArtifactKind::Initramfs, b"initramfs"),
        (ArtifactKind::Rootfs, rootfs),
    ];
    let compressed: Vec<Vec<u8>> = contents
        .iter()
        .map(|(_, content)| zstd::encode_all(*content, 3).expect("zstd into memory"))
        .collect();
    let artifacts: Vec<ArtifactInput> = contents
        .iter()
        .zip(&compressed)
        .map(|((kind, content), compressed)| ArtifactInput::of_kind(*kind, content, compressed))
        .collect();
    let info = BundleInfo {
        version,
        arch,
        boards: vec![BOARD.into()],
        min_version: MIN_VERSION,
        build_time: 1_767_225_600,
        kernel_args: vec!["console=ttyS0".into()],
    };
    let mut out = Vec::new();
    write(&mut out, info, &artifacts, key).expect("writing into memory");
    out
}

/// A tar stream of `entries` (name, data), plain files as in a bundle: for bundles made by
/// hand, of a format or a shape [`write`] does not make.
pub fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_cksum();
        tar.append_data(&mut header, name, *data).expect("writing into memory");
    }
    tar.into_inner().expect("writing into memory")
}

/// xorshift64*: reproducible randomness without a dependency. Its bytes are what zstd
/// cannot compress, so a rootfs of them spans as many bundle chunks as it is long.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}
