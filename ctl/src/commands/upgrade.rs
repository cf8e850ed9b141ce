//! `ctl upgrade`: streams a signed update bundle to one node, shows the node's progress
//! phase by phase, and with `--wait` follows the node through its reboot.

use std::io::Seek as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use cairn_api::bundle::{self, Manifest};
use cairn_api::machine as pb;
use futures_util::{future, stream, Stream, StreamExt as _};
use indicatif::{ProgressBar, ProgressStyle};
use pb::upgrade_request::Part;
use pb::UpgradePhase;
use tokio::fs::File;
use tokio_util::io::ReaderStream;

use super::follow::{follow, print_step, BootTarget};
use super::{report_errors, Session};
use crate::cli::UpgradeArgs;
use crate::fanout::Client;
use crate::output::human_bytes;

/// The bundle goes in messages of this size (the node takes up to 4 MiB per message).
const CHUNK: usize = 1 << 20;

pub(super) async fn upgrade(session: &Session, args: &UpgradeArgs) -> anyhow::Result<ExitCode> {
    // Before connecting: a file that is no bundle fails here, not after 60-odd MB went out.
    let (file, manifest, size) = open_bundle(&args.image)?;
    let options = pb::UpgradeOptions { stage: args.stage, force: args.force };
    let (label, result) = session
        .targets
        .one("upgrade", |_, client| {
            let (name, version, arch) = (args.image.display(), &manifest.version, manifest.arch);
            eprintln!("sending {name}: Cairn {version} for {arch}, {}", human_bytes(size));
            install(client, file, options)
        })
        .await?;
    let result = match result {
        Ok(mut installed) => {
            if installed.target.version.is_empty() {
                installed.target.version = manifest.version;
            }
            finish(session, &label, args, installed).await.map_err(|e| format!("{e:#}"))
        }
        Err(e) => Err(e),
    };
    Ok(report_errors(vec![(label, result)]))
}

/// Opens the bundle and reads its manifest, to say what is sent (not verified: the node
/// checks the signature); the file comes back rewound, with its size.
fn open_bundle(path: &Path) -> anyhow::Result<(File, Manifest, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        anyhow::bail!("{} is not a file", path.display());
    }
    let manifest = bundle::peek_manifest(&file)
        .with_context(|| format!("{} is not a Cairn update bundle", path.display()))?;
    file.rewind()?;
    Ok((File::from_std(file), manifest, metadata.len()))
}

/// Where the node's progress stream ended.
struct Installed {
    target: BootTarget,
    /// The node is rebooting into it (not only staged).
    rebooting: bool,
}

/// Sends the bundle and shows the node's progress until the slot is staged or the node
/// reboots.
async fn install(
    mut client: Client,
    file: File,
    options: pb::UpgradeOptions,
) -> anyhow::Result<Installed> {
    let read_error = Arc::new(Mutex::new(None));
    let requests = requests(file, options, read_error.clone());
    let mut progress = client.upgrade(requests).await?.into_inner();
    let mut bars = PhaseBars::default();
    let mut last: Option<pb::UpgradeProgress> = None;
    loop {
        match progress.message().await {
            Ok(Some(p)) => {
                bars.show(&p);
                last = Some(p);
            }
            Ok(None) => break,
            // Going down for the reboot may cut the stream before the node closes it.
            Err(_) if last.as_ref().is_some_and(|p| p.phase() == UpgradePhase::Rebooting) => break,
            Err(status) => {
                bars.abandon();
                // A local read error ends the stream early; the node then reports a short
                // bundle, but the read error is the one to act on.
                let read = read_error.lock().unwrap_or_else(PoisonError::into_inner).take();
                return Err(match read {
                    Some(e) => anyhow::Error::new(e).context("reading the bundle"),
                    None => status.into(),
                });
            }
        }
    }
    bars.abandon();
    let Some(last) =
        last.filter(|p| matches!(p.phase(), UpgradePhase::Staged | UpgradePhase::Rebooting))
    else {
        anyhow::bail!("the node ended the upgrade before staging it");
    };
    Ok(Installed {
        rebooting: last.phase() == UpgradePhase::Rebooting,
        target: BootTarget { slot: last.slot, version: last.version },
    })
}

/// Prints where the upgrade stands and, with `--wait`, follows the node through the reboot.
async fn finish(
    session: &Session,
    label: &str,
    args: &UpgradeArgs,
    installed: Installed,
) -> anyhow::Result<()> {
    let Installed { target, rebooting } = installed;
    let BootTarget { slot, version } = &target;
    let (event, line) = if rebooting {
        ("rebooting", format!("rebooting into {version} (slot {slot})"))
    } else {
        ("staged", format!("staged {version} in slot {slot}"))
    };
    print_step(session, label, false, event, &target, &line)?;
    match (args.wait, rebooting) {
        (false, _) => Ok(()),
        (true, true) => follow(session, &session.targets.nodes[0], &target).await,
        // --wait excludes --stage: the node chose not to reboot.
        (true, false) => anyhow::bail!("the node staged the update but does not reboot into it"),
    }
}

/// The request stream: the options, then the bundle in chunks as they are read (never the
/// whole file in memory). A read error ends the stream and is left in `read_error`.
fn requests(
    file: File,
    options: pb::UpgradeOptions,
    read_error: Arc<Mutex<Option<std::io::Error>>>,
) -> impl Stream<Item = pb::UpgradeRequest> + Send + 'static {
    let first = pb::UpgradeRequest { part: Some(Part::Options(options)) };
    let chunks = ReaderStream::with_capacity(file, CHUNK).scan((), move |(), read| {
        future::ready(match read {
            Ok(bytes) => Some(pb::UpgradeRequest { part: Some(Part::Chunk(bytes.into())) }),
            Err(e) => {
                *read_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                None
            }
        })
    });
    stream::once(future::ready(first)).chain(chunks)
}

/// A progress bar for each phase that moves bytes, left on screen when the next begins.
/// indicatif hides bars when stderr is not a terminal; each phase is then a plain line.
#[derive(Default)]
struct PhaseBars {
    phase: UpgradePhase,
    bar: Option<ProgressBar>,
}

impl PhaseBars {
    fn show(&mut self, progress: &pb::UpgradeProgress) {
        if progress.phase() != self.phase {
            self.abandon();
            self.phase = progress.phase();
            self.bar = phase_label(progress).map(|label| {
                let style = ProgressStyle::with_template(
                    "{msg:24} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> ");
                let bar = ProgressBar::new(progress.total_bytes).with_style(style);
                if bar.is_hidden() {
                    eprintln!("{label}");
                }
                bar.with_message(label)
            });
        }
        if let Some(bar) = &self.bar {
            bar.set_length(progress.total_bytes);
            bar.set_position(progress.done_bytes);
        }
    }

    /// Leaves the current bar where it stands.
    fn abandon(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

/// The label of a phase that moves bytes; `None` for the others.
fn phase_label(progress: &pb::UpgradeProgress) -> Option<String> {
    match progress.phase() {
        UpgradePhase::Receiving => Some("receiving and verifying".into()),
        UpgradePhase::Writing => Some(format!("writing slot {}", progress.slot)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_options_go_first_then_the_file_in_chunks() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, &vec![7u8; CHUNK + 10]).unwrap();
        let opened = File::open(file.path()).await.unwrap();
        let options = pb::UpgradeOptions { stage: true, force: false };
        let read_error = Arc::new(Mutex::new(None));
        let parts: Vec<_> = requests(opened, options, read_error.clone())
            .map(|r| r.part.expect("a part"))
            .collect()
            .await;
        assert_eq!(parts[0], Part::Options(options));
        let chunks: Vec<usize> = parts[1..]
            .iter()
            .map(|p| match p {
                Part::Chunk(bytes) => bytes.len(),
                Part::Options(_) => panic!("options twice"),
            })
            .collect();
        assert!(chunks.iter().all(|&n| n <= CHUNK), "{chunks:?}");
        assert_eq!(chunks.iter().sum::<usize>(), CHUNK + 10);
        assert!(read_error.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn reads_the_manifest_then_sends_the_whole_bundle() {
        use cairn_api::bundle::testing;
        let key = testing::key();
        let bytes = testing::bundle(&key, "0.2.0", cairn_api::arch::Arch::X86_64, b"rootfs");
        let mut bundle = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut bundle, &bytes).unwrap();
        let (mut file, manifest, size) = open_bundle(bundle.path()).unwrap();
        assert_eq!(manifest.version, "0.2.0");
        let mut sent = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut sent).await.unwrap();
        assert_eq!(sent.len() as u64, size);

        let mut other = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut other, &[0u8; 2048]).unwrap();
        let error = format!("{:#}", open_bundle(other.path()).unwrap_err());
        assert!(error.contains("is not a Cairn update bundle"), "{error}");
    }

    #[test]
    fn only_byte_phases_have_bars() {
        let at = |phase: UpgradePhase| pb::UpgradeProgress {
            phase: phase as i32,
            slot: "B".into(),
            ..Default::default()
        };
        assert_eq!(phase_label(&at(UpgradePhase::Receiving)).unwrap(), "receiving and verifying");
        assert_eq!(phase_label(&at(UpgradePhase::Writing)).unwrap(), "writing slot B");
        assert_eq!(phase_label(&at(UpgradePhase::Staged)), None);
    }
}
