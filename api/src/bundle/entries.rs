//! A bundle's tar stream, one plain entry at a time.
//!
//! The `tar` crate reads GNU long-name and PAX extension entries on its own, whole, before
//! the entry they describe: a 2 GiB long-name header ahead of `manifest` had every reader
//! buffer 2 GiB before the signature was looked at. A bundle's entries have short names and
//! nothing to extend, so this reader takes each 512-byte header itself (`tar::Header` only
//! parses it), refuses an entry that is not a plain file before reading a byte of its data,
//! and has the caller bound its size first.

use std::io::{self, Read};

use super::BundleError;

/// The size of a tar header and the unit entries are padded to.
const BLOCK: u64 = 512;

/// The entries of a bundle's tar stream, read in order.
pub(super) struct Entries<R> {
    stream: R,
    /// The current entry's data not yet read.
    data_left: u64,
    /// The padding after it, up to the next header.
    padding: u64,
}

/// A header, as far as a bundle reader needs it.
struct Header {
    name: String,
    size: u64,
}

impl<R: Read> Entries<R> {
    pub(super) fn new(stream: R) -> Self {
        Entries { stream, data_left: 0, padding: 0 }
    }

    /// Starts the next entry, which must be `name`, a plain file of a size `size_ok` accepts;
    /// its data is then read through `self`. Returns the size.
    pub(super) fn expect(
        &mut self,
        name: &str,
        size_ok: impl FnOnce(u64) -> Result<(), String>,
    ) -> Result<u64, BundleError> {
        let place = format!("where {name} should be");
        let header = self
            .next_header(&place)?
            .ok_or_else(|| BundleError::Layout(format!("the stream ends {place}")))?;
        if header.name != name {
            return Err(BundleError::Layout(format!("entry {:?} {place}", header.name)));
        }
        size_ok(header.size).map_err(|why| BundleError::Layout(format!("{name}: {why}")))?;
        self.data_left = header.size;
        self.padding = header.size.next_multiple_of(BLOCK) - header.size;
        Ok(header.size)
    }

    /// Checks that the archive ends after the current entry.
    pub(super) fn expect_end(&mut self) -> Result<(), BundleError> {
        let place = "after the last artifact";
        match self.next_header(place)? {
            None => Ok(()),
            Some(header) => Err(BundleError::Layout(format!("entry {:?} {place}", header.name))),
        }
    }

    /// The next header, past what is left of the current entry; `None` at the end of the
    /// archive (a zero block) or of the stream.
    fn next_header(&mut self, place: &str) -> Result<Option<Header>, BundleError> {
        let skip = self.data_left + self.padding;
        (self.data_left, self.padding) = (0, 0);
        if io::copy(&mut (&mut self.stream).take(skip), &mut io::sink())? < skip {
            return Err(BundleError::Layout(format!("the stream ends {place}")));
        }
        let mut block = [0u8; BLOCK as usize];
        match read_full(&mut self.stream, &mut block)? {
            0 => return Ok(None),
            n if n < block.len() => {
                return Err(BundleError::Layout(format!("the stream ends in a tar header {place}")))
            }
            _ => {}
        }
        if block.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        let header = tar::Header::from_byte_slice(&block);
        if !checksum_matches(&block) {
            // Not worth quoting: it is whatever bytes are there.
            return Err(BundleError::Layout(format!("no tar header {place}")));
        }
        let name = String::from_utf8_lossy(&header.path_bytes()).into_owned();
        let kind = header.entry_type();
        if kind != tar::EntryType::Regular {
            let flag = header.as_old().linkflag[0];
            return Err(BundleError::Layout(format!(
                "entry {name:?} of type {:?} ({kind:?}) {place}: a bundle holds only plain files",
                char::from(flag)
            )));
        }
        let size = header.entry_size().map_err(|_| {
            BundleError::Layout(format!("entry {name:?} {place}: its size is not a number"))
        })?;
        Ok(Some(Header { name, size }))
    }
}

impl<R: Read> Read for Entries<R> {
    /// Reads the current entry's data, and nothing past it.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let most = buf.len().min(usize::try_from(self.data_left).unwrap_or(usize::MAX));
        let n = self.stream.read(&mut buf[..most])?;
        self.data_left -= n as u64;
        Ok(n)
    }
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
fn read_full(stream: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Whether a header's checksum field (octal, bytes 148-155) is the sum of its bytes, the
/// field itself counted as spaces.
fn checksum_matches(block: &[u8; BLOCK as usize]) -> bool {
    let field = &block[148..156];
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| if (148..156).contains(&i) { u32::from(b' ') } else { u32::from(*b) })
        .sum();
    let digits =
        field.iter().copied().skip_while(|b| *b == b' ').take_while(|b| b.is_ascii_digit());
    let digits: String = digits.map(char::from).collect();
    !digits.is_empty() && u32::from_str_radix(&digits, 8).is_ok_and(|stored| stored == sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header of `kind` named `name` that says `size` bytes follow.
    fn header(kind: tar::EntryType, name: &str, size: u64) -> Vec<u8> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_path(name).unwrap();
        header.set_size(size);
        header.set_cksum();
        header.as_bytes().to_vec()
    }

    #[test]
    fn plain_entries_are_read_exactly_and_the_end_is_found() {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in [("a", &b"hello"[..]), ("b", &[7u8; 600][..])] {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_cksum();
            tar.append_data(&mut header, name, data).unwrap();
        }
        let bytes = tar.into_inner().unwrap();
        let mut entries = Entries::new(&bytes[..]);
        assert_eq!(entries.expect("a", |_| Ok(())).unwrap(), 5);
        // Unread data is skipped on the way to the next header.
        let mut first = [0u8; 2];
        entries.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"he");
        let error = entries.expect("c", |_| Ok(())).unwrap_err().to_string();
        assert_eq!(error, "not a Cairn bundle: entry \"b\" where c should be");

        let mut entries = Entries::new(&bytes[..]);
        entries.expect("a", |_| Ok(())).unwrap();
        let error = entries.expect("b", |size| Err(format!("{size} bytes"))).unwrap_err();
        assert_eq!(error.to_string(), "not a Cairn bundle: b: 600 bytes");

        let mut entries = Entries::new(&bytes[..]);
        entries.expect("a", |_| Ok(())).unwrap();
        entries.expect("b", |_| Ok(())).unwrap();
        let mut data = Vec::new();
        entries.read_to_end(&mut data).unwrap();
        assert_eq!(data, [7u8; 600]);
        entries.expect_end().unwrap();

        // A stream cut inside a header, or inside the data before it.
        let mut entries = Entries::new(&bytes[..1100]);
        entries.expect("a", |_| Ok(())).unwrap();
        let error = entries.expect("b", |_| Ok(())).unwrap_err().to_string();
        assert_eq!(error, "not a Cairn bundle: the stream ends in a tar header where b should be");
        let mut entries = Entries::new(&bytes[..600]);
        entries.expect("a", |_| Ok(())).unwrap();
        let error = entries.expect("b", |_| Ok(())).unwrap_err().to_string();
        assert_eq!(error, "not a Cairn bundle: the stream ends where b should be");
    }

    #[test]
    fn checksums_are_checked() {
        let mut bytes = header(tar::EntryType::Regular, "manifest", 0);
        assert!(checksum_matches(bytes.as_slice().try_into().unwrap()));
        bytes[0] ^= 1;
        assert!(!checksum_matches(bytes.as_slice().try_into().unwrap()));
        let error = Entries::new(&bytes[..]).expect("manifest", |_| Ok(())).unwrap_err();
        assert_eq!(error.to_string(), "not a Cairn bundle: no tar header where manifest should be");
    }
}
