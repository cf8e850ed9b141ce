//! What Cairn needs from a Linux kernel, as data (`requirements.toml`, `modules.toml`), and
//! the code that holds a kernel to it:
//!
//! - [`kconfig`]: a kernel `.config`, parsed.
//! - [`requirements`]: the symbols Cairn needs, each with its reason, and the check.
//! - [`module_sets`]: which modules go into the initramfs and the root filesystem, and which
//!   load with no device asking for them.
//! - [`module_index`]: a kernel's module tree, resolving a set into files in load order, with
//!   each module's dependencies and device aliases (Debian ships no `modules.dep` or
//!   `modules.alias`: both come from each module's modinfo).

pub mod kconfig;
pub mod module_index;
pub mod module_sets;
pub mod requirements;
