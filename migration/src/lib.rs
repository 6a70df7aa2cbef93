//! Schema migrations for rollcall. The same migrations serve SQLite and PostgreSQL; where the
//! dialects differ (column types), each backend gets its own DDL.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

pub use sea_orm_migration::MigratorTrait;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_init::Migration),
            Box::new(m20261125_000002_search_index::Migration),
            Box::new(m20261203_000003_search_text::Migration),
            Box::new(m20261204_000004_credential_failures::Migration),
            Box::new(m20261205_000005_session_details::Migration),
            Box::new(m20261205_000006_signing_keys::Migration),
            Box::new(m20261206_000007_credentials::Migration),
            Box::new(m20261207_000008_search_index_direct::Migration),
            Box::new(m20261208_000009_email_keys::Migration),
            Box::new(m20261209_000010_search_sigma::Migration),
            Box::new(m20261210_000011_email_domains::Migration),
            Box::new(m20261211_000012_signing_key_horizon::Migration),
            Box::new(m20261212_000013_created_by_kept::Migration),
            Box::new(m20261213_000014_audit_actor_role::Migration),
            Box::new(m20261214_000015_throttle_runs::Migration),
            Box::new(m20261215_000016_unknown_logins_hashed::Migration),
            Box::new(m20261216_000017_search_secure_delete::Migration),
            Box::new(m20261217_000018_audit_action_index::Migration),
        ]
    }
}

/// Runs `sql` on PostgreSQL; SQLite has nothing to change.
async fn on_postgres(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() == DatabaseBackend::Postgres {
        manager.get_connection().execute_unprepared(sql).await?;
    }
    Ok(())
}

mod m20261123_000001_init {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261123_000001_init"
        }
    }

    /// Column types per backend: PostgreSQL gets native uuid/timestamptz/boolean,
    /// SQLite stores uuids as 16-byte blobs and timestamps as RFC 3339 text.
    struct Types {
        uuid: &'static str,
        ts: &'static str,
        boolean: &'static str,
    }

    fn types(backend: DatabaseBackend) -> Types {
        match backend {
            DatabaseBackend::Postgres => Types {
                uuid: "UUID",
                ts: "TIMESTAMPTZ",
                boolean: "BOOLEAN",
            },
            _ => Types {
                uuid: "BLOB",
                ts: "TEXT",
                boolean: "BOOLEAN",
            },
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let Types { uuid, ts, boolean } = types(manager.get_database_backend());
            let statements = [
                format!(
                    "CREATE TABLE users (
                        id {uuid} PRIMARY KEY NOT NULL,
                        username TEXT NOT NULL,
                        username_key TEXT NOT NULL,
                        email TEXT NOT NULL,
                        password_hash TEXT NOT NULL,
                        first_name TEXT,
                        last_name TEXT,
                        phone TEXT,
                        role TEXT NOT NULL CHECK (role IN ('OWNER', 'ADMIN', 'STANDARD')),
                        disabled {boolean} NOT NULL DEFAULT FALSE,
                        created_at {ts} NOT NULL,
                        updated_at {ts} NOT NULL,
                        last_login_at {ts},
                        created_by {uuid} REFERENCES users (id) ON DELETE SET NULL
                    )"
                ),
                "CREATE UNIQUE INDEX idx_users_username_key ON users (username_key)".into(),
                "CREATE UNIQUE INDEX idx_users_email ON users (email)".into(),
                // At most one owner, enforced by the database itself so that racing
                // registrations or transfers cannot produce two.
                "CREATE UNIQUE INDEX idx_users_one_owner ON users (role) WHERE role = 'OWNER'"
                    .into(),
                "CREATE INDEX idx_users_created ON users (created_at, id)".into(),
                "CREATE INDEX idx_users_created_by ON users (created_by)".into(),
                format!(
                    "CREATE TABLE sessions (
                        id {uuid} PRIMARY KEY NOT NULL,
                        user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                        created_at {ts} NOT NULL,
                        revoked_at {ts}
                    )"
                ),
                "CREATE INDEX idx_sessions_user ON sessions (user_id)".into(),
                format!(
                    "CREATE TABLE refresh_tokens (
                        token_hash TEXT PRIMARY KEY NOT NULL,
                        session_id {uuid} NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
                        created_at {ts} NOT NULL,
                        expires_at {ts} NOT NULL,
                        used_at {ts}
                    )"
                ),
                "CREATE INDEX idx_refresh_tokens_session ON refresh_tokens (session_id)".into(),
                "CREATE TABLE server_settings (
                    name TEXT PRIMARY KEY NOT NULL,
                    value TEXT NOT NULL
                )"
                .into(),
            ];
            let db = manager.get_connection();
            for sql in statements {
                db.execute_unprepared(&sql).await?;
            }
            Ok(())
        }
    }
}

/// A trigram index for `users(filter: {search})` on PostgreSQL: a substring search
/// (`LIKE '%term%'`) cannot use a b-tree, so without it every search scans the table.
/// `pg_trgm` ships with PostgreSQL's contrib package and is a trusted extension; where it
/// cannot be installed, search keeps working without the index and a notice says why.
/// SQLite has no such index and keeps scanning.
mod m20261125_000002_search_index {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261125_000002_search_index"
        }
    }

    /// One multi-column GIN index serves each arm of the search's OR; the expressions match
    /// the ones the search query compares.
    const UP: &str = r#"
        DO $$
        DECLARE
            ops text;
        BEGIN
            BEGIN
                CREATE EXTENSION IF NOT EXISTS pg_trgm;
            EXCEPTION WHEN OTHERS THEN
                RAISE NOTICE 'pg_trgm is unavailable (%): user search runs without an index', SQLERRM;
                RETURN;
            END;
            -- The operator class in the extension's own schema, which need not be on the
            -- search path (installed by another application, or in an `extensions` schema).
            SELECT format('%I.gin_trgm_ops', n.nspname) INTO ops
                FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                WHERE e.extname = 'pg_trgm';
            EXECUTE format('CREATE INDEX IF NOT EXISTS idx_users_search ON users USING gin (
                username_key %1$s, email %1$s, lower(first_name) %1$s, lower(last_name) %1$s
            )', ops);
        END
        $$
    "#;

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            if manager.get_database_backend() == DatabaseBackend::Postgres {
                manager.get_connection().execute_unprepared(UP).await?;
            }
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            if manager.get_database_backend() == DatabaseBackend::Postgres {
                manager
                    .get_connection()
                    .execute_unprepared("DROP INDEX IF EXISTS idx_users_search")
                    .await?;
            }
            Ok(())
        }
    }
}

/// User search on one indexed text per user, so both databases really use an index for the
/// search's four-way OR.
///
/// PostgreSQL: a trigram GIN index on the four searched fields joined by newlines. The planner
/// estimates one `LIKE` on that expression from the index's own statistics and uses the
/// index, where for the OR of four `LIKE`s on the four-column index it often scanned the
/// table (a population whose names share a prefix, searched for a common fragment). The
/// search keeps the exact four-way condition as well, so a match across a field boundary is
/// never returned.
///
/// SQLite: an FTS5 table with the trigram tokenizer over the same four fields, kept in step
/// with `users` by triggers. It indexes the users table's rowid; `VACUUM` may renumber those,
/// after which `INSERT INTO users_search(users_search) VALUES ('rebuild')` renews it.
mod m20261203_000003_search_text {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261203_000003_search_text"
        }
    }

    const POSTGRES_UP: &str = r#"
        DO $$
        DECLARE
            ops text;
        BEGIN
            BEGIN
                CREATE EXTENSION IF NOT EXISTS pg_trgm;
            EXCEPTION WHEN OTHERS THEN
                RAISE NOTICE 'pg_trgm is unavailable (%): user search runs without an index', SQLERRM;
                RETURN;
            END;
            DROP INDEX IF EXISTS idx_users_search;
            -- The operator class in the extension's own schema, which need not be on the
            -- search path (installed by another application, or in an `extensions` schema).
            SELECT format('%I.gin_trgm_ops', n.nspname) INTO ops
                FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                WHERE e.extname = 'pg_trgm';
            EXECUTE format($sql$CREATE INDEX IF NOT EXISTS idx_users_search_text ON users USING gin ((
                username_key || E'\n' || email || E'\n' ||
                coalesce(lower(first_name), '') || E'\n' || coalesce(lower(last_name), '')
            ) %s)$sql$, ops);
        END
        $$
    "#;

    const SQLITE_UP: [&str; 5] = [
        "CREATE VIRTUAL TABLE users_search USING fts5(
            username_key, email, first_name, last_name,
            content = 'users', content_rowid = 'rowid', tokenize = 'trigram'
        )",
        "CREATE TRIGGER users_search_insert AFTER INSERT ON users BEGIN
            INSERT INTO users_search (rowid, username_key, email, first_name, last_name)
            VALUES (new.rowid, new.username_key, new.email, new.first_name, new.last_name);
        END",
        "CREATE TRIGGER users_search_delete AFTER DELETE ON users BEGIN
            INSERT INTO users_search (users_search, rowid, username_key, email, first_name, last_name)
            VALUES ('delete', old.rowid, old.username_key, old.email, old.first_name, old.last_name);
        END",
        "CREATE TRIGGER users_search_update
            AFTER UPDATE OF username_key, email, first_name, last_name ON users BEGIN
            INSERT INTO users_search (users_search, rowid, username_key, email, first_name, last_name)
            VALUES ('delete', old.rowid, old.username_key, old.email, old.first_name, old.last_name);
            INSERT INTO users_search (rowid, username_key, email, first_name, last_name)
            VALUES (new.rowid, new.username_key, new.email, new.first_name, new.last_name);
        END",
        "INSERT INTO users_search (users_search) VALUES ('rebuild')",
    ];

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let db = manager.get_connection();
            match manager.get_database_backend() {
                DatabaseBackend::Postgres => {
                    db.execute_unprepared(POSTGRES_UP).await?;
                }
                _ => {
                    for sql in SQLITE_UP {
                        db.execute_unprepared(sql).await?;
                    }
                }
            }
            Ok(())
        }
    }
}

/// Failed password checks per account (or per unknown login), so that the throttle holds across
/// restarts and across instances on one database. Times are Unix milliseconds: compared in
/// SQL the same way on both backends.
mod m20261204_000004_credential_failures {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261204_000004_credential_failures"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let db = manager.get_connection();
            db.execute_unprepared(
                "CREATE TABLE credential_failures (
                    subject TEXT PRIMARY KEY NOT NULL,
                    failures INTEGER NOT NULL,
                    locked_until BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL
                )",
            )
            .await?;
            db.execute_unprepared(
                "CREATE INDEX idx_credential_failures_updated ON credential_failures (updated_at)",
            )
            .await?;
            Ok(())
        }
    }
}

/// What a session list shows and what its expiry needs: when the session last refreshed (the
/// idle limit counts from it; existing sessions start from their creation), and the client's
/// address and User-Agent at login. An index on `expires_at` lets the periodic purge of expired
/// refresh tokens find them without scanning.
mod m20261205_000005_session_details {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261205_000005_session_details"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let postgres = manager.get_database_backend() == DatabaseBackend::Postgres;
            let ts = if postgres { "TIMESTAMPTZ" } else { "TEXT" };
            let mut statements = vec![
                format!("ALTER TABLE sessions ADD COLUMN last_used_at {ts}"),
                "UPDATE sessions SET last_used_at = created_at".to_owned(),
                "ALTER TABLE sessions ADD COLUMN ip TEXT".to_owned(),
                "ALTER TABLE sessions ADD COLUMN user_agent TEXT".to_owned(),
                "CREATE INDEX idx_refresh_tokens_expires ON refresh_tokens (expires_at)".to_owned(),
            ];
            // SQLite cannot add NOT NULL to an existing column; the application always writes it.
            if postgres {
                statements
                    .push("ALTER TABLE sessions ALTER COLUMN last_used_at SET NOT NULL".to_owned());
            }
            let db = manager.get_connection();
            for sql in statements {
                db.execute_unprepared(&sql).await?;
            }
            Ok(())
        }
    }
}

/// Ed25519 signing keys for access tokens, shared by every instance on the database. The
/// current key is the newest one not retired; a retired key still verifies the tokens it
/// signed until they have expired.
mod m20261205_000006_signing_keys {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261205_000006_signing_keys"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let ts = match manager.get_database_backend() {
                DatabaseBackend::Postgres => "TIMESTAMPTZ",
                _ => "TEXT",
            };
            manager
                .get_connection()
                .execute_unprepared(&format!(
                    "CREATE TABLE signing_keys (
                        kid TEXT PRIMARY KEY NOT NULL,
                        private_key TEXT NOT NULL,
                        public_key TEXT NOT NULL,
                        created_at {ts} NOT NULL,
                        retired_at {ts}
                    )"
                ))
                .await?;
            // The HS256 key earlier versions generated and kept here signs nothing any more.
            manager
                .get_connection()
                .execute_unprepared("DELETE FROM server_settings WHERE name = 'jwt_secret'")
                .await?;
            Ok(())
        }
    }
}

/// API tokens (only their SHA-256 is kept), two-factor login (a TOTP secret per user and
/// hashed one-time recovery codes), the audit trail, and when a session last proved its
/// password or code (for step-up verification).
mod m20261206_000007_credentials {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261206_000007_credentials"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let (uuid, ts) = match manager.get_database_backend() {
                DatabaseBackend::Postgres => ("UUID", "TIMESTAMPTZ"),
                _ => ("BLOB", "TEXT"),
            };
            let statements = [
                format!(
                    "CREATE TABLE api_tokens (
                        id {uuid} PRIMARY KEY NOT NULL,
                        user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                        name TEXT NOT NULL,
                        token_hash TEXT NOT NULL,
                        created_at {ts} NOT NULL,
                        last_used_at {ts},
                        expires_at {ts},
                        created_by {uuid}
                    )"
                ),
                "CREATE UNIQUE INDEX idx_api_tokens_hash ON api_tokens (token_hash)".into(),
                "CREATE INDEX idx_api_tokens_user ON api_tokens (user_id)".into(),
                format!(
                    "CREATE TABLE user_totp (
                        user_id {uuid} PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                        secret TEXT NOT NULL,
                        created_at {ts} NOT NULL,
                        confirmed_at {ts},
                        last_step BIGINT
                    )"
                ),
                format!(
                    "CREATE TABLE recovery_codes (
                        user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                        code_hash TEXT NOT NULL,
                        used_at {ts},
                        PRIMARY KEY (user_id, code_hash)
                    )"
                ),
                format!(
                    "CREATE TABLE audit_log (
                        id {uuid} PRIMARY KEY NOT NULL,
                        at {ts} NOT NULL,
                        actor_id {uuid},
                        action TEXT NOT NULL,
                        target_id {uuid},
                        target_role TEXT,
                        ip TEXT,
                        fields TEXT NOT NULL
                    )"
                ),
                "CREATE INDEX idx_audit_log_at ON audit_log (at, id)".into(),
                "CREATE INDEX idx_audit_log_target ON audit_log (target_id, at)".into(),
                "CREATE INDEX idx_audit_log_actor ON audit_log (actor_id, at)".into(),
                format!("ALTER TABLE sessions ADD COLUMN verified_at {ts}"),
            ];
            let db = manager.get_connection();
            for sql in statements {
                db.execute_unprepared(&sql).await?;
            }
            Ok(())
        }
    }
}

/// PostgreSQL's search index takes each new user directly instead of through GIN's pending
/// list. With the default fast update, rows inserted since the last (auto)vacuum sit in an
/// unsorted list that every search reads in full (after a bulk import, several times the work
/// of the index itself: benches/RESULTS.md). Users are written rarely and searched often, so
/// the writes pay. The migration also merges what is pending now.
mod m20261207_000008_search_index_direct {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261207_000008_search_index_direct"
        }
    }

    /// A no-op where pg_trgm was unavailable and the index was never built.
    const POSTGRES_UP: &str = r#"
        DO $$
        BEGIN
            IF to_regclass('idx_users_search_text') IS NOT NULL THEN
                ALTER INDEX idx_users_search_text SET (fastupdate = off);
                PERFORM gin_clean_pending_list('idx_users_search_text'::regclass);
            END IF;
        END
        $$
    "#;

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            on_postgres(manager, POSTGRES_UP).await
        }
    }
}

mod m20261208_000009_email_keys {
    use unicode_normalization::UnicodeNormalization;

    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261208_000009_email_keys"
        }
    }

    /// The stored form of an email from this release on (the server's `login_key`, as of this
    /// migration): trimmed, NFKC-normalised, lower-cased.
    fn key(email: &str) -> String {
        let lower = email.trim().nfkc().collect::<String>().to_lowercase();
        lower.nfkc().collect()
    }

    /// Emails stored before were only trimmed and lower-cased; those that NFKC writes
    /// differently are rewritten, so logins by email (now looked up in that form) still find
    /// them and look-alike addresses stay unique.
    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            rewrite_emails(manager, |email| {
                let key = key(email);
                (!email.is_ascii() && key != email).then_some(key)
            })
            .await
        }
    }
}

/// Rewrites each stored email that `rewrite` gives a new form. Where the new form is already
/// taken, the address is left as it was: its owner still logs in by username.
async fn rewrite_emails(
    manager: &SchemaManager<'_>,
    rewrite: impl Fn(&str) -> Option<String>,
) -> Result<(), DbErr> {
    use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};
    let db = manager.get_connection();
    let backend = manager.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT id, email FROM users",
        ))
        .await?;
    for row in rows {
        let email: String = row.try_get("", "email")?;
        let Some(new) = rewrite(&email) else {
            continue;
        };
        let sql = match backend {
            DatabaseBackend::Postgres => {
                "UPDATE users SET email = $1 WHERE email = $2 \
                 AND NOT EXISTS (SELECT 1 FROM users WHERE email = $1)"
            }
            _ => {
                "UPDATE users SET email = ?1 WHERE email = ?2 \
                 AND NOT EXISTS (SELECT 1 FROM users WHERE email = ?1)"
            }
        };
        let rewritten = db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [new.into(), email.into()],
            ))
            .await?
            .rows_affected();
        if rewritten == 0 {
            // The id, not the address: logs travel further than the database.
            let id: sea_orm_migration::sea_orm::prelude::Uuid = row.try_get("", "id")?;
            tracing::warn!(
                user = %id,
                "email left as stored: its normalised form belongs to another account; \
                 this user logs in by username"
            );
        }
    }
    Ok(())
}

/// PostgreSQL's search text writes Greek's final sigma (ς) as σ. `lower` keeps a ς typed in a
/// name and never writes one for Σ, so "Σίσυφος" and "ΣΊΣΥΦΟΣ" lower-cased differ in their
/// last letter and a search found only one of them; the search term is folded the same way.
/// SQLite's trigram index folds ς to σ itself.
mod m20261209_000010_search_sigma {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261209_000010_search_sigma"
        }
    }

    /// A no-op where pg_trgm was unavailable and the index was never built.
    const POSTGRES_UP: &str = r#"
        DO $$
        DECLARE
            ops text;
        BEGIN
            IF to_regclass('idx_users_search_text') IS NOT NULL THEN
                -- The operator class in the extension's own schema, which need not be on the
                -- search path (installed by another application, or in an `extensions` schema).
                SELECT format('%I.gin_trgm_ops', n.nspname) INTO ops
                    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                    WHERE e.extname = 'pg_trgm';
                -- Built beside the old index, which is dropped only then: the build blocks
                -- writes to users, the drop (held to the commit) reads too, but only briefly.
                EXECUTE format($sql$CREATE INDEX idx_users_search_text_sigma ON users USING gin ((translate(
                    username_key || E'\n' || email || E'\n' ||
                    coalesce(lower(first_name), '') || E'\n' || coalesce(lower(last_name), ''),
                    'ς', 'σ'
                )) %s) WITH (fastupdate = off)$sql$, ops);
                DROP INDEX idx_users_search_text;
                ALTER INDEX idx_users_search_text_sigma RENAME TO idx_users_search_text;
            END IF;
        END
        $$
    "#;

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            on_postgres(manager, POSTGRES_UP).await
        }
    }
}

/// A domain label in its ASCII form (`xn--mnchen-3ya`) is stored as the letters it encodes
/// (`münchen`), as the server's `login_key` does from this release on: one mailbox, one
/// address, whichever form it was typed in.
mod m20261210_000011_email_domains {
    use unicode_normalization::UnicodeNormalization;

    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261210_000011_email_domains"
        }
    }

    /// The stored form of an email's domain, as of this migration.
    fn key(email: &str) -> Option<String> {
        let (local, domain) = email.rsplit_once('@')?;
        if !domain.split('.').any(|label| label.starts_with("xn--")) {
            return None;
        }
        let labels: Vec<String> = domain
            .split('.')
            .map(|label| {
                label
                    .strip_prefix("xn--")
                    .and_then(idna::punycode::decode_to_string)
                    .filter(|decoded| !decoded.is_ascii())
                    .map_or_else(
                        || label.to_owned(),
                        |decoded| {
                            let lower = decoded.nfkc().collect::<String>().to_lowercase();
                            lower.nfkc().collect()
                        },
                    )
            })
            .collect();
        let key = format!("{local}@{}", labels.join("."));
        (key != email).then_some(key)
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            rewrite_emails(manager, key).await
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn ascii_forms_become_letters() {
            assert_eq!(
                super::key("ada@xn--mnchen-3ya.de").as_deref(),
                Some("ada@münchen.de")
            );
            assert_eq!(super::key("ada@münchen.de"), None);
            assert_eq!(super::key("ada@xn--zz-.de"), None);
            assert_eq!(super::key("xn--mnchen-3ya@example.com"), None);
        }
    }
}

/// How long each signing key's tokens may live, as the instances signing with it record it:
/// instances with different access token lifetimes keep a retired key for the longest.
mod m20261211_000012_signing_key_horizon {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261211_000012_signing_key_horizon"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            // Run again (its record lost), it finds the column there.
            if manager.has_column("signing_keys", "signs_until").await? {
                return Ok(());
            }
            let ts = match manager.get_database_backend() {
                DatabaseBackend::Postgres => "TIMESTAMPTZ",
                _ => "TEXT",
            };
            manager
                .get_connection()
                .execute_unprepared(&format!(
                    "ALTER TABLE signing_keys ADD COLUMN signs_until {ts}"
                ))
                .await?;
            Ok(())
        }
    }
}

/// On PostgreSQL `created_by` is kept as attribution, with no foreign key: deleting an account
/// rewrote every row it created (`ON DELETE SET NULL`, each row's search index entries with
/// it), and an import attributing tens of thousands of users to one admin made that account's
/// deletion outlast any statement timeout. `createdBy` reads as null once the account is
/// gone, as before. SQLite clears the column as it did: changing a constraint there means
/// rebuilding the table, and its writes are quick enough.
mod m20261212_000013_created_by_kept {
    use super::*;

    /// The key found by what it is, whatever its name. Dropping it locks the table: waiting
    /// behind a long transaction, that lock would stop every read of `users` on the servers
    /// running meanwhile, so the wait is bounded and a migration that cannot get it fails
    /// (run it again when the database is quieter).
    const POSTGRES_UP: &str = r#"
        SET LOCAL lock_timeout = '10s';
        DO $$
        DECLARE
            key name;
        BEGIN
            FOR key IN
                SELECT c.conname FROM pg_constraint c
                JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
                WHERE c.conrelid = 'users'::regclass AND c.contype = 'f'
                    AND a.attname = 'created_by'
            LOOP
                EXECUTE format('ALTER TABLE users DROP CONSTRAINT %I', key);
            END LOOP;
        END
        $$;
        DROP INDEX IF EXISTS idx_users_created_by;
        SET LOCAL lock_timeout = 0;
    "#;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261212_000013_created_by_kept"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            on_postgres(manager, POSTGRES_UP).await
        }
    }
}

/// Each audit entry keeps its actor's role as they acted: who may see an entry's address is
/// judged by it, as who may see the entry is by the target's role then. Judged by the actor's
/// role now, a deleted user's addresses vanished from the admins who offboarded them, and a
/// demoted admin's became visible to the admins who were their peers. Entries written before
/// take the role recorded for the actor as a target of the same entry, else the actor's
/// current one; an actor already gone keeps none, and their addresses show to the owner only.
mod m20261213_000014_audit_actor_role {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261213_000014_audit_actor_role"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            // Run again (its record lost), it finds the column there.
            if manager.has_column("audit_log", "actor_role").await? {
                return Ok(());
            }
            let db = manager.get_connection();
            for sql in [
                "ALTER TABLE audit_log ADD COLUMN actor_role TEXT",
                "UPDATE audit_log SET actor_role = target_role
                    WHERE actor_id IS NOT NULL AND actor_id = target_id",
                "UPDATE audit_log SET actor_role =
                    (SELECT role FROM users WHERE users.id = audit_log.actor_id)
                    WHERE actor_role IS NULL AND actor_id IS NOT NULL",
            ] {
                db.execute_unprepared(sql).await?;
            }
            Ok(())
        }
    }
}

/// A number for each run of credential failures (from the first failure to the success that
/// deletes the row), so an attempt taken back after a success cannot take a count from the
/// run begun since. Rows already there are one run, numbered 0.
mod m20261214_000015_throttle_runs {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261214_000015_throttle_runs"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            // Run again (its record lost), it finds the column there.
            if manager.has_column("credential_failures", "run").await? {
                return Ok(());
            }
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE credential_failures ADD COLUMN run BIGINT NOT NULL DEFAULT 0",
                )
                .await?;
            Ok(())
        }
    }
}

mod m20261215_000016_unknown_logins_hashed {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261215_000016_unknown_logins_hashed"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            // Counts of logins that match no account were kept under the text typed, at times
            // a password; this release keeps them under its SHA-256, and writes none before
            // it has migrated. Those of the text go: unknown logins start afresh, once.
            manager
                .get_connection()
                .execute_unprepared("DELETE FROM credential_failures WHERE subject LIKE 'login:%'")
                .await?;
            Ok(())
        }
    }
}

/// SQLite's search index kept a deleted (or renamed) user's names, marked deleted, until its
/// segments were next merged, however the table's own pages were overwritten: with FTS5's
/// `secure-delete` they are removed from the index itself. Merged once here, so what earlier
/// deletions left goes too. PostgreSQL's index has nothing of the kind to set.
mod m20261216_000017_search_secure_delete {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261216_000017_search_secure_delete"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            if manager.get_database_backend() != DatabaseBackend::Sqlite {
                return Ok(());
            }
            let db = manager.get_connection();
            db.execute_unprepared(
                "INSERT INTO users_search (users_search, rank) VALUES ('secure-delete', 1)",
            )
            .await?;
            db.execute_unprepared("INSERT INTO users_search (users_search) VALUES ('optimize')")
                .await?;
            Ok(())
        }
    }
}

/// The audit trail filtered by action (`ROLE_CHANGED`, say) read every entry to count it, and
/// many to fill a page of a rare action: the trail grows with its retention, not a rate.
mod m20261217_000018_audit_action_index {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261217_000018_audit_action_index"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .get_connection()
                .execute_unprepared(
                    "CREATE INDEX IF NOT EXISTS idx_audit_log_action ON audit_log (action, at, id)",
                )
                .await?;
            Ok(())
        }
    }
}
