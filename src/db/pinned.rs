//! PostgreSQL reads on connections kept outside sqlx's pool.
//!
//! sqlx pings every connection it takes back into its pool, a second round trip after each
//! query. The hot read paths (the per-request session check, lookups, pages) run instead on a
//! few connections held here for the life of the process: one query, one round trip, on a
//! statement sqlx has already prepared on that connection. So does a login's write, which is
//! one statement. Transactions and other writes keep using the pool.

use std::sync::atomic::{AtomicUsize, Ordering};

use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sea_orm::sqlx::{self, ConnectOptions as _, Connection as _};
use sea_orm::{DbErr, Statement};

use super::rows::FromPgRows;
use sea_query_sqlx::SqlxValues;
use tokio::sync::Mutex;

pub struct PinnedReads {
    options: PgConnectOptions,
    slots: Vec<Mutex<Option<PgConnection>>>,
    next: AtomicUsize,
}

impl PinnedReads {
    /// Connections open lazily, on first use of their slot. Their statements are planned
    /// once, when first prepared, instead of at every execution: PostgreSQL otherwise goes on
    /// re-planning statements whose parameters it cannot size (arrays, cursors), and for
    /// these short reads planning costs more than running. Reads whose plan should follow
    /// their values (text searches) use the pool instead.
    pub fn new(url: &str, connections: u32) -> Result<Self, DbErr> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|err| DbErr::Conn(sea_orm::RuntimeErr::Internal(format!("{err}"))))?;
        let options = options
            .disable_statement_logging()
            .options([("plan_cache_mode", "force_generic_plan")]);
        Ok(Self {
            options,
            slots: (0..connections.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        })
    }

    pub async fn all<M: FromPgRows>(&self, statement: &Statement) -> Result<Vec<M>, DbErr> {
        let values = statement
            .values
            .clone()
            .unwrap_or_else(|| sea_orm::Values(Vec::new()));
        let query = sqlx::query_with(
            sqlx::AssertSqlSafe(statement.sql.as_str()),
            SqlxValues(values),
        );
        M::from_pg_rows(self.fetch(query).await?)
    }

    /// Runs `query` on a pinned connection.
    pub async fn fetch<'q, A>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Postgres, A>,
    ) -> Result<Vec<PgRow>, DbErr>
    where
        A: 'q + Send + sqlx::IntoArguments<sqlx::Postgres>,
    {
        // A free slot if there is one; otherwise queue on the next in turn.
        let slot = self.slots.iter().find_map(|slot| slot.try_lock().ok());
        let mut guard = match slot {
            Some(guard) => guard,
            None => {
                let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
                self.slots[index].lock().await
            }
        };
        if guard.is_none() {
            *guard = Some(
                PgConnection::connect_with(&self.options)
                    .await
                    .map_err(conn_err)?,
            );
        }
        let Some(conn) = guard.as_mut() else {
            return Err(DbErr::Custom("pinned connection missing".into()));
        };
        match query.fetch_all(&mut *conn).await {
            Ok(rows) => Ok(rows),
            Err(err) => {
                // The connection may be broken; the next use of this slot reconnects.
                *guard = None;
                Err(DbErr::Query(sea_orm::RuntimeErr::Internal(err.to_string())))
            }
        }
    }
}

fn conn_err(err: sqlx::Error) -> DbErr {
    DbErr::Conn(sea_orm::RuntimeErr::Internal(err.to_string()))
}
