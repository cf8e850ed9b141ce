//! The CPU architectures Cairn runs on, with the names each ecosystem uses for them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A target architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// 64-bit x86 (PCs, servers, QEMU q35).
    #[serde(rename = "x86_64")]
    X86_64,
    /// 64-bit ARM (Raspberry Pi 3/4 in 64-bit mode, QEMU virt).
    Arm64,
    /// 32-bit ARM with hard float (Raspberry Pi 2/3 in 32-bit mode, QEMU virt).
    Armv7,
}

impl Arch {
    /// Every architecture.
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Arm64, Arch::Armv7];

    /// Cairn's name: `x86_64`, `arm64`, `armv7`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
            Arch::Armv7 => "armv7",
        }
    }

    /// Debian's name: `amd64`, `arm64`, `armhf`.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Armv7 => "armhf",
        }
    }

    /// The architecture this program was built for: on a node, the node's (`None` on one
    /// Cairn does not run on).
    pub fn built_for() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Arm64),
            "arm" => Some(Arch::Armv7),
            _ => None,
        }
    }

    /// Rust's target triple.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
            Arch::Armv7 => "armv7-unknown-linux-gnueabihf",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no architecture.
#[derive(Debug, thiserror::Error)]
#[error("unknown architecture {0:?}: expected x86_64, arm64 or armv7")]
pub struct UnknownArch(String);

impl FromStr for Arch {
    type Err = UnknownArch;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            "armv7" | "armhf" => Ok(Arch::Armv7),
            _ => Err(UnknownArch(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tests_run_on_an_architecture_cairn_has() {
        let built_for = Arch::built_for().expect("an architecture Cairn has");
        assert_eq!(built_for.rust_target().split('-').next(), Some(std::env::consts::ARCH));
    }

    #[test]
    fn names_round_trip() {
        for arch in Arch::ALL {
            assert_eq!(arch.name().parse::<Arch>().unwrap(), arch);
            assert_eq!(arch.debian().parse::<Arch>().unwrap(), arch);
        }
        assert!("mips".parse::<Arch>().is_err());
    }
}
