//! Step-up verification: sensitive actions need a recent login, or the password (the TOTP code
//! when two-factor login is on) given again.

use super::totp::SecondFactor;
use super::{Caller, Factor, Service, Subject, validation};
use crate::db::{self, sessions};
use crate::error::{AppError, AppResult, FieldCode};

/// What a caller gives to prove it is still them. No `Debug`: it holds a password.
#[derive(Clone, Default)]
pub struct Verification {
    pub password: Option<String>,
    pub totp_code: Option<String>,
}

impl Verification {
    /// Gives nothing: as if no verification were given.
    pub fn is_empty(&self) -> bool {
        self.password.is_none() && self.totp_code.is_none()
    }

    /// Gives nothing but blank boxes: no attempt, and within the step-up window no
    /// verification at all.
    fn is_blank(&self) -> bool {
        validation::filled(&self.password).is_none()
            && !self
                .totp_code
                .as_deref()
                .is_some_and(validation::code_given)
    }
}

impl Service {
    /// Lets a sensitive action through when the caller's session logged in within the step-up
    /// window (or verified since), or when `verification` is right. A refresh does not count.
    /// A verification of blank boxes is ignored within the window and refused as missing past
    /// it. API tokens are refused outright.
    pub(super) async fn step_up(
        &self,
        caller: &Caller<'_>,
        verification: Option<&Verification>,
    ) -> AppResult<()> {
        let session_id = caller.session()?;
        let given = verification.filter(|v| !v.is_empty());
        if let Some(verification) = given.filter(|v| !v.is_blank()) {
            return self
                .verify(caller, session_id, verification)
                .await
                .map(drop);
        }
        // Live as of now: a session ended since the request began proves nothing.
        let session = sessions::find_live(self.db().writer(), session_id, &self.live())
            .await?
            .ok_or(crate::error::INVALID_TOKEN)?;
        let proved = session
            .verified_at
            .map_or(session.created_at, |at| at.max(session.created_at));
        if proved >= db::earlier(db::now(), self.0.step_up_window) {
            Ok(())
        } else if let Some(blank) = given {
            self.verify(caller, session_id, blank).await.map(drop)
        } else {
            Err(AppError::VerificationRequired(
                "This action needs verification: give your password, or your TOTP code when two-factor login is on",
            ))
        }
    }

    /// Checks `verification` for the caller, counted by the client IP's bucket and the session's
    /// throttle, and records the success on the session. With two-factor login on, only a TOTP
    /// (or recovery) code will do, and `true` says one was checked. Only the box the user needs,
    /// filled in, is an attempt.
    pub(super) async fn verify(
        &self,
        caller: &Caller<'_>,
        session_id: uuid::Uuid,
        verification: &Verification,
    ) -> AppResult<bool> {
        let user = caller.user;
        let totp = self.totp_of(user.id).await?;
        if let Some(totp) = &totp {
            let Some(code) = verification.totp_code.as_deref() else {
                return Err(AppError::VerificationRequired(
                    "Two-factor login is on: give a TOTP code (or a recovery code)",
                ));
            };
            validation::second_factor_code(code)
                .map_err(|error| error.on("verification.totpCode"))?;
            // Only now: a blank box, or the other box filled instead, is no attempt.
            self.limit_ip(caller.ip)?;
            let subject = Subject::Session {
                session: session_id,
                factor: Factor::Code,
            };
            let attempt = self.reserve_attempt(&subject).await?;
            let checked = self
                .second_factor(user, totp, code, caller.ip, Some(session_id))
                .await?;
            if checked == SecondFactor::Spent {
                // A right code: no guess, so not counted.
                attempt.take_back().await?;
                return Err(AppError::field(
                    "verification.totpCode",
                    FieldCode::Used,
                    "was already used: give the next code your app shows, or an unused recovery code",
                ));
            }
            if checked == SecondFactor::Wrong {
                // Settled before anything else is awaited, so a client gone meanwhile cannot
                // have a wrong code taken back.
                let lock = attempt.checked();
                if self.totp_changed(user.id, totp).await? {
                    // Turned off or replaced while the code was checked (its recovery codes
                    // went with it): no wrong code, so it is taken back.
                    self.take_back_attempt(&subject, lock).await?;
                    return Err(AppError::VerificationRequired(
                        "Two-factor login changed meanwhile: verify again",
                    ));
                }
                return Err(AppError::field(
                    "verification.totpCode",
                    FieldCode::Incorrect,
                    "is incorrect",
                ));
            }
            self.clear_attempts(&subject).await?;
            attempt.checked();
        } else {
            let Some(password) = verification.password.as_deref() else {
                return Err(AppError::VerificationRequired("Give your password"));
            };
            if let Err(error) = validation::given_password(password) {
                return Err(error.on("verification.password"));
            }
            self.limit_ip(caller.ip)?;
            let hash = user.password_hash.clone();
            if !self.check_password(session_id, password, hash).await? {
                return Err(AppError::field(
                    "verification.password",
                    FieldCode::Incorrect,
                    "is incorrect",
                ));
            }
        }
        // Live as of now, as without a verification: the right password in a session that
        // ended meanwhile lets nothing through.
        if !sessions::mark_verified(self.db().writer(), session_id, &self.live()).await? {
            return Err(crate::error::INVALID_TOKEN);
        }
        Ok(totp.is_some())
    }
}
