//! Packages from the real Debian archive (through the host's mirror) with an isolated apt
//! state: fetched, verified, unpacked, locked, and refused when the lock disagrees. The
//! host's dpkg state must not change.

use std::path::Path;

use cairn_api::arch::Arch;
use cairn_api::board::Board;
use image_builder::apt::{sha256_file, AptError, AptState, DEBIAN_KEYRING};
use image_builder::deb::unpack_into;
use image_builder::lockfile::Lock;
use image_builder::packages::{self, LockMode, PackagesError};
use image_builder::profile::Profile;
use image_builder::tree::{FileTree, Node};

const DPKG_STATUS: &str = "/var/lib/dpkg/status";

#[test]
fn isolated_apt_fetches_verifies_unpacks_and_honours_the_lock() {
    let host_status = std::fs::read(DPKG_STATUS).ok();
    let cache = tempfile::tempdir().unwrap();
    let mirror = AptState::host_mirror().expect("the host has a Debian mirror");
    let keyring = Path::new(DEBIAN_KEYRING);
    let apt =
        AptState::new(&cache.path().join("apt"), &mirror, keyring, "trixie", Arch::X86_64).unwrap();
    apt.update().unwrap();

    let record = apt.show("hello", None).unwrap();
    assert_eq!(record.arch, "amd64");
    let deb = apt.download(&record, &cache.path().join("debs")).unwrap();
    assert_eq!(sha256_file(&deb).unwrap(), record.sha256);
    let mut tree = FileTree::new();
    unpack_into(&deb, &mut tree, |p| p == Path::new("/usr/bin/hello")).unwrap();
    assert!(
        matches!(tree.get("/usr/bin/hello"), Some(Node::File { mode: 0o755, data }) if data.starts_with(b"\x7fELF"))
    );

    assert!(matches!(apt.show("no-such-package-cairn", None), Err(AptError::NotFound(_))));

    // A lock that disagrees with the archive stops the build before anything is fetched.
    let overlays = Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays");
    let board = Board {
        name: "test".into(),
        packages: vec![],
        ..Board::load(&overlays, "generic-x86_64").unwrap()
    };
    let profile = Profile {
        suite: "trixie".into(),
        packages: vec!["hello".into()],
        files: vec![],
        images: vec![],
        links: Default::default(),
    };
    let meta = apt.show("linux-image-amd64", None).unwrap();
    let mut lock = Lock::new("trixie");
    lock.record(&meta, "amd64");
    lock.packages[0].sha256 = "0".repeat(64);
    let debs = cache.path().join("locked-debs");
    let refused = packages::fetch(&apt, &board, &profile, Some(&lock), LockMode::Follow, &debs);
    assert!(matches!(refused, Err(PackagesError::LockMismatch { .. })), "{refused:?}");
    assert!(!debs.exists(), "nothing was downloaded");

    assert_eq!(std::fs::read(DPKG_STATUS).ok(), host_status, "the host's dpkg status changed");
}
