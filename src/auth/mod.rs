//! Authentication: password hashing, tokens, and the per-request viewer.

pub mod ip_limit;
pub mod password;
pub mod tokens;
pub mod totp;
pub mod viewer;

pub use ip_limit::IpLimiter;
pub use password::Passwords;
pub use tokens::{AccessClaims, TokenKeys};
pub use viewer::RequestAuth;
