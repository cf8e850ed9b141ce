//! Loading one kernel module from a file (`finit_module`), behind [`ModuleLoader`] so
//! [`super::coldplug`]'s planning runs in unit tests.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

/// A module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModuleLoadError {
    /// A module could not be read.
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
    /// A module it depends on did not load.
    #[error("{module}: not loaded, as {dependency} (which it needs) did not load")]
    DependencyFailed {
        /// The module.
        module: String,
        /// The dependency that failed.
        dependency: String,
    },
}

/// Puts modules into the kernel.
pub trait ModuleLoader: Sync {
    /// Whether the module `name` is in the kernel already (loaded by stage 1, or by hand).
    fn is_loaded(&self, name: &str) -> bool;
    /// Loads the module file at `path`; one already loaded is no error.
    fn load(&self, path: &Path) -> Result<(), ModuleLoadError>;
}

/// The running kernel.
pub struct KernelModules;

impl ModuleLoader for KernelModules {
    fn is_loaded(&self, name: &str) -> bool {
        // Only loadable modules have an initstate; a built-in one with parameters has a
        // directory too.
        Path::new("/sys/module").join(name).join("initstate").exists()
    }

    fn load(&self, path: &Path) -> Result<(), ModuleLoadError> {
        let file =
            File::open(path).map_err(|source| ModuleLoadError::Io { path: path.into(), source })?;
        // Images carry their modules uncompressed (image-builder's `Kernel::add_modules`).
        match finit_module(&file, c"", ModuleInitFlags::empty()) {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(errno) => Err(ModuleLoadError::Refused { path: path.into(), errno }),
        }
    }
}
