//! rollcall: a user-management GraphQL server.
//!
//! Layout: [`config`] (flags and environment), [`db`] (entities and queries), [`auth`]
//! (passwords, tokens, the per-request viewer), [`service`] (every rule), [`graphql`] (schema
//! and thin resolvers), [`server`] (HTTP), [`graphiql`] (the
//! in-browser IDE and its files), [`cli`] (commands), [`error`] (the one error type).

pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod graphiql;
pub mod graphql;
pub mod metrics;
pub mod server;
pub mod service;

/// jemalloc as the global allocator, with rollcall's settings; for a binary's `main.rs` (the
/// server's, the benchmark's, which re-executes itself as the server), never for the library,
/// which tests link with the system allocator. The binary's crate depends on
/// `tikv-jemallocator` with the `unprefixed_malloc_on_supported_platforms` feature; the
/// library does not use it, so nothing else links jemalloc.
///
/// Why jemalloc: request handling allocates many small blocks across worker threads, where
/// glibc's arena locks contend; a 19 MiB argon2 block freed by one login is reused by the next
/// instead of being faulted in again. It is also the C `malloc` (the crate's unprefixed
/// feature), so SQLite's allocations, which its worker threads make and request threads free,
/// share it instead of contending in glibc.
///
/// The settings: a login's argon2 block is above jemalloc's "oversize" threshold, whose
/// dedicated arena hands memory back at once, so every login faulted in a fresh block; with the
/// threshold off, the block stays with its thread's arena and the next login reuses it. Memory
/// left idle goes back to the system after a second, purged by jemalloc's own background
/// thread even when the server is idle; with the default ten seconds, what one burst of
/// requests freed was still held when the next burst came.
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[cfg(not(target_env = "msvc"))]
        #[global_allocator]
        static GLOBAL: ::tikv_jemallocator::Jemalloc = ::tikv_jemallocator::Jemalloc;

        // Unprefixed jemalloc reads `malloc_conf`; where the crate keeps the prefix (Apple,
        // Android, DragonFly), `_rjem_malloc_conf`.
        #[cfg(not(target_env = "msvc"))]
        #[allow(non_upper_case_globals)]
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
            &*c"oversize_threshold:0,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"
                .as_ptr()
        });
    };
}
