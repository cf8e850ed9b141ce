//! The slots' root filesystems as the updater writes them: a small trait with the real
//! implementation on the ROOT-A/ROOT-B block devices and one in memory for tests.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

use cairn_api::image::Slot;

/// Where a slot's root filesystem is written.
pub trait SlotWriter: Send + Sync {
    /// The most bytes `slot`'s root can hold.
    fn capacity(&self, slot: Slot) -> io::Result<u64>;
    /// Writes what `content` yields from the start of `slot`'s root and makes it durable;
    /// `written` hears of each piece. Returns the bytes written.
    fn write(
        &self,
        slot: Slot,
        content: &mut dyn Read,
        written: &mut dyn FnMut(usize),
    ) -> io::Result<u64>;
}

/// The ROOT partitions of the disk, by device node.
pub struct RootPartitions {
    roots: [PathBuf; 2],
}

impl RootPartitions {
    /// ROOT-A and ROOT-B at `roots` (device nodes, or files in tests).
    pub fn new(roots: [PathBuf; 2]) -> Self {
        RootPartitions { roots }
    }

    fn root(&self, slot: Slot) -> &PathBuf {
        match slot {
            Slot::A => &self.roots[0],
            Slot::B => &self.roots[1],
        }
    }
}

/// An error about `path`, naming it.
fn about(path: &std::path::Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl SlotWriter for RootPartitions {
    fn capacity(&self, slot: Slot) -> io::Result<u64> {
        let root = self.root(slot);
        File::open(root).and_then(|mut f| f.seek(SeekFrom::End(0))).map_err(about(root))
    }

    fn write(
        &self,
        slot: Slot,
        content: &mut dyn Read,
        written: &mut dyn FnMut(usize),
    ) -> io::Result<u64> {
        let root = self.root(slot);
        let mut device = OpenOptions::new().write(true).open(root).map_err(about(root))?;
        let length = super::copy(content, &mut device, written).map_err(about(root))?;
        device.sync_all().map_err(about(root))?;
        Ok(length)
    }
}

/// Two roots in memory, of a fixed capacity (tests).
#[cfg(test)]
pub struct MemorySlots {
    /// The bytes of A and B.
    pub roots: std::sync::Mutex<[Vec<u8>; 2]>,
}

#[cfg(test)]
impl MemorySlots {
    /// Roots filled with `a` and `b`.
    pub fn new(a: Vec<u8>, b: Vec<u8>) -> Self {
        MemorySlots { roots: std::sync::Mutex::new([a, b]) }
    }

    /// A copy of `slot`'s root.
    pub fn root(&self, slot: Slot) -> Vec<u8> {
        self.roots.lock().unwrap()[slot_index(slot)].clone()
    }
}

#[cfg(test)]
fn slot_index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

#[cfg(test)]
impl SlotWriter for MemorySlots {
    fn capacity(&self, slot: Slot) -> io::Result<u64> {
        Ok(self.roots.lock().unwrap()[slot_index(slot)].len() as u64)
    }

    fn write(
        &self,
        slot: Slot,
        content: &mut dyn Read,
        written: &mut dyn FnMut(usize),
    ) -> io::Result<u64> {
        let mut bytes = Vec::new();
        let length = super::copy(content, &mut bytes, written)?;
        let mut roots = self.roots.lock().unwrap();
        let root = &mut roots[slot_index(slot)];
        if bytes.len() > root.len() {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "past the root's end"));
        }
        root[..bytes.len()].copy_from_slice(&bytes);
        Ok(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_written_from_their_start_and_measured() {
        let dir = tempfile::tempdir().unwrap();
        let roots = [dir.path().join("root-a"), dir.path().join("root-b")];
        std::fs::write(&roots[0], [1u8; 64]).unwrap();
        std::fs::write(&roots[1], [0u8; 32]).unwrap();
        let partitions = RootPartitions::new(roots.clone());
        assert_eq!(partitions.capacity(Slot::B).unwrap(), 32);
        let mut seen = 0;
        let length = partitions.write(Slot::B, &mut &b"root"[..], &mut |n| seen += n).unwrap();
        assert_eq!((length, seen), (4, 4));
        let b = std::fs::read(&roots[1]).unwrap();
        assert_eq!((&b[..4], b.len()), (&b"root"[..], 32));
        assert_eq!(std::fs::read(&roots[0]).unwrap(), [1u8; 64]);
        let error = RootPartitions::new([dir.path().join("x"), dir.path().join("y")])
            .capacity(Slot::A)
            .unwrap_err();
        assert!(error.to_string().ends_with("/x: No such file or directory (os error 2)"));
    }
}
