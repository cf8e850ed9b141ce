//! Telling the kernel about a partition added to the table of a disk in use (BLKPG's
//! add-partition, what `partx -a` does): it will not re-read the whole table of a busy disk.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use cairn_api::disk::partition_table::AddedPartition;

/// Where new partitions are made known (a trait, so what is asked of the kernel is tested).
pub trait KernelPartitions {
    /// Makes `partition` of `disk` known, with its device node.
    fn add(&self, disk: &Path, partition: &AddedPartition) -> io::Result<()>;
}

/// The kernel's BLKPG ioctl on the disk's device node.
pub struct Blkpg;

impl KernelPartitions for Blkpg {
    fn add(&self, disk: &Path, partition: &AddedPartition) -> io::Result<()> {
        let too_large = |what: &str| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{what} does not fit BLKPG"))
        };
        let request = sys::BlkpgPartition {
            start: i64::try_from(partition.offset).map_err(|_| too_large("the start"))?,
            length: i64::try_from(partition.size).map_err(|_| too_large("the length"))?,
            pno: i32::try_from(partition.number).map_err(|_| too_large("the number"))?,
            devname: [0; sys::NAME_BYTES],
            volname: [0; sys::NAME_BYTES],
        };
        // Any open mode will do: the kernel checks CAP_SYS_ADMIN, not the file's mode.
        let file = File::open(disk)?;
        sys::add_partition(file.as_raw_fd(), &request)?;
        Ok(())
    }
}

/// The ioctl's structures (`linux/blkpg.h`) and the call, which neither nix nor libc wraps.
#[allow(unsafe_code)]
mod sys {
    use std::os::raw::{c_char, c_int, c_longlong, c_void};

    use nix::errno::Errno;

    /// `BLKPG_DEVNAMELTH` and `BLKPG_VOLNAMELTH`.
    pub(super) const NAME_BYTES: usize = 64;
    /// `BLKPG_ADD_PARTITION`.
    const ADD_PARTITION: c_int = 1;

    /// `struct blkpg_partition`: offsets and lengths in bytes.
    #[repr(C)]
    pub(super) struct BlkpgPartition {
        pub(super) start: c_longlong,
        pub(super) length: c_longlong,
        pub(super) pno: c_int,
        pub(super) devname: [c_char; NAME_BYTES],
        pub(super) volname: [c_char; NAME_BYTES],
    }

    /// `struct blkpg_ioctl_arg`.
    #[repr(C)]
    struct BlkpgIoctlArg {
        op: c_int,
        flags: c_int,
        datalen: c_int,
        data: *const c_void,
    }

    // `BLKPG` is `_IO(0x12, 105)` although it passes a pointer: hence the "bad" form.
    nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);

    /// BLKPG_ADD_PARTITION of `partition` on the disk open as `fd`.
    pub(super) fn add_partition(fd: c_int, partition: &BlkpgPartition) -> Result<(), Errno> {
        let arg = BlkpgIoctlArg {
            op: ADD_PARTITION,
            flags: 0,
            datalen: std::mem::size_of::<BlkpgPartition>() as c_int,
            data: (partition as *const BlkpgPartition).cast(),
        };
        // SAFETY: `arg` and the partition it points to are valid `repr(C)` structures of the
        // layout the kernel expects, borrowed for the whole call; the kernel only reads them
        // (it copies `datalen` bytes from `data`). A bad fd or request is an error, not UB.
        unsafe { blkpg(fd, &arg) }.map(drop)
    }
}
