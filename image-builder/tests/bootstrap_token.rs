//! `build --bootstrap-token-file`: a token that would not resist guessing is refused before
//! anything is downloaded or built.

use std::process::Command;

#[test]
fn a_weak_bootstrap_token_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "hunter2\n").unwrap();
    let cache = dir.path().join("cache");
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["build", "--board", "generic-x86_64", "--bootstrap-token-file"])
        .arg(&token)
        .arg("--cache")
        .arg(&cache)
        .arg("--output")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--bootstrap-token-file") && stderr.contains("at least 32"),
        "{stderr}"
    );
    assert!(!cache.exists() && !dir.path().join("out").exists(), "work was done: {stderr}");
}
