//! Two-factor login: TOTP secrets, the last accepted time step, and recovery codes.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
};
use uuid::Uuid;

use super::entities::recovery_code::{self, Entity as Codes};
use super::entities::user_totp::{self, Column, Entity as Totps, Model as UserTotp};

pub async fn get(db: &impl ConnectionTrait, user_id: Uuid) -> Result<Option<UserTotp>, DbErr> {
    Totps::find_by_id(user_id).one(db).await
}

/// Which of `user_ids` have two-factor login on (confirmed).
pub async fn confirmed_among(
    db: &impl ConnectionTrait,
    user_ids: &[Uuid],
) -> Result<Vec<Uuid>, DbErr> {
    Ok(Totps::find()
        .filter(Column::UserId.is_in(user_ids.iter().copied()))
        .filter(Column::ConfirmedAt.is_not_null())
        .all(db)
        .await?
        .into_iter()
        .map(|row| row.user_id)
        .collect())
}

/// Starts a setup: a new unconfirmed secret and new recovery codes replace a pending setup.
/// `false`, changing nothing, when two-factor login is already on: the insert then meets the
/// confirmed row, however the caller raced.
pub async fn start(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    secret: String,
    code_hashes: Vec<String>,
) -> Result<bool, DbErr> {
    Totps::delete_many()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::ConfirmedAt.is_null())
        .exec(db)
        .await?;
    let inserted = Totps::insert(user_totp::ActiveModel {
        user_id: Set(user_id),
        secret: Set(secret),
        created_at: Set(super::now()),
        confirmed_at: Set(None),
        last_step: Set(None),
    })
    .exec_without_returning(db)
    .await;
    match inserted {
        Ok(_) => {}
        Err(err) if super::unique_violation(&err).is_some() => return Ok(false),
        Err(err) => return Err(err),
    }
    Codes::delete_many()
        .filter(recovery_code::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    let rows = code_hashes
        .into_iter()
        .map(|code_hash| recovery_code::ActiveModel {
            user_id: Set(user_id),
            code_hash: Set(code_hash),
            used_at: Set(None),
        });
    Codes::insert_many(rows).exec_without_returning(db).await?;
    Ok(true)
}

/// Marks pending secret `secret` confirmed with the code of `step`; `false` when it is not
/// pending any more (confirmed, or replaced by a newer setup since its code was checked).
pub async fn confirm(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    secret: &str,
    step: i64,
) -> Result<bool, DbErr> {
    let updated = Totps::update_many()
        .col_expr(Column::ConfirmedAt, Expr::value(super::now()))
        .col_expr(Column::LastStep, Expr::value(step))
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Secret.eq(secret))
        .filter(Column::ConfirmedAt.is_null())
        .exec(db)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// Accepts the code of `step`, checked against confirmed secret `secret`, once: `false` when a
/// code of this step or a later one was already accepted, or the secret was replaced since
/// the check. The conditional update decides between concurrent attempts.
pub async fn accept_step(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    secret: &str,
    step: i64,
) -> Result<bool, DbErr> {
    let updated = Totps::update_many()
        .col_expr(Column::LastStep, Expr::value(step))
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Secret.eq(secret))
        .filter(Column::ConfirmedAt.is_not_null())
        .filter(
            Condition::any()
                .add(Column::LastStep.is_null())
                .add(Column::LastStep.lt(step)),
        )
        .exec(db)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// Whether `user_id`'s two-factor login is on with `secret`: a code [`accept_step`] refused
/// was then spent under it, not checked against a secret replaced or removed meanwhile.
pub async fn confirmed_with(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    secret: &str,
) -> Result<bool, DbErr> {
    let found = get(db, user_id).await?;
    Ok(found.is_some_and(|totp| totp.secret == secret && totp.confirmed_at.is_some()))
}

/// Whether recovery code `code_hash` of `user_id` was used: one [`use_recovery_code`] refused
/// is then spent, not unknown.
pub async fn recovery_code_used(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    code_hash: &str,
) -> Result<bool, DbErr> {
    let used = Codes::find()
        .filter(recovery_code::Column::UserId.eq(user_id))
        .filter(recovery_code::Column::CodeHash.eq(code_hash))
        .filter(recovery_code::Column::UsedAt.is_not_null())
        .one(db)
        .await?;
    Ok(used.is_some())
}

/// Uses recovery code `code_hash` of `user_id` once: `false` when unknown or already used.
pub async fn use_recovery_code(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    code_hash: &str,
) -> Result<bool, DbErr> {
    let updated = Codes::update_many()
        .col_expr(recovery_code::Column::UsedAt, Expr::value(super::now()))
        .filter(recovery_code::Column::UserId.eq(user_id))
        .filter(recovery_code::Column::CodeHash.eq(code_hash))
        .filter(recovery_code::Column::UsedAt.is_null())
        .exec(db)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// Removes `user_id`'s secret and recovery codes (only if the factor is `confirmed` or pending as
/// said, when said); whether a secret was removed.
pub async fn remove(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    confirmed: Option<bool>,
) -> Result<bool, DbErr> {
    let state = match confirmed {
        None => Condition::all(),
        Some(true) => Condition::all().add(Column::ConfirmedAt.is_not_null()),
        Some(false) => Condition::all().add(Column::ConfirmedAt.is_null()),
    };
    let removed = Totps::delete_many()
        .filter(Column::UserId.eq(user_id))
        .filter(state)
        .exec(db)
        .await?
        .rows_affected
        > 0;
    if removed {
        Codes::delete_many()
            .filter(recovery_code::Column::UserId.eq(user_id))
            .exec(db)
            .await?;
    }
    Ok(removed)
}
