//! Loading the kernel modules an image lists ([`cairn_api::image::MODULE_LOAD_LIST`], written
//! by image-builder next to the modules, in dependency order).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

/// `MODULE_INIT_COMPRESSED_FILE`: the kernel decompresses the `.ko.xz` itself (Linux 6.4+,
/// CONFIG_MODULE_DECOMPRESS). nix does not name this flag yet.
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// A module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModuleLoadError {
    /// The list or a module could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The kernel refused the module.
    #[error("{path}: the kernel refused it: {errno}")]
    Refused {
        /// The module.
        path: PathBuf,
        /// Why.
        errno: Errno,
    },
}

/// The module paths of a load list, in order.
pub fn parse_list(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(PathBuf::from)
        .collect()
}

/// Loads every module of the load list in `dir`, in order, going on past failures (one
/// missing driver must not cost the rest); a module already loaded is fine. Returns how many
/// loaded and what failed.
pub fn load_listed(dir: &Path) -> Result<(usize, Vec<ModuleLoadError>), ModuleLoadError> {
    let list = dir.join(cairn_api::image::MODULE_LOAD_LIST);
    let text = std::fs::read_to_string(&list)
        .map_err(|source| ModuleLoadError::Io { path: list, source })?;
    let modules = parse_list(&text);
    let failures: Vec<ModuleLoadError> =
        modules.iter().filter_map(|relative| load(&dir.join(relative)).err()).collect();
    Ok((modules.len() - failures.len(), failures))
}

fn load(path: &Path) -> Result<(), ModuleLoadError> {
    let file =
        File::open(path).map_err(|source| ModuleLoadError::Io { path: path.into(), source })?;
    let compressed = path.extension().is_some_and(|e| e == "xz" || e == "zst" || e == "gz");
    let flags = match compressed {
        true => ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE),
        false => ModuleInitFlags::empty(),
    };
    match finit_module(&file, c"", flags) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(errno) => Err(ModuleLoadError::Refused { path: path.into(), errno }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        let list = parse_list("kernel/a.ko.xz\n\n# comment\nkernel/b.ko\n");
        assert_eq!(list, [PathBuf::from("kernel/a.ko.xz"), PathBuf::from("kernel/b.ko")]);
    }
}
