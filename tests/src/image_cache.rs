//! Images and bundles built once per set of inputs and shared by every test binary: a cache
//! under the target dir, one generation per state of the sources that go into an image,
//! one entry per set of build inputs, each written to a temporary directory and renamed
//! into place, so binaries that race for the same entry never see half of one.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::Context as _;
use sha2::{Digest, Sha256};

use crate::boards::Board;

/// What image-builder is asked to build.
#[derive(Debug, Clone, Copy)]
pub struct ImageRequest<'a> {
    /// The board.
    pub board: &'a Board,
    /// The bootstrap token file to bake in.
    pub bootstrap_token: Option<&'a Path>,
    /// The key the update bundle is signed with.
    pub signing_key: Option<&'a Path>,
    /// image-builder's further arguments (`--version`, `--extra-kernel-args`).
    pub extra_args: &'a [&'a str],
}

impl ImageRequest<'_> {
    /// The entry's name: a hash of everything about the request that reaches the outputs
    /// (the files' contents, not their paths).
    pub fn key(&self) -> io::Result<String> {
        let mut hash = Sha256::new();
        field(&mut hash, self.board.name.as_bytes());
        field(&mut hash, crate::SOURCE_DATE_EPOCH.as_bytes());
        for file in [self.bootstrap_token, self.signing_key] {
            match file {
                Some(path) => field(&mut hash, &std::fs::read(path)?),
                None => field(&mut hash, b"none"),
            }
        }
        for arg in self.extra_args {
            field(&mut hash, arg.as_bytes());
        }
        Ok(short_hex(hash))
    }
}

/// One generation of the cache: the entries built from the same sources.
#[derive(Debug)]
pub struct ImageCache {
    dir: PathBuf,
}

impl ImageCache {
    /// The generation `generation` under `root`; the other generations (built from sources
    /// that are no more) are removed.
    pub fn open(root: &Path, generation: &str) -> io::Result<ImageCache> {
        let dir = root.join(generation);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            if entry.file_name() != generation {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(ImageCache { dir })
    }

    /// The entry `key`, made by `build` (into the directory it is given) unless it exists.
    pub fn get_or_build(
        &self,
        key: &str,
        build: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<PathBuf> {
        let entry = self.dir.join(key);
        if entry.is_dir() {
            return Ok(entry);
        }
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let building = self.dir.join(format!(".{key}.{}.{unique}", std::process::id()));
        let built = build(&building);
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&building);
            return Err(e);
        }
        if let Err(e) = std::fs::rename(&building, &entry) {
            // Another binary renamed the same entry into place first: keep theirs.
            std::fs::remove_dir_all(&building)?;
            if !entry.is_dir() {
                return Err(e).with_context(|| format!("renaming {}", building.display()));
            }
        }
        Ok(entry)
    }
}

/// The generation of `workspace`'s image sources: a hash of every file under it but the
/// `tests/` crate, hidden files, Markdown (documentation: a README's edit must not cost an
/// image build) and `excluded` (the target dirs), of image-builder's executable and of the
/// compiler (`compiler` is `rustc -vV`'s answer).
pub fn generation(
    workspace: &Path,
    excluded: &[&Path],
    image_builder: &Path,
    compiler: &[u8],
) -> io::Result<String> {
    let mut files = Vec::new();
    source_files(workspace, workspace, excluded, &mut files)?;
    files.sort();
    let mut hash = Sha256::new();
    for file in files {
        field(&mut hash, file.to_string_lossy().as_bytes());
        field(&mut hash, &std::fs::read(workspace.join(&file))?);
    }
    field(&mut hash, &std::fs::read(image_builder)?);
    field(&mut hash, compiler);
    Ok(short_hex(hash))
}

/// The files under `dir`, relative to `workspace`, that go into an image.
fn source_files(
    workspace: &Path,
    dir: &Path,
    excluded: &[&Path],
    files: &mut Vec<PathBuf>,
) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let relative = path.strip_prefix(workspace).unwrap_or(&path).to_path_buf();
        let skipped = name.to_string_lossy().starts_with('.')
            || path.extension().is_some_and(|e| e == "md")
            || name == "target"
            || relative == Path::new("tests")
            || excluded.iter().any(|e| path.starts_with(e));
        let kind = entry.file_type()?;
        if skipped {
            continue;
        } else if kind.is_dir() {
            source_files(workspace, &path, excluded, files)?;
        } else if kind.is_file() {
            files.push(relative);
        }
    }
    Ok(())
}

/// Adds one length-prefixed field, so that fields cannot run into each other.
fn field(hash: &mut Sha256, bytes: &[u8]) {
    hash.update((bytes.len() as u64).to_le_bytes());
    hash.update(bytes);
}

fn short_hex(hash: Sha256) -> String {
    cairn_api::bundle::hex(&hash.finalize()[..16])
}

/// The build of `request`'s outputs (its directory), from this workspace's cache under the
/// target dir, built by image-builder now if no test binary built it before.
pub fn cached_build(request: &ImageRequest) -> anyhow::Result<PathBuf> {
    let key = request.key().context("reading the image's inputs")?;
    cached(&key, |output| {
        crate::build_image(
            request.board,
            output,
            request.bootstrap_token,
            request.signing_key,
            request.extra_args,
        );
        Ok(())
    })
}

/// The entry `key` of this workspace's cache under the target dir, made by `make` (into the
/// directory it is given) if no test binary made it before: builds, and inputs to them that
/// must stay the same from one run to the next (a signing key).
pub fn cached(
    key: &str,
    make: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    static CACHE: OnceLock<Result<ImageCache, String>> = OnceLock::new();
    // One entry made at a time in a binary: a second request for an entry waits for the first.
    static MAKING: Mutex<()> = Mutex::new(());
    let cache = CACHE
        .get_or_init(|| workspace_cache().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("the image cache: {e}"))?;
    let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    cache.get_or_build(key, make)
}

/// The cache of this workspace's current sources, under the target dir.
fn workspace_cache() -> anyhow::Result<ImageCache> {
    let target = crate::bin_dir().parent().context("the target dir")?;
    let workspace = crate::workspace();
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let compiler = Command::new(&rustc).arg("-vV").output().context("running rustc -vV")?;
    let generation =
        generation(workspace, &[target], &crate::bin_dir().join("image-builder"), &compiler.stdout)
            .context("hashing the image's sources")?;
    Ok(ImageCache::open(&target.join("cairn-images"), &generation)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boards::GENERIC_X86_64;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_key_follows_every_input() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        write(&token, "one");
        let base = ImageRequest {
            board: &GENERIC_X86_64,
            bootstrap_token: Some(&token),
            signing_key: None,
            extra_args: &["--version", "0.2.0"],
        };
        let key = base.key().unwrap();
        assert_eq!(key, base.key().unwrap());
        let other_version = ImageRequest { extra_args: &["--version", "0.3.0"], ..base };
        assert_ne!(key, other_version.key().unwrap());
        let no_token = ImageRequest { bootstrap_token: None, ..base };
        assert_ne!(key, no_token.key().unwrap());
        let keyed = ImageRequest { signing_key: Some(&token), ..base };
        assert_ne!(key, keyed.key().unwrap());
        let joined = ImageRequest { extra_args: &["--version0.2.0"], ..base };
        assert_ne!(key, joined.key().unwrap());
        write(&token, "two");
        assert_ne!(key, base.key().unwrap(), "the token's contents, not its path");
    }

    #[test]
    fn the_generation_follows_image_sources_only() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        let target = dir.path().join("ws/build-output");
        write(&ws.join("machined/src/lib.rs"), "fn a() {}");
        write(&ws.join("Cargo.lock"), "lock");
        let builder = dir.path().join("image-builder");
        write(&builder, "binary");
        let generation = || generation(&ws, &[&target], &builder, b"rustc 1.95").unwrap();
        let first = generation();
        write(&ws.join("tests/tests/boot.rs"), "a test");
        write(&ws.join("target/debug/x"), "output");
        write(&target.join("x"), "output");
        write(&ws.join(".git/HEAD"), "ref");
        write(&ws.join("README.md"), "docs");
        write(&ws.join("overlays/README.md"), "docs");
        assert_eq!(
            generation(),
            first,
            "tests, outputs, hidden files and documentation are not image sources"
        );
        write(&ws.join("machined/src/lib.rs"), "fn b() {}");
        let changed = generation();
        assert_ne!(changed, first, "a source changed");
        write(&builder, "another binary");
        assert_ne!(generation(), changed, "image-builder changed");
        let compiler = super::generation(&ws, &[&target], &builder, b"rustc 1.96").unwrap();
        assert_ne!(compiler, generation(), "the compiler changed");
    }

    #[test]
    fn an_entry_is_built_once_and_a_failed_build_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::open(dir.path(), "g1").unwrap();
        let mut builds = 0;
        let mut build = |output: &Path| {
            builds += 1;
            write(&output.join("report.toml"), "built");
            Ok(())
        };
        let entry = cache.get_or_build("k", &mut build).unwrap();
        assert_eq!(cache.get_or_build("k", &mut build).unwrap(), entry);
        assert_eq!(builds, 1);
        assert_eq!(std::fs::read_to_string(entry.join("report.toml")).unwrap(), "built");
        let failed = cache.get_or_build("bad", |output| {
            write(&output.join("half"), "half");
            anyhow::bail!("image-builder failed")
        });
        assert!(failed.is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("g1")).unwrap().collect();
        assert_eq!(left.len(), 1, "only the good entry: {left:?}");
    }

    #[test]
    fn a_racer_that_finishes_second_keeps_the_first_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::open(dir.path(), "g1").unwrap();
        let entry = cache
            .get_or_build("k", |output| {
                // Another binary renames its build of the same entry into place meanwhile.
                write(&dir.path().join("g1/k/report.toml"), "theirs");
                write(&output.join("report.toml"), "ours");
                Ok(())
            })
            .unwrap();
        assert_eq!(std::fs::read_to_string(entry.join("report.toml")).unwrap(), "theirs");
        assert_eq!(std::fs::read_dir(dir.path().join("g1")).unwrap().count(), 1);
    }

    #[test]
    fn opening_a_generation_removes_the_others() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("old/k/report.toml"), "stale");
        let cache = ImageCache::open(dir.path(), "new").unwrap();
        assert!(!dir.path().join("old").exists());
        assert!(cache.dir.is_dir());
    }
}
