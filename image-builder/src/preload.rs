//! The container images every Cairn image carries, as OCI archives in [`IMAGES_DIR`], so a
//! node runs pods with no registry: machined imports them into containerd at boot.
//!
//! - `pause.tar`: [`PAUSE_IMAGE`], our static pause program as `/pause`: the sandbox image.
//! - `busybox.tar`: [`BUSYBOX_IMAGE`], Debian's busybox-static with every applet linked (see
//!   [`crate::busybox`]).
//! - the archives the profile and the board list (`images = [...]` in `profiles/*.toml` and
//!   `overlays/<board>/board.toml`), copied as they are after a check (see
//!   [`crate::oci::inspect`]): each must name its images and hold them for the board's
//!   architecture.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cairn_api::arch::Arch;

use crate::busybox::{self, BusyboxError};
use crate::oci::inspect::{self, InspectError};
use crate::oci::write::{self, ImageSpec, WriteError};
use crate::oci::{Digest, ImageName};
use crate::tree::{FileTree, Node, TreeError};

pub use cairn_api::image::{IMAGES_DIR, PAUSE_IMAGE};
/// The busybox image's name.
pub const BUSYBOX_IMAGE: &str = "localhost/busybox:latest";

/// `PATH` in both images, as Docker's images have it.
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// pause runs as nobody, as the upstream pause image does.
const PAUSE_USER: &str = "65535:65535";

/// The images could not be made or taken.
#[derive(Debug, thiserror::Error)]
pub enum PreloadError {
    /// busybox-static is not in the package set.
    #[error("{path}: no package of the profile has it (needed by {BUSYBOX_IMAGE}: add busybox-static to the profile's packages)")]
    NoBusybox {
        /// The path looked for.
        path: &'static str,
    },
    /// busybox is unfit.
    #[error(transparent)]
    Busybox(#[from] BusyboxError),
    /// An image could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A listed archive could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The archive.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A listed archive is not sound.
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// A listed archive does not hold an image for the board.
    #[error("{path}: {name} is for {platforms}, not for {arch}: the board could not run it")]
    WrongPlatform {
        /// The archive.
        path: PathBuf,
        /// The image.
        name: String,
        /// What the archive has.
        platforms: String,
        /// The board's architecture.
        arch: Arch,
    },
    /// Two archives would have the same file name in [`IMAGES_DIR`].
    #[error("{path}: another archive is already {IMAGES_DIR}/{file_name}; rename one of them")]
    FileName {
        /// The second archive.
        path: PathBuf,
        /// The name they share.
        file_name: String,
    },
    /// Two archives name the same image.
    #[error("{path}: {name} is also in another archive; containerd would keep only one")]
    Duplicate {
        /// The second archive.
        path: PathBuf,
        /// The image.
        name: String,
    },
    /// A tree refused a path.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A listed path has no file name or one that is not plain UTF-8.
    #[error("{0}: an image archive is a file with a plain (UTF-8) name")]
    BadPath(PathBuf),
}

/// What the images are made from.
#[derive(Debug, Clone, Copy)]
pub struct PreloadInputs<'a> {
    /// The board's architecture.
    pub arch: Arch,
    /// The pause program, static, for `arch` (already checked).
    pub pause: &'a [u8],
    /// Every file of the build's packages (busybox is taken from there).
    pub packages: &'a FileTree,
    /// Archives made elsewhere to carry as well.
    pub archives: &'a [PathBuf],
    /// Every time in the images, seconds since 1970 (SOURCE_DATE_EPOCH).
    pub epoch: u64,
}

/// One archive for [`IMAGES_DIR`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// Where it goes on the root filesystem.
    pub path: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The images in it.
    pub images: Vec<ArchivedImage>,
}

/// One image an archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedImage {
    /// Its full name, e.g. `localhost/pause:latest`.
    pub name: String,
    /// The digest of its manifest (or index) in the archive's `index.json`.
    pub digest: Digest,
}

/// The archives for [`IMAGES_DIR`]: pause, busybox, then the listed ones in order.
pub fn build(inputs: &PreloadInputs<'_>) -> Result<Vec<Archive>, PreloadError> {
    let mut archives = Vec::new();

    let pause_name = ImageName::parse(PAUSE_IMAGE).expect("a valid constant");
    let mut pause_tree = FileTree::new();
    pause_tree.file("/pause", 0o755, inputs.pause.to_vec())?;
    let pause = ImageSpec {
        name: &pause_name,
        arch: inputs.arch,
        root: &pause_tree,
        entrypoint: vec!["/pause".into()],
        cmd: vec![],
        env: vec![PATH_ENV.into()],
        user: Some(PAUSE_USER.into()),
        epoch: inputs.epoch,
    };
    archives.push(written("pause.tar", &pause_name, write::write(&pause)?));

    let Some(Node::File { data, .. }) = inputs.packages.get(busybox::PACKAGE_PATH) else {
        return Err(PreloadError::NoBusybox { path: busybox::PACKAGE_PATH });
    };
    let (busybox_tree, _) = busybox::image_tree(data.clone(), inputs.arch)?;
    let busybox_name = ImageName::parse(BUSYBOX_IMAGE).expect("a valid constant");
    let busybox = ImageSpec {
        name: &busybox_name,
        arch: inputs.arch,
        root: &busybox_tree,
        entrypoint: vec!["/bin/sh".into()],
        cmd: vec![],
        env: vec![PATH_ENV.into()],
        user: None,
        epoch: inputs.epoch,
    };
    archives.push(written("busybox.tar", &busybox_name, write::write(&busybox)?));

    let mut file_names: BTreeSet<String> =
        archives.iter().map(|a| a.path[IMAGES_DIR.len() + 1..].to_string()).collect();
    let mut names: BTreeSet<String> =
        archives.iter().flat_map(|a| &a.images).map(|i| i.name.clone()).collect();
    for path in inputs.archives {
        let archive = listed(path, inputs.arch)?;
        let file_name = archive.path[IMAGES_DIR.len() + 1..].to_string();
        if !file_names.insert(file_name.clone()) {
            return Err(PreloadError::FileName { path: path.clone(), file_name });
        }
        for image in &archive.images {
            if !names.insert(image.name.clone()) {
                return Err(PreloadError::Duplicate {
                    path: path.clone(),
                    name: image.name.clone(),
                });
            }
        }
        archives.push(archive);
    }
    Ok(archives)
}

fn written(file_name: &str, name: &ImageName, archive: write::OciArchive) -> Archive {
    Archive {
        path: format!("{IMAGES_DIR}/{file_name}"),
        bytes: archive.bytes,
        images: vec![ArchivedImage { name: name.to_string(), digest: archive.manifest.digest }],
    }
}

/// A listed archive, read and checked.
fn listed(path: &Path, arch: Arch) -> Result<Archive, PreloadError> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| PreloadError::BadPath(path.to_path_buf()))?;
    let bytes = std::fs::read(path)
        .map_err(|source| PreloadError::Read { path: path.to_path_buf(), source })?;
    let mut images = Vec::new();
    for image in inspect::inspect(path, &bytes)? {
        if !image.platforms().any(|p| p.runs_on(arch)) {
            let platforms: Vec<String> = image.platforms().map(ToString::to_string).collect();
            return Err(PreloadError::WrongPlatform {
                path: path.to_path_buf(),
                name: image.name,
                platforms: platforms.join(", "),
                arch,
            });
        }
        images.push(ArchivedImage { name: image.name, digest: image.descriptor.digest });
    }
    Ok(Archive { path: format!("{IMAGES_DIR}/{file_name}"), bytes, images })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(packages: &'a FileTree, archives: &'a [PathBuf]) -> PreloadInputs<'a> {
        PreloadInputs { arch: Arch::X86_64, pause: b"pause", packages, archives, epoch: 0 }
    }

    /// A package pool with a (minimal) static busybox for x86_64.
    fn packages() -> FileTree {
        let table = b"[\0[[\0ash\0busybox\0cat\0httpd\0sh\0\0";
        let busybox = crate::executable::minimal_static_elf(Arch::X86_64, table);
        let mut packages = FileTree::new();
        packages.file("/usr/bin/busybox", 0o755, busybox).unwrap();
        packages
    }

    #[test]
    fn pause_busybox_and_listed_archives_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let listed = [archive_file(dir.path(), "app.tar", "registry.example/app:v1", Arch::X86_64)];
        let packages = packages();
        let archives = build(&inputs(&packages, &listed)).unwrap();
        let summary: Vec<(&str, &str)> = archives
            .iter()
            .flat_map(|a| a.images.iter().map(move |i| (a.path.as_str(), i.name.as_str())))
            .collect();
        assert_eq!(
            summary,
            [
                ("/usr/share/cairn/images/pause.tar", "localhost/pause:latest"),
                ("/usr/share/cairn/images/busybox.tar", "localhost/busybox:latest"),
                ("/usr/share/cairn/images/app.tar", "registry.example/app:v1"),
            ]
        );
        assert_eq!(build(&inputs(&packages, &listed)).unwrap(), archives);
        for archive in &archives {
            let images = inspect::inspect(Path::new(&archive.path), &archive.bytes).unwrap();
            assert_eq!(images[0].descriptor.digest, archive.images[0].digest);
        }

        // The busybox image links every applet, and pause is /pause.
        let layer_paths = |archive: &Archive| -> Vec<(String, tar::EntryType)> {
            let mut files = std::collections::BTreeMap::new();
            let mut tar = tar::Archive::new(archive.bytes.as_slice());
            for entry in tar.entries().unwrap() {
                let mut entry = entry.unwrap();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
                files.insert(entry.path().unwrap().display().to_string(), data);
            }
            // The largest blob is the layer.
            let layer = files.values().max_by_key(|d| d.len()).unwrap();
            let mut tar = tar::Archive::new(layer.as_slice());
            let entries = tar.entries().unwrap();
            entries
                .map(|e| {
                    let e = e.unwrap();
                    (e.path().unwrap().display().to_string(), e.header().entry_type())
                })
                .collect()
        };
        assert_eq!(layer_paths(&archives[0]), [("pause".to_string(), tar::EntryType::Regular)]);
        let busybox = layer_paths(&archives[1]);
        let (file, link, directory) =
            (tar::EntryType::Regular, tar::EntryType::Symlink, tar::EntryType::Directory);
        for (path, kind) in [
            ("bin/busybox", file),
            ("bin/[[", link),
            ("bin/ash", link),
            ("bin/cat", link),
            ("bin/httpd", link),
            ("bin/sh", link),
            ("etc/passwd", file),
            ("tmp/", directory),
        ] {
            assert!(busybox.contains(&(path.to_string(), kind)), "{path} not in {busybox:?}");
        }

        // The same image twice, or the same file name twice, is an error.
        let twice = [listed[0].clone(), listed[0].clone()];
        let error = build(&inputs(&packages, &twice)).unwrap_err().to_string();
        assert!(error.contains("app.tar: another archive is already"), "{error}");
        let again = [archive_file(dir.path(), "pause.tar", "localhost/other:v1", Arch::X86_64)];
        let error = build(&inputs(&packages, &again)).unwrap_err().to_string();
        assert!(error.contains("/usr/share/cairn/images/pause.tar"), "{error}");
        let renamed = dir.path().join("copy.tar");
        std::fs::copy(&listed[0], &renamed).unwrap();
        let error =
            build(&inputs(&packages, &[listed[0].clone(), renamed])).unwrap_err().to_string();
        assert!(error.contains("copy.tar: registry.example/app:v1 is also in another"), "{error}");
    }

    #[test]
    fn busybox_must_be_in_the_packages() {
        let error = build(&inputs(&FileTree::new(), &[])).unwrap_err().to_string();
        assert!(
            error.starts_with("/usr/bin/busybox: no package") && error.contains("busybox-static")
        );
    }

    /// An archive of one image for `arch`, written to `dir/file_name`.
    fn archive_file(dir: &Path, file_name: &str, name: &str, arch: Arch) -> PathBuf {
        let path = dir.join(file_name);
        std::fs::write(&path, write::one_file_image(name, arch).bytes).unwrap();
        path
    }

    #[test]
    fn listed_archives_are_checked_for_the_board() {
        let dir = tempfile::tempdir().unwrap();
        let good = archive_file(dir.path(), "app.tar", "registry.example/app:v1", Arch::X86_64);
        let archive = listed(&good, Arch::X86_64).unwrap();
        assert_eq!(archive.path, "/usr/share/cairn/images/app.tar");
        assert_eq!(archive.bytes, std::fs::read(&good).unwrap());
        assert_eq!(archive.images[0].name, "registry.example/app:v1");

        let arm = archive_file(dir.path(), "arm.tar", "registry.example/app:v1", Arch::Armv7);
        let error = listed(&arm, Arch::X86_64).unwrap_err().to_string();
        assert!(
            error.contains("arm.tar") && error.contains("linux/arm/v7, not for x86_64"),
            "{error}"
        );
        let error = listed(&dir.path().join("none.tar"), Arch::X86_64).unwrap_err().to_string();
        assert!(error.contains("none.tar"), "{error}");
    }
}
