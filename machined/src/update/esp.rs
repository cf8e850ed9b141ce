//! The ESP as the updater sees it: each slot's boot entry (its try counter and generation,
//! DESIGN §2) and its files under `/cairn/<slot>/`.
//!
//! The FAT filesystem is read and written in place through the `fatfs` crate, on the block
//! device (or, in tests, an image file): no kernel mount, so nothing else can hold it open
//! and every change is flushed and synced to the device before a call returns.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;

use cairn_api::disk::boot_entry::{generation_of, version_path, BootEntry, ENTRIES_DIR};
use cairn_api::disk::entry_name::EntryName;
use cairn_api::image::Slot;

/// A directory of the filesystem mounted from a borrowed device.
type FatDir<'fs, 'dev> = fatfs::Dir<'fs, &'dev File>;

/// A slot's boot entry as found on the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundEntry {
    /// The file name in [`ENTRIES_DIR`], as found (rename by this).
    pub file: String,
    /// What the name says: the slot and its try counter.
    pub name: EntryName,
    /// Its place in the boot order (0 when it has none).
    pub generation: u64,
}

/// What the ESP says about the slots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootState {
    /// Every Cairn entry, in no particular order.
    pub entries: Vec<FoundEntry>,
}

impl BootState {
    /// The entry of `slot`, if it has one (the newest, should a crash have left two).
    pub fn entry(&self, slot: Slot) -> Option<&FoundEntry> {
        self.entries.iter().filter(|e| e.name.slot == slot).max_by_key(|e| e.generation)
    }

    /// One more than the highest generation: an entry with it boots before all others.
    pub fn next_generation(&self) -> u64 {
        self.entries.iter().map(|e| e.generation).max().unwrap_or(0) + 1
    }

    /// The slot systemd-boot boots next: the newest entry among those with tries left
    /// (entries with none go last), as `default cairn-*` picks.
    pub fn next_boot(&self) -> Option<Slot> {
        self.entries
            .iter()
            .max_by_key(|e| (!e.name.is_exhausted(), e.generation))
            .map(|e| e.name.slot)
    }
}

/// The ESP on its device.
pub struct Esp {
    device: PathBuf,
}

impl Esp {
    /// The ESP on `device`.
    pub fn new(device: impl Into<PathBuf>) -> Esp {
        Esp { device: device.into() }
    }

    /// Mounts the filesystem, runs `work` on its root, unmounts and syncs the device.
    fn with_root<T>(&self, work: impl FnOnce(&FatDir<'_, '_>) -> io::Result<T>) -> io::Result<T> {
        let context =
            |e: io::Error| io::Error::new(e.kind(), format!("ESP {}: {e}", self.device.display()));
        let file = OpenOptions::new().read(true).write(true).open(&self.device).map_err(context)?;
        let result = {
            let fs = fatfs::FileSystem::new(&file, fatfs::FsOptions::new()).map_err(context)?;
            let result = {
                let root = fs.root_dir();
                work(&root).map_err(context)
            };
            fs.unmount().map_err(context)?;
            result
        };
        file.sync_all().map_err(context)?;
        result
    }

    /// Reads the entries.
    pub fn boot_state(&self) -> io::Result<BootState> {
        self.with_root(read_state)
    }

    /// The version of the system in `slot` (its version file), if it holds one.
    pub fn slot_version(&self, slot: Slot) -> io::Result<Option<String>> {
        self.with_root(|root| match root.open_file(relative(&version_path(slot))) {
            Ok(mut file) => {
                let mut text = String::new();
                file.read_to_string(&mut text)?;
                Ok(Some(text.trim().to_string()).filter(|v| !v.is_empty()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
    }

    /// Removes `slot`'s entry and version file, so systemd-boot cannot pick the slot while
    /// its files are rewritten.
    pub fn retire_slot(&self, slot: Slot) -> io::Result<()> {
        self.with_root(|root| {
            for entry in read_state(root)?.entries.iter().filter(|e| e.name.slot == slot) {
                root.remove(&format!("{}/{}", relative(ENTRIES_DIR), entry.file))?;
            }
            remove_if_present(root, &version_path(slot))
        })
    }

    /// Writes the file at `path` (from the ESP's root) with what `content` yields; `written`
    /// is told of each piece's length, for progress. Returns the bytes written.
    pub fn write_file(
        &self,
        path: &str,
        content: &mut dyn Read,
        written: &mut dyn FnMut(usize),
    ) -> io::Result<u64> {
        self.with_root(|root| {
            let mut file = create_file(root, path)?;
            let length = super::copy(content, &mut file, written)?;
            file.flush()?;
            Ok(length)
        })
    }

    /// Makes `slot` (holding `version`) the next boot's, with `tries` boots to come up
    /// healthy: writes its entry, after every other one, under a temporary name, then
    /// renames it to its counted name, the one step systemd-boot sees. Returns the entry's
    /// file name.
    pub fn choose_slot(
        &self,
        slot: Slot,
        version: &str,
        kernel_args: &[String],
        tries: u32,
    ) -> io::Result<String> {
        self.with_root(|root| {
            let state = read_state(root)?;
            let entry = BootEntry::for_slot(slot, version, state.next_generation(), kernel_args);
            let entries = relative(ENTRIES_DIR);
            // Not `.conf`: systemd-boot skips it until the rename.
            let temporary = format!("{entries}/{}.new", slot.to_string().to_lowercase());
            remove_if_present(root, &temporary)?;
            let mut file = create_file(root, &temporary)?;
            file.write_all(entry.render().as_bytes())?;
            file.flush()?;
            drop(file);
            for old in state.entries.iter().filter(|e| e.name.slot == slot) {
                root.remove(&format!("{entries}/{}", old.file))?;
            }
            let name = EntryName::on_trial(slot, tries).to_string();
            let dir = root.open_dir(entries)?;
            dir.rename(&format!("{}.new", slot.to_string().to_lowercase()), &dir, &name)?;
            Ok(name)
        })
    }

    /// The kernel command line of the entry `file`.
    pub fn entry_options(&self, file: &str) -> io::Result<String> {
        self.with_root(|root| {
            let mut text = String::new();
            root.open_file(&format!("{}/{file}", relative(ENTRIES_DIR)))?
                .read_to_string(&mut text)?;
            Ok(text
                .lines()
                .find_map(|l| l.trim().strip_prefix("options "))
                .unwrap_or_default()
                .trim()
                .to_string())
        })
    }

    /// Renames the entry `file` to `name` (blessing it, or marking it bad).
    pub fn rename_entry(&self, file: &str, name: &EntryName) -> io::Result<()> {
        self.with_root(|root| {
            let dir = root.open_dir(relative(ENTRIES_DIR))?;
            dir.rename(file, &dir, &name.to_string())
        })
    }
}

/// A path from the ESP's root as fatfs takes it: without the leading `/`.
fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

fn read_state(root: &FatDir<'_, '_>) -> io::Result<BootState> {
    let mut entries = Vec::new();
    for item in root.open_dir(relative(ENTRIES_DIR))?.iter() {
        let item = item?;
        let file = item.file_name();
        let Ok(name) = file.parse::<EntryName>() else { continue };
        let mut text = String::new();
        item.to_file().read_to_string(&mut text)?;
        entries.push(FoundEntry { file, name, generation: generation_of(&text).unwrap_or(0) });
    }
    Ok(BootState { entries })
}

/// Creates (or truncates) the file at `path`, creating its directories.
fn create_file<'fs, 'dev>(
    root: &FatDir<'fs, 'dev>,
    path: &str,
) -> io::Result<fatfs::File<'fs, &'dev File>> {
    let path = relative(path);
    let mut dir = root.clone();
    let (parents, name) = path.rsplit_once('/').unwrap_or(("", path));
    for part in parents.split('/').filter(|p| !p.is_empty()) {
        dir = match dir.open_dir(part) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => dir.create_dir(part)?,
            Err(e) => return Err(e),
        };
    }
    let mut file = dir.create_file(name)?;
    file.truncate()?;
    Ok(file)
}

fn remove_if_present(root: &FatDir<'_, '_>, path: &str) -> io::Result<()> {
    match root.remove(relative(path)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes an empty FAT32 ESP image of `bytes` at `path` with an entries directory (tests).
#[cfg(test)]
pub fn format_for_tests(path: &Path, bytes: u64) {
    let file =
        OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).unwrap();
    file.set_len(bytes).unwrap();
    fatfs::format_volume(&file, fatfs::FormatVolumeOptions::new().fat_type(fatfs::FatType::Fat32))
        .unwrap();
    let fs = fatfs::FileSystem::new(&file, fatfs::FsOptions::new()).unwrap();
    fs.root_dir().create_dir("loader").unwrap().create_dir("entries").unwrap();
    fs.unmount().unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esp() -> (tempfile::TempDir, Esp) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("esp.img");
        format_for_tests(&path, 40 << 20);
        (dir, Esp::new(path))
    }

    fn write(esp: &Esp, path: &str, text: &str) {
        esp.write_file(path, &mut text.as_bytes(), &mut |_| {}).unwrap();
    }

    #[test]
    fn the_slot_chosen_last_boots_unless_its_tries_ran_out() {
        let (_dir, esp) = esp();
        assert_eq!(esp.boot_state().unwrap().next_boot(), None);
        // As image-builder leaves it: A blessed at generation 1.
        write(
            &esp,
            "/loader/entries/cairn-a.conf",
            &BootEntry::for_slot(Slot::A, "0.1.0", 1, &[]).render(),
        );
        write(&esp, &version_path(Slot::A), "0.1.0\n");
        let state = esp.boot_state().unwrap();
        assert_eq!((state.next_boot(), state.next_generation()), (Some(Slot::A), 2));

        let args = ["console=ttyS0".to_string()];
        assert_eq!(esp.choose_slot(Slot::B, "0.2.0", &args, 3).unwrap(), "cairn-b+3.conf");
        let state = esp.boot_state().unwrap();
        assert_eq!(state.next_boot(), Some(Slot::B));
        let b = state.entry(Slot::B).unwrap();
        assert_eq!((b.generation, b.name.counter.unwrap().left), (2, 3));

        // systemd-boot counted three failed boots: A again.
        esp.rename_entry("cairn-b+3.conf", &"cairn-b+0-3.conf".parse().unwrap()).unwrap();
        assert_eq!(esp.boot_state().unwrap().next_boot(), Some(Slot::A));

        // Chosen again, then blessed: one entry for B, the newest.
        esp.choose_slot(Slot::B, "0.2.0", &args, 3).unwrap();
        esp.rename_entry("cairn-b+3.conf", &EntryName::blessed(Slot::B)).unwrap();
        let state = esp.boot_state().unwrap();
        assert_eq!(state.entries.iter().filter(|e| e.name.slot == Slot::B).count(), 1);
        assert_eq!(state.entry(Slot::B).unwrap().file, "cairn-b.conf");
        assert_eq!((state.next_boot(), state.next_generation()), (Some(Slot::B), 4));
    }

    #[test]
    fn files_and_versions_are_written_and_retired() {
        let (_dir, esp) = esp();
        let mut seen = 0;
        let content = vec![7u8; 600_000];
        let length = esp
            .write_file("/cairn/b/vmlinuz", &mut content.as_slice(), &mut |n| seen += n)
            .unwrap();
        assert_eq!((seen, length), (content.len(), content.len() as u64));
        write(&esp, &version_path(Slot::B), "0.2.0\n");
        assert_eq!(esp.slot_version(Slot::B).unwrap().as_deref(), Some("0.2.0"));
        assert_eq!(esp.slot_version(Slot::A).unwrap(), None);
        esp.choose_slot(Slot::B, "0.2.0", &[], 3).unwrap();
        // Rewriting a file shortens it.
        write(&esp, "/cairn/b/vmlinuz", "short");
        esp.retire_slot(Slot::B).unwrap();
        assert_eq!(esp.slot_version(Slot::B).unwrap(), None);
        assert_eq!(esp.boot_state().unwrap().entry(Slot::B), None);
        esp.with_root(|root| {
            let mut text = String::new();
            root.open_file("cairn/b/vmlinuz")?.read_to_string(&mut text)?;
            assert_eq!(text, "short");
            Ok(())
        })
        .unwrap();
    }
}
