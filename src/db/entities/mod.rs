//! SeaORM entities: one module per table.

pub mod api_token;
pub mod audit_entry;
pub mod credential_failure;
pub mod recovery_code;
pub mod refresh_token;
pub mod session;
pub mod signing_key;
pub mod user;
pub mod user_totp;
