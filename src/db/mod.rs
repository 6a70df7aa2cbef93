//! Database access: connecting, migrating, and the queries the service layer composes.

pub mod api_tokens;
pub mod audit;
pub mod entities;
pub mod sessions;
pub mod signing_keys;
pub mod throttle;
pub mod totp;
pub mod users;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use migration::{Migrator, MigratorTrait};
use prometheus_client::metrics::counter::Counter;
use sea_orm::sea_query::Query;
use sea_orm::sqlx::sqlite::{SqliteError, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ColumnTrait, Condition, ConnectOptions, ConnectionTrait, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, QueryFilter, RuntimeErr, SqlErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

pub use entities::user::Role;

/// PostgreSQL advisory lock key that serialises migrations ("rollcall" in ASCII).
pub const MIGRATION_LOCK: i64 = 0x726f_6c6c_6361_6c6c;

/// The connection pools, and a count of every statement they ran: exported as a metric, and
/// the way tests prove what a query costs.
#[derive(Clone)]
pub struct Db {
    conn: DatabaseConnection,
    /// Where writes go. On PostgreSQL the same pool; on SQLite, which has one writer at a time
    /// anyway, a pool of one connection, so writers wait their turn in the pool's queue
    /// instead of many connections sleeping in SQLite's busy handler.
    writer: DatabaseConnection,
    statements: Counter,
    timeout: Duration,
    /// SQLite: the database file as opened, to tell when another took its place.
    file: Option<Arc<OpenedFile>>,
}

/// A file by its configured path and identity. Connections already open keep the file they
/// opened, even once it is deleted or another is moved to its path (a backup restored with
/// `mv`, a symlink pointed elsewhere), and what they write there is lost; new ones open what
/// is at the path now.
#[derive(Debug)]
struct OpenedFile {
    path: std::path::PathBuf,
    identity: (u64, u64),
}

impl OpenedFile {
    /// The file `url` names, as configured: a symlink is followed each time it is looked at.
    fn configured(url: &str) -> Option<Self> {
        let path = sqlite_filename(url)?;
        let identity = identity(&path)?;
        Some(Self { path, identity })
    }
}

#[cfg(unix)]
fn identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|metadata| (metadata.dev(), metadata.ino()))
}

/// Elsewhere the check is off.
#[cfg(not(unix))]
fn identity(_: &std::path::Path) -> Option<(u64, u64)> {
    None
}

impl Db {
    /// Opens the pools. `timeout` bounds the wait for a connection and, on PostgreSQL, every
    /// statement (`statement_timeout`), so a stalled database fails requests instead of
    /// hanging them.
    pub async fn connect(
        url: &str,
        max_connections: Option<u32>,
        timeout: Duration,
    ) -> Result<Self, DbErr> {
        let statements = Counter::default();
        let max_connections = max_connections.unwrap_or_else(|| default_pool_size(url));
        // SeaORM quotes the whole URL, password included, in some of its errors (a URL that
        // does not parse, an unknown scheme); they end up in logs.
        let redact = |err: DbErr| match err.to_string() {
            text if text.contains(url) => {
                // Wrapped again below, which says "Connection Error: " once more.
                let text = text.strip_prefix("Connection Error: ").unwrap_or(&text);
                DbErr::Conn(RuntimeErr::Internal(text.replace(url, "<DATABASE_URL>")))
            }
            _ => err,
        };
        #[cfg(unix)]
        create_sqlite_file_privately(url);
        let conn = open(options(url, max_connections.max(1), timeout), &statements)
            .await
            .map_err(redact)?;
        let (writer, file) = match conn.get_database_backend() {
            DatabaseBackend::Sqlite => {
                let writer = open(options(url, 1, timeout), &statements)
                    .await
                    .map_err(redact)?;
                (writer, OpenedFile::configured(url).map(Arc::new))
            }
            _ => (conn.clone(), None),
        };
        Ok(Self {
            conn,
            writer,
            statements,
            timeout,
            file,
        })
    }

    /// The pool for reads outside a transaction.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// The pool for writes outside a transaction.
    pub fn writer(&self) -> &DatabaseConnection {
        &self.writer
    }

    /// Closes the pools once their connections are back. On SQLite the write-ahead log is
    /// folded into the database file first, so a stopped server's file is whole by itself (a
    /// copy of it alone is a backup): closing the last connection does that only when no other
    /// process has the file open. Whether the file is whole: false when the log could not be
    /// folded (another process is reading or writing).
    pub async fn close(&self) -> Result<bool, DbErr> {
        self.conn.close_by_ref().await?;
        let mut folded = true;
        if self.file.is_some() {
            // busy, pages in the log, pages folded: a whole fold leaves nothing busy or behind.
            // Passive: it waits for nobody, so a command run beside a busy server ends at once.
            let statement = sea_orm::Statement::from_string(
                DatabaseBackend::Sqlite,
                "PRAGMA wal_checkpoint(PASSIVE)",
            );
            folded = self
                .writer
                .query_one_raw(statement)
                .await?
                .is_some_and(|row| {
                    let column = |i| row.try_get_by_index::<i64>(i).ok();
                    column(0) == Some(0) && column(1) == column(2)
                });
        }
        self.writer.close_by_ref().await?;
        Ok(folded)
    }

    /// Applies pending migrations. Instances started together on one database take turns:
    /// the whole run is one write transaction (on PostgreSQL behind an advisory lock, on
    /// SQLite holding the write lock), so the next one finds nothing left to do instead of
    /// failing on a table the first has just created. A failed run leaves nothing behind.
    /// Answers how many this run applied: none when another applied them while it waited.
    pub async fn migrate(&self) -> Result<usize, DbErr> {
        let tx = self.begin_write().await?;
        if self.backend() == DatabaseBackend::Postgres {
            // Building an index on a large table may take longer than a request may.
            tx.execute_unprepared("SET LOCAL statement_timeout = 0")
                .await?;
            let locked = tx
                .query_one_raw(sea_orm::Statement::from_string(
                    DatabaseBackend::Postgres,
                    format!("SELECT pg_try_advisory_xact_lock({MIGRATION_LOCK})"),
                ))
                .await?
                .and_then(|row| row.try_get_by_index::<bool>(0).ok())
                .unwrap_or(false);
            if !locked {
                // Said, since the wait has no bound: a large index may take minutes to build.
                tracing::info!("another instance is migrating the database; waiting for it");
                tx.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
                    .await?;
            }
        }
        // Another instance may have applied them while this one waited. Then the migrator
        // does not run at all: it first creates its own table, which needs the right to
        // create tables, and a server may run as a role that only reads and writes rows.
        let pending = Migrator::get_pending_migrations_read_only(&tx).await?.len();
        if pending > 0 {
            Migrator::up(&tx, None).await?;
        }
        tx.commit().await?;
        Ok(pending)
    }

    /// Whether the database's `lower` folds letters beyond ASCII, as the search of names
    /// needs: PostgreSQL's does under a UTF-8 or ICU locale, not under `C`/`POSIX`. Always true
    /// on SQLite, whose search index folds case itself.
    pub async fn folds_case(&self) -> Result<bool, DbErr> {
        if self.backend() != DatabaseBackend::Postgres {
            return Ok(true);
        }
        // Letters without context rules: ICU lower-cases a final Σ as ς.
        self.postgres_holds("SELECT lower('ÄД') = 'äд'").await
    }

    /// Renews PostgreSQL's statistics of the users table (SQLite's planner keeps none that a
    /// bulk write would leave behind).
    pub async fn analyze_users(&self) -> Result<(), DbErr> {
        if self.backend() == DatabaseBackend::Postgres {
            self.writer.execute_unprepared("ANALYZE users").await?;
        }
        Ok(())
    }

    /// What the PostgreSQL query `sql` answers, a boolean; true when it answers nothing.
    async fn postgres_holds(&self, sql: &str) -> Result<bool, DbErr> {
        let statement = sea_orm::Statement::from_string(DatabaseBackend::Postgres, sql);
        let row = self.conn.query_one_raw(statement).await?;
        Ok(row
            .and_then(|row| row.try_get_by_index::<bool>(0).ok())
            .unwrap_or(true))
    }

    /// Whether the search index is there: on PostgreSQL the migrations skip it (with a notice
    /// only) when the migrating role may not create `pg_trgm`. Always true on SQLite.
    pub async fn has_search_index(&self) -> Result<bool, DbErr> {
        if self.backend() != DatabaseBackend::Postgres {
            return Ok(true);
        }
        self.postgres_holds("SELECT to_regclass('idx_users_search_text') IS NOT NULL")
            .await
    }

    /// How many migrations this release has.
    pub fn known_migrations() -> usize {
        Migrator::migrations().len()
    }

    /// How many of this release's migrations the database lacks, without creating anything:
    /// an error when it holds one this release does not know (a newer release migrated it).
    /// Bounded by the database timeout as a whole: `statement_timeout` cannot fire when the
    /// network, not the database, stops answering, and a readiness probe must not hang.
    pub async fn pending_migrations(&self) -> Result<usize, DbErr> {
        let pending = Migrator::get_pending_migrations_read_only(&self.conn);
        match tokio::time::timeout(self.timeout, pending).await {
            Ok(pending) => Ok(pending?.len()),
            Err(_) => Err(DbErr::Conn(RuntimeErr::Internal(format!(
                "no answer within {:?}",
                self.timeout
            )))),
        }
    }

    /// PostgreSQL: whether the migrator's table is there but this role may not read it, so
    /// the migrations look all pending (the migrator asks `information_schema`, which hides it).
    pub async fn migrations_unreadable(&self) -> Result<bool, DbErr> {
        if self.backend() != DatabaseBackend::Postgres {
            return Ok(false);
        }
        let sql = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                   WHERE n.nspname = current_schema() AND c.relname = 'seaql_migrations' \
                   AND NOT has_table_privilege(c.oid, 'SELECT'))";
        self.postgres_holds(sql).await
    }

    /// How many tables the database holds (in PostgreSQL's current schema), whosever they are,
    /// besides the migrator's own and an extension's (`pg_stat_statements`' views, PostGIS's
    /// `spatial_ref_sys`), which are no other application's.
    pub async fn table_count(&self) -> Result<i64, DbErr> {
        let sql = match self.conn.get_database_backend() {
            // The catalogue, not `information_schema`, which lists only what the role may use.
            DatabaseBackend::Postgres => {
                "SELECT count(*) FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                 AND c.relname <> 'seaql_migrations' \
                 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                 WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid \
                 AND d.deptype = 'e')"
            }
            _ => {
                "SELECT count(*) FROM sqlite_master WHERE type IN ('table', 'view') \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> 'seaql_migrations'"
            }
        };
        let statement = sea_orm::Statement::from_string(self.conn.get_database_backend(), sql);
        let row = self.conn.query_one_raw(statement).await?;
        row.map_or(Ok(0), |row| row.try_get_by_index::<i64>(0))
    }

    /// SQLite: the path of the database file while it is gone, or another file is at its
    /// path, since start-up. The server's open connections still use the file they opened,
    /// and nothing written to it survives a restart.
    pub fn file_replaced(&self) -> Option<&std::path::Path> {
        self.file
            .as_ref()
            .filter(|file| identity(&file.path) != Some(file.identity))
            .map(|file| file.path.as_path())
    }

    /// Statements executed since start-up.
    pub fn statement_count(&self) -> u64 {
        self.statements.get()
    }

    /// The statement count, shared, for the metrics.
    pub fn statement_counter(&self) -> Counter {
        self.statements.clone()
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
    /// (`BEGIN IMMEDIATE`), so a writer never fails when it upgrades a read lock.
    pub async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        self.writer
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
    }

    /// The pools: on SQLite the readers' and the writer's, on PostgreSQL the one.
    fn pools(&self) -> Vec<&DatabaseConnection> {
        if self.backend() == DatabaseBackend::Sqlite {
            vec![&self.conn, &self.writer]
        } else {
            vec![&self.conn]
        }
    }

    /// Connections (in use, idle) over the pools, for metrics.
    pub fn connection_counts(&self) -> (u32, u32) {
        self.pools()
            .into_iter()
            .fold((0, 0), |(in_use, idle), conn| {
                let pool = pool_size(conn);
                (
                    in_use + pool.size.saturating_sub(pool.idle),
                    idle + pool.idle,
                )
            })
    }

    /// The most connections the pools may open together, for metrics.
    pub fn connection_max(&self) -> u32 {
        self.pools()
            .into_iter()
            .map(|conn| pool_size(conn).max)
            .sum()
    }
}

/// Whether `err` is sea-orm-migration's refusal of a database holding a migration this
/// release does not have (its only way of saying so is this message).
pub fn unknown_migration(err: &DbErr) -> bool {
    err.to_string()
        .contains("has been applied but its file is missing")
}

/// `url` for messages, its password masked: in the user information (up to the last `@`,
/// as a password may hold one unencoded) and in a `password` query parameter.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // `sqlite:path` holds no password; anything else in no URL form might be one.
        return if url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            "<DATABASE_URL>".to_owned()
        };
    };
    // The user information first: a password may hold `/`, `?` or `#` unencoded too.
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((credentials, host)) if credentials.contains(':') => {
            let user = credentials.split(':').next().unwrap_or_default();
            (format!("{user}:***@"), host)
        }
        Some((credentials, host)) => (format!("{credentials}@"), host),
        None => (String::new(), rest),
    };
    let (address, query) = match rest.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (rest, None),
    };
    let address = format!("{credentials}{address}");
    let query = query.map(|query| {
        let parameters: Vec<String> = query
            .split('&')
            .map(|parameter| {
                // The key as the driver reads it: `pass%77ord` is `password`. A value of more
                // than plain words, paths and addresses may be a secret run in by a slip
                // (`sslmode=disable;sslpassword=…`): not shown either.
                let (key, value) = form_urlencoded::parse(parameter.as_bytes())
                    .next()
                    .unwrap_or_default();
                let plain = value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:".contains(c));
                match parameter.split_once('=') {
                    Some((written, _)) if key.eq_ignore_ascii_case("password") || !plain => {
                        format!("{written}=***")
                    }
                    _ => parameter.to_owned(),
                }
            })
            .collect();
        format!("?{}", parameters.join("&"))
    });
    format!("{scheme}://{address}{}", query.unwrap_or_default())
}

/// Why `url` names no database this server can open, said without repeating it: what is not
/// in a URL's form may be a password, or a libpq `key=value` string holding one, and a
/// PostgreSQL URL with one slash short would be read as a local database named after its
/// credentials.
pub fn url_problem(url: &str) -> Option<Cow<'static, str>> {
    // The schemes as the drivers take them: lower case.
    let url = url.trim();
    if url.is_empty() {
        return Some("DATABASE_URL is empty".into());
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.trim_start_matches('/').is_empty() {
            // SQLite would open a private temporary database for each connection.
            return Some(
                "DATABASE_URL names no SQLite file: give one, such as `sqlite://rollcall.db?mode=rwc`"
                    .into(),
            );
        }
        // Read as sqlx reads them: decoded, each `mode` adding to the last, the last
        // `immutable` standing.
        // A value ends at a NUL, as SQLite reads the ones sqlx hands it (`vfs=memdb%00`).
        let parameters: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(key, value)| {
                let value = value.split('\0').next().unwrap_or_default().to_owned();
                (key.into_owned(), value)
            })
            .collect();
        let mode = |wanted: &str| {
            parameters
                .iter()
                .any(|(key, value)| key == "mode" && value == wanted)
        };
        let immutable = parameters
            .iter()
            .rev()
            .find(|(key, _)| key == "immutable")
            .is_some_and(|(_, value)| value == "true" || value == "1");
        // Each pooled connection would open a database of its own, the schema in one of them.
        // The path as sqlx hands it to SQLite: decoded (`%3Amemory%3A` is `:memory:`).
        let path = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        // SQLite reads a `file:` name as a URI of its own, whose parameters (`mode=memory`,
        // `vfs=memdb`, `immutable=1`) the checks below would not see.
        if path.trim_start_matches('/').starts_with("file:") {
            return Some(
                "DATABASE_URL gives a SQLite `file:` URI: give the path itself, such as \
                 `sqlite://rollcall.db?mode=rwc`"
                    .into(),
            );
        }
        // SQLite's `memdb` VFS keeps the database in memory too; the last `vfs` stands.
        let memdb = parameters
            .iter()
            .rev()
            .find(|(key, _)| key == "vfs")
            .is_some_and(|(_, value)| value == "memdb");
        let in_memory = path.contains(":memory:") || mode("memory") || memdb;
        if in_memory {
            return Some(
                "an in-memory SQLite database lives in one connection and this server opens \
                 several: give a file, such as `sqlite://rollcall.db?mode=rwc`"
                    .into(),
            );
        }
        // It would start and answer reads, and fail every login.
        return (mode("ro") || immutable).then_some(
            "a read-only SQLite database cannot take this server's writes (sessions, the audit \
             trail): give `mode=rwc`, such as `sqlite://rollcall.db?mode=rwc`"
                .into(),
        );
    }
    let postgres = ["postgres://", "postgresql://"]
        .iter()
        .any(|scheme| url.starts_with(scheme));
    if !postgres {
        return Some(
            "DATABASE_URL is neither `sqlite://path?mode=rwc` nor \
             `postgres://user:password@host/database` (it is not shown: it may hold a password)"
                .into(),
        );
    }
    // The driver ignores a parameter it does not know, logging its value (which may be a
    // secret, as `sslpassword`'s is) and going on without it (a misspelt `sslmode` would go
    // on without TLS). A URL that does not parse is left to the driver's own refusal.
    let parsed = url::Url::parse(url).ok()?;
    // The driver would connect to the database named after the user, whatever that holds, and
    // a server or `migrate` would give it this schema. A `dbname` parameter stands over the
    // path, the last one given as the driver reads them, and an empty one names nothing.
    let no_database = match parsed
        .query_pairs()
        .filter(|(key, _)| key == "dbname")
        .last()
    {
        Some((_, name)) => name.is_empty(),
        None => parsed.path().trim_start_matches('/').is_empty(),
    };
    if no_database {
        return Some(
            "DATABASE_URL names no PostgreSQL database: give one, such as \
             `postgres://user:password@host/rollcall`"
                .into(),
        );
    }
    // Not named: with a `&` or `?` left unencoded in a password, the "parameter" is part of it.
    let unknown = parsed.query_pairs().any(|(key, _)| {
        !POSTGRES_PARAMETERS.contains(&key.as_ref()) && !key.starts_with("options[")
    });
    if unknown {
        return Some(
            format!(
                "DATABASE_URL has a parameter PostgreSQL connections do not take here (not \
                 named: it may be part of a password); they take {} and `options[NAME]`",
                POSTGRES_PARAMETERS.join(", ")
            )
            .into(),
        );
    }
    // The driver's refusal of a mode repeats the value, which a slip may have run a secret
    // into.
    let bad_mode = parsed.query_pairs().any(|(key, value)| {
        matches!(key.as_ref(), "sslmode" | "ssl-mode")
            && !SSL_MODES.contains(&value.to_ascii_lowercase().as_str())
    });
    bad_mode.then(|| {
        format!(
            "DATABASE_URL's `sslmode` is none of {}",
            SSL_MODES.join(", ")
        )
        .into()
    })
}

/// The values of `sslmode` sqlx (0.9) takes, in any case.
const SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// The parameters of a PostgreSQL URL that sqlx (0.9) reads.
const POSTGRES_PARAMETERS: [&str; 18] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// PostgreSQL: 10. SQLite runs its queries on this process's threads, one per connection, so
/// readers beyond the cores only add memory (a page cache, prepared statements, a thread).
fn default_pool_size(url: &str) -> u32 {
    if url.starts_with("sqlite:") {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        u32::try_from(cores + 1).unwrap_or(u32::MAX)
    } else {
        10
    }
}

/// One pool's connections: open, idle among them, and the most it may open.
struct PoolSize {
    size: u32,
    idle: u32,
    max: u32,
}

fn pool_size(conn: &DatabaseConnection) -> PoolSize {
    let idle = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    match conn.get_database_backend() {
        DatabaseBackend::Postgres => {
            let pool = conn.get_postgres_connection_pool();
            PoolSize {
                size: pool.size(),
                idle: idle(pool.num_idle()),
                max: pool.options().get_max_connections(),
            }
        }
        DatabaseBackend::Sqlite => {
            let pool = conn.get_sqlite_connection_pool();
            PoolSize {
                size: pool.size(),
                idle: idle(pool.num_idle()),
                max: pool.options().get_max_connections(),
            }
        }
        _ => PoolSize {
            size: 0,
            idle: 0,
            max: 0,
        },
    }
}

fn options(url: &str, max_connections: u32, timeout: Duration) -> ConnectOptions {
    let mut options = ConnectOptions::new(url);
    // At least a millisecond: PostgreSQL reads `0ms` as no timeout at all.
    let statement_timeout = format!("{}ms", timeout.as_millis().max(1));
    options
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(timeout)
        .connect_timeout(timeout)
        .sqlx_logging(false)
        // A ping before every checkout would double the round trips of a one-query request.
        // One idle for a second is checked first (as HikariCP does after half a second): a
        // busy pool skips the ping, and after a database restart only requests in the very
        // next second can take a connection that died with it.
        .test_before_acquire_if_idle_for(Duration::from_secs(1))
        // No idle or lifetime reaping: sqlx's reaper can spin a core for minutes when a pool
        // closes during its sweep (its idle count wraps around). The check above already
        // replaces connections that went stale while idle.
        .idle_timeout(None)
        .max_lifetime(None)
        .map_sqlx_postgres_opts(move |opts| {
            // Named in `pg_stat_activity`, unless the URL names it otherwise.
            let opts = match opts.get_application_name() {
                Some(_) => opts,
                None => opts.application_name(env!("CARGO_PKG_NAME")),
            };
            opts.options([("statement_timeout", statement_timeout.as_str())])
        })
        .map_sqlx_sqlite_opts(move |opts| {
            // WAL lets readers run beside the single writer; the busy timeout makes a writer in
            // another process wait for the lock instead of failing with "database is locked".
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(timeout)
                .foreign_keys(true)
                // A deleted account's row is overwritten where its page is written anyway, so
                // the file does not keep it until the page is reused.
                .pragma("secure_delete", "FAST")
        });
    options
}

/// Which unique index a failed write ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueViolation {
    Username,
    Email,
    Owner,
    Other,
}

/// Opens a pool that counts its statements. Instances starting together on a new SQLite file
/// all switch it to WAL as they connect, and SQLite answers the losers of that race "database
/// is locked" at once, without waiting out the busy timeout; the switch is over within
/// milliseconds, so a connection refused that way is tried again until the acquire timeout.
async fn open(options: ConnectOptions, statements: &Counter) -> Result<DatabaseConnection, DbErr> {
    let deadline = Instant::now()
        + options
            .get_acquire_timeout()
            .unwrap_or(Duration::from_secs(5));
    let mut conn = loop {
        match sea_orm::Database::connect(options.clone()).await {
            Err(err) if sqlite_busy(&err) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) if pool_timed_out(&err) => {
                return Err(why_unreachable(options.get_url()).await.unwrap_or(err));
            }
            result => break result?,
        }
    };
    let counter = statements.clone();
    conn.set_metric_callback(move |_| {
        counter.inc();
    });
    Ok(conn)
}

fn pool_timed_out(err: &DbErr) -> bool {
    matches!(err, DbErr::Conn(RuntimeErr::SqlxError(err)) if matches!(**err, sea_orm::sqlx::Error::PoolTimedOut))
}

/// A pool that could open no connection says only that it timed out; one direct attempt
/// tells the operator why (refused, no route, no such host).
async fn why_unreachable(url: &str) -> Option<DbErr> {
    use sea_orm::sqlx::ConnectOptions as _;
    // Only PostgreSQL's: the driver would read a SQLite URL as a PostgreSQL one, with the
    // environment's defaults (`PGHOST`, `PGPORT`), and report another server's answer.
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return None;
    }
    let options: sea_orm::sqlx::postgres::PgConnectOptions = url.parse().ok()?;
    match tokio::time::timeout(Duration::from_secs(2), options.connect()).await {
        Ok(Err(err)) => Some(DbErr::Conn(RuntimeErr::SqlxError(Arc::new(err)))),
        _ => None,
    }
}

/// The database's own error behind `err`, when the database answered with one.
fn database_error(err: &DbErr) -> Option<&(dyn sea_orm::sqlx::error::DatabaseError + 'static)> {
    let (DbErr::Conn(RuntimeErr::SqlxError(err))
    | DbErr::Exec(RuntimeErr::SqlxError(err))
    | DbErr::Query(RuntimeErr::SqlxError(err))) = err
    else {
        return None;
    };
    err.as_database_error()
}

/// Creates the SQLite file `url` names (with `mode=rwc`) when it is missing, readable and
/// writable by its owner only: SQLite would create it as the umask has it, most often
/// readable by every user of the machine, and it holds password hashes, two-factor secrets
/// and the signing keys. Its `-wal` and `-shm` files take its permissions. A file that is
/// there keeps those it has.
#[cfg(unix)]
fn create_sqlite_file_privately(url: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    if !url.contains("mode=rwc") {
        return;
    }
    if let Some(mut path) = sqlite_filename(url) {
        // A link to a file not made yet: SQLite makes it where the link points. Never opened
        // when it is there: closing a file drops every lock this process holds on it.
        // As many links as Linux follows in one path.
        for _ in 0..40 {
            let Ok(target) = std::fs::read_link(&path) else {
                break;
            };
            path = path
                .parent()
                .map_or(target.clone(), |dir| dir.join(&target));
        }
        // Another instance starting beside this one may have made it first: that is no error.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
}

/// The file a SQLite `url` names, as the driver reads it; `None` for any other URL.
fn sqlite_filename(url: &str) -> Option<std::path::PathBuf> {
    use std::str::FromStr;
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = sea_orm::sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    Some(options.get_filename().to_path_buf())
}

/// Whether `url` names a SQLite file that does not exist or is empty: opened, it would be
/// created, or made a database.
pub fn sqlite_file_missing(url: &str) -> bool {
    sqlite_filename(url)
        .is_some_and(|path| std::fs::metadata(path).map_or(true, |file| file.len() == 0))
}

/// Whether a SQLite URL's file would go in a directory that is not there.
pub fn sqlite_directory_missing(url: &str) -> bool {
    sqlite_filename(url).is_some_and(|file| !directory_of(&file).is_dir())
}

/// The directory holding `file` (`.` for a bare name).
fn directory_of(file: &std::path::Path) -> std::path::PathBuf {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

/// The `-wal` and `-shm` files SQLite keeps beside database `file`.
pub fn sqlite_companions(file: &std::path::Path) -> [std::path::PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut companion = file.as_os_str().to_owned();
        companion.push(suffix);
        companion.into()
    })
}

/// The first of a SQLite database's files (the database, its `-wal` and `-shm` files) this
/// process may not read and write, or the directory that would hold those not there yet, where
/// it may not make them. SQLite opens a
/// database it may not write read-only without a word, and every login would then fail, for
/// as long as the server ran, as its open files stay read-only when the permissions change.
#[cfg(unix)]
pub fn sqlite_unwritable(url: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    // Through a link, SQLite opens the file it leads to, and keeps the others beside that.
    let file = sqlite_filename(url)?;
    let file = match std::fs::canonicalize(&file) {
        Ok(target) => target,
        // A link to a file not made yet: SQLite makes it where the link points, judged once made.
        Err(_) if file.symlink_metadata().is_ok_and(|meta| meta.is_symlink()) => return None,
        Err(_) => file,
    };
    let directory = directory_of(&file);
    let allowed = |path: &std::path::Path, mode| {
        std::ffi::CString::new(path.as_os_str().as_bytes())
            // As the process opens files: its effective ids and capabilities, which `access`
            // would not use.
            // SAFETY: a valid NUL-terminated path, which `faccessat` only reads.
            .is_ok_and(|path| unsafe {
                libc::faccessat(libc::AT_FDCWD, path.as_ptr(), mode, libc::AT_EACCESS) == 0
            })
    };
    // Files are read and written; in the directory, those not there yet are made.
    let file_mode = libc::R_OK | libc::W_OK;
    let directory_mode = libc::W_OK | libc::X_OK;
    if !file.exists() {
        // A directory that is not there is no matter of permissions: opening says so.
        return (directory.is_dir() && !allowed(&directory, directory_mode)).then_some(directory);
    }
    let mut needed = vec![(file.clone(), file_mode)];
    for companion in sqlite_companions(&file) {
        needed.push(if companion.exists() {
            (companion, file_mode)
        } else {
            (directory.clone(), directory_mode)
        });
    }
    needed
        .into_iter()
        .find(|(path, mode)| !allowed(path, *mode))
        .map(|(path, _)| path)
}

/// The line of PostgreSQL's own source that raised the error behind `err`, which sqlx writes
/// at the end of its message ("… does not exist at line 948").
pub fn postgres_source_line(err: &DbErr) -> Option<usize> {
    database_error(err)?
        .try_downcast_ref::<sea_orm::sqlx::postgres::PgDatabaseError>()?
        .line()
}

/// PostgreSQL's `insufficient_privilege` (42501): the role may not do what was asked.
pub fn lacks_privilege(err: &DbErr) -> bool {
    database_error(err)
        .and_then(|db| db.code())
        .is_some_and(|code| code == "42501")
}

/// A statement stopped by its timeout: PostgreSQL's `query_canceled` (57014, from its
/// `statement_timeout`, or rarely an operator's cancel, which only the server's localised
/// message tells apart), or SQLite's busy once its busy timeout has passed (another process
/// held the write lock longer).
pub fn statement_timed_out(err: &DbErr) -> bool {
    sqlite_busy(err)
        || database_error(err)
            .and_then(|db| db.code())
            .is_some_and(|code| code == "57014")
}

/// SQLITE_CANTOPEN: no file at the path (or none that may be opened), not a file that is
/// there but no database.
pub fn sqlite_cannot_open(err: &DbErr) -> bool {
    sqlite_code(err) == Some(14)
}

/// SQLITE_BUSY or SQLITE_LOCKED, extended codes included.
fn sqlite_busy(err: &DbErr) -> bool {
    matches!(sqlite_code(err), Some(5 | 6))
}

/// A SQLite error's primary result code (an extended code's low byte).
fn sqlite_code(err: &DbErr) -> Option<i32> {
    database_error(err)
        .filter(|db| db.try_downcast_ref::<SqliteError>().is_some())
        .and_then(|db| db.code())
        .and_then(|code| code.parse::<i32>().ok())
        .map(|code| code & 0xff)
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

/// Deletes `E`'s rows matching `condition`, at most `batch` a statement (each deletes the keys
/// a subquery picks), so a backlog (after an outage, or a flood of throttled logins) is worked
/// off in statements that end well within the statement timeout, not in one that never does
/// and leaves a larger backlog for the next round. Returns how many went.
pub async fn delete_in_batches<E: EntityTrait>(
    db: &impl ConnectionTrait,
    key: E::Column,
    condition: Condition,
    batch: u64,
) -> Result<u64, DbErr> {
    let batch = batch.max(1);
    let mut deleted = 0;
    loop {
        let picked = Query::select()
            .column(key)
            .from(E::default())
            .cond_where(condition.clone())
            .limit(batch)
            .to_owned();
        // The condition again: a row changed since the subquery read it (a throttle count
        // taken meanwhile) is not deleted.
        let round = E::delete_many()
            .filter(key.in_subquery(picked))
            .filter(condition.clone())
            .exec(db)
            .await?
            .rows_affected;
        deleted += round;
        if round < batch {
            return Ok(deleted);
        }
    }
}

/// A position in a keyset-paginated list, ordered by a time and then the id: a user's
/// `created_at`, an audit entry's `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub at: chrono::DateTime<chrono::Utc>,
    pub id: uuid::Uuid,
}

/// The current time at the precision both databases store (microseconds), so values read
/// back compare equal to the ones written, which keyset cursors rely on.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    at_micros(chrono::Utc::now())
}

/// `at` moved back by `by`; a limit too long to represent means no limit in practice.
pub fn earlier(at: chrono::DateTime<chrono::Utc>, by: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(by)
        .ok()
        .and_then(|by| at.checked_sub_signed(by))
        .unwrap_or(chrono::DateTime::UNIX_EPOCH)
}

/// `at` moved on by `by`, saturating.
pub fn later(at: chrono::DateTime<chrono::Utc>, by: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(by)
        .ok()
        .and_then(|by| at.checked_add_signed(by))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// `at` at the precision both databases store (microseconds).
pub fn at_micros(at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectOptions, DbErr, SqliteTransactionMode, TransactionOptions};
    use sea_orm::{Database, TransactionTrait};

    use super::{default_pool_size, sqlite_busy};

    /// Only the two URL forms are opened; the reasons never repeat the URL.
    #[test]
    fn database_urls_of_other_forms_are_refused() {
        for url in [
            "sqlite://rollcall.db?mode=rwc",
            "sqlite:rollcall.db",
            "postgres://u:p@db/x",
            "postgresql://db/x",
            "postgres://u@db/x?sslmode=verify-full&sslrootcert=/ca.pem&application_name=a",
            "postgres://u@/x?host=/run/postgresql&options=-c%20search_path%3Dapp",
            "postgres://u@db/x?sslmode=Verify-Full",
            "postgres://u@db/x?options[search_path]=app&options%5Bstatement_timeout%5D=5s",
            "postgres://u@db?dbname=x",
        ] {
            assert_eq!(super::url_problem(url), None, "{url}");
        }
        for (url, reason) in [
            ("", "empty"),
            ("  ", "empty"),
            ("host=db password=secret", "neither"),
            ("postgres:/u:secret@db/x", "neither"),
            ("POSTGRES://u@db/x", "neither"),
            ("sqlite::memory:", "in-memory"),
            ("sqlite://x.db?cache=shared&mode=memory", "in-memory"),
            ("sqlite://", "no SQLite file"),
            ("sqlite:?mode=rwc", "no SQLite file"),
            ("sqlite://x.db?mode=ro", "read-only"),
            ("sqlite://x.db?immutable=1&mode=rw", "read-only"),
            ("sqlite://x.db?mode=r%6F", "read-only"),
            ("sqlite://x.db?mode=ro&mode=rwc", "read-only"),
            ("sqlite://x.db?imm%75table=%31", "read-only"),
            ("sqlite://x.db?mode=%6Demory", "in-memory"),
            ("sqlite://%3Amemory%3A", "in-memory"),
            ("sqlite://x.db?vfs=memdb&mode=rwc", "in-memory"),
            ("sqlite://x.db?vfs=memdb%00x&mode=rwc", "in-memory"),
            ("sqlite://file:x%3Fmode%3Dmemory", "`file:` URI"),
            ("sqlite://file:rollcall.db?mode=rwc", "`file:` URI"),
            ("postgres://u@db/x?sslpassword=secret", "do not take"),
            (
                "postgres://u@db/x?sslmode=require&sslmdoe=verify-full",
                "do not take",
            ),
            (
                "postgres://u@db/x?pass%77ord=secret&pasword=x",
                "do not take",
            ),
            (
                "postgres://u@db/x?sslmode=disable;sslpassword=secret",
                "`sslmode`",
            ),
            ("postgres://u@db/x?ssl-mode=verify%3Bsecret", "`sslmode`"),
            ("postgres://u@db/x?password=ab&secret", "do not take"),
            ("postgres://", "no PostgreSQL database"),
            ("postgres://u:secret@db", "no PostgreSQL database"),
            (
                "postgresql://u:secret@db/?sslmode=require",
                "no PostgreSQL database",
            ),
            ("postgres://u:secret@db/?dbname=", "no PostgreSQL database"),
            ("postgres://u:secret@db?dbname", "no PostgreSQL database"),
            ("postgres://u:secret@db/x?dbname=", "no PostgreSQL database"),
            (
                "postgres://u:secret@db/?dbname=x&dbname=",
                "no PostgreSQL database",
            ),
        ] {
            let problem = super::url_problem(url).expect(url);
            assert!(problem.contains(reason), "{url}: {problem}");
            assert!(!problem.contains("secret"), "{url}: {problem}");
        }
    }

    #[test]
    fn database_urls_lose_their_passwords() {
        for (url, redacted) in [
            (
                "postgres://u:secret@db:5432/x",
                "postgres://u:***@db:5432/x",
            ),
            ("postgres://u:p@ss@db/x", "postgres://u:***@db/x"),
            ("host=db password=secret", "<DATABASE_URL>"),
            ("sqlite:rollcall.db", "sqlite:rollcall.db"),
            ("postgres://app:pa/ss#w?rd@db/x", "postgres://app:***@db/x"),
            (
                "postgres://u@db/x?sslmode=require&password=secret",
                "postgres://u@db/x?sslmode=require&password=***",
            ),
            (
                "postgres://u@db/x?sslmode=disable;sslpassword=secret&port=5432",
                "postgres://u@db/x?sslmode=***&port=5432",
            ),
            (
                "postgres://u@db/x?sslrootcert=/etc/ssl/ca.pem&application_name=a%3Bsecret",
                "postgres://u@db/x?sslrootcert=/etc/ssl/ca.pem&application_name=***",
            ),
            (
                "postgres://u@db/x?pass%77ord=secret&sslmode=require",
                "postgres://u@db/x?pass%77ord=***&sslmode=require",
            ),
            (
                "sqlite://rollcall.db?mode=rwc",
                "sqlite://rollcall.db?mode=rwc",
            ),
        ] {
            assert_eq!(super::redacted_url(url), redacted, "{url}");
        }
    }

    /// SQLite's readers follow the cores; PostgreSQL keeps a fixed pool.
    #[test]
    fn pool_size_defaults_by_backend() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            default_pool_size("sqlite://rollcall.db?mode=rwc") as usize,
            cores + 1
        );
        assert_eq!(default_pool_size("postgres://127.0.0.1/rollcall"), 10);
    }

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
