//! U-Boot's binary environment, as `env export -c -s SIZE` writes it and `env import -c`
//! reads it (checked against U-Boot 2023.01): a CRC-32 of the data area, little-endian,
//! then `name=value\0` pairs sorted by name, an empty string ending them, and zeros up to
//! [`ENV_SIZE`]. The boot script keeps its state in such files ([`super::uboot_state`]).
//!
//! U-Boot holds no variable with an empty value (importing `name=` deletes `name`), so an
//! [`UbootEnv`] holds none either: setting one to `""` removes it.

use std::collections::BTreeMap;

/// The size of an environment file, CRC included, as the script passes it to `env export -s`,
/// `env import` and `fatwrite` (`0x1000`). One 4 KiB FAT cluster: a copy is rewritten in
/// one cluster, and it holds both slots' kernel command lines with room to spare.
pub const ENV_SIZE: usize = 4096;
/// The bytes of the CRC before the data area.
const CRC_SIZE: usize = 4;

/// An environment file cannot be read, or an environment cannot be written as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The file is shorter than [`ENV_SIZE`]: a write was cut short.
    #[error("truncated: {found} bytes of {ENV_SIZE}")]
    Truncated {
        /// Its length.
        found: usize,
    },
    /// The file is longer than [`ENV_SIZE`]: not an environment of this size.
    #[error("{found} bytes, not the {ENV_SIZE} of an environment")]
    WrongSize {
        /// Its length.
        found: usize,
    },
    /// The CRC does not match the data: a torn write, or not an environment.
    #[error("bad CRC: {stored:#010x} stored, {computed:#010x} computed over the data")]
    BadCrc {
        /// The CRC in the file.
        stored: u32,
        /// The CRC of its data area.
        computed: u32,
    },
    /// The data area runs out before the empty string that ends the variables.
    #[error("no empty string ends the variables")]
    NoTerminator,
    /// A string of the data area is not `name=value` text.
    #[error("{0:?} is not a name=value variable")]
    NotAVariable(String),
    /// A variable cannot be held, or its value is not what the reader expects.
    #[error("variable {name}: {reason}")]
    Variable {
        /// Its name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The variables do not fit in [`ENV_SIZE`].
    #[error("the variables take {needed} bytes, more than the {} of an environment", ENV_SIZE - CRC_SIZE)]
    TooLarge {
        /// Their size with the terminator.
        needed: usize,
    },
}

impl EnvError {
    /// A [`EnvError::Variable`] error about `name`.
    pub fn variable(name: &str, reason: impl Into<String>) -> EnvError {
        EnvError::Variable { name: name.to_string(), reason: reason.into() }
    }
}

/// The variables of one environment file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UbootEnv {
    /// By name, in U-Boot's export order.
    variables: BTreeMap<String, String>,
}

impl UbootEnv {
    /// Reads an environment file: exactly [`ENV_SIZE`] bytes, its CRC matching.
    pub fn parse(bytes: &[u8]) -> Result<UbootEnv, EnvError> {
        if bytes.len() < ENV_SIZE {
            return Err(EnvError::Truncated { found: bytes.len() });
        }
        if bytes.len() > ENV_SIZE {
            return Err(EnvError::WrongSize { found: bytes.len() });
        }
        let (crc, data) = bytes.split_at(CRC_SIZE);
        let stored = u32::from_le_bytes(crc.try_into().expect("CRC_SIZE bytes"));
        let computed = crc32fast::hash(data);
        if stored != computed {
            return Err(EnvError::BadCrc { stored, computed });
        }
        let mut env = UbootEnv::default();
        let mut rest = data;
        loop {
            let end = rest.iter().position(|&b| b == 0).ok_or(EnvError::NoTerminator)?;
            if end == 0 {
                return Ok(env);
            }
            let text = std::str::from_utf8(&rest[..end]).map_err(|_| {
                EnvError::NotAVariable(String::from_utf8_lossy(&rest[..end]).into())
            })?;
            let (name, value) = text
                .split_once('=')
                .filter(|(name, _)| !name.is_empty())
                .ok_or_else(|| EnvError::NotAVariable(text.to_string()))?;
            env.set(name, value)?;
            rest = &rest[end + 1..];
        }
    }

    /// The file's bytes: [`ENV_SIZE`] of them, as `env export -c -s` writes them.
    pub fn render(&self) -> Result<Vec<u8>, EnvError> {
        let mut data = Vec::with_capacity(ENV_SIZE);
        for (name, value) in &self.variables {
            data.extend_from_slice(name.as_bytes());
            data.push(b'=');
            data.extend_from_slice(value.as_bytes());
            data.push(0);
        }
        data.push(0);
        if data.len() > ENV_SIZE - CRC_SIZE {
            return Err(EnvError::TooLarge { needed: data.len() });
        }
        data.resize(ENV_SIZE - CRC_SIZE, 0);
        let mut bytes = crc32fast::hash(&data).to_le_bytes().to_vec();
        bytes.extend_from_slice(&data);
        Ok(bytes)
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.variables.get(name).map(String::as_str)
    }

    /// Sets `name` to `value`; an empty value removes it, as in U-Boot.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), EnvError> {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(EnvError::variable(name, "a name is not empty and has no '=' or NUL"));
        }
        if value.contains('\0') {
            return Err(EnvError::variable(name, "a value has no NUL"));
        }
        if value.is_empty() {
            self.variables.remove(name);
        } else {
            self.variables.insert(name.to_string(), value.to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment file built by hand: the CRC of `data` padded, then the data.
    fn file(data: &[u8]) -> Vec<u8> {
        let mut padded = data.to_vec();
        padded.resize(ENV_SIZE - CRC_SIZE, 0);
        let mut bytes = crc32fast::hash(&padded).to_le_bytes().to_vec();
        bytes.extend_from_slice(&padded);
        bytes
    }

    #[test]
    fn variables_are_written_sorted_with_a_crc_and_padding() {
        let mut env = UbootEnv::default();
        env.set("cairn_slot", "b").unwrap();
        env.set("cairn_args_a", "cairn.slot=a console=ttyAMA0").unwrap();
        env.set("cairn_gen", "1f").unwrap();
        let bytes = env.render().unwrap();
        assert_eq!(bytes.len(), ENV_SIZE);
        let data = b"cairn_args_a=cairn.slot=a console=ttyAMA0\0cairn_gen=1f\0cairn_slot=b\0\0";
        assert_eq!(&bytes[4..4 + data.len()], data);
        assert!(bytes[4 + data.len()..].iter().all(|&b| b == 0));
        assert_eq!(bytes, file(data));
        assert_eq!(UbootEnv::parse(&bytes).unwrap(), env);
    }

    /// What U-Boot 2023.01 wrote for `env export -c -s 0x1000` of these variables (its
    /// `crc32` command over the data area said `83ece910`).
    #[test]
    fn the_crc_is_u_boots() {
        let mut env = UbootEnv::default();
        env.set("cairn_args_a", "cairn.slot=a console=ttyAMA0").unwrap();
        env.set("cairn_gen", "1f").unwrap();
        env.set("cairn_slot", "a").unwrap();
        assert_eq!(env.render().unwrap()[..4], [0x10, 0xe9, 0xec, 0x83]);
    }

    #[test]
    fn an_empty_value_removes_a_variable_and_bad_names_are_refused() {
        let mut env = UbootEnv::default();
        env.set("x", "1").unwrap();
        env.set("x", "").unwrap();
        assert_eq!(env.get("x"), None);
        assert_eq!(env.render().unwrap(), file(b"\0"));
        assert!(matches!(env.set("a=b", "1"), Err(EnvError::Variable { .. })));
        assert!(matches!(env.set("", "1"), Err(EnvError::Variable { .. })));
        assert!(matches!(env.set("x", "a\0b"), Err(EnvError::Variable { .. })));
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let good = file(b"cairn_slot=a\0\0");
        assert_eq!(UbootEnv::parse(&good[..100]), Err(EnvError::Truncated { found: 100 }));
        let mut long = good.clone();
        long.push(0);
        assert_eq!(UbootEnv::parse(&long), Err(EnvError::WrongSize { found: ENV_SIZE + 1 }));
        let mut torn = good.clone();
        torn[10] = b'X';
        assert!(matches!(UbootEnv::parse(&torn), Err(EnvError::BadCrc { .. })));
        let unterminated = file(&[b'x'; ENV_SIZE - CRC_SIZE]);
        assert_eq!(UbootEnv::parse(&unterminated), Err(EnvError::NoTerminator));
        let last_unterminated = file(&[&b"a=1\0"[..], &[b'y'; ENV_SIZE - 8]].concat());
        assert_eq!(UbootEnv::parse(&last_unterminated), Err(EnvError::NoTerminator));
        assert_eq!(
            UbootEnv::parse(&file(b"cairn_slot\0\0")),
            Err(EnvError::NotAVariable("cairn_slot".into()))
        );
        assert_eq!(UbootEnv::parse(&file(b"=a\0\0")), Err(EnvError::NotAVariable("=a".into())));
        assert!(matches!(UbootEnv::parse(&file(b"a=\xff\0\0")), Err(EnvError::NotAVariable(_))));
    }

    #[test]
    fn an_environment_too_large_is_refused() {
        let mut env = UbootEnv::default();
        // `a=`, the value, its NUL and the terminator.
        env.set("a", &"x".repeat(ENV_SIZE - CRC_SIZE - 3)).unwrap();
        assert_eq!(env.render(), Err(EnvError::TooLarge { needed: ENV_SIZE - CRC_SIZE + 1 }));
        env.set("a", &"x".repeat(ENV_SIZE - CRC_SIZE - 4)).unwrap();
        assert_eq!(env.render().unwrap().len(), ENV_SIZE);
    }
}
