//! The kernel step: the kernel package unpacked, its config checked against Cairn's
//! requirements, and the modules the initramfs and the root filesystem carry resolved in
//! load order.

use std::path::Path;

use cairn_api::arch::Arch;
use cairn_api::image::MODULE_LOAD_LIST;
use kernel_config::kconfig::KernelConfig;
use kernel_config::module_index::{ModuleFile, ModuleIndex};
use kernel_config::module_sets::{self, ModuleSet};
use kernel_config::requirements;

use super::ImageError;
use crate::deb::unpack_into;
use crate::packages::Fetched;
use crate::tree::{FileTree, Node};

/// The kernel of an image.
pub struct Kernel {
    /// The package's `/boot` and `/usr/lib/modules`.
    files: FileTree,
    /// Its release, e.g. `6.12.48+deb13-amd64`.
    pub release: String,
    /// The modules the initramfs loads, in order.
    pub initramfs_modules: Vec<ModuleFile>,
    /// The modules the root filesystem carries, in order.
    pub rootfs_modules: Vec<ModuleFile>,
}

impl Kernel {
    /// Unpacks `package` and checks it for `arch`; `scratch` holds its modules while they
    /// are indexed.
    pub fn load(package: &Fetched, arch: Arch, scratch: &Path) -> Result<Kernel, ImageError> {
        let mut files = FileTree::new();
        unpack_into(&package.deb, &mut files, |p| {
            p.starts_with("/boot") || p.starts_with("/usr/lib/modules")
        })?;
        let release = kernel_release(&files)?;
        let config = match files.get(format!("/boot/config-{release}")) {
            Some(Node::File { data, .. }) => KernelConfig::parse(&String::from_utf8_lossy(data)),
            _ => return Err(ImageError::Kernel(format!("no /boot/config-{release}"))),
        };
        let unmet: Vec<String> =
            requirements::check(&config, arch).iter().map(ToString::to_string).collect();
        if !unmet.is_empty() {
            return Err(ImageError::UnfitKernel(unmet));
        }
        let modules_dir = scratch.join("modules").join(&release);
        let io_error = |source| ImageError::Io { path: modules_dir.clone(), source };
        if modules_dir.exists() {
            std::fs::remove_dir_all(&modules_dir).map_err(io_error)?;
        }
        files.write_below(modules_root(&release), &modules_dir).map_err(io_error)?;
        let index = ModuleIndex::scan(&modules_dir)?;
        let initramfs_modules = index.resolve(&module_sets::names(ModuleSet::Initramfs, arch))?;
        let rootfs_modules = index.resolve(&module_sets::names(ModuleSet::Rootfs, arch))?;
        Ok(Kernel { files, release, initramfs_modules, rootfs_modules })
    }

    /// The kernel image (`/boot/vmlinuz-<release>`).
    pub fn image(&self) -> Result<&[u8], ImageError> {
        match self.files.get(format!("/boot/vmlinuz-{}", self.release)) {
            Some(Node::File { data, .. }) => Ok(data),
            _ => Err(ImageError::Kernel(format!("no /boot/vmlinuz-{}", self.release))),
        }
    }

    /// Copies `modules` into `tree` and writes their load order next to them.
    pub fn add_modules(
        &self,
        tree: &mut FileTree,
        modules: &[ModuleFile],
    ) -> Result<(), ImageError> {
        let modules_root = modules_root(&self.release);
        let mut order = String::new();
        for module in modules {
            let path = Path::new(&modules_root).join(&module.path);
            let node = self
                .files
                .get(&path)
                .cloned()
                .ok_or_else(|| ImageError::Kernel(format!("{} vanished", path.display())))?;
            tree.insert(&path, node)?;
            order.push_str(&format!("{}\n", module.path.display()));
        }
        tree.file(format!("{modules_root}/{MODULE_LOAD_LIST}"), 0o644, order)?;
        Ok(())
    }
}

/// Where the modules of `release` live.
fn modules_root(release: &str) -> String {
    format!("/usr/lib/modules/{release}")
}

/// The release of the one kernel in the package (`/boot/vmlinuz-<release>`).
fn kernel_release(kernel: &FileTree) -> Result<String, ImageError> {
    let releases: Vec<String> = kernel
        .entries()
        .filter_map(|(p, _)| p.to_str()?.strip_prefix("boot/vmlinuz-").map(str::to_string))
        .collect();
    match releases.as_slice() {
        [release] => Ok(release.clone()),
        other => Err(ImageError::Kernel(format!("expected one /boot/vmlinuz-*, found {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_is_that_of_the_one_kernel() {
        let mut tree = FileTree::new();
        tree.file("/boot/config-6.1-amd64", 0o644, "").unwrap();
        assert!(matches!(kernel_release(&tree), Err(ImageError::Kernel(_))));
        tree.file("/boot/vmlinuz-6.1-amd64", 0o644, "k").unwrap();
        assert_eq!(kernel_release(&tree).unwrap(), "6.1-amd64");
        tree.file("/boot/vmlinuz-6.2-amd64", 0o644, "k").unwrap();
        let err = kernel_release(&tree).unwrap_err().to_string();
        assert!(err.contains("6.1-amd64") && err.contains("6.2-amd64"), "{err}");
    }
}
