//! Sessions (token families) and refresh tokens.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::sea_query::Query;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::entities::{refresh_token, session};

/// Where the client of a login or registration came from, kept on its session for the session
/// list.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// The moments a session must be younger than to be live, computed from the session limits
/// at one instant: created after `born_after` (the maximum age) and last refreshed after
/// `used_after` (the idle limit). Comparing stored times with cut-offs, rather than computing
/// in SQL, works the same on both backends (SQLite keeps times as text).
#[derive(Clone, Copy, Debug)]
pub struct Live {
    pub born_after: DateTime<Utc>,
    pub used_after: DateTime<Utc>,
}

impl Live {
    /// The condition on `sessions` columns: not revoked and within both limits.
    pub fn condition(&self) -> Condition {
        Condition::all()
            .add(session::Column::RevokedAt.is_null())
            .add(session::Column::CreatedAt.gt(self.born_after))
            .add(session::Column::LastUsedAt.gt(self.used_after))
    }
}

pub async fn create(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    origin: &Origin,
) -> Result<(Uuid, DateTime<Utc>), DbErr> {
    let (id, at) = (Uuid::now_v7(), super::now());
    insert(db, id, user_id, origin, at).await?;
    Ok((id, at))
}

async fn insert(
    db: &impl ConnectionTrait,
    id: Uuid,
    user_id: Uuid,
    origin: &Origin,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    session::Entity::insert(session::ActiveModel {
        id: Set(id),
        user_id: Set(user_id),
        created_at: Set(at),
        revoked_at: Set(None),
        last_used_at: Set(at),
        ip: Set(origin.ip.map(|ip| ip.to_string())),
        user_agent: Set(origin.user_agent.clone()),
        verified_at: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

pub async fn insert_refresh_token(
    db: &impl ConnectionTrait,
    session_id: Uuid,
    token_hash: String,
    expires_at: DateTime<Utc>,
) -> Result<(), DbErr> {
    refresh_token::Entity::insert(refresh_token::ActiveModel {
        token_hash: Set(token_hash),
        session_id: Set(session_id),
        created_at: Set(super::now()),
        expires_at: Set(expires_at),
        used_at: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Marks an unused, unexpired token as used and returns its session. Exactly one of several
/// concurrent callers gets `Some`: the conditional update is the atomic step of rotation.
pub async fn consume_refresh_token(
    db: &impl ConnectionTrait,
    token_hash: &str,
) -> Result<Option<Uuid>, DbErr> {
    let now = super::now();
    let consumed = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
        .filter(refresh_token::Column::TokenHash.eq(token_hash))
        .filter(refresh_token::Column::UsedAt.is_null())
        .filter(refresh_token::Column::ExpiresAt.gt(now))
        .exec_with_returning(db)
        .await?;
    Ok(consumed.first().map(|row| row.session_id))
}

/// On PostgreSQL, share-locks the user whose session refresh token `token_hash` belongs to,
/// before a rotation writes the token and its session: a deletion of that user locks the
/// user first and then deletes both, so taking them in the other order could deadlock. On
/// SQLite the write transaction already keeps every other writer out.
pub async fn lock_user_of_refresh_token(
    db: &impl ConnectionTrait,
    token_hash: &str,
) -> Result<(), DbErr> {
    use super::entities::user;
    if db.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
        return Ok(());
    }
    let session_of_token = Query::select()
        .column(refresh_token::Column::SessionId)
        .from(refresh_token::Entity)
        .and_where(refresh_token::Column::TokenHash.eq(token_hash))
        .to_owned();
    let user_of_session = Query::select()
        .column(session::Column::UserId)
        .from(session::Entity)
        .and_where(session::Column::Id.in_subquery(session_of_token))
        .to_owned();
    user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .filter(user::Column::Id.in_subquery(user_of_session))
        .lock_shared()
        .into_tuple::<Uuid>()
        .one(db)
        .await?;
    Ok(())
}

pub async fn find_refresh_token(
    db: &impl ConnectionTrait,
    token_hash: &str,
) -> Result<Option<refresh_token::Model>, DbErr> {
    refresh_token::Entity::find_by_id(token_hash.to_owned())
        .one(db)
        .await
}

pub async fn find(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<session::Model>, DbErr> {
    session::Entity::find_by_id(id).one(db).await
}

/// Session `id` while it is live.
pub async fn find_live(
    db: &impl ConnectionTrait,
    id: Uuid,
    live: &Live,
) -> Result<Option<session::Model>, DbErr> {
    session::Entity::find_by_id(id)
        .filter(live.condition())
        .one(db)
        .await
}

/// Records a password or TOTP check made in session `id` for a sensitive action; false when
/// the session is no longer live (ended while the check ran, say), which proves nothing.
pub async fn mark_verified(
    db: &impl ConnectionTrait,
    id: Uuid,
    live: &Live,
) -> Result<bool, DbErr> {
    let marked = session::Entity::update_many()
        .col_expr(session::Column::VerifiedAt, Expr::value(super::now()))
        .filter(session::Column::Id.eq(id))
        .filter(live.condition())
        .exec(db)
        .await?;
    Ok(marked.rows_affected == 1)
}

/// Records a refresh of session `id`: the idle limit counts from now on. Returns the session
/// as it now stands.
pub async fn touch(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<session::Model>, DbErr> {
    Ok(session::Entity::update_many()
        .col_expr(session::Column::LastUsedAt, Expr::value(super::now()))
        .filter(session::Column::Id.eq(id))
        .exec_with_returning(db)
        .await?
        .pop())
}

/// The live sessions of `user_ids`, each user's newest first.
pub async fn list_live(
    db: &impl ConnectionTrait,
    user_ids: &[Uuid],
    live: &Live,
) -> Result<Vec<session::Model>, DbErr> {
    session::Entity::find()
        .filter(session::Column::UserId.is_in(user_ids.iter().copied()))
        .filter(live.condition())
        .order_by_desc(session::Column::CreatedAt)
        .order_by_desc(session::Column::Id)
        .all(db)
        .await
}

/// Revokes one session unless it is revoked already: its access tokens stop working and its
/// refresh tokens with them.
pub async fn revoke(db: &impl ConnectionTrait, id: Uuid) -> Result<(), DbErr> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(super::now()))
        .filter(session::Column::Id.eq(id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Revokes session `id` if it is live; whether it was.
pub async fn revoke_live(db: &impl ConnectionTrait, id: Uuid, live: &Live) -> Result<bool, DbErr> {
    let revoked = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(super::now()))
        .filter(session::Column::Id.eq(id))
        .filter(live.condition())
        .exec(db)
        .await?;
    Ok(revoked.rows_affected == 1)
}

/// Revokes every live session of a user but `except`; how many it revoked.
pub async fn revoke_live_for_user(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    live: &Live,
    except: Option<Uuid>,
) -> Result<u64, DbErr> {
    let mut revoked = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(super::now()))
        .filter(session::Column::UserId.eq(user_id))
        .filter(live.condition());
    if let Some(kept) = except {
        revoked = revoked.filter(session::Column::Id.ne(kept));
    }
    Ok(revoked.exec(db).await?.rows_affected)
}

/// Revokes every session of a user that is not revoked yet.
pub async fn revoke_all_for_user(db: &impl ConnectionTrait, user_id: Uuid) -> Result<(), DbErr> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(super::now()))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Ends `user_id`'s live sessions beyond the newest `keep`. Each login is a session: a user
/// logging in over and over would otherwise grow, without bound, the list every page showing
/// their sessions loads.
pub async fn end_beyond(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    live: &Live,
    keep: u64,
) -> Result<u64, DbErr> {
    let newest = Query::select()
        .column(session::Column::Id)
        .from(session::Entity)
        .and_where(session::Column::UserId.eq(user_id))
        .cond_where(live.condition())
        .order_by(session::Column::CreatedAt, sea_orm::Order::Desc)
        .order_by(session::Column::Id, sea_orm::Order::Desc)
        .limit(keep)
        .to_owned();
    Ok(session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(super::now()))
        .filter(session::Column::UserId.eq(user_id))
        .filter(live.condition())
        .filter(session::Column::Id.not_in_subquery(newest))
        .exec(db)
        .await?
        .rows_affected)
}

/// What [`purge`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub refresh_tokens: u64,
    pub sessions: u64,
}

/// How long a session's row outlives its end. Nothing checks an ended session any more; the
/// margin keeps recent ones in the database for an operator looking into an incident.
const ENDED_SESSION_KEPT: chrono::Duration = chrono::Duration::days(1);

/// Deletes what no longer decides anything, so the tables do not grow without bound: expired
/// refresh tokens, used or not, and sessions ended (revoked, or past a limit of `live`) for
/// more than a day, with their remaining tokens. A used token is kept until it expires: until
/// then a replay of it is recognised as reuse and revokes its session, where a deleted one
/// would pass for an unknown token. Each session so holds at most the tokens it rotated within
/// one refresh-token lifetime.
///
/// Each statement deletes at most `batch` rows, so a backlog (after an outage, say) is worked
/// off in statements that end well within the statement timeout rather than in one that never
/// does.
pub async fn purge(db: &impl ConnectionTrait, live: &Live, batch: u64) -> Result<Purged, DbErr> {
    let now = super::now();
    let refresh_tokens = super::delete_in_batches::<refresh_token::Entity>(
        db,
        refresh_token::Column::TokenHash,
        Condition::all().add(refresh_token::Column::ExpiresAt.lt(now)),
        batch,
    )
    .await?;
    let mut purged = Purged {
        refresh_tokens,
        sessions: 0,
    };
    let ended = Condition::any()
        .add(session::Column::RevokedAt.lt(now - ENDED_SESSION_KEPT))
        .add(session::Column::CreatedAt.lt(live.born_after - ENDED_SESSION_KEPT))
        .add(session::Column::LastUsedAt.lt(live.used_after - ENDED_SESSION_KEPT));
    loop {
        let ids: Vec<Uuid> = session::Entity::find()
            .select_only()
            .column(session::Column::Id)
            .filter(ended.clone())
            .limit(batch)
            .into_tuple()
            .all(db)
            .await?;
        let Some(found) = u64::try_from(ids.len()).ok().filter(|n| *n > 0) else {
            break;
        };
        // Their tokens first: the foreign key cascades too, but saying so does not depend on it.
        refresh_token::Entity::delete_many()
            .filter(refresh_token::Column::SessionId.is_in(ids.clone()))
            .exec(db)
            .await?;
        purged.sessions += session::Entity::delete_many()
            .filter(session::Column::Id.is_in(ids))
            .exec(db)
            .await?
            .rows_affected;
        if found < batch {
            break;
        }
    }
    Ok(purged)
}
