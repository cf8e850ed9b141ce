//! `image-builder`: builds Cairn images. See the library for what each step does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use cairn_api::arch::Arch;
use cairn_api::board::Board;
use cairn_api::board::NetbootLoader;
use cairn_api::bootstrap::BootstrapToken;
use clap::{Args, Parser, Subcommand};
use image_builder::apt::{AptState, CacheLock, DEBIAN_KEYRING};
use image_builder::flash::{self, HostView, ImageFile, Phase, Target};
use image_builder::image::netboot::{IPXE_SCRIPT, UBOOT_SCRIPT};
use image_builder::image::{self, ImageInputs, UpdateSigning};
use image_builder::lockfile::Lock;
use image_builder::machined::{self, Program};
use image_builder::packages::{self, LockMode, PackageSet};
use image_builder::profile::Profile;
use image_builder::serve;
use image_builder::signing;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// Files carry this time when SOURCE_DATE_EPOCH is unset: 1980-01-01, the FAT epoch.
const DEFAULT_SOURCE_DATE_EPOCH: u32 = 315_532_800;

/// Builds Cairn images.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Resolve and download a board's packages, and update the lock file.
    Packages(PackageArgs),
    /// Build a board's disk image (`cairn-<arch>.raw`, `.raw.zst`, `report.toml`; with
    /// --signing-key also an update bundle).
    Build(Box<BuildArgs>),
    /// Build machined, pause and trivial-init for an architecture as `build` does (static,
    /// release; for another architecture than the host's with a cross toolchain: a rustup
    /// target, or $CAIRN_CROSS_RUST from `cargo xtask cross-toolchain`), check them and print
    /// their paths and sizes.
    Programs {
        /// The architecture: x86_64, arm64 or armv7.
        #[arg(long)]
        arch: Arch,
        /// The Cairn workspace they are built from.
        #[arg(long, value_name = "DIR", default_value = ".")]
        source: PathBuf,
    },
    /// Make the ed25519 key pair update bundles are signed with: DIR/signing.key (private,
    /// mode 0600; an existing one is never replaced) and DIR/signing.pub (for
    /// `machine.update.trustedKeys`).
    Keygen {
        /// Where the keys go.
        #[arg(long, value_name = "DIR")]
        output: PathBuf,
    },
    /// Write a disk image (.raw, or .raw.zst decompressed on the fly) to a whole disk (an SD
    /// card, a USB stick) or a file, then read it back and compare SHA-256s. Refuses a
    /// partition, a disk in use (mounted, swap, device-mapper), the disk the host runs from,
    /// and a disk smaller than the image, before writing anything; asks first unless --yes.
    Flash(FlashArgs),
    /// Serve a build's netboot/ folder over HTTP to diskless nodes, logging every request;
    /// with --config also the config and cairn.ipxe, the script that boots with it. Prints
    /// the QEMU and dnsmasq lines that boot from it (a U-Boot board's folder is served by
    /// TFTP: it prints the line of cairn-config.txt that names the config).
    Serve(ServeArgs),
    /// Check an update bundle offline (signature, chunk hashes, decompressed sizes and
    /// SHA-256s) and print its manifest.
    Inspect {
        /// The bundle.
        bundle: PathBuf,
        /// The public key it must be signed with (a keygen signing.pub).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

#[derive(Args)]
struct BuildArgs {
    #[command(flatten)]
    packages: PackageArgs,
    /// A prebuilt machined (static, for the board's architecture) instead of building
    /// it from --source (with --pause, nothing is built).
    #[arg(long, value_name = "FILE")]
    machined: Option<PathBuf>,
    /// A prebuilt pause (static, for the board's architecture) instead of building it
    /// from --source (with --machined, nothing is built).
    #[arg(long, value_name = "FILE")]
    pause: Option<PathBuf>,
    /// The Cairn workspace machined and pause are built from.
    #[arg(long, value_name = "DIR", default_value = ".")]
    source: PathBuf,
    /// Where the image goes.
    #[arg(long, value_name = "DIR")]
    output: PathBuf,
    /// Bake in a bootstrap token (at least 32 random characters, e.g. `openssl rand -hex
    /// 32`): nodes from this image take their first config only from `ctl apply-config
    /// --insecure --bootstrap-token-file` with the same token. Keep the image private.
    #[arg(long, value_name = "FILE")]
    bootstrap_token_file: Option<PathBuf>,
    /// The system's version (semver), in /etc/os-release and the update bundle.
    #[arg(long, value_name = "V", default_value = env!("CARGO_PKG_VERSION"))]
    version: String,
    /// Also write cairn-<arch>-<V>.bundle, an update bundle signed with this key (a
    /// keygen signing.key); the image trusts the key's public half for updates.
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// The oldest running version the bundle may replace.
    #[arg(long, value_name = "V", default_value = "0.0.0", requires = "signing_key")]
    min_version: String,
    /// Kernel arguments after the board's, for the boot entry and the bundle (consoles,
    /// quirks), e.g. "console=ttyS1,115200".
    #[arg(long, value_name = "ARGS", default_value = "")]
    extra_kernel_args: String,
}

#[derive(Args)]
struct FlashArgs {
    /// The image: cairn-<arch>.raw.zst (or .raw) from `build`.
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// The whole disk to overwrite (/dev/sdX, /dev/mmcblkN, /dev/loopN) or a file.
    #[arg(long, value_name = "DEV")]
    device: PathBuf,
    /// Write without asking.
    #[arg(long)]
    yes: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// A build's netboot/ folder (vmlinuz, initramfs.img, boot.ipxe or boot.scr.uimg).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// A machine config for the nodes that boot cairn.ipxe (or read cairn-config.txt): served
    /// with its SHA-256 on their kernel command line, so they take it and nothing else.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where to listen.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
}

#[derive(Args)]
struct PackageArgs {
    /// The board, a folder of --overlays.
    #[arg(long)]
    board: String,
    /// Where the boards are.
    #[arg(long, default_value = "overlays")]
    overlays: PathBuf,
    /// The profile.
    #[arg(long, default_value = "image-builder/profiles/default.toml")]
    profile: PathBuf,
    /// The lock file: its versions are used while they can be had (from the archive or the
    /// download cache); entries the archive no longer serves move, and the file is rewritten.
    #[arg(long, default_value = "image-builder/packages.lock")]
    lock: PathBuf,
    /// Refuse to build if the lock would change (release builds): name what moved, download
    /// nothing.
    #[arg(long, conflicts_with = "update_lock")]
    locked: bool,
    /// Ignore the lock's versions, take the archive's current ones and rewrite the lock.
    #[arg(long)]
    update_lock: bool,
    /// Where apt state and downloads are kept between builds.
    #[arg(long, env = "CAIRN_CACHE", default_value_os_t = default_cache())]
    cache: PathBuf,
    /// Debian mirror (`http://...`, or `file:/...` for a local archive); by default the host's.
    #[arg(long)]
    mirror: Option<String>,
    /// The keyring the mirror's Release files must be signed with.
    #[arg(long, value_name = "FILE", default_value = DEBIAN_KEYRING)]
    keyring: PathBuf,
}

impl PackageArgs {
    fn lock_mode(&self) -> LockMode {
        match (self.locked, self.update_lock) {
            (true, _) => LockMode::Locked,
            (_, true) => LockMode::Update,
            _ => LockMode::Follow,
        }
    }
}

fn default_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("cairn/image-builder")
}

fn main() -> ExitCode {
    // While it builds machined, cargo runs image-builder as the workspace's rustc wrapper.
    if let Some(error) = image_builder::machined::run_as_rustc_wrapper() {
        eprintln!("image-builder: running rustc: {error}");
        return ExitCode::FAILURE;
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("image-builder: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, leaving out a cause the message before it already ends with:
/// this crate's errors put their source into their own message (`{path}: {source}`).
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.is_empty() {
            text = message;
        } else if !text.ends_with(&message) {
            text = format!("{text}: {message}");
        }
    }
    text
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Packages(args) => {
            let (_, _, set) = fetch(&args)?;
            for fetched in std::iter::once(&set.kernel).chain(&set.packages) {
                let r = &fetched.record;
                println!("{:<36} {:<28} {:>10} bytes", r.name, r.version, r.size);
            }
            Ok(())
        }
        Command::Programs { arch, source } => {
            let built = machined::build(&source, arch)?;
            for (program, path) in [
                (Program::Machined, &built.machined),
                (Program::Pause, &built.pause),
                (Program::TrivialInit, &built.trivial_init),
            ] {
                let bytes = machined::load(path, program, arch)?.len();
                println!("{} ({bytes} bytes, static {arch})", path.display());
            }
            Ok(())
        }
        Command::Keygen { output } => {
            let public = signing::keygen(&output)?;
            println!(
                "{}: private key (keep it secret)",
                output.join(signing::PRIVATE_KEY_FILE).display()
            );
            println!(
                "{}: public key {}",
                output.join(signing::PUBLIC_KEY_FILE).display(),
                public.to_base64()
            );
            Ok(())
        }
        Command::Flash(args) => flash(&args),
        Command::Serve(args) => serve(&args),
        Command::Inspect { bundle, key } => {
            let key = signing::load_public_key(&key)?;
            let manifest = signing::inspect(&bundle, &key)?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
            println!("{}: signature and every artifact check out", bundle.display());
            Ok(())
        }
        Command::Build(args) => {
            let BuildArgs {
                packages,
                machined,
                pause,
                source,
                output,
                bootstrap_token_file,
                version,
                signing_key,
                min_version,
                extra_kernel_args,
            } = *args;
            // Checked first: a bad token must not cost a download and a build.
            let bootstrap_token =
                match &bootstrap_token_file {
                    Some(path) => {
                        let text = std::fs::read_to_string(path)
                            .with_context(|| format!("reading {}", path.display()))?;
                        Some(BootstrapToken::parse(&text).with_context(|| {
                            format!("--bootstrap-token-file {}", path.display())
                        })?)
                    }
                    None => None,
                };
            for (flag, value) in [("--version", &version), ("--min-version", &min_version)] {
                semver::Version::parse(value)
                    .with_context(|| format!("{flag} {value:?} is not a semver version"))?;
            }
            let signing_key =
                signing_key.map(|path| signing::load_signing_key(&path)).transpose()?;
            let extra_kernel_args: Vec<String> =
                extra_kernel_args.split_whitespace().map(String::from).collect();
            let (board, profile, set) = fetch(&packages)?;
            let (machined, pause) = match (machined, pause) {
                (Some(machined), Some(pause)) => (machined, pause),
                (machined, pause) => {
                    eprintln!("building machined and pause for {}", board.arch);
                    let built = machined::build(&source, board.arch)?;
                    (machined.unwrap_or(built.machined), pause.unwrap_or(built.pause))
                }
            };
            let source_date_epoch: Option<u32> = match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(value) => Some(value.parse().with_context(|| {
                    format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds")
                })?),
                Err(_) => None,
            };
            let inputs = ImageInputs {
                board: &board,
                profile: &profile,
                packages: &set,
                machined: &machined,
                pause: &pause,
                mtime: source_date_epoch.unwrap_or(DEFAULT_SOURCE_DATE_EPOCH),
                time_floor: source_date_epoch.map(u64::from),
                bootstrap_token: bootstrap_token.as_ref(),
                version: &version,
                extra_kernel_args: &extra_kernel_args,
                update: signing_key
                    .as_ref()
                    .map(|key| UpdateSigning { key, min_version: &min_version }),
            };
            // A scratch directory of this build's own: builds sharing a cache may run at once.
            let scratch = tempfile::Builder::new()
                .prefix("scratch-")
                .tempdir_in(&packages.cache)
                .with_context(|| {
                format!("creating a scratch directory in {}", packages.cache.display())
            })?;
            let report = image::build(&inputs, &output, scratch.path())?;
            println!(
                "kernel {}: initramfs {} bytes ({} modules), rootfs {} bytes ({} modules)",
                report.kernel,
                report.initramfs_bytes,
                report.initramfs_modules,
                report.rootfs_bytes,
                report.rootfs_modules
            );
            for image in &report.images {
                println!(
                    "{}  {} in {} ({} bytes)",
                    image.manifest_digest, image.name, image.archive, image.archive_bytes
                );
            }
            for file in &report.outputs {
                println!(
                    "{}  {} ({} bytes)",
                    file.sha256,
                    output.join(&file.name).display(),
                    file.bytes
                );
            }
            Ok(())
        }
    }
}

/// Resolves and downloads the board's packages; reports and writes the lock's moves.
fn fetch(args: &PackageArgs) -> anyhow::Result<(Board, Profile, PackageSet)> {
    let board = Board::load(&args.overlays, &args.board)?;
    let profile = Profile::load(&args.profile)?;
    // Held to the end: the lock file below is read and written under it too.
    let _cache = CacheLock::acquire(&args.cache, || {
        println!("waiting for another image-builder using {}", args.cache.display())
    })?;
    let on_disk = Lock::load(&args.lock, &profile.suite)?;
    let mirror = match &args.mirror {
        Some(m) => m.clone(),
        None => AptState::host_mirror()?,
    };
    let apt =
        AptState::new(&args.cache.join("apt"), &mirror, &args.keyring, &profile.suite, board.arch)?;
    apt.update().context("updating the package indexes")?;
    let resolved = packages::fetch(
        &apt,
        &board,
        &profile,
        on_disk.as_ref(),
        args.lock_mode(),
        &args.cache.join("debs"),
    )
    .with_context(|| format!("lock file {}", args.lock.display()))?;
    if !resolved.changes.is_empty() {
        for change in &resolved.changes {
            println!("lock: {change}");
        }
        let merged = on_disk
            .unwrap_or_else(|| Lock::new(&profile.suite))
            .with_used(board.arch.debian(), &resolved.lock);
        merged.save(&args.lock)?;
        println!("wrote {}", args.lock.display());
    }
    Ok((board, profile, resolved.set))
}

/// `serve`: checks the folder and the config, says how to boot from them, then serves.
fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let dir = args.dir.display();
    let loader = if args.dir.join(IPXE_SCRIPT).is_file() {
        NetbootLoader::Ipxe
    } else if args.dir.join(UBOOT_SCRIPT).is_file() {
        NetbootLoader::UBoot
    } else {
        anyhow::bail!(
            "{dir}: no {IPXE_SCRIPT} or {UBOOT_SCRIPT}; --dir takes a build's netboot/ folder"
        );
    };
    let config = match &args.config {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
            cairn_api::config::MachineConfig::from_yaml(&bytes)
                .with_context(|| format!("{}: not a machine config", path.display()))?;
            Some(bytes)
        }
        None => None,
    };
    let server = Arc::new(serve::BootServer::new(args.dir.clone(), config));
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let port = listener.local_addr()?.port();
        println!("serving {dir} on port {port}");
        match loader {
            NetbootLoader::Ipxe => print_ipxe_lines(port, server.config_sha256().is_some()),
            NetbootLoader::UBoot => {
                print_uboot_lines(&dir.to_string(), port, server.config_sha256())
            }
        }
        server.run(listener, |line| println!("{line}")).await?;
        Ok(())
    })
}

/// How a PC's iPXE boots from the server on `port`: by `cairn.ipxe` with a config.
fn print_ipxe_lines(port: u16, with_config: bool) {
    let script = if with_config { serve::CONFIG_SCRIPT } else { IPXE_SCRIPT };
    let url = |host: &str| format!("http://{host}:{port}/{script}");
    let qemu = [
        "qemu-system-x86_64 -M q35 -m 2048 -nographic -boot order=n".to_string(),
        format!(
            "-netdev user,id=net0,bootfile={},hostfwd=tcp:127.0.0.1:50000-:50000",
            url("10.0.2.2")
        ),
        "-device virtio-net-pci,netdev=net0".to_string(),
    ];
    let dnsmasq = [
        "dnsmasq --dhcp-range=RANGE --enable-tftp --tftp-root=/usr/lib/ipxe".to_string(),
        "--dhcp-match=set:ipxe,175 --dhcp-boot=tag:!ipxe,undionly.kpxe".to_string(),
        format!("--dhcp-boot=tag:ipxe,{}", url("THIS_HOST")),
    ];
    println!("a QEMU PC boots it with (the host is 10.0.2.2 on QEMU's user network):");
    println!("  {}", qemu.join(" \\\n    "));
    println!("a lab network's dnsmasq hands it to iPXE (ipxe's undionly.kpxe to other PXE ROMs):");
    println!("  {}", dnsmasq.join(" \\\n    "));
}

/// How a U-Boot board boots from `dir` by TFTP, and the line that points it at the config
/// (whose SHA-256 is `config_sha256`) on the server on `port`.
fn print_uboot_lines(dir: &str, port: u16, config_sha256: Option<&str>) {
    let qemu = [
        "qemu-system-aarch64 -M virt,acpi=off -cpu cortex-a72 -m 1024 -nographic".to_string(),
        "-bios /usr/lib/u-boot/qemu_arm64/u-boot.bin".to_string(),
        format!("-netdev user,id=net0,tftp={dir},hostfwd=tcp:127.0.0.1:50000-:50000"),
        // U-Boot's MAC address, for the kernel to be the same DHCP client (overlays/qemu-arm64).
        "-device virtio-net-pci,mac=52:52:52:52:52:52,netdev=net0".to_string(),
    ];
    println!(
        "U-Boot loads {UBOOT_SCRIPT}, vmlinuz and initramfs.img by TFTP from {dir}: QEMU's \
         user network serves it to its arm64 virt board with"
    );
    println!("  {}", qemu.join(" \\\n    "));
    println!("and a lab network's dnsmasq with");
    println!("  dnsmasq --dhcp-range=RANGE --enable-tftp --tftp-root={dir}");
    if let Some(sha256) = config_sha256 {
        let host = format!("THIS_HOST:{port}");
        println!(
            "for the node to take the config, put this line in {dir}/{} (THIS_HOST: this \
             server as the node reaches it, 10.0.2.2 on QEMU's user network):",
            serve::UBOOT_CONFIG_FILE
        );
        print!("  {}", serve::uboot_config_line(&host, sha256));
    }
}

/// `flash`: every refusal first, then the question, then the write and the read-back, with a
/// progress bar for each on a terminal.
fn flash(args: &FlashArgs) -> anyhow::Result<()> {
    let image = ImageFile::open(&args.image)?;
    let target = Target::inspect(&args.device, &HostView::real())?;
    flash::check_fits(&image, &args.device, &target)?;
    let device = args.device.display();
    if !args.yes {
        let what = match &target {
            Target::Disk { size, model, .. } => format!("{model} {}", HumanBytes(*size)),
            Target::File => "a file".into(),
        };
        confirm(&format!(
            "write {} ({}) to {device} ({}), replacing everything on it?",
            args.image.display(),
            HumanBytes(image.size),
            what.trim()
        ))?;
    }
    let mut bar: Option<(Phase, ProgressBar)> = None;
    let flashed = flash::flash(&image, &args.device, &target, &mut |phase, done| {
        if bar.as_ref().is_none_or(|(shown, _)| *shown != phase) {
            if let Some((_, done)) = bar.take() {
                done.finish();
            }
            let label = match phase {
                Phase::Writing => "writing",
                Phase::Verifying => "reading back",
            };
            bar = Some((phase, progress_bar(image.size, label)));
        }
        if let Some((_, bar)) = &bar {
            bar.set_position(done);
        }
    })?;
    if let Some((_, done)) = bar.take() {
        done.finish();
    }
    let rate = |seconds: f64| HumanBytes((flashed.bytes as f64 / seconds.max(1e-3)) as u64);
    let (written, verified) = (flashed.written_in.as_secs_f64(), flashed.verified_in.as_secs_f64());
    println!(
        "wrote {} to {device} in {written:.1} s ({}/s, synced)",
        HumanBytes(flashed.bytes),
        rate(written)
    );
    println!(
        "read back in {verified:.1} s ({}/s): SHA-256 {} matches the image",
        rate(verified),
        flashed.sha256
    );
    Ok(())
}

/// A bar of `total` bytes; hidden when stderr is not a terminal.
fn progress_bar(total: u64, label: &'static str) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{msg:13} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    ProgressBar::new(total).with_style(style).with_message(label)
}

/// Asks `question` on stderr and reads the answer from stdin: only "y" or "yes" goes on.
fn confirm(question: &str) -> anyhow::Result<()> {
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).context("reading the answer")?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => anyhow::bail!("not confirmed: nothing was written (answer y, or pass --yes)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let error =
            anyhow::Error::new(signing::SigningError::Io { path: "k".into(), source: missing })
                .context("loading the key");
        assert_eq!(describe(&error), "loading the key: k: No such file");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(describe(&plain), "outer: inner");
    }
}
