//! SeaORM entities: one module per table.

pub mod credential_failure;
pub mod refresh_token;
pub mod server_setting;
pub mod session;
pub mod signing_key;
pub mod user;
