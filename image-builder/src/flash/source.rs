//! The image to flash: raw, or zstd-compressed and decompressed on the fly, with the size it
//! has once written.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::FlashError;

/// The four bytes every zstd frame starts with: the image's compression is read from its
/// content, not guessed from its name.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A zstd frame header is at most this long; its content size, when the compressor knew it,
/// is in there.
const ZSTD_HEADER_MAX: usize = 18;

/// A disk image to write.
#[derive(Debug)]
pub struct ImageFile {
    /// The file.
    pub path: PathBuf,
    /// Bytes once decompressed: what lands on the device.
    pub size: u64,
    /// Whether it is zstd-compressed.
    pub compressed: bool,
}

impl ImageFile {
    /// Opens `path` and finds its written size: a raw image's length, or a zstd image's
    /// content size from its frame header (image-builder records it), else by decompressing
    /// it once.
    pub fn open(path: &Path) -> Result<ImageFile, FlashError> {
        let error = |source| FlashError::Image { path: path.to_path_buf(), source };
        let mut file = File::open(path).map_err(error)?;
        let mut header = Vec::with_capacity(ZSTD_HEADER_MAX);
        (&mut file).take(ZSTD_HEADER_MAX as u64).read_to_end(&mut header).map_err(error)?;
        let compressed = header.starts_with(&ZSTD_MAGIC);
        let size = match compressed {
            false => file.metadata().map_err(error)?.len(),
            true => match zstd::zstd_safe::get_frame_content_size(&header) {
                Ok(Some(size)) => size,
                _ => {
                    let mut counted = decoder(File::open(path).map_err(error)?).map_err(error)?;
                    io::copy(&mut counted, &mut io::sink()).map_err(error)?
                }
            },
        };
        Ok(ImageFile { path: path.to_path_buf(), size, compressed })
    }

    /// The image's bytes as they go onto the device.
    pub fn reader(&self) -> Result<Box<dyn Read>, FlashError> {
        let error = |source| FlashError::Image { path: self.path.clone(), source };
        let file = File::open(&self.path).map_err(error)?;
        Ok(match self.compressed {
            true => Box::new(decoder(file).map_err(error)?),
            false => Box::new(BufReader::new(file)),
        })
    }
}

fn decoder(file: File) -> io::Result<impl Read> {
    zstd::Decoder::new(file)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn content() -> Vec<u8> {
        (0..300_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    fn read_all(image: &ImageFile) -> Vec<u8> {
        let mut bytes = Vec::new();
        image.reader().unwrap().read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn a_raw_image_is_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.raw");
        std::fs::write(&path, content()).unwrap();
        let image = ImageFile::open(&path).unwrap();
        assert_eq!((image.size, image.compressed), (content().len() as u64, false));
        assert_eq!(read_all(&image), content());
    }

    #[test]
    fn a_zstd_image_is_known_by_its_magic_and_sized_from_its_header() {
        let dir = tempfile::tempdir().unwrap();
        // No .zst in the name: the content says what it is.
        let path = dir.path().join("cairn.img");
        let mut encoder = zstd::Encoder::new(File::create(&path).unwrap(), 3).unwrap();
        encoder.set_pledged_src_size(Some(content().len() as u64)).unwrap();
        encoder.write_all(&content()).unwrap();
        encoder.finish().unwrap();
        let image = ImageFile::open(&path).unwrap();
        assert_eq!((image.size, image.compressed), (content().len() as u64, true));
        assert_eq!(read_all(&image), content());
    }

    #[test]
    fn a_zstd_image_without_a_content_size_is_measured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.raw.zst");
        // The streaming encoder does not know the size up front and leaves it out.
        let mut encoder = zstd::Encoder::new(File::create(&path).unwrap(), 3).unwrap();
        encoder.write_all(&content()).unwrap();
        encoder.finish().unwrap();
        let header = std::fs::read(&path).unwrap();
        assert_eq!(zstd::zstd_safe::get_frame_content_size(&header[..18]).ok(), Some(None));
        assert_eq!(ImageFile::open(&path).unwrap().size, content().len() as u64);
    }

    #[test]
    fn a_missing_image_is_named() {
        let error = ImageFile::open(Path::new("/nonexistent/cairn.raw.zst")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the image /nonexistent/cairn.raw.zst: No such file or directory (os error 2)"
        );
    }
}
