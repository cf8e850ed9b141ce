//! A kernel's module tree (`lib/modules/<release>`), resolving module names into files in
//! the order they must be loaded, each with its device aliases.
//!
//! Debian's kernel packages ship no `modules.dep` or `modules.alias` (their postinst runs
//! depmod), so the dependencies (`depends=` and `softdep=pre:`) and aliases (`alias=`) are
//! read from each module's `.modinfo` ELF section, decompressing `.ko.xz` files as needed.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

/// A module to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// Its name, as `modprobe` takes it (underscores).
    pub name: String,
    /// Its path relative to the module tree, e.g. `kernel/fs/squashfs/squashfs.ko.xz`.
    pub path: PathBuf,
    /// The modules of the tree to load before it (`depends=`, and the `softdep=pre:` ones
    /// the tree has), built-in ones left out.
    pub depends: Vec<String>,
    /// Its `alias=` entries: the modalias globs of the devices it drives.
    pub aliases: Vec<String>,
}

/// Resolving failed.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// Reading the tree or a module failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The kernel has the module neither built in nor as a file.
    #[error("module {0:?} is neither built into this kernel nor in its module tree")]
    Missing(String),
    /// A module file is not a kernel module we can read.
    #[error("{path}: cannot read its modinfo: {reason}")]
    Unreadable {
        /// The module file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A `.ko.xz` file does not decompress.
    #[error("{path}: does not decompress: {reason}")]
    Compression {
        /// The module file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Modules that depend on each other.
    #[error("module dependency cycle through {0:?}")]
    Cycle(String),
}

/// The modules of one kernel.
#[derive(Debug)]
pub struct ModuleIndex {
    dir: PathBuf,
    files: HashMap<String, PathBuf>,
    builtin: HashSet<String>,
}

/// `virtio-blk` and `virtio_blk` name the same module.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

impl ModuleIndex {
    /// Indexes `dir` (a `lib/modules/<release>` directory): every `*.ko` and `*.ko.xz` under
    /// `kernel/`, and `modules.builtin`.
    pub fn scan(dir: &Path) -> Result<Self, ModuleError> {
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ModuleError::Io { path, source }
        };
        let mut files = HashMap::new();
        let mut pending = vec![dir.join("kernel")];
        while let Some(current) = pending.pop() {
            for entry in fs::read_dir(&current).map_err(io_error(&current))? {
                let path = entry.map_err(io_error(&current))?.path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let file_name = path.file_name().unwrap_or_default().to_string_lossy();
                if let Some(stem) =
                    file_name.strip_suffix(".ko.xz").or_else(|| file_name.strip_suffix(".ko"))
                {
                    let relative = path.strip_prefix(dir).expect("walked below dir").to_path_buf();
                    files.insert(normalize(stem), relative);
                }
            }
        }
        let builtin_list = dir.join("modules.builtin");
        let builtin = match fs::read_to_string(&builtin_list) {
            Ok(text) => text
                .lines()
                .filter_map(|line| line.rsplit('/').next())
                .map(|f| normalize(f.trim_end_matches(".ko")))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(io_error(&builtin_list)(e)),
        };
        Ok(ModuleIndex { dir: dir.to_path_buf(), files, builtin })
    }

    /// The files for `names` and everything they depend on, dependencies first, each once.
    /// Built-in modules are skipped.
    pub fn resolve<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<ModuleFile>, ModuleError> {
        let mut order = Vec::new();
        let mut done = HashSet::new();
        for name in names {
            self.visit(&normalize(name.as_ref()), &mut Vec::new(), &mut done, &mut order, true)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        path: &mut Vec<String>,
        done: &mut HashSet<String>,
        order: &mut Vec<ModuleFile>,
        required: bool,
    ) -> Result<(), ModuleError> {
        if done.contains(name) || self.builtin.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            return Err(ModuleError::Cycle(name.to_string()));
        }
        let Some(file) = self.files.get(name) else {
            // A soft dependency that this kernel lacks is no error.
            return if required { Err(ModuleError::Missing(name.to_string())) } else { Ok(()) };
        };
        let info = self.modinfo(file)?;
        path.push(name.to_string());
        for dependency in &info.depends {
            self.visit(dependency, path, done, order, true)?;
        }
        for soft in &info.soft_pre {
            self.visit(soft, path, done, order, false)?;
        }
        path.pop();
        done.insert(name.to_string());
        let depends = info
            .depends
            .into_iter()
            .chain(info.soft_pre)
            .filter(|d| self.files.contains_key(d) && !self.builtin.contains(d))
            .collect();
        order.push(ModuleFile {
            name: name.to_string(),
            path: file.clone(),
            depends,
            aliases: info.aliases,
        });
        Ok(())
    }

    fn modinfo(&self, relative: &Path) -> Result<ModInfo, ModuleError> {
        let path = self.dir.join(relative);
        let raw =
            fs::read(&path).map_err(|source| ModuleError::Io { path: path.clone(), source })?;
        let unreadable = |reason: String| ModuleError::Unreadable { path: path.clone(), reason };
        let elf = uncompressed(&path, raw)?;
        let object = object::File::parse(elf.as_slice()).map_err(|e| unreadable(e.to_string()))?;
        let section = object
            .section_by_name(".modinfo")
            .ok_or_else(|| unreadable("no .modinfo section".into()))?;
        let data = section.data().map_err(|e| unreadable(e.to_string()))?;
        Ok(ModInfo::parse(data))
    }
}

/// Where a module file is once uncompressed: `ext4.ko` for `ext4.ko.xz`.
pub fn uncompressed_path(path: &Path) -> PathBuf {
    match path.extension() {
        Some(e) if e == "xz" => path.with_extension(""),
        _ => path.to_path_buf(),
    }
}

/// The ELF module of the file at `path` whose bytes are `raw`: decompressed if it is a
/// `.ko.xz`, else as it is.
pub fn uncompressed(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, ModuleError> {
    if path.extension().is_none_or(|e| e != "xz") {
        return Ok(raw);
    }
    let mut out = Vec::new();
    lzma_rs::xz_decompress(&mut raw.as_slice(), &mut out).map_err(|e| {
        ModuleError::Compression { path: path.to_path_buf(), reason: format!("xz: {e}") }
    })?;
    Ok(out)
}

/// The parts of a module's modinfo that order loading and match devices.
#[derive(Debug, Default, PartialEq, Eq)]
struct ModInfo {
    depends: Vec<String>,
    soft_pre: Vec<String>,
    aliases: Vec<String>,
}

impl ModInfo {
    /// Parses the NUL-separated `key=value` strings of a `.modinfo` section.
    fn parse(data: &[u8]) -> ModInfo {
        let mut info = ModInfo::default();
        for entry in data.split(|b| *b == 0).filter_map(|e| std::str::from_utf8(e).ok()) {
            if let Some(alias) = entry.strip_prefix("alias=") {
                info.aliases.push(alias.to_string());
            } else if let Some(list) = entry.strip_prefix("depends=") {
                info.depends.extend(list.split(',').filter(|d| !d.is_empty()).map(normalize));
            } else if let Some(soft) = entry.strip_prefix("softdep=") {
                // "pre: a b post: c": the modules before "post:" load first.
                let pre = soft.split("post:").next().unwrap_or_default();
                info.soft_pre.extend(
                    pre.trim().trim_start_matches("pre:").split_whitespace().map(normalize),
                );
            }
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write;

    /// Writes a minimal ELF "module" with the given modinfo strings.
    fn module(dir: &Path, relative: &str, modinfo: &[&str]) {
        let mut obj = write::Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        let section = obj.add_section(Vec::new(), b".modinfo".to_vec(), object::SectionKind::Data);
        let mut data = Vec::new();
        for entry in modinfo {
            data.extend_from_slice(entry.as_bytes());
            data.push(0);
        }
        obj.append_section_data(section, &data, 1);
        let path = dir.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, obj.write().unwrap()).unwrap();
    }

    #[test]
    fn resolves_dependencies_first_each_once_skipping_builtins() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        module(
            d,
            "kernel/drivers/block/virtio_blk.ko",
            &["license=GPL", "alias=virtio:d00000002v*", "depends=virtio_ring,virtio"],
        );
        module(d, "kernel/drivers/virtio/virtio_ring.ko", &["depends="]);
        module(
            d,
            "kernel/fs/ext4/ext4.ko",
            &["depends=mbcache,jbd2", "softdep=pre: crc32c absent"],
        );
        module(d, "kernel/fs/mbcache.ko", &["depends="]);
        module(d, "kernel/fs/jbd2/jbd2.ko", &["depends=crc32c"]);
        module(d, "kernel/crypto/crc32c-generic.ko", &[]);
        fs::write(
            d.join("modules.builtin"),
            "kernel/drivers/virtio/virtio.ko\nkernel/fs/crc32c.ko\n",
        )
        .unwrap();
        let index = ModuleIndex::scan(d).unwrap();
        let resolved = index.resolve(&["virtio-blk", "ext4", "virtio_ring"]).unwrap();
        let order: Vec<&str> = resolved.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(order, ["virtio_ring", "virtio_blk", "mbcache", "jbd2", "ext4"]);
        // Built-in and absent dependencies are not the tree's to load.
        assert_eq!(resolved[1].depends, ["virtio_ring"]);
        assert_eq!(resolved[1].aliases, ["virtio:d00000002v*"]);
        assert_eq!(resolved[3].depends, Vec::<String>::new());
        assert_eq!(resolved[4].depends, ["mbcache", "jbd2"]);
        assert!(matches!(index.resolve(&["nope"]), Err(ModuleError::Missing(n)) if n == "nope"));
    }

    #[test]
    fn reports_cycles() {
        let dir = tempfile::tempdir().unwrap();
        module(dir.path(), "kernel/a.ko", &["depends=b"]);
        module(dir.path(), "kernel/b.ko", &["depends=a"]);
        let index = ModuleIndex::scan(dir.path()).unwrap();
        assert!(matches!(index.resolve(&["a"]), Err(ModuleError::Cycle(_))));
    }

    #[test]
    fn an_xz_module_is_given_uncompressed_under_its_plain_name() {
        assert_eq!(uncompressed_path(Path::new("kernel/ext4.ko.xz")), Path::new("kernel/ext4.ko"));
        assert_eq!(uncompressed_path(Path::new("kernel/ext4.ko")), Path::new("kernel/ext4.ko"));
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &b"\x7fELF module"[..], &mut xz).unwrap();
        assert_eq!(uncompressed(Path::new("a.ko.xz"), xz).unwrap(), b"\x7fELF module");
        assert_eq!(uncompressed(Path::new("a.ko"), b"plain".to_vec()).unwrap(), b"plain");
        let error = uncompressed(Path::new("a.ko.xz"), b"not xz".to_vec()).unwrap_err();
        assert!(error.to_string().starts_with("a.ko.xz: does not decompress: xz:"), "{error}");
    }

    #[test]
    fn parses_modinfo_strings() {
        let info = ModInfo::parse(
            b"license=GPL\0alias=pci:v00008086d*\0depends=a,b-c\0softdep=pre: x y post: z\0\0",
        );
        assert_eq!(info.depends, ["a", "b_c"]);
        assert_eq!(info.soft_pre, ["x", "y"]);
        assert_eq!(info.aliases, ["pci:v00008086d*"]);
    }
}
