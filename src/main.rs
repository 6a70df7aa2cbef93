/// jemalloc: request handling allocates many small blocks across worker threads, where glibc's
/// arena locks contend; and a 19 MiB argon2 block freed by one login is reused by the next
/// instead of being faulted in again, then returned to the system after jemalloc's decay.
/// Set here, not in the library, so tests and other binaries linking it choose their own.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings. A login's argon2 block (19 MiB) is above jemalloc's "oversize"
/// threshold, whose dedicated arena hands memory back at once, so every login faulted in a
/// fresh block; with the threshold off, the block stays with its thread's arena and the next
/// login reuses it. Memory left idle goes back to the system over jemalloc's decay time (ten
/// seconds), purged by its own background thread even when the server is idle.
#[cfg(not(target_env = "msvc"))]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: Option<&'static std::ffi::c_char> =
    Some(unsafe { &*c"oversize_threshold:0,background_thread:true,muzzy_decay_ms:0".as_ptr() });

fn main() -> std::process::ExitCode {
    rollcall::cli::main()
}
