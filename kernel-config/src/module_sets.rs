//! Which modules go into the initramfs and onto the root filesystem (`modules.toml`).

use std::collections::HashMap;

use cairn_api::arch::Arch;
use serde::Deserialize;

/// Where a set of modules goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModuleSet {
    /// Loaded by stage 1 to reach the root filesystem.
    Initramfs,
    /// Loaded by stage 2 from the root filesystem.
    Rootfs,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModulesFile {
    initramfs: HashMap<String, Vec<String>>,
    rootfs: HashMap<String, Vec<String>>,
}

/// The module names of `set` for `arch`: the shared ones, then the architecture's.
pub fn names(set: ModuleSet, arch: Arch) -> Vec<String> {
    let file: ModulesFile = toml::from_str(include_str!("../modules.toml"))
        .expect("modules.toml is checked by this crate's tests");
    let table = match set {
        ModuleSet::Initramfs => file.initramfs,
        ModuleSet::Rootfs => file.rootfs,
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
        for table in [&file.initramfs, &file.rootfs] {
            for key in table.keys() {
                assert!(key == "all" || key.parse::<Arch>().is_ok(), "unknown key {key}");
            }
        }
        for arch in Arch::ALL {
            assert!(names(ModuleSet::Initramfs, arch).contains(&"squashfs".to_string()));
            assert!(names(ModuleSet::Rootfs, arch).contains(&"overlay".to_string()));
        }
    }
}
