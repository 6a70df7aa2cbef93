/// jemalloc: request handling allocates many small blocks across worker threads, where glibc's
/// arena locks contend; and a 19 MiB argon2 block freed by one login is reused by the next
/// instead of being faulted in again, then returned to the system after jemalloc's decay.
/// Set here, not in the library, so tests and other binaries linking it choose their own.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    rollcall::cli::main()
}
