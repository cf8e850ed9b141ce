//! Boards (`overlays/<board>/board.toml`) and profiles (`image-builder/profiles/*.toml`):
//! the data that says what an image contains.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cairn_api::arch::Arch;
use serde::Deserialize;

/// A board or profile file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
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
}

/// A board overlay's `board.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// The CPU architecture.
    pub arch: Arch,
    /// How the board boots a slot.
    pub bootloader: Bootloader,
    /// The kernel metapackage, e.g. `linux-image-amd64`.
    pub kernel: String,
    /// Packages this board needs beside the profile's (bootloader, firmware).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Kernel command-line arguments.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// OCI image-layout archives to carry (see [`crate::preload`]), relative to the board's
    /// folder in the file; [`Board::load`] makes them relative to where it was loaded from.
    #[serde(default)]
    pub images: Vec<PathBuf>,
}

/// The bootloader that chooses and counts slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    /// UEFI machines: systemd-boot, one Boot Loader Spec entry per slot.
    SystemdBoot,
}

/// A profile: the packages every image carries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The Debian suite.
    pub suite: String,
    /// Packages.
    pub packages: Vec<String>,
    /// The files taken from them (absolute paths); their shared libraries come along.
    pub files: Vec<String>,
    /// OCI image-layout archives to carry (see [`crate::preload`]), relative to the profile's
    /// folder in the file; [`Profile::load`] makes them relative to where it was loaded from.
    #[serde(default)]
    pub images: Vec<PathBuf>,
}

fn load<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, BoardError> {
    let text =
        fs::read_to_string(path).map_err(|source| BoardError::Io { path: path.into(), source })?;
    toml::from_str(&text)
        .map_err(|e| BoardError::Parse { path: path.into(), message: e.to_string() })
}

impl Board {
    /// Reads `overlays_dir/<name>/board.toml`.
    pub fn load(overlays_dir: &Path, name: &str) -> Result<Board, BoardError> {
        let dir = overlays_dir.join(name);
        let mut board: Board = load(&dir.join("board.toml"))?;
        board.images = board.images.iter().map(|image| dir.join(image)).collect();
        Ok(board)
    }
}

impl Profile {
    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Profile, BoardError> {
        let mut profile: Profile = load(path)?;
        let dir = path.parent().unwrap_or(Path::new(""));
        profile.images = profile.images.iter().map(|image| dir.join(image)).collect();
        Ok(profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
    }

    #[test]
    fn the_shipped_boards_and_profiles_load() {
        let board = Board::load(&workspace().join("overlays"), "generic-x86_64").unwrap();
        assert_eq!(board.arch, Arch::X86_64);
        let profile =
            Profile::load(&workspace().join("image-builder/profiles/default.toml")).unwrap();
        assert!(profile.packages.contains(&"containerd".to_string()));
    }

    #[test]
    fn image_archives_are_found_beside_their_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("b")).unwrap();
        fs::write(
            dir.path().join("b/board.toml"),
            "arch = \"x86_64\"\nbootloader = \"systemd-boot\"\nkernel = \"k\"\n\
             images = [\"images/app.tar\", \"/abs/other.tar\"]\n",
        )
        .unwrap();
        let board = Board::load(dir.path(), "b").unwrap();
        assert_eq!(
            board.images,
            [dir.path().join("b/images/app.tar"), PathBuf::from("/abs/other.tar")]
        );
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
    fn unknown_keys_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("b")).unwrap();
        fs::write(
            dir.path().join("b/board.toml"),
            "arch = \"x86_64\"\nbootloader = \"systemd-boot\"\nkernel = \"k\"\nkernal_args = []\n",
        )
        .unwrap();
        let err = Board::load(dir.path(), "b").unwrap_err().to_string();
        assert!(err.contains("b/board.toml") && err.contains("kernal_args"), "{err}");
    }
}
