use std::fmt;

use sea_orm::entity::prelude::*;

/// An Ed25519 key that signs (while current) or verifies (until retired long enough) access
/// tokens.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "signing_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub kid: String,
    /// The private key: PKCS#8 DER, base64.
    pub private_key: String,
    /// The public key: its 32 raw bytes, base64url without padding (a JWK's `x`).
    pub public_key: String,
    pub created_at: DateTimeUtc,
    pub retired_at: Option<DateTimeUtc>,
    /// The latest expiry any instance may give a token this key signs, as instances last
    /// recorded it: with different access token lifetimes, the longest decides how long the
    /// key verifies once retired.
    pub signs_until: Option<DateTimeUtc>,
}

/// Written out so the private key never reaches a log through `{:?}`.
impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("kid", &self.kid)
            .field("private_key", &"<redacted>")
            .field("public_key", &self.public_key)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .field("signs_until", &self.signs_until)
            .finish()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
