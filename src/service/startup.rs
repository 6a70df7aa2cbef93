//! Starting a service: the database connected and migrated (or, for a command, checked), the
//! signing keys loaded, and start-up failures worded for the operator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::keys::{KeyReloads, record_horizon};
use super::{Inner, Service};
use crate::auth::{IpLimiter, Passwords, TokenKeys, tokens};
use crate::config::{Registration, Settings};
use crate::db::{Db, signing_keys, throttle};
use crate::error::AppError;
use crate::metrics::Metrics;

/// What a command or a starting server says of a database that stayed busy past its timeout.
pub const BUSY: &str = "the database did not answer within ROLLCALL_DB_TIMEOUT (on SQLite: \
    another process, a server's write or an import, held its write lock meanwhile); try again \
    once it is free, or raise ROLLCALL_DB_TIMEOUT";

/// A start-up failure, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("ROLLCALL_JWT_SECRET must be at least {min} bytes long, spaces around it aside (got {got}); generate one with `openssl rand -base64 48`", min = tokens::MIN_SECRET_BYTES)]
    ShortSecret { got: usize },
    #[error("cannot open the database {url}{waited}{hint}")]
    Connect {
        /// The URL without its password.
        url: String,
        /// How long it was waited for, when the failure was the wait running out: a database
        /// that refuses (it does not exist, takes no connections) fails at once.
        waited: String,
        hint: &'static str,
        source: sea_orm::DbErr,
    },
    #[error(
        "the database {url} lacks {pending} of this release's migrations: stop the servers of \
         the older release on it, then run `rollcall migrate` (or start this release's server)"
    )]
    NotMigrated { url: String, pending: usize },
    #[error(
        "the database {url} holds other tables ({tables}) but no rollcall schema: check DATABASE_URL; \
         if it is the database meant for rollcall, `rollcall migrate` adds the schema to it"
    )]
    ForeignDatabase { url: String, tables: i64 },
    #[error(
        "the database {url} holds rollcall's tables, but this role may not read which \
         migrations it has (the table `seaql_migrations`): grant it SELECT on that table too"
    )]
    MigrationsUnreadable { url: String },
    #[error(
        "this process may not read and write {path}: SQLite would refuse the database, or \
         open it read-only so that every login, registration and change would fail; give the \
         user it runs as read and write access to the database file and its -wal and -shm \
         files, and write access to their directory (a file made by a command run as another \
         user, root among them, is that user's alone)"
    )]
    ReadOnlyFile { path: String },
    #[error(
        "the database {url} holds migrations this release does not know, applied by a newer \
         release or another build: run the release that applied them, or restore the backup \
         taken before it ran (or, if it is another application's database, check DATABASE_URL)"
    )]
    UnknownMigrations { url: String, source: sea_orm::DbErr },
    #[error(
        "the database {url} has no rollcall schema, so nothing to act on: check DATABASE_URL \
         (`rollcall migrate` or a server creates the schema)"
    )]
    NoSchema { url: String },
    #[error("{0}")]
    BadDatabaseUrl(std::borrow::Cow<'static, str>),
    #[error("cannot read or apply the migrations of the database {url}{hint}")]
    Migrations {
        url: String,
        hint: &'static str,
        source: sea_orm::DbErr,
    },
    #[error("{BUSY}")]
    Busy(#[source] sea_orm::DbErr),
    #[error("database error")]
    Database(#[source] sea_orm::DbErr),
    #[error("{0}")]
    Other(#[from] AppError),
}

impl From<sea_orm::DbErr> for StartError {
    fn from(err: sea_orm::DbErr) -> Self {
        if crate::db::statement_timed_out(&err) {
            StartError::Busy(err)
        } else {
            StartError::Database(err)
        }
    }
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
    // Judged before the file is opened, which fails with SQLite's own words ("unable to open
    // database file") where it may not be read or made, or makes it read-only; and again once
    // a file not there before is made.
    #[cfg(unix)]
    let unwritable = || {
        crate::db::sqlite_unwritable(url).map(|path| StartError::ReadOnlyFile {
            path: path.display().to_string(),
        })
    };
    #[cfg(unix)]
    if let Some(refusal) = unwritable() {
        return Err(refusal);
    }
    #[cfg(unix)]
    let made_here = crate::db::sqlite_file_missing(url);
    let started = Instant::now();
    let db = Db::connect(url, max_connections, timeout)
        .await
        .map_err(|source| {
            let waited_out = started.elapsed() >= timeout;
            StartError::Connect {
                url: crate::db::redacted_url(url),
                waited: if waited_out {
                    format!(" (waited {timeout:?}, ROLLCALL_DB_TIMEOUT)")
                } else {
                    String::new()
                },
                hint: if crate::db::sqlite_directory_missing(url)
                    && crate::db::sqlite_cannot_open(&source)
                {
                    "; the directory it would be in does not exist: create it first"
                } else if !url.contains("mode=")
                    && crate::db::sqlite_file_missing(url)
                    && crate::db::sqlite_cannot_open(&source)
                {
                    "; a SQLite file that does not exist yet needs `?mode=rwc` to be created, in \
                     a directory that exists"
                } else if source.to_string().ends_with("cannot be parsed.")
                    && password_may_need_encoding(url)
                {
                    "; if its user name or password holds `@`, `/`, `?` or `#`, percent-encode \
                     them (`%40` for `@`)"
                } else if url.starts_with("sqlite:") && waited_out {
                    "; another process (a server's write, an import) may hold its lock"
                } else {
                    ""
                },
                source,
            }
        })?;
    #[cfg(unix)]
    if made_here && let Some(refusal) = unwritable() {
        return Err(refusal);
    }
    Ok(db)
}

/// Whether a URL that does not parse may hold a user name and password with a character that
/// must be percent-encoded there: the likeliest reason, though where its user part ends cannot
/// be told for sure, hence a hint that says "if".
fn password_may_need_encoding(url: &str) -> bool {
    url.split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .is_some_and(|(user_info, _)| user_info.contains(['/', '?', '#', '@']))
}

/// Applies pending migrations to `db`, the configured database; answers how many.
pub async fn migrate(settings: &Settings, db: &Db) -> Result<usize, StartError> {
    db.migrate()
        .await
        .map_err(|source| schema_error(settings, source))
}

/// A failure to read or migrate the configured database's schema, telling a database with
/// migrations this release does not know (a newer release's) from any other failure.
fn schema_error(settings: &Settings, source: sea_orm::DbErr) -> StartError {
    if crate::db::statement_timed_out(&source) {
        return StartError::Busy(source);
    }
    if crate::db::unknown_migration(&source) {
        StartError::UnknownMigrations {
            url: crate::db::redacted_url(&settings.database_url),
            source,
        }
    } else {
        StartError::Migrations {
            url: crate::db::redacted_url(&settings.database_url),
            hint: if crate::db::lacks_privilege(&source) {
                " (applying them needs a role that may create tables and owns rollcall's: run \
                 `rollcall migrate` as the database's owner, or as the role a restore gave the \
                 tables to (`pg_restore --no-owner` run as a superuser gives them to that \
                 superuser), then serve with this one)"
            } else {
                ""
            },
            source,
        }
    }
}

/// What a [`Service`] is started for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A server: migrates, signs tokens, and bounds its database work by the request timeout.
    Serve,
    /// A command-line tool that may start a database (`user create`, `user import`).
    Command,
    /// A command-line tool acting on what the database holds (`keys rotate`, `user
    /// promote-owner`, `user reset-totp`): a database without the schema is a mistyped
    /// DATABASE_URL, refused rather than given the schema (a rotation would otherwise
    /// report success on a new, unused database).
    Existing,
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

    /// [`Self::open`] for the commands that act on what the database holds: one without the
    /// schema is refused, not given it.
    pub async fn open_existing(settings: &Settings) -> Result<Self, StartError> {
        Self::start_with(settings, Purpose::Existing).await
    }

    async fn start_with(settings: &Settings, purpose: Purpose) -> Result<Self, StartError> {
        // Without the spaces and line breaks around it: a secret read from a file (a
        // Kubernetes secret, `$(cat …)` aside) often ends in a newline that another instance's
        // copy, or another program's, lacks. Blank counts as unset, as templates leave it: the
        // default Ed25519 keys, not a secret of spaces anyone could guess.
        let jwt_secret = settings
            .jwt_secret
            .as_deref()
            .map(|secret| secret.trim_matches(|c: char| c.is_ascii_whitespace()))
            .filter(|secret| !secret.is_empty());
        if jwt_secret.is_none() && settings.jwt_secret.is_some() {
            tracing::warn!("ROLLCALL_JWT_SECRET is blank: signing with the default Ed25519 keys");
        }
        if let Some(secret) = jwt_secret
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
        // Refused before it is opened: opening would create the file.
        if purpose == Purpose::Existing
            && crate::db::url_problem(&settings.database_url).is_none()
            && crate::db::sqlite_file_missing(&settings.database_url)
        {
            let url = crate::db::redacted_url(&settings.database_url);
            return Err(StartError::NoSchema { url });
        }
        let db = connect(settings, settings.db_max_connections, timeout).await?;
        let url = crate::db::redacted_url(&settings.database_url);
        // A server migrates; a command refuses an older schema rather than upgrade it behind
        // the servers running on it. Nothing pending, neither runs the migrator, which needs
        // the right to create tables: servers may use a role that only reads and writes rows.
        // Tables counted before the migrations are read: tables that another instance starting
        // beside this one has just made are then read with the migrations that made them.
        let tables = db
            .table_count()
            .await
            .map_err(|source| schema_error(settings, source))?;
        let pending = match db.pending_migrations().await {
            Ok(pending) => pending,
            // The table is visible (the role may write it) but not readable: no migration is
            // needed, only the right to read which ones were applied.
            Err(source)
                if crate::db::lacks_privilege(&source)
                    && db.migrations_unreadable().await.unwrap_or(false) =>
            {
                return Err(StartError::MigrationsUnreadable { url });
            }
            Err(source) => return Err(schema_error(settings, source)),
        };
        let fresh = pending == crate::db::Db::known_migrations();
        // Tables but none of ours: most likely a mistyped DATABASE_URL pointing at another
        // application's database, which neither a server nor a command adds to unasked.
        if fresh && tables > 0 {
            let unreadable = db
                .migrations_unreadable()
                .await
                .map_err(|source| schema_error(settings, source))?;
            return Err(if unreadable {
                StartError::MigrationsUnreadable { url }
            } else {
                StartError::ForeignDatabase { url, tables }
            });
        }
        if !serving {
            if fresh {
                if purpose == Purpose::Existing {
                    return Err(StartError::NoSchema { url });
                }
                tracing::warn!(
                    database = url.as_str(),
                    "the database has no rollcall schema yet: creating it"
                );
            } else if pending > 0 {
                return Err(StartError::NotMigrated { url, pending });
            } else {
                // Said, since a misspelt setting would leave a command on the default database.
                tracing::info!(database = url.as_str(), "using the database");
            }
        }
        if pending > 0 {
            self::migrate(settings, &db).await?;
        }
        if serving && !db.has_search_index().await? {
            tracing::warn!(
                "the search index is missing (the role that migrated could not create the \
                 pg_trgm extension): searching users scans the table; see the README's Design \
                 notes, Search, to add it"
            );
        }
        if serving && !db.folds_case().await? {
            tracing::warn!(
                "the database's locale lower-cases only ASCII letters: searching names does \
                 not find capital letters beyond ASCII (Ä, П), even typed as stored; create it \
                 with a UTF-8 locale (LC_CTYPE C.UTF-8 or en_US.UTF-8) or an ICU one"
            );
        }
        let tokens = match jwt_secret {
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
        let metrics = Metrics {
            db_statements: db.statement_counter(),
            ..Metrics::default()
        };
        let passwords = Passwords::with_metrics(concurrency, metrics.clone())?;
        let service = Self(Arc::new(Inner {
            db,
            passwords,
            tokens,
            registration_open: settings.registration == Registration::Open,
            demo: settings.demo,
            totp_issuer: settings.totp_issuer.clone(),
            refresh_ttl: settings.refresh_ttl,
            session_max_age: settings.session_max_age,
            // Past its refresh token's lifetime a session cannot go on: that is its idle limit
            // too when shorter.
            session_idle: settings.session_idle.min(settings.refresh_ttl),
            refresh_reuse_grace: settings.refresh_reuse_grace,
            step_up_window: settings.step_up_window,
            audit_retention: settings.audit_retention,
            throttle: throttle::Policy {
                after: settings.throttle_after,
                first_wait: settings.throttle_wait,
                max_wait: settings.throttle_max,
            },
            ip_limiter: IpLimiter::new(settings.ip_rate_limit),
            metrics,
            started: Instant::now(),
            key_reloads: tokio::sync::Mutex::new(KeyReloads::default()),
            background: std::sync::atomic::AtomicBool::new(false),
            purpose,
            touching: std::sync::Mutex::default(),
        }));
        Ok(service)
    }
}
