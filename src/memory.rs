//! Allocator settings: a resident set close to what is live, and no lock traffic on the
//! request path.
//!
//! Every password hash allocates a 19 MiB block. glibc's default raises its mmap threshold
//! after the first such block is freed, so later blocks come from per-thread arenas that are
//! rarely returned to the system: a login flood would leave hundreds of MiB resident. A fixed
//! threshold sends large blocks to mmap, returned to the system as soon as they are freed.
//!
//! A request allocates and frees many small blocks, often on different worker threads.
//! glibc's per-thread cache keeps only 7 freed blocks of each size; past that, every free and
//! malloc takes an arena lock the other worker contends for, which cost a third of the
//! throughput of the lightest requests. A cache of 64 per size removes nearly all of it for
//! a few MiB. The cache size can only be set before the process starts (a glibc tunable),
//! so the process starts itself again once with it set.

/// The tunable added to `GLIBC_TUNABLES` when the caller has not set this one themselves.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TCACHE_TUNABLE: &str = "glibc.malloc.tcache_count";
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TCACHE_COUNT: u32 = 64;

/// Applies the settings; call once at start-up, before threads are spawned. May replace the
/// process with itself (same arguments, same environment plus the tunable); if that fails the
/// process carries on with glibc's defaults.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_allocator() {
    use std::os::unix::process::CommandExt as _;

    const MMAP_THRESHOLD: libc::c_int = 256 * 1024;
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if !tunables.contains(TCACHE_TUNABLE)
        && let Ok(exe) = std::env::current_exe()
    {
        let setting = format!("{TCACHE_TUNABLE}={TCACHE_COUNT}");
        let tunables = if tunables.is_empty() {
            setting
        } else {
            format!("{tunables}:{setting}")
        };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(exe);
        if let Some(name) = args.next() {
            command.arg0(name);
        }
        // Only returns on failure.
        let _ = command.args(args).env("GLIBC_TUNABLES", tunables).exec();
    }
    // SAFETY: mallopt only adjusts allocator parameters; it is called before other threads
    // exist, and the value is within glibc's documented range.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}
