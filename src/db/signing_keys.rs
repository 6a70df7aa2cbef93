//! The signing keys' table. Changes to the set of keys take turns (on PostgreSQL behind an
//! advisory lock, on SQLite holding the write lock), so instances starting together agree on
//! one first key and a rotation never leaves two current keys.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction, DbErr,
    EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
};

use super::Db;
use super::entities::signing_key::{ActiveModel, Column, Entity, Model};

/// PostgreSQL advisory lock key that serialises changes to the keys ("rollkeys" in ASCII).
const KEYS_LOCK: i64 = 0x726f_6c6c_6b65_7973;

/// Every key, oldest first.
pub async fn all(db: &impl ConnectionTrait) -> Result<Vec<Model>, DbErr> {
    Entity::find()
        .order_by_asc(Column::CreatedAt)
        .order_by_asc(Column::Kid)
        .all(db)
        .await
}

/// Inserts `new()` unless a current (not retired) key exists already.
pub async fn ensure_current(db: &Db, new: impl FnOnce() -> Model) -> Result<(), DbErr> {
    let tx = locked(db).await?;
    let current = Entity::find()
        .filter(Column::RetiredAt.is_null())
        .one(&tx)
        .await?;
    if current.is_none() {
        Entity::insert(new().into_active_model())
            .exec_without_returning(&tx)
            .await?;
    }
    tx.commit().await
}

/// Retires the current key at `now` (or, with `revoke`, deletes every key) and makes `new`
/// the current one, recording `entry` with it.
pub async fn rotate(
    db: &Db,
    new: Model,
    now: DateTime<Utc>,
    entry: super::audit::NewEntry,
    revoke: bool,
) -> Result<(), DbErr> {
    let tx = locked(db).await?;
    if revoke {
        Entity::delete_many().exec(&tx).await?;
    } else {
        Entity::update_many()
            .set(ActiveModel {
                retired_at: Set(Some(now)),
                ..Default::default()
            })
            .filter(Column::RetiredAt.is_null())
            .exec(&tx)
            .await?;
    }
    Entity::insert(new.into_active_model())
        .exec_without_returning(&tx)
        .await?;
    super::audit::record(&tx, entry).await?;
    tx.commit().await
}

/// Records that tokens `kid` signs may live until `until`, unless a later time is recorded.
pub async fn extend_horizon(
    db: &impl ConnectionTrait,
    kid: &str,
    until: DateTime<Utc>,
) -> Result<(), DbErr> {
    Entity::update_many()
        .set(ActiveModel {
            signs_until: Set(Some(until)),
            ..Default::default()
        })
        .filter(Column::Kid.eq(kid))
        .filter(
            sea_orm::Condition::any()
                .add(Column::SignsUntil.is_null())
                .add(Column::SignsUntil.lt(until)),
        )
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes the keys named, as long as they are retired and no instance has recorded, since
/// they were read, tokens of theirs living past `now`.
pub async fn delete(
    db: &impl ConnectionTrait,
    kids: Vec<String>,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    if kids.is_empty() {
        return Ok(0);
    }
    Entity::delete_many()
        .filter(Column::Kid.is_in(kids))
        .filter(Column::RetiredAt.is_not_null())
        .filter(
            sea_orm::Condition::any()
                .add(Column::SignsUntil.is_null())
                .add(Column::SignsUntil.lte(now)),
        )
        .exec(db)
        .await
        .map(|result| result.rows_affected)
}

async fn locked(db: &Db) -> Result<DatabaseTransaction, DbErr> {
    let tx = db.begin_write().await?;
    if tx.get_database_backend() == DatabaseBackend::Postgres {
        tx.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({KEYS_LOCK})"))
            .await?;
    }
    Ok(tx)
}
