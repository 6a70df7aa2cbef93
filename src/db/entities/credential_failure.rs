use sea_orm::entity::prelude::*;

/// Consecutive failed password checks of one subject: `user:<id>` for an account,
/// `login:<login>` for a login that matches none. Times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credential_failures")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject: String,
    pub failures: i32,
    /// Attempts before this instant fail without a password check.
    pub locked_until: i64,
    pub updated_at: i64,
    /// Which run of failures the count belongs to: a success deletes the row and the next
    /// failure starts a run with another number, so an attempt taken back after that cannot
    /// take a count from the new run.
    pub run: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
