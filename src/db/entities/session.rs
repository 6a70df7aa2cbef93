use sea_orm::entity::prelude::*;

/// A login: the family every refresh token issued from it belongs to, and the `sid` of its
/// access tokens. Revoking it ends both at once.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
    /// The last refresh (the login at first): the idle limit counts from here.
    pub last_used_at: DateTimeUtc,
    /// The client's address at login, as text.
    pub ip: Option<String>,
    /// The client's User-Agent at login, shortened.
    pub user_agent: Option<String>,
    /// The last password or TOTP check made for a sensitive action; with `created_at` (the
    /// login) it decides whether step-up verification is needed.
    pub verified_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
