//! The module table: what image-builder indexes at build time, from each module's own
//! `.modinfo`, so machined can load modules as udev's coldplug does (by the `modalias` of the
//! devices present) with no modprobe, depmod or `modules.alias` on the node.
//!
//! A text file ([`super::MODULE_TABLE`]), one record a line, fields separated by one tab;
//! empty lines and lines starting with `#` are skipped:
//!
//! ```text
//! module<TAB>NAME<TAB>PATH<TAB>WHEN<TAB>DEPENDS
//! alias<TAB>PATTERN<TAB>NAME
//! ```
//!
//! - `module`: NAME as modprobe takes it (underscores); PATH relative to the table's
//!   directory (e.g. `kernel/fs/squashfs/squashfs.ko`); WHEN one of [`LoadWhen`]'s words;
//!   DEPENDS the comma-separated names of the modules that must be loaded first (the
//!   module's `depends=` and the `softdep=pre:` modules the tree carries), empty for none.
//!   Module records come in load order: each after every module it depends on.
//! - `alias`: one of module NAME's `alias=` entries, a glob (`*`, `?`, `[...]`, as modprobe's
//!   fnmatch) matched against a device's `modalias`. Alias records come after the module
//!   they name.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;

/// When a module loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoadWhen {
    /// `boot`: at once, whatever devices are present, by the stage whose tree carries it
    /// (squashfs to mount the root, ext4 before STATE is mounted).
    Boot,
    /// `services`: by stage 2, off the API's path, before the services that need it start
    /// (overlay, bridge, netfilter for containerd and the pods' network).
    Services,
    /// `device`: only when a device's `modalias` matches one of its aliases.
    Device,
}

impl LoadWhen {
    /// Its word in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadWhen::Boot => "boot",
            LoadWhen::Services => "services",
            LoadWhen::Device => "device",
        }
    }

    fn parse(word: &str) -> Option<LoadWhen> {
        [LoadWhen::Boot, LoadWhen::Services, LoadWhen::Device]
            .into_iter()
            .find(|w| w.as_str() == word)
    }
}

/// A module the tree carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableModule {
    /// Its name, as modprobe takes it.
    pub name: String,
    /// Its file, relative to the table's directory.
    pub path: PathBuf,
    /// When it loads.
    pub when: LoadWhen,
    /// The modules to load before it.
    pub depends: Vec<String>,
}

/// A modalias pattern and the module it loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleAlias {
    /// The glob, as in the module's `alias=` entry.
    pub pattern: String,
    /// The module's name.
    pub module: String,
}

/// A tree's module table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleTable {
    /// The modules, in load order.
    pub modules: Vec<TableModule>,
    /// Their aliases.
    pub aliases: Vec<ModuleAlias>,
}

/// A table that does not read.
#[derive(Debug, thiserror::Error)]
pub enum ModuleTableError {
    /// A line is not a record of the format.
    #[error("module table line {line}: {reason}")]
    Line {
        /// Its number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl ModuleTable {
    /// Reads a table, checking that every module comes after its dependencies and every
    /// alias after its module.
    pub fn parse(text: &str) -> Result<ModuleTable, ModuleTableError> {
        let mut table = ModuleTable::default();
        let mut known = HashSet::new();
        for (index, line) in text.lines().enumerate() {
            let error = |reason: String| ModuleTableError::Line { line: index + 1, reason };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                ["module", name, path, when, depends] => {
                    let when = LoadWhen::parse(when)
                        .ok_or_else(|| error(format!("unknown load time {when:?}")))?;
                    let depends: Vec<String> =
                        depends.split(',').filter(|d| !d.is_empty()).map(str::to_string).collect();
                    if let Some(missing) = depends.iter().find(|d| !known.contains(d.as_str())) {
                        return Err(error(format!(
                            "{name} depends on {missing}, not listed before it"
                        )));
                    }
                    if !known.insert(name.to_string()) {
                        return Err(error(format!("{name} is listed twice")));
                    }
                    table.modules.push(TableModule {
                        name: name.to_string(),
                        path: PathBuf::from(path),
                        when,
                        depends,
                    });
                }
                ["alias", pattern, module] => {
                    if !known.contains(*module) {
                        return Err(error(format!("alias of {module}, not listed before it")));
                    }
                    table.aliases.push(ModuleAlias {
                        pattern: pattern.to_string(),
                        module: module.to_string(),
                    });
                }
                _ => return Err(error("neither a module nor an alias record".to_string())),
            }
        }
        Ok(table)
    }

    /// The table as text: the modules in order, then the aliases.
    pub fn render(&self) -> String {
        let mut text = String::from("# module\tNAME\tPATH\tWHEN\tDEPENDS / alias\tPATTERN\tNAME\n");
        for m in &self.modules {
            let _ = writeln!(
                text,
                "module\t{}\t{}\t{}\t{}",
                m.name,
                m.path.display(),
                m.when.as_str(),
                m.depends.join(",")
            );
        }
        for a in &self.aliases {
            let _ = writeln!(text, "alias\t{}\t{}", a.pattern, a.module);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# module\tNAME\tPATH\tWHEN\tDEPENDS / alias\tPATTERN\tNAME\n\
        module\tvirtio_ring\tkernel/drivers/virtio/virtio_ring.ko\tdevice\t\n\
        module\tvirtio_blk\tkernel/drivers/block/virtio_blk.ko\tdevice\tvirtio_ring\n\
        module\tsquashfs\tkernel/fs/squashfs/squashfs.ko\tboot\t\n\
        alias\tvirtio:d00000002v*\tvirtio_blk\n";

    #[test]
    fn round_trips_exact_text() {
        let table = ModuleTable::parse(TEXT).unwrap();
        assert_eq!(table.modules.len(), 3);
        assert_eq!(table.modules[1].depends, ["virtio_ring"]);
        assert_eq!(table.modules[2].when, LoadWhen::Boot);
        assert_eq!(
            table.aliases,
            [ModuleAlias { pattern: "virtio:d00000002v*".into(), module: "virtio_blk".into() }]
        );
        assert_eq!(table.render(), TEXT);
    }

    #[test]
    fn refuses_records_out_of_order_or_malformed() {
        let line_of = |text: &str| match ModuleTable::parse(text) {
            Err(ModuleTableError::Line { line, reason }) => (line, reason),
            Ok(_) => panic!("{text:?} parsed"),
        };
        let (line, reason) = line_of("module\tb\tb.ko\tdevice\ta\nmodule\ta\ta.ko\tdevice\t\n");
        assert_eq!((line, reason.as_str()), (1, "b depends on a, not listed before it"));
        assert_eq!(line_of("alias\tpci:*\tx\n").1, "alias of x, not listed before it");
        assert_eq!(
            line_of("\nmodule\ta\ta.ko\tsoon\t\n"),
            (2, "unknown load time \"soon\"".into())
        );
        assert_eq!(line_of("module a a.ko device\n").0, 1);
        assert_eq!(
            line_of("module\ta\ta.ko\tboot\t\nmodule\ta\ta.ko\tboot\t\n").1,
            "a is listed twice"
        );
    }
}
