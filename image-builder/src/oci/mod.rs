//! OCI image-layout archives: [`write`] makes one image, byte-for-byte the same from the same
//! inputs. The types and the checking reader ([`inspect`]) are `cairn_api::oci`'s, shared with
//! machined, which imports the archives at boot.

pub mod write;

pub use cairn_api::oci::*;

/// Archives [`write`] makes, read back and broken on purpose through [`inspect`].
#[cfg(test)]
mod tests {
    use std::path::Path;

    use cairn_api::arch::Arch;
    use cairn_api::oci::inspect::{inspect, read, regular_files};

    use super::write::one_file_image;
    use super::*;

    fn archive(arch: Arch) -> (ImageName, Vec<u8>, Descriptor) {
        let name = "registry.example/app:v1";
        let archive = one_file_image(name, arch);
        (ImageName::parse(name).unwrap(), archive.bytes, archive.manifest)
    }

    /// `data` with its regular files changed by `edit` (path, content → new content; `None`
    /// drops the file).
    fn rewrite(data: &[u8], edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
        let mut out = tar::Builder::new(Vec::new());
        for (path, content) in regular_files(data).unwrap() {
            if let Some(content) = edit(&path, content) {
                let mut header = tar::Header::new_ustar();
                header.set_mode(0o644);
                header.set_size(content.len() as u64);
                out.append_data(&mut header, format!("./{path}"), content.as_slice()).unwrap();
            }
        }
        out.into_inner().unwrap()
    }

    #[test]
    fn reads_back_what_write_wrote() {
        for arch in [Arch::X86_64, Arch::Armv7] {
            let (name, data, manifest) = archive(arch);
            let images = inspect(Path::new("app.tar"), &data).unwrap();
            assert_eq!(images.len(), 1);
            assert_eq!(images[0].name, name.as_str());
            assert_eq!(images[0].descriptor, manifest);
            assert_eq!(images[0].platforms().collect::<Vec<_>>(), [&Platform::of(arch)]);
            let layout = read(Path::new("app.tar"), &data).unwrap();
            let only = &layout.images[0].manifests[0];
            assert_eq!(only.diff_ids, [only.manifest.layers[0].digest.clone()]);
            assert!(layout.blobs.contains_key(&only.manifest.config.digest));
        }
    }

    #[test]
    fn names_what_is_wrong_and_where() {
        let (_, data, manifest) = archive(Arch::X86_64);
        let error = |data: &[u8]| inspect(Path::new("x/app.tar"), data).unwrap_err().to_string();

        let no_layout = rewrite(&data, |p, c| (p != "oci-layout").then_some(c));
        assert!(
            error(&no_layout).starts_with("x/app.tar: no oci-layout file"),
            "{}",
            error(&no_layout)
        );

        let manifest_path = manifest.digest.blob_path();
        let corrupt = rewrite(&data, |p, mut c| {
            if p == manifest_path {
                c.push(b' ');
            }
            Some(c)
        });
        let message = error(&corrupt);
        assert!(
            message.contains(&manifest_path) && message.contains("does not match"),
            "{message}"
        );

        let missing = rewrite(&data, |p, c| (p != manifest_path).then_some(c));
        let message = error(&missing);
        assert!(
            message.contains("manifests[0]") && message.contains("is not in the archive"),
            "{message}"
        );

        let unnamed = rewrite(&data, |p, c| {
            Some(if p == "index.json" {
                String::from_utf8(c).unwrap().replace("annotations", "x-annotations").into_bytes()
            } else {
                c
            })
        });
        let message = error(&unnamed);
        assert!(message.contains("manifests[0]: no name"), "{message}");
    }

    #[test]
    fn a_name_from_the_oci_annotation_alone_is_enough() {
        let (_, data, _) = archive(Arch::Arm64);
        let oci_only = rewrite(&data, |p, c| {
            Some(if p == "index.json" {
                let text = String::from_utf8(c).unwrap();
                text.replace(r#""io.containerd.image.name":"registry.example/app:v1","#, "")
                    .into_bytes()
            } else {
                c
            })
        });
        let images = inspect(Path::new("app.tar"), &oci_only).unwrap();
        assert_eq!(images[0].name, "registry.example/app:v1");
        assert!(!images[0].descriptor.annotations.contains_key(CONTAINERD_NAME_ANNOTATION));
    }
}
