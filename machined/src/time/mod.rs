//! The node's clock. A Raspberry Pi has no real-time clock and boots in 1970, where every
//! certificate is "not yet valid": before anything speaks TLS, the clock is raised to a
//! floor (the last known-good time kept on STATE, or the image's build time), then kept
//! right with SNTP.
//!
//! - [`sntp`]: the SNTP client (RFC 4330): one query, one checked [`sntp::Sample`].
//! - [`clock`]: what to do with an offset (step or slew) and the system calls that do it.
//! - [`discipline`]: which samples may move the clock after the first sync (one server
//!   alone: about a second), and which times may become the floor.
//! - [`floor`]: the time floors, read, recorded (only confirmed times) and applied.
//! - [`sync`]: one sync: asks the servers, applies the discipline's decision, records the
//!   floor.

pub mod clock;
pub mod discipline;
pub mod floor;
pub mod sntp;
pub mod sync;
