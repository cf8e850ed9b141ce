//! machined as a process: start-up and the main loop, reaping children, reboot and
//! power-off, and giving memory back.

pub mod memory;
pub mod power;
pub mod reaper;
pub mod runtime;
