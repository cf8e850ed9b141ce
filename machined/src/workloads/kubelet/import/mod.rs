//! The import of the OCI archives baked into the OS image ([`IMAGES_DIR`]) into containerd, at
//! the kubelet's start, through containerd's own API (no `ctr`), so pods start with no
//! registry reachable.
//!
//! For each image of an archive, as `ctr images import` and containerd's unpacker do:
//! 1. every blob is written to the content store, with the labels containerd's garbage
//!    collector follows (an index names its manifests, a manifest its config and layers, a
//!    config the unpacked snapshot, a layer its uncompressed digest); a blob already there is
//!    only labelled, if it lacks a label;
//! 2. the layers of the node's platform are unpacked into the CRI plugin's snapshotter, one
//!    committed snapshot per layer, named by its chain ID (OCI's `ChainID`), each checked
//!    against the config's `diff_ids`;
//! 3. the image record (namespace `k8s.io`) gets the name the archive gives and the archive's
//!    descriptor as its target.
//!
//! Each step looks first and skips what is already done, so a later boot of the same image
//! only reads (a few calls per image) and writes nothing. A power cut midway leaves work the
//! next boot finishes: writes run under a lease that expires by itself, so nothing half done
//! is collected before it is referenced, and nothing is kept for good that nothing references.

mod containerd;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn_api::arch::Arch;
use cairn_api::oci::inspect::{self, ArchivedImage, InspectError, Layout};
use cairn_api::oci::{Descriptor, Digest};

pub use cairn_api::image::IMAGES_DIR;

/// Labels of a blob, by key.
pub type Labels = BTreeMap<String, String>;

/// The labels containerd's garbage collector and unpacker read.
mod label {
    /// On a layer: the digest of its uncompressed content (its diff ID).
    pub const UNCOMPRESSED: &str = "containerd.io/uncompressed";
    /// On a manifest: its config.
    pub const CONFIG: &str = "containerd.io/gc.ref.content.config";

    /// On a manifest: its `i`th layer.
    pub fn layer(i: usize) -> String {
        format!("containerd.io/gc.ref.content.l.{i}")
    }

    /// On an index: its `i`th manifest.
    pub fn manifest(i: usize) -> String {
        format!("containerd.io/gc.ref.content.m.{i}")
    }

    /// On a config: the snapshot of its top layer in `snapshotter`.
    pub fn snapshot(snapshotter: &str) -> String {
        format!("containerd.io/gc.ref.snapshot.{snapshotter}")
    }
}

/// An archive could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The images directory or an archive could not be read.
    #[error("{path}: {source}")]
    Read {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An archive is no sound OCI image layout.
    #[error(transparent)]
    Archive(#[from] InspectError),
    /// An archive holds an image, but not for this node.
    #[error("{path}: {name} is for {platforms}, not for this node ({arch})")]
    NoPlatform {
        /// The archive.
        path: PathBuf,
        /// The image.
        name: String,
        /// The platforms the archive has it for.
        platforms: String,
        /// The node's architecture.
        arch: Arch,
    },
    /// A layer unpacked to other content than its image's config says.
    #[error(
        "{image}: layer {layer} unpacked to {got}, its config says {expected} (a corrupt archive)"
    )]
    DiffId {
        /// The image.
        image: String,
        /// The layer blob.
        layer: Digest,
        /// The config's diff ID.
        expected: Digest,
        /// What unpacking gave.
        got: Digest,
    },
    /// machined was built for an architecture Cairn does not know, so no image fits.
    #[error("this node's architecture ({}) is none Cairn knows", std::env::consts::ARCH)]
    UnknownArch,
    /// containerd's socket could not be reached.
    #[error("{socket}: {source}")]
    Connect {
        /// The socket.
        socket: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// A call to containerd failed.
    #[error("containerd, {call}: {}", .status.message())]
    Call {
        /// What was asked, naming the object.
        call: String,
        /// containerd's answer.
        status: tonic::Status,
    },
    /// containerd answered with a digest that is none.
    #[error("containerd, {call}: {value:?} is no sha256 digest")]
    Answer {
        /// What was asked.
        call: String,
        /// What came back.
        value: String,
    },
}

/// What the import needs of containerd, in its `k8s.io` namespace and the CRI plugin's
/// snapshotter.
pub(crate) trait Store {
    /// A layer snapshot being unpacked.
    type Prepared;

    /// The labels of blob `digest`; `None` when the content store does not have it.
    async fn blob_labels(&mut self, digest: &Digest) -> Result<Option<Labels>, ImportError>;
    /// Writes `data`, blob `digest`, with `labels`.
    async fn write_blob(
        &mut self,
        digest: &Digest,
        data: &[u8],
        labels: &Labels,
    ) -> Result<(), ImportError>;
    /// Sets `labels` on blob `digest`, leaving its other labels.
    async fn label_blob(&mut self, digest: &Digest, labels: &Labels) -> Result<(), ImportError>;
    /// The digest image `name` points to; `None` when there is no such image.
    async fn image_target(&mut self, name: &str) -> Result<Option<Digest>, ImportError>;
    /// Creates image `name`, or points it, to `target`.
    async fn put_image(&mut self, name: &str, target: &Descriptor) -> Result<(), ImportError>;
    /// Whether the committed snapshot `chain_id` exists.
    async fn snapshot_exists(&mut self, chain_id: &Digest) -> Result<bool, ImportError>;
    /// An active snapshot on `parent` (none: the bottom layer) to unpack the layer of
    /// `chain_id` into.
    async fn prepare(
        &mut self,
        parent: Option<&Digest>,
        chain_id: &Digest,
    ) -> Result<Self::Prepared, ImportError>;
    /// Unpacks `layer` into `prepared`; returns the digest of its uncompressed content.
    async fn apply(
        &mut self,
        prepared: &Self::Prepared,
        layer: &Descriptor,
    ) -> Result<Digest, ImportError>;
    /// Commits `prepared` as snapshot `chain_id` (already there: drops `prepared`).
    async fn commit(
        &mut self,
        prepared: Self::Prepared,
        chain_id: &Digest,
    ) -> Result<(), ImportError>;
    /// Drops `prepared`.
    async fn remove(&mut self, prepared: Self::Prepared) -> Result<(), ImportError>;
}

/// What importing one image did; all zero: it was already there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    /// Blobs written.
    pub blobs_written: usize,
    /// Blobs that were there and got labels.
    pub blobs_labelled: usize,
    /// Layers unpacked.
    pub layers_unpacked: usize,
    /// Whether the image record was created or changed.
    pub record_written: bool,
}

impl fmt::Display for Imported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Imported::default() {
            return f.write_str("already imported");
        }
        write!(
            f,
            "{} blobs written, {} labelled, {} layers unpacked, record {}",
            self.blobs_written,
            self.blobs_labelled,
            self.layers_unpacked,
            if self.record_written { "written" } else { "kept" }
        )
    }
}

/// Imports every `*.tar` archive in `dir` (`IMAGES_DIR` on a node) into `store`, in name
/// order, for a node of `arch`; returns a line per image for the log.
pub(crate) async fn import_dir<S: Store>(
    store: &mut S,
    dir: &Path,
    arch: Arch,
) -> Result<Vec<String>, ImportError> {
    let read_error = |source| ImportError::Read { path: dir.to_path_buf(), source };
    let mut archives = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if path.extension().is_some_and(|e| e == "tar") {
            archives.push(path);
        }
    }
    archives.sort();
    let mut lines = Vec::new();
    for path in archives {
        let started = Instant::now();
        let data = tokio::fs::read(&path)
            .await
            .map_err(|source| ImportError::Read { path: path.clone(), source })?;
        let layout = inspect::read(&path, &data)?;
        for image in &layout.images {
            let imported = import_image(store, &path, &layout, image, arch).await?;
            lines.push(format!(
                "{} from {}: {imported} ({} ms)",
                image.name,
                path.display(),
                started.elapsed().as_millis()
            ));
        }
    }
    Ok(lines)
}

/// The chain IDs of layers with `diff_ids`, lowest first (OCI image spec, "ChainID"): the
/// bottom layer's is its diff ID, each next one `sha256(parent chain ID + " " + diff ID)`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut chain: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

/// Imports `image` of `layout` (the archive at `path`) for a node of `arch`.
async fn import_image<S: Store>(
    store: &mut S,
    path: &Path,
    layout: &Layout,
    image: &ArchivedImage,
    arch: Arch,
) -> Result<Imported, ImportError> {
    let node = image.manifests.iter().find(|m| m.platform.runs_on(arch)).ok_or_else(|| {
        let platforms: Vec<String> = image.platforms().map(ToString::to_string).collect();
        ImportError::NoPlatform {
            path: path.to_path_buf(),
            name: image.name.clone(),
            platforms: platforms.join(", "),
            arch,
        }
    })?;
    let chain = chain_ids(&node.diff_ids);
    let mut imported = Imported::default();

    for (digest, labels) in blob_labels(image, &node.descriptor.digest, chain.last()) {
        let data = &layout.blobs[&digest];
        match store.blob_labels(&digest).await? {
            None => {
                store.write_blob(&digest, data, &labels).await?;
                imported.blobs_written += 1;
            }
            Some(present) => {
                let missing: Labels =
                    labels.into_iter().filter(|(k, v)| present.get(k) != Some(v)).collect();
                if !missing.is_empty() {
                    store.label_blob(&digest, &missing).await?;
                    imported.blobs_labelled += 1;
                }
            }
        }
    }

    // The top snapshot implies those below it (a snapshot needs its parent).
    if let Some(top) = chain.last() {
        if !store.snapshot_exists(top).await? {
            for (i, chain_id) in chain.iter().enumerate() {
                if store.snapshot_exists(chain_id).await? {
                    continue;
                }
                let parent = i.checked_sub(1).map(|p| &chain[p]);
                let layer = &node.manifest.layers[i];
                unpack(store, &image.name, layer, &node.diff_ids[i], parent, chain_id).await?;
                imported.layers_unpacked += 1;
            }
        }
    }

    if store.image_target(&image.name).await?.as_ref() != Some(&image.descriptor.digest) {
        store.put_image(&image.name, &image.descriptor).await?;
        imported.record_written = true;
    }
    Ok(imported)
}

/// Unpacks `layer` of `image` on `parent` as snapshot `chain_id`, if it gives `diff_id`.
async fn unpack<S: Store>(
    store: &mut S,
    image: &str,
    layer: &Descriptor,
    diff_id: &Digest,
    parent: Option<&Digest>,
    chain_id: &Digest,
) -> Result<(), ImportError> {
    let prepared = store.prepare(parent, chain_id).await?;
    let applied = match store.apply(&prepared, layer).await {
        Ok(applied) => applied,
        Err(e) => {
            // The failure is the news; a snapshot left behind goes with the lease.
            let _ = store.remove(prepared).await;
            return Err(e);
        }
    };
    if &applied != diff_id {
        let _ = store.remove(prepared).await;
        return Err(ImportError::DiffId {
            image: image.to_string(),
            layer: layer.digest.clone(),
            expected: diff_id.clone(),
            got: applied,
        });
    }
    store.commit(prepared, chain_id).await
}

/// Every blob of `image` with the labels it needs, children before the blobs naming them:
/// each manifest's layers and config, the manifest, then the index if the image is one. The
/// config of `unpacked` (the node's manifest) names `top`, its top snapshot.
fn blob_labels(
    image: &ArchivedImage,
    unpacked: &Digest,
    top: Option<&Digest>,
) -> Vec<(Digest, Labels)> {
    let snapshotter = crate::services::containerd::SNAPSHOTTER;
    let mut blobs: Vec<(Digest, Labels)> = Vec::new();
    let mut add = |digest: &Digest, labels: Labels| {
        match blobs.iter_mut().find(|(d, _)| d == digest) {
            Some((_, present)) => present.extend(labels),
            None => blobs.push((digest.clone(), labels)),
        };
    };
    for platform in &image.manifests {
        let manifest = &platform.manifest;
        let mut manifest_labels = Labels::new();
        for (i, (layer, diff_id)) in manifest.layers.iter().zip(&platform.diff_ids).enumerate() {
            add(&layer.digest, Labels::from([(label::UNCOMPRESSED.into(), diff_id.to_string())]));
            manifest_labels.insert(label::layer(i), layer.digest.to_string());
        }
        let config_labels = match top {
            Some(top) if &platform.descriptor.digest == unpacked => {
                Labels::from([(label::snapshot(snapshotter), top.to_string())])
            }
            _ => Labels::new(),
        };
        add(&manifest.config.digest, config_labels);
        manifest_labels.insert(label::CONFIG.into(), manifest.config.digest.to_string());
        add(&platform.descriptor.digest, manifest_labels);
    }
    if !image.manifests.iter().any(|m| m.descriptor.digest == image.descriptor.digest) {
        let index_labels = image
            .manifests
            .iter()
            .enumerate()
            .map(|(i, m)| (label::manifest(i), m.descriptor.digest.to_string()))
            .collect();
        add(&image.descriptor.digest, index_labels);
    }
    blobs
}

/// Imports the archives in `dir` into containerd on `socket`; returns a line per image for
/// the log.
pub async fn import_archives(socket: &str, dir: &Path) -> Result<Vec<String>, ImportError> {
    let arch = Arch::built_for().ok_or(ImportError::UnknownArch)?;
    let mut store = containerd::Containerd::connect(socket).await?;
    let lines = import_dir(&mut store, dir, arch).await;
    // Done or not, the lease goes: what was imported is referenced by its image.
    let released = store.release().await;
    let lines = lines?;
    released?;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use cairn_api::oci::{
        Index, Manifest, Platform, CONFIG_MEDIA_TYPE, CONTAINERD_NAME_ANNOTATION, INDEX_MEDIA_TYPE,
        LAYER_MEDIA_TYPE, LAYOUT_FILE, MANIFEST_MEDIA_TYPE,
    };

    use super::*;

    /// containerd as far as the import sees it: blobs with labels, image records, committed
    /// snapshots (by chain ID, with their parent) and the calls that change anything.
    #[derive(Default)]
    struct FakeStore {
        blobs: HashMap<Digest, (Vec<u8>, Labels)>,
        images: HashMap<String, Digest>,
        snapshots: HashMap<Digest, Option<Digest>>,
        active: BTreeSet<String>,
        writes: Vec<String>,
    }

    impl Store for FakeStore {
        type Prepared = (String, Option<Digest>);

        async fn blob_labels(&mut self, digest: &Digest) -> Result<Option<Labels>, ImportError> {
            Ok(self.blobs.get(digest).map(|(_, labels)| labels.clone()))
        }

        async fn write_blob(
            &mut self,
            digest: &Digest,
            data: &[u8],
            labels: &Labels,
        ) -> Result<(), ImportError> {
            assert_eq!(&Digest::of(data), digest);
            self.writes.push(format!("write {digest}"));
            self.blobs.insert(digest.clone(), (data.to_vec(), labels.clone()));
            Ok(())
        }

        async fn label_blob(
            &mut self,
            digest: &Digest,
            labels: &Labels,
        ) -> Result<(), ImportError> {
            self.writes.push(format!("label {digest}"));
            self.blobs.get_mut(digest).unwrap().1.extend(labels.clone());
            Ok(())
        }

        async fn image_target(&mut self, name: &str) -> Result<Option<Digest>, ImportError> {
            Ok(self.images.get(name).cloned())
        }

        async fn put_image(&mut self, name: &str, target: &Descriptor) -> Result<(), ImportError> {
            self.writes.push(format!("image {name}"));
            self.images.insert(name.into(), target.digest.clone());
            Ok(())
        }

        async fn snapshot_exists(&mut self, chain_id: &Digest) -> Result<bool, ImportError> {
            Ok(self.snapshots.contains_key(chain_id))
        }

        async fn prepare(
            &mut self,
            parent: Option<&Digest>,
            chain_id: &Digest,
        ) -> Result<Self::Prepared, ImportError> {
            // A snapshot needs its parent, as containerd's snapshotters do.
            assert!(parent.is_none_or(|p| self.snapshots.contains_key(p)), "{parent:?}");
            let key = format!("extract {chain_id}");
            self.active.insert(key.clone());
            Ok((key, parent.cloned()))
        }

        async fn apply(
            &mut self,
            _: &Self::Prepared,
            layer: &Descriptor,
        ) -> Result<Digest, ImportError> {
            // The layers here are uncompressed tars: unpacked, they hash as the blob does.
            let (data, _) = &self.blobs[&layer.digest];
            Ok(Digest::of(data))
        }

        async fn commit(
            &mut self,
            (key, parent): Self::Prepared,
            chain_id: &Digest,
        ) -> Result<(), ImportError> {
            self.writes.push(format!("commit {chain_id}"));
            self.active.remove(&key);
            self.snapshots.insert(chain_id.clone(), parent);
            Ok(())
        }

        async fn remove(&mut self, (key, _): Self::Prepared) -> Result<(), ImportError> {
            self.active.remove(&key);
            Ok(())
        }
    }

    /// An archive of image `name` for `arch` with `layers` (uncompressed), the config's
    /// diff IDs as `diff_ids` makes them from the layers' digests.
    fn archive(
        name: &str,
        arch: Arch,
        layers: &[&[u8]],
        diff_ids: impl Fn(Vec<Digest>) -> Vec<Digest>,
    ) -> Vec<u8> {
        let mut blobs: Vec<Vec<u8>> = layers.iter().map(|l| l.to_vec()).collect();
        let layer_descriptors: Vec<Descriptor> =
            layers.iter().map(|l| Descriptor::of(LAYER_MEDIA_TYPE, l)).collect();
        let platform = Platform::of(arch);
        let config = serde_json::json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "variant": platform.variant,
            "rootfs": {
                "type": "layers",
                "diff_ids": diff_ids(layer_descriptors.iter().map(|d| d.digest.clone()).collect()),
            },
        });
        let config = serde_json::to_vec(&config).unwrap();
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
            config: Descriptor::of(CONFIG_MEDIA_TYPE, &config),
            layers: layer_descriptors,
        };
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let mut descriptor = Descriptor::of(MANIFEST_MEDIA_TYPE, &manifest);
        descriptor.annotations.insert(CONTAINERD_NAME_ANNOTATION.into(), name.into());
        let index = Index {
            schema_version: 2,
            media_type: Some(INDEX_MEDIA_TYPE.into()),
            manifests: vec![descriptor],
        };
        blobs.extend([config, manifest]);
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |path: String, data: &[u8]| {
            let mut header = tar::Header::new_ustar();
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            tar.append_data(&mut header, path, data).unwrap();
        };
        add("oci-layout".into(), LAYOUT_FILE.as_bytes());
        add("index.json".into(), &serde_json::to_vec(&index).unwrap());
        for blob in &blobs {
            add(Digest::of(blob).blob_path(), blob);
        }
        tar.into_inner().unwrap()
    }

    /// A directory with `archives` (file name, bytes).
    fn images_dir(archives: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (file_name, bytes) in archives {
            std::fs::write(dir.path().join(file_name), bytes).unwrap();
        }
        std::fs::write(dir.path().join("README"), "not an archive").unwrap();
        dir
    }

    fn same(diff_ids: Vec<Digest>) -> Vec<Digest> {
        diff_ids
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        // sha256("sha256:ca97…48bb sha256:3e23…009d"), computed apart from this code.
        assert_eq!(
            chain[1].to_string(),
            "sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676"
        );
        assert!(chain_ids(&[]).is_empty());
    }

    #[tokio::test]
    async fn the_first_import_writes_labels_unpacks_and_names_the_later_ones_only_read() {
        let layers: [&[u8]; 2] = [b"bottom layer", b"top layer"];
        let dir = images_dir(&[
            ("pause.tar", archive("localhost/pause:latest", Arch::X86_64, &layers[..1], same)),
            ("app.tar", archive("registry.example/app:v1", Arch::X86_64, &layers, same)),
        ]);
        let mut store = FakeStore::default();
        let lines = import_dir(&mut store, dir.path(), Arch::X86_64).await.unwrap();
        assert_eq!(lines.len(), 2);
        // In name order: app.tar first.
        assert!(lines[0].starts_with("registry.example/app:v1 from "), "{lines:?}");
        assert!(lines[0].contains("4 blobs written, 0 labelled, 2 layers unpacked, record written"));
        // pause shares the bottom layer and its snapshot: only its config and manifest are new.
        assert!(lines[1].contains("2 blobs written, 0 labelled, 0 layers unpacked"), "{lines:?}");
        assert!(store.active.is_empty());

        // The labels containerd's garbage collector follows, from the image down.
        let diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::of(l)).collect();
        let chain = chain_ids(&diff_ids);
        let manifest = &store.images["registry.example/app:v1"];
        let manifest_labels = &store.blobs[manifest].1;
        assert_eq!(manifest_labels.len(), 3);
        let config = Digest::parse(&manifest_labels[label::CONFIG]).unwrap();
        assert_eq!(manifest_labels[&label::layer(1)], diff_ids[1].to_string());
        assert_eq!(
            store.blobs[&config].1,
            Labels::from([(label::snapshot("overlayfs"), chain[1].to_string())])
        );
        assert_eq!(store.blobs[&diff_ids[0]].1[label::UNCOMPRESSED], diff_ids[0].to_string());
        assert_eq!(store.snapshots[&chain[1]], Some(chain[0].clone()));
        assert_eq!(store.snapshots[&chain[0]], None);

        // A later boot: nothing to write.
        store.writes.clear();
        let lines = import_dir(&mut store, dir.path(), Arch::X86_64).await.unwrap();
        assert!(store.writes.is_empty(), "{:?}", store.writes);
        assert!(lines.iter().all(|l| l.contains(": already imported (")), "{lines:?}");
    }

    #[tokio::test]
    async fn work_a_power_cut_interrupted_or_an_update_changed_is_done_again() {
        let layers: [&[u8]; 2] = [b"bottom layer", b"top layer"];
        let dir = images_dir(&[("app.tar", archive("app:v1", Arch::Arm64, &layers, same))]);
        let mut store = FakeStore::default();
        import_dir(&mut store, dir.path(), Arch::Arm64).await.unwrap();
        let diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::of(l)).collect();
        let chain = chain_ids(&diff_ids);

        // The top snapshot and a label lost, the record gone: only those come back.
        store.snapshots.remove(&chain[1]);
        store.images.clear();
        store.blobs.get_mut(&diff_ids[0]).unwrap().1.clear();
        store.writes.clear();
        let lines = import_dir(&mut store, dir.path(), Arch::Arm64).await.unwrap();
        assert!(lines[0].contains("0 blobs written, 1 labelled, 1 layers unpacked, record written"));
        assert_eq!(
            store.writes,
            [
                format!("label {}", diff_ids[0]),
                format!("commit {}", chain[1]),
                "image app:v1".into()
            ]
        );

        // A new archive under the same name (an OS update): the record follows it.
        let updated = archive("app:v1", Arch::Arm64, &layers[1..], same);
        let new_target = inspect::read(Path::new("app.tar"), &updated).unwrap().images[0]
            .descriptor
            .digest
            .clone();
        let dir = images_dir(&[("app.tar", updated)]);
        store.writes.clear();
        import_dir(&mut store, dir.path(), Arch::Arm64).await.unwrap();
        assert_eq!(store.writes.last().unwrap(), "image app:v1");
        assert_eq!(store.images["app:v1"], new_target);
    }

    #[tokio::test]
    async fn archives_for_another_platform_or_with_wrong_diff_ids_are_refused() {
        let layers: [&[u8]; 1] = [b"layer"];
        let dir = images_dir(&[("arm.tar", archive("app:v1", Arch::Armv7, &layers, same))]);
        let error = import_dir(&mut FakeStore::default(), dir.path(), Arch::X86_64)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("arm.tar: app:v1 is for linux/arm/v7, not for this node (x86_64)"),
            "{error}"
        );

        let wrong = |_| vec![Digest::of(b"something else")];
        let dir = images_dir(&[("app.tar", archive("app:v1", Arch::X86_64, &layers, wrong))]);
        let mut store = FakeStore::default();
        let error = import_dir(&mut store, dir.path(), Arch::X86_64).await.unwrap_err();
        assert!(matches!(error, ImportError::DiffId { ref image, .. } if image == "app:v1"));
        assert!(error.to_string().contains("a corrupt archive"), "{error}");
        // Nothing half unpacked stays, and no image names what could not be unpacked.
        assert!(store.active.is_empty() && store.snapshots.is_empty() && store.images.is_empty());

        let dir = images_dir(&[("bad.tar", b"not a tar at all".to_vec())]);
        let error = import_dir(&mut store, dir.path(), Arch::X86_64).await.unwrap_err();
        assert!(error.to_string().contains("bad.tar"), "{error}");
    }
}
