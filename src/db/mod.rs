//! Database access: connecting, migrating, and the queries the service layer composes.

pub mod entities;
mod pinned;
mod rows;
mod session_checks;
pub mod sessions;
pub mod users;

pub(crate) use rows::UserColumns;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteError, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction,
    DbErr, EntityTrait, FromQueryResult, QuerySelect, QueryTrait, RuntimeErr, Select, SqlErr,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};

pub use entities::user::Role;

/// How long a request waits for a pooled connection (or, on SQLite, for the write lock)
/// before it fails instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// PostgreSQL advisory lock key that serialises migrations ("rollcall" in ASCII).
const MIGRATION_LOCK: i64 = 0x726f_6c6c_6361_6c6c;

/// The pool plus a count of every statement it ran: the count lets tests prove that a query's
/// cost does not grow with the size of the page.
#[derive(Clone)]
pub struct Db {
    pub conn: DatabaseConnection,
    statements: Arc<AtomicU64>,
    /// PostgreSQL only: connections for hot reads that skip the pool's release ping.
    pinned: Option<Arc<pinned::PinnedReads>>,
    /// PostgreSQL only: the per-request session check, coalesced across requests.
    session_checks: Option<Arc<session_checks::SessionChecks>>,
}

impl Db {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, DbErr> {
        let mut options = ConnectOptions::new(url);
        options
            .max_connections(max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_timeout(ACQUIRE_TIMEOUT)
            .sqlx_logging(false)
            // Pinging on every checkout would double the round trips of a one-query request;
            // only connections idle long enough to have been dropped are checked.
            .test_before_acquire_if_idle_for(Duration::from_secs(30))
            // The pool serves what the pinned reads do not, text searches among them, whose
            // best plan depends on the pattern: PostgreSQL must not settle on a generic plan.
            .map_sqlx_postgres_opts(|opts| opts.options([("plan_cache_mode", "force_custom_plan")]))
            .map_sqlx_sqlite_opts(|opts| {
                // WAL lets readers run beside the single writer; the busy timeout makes a second
                // writer wait for the lock instead of failing with "database is locked".
                opts.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(ACQUIRE_TIMEOUT)
                    .foreign_keys(true)
            });
        let mut conn = open(options).await?;
        let statements = Arc::new(AtomicU64::new(0));
        let counter = statements.clone();
        conn.set_metric_callback(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let (pinned, session_checks) = match conn.get_database_backend() {
            DatabaseBackend::Postgres => {
                let reads = pinned::PinnedReads::new(url, max_connections)?;
                let checks = session_checks::SessionChecks::connect(url, statements.clone())?;
                (Some(Arc::new(reads)), Some(Arc::new(checks)))
            }
            _ => (None, None),
        };
        Ok(Self {
            conn,
            statements,
            pinned,
            session_checks,
        })
    }

    /// Runs a read outside any transaction, on the cheapest connection available.
    pub async fn all<E: EntityTrait>(&self, select: Select<E>) -> Result<Vec<E::Model>, DbErr>
    where
        E::Model: rows::FromPgRows,
    {
        self.all_statement(select.build(self.backend()), false)
            .await
    }

    /// [`Self::all`] for a statement written out rather than built from an entity. With
    /// `planned_per_call`, PostgreSQL plans it for the values of each call (on the pool's
    /// connections) instead of once: for text searches, whose best plan depends on the
    /// pattern.
    pub async fn all_statement<M: FromQueryResult + rows::FromPgRows>(
        &self,
        statement: Statement,
        planned_per_call: bool,
    ) -> Result<Vec<M>, DbErr> {
        match &self.pinned {
            Some(pinned) if !planned_per_call => {
                self.statements.fetch_add(1, Ordering::Relaxed);
                pinned.all(&statement).await
            }
            _ => M::find_by_statement(statement).all(&self.conn).await,
        }
    }

    /// Runs a statement written for PostgreSQL on a pinned connection, outside any
    /// transaction; `None` on other databases, where the caller takes its portable path.
    pub(crate) async fn pinned_fetch<'q, A>(
        &self,
        query: sea_orm::sqlx::query::Query<'q, sea_orm::sqlx::Postgres, A>,
    ) -> Option<Result<Vec<sea_orm::sqlx::postgres::PgRow>, DbErr>>
    where
        A: 'q + Send + sea_orm::sqlx::IntoArguments<sea_orm::sqlx::Postgres>,
    {
        let pinned = self.pinned.as_ref()?;
        self.statements.fetch_add(1, Ordering::Relaxed);
        Some(pinned.fetch(query).await)
    }

    /// The first row of a read; callers put a `LIMIT 1` or a unique key in the query.
    pub async fn one<E: EntityTrait>(&self, select: Select<E>) -> Result<Option<E::Model>, DbErr>
    where
        E::Model: rows::FromPgRows,
    {
        Ok(self.all(select.limit(1)).await?.into_iter().next())
    }

    /// The coalescing session check, where the database has one (PostgreSQL).
    pub(crate) fn session_checks(&self) -> Option<&Arc<session_checks::SessionChecks>> {
        self.session_checks.as_ref()
    }

    /// Applies pending migrations. Instances started together on one database take turns:
    /// the whole run is one write transaction (on PostgreSQL behind an advisory lock, on
    /// SQLite holding the write lock), so the next one finds nothing left to do instead of
    /// failing on a table the first has just created. A failed run leaves nothing behind.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        let tx = self.begin_write().await?;
        if self.backend() == DatabaseBackend::Postgres {
            tx.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
                .await?;
        }
        Migrator::up(&tx, None).await?;
        tx.commit().await
    }

    /// Statements executed since start-up.
    pub fn statement_count(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    pub fn backend(&self) -> DatabaseBackend {
        self.conn.get_database_backend()
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend() {
            DatabaseBackend::Postgres => "postgresql",
            DatabaseBackend::Sqlite => "sqlite",
            _ => "other",
        }
    }

    /// A transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so two writers queue on the busy timeout rather than one failing
    /// when it upgrades a read lock.
    pub async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        self.conn
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
    }

    pub async fn ping(&self) -> Result<(), DbErr> {
        self.conn.ping().await
    }
}

/// Which unique index a failed write ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueViolation {
    Username,
    Email,
    Owner,
    Other,
}

/// Opens the pool. Instances starting together on a new SQLite file all switch it to WAL as
/// they connect, and SQLite answers the losers of that race "database is locked" at once,
/// without waiting out the busy timeout; the switch is over within milliseconds, so a
/// connection refused that way is tried again until the acquire timeout.
async fn open(options: ConnectOptions) -> Result<DatabaseConnection, DbErr> {
    let deadline = Instant::now() + ACQUIRE_TIMEOUT;
    loop {
        match sea_orm::Database::connect(options.clone()).await {
            Err(err) if sqlite_busy(&err) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            result => return result,
        }
    }
}

/// SQLITE_BUSY or SQLITE_LOCKED, extended codes included.
fn sqlite_busy(err: &DbErr) -> bool {
    let (DbErr::Conn(RuntimeErr::SqlxError(err))
    | DbErr::Exec(RuntimeErr::SqlxError(err))
    | DbErr::Query(RuntimeErr::SqlxError(err))) = err
    else {
        return false;
    };
    err.as_database_error()
        .filter(|db| db.try_downcast_ref::<SqliteError>().is_some())
        .and_then(|db| db.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// Classifies a unique-constraint failure. PostgreSQL names the index, SQLite the columns;
/// the index names were chosen to contain their column names so one check fits both.
pub fn unique_violation(err: &DbErr) -> Option<UniqueViolation> {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(message)) => Some(if message.contains("username") {
            UniqueViolation::Username
        } else if message.contains("email") {
            UniqueViolation::Email
        } else if message.contains("one_owner") || message.contains("users.role") {
            UniqueViolation::Owner
        } else {
            UniqueViolation::Other
        }),
        _ => None,
    }
}

/// The current time at the precision both databases store (microseconds), so values read
/// back compare equal to the ones written, which keyset cursors rely on.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectOptions, DbErr, SqliteTransactionMode, TransactionOptions};
    use sea_orm::{Database, TransactionTrait};

    use super::sqlite_busy;

    /// The retry at start-up hinges on telling SQLite's "database is locked" from every other
    /// failure.
    #[tokio::test]
    async fn tells_sqlite_busy_from_other_errors() {
        let path = std::env::temp_dir().join(format!("rollcall-busy-{}.db", std::process::id()));
        let mut options = ConnectOptions::new(format!("sqlite://{}?mode=rwc", path.display()));
        options
            .max_connections(1)
            .map_sqlx_sqlite_opts(|opts| opts.busy_timeout(std::time::Duration::ZERO));
        let immediate = || TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        let holder = Database::connect(options.clone()).await.expect("first");
        let other = Database::connect(options).await.expect("second");
        let writing = holder.begin_with_options(immediate()).await.expect("lock");
        let refused = other
            .begin_with_options(immediate())
            .await
            .expect_err("the write lock is taken");
        assert!(sqlite_busy(&refused), "{refused:?}");
        assert!(!sqlite_busy(&DbErr::Custom("database is locked".into())));
        drop(writing);
        drop((holder, other));
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
