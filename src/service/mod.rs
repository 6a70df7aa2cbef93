//! The service layer: every rule about users, roles and tokens lives here, called by both the
//! GraphQL resolvers and the command line.

mod accounts;
mod api_tokens;
mod audit;
mod keys;
pub mod rules;
mod sessions;
mod startup;
mod step_up;
mod totp;
mod users;
pub mod validation;

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::auth::{IpLimiter, Passwords, TokenKeys};
use crate::db::audit::NewEntry;
use crate::db::entities::user::Model as User;
use crate::db::{Db, throttle};
use crate::error::{AppError, AppResult, chain};
use crate::metrics::Metrics;
use keys::{KeyReloads, reload_keys};
use startup::Purpose;

pub use crate::db::audit::{Action as AuditAction, Filter as AuditFilter};
pub use crate::db::sessions::{Origin, Purged};
pub use crate::db::users::Page;
pub use accounts::AuthSession;
pub use audit::AuditPage;
pub use sessions::SessionInfo;
pub use startup::{BUSY, StartError, connect, migrate};
pub use step_up::Verification;
pub use totp::TotpSetup;
pub use users::{ImportedUser, NewUser, Promotion, UserChanges, UserRef};
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
    totp_issuer: String,
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
    /// API tokens whose use is being recorded ([`Service::touch_in_background`]).
    touching: std::sync::Mutex<std::collections::HashSet<uuid::Uuid>>,
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
        NewEntry::new(action, Some((self.user.id, self.user.role)), self.ip)
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
            // Hashed: what was typed as a login is at times a password, and the row outlives
            // the attempt by a day, in every backup taken meanwhile.
            Subject::Login(login) => format!("login:{}", crate::auth::sha256_hex(login)),
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

impl Service {
    /// Starts, once, the clean-up and key reloading that a serving instance runs for as long
    /// as it lives; `server::serve` does. CLI commands do not: they would clean up
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

    pub fn hash_queue_capacity(&self) -> usize {
        self.0.passwords.queue_capacity()
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
            tracing::warn!(error = %chain(&err), "purging old credential failures");
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
