//! The allocator: jemalloc, for a resident set close to what is live and no lock traffic on
//! the request path.
//!
//! A request allocates and frees many small blocks, often on different worker threads.
//! glibc's allocator takes an arena lock for most of those once its small per-thread cache
//! is exhausted, and the two workers of a small machine spend a large share of a page
//! request contending for it; jemalloc's thread caches and per-size bins avoid that. Every
//! password hash also needs a 19 MiB block: glibc tends to keep such blocks in per-thread
//! arenas after a login flood, while jemalloc hands freed memory back to the system after a
//! short decay (and each hashing thread reuses its own block while logins keep coming).

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
