//! apt's sources on the host: whether they have bookworm-backports, the host's own Debian
//! mirror, and the entry xtask adds for it (QEMU must come from there to match the host's
//! qemu-utils; DESIGN.md §8).

use std::path::{Path, PathBuf};

use crate::host::Host;

/// The suite QEMU comes from.
pub const BACKPORTS: &str = "bookworm-backports";
/// The one-line-style list.
const LIST: &str = "/etc/apt/sources.list";
/// The directory of further lists, one-line (`.list`) or deb822 (`.sources`).
const LIST_DIR: &str = "/etc/apt/sources.list.d";
/// The entry xtask adds.
pub const ADDED: &str = "/etc/apt/sources.list.d/cairn-backports.sources";

/// The text of apt's source lists: the main list first, then the directory's.
pub fn read_all(host: &impl Host) -> Vec<(PathBuf, String)> {
    let mut names = host.list(Path::new(LIST_DIR));
    names.sort();
    let paths = std::iter::once(PathBuf::from(LIST))
        .chain(names.into_iter().map(|name| Path::new(LIST_DIR).join(name)));
    paths.filter_map(|path| Some((path.clone(), host.read(&path)?))).collect()
}

/// Whether a line that is not a comment names `suite`.
pub fn has_suite(lists: &[(PathBuf, String)], suite: &str) -> bool {
    lists.iter().flat_map(|(_, text)| text.lines()).any(|line| {
        let line = line.trim_start();
        !line.starts_with('#') && line.split_whitespace().any(|word| word == suite)
    })
}

/// The host's Debian mirror (a URI ending in `/debian`): from a deb822 `.sources` file's
/// `URIs:`, else from a `deb URI ...` line.
pub fn mirror(lists: &[(PathBuf, String)]) -> Option<String> {
    let is_debian = |uri: &&str| uri.trim_end_matches('/').ends_with("/debian");
    let deb822 = lists
        .iter()
        .filter(|(path, _)| path.extension().is_some_and(|e| e == "sources"))
        .flat_map(|(_, text)| text.lines())
        .filter_map(|line| line.strip_prefix("URIs:"))
        .find_map(|uris| uris.split_whitespace().find(is_debian));
    let one_line = || {
        lists
            .iter()
            .filter(|(path, _)| path.extension().is_none_or(|e| e == "list"))
            .flat_map(|(_, text)| text.lines())
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                // `deb [options] URI suite...`
                (words.next() == Some("deb")).then_some(())?;
                words.find(|w| !w.starts_with('[') && !w.ends_with(']'))
            })
            .find(is_debian)
    };
    deb822.or_else(one_line).map(str::to_string)
}

/// The deb822 entry for [`BACKPORTS`] from `mirror`, checked with Debian's keyring.
pub fn backports_entry(mirror: &str) -> String {
    format!(
        "Types: deb\nURIs: {mirror}\nSuites: {BACKPORTS}\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    fn lists(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        files.iter().map(|(p, t)| (PathBuf::from(p), t.to_string())).collect()
    }

    const DEB822: &str = "Types: deb\n# http://archive.example/debian/20250520T000000Z\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";

    #[test]
    fn the_mirror_is_the_first_debian_uri_of_a_deb822_file() {
        let found = mirror(&lists(&[("/etc/apt/sources.list.d/debian.sources", DEB822)]));
        assert_eq!(found.as_deref(), Some("http://mirror.example/debian"));
    }

    #[test]
    fn without_deb822_the_mirror_comes_from_a_deb_line() {
        let text = "# deb http://old.example/debian bookworm main\ndeb-src http://src.example/debian bookworm main\ndeb [arch=amd64] http://mirror.example/debian/ bookworm main\n";
        let found = mirror(&lists(&[("/etc/apt/sources.list", text)]));
        assert_eq!(found.as_deref(), Some("http://mirror.example/debian/"));
        assert_eq!(
            mirror(&lists(&[(
                "/etc/apt/sources.list",
                "deb http://x.example/ubuntu jammy main\n"
            )])),
            None
        );
    }

    #[test]
    fn backports_count_only_on_lines_that_are_not_comments() {
        let commented =
            lists(&[("/etc/apt/sources.list", "# deb http://m/debian bookworm-backports main\n")]);
        assert!(!has_suite(&commented, BACKPORTS));
        let entry = lists(&[(ADDED, &backports_entry("http://m/debian"))]);
        assert!(has_suite(&entry, BACKPORTS));
        assert!(!has_suite(
            &lists(&[("/etc/apt/sources.list.d/debian.sources", DEB822)]),
            BACKPORTS
        ));
    }

    #[test]
    fn the_entry_is_deb822_with_the_mirror_and_debian_s_keyring() {
        assert_eq!(
            backports_entry("http://m/debian"),
            "Types: deb\nURIs: http://m/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        );
    }

    #[test]
    fn the_lists_are_read_main_list_first_then_the_directory_in_order() {
        let mut host = FakeHost::default();
        for (path, text) in [
            ("/etc/apt/sources.list.d/z.list", "z"),
            ("/etc/apt/sources.list.d/a.sources", "a"),
            ("/etc/apt/sources.list", "main"),
        ] {
            host.files.insert(path.into(), text.into());
        }
        let read: Vec<String> = read_all(&host).into_iter().map(|(_, t)| t).collect();
        assert_eq!(read, ["main", "a", "z"]);
    }
}
