//! Sessions (token families) and refresh tokens.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::Db;
use super::entities::{refresh_token, session, user};

/// What [`open_for_login`] wrote.
pub struct Login {
    pub session_id: Uuid,
    /// The user's new `last_login_at`.
    pub at: DateTime<Utc>,
}

/// Records a login in one transaction: the user's `last_login_at`, a new session and its
/// first refresh token. `None` when the user was disabled or deleted since the password check.
pub async fn open_for_login(
    db: &Db,
    user_id: Uuid,
    token_hash: String,
    expires_at: DateTime<Utc>,
) -> Result<Option<Login>, DbErr> {
    let at = super::now();
    let session_id = Uuid::now_v7();
    let tx = db.begin_write().await?;
    let touched = user::Entity::update_many()
        .col_expr(user::Column::LastLoginAt, Expr::value(at))
        .filter(user::Column::Id.eq(user_id))
        .filter(user::Column::Disabled.eq(false))
        .exec(&tx)
        .await?;
    if touched.rows_affected != 1 {
        return Ok(None);
    }
    insert(&tx, session_id, user_id, at).await?;
    insert_refresh_token(&tx, session_id, token_hash, expires_at).await?;
    tx.commit().await?;
    Ok(Some(Login { session_id, at }))
}

pub async fn create(db: &impl ConnectionTrait, user_id: Uuid) -> Result<Uuid, DbErr> {
    let id = Uuid::now_v7();
    insert(db, id, user_id, super::now()).await?;
    Ok(id)
}

async fn insert(
    db: &impl ConnectionTrait,
    id: Uuid,
    user_id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    session::Entity::insert(session::ActiveModel {
        id: Set(id),
        user_id: Set(user_id),
        created_at: Set(at),
        revoked_at: Set(None),
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

/// Revokes one session: its access tokens stop working and its refresh tokens with them.
pub async fn revoke(db: &impl ConnectionTrait, id: Uuid) -> Result<(), DbErr> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(super::now()))
        .filter(session::Column::Id.eq(id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Revokes every live session of a user.
pub async fn revoke_all_for_user(db: &impl ConnectionTrait, user_id: Uuid) -> Result<(), DbErr> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(super::now()))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}
