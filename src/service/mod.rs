//! The service layer: every rule about users, roles and tokens lives here, called by both the
//! GraphQL resolvers and the command line.

mod accounts;
pub mod rules;
mod sessions;
mod users;
pub mod validation;

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, EntityTrait};

use crate::auth::{IpLimiter, Passwords, TokenKeys, tokens};
use crate::config::{Registration, Settings};
use crate::db::entities::server_setting;
use crate::db::{Db, throttle};
use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;

pub use crate::db::sessions::{Origin, Purged};
pub use crate::db::users::Page;
pub use accounts::AuthSession;
pub use sessions::SessionInfo;
pub use users::{DEFAULT_PAGE, ImportedUser, MAX_PAGE, NewUser, UserChanges, UserRef};

const JWT_SECRET_SETTING: &str = "jwt_secret";

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
    throttle: throttle::Policy,
    ip_limiter: IpLimiter,
    metrics: Metrics,
    started: Instant,
}

/// Whose failed password checks an attempt counts towards.
pub(crate) enum Subject {
    User(uuid::Uuid),
    /// A login that matches no account, normalised; throttled like an account so the throttle
    /// does not tell which logins exist.
    Login(String),
}

impl Subject {
    fn key(&self) -> String {
        match self {
            Subject::User(id) => format!("user:{id}"),
            Subject::Login(login) => format!("login:{login}"),
        }
    }
}

/// How often the throttles forget what no longer matters.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(600);

/// A start-up failure, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("ROLLCALL_JWT_SECRET must be at least {min} bytes long (got {got}); generate one with `openssl rand -base64 48`", min = tokens::MIN_SECRET_BYTES)]
    ShortSecret { got: usize },
    #[error("cannot open the database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("{0}")]
    Other(#[from] AppError),
}

impl Service {
    /// Connects, migrates, and loads (or creates) the signing key.
    pub async fn start(settings: &Settings) -> Result<Self, StartError> {
        if let Some(secret) = &settings.jwt_secret
            && secret.len() < tokens::MIN_SECRET_BYTES
        {
            return Err(StartError::ShortSecret { got: secret.len() });
        }
        let db = Db::connect(
            &settings.database_url,
            settings.db_max_connections,
            settings.db_timeout,
        )
        .await?;
        db.migrate().await?;
        let secret = match &settings.jwt_secret {
            Some(secret) => secret.clone(),
            None => shared_secret(&db).await?,
        };
        let tokens = TokenKeys::new(secret.as_bytes(), settings.access_ttl)?;
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
            throttle: throttle::Policy {
                after: settings.throttle_after,
                max_wait: settings.throttle_max,
            },
            ip_limiter: IpLimiter::new(settings.ip_rate_limit),
            metrics,
            started: Instant::now(),
        }));
        tokio::spawn(housekeeping(Arc::downgrade(&service.0)));
        Ok(service)
    }

    /// Counts a credential attempt (login, register, refreshToken, re-verification) against
    /// the client's IP bucket. `None` (no HTTP client: the command line, embedders) is not
    /// limited.
    pub fn limit_ip(&self, ip: Option<IpAddr>) -> AppResult<()> {
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

    pub fn registration_open(&self) -> bool {
        self.0.registration_open
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
/// buckets, and spent refresh tokens and ended sessions.
async fn housekeeping(service: Weak<Inner>) {
    let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = service.upgrade() else {
            return;
        };
        inner.ip_limiter.forget_idle();
        if let Err(err) = throttle::purge(inner.db.writer()).await {
            tracing::warn!(error = %err, "purging old credential failures");
        }
        // Held for this round only, so the service can still end between rounds.
        let service = Service(inner);
        match service.purge_sessions().await {
            Ok(purged) => tracing::debug!(?purged, "purged refresh tokens and sessions"),
            Err(err) => tracing::warn!(error = %err, "purging refresh tokens and sessions"),
        }
    }
}

/// The generated signing key all instances on this database share: the first instance to
/// start inserts one, everyone (including that instance) then reads whichever won.
async fn shared_secret(db: &Db) -> AppResult<String> {
    server_setting::Entity::insert(server_setting::ActiveModel {
        name: Set(JWT_SECRET_SETTING.to_owned()),
        value: Set(tokens::generate_secret()),
    })
    .on_conflict(
        OnConflict::column(server_setting::Column::Name)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db.writer())
    .await?;
    server_setting::Entity::find_by_id(JWT_SECRET_SETTING.to_owned())
        .one(db.writer())
        .await?
        .map(|row| row.value)
        .ok_or_else(|| AppError::internal("signing key missing after insert"))
}

pub use rules::can_see_private;
