//! Authentication primitives: password hashing, tokens, two-factor codes, the per-IP limit.

pub mod ip_limit;
pub mod password;
pub mod tokens;
pub mod totp;

pub use ip_limit::IpLimiter;
pub use password::Passwords;
pub use tokens::{AccessClaims, TokenKeys};

/// SHA-256 in hex: what is kept of a secret random enough that a fast hash is safe, and of
/// what must not be kept as typed.
pub fn sha256_hex(bytes: impl AsRef<[u8]>) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}
