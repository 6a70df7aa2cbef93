use sea_orm::entity::prelude::*;

use super::user::Role;

/// One change to an account, a role, a token, a session or two-factor login. Entries outlive
/// the users they name, so ids are not foreign keys.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub at: DateTimeUtc,
    /// `None`: the command line or the server itself.
    pub actor_id: Option<Uuid>,
    /// The actor's role when they acted: who may see the entry's `ip` is judged by it, as who
    /// may see the entry is by `target_role`. `None` for entries written before it was kept
    /// whose actor was gone by then.
    pub actor_role: Option<Role>,
    pub action: String,
    pub target_id: Option<Uuid>,
    /// The target's role once the change was made: admins see entries about standard users.
    pub target_role: Option<Role>,
    pub ip: Option<String>,
    /// Names of the changed fields, comma-separated; never their values.
    pub fields: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
