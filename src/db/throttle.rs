//! The credential throttle's table (per account, unknown login or session): an attempt is
//! counted before its password is checked, with a compare-and-swap on the row, so parallel attempts each get their own count
//! and none can slip past the threshold.

use std::time::Duration;

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
};

use super::entities::credential_failure::{ActiveModel, Column, Entity, Model};

/// When throttling starts and how long it lasts.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures in a row after which every further attempt waits.
    pub after: u32,
    /// The first wait, once the threshold is reached; waits double from it.
    pub first_wait: Duration,
    /// The longest wait.
    pub max_wait: Duration,
}

impl Policy {
    /// The lock an attempt numbered `attempt` (1-based, since the last success) sets before it
    /// runs: none below the threshold, then `first_wait`, twice that, four times … up to
    /// `max_wait`.
    fn lock_for(&self, attempt: u32) -> Duration {
        if attempt < self.after {
            return Duration::ZERO;
        }
        let doublings = (attempt - self.after).min(30);
        self.first_wait
            .saturating_mul(1 << doublings)
            .min(self.max_wait)
    }
}

/// Rows untouched for this long are forgotten, so unknown logins cannot grow the table forever.
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A counted attempt, as [`release`] takes it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    /// The run of failures it was counted in.
    pub run: i64,
    /// The lock its count set (0 for none).
    pub lock: i64,
}

/// Rounds of the swap an attempt may lose to others on the same subject before it is refused
/// as one of too many at once.
const ROUNDS: usize = 16;

/// Counts an attempt on `subject` before its password is checked, and returns what it counted,
/// should it be taken back. `Err(wait)` while the subject is locked: the attempt must fail
/// without checking anything. So must one that lost the swap [`ROUNDS`] times to other
/// attempts on the subject (more at once than a threshold set high lets through): it waits
/// the first wait, counted or checked nothing.
pub async fn reserve(
    db: &impl ConnectionTrait,
    subject: &str,
    policy: Policy,
) -> Result<Result<Reserved, Duration>, DbErr> {
    // Each round either wins the swap or sees another attempt's newer row.
    for _ in 0..ROUNDS {
        let now = now_ms();
        let current = Entity::find_by_id(subject.to_owned()).one(db).await?;
        let attempt = match &current {
            Some(row) if row.locked_until > now => {
                return Ok(Err(Duration::from_millis((row.locked_until - now) as u64)));
            }
            Some(row) => u32::try_from(row.failures).unwrap_or(0).saturating_add(1),
            None => 1,
        };
        let lock = policy.lock_for(attempt);
        let locked_until = if lock.is_zero() {
            0
        } else {
            now + lock.as_millis() as i64
        };
        // A new run's number is random: two runs of one subject never share one in practice.
        let run = current
            .as_ref()
            .map_or_else(rand::random::<i64>, |row| row.run);
        let model = ActiveModel {
            subject: Set(subject.to_owned()),
            failures: Set(i32::try_from(attempt).unwrap_or(i32::MAX)),
            locked_until: Set(locked_until),
            updated_at: Set(now),
            run: Set(run),
        };
        let swapped = match current {
            None => {
                Entity::insert(model)
                    .on_conflict(OnConflict::column(Column::Subject).do_nothing().to_owned())
                    .exec_without_returning(db)
                    .await?
                    == 1
            }
            Some(Model {
                failures,
                locked_until,
                run,
                ..
            }) => {
                Entity::update_many()
                    .set(model)
                    .filter(Column::Subject.eq(subject))
                    .filter(Column::Failures.eq(failures))
                    .filter(Column::LockedUntil.eq(locked_until))
                    .filter(Column::Run.eq(run))
                    .exec(db)
                    .await?
                    .rows_affected
                    == 1
            }
        };
        if swapped {
            return Ok(Ok(Reserved {
                run,
                lock: locked_until,
            }));
        }
    }
    // The kind only: the rest names an account or a session, or hashes what was typed.
    let kind = subject.split(':').next().unwrap_or_default();
    tracing::warn!(
        kind,
        "credential attempts at once on one subject: refused some"
    );
    Ok(Err(policy.first_wait))
}

/// Takes back one count of an attempt whose check never ran, and the lock its count set, while
/// it is the subject's: it was no failure to wait for. A lock set since, by an attempt let in
/// once this one's had run out, stays; a run begun since (a success cleared the count) is not
/// touched.
pub async fn release(
    db: &impl ConnectionTrait,
    subject: &str,
    reserved: Reserved,
) -> Result<(), DbErr> {
    let Reserved { run, lock } = reserved;
    // The run's only count, with its own lock or none: the row would say nothing any more, and
    // a flood of logins turned away before their checks (a full hashing queue) would leave
    // one each for a day.
    let forgotten = Entity::delete_many()
        .filter(Column::Subject.eq(subject))
        .filter(Column::Run.eq(run))
        .filter(Column::Failures.eq(1))
        .filter(Column::LockedUntil.eq(lock))
        .exec(db)
        .await?;
    if forgotten.rows_affected == 1 {
        return Ok(());
    }
    // In scope here only: it gives every type a `min`.
    use sea_orm::ExprTrait;
    Entity::update_many()
        .col_expr(Column::Failures, Expr::col(Column::Failures).sub(1))
        .col_expr(
            Column::LockedUntil,
            Expr::case(Expr::col(Column::LockedUntil).eq(lock), 0i64)
                .finally(Expr::col(Column::LockedUntil))
                .into(),
        )
        .filter(Column::Subject.eq(subject))
        .filter(Column::Run.eq(run))
        .filter(Column::Failures.gt(0))
        .exec(db)
        .await?;
    Ok(())
}

/// How long `subject` is still locked, if it is: asked before work that only an attempt that
/// may run needs, without counting one.
pub async fn locked_for(
    db: &impl ConnectionTrait,
    subject: &str,
) -> Result<Option<Duration>, DbErr> {
    let now = now_ms();
    let row = Entity::find_by_id(subject.to_owned()).one(db).await?;
    Ok(row
        .filter(|row| row.locked_until > now)
        .map(|row| Duration::from_millis((row.locked_until - now) as u64)))
}

/// A successful check: the subject starts afresh.
pub async fn clear(db: &impl ConnectionTrait, subject: &str) -> Result<(), DbErr> {
    Entity::delete_by_id(subject.to_owned()).exec(db).await?;
    Ok(())
}

/// Forgets subjects nobody has tried for [`FORGET_AFTER`] and that are not locked, at most
/// `batch` a statement (a flood of unknown logins leaves a row each).
pub async fn purge(db: &impl ConnectionTrait, batch: u64) -> Result<u64, DbErr> {
    let now = now_ms();
    let before = now - FORGET_AFTER.as_millis() as i64;
    let forgotten = Condition::all()
        .add(Column::UpdatedAt.lt(before))
        .add(Column::LockedUntil.lt(now));
    super::delete_in_batches::<Entity>(db, Column::Subject, forgotten, batch).await
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_the_threshold_up_to_the_cap() {
        let policy = Policy {
            after: 5,
            first_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(15 * 60),
        };
        let waits: Vec<u64> = (1..=17).map(|n| policy.lock_for(n).as_secs()).collect();
        assert_eq!(
            waits,
            [
                0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900
            ]
        );
        assert_eq!(policy.lock_for(u32::MAX), Duration::from_secs(900));
    }

    #[test]
    fn the_first_wait_is_a_setting_and_the_cap_still_holds() {
        let policy = Policy {
            after: 3,
            first_wait: Duration::from_secs(30),
            max_wait: Duration::from_secs(100),
        };
        let waits: Vec<u64> = (1..=6).map(|n| policy.lock_for(n).as_secs()).collect();
        assert_eq!(waits, [0, 0, 30, 60, 100, 100]);
        let long = Policy {
            first_wait: Duration::from_secs(3600),
            ..policy
        };
        assert_eq!(long.lock_for(3), Duration::from_secs(100));
        assert_eq!(long.lock_for(u32::MAX), Duration::from_secs(100));
    }
}
