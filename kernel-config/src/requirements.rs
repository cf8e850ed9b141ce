//! The kernel symbols Cairn needs (`requirements.toml`) and the check of a config against
//! them.

use cairn_api::arch::Arch;
use serde::Deserialize;

use crate::kconfig::{KernelConfig, Setting};

/// How a symbol must be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Want {
    /// Built in.
    #[serde(rename = "y")]
    Builtin,
    /// Built in or a module.
    #[serde(rename = "ym")]
    BuiltinOrModule,
}

/// One symbol Cairn needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// The symbol without `CONFIG_`.
    pub symbol: String,
    /// How it must be set.
    pub want: Want,
    /// What breaks without it.
    pub reason: String,
    /// The architectures it applies to; all when absent.
    #[serde(default)]
    pub arch: Option<Vec<Arch>>,
}

impl Requirement {
    /// Whether it applies to `arch`.
    pub fn applies_to(&self, arch: Arch) -> bool {
        self.arch.as_ref().is_none_or(|arches| arches.contains(&arch))
    }

    /// Whether `setting` satisfies it.
    pub fn is_met_by(&self, setting: &Setting) -> bool {
        match self.want {
            Want::Builtin => *setting == Setting::Builtin,
            Want::BuiltinOrModule => matches!(setting, Setting::Builtin | Setting::Module),
        }
    }
}

/// A requirement a kernel config does not meet.
#[derive(Debug, Clone)]
pub struct Unmet {
    /// What was required.
    pub requirement: Requirement,
    /// What the config has.
    pub found: Setting,
}

impl std::fmt::Display for Unmet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let want = match self.requirement.want {
            Want::Builtin => "y",
            Want::BuiltinOrModule => "y or m",
        };
        write!(
            f,
            "CONFIG_{}: needs {want}, is {} ({})",
            self.requirement.symbol, self.found, self.requirement.reason
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequirementsFile {
    require: Vec<Requirement>,
}

/// Every requirement, from `requirements.toml` (compiled in).
pub fn all() -> Vec<Requirement> {
    let file: RequirementsFile = toml::from_str(include_str!("../requirements.toml"))
        .expect("requirements.toml is checked by this crate's tests");
    file.require
}

/// The requirements for `arch` that `config` does not meet.
pub fn check(config: &KernelConfig, arch: Arch) -> Vec<Unmet> {
    all()
        .into_iter()
        .filter(|r| r.applies_to(arch))
        .filter_map(|requirement| {
            let found = config.get(&requirement.symbol);
            (!requirement.is_met_by(&found)).then_some(Unmet { requirement, found })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_names_each_symbol_once() {
        let all = all();
        assert!(all.len() > 40);
        let mut symbols: Vec<_> = all.iter().map(|r| r.symbol.as_str()).collect();
        symbols.sort();
        let count = symbols.len();
        symbols.dedup();
        assert_eq!(symbols.len(), count, "a symbol is listed twice");
        assert!(all.iter().all(|r| !r.reason.is_empty() && !r.symbol.starts_with("CONFIG_")));
    }

    #[test]
    fn reports_what_is_missing_with_its_reason() {
        // Everything built in, but for three: one missing, one a module where y is needed,
        // one a module where a module is fine.
        let mut text: String = all().iter().map(|r| format!("CONFIG_{}=y\n", r.symbol)).collect();
        text = text.replace("CONFIG_VETH=y", "# CONFIG_VETH is not set");
        text = text.replace("CONFIG_DEVTMPFS=y", "CONFIG_DEVTMPFS=m");
        text = text.replace("CONFIG_OVERLAY_FS=y", "CONFIG_OVERLAY_FS=m");
        let unmet: Vec<String> = check(&KernelConfig::parse(&text), Arch::X86_64)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(unmet.len(), 2, "{unmet:?}");
        assert!(unmet[0].starts_with("CONFIG_DEVTMPFS: needs y, is m"), "{unmet:?}");
        assert!(
            unmet[1].starts_with("CONFIG_VETH: needs y or m, is not set (CNI bridge"),
            "{unmet:?}"
        );
    }

    #[test]
    fn arch_specific_requirements_apply_only_there() {
        let efi = all().into_iter().find(|r| r.symbol == "EFI_STUB").unwrap();
        assert!(efi.applies_to(Arch::X86_64) && !efi.applies_to(Arch::Armv7));
    }
}
