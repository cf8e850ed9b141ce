//! `image-builder flash` as a user runs it, on loop devices (root, as CI runs) and files: the
//! image lands and reads back the same, and every refusal leaves the device as it was.
//! (A partition is refused by unit tests: this kernel scans no partitions on loop devices.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A loop device over a file of `size` bytes of 0xee, detached when dropped.
struct LoopDevice {
    device: PathBuf,
    backing: PathBuf,
}

impl LoopDevice {
    fn new(dir: &Path, name: &str, size: usize) -> LoopDevice {
        assert!(nix::unistd::geteuid().is_root(), "loop devices need root (losetup)");
        let backing = dir.join(name);
        std::fs::write(&backing, vec![0xeeu8; size]).unwrap();
        let output = Command::new("losetup").arg("--find").arg("--show").arg(&backing).output();
        let output = output.expect("losetup (util-linux)");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let device = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
        LoopDevice { device, backing }
    }

    fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.backing).unwrap()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// An image of `size` bytes (a patterned start, zeros, a patterned end), and its .zst with the
/// size in the header, as `build` writes it.
fn image(dir: &Path, size: usize) -> (Vec<u8>, PathBuf) {
    let mut bytes = vec![0u8; size];
    for (i, b) in bytes.iter_mut().enumerate().take(size / 3) {
        *b = (i * 7 % 251) as u8;
    }
    for b in bytes.iter_mut().rev().take(size / 4) {
        *b = 0x5a;
    }
    let path = dir.join("cairn-test.raw.zst");
    let mut encoder = zstd::Encoder::new(std::fs::File::create(&path).unwrap(), 3).unwrap();
    encoder.set_pledged_src_size(Some(size as u64)).unwrap();
    encoder.write_all(&bytes).unwrap();
    encoder.finish().unwrap();
    (bytes, path)
}

/// `image-builder flash --image IMAGE --device DEVICE [extra]`, with `answer` on stdin.
fn flash(image: &Path, device: &Path, extra: &[&str], answer: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .arg("flash")
        .arg("--image")
        .arg(image)
        .arg("--device")
        .arg(device)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(answer.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    println!("{}", String::from_utf8_lossy(&output.stdout));
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_loop_device_gets_the_image_and_reads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, zst) = image(dir.path(), 64 << 20);
    let disk = LoopDevice::new(dir.path(), "disk", 80 << 20);
    let output = flash(&zst, &disk.device, &["--yes"], "");
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("matches the image"), "{stdout}");
    let written = disk.contents();
    assert!(written[..bytes.len()] == bytes[..], "the device does not hold the image");
    assert!(written[bytes.len()..].iter().all(|b| *b == 0xee), "written past the image");
}

#[test]
fn a_file_gets_the_image_once_the_user_says_yes() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, zst) = image(dir.path(), 8 << 20);
    let out = dir.path().join("card.img");
    let output = flash(&zst, &out, &[], "y\n");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("replacing everything on it? [y/N]"), "{}", stderr(&output));
    assert!(std::fs::read(&out).unwrap() == bytes, "the file does not hold the image");
}

#[test]
fn without_a_yes_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (_, zst) = image(dir.path(), 1 << 20);
    let disk = LoopDevice::new(dir.path(), "disk", 2 << 20);
    for answer in ["", "n\n", "whatever\n"] {
        let output = flash(&zst, &disk.device, &[], answer);
        assert!(!output.status.success());
        assert!(stderr(&output).contains("not confirmed: nothing was written"), "{answer:?}");
    }
    assert!(disk.contents().iter().all(|b| *b == 0xee), "written without a yes");
}

#[test]
fn a_device_smaller_than_the_image_is_refused_before_a_byte_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (_, zst) = image(dir.path(), 8 << 20);
    let disk = LoopDevice::new(dir.path(), "small", 4 << 20);
    let output = flash(&zst, &disk.device, &["--yes"], "");
    assert!(!output.status.success());
    let says = format!(
        "{} holds 4194304 bytes, less than the image's 8388608: nothing was written",
        disk.device.display()
    );
    assert!(stderr(&output).contains(&says), "{}", stderr(&output));
    assert!(disk.contents().iter().all(|b| *b == 0xee), "the small device was written");
}

/// A mounted filesystem, unmounted when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_mounted_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, zst) = image(dir.path(), 1 << 20);
    let disk = LoopDevice::new(dir.path(), "mounted", 8 << 20);
    let made = Command::new("mkfs.ext4").arg("-q").arg(&disk.device).status().unwrap();
    assert!(made.success());
    let at = dir.path().join("mnt");
    std::fs::create_dir(&at).unwrap();
    let mounted = Command::new("mount").arg(&disk.device).arg(&at).status().unwrap();
    assert!(mounted.success());
    let _mounted = Mounted(at.clone());
    let before = disk.contents();
    let output = flash(&zst, &disk.device, &["--yes"], "");
    assert!(!output.status.success());
    let says = format!("{0} is in use: {0} is mounted on {1}", disk.device.display(), at.display());
    assert!(stderr(&output).contains(&says), "{}", stderr(&output));
    assert!(disk.contents() == before, "the mounted device was written");
}
