//! The audit trail: entries written in the transaction of the change they record, and read
//! newest first by keyset pagination.

use std::net::IpAddr;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::Position;
use super::Role;
use super::entities::audit_entry::{self, Column, Entity as Entries, Model as Entry};

/// What an entry records. Stored by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    UserRegistered,
    UserCreated,
    UserUpdated,
    UserDeleted,
    UsersImported,
    RoleChanged,
    LoggedIn,
    LoggedOut,
    SessionRevoked,
    AllSessionsRevoked,
    RefreshTokenReused,
    ApiTokenCreated,
    ApiTokenRevoked,
    TotpSetupStarted,
    TotpEnabled,
    TotpDisabled,
    RecoveryCodeUsed,
    SigningKeyRotated,
    SigningKeysRevoked,
}

impl Action {
    pub const ALL: [Action; 19] = [
        Action::UserRegistered,
        Action::UserCreated,
        Action::UserUpdated,
        Action::UserDeleted,
        Action::UsersImported,
        Action::RoleChanged,
        Action::LoggedIn,
        Action::LoggedOut,
        Action::SessionRevoked,
        Action::AllSessionsRevoked,
        Action::RefreshTokenReused,
        Action::ApiTokenCreated,
        Action::ApiTokenRevoked,
        Action::TotpSetupStarted,
        Action::TotpEnabled,
        Action::TotpDisabled,
        Action::RecoveryCodeUsed,
        Action::SigningKeyRotated,
        Action::SigningKeysRevoked,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::UserRegistered => "USER_REGISTERED",
            Action::UserCreated => "USER_CREATED",
            Action::UserUpdated => "USER_UPDATED",
            Action::UserDeleted => "USER_DELETED",
            Action::UsersImported => "USERS_IMPORTED",
            Action::RoleChanged => "ROLE_CHANGED",
            Action::LoggedIn => "LOGGED_IN",
            Action::LoggedOut => "LOGGED_OUT",
            Action::SessionRevoked => "SESSION_REVOKED",
            Action::AllSessionsRevoked => "ALL_SESSIONS_REVOKED",
            Action::RefreshTokenReused => "REFRESH_TOKEN_REUSED",
            Action::ApiTokenCreated => "API_TOKEN_CREATED",
            Action::ApiTokenRevoked => "API_TOKEN_REVOKED",
            Action::TotpSetupStarted => "TOTP_SETUP_STARTED",
            Action::TotpEnabled => "TOTP_ENABLED",
            Action::TotpDisabled => "TOTP_DISABLED",
            Action::RecoveryCodeUsed => "RECOVERY_CODE_USED",
            Action::SigningKeyRotated => "SIGNING_KEY_ROTATED",
            Action::SigningKeysRevoked => "SIGNING_KEYS_REVOKED",
        }
    }

    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|action| action.name() == name)
    }
}

/// An entry to write: who did what to whom, from where, touching which fields.
#[derive(Clone, Debug)]
pub struct NewEntry {
    /// Who acted, with their role as they acted.
    pub actor: Option<(Uuid, Role)>,
    pub action: Action,
    /// The user the change is about, with their role once it was made.
    pub target: Option<(Uuid, Role)>,
    pub ip: Option<IpAddr>,
    pub fields: Vec<&'static str>,
}

impl NewEntry {
    pub fn new(action: Action, actor: Option<(Uuid, Role)>, ip: Option<IpAddr>) -> Self {
        Self {
            actor,
            action,
            target: None,
            ip,
            fields: Vec::new(),
        }
    }

    pub fn target(mut self, id: Uuid, role: Role) -> Self {
        self.target = Some((id, role));
        self
    }

    pub fn fields(mut self, fields: impl IntoIterator<Item = &'static str>) -> Self {
        self.fields.extend(fields);
        self
    }
}

/// Writes `entry`; call it with the transaction of the change it records.
pub async fn record(db: &impl ConnectionTrait, entry: NewEntry) -> Result<(), DbErr> {
    Entries::insert(audit_entry::ActiveModel {
        id: Set(Uuid::now_v7()),
        at: Set(super::now()),
        actor_id: Set(entry.actor.map(|(id, _)| id)),
        actor_role: Set(entry.actor.map(|(_, role)| role)),
        action: Set(entry.action.name().to_owned()),
        target_id: Set(entry.target.map(|(id, _)| id)),
        target_role: Set(entry.target.map(|(_, role)| role)),
        ip: Set(entry.ip.map(|ip| ip.to_string())),
        fields: Set(entry.fields.join(",")),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// What an audit query filters on.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub action: Option<Action>,
    pub actor: Option<Uuid>,
    pub target: Option<Uuid>,
}

/// Which entries a reader may see.
#[derive(Clone, Copy, Debug)]
pub enum Scope {
    All,
    /// Entries about standard users and about this user.
    StandardAnd(Uuid),
}

/// The entries `scope` may see that match `filter`.
fn matching(scope: Scope, filter: &Filter) -> Condition {
    let mut condition = Condition::all();
    if let Scope::StandardAnd(me) = scope {
        condition = condition.add(
            Condition::any()
                .add(Column::TargetRole.eq(Role::Standard))
                .add(Column::TargetId.eq(me)),
        );
    }
    if let Some(action) = filter.action {
        condition = condition.add(Column::Action.eq(action.name()));
    }
    if let Some(actor) = filter.actor {
        condition = condition.add(Column::ActorId.eq(actor));
    }
    if let Some(target) = filter.target {
        condition = condition.add(Column::TargetId.eq(target));
    }
    condition
}

/// How many entries `scope` may see that match `filter`.
pub async fn count(db: &impl ConnectionTrait, scope: Scope, filter: &Filter) -> Result<u64, DbErr> {
    Entries::find()
        .filter(matching(scope, filter))
        .count(db)
        .await
}

/// Entries strictly older than `after`, newest first; one more than `limit` is read to tell
/// whether another page follows.
pub async fn page(
    db: &impl ConnectionTrait,
    scope: Scope,
    filter: &Filter,
    after: Option<Position>,
    limit: u64,
) -> Result<(Vec<Entry>, bool), DbErr> {
    let mut condition = matching(scope, filter);
    if let Some(after) = after {
        condition = condition.add(
            Expr::tuple([
                Expr::col((Entries, Column::At)),
                Expr::col((Entries, Column::Id)),
            ])
            .lt(Expr::tuple([Expr::value(after.at), Expr::value(after.id)])),
        );
    }
    let mut rows = Entries::find()
        .filter(condition)
        .order_by_desc(Column::At)
        .order_by_desc(Column::Id)
        .limit(limit + 1)
        .all(db)
        .await?;
    let has_next = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    Ok((rows, has_next))
}

/// Deletes entries written before `before`, at most `batch` a statement. Returns how many
/// went.
pub async fn purge(
    db: &impl ConnectionTrait,
    before: chrono::DateTime<chrono::Utc>,
    batch: u64,
) -> Result<u64, DbErr> {
    let old = Condition::all().add(Column::At.lt(before));
    super::delete_in_batches::<Entries>(db, Column::Id, old, batch).await
}
