//! Registration, login and the token lifecycle.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, IntoActiveModel,
};
use uuid::Uuid;

use super::totp::SecondFactor;
use super::{Service, users::NewUser};
use crate::auth::{AccessClaims, password, tokens};
use crate::db::audit::{self, Action, NewEntry};
use crate::db::entities::user::{self, Model as User, Role};
use crate::db::sessions::{Live, Origin};
use crate::db::{
    self, UniqueViolation, sessions, throttle, unique_violation, users as user_queries,
};
use crate::error::{AppError, AppResult, INVALID_CREDENTIALS, INVALID_TOKEN};
use crate::service::validation::{self, Fields};
use crate::service::{Credential, Signed, Subject};

/// Live sessions a user may hold; a login beyond ends their oldest. Every device and browser
/// of a person fits; a script logging in over and over does not grow the list without bound.
pub const MAX_LIVE_SESSIONS: u64 = 100;

/// A login whose account has two-factor login on and that gave no code.
const CODE_NEEDED: AppError = AppError::TotpRequired(
    "Two-factor login is on: give a TOTP code (or a recovery code) as totpCode",
);

/// What a successful register, login or refresh hands back.
pub struct AuthSession {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
    /// The session the tokens belong to.
    pub session_id: Uuid,
    pub user: User,
}

impl Service {
    /// Self-registration. The first account on an empty database becomes the owner; once any
    /// account exists (registered, created on the command line or imported) registrations are
    /// standard users. The partial unique index on the owner keeps racing first registrations
    /// from making two owners: the loser retries as a standard user.
    pub async fn register(&self, input: NewUser, origin: &Origin) -> AppResult<AuthSession> {
        // Refused outright before the IP's budget is charged: no name is looked up.
        self.writable()?;
        if !self.accepts_registrations() {
            return Err(AppError::Forbidden("Registration is closed"));
        }
        // Charged before the fields are judged, invalid ones too: a new password's strength
        // estimate takes a hashing thread.
        self.limit_ip(origin.ip)?;
        let validated = self.validate_new_user(&input).await?;
        let prepared = self.prepare_new_user(validated, None).await?;
        let mut may_own = true;
        loop {
            let tx = self.db().begin_write().await?;
            let role = if may_own && !user_queries::any_exists(&tx).await? {
                Role::Owner
            } else {
                Role::Standard
            };
            let mut model = prepared.clone();
            model.role = role;
            // Stamped in the transaction, not before the hash and the wait for the writer: a
            // list's cursor past a user added meanwhile would leave this one behind it.
            model.created_at = db::now();
            model.updated_at = model.created_at;
            // The registration opens a session: it is the account's first login.
            model.last_login_at = Some(model.created_at);
            match user::Entity::insert(model.clone().into_active_model().reset_all())
                .exec_without_returning(&tx)
                .await
            {
                Ok(_) => {
                    let session = self.open_session(&tx, model.id, origin).await?;
                    audit::record(
                        &tx,
                        NewEntry::new(
                            Action::UserRegistered,
                            Some((model.id, model.role)),
                            origin.ip,
                        )
                        .target(model.id, model.role),
                    )
                    .await?;
                    tx.commit().await?;
                    return self.finish(session, model);
                }
                Err(err) if unique_violation(&err) == Some(UniqueViolation::Owner) && may_own => {
                    // Another registration became the owner first: this one is standard.
                    tx.rollback().await?;
                    may_own = false;
                }
                Err(err) => {
                    tx.rollback().await?;
                    return Err(self
                        .unique_error(err, &model.username_key, &model.email, model.id)
                        .await);
                }
            }
        }
    }

    /// Login by username or email. Unknown users, wrong passwords and disabled accounts are
    /// indistinguishable: same message, same argon2 cost, same throttle.
    pub async fn login(
        &self,
        login: &str,
        password: &str,
        totp_code: Option<&str>,
        origin: &Origin,
    ) -> AppResult<AuthSession> {
        // A blank code box is no code: an account without two-factor login ignores it, one
        // with it asks for the code.
        let totp_code = totp_code.filter(|code| validation::code_given(code));
        let mut fields = Fields::new();
        let login = fields.check("login", validation::login(login));
        fields.check("password", validation::given_password(password));
        if let Some(code) = totp_code {
            fields.check("totpCode", validation::second_factor_code(code));
        }
        fields.into_result()?;
        // Only now: a form sent with a blank box, or a value no account could have, is no
        // attempt.
        self.limit_ip(origin.ip)?;
        let login = login.unwrap_or_default();
        let user = user_queries::by_login(self.db().conn(), &login).await?;
        let subject = match &user {
            Some(user) => Subject::User(user.id),
            None => Subject::Login(login),
        };
        // A disabled account is checked against its own hash, so its logins cost what an
        // enabled one's do (an imported hash costs what it asks), and never succeeds: its
        // attempts count as failures like any other.
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        // Read before the attempt is counted, so that nothing but the checks themselves lies
        // between counting and clearing; unknown logins run the same query.
        let totp = self
            .totp_of(user.as_ref().map_or(Uuid::nil(), |user| user.id))
            .await?;
        // Counted now, cleared only once every factor has passed: a stolen password does
        // not buy unlimited guesses at the second factor. A right password whose login then
        // ends unfinished (the client gone, a timeout, a database error) is taken back when
        // `attempt` drops: it was no failure.
        let (valid, attempt) = self.counted_verify(&subject, password, hash).await?;
        let user = match user {
            Some(user) if valid && !user.disabled => user,
            _ => {
                attempt.checked();
                self.metrics().login(false);
                return Err(INVALID_CREDENTIALS);
            }
        };
        let second_factor = totp.is_some();
        if let Some(totp) = totp {
            // A right password without its code is no failure, and no success either: the
            // client is asked for the code and comes back with both. Taken back before the
            // answer, so that the next attempt, the one with the code, finds it gone.
            let Some(code) = totp_code else {
                attempt.take_back().await?;
                return Err(CODE_NEEDED);
            };
            match self
                .second_factor(&user, &totp, code, origin.ip, None)
                .await?
            {
                SecondFactor::Passed => {}
                // A right code (a second device, a retry after a lost answer): no guess, so not
                // counted.
                SecondFactor::Spent => {
                    attempt.take_back().await?;
                    self.metrics().login(false);
                    return Err(AppError::TotpRequired(
                        "This two-factor code was already used: give the next code your app \
                         shows, or an unused recovery code",
                    ));
                }
                SecondFactor::Wrong => {
                    // Settled before anything else is awaited, as a verification's is.
                    let lock = attempt.checked();
                    self.metrics().login(false);
                    if self.totp_changed(user.id, &totp).await? {
                        // Turned off or replaced while the code was checked: no wrong code.
                        self.take_back_attempt(&subject, lock).await?;
                        return Err(AppError::TotpRequired(
                            "Two-factor login changed meanwhile: log in again",
                        ));
                    }
                    return Err(AppError::TotpRequired("The two-factor code is wrong"));
                }
            }
        }
        // A hash made otherwise (imported, say) is made again, once, under this server's
        // parameters; a busy hashing queue only leaves that to the next login.
        let rehashed = if password::needs_rehash(&user.password_hash) {
            self.0.passwords.hash(password.to_owned()).await.ok()
        } else {
            None
        };
        let mut signed = match self
            .sign_in(
                &user,
                &user.password_hash,
                rehashed,
                second_factor,
                &subject,
                origin,
            )
            .await
        {
            // Two-factor login turned on meanwhile: a right password without its code, taken
            // back as above.
            Err(err @ AppError::TotpRequired(_)) => {
                attempt.take_back().await?;
                return Err(err);
            }
            signed => signed?,
        };
        if signed.is_none() {
            // Another first login of the account may have stored the same password again
            // meanwhile (the rehash above): no change of password. Checked once against what
            // is stored now; a password that changed fails here.
            let stored = user_queries::by_id(self.db().conn(), user.id)
                .await?
                .filter(|now| !now.disabled && now.password_hash != user.password_hash);
            if let Some(now) = stored
                && self
                    .0
                    .passwords
                    .verify(password.to_owned(), Some(now.password_hash.clone()))
                    .await?
            {
                signed = self
                    .sign_in(
                        &user,
                        &now.password_hash,
                        None,
                        second_factor,
                        &subject,
                        origin,
                    )
                    .await?;
            }
        }
        // Decided: the count was cleared with the session, or stands for a refusal.
        attempt.checked();
        let Some((session, user)) = signed else {
            self.metrics().login(false);
            return Err(INVALID_CREDENTIALS);
        };
        self.metrics().login(true);
        self.finish(session, user)
    }

    /// A login's one transaction: the user's `last_login_at`, the end of the throttle's count,
    /// the password stored again (`rehashed`), the session, its first refresh token and the
    /// audit entry. `None`, and nothing written, when the account was disabled, deleted or
    /// given another password hash than `verified_hash` since it was read: the row stays
    /// locked until the session exists, so a password change after this point ends the
    /// session with the others. A login that checked no second factor is refused if two-factor
    /// login was turned on meanwhile (`confirmTotp` takes the same row first).
    async fn sign_in(
        &self,
        user: &User,
        verified_hash: &str,
        rehashed: Option<String>,
        second_factor: bool,
        subject: &Subject,
        origin: &Origin,
    ) -> AppResult<Option<(Opened, User)>> {
        let tx = self.db().begin_write().await?;
        // The row as locked here, not as the login read it before hashing: a role changed
        // meanwhile is the one the session acts with, answered and audited.
        let Some(user) = user_queries::record_login(&tx, user.id, verified_hash, db::now()).await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        let turned_on = crate::db::totp::get(&tx, user.id)
            .await?
            .is_some_and(|row| row.confirmed_at.is_some());
        if !second_factor && turned_on {
            tx.rollback().await?;
            return Err(CODE_NEEDED);
        }
        throttle::clear(&tx, &subject.key()).await?;
        if let Some(new) = rehashed {
            user_queries::rehash(&tx, user.id, verified_hash, new).await?;
        }
        let session = self.open_session(&tx, user.id, origin).await?;
        audit::record(
            &tx,
            NewEntry::new(Action::LoggedIn, Some((user.id, user.role)), origin.ip)
                .target(user.id, user.role),
        )
        .await?;
        tx.commit().await?;
        Ok(Some((session, user)))
    }

    /// Checks `password` given again inside session `session`, counted on the session's
    /// password count: while it is throttled it fails at once with RATE_LIMITED, without
    /// hashing; a match starts the count afresh. (The login clears its own count only once
    /// every factor has passed.)
    pub(super) async fn check_password(
        &self,
        session: Uuid,
        password: &str,
        hash: String,
    ) -> AppResult<bool> {
        let subject = Subject::Session {
            session,
            factor: super::Factor::Password,
        };
        let (valid, attempt) = self.counted_verify(&subject, password, Some(hash)).await?;
        if valid {
            self.clear_attempts(&subject).await?;
        }
        attempt.checked();
        Ok(valid)
    }

    /// Verifies `password` against `hash` as one counted attempt on `subject`. The caller
    /// decides: [`Attempt::checked`] once the outcome stands (a success cleared the count, or
    /// a failure keeps it); dropped before that, the attempt is taken back.
    async fn counted_verify(
        &self,
        subject: &Subject,
        password: &str,
        hash: Option<String>,
    ) -> AppResult<(bool, Attempt)> {
        // A full queue refuses before the attempt is counted.
        self.0.passwords.check_room()?;
        let attempt = self.reserve_attempt(subject).await?;
        let valid = self.0.passwords.verify(password.to_owned(), hash).await?;
        Ok((valid, attempt))
    }

    /// Counts a credential attempt on `subject` before anything is checked; while the subject
    /// is throttled, RATE_LIMITED. The count is taken back if the returned [`Attempt`] is
    /// dropped before its check ran.
    pub(super) async fn reserve_attempt(&self, subject: &Subject) -> AppResult<Attempt> {
        let key = subject.key();
        match throttle::reserve(self.db().writer(), &key, self.0.throttle).await? {
            Ok(reserved) => Ok(Attempt {
                db: self.db().writer().clone(),
                key: Some(key),
                reserved,
            }),
            Err(wait) => Err(self.locked_out(subject, wait)),
        }
    }

    /// The answer while `subject` is locked for `wait`, counted under its throttle's kind.
    fn locked_out(&self, subject: &Subject, wait: Duration) -> AppError {
        let kind = match subject {
            Subject::Session { .. } => "session",
            Subject::User(_) | Subject::Login(_) => "account",
        };
        self.throttled(kind, "Too many failed attempts; try again later", wait)
    }

    /// RATE_LIMITED while `subject` is throttled, counting nothing: for work done before the
    /// attempt itself, such as judging a new password beside the current one, which takes a
    /// hashing thread that a throttled session must not keep busy.
    pub(super) async fn refuse_if_throttled(&self, subject: &Subject) -> AppResult<()> {
        match throttle::locked_for(self.db().writer(), &subject.key()).await? {
            Some(wait) => Err(self.locked_out(subject, wait)),
            None => Ok(()),
        }
    }

    /// Takes back an attempt settled as a failure that turned out to be none; `reserved` is
    /// what [`Attempt::checked`] returned.
    pub(super) async fn take_back_attempt(
        &self,
        subject: &Subject,
        reserved: throttle::Reserved,
    ) -> AppResult<()> {
        throttle::release(self.db().writer(), &subject.key(), reserved).await?;
        Ok(())
    }

    /// A success: `subject`'s failure count starts afresh.
    pub(super) async fn clear_attempts(&self, subject: &Subject) -> AppResult<()> {
        throttle::clear(self.db().writer(), &subject.key()).await?;
        Ok(())
    }

    /// Rotates a refresh token. The old token is consumed atomically; presenting a token that
    /// was already rotated revokes its whole family, unless it comes back within the reuse
    /// grace: a client racing itself (two tabs refreshing at once) then gets another pair for
    /// the same session. Sessions past their maximum age or idle limit do not refresh.
    pub async fn refresh(
        &self,
        token: &str,
        ip: Option<std::net::IpAddr>,
    ) -> AppResult<AuthSession> {
        const INVALID: AppError = AppError::Unauthenticated("Invalid refresh token");
        self.limit_ip(ip)?;
        let hash = tokens::hash_token(token);
        let live = self.live();
        let tx = self.db().begin_write().await?;
        sessions::lock_user_of_refresh_token(&tx, &hash).await?;
        let session_id = match sessions::consume_refresh_token(&tx, &hash).await? {
            Some(session_id) => session_id,
            None => {
                // Unknown, expired, or already rotated. The row read here is committed: on
                // PostgreSQL the consuming UPDATE waited for a concurrent rotation of the same
                // row, on SQLite the write transaction excludes it.
                let Some((row, used_at)) = sessions::find_refresh_token(&tx, &hash)
                    .await?
                    .and_then(|row| row.used_at.map(|at| (row, at)))
                else {
                    return Err(INVALID);
                };
                // Recognised while it is kept, until it expires: after that whether it is
                // still in the table would depend on when the housekeeping last ran.
                if row.expires_at <= db::now() {
                    return Err(INVALID);
                }
                if used_at <= self.grace_start() {
                    let reuse = Action::RefreshTokenReused;
                    let ended = end_session(&tx, row.session_id, &live, reuse, None, false).await?;
                    tx.commit().await?;
                    // Once per session, as its audit entry: replays racing the first find it
                    // ended already.
                    if ended {
                        tracing::warn!(session = %row.session_id, "refresh token reuse: family revoked");
                    } else {
                        tracing::debug!(session = %row.session_id, "refresh token reuse of an ended session");
                    }
                    return Err(INVALID);
                }
                tracing::debug!(session = %row.session_id, "refresh token reused within the grace");
                row.session_id
            }
        };
        let user = user_queries::by_live_session(&tx, session_id, &live)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(INVALID)?;
        let refresh_token = self.add_refresh_token(&tx, session_id).await?;
        let session = sessions::touch(&tx, session_id).await?.ok_or(INVALID)?;
        let ends = self.session_end(session.created_at, session.last_used_at);
        // Its access token would end at the last whole second before the session does: with
        // less than a second of it left before the end no refresh moves (its maximum age), the
        // token would be dead on arrival, or refreshed again at once. A session that close to
        // its end refreshes no more.
        let oldest = db::later(session.created_at, self.0.session_max_age);
        let last = chrono::DateTime::from_timestamp(oldest.timestamp(), 0).unwrap_or(oldest);
        if last - db::now() < chrono::Duration::seconds(1) {
            tx.rollback().await?;
            return Err(INVALID);
        }
        tx.commit().await?;
        let opened = Opened {
            id: session_id,
            refresh_token,
            ends,
        };
        self.finish(opened, user)
    }

    /// Ends the session the refresh token belongs to. `false` when the token is unknown or
    /// past its lifetime, as [`Self::refresh`] refuses it. A token rotated longer ago than the
    /// reuse grace is a reuse, as it is for a refresh: the session ends all the same, recorded
    /// as the detected reuse it is rather than as its user's logout from the presenter's
    /// address.
    pub async fn logout(&self, token: &str, ip: Option<std::net::IpAddr>) -> AppResult<bool> {
        let hash = tokens::hash_token(token);
        let Some(row) = sessions::find_refresh_token(self.db().conn(), &hash).await? else {
            return Ok(false);
        };
        let Some(session) = sessions::find(self.db().conn(), row.session_id).await? else {
            return Ok(false);
        };
        if row.expires_at <= db::now() {
            return Ok(false);
        }
        let reused = row.used_at.is_some_and(|at| at <= self.grace_start());
        let (action, ip) = if reused {
            (Action::RefreshTokenReused, None)
        } else {
            (Action::LoggedOut, ip)
        };
        let tx = self.db().begin_write().await?;
        // The session's user, locked as every revocation does, so a write of theirs that
        // holds or waits for the row ends before the session does or sees it ended.
        user_queries::lock(&tx, &[session.user_id]).await?;
        let live = self.live();
        let ended = end_session(&tx, row.session_id, &live, action, ip, !reused).await?;
        tx.commit().await?;
        if ended && reused {
            tracing::warn!(session = %row.session_id, "refresh token reuse at logout: family revoked");
        }
        Ok(ended)
    }

    /// The user an access token speaks for, while the token, its session and the account
    /// are all still valid.
    pub async fn authenticate(&self, token: &str) -> AppResult<Signed> {
        if tokens::is_api_token(token) {
            return self.authenticate_api_token(token).await;
        }
        let claims = self.verify_access_token(token).await?;
        Ok(Signed {
            user: self.session_user(&claims).await?,
            credential: Credential::Session(claims.sid),
        })
    }

    /// Checks an access token's signature and claims; a kid this instance does not know yet
    /// makes it reload its keys (at most once a second) and check again.
    async fn verify_access_token(&self, token: &str) -> AppResult<AccessClaims> {
        match self.0.tokens.verify(token) {
            Err(_) if self.0.tokens.signed_by_unknown_key(token) => {
                self.reload_keys_on_demand(token).await;
                match self.0.tokens.verify(token) {
                    Err(_) if self.0.tokens.signed_by_unknown_key(token) => Err(
                        crate::auth::tokens::refused("its kid names no key in the database"),
                    ),
                    checked => checked,
                }
            }
            checked => checked,
        }
    }

    /// The enabled user of verified `claims` while their session is live.
    async fn session_user(&self, claims: &AccessClaims) -> AppResult<User> {
        user_queries::by_session(self.db().conn(), claims.sub, claims.sid, &self.live())
            .await?
            .filter(|user| !user.disabled)
            .ok_or(INVALID_TOKEN)
    }

    /// [`Self::authenticate`] plus user `other`, read in the same query.
    pub async fn authenticate_with(
        &self,
        access_token: &str,
        other: Uuid,
    ) -> AppResult<(Signed, Option<User>)> {
        let claims = self.verify_access_token(access_token).await?;
        let signed = |user| Signed {
            user,
            credential: Credential::Session(claims.sid),
        };
        if other == claims.sub {
            let viewer = self.session_user(&claims).await?;
            return Ok((signed(viewer.clone()), Some(viewer)));
        }
        let rows = user_queries::by_session_or_id(
            self.db().conn(),
            claims.sub,
            claims.sid,
            other,
            &self.live(),
        )
        .await?;
        // Rows with the viewer's id can only have matched the session condition.
        let viewer = rows
            .iter()
            .find(|user| user.id == claims.sub && !user.disabled)
            .cloned()
            .ok_or(INVALID_TOKEN)?;
        let target = rows.into_iter().find(|user| user.id == other);
        Ok((signed(viewer), target))
    }

    /// Opens a session for `user_id`, ending their oldest beyond [`MAX_LIVE_SESSIONS`].
    async fn open_session(
        &self,
        tx: &DatabaseTransaction,
        user_id: Uuid,
        origin: &Origin,
    ) -> AppResult<Opened> {
        let (id, at) = sessions::create(tx, user_id, origin).await?;
        sessions::end_beyond(tx, user_id, &self.live(), MAX_LIVE_SESSIONS).await?;
        let refresh_token = self.add_refresh_token(tx, id).await?;
        Ok(Opened {
            id,
            refresh_token,
            ends: self.session_end(at, at),
        })
    }

    async fn add_refresh_token(
        &self,
        db: &impl ConnectionTrait,
        session_id: Uuid,
    ) -> AppResult<String> {
        let (token, hash) = tokens::new_refresh_token();
        sessions::insert_refresh_token(db, session_id, hash, self.refresh_expiry()?).await?;
        Ok(token)
    }

    /// When a refresh token issued now expires.
    fn refresh_expiry(&self) -> AppResult<chrono::DateTime<chrono::Utc>> {
        let ttl = chrono::Duration::from_std(self.0.refresh_ttl)
            .map_err(|err| AppError::internal_from("refresh ttl out of range", err))?;
        Ok(db::now() + ttl)
    }

    /// The answer to a login or refresh of `session`.
    fn finish(&self, session: Opened, user: User) -> AppResult<AuthSession> {
        let (access_token, expires_at) = self.0.tokens.issue(user.id, session.id, session.ends)?;
        Ok(AuthSession {
            access_token,
            refresh_token: session.refresh_token,
            expires_at,
            session_id: session.id,
            user,
        })
    }
}

/// A session as a login or refresh leaves it: its new refresh token, and when it ends unless
/// refreshed again (its access token ends no later).
struct Opened {
    id: Uuid,
    refresh_token: String,
    ends: chrono::DateTime<chrono::Utc>,
}

/// Inside `tx`: revokes session `session_id` and, when that ended it, records `action` about
/// its user, as its actor when `by_owner` (a logout), else with no actor (a detected reuse).
/// Whether it ended the session (false when it had ended already: revoked, or past its
/// maximum age or idle limit).
async fn end_session(
    tx: &DatabaseTransaction,
    session_id: Uuid,
    live: &Live,
    action: Action,
    ip: Option<std::net::IpAddr>,
    by_owner: bool,
) -> AppResult<bool> {
    if !sessions::revoke_live(tx, session_id, live).await? {
        // Ended by its age already: marked revoked all the same, so that raising the limits
        // later cannot bring back a session its user logged out of, or a stolen family.
        sessions::revoke(tx, session_id).await?;
        return Ok(false);
    }
    let Some(session) = sessions::find(tx, session_id).await? else {
        return Ok(true);
    };
    let Some(owner) = user_queries::by_id(tx, session.user_id).await? else {
        return Ok(true);
    };
    let actor = by_owner.then_some((owner.id, owner.role));
    audit::record(
        tx,
        NewEntry::new(action, actor, ip).target(owner.id, owner.role),
    )
    .await?;
    Ok(true)
}

/// A counted credential attempt whose check has not run yet. Dropped before
/// [`Attempt::checked`] (its request timed out, its client went away, or the hashing queue
/// refused it), it takes its count back: nobody learned anything from it, and under load a
/// person whose login was given up on must not be throttled for it.
#[must_use]
pub(super) struct Attempt {
    db: sea_orm::DatabaseConnection,
    key: Option<String>,
    reserved: throttle::Reserved,
}

impl Attempt {
    /// The outcome stands: a failure stays counted (until a success clears the count), a
    /// success has cleared it. Either way nothing is taken back, unless by
    /// [`Service::take_back_attempt`] with what is returned here.
    pub(super) fn checked(mut self) -> throttle::Reserved {
        self.key = None;
        self.reserved
    }

    /// No outcome: the attempt is taken back now, before the answer, so that the client's
    /// next attempt finds it gone. Settled before the release is awaited: dropped on the way
    /// (the client gone), a release begun and another from `drop` would take back two.
    pub(super) async fn take_back(mut self) -> AppResult<()> {
        let Some(key) = self.key.take() else {
            return Ok(());
        };
        if let Err(err) = throttle::release(&self.db, &key, self.reserved).await {
            // Left to `drop`, which tries again.
            self.key = Some(key);
            return Err(err.into());
        }
        Ok(())
    }
}

/// How long a take-back waits before each try after the first: a login the database failed
/// is often taken back on a connection the same failure broke, and pooled connections idle
/// for a second are checked before use.
const TAKE_BACK_RETRIES: [Duration; 3] = [
    Duration::from_millis(1100),
    Duration::from_secs(3),
    Duration::from_secs(9),
];

impl Drop for Attempt {
    fn drop(&mut self) {
        let (Some(key), Ok(runtime)) = (self.key.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (db, reserved) = (self.db.clone(), self.reserved);
        let task = async move {
            let mut waits = TAKE_BACK_RETRIES.iter();
            loop {
                let Err(err) = throttle::release(&db, &key, reserved).await else {
                    return;
                };
                let Some(wait) = waits.next() else {
                    tracing::warn!(error = %crate::error::chain(&err), "taking back an unchecked credential attempt; it stays counted");
                    return;
                };
                tracing::debug!(error = %crate::error::chain(&err), "taking back an unchecked credential attempt; trying again");
                tokio::time::sleep(*wait).await;
            }
        };
        // Its log lines carry the request's id.
        runtime.spawn(tracing::Instrument::in_current_span(task));
    }
}
