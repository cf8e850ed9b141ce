//! Which modules go into the initramfs and onto the root filesystem, and which of them load
//! with no device asking for them (`modules.toml`).

use std::collections::HashMap;

use cairn_api::arch::Arch;
use serde::Deserialize;

/// A set of modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModuleSet {
    /// Carried by the initramfs, for stage 1 to reach the root filesystem.
    Initramfs,
    /// Carried by the root filesystem, for stage 2.
    Rootfs,
    /// Loaded at once by the stage that carries them, whatever devices are present.
    Boot,
    /// Loaded by stage 2 beside the API, before the services that need them.
    Services,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModulesFile {
    initramfs: HashMap<String, Vec<String>>,
    rootfs: HashMap<String, Vec<String>>,
    boot: HashMap<String, Vec<String>>,
    services: HashMap<String, Vec<String>>,
}

/// The module names of `set` for `arch`: the shared ones, then the architecture's.
pub fn names(set: ModuleSet, arch: Arch) -> Vec<String> {
    let file: ModulesFile = toml::from_str(include_str!("../modules.toml"))
        .expect("modules.toml is checked by this crate's tests");
    let table = match set {
        ModuleSet::Initramfs => file.initramfs,
        ModuleSet::Rootfs => file.rootfs,
        ModuleSet::Boot => file.boot,
        ModuleSet::Services => file.services,
    };
    let mut names = table.get("all").cloned().unwrap_or_default();
    names.extend(table.get(arch.name()).cloned().unwrap_or_default());
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arch_has_both_sets_and_keys_are_known() {
        let file: ModulesFile = toml::from_str(include_str!("../modules.toml")).unwrap();
        for table in [&file.initramfs, &file.rootfs, &file.boot, &file.services] {
            for key in table.keys() {
                assert!(key == "all" || key.parse::<Arch>().is_ok(), "unknown key {key}");
            }
        }
        for arch in Arch::ALL {
            assert!(names(ModuleSet::Initramfs, arch).contains(&"squashfs".to_string()));
            assert!(names(ModuleSet::Rootfs, arch).contains(&"overlay".to_string()));
        }
    }

    #[test]
    fn what_loads_without_a_device_is_carried() {
        for arch in Arch::ALL {
            let mut carried = names(ModuleSet::Initramfs, arch);
            carried.extend(names(ModuleSet::Rootfs, arch));
            for set in [ModuleSet::Boot, ModuleSet::Services] {
                for name in names(set, arch) {
                    assert!(carried.contains(&name), "{set:?} {name} is carried by no tree");
                }
            }
        }
    }
}
