//! API tokens: long-lived credentials for scripts, stored as their SHA-256.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder,
};
use uuid::Uuid;

use super::entities::api_token::{Column, Entity as Tokens, Model as ApiToken};

/// Unexpired at `now`.
fn live(now: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(Column::ExpiresAt.is_null())
        .add(Column::ExpiresAt.gt(now))
}

pub async fn insert(db: &impl ConnectionTrait, token: ApiToken) -> Result<(), DbErr> {
    Tokens::insert(token.into_active_model().reset_all())
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// The unexpired token with this hash.
pub async fn by_hash(
    db: &impl ConnectionTrait,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<ApiToken>, DbErr> {
    Tokens::find()
        .filter(Column::TokenHash.eq(token_hash))
        .filter(live(now))
        .one(db)
        .await
}

pub async fn by_id(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<ApiToken>, DbErr> {
    Tokens::find_by_id(id).one(db).await
}

/// The unexpired tokens of `user_ids`, each user's newest first.
pub async fn list_live(
    db: &impl ConnectionTrait,
    user_ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<ApiToken>, DbErr> {
    Tokens::find()
        .filter(Column::UserId.is_in(user_ids.iter().copied()))
        .filter(live(now))
        .order_by_desc(Column::CreatedAt)
        .order_by_desc(Column::Id)
        .all(db)
        .await
}

pub async fn count_live(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    Tokens::find()
        .filter(Column::UserId.eq(user_id))
        .filter(live(now))
        .count(db)
        .await
}

/// Deletes token `id`; whether it existed.
pub async fn delete(db: &impl ConnectionTrait, id: Uuid) -> Result<bool, DbErr> {
    Ok(Tokens::delete_by_id(id).exec(db).await?.rows_affected > 0)
}

/// Deletes every token of `user_id`; how many.
pub async fn delete_for_user(db: &impl ConnectionTrait, user_id: Uuid) -> Result<u64, DbErr> {
    Ok(Tokens::delete_many()
        .filter(Column::UserId.eq(user_id))
        .exec(db)
        .await?
        .rows_affected)
}

/// Deletes the tokens `user_id` issued for others and those others issued for `user_id`: they
/// rest on the issuer managing the user, which a role change, disabling or deletion may end.
pub async fn delete_issued_across(db: &impl ConnectionTrait, user_id: Uuid) -> Result<u64, DbErr> {
    Ok(Tokens::delete_many()
        .filter(
            Condition::any()
                .add(
                    Condition::all()
                        .add(Column::CreatedBy.eq(user_id))
                        .add(Column::UserId.ne(user_id)),
                )
                .add(
                    Condition::all()
                        .add(Column::UserId.eq(user_id))
                        .add(Column::CreatedBy.ne(user_id)),
                ),
        )
        .exec(db)
        .await?
        .rows_affected)
}

/// Records a use of token `id` at `now`.
pub async fn touch(db: &impl ConnectionTrait, id: Uuid, now: DateTime<Utc>) -> Result<(), DbErr> {
    Tokens::update_many()
        .col_expr(Column::LastUsedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes expired tokens, `batch` per statement; how many.
pub async fn purge_expired(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    batch: u64,
) -> Result<u64, DbErr> {
    let expired = sea_orm::Condition::all().add(Column::ExpiresAt.lte(now));
    super::delete_in_batches::<Tokens>(db, Column::Id, expired, batch).await
}

/// A new token row for `user_id`; `token_hash` is the SHA-256 of what the caller is shown.
pub fn new_row(
    user_id: Uuid,
    name: String,
    token_hash: String,
    expires_at: Option<DateTime<Utc>>,
    created_by: Uuid,
) -> ApiToken {
    ApiToken {
        id: Uuid::now_v7(),
        user_id,
        name,
        token_hash,
        created_at: super::now(),
        last_used_at: None,
        expires_at,
        created_by: Some(created_by),
    }
}
