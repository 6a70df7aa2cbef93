//! Two-factor login with TOTP: setup, confirmation, turning it off, and checking codes.

use std::net::IpAddr;

use super::{Caller, Factor, Service, Subject, Verification, validation};
use crate::auth::totp;
use crate::db::audit::{self, Action, NewEntry};
use crate::db::entities::user::Model as User;
use crate::db::entities::user_totp::Model as UserTotp;
use crate::db::{sessions, totp as totp_rows, users as user_queries};
use crate::error::{AppError, AppResult, FieldCode};

/// What `enableTotp` shows once: the secret, as text and as an `otpauth://` URI, and the
/// recovery codes. None of it is shown again.
pub struct TotpSetup {
    pub secret: String,
    pub uri: String,
    pub recovery_codes: Vec<String>,
}

impl Service {
    /// Starts two-factor setup with a new secret and recovery codes; nothing is enforced until
    /// [`Self::confirm_totp`]. Starting again before confirming replaces the pending secret.
    /// A sensitive action: whoever sets the second factor decides who can log in next, so a
    /// stolen access token alone must not do it.
    pub async fn enable_totp(
        &self,
        caller: &Caller<'_>,
        verification: Option<&Verification>,
    ) -> AppResult<TotpSetup> {
        const ALREADY_ON: AppError = AppError::Forbidden(
            "Two-factor login is already on; turn it off first to set it up again",
        );
        self.writable()?;
        caller.session()?;
        let user = caller.user;
        if self.totp_of(user.id).await?.is_some() {
            return Err(ALREADY_ON);
        }
        self.step_up(caller, verification).await?;
        let secret = totp::new_secret();
        let (recovery_codes, hashes): (Vec<String>, Vec<String>) =
            totp::new_recovery_codes().into_iter().unzip();
        let tx = self.db().begin_write().await?;
        // The caller's row, locked: two setups started at once take turns, so the second
        // replaces the first's pending secret instead of running into it and answering
        // "already on". The app lists the account under its name as it is now (renamed
        // meanwhile, even earlier in the same document).
        let locked = self.recheck(&tx, caller, user.id, |_, _| Ok(())).await?;
        let uri = totp::uri(&secret, &self.0.totp_issuer, &locked.username)?;
        if !totp_rows::start(&tx, user.id, secret.clone(), hashes).await? {
            tx.rollback().await?;
            return Err(ALREADY_ON);
        }
        audit::record(
            &tx,
            caller
                .audit(Action::TotpSetupStarted)
                .target(user.id, user.role),
        )
        .await?;
        tx.commit().await?;
        Ok(TotpSetup {
            secret,
            uri,
            recovery_codes,
        })
    }

    /// Turns two-factor login on with a current code from the app just set up. A wrong code
    /// counts towards the session's code throttle; a right one clears that count.
    pub async fn confirm_totp(&self, caller: &Caller<'_>, code: &str) -> AppResult<bool> {
        const NOTHING_PENDING: AppError =
            AppError::Forbidden("There is no two-factor setup to confirm: call enableTotp first");
        const ALREADY_ON: AppError = AppError::Forbidden("Two-factor login is already on");
        caller.session()?;
        // Before anything is counted: in demo mode it never runs, as the other two-factor
        // mutations do not.
        self.writable()?;
        // Before the IP is counted: a blank box is no attempt.
        validation::second_factor_code(code).map_err(|error| error.on("code"))?;
        self.limit_ip(caller.ip)?;
        let user = caller.user;
        let Some(pending) = totp_rows::get(self.db().writer(), user.id).await? else {
            return Err(NOTHING_PENDING);
        };
        if pending.confirmed_at.is_some() {
            return Err(ALREADY_ON);
        }
        let subject = Subject::Session {
            session: caller.session()?,
            factor: Factor::Code,
        };
        let attempt = self.reserve_attempt(&subject).await?;
        let step = totp::check(&pending.secret, code, totp::unix_now())?;
        let Some(step) = step else {
            attempt.checked();
            return Err(AppError::field(
                "code",
                FieldCode::Incorrect,
                "is incorrect",
            ));
        };
        self.clear_attempts(&subject).await?;
        attempt.checked();
        let tx = self.db().begin_write().await?;
        // Only from a session still live: one ended meanwhile (even earlier in the same
        // document) turns nothing on.
        self.recheck(&tx, caller, user.id, |_, _| Ok(())).await?;
        if !totp_rows::confirm(&tx, user.id, &pending.secret, step).await? {
            // Changed since it was read, and the code was not wrong: confirmed by a request
            // sent at the same time (a double click), replaced by another `enableTotp`, or
            // dropped.
            let now = totp_rows::get(&tx, user.id).await?;
            tx.rollback().await?;
            return Err(match now {
                Some(row) if row.confirmed_at.is_some() => ALREADY_ON,
                Some(_) => AppError::VerificationRequired(
                    "The two-factor setup was replaced meanwhile: confirm a code of its new secret",
                ),
                None => NOTHING_PENDING,
            });
        }
        audit::record(
            &tx,
            caller.audit(Action::TotpEnabled).target(user.id, user.role),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Turns two-factor login off (or drops an unconfirmed setup) after a verification, which
    /// is always needed here: the TOTP code when it is on, else the password. Whether there
    /// was anything to turn off.
    pub async fn disable_totp(
        &self,
        caller: &Caller<'_>,
        verification: &Verification,
    ) -> AppResult<bool> {
        self.writable()?;
        let session = caller.session()?;
        let user = caller.user;
        // Nothing to turn off: `false` whatever the verification, which is not checked.
        if totp_rows::get(self.db().conn(), user.id).await?.is_none() {
            return Ok(false);
        }
        let by_code = match self.verify(caller, session, verification).await {
            Ok(by_code) => by_code,
            // Nothing left to turn off (another request of the user's may just have): the
            // answer is the same as it would have been a moment later.
            Err(AppError::VerificationRequired(_))
                if totp_rows::get(self.db().conn(), user.id).await?.is_none() =>
            {
                return Ok(false);
            }
            Err(err) => return Err(err),
        };
        let tx = self.db().begin_write().await?;
        self.recheck(&tx, caller, user.id, |_, _| Ok(())).await?;
        // Only what the verification vouched for: a password drops a pending setup, never a
        // factor confirmed since it was checked.
        let existed = totp_rows::remove(&tx, user.id, Some(by_code)).await?;
        if !existed
            && !by_code
            && totp_rows::get(&tx, user.id)
                .await?
                .is_some_and(|row| row.confirmed_at.is_some())
        {
            tx.rollback().await?;
            return Err(AppError::VerificationRequired(
                "Two-factor login was turned on meanwhile: give a TOTP code (or a recovery code)",
            ));
        }
        if existed {
            audit::record(
                &tx,
                caller
                    .audit(Action::TotpDisabled)
                    .target(user.id, user.role),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(existed)
    }

    /// Recovery from the command line: turns off `username`'s two-factor login (or drops a
    /// pending setup) and ends their sessions, which whoever set the factor may hold. Their
    /// username as stored, and whether there was anything to turn off.
    pub async fn reset_totp(&self, username: &str) -> AppResult<(String, bool)> {
        let tx = self.db().begin_write().await?;
        let Some(user) = super::users::by_username(&tx, username).await? else {
            tx.rollback().await?;
            return Err(AppError::NotFound("No such user"));
        };
        // The user's row first, as every revocation takes it: a write from one of the sessions
        // ended here waits, then sees them ended. Its role as locked is the one audited.
        let Some(user) = user_queries::lock(&tx, &[user.id]).await?.pop() else {
            tx.rollback().await?;
            return Err(AppError::NotFound("No such user"));
        };
        let existed = totp_rows::remove(&tx, user.id, None).await?;
        if existed {
            sessions::revoke_all_for_user(&tx, user.id).await?;
            audit::record(
                &tx,
                NewEntry::new(Action::TotpDisabled, None, None).target(user.id, user.role),
            )
            .await?;
        }
        tx.commit().await?;
        Ok((user.username, existed))
    }

    /// Which of `user_ids` have two-factor login on, for the DataLoader: a page of users costs
    /// one query. Who may see it is [`super::rules::check_credentials`], checked per user first.
    pub async fn totp_enabled_among(&self, user_ids: &[uuid::Uuid]) -> AppResult<Vec<uuid::Uuid>> {
        Ok(totp_rows::confirmed_among(self.db().conn(), user_ids).await?)
    }

    /// Whether `user_id`'s two-factor login is no longer `totp` (turned off or replaced): a
    /// code checked against it meanwhile was no wrong guess.
    pub(super) async fn totp_changed(
        &self,
        user_id: uuid::Uuid,
        totp: &UserTotp,
    ) -> AppResult<bool> {
        Ok(!totp_rows::confirmed_with(self.db().conn(), user_id, &totp.secret).await?)
    }

    /// The user's confirmed two-factor settings, if they have it on.
    pub(super) async fn totp_of(&self, user_id: uuid::Uuid) -> AppResult<Option<UserTotp>> {
        Ok(totp_rows::get(self.db().conn(), user_id)
            .await?
            .filter(|row| row.confirmed_at.is_some()))
    }

    /// Checks a second factor: a TOTP code of now or one step either side that no earlier
    /// check accepted, or an unused recovery code, which is then used up. The caller counts
    /// the attempt. Given inside `session` (a verification), the session must still be live
    /// when the code is used up: one ended meanwhile, even earlier in the same document,
    /// spends nothing and is refused.
    pub(super) async fn second_factor(
        &self,
        user: &User,
        totp: &UserTotp,
        code: &str,
        ip: Option<IpAddr>,
        session: Option<uuid::Uuid>,
    ) -> AppResult<SecondFactor> {
        let recovery = totp::is_recovery_code(code);
        let step = if recovery {
            None
        } else {
            match totp::check(&totp.secret, code, totp::unix_now())? {
                Some(step) => Some(step),
                None => return Ok(SecondFactor::Wrong),
            }
        };
        let tx = self.db().begin_write().await?;
        // The user's row first, as every revocation takes it: one committed before this lock
        // is seen below, and a role changed since `user` was read is the one audited.
        let role = user_queries::lock(&tx, &[user.id])
            .await?
            .first()
            .map_or(user.role, |now| now.role);
        if let Some(session) = session
            && sessions::find_live(&tx, session, &self.live())
                .await?
                .is_none()
        {
            tx.rollback().await?;
            return Err(crate::error::INVALID_TOKEN);
        }
        let spent_or_wrong = |spent| {
            if spent {
                SecondFactor::Spent
            } else {
                SecondFactor::Wrong
            }
        };
        let checked = match step {
            // A code is accepted once: replaying it, or an earlier one, fails.
            Some(step) => {
                if totp_rows::accept_step(&tx, user.id, &totp.secret, step).await? {
                    SecondFactor::Passed
                } else {
                    spent_or_wrong(totp_rows::confirmed_with(&tx, user.id, &totp.secret).await?)
                }
            }
            None => {
                let hash = totp::hash_recovery_code(code);
                if totp_rows::use_recovery_code(&tx, user.id, &hash).await? {
                    audit::record(
                        &tx,
                        NewEntry::new(Action::RecoveryCodeUsed, Some((user.id, role)), ip)
                            .target(user.id, role),
                    )
                    .await?;
                    SecondFactor::Passed
                } else {
                    spent_or_wrong(totp_rows::recovery_code_used(&tx, user.id, &hash).await?)
                }
            }
        };
        tx.commit().await?;
        Ok(checked)
    }
}

/// How a second-factor code fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SecondFactor {
    Passed,
    /// A code of no step near now, or no recovery code of the user's; or one checked against a
    /// secret replaced or removed meanwhile.
    Wrong,
    /// A right code, spent: a recovery code used already, or a step's code no later than one
    /// accepted (by a login or an earlier verification), which the authenticator may still
    /// show. The user is told to give the next one, and nothing is counted.
    Spent,
}
