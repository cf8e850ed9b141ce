//! OCI image-layout archives: container images as files, which image-builder writes into an
//! image and machined imports into containerd at boot, with no registry.
//!
//! An archive is a tar of an [OCI image layout]:
//!
//! ```text
//! blobs/sha256/<hex>   content-addressed blobs: an image's manifest, config and layers
//! index.json           the entry point: one descriptor per image (mediaType, digest, size,
//!                      platform, annotations naming the image)
//! oci-layout           {"imageLayoutVersion":"1.0.0"}
//! ```
//!
//! An image is named by two annotations of its descriptor in `index.json`:
//! `io.containerd.image.name` (what containerd names the image it imports, before anything
//! else) and `org.opencontainers.image.ref.name` (what other OCI tools read); Cairn writes the
//! full name, e.g. `localhost/pause:latest`, into both.
//!
//! - [`inspect`]: an archive read and checked (layout, blob digests and sizes, names,
//!   platforms, layers): by image-builder before one made elsewhere goes into an image, by
//!   machined before it imports one. (image-builder's `oci::write` writes them.)
//!
//! [OCI image layout]: https://github.com/opencontainers/image-spec/blob/v1.1.0/image-layout.md

pub mod inspect;

use std::collections::BTreeMap;
use std::fmt;

use crate::arch::Arch;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// `index.json`'s media type.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// An image manifest's media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// An image config's media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// An uncompressed layer's media type.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// The annotation containerd names an imported image by.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation naming an image in an index.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The content of `oci-layout`.
pub const LAYOUT_FILE: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// An image name could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image name {name:?}: {reason}")]
pub struct NameError {
    /// The name given.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A full image name with its tag, e.g. `localhost/pause:latest`: what containerd and the
/// kubelet know an image by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageName(String);

impl ImageName {
    /// Checks `name`: a repository (path components of lower-case letters, digits and `._-`,
    /// optionally after a registry host such as `localhost` or `registry.example:5000`), then
    /// `:` and a tag. Digest references (`@sha256:...`) are not names.
    pub fn parse(name: &str) -> Result<ImageName, NameError> {
        let error = |reason| NameError { name: name.to_string(), reason };
        if name.contains('@') {
            return Err(error("a digest reference is not a name; give a tag"));
        }
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let Some(colon) = name[last_slash..].rfind(':').map(|i| last_slash + i) else {
            return Err(error("no tag; write it out, e.g. NAME:latest"));
        };
        let (repository, tag) = (&name[..colon], &name[colon + 1..]);
        let tag_ok = tag.len() <= 128
            && tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !tag_ok {
            return Err(error(
                "the tag is 1 to 128 of A-Z a-z 0-9 _ . - and starts with no . or -",
            ));
        }
        let mut components: Vec<&str> = repository.split('/').collect();
        if components.len() > 1 {
            let host = components[0];
            if host == "localhost" || host.contains(['.', ':']) {
                let host_ok = host.split_once(':').map_or(!host.is_empty(), |(h, port)| {
                    !h.is_empty() && !port.is_empty() && port.chars().all(|c| c.is_ascii_digit())
                }) && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c));
                if !host_ok {
                    return Err(error("the registry host is HOST or HOST:PORT"));
                }
                components.remove(0);
            }
        }
        let component_ok = |c: &str| {
            c.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
                && c.starts_with(|c: char| c.is_ascii_alphanumeric())
                && c.ends_with(|c: char| c.is_ascii_alphanumeric())
        };
        if !components.into_iter().all(component_ok) {
            return Err(error(
                "repository path components are lower-case letters, digits and . _ - \
                 between letters or digits",
            ));
        }
        Ok(ImageName(name.to_string()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SHA-256 content digest as OCI writes it: `sha256:` and 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(format!("sha256:{:x}", Sha256::digest(data)))
    }

    /// Reads `sha256:<hex>`; `None` for another algorithm or a malformed value.
    pub fn parse(text: &str) -> Option<Digest> {
        let hex = text.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Digest(text.to_string()))
    }

    /// The hex digits, the blob's file name in `blobs/sha256/`.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The blob's path in a layout: `blobs/sha256/<hex>`.
    pub fn blob_path(&self) -> String {
        format!("blobs/sha256/{}", self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "digest {text:?}: only sha256:<64 hex digits> is read"
            ))
        })
    }
}

/// Where an image runs: OCI's names for the architecture (Go's `GOARCH`, and `GOARM` as the
/// variant), as in a config and an index's descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, `arm`, ...
    pub architecture: String,
    /// `linux`.
    pub os: String,
    /// `v7` for 32-bit ARM; none for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of a Cairn architecture: `amd64`, `arm64`, `arm` variant `v7`.
    pub fn of(arch: Arch) -> Platform {
        let (architecture, variant) = match arch {
            Arch::X86_64 => ("amd64", None),
            Arch::Arm64 => ("arm64", None),
            Arch::Armv7 => ("arm", Some("v7")),
        };
        Platform {
            architecture: architecture.into(),
            os: "linux".into(),
            variant: variant.map(Into::into),
        }
    }

    /// Whether an image for this platform runs on `arch` (as containerd matches them: no
    /// variant on `arm` means `v7`, and `arm64` may say `v8`).
    pub fn runs_on(&self, arch: Arch) -> bool {
        let variant = self.variant.as_deref();
        self.os == "linux"
            && match arch {
                Arch::X86_64 => self.architecture == "amd64",
                Arch::Arm64 => self.architecture == "arm64" && matches!(variant, None | Some("v8")),
                Arch::Armv7 => self.architecture == "arm" && matches!(variant, None | Some("v7")),
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

/// A reference to a blob: what it is, its digest and size, and (in an index) its platform and
/// annotations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The blob's media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// The platform of the image it is the manifest of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations, such as the image's names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// The descriptor of `data` as a blob of `media_type`.
    pub fn of(media_type: &str, data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: Digest::of(data),
            size: data.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// `index.json`, or a nested (multi-platform) index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// [`INDEX_MEDIA_TYPE`] (optional in archives made elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests (or nested indexes).
    pub manifests: Vec<Descriptor>,
}

/// An image manifest: its config and layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MANIFEST_MEDIA_TYPE`] (optional in archives made elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layer blobs, lowest first.
    pub layers: Vec<Descriptor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_need_a_tag_and_a_sane_repository() {
        for good in [
            "localhost/pause:latest",
            "busybox:1.37",
            "registry.example:5000/team/app:v1.2-rc_3",
            "docker.io/library/busybox:latest",
        ] {
            assert_eq!(ImageName::parse(good).unwrap().as_str(), good);
        }
        for (bad, why) in [
            ("localhost/pause", "no tag"),
            ("localhost:5000/pause", "no tag"),
            ("pause@sha256:00", "digest"),
            ("Pause:latest", "repository"),
            ("localhost/-x:latest", "repository"),
            ("pause:", "tag"),
            ("pause:.x", "tag"),
            ("host:port/pause:latest", "registry host"),
        ] {
            let error = ImageName::parse(bad).unwrap_err().to_string();
            assert!(error.contains(bad) && error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn digests_are_sha256_hex_and_name_their_blob() {
        let digest = Digest::of(b"");
        assert_eq!(
            digest.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            digest.blob_path(),
            "blobs/sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&digest.to_string()), Some(digest));
        assert_eq!(Digest::parse("sha512:00"), None);
        assert_eq!(Digest::parse("sha256:E3B0"), None);
        let error = serde_json::from_str::<Digest>(r#""md5:00""#).unwrap_err().to_string();
        assert!(error.contains("md5:00"), "{error}");
    }

    #[test]
    fn platforms_of_cairn_architectures() {
        let json = |arch| serde_json::to_string(&Platform::of(arch)).unwrap();
        assert_eq!(json(Arch::X86_64), r#"{"architecture":"amd64","os":"linux"}"#);
        assert_eq!(json(Arch::Arm64), r#"{"architecture":"arm64","os":"linux"}"#);
        assert_eq!(json(Arch::Armv7), r#"{"architecture":"arm","os":"linux","variant":"v7"}"#);
        for arch in [Arch::X86_64, Arch::Arm64, Arch::Armv7] {
            assert!(Platform::of(arch).runs_on(arch));
        }
        assert!(!Platform::of(Arch::Arm64).runs_on(Arch::Armv7));
        let arm_v6 = Platform { variant: Some("v6".into()), ..Platform::of(Arch::Armv7) };
        assert!(!arm_v6.runs_on(Arch::Armv7));
        let arm64_v8 = Platform { variant: Some("v8".into()), ..Platform::of(Arch::Arm64) };
        assert!(arm64_v8.runs_on(Arch::Arm64));
        assert_eq!(Platform::of(Arch::Armv7).to_string(), "linux/arm/v7");
    }
}
