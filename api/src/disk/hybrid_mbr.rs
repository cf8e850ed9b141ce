//! The hybrid MBR of boards whose firmware reads only an MBR (the Raspberry Pi's: its boot
//! ROM and firmware look for a FAT partition in the MBR and know nothing of GPT).
//!
//! In front of the GPT, LBA 0 lists the boot partition as FAT32 (LBA), which the firmware
//! loads from, and after it a GPT-protective partition (type 0xEE, from LBA 1) over the
//! primary GPT. Linux and U-Boot find the 0xEE partition, accept the MBR as hybrid and read
//! the GPT, which alone lists every partition: the root slots, STATE and EPHEMERAL are found
//! by their GPT labels on these boards as on every other. Nothing past the boot partition is
//! in the MBR, so growing the GPT on first boot leaves LBA 0 as it is.

/// An MBR partition type: FAT32 addressed by LBA.
pub const FAT32_LBA: u8 = 0x0c;
/// An MBR partition type: GPT-protective.
pub const GPT_PROTECTIVE: u8 = 0xee;

/// Where the four partition entries start.
const ENTRIES_AT: usize = 446;
/// One entry's length.
const ENTRY_BYTES: usize = 16;
/// Where the disk signature is.
const SIGNATURE_AT: usize = 440;
/// The CHS address every modern tool writes for a sector beyond CHS: read the LBA fields.
const CHS_BEYOND: [u8; 3] = [0xfe, 0xff, 0xff];

/// LBA 0 of a hybrid disk whose boot partition is `boot_sectors` sectors from sector
/// `boot_first`: the boot partition as FAT32, then 0xEE from LBA 1 up to the boot partition.
/// `signature` is the disk signature (Linux shows it in MBR PARTUUIDs).
pub fn render(boot_first: u32, boot_sectors: u32, signature: u32) -> [u8; 512] {
    let mut lba0 = [0u8; 512];
    lba0[SIGNATURE_AT..SIGNATURE_AT + 4].copy_from_slice(&signature.to_le_bytes());
    let entries = [(FAT32_LBA, boot_first, boot_sectors), (GPT_PROTECTIVE, 1, boot_first - 1)];
    for (n, (kind, first, sectors)) in entries.into_iter().enumerate() {
        let entry = &mut lba0[ENTRIES_AT + n * ENTRY_BYTES..][..ENTRY_BYTES];
        entry[1..4].copy_from_slice(&CHS_BEYOND);
        entry[4] = kind;
        entry[5..8].copy_from_slice(&CHS_BEYOND);
        entry[8..12].copy_from_slice(&first.to_le_bytes());
        entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    }
    lba0[510..].copy_from_slice(&[0x55, 0xaa]);
    lba0
}

/// Whether `lba0` is a hybrid MBR: signed, with a partition of another type beside the
/// GPT-protective one.
pub fn is_hybrid(lba0: &[u8; 512]) -> bool {
    let kinds: Vec<u8> =
        (0..4).map(|n| lba0[ENTRIES_AT + n * ENTRY_BYTES + 4]).filter(|k| *k != 0).collect();
    lba0[510..] == [0x55, 0xaa]
        && kinds.contains(&GPT_PROTECTIVE)
        && kinds.iter().any(|k| *k != GPT_PROTECTIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_partition_comes_first_then_the_gpt_s_protection() {
        // A 256 MiB boot partition at 1 MiB.
        let lba0 = render(2048, 524_288, 0x1234_5678);
        assert_eq!(lba0[440..444], [0x78, 0x56, 0x34, 0x12]);
        assert_eq!(
            lba0[446..462],
            [0, 0xfe, 0xff, 0xff, 0x0c, 0xfe, 0xff, 0xff, 0x00, 0x08, 0, 0, 0, 0, 0x08, 0]
        );
        assert_eq!(
            lba0[462..478],
            [0, 0xfe, 0xff, 0xff, 0xee, 0xfe, 0xff, 0xff, 1, 0, 0, 0, 0xff, 0x07, 0, 0]
        );
        assert!(lba0[478..510].iter().all(|b| *b == 0));
        assert!(lba0[..440].iter().all(|b| *b == 0));
        assert_eq!(lba0[510..], [0x55, 0xaa]);
        assert!(is_hybrid(&lba0));
    }

    #[test]
    fn a_protective_or_plain_mbr_is_not_hybrid() {
        let mut protective = [0u8; 512];
        protective[446 + 4] = GPT_PROTECTIVE;
        protective[510..].copy_from_slice(&[0x55, 0xaa]);
        assert!(!is_hybrid(&protective));
        let mut plain = protective;
        plain[446 + 4] = FAT32_LBA;
        assert!(!is_hybrid(&plain));
        let mut unsigned = render(2048, 2048, 0);
        unsigned[511] = 0;
        assert!(!is_hybrid(&unsigned));
    }
}
