//! Reading an OCI image-layout archive made elsewhere (`skopeo copy ... oci-archive:FILE`,
//! `docker save`, `podman save --format oci-archive`, or [`write`](super::write)), and checking
//! it before it goes into an image: the layout file, every blob against its digest, every
//! descriptor's blob present with its size, and each image's name and platforms.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    Descriptor, Digest, Index, Manifest, Platform, CONTAINERD_NAME_ANNOTATION, REF_NAME_ANNOTATION,
};

/// Media types of image manifests (OCI and Docker's).
const MANIFEST_TYPES: [&str; 2] =
    [super::MANIFEST_MEDIA_TYPE, "application/vnd.docker.distribution.manifest.v2+json"];
/// Media types of indexes (OCI and Docker's manifest list).
const INDEX_TYPES: [&str; 2] =
    [super::INDEX_MEDIA_TYPE, "application/vnd.docker.distribution.manifest.list.v2+json"];

/// An archive could not be read or is no sound OCI image layout.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The archive.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Not a sound OCI image layout.
    #[error("{path}: {reason}")]
    Invalid {
        /// The archive.
        path: PathBuf,
        /// What is wrong, naming the entry.
        reason: String,
    },
}

/// One image an archive's `index.json` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedImage {
    /// The name containerd gives it on import: `io.containerd.image.name`, else
    /// `org.opencontainers.image.ref.name`.
    pub name: String,
    /// Its descriptor in `index.json` (a manifest, or an index of per-platform manifests).
    pub descriptor: Descriptor,
    /// The platforms the archive holds it for.
    pub platforms: Vec<Platform>,
}

/// The platform fields of an image config.
#[derive(Deserialize)]
struct ConfigPlatform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

/// Reads `data`, the archive at `path` (named in errors), and returns its images.
pub fn inspect(path: &Path, data: &[u8]) -> Result<Vec<ArchivedImage>, InspectError> {
    let invalid = |reason: String| InspectError::Invalid { path: path.to_path_buf(), reason };
    let files =
        regular_files(data).map_err(|source| InspectError::Io { path: path.into(), source })?;

    let layout = files.get("oci-layout").ok_or_else(|| {
        invalid(
            "no oci-layout file: not an OCI image-layout archive (docker save before \
                 Docker 25 writes another format; skopeo copy to oci-archive:FILE writes this one)"
                .into(),
        )
    })?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Layout {
        image_layout_version: String,
    }
    let layout: Layout =
        serde_json::from_slice(layout).map_err(|e| invalid(format!("oci-layout: {e}")))?;
    if !layout.image_layout_version.starts_with("1.") {
        return Err(invalid(format!(
            "oci-layout: image layout version {:?}, only 1.x is read",
            layout.image_layout_version
        )));
    }

    let mut blobs = BTreeMap::new();
    for (name, content) in &files {
        let Some(rest) = name.strip_prefix("blobs/") else { continue };
        let digest = rest
            .strip_prefix("sha256/")
            .and_then(|hex| Digest::parse(&format!("sha256:{hex}")))
            .ok_or_else(|| invalid(format!("{name}: only sha256 blobs are read")))?;
        if Digest::of(content) != digest {
            return Err(invalid(format!("{name}: content does not match its digest (corrupt)")));
        }
        blobs.insert(digest, content.as_slice());
    }
    let blob = |descriptor: &Descriptor, what: &str| -> Result<&[u8], InspectError> {
        let data = blobs.get(&descriptor.digest).ok_or_else(|| {
            invalid(format!("{what}: blob {} is not in the archive", descriptor.digest))
        })?;
        if data.len() as u64 != descriptor.size {
            return Err(invalid(format!(
                "{what}: blob {} has {} bytes, its descriptor says {}",
                descriptor.digest,
                data.len(),
                descriptor.size
            )));
        }
        Ok(data)
    };
    let parse = |data: &[u8], what: &str| -> Result<serde_json::Value, InspectError> {
        serde_json::from_slice(data).map_err(|e| invalid(format!("{what}: {e}")))
    };

    let index = files.get("index.json").ok_or_else(|| invalid("no index.json".into()))?;
    let index: Index = serde_json::from_value(parse(index, "index.json")?)
        .map_err(|e| invalid(format!("index.json: {e}")))?;
    if index.manifests.is_empty() {
        return Err(invalid("index.json lists no image".into()));
    }
    let mut images = Vec::new();
    for (i, descriptor) in index.manifests.iter().enumerate() {
        let what = format!("index.json manifests[{i}]");
        let name = [CONTAINERD_NAME_ANNOTATION, REF_NAME_ANNOTATION]
            .iter()
            .find_map(|key| descriptor.annotations.get(*key))
            .cloned()
            .ok_or_else(|| {
                invalid(format!(
                    "{what}: no name (annotation {CONTAINERD_NAME_ANNOTATION} or \
                     {REF_NAME_ANNOTATION}); containerd would import it without one"
                ))
            })?;
        let data = blob(descriptor, &what)?;
        let media_type = descriptor.media_type.as_str();
        let manifests: Vec<(Descriptor, String)> = if MANIFEST_TYPES.contains(&media_type) {
            vec![(descriptor.clone(), what.clone())]
        } else if INDEX_TYPES.contains(&media_type) {
            let nested: Index = serde_json::from_value(parse(data, &what)?)
                .map_err(|e| invalid(format!("{what}: {e}")))?;
            nested
                .manifests
                .into_iter()
                .enumerate()
                .filter(|(_, m)| blobs.contains_key(&m.digest))
                .map(|(j, m)| (m, format!("{what} manifests[{j}]")))
                .collect()
        } else {
            return Err(invalid(format!("{what}: media type {media_type:?} is no image")));
        };
        let mut platforms = Vec::new();
        for (manifest_descriptor, what) in manifests {
            let manifest: Manifest =
                serde_json::from_value(parse(blob(&manifest_descriptor, &what)?, &what)?)
                    .map_err(|e| invalid(format!("{what}: {e}")))?;
            let config_what = format!("{what} config");
            let config = blob(&manifest.config, &config_what)?;
            for (j, layer) in manifest.layers.iter().enumerate() {
                blob(layer, &format!("{what} layers[{j}]"))?;
            }
            let config: ConfigPlatform = serde_json::from_value(parse(config, &config_what)?)
                .map_err(|e| invalid(format!("{config_what}: {e}")))?;
            platforms.push(Platform {
                architecture: config.architecture,
                os: config.os,
                variant: config.variant,
            });
        }
        if platforms.is_empty() {
            return Err(invalid(format!("{what} ({name}): the archive holds no platform of it")));
        }
        images.push(ArchivedImage { name, descriptor: descriptor.clone(), platforms });
    }
    Ok(images)
}

/// The archive's regular files by path (without a leading `./`).
fn regular_files(data: &[u8]) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.display().to_string();
        let path = path.strip_prefix("./").unwrap_or(&path).to_string();
        let mut content = Vec::new();
        entry.read_to_end(&mut content)?;
        files.insert(path, content);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use cairn_api::arch::Arch;

    use super::super::write::one_file_image;
    use super::super::ImageName;
    use super::*;

    fn archive(arch: Arch) -> (ImageName, Vec<u8>, Descriptor) {
        let name = "registry.example/app:v1";
        let archive = one_file_image(name, arch);
        (ImageName::parse(name).unwrap(), archive.bytes, archive.manifest)
    }

    /// `data` with its regular files changed by `edit` (path, content → new content; `None`
    /// drops the file).
    fn rewrite(data: &[u8], edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
        let mut out = tar::Builder::new(Vec::new());
        for (path, content) in regular_files(data).unwrap() {
            if let Some(content) = edit(&path, content) {
                let mut header = tar::Header::new_ustar();
                header.set_mode(0o644);
                header.set_size(content.len() as u64);
                out.append_data(&mut header, format!("./{path}"), content.as_slice()).unwrap();
            }
        }
        out.into_inner().unwrap()
    }

    #[test]
    fn reads_back_what_write_wrote() {
        for arch in [Arch::X86_64, Arch::Armv7] {
            let (name, data, manifest) = archive(arch);
            let images = inspect(Path::new("app.tar"), &data).unwrap();
            assert_eq!(images.len(), 1);
            assert_eq!(images[0].name, name.as_str());
            assert_eq!(images[0].descriptor, manifest);
            assert_eq!(images[0].platforms, [Platform::of(arch)]);
        }
    }

    #[test]
    fn names_what_is_wrong_and_where() {
        let (_, data, manifest) = archive(Arch::X86_64);
        let error = |data: &[u8]| inspect(Path::new("x/app.tar"), data).unwrap_err().to_string();

        let no_layout = rewrite(&data, |p, c| (p != "oci-layout").then_some(c));
        assert!(
            error(&no_layout).starts_with("x/app.tar: no oci-layout file"),
            "{}",
            error(&no_layout)
        );

        let manifest_path = manifest.digest.blob_path();
        let corrupt = rewrite(&data, |p, mut c| {
            if p == manifest_path {
                c.push(b' ');
            }
            Some(c)
        });
        let message = error(&corrupt);
        assert!(
            message.contains(&manifest_path) && message.contains("does not match"),
            "{message}"
        );

        let missing = rewrite(&data, |p, c| (p != manifest_path).then_some(c));
        let message = error(&missing);
        assert!(
            message.contains("manifests[0]") && message.contains("is not in the archive"),
            "{message}"
        );

        let unnamed = rewrite(&data, |p, c| {
            Some(if p == "index.json" {
                String::from_utf8(c).unwrap().replace("annotations", "x-annotations").into_bytes()
            } else {
                c
            })
        });
        let message = error(&unnamed);
        assert!(message.contains("manifests[0]: no name"), "{message}");
    }

    #[test]
    fn a_name_from_the_oci_annotation_alone_is_enough() {
        let (_, data, _) = archive(Arch::Arm64);
        let oci_only = rewrite(&data, |p, c| {
            Some(if p == "index.json" {
                let text = String::from_utf8(c).unwrap();
                text.replace(r#""io.containerd.image.name":"registry.example/app:v1","#, "")
                    .into_bytes()
            } else {
                c
            })
        });
        let images = inspect(Path::new("app.tar"), &oci_only).unwrap();
        assert_eq!(images[0].name, "registry.example/app:v1");
        assert!(!images[0].descriptor.annotations.contains_key(CONTAINERD_NAME_ANNOTATION));
    }
}
