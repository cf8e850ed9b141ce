//! A/B updates (DESIGN §6): installing a signed bundle into the slot not running, choosing
//! a slot for the next boot, and what the node knows of its slots and its last update.
//!
//! - [`receive`]: the bundle checked against this node and verified whole, into a spool.
//! - [`slot_writer`]: the slots' root filesystems, written.
//! - [`record`]: the last update's outcome, on STATE.
//! - [`commit`]: after a boot on trial, bless the slot once healthy, or give it up.
//! - [`watchdog`]: the hardware watchdog, fed while machined runs.
//!
//! An install goes: signature, manifest checks, the whole bundle received and verified
//! ([`receive`]); then the slot retired from the bootloader's choice, its root
//! ([`slot_writer`]) and boot files copied from the spool and synced; then one step of the
//! [`BootControl`] makes the slot the next boot's with a try counter (for systemd-boot, one
//! rename). The copy checks lengths but does not hash again:
//! every spooled byte was hashed on its way in moments before, a second pass would read the
//! page cache's copy of the same bytes, and it took most of the write's time.
//!
//! A power cut before that step boots the old slot; after it, the bootloader's counter and
//! machined's health deadline bring the old slot back if the new one does not come up. While
//! the booted slot is on trial, the other slot is its fallback and takes no update.

pub mod commit;
pub mod receive;
pub mod record;
pub mod slot_writer;
pub mod watchdog;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cairn_api::arch::Arch;
use cairn_api::bundle::{self, Artifact, ArtifactKind, BundleError, Manifest, Target, TrustedKey};
use cairn_api::image::{Bootloader, Slot, ESP_LABEL, UPDATE_KEYS_PATH};

use crate::boot::control::{self, BootControl, BootControlError, SlotSystem};
use crate::files::layout::{under, NodeLayout};
use receive::{artifact, spooled, Policy, Receiver};
use record::{RecordFile, UpdateRecord, UpdateState};
use slot_writer::{RootPartitions, SlotWriter};

/// Boots a new slot gets to come up before the bootloader gives it up.
pub const TRIES: u32 = 3;

/// Why an update or rollback was not made. Nothing the node boots has changed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The bundle is not acceptable: unsigned, corrupt, or not for this node.
    #[error("bundle refused: {0}")]
    Bundle(#[from] BundleError),
    /// The node cannot take updates (no slots, another update running, nothing to roll
    /// back to).
    #[error("{0}")]
    Unavailable(String),
    /// Reading or writing the disk failed.
    #[error("{0}")]
    Io(String),
}

/// Boot control's failures are the disk's: the same variant, for callers that tell only
/// "refused" from "failed".
impl From<BootControlError> for UpdateError {
    fn from(e: BootControlError) -> Self {
        UpdateError::Io(e.to_string())
    }
}

fn io_error(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> UpdateError {
    move |e| UpdateError::Io(format!("{what}: {e}"))
}

/// The other slot.
pub fn other(slot: Slot) -> Slot {
    slot.other()
}

/// What `/etc/os-release` says of the running system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `VERSION_ID`.
    pub version: String,
    /// `VARIANT_ID`: the board the image was built for.
    pub board: Option<String>,
}

impl Release {
    /// Reads `os_release`; without one (machined as an ordinary process), machined's own
    /// version and no board.
    pub fn read(os_release: &Path) -> Release {
        let text = std::fs::read_to_string(os_release).unwrap_or_default();
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim_matches('"').to_string())
                .filter(|v| !v.is_empty())
        };
        Release {
            version: field("VERSION_ID").unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
            board: field("VARIANT_ID"),
        }
    }
}

/// The slots: what boots them, where their roots are written, and the one booted.
pub struct Slots {
    /// The bootloader's choice of slot, and the slots' boot files.
    pub control: Arc<dyn BootControl>,
    /// The slots' roots.
    pub roots: Arc<dyn SlotWriter>,
    /// The slot booted.
    pub booted: Slot,
}

impl Slots {
    /// The slots of the disk machined booted from, found by label under `sys_class_block`:
    /// `bootloader`'s state on the boot partition, ROOT-A and ROOT-B.
    pub fn find(
        sys_class_block: &Path,
        bootloader: Bootloader,
        booted: Slot,
    ) -> Result<Slots, String> {
        let find = |label: &str| {
            crate::boot::partitions::find_by_label(sys_class_block, label)
                .ok_or_else(|| format!("no partition labelled {label}"))
        };
        Ok(Slots {
            control: control::on_boot_partition(bootloader, find(ESP_LABEL)?),
            roots: Arc::new(RootPartitions::new([
                find(Slot::A.root_label())?,
                find(Slot::B.root_label())?,
            ])),
            booted,
        })
    }
}

/// What the node says of its slots.
#[derive(Debug, Clone)]
pub struct SlotStatus {
    /// The slot booted, if machined booted from one.
    pub booted: Option<Slot>,
    /// The version of the system in the other slot, if it holds one.
    pub other_version: Option<String>,
    /// The last update.
    pub last: Option<UpdateRecord>,
}

/// The phases of an install that move bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The manifest is accepted; the bundle is being received and verified.
    Receiving,
    /// The verified system is being written into the slot.
    Writing,
}

/// Progress of an install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The phase.
    pub phase: Phase,
    /// The bundle's version.
    pub version: String,
    /// The slot it goes into.
    pub slot: Slot,
    /// Bytes done: compressed bytes received, or bytes written.
    pub done: u64,
    /// Bytes the phase moves in all.
    pub total: u64,
}

/// What an install or rollback made the next boot's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// The slot.
    pub slot: Slot,
    /// Its version.
    pub version: String,
}

/// The updater of a node.
pub struct Updater {
    slots: Result<Slots, String>,
    release: Release,
    spool: PathBuf,
    record: RecordFile,
    baked_keys: PathBuf,
    busy: Mutex<()>,
    /// The version in the slot not booted. Only the updater writes version files, so the
    /// ESP is read once and this kept in step: `Version`, which callers poll, never mounts it
    /// (nor races an install's writes there).
    other_version: Mutex<Option<String>>,
}

impl Updater {
    /// The updater of the node laid out as `layout`, with its slots (or why it has none).
    pub fn new(layout: &NodeLayout, slots: Result<Slots, String>) -> Updater {
        let other_version = slots.as_ref().ok().and_then(|s| match s.control.state() {
            Ok(state) => state.slot(other(s.booted)).version.clone(),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        });
        Updater {
            slots,
            other_version: Mutex::new(other_version),
            release: Release::read(&under(layout.root(), "/etc/os-release")),
            spool: layout.var_dir().join("lib/cairn/update"),
            record: RecordFile::new(&layout.state_dir()),
            baked_keys: under(layout.root(), UPDATE_KEYS_PATH),
            busy: Mutex::new(()),
        }
    }

    /// The running system.
    pub fn release(&self) -> &Release {
        &self.release
    }

    /// The slots, or why the node has none.
    pub fn slots(&self) -> Result<&Slots, UpdateError> {
        self.slots.as_ref().map_err(|why| {
            UpdateError::Unavailable(format!("this node cannot switch slots: {why}"))
        })
    }

    /// The last update's record file.
    pub fn record(&self) -> &RecordFile {
        &self.record
    }

    /// The slots' versions and the last update.
    pub fn status(&self) -> SlotStatus {
        SlotStatus {
            booted: self.slots.as_ref().ok().map(|s| s.booted),
            other_version: self.other_version().clone(),
            last: self.record.load(),
        }
    }

    fn other_version(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.other_version.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The keys trusted to sign bundles: the image's, and `configured` (base64).
    fn trusted_keys(&self, configured: &[String]) -> Result<Vec<TrustedKey>, UpdateError> {
        let baked = match std::fs::read_to_string(&self.baked_keys) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_error(self.baked_keys.display())(e)),
        };
        let lines = baked.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        lines
            .chain(configured.iter().map(String::as_str))
            .map(|text| {
                TrustedKey::from_base64(text)
                    .map_err(|e| UpdateError::Unavailable(format!("trusted key {text:?}: {e}")))
            })
            .collect()
    }

    /// Installs the bundle read from `stream` into the slot not booted and makes that slot
    /// the next boot's, on trial. `configured_keys` are the config's trusted keys; `force`
    /// allows an older version. Blocking: run it off the async runtime.
    pub fn install(
        &self,
        stream: impl Read,
        configured_keys: &[String],
        force: bool,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Chosen, UpdateError> {
        let _busy = self.busy.try_lock().map_err(|_| {
            UpdateError::Unavailable("another update or rollback is in progress".into())
        })?;
        let slots = self.slots()?;
        let trusted = self.trusted_keys(configured_keys)?;
        if trusted.is_empty() {
            return Err(UpdateError::Unavailable(
                "no key is trusted to sign updates: the image has none and \
                 machine.update.trustedKeys is empty"
                    .into(),
            ));
        }
        let slot = other(slots.booted);
        self.check_fallback_kept(slots, slot)?;
        let running = semver::Version::parse(&self.release.version).map_err(|e| {
            UpdateError::Unavailable(format!("the running version {:?}: {e}", self.release.version))
        })?;
        std::fs::create_dir_all(&self.spool).map_err(io_error(self.spool.display()))?;
        let result = (|| -> Result<Manifest, UpdateError> {
            let arch = Arch::built_for().ok_or_else(|| {
                UpdateError::Unavailable(format!(
                    "machined was built for {}, an architecture no bundle is made for",
                    std::env::consts::ARCH
                ))
            })?;
            let policy = Policy {
                arch,
                board: self.release.board.clone(),
                running,
                force,
                root_bytes: slots.roots.capacity(slot).map_err(io_error("the slot's root"))?,
                free_bytes: free_bytes(&self.spool)?,
            };
            let mut report = |manifest: &Manifest, done: u64| {
                progress(Progress {
                    phase: Phase::Receiving,
                    version: manifest.version.clone(),
                    slot,
                    done,
                    total: manifest.artifacts.iter().map(|a| a.compressed_size).sum(),
                })
            };
            let mut receiver = Receiver::new(self.spool.clone(), &policy, &mut report);
            let manifest = bundle::read(stream, &trusted, &mut receiver)?;
            self.write_slot(slots, slot, &manifest, progress)?;
            Ok(manifest)
        })();
        self.clear_spool();
        let manifest = result?;
        self.save_pending(slot, &manifest.version)?;
        Ok(Chosen { slot, version: manifest.version })
    }

    /// Refuses to write `slot` while it is the fallback of a booted slot still on trial: the
    /// install would leave no proven system to come back to. A slot whose entry is gone or
    /// given up is no fallback, and may be written.
    fn check_fallback_kept(&self, slots: &Slots, slot: Slot) -> Result<(), UpdateError> {
        let state = slots.control.state()?;
        let on_trial = state.slot(slots.booted).entry.as_ref().is_some_and(|e| e.counter.is_some());
        let fallback = state.slot(slot).entry.as_ref().is_some_and(|e| !e.is_given_up());
        match on_trial && fallback {
            true => Err(UpdateError::Unavailable(format!(
                "slot {} is on trial and slot {slot} holds the system to fall back to: \
                 update once the node reports this update succeeded, or roll back",
                slots.booted
            ))),
            false => Ok(()),
        }
    }

    /// Removes the spool, which is only ever of use within one install (one cut short by a
    /// power cut leaves it behind).
    pub fn clear_spool(&self) {
        match std::fs::remove_dir_all(&self.spool) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!("{}: {e}", self.spool.display())
            }
            _ => {}
        }
    }

    /// Writes the spooled system of `manifest` into `slot` and makes it the next boot's.
    fn write_slot(
        &self,
        slots: &Slots,
        slot: Slot,
        manifest: &Manifest,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), UpdateError> {
        let total: u64 = manifest.artifacts.iter().map(|a| a.size).sum();
        let mut done = 0;
        let mut written = |n: usize| {
            done += n as u64;
            progress(Progress {
                phase: Phase::Writing,
                version: manifest.version.clone(),
                slot,
                done,
                total,
            });
        };
        // From here the slot's old system is gone: no entry may point at it.
        *self.other_version() = None;
        slots.control.retire(slot)?;

        let started = std::time::Instant::now();
        let rootfs = artifact(manifest, ArtifactKind::Rootfs);
        let spool = spooled(&self.spool, &Target::SlotRoot);
        let mut file = File::open(&spool).map_err(io_error(spool.display()))?;
        let length = slots
            .roots
            .write(slot, &mut file, &mut written)
            .map_err(io_error(format!("copying {} into slot {slot}", spool.display())))?;
        check_copied(rootfs, length)?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            "wrote {length} bytes to slot {slot}'s root in {seconds:.2} s ({:.1} MB/s)",
            length as f64 / seconds.max(1e-6) / 1e6
        );

        for boot_file in &manifest.artifacts {
            let Target::Boot(name) = boot_file.target() else { continue };
            let spool = spooled(&self.spool, &boot_file.target());
            let mut file = File::open(&spool).map_err(io_error(spool.display()))?;
            let length = slots.control.install_file(slot, &name, &mut file, &mut written)?;
            check_copied(boot_file, length)?;
        }
        let system = SlotSystem { version: &manifest.version, kernel_args: &manifest.kernel_args };
        let name = slots.control.choose(slot, system, TRIES)?;
        *self.other_version() = Some(manifest.version.clone());
        tracing::info!("slot {slot} ({}) is the next boot's: {name}", manifest.version);
        Ok(())
    }

    /// Makes the other slot the next boot's, on trial, if it holds a system.
    pub fn rollback(&self) -> Result<Chosen, UpdateError> {
        let _busy = self.busy.try_lock().map_err(|_| {
            UpdateError::Unavailable("another update or rollback is in progress".into())
        })?;
        let slots = self.slots()?;
        let slot = other(slots.booted);
        let state = slots.control.state()?;
        let target = state.slot(slot);
        let version = target.version.clone().ok_or_else(|| {
            UpdateError::Unavailable(format!("slot {slot} holds no system to roll back to"))
        })?;
        // The entry keeps the kernel arguments its system was installed with.
        let entry = target.entry.as_ref().ok_or_else(|| {
            UpdateError::Unavailable(format!("slot {slot} has no boot entry to roll back to"))
        })?;
        let system = SlotSystem { version: &version, kernel_args: &entry.kernel_args };
        slots.control.choose(slot, system, TRIES)?;
        self.save_pending(slot, &version)?;
        Ok(Chosen { slot, version })
    }

    fn save_pending(&self, slot: Slot, version: &str) -> Result<(), UpdateError> {
        self.record
            .save(&UpdateRecord {
                state: UpdateState::Pending,
                slot,
                from_version: self.release.version.clone(),
                to_version: version.to_string(),
                reason: String::new(),
                started_at: record::now(),
                finished_at: String::new(),
            })
            .map_err(io_error("the update record"))
    }
}

/// Copies `from` into `to` a piece at a time, telling `written` of each piece's length;
/// the bytes copied. (Not `io::copy`: the progress wants the pieces.)
pub(crate) fn copy(
    from: &mut dyn Read,
    to: &mut dyn Write,
    written: &mut dyn FnMut(usize),
) -> io::Result<u64> {
    let mut buffer = vec![0u8; 4 << 20];
    let mut total = 0;
    loop {
        let n = from.read(&mut buffer)?;
        if n == 0 {
            return Ok(total);
        }
        to.write_all(&buffer[..n])?;
        total += n as u64;
        written(n);
    }
}

/// Checks that the whole of a spooled artifact went into the slot.
fn check_copied(artifact: &Artifact, copied: u64) -> Result<(), UpdateError> {
    match copied == artifact.size {
        true => Ok(()),
        false => Err(UpdateError::Io(format!(
            "{}: copied {copied} bytes from the spool, where the manifest says {}",
            artifact.kind, artifact.size
        ))),
    }
}

/// The bytes free at `dir` (machined writes as root, so the reserved blocks count).
fn free_bytes(dir: &Path) -> Result<u64, UpdateError> {
    let stat = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| UpdateError::Io(format!("{}: {e}", dir.display())))?;
    Ok(stat.blocks_free() as u64 * stat.fragment_size() as u64)
}

#[cfg(test)]
pub(crate) mod tests;
