/// jemalloc: request handling allocates many small blocks across worker threads, where glibc's
/// arena locks contend; and a 19 MiB argon2 block freed by one login is reused by the next
/// instead of being faulted in again, then returned to the system after jemalloc's decay.
/// It is also the C `malloc` (the crate's unprefixed feature), so SQLite's allocations, which
/// its worker threads make and request threads free, share it instead of contending in glibc.
/// Set here, not in the library, so tests and other binaries linking it choose their own.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings. A login's argon2 block (19 MiB) is above jemalloc's "oversize"
/// threshold, whose dedicated arena hands memory back at once, so every login faulted in a
/// fresh block; with the threshold off, the block stays with its thread's arena and the next
/// login reuses it. Memory left idle goes back to the system after a second, purged by
/// jemalloc's own background thread even when the server is idle; with the default ten
/// seconds, what one burst of requests freed was still held when the next burst came.
#[cfg(not(target_env = "msvc"))]
#[allow(non_upper_case_globals)]
// Unprefixed jemalloc reads `malloc_conf`; where the crate keeps the prefix, `_rjem_malloc_conf`.
#[cfg_attr(
    not(any(
        target_vendor = "apple",
        target_os = "android",
        target_os = "dragonfly"
    )),
    unsafe(export_name = "malloc_conf")
)]
#[cfg_attr(
    any(
        target_vendor = "apple",
        target_os = "android",
        target_os = "dragonfly"
    ),
    unsafe(export_name = "_rjem_malloc_conf")
)]
pub static malloc_conf: Option<&'static std::ffi::c_char> = Some(unsafe {
    &*c"oversize_threshold:0,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr()
});

fn main() -> std::process::ExitCode {
    rollcall::cli::main()
}
