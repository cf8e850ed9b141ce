//! The lock file's rules against an archive of the test's own (a signed `file:` archive built
//! here with dpkg-deb and gpg, so it runs offline and quickly): a default build keeps what it
//! can still get and moves only what the archive dropped; `--locked` refuses any move and
//! downloads nothing; a cached `.deb` whose SHA-256 matches the lock stands in for the archive.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_api::arch::Arch;
use cairn_api::board::Board;
use image_builder::apt::{sha256_file, AptState};
use image_builder::lockfile::Lock;
use image_builder::packages::{self, LockMode, PackagesError, Resolved};
use image_builder::profile::Profile;

const SUITE: &str = "trixie";

/// A Debian archive in a directory, signed with a key made for it.
struct TestArchive {
    root: PathBuf,
    gnupg: PathBuf,
    keyring: PathBuf,
}

/// One package: name, version, `Depends:`.
type Package<'a> = (&'a str, &'a str, &'a str);

impl TestArchive {
    fn new(dir: &Path) -> TestArchive {
        let archive = TestArchive {
            root: dir.join("archive"),
            gnupg: dir.join("gnupg"),
            keyring: dir.join("keyring.gpg"),
        };
        fs::create_dir_all(&archive.gnupg).unwrap();
        archive.gpg(&["--quick-gen-key", "Cairn test archive", "ed25519", "sign", "never"]);
        let exported = archive.gpg(&["--export"]);
        fs::write(&archive.keyring, exported).unwrap();
        archive
    }

    fn gpg(&self, args: &[&str]) -> Vec<u8> {
        let output = Command::new("gpg")
            .env("GNUPGHOME", &self.gnupg)
            .args(["--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .expect("running gpg");
        assert!(
            output.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// Publishes exactly `packages` (amd64), replacing what the archive served before; the
    /// pool keeps every `.deb` ever built, as a mirror's does for a while.
    fn publish(&self, packages: &[Package]) {
        let pool = self.root.join("pool");
        let dists = self.root.join("dists").join(SUITE);
        fs::create_dir_all(&pool).unwrap();
        let mut index = String::new();
        for &(name, version, depends) in packages {
            let file = format!("{name}_{version}_amd64.deb");
            let deb = pool.join(&file);
            if !deb.exists() {
                build_deb(&deb, name, version, depends);
            }
            index += &format!(
                "Package: {name}\nVersion: {version}\nArchitecture: amd64\nDepends: {depends}\n\
                 Filename: pool/{file}\nSize: {}\nSHA256: {}\nDescription: test\n\n",
                fs::metadata(&deb).unwrap().len(),
                sha256_file(&deb).unwrap()
            );
        }
        let mut release = format!(
            "Suite: {SUITE}\nCodename: {SUITE}\nDate: Mon, 23 Nov 2026 00:00:00 UTC\n\
             Architectures: amd64\nComponents: main non-free-firmware\nSHA256:\n"
        );
        for (component, text) in [("main", index.as_str()), ("non-free-firmware", "")] {
            let relative = format!("{component}/binary-amd64/Packages");
            let path = dists.join(&relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
            release += &format!(" {} {} {relative}\n", sha256_file(&path).unwrap(), text.len());
        }
        fs::write(dists.join("Release"), release).unwrap();
        let signed =
            self.gpg(&["--clearsign", "--output", "-", dists.join("Release").to_str().unwrap()]);
        fs::write(dists.join("InRelease"), signed).unwrap();
    }

    /// An apt state reading this archive, with fresh indexes.
    fn apt(&self, cache: &Path) -> AptState {
        let mirror = format!("file:{}", self.root.display());
        let apt = AptState::new(cache, &mirror, &self.keyring, SUITE, Arch::X86_64).unwrap();
        apt.update().unwrap();
        apt
    }
}

fn build_deb(path: &Path, name: &str, version: &str, depends: &str) {
    let tree = tempfile::tempdir().unwrap();
    let debian = tree.path().join("DEBIAN");
    fs::create_dir_all(&debian).unwrap();
    fs::write(
        debian.join("control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\nDepends: {depends}\n\
             Maintainer: Cairn <cairn@example.invalid>\nDescription: test package\n"
        ),
    )
    .unwrap();
    fs::create_dir_all(tree.path().join("usr/share/doc").join(name)).unwrap();
    fs::write(tree.path().join("usr/share/doc").join(name).join("version"), version).unwrap();
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(tree.path())
        .arg(path)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running dpkg-deb");
    assert!(status.success());
}

fn board() -> Board {
    let overlays = Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays");
    Board {
        name: "test".into(),
        kernel: "linux-image-test".into(),
        packages: vec![],
        ..Board::load(&overlays, "generic-x86_64").unwrap()
    }
}

fn profile() -> Profile {
    Profile {
        suite: SUITE.into(),
        packages: vec!["tool".into()],
        files: vec![],
        images: vec![],
        links: Default::default(),
    }
}

const KERNEL: [Package; 2] =
    [("linux-image-test", "1", "linux-image-1-test (= 1)"), ("linux-image-1-test", "1", "libc6")];

fn fetch(
    apt: &AptState,
    lock: Option<&Lock>,
    mode: LockMode,
    debs: &Path,
) -> Result<Resolved, PackagesError> {
    packages::fetch(apt, &board(), &profile(), lock, mode, debs)
}

fn versions(resolved: &Resolved) -> Vec<(String, String)> {
    std::iter::once(&resolved.set.kernel)
        .chain(&resolved.set.packages)
        .map(|f| (f.record.name.clone(), f.record.version.clone()))
        .collect()
}

fn pair(name: &str, version: &str) -> (String, String) {
    (name.to_string(), version.to_string())
}

#[test]
fn a_dropped_version_moves_by_default_and_is_refused_when_locked() {
    let dir = tempfile::tempdir().unwrap();
    let archive = TestArchive::new(dir.path());
    archive.publish(&[KERNEL[0], KERNEL[1], ("tool", "1", "libc6")]);
    let apt = archive.apt(&dir.path().join("apt"));

    // No lock yet: everything is new, and --locked will not invent one.
    let refused = fetch(&apt, None, LockMode::Locked, &dir.path().join("debs-0")).unwrap_err();
    assert!(matches!(&refused, PackagesError::LockOutdated(c) if c.len() == 3), "{refused}");
    let first = fetch(&apt, None, LockMode::Follow, &dir.path().join("debs-1")).unwrap();
    assert_eq!(first.changes.len(), 3);
    let lock = first.lock;
    assert_eq!(lock.find("tool", "amd64").unwrap().version, "1");

    // The archive moves on: tool 1 is gone, tool 2 is served; the kernel stays.
    archive.publish(&[KERNEL[0], KERNEL[1], ("tool", "2", "libc6")]);
    let apt = archive.apt(&dir.path().join("apt"));

    let empty_cache = dir.path().join("debs-2");
    let refused = fetch(&apt, Some(&lock), LockMode::Locked, &empty_cache).unwrap_err();
    let message = refused.to_string();
    assert!(matches!(&refused, PackagesError::LockOutdated(c) if c.len() == 1), "{message}");
    assert!(message.contains("tool (amd64): 1 → 2"), "{message}");
    assert!(message.contains("--update-lock"), "{message}");
    assert!(!empty_cache.exists(), "--locked downloaded something");

    let moved = fetch(&apt, Some(&lock), LockMode::Follow, &empty_cache).unwrap();
    let changes: Vec<String> = moved.changes.iter().map(ToString::to_string).collect();
    assert_eq!(changes, ["tool (amd64): 1 → 2"], "only the dropped entry moves");
    assert_eq!(
        versions(&moved),
        [pair("linux-image-1-test", "1"), pair("tool", "2")],
        "the build uses the kept kernel and the moved tool"
    );
    assert_eq!(moved.lock.find("tool", "amd64").unwrap().version, "2");
    assert_eq!(
        moved.lock.find("linux-image-test", "amd64"),
        lock.find("linux-image-test", "amd64"),
        "entries the archive still serves are kept"
    );

    // --update-lock takes the archive's versions whatever the lock says.
    let updated = fetch(&apt, Some(&lock), LockMode::Update, &empty_cache).unwrap();
    assert_eq!(versions(&updated), versions(&moved));
}

#[test]
fn a_cached_deb_that_matches_the_lock_stands_in_for_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let archive = TestArchive::new(dir.path());
    archive.publish(&[KERNEL[0], KERNEL[1], ("tool", "1", "libc6")]);
    let debs = dir.path().join("debs");
    let first =
        fetch(&archive.apt(&dir.path().join("apt")), None, LockMode::Follow, &debs).unwrap();
    let lock = first.lock;

    archive.publish(&[KERNEL[0], KERNEL[1], ("tool", "2", "libc6")]);
    let apt = archive.apt(&dir.path().join("apt"));
    for mode in [LockMode::Locked, LockMode::Follow] {
        let resolved = fetch(&apt, Some(&lock), mode, &debs).unwrap();
        assert!(resolved.changes.is_empty(), "{mode:?}: {:?}", resolved.changes);
        assert_eq!(versions(&resolved)[1], pair("tool", "1"));
        assert_eq!(resolved.set.packages[0].deb, debs.join("tool_1_amd64.deb"));
        assert_eq!(resolved.lock, lock);
    }

    // A cached file that does not hash to the lock's SHA-256 is not the locked package.
    fs::write(debs.join("tool_1_amd64.deb"), b"not the package").unwrap();
    let refused = fetch(&apt, Some(&lock), LockMode::Locked, &debs).unwrap_err();
    assert!(matches!(refused, PackagesError::LockOutdated(_)), "{refused}");
    let moved = fetch(&apt, Some(&lock), LockMode::Follow, &debs).unwrap();
    assert_eq!(versions(&moved)[1], pair("tool", "2"));
}
