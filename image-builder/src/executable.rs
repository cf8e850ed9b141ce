//! The check every program Cairn runs without a library beside it must pass: a static ELF
//! executable for the board's architecture (machined as `/init`, pause and busybox as the
//! only files of their container images).

use cairn_api::arch::Arch;
use goblin::elf::header::{EM_AARCH64, EM_ARM, EM_X86_64};

/// Why a file is no static executable for an architecture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutableError {
    /// Not ELF at all.
    #[error("not an ELF executable: {0}")]
    NotElf(String),
    /// ELF for another machine.
    #[error("built for ELF machine {machine}, not {arch} ({})", arch.rust_target())]
    ForeignMachine {
        /// The ELF header's `e_machine`.
        machine: u16,
        /// The architecture wanted.
        arch: Arch,
    },
    /// Needs an ELF interpreter or shared libraries.
    #[error("dynamically linked (needs {})", .0.join(", "))]
    Dynamic(Vec<String>),
}

/// Checks that `data` is an ELF executable for `arch` that needs no interpreter and no
/// shared library.
pub fn check_static(data: &[u8], arch: Arch) -> Result<(), ExecutableError> {
    let elf = goblin::elf::Elf::parse(data).map_err(|e| ExecutableError::NotElf(e.to_string()))?;
    let machine = match arch {
        Arch::X86_64 => EM_X86_64,
        Arch::Arm64 => EM_AARCH64,
        Arch::Armv7 => EM_ARM,
    };
    if elf.header.e_machine != machine {
        return Err(ExecutableError::ForeignMachine { machine: elf.header.e_machine, arch });
    }
    if elf.interpreter.is_some() || !elf.libraries.is_empty() {
        return Err(ExecutableError::Dynamic(
            elf.interpreter
                .into_iter()
                .chain(elf.libraries.iter().copied())
                .map(String::from)
                .collect(),
        ));
    }
    Ok(())
}

/// The smallest file [`check_static`] accepts for `arch`: an ELF header with nothing after it,
/// then `tail` (for tests of what reads binaries).
#[cfg(test)]
pub(crate) fn minimal_static_elf(arch: Arch, tail: &[u8]) -> Vec<u8> {
    let (class, machine) = match arch {
        Arch::X86_64 => (2u8, EM_X86_64),
        Arch::Arm64 => (2, EM_AARCH64),
        Arch::Armv7 => (1, EM_ARM),
    };
    let mut elf = vec![0x7f, b'E', b'L', b'F', class, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    let (word, header_size, ph_size, sh_size) =
        if class == 2 { (8, 64u16, 56u16, 64u16) } else { (4, 52, 32, 40) };
    elf.extend(std::iter::repeat_n(0, 3 * word)); // e_entry, e_phoff, e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [header_size, ph_size, 0, sh_size, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    assert_eq!(elf.len(), usize::from(header_size));
    elf.extend_from_slice(tail);
    elf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_static_executables_of_the_architecture() {
        for arch in [Arch::X86_64, Arch::Arm64, Arch::Armv7] {
            check_static(&minimal_static_elf(arch, b""), arch).unwrap();
        }
        let error = check_static(&minimal_static_elf(Arch::Armv7, b""), Arch::X86_64).unwrap_err();
        assert!(matches!(error, ExecutableError::ForeignMachine { .. }), "{error}");
    }

    #[test]
    fn refuses_dynamic_foreign_and_non_elf_files() {
        // This test's own executable is dynamically linked x86_64 (on this project's hosts).
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let error = check_static(&exe, Arch::X86_64).unwrap_err();
        assert!(matches!(&error, ExecutableError::Dynamic(needs) if !needs.is_empty()), "{error}");
        let error = check_static(&exe, Arch::Arm64).unwrap_err().to_string();
        assert!(error.contains("not arm64"), "{error}");
        let error = check_static(b"#!/bin/sh\n", Arch::X86_64).unwrap_err().to_string();
        assert!(error.starts_with("not an ELF executable"), "{error}");
    }
}
