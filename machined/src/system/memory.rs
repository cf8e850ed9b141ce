//! Giving freed memory back to the system. glibc's allocator keeps what was freed in its
//! arenas for reuse; after a burst (a flood of large requests, say) PID 1 would stay at its
//! peak for good, on a board with a few hundred MiB.

/// Returns the allocator's free memory to the system (glibc's `malloc_trim`).
#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
pub fn return_free_memory() {
    // SAFETY: malloc_trim only walks and releases the allocator's own free lists; it takes
    // the arenas' locks itself and touches no memory the program holds.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Other allocators give memory back by themselves (or cannot be asked to).
#[cfg(not(target_env = "gnu"))]
pub fn return_free_memory() {}
