use std::fmt;

use sea_orm::entity::prelude::*;

/// A user's TOTP secret. Enforced at login only once confirmed with a code.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "user_totp")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    /// Base32, as authenticator apps take it; returned to the client at setup only.
    pub secret: String,
    pub created_at: DateTimeUtc,
    pub confirmed_at: Option<DateTimeUtc>,
    /// The last time step whose code was accepted: no code of it or before is accepted again.
    pub last_step: Option<i64>,
}

/// Written out so the secret never reaches a log through `{:?}`.
impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserTotp")
            .field("user_id", &self.user_id)
            .field("confirmed_at", &self.confirmed_at)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
