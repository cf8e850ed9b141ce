//! `localhost/busybox:latest`'s files: Debian's busybox-static as `/bin/busybox`, with a link
//! beside it for every other applet it has (`busybox` itself is one), and the few files a
//! shell image needs (`/etc/passwd`, `/etc/group`, `/root`, `/tmp`).
//!
//! The applet list is read from the binary itself, so it is the list of the very build in the
//! image, on every architecture, without running a foreign-architecture program (the package
//! ships no links and no list, and a list kept in this repository would drift from Debian's
//! configuration). BusyBox keeps its applet names as one constant (`applet_names`, generated
//! into `applet_tables.h` at its build): the names sorted by `strcmp`, each followed by a NUL,
//! the last by two; `busybox --list` prints exactly that table. It starts with `[` and `[[`
//! (the `test` aliases, first in byte order), a byte sequence found once in the binary; none
//! or several is an error. What follows must be strictly sorted names of applet characters,
//! and `sh` and `httpd` must be among them, or the build stops: a binary laid out otherwise
//! is an error, never a short list. (Checked: for trixie's busybox-static 1:1.37.0-6+b9 the
//! table read from the amd64 binary is `busybox --list`'s 272 names, and the arm64 binary's
//! is the same; a unit test compares them whenever the amd64 package is in the cache.)

use cairn_api::arch::Arch;

use crate::executable::{self, ExecutableError};
use crate::tree::{FileTree, TreeError};

/// Where busybox-static's package puts the binary.
pub const PACKAGE_PATH: &str = "/usr/bin/busybox";
/// Where the image has it; the applet links are beside it.
pub const IMAGE_PATH: &str = "/bin/busybox";

/// The start of the applet name table: the applets `[` and `[[`.
const TABLE_START: &[u8] = b"[\0[[\0";

/// Applets an image must have: a shell, and what the examples serve pages with.
pub const REQUIRED_APPLETS: [&str; 2] = ["sh", "httpd"];

/// busybox is unfit for the image.
#[derive(Debug, thiserror::Error)]
pub enum BusyboxError {
    /// Not a static executable for the board.
    #[error("{PACKAGE_PATH} of busybox-static: {0}")]
    Executable(#[from] ExecutableError),
    /// The applet table cannot be found or read.
    #[error("{PACKAGE_PATH} of busybox-static: {0}")]
    Applets(String),
    /// An applet the image must have is not built in.
    #[error("{PACKAGE_PATH} of busybox-static has no {0} applet")]
    Missing(&'static str),
    /// The tree refused a path.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// The applet names compiled into the busybox `binary`, in its (byte) order.
pub fn applets(binary: &[u8]) -> Result<Vec<String>, BusyboxError> {
    let error = |reason: String| BusyboxError::Applets(reason);
    let starts: Vec<usize> = binary
        .windows(TABLE_START.len())
        .enumerate()
        .filter(|(_, window)| *window == TABLE_START)
        .map(|(i, _)| i)
        .collect();
    let start =
        match starts.as_slice() {
            [start] => *start,
            [] => return Err(error(
                "no applet name table (a run of NUL-terminated names starting with \"[\", \"[[\")"
                    .into(),
            )),
            _ => return Err(error(format!("{} candidate applet name tables", starts.len()))),
        };
    let table = &binary[start..];
    let end = table
        .windows(2)
        .position(|pair| pair == b"\0\0")
        .ok_or_else(|| error("the applet name table does not end".into()))?;
    let mut names: Vec<String> = Vec::new();
    for raw in table[..end].split(|&b| b == 0) {
        let name = std::str::from_utf8(raw)
            .ok()
            .filter(|name| {
                !name.is_empty()
                    && name.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.[".contains(&b)
                    })
            })
            .ok_or_else(|| {
                error(format!(
                    "{:?} after {:?} in the applet name table is no applet name",
                    String::from_utf8_lossy(raw),
                    names.last().map(String::as_str).unwrap_or_default()
                ))
            })?;
        if let Some(previous) = names.last() {
            if previous.as_str() >= name {
                return Err(error(format!(
                    "the applet name table is not sorted ({previous:?} before {name:?})"
                )));
            }
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// The image's files: `binary` (busybox-static's busybox, checked to be static for `arch`) as
/// [`IMAGE_PATH`], a link to it in `/bin` for each of its applets, and a minimal `/etc`.
/// Returns the tree and the applets.
pub fn image_tree(binary: Vec<u8>, arch: Arch) -> Result<(FileTree, Vec<String>), BusyboxError> {
    executable::check_static(&binary, arch)?;
    let applets = applets(&binary)?;
    for required in REQUIRED_APPLETS {
        if !applets.iter().any(|a| a == required) {
            return Err(BusyboxError::Missing(required));
        }
    }
    let mut tree = FileTree::new();
    // `busybox` is an applet of its own (it lists and installs the others): the binary.
    for applet in applets.iter().filter(|a| *a != "busybox") {
        tree.symlink(format!("/bin/{applet}"), "busybox")?;
    }
    tree.file(IMAGE_PATH, 0o755, binary)?;
    // Mount points and the files a shell, httpd or id look users up in.
    for dir in ["/dev", "/proc", "/sys", "/etc", "/var/www"] {
        tree.dir(dir, 0o755)?;
    }
    tree.dir("/root", 0o700)?;
    tree.dir("/tmp", 0o1777)?;
    tree.file(
        "/etc/passwd",
        0o644,
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    tree.file("/etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\n")?;
    Ok((tree, applets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Node;

    /// Bytes around a table as the linker leaves them: other constants before and after.
    fn binary_with(table: &[u8]) -> Vec<u8> {
        let mut binary = b"\x7fELF...\xa0\x2a\xc0 ".to_vec();
        binary.extend_from_slice(table);
        binary.extend_from_slice(b"/var/log/wtmp\0other\0");
        binary
    }

    #[test]
    fn reads_the_applet_table() {
        let binary = binary_with(b"[\0[[\0ash\0httpd\0run-parts\0sh\0ssl_client\0zcat\0\0");
        assert_eq!(
            applets(&binary).unwrap(),
            ["[", "[[", "ash", "httpd", "run-parts", "sh", "ssl_client", "zcat"]
        );
    }

    #[test]
    fn a_table_it_cannot_vouch_for_is_an_error() {
        let error = |table: &[u8]| applets(&binary_with(table)).unwrap_err().to_string();
        assert!(error(b"ash\0sh\0\0").contains("no applet name table"));
        assert!(error(b"[\0[[\0sh\0ash\0\0").contains(r#"not sorted ("sh" before "ash")"#));
        assert!(error(b"[\0[[\0ash\0Sh\0\0").contains(r#""Sh" after "ash""#));
        assert!(error(b"[\0[[\0ash\0\0[\0[[\0sh\0\0").contains("2 candidate"));
        assert!(applets(b"[\0[[\0sh\0").unwrap_err().to_string().contains("does not end"));
    }

    #[test]
    fn the_tree_links_every_applet_to_the_binary() {
        let table = b"[\0[[\0busybox\0httpd\0sh\0\0";
        let binary = crate::executable::minimal_static_elf(Arch::Arm64, table);
        let (tree, applets) = image_tree(binary.clone(), Arch::Arm64).unwrap();
        assert_eq!(applets, ["[", "[[", "busybox", "httpd", "sh"]);
        assert_eq!(tree.get("/bin/busybox"), Some(&Node::File { mode: 0o755, data: binary }));
        for link in ["/bin/[", "/bin/[[", "/bin/httpd", "/bin/sh"] {
            assert_eq!(tree.get(link), Some(&Node::Symlink { target: "busybox".into() }), "{link}");
        }
        assert_eq!(tree.get("/tmp"), Some(&Node::Dir { mode: 0o1777 }));
        assert!(
            matches!(tree.get("/etc/passwd"), Some(Node::File { data, .. }) if data.starts_with(b"root:x:0:0:"))
        );

        let no_httpd = crate::executable::minimal_static_elf(Arch::Arm64, b"[\0[[\0sh\0\0");
        let error = image_tree(no_httpd, Arch::Arm64).unwrap_err().to_string();
        assert_eq!(error, "/usr/bin/busybox of busybox-static has no httpd applet");
        let foreign = crate::executable::minimal_static_elf(Arch::Armv7, table);
        let error = image_tree(foreign, Arch::Arm64).unwrap_err().to_string();
        assert!(error.contains("not arm64"), "{error}");
    }

    #[test]
    fn the_tree_needs_a_static_busybox_with_a_shell_and_httpd() {
        // This test's executable is no static busybox.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let error = image_tree(exe, Arch::X86_64).unwrap_err().to_string();
        assert!(
            error.contains("busybox-static") && error.contains("dynamically linked"),
            "{error}"
        );
    }

    /// The real thing, when a build has left busybox-static's package in the download cache
    /// (`$CAIRN_CACHE/debs`, or the default cache): its applets are those `busybox --list`
    /// prints.
    #[test]
    fn matches_busybox_list_of_the_cached_package() {
        let cache = std::env::var_os("CAIRN_CACHE").map(std::path::PathBuf::from).or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::Path::new(&h).join(".cache/cairn/image-builder"))
        });
        let Some(deb) = cache
            .and_then(|c| std::fs::read_dir(c.join("debs")).ok())
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with("busybox-static_") && n.ends_with("_amd64.deb")
                })
            })
        else {
            eprintln!("no busybox-static .deb in the cache: skipped");
            return;
        };
        let mut pool = FileTree::new();
        crate::deb::unpack_into(&deb, &mut pool, |p| p == std::path::Path::new(PACKAGE_PATH))
            .unwrap();
        let Some(Node::File { data, .. }) = pool.get(PACKAGE_PATH) else {
            panic!("{} has no {PACKAGE_PATH}", deb.display());
        };
        let dir = tempfile::tempdir().unwrap();
        let busybox = dir.path().join("busybox");
        std::fs::write(&busybox, data).unwrap();
        std::fs::set_permissions(&busybox, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let listed = std::process::Command::new(&busybox).arg("--list").output().unwrap();
        let listed: Vec<String> =
            String::from_utf8(listed.stdout).unwrap().lines().map(str::to_string).collect();
        let (tree, applets) = image_tree(data.clone(), Arch::X86_64).unwrap();
        assert_eq!(applets, listed);
        assert!(applets.len() > 200, "{}", applets.len());
        assert_eq!(tree.get("/bin/httpd"), Some(&Node::Symlink { target: "busybox".into() }));
        assert_eq!(tree.get(IMAGE_PATH), Some(&Node::File { mode: 0o755, data: data.clone() }));
    }
}
