//! Assembling an image from fetched packages and the machined and pause binaries: kernel and
//! modules, initramfs, root squashfs (with the preloaded container images), ESP with the
//! bootloader, the GPT disk (`.raw`, `.raw.zst`) and a build report. Every step is
//! deterministic: same inputs, same bytes.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use cairn_api::arch::Arch;
use cairn_api::bootstrap::BootstrapToken;
use cairn_api::bundle::{ArtifactKind, BundleInfo, SigningKey};
use cairn_api::disk::boot_entry::{
    version_path, BootEntry, LoaderConf, ENTRIES_DIR, LOADER_CONF_PATH,
};
use cairn_api::disk::entry_name::EntryName;
use cairn_api::image::{
    Slot, BOOTSTRAP_TOKEN_PATH, MACHINED_PATH, MODULE_LOAD_LIST, TIME_FLOOR_PATH, UPDATE_KEYS_PATH,
};
use kernel_config::kconfig::KernelConfig;
use kernel_config::module_index::{ModuleError, ModuleFile, ModuleIndex};
use kernel_config::module_sets::{self, ModuleSet};
use kernel_config::requirements;
use serde::Serialize;

use crate::apt::{sha256_file, AptError};
use crate::board::{multiarch, Board, Bootloader, Profile};
use crate::deb::{self, unpack_into, DebError};
use crate::disk::{self, DiskError, DiskLayout};
use crate::initramfs::{self, InitramfsError};
use crate::machined::{self, MachinedError, Program};
use crate::packages::PackageSet;
use crate::preload::{self, PreloadError, PreloadInputs};
use crate::rootfs::{self, RootfsError};
use crate::signing::{self, SigningError};
use crate::squashfs::{self, SquashfsError};
use crate::tree::{FileTree, Node, TreeError};

/// An image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading inputs or writing outputs failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The kernel package is not as expected.
    #[error("kernel package: {0}")]
    Kernel(String),
    /// The kernel lacks what Cairn needs.
    #[error("the kernel does not meet Cairn's requirements:\n  {}", .0.join("\n  "))]
    UnfitKernel(Vec<String>),
    /// A package could not be unpacked.
    #[error(transparent)]
    Deb(#[from] DebError),
    /// Modules could not be resolved.
    #[error(transparent)]
    Modules(#[from] ModuleError),
    /// Root filesystem content could not be taken.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// A tree refused a path.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The initramfs could not be written.
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    /// The squashfs could not be written.
    #[error(transparent)]
    Squashfs(#[from] SquashfsError),
    /// The disk could not be written.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// machined or pause is unfit for the image.
    #[error(transparent)]
    Machined(#[from] MachinedError),
    /// The container images could not be made.
    #[error(transparent)]
    Preload(#[from] PreloadError),
    /// Hashing an output failed.
    #[error(transparent)]
    Hash(#[from] AptError),
    /// The update bundle could not be written.
    #[error(transparent)]
    Signing(#[from] SigningError),
}

/// What a build takes.
pub struct ImageInputs<'a> {
    /// The board.
    pub board: &'a Board,
    /// The profile.
    pub profile: &'a Profile,
    /// The fetched packages.
    pub packages: &'a PackageSet,
    /// machined, static, built for the board's architecture.
    pub machined: &'a Path,
    /// pause, static, built for the board's architecture.
    pub pause: &'a Path,
    /// The time every file carries (SOURCE_DATE_EPOCH).
    pub mtime: u32,
    /// The image's time floor ([`TIME_FLOOR_PATH`]), seconds since 1970: SOURCE_DATE_EPOCH
    /// when given; `None` takes the build date of the newest package.
    pub time_floor: Option<u64>,
    /// A bootstrap token: the node then takes its first config only from a client that
    /// proves it knows it.
    pub bootstrap_token: Option<&'a BootstrapToken>,
    /// The system's version (semver), in `/etc/os-release` and update bundles.
    pub version: &'a str,
    /// Kernel arguments after the board's, in the boot entry and the bundle.
    pub extra_kernel_args: &'a [String],
    /// With a signing key, the image trusts its public half for updates and the build also
    /// writes `cairn-<arch>-<version>.bundle`, signed with it.
    pub update: Option<UpdateSigning<'a>>,
}

/// How a build signs its update bundle.
pub struct UpdateSigning<'a> {
    /// The key.
    pub key: &'a SigningKey,
    /// The oldest running version the bundle may replace.
    pub min_version: &'a str,
}

/// What a build made, for people and for CI.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// Architecture.
    pub arch: String,
    /// Kernel release.
    pub kernel: String,
    /// The time files carry.
    pub source_date_epoch: u32,
    /// The time floor the image gives its nodes' clocks, seconds since 1970.
    pub time_floor: u64,
    /// Initramfs size (compressed), bytes.
    pub initramfs_bytes: u64,
    /// Modules in the initramfs.
    pub initramfs_modules: usize,
    /// Root squashfs size, bytes.
    pub rootfs_bytes: u64,
    /// Modules on the root filesystem.
    pub rootfs_modules: usize,
    /// Whether the image holds a bootstrap token (never the token itself).
    pub bootstrap_token: bool,
    /// Output files.
    pub outputs: Vec<OutputFile>,
    /// The container images on the root filesystem, as OCI archives.
    pub images: Vec<PreloadedImage>,
    /// Packages used.
    pub packages: Vec<PackageUsed>,
}

/// One output file.
#[derive(Debug, Clone, Serialize)]
pub struct OutputFile {
    /// File name.
    pub name: String,
    /// Size, bytes.
    pub bytes: u64,
    /// SHA-256.
    pub sha256: String,
}

/// One container image the image carries.
#[derive(Debug, Clone, Serialize)]
pub struct PreloadedImage {
    /// Its full name, e.g. `localhost/pause:latest`.
    pub name: String,
    /// The archive holding it, on the root filesystem.
    pub archive: String,
    /// The archive's size, bytes.
    pub archive_bytes: u64,
    /// The digest of its manifest (or index), `sha256:...`: what containerd lists it by.
    pub manifest_digest: String,
}

/// One package.
#[derive(Debug, Clone, Serialize)]
pub struct PackageUsed {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// SHA-256 of the `.deb`.
    pub sha256: String,
}

/// Builds the image into `output` (`cairn-<arch>.raw`, `.raw.zst`, `report.toml`), using
/// `scratch` for intermediate files.
pub fn build(
    inputs: &ImageInputs<'_>,
    output: &Path,
    scratch: &Path,
) -> Result<BuildReport, ImageError> {
    let arch = inputs.board.arch;
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    std::fs::create_dir_all(output).map_err(io_error(output))?;

    // The kernel: its image, its config (checked), its modules.
    let mut kernel = FileTree::new();
    unpack_into(&inputs.packages.kernel.deb, &mut kernel, |p| {
        p.starts_with("/boot") || p.starts_with("/usr/lib/modules")
    })?;
    let release = kernel_release(&kernel)?;
    let config = match kernel.get(format!("/boot/config-{release}")) {
        Some(Node::File { data, .. }) => KernelConfig::parse(&String::from_utf8_lossy(data)),
        _ => return Err(ImageError::Kernel(format!("no /boot/config-{release}"))),
    };
    let unmet: Vec<String> =
        requirements::check(&config, arch).iter().map(ToString::to_string).collect();
    if !unmet.is_empty() {
        return Err(ImageError::UnfitKernel(unmet));
    }
    let modules_root = format!("/usr/lib/modules/{release}");
    let modules_dir = scratch.join("modules").join(&release);
    if modules_dir.exists() {
        std::fs::remove_dir_all(&modules_dir).map_err(io_error(&modules_dir))?;
    }
    kernel.write_below(&modules_root, &modules_dir).map_err(io_error(&modules_dir))?;
    let index = ModuleIndex::scan(&modules_dir)?;
    let initramfs_modules = index.resolve(&module_sets::names(ModuleSet::Initramfs, arch))?;
    let rootfs_modules = index.resolve(&module_sets::names(ModuleSet::Rootfs, arch))?;

    let machined = machined::load(inputs.machined, Program::Machined, arch)?;
    let pause = machined::load(inputs.pause, Program::Pause, arch)?;

    // The initramfs: machined as /init, the modules that reach the root, mount points.
    let mut early = FileTree::new();
    early.file("/init", 0o755, machined.clone())?;
    for dir in ["/dev", "/proc", "/sys", "/run", "/newroot"] {
        early.dir(dir, 0o755)?;
    }
    add_modules(&mut early, &kernel, &modules_root, &initramfs_modules)?;
    let initramfs_image = initramfs::build(&early, inputs.mtime)?;

    // The root filesystem.
    let mut pool = FileTree::new();
    for fetched in &inputs.packages.packages {
        unpack_into(&fetched.deb, &mut pool, |_| true)?;
    }
    for (link, target) in merged_usr_links(arch) {
        if pool.get(link).is_none() {
            pool.symlink(link, target)?;
        }
    }
    let mut root = base_layout(arch, inputs.version, &inputs.board.name)?;
    let library_dirs = vec![format!("/usr/lib/{}", multiarch(arch)), "/usr/lib".to_string()];
    rootfs::take_with_libraries(&pool, &mut root, &inputs.profile.files_for(arch), &library_dirs)?;
    rootfs::add_links(&mut root, &inputs.profile.links_for(arch))?;
    root.file(rootfs::CA_BUNDLE, 0o644, rootfs::ca_bundle(&pool))?;
    root.file(MACHINED_PATH, 0o755, machined)?;
    let time_floor = time_floor(inputs)?;
    root.file(TIME_FLOOR_PATH, 0o644, format!("{time_floor}\n"))?;
    if let Some(token) = inputs.bootstrap_token {
        root.file(BOOTSTRAP_TOKEN_PATH, 0o400, token.expose().as_bytes().to_vec())?;
    }
    if let Some(update) = &inputs.update {
        root.file(UPDATE_KEYS_PATH, 0o644, format!("{}\n", update.key.public().to_base64()))?;
    }
    add_modules(&mut root, &kernel, &modules_root, &rootfs_modules)?;
    let listed: Vec<PathBuf> =
        inputs.profile.images.iter().chain(&inputs.board.images).cloned().collect();
    let archives = preload::build(&PreloadInputs {
        arch,
        pause: &pause,
        packages: &pool,
        archives: &listed,
        epoch: u64::from(inputs.mtime),
    })?;
    let mut images = Vec::new();
    for archive in archives {
        for image in &archive.images {
            images.push(PreloadedImage {
                name: image.name.clone(),
                archive: archive.path.clone(),
                archive_bytes: archive.bytes.len() as u64,
                manifest_digest: image.digest.to_string(),
            });
        }
        root.file(&archive.path, 0o644, archive.bytes)?;
    }
    let rootfs_image = squashfs::build(&root, inputs.mtime)?;

    // The ESP: bootloader, slot A's kernel and initramfs, its boot entry.
    let mut esp = FileTree::new();
    let kernel_args: Vec<String> =
        inputs.board.kernel_args.iter().chain(inputs.extra_kernel_args).cloned().collect();
    // The image's slot A is generation 1: every slot installed later goes before it.
    let entry = BootEntry::for_slot(Slot::A, inputs.version, 1, &kernel_args);
    match inputs.board.bootloader {
        Bootloader::SystemdBoot => {
            let efi = format!("/usr/lib/systemd/boot/efi/systemd-boot{}.efi", efi_arch(arch));
            let Some(Node::File { data, .. }) = pool.get(&efi) else {
                return Err(ImageError::Rootfs(RootfsError::Missing {
                    path: efi,
                    needed_by: Some("the ESP".into()),
                }));
            };
            let upper = efi_arch(arch).to_uppercase();
            esp.file(format!("/EFI/BOOT/BOOT{upper}.EFI"), 0o644, data.clone())?;
            esp.file(
                format!("/EFI/systemd/systemd-boot{}.efi", efi_arch(arch)),
                0o644,
                data.clone(),
            )?;
            esp.file(LOADER_CONF_PATH, 0o644, LoaderConf { timeout_seconds: 0 }.render())?;
            // A fresh image has nothing to roll back to: slot A's entry starts blessed.
            let name = EntryName::blessed(entry.slot);
            esp.file(format!("{ENTRIES_DIR}/{name}"), 0o644, entry.render())?;
        }
    }
    let Some(Node::File { data: vmlinuz, .. }) = kernel.get(format!("/boot/vmlinuz-{release}"))
    else {
        return Err(ImageError::Kernel(format!("no /boot/vmlinuz-{release}")));
    };
    esp.file(&entry.linux, 0o644, vmlinuz.clone())?;
    esp.file(&entry.initrd, 0o644, initramfs_image.clone())?;
    esp.file(version_path(Slot::A), 0o644, format!("{}\n", inputs.version))?;

    let raw = output.join(format!("cairn-{arch}.raw"));
    disk::write(&raw, &DiskLayout::new(arch), &esp, &rootfs_image, inputs.mtime)?;
    let zst = output.join(format!("cairn-{arch}.raw.zst"));
    compress(&raw, &zst).map_err(io_error(&zst))?;
    let mut written = vec![raw, zst];
    if let Some(update) = &inputs.update {
        let path = output.join(format!("cairn-{arch}-{}.bundle", inputs.version));
        let artifacts = [
            (ArtifactKind::Kernel, vmlinuz.as_slice()),
            (ArtifactKind::Initramfs, initramfs_image.as_slice()),
            (ArtifactKind::Rootfs, rootfs_image.as_slice()),
        ];
        let info = BundleInfo {
            version: inputs.version,
            arch,
            boards: vec![inputs.board.name.clone()],
            min_version: update.min_version,
            build_time: u64::from(inputs.mtime),
            kernel_args: kernel_args.clone(),
        };
        signing::write_bundle(&path, info, &artifacts, update.key)?;
        written.push(path);
    }

    let mut outputs = Vec::new();
    for path in &written {
        let bytes = std::fs::metadata(path).map_err(io_error(path))?.len();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        outputs.push(OutputFile { name, bytes, sha256: sha256_file(path)? });
    }
    let packages = std::iter::once(&inputs.packages.kernel)
        .chain(&inputs.packages.packages)
        .map(|f| PackageUsed {
            name: f.record.name.clone(),
            version: f.record.version.clone(),
            sha256: f.record.sha256.clone(),
        })
        .collect();
    let report = BuildReport {
        arch: arch.name().to_string(),
        kernel: release,
        source_date_epoch: inputs.mtime,
        time_floor,
        initramfs_bytes: initramfs_image.len() as u64,
        initramfs_modules: initramfs_modules.len(),
        rootfs_bytes: rootfs_image.len() as u64,
        rootfs_modules: rootfs_modules.len(),
        bootstrap_token: inputs.bootstrap_token.is_some(),
        outputs,
        images,
        packages,
    };
    let report_path = output.join("report.toml");
    let text = toml::to_string(&report).expect("a report always serializes");
    std::fs::write(&report_path, text).map_err(io_error(&report_path))?;
    Ok(report)
}

/// The image's time floor: the one given, else the build date of the newest package (fixed
/// for a given package set, and earlier than any time the image can boot at).
fn time_floor(inputs: &ImageInputs<'_>) -> Result<u64, DebError> {
    if let Some(given) = inputs.time_floor {
        return Ok(given);
    }
    let mut newest = 0;
    for fetched in std::iter::once(&inputs.packages.kernel).chain(&inputs.packages.packages) {
        newest = newest.max(deb::built_at(&fetched.deb)?);
    }
    Ok(newest)
}

/// The release of the one kernel in the package (`/boot/vmlinuz-<release>`).
fn kernel_release(kernel: &FileTree) -> Result<String, ImageError> {
    let releases: Vec<String> = kernel
        .entries()
        .filter_map(|(p, _)| p.to_str()?.strip_prefix("boot/vmlinuz-").map(str::to_string))
        .collect();
    match releases.as_slice() {
        [release] => Ok(release.clone()),
        other => Err(ImageError::Kernel(format!("expected one /boot/vmlinuz-*, found {other:?}"))),
    }
}

/// Copies module files into `tree` and writes their load order next to them.
fn add_modules(
    tree: &mut FileTree,
    kernel: &FileTree,
    modules_root: &str,
    modules: &[ModuleFile],
) -> Result<(), ImageError> {
    let mut order = String::new();
    for module in modules {
        let path = Path::new(modules_root).join(&module.path);
        let node = kernel
            .get(&path)
            .cloned()
            .ok_or_else(|| ImageError::Kernel(format!("{} vanished", path.display())))?;
        tree.insert(&path, node)?;
        order.push_str(&format!("{}\n", module.path.display()));
    }
    tree.file(format!("{modules_root}/{MODULE_LOAD_LIST}"), 0o644, order)?;
    Ok(())
}

/// The links of a merged /usr (Debian's layout since bookworm; no package ships them).
fn merged_usr_links(arch: Arch) -> Vec<(&'static str, &'static str)> {
    let mut links = vec![("/bin", "usr/bin"), ("/sbin", "usr/sbin"), ("/lib", "usr/lib")];
    if arch == Arch::X86_64 {
        // The x86_64 ELF interpreter is /lib64/ld-linux-x86-64.so.2.
        links.push(("/lib64", "usr/lib64"));
    }
    links
}

/// Directories, mount points and the merged-/usr links every root filesystem has, and the
/// os-release naming the system's `version` and `board` (the updater checks bundles
/// against both).
fn base_layout(arch: Arch, version: &str, board: &str) -> Result<FileTree, ImageError> {
    let mut root = FileTree::new();
    for dir in [
        "/dev",
        "/proc",
        "/sys",
        "/run",
        "/tmp",
        "/var",
        "/system/state",
        "/etc/ssl/certs",
        "/usr/bin",
        "/usr/sbin",
        "/usr/lib",
    ] {
        root.dir(dir, if dir == "/tmp" { 0o1777 } else { 0o755 })?;
    }
    for (link, target) in merged_usr_links(arch) {
        root.symlink(link, target)?;
    }
    // machined writes the resolvers it learns (DHCP, config) on /run.
    root.symlink("/etc/resolv.conf", "../run/resolv.conf")?;
    // containerd gives every pod a copy (with the pod's own name added).
    root.file(
        "/etc/hosts",
        0o644,
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )?;
    root.file(
        "/etc/os-release",
        0o644,
        format!(
            "NAME=Cairn\nID=cairn\nVERSION_ID={version}\nVARIANT_ID={board}\n\
             PRETTY_NAME=\"Cairn {version}\"\n"
        ),
    )?;
    Ok(root)
}

/// UEFI's name for the architecture in file names (`BOOTX64.EFI`).
fn efi_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x64",
        Arch::Arm64 => "aa64",
        Arch::Armv7 => "arm",
    }
}

/// `.raw.zst`: single-threaded zstd, so the bytes are the same every time.
fn compress(raw: &Path, zst: &Path) -> io::Result<()> {
    let mut input = BufReader::new(File::open(raw)?);
    let mut encoder = zstd::Encoder::new(BufWriter::new(File::create(zst)?), 3)?;
    io::copy(&mut input, &mut encoder)?;
    encoder.finish()?.flush()
}
