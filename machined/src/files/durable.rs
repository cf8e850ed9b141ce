//! Writes that survive a power cut whole: temp file, fsync, rename, fsync the directory, so
//! a reader finds the old content or the new, never a torn file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Replaces `path` with `bytes`, mode `mode`, atomically; creates its directory if needed.
/// The temp file has a random name and is created exclusively (`O_EXCL`, which also refuses
/// a symbolic link planted at its name), so nothing in the directory can redirect the write.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent(path)?;
    fs::create_dir_all(dir)?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".");
    let mut temp = tempfile::Builder::new().prefix(&prefix).suffix(".tmp").tempfile_in(dir)?;
    // Created 0600; the umask plays no part in set_permissions.
    temp.as_file().set_permissions(fs::Permissions::from_mode(mode))?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Makes a rename or removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> io::Result<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty()).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{} has no directory", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_symlink_does_not_redirect_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        let var = dir.path().join("var");
        fs::create_dir_all(&var).unwrap();
        let path = var.join("app.conf");
        // The temp name a predictable writer would use, pointing outside /var.
        std::os::unix::fs::symlink(&outside, var.join("app.conf.tmp")).unwrap();
        write_atomically(&path, b"new", 0o640).unwrap();
        assert!(!outside.exists(), "the write followed the planted link");
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        let mut names: Vec<_> =
            fs::read_dir(&var).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["app.conf", "app.conf.tmp"], "no temp file is left behind");
        write_atomically(&path, b"newer", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"newer");
    }
}
