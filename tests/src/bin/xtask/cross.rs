//! `cargo xtask cross-toolchain`: what image-builder needs to build machined for arm64 and
//! armv7 without a rustup target — the cross gcc packages, Debian's rustc 1.85 and the arm
//! std unpacked beside it — then the variable that points image-builder at it.

use std::path::Path;

use image_builder::toolchain::CROSS_RUST_VARIABLE;

use crate::host::{Host, HostError};
use crate::packages;
use crate::rust185::Rust185;

/// Sets up the cross toolchain in `cache` (nothing runs when it is there) and returns the
/// line that points image-builder at it.
pub fn run(host: &mut impl Host, cache: &Path) -> Result<String, HostError> {
    let apt_updated = packages::ensure(host, &packages::cross())?;
    let rust = Rust185::in_cache(cache);
    rust.ensure(host, apt_updated)?;
    rust.ensure_cross(host)?;
    Ok(format!("export {CROSS_RUST_VARIABLE}={}", rust.root().display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    use crate::rust185::CROSS;

    #[test]
    fn a_set_up_host_runs_nothing_but_dpkg_query_and_is_told_the_variable() {
        let cache = Path::new("/c");
        let mut host = FakeHost::warm(&packages::cross());
        let rust = Rust185::in_cache(cache);
        host.files.insert(rust.rustc(), String::new());
        for arch in CROSS {
            let std = image_builder::toolchain::unpacked_std_dir(rust.root(), arch.rust_target());
            host.files.insert(std.join("libstd-f7c1952303da7ec4.rlib"), String::new());
        }
        assert_eq!(run(&mut host, cache).unwrap(), "export CAIRN_CROSS_RUST=/c/rust-1.85");
        assert_eq!(host.ran.len(), 1, "{:?}", host.ran);
        assert!(host.ran[0].starts_with("dpkg-query --show "), "{:?}", host.ran);
    }
}
