//! Authentication: password hashing, tokens, and the per-request viewer.

pub mod password;
pub mod tokens;
pub mod viewer;

pub use password::Passwords;
pub use tokens::{AccessClaims, TokenKeys};
pub use viewer::RequestAuth;
