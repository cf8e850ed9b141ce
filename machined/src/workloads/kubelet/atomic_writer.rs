//! Writes the files of a configMap or secret volume so that a running container sees the
//! old set or the new one, never a mix: the files go into a fresh hidden directory, and the
//! `..data` link is swapped to it by one rename. What the container sees at a file's path is
//! a link through `..data` (`index.html -> ..data/index.html`). This is the upstream kubelet's
//! layout, which programs that watch their config for changes already expect.

use std::io;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::objects::ProjectedFile;

/// The link to the current set of files.
const DATA_LINK: &str = "..data";
/// The link made beside it, then renamed over it.
const DATA_LINK_NEW: &str = "..data_tmp";

/// Writes `files` into `dir`, replacing what an earlier call wrote; `fs_group` (the pod's)
/// owns them and may read them. Returns whether anything changed.
pub fn write(dir: &Path, files: &[ProjectedFile], fs_group: Option<u32>) -> io::Result<bool> {
    // Only a link to one of our hidden directories counts: anything else at `..data` (the
    // volume is mounted read-only, but the kubelet trusts nothing it did not make) is not
    // followed, and no link leads a removal out of the volume.
    let current = std::fs::read_link(dir.join(DATA_LINK))
        .ok()
        .filter(|target| is_hidden_dir_name(target))
        .map(|name| dir.join(name));
    if let Some(current) = &current {
        if holds(current, files, fs_group) {
            return Ok(false);
        }
    }
    let fresh = fresh_dir(dir)?;
    for file in files {
        let path = fresh.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &file.data)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode(file, fs_group)))?;
        if let Some(group) = fs_group {
            std::os::unix::fs::lchown(&path, None, Some(group))?;
        }
    }
    let new_link = dir.join(DATA_LINK_NEW);
    let _ = std::fs::remove_file(&new_link);
    symlink(fresh.file_name().expect("a fresh dir has a name"), &new_link)?;
    std::fs::rename(&new_link, dir.join(DATA_LINK))?;
    // The visible names: one link per top-level entry, and none for entries that went.
    let wanted: std::collections::BTreeSet<&str> =
        files.iter().filter_map(|f| f.path.split('/').next()).collect();
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_LINK).join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") || wanted.contains(name.as_str()) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_symlink()) {
            std::fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = current {
        std::fs::remove_dir_all(old)?;
    }
    Ok(true)
}

/// Whether `target` is the bare name of one of the writer's hidden directories (`..NNN.NNN.N`).
fn is_hidden_dir_name(target: &Path) -> bool {
    let name = target.to_string_lossy();
    let stamp = name.strip_prefix("..").unwrap_or_default();
    !stamp.is_empty() && stamp.chars().all(|ch| ch.is_ascii_digit() || ch == '.')
}

/// A file's mode: its own, readable by the pod's `fs_group` when there is one.
fn mode(file: &ProjectedFile, fs_group: Option<u32>) -> u32 {
    match fs_group {
        Some(_) => file.mode | 0o040,
        None => file.mode,
    }
}

/// Whether `dir` holds exactly `files`, with their modes.
fn holds(dir: &Path, files: &[ProjectedFile], fs_group: Option<u32>) -> bool {
    let mut found = Vec::new();
    if list(dir, dir, &mut found).is_err() || found.len() != files.len() {
        return false;
    }
    files.iter().all(|file| {
        let path = dir.join(&file.path);
        let same_mode = std::fs::metadata(&path)
            .is_ok_and(|meta| meta.permissions().mode() & 0o7777 == mode(file, fs_group));
        same_mode && std::fs::read(&path).is_ok_and(|data| data == file.data)
    })
}

/// The files under `dir`, recursively, into `found`.
fn list(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            list(root, &entry.path(), found)?;
        } else {
            found.push(entry.path().strip_prefix(root).unwrap_or(&entry.path()).to_path_buf());
        }
    }
    Ok(())
}

/// A new hidden directory in `dir`, named by the time (as upstream's `..2024_01_31_...`).
fn fresh_dir(dir: &Path) -> io::Result<PathBuf> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    for attempt in 0u32.. {
        let path = dir.join(format!("..{}.{:09}.{attempt}", now.as_secs(), now.subsec_nanos()));
        match std::fs::create_dir(&path) {
            Ok(()) => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("some attempt number is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &str, mode: u32) -> ProjectedFile {
        ProjectedFile { path: path.into(), data: data.as_bytes().to_vec(), mode }
    }

    #[test]
    fn files_are_swapped_in_as_one_set() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let first = [file("index.html", "v1", 0o644), file("conf/a.conf", "a", 0o400)];
        assert!(write(dir, &first, None).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("index.html")).unwrap(), "v1");
        assert_eq!(std::fs::read_to_string(dir.join("conf/a.conf")).unwrap(), "a");
        assert_eq!(
            std::fs::read_link(dir.join("index.html")).unwrap(),
            Path::new("..data/index.html")
        );
        let mode = std::fs::metadata(dir.join("conf/a.conf")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o400);
        let before = std::fs::read_link(dir.join(DATA_LINK)).unwrap();

        // The same files: nothing is written.
        assert!(!write(dir, &first, None).unwrap());
        assert_eq!(std::fs::read_link(dir.join(DATA_LINK)).unwrap(), before);

        // A new set: one swap, the key that went loses its link, the old dir goes.
        assert!(write(dir, &[file("index.html", "v2", 0o644)], None).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("index.html")).unwrap(), "v2");
        assert!(std::fs::symlink_metadata(dir.join("conf")).is_err());
        assert!(!dir.join(&before).exists());
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("..2") && !n.starts_with("..1"))
            .collect();
        names.sort();
        assert_eq!(names, ["..data", "index.html"]);
    }

    #[test]
    fn a_data_link_the_writer_did_not_make_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "").unwrap();
        symlink(outside.path(), dir.path().join(DATA_LINK)).unwrap();
        assert!(write(dir.path(), &[file("a", "b", 0o644)], None).unwrap());
        assert!(outside.path().join("keep").exists(), "nothing outside the volume is removed");
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "b");
        for (target, ours) in
            [("..1796.000000001.0", true), ("../..", false), ("..", false), ("..data", false)]
        {
            assert_eq!(is_hidden_dir_name(Path::new(target)), ours, "{target}");
        }
    }

    #[test]
    fn an_fs_group_may_read_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let group = nix::unistd::getgid().as_raw();
        write(dir.path(), &[file("key", "k", 0o400)], Some(group)).unwrap();
        let meta = std::fs::metadata(dir.path().join("key")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o440);
        // Unchanged when asked again with the same group.
        assert!(!write(dir.path(), &[file("key", "k", 0o400)], Some(group)).unwrap());
    }
}
