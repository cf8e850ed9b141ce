//! Reading an OCI image-layout archive (`skopeo copy ... oci-archive:FILE`, `docker save`,
//! `podman save --format oci-archive`, or image-builder's `oci::write`) and checking it: the
//! layout file, every blob against its digest, every descriptor's blob present with its size,
//! each image's name, platforms and layers. image-builder checks an archive made elsewhere
//! before it goes into an image; machined reads each baked-in archive to import it.

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

/// A whole archive: its images and every blob it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The images `index.json` names, in its order.
    pub images: Vec<ArchivedImage>,
    /// The blobs, by digest (each checked against it).
    pub blobs: BTreeMap<Digest, Vec<u8>>,
}

/// One image an archive's `index.json` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedImage {
    /// The name containerd gives it on import: `io.containerd.image.name`, else
    /// `org.opencontainers.image.ref.name`.
    pub name: String,
    /// Its descriptor in `index.json` (a manifest, or an index of per-platform manifests).
    pub descriptor: Descriptor,
    /// The manifests the archive holds it by, one per platform.
    pub manifests: Vec<PlatformManifest>,
}

impl ArchivedImage {
    /// The platforms the archive holds it for.
    pub fn platforms(&self) -> impl Iterator<Item = &Platform> {
        self.manifests.iter().map(|m| &m.platform)
    }
}

/// An image for one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformManifest {
    /// The manifest's descriptor.
    pub descriptor: Descriptor,
    /// The manifest: config and layers.
    pub manifest: Manifest,
    /// The platform its config names.
    pub platform: Platform,
    /// The digests of its layers uncompressed (the config's `rootfs.diff_ids`), lowest first,
    /// one per layer.
    pub diff_ids: Vec<Digest>,
}

/// The fields of an image config read here.
#[derive(Deserialize)]
struct Config {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    rootfs: RootFs,
}

/// An image config's `rootfs`.
#[derive(Deserialize, Default)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

/// Reads `data`, the archive at `path` (named in errors), and returns its images.
pub fn inspect(path: &Path, data: &[u8]) -> Result<Vec<ArchivedImage>, InspectError> {
    read(path, data).map(|layout| layout.images)
}

/// Reads `data`, the archive at `path` (named in errors), and returns its images and blobs.
pub fn read(path: &Path, data: &[u8]) -> Result<Layout, InspectError> {
    let invalid = |reason: String| InspectError::Invalid { path: path.to_path_buf(), reason };
    let mut files =
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
    struct LayoutFile {
        image_layout_version: String,
    }
    let layout: LayoutFile =
        serde_json::from_slice(layout).map_err(|e| invalid(format!("oci-layout: {e}")))?;
    if !layout.image_layout_version.starts_with("1.") {
        return Err(invalid(format!(
            "oci-layout: image layout version {:?}, only 1.x is read",
            layout.image_layout_version
        )));
    }
    let index = files.remove("index.json").ok_or_else(|| invalid("no index.json".into()))?;

    let mut blobs = BTreeMap::new();
    for (name, content) in files {
        let Some(rest) = name.strip_prefix("blobs/") else { continue };
        let digest = rest
            .strip_prefix("sha256/")
            .and_then(|hex| Digest::parse(&format!("sha256:{hex}")))
            .ok_or_else(|| invalid(format!("{name}: only sha256 blobs are read")))?;
        if Digest::of(&content) != digest {
            return Err(invalid(format!("{name}: content does not match its digest (corrupt)")));
        }
        blobs.insert(digest, content);
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

    let index: Index = serde_json::from_value(parse(&index, "index.json")?)
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
        let candidates: Vec<(Descriptor, String)> = if MANIFEST_TYPES.contains(&media_type) {
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
        let mut manifests = Vec::new();
        for (manifest_descriptor, what) in candidates {
            let manifest: Manifest =
                serde_json::from_value(parse(blob(&manifest_descriptor, &what)?, &what)?)
                    .map_err(|e| invalid(format!("{what}: {e}")))?;
            let config_what = format!("{what} config");
            let config = blob(&manifest.config, &config_what)?;
            for (j, layer) in manifest.layers.iter().enumerate() {
                blob(layer, &format!("{what} layers[{j}]"))?;
            }
            let config: Config = serde_json::from_value(parse(config, &config_what)?)
                .map_err(|e| invalid(format!("{config_what}: {e}")))?;
            if config.rootfs.diff_ids.len() != manifest.layers.len() {
                return Err(invalid(format!(
                    "{config_what}: rootfs.diff_ids has {} entries for {} layers",
                    config.rootfs.diff_ids.len(),
                    manifest.layers.len()
                )));
            }
            manifests.push(PlatformManifest {
                descriptor: manifest_descriptor,
                manifest,
                platform: Platform {
                    architecture: config.architecture,
                    os: config.os,
                    variant: config.variant,
                },
                diff_ids: config.rootfs.diff_ids,
            });
        }
        if manifests.is_empty() {
            return Err(invalid(format!("{what} ({name}): the archive holds no platform of it")));
        }
        images.push(ArchivedImage { name, descriptor: descriptor.clone(), manifests });
    }
    Ok(Layout { images, blobs })
}

/// The archive's regular files by path (without a leading `./`).
pub fn regular_files(data: &[u8]) -> io::Result<BTreeMap<String, Vec<u8>>> {
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
