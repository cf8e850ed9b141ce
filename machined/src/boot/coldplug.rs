//! Coldplug, as udev's: the modules the devices present ask for (each device's `modalias`
//! matched against the module table's aliases, as modprobe's fnmatch does) and those the
//! table loads with no device, each after its dependencies, concurrently where those allow.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use cairn_api::image::module_table::{LoadWhen, ModuleTable, ModuleTableError, TableModule};
use cairn_api::image::MODULE_TABLE;

use super::modules::{KernelModules, ModuleLoadError, ModuleLoader};

/// The module table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ColdplugError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The table.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// It does not parse.
    #[error("{path}: {source}")]
    Table {
        /// The table.
        path: PathBuf,
        /// What is wrong.
        source: ModuleTableError,
    },
}

/// What one round of loading did.
#[derive(Debug, Default)]
pub struct Loaded {
    /// How many modules it put into the kernel.
    pub count: usize,
    /// What failed (the rest went on: one missing driver must not cost the others).
    pub failures: Vec<ModuleLoadError>,
}

/// Where a module stands; a module another thread is loading is waited for, never loaded
/// twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoadState {
    Loading,
    Loaded,
    Failed,
}

/// One tree's modules (the initramfs's or the root filesystem's), loaded on demand; shared by
/// the threads that load (coldplug, uevents, the services' modules).
pub struct Coldplug<L: ModuleLoader = KernelModules> {
    dir: PathBuf,
    /// The table's modules, in load order.
    modules: Vec<TableModule>,
    by_name: HashMap<String, usize>,
    aliases: Vec<(glob::Pattern, usize)>,
    loader: L,
    states: Mutex<HashMap<String, LoadState>>,
    settled: Condvar,
}

impl Coldplug<KernelModules> {
    /// The table in `dir` (a `/usr/lib/modules/<release>`), for the running kernel.
    pub fn open(dir: &Path) -> Result<Self, ColdplugError> {
        let path = dir.join(MODULE_TABLE);
        let text = std::fs::read_to_string(&path)
            .map_err(|source| ColdplugError::Io { path: path.clone(), source })?;
        let table =
            ModuleTable::parse(&text).map_err(|source| ColdplugError::Table { path, source })?;
        Ok(Coldplug::new(dir, table, KernelModules))
    }
}

impl<L: ModuleLoader> Coldplug<L> {
    /// `table`'s modules, whose paths are relative to `dir`, loaded with `loader`.
    pub fn new(dir: &Path, table: ModuleTable, loader: L) -> Self {
        let by_name: HashMap<String, usize> =
            table.modules.iter().enumerate().map(|(i, m)| (m.name.clone(), i)).collect();
        let aliases = table
            .aliases
            .iter()
            .filter_map(|alias| match glob::Pattern::new(&alias.pattern) {
                Ok(pattern) => Some((pattern, by_name[&alias.module])),
                Err(e) => {
                    tracing::warn!("module {}: alias {:?}: {e}", alias.module, alias.pattern);
                    None
                }
            })
            .collect();
        Coldplug {
            dir: dir.to_path_buf(),
            modules: table.modules,
            by_name,
            aliases,
            loader,
            states: Mutex::new(HashMap::new()),
            settled: Condvar::new(),
        }
    }

    /// The modules whose aliases match `modalias`.
    pub fn modules_for(&self, modalias: &str) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .aliases
            .iter()
            .filter(|(pattern, _)| pattern.matches(modalias))
            .map(|(_, index)| self.modules[*index].name.as_str())
            .collect();
        names.dedup();
        names
    }

    /// Loads what the devices with these modaliases ask for.
    pub fn load_for_devices<S: AsRef<str>>(&self, modaliases: &[S]) -> Loaded {
        let names: Vec<&str> =
            modaliases.iter().flat_map(|alias| self.modules_for(alias.as_ref())).collect();
        self.load(&names)
    }

    /// Loads the modules the table loads `when`, with no device asking.
    pub fn load_when(&self, when: LoadWhen) -> Loaded {
        let names: Vec<&str> =
            self.modules.iter().filter(|m| m.when == when).map(|m| m.name.as_str()).collect();
        self.load(&names)
    }

    /// Loads `names` and their dependencies, wave by wave: a wave holds the modules whose
    /// dependencies all loaded in earlier waves, and its modules load in threads of their own.
    fn load(&self, names: &[&str]) -> Loaded {
        let mut loaded = Loaded::default();
        for wave in self.waves(names) {
            let results: Vec<Result<bool, ModuleLoadError>> = std::thread::scope(|scope| {
                let threads: Vec<_> =
                    wave.iter().map(|&index| scope.spawn(move || self.ensure(index))).collect();
                threads.into_iter().map(|t| t.join().expect("a module load panicked")).collect()
            });
            for result in results {
                match result {
                    Ok(newly) => loaded.count += usize::from(newly),
                    Err(e) => loaded.failures.push(e),
                }
            }
        }
        loaded
    }

    /// The modules `names` need (themselves and their dependencies), as indexes into the
    /// table, by wave: a module's wave is one more than the last of its dependencies'.
    fn waves(&self, names: &[&str]) -> Vec<Vec<usize>> {
        let mut needed = HashSet::new();
        let mut pending: Vec<usize> =
            names.iter().filter_map(|name| self.by_name.get(*name).copied()).collect();
        while let Some(index) = pending.pop() {
            if needed.insert(index) {
                pending.extend(self.modules[index].depends.iter().map(|d| self.by_name[d]));
            }
        }
        // The table lists dependencies first, so one pass in its order sees each module's
        // dependencies' depths before its own.
        let mut depth: HashMap<usize, usize> = HashMap::new();
        let mut waves: Vec<Vec<usize>> = Vec::new();
        for index in (0..self.modules.len()).filter(|i| needed.contains(i)) {
            let own = self.modules[index]
                .depends
                .iter()
                .map(|d| depth[&self.by_name[d]] + 1)
                .max()
                .unwrap_or(0);
            depth.insert(index, own);
            if waves.len() <= own {
                waves.resize(own + 1, Vec::new());
            }
            waves[own].push(index);
        }
        waves
    }

    /// Makes sure module `index` is in the kernel; returns whether this call loaded it.
    fn ensure(&self, index: usize) -> Result<bool, ModuleLoadError> {
        let module = &self.modules[index];
        let mut states = self.states.lock().expect("module states poisoned");
        loop {
            match states.get(&module.name) {
                Some(LoadState::Loading) => {
                    states = self.settled.wait(states).expect("module states poisoned");
                }
                Some(LoadState::Loaded) => return Ok(false),
                Some(LoadState::Failed) | None => break,
            }
        }
        let failed = module.depends.iter().find(|d| states.get(*d) != Some(&LoadState::Loaded));
        if let Some(dependency) = failed {
            return Err(ModuleLoadError::DependencyFailed {
                module: module.name.clone(),
                dependency: dependency.clone(),
            });
        }
        states.insert(module.name.clone(), LoadState::Loading);
        drop(states);
        let result = match self.loader.is_loaded(&module.name) {
            true => Ok(false),
            false => self.loader.load(&self.dir.join(&module.path)).map(|()| true),
        };
        let state = if result.is_ok() { LoadState::Loaded } else { LoadState::Failed };
        self.states.lock().expect("module states poisoned").insert(module.name.clone(), state);
        self.settled.notify_all();
        result
    }
}

/// The `modalias` of every device below `devices` (`/sys/devices`); symbolic links are not
/// followed, so each device is read once.
pub fn device_modaliases(devices: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![devices.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(kind) if kind.is_file() && entry.file_name() == "modalias" => {
                    if let Ok(text) = std::fs::read_to_string(entry.path()) {
                        found.push(text.trim_end().to_string());
                    }
                }
                _ => {}
            }
        }
    }
    found.retain(|alias| !alias.is_empty());
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A kernel that records what it loads, when, and refuses the files it is told to.
    #[derive(Default)]
    struct FakeKernel {
        loaded: Mutex<Vec<String>>,
        refused: Vec<&'static str>,
        preloaded: Vec<&'static str>,
    }

    impl ModuleLoader for FakeKernel {
        fn is_loaded(&self, name: &str) -> bool {
            self.preloaded.contains(&name)
        }

        fn load(&self, path: &Path) -> Result<(), ModuleLoadError> {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            // Long enough that concurrent loads overlap.
            std::thread::sleep(Duration::from_millis(20));
            if self.refused.contains(&name.as_str()) {
                return Err(ModuleLoadError::Refused {
                    path: path.into(),
                    errno: nix::errno::Errno::ENOEXEC,
                });
            }
            self.loaded.lock().unwrap().push(name);
            Ok(())
        }
    }

    const TABLE: &str = "module\tvirtio\tvirtio.ko\tdevice\t\n\
        module\tvirtio_ring\tvirtio_ring.ko\tdevice\tvirtio\n\
        module\tvirtio_pci\tvirtio_pci.ko\tdevice\tvirtio,virtio_ring\n\
        module\tvirtio_blk\tvirtio_blk.ko\tdevice\tvirtio,virtio_ring\n\
        module\tahci\tahci.ko\tdevice\t\n\
        module\tsquashfs\tsquashfs.ko\tboot\t\n\
        module\tbridge\tbridge.ko\tservices\t\n\
        alias\tpci:v00001AF4d*sv*sd*bc*sc*i*\tvirtio_pci\n\
        alias\tvirtio:d00000002v*\tvirtio_blk\n\
        alias\tpci:v*d*sv*sd*bc01sc06i01*\tahci\n";

    fn coldplug(kernel: FakeKernel) -> Coldplug<FakeKernel> {
        Coldplug::new(Path::new("/m"), ModuleTable::parse(TABLE).unwrap(), kernel)
    }

    #[test]
    fn matches_modaliases_as_fnmatch_globs() {
        let c = coldplug(FakeKernel::default());
        assert_eq!(
            c.modules_for("pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"),
            ["virtio_pci"]
        );
        assert_eq!(
            c.modules_for("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"),
            ["ahci"]
        );
        assert_eq!(c.modules_for("virtio:d00000002v00001AF4"), ["virtio_blk"]);
        assert!(c.modules_for("virtio:d00000001v00001AF4").is_empty());
    }

    #[test]
    fn loads_dependencies_first_in_waves_and_only_what_is_asked_for() {
        let c = coldplug(FakeKernel::default());
        let names = ["virtio_blk", "virtio_pci", "ahci"];
        let waves: Vec<Vec<&str>> = c
            .waves(&names)
            .into_iter()
            .map(|w| w.into_iter().map(|i| c.modules[i].name.as_str()).collect())
            .collect();
        assert_eq!(
            waves,
            [vec!["virtio", "ahci"], vec!["virtio_ring"], vec!["virtio_pci", "virtio_blk"]]
        );
        let loaded = c.load_for_devices(&["virtio:d00000002v00001AF4", "input:b0019v0000"]);
        assert_eq!((loaded.count, loaded.failures.len()), (3, 0));
        assert_eq!(*c.loader.loaded.lock().unwrap(), ["virtio", "virtio_ring", "virtio_blk"]);
        // Loaded once: a second round finds them in place.
        assert_eq!(c.load_for_devices(&["virtio:d00000002v00001AF4"]).count, 0);
    }

    #[test]
    fn loads_by_time_skipping_what_the_kernel_has() {
        let c = coldplug(FakeKernel { preloaded: vec!["bridge"], ..FakeKernel::default() });
        assert_eq!(c.load_when(LoadWhen::Boot).count, 1);
        assert_eq!(c.load_when(LoadWhen::Services).count, 0);
        assert_eq!(*c.loader.loaded.lock().unwrap(), ["squashfs"]);
    }

    #[test]
    fn a_failed_dependency_fails_its_dependents_and_nothing_else() {
        let c = coldplug(FakeKernel { refused: vec!["virtio_ring"], ..FakeKernel::default() });
        let loaded = c.load_for_devices(&[
            "virtio:d00000002v00001AF4",
            "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01",
        ]);
        let failures: Vec<String> = loaded.failures.iter().map(ToString::to_string).collect();
        assert_eq!(
            failures,
            [
                "/m/virtio_ring.ko: the kernel refused it: ENOEXEC: Exec format error",
                "virtio_blk: not loaded, as virtio_ring (which it needs) did not load",
            ]
        );
        let mut loaded = c.loader.loaded.lock().unwrap().clone();
        loaded.sort();
        assert_eq!(loaded, ["ahci", "virtio"]);
    }

    #[test]
    fn concurrent_rounds_load_a_module_once() {
        let c = coldplug(FakeKernel::default());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| c.load_for_devices(&["virtio:d00000002v00001AF4"]));
            }
        });
        assert_eq!(*c.loader.loaded.lock().unwrap(), ["virtio", "virtio_ring", "virtio_blk"]);
    }

    #[test]
    fn reads_the_modalias_of_every_device_not_following_links() {
        let sys = tempfile::tempdir().unwrap();
        let pci = sys.path().join("pci0000:00/0000:00:02.0");
        std::fs::create_dir_all(pci.join("virtio0")).unwrap();
        std::fs::write(pci.join("modalias"), "pci:v00001AF4d00001001\n").unwrap();
        std::fs::write(pci.join("virtio0/modalias"), "virtio:d00000002v00001AF4\n").unwrap();
        std::fs::write(pci.join("virtio0/uevent"), "MODALIAS=x\n").unwrap();
        std::os::unix::fs::symlink(&pci, pci.join("virtio0/device")).unwrap();
        std::fs::create_dir_all(sys.path().join("platform/empty")).unwrap();
        std::fs::write(sys.path().join("platform/empty/modalias"), "\n").unwrap();
        assert_eq!(
            device_modaliases(sys.path()),
            ["pci:v00001AF4d00001001", "virtio:d00000002v00001AF4"]
        );
    }
}
