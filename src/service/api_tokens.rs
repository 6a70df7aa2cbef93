//! API tokens: created (for oneself, or by a manager for a user they manage), listed, revoked,
//! and accepted as credentials for queries.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Caller, Credential, Service, Signed, Verification, rules, validation};
use crate::auth::tokens;
use crate::db::audit::{self, Action};
use crate::db::entities::api_token::Model as ApiToken;
use crate::db::{self, api_tokens, users as user_queries};
use crate::error::{AppError, AppResult, FieldCode};

/// Unexpired tokens one user may hold: enough for any set of scripts, and a bound on rows.
pub const MAX_API_TOKENS: u64 = 100;
/// The furthest expiry a token may be given, in months: ten calendar years, as a client counts
/// them ("now + 10 years"); none means no expiry.
const MAX_LIFETIME_MONTHS: u32 = 120;
const TOO_MANY: &str = "This user holds the most API tokens allowed (100); revoke one first";
const DISABLED: AppError =
    AppError::Forbidden("This account is disabled; enable it before issuing it tokens");
const TOO_LATE: &str = "must be within ten years";
/// `lastUsedAt` is written at most this often per token.
const TOUCH_EVERY: chrono::Duration = chrono::Duration::seconds(60);

/// Refuses a token for a disabled account.
fn enabled(target: &crate::db::entities::user::Model) -> AppResult<()> {
    if target.disabled {
        return Err(DISABLED);
    }
    Ok(())
}

/// Refuses a token for a user already holding the most live tokens allowed.
async fn under_limit(db: &impl sea_orm::ConnectionTrait, user_id: Uuid) -> AppResult<()> {
    if api_tokens::count_live(db, user_id, db::now()).await? >= MAX_API_TOKENS {
        return Err(AppError::Forbidden(TOO_MANY));
    }
    Ok(())
}

/// Whether `at` is later than ten calendar years from `now`.
fn beyond_lifetime(at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now.checked_add_months(chrono::Months::new(MAX_LIFETIME_MONTHS))
        .is_none_or(|latest| at > latest)
}

impl Service {
    /// Deletes the tokens past their `expiresAt`, at most `batch` a statement; the periodic
    /// housekeeping calls it.
    pub async fn purge_api_tokens(&self, batch: u64) -> AppResult<u64> {
        Ok(api_tokens::purge_expired(self.db().writer(), db::now(), batch).await?)
    }

    /// Creates an API token for the caller, or for `user_id` when the caller manages that
    /// user. Returns the plaintext, shown only now, with the stored row.
    pub async fn create_api_token(
        &self,
        caller: &Caller<'_>,
        user_id: Option<Uuid>,
        name: &str,
        expires_at: Option<DateTime<Utc>>,
        verification: Option<&Verification>,
    ) -> AppResult<(String, ApiToken)> {
        self.writable()?;
        caller.session()?;
        // Who may issue for whom first, as every edit of another decides it.
        let target = match user_id.filter(|id| *id != caller.user.id) {
            None => caller.user.clone(),
            Some(id) => {
                rules::check_reach(caller.user, id, "You may not issue tokens for this user")?;
                let target = user_queries::by_id(self.db().conn(), id)
                    .await?
                    .ok_or(AppError::NotFound("No such user"))?;
                rules::check_credentials(caller.user, &target)?;
                target
            }
        };
        let mut fields = validation::Fields::new();
        let name = fields.check("name", validation::token_name(name));
        // Stored at the precision both databases keep, and within a range both order alike.
        let expires_at = expires_at.map(db::at_micros);
        if let Some(at) = expires_at {
            let now = Utc::now();
            if at <= now {
                fields.add("expiresAt", FieldCode::Range, "must be in the future");
            } else if beyond_lifetime(at, now) {
                fields.add("expiresAt", FieldCode::Range, TOO_LATE);
            }
        }
        fields.into_result()?;
        let name = name.ok_or_else(|| AppError::internal("validated field missing"))?;
        // Refusals decided again below on the rows as locked, and first here: no verification
        // is spent on a token refused anyway.
        enabled(&target)?;
        under_limit(self.db().conn(), target.id).await?;
        self.step_up(caller, verification).await?;
        let (token, hash) = tokens::new_api_token();
        let mut fields = vec!["name"];
        if expires_at.is_some() {
            fields.push("expiresAt");
        }
        let tx = self.db().begin_write().await?;
        // Decided again on both users as they are now, locked until the token is in: a role
        // lost or an account disabled meanwhile must not leave a token behind, and two
        // requests cannot both take the last place under the limit.
        let target = self
            .recheck(&tx, caller, target.id, |actor, target| {
                enabled(target)?;
                rules::check_credentials(actor, target)
            })
            .await?;
        // On a refusal, dropping `tx` rolls it back.
        under_limit(&tx, target.id).await?;
        let row = api_tokens::new_row(target.id, name, hash, expires_at, caller.user.id);
        api_tokens::insert(&tx, row.clone()).await?;
        audit::record(
            &tx,
            caller
                .audit(Action::ApiTokenCreated)
                .target(target.id, target.role)
                .fields(fields),
        )
        .await?;
        tx.commit().await?;
        Ok((token, row))
    }

    /// Revokes token `id`: one's own, or one of a user one manages. `false` when there was no
    /// such token; someone who manages nobody is refused for any token not their own, known or
    /// not, so that whether an id exists does not show.
    pub async fn revoke_api_token(&self, caller: &Caller<'_>, id: Uuid) -> AppResult<bool> {
        self.writable()?;
        caller.session()?;
        let owner = api_tokens::by_id(self.db().writer(), id)
            .await?
            .map(|token| token.user_id);
        self.end_credential(
            caller,
            owner,
            "You may not revoke this token",
            Action::ApiTokenRevoked,
            async |tx| api_tokens::delete(tx, id).await,
        )
        .await
    }

    /// The unexpired API tokens of each of `user_ids`, newest first, for the DataLoader: a
    /// page of users costs one query. Who may see them is [`rules::check_credentials`],
    /// checked per user first.
    pub async fn api_tokens_among(&self, user_ids: &[Uuid]) -> AppResult<Vec<ApiToken>> {
        Ok(api_tokens::list_live(self.db().conn(), user_ids, db::now()).await?)
    }

    /// Records a token's use without the request waiting for it: the write waits for the
    /// writer, and a write lock held elsewhere (another SQLite process) would stall every read
    /// made with the token. One such write per token at a time; bookkeeping only, so a failure
    /// is logged and the next use tries again.
    fn touch_in_background(&self, id: Uuid, now: DateTime<Utc>) {
        if !self.touching().insert(id) {
            return;
        }
        let service = self.clone();
        tokio::spawn(async move {
            if let Err(err) = api_tokens::touch(service.db().writer(), id, now).await {
                tracing::warn!(error = %crate::error::chain(&err), "recording an API token's use");
            }
            service.touching().remove(&id);
        });
    }

    fn touching(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<Uuid>> {
        self.0
            .touching
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The enabled user an unexpired API token belongs to.
    pub(super) async fn authenticate_api_token(&self, token: &str) -> AppResult<Signed> {
        let now = db::now();
        let hash = tokens::hash_token(token);
        let row = api_tokens::by_hash(self.db().conn(), &hash, now)
            .await?
            .ok_or(crate::error::INVALID_TOKEN)?;
        let user = user_queries::by_id(self.db().conn(), row.user_id)
            .await?
            .filter(|user| !user.disabled)
            .ok_or(crate::error::INVALID_TOKEN)?;
        if row.last_used_at.is_none_or(|at| now - at >= TOUCH_EVERY) {
            self.touch_in_background(row.id, now);
        }
        Ok(Signed {
            user,
            credential: Credential::ApiToken(row.id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_limits() {
        assert!(TOO_MANY.contains(&format!("({MAX_API_TOKENS})")));
        assert!(TOO_LATE.contains("ten years") && MAX_LIFETIME_MONTHS == 120);
    }

    /// Ten years as a calendar counts them, leap days included; the 29th of February ten
    /// years on is the 28th.
    #[test]
    fn the_lifetime_is_ten_calendar_years() {
        let at = |text: &str| {
            chrono::DateTime::parse_from_rfc3339(text)
                .expect("a time")
                .to_utc()
        };
        let now = at("2026-12-06T14:00:00Z");
        assert!(!beyond_lifetime(at("2036-12-06T14:00:00Z"), now));
        assert!(beyond_lifetime(at("2036-12-06T14:00:01Z"), now));
        let leap = at("2028-02-29T00:00:00Z");
        assert!(!beyond_lifetime(at("2038-02-28T00:00:00Z"), leap));
        assert!(beyond_lifetime(at("2038-03-01T00:00:00Z"), leap));
    }
}
