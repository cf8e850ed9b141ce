//! A kernel `.config`: `CONFIG_X=y`, `=m`, `="text"`, `=123`, `# CONFIG_X is not set`.

use std::collections::HashMap;
use std::fmt;

/// How a symbol is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// `y`: built in.
    Builtin,
    /// `m`: a module.
    Module,
    /// Any other value (strings, numbers).
    Value(String),
    /// Absent, or `# ... is not set`.
    NotSet,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Builtin => f.write_str("y"),
            Setting::Module => f.write_str("m"),
            Setting::Value(v) => write!(f, "{v}"),
            Setting::NotSet => f.write_str("not set"),
        }
    }
}

/// A parsed kernel configuration.
#[derive(Debug, Clone, Default)]
pub struct KernelConfig {
    settings: HashMap<String, Setting>,
}

impl KernelConfig {
    /// Parses the text of a `.config` (or `/boot/config-*`). Lines that are neither settings
    /// nor "is not set" comments are ignored, as the kernel's own tools do.
    pub fn parse(text: &str) -> Self {
        let mut settings = HashMap::new();
        for line in text.lines().map(str::trim) {
            if let Some(symbol) =
                line.strip_prefix("# CONFIG_").and_then(|rest| rest.strip_suffix(" is not set"))
            {
                settings.insert(symbol.to_string(), Setting::NotSet);
            } else if let Some((symbol, value)) =
                line.strip_prefix("CONFIG_").and_then(|rest| rest.split_once('='))
            {
                let setting = match value {
                    "y" => Setting::Builtin,
                    "m" => Setting::Module,
                    "n" => Setting::NotSet,
                    other => Setting::Value(other.trim_matches('"').to_string()),
                };
                settings.insert(symbol.to_string(), setting);
            }
        }
        KernelConfig { settings }
    }

    /// How `symbol` (without `CONFIG_`) is set.
    pub fn get(&self, symbol: &str) -> Setting {
        self.settings.get(symbol).cloned().unwrap_or(Setting::NotSet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let config = KernelConfig::parse(
            "#\n# Comment\nCONFIG_A=y\nCONFIG_B=m\nCONFIG_C=\"zstd\"\nCONFIG_D=300\n# CONFIG_E is not set\n",
        );
        assert_eq!(config.get("A"), Setting::Builtin);
        assert_eq!(config.get("B"), Setting::Module);
        assert_eq!(config.get("C"), Setting::Value("zstd".into()));
        assert_eq!(config.get("D"), Setting::Value("300".into()));
        assert_eq!(config.get("E"), Setting::NotSet);
        assert_eq!(config.get("MISSING"), Setting::NotSet);
    }
}
