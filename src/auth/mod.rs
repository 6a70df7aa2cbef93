//! Authentication primitives: password hashing, tokens, two-factor codes, the per-IP limit.

pub mod ip_limit;
pub mod password;
pub mod tokens;
pub mod totp;

pub use ip_limit::IpLimiter;
pub use password::Passwords;
pub use tokens::{AccessClaims, TokenKeys};
