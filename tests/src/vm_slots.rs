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

/// How many VMs of `vm_cpus` virtual CPUs run at once on a host with `cores` (one on this
/// project's 2-core machines), unless `requested` (from [`VMS_ENV`]) says otherwise.
pub fn capacity(cores: usize, vm_cpus: usize, requested: Option<&str>) -> usize {
    match requested.and_then(|r| r.trim().parse::<usize>().ok()) {
        Some(count) => count.max(1),
        None => (cores / vm_cpus.max(1)).max(1),
    }
}

/// The test binary's slots, sized once for VMs of `vm_cpus` virtual CPUs.
pub fn shared(vm_cpus: usize) -> &'static VmSlots {
    static SLOTS: OnceLock<VmSlots> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let requested = std::env::var(VMS_ENV).ok();
        VmSlots::new(capacity(cores, vm_cpus, requested.as_deref()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn capacity_is_cores_over_vm_cpus_unless_asked() {
        assert_eq!(capacity(2, 2, None), 1);
        assert_eq!(capacity(8, 2, None), 4);
        assert_eq!(capacity(1, 2, None), 1);
        assert_eq!(capacity(2, 2, Some("2")), 2);
        assert_eq!(capacity(2, 2, Some("0")), 1);
        assert_eq!(capacity(2, 2, Some("many")), 1);
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
