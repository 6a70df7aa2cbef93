//! Allocator settings that keep the resident set close to what is live.
//!
//! Every password hash allocates a 19 MiB block. glibc's default raises its mmap threshold
//! after the first such block is freed, so later blocks come from per-thread arenas that are
//! rarely returned to the system: a login flood would leave hundreds of MiB resident. A fixed
//! threshold sends large blocks to mmap, returned to the system as soon as they are freed.

/// Applies the settings; call once at start-up, before threads are spawned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_allocator() {
    const MMAP_THRESHOLD: libc::c_int = 256 * 1024;
    // SAFETY: mallopt only adjusts allocator parameters; it is called before other threads
    // exist, and both values are within glibc's documented ranges.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}
