//! What goes onto the root filesystem from the packages: the files the profile names, every
//! shared library they need (read from their ELF `DT_NEEDED` entries and interpreter), the
//! symbolic links on the way, and the CA bundle. Nothing else of the packages is taken.
//! Then the links the profile makes itself (the ones Debian's maintainer scripts would),
//! each checked to lead to something the image has.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use crate::tree::{FileTree, Node, TreeError};

/// Links resolved in one lookup before giving up (as the kernel's ELOOP limit).
const MAX_LINKS: usize = 40;

/// Where the CA bundle goes; TLS clients (containerd pulls) read it there.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// No package has it.
    #[error("{path}: no package of the profile has it{}", needed_by.as_ref().map(|b| format!(" (needed by {b})")).unwrap_or_default())]
    Missing {
        /// The path or library name.
        path: String,
        /// The file that needs it, for libraries.
        needed_by: Option<String>,
    },
    /// Too many symbolic links.
    #[error("{0}: too many levels of symbolic links")]
    Loop(String),
    /// An ELF file that cannot be parsed.
    #[error("{path}: not a readable ELF file: {reason}")]
    Elf {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A profile link where the image already has something.
    #[error("link {0}: the image already has this path")]
    LinkExists(String),
    /// A profile link that leads nowhere.
    #[error("link {link} -> {target}: {reason}")]
    LinkTarget {
        /// The link.
        link: String,
        /// Where it points.
        target: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The tree refused a path.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// Copies `files` from `pool` into `out`, with the links leading to them and, for ELF
/// files, the libraries they need, searched in `library_dirs`.
pub fn take_with_libraries(
    pool: &FileTree,
    out: &mut FileTree,
    files: &[String],
    library_dirs: &[String],
) -> Result<(), RootfsError> {
    let mut done = BTreeSet::new();
    let mut pending: Vec<(PathBuf, Option<String>)> =
        files.iter().map(|f| (PathBuf::from(f), None)).collect();
    while let Some((path, needed_by)) = pending.pop() {
        let (real, links) = resolve(pool, &path).map_err(|e| match e {
            Lookup::Missing => RootfsError::Missing {
                path: path.display().to_string(),
                needed_by: needed_by.clone(),
            },
            Lookup::Loop => RootfsError::Loop(path.display().to_string()),
        })?;
        for link in links {
            let node = pool.get(&link).expect("resolve returns existing links").clone();
            out.insert(&link, node)?;
        }
        if !done.insert(real.clone()) {
            continue;
        }
        let node = pool.get(&real).expect("resolve returns an existing path").clone();
        if let Node::File { data, .. } = &node {
            for library in elf_needs(&real, data)? {
                let found = library_dirs
                    .iter()
                    .map(|dir| Path::new(dir).join(&library.name))
                    .find(|candidate| resolve(pool, candidate).is_ok());
                let by = Some(real.display().to_string());
                match (found, library.absolute) {
                    (Some(found), _) => pending.push((found, by)),
                    (None, true) => pending.push((PathBuf::from(&library.name), by)),
                    (None, false) => {
                        return Err(RootfsError::Missing { path: library.name, needed_by: by })
                    }
                }
            }
        }
        out.insert(&real, node)?;
    }
    Ok(())
}

/// Makes the symbolic links `links` (path, target) in `out`, once everything else they may
/// lead to is in it: each must be a new path, and must lead (through any links, these
/// included) to a file or directory of `out`.
pub fn add_links(out: &mut FileTree, links: &[(String, String)]) -> Result<(), RootfsError> {
    for (link, target) in links {
        if out.get(link).is_some() {
            return Err(RootfsError::LinkExists(link.clone()));
        }
        out.symlink(link, target.as_str())?;
    }
    for (link, target) in links {
        let refused =
            |reason| RootfsError::LinkTarget { link: link.clone(), target: target.clone(), reason };
        match resolve(out, Path::new(link)) {
            Ok(_) => {}
            Err(Lookup::Missing) => {
                return Err(refused("the image has no such file (list it in the profile's files)"))
            }
            Err(Lookup::Loop) => return Err(refused("too many levels of symbolic links")),
        }
    }
    Ok(())
}

/// One concatenated PEM bundle of the certificates ca-certificates ships, in name order
/// (what `update-ca-certificates` would write at install time).
pub fn ca_bundle(pool: &FileTree) -> Vec<u8> {
    let mut bundle = Vec::new();
    for (path, node) in pool.entries() {
        if let Node::File { data, .. } = node {
            if path.starts_with("usr/share/ca-certificates")
                && path.extension().is_some_and(|e| e == "crt")
            {
                bundle.extend_from_slice(data);
                if !data.ends_with(b"\n") {
                    bundle.push(b'\n');
                }
            }
        }
    }
    bundle
}

/// A library an ELF file needs: a name to search for, or the interpreter's absolute path.
struct Needed {
    name: String,
    absolute: bool,
}

fn elf_needs(path: &Path, data: &[u8]) -> Result<Vec<Needed>, RootfsError> {
    if !data.starts_with(b"\x7fELF") {
        return Ok(Vec::new());
    }
    let elf = goblin::elf::Elf::parse(data).map_err(|e| RootfsError::Elf {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut needs: Vec<Needed> =
        elf.libraries.iter().map(|l| Needed { name: l.to_string(), absolute: false }).collect();
    if let Some(interpreter) = elf.interpreter {
        needs.push(Needed { name: interpreter.to_string(), absolute: true });
    }
    Ok(needs)
}

enum Lookup {
    Missing,
    Loop,
}

/// Follows `path` through the tree's symbolic links: the real path and the links passed.
fn resolve(tree: &FileTree, path: &Path) -> Result<(PathBuf, Vec<PathBuf>), Lookup> {
    let mut links = Vec::new();
    let mut remaining: Vec<PathBuf> = path.components().filter_map(normal).rev().collect();
    let mut current = PathBuf::from("/");
    while let Some(part) = remaining.pop() {
        if part == Path::new("..") {
            current.pop();
            continue;
        }
        let next = current.join(&part);
        match tree.get(&next) {
            None => return Err(Lookup::Missing),
            Some(Node::Symlink { target }) => {
                if links.len() == MAX_LINKS {
                    return Err(Lookup::Loop);
                }
                links.push(next);
                let target = Path::new(target);
                if target.is_absolute() {
                    current = PathBuf::from("/");
                }
                remaining.extend(target.components().filter_map(normal).rev());
            }
            Some(_) => current = next,
        }
    }
    Ok((current, links))
}

/// The parts of a path that name something (`..` kept, `.` and `/` dropped).
fn normal(component: Component<'_>) -> Option<PathBuf> {
    match component {
        Component::Normal(part) => Some(PathBuf::from(part)),
        Component::ParentDir => Some(PathBuf::from("..")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_links_and_keeps_them() {
        let mut pool = FileTree::new();
        pool.symlink("/lib64", "usr/lib64").unwrap();
        pool.symlink("/usr/lib64/ld.so", "../lib/x86_64-linux-gnu/ld.so").unwrap();
        pool.file("/usr/lib/x86_64-linux-gnu/ld.so", 0o755, "loader").unwrap();
        pool.file("/usr/share/doc/unwanted", 0o644, "x").unwrap();
        let mut out = FileTree::new();
        take_with_libraries(&pool, &mut out, &["/lib64/ld.so".into()], &[]).unwrap();
        let paths: Vec<_> = out.entries().map(|(p, _)| p.display().to_string()).collect();
        assert!(paths.contains(&"lib64".into()) && paths.contains(&"usr/lib64/ld.so".into()));
        assert!(paths.contains(&"usr/lib/x86_64-linux-gnu/ld.so".into()));
        assert!(!paths.iter().any(|p| p.contains("doc")));
    }

    #[test]
    fn missing_files_and_loops_are_errors() {
        let mut pool = FileTree::new();
        pool.symlink("/a", "b").unwrap();
        pool.symlink("/b", "a").unwrap();
        let mut out = FileTree::new();
        let missing =
            take_with_libraries(&pool, &mut out, &["/usr/bin/nope".into()], &[]).unwrap_err();
        assert!(missing.to_string().starts_with("/usr/bin/nope: no package"), "{missing}");
        assert!(matches!(
            take_with_libraries(&pool, &mut out, &["/a".into()], &[]),
            Err(RootfsError::Loop(_))
        ));
    }

    #[test]
    fn takes_the_libraries_of_real_binaries() {
        // This test binary is an ELF file needing libc: give the pool its name and see it taken.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let elf = goblin::elf::Elf::parse(&exe).unwrap();
        let mut pool = FileTree::new();
        pool.file("/usr/bin/tool", 0o755, exe.clone()).unwrap();
        for library in &elf.libraries {
            pool.file(Path::new("/usr/lib/multiarch").join(library), 0o644, "lib").unwrap();
        }
        if let Some(interpreter) = elf.interpreter {
            pool.file(interpreter, 0o755, "ld").unwrap();
        }
        let mut out = FileTree::new();
        take_with_libraries(
            &pool,
            &mut out,
            &["/usr/bin/tool".into()],
            &["/usr/lib/multiarch".into()],
        )
        .unwrap();
        assert!(!elf.libraries.is_empty());
        for library in &elf.libraries {
            assert!(out.get(Path::new("/usr/lib/multiarch").join(library)).is_some(), "{library}");
        }
    }

    #[test]
    fn links_are_made_when_they_lead_into_the_image() {
        let mut out = FileTree::new();
        out.file("/usr/sbin/xtables-nft-multi", 0o755, "elf").unwrap();
        out.symlink("/sbin", "usr/sbin").unwrap();
        let links = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(l, t)| (l.to_string(), t.to_string())).collect()
        };
        // Relative and absolute targets, a link to a link listed after it, a path through
        // a link to a folder.
        add_links(
            &mut out,
            &links(&[
                ("/usr/bin/iptables", "../sbin/iptables-nft"),
                ("/usr/sbin/iptables-nft", "/sbin/xtables-nft-multi"),
                ("/usr/sbin/iptables", "xtables-nft-multi"),
            ]),
        )
        .unwrap();
        assert_eq!(
            out.get("/usr/sbin/iptables"),
            Some(&Node::Symlink { target: "xtables-nft-multi".into() })
        );
        let (real, _) = resolve(&out, Path::new("/usr/bin/iptables")).ok().unwrap();
        assert_eq!(real, Path::new("/usr/sbin/xtables-nft-multi"));

        let dangling = add_links(&mut out.clone(), &links(&[("/usr/sbin/nft", "nft-multi")]));
        let message = dangling.unwrap_err().to_string();
        assert!(
            message.starts_with("link /usr/sbin/nft -> nft-multi: the image has no"),
            "{message}"
        );
        let taken = add_links(&mut out.clone(), &links(&[("/usr/sbin/xtables-nft-multi", "x")]));
        assert!(matches!(taken, Err(RootfsError::LinkExists(_))));
        let cycle = add_links(&mut out.clone(), &links(&[("/a", "b"), ("/b", "a")]));
        assert!(
            matches!(cycle, Err(RootfsError::LinkTarget { reason, .. }) if reason.contains("levels"))
        );
        // A link below a link to a folder would be made through it: the tree refuses that.
        let through =
            add_links(&mut out.clone(), &links(&[("/sbin/ip6tables", "xtables-nft-multi")]));
        assert!(matches!(through, Err(RootfsError::Tree(_))));
    }

    #[test]
    fn ca_bundle_concatenates_in_order() {
        let mut pool = FileTree::new();
        pool.file("/usr/share/ca-certificates/mozilla/B.crt", 0o644, "b").unwrap();
        pool.file("/usr/share/ca-certificates/mozilla/A.crt", 0o644, "a\n").unwrap();
        assert_eq!(ca_bundle(&pool), b"a\nb\n");
    }
}
