//! How many VMs run at once: a counting semaphore shared by the threads of a test binary,
//! sized by the host's cores (cargo runs test binaries one after the other).

use std::sync::{Condvar, Mutex, OnceLock};

/// Overrides the number of VMs that may run at once.
pub const VMS_ENV: &str = "CAIRN_TEST_VMS";

/// A fixed number of slots, taken and given back.
#[derive(Debug)]
pub struct VmSlots {
    free: Mutex<usize>,
    given_back: Condvar,
}

/// A slot held; given back on drop.
#[derive(Debug)]
pub struct VmSlot<'a> {
    slots: &'a VmSlots,
}

impl VmSlots {
    /// `count` slots (at least one).
    pub fn new(count: usize) -> VmSlots {
        VmSlots { free: Mutex::new(count.max(1)), given_back: Condvar::new() }
    }

    /// Waits for a free slot and takes it.
    pub fn acquire(&self) -> VmSlot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.given_back.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        VmSlot { slots: self }
    }
}

impl Drop for VmSlot<'_> {
    fn drop(&mut self) {
        *self.slots.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.slots.given_back.notify_one();
    }
}

/// How many VMs run at once on a host with `cores`: one per core, unless `requested` (from
/// [`VMS_ENV`]) says otherwise. A guest under TCG rarely keeps all its virtual CPUs busy:
/// on a 2-core host, three scenarios took 212 s with two 2-CPU VMs side by side and 261 s
/// one after the other.
pub fn capacity(cores: usize, requested: Option<&str>) -> usize {
    match requested.and_then(|r| r.trim().parse::<usize>().ok()) {
        Some(count) => count.max(1),
        None => cores.max(1),
    }
}

/// The test binary's slots, sized once.
pub fn shared() -> &'static VmSlots {
    static SLOTS: OnceLock<VmSlots> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let requested = std::env::var(VMS_ENV).ok();
        VmSlots::new(capacity(cores, requested.as_deref()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn capacity_is_a_vm_per_core_unless_asked() {
        assert_eq!(capacity(2, None), 2);
        assert_eq!(capacity(8, None), 8);
        assert_eq!(capacity(0, None), 1);
        assert_eq!(capacity(2, Some("1")), 1);
        assert_eq!(capacity(2, Some("0")), 1);
        assert_eq!(capacity(2, Some("many")), 2);
    }

    #[test]
    fn no_more_than_the_slots_run_at_once() {
        let slots = VmSlots::new(2);
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..6 {
                scope.spawn(|| {
                    let _slot = slots.acquire();
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }
}
