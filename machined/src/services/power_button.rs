//! `power-button`: powers the node off cleanly when its power key is pressed: the ACPI power
//! button of a PC or VM (QEMU's `system_powerdown`), or any input device that has a power
//! key, as systemd-logind does. Runs only as PID 1.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::node::power::{PowerAction, PowerControl};
use crate::service::{Service, ServiceContext};

/// Input devices, as sysfs lists them.
const INPUT_CLASS: &str = "/sys/class/input";
/// `EV_KEY` and `KEY_POWER` from the kernel's input-event-codes.h.
const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event`: a `timeval` of two kernel longs, then type, code and value.
const TIME_LEN: usize = 2 * std::mem::size_of::<nix::libc::c_ulong>();
const EVENT_LEN: usize = TIME_LEN + 8;

/// The power-button service.
pub struct PowerButton {
    power: Arc<PowerControl>,
}

impl PowerButton {
    /// Powers the node off through `power` when the button is pressed.
    pub fn new(power: Arc<PowerControl>) -> Self {
        PowerButton { power }
    }
}

impl Service for PowerButton {
    fn id(&self) -> &'static str {
        "power-button"
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let devices = power_key_devices(Path::new(INPUT_CLASS));
            if devices.is_empty() {
                ctx.log("no input device has a power key");
                return Ok(());
            }
            let (pressed_tx, mut pressed) = tokio::sync::mpsc::channel(1);
            for device in devices {
                let file = File::open(&device)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", device.display()))?;
                ctx.log(format!("watching {}", device.display()));
                let pressed_tx = pressed_tx.clone();
                // A blocking reader per device: it sleeps in read() until an event comes.
                std::thread::Builder::new().name("power-button".into()).spawn(move || {
                    match wait_for_power_key(file) {
                        Ok(()) => {
                            let _ = pressed_tx.blocking_send(device);
                        }
                        Err(e) => tracing::warn!("power button {}: {e}", device.display()),
                    }
                })?;
            }
            drop(pressed_tx);
            ctx.ready();
            tokio::select! {
                _ = ctx.stop.cancelled() => Ok(()),
                Some(device) = pressed.recv() => {
                    ctx.log(format!("power key pressed on {}", device.display()));
                    tracing::info!("power key pressed: powering off");
                    self.power.request(PowerAction::PowerOff);
                    ctx.stop.cancelled().await;
                    Ok(())
                }
            }
        })
    }
}

/// Reads input events until the power key goes down.
fn wait_for_power_key(mut input: File) -> std::io::Result<()> {
    let mut event = [0u8; EVENT_LEN];
    loop {
        // The kernel hands out whole events only.
        input.read_exact(&mut event)?;
        if is_power_key_press(&event) {
            return Ok(());
        }
    }
}

fn is_power_key_press(event: &[u8; EVENT_LEN]) -> bool {
    let field = |at: usize| u16::from_ne_bytes([event[at], event[at + 1]]);
    let value = i32::from_ne_bytes(event[TIME_LEN + 4..].try_into().expect("four bytes"));
    field(TIME_LEN) == EV_KEY && field(TIME_LEN + 2) == KEY_POWER && value == 1
}

/// `/dev/input/eventN` of each input device whose key capabilities include the power key.
fn power_key_devices(input_class: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(input_class) else {
        return Vec::new();
    };
    let mut devices: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("event"))
        .filter(|entry| {
            std::fs::read_to_string(entry.path().join("device/capabilities/key"))
                .is_ok_and(|bitmap| has_key(&bitmap, KEY_POWER))
        })
        .map(|entry| Path::new("/dev/input").join(entry.file_name()))
        .collect();
    devices.sort();
    devices
}

/// Whether a sysfs key bitmap (hex words, most significant first, each a kernel long)
/// has bit `key` set.
fn has_key(bitmap: &str, key: u16) -> bool {
    let word_bits = 8 * std::mem::size_of::<nix::libc::c_ulong>();
    let words: Vec<&str> = bitmap.split_whitespace().collect();
    let index = usize::from(key) / word_bits;
    let Some(word) = words.len().checked_sub(index + 1).map(|i| words[i]) else {
        return false;
    };
    u64::from_str_radix(word, 16).is_ok_and(|w| w & (1 << (usize::from(key) % word_bits)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_key_bitmaps_as_the_kernel_writes_them() {
        // An ACPI power button on x86_64: only KEY_POWER (bit 116 = word 1, bit 52).
        assert!(has_key("10000000000000 0", KEY_POWER));
        assert!(!has_key("10000000000000 0", 115));
        assert!(!has_key("0", KEY_POWER));
        assert!(!has_key("", KEY_POWER));
    }

    #[test]
    fn finds_devices_with_a_power_key() {
        let sys = tempfile::tempdir().unwrap();
        for (name, keys) in [("event0", "10000000000000 0"), ("event1", "0"), ("mouse0", "")] {
            let caps = sys.path().join(name).join("device/capabilities");
            std::fs::create_dir_all(&caps).unwrap();
            std::fs::write(caps.join("key"), format!("{keys}\n")).unwrap();
        }
        assert_eq!(power_key_devices(sys.path()), [PathBuf::from("/dev/input/event0")]);
    }

    #[test]
    fn only_a_power_key_press_counts() {
        let event = |kind: u16, code: u16, value: i32| {
            let mut e = [0u8; EVENT_LEN];
            e[TIME_LEN..TIME_LEN + 2].copy_from_slice(&kind.to_ne_bytes());
            e[TIME_LEN + 2..TIME_LEN + 4].copy_from_slice(&code.to_ne_bytes());
            e[TIME_LEN + 4..].copy_from_slice(&value.to_ne_bytes());
            e
        };
        assert!(is_power_key_press(&event(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_key_press(&event(EV_KEY, KEY_POWER, 0)));
        assert!(!is_power_key_press(&event(EV_KEY, 115, 1)));
        assert!(!is_power_key_press(&event(0, KEY_POWER, 1)));
    }
}
