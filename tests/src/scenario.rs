//! One QEMU scenario's run: a VM slot held for its length, and its duration reported as
//! `scenario <board>/<name>: 93.2 s` ([`crate::timing`]), for people and CI.

use crate::boards::Board;
use crate::timing;
use crate::vm_slots;

/// Runs `body` as the scenario `name` of `board`, once a VM slot is free.
pub fn run<T>(board: &Board, name: &str, body: impl FnOnce() -> T) -> T {
    let _slot = vm_slots::shared().acquire();
    timed(board, name, body)
}

/// Runs `body`, which starts no VM, as the scenario `name` of `board`.
pub fn timed<T>(board: &Board, name: &str, body: impl FnOnce() -> T) -> T {
    let _timing = timing::Scenario::start(&format!("{}/{name}", board.name));
    body()
}
