//! The image scenario: two builds of the same inputs (the cached one and a fresh one) are
//! byte-identical, the update bundle (signed with ed25519, deterministic) passes image-builder
//! inspect offline, and the build report says what the image holds.

use cairn_tests::boards::Board;
use cairn_tests::{bin_dir, build_image};

use super::node::BuildInputs;
use super::updates::IMAGE_VERSION;

/// Builds `board`'s image afresh and compares it with the cached build.
pub fn reproducible(board: &Board) {
    let inputs = BuildInputs::cached();
    let cached = inputs.build(board, &[]);
    let fresh = tempfile::tempdir().unwrap();
    let (token, key) = (inputs.token(), inputs.signing_key());
    let report = build_image(board, fresh.path(), Some(&token), Some(&key), &[]);
    assert_eq!(
        std::fs::read_to_string(cached.join("report.toml")).unwrap(),
        report,
        "two builds of the same inputs differ"
    );
    let bundle = fresh.path().join(board.bundle(IMAGE_VERSION));
    let inspect = std::process::Command::new(bin_dir().join("image-builder"))
        .arg("inspect")
        .arg(&bundle)
        .arg("--key")
        .arg(inputs.public_key())
        .output()
        .unwrap();
    let inspected = String::from_utf8_lossy(&inspect.stdout);
    let version = format!("\"version\": \"{IMAGE_VERSION}\"");
    assert!(inspect.status.success() && inspected.contains(&version), "{inspected}");
    let size = |name: &str| std::fs::metadata(fresh.path().join(name)).unwrap().len() as f64 / 1e6;
    println!(
        "update bundle {:.1} MB, disk image .raw.zst {:.1} MB",
        size(&board.bundle(IMAGE_VERSION)),
        size(&board.compressed_image())
    );
    assert!(report.contains("bootstrap_token = true"), "{report}");
    let compressed = format!("name = \"{}\"", board.compressed_image());
    assert!(report.contains(&compressed), "{report}");
}
