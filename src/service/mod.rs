//! The service layer: every rule about users, roles and tokens lives here, called by both the
//! GraphQL resolvers and the command line.

mod accounts;
mod api_tokens;
mod audit;
pub mod rules;
mod sessions;
mod step_up;
mod totp;
mod users;
pub mod validation;

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::auth::{IpLimiter, Passwords, TokenKeys, tokens};
use crate::config::{Registration, Settings};
use crate::db::audit::NewEntry;
use crate::db::entities::user::Model as User;
use crate::db::{Db, signing_keys, throttle};
use crate::error::{AppError, AppResult, chain};
use crate::metrics::Metrics;

pub use crate::db::audit::{Action as AuditAction, Filter as AuditFilter};
pub use crate::db::sessions::{Origin, Purged};
pub use crate::db::users::Page;
pub use accounts::AuthSession;
pub use audit::AuditPage;
pub use sessions::SessionInfo;
pub use step_up::Verification;
pub use totp::TotpSetup;
pub use users::{ImportedUser, NewUser, UserChanges, UserRef};
pub use validation::{DEFAULT_PAGE, MAX_PAGE};

/// Shared, cheap to clone handle on everything a request needs.
#[derive(Clone)]
pub struct Service(Arc<Inner>);

struct Inner {
    db: Db,
    passwords: Passwords,
    tokens: TokenKeys,
    registration_open: bool,
    demo: bool,
    refresh_ttl: Duration,
    session_max_age: Duration,
    session_idle: Duration,
    refresh_reuse_grace: Duration,
    step_up_window: Duration,
    audit_retention: Duration,
    throttle: throttle::Policy,
    ip_limiter: IpLimiter,
    metrics: Metrics,
    started: Instant,
    /// Held while keys reload, so reloads never overlap and an older read never replaces a
    /// newer one.
    key_reloads: tokio::sync::Mutex<KeyReloads>,
    /// Whether the clean-up and key reloading run (see [`Service::run_in_background`]).
    background: std::sync::atomic::AtomicBool,
    /// What the service was started for: only a server signs tokens, so only it records on
    /// its signing key how long they live.
    purpose: Purpose,
}

/// The least time between two on-demand key reloads, so tokens with made-up kids cannot make
/// an instance query the database more than once a second.
const ON_DEMAND_RELOAD_GAP: Duration = Duration::from_secs(1);

/// The longest a key reload may take; a request waiting for one then goes on with the keys
/// held, rather than hang on a stalled database.
const KEY_RELOAD_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest a request with an unknown kid waits for the keys, queue and gap included.
const ON_DEMAND_WAIT: Duration = Duration::from_secs(3);

/// When keys were last reloaded.
#[derive(Default)]
struct KeyReloads {
    /// The last reload tried, read through or not: the gap between reloads counts from it.
    tried: Option<Instant>,
    /// When the last reload that read the keys through began: it saw every key committed
    /// before then.
    read: Option<Instant>,
}

/// How a request's caller signed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// An access token of this session (a login).
    Session(uuid::Uuid),
    /// This API token: queries only, never management.
    ApiToken(uuid::Uuid),
}

/// A user signed in with a credential, as authentication found them.
#[derive(Clone, Debug)]
pub struct Signed {
    pub user: User,
    pub credential: Credential,
}

/// The signed-in caller of a mutation: who, with what, and from where (for the audit trail).
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    pub user: &'a User,
    pub credential: Credential,
    pub ip: Option<IpAddr>,
}

/// API tokens act as their user for queries; changes to users and credentials need a login.
pub const INTERACTIVE_REQUIRED: AppError = AppError::Forbidden(
    "An interactive session is required: API tokens cannot manage users or credentials",
);

impl Caller<'_> {
    /// The caller's session; API tokens are refused.
    pub fn session(&self) -> AppResult<uuid::Uuid> {
        match self.credential {
            Credential::Session(id) => Ok(id),
            Credential::ApiToken(_) => Err(INTERACTIVE_REQUIRED),
        }
    }

    /// An audit entry of `action` by this caller.
    fn audit(&self, action: AuditAction) -> NewEntry {
        NewEntry::new(action, Some(self.user.id), self.ip)
    }
}

/// Whose failed password checks an attempt counts towards.
pub(crate) enum Subject {
    /// Logins to an account.
    User(uuid::Uuid),
    /// A login that matches no account, normalised; throttled like an account so the throttle
    /// does not tell which logins exist.
    Login(String),
    /// Passwords or codes given again inside a signed-in session (step-up verification,
    /// `currentPassword`, confirming two-factor setup). Counted per session, not per account:
    /// anyone who knows a login can lock the account's logins, and that must not also stop its
    /// owner, already signed in, from verifying (an owner could then not act on an admin). And
    /// per factor: a right password clears only the password count, a right code only the
    /// code count, so neither vouches for guesses at the other.
    Session { session: uuid::Uuid, factor: Factor },
}

/// What a verification inside a session checked.
#[derive(Clone, Copy)]
pub(crate) enum Factor {
    Password,
    /// A TOTP or recovery code.
    Code,
}

impl Subject {
    fn key(&self) -> String {
        match self {
            Subject::User(id) => format!("user:{id}"),
            Subject::Login(login) => format!("login:{login}"),
            Subject::Session { session, factor } => {
                let factor = match factor {
                    Factor::Password => "password",
                    Factor::Code => "code",
                };
                format!("session:{session}:{factor}")
            }
        }
    }
}

/// Rows one clean-up statement deletes at most.
const PURGE_BATCH: u64 = 5_000;

/// How often the throttles forget what no longer matters.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(600);

/// A start-up failure, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("ROLLCALL_JWT_SECRET must be at least {min} bytes long (got {got}); generate one with `openssl rand -base64 48`", min = tokens::MIN_SECRET_BYTES)]
    ShortSecret { got: usize },
    #[error(
        "cannot open the database {url} (waiting up to {timeout:?}, ROLLCALL_DB_TIMEOUT){hint}"
    )]
    Connect {
        /// The URL without its password.
        url: String,
        timeout: Duration,
        hint: &'static str,
        source: sea_orm::DbErr,
    },
    #[error(
        "the database {url} lacks {pending} of this release's migrations: stop the servers of \
         the older release on it, then run `rollcall migrate` (or start this release's server)"
    )]
    NotMigrated { url: String, pending: usize },
    #[error(
        "the database {url} holds migrations this release does not know, applied by a newer \
         release or another build: run the release that applied them, or restore the backup \
         taken before it ran"
    )]
    UnknownMigrations { url: String, source: sea_orm::DbErr },
    #[error("{0}")]
    BadDatabaseUrl(&'static str),
    #[error("cannot read or apply the migrations of the database {url}")]
    Migrations { url: String, source: sea_orm::DbErr },
    #[error("database error")]
    Database(#[from] sea_orm::DbErr),
    #[error("{0}")]
    Other(#[from] AppError),
}

/// Connects to the configured database with up to `max_connections`, waiting at most
/// `timeout` for a connection or (on PostgreSQL) a statement; names the database (without its
/// password) and the time allowed when it cannot be reached.
pub async fn connect(
    settings: &Settings,
    max_connections: Option<u32>,
    timeout: Duration,
) -> Result<Db, StartError> {
    let url = &settings.database_url;
    if let Some(problem) = crate::db::url_problem(url) {
        return Err(StartError::BadDatabaseUrl(problem));
    }
    Db::connect(url, max_connections, timeout)
        .await
        .map_err(|source| StartError::Connect {
            url: crate::db::redacted_url(url),
            timeout,
            hint: if url.starts_with("sqlite:") && !url.contains("mode=") {
                "; a SQLite file that does not exist yet needs `?mode=rwc` to be created"
            } else {
                ""
            },
            source,
        })
}

/// Applies pending migrations to `db`, the configured database.
pub async fn migrate(settings: &Settings, db: &Db) -> Result<(), StartError> {
    db.migrate()
        .await
        .map_err(|source| schema_error(settings, source))
}

/// A failure to read or migrate the configured database's schema, telling a database with
/// migrations this release does not know (a newer release's) from any other failure.
fn schema_error(settings: &Settings, source: sea_orm::DbErr) -> StartError {
    if crate::db::unknown_migration(&source) {
        StartError::UnknownMigrations {
            url: crate::db::redacted_url(&settings.database_url),
            source,
        }
    } else {
        StartError::Migrations {
            url: crate::db::redacted_url(&settings.database_url),
            source,
        }
    }
}

/// What a [`Service`] is started for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A server: migrates, signs tokens, and bounds its database work by the request timeout.
    Serve,
    /// A command-line tool.
    Command,
}

impl Service {
    /// Connects, migrates, and loads the signing keys: the configured secret, or the Ed25519
    /// keys in the database (creating the first one).
    pub async fn start(settings: &Settings) -> Result<Self, StartError> {
        Self::start_with(settings, Purpose::Serve).await
    }

    /// [`Self::start`] for the user and keys commands: a database holding an older release's
    /// schema is refused, not upgraded behind the servers running on it; an empty one gets
    /// the schema, said in the log (a mistyped SQLite path shows there).
    pub async fn open(settings: &Settings) -> Result<Self, StartError> {
        Self::start_with(settings, Purpose::Command).await
    }

    async fn start_with(settings: &Settings, purpose: Purpose) -> Result<Self, StartError> {
        if let Some(secret) = &settings.jwt_secret
            && secret.len() < tokens::MIN_SECRET_BYTES
        {
            return Err(StartError::ShortSecret { got: secret.len() });
        }
        let serving = purpose == Purpose::Serve;
        // A server's database work stops when its request does: a statement or a wait for a
        // connection that outlived the request would hold a connection nobody waits for.
        let timeout = if serving {
            settings.db_timeout.min(settings.request_timeout)
        } else {
            settings.db_timeout
        };
        let db = connect(settings, settings.db_max_connections, timeout).await?;
        let url = crate::db::redacted_url(&settings.database_url);
        // A server migrates; a command refuses an older schema rather than upgrade it behind
        // the servers running on it.
        let pending = if serving {
            0
        } else {
            db.pending_migrations()
                .await
                .map_err(|source| schema_error(settings, source))?
        };
        if pending == crate::db::Db::known_migrations() {
            tracing::warn!(
                database = url.as_str(),
                "the database has no rollcall schema yet: creating it"
            );
        } else if pending > 0 {
            return Err(StartError::NotMigrated { url, pending });
        }
        if serving || pending > 0 {
            self::migrate(settings, &db).await?;
        }
        let tokens = match &settings.jwt_secret {
            Some(secret) => TokenKeys::new(secret.as_bytes(), settings.access_ttl)?,
            None => {
                let now = chrono::Utc::now();
                let first = tokens::new_signing_key(now)?;
                signing_keys::ensure_current(&db, || first).await?;
                let stored = signing_keys::all(db.writer()).await?;
                let keys = TokenKeys::ed25519(&stored, settings.access_ttl)?;
                // Servers only: the command-line tools sign nothing.
                if serving {
                    record_horizon(&db, &keys, &stored).await?;
                }
                keys
            }
        };
        let concurrency = settings
            .hash_concurrency
            .unwrap_or_else(Passwords::default_concurrency);
        let metrics = Metrics::default();
        let passwords = Passwords::with_metrics(concurrency, metrics.clone())?;
        let service = Self(Arc::new(Inner {
            db,
            passwords,
            tokens,
            registration_open: settings.registration == Registration::Open,
            demo: settings.demo,
            refresh_ttl: settings.refresh_ttl,
            session_max_age: settings.session_max_age,
            session_idle: settings.session_idle,
            refresh_reuse_grace: settings.refresh_reuse_grace,
            step_up_window: settings.step_up_window,
            audit_retention: settings.audit_retention,
            throttle: throttle::Policy {
                after: settings.throttle_after,
                max_wait: settings.throttle_max,
            },
            ip_limiter: IpLimiter::new(settings.ip_rate_limit),
            metrics,
            started: Instant::now(),
            key_reloads: tokio::sync::Mutex::new(KeyReloads::default()),
            background: std::sync::atomic::AtomicBool::new(false),
            purpose,
        }));
        Ok(service)
    }

    /// Starts, once, the clean-up and key reloading that a serving instance runs for as long
    /// as it lives; building the HTTP router does. CLI commands do not: they would clean up
    /// with their own settings (session limits, token lifetimes), which may not be the servers'.
    pub fn run_in_background(&self) {
        if self
            .0
            .background
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        tokio::spawn(housekeeping(Arc::downgrade(&self.0)));
        if self.0.tokens.uses_stored_keys() {
            tokio::spawn(reload_keys(Arc::downgrade(&self.0)));
        }
    }

    /// Makes a new signing key current and retires the current one, which keeps verifying
    /// the tokens it signed until they have expired; with `revoke`, deletes every earlier key
    /// instead, for one that may have leaked. Returns the new key's kid. Other instances pick
    /// the change up when they next reload their keys.
    pub async fn rotate_signing_key(&self, revoke: bool) -> AppResult<String> {
        if !self.0.tokens.uses_stored_keys() {
            return Err(AppError::Forbidden(
                "ROLLCALL_JWT_SECRET is set: tokens are signed with it, not with stored keys",
            ));
        }
        let now = chrono::Utc::now();
        let key = tokens::new_signing_key(now)?;
        let kid = key.kid.clone();
        let action = if revoke {
            AuditAction::SigningKeysRevoked
        } else {
            AuditAction::SigningKeyRotated
        };
        let entry = NewEntry::new(action, None, None);
        signing_keys::rotate(&self.0.db, key, now, entry, revoke).await?;
        let mut reloads = self.0.key_reloads.lock().await;
        let began = Instant::now();
        load_keys(&self.0).await?;
        reloads.tried = Some(began);
        reloads.read = Some(began);
        Ok(kid)
    }

    /// The public keys that verify access tokens now, as a JWK set (empty with a secret).
    /// Read from the database again first when no reload was tried for a second and none is
    /// running: a verifier that meets a new kid fetches the set from whichever instance its
    /// request reaches, which may not have reloaded since another rotated the key. It waits
    /// for that at most [`KEY_RELOAD_TIMEOUT`]; a reload that fails leaves the set as it was.
    pub async fn jwks(&self) -> serde_json::Value {
        if self.0.tokens.uses_stored_keys()
            && let Ok(mut reloads) = self.0.key_reloads.try_lock()
            && reloads
                .tried
                .is_none_or(|tried| tried.elapsed() >= ON_DEMAND_RELOAD_GAP)
        {
            reload(&self.0, &mut reloads).await;
        }
        self.0.tokens.jwks()
    }

    /// Reloads the signing keys for a request that met a kid this instance does not hold (a
    /// key another instance has just rotated in, or a forgery): unless a reload that began
    /// after it asked has read the keys through, it waits for one, at most once a second and
    /// for at most [`ON_DEMAND_WAIT`] in all.
    pub(super) async fn reload_keys_on_demand(&self) {
        if !self.0.tokens.uses_stored_keys() {
            return;
        }
        let asked = Instant::now();
        let waited = tokio::time::timeout(ON_DEMAND_WAIT, async {
            let mut reloads = self.0.key_reloads.lock().await;
            if reloads.read.is_some_and(|began| began >= asked) {
                return;
            }
            let since = reloads.tried.map(|tried| tried.elapsed());
            if let Some(rest) = since.and_then(|since| ON_DEMAND_RELOAD_GAP.checked_sub(since)) {
                tokio::time::sleep(rest).await;
            }
            reload(&self.0, &mut reloads).await;
        })
        .await;
        if waited.is_err() {
            tracing::warn!(?ON_DEMAND_WAIT, "gave up waiting for the signing keys");
        }
    }

    /// How often the signing keys are reloaded from the database.
    pub fn key_reload_every(&self) -> Duration {
        self.0.tokens.reload_every()
    }

    /// The kid new access tokens are signed with; `None` with a secret.
    pub fn current_kid(&self) -> Option<String> {
        self.0.tokens.current_kid()
    }

    /// Counts a credential attempt (login, register, refreshToken, a checked `currentPassword`,
    /// a step-up verification, confirmTotp, a standard user's new username) against the
    /// client's IP bucket, before it runs.
    /// `None` (no HTTP client: the command line, embedders) is not limited.
    fn limit_ip(&self, ip: Option<IpAddr>) -> AppResult<()> {
        match ip.map(|ip| self.0.ip_limiter.check(ip)) {
            Some(Err(wait)) => Err(self.throttled(
                "ip",
                "Too many attempts from this address; try again later",
                wait,
            )),
            _ => Ok(()),
        }
    }

    pub fn db(&self) -> &Db {
        &self.0.db
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Password hashes waiting for a thread.
    pub fn hash_queue_len(&self) -> usize {
        self.0.passwords.queue_len()
    }

    /// RATE_LIMITED from throttle `kind`, counted.
    fn throttled(&self, kind: &'static str, message: &'static str, wait: Duration) -> AppError {
        self.0.metrics.throttled(kind);
        AppError::rate_limited(message, wait)
    }

    /// Whether `register` is taken now: registration is open and the server is not in demo
    /// mode.
    pub fn accepts_registrations(&self) -> bool {
        self.0.registration_open && !self.0.demo
    }

    pub fn demo(&self) -> bool {
        self.0.demo
    }

    pub fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }

    /// Refuses changes in demo mode.
    fn writable(&self) -> AppResult<()> {
        if self.0.demo {
            Err(AppError::Forbidden(
                "This server runs in read-only demo mode",
            ))
        } else {
            Ok(())
        }
    }
}

/// Periodic clean-up for as long as the service lives: forgotten throttle rows, idle IP
/// buckets, spent refresh tokens and ended sessions, and audit entries past their retention.
async fn housekeeping(service: Weak<Inner>) {
    let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = service.upgrade() else {
            return;
        };
        inner.ip_limiter.forget_idle();
        if let Err(err) = throttle::purge(inner.db.writer(), PURGE_BATCH).await {
            tracing::warn!(error = %err, "purging old credential failures");
        }
        // Held for this round only, so the service can still end between rounds.
        let service = Service(inner);
        if let Err(err) = service.purge_api_tokens(PURGE_BATCH).await {
            tracing::warn!(error = %chain(&err), "purging expired API tokens");
        }
        match service.purge_sessions(PURGE_BATCH).await {
            Ok(purged) => tracing::debug!(?purged, "purged refresh tokens and sessions"),
            Err(err) => {
                tracing::warn!(error = %chain(&err), "purging refresh tokens and sessions")
            }
        }
        match service.purge_audit(PURGE_BATCH).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "deleted audit entries past their retention"),
            Err(err) => tracing::warn!(error = %chain(&err), "purging old audit entries"),
        }
    }
}

/// Reloads the signing keys for as long as the service lives, so a key rotated by another
/// instance or by `rollcall keys rotate` is used here within [`TokenKeys::reload_every`].
async fn reload_keys(service: Weak<Inner>) {
    let Some(every) = service.upgrade().map(|inner| inner.tokens.reload_every()) else {
        return;
    };
    let mut every = tokio::time::interval(every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(inner) = service.upgrade() else {
            return;
        };
        let expired = reload(&inner, &mut *inner.key_reloads.lock().await).await;
        // After the keys are in use and the lock is free: a slow delete holds up nothing.
        match signing_keys::delete(inner.db.writer(), expired, chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted signing keys past their last token"),
            Err(err) => tracing::warn!(error = %err, "deleting old signing keys"),
        }
    }
}

/// [`load_keys`] under `reloads` (the caller holds its lock), given up after
/// [`KEY_RELOAD_TIMEOUT`]; a failure is logged and the keys held stay. Returns the kids of the
/// keys past their last token.
async fn reload(inner: &Inner, reloads: &mut KeyReloads) -> Vec<String> {
    let began = Instant::now();
    reloads.tried = Some(began);
    match tokio::time::timeout(KEY_RELOAD_TIMEOUT, load_keys(inner)).await {
        Ok(Ok(expired)) => {
            reloads.read = Some(began);
            expired
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %chain(&err), "reloading the signing keys");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(?KEY_RELOAD_TIMEOUT, "reloading the signing keys timed out");
            Vec::new()
        }
    }
}

/// Records on the current key of `stored` how long the tokens `keys` sign with it may live
/// until two more reloads have passed, each up to [`KEY_RELOAD_TIMEOUT`] late; done before
/// signing with it, at start-up, and at a reload that finds less recorded than the next one
/// needs (so about every other reload writes).
async fn record_horizon(
    db: &Db,
    keys: &TokenKeys,
    stored: &[crate::db::entities::signing_key::Model],
) -> AppResult<()> {
    let Some(current) = tokens::current_key(stored) else {
        return Ok(());
    };
    let now = chrono::Utc::now();
    if current
        .signs_until
        .is_some_and(|recorded| recorded >= keys.signs_until(now, 1, KEY_RELOAD_TIMEOUT))
    {
        return Ok(());
    }
    let until = keys.signs_until(now, 2, KEY_RELOAD_TIMEOUT);
    signing_keys::extend_horizon(db.writer(), &current.kid, until).await?;
    Ok(())
}

/// Puts the signing keys that still verify tokens in use; returns the kids of the others.
async fn load_keys(inner: &Inner) -> AppResult<Vec<String>> {
    let mut keys = signing_keys::all(inner.db.conn()).await?;
    let now = chrono::Utc::now();
    let (expired, live): (Vec<_>, Vec<_>) = keys.drain(..).partition(|key| {
        inner
            .tokens
            .verifies_until(key)
            .is_some_and(|until| until <= now)
    });
    // A failed write leaves the keys to be read all the same: an instance that missed a
    // rotation would refuse the new key's tokens. What was recorded at the last write still
    // covers the next reload.
    if inner.purpose == Purpose::Serve
        && let Err(err) = record_horizon(&inner.db, &inner.tokens, &live).await
    {
        tracing::warn!(error = %chain(&err), "recording how long this instance's tokens live");
    }
    inner.tokens.reload(&live)?;
    Ok(expired.into_iter().map(|key| key.kid).collect())
}
