//! Writing one image as an OCI image-layout archive, deterministically: the layer is an
//! uncompressed tar of a [`FileTree`] (entries in the tree's order, owner 0:0 with no user or
//! group names, every time the build's SOURCE_DATE_EPOCH), the config's `created` is that same
//! time, JSON is written compactly with its keys in a fixed order, and the archive's entries
//! are sorted. Same inputs, same bytes, same digests.

use std::collections::BTreeMap;
use std::io;

use cairn_api::arch::Arch;
use serde::Serialize;

use super::{
    Descriptor, ImageName, Index, Manifest, Platform, CONFIG_MEDIA_TYPE,
    CONTAINERD_NAME_ANNOTATION, INDEX_MEDIA_TYPE, LAYER_MEDIA_TYPE, LAYOUT_FILE,
    MANIFEST_MEDIA_TYPE, REF_NAME_ANNOTATION,
};
use crate::tree::{FileTree, Node};

/// What `created_by` says in the one history entry of an image.
const CREATED_BY: &str = "Cairn image-builder";

/// An image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// An entry could not go into a tar (a path or link target tar cannot hold).
    #[error("image {image}: {entry}: {source}")]
    Tar {
        /// The image.
        image: ImageName,
        /// The entry.
        entry: String,
        /// Why.
        source: io::Error,
    },
}

/// One image to write.
#[derive(Debug, Clone)]
pub struct ImageSpec<'a> {
    /// Its full name, e.g. `localhost/pause:latest`.
    pub name: &'a ImageName,
    /// The architecture its programs are built for.
    pub arch: Arch,
    /// Its files: the single layer.
    pub root: &'a FileTree,
    /// The program and first arguments a container runs (`Entrypoint`).
    pub entrypoint: Vec<String>,
    /// Default arguments after the entrypoint (`Cmd`).
    pub cmd: Vec<String>,
    /// Environment, `NAME=value`.
    pub env: Vec<String>,
    /// The user containers run as (`UID[:GID]` or a name); `None` is root.
    pub user: Option<String>,
    /// Every time in the image (files, `created`), seconds since 1970: SOURCE_DATE_EPOCH.
    pub epoch: u64,
}

/// A written archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciArchive {
    /// The archive (a tar), to store as a file.
    pub bytes: Vec<u8>,
    /// The manifest's descriptor, as `index.json` lists it: its digest identifies the image.
    pub manifest: Descriptor,
}

/// The image config (OCI image-spec `config.md`), in the order its fields are written.
#[derive(Serialize)]
struct Config<'a> {
    created: &'a str,
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    config: RunConfig<'a>,
    rootfs: RootFs,
    history: [History<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    env: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    entrypoint: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    cmd: &'a [String],
    working_dir: &'a str,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: [super::Digest; 1],
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
    created_by: &'a str,
}

/// Writes `spec` as an archive.
pub fn write(spec: &ImageSpec<'_>) -> Result<OciArchive, WriteError> {
    let tar_error = |entry: &str| {
        let (image, entry) = (spec.name.clone(), entry.to_string());
        move |source| WriteError::Tar { image, entry, source }
    };
    let created = rfc3339(spec.epoch);

    let layer = layer(spec.root, spec.epoch).map_err(|(entry, e)| tar_error(&entry)(e))?;
    let layer_descriptor = Descriptor::of(LAYER_MEDIA_TYPE, &layer);
    let platform = Platform::of(spec.arch);
    let config = Config {
        created: &created,
        architecture: &platform.architecture,
        os: &platform.os,
        variant: platform.variant.as_deref(),
        config: RunConfig {
            user: spec.user.as_deref(),
            env: &spec.env,
            entrypoint: &spec.entrypoint,
            cmd: &spec.cmd,
            working_dir: "/",
        },
        // The layer is uncompressed: its digest is its diff ID.
        rootfs: RootFs { kind: "layers", diff_ids: [layer_descriptor.digest.clone()] },
        history: [History { created: &created, created_by: CREATED_BY }],
    };
    let config = json(&config);
    let manifest = json(&Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        config: Descriptor::of(CONFIG_MEDIA_TYPE, &config),
        layers: vec![layer_descriptor],
    });
    let mut manifest_descriptor = Descriptor::of(MANIFEST_MEDIA_TYPE, &manifest);
    manifest_descriptor.platform = Some(platform);
    manifest_descriptor.annotations = BTreeMap::from([
        (CONTAINERD_NAME_ANNOTATION.to_string(), spec.name.to_string()),
        (REF_NAME_ANNOTATION.to_string(), spec.name.to_string()),
    ]);
    let index = json(&Index {
        schema_version: 2,
        media_type: Some(INDEX_MEDIA_TYPE.into()),
        manifests: vec![manifest_descriptor.clone()],
    });

    // Sorted paths: blobs/ (its entries by digest), index.json, oci-layout.
    let mut blobs: Vec<(String, &[u8])> = [&config, &manifest, &layer]
        .into_iter()
        .map(|blob| (super::Digest::of(blob).blob_path(), blob.as_slice()))
        .collect();
    blobs.sort();
    blobs.dedup_by(|a, b| a.0 == b.0);
    let mut archive = tar::Builder::new(Vec::new());
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = header(tar::EntryType::Directory, 0o755, 0, spec.epoch);
        archive.append_data(&mut header, dir, io::empty()).map_err(tar_error(dir))?;
    }
    let files = blobs
        .into_iter()
        .chain([("index.json".to_string(), index.as_slice())])
        .chain([("oci-layout".to_string(), LAYOUT_FILE.as_bytes())]);
    for (path, data) in files {
        let mut header = header(tar::EntryType::Regular, 0o644, data.len() as u64, spec.epoch);
        archive.append_data(&mut header, &path, data).map_err(tar_error(&path))?;
    }
    let bytes = archive.into_inner().map_err(tar_error("the end of the archive"))?;
    Ok(OciArchive { bytes, manifest: manifest_descriptor })
}

/// The layer: a tar of `tree`, entries in the tree's order (parents first), directories with a
/// trailing `/`. On failure, the entry that failed.
fn layer(tree: &FileTree, epoch: u64) -> Result<Vec<u8>, (String, io::Error)> {
    let mut layer = tar::Builder::new(Vec::new());
    for (path, node) in tree.entries() {
        let name = path.display().to_string();
        let result = match node {
            Node::Dir { mode } => {
                let mut header = header(tar::EntryType::Directory, *mode, 0, epoch);
                layer.append_data(&mut header, format!("{name}/"), io::empty())
            }
            Node::File { mode, data } => {
                let mut header = header(tar::EntryType::Regular, *mode, data.len() as u64, epoch);
                layer.append_data(&mut header, path, data.as_slice())
            }
            Node::Symlink { target } => {
                let mut header = header(tar::EntryType::Symlink, 0o777, 0, epoch);
                layer.append_link(&mut header, path, target)
            }
        };
        result.map_err(|e| (format!("/{name}"), e))?;
    }
    layer.into_inner().map_err(|e| ("the end of the layer".to_string(), e))
}

/// A tar header with everything but the path fixed: owner 0:0 and no names for it, `mtime`.
fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(size);
    header
}

/// `epoch` (seconds since 1970) as an RFC 3339 UTC time, e.g. `2026-01-01T00:00:00Z`: the
/// proleptic Gregorian date of the day count (Howard Hinnant's `civil_from_days`).
fn rfc3339(epoch: u64) -> String {
    let (days, seconds) = (epoch / 86_400, epoch % 86_400);
    // Days since 0000-03-01, so leap days end a year; eras of 400 years repeat.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    let (hour, minute, second) = (seconds / 3_600, seconds / 60 % 60, seconds % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// Compact JSON, keys in the order the types declare them.
fn json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("OCI documents always serialize")
}

/// The archive of an image `name` for `arch` holding one executable, `/app`: the fixture
/// the tests of archive readers share.
#[cfg(test)]
pub(crate) fn one_file_image(name: &str, arch: cairn_api::arch::Arch) -> OciArchive {
    let name = ImageName::parse(name).unwrap();
    let mut tree = crate::tree::FileTree::new();
    tree.file("/app", 0o755, "app").unwrap();
    write(&ImageSpec {
        name: &name,
        arch,
        root: &tree,
        entrypoint: vec!["/app".into()],
        cmd: vec![],
        env: vec![],
        user: None,
        epoch: 0,
    })
    .unwrap()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read;

    use super::super::Digest;
    use super::*;

    /// 2026-01-01T00:00:00Z.
    const EPOCH: u64 = 1_767_225_600;

    fn tree() -> FileTree {
        let mut tree = FileTree::new();
        tree.file("/bin/busybox", 0o755, "ELF").unwrap();
        tree.symlink("/bin/sh", "busybox").unwrap();
        tree.file("/etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        tree.dir("/tmp", 0o1777).unwrap();
        tree
    }

    fn spec<'a>(name: &'a ImageName, tree: &'a FileTree, arch: Arch) -> ImageSpec<'a> {
        ImageSpec {
            name,
            arch,
            root: tree,
            entrypoint: vec!["/bin/sh".into()],
            cmd: vec![],
            env: vec!["PATH=/bin".into()],
            user: None,
            epoch: EPOCH,
        }
    }

    /// The archive's regular files by path, with each entry's header checked on the way.
    fn files(tar_bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        let mut archive = tar::Archive::new(tar_bytes);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header();
            assert_eq!(header.mtime().unwrap(), EPOCH);
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
            assert_eq!(header.username().unwrap(), Some(""));
            assert_eq!(header.groupname().unwrap(), Some(""));
            if entry.header().entry_type().is_file() {
                let path = entry.path().unwrap().display().to_string();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                files.insert(path, data);
            }
        }
        files
    }

    fn json_of(data: &[u8]) -> serde_json::Value {
        serde_json::from_slice(data).unwrap()
    }

    #[test]
    fn the_archive_is_a_consistent_oci_layout() {
        let name = ImageName::parse("localhost/busybox:latest").unwrap();
        let tree = tree();
        let archive = write(&spec(&name, &tree, Arch::X86_64)).unwrap();
        let files = files(&archive.bytes);

        assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
        // Every blob is stored under its own digest.
        for (path, data) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(Digest::of(data).hex(), hex);
            }
        }
        assert_eq!(files.len(), 5, "{:?}", files.keys());

        let index = json_of(&files["index.json"]);
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
        let descriptor = &index["manifests"][0];
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(descriptor["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(
            descriptor["annotations"]["io.containerd.image.name"],
            "localhost/busybox:latest"
        );
        assert_eq!(
            descriptor["annotations"]["org.opencontainers.image.ref.name"],
            "localhost/busybox:latest"
        );
        assert_eq!(descriptor["platform"], json_of(br#"{"architecture":"amd64","os":"linux"}"#));
        assert_eq!(descriptor["digest"], archive.manifest.digest.to_string());
        let manifest_bytes = &files[&archive.manifest.digest.blob_path()];
        assert_eq!(descriptor["size"], manifest_bytes.len());

        let manifest = json_of(manifest_bytes);
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar");
        let blob = |descriptor: &serde_json::Value| {
            let digest = Digest::parse(descriptor["digest"].as_str().unwrap()).unwrap();
            let data = &files[&digest.blob_path()];
            assert_eq!(descriptor["size"], data.len(), "{digest}");
            data.clone()
        };
        let config = json_of(&blob(&manifest["config"]));
        let layer = blob(&layers[0]);

        assert_eq!(config["created"], "2026-01-01T00:00:00Z");
        assert_eq!(config["history"][0]["created"], "2026-01-01T00:00:00Z");
        assert_eq!((&config["architecture"], &config["os"]), (&"amd64".into(), &"linux".into()));
        assert!(config.get("variant").is_none());
        assert_eq!(config["config"]["Entrypoint"], json_of(br#"["/bin/sh"]"#));
        assert_eq!(config["config"]["Env"], json_of(br#"["PATH=/bin"]"#));
        assert!(config["config"].get("Cmd").is_none() && config["config"].get("User").is_none());
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(config["rootfs"]["diff_ids"][0], layers[0]["digest"]);

        // The layer holds the tree: files with their modes, links, directories.
        let mut entries = Vec::new();
        let mut layer_archive = tar::Archive::new(layer.as_slice());
        for entry in layer_archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            assert_eq!(header.mtime().unwrap(), EPOCH);
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
            assert_eq!(header.username().unwrap(), Some(""));
            let link = entry.link_name().unwrap().map(|l| l.display().to_string());
            let mut data = String::new();
            entry.read_to_string(&mut data).unwrap();
            let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            entries.push((path, header.mode().unwrap(), link, data));
        }
        let expected = [
            ("bin/", 0o755, None, ""),
            ("bin/busybox", 0o755, None, "ELF"),
            ("bin/sh", 0o777, Some("busybox"), ""),
            ("etc/", 0o755, None, ""),
            ("etc/passwd", 0o644, None, "root:x:0:0:root:/root:/bin/sh\n"),
            ("tmp/", 0o1777, None, ""),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(p, m, l, d)| (p.to_string(), *m, l.map(str::to_string), d.to_string()))
            .collect();
        assert_eq!(entries, expected);
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let name = ImageName::parse("localhost/pause:latest").unwrap();
        let tree = tree();
        let first = write(&spec(&name, &tree, Arch::X86_64)).unwrap();
        let second = write(&spec(&name, &tree.clone(), Arch::X86_64)).unwrap();
        assert_eq!(first, second);
        // ... and other inputs, other bytes.
        let mut other = tree.clone();
        other.file("/etc/group", 0o644, "root:x:0:\n").unwrap();
        assert_ne!(write(&spec(&name, &other, Arch::X86_64)).unwrap().manifest, first.manifest);
        let later = ImageSpec { epoch: EPOCH + 1, ..spec(&name, &tree, Arch::X86_64) };
        assert_ne!(write(&later).unwrap().manifest, first.manifest);
    }

    #[test]
    fn arm_images_say_their_variant_and_users_are_written() {
        let name = ImageName::parse("localhost/pause:latest").unwrap();
        let tree = tree();
        let spec = ImageSpec {
            user: Some("65535:65535".into()),
            cmd: vec!["-c".into(), "true".into()],
            ..spec(&name, &tree, Arch::Armv7)
        };
        let archive = write(&spec).unwrap();
        let files = files(&archive.bytes);
        let manifest = json_of(&files[&archive.manifest.digest.blob_path()]);
        let digest = Digest::parse(manifest["config"]["digest"].as_str().unwrap()).unwrap();
        let config = json_of(&files[&digest.blob_path()]);
        assert_eq!((&config["architecture"], &config["variant"]), (&"arm".into(), &"v7".into()));
        assert_eq!(config["config"]["User"], "65535:65535");
        assert_eq!(config["config"]["Cmd"], json_of(br#"["-c","true"]"#));
        let platform = archive.manifest.platform.unwrap();
        assert_eq!(platform.to_string(), "linux/arm/v7");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(315_532_800), "1980-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(EPOCH), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
        assert_eq!(rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
        // Every day of 300 years, against counting them one by one.
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for days in 0..109_573u64 {
            let expected = format!("{year:04}-{month:02}-{day:02}T00:00:00Z");
            assert_eq!(rfc3339(days * 86_400), expected);
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let length = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > length {
                (day, month) = (1, month + 1);
                if month > 12 {
                    (month, year) = (1, year + 1);
                }
            }
        }
    }

    #[test]
    fn the_config_is_written_byte_for_byte() {
        let name = ImageName::parse("localhost/pause:latest").unwrap();
        let mut tree = FileTree::new();
        tree.file("/pause", 0o755, "x").unwrap();
        let spec = ImageSpec {
            entrypoint: vec!["/pause".into()],
            user: Some("65535:65535".into()),
            ..spec(&name, &tree, Arch::Arm64)
        };
        let archive = write(&spec).unwrap();
        let files = files(&archive.bytes);
        let manifest = json_of(&files[&archive.manifest.digest.blob_path()]);
        let digest = Digest::parse(manifest["config"]["digest"].as_str().unwrap()).unwrap();
        let layer = manifest["layers"][0]["digest"].as_str().unwrap();
        let expected = format!(
            concat!(
                r#"{{"created":"2026-01-01T00:00:00Z","architecture":"arm64","os":"linux","#,
                r#""config":{{"User":"65535:65535","Env":["PATH=/bin"],"Entrypoint":["/pause"],"#,
                r#""WorkingDir":"/"}},"rootfs":{{"type":"layers","diff_ids":["{}"]}},"#,
                r#""history":[{{"created":"2026-01-01T00:00:00Z","created_by":"Cairn image-builder"}}]}}"#
            ),
            layer
        );
        assert_eq!(String::from_utf8(files[&digest.blob_path()].clone()).unwrap(), expected);
    }
}
