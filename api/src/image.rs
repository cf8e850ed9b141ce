//! What images and machined agree on: partition labels, where machined lives, the module
//! load list and the kernel command-line key for the slot.

/// GPT label of the boot partition (ESP).
pub const ESP_LABEL: &str = "EFI";
/// GPT label of root slot A.
pub const ROOT_A_LABEL: &str = "ROOT-A";
/// GPT label of root slot B.
pub const ROOT_B_LABEL: &str = "ROOT-B";
/// Where machined (stage 2) lives on a root filesystem.
pub const MACHINED_PATH: &str = "/usr/sbin/machined";

/// Where a bootstrap token baked into an image lives (read-only, mode 0400).
pub const BOOTSTRAP_TOKEN_PATH: &str = "/etc/cairn/bootstrap-token";
/// The file in `/usr/lib/modules/<release>/` listing the modules to load, in order.
pub const MODULE_LOAD_LIST: &str = "modules.cairn";
/// The kernel command-line key that names the slot being booted (`a` or `b`).
pub const SLOT_ARG: &str = "cairn.slot";

/// The GPT label of a slot (`'A'` or `'B'`).
pub fn root_label(slot: char) -> &'static str {
    if slot == 'B' {
        ROOT_B_LABEL
    } else {
        ROOT_A_LABEL
    }
}

/// GPT label of STATE (machine config, node identity), created by machined on first boot.
pub const STATE_LABEL: &str = "STATE";
/// GPT label of EPHEMERAL (`/var`), created on first boot over the rest of the disk.
pub const EPHEMERAL_LABEL: &str = "EPHEMERAL";
