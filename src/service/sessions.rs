//! Sessions as their users see them: the list, revoking one, ending all, and their limits.

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseTransaction, DbErr};
use uuid::Uuid;

use super::{Caller, Service, rules};
use crate::db::audit::{self, Action};
use crate::db::entities::user::Model as User;
use crate::db::sessions::{self, Live, Purged};
use crate::db::{self, users as user_queries};
use crate::error::{AppError, AppResult};

/// One live session, as the session list shows it.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    /// The earlier of the maximum age and the idle limit; a refresh moves the latter on.
    pub expires_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Service {
    /// The cut-offs a session must be younger than to be live, as of now.
    pub(super) fn live(&self) -> Live {
        let now = db::now();
        Live {
            born_after: db::earlier(now, self.0.session_max_age),
            used_after: db::earlier(now, self.0.session_idle),
        }
    }

    /// When a session born at `created_at` and last refreshed at `last_used_at` ends unless
    /// refreshed again: at its maximum age, or past the idle limit.
    pub(super) fn session_end(
        &self,
        created_at: DateTime<Utc>,
        last_used_at: DateTime<Utc>,
    ) -> DateTime<Utc> {
        db::later(created_at, self.0.session_max_age)
            .min(db::later(last_used_at, self.0.session_idle))
    }

    /// Refresh tokens rotated after this moment are within the reuse grace.
    pub(super) fn grace_start(&self) -> DateTime<Utc> {
        db::earlier(db::now(), self.0.refresh_reuse_grace)
    }

    /// The live sessions of each of `user_ids`, newest first, for the DataLoader: a page of
    /// users costs one query. Who may see them is [`rules::check_credentials`], checked per
    /// user first.
    pub async fn sessions_among(&self, user_ids: &[Uuid]) -> AppResult<Vec<SessionInfo>> {
        let rows = sessions::list_live(self.db().conn(), user_ids, &self.live()).await?;
        Ok(rows
            .into_iter()
            .map(|row| SessionInfo {
                id: row.id,
                user_id: row.user_id,
                created_at: row.created_at,
                last_used_at: row.last_used_at,
                expires_at: self.session_end(row.created_at, row.last_used_at),
                ip: row.ip,
                user_agent: row.user_agent,
            })
            .collect())
    }

    /// Revokes session `id` when it is the caller's or a user's the caller manages: its access
    /// and refresh tokens stop at once. `false` when it had already ended. Someone who manages
    /// nobody is refused for any session not their own, known or not, so that whether an id
    /// exists does not show. In demo mode only the caller's own current session may end: the
    /// others of a shared demo account are other visitors'.
    pub async fn revoke_session(&self, caller: &Caller<'_>, id: Uuid) -> AppResult<bool> {
        if caller.session()? != id {
            self.writable()?;
        }
        let owner = sessions::find(self.db().writer(), id)
            .await?
            .map(|session| session.user_id);
        let live = self.live();
        self.end_credential(
            caller,
            owner,
            "You may not end this session",
            Action::SessionRevoked,
            async |tx| sessions::revoke_live(tx, id, &live).await,
        )
        .await
    }

    /// The user a session or API token to end belongs to, when the caller may end it: the
    /// caller, or a user they manage. `Ok(None)` when there is nothing to end (`owner` is
    /// `None`: no such session or token) and the caller manages someone. Someone who manages
    /// nobody is refused for anything not their own, known or not, so that whether an id
    /// exists does not show.
    pub(super) async fn credential_owner(
        &self,
        caller: &User,
        owner: Option<Uuid>,
        refusal: &'static str,
    ) -> AppResult<Option<User>> {
        let Some(owner) = owner else {
            return if caller.role.is_manager() {
                Ok(None)
            } else {
                Err(AppError::Forbidden(refusal))
            };
        };
        if owner == caller.id {
            return Ok(Some(caller.clone()));
        }
        // Deleted users take their sessions and tokens with them, so a missing owner is a race.
        let Some(target) = user_queries::by_id(self.db().writer(), owner).await? else {
            return Ok(None);
        };
        rules::check_credentials(caller, &target).map_err(|_| AppError::Forbidden(refusal))?;
        Ok(Some(target))
    }

    /// Ends one credential (a session or API token) of `owner` with `end`, which answers
    /// whether there was one to end, and records `action`. [`Self::credential_owner`] decides
    /// first; then, inside the write transaction, the same rule is applied again to the caller
    /// and the owner as they are now, so a role lost since cannot end another's credentials.
    /// `false` as well when the owner is gone meanwhile: their credentials went with them.
    pub(super) async fn end_credential(
        &self,
        caller: &Caller<'_>,
        owner: Option<Uuid>,
        refusal: &'static str,
        action: Action,
        end: impl AsyncFnOnce(&DatabaseTransaction) -> Result<bool, DbErr>,
    ) -> AppResult<bool> {
        let Some(target) = self.credential_owner(caller.user, owner, refusal).await? else {
            return Ok(false);
        };
        let tx = self.db().begin_write().await?;
        let rule = |actor: &User, target: &User| {
            rules::check_credentials(actor, target).map_err(|_| AppError::Forbidden(refusal))
        };
        let target = match self.recheck(&tx, caller, target.id, rule).await {
            Ok(target) => target,
            Err(AppError::NotFound(_)) => return Ok(false),
            Err(err) => return Err(err),
        };
        let ended = end(&tx).await?;
        if ended {
            audit::record(&tx, caller.audit(action).target(target.id, target.role)).await?;
        }
        tx.commit().await?;
        Ok(ended)
    }

    /// Ends every live session of the caller, the one asking included unless `keep_current`
    /// (signing out the other devices); how many ended. Refused in demo mode, where it would
    /// sign out every visitor of a shared account.
    pub async fn logout_everywhere(
        &self,
        caller: &Caller<'_>,
        keep_current: bool,
    ) -> AppResult<u64> {
        let current = caller.session()?;
        self.writable()?;
        let user = caller.user;
        let tx = self.db().begin_write().await?;
        // The caller's row, locked as every revocation does, so a write of theirs waiting for
        // it sees its session ended.
        self.recheck(&tx, caller, user.id, |_, _| Ok(())).await?;
        let kept = keep_current.then_some(current);
        let count = sessions::revoke_live_for_user(&tx, user.id, &self.live(), kept).await?;
        // Recorded when it ended something, as a logout is; one that kept the caller's session
        // says so, lest the trail read as every session ended.
        if count > 0 {
            let entry = caller
                .audit(Action::AllSessionsRevoked)
                .target(user.id, user.role)
                .fields(keep_current.then_some("keepCurrent"));
            audit::record(&tx, entry).await?;
        }
        tx.commit().await?;
        Ok(count)
    }

    /// Deletes refresh tokens and sessions that no longer decide anything, at most `batch`
    /// rows a statement (see [`sessions::purge`]); the periodic housekeeping calls it.
    pub async fn purge_sessions(&self, batch: u64) -> AppResult<Purged> {
        Ok(sessions::purge(self.db().writer(), &self.live(), batch).await?)
    }
}
