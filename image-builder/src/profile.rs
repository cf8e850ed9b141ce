//! Profiles (`image-builder/profiles/*.toml`): the packages every image of a board carries
//! besides the board's own (boards are [`cairn_api::board`]).
//!
//! A profile names Debian packages, the only files taken from them, and symbolic links
//! made on the root filesystem:
//!
//! ```toml
//! suite = "trixie"
//! packages = ["iptables", "libxtables12"]
//! # Absolute paths; their shared libraries (ELF DT_NEEDED) and the links on the way come along.
//! files = [
//!     "/usr/sbin/xtables-nft-multi",
//!     # {multiarch} is Debian's multiarch triplet of the board's architecture.
//!     "/usr/lib/{multiarch}/xtables/libxt_tcp.so",
//! ]
//! images = []  # OCI archives to carry (see crate::preload), relative to the profile
//!
//! # Links no package ships (maintainer scripts such as update-alternatives make them on
//! # Debian): link path = target, stored as written. The target must exist in the image.
//! [links]
//! "/usr/sbin/iptables" = "xtables-nft-multi"
//! ```
//!
//! `{multiarch}` may appear in the paths of `files` and `links` (both sides); it becomes
//! `x86_64-linux-gnu`, `aarch64-linux-gnu` or `arm-linux-gnueabihf`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use cairn_api::arch::Arch;
use serde::Deserialize;

/// A profile could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The file does not fit its schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why, with the line.
        message: String,
    },
    /// A value fits the schema but cannot be used.
    #[error("{path}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key and entry, e.g. `links."/usr/sbin/iptables"`.
        field: String,
        /// Why.
        message: String,
    },
}

/// The placeholder for Debian's multiarch triplet in profile paths.
pub const MULTIARCH: &str = "{multiarch}";

/// Debian's multiarch triplet of `arch`: where its shared libraries (and plugins such as
/// iptables' extensions) live, `/usr/lib/<triplet>`.
pub fn multiarch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64-linux-gnu",
        Arch::Arm64 => "aarch64-linux-gnu",
        Arch::Armv7 => "arm-linux-gnueabihf",
    }
}

/// A profile: the packages every image carries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The Debian suite.
    pub suite: String,
    /// Packages.
    pub packages: Vec<String>,
    /// The files taken from them (absolute paths, may hold [`MULTIARCH`]; see
    /// [`Profile::files_for`]); their shared libraries come along.
    pub files: Vec<String>,
    /// OCI image-layout archives to carry (see [`crate::preload`]), relative to the profile's
    /// folder in the file; [`Profile::load`] makes them relative to where it was loaded from.
    #[serde(default)]
    pub images: Vec<PathBuf>,
    /// Symbolic links to make on the root filesystem: absolute link path to target (stored
    /// as written; relative targets are read from the link's folder). Both may hold
    /// [`MULTIARCH`]; see [`Profile::links_for`]. For links no package ships, e.g. the ones
    /// `update-alternatives` makes at install time.
    #[serde(default)]
    pub links: BTreeMap<String, String>,
}

impl Profile {
    /// Reads a profile file and checks its paths.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = fs::read_to_string(path)
            .map_err(|source| ProfileError::Io { path: path.into(), source })?;
        let mut profile: Profile = toml::from_str(&text)
            .map_err(|e| ProfileError::Parse { path: path.into(), message: e.to_string() })?;
        profile.check().map_err(|(field, message)| ProfileError::Invalid {
            path: path.into(),
            field,
            message,
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        profile.images = profile.images.iter().map(|image| dir.join(image)).collect();
        Ok(profile)
    }

    /// The files to take for `arch`, placeholders expanded.
    pub fn files_for(&self, arch: Arch) -> Vec<String> {
        self.files.iter().map(|file| expand(file, arch)).collect()
    }

    /// The links to make for `arch` (link path, target), placeholders expanded, in path
    /// order.
    pub fn links_for(&self, arch: Arch) -> Vec<(String, String)> {
        self.links.iter().map(|(link, target)| (expand(link, arch), expand(target, arch))).collect()
    }

    /// Paths absolute and plain, targets not empty, no placeholder but [`MULTIARCH`]: the
    /// offending key and why.
    fn check(&self) -> Result<(), (String, String)> {
        for file in &self.files {
            check_path(file).map_err(|message| (format!("files: {file:?}"), message))?;
        }
        for (link, target) in &self.links {
            let field = || format!("links.{link:?}");
            check_path(link).map_err(|message| (field(), message))?;
            if target.is_empty() {
                return Err((field(), "the target is empty".into()));
            }
            check_placeholders(target).map_err(|message| (field(), message))?;
        }
        Ok(())
    }
}

/// `path` with [`MULTIARCH`] replaced by `arch`'s triplet.
fn expand(path: &str, arch: Arch) -> String {
    path.replace(MULTIARCH, multiarch(arch))
}

/// Absolute, naming something below `/`, without `.` or `..`, no unknown placeholder.
fn check_path(path: &str) -> Result<(), String> {
    check_placeholders(path)?;
    let path = Path::new(path);
    if !path.is_absolute() {
        return Err("must be an absolute path".into());
    }
    if path.file_name().is_none()
        || path.components().any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return Err("must name a file below / without '.' or '..'".into());
    }
    Ok(())
}

fn check_placeholders(text: &str) -> Result<(), String> {
    if text.replace(MULTIARCH, "").contains(['{', '}']) {
        return Err(format!("unknown placeholder (the only one is {MULTIARCH})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
    }

    #[test]
    fn the_shipped_profile_loads() {
        let profile =
            Profile::load(&workspace().join("image-builder/profiles/default.toml")).unwrap();
        assert!(profile.packages.contains(&"containerd".to_string()));
    }

    #[test]
    fn image_archives_are_found_beside_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let profile_path = dir.path().join("profiles/p.toml");
        fs::create_dir_all(profile_path.parent().unwrap()).unwrap();
        fs::write(
            &profile_path,
            "suite = \"trixie\"\npackages = []\nfiles = []\nimages = [\"app.tar\"]\n",
        )
        .unwrap();
        let profile = Profile::load(&profile_path).unwrap();
        assert_eq!(profile.images, [dir.path().join("profiles/app.tar")]);
        let shipped = Profile::load(&workspace().join("image-builder/profiles/default.toml"));
        assert!(shipped.unwrap().images.is_empty());
    }

    #[test]
    fn multiarch_paths_expand_per_architecture() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        fs::write(
            &path,
            "suite = \"trixie\"\npackages = []\n\
             files = [\"/usr/lib/{multiarch}/xtables/libxt_tcp.so\", \"/usr/bin/containerd\"]\n\
             [links]\n\"/usr/sbin/iptables\" = \"xtables-nft-multi\"\n\
             \"/usr/lib/{multiarch}/libx.so\" = \"/usr/lib/{multiarch}/libx.so.1\"\n",
        )
        .unwrap();
        let profile = Profile::load(&path).unwrap();
        assert_eq!(
            profile.files_for(Arch::Armv7),
            ["/usr/lib/arm-linux-gnueabihf/xtables/libxt_tcp.so", "/usr/bin/containerd"]
        );
        let links = profile.links_for(Arch::Arm64);
        assert_eq!(
            links[0],
            (
                "/usr/lib/aarch64-linux-gnu/libx.so".into(),
                "/usr/lib/aarch64-linux-gnu/libx.so.1".into()
            )
        );
        assert_eq!(links[1], ("/usr/sbin/iptables".into(), "xtables-nft-multi".into()));
    }

    #[test]
    fn bad_paths_are_errors_naming_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        let head = "suite = \"trixie\"\npackages = []\n";
        for (body, field, why) in [
            ("files = [\"usr/bin/runc\"]\n", "files: \"usr/bin/runc\"", "absolute"),
            ("files = [\"/usr/lib/{triplet}/x\"]\n", "files: ", "unknown placeholder"),
            ("files = [\"/usr/../etc/x\"]\n", "files: ", "'..'"),
            (
                "files = []\n[links]\n\"sbin/iptables\" = \"x\"\n",
                "links.\"sbin/iptables\"",
                "absolute",
            ),
            ("files = []\n[links]\n\"/\" = \"x\"\n", "links.\"/\"", "below /"),
            ("files = []\n[links]\n\"/usr/sbin/iptables\" = \"\"\n", "links.", "empty"),
            ("files = []\n[links]\n\"/usr/sbin/x\" = \"{arch}\"\n", "links.", "placeholder"),
        ] {
            fs::write(&path, format!("{head}{body}")).unwrap();
            let err = Profile::load(&path).unwrap_err().to_string();
            assert!(
                err.contains("p.toml") && err.contains(field) && err.contains(why),
                "{body}: {err}"
            );
        }
    }

    #[test]
    fn the_shipped_profile_links_lead_to_its_files() {
        let profile =
            Profile::load(&workspace().join("image-builder/profiles/default.toml")).unwrap();
        assert!(profile.links.contains_key("/usr/sbin/iptables"));
        for arch in Arch::ALL {
            let files = profile.files_for(arch);
            for (link, target) in profile.links_for(arch) {
                let resolved = Path::new(&link).parent().unwrap().join(&target);
                assert!(files.iter().any(|f| Path::new(f) == resolved), "{link} -> {target}");
            }
        }
    }
}
