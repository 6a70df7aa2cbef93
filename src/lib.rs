//! rollcall: a user-management GraphQL server.
//!
//! Layout: [`config`] (flags and environment), [`db`] (entities and queries), [`auth`]
//! (passwords, tokens, two-factor codes), [`service`] (every rule), [`graphql`] (schema, thin
//! resolvers, the request's viewer), [`server`] (HTTP), [`metrics`] (the Prometheus registry), [`graphiql`]
//! (the in-browser IDE and its files), [`cli`] (commands), [`error`] (the one error type).

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
/// Why jemalloc: request threads free what other threads allocated (sqlx's and SQLite's
/// workers), where glibc's arenas contend; as the C `malloc` too, SQLite shares it. The
/// settings: with the "oversize" threshold off, a login's 19 MiB argon2 block stays in its
/// thread's arena for the next login instead of being faulted in again; memory left idle goes
/// back to the system after a second, purged by jemalloc's background thread even when the
/// server is idle.
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
