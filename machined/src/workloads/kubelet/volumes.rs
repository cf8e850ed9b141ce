//! A pod's volumes on the host, under its data directory (`/var/lib/cairn/pods/<uid>`):
//!
//! - `volumes/<name>`: an emptyDir. With `medium: Memory` it is a tmpfs of `sizeLimit`
//!   bytes, or of half the node's memory when no limit is given ([`DEFAULT_TMPFS_SIZE`]: the
//!   kernel's own tmpfs default; upstream uses the node's allocatable memory, which Cairn does
//!   not compute). Its pages count against the memory limit of the container that writes them.
//! - `volume-subpaths/<volume>/<container>/<mount index>`: a volumeMount's `subPath`, opened
//!   beneath its volume ([`super::subpath`]) and bound here through its descriptor; this place,
//!   not the volume's path, is what CRI mounts into the container (upstream's layout).
//!
//! - `volumes/<name>` of a configMap or secret volume: the object's files, written by
//!   [`super::atomic_writer`] and rewritten when the object changes while the pod runs; a
//!   secret's on a tmpfs, so its data never reaches a disk (as upstream).
//!
//! - `volumes/<name>` of a downwardAPI volume: the pod's fields and resources its items name,
//!   written the same way (once: what they name does not change while the pod runs).
//!
//! - a persistentVolumeClaim's directory is the claim's own (see [`super::claims`]), outside
//!   the pod's data directory: it outlives the pod.
//!
//! Removing the pod unmounts everything under its data directory, newest first, and removes
//! the directory only once no mount is left in it: a recursive removal that went through a
//! bind of a hostPath would delete the host's files.
//!
//! Mounts go through [`Mounter`], so the plan runs in unit tests.

use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Volume};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::atomic_writer;
use super::claims::CLAIM_ROOT;
use super::downward::{self, Placement};
use super::objects::LocalObjects;
use super::source::DesiredPod;
use super::subpath::{self, SubPathError};

/// The size of a `medium: Memory` emptyDir that gives no `sizeLimit`.
pub const DEFAULT_TMPFS_SIZE: &str = "50%";
/// The mode of an emptyDir's tmpfs, as a disk-backed emptyDir's directory is made.
const TMPFS_MODE: &str = "0755";
/// How many times removal unmounts what it finds before it gives up.
const UNMOUNT_ROUNDS: usize = 3;

/// What can go wrong with a pod's volumes.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A file or directory of a volume.
    #[error("{what} {path}: {source}")]
    Io {
        /// Which kind of volume, or what the path is.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A hostPath of the wrong type.
    #[error("hostPath {path} is not a {kind}")]
    HostPathType {
        /// The path.
        path: PathBuf,
        /// `directory` or `file`.
        kind: &'static str,
    },
    /// A setting the kubelet cannot honour (the config's decoder refuses these).
    #[error("volume {volume:?}: {reason}")]
    Unsupported {
        /// The volume's name.
        volume: String,
        /// Why.
        reason: String,
    },
    /// A configMap or secret volume whose object or key is missing.
    #[error("volume {volume:?}: {reason}")]
    Projection {
        /// The volume's name.
        volume: String,
        /// What is missing.
        reason: String,
    },
    /// A subPath that cannot be opened beneath its volume.
    #[error(transparent)]
    SubPath(#[from] SubPathError),
    /// A mount or unmount.
    #[error("{action} {target}: {source}")]
    Mount {
        /// `mounting` or `unmounting`.
        action: &'static str,
        /// The mount point.
        target: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Mounts that stay after unmounting: the directory is left in place.
    #[error("{dir}: still mounted after unmounting: {left:?}; leaving it in place")]
    StillMounted {
        /// The pod's data directory.
        dir: PathBuf,
        /// What is still mounted in it.
        left: Vec<PathBuf>,
    },
}

/// A mount the kubelet makes on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A tmpfs (`nosuid,nodev`) with these options.
    Tmpfs {
        /// Where.
        target: PathBuf,
        /// Its `mode=`, `size=`.
        options: String,
    },
    /// A bind of `source` (non-recursive, as upstream binds subPaths).
    Bind {
        /// What: for a subPath, the `/proc/self/fd/N` of its descriptor.
        source: PathBuf,
        /// Where.
        target: PathBuf,
    },
}

/// The host's mounts, as the kubelet changes them.
pub trait Mounter: Send + Sync {
    /// Makes `mount`.
    fn mount(&self, mount: &Mount) -> io::Result<()>;
    /// Detaches the mount at `target` (the topmost one there).
    fn unmount(&self, target: &Path) -> io::Result<()>;
    /// The mount points at or under `dir`, oldest first.
    fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
}

/// The real [`Mounter`]: the mount syscalls, and `/proc/self/mountinfo`.
pub struct HostMounter;

impl Mounter for HostMounter {
    fn mount(&self, how: &Mount) -> io::Result<()> {
        match how {
            Mount::Tmpfs { target, options } => mount(
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(options.as_str()),
            ),
            Mount::Bind { source, target } => {
                mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            }
        }
        .map_err(io::Error::from)
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        // Detached, not unmounted: the containers that had it are gone or have their copy.
        umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).map_err(io::Error::from)
    }

    fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        // mountinfo names mount points by their real path.
        let dir = match std::fs::canonicalize(dir) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let infos = procfs::process::Process::myself()
            .and_then(|me| me.mountinfo())
            .map_err(|e| io::Error::other(format!("/proc/self/mountinfo: {e}")))?;
        Ok(infos.into_iter().map(|i| i.mount_point).filter(|p| p.starts_with(&dir)).collect())
    }
}

/// The tmpfs options of an emptyDir, `None` when it is disk-backed.
pub fn tmpfs_options(
    volume: &str,
    empty_dir: &EmptyDirVolumeSource,
) -> Result<Option<String>, VolumeError> {
    let unsupported = |reason: String| VolumeError::Unsupported { volume: volume.into(), reason };
    match empty_dir.medium.as_deref().unwrap_or("") {
        "" if empty_dir.size_limit.is_some() => {
            Err(unsupported("sizeLimit on a disk-backed emptyDir is not supported".into()))
        }
        "" => Ok(None),
        "Memory" => {
            let size = match &empty_dir.size_limit {
                Some(quantity) => cairn_api::config::pod::memory_bytes(quantity)
                    .map_err(|e| unsupported(format!("sizeLimit: {e}")))?,
                None => 0,
            };
            // A zero limit is no limit, as upstream reads it (size=0 would be an unbounded
            // tmpfs).
            let size = if size == 0 { DEFAULT_TMPFS_SIZE.to_string() } else { size.to_string() };
            Ok(Some(format!("mode={TMPFS_MODE},size={size}")))
        }
        other => Err(unsupported(format!("medium {other:?} is not supported"))),
    }
}

/// The volumes of one pod, in its data directory.
pub struct PodVolumes<'a> {
    dir: PathBuf,
    mounter: &'a dyn Mounter,
    fs_group: Option<u32>,
    /// Where the node's claims are.
    claims: PathBuf,
    /// The objects configMap and secret volumes read, and the pod's namespace.
    objects: Option<(&'a LocalObjects, &'a str)>,
    /// The pod and where it runs, which downwardAPI volumes tell.
    downward: Option<(&'a DesiredPod, &'a Placement)>,
}

impl<'a> PodVolumes<'a> {
    /// The volumes kept in `dir` (the pod's data directory), mounted by `mounter`.
    pub fn new(dir: PathBuf, mounter: &'a dyn Mounter) -> PodVolumes<'a> {
        let claims = CLAIM_ROOT.into();
        PodVolumes { dir, mounter, fs_group: None, claims, objects: None, downward: None }
    }

    /// The same volumes, whose downwardAPI volumes tell of `pod`, running at `placement`.
    pub fn with_downward(self, pod: &'a DesiredPod, placement: &'a Placement) -> PodVolumes<'a> {
        PodVolumes { downward: Some((pod, placement)), ..self }
    }

    /// The same volumes, whose configMap and secret volumes hold the files of `objects` for a
    /// pod in `namespace`.
    pub fn with_objects(self, objects: &'a LocalObjects, namespace: &'a str) -> PodVolumes<'a> {
        PodVolumes { objects: Some((objects, namespace)), ..self }
    }

    /// The same volumes, whose emptyDirs belong to group `fs_group` (the pod's `fsGroup`):
    /// group-writable, and what is made in them inherits the group (set-group-ID), as the
    /// upstream kubelet sets a volume's ownership.
    pub fn with_fs_group(self, fs_group: Option<u32>) -> PodVolumes<'a> {
        PodVolumes { fs_group, ..self }
    }

    /// Where a subPath of `volume` mounted by `container` as its `index`th volumeMount is
    /// bound.
    pub fn sub_path_target(&self, volume: &str, container: &str, index: usize) -> PathBuf {
        self.dir.join("volume-subpaths").join(volume).join(container).join(index.to_string())
    }

    /// The host path behind `volume`: what `DirectoryOrCreate`/`FileOrCreate` ask for is
    /// created; an emptyDir's directory too, with its tmpfs mounted unless it is.
    pub fn host_path(&self, volume: &Volume) -> Result<PathBuf, VolumeError> {
        if let Some(host_path) = &volume.host_path {
            return host_path_of(Path::new(&host_path.path), host_path.type_.as_deref());
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            return self.claim_path(&claim.claim_name);
        }
        let dir = self.volume_dir(&volume.name);
        if volume.config_map.is_some() || volume.secret.is_some() || volume.downward_api.is_some() {
            self.project(volume, &dir)?;
            return Ok(dir);
        }
        let io = |source| VolumeError::Io { what: "emptyDir", path: dir.clone(), source };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let empty_dir = volume.empty_dir.clone().unwrap_or_default();
        if let Some(options) = tmpfs_options(&volume.name, &empty_dir)? {
            if !self.mounts_at(&dir)? {
                self.mount(Mount::Tmpfs { target: dir.clone(), options })?;
            }
        }
        self.make_writable(&dir, "emptyDir")?;
        Ok(dir)
    }

    /// The same volumes, with the node's claims under `root`.
    pub fn with_claims_at(self, root: PathBuf) -> PodVolumes<'a> {
        PodVolumes { claims: root, ..self }
    }

    /// The directory of the claim `claim` names, made on its first mount; an error when the
    /// claim does not exist.
    fn claim_path(&self, claim: &str) -> Result<PathBuf, VolumeError> {
        let missing = || VolumeError::Projection {
            volume: claim.to_string(),
            reason: format!("persistentvolumeclaim {claim:?} not found"),
        };
        let (objects, namespace) = self.objects.ok_or_else(missing)?;
        if !objects.has_claim(namespace, claim) {
            return Err(missing());
        }
        let dir = super::claims::claim_dir(&self.claims, namespace, claim);
        if !dir.exists() {
            let io = |source| VolumeError::Io { what: "claim", path: dir.clone(), source };
            std::fs::create_dir_all(&dir).map_err(io)?;
            self.make_writable(&dir, "claim")?;
        }
        Ok(dir)
    }

    /// Makes `dir` writable by whatever user the containers run as, as the upstream kubelet
    /// makes an emptyDir (0777); with an fsGroup, owned by it and set-group-ID.
    fn make_writable(&self, dir: &Path, what: &'static str) -> Result<(), VolumeError> {
        let io = |source| VolumeError::Io { what, path: dir.to_path_buf(), source };
        let mode = match self.fs_group {
            Some(group) => {
                std::os::unix::fs::lchown(dir, None, Some(group)).map_err(io)?;
                0o2777
            }
            None => 0o777,
        };
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io)
    }

    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.dir.join("volumes").join(name)
    }

    /// Writes the files of the configMap, secret or downwardAPI `volume` into `dir` (a
    /// secret's on its own tmpfs); returns whether they changed.
    fn project(&self, volume: &Volume, dir: &Path) -> Result<bool, VolumeError> {
        let projection =
            |reason: String| VolumeError::Projection { volume: volume.name.clone(), reason };
        let files = match &volume.downward_api {
            Some(source) => {
                let (pod, placement) =
                    self.downward.ok_or_else(|| projection("no pod to tell of".into()))?;
                downward::volume_files(pod, source, placement).map_err(projection)?
            }
            None => {
                let (objects, namespace) =
                    self.objects.ok_or_else(|| projection("no objects to read it from".into()))?;
                objects
                    .volume_files(namespace, volume)
                    .unwrap_or_else(|| Ok(Vec::new()))
                    .map_err(projection)?
            }
        };
        let io = |source| VolumeError::Io { what: "volume", path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        if volume.secret.is_some() && !self.mounts_at(dir)? {
            let options = format!("mode={TMPFS_MODE},size={DEFAULT_TMPFS_SIZE}");
            self.mount(Mount::Tmpfs { target: dir.to_path_buf(), options })?;
        }
        atomic_writer::write(dir, &files, self.fs_group).map_err(io)
    }

    /// Rewrites the configMap and secret volumes of `volumes` that were set up already, for
    /// objects that changed while the pod runs (as the upstream kubelet updates them; a subPath
    /// keeps what it was bound to). Returns a line per volume that changed or failed.
    pub fn refresh_projections(&self, volumes: &[Volume]) -> Vec<String> {
        let projected = volumes.iter().filter(|v| v.config_map.is_some() || v.secret.is_some());
        let mut done = Vec::new();
        for volume in projected {
            let dir = self.volume_dir(&volume.name);
            if !dir.join("..data").exists() {
                continue;
            }
            match self.project(volume, &dir) {
                Ok(true) => done.push(format!("volume {:?} updated", volume.name)),
                Ok(false) => {}
                Err(e) => done.push(format!("updating {e}")),
            }
        }
        done
    }

    /// Binds `sub_path` of `volume` (whose host path is `volume_dir`) for the `index`th
    /// volumeMount of `container`; returns where, for CRI. What an earlier run of the
    /// container had bound there is unmounted first: the subPath is opened afresh.
    pub fn bind_sub_path(
        &self,
        volume: &str,
        volume_dir: &Path,
        sub_path: &str,
        container: &str,
        index: usize,
    ) -> Result<PathBuf, VolumeError> {
        let target = self.sub_path_target(volume, container, index);
        for _ in 0..UNMOUNT_ROUNDS {
            if !self.mounts_at(&target)? {
                break;
            }
            self.unmount(&target)?;
        }
        if self.mounts_at(&target)? {
            return Err(VolumeError::StillMounted { dir: target.clone(), left: vec![target] });
        }
        let opened = subpath::open(volume, volume_dir, sub_path)?;
        let io =
            |source| VolumeError::Io { what: "subPath mount point", path: target.clone(), source };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        // A dir for a dir, a file for anything else (never a link); a previous run's may be
        // the other kind.
        // Never a recursive removal: what is left here is an empty mount point.
        match std::fs::symlink_metadata(&target) {
            Ok(meta) if !meta.is_symlink() && meta.is_dir() == opened.is_dir() => {}
            Ok(meta) if meta.is_dir() => std::fs::remove_dir(&target).map_err(io)?,
            Ok(_) => std::fs::remove_file(&target).map_err(io)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        if !target.exists() {
            if opened.is_dir() {
                std::fs::create_dir(&target).map_err(io)?;
            } else {
                std::fs::File::create(&target).map_err(io)?;
            }
        }
        self.mount(Mount::Bind { source: opened.proc_path(), target: target.clone() })?;
        Ok(target)
    }

    /// Unmounts everything under the pod's data directory (newest first), then removes it.
    pub fn remove(&self) -> Result<(), VolumeError> {
        for _ in 0..UNMOUNT_ROUNDS {
            let mounted = self.mounts_under()?;
            if mounted.is_empty() {
                break;
            }
            for target in mounted.iter().rev() {
                if let Err(error) = self.unmount(target) {
                    // One under a mount detached before went with it.
                    if self.mounts_under()?.contains(target) {
                        return Err(error);
                    }
                }
            }
        }
        let left = self.mounts_under()?;
        if !left.is_empty() {
            return Err(VolumeError::StillMounted { dir: self.dir.clone(), left });
        }
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(VolumeError::Io {
                what: "pod data directory",
                path: self.dir.clone(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn mounts_under(&self) -> Result<Vec<PathBuf>, VolumeError> {
        self.mounter.mounts_under(&self.dir).map_err(|source| VolumeError::Io {
            what: "mounts of",
            path: self.dir.clone(),
            source,
        })
    }

    /// Whether something is mounted at `target` itself.
    fn mounts_at(&self, target: &Path) -> Result<bool, VolumeError> {
        let real = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
        let mounts = self.mounter.mounts_under(target).map_err(|source| VolumeError::Io {
            what: "mounts of",
            path: target.to_path_buf(),
            source,
        })?;
        Ok(mounts.iter().any(|m| *m == real || m == target))
    }

    fn mount(&self, mount: Mount) -> Result<(), VolumeError> {
        let target = match &mount {
            Mount::Tmpfs { target, .. } | Mount::Bind { target, .. } => target.clone(),
        };
        self.mounter.mount(&mount).map_err(|source| VolumeError::Mount {
            action: "mounting",
            target,
            source,
        })
    }

    fn unmount(&self, target: &Path) -> Result<(), VolumeError> {
        self.mounter.unmount(target).map_err(|source| VolumeError::Mount {
            action: "unmounting",
            target: target.to_path_buf(),
            source,
        })
    }
}

/// A hostPath, checked or created as its `type` says.
fn host_path_of(path: &Path, kind: Option<&str>) -> Result<PathBuf, VolumeError> {
    let io = |source| VolumeError::Io { what: "hostPath", path: path.to_path_buf(), source };
    match kind.unwrap_or("") {
        "DirectoryOrCreate" => std::fs::create_dir_all(path).map_err(io)?,
        "FileOrCreate" => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        }
        "Directory" if !path.is_dir() => {
            return Err(VolumeError::HostPathType { path: path.to_path_buf(), kind: "directory" })
        }
        "File" if !path.is_file() => {
            return Err(VolumeError::HostPathType { path: path.to_path_buf(), kind: "file" })
        }
        _ => {}
    }
    Ok(path.to_path_buf())
}

/// Removes the data directories under `root` of the pods `keep` does not keep (by uid):
/// left by a crash, or by pods removed while the kubelet was not running. Returns what it
/// did, for the log.
pub fn sweep(mounter: &dyn Mounter, root: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let mut done = Vec::new();
    for entry in entries.flatten() {
        let uid = entry.file_name().to_string_lossy().into_owned();
        if keep(&uid) {
            continue;
        }
        done.push(match PodVolumes::new(entry.path(), mounter).remove() {
            Ok(()) => format!("removed the volumes of a pod no source has (uid {uid})"),
            Err(e) => format!("removing the volumes of uid {uid}: {e}"),
        });
    }
    done
}

/// A [`Mounter`] that records what it is asked and keeps a mount table, for tests.
#[cfg(test)]
#[derive(Default)]
pub struct RecordingMounter {
    /// What was asked, in order: a bind's source is given as where its descriptor led.
    pub log: std::sync::Mutex<Vec<String>>,
    mounted: std::sync::Mutex<Vec<PathBuf>>,
}

#[cfg(test)]
impl Mounter for RecordingMounter {
    fn mount(&self, mount: &Mount) -> io::Result<()> {
        let (line, target) = match mount {
            Mount::Tmpfs { target, options } => {
                (format!("tmpfs {} {options}", target.display()), target)
            }
            Mount::Bind { source, target } => {
                let led_to = std::fs::read_link(source)?;
                (format!("bind {} {}", led_to.display(), target.display()), target)
            }
        };
        self.log.lock().unwrap().push(line);
        self.mounted.lock().unwrap().push(target.clone());
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        self.log.lock().unwrap().push(format!("unmount {}", target.display()));
        let mut mounted = self.mounted.lock().unwrap();
        let at = mounted
            .iter()
            .rposition(|m| m == target)
            .ok_or(io::Error::from_raw_os_error(nix::libc::EINVAL))?;
        mounted.remove(at);
        Ok(())
    }

    fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(self.mounted.lock().unwrap().iter().filter(|m| m.starts_with(dir)).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn volume(yaml: &str) -> Volume {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn log(mounter: &RecordingMounter, base: &Path) -> Vec<String> {
        let base = format!("{}/", base.display());
        mounter.log.lock().unwrap().iter().map(|line| line.replace(&base, "")).collect()
    }

    #[test]
    fn memory_empty_dirs_are_tmpfs_sized_by_their_limit() {
        let options = |yaml: &str| {
            let volume = volume(yaml);
            tmpfs_options(&volume.name, &volume.empty_dir.unwrap_or_default())
                .map_err(|e| e.to_string())
        };
        assert_eq!(options("{name: a, emptyDir: {}}"), Ok(None));
        assert_eq!(
            options("{name: a, emptyDir: {medium: Memory, sizeLimit: 64Mi}}"),
            Ok(Some("mode=0755,size=67108864".into()))
        );
        assert_eq!(
            options("{name: a, emptyDir: {medium: Memory}}"),
            Ok(Some("mode=0755,size=50%".into()))
        );
        assert_eq!(
            options("{name: a, emptyDir: {medium: Memory, sizeLimit: '0'}}"),
            Ok(Some("mode=0755,size=50%".into()))
        );
        assert_eq!(
            options("{name: a, emptyDir: {sizeLimit: 1Gi}}"),
            Err("volume \"a\": sizeLimit on a disk-backed emptyDir is not supported".into())
        );
        assert_eq!(
            options("{name: a, emptyDir: {medium: HugePages-2Mi}}"),
            Err("volume \"a\": medium \"HugePages-2Mi\" is not supported".into())
        );
    }

    #[test]
    fn empty_dirs_are_writable_by_any_user_and_an_fs_group_owns_them_not_host_paths() {
        use std::os::unix::fs::MetadataExt as _;
        let base = tempfile::tempdir().unwrap();
        let host = base.path().join("host");
        std::fs::create_dir(&host).unwrap();
        let mounter = RecordingMounter::default();
        let volumes = PodVolumes::new(base.path().join("pod"), &mounter).with_fs_group(Some(2000));
        let dir = volumes.host_path(&volume("{name: scratch, emptyDir: {}}")).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.gid(), meta.mode() & 0o7777), (2000, 0o2777));
        let without = PodVolumes::new(base.path().join("other"), &mounter);
        let dir = without.host_path(&volume("{name: scratch, emptyDir: {}}")).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o777, "world-writable, as upstream");
        let yaml = format!("{{name: data, hostPath: {{path: {}}}}}", host.display());
        let host_meta = std::fs::metadata(volumes.host_path(&volume(&yaml)).unwrap()).unwrap();
        assert_ne!(host_meta.gid(), 2000);
    }

    #[test]
    fn config_map_and_secret_volumes_hold_their_objects_and_follow_changes() {
        use cairn_api::config::objects::LocalObject;
        let objects = |site: &str| {
            let list: Vec<LocalObject> = serde_yaml::from_str(&format!(
                "- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: site, namespace: apps}}, data: {{index.html: {site}}}}}\n\
                 - {{apiVersion: v1, kind: Secret, metadata: {{name: tls, namespace: apps}}, stringData: {{key.pem: k}}}}\n"
            ))
            .unwrap();
            super::super::objects::LocalObjects::new(&list)
        };
        let base = tempfile::tempdir().unwrap();
        let mounter = RecordingMounter::default();
        let (v1, v2) = (objects("v1"), objects("v2"));
        let pod = PodVolumes::new(base.path().join("pod"), &mounter).with_objects(&v1, "apps");
        let site = volume("{name: site, configMap: {name: site}}");
        let tls = volume("{name: tls, secret: {secretName: tls, defaultMode: 256}}");
        let site_dir = pod.host_path(&site).unwrap();
        let tls_dir = pod.host_path(&tls).unwrap();
        assert_eq!(std::fs::read_to_string(site_dir.join("index.html")).unwrap(), "v1");
        assert_eq!(std::fs::read_to_string(tls_dir.join("key.pem")).unwrap(), "k");
        // The secret's files are on a tmpfs of their own; the config map's are not.
        let tmpfs = format!("tmpfs {} mode=0755,size=50%", tls_dir.display());
        assert_eq!(*mounter.log.lock().unwrap(), [tmpfs]);

        // The config map changed: the running pod's volume follows, the secret stays.
        let declared = [site.clone(), tls, volume("{name: other, configMap: {name: gone}}")];
        let pod = PodVolumes::new(base.path().join("pod"), &mounter).with_objects(&v2, "apps");
        assert_eq!(pod.refresh_projections(&declared), ["volume \"site\" updated"]);
        assert_eq!(std::fs::read_to_string(site_dir.join("index.html")).unwrap(), "v2");
        assert!(pod.refresh_projections(&declared).is_empty());

        // In another namespace the objects do not exist: the volume cannot be made.
        let elsewhere =
            PodVolumes::new(base.path().join("b"), &mounter).with_objects(&v2, "default");
        let error = elsewhere.host_path(&site).unwrap_err().to_string();
        assert_eq!(error, "volume \"site\": configmap \"site\" not found");
    }

    #[test]
    fn claims_are_the_nodes_directories_and_outlive_the_pod() {
        use cairn_api::config::objects::LocalObject;
        let list: Vec<LocalObject> = serde_yaml::from_str(concat!(
            "- {apiVersion: v1, kind: PersistentVolumeClaim, metadata: {name: data},\n",
            "   spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}\n",
            "- {apiVersion: apps/v1, kind: StatefulSet, metadata: {name: db}, spec: {replicas: 2,\n",
            "   selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: []}},\n",
            "   volumeClaimTemplates: [{metadata: {name: rows}, spec: {resources: {requests: {storage: 1Gi}}}}]}}\n",
        ))
        .unwrap();
        let objects = super::super::objects::LocalObjects::new(&list);
        let base = tempfile::tempdir().unwrap();
        let mounter = RecordingMounter::default();
        let claims = base.path().join("claims");
        let pod = PodVolumes::new(base.path().join("pod"), &mounter)
            .with_objects(&objects, "default")
            .with_claims_at(claims.clone());
        let data = pod.host_path(&volume("{name: d, persistentVolumeClaim: {claimName: data}}"));
        assert_eq!(data.unwrap(), claims.join("default/data"));
        let rows = volume("{name: r, persistentVolumeClaim: {claimName: rows-db-1}}");
        assert_eq!(pod.host_path(&rows).unwrap(), claims.join("default/rows-db-1"));
        std::fs::write(claims.join("default/data/kept"), "").unwrap();
        pod.remove().unwrap();
        assert!(claims.join("default/data/kept").exists(), "a claim outlives its pod");
        let missing = volume("{name: m, persistentVolumeClaim: {claimName: rows-db-2}}");
        let error = pod.host_path(&missing).unwrap_err().to_string();
        assert_eq!(error, "volume \"rows-db-2\": persistentvolumeclaim \"rows-db-2\" not found");
    }

    #[test]
    fn the_mount_plan_mounts_once_rebinds_subpaths_and_unmounts_newest_first() {
        let base = tempfile::tempdir().unwrap();
        let mounter = RecordingMounter::default();
        let pod = PodVolumes::new(base.path().join("pod"), &mounter);
        let memory = volume("{name: mem, emptyDir: {medium: Memory, sizeLimit: 1Mi}}");
        let disk = volume("{name: disk, emptyDir: {}}");
        let mem_dir = pod.host_path(&memory).unwrap();
        assert_eq!(pod.host_path(&memory).unwrap(), mem_dir, "mounted once");
        let disk_dir = pod.host_path(&disk).unwrap();
        std::fs::create_dir(disk_dir.join("site")).unwrap();
        std::fs::write(mem_dir.join("file"), "").unwrap();
        let site = pod.bind_sub_path("disk", &disk_dir, "site", "web", 0).unwrap();
        assert_eq!(site, base.path().join("pod/volume-subpaths/disk/web/0"));
        assert!(site.is_dir());
        // The container's next run: bound afresh, now to a file.
        std::fs::remove_dir(disk_dir.join("site")).unwrap();
        std::fs::write(disk_dir.join("site"), "").unwrap();
        pod.bind_sub_path("disk", &disk_dir, "site", "web", 0).unwrap();
        assert!(site.is_file());
        pod.bind_sub_path("mem", &mem_dir, "file", "sidecar", 1).unwrap();
        pod.remove().unwrap();
        assert_eq!(
            log(&mounter, base.path()),
            [
                "tmpfs pod/volumes/mem mode=0755,size=1048576",
                "bind pod/volumes/disk/site pod/volume-subpaths/disk/web/0",
                "unmount pod/volume-subpaths/disk/web/0",
                "bind pod/volumes/disk/site pod/volume-subpaths/disk/web/0",
                "bind pod/volumes/mem/file pod/volume-subpaths/mem/sidecar/1",
                "unmount pod/volume-subpaths/mem/sidecar/1",
                "unmount pod/volume-subpaths/disk/web/0",
                "unmount pod/volumes/mem",
            ]
        );
        assert!(!base.path().join("pod").exists());
    }

    #[test]
    fn an_escaping_subpath_is_refused_and_nothing_is_mounted() {
        let base = tempfile::tempdir().unwrap();
        let mounter = RecordingMounter::default();
        let pod = PodVolumes::new(base.path().join("pod"), &mounter);
        let dir = pod.host_path(&volume("{name: shared, emptyDir: {}}")).unwrap();
        symlink("/", dir.join("x")).unwrap();
        let error = pod.bind_sub_path("shared", &dir, "x/etc", "victim", 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "volume \"shared\", subPath \"x/etc\": it leads out of the volume (through a \
             symbolic link, an absolute one or one with '..')"
        );
        assert!(mounter.log.lock().unwrap().is_empty());
    }

    #[test]
    fn removal_leaves_a_directory_that_stays_mounted() {
        struct Stuck;
        impl Mounter for Stuck {
            fn mount(&self, _: &Mount) -> io::Result<()> {
                Ok(())
            }
            fn unmount(&self, _: &Path) -> io::Result<()> {
                Err(io::Error::from_raw_os_error(nix::libc::EPERM))
            }
            fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
                Ok(vec![dir.join("volumes/mem")])
            }
        }
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("pod");
        std::fs::create_dir_all(dir.join("volumes/mem")).unwrap();
        let error = PodVolumes::new(dir.clone(), &Stuck).remove().unwrap_err();
        assert!(error.to_string().starts_with("unmounting "), "{error}");
        assert!(dir.join("volumes/mem").exists());
    }

    #[test]
    fn the_sweep_removes_the_pods_nobody_keeps() {
        let base = tempfile::tempdir().unwrap();
        for uid in ["kept", "gone"] {
            std::fs::create_dir_all(base.path().join(uid).join("volumes/v")).unwrap();
        }
        let done = sweep(&RecordingMounter::default(), base.path(), |uid| uid == "kept");
        assert_eq!(done, ["removed the volumes of a pod no source has (uid gone)"]);
        assert!(base.path().join("kept").exists() && !base.path().join("gone").exists());
    }

    /// The real thing, as root: the bind goes through the descriptor, a tmpfs gets its size,
    /// and removal unmounts before it deletes, so the bound host files survive.
    #[test]
    fn real_mounts_are_made_and_removed_without_touching_bound_files() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let host = base.path().join("host");
        std::fs::create_dir_all(host.join("site")).unwrap();
        std::fs::write(host.join("site/index.html"), "kept").unwrap();
        let pod = PodVolumes::new(base.path().join("pod"), &HostMounter);
        let memory = pod
            .host_path(&volume("{name: mem, emptyDir: {medium: Memory, sizeLimit: 1Mi}}"))
            .unwrap();
        let site = pod.bind_sub_path("data", &host, "site", "web", 0).unwrap();
        let shown = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let tmpfs = shown.lines().find(|l| l.contains(&*memory.to_string_lossy())).unwrap();
        assert!(tmpfs.contains("tmpfs") && tmpfs.contains("size=1024k"), "{tmpfs}");
        assert_eq!(std::fs::read_to_string(site.join("index.html")).unwrap(), "kept");
        // Bound again for the next run: one mount there, not two.
        pod.bind_sub_path("data", &host, "site", "web", 0).unwrap();
        assert_eq!(HostMounter.mounts_under(&site).unwrap().len(), 1);
        pod.remove().unwrap();
        assert!(!base.path().join("pod").exists());
        assert_eq!(std::fs::read_to_string(host.join("site/index.html")).unwrap(), "kept");
        assert!(HostMounter.mounts_under(base.path()).unwrap().is_empty());
    }
}
