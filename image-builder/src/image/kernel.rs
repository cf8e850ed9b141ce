//! The kernel step: the kernel package unpacked, its config checked against Cairn's
//! requirements, and the modules the initramfs and the root filesystem carry resolved in
//! load order, with the module table ([`cairn_api::image::module_table`]) that lets machined
//! load them by the devices present.

use std::path::Path;

use cairn_api::arch::Arch;
use cairn_api::image::module_table::{LoadWhen, ModuleAlias, ModuleTable, TableModule};
use cairn_api::image::MODULE_TABLE;
use kernel_config::kconfig::KernelConfig;
use kernel_config::module_index::{self, ModuleFile, ModuleIndex};
use kernel_config::module_sets::{self, ModuleSet};
use kernel_config::requirements;

use super::ImageError;
use crate::deb::unpack_into;
use crate::packages::Fetched;
use crate::tree::{FileTree, Node};

/// The kernel of an image.
pub struct Kernel {
    /// The package's `/boot`, `/usr/lib/modules` and device trees (`/usr/lib/linux-image-*`).
    files: FileTree,
    /// Its release, e.g. `6.12.48+deb13-amd64`.
    pub release: String,
    /// The modules the initramfs loads, in order.
    pub initramfs_modules: Vec<ModuleFile>,
    /// The modules the root filesystem carries, in order.
    pub rootfs_modules: Vec<ModuleFile>,
    /// The modules that load at boot with no device asking for them.
    boot_modules: Vec<String>,
    /// The modules that load for the services with no device asking for them.
    services_modules: Vec<String>,
}

impl Kernel {
    /// Unpacks `package` and checks it for `arch`; `scratch` holds its modules while they
    /// are indexed.
    pub fn load(package: &Fetched, arch: Arch, scratch: &Path) -> Result<Kernel, ImageError> {
        let mut files = FileTree::new();
        unpack_into(&package.deb, &mut files, |p| {
            p.starts_with("/boot")
                || p.starts_with("/usr/lib/modules")
                || p.strip_prefix("/usr/lib")
                    .is_ok_and(|dir| dir.to_string_lossy().starts_with("linux-image-"))
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
        Ok(Kernel {
            files,
            release,
            initramfs_modules,
            rootfs_modules,
            boot_modules: module_sets::names(ModuleSet::Boot, arch),
            services_modules: module_sets::names(ModuleSet::Services, arch),
        })
    }

    /// The kernel image (`/boot/vmlinuz-<release>`).
    pub fn image(&self) -> Result<&[u8], ImageError> {
        match self.files.get(format!("/boot/vmlinuz-{}", self.release)) {
            Some(Node::File { data, .. }) => Ok(data),
            _ => Err(ImageError::Kernel(format!("no /boot/vmlinuz-{}", self.release))),
        }
    }

    /// The device tree at `path` under the package's device-tree directory
    /// (`/usr/lib/linux-image-<release>/`), e.g. `broadcom/bcm2837-rpi-3-b.dtb`.
    pub fn device_tree(&self, path: &str) -> Option<&[u8]> {
        match self.files.get(format!("/usr/lib/linux-image-{}/{path}", self.release)) {
            Some(Node::File { data, .. }) => Some(data),
            _ => None,
        }
    }

    /// Copies `modules` into `tree`, uncompressed, and writes their table next to them.
    ///
    /// Uncompressed: Debian's `.ko.xz` would have the kernel decompress each module as it
    /// loads, which under emulation took most of a boot's module loading (about a second for
    /// ext4's); the initramfs and the squashfs root are compressed as a whole anyway.
    pub fn add_modules(
        &self,
        tree: &mut FileTree,
        modules: &[ModuleFile],
    ) -> Result<(), ImageError> {
        let modules_root = modules_root(&self.release);
        for module in modules {
            let path = Path::new(&modules_root).join(&module.path);
            let Some(Node::File { mode, data }) = self.files.get(&path) else {
                return Err(ImageError::Kernel(format!("{} vanished", path.display())));
            };
            let data = module_index::uncompressed(&path, data.clone())?;
            tree.file(module_index::uncompressed_path(&path), *mode, data)?;
        }
        let table = module_table(modules, &self.boot_modules, &self.services_modules);
        tree.file(format!("{modules_root}/{MODULE_TABLE}"), 0o644, table.render())?;
        Ok(())
    }
}

/// The table of `modules` (in load order): each loads at boot, for the services, or when a
/// device asks for it, as the `boot` and `services` names say.
fn module_table(modules: &[ModuleFile], boot: &[String], services: &[String]) -> ModuleTable {
    let when = |name: &String| match (boot.contains(name), services.contains(name)) {
        (true, _) => LoadWhen::Boot,
        (false, true) => LoadWhen::Services,
        (false, false) => LoadWhen::Device,
    };
    ModuleTable {
        modules: modules
            .iter()
            .map(|m| TableModule {
                name: m.name.clone(),
                path: module_index::uncompressed_path(&m.path),
                when: when(&m.name),
                depends: m.depends.clone(),
            })
            .collect(),
        aliases: modules
            .iter()
            .flat_map(|m| {
                m.aliases
                    .iter()
                    .map(|pattern| ModuleAlias { pattern: pattern.clone(), module: m.name.clone() })
            })
            .collect(),
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
    fn the_table_says_when_each_module_loads_from_its_uncompressed_file_and_lists_its_aliases() {
        let module = |name: &str, depends: &[&str], aliases: &[&str]| ModuleFile {
            name: name.into(),
            path: format!("kernel/{name}.ko.xz").into(),
            depends: depends.iter().map(|d| d.to_string()).collect(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        };
        let modules = [
            module("jbd2", &[], &[]),
            module("ext4", &["jbd2"], &["fs-ext4"]),
            module("bridge", &[], &[]),
            module("e1000e", &[], &["pci:v00008086d000010D3sv*sd*bc*sc*i*"]),
        ];
        let table = module_table(&modules, &["ext4".into()], &["bridge".into()]);
        assert_eq!(
            table.render(),
            "# module\tNAME\tPATH\tWHEN\tDEPENDS / alias\tPATTERN\tNAME\n\
             module\tjbd2\tkernel/jbd2.ko\tdevice\t\n\
             module\text4\tkernel/ext4.ko\tboot\tjbd2\n\
             module\tbridge\tkernel/bridge.ko\tservices\t\n\
             module\te1000e\tkernel/e1000e.ko\tdevice\t\n\
             alias\tfs-ext4\text4\n\
             alias\tpci:v00008086d000010D3sv*sd*bc*sc*i*\te1000e\n"
        );
    }

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
