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
        load(&overlays_dir.join(name).join("board.toml"))
    }
}

impl Profile {
    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Profile, BoardError> {
        load(path)
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
