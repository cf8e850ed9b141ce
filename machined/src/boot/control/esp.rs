//! The ESP's FAT filesystem as boot control changes it: a small trait ([`EspFiles`]) with
//! the real implementation on the block device ([`FatEsp`]) and one in memory for tests.
//!
//! [`FatEsp`] reads and writes the filesystem in place through the `fatfs` crate, on the
//! block device (or, in tests, an image file): no kernel mount, so nothing else can hold it
//! open, and every call mounts, works, unmounts and syncs the device before it returns.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;

/// One change to the ESP's files, made in order by [`EspFiles::apply`]. Paths are from the
/// ESP's root (`/loader/entries/cairn-a.conf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Writes (creates or replaces) the file at `path` with `text`, creating its directories.
    Write {
        /// The file.
        path: String,
        /// Its whole content.
        text: String,
    },
    /// Removes the file at this path, if it is there.
    Remove(String),
    /// Renames the file `from` to `to`, both in the directory `dir`: on FAT, one directory
    /// entry rewritten, the step a bootloader sees whole.
    Rename {
        /// The directory.
        dir: String,
        /// The file's name.
        from: String,
        /// Its new name.
        to: String,
    },
}

/// The ESP's files.
pub trait EspFiles: Send + Sync {
    /// The names and texts of the files in `dir` whose name `wanted` accepts.
    fn read_dir(
        &self,
        dir: &str,
        wanted: &dyn Fn(&str) -> bool,
    ) -> io::Result<Vec<(String, String)>>;
    /// The bytes of the file at `path`, if there is one.
    fn read_bytes(&self, path: &str) -> io::Result<Option<Vec<u8>>>;
    /// The text of the file at `path`, if there is one.
    fn read_file(&self, path: &str) -> io::Result<Option<String>> {
        let bytes = self.read_bytes(path)?;
        bytes
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("{path} is not UTF-8 text"))
                })
            })
            .transpose()
    }
    /// Writes the file at `path` with what `content` yields, creating its directories;
    /// `written` is told of each piece's length. Returns the bytes written.
    fn write_file(
        &self,
        path: &str,
        content: &mut dyn Read,
        written: &mut dyn FnMut(usize),
    ) -> io::Result<u64>;
    /// Makes `changes`, in order, and syncs them to the device.
    fn apply(&self, changes: &[Change]) -> io::Result<()>;
}

/// A directory of the filesystem mounted from a borrowed device.
type FatDir<'fs, 'dev> = fatfs::Dir<'fs, &'dev File>;

/// The ESP's FAT filesystem on its device.
pub struct FatEsp {
    device: PathBuf,
}

impl FatEsp {
    /// The ESP on `device`.
    pub fn new(device: impl Into<PathBuf>) -> FatEsp {
        FatEsp { device: device.into() }
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
}

impl EspFiles for FatEsp {
    fn read_dir(
        &self,
        dir: &str,
        wanted: &dyn Fn(&str) -> bool,
    ) -> io::Result<Vec<(String, String)>> {
        self.with_root(|root| {
            let mut files = Vec::new();
            for item in root.open_dir(relative(dir))?.iter() {
                let item = item?;
                let name = item.file_name();
                if !item.is_file() || !wanted(&name) {
                    continue;
                }
                let mut text = String::new();
                item.to_file().read_to_string(&mut text)?;
                files.push((name, text));
            }
            Ok(files)
        })
    }

    fn read_bytes(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        self.with_root(|root| match root.open_file(relative(path)) {
            Ok(mut file) => {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)?;
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
    }

    fn write_file(
        &self,
        path: &str,
        content: &mut dyn Read,
        written: &mut dyn FnMut(usize),
    ) -> io::Result<u64> {
        self.with_root(|root| {
            let mut file = create_file(root, path)?;
            let length = crate::update::copy(content, &mut file, written)?;
            file.flush()?;
            Ok(length)
        })
    }

    fn apply(&self, changes: &[Change]) -> io::Result<()> {
        self.with_root(|root| {
            for change in changes {
                match change {
                    Change::Write { path, text } => {
                        let mut file = create_file(root, path)?;
                        file.write_all(text.as_bytes())?;
                        file.flush()?;
                    }
                    Change::Remove(path) => match root.remove(relative(path)) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    },
                    Change::Rename { dir, from, to } => {
                        let dir = root.open_dir(relative(dir))?;
                        dir.rename(from, &dir, to)?;
                    }
                }
            }
            Ok(())
        })
    }
}

/// A path from the ESP's root as fatfs takes it: without the leading `/`.
fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
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

/// An ESP in memory: its files by path (tests).
#[cfg(test)]
#[derive(Default)]
pub struct MemoryEsp {
    /// The files, by path from the ESP's root.
    pub files: std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
}

#[cfg(test)]
impl MemoryEsp {
    /// The text of the file at `path`.
    pub fn text(&self, path: &str) -> Option<String> {
        let files = self.files.lock().unwrap();
        files.get(path).map(|bytes| String::from_utf8(bytes.clone()).unwrap())
    }

    /// The paths of the files.
    pub fn paths(&self) -> Vec<String> {
        self.files.lock().unwrap().keys().cloned().collect()
    }
}

#[cfg(test)]
impl EspFiles for MemoryEsp {
    fn read_dir(
        &self,
        dir: &str,
        wanted: &dyn Fn(&str) -> bool,
    ) -> io::Result<Vec<(String, String)>> {
        let prefix = format!("{dir}/");
        let files = self.files.lock().unwrap();
        Ok(files
            .iter()
            .filter_map(|(path, bytes)| {
                let name = path.strip_prefix(&prefix).filter(|n| !n.contains('/'))?;
                wanted(name).then(|| (name.to_string(), String::from_utf8_lossy(bytes).into()))
            })
            .collect())
    }

    fn read_bytes(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.files.lock().unwrap().get(path).cloned())
    }

    fn write_file(
        &self,
        path: &str,
        content: &mut dyn Read,
        written: &mut dyn FnMut(usize),
    ) -> io::Result<u64> {
        let mut bytes = Vec::new();
        let length = crate::update::copy(content, &mut bytes, written)?;
        self.files.lock().unwrap().insert(path.to_string(), bytes);
        Ok(length)
    }

    fn apply(&self, changes: &[Change]) -> io::Result<()> {
        let mut files = self.files.lock().unwrap();
        for change in changes {
            match change {
                Change::Write { path, text } => {
                    files.insert(path.clone(), text.clone().into_bytes());
                }
                Change::Remove(path) => {
                    files.remove(path);
                }
                Change::Rename { dir, from, to } => {
                    let bytes = files.remove(&format!("{dir}/{from}")).ok_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, format!("{dir}/{from}"))
                    })?;
                    files.insert(format!("{dir}/{to}"), bytes);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The FAT implementation does what the memory one does, on a real filesystem.
    #[test]
    fn the_fat_filesystem_reads_writes_renames_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("esp.img");
        format_for_tests(&path, 40 << 20);
        let esp = FatEsp::new(&path);
        let mut seen = 0;
        let content = vec![7u8; 600_000];
        let length = esp
            .write_file("/cairn/b/vmlinuz", &mut content.as_slice(), &mut |n| seen += n)
            .unwrap();
        assert_eq!((seen, length), (content.len(), content.len() as u64));
        esp.apply(&[
            Change::Write { path: "/cairn/b/version".into(), text: "0.2.0\n".into() },
            Change::Write { path: "/loader/entries/b.new".into(), text: "title B\n".into() },
            Change::Rename {
                dir: "/loader/entries".into(),
                from: "b.new".into(),
                to: "cairn-b+3.conf".into(),
            },
            Change::Remove("/loader/entries/absent.conf".into()),
        ])
        .unwrap();
        assert_eq!(esp.read_file("/cairn/b/version").unwrap().as_deref(), Some("0.2.0\n"));
        assert_eq!(esp.read_file("/cairn/a/version").unwrap(), None);
        assert_eq!(esp.read_bytes("/cairn/b/vmlinuz").unwrap(), Some(content.clone()));
        esp.write_file("/cairn/env.0", &mut &[0xff, 0][..], &mut |_| {}).unwrap();
        assert_eq!(esp.read_bytes("/cairn/env.0").unwrap(), Some(vec![0xff, 0]));
        let error = esp.read_file("/cairn/env.0").unwrap_err().to_string();
        assert!(error.ends_with("/cairn/env.0 is not UTF-8 text"), "{error}");
        let entries = esp.read_dir("/loader/entries", &|n| n.ends_with(".conf")).unwrap();
        assert_eq!(entries, [("cairn-b+3.conf".to_string(), "title B\n".to_string())]);
        // Rewriting a file shortens it; removing it removes it.
        esp.write_file("/cairn/b/vmlinuz", &mut &b"short"[..], &mut |_| {}).unwrap();
        assert_eq!(esp.read_file("/cairn/b/vmlinuz").unwrap().as_deref(), Some("short"));
        esp.apply(&[Change::Remove("/cairn/b/version".into())]).unwrap();
        assert_eq!(esp.read_file("/cairn/b/version").unwrap(), None);
    }
}
