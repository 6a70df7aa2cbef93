//! Queries on the users table.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, LikeExpr, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use uuid::Uuid;

use super::entities::session;
use super::entities::user::{Column, Entity as Users, Model as User, Role};
use super::sessions::Live;
use super::{Db, Position};

pub async fn by_id(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<User>, DbErr> {
    Users::find_by_id(id).one(db).await
}

/// Users `ids` read inside a write transaction so that a decision about them holds until it
/// commits: their rows are locked on PostgreSQL, in id order so two such transactions cannot
/// deadlock; on SQLite the write transaction already keeps every other writer out.
pub async fn lock(db: &impl ConnectionTrait, ids: &[Uuid]) -> Result<Vec<User>, DbErr> {
    let mut query = Users::find()
        .filter(Column::Id.is_in(ids.iter().copied()))
        .order_by_asc(Column::Id);
    if db.get_database_backend() == DatabaseBackend::Postgres {
        query = query.lock_exclusive();
    }
    query.all(db).await
}

/// Finds a user by username or email, `login` in the form keys are stored in
/// (`validation::login_key`): usernames cannot contain `@`, so the login is unambiguous.
pub async fn by_login(db: &impl ConnectionTrait, login: &str) -> Result<Option<User>, DbErr> {
    let column = if login.contains('@') {
        Column::Email
    } else {
        Column::UsernameKey
    };
    Users::find().filter(column.eq(login)).one(db).await
}

/// The user behind an access token, only while its session is live: one query decides both.
pub async fn by_session(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    session_id: Uuid,
    live: &Live,
) -> Result<Option<User>, DbErr> {
    Users::find()
        .filter(session_condition(user_id, session_id, live))
        .one(db)
        .await
}

/// The user of session `session_id` while it is live, in one query.
pub async fn by_live_session(
    db: &impl ConnectionTrait,
    session_id: Uuid,
    live: &Live,
) -> Result<Option<User>, DbErr> {
    Users::find()
        .filter(
            Column::Id.in_subquery(
                Query::select()
                    .column(session::Column::UserId)
                    .from(session::Entity)
                    .and_where(session::Column::Id.eq(session_id))
                    .cond_where(live.condition())
                    .to_owned(),
            ),
        )
        .one(db)
        .await
}

/// User `user_id`, while session `session_id` is theirs and live: a revoked session, or one
/// past its maximum age or idle limit, stops its access tokens at once.
fn session_condition(user_id: Uuid, session_id: Uuid, live: &Live) -> Condition {
    Condition::all()
        .add(Column::Id.eq(user_id))
        .add(Expr::exists(
            Query::select()
                .expr(Expr::val(1))
                .from(session::Entity)
                .and_where(session::Column::Id.eq(session_id))
                .and_where(session::Column::UserId.eq(user_id))
                .cond_where(live.condition())
                .to_owned(),
        ))
}

/// The viewer (as [`by_session`]) and user `other`, in one query; the caller tells the rows
/// apart by id, so `other` must not be `user_id`.
pub async fn by_session_or_id(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    session_id: Uuid,
    other: Uuid,
    live: &Live,
) -> Result<Vec<User>, DbErr> {
    Users::find()
        .filter(
            Condition::any()
                .add(session_condition(user_id, session_id, live))
                .add(Column::Id.eq(other)),
        )
        .limit(2)
        .all(db)
        .await
}

pub async fn by_ids(db: &impl ConnectionTrait, ids: &[Uuid]) -> Result<HashMap<Uuid, User>, DbErr> {
    let users = Users::find()
        .filter(Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    Ok(users.into_iter().map(|u| (u.id, u)).collect())
}

/// Whether the database holds any account at all.
pub async fn any_exists(db: &impl ConnectionTrait) -> Result<bool, DbErr> {
    Ok(Users::find()
        .select_only()
        .column(Column::Id)
        .into_tuple::<Uuid>()
        .one(db)
        .await?
        .is_some())
}

/// Stamps a login at `at` on user `id` while the account is enabled and its password hash is
/// still the one the login verified, and returns the row as it now stands (its role changed
/// since the login read it, say); `None` when it is disabled, gone or has a new password.
pub async fn record_login(
    db: &impl ConnectionTrait,
    id: Uuid,
    verified_hash: &str,
    at: DateTime<Utc>,
) -> Result<Option<User>, DbErr> {
    Ok(Users::update_many()
        .col_expr(Column::LastLoginAt, Expr::value(at))
        .filter(Column::Id.eq(id))
        .filter(Column::Disabled.eq(false))
        .filter(Column::PasswordHash.eq(verified_hash))
        .exec_with_returning(db)
        .await?
        .pop())
}

/// Replaces user `id`'s password hash `old` by `new`, unless it changed meanwhile: the same
/// password under this server's parameters, not a change of password.
pub async fn rehash(
    db: &impl ConnectionTrait,
    id: Uuid,
    old: &str,
    new: String,
) -> Result<(), DbErr> {
    Users::update_many()
        .col_expr(Column::PasswordHash, Expr::value(new))
        .filter(Column::Id.eq(id))
        .filter(Column::PasswordHash.eq(old))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn owner_exists(db: &impl ConnectionTrait) -> Result<bool, DbErr> {
    Ok(Users::find()
        .filter(Column::Role.eq(Role::Owner))
        .one(db)
        .await?
        .is_some())
}

/// Which of a username key and an email already belong to someone other than `except`.
pub async fn taken(
    db: &impl ConnectionTrait,
    username_key: Option<&str>,
    email: Option<&str>,
    except: Option<Uuid>,
) -> Result<(bool, bool), DbErr> {
    let mut any = Condition::any();
    if let Some(key) = username_key {
        any = any.add(Column::UsernameKey.eq(key));
    }
    if let Some(email) = email {
        any = any.add(Column::Email.eq(email));
    }
    if username_key.is_none() && email.is_none() {
        return Ok((false, false));
    }
    let mut query = Users::find().filter(any);
    if let Some(id) = except {
        query = query.filter(Column::Id.ne(id));
    }
    let found = query.limit(2).all(db).await?;
    Ok((
        found
            .iter()
            .any(|u| Some(u.username_key.as_str()) == username_key),
        found.iter().any(|u| Some(u.email.as_str()) == email),
    ))
}

/// Of `username_keys` and `emails`, those some user already has; and of `ids`, those that
/// are users, key-share-locked on PostgreSQL in id order (as every locker of users takes
/// them) so they stay users until the transaction ends, while their other columns may still
/// change; on SQLite a write transaction keeps every other writer out. For bulk imports.
pub async fn existing(
    db: &impl ConnectionTrait,
    username_keys: &[String],
    emails: &[String],
    ids: &[Uuid],
) -> Result<(Vec<String>, Vec<String>, Vec<Uuid>), DbErr> {
    let postgres = db.get_database_backend() == DatabaseBackend::Postgres;
    Ok((
        present(db, Column::UsernameKey, username_keys, false).await?,
        present(db, Column::Email, emails, false).await?,
        present(db, Column::Id, ids, postgres).await?,
    ))
}

/// The values of `column` among `values` that some user has, asked a thousand at a time;
/// `locked` reads the rows `FOR KEY SHARE`.
async fn present<T>(
    db: &impl ConnectionTrait,
    column: Column,
    values: &[T],
    locked: bool,
) -> Result<Vec<T>, DbErr>
where
    T: Clone + Into<sea_orm::Value> + sea_orm::TryGetable,
{
    let mut found = Vec::new();
    for chunk in values.chunks(1_000) {
        let mut query = Users::find()
            .select_only()
            .column(column)
            .filter(column.is_in(chunk.iter().cloned()))
            .order_by_asc(Column::Id);
        if locked {
            query = query.lock(sea_orm::sea_query::LockType::KeyShare);
        }
        found.extend(query.into_tuple::<T>().all(db).await?);
    }
    Ok(found)
}

/// What a `users` query filters on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    pub search: Option<String>,
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

impl Filter {
    /// Whether the search term is long enough to have trigrams (three characters).
    fn trigram_search(&self) -> bool {
        self.search
            .as_deref()
            .is_some_and(|term| term.chars().count() >= 3)
    }

    fn condition(&self, backend: DatabaseBackend) -> Condition {
        let mut all = Condition::all();
        if let Some(search) = self.search.as_deref().filter(|s| !s.is_empty()) {
            let pattern = contains(&fold(search));
            let like = |pattern: &str| LikeExpr::new(pattern).escape('\\');
            // The exact condition: the term within one of the four fields.
            let exact = || {
                // SQLite's `lower` and `LIKE` fold ASCII letters only: every other letter of
                // the (short) term is tried in each of its cases.
                let variants: Vec<String> = match backend {
                    DatabaseBackend::Sqlite => case_variants(search)
                        .iter()
                        .map(|variant| contains(variant))
                        .collect(),
                    _ => Vec::new(),
                };
                let mut any = Condition::any();
                for column in [
                    Column::UsernameKey,
                    Column::Email,
                    Column::FirstName,
                    Column::LastName,
                ] {
                    let condition = match (backend, column) {
                        // The same forms in every field, username keys too: a letter such as
                        // İ, which PostgreSQL folds to an ASCII one, matches only itself.
                        (DatabaseBackend::Sqlite, _) => variants
                            .iter()
                            .fold(Condition::any(), |any, variant| {
                                any.add(Expr::col(column).like(like(variant)))
                            })
                            .into(),
                        // Username keys are ASCII, stored lower-cased.
                        (_, Column::UsernameKey) => Expr::col(column).like(like(&pattern)),
                        // As the search text has them: lower-cased, final sigmas as σ.
                        _ => {
                            let lower = match column {
                                Column::Email => "email",
                                Column::FirstName => "lower(first_name)",
                                _ => "lower(last_name)",
                            };
                            Expr::cust(format!("translate({lower}, 'ς', 'σ')")).like(like(&pattern))
                        }
                    };
                    any = any.add(condition);
                }
                any
            };
            // The indexed form of the same search (see the search_text migration).
            all = match backend {
                // A phrase of trigrams matches within one field, folding case by Unicode's
                // rules, so it is the exact condition as well: SQLite's own `lower` and `LIKE`
                // fold ASCII letters only, and would miss "Émile" for "émile".
                DatabaseBackend::Sqlite if self.trigram_search() => all.add(Expr::cust_with_values(
                    "users.rowid IN (SELECT rowid FROM users_search WHERE users_search MATCH ?)",
                    [format!("\"{}\"", search.replace('"', "\"\""))],
                )),
                // The exact condition stays beside the index's, so a match across a field
                // boundary is never returned.
                DatabaseBackend::Postgres if self.trigram_search() => all.add(exact()).add(
                    Expr::cust_with_values(format!("({SEARCH_TEXT}) LIKE $1"), [pattern.clone()]),
                ),
                _ => all.add(exact()),
            };
        }
        if let Some(role) = self.role {
            all = all.add(Column::Role.eq(role));
        }
        if let Some(disabled) = self.disabled {
            all = all.add(Column::Disabled.eq(disabled));
        }
        all
    }
}

/// The expression PostgreSQL's search index is built on, exactly as the migration wrote it.
const SEARCH_TEXT: &str = "translate(username_key || E'\\n' || email || E'\\n' || \
    coalesce(lower(first_name), '') || E'\\n' || coalesce(lower(last_name), ''), 'ς', 'σ')";

/// A term lower-cased one character at a time, as PostgreSQL's `lower` does under a UTF-8
/// locale (İ becomes i, where Unicode writes i and a combining dot), with final sigmas as σ,
/// as the search text has them (see the search_sigma migration).
fn fold(term: &str) -> String {
    term.chars()
        .flat_map(|c| match c {
            'İ' => 'i'.to_lowercase(),
            c => c.to_lowercase(),
        })
        .map(|c| if c == 'ς' { 'σ' } else { c })
        .collect()
}

/// A `LIKE` pattern for text containing `term` literally.
fn contains(term: &str) -> String {
    format!("%{}%", escape_like(term))
}

/// `term` with each non-ASCII letter in each of its one-character cases (`Σ`, `σ`, `ς`): a
/// handful of forms for the one- and two-character terms SQLite matches without its index.
fn case_variants(term: &str) -> Vec<String> {
    let mut variants = vec![String::new()];
    for c in term.chars() {
        let mut forms = vec![c];
        if !c.is_ascii() {
            let lower = one_char(c.to_lowercase());
            let upper = one_char(c.to_uppercase());
            let relatives = [
                lower,
                upper,
                upper.and_then(|u| one_char(u.to_lowercase())),
                lower.and_then(|l| one_char(l.to_uppercase())),
            ];
            // Two cases no one-character mapping reaches: σ is written ς at a word's end,
            // and ß's capital ẞ upper-cases to SS.
            let extra = relatives
                .iter()
                .chain([&Some(c)])
                .find_map(|form| match form {
                    Some('σ') => Some('ς'),
                    Some('ß') => Some('ẞ'),
                    _ => None,
                });
            // ASCII forms are left to `LIKE`, which folds them itself; as a pattern they would
            // match every i for a Turkish ı (ı, I, i).
            for form in relatives.into_iter().flatten().chain(extra) {
                if !form.is_ascii() && !forms.contains(&form) {
                    forms.push(form);
                }
            }
        }
        variants = variants
            .iter()
            .flat_map(|prefix| forms.iter().map(move |form| format!("{prefix}{form}")))
            .collect();
    }
    variants
}

/// The character a case mapping gives, when it gives exactly one (`ß` upper-cases to `SS`).
fn one_char(mut mapped: impl Iterator<Item = char>) -> Option<char> {
    let c = mapped.next()?;
    mapped.next().is_none().then_some(c)
}

/// Makes `%`, `_` and the escape character itself match literally.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One keyset page: rows strictly after a cursor, in (created_at, id) order.
pub struct Page {
    pub users: Vec<User>,
    pub has_next: bool,
    /// Whether the page started after a cursor.
    pub has_previous: bool,
}

/// One keyset page: rows strictly after `after`, in (created_at, id) order. Fetches one extra
/// row to learn whether another page follows.
pub async fn page(
    db: &Db,
    filter: &Filter,
    after: Option<Position>,
    limit: u64,
) -> Result<Page, DbErr> {
    let mut query = Users::find().filter(filter.condition(db.backend()));
    if let Some(after) = after {
        // A row-value comparison: both databases walk the (created_at, id) index from the
        // cursor, whatever the page number.
        query = query.filter(
            Expr::tuple([
                Expr::col((Users, Column::CreatedAt)),
                Expr::col((Users, Column::Id)),
            ])
            .gt(Expr::tuple([Expr::value(after.at), Expr::value(after.id)])),
        );
    }
    let query = query
        .order_by_asc(Column::CreatedAt)
        .order_by_asc(Column::Id)
        .limit(limit + 1);
    let mut users = if searches_on_postgres(db.backend(), filter) {
        let tx = planned_for_values(db.conn()).await?;
        let users = query.all(&tx).await?;
        tx.commit().await?;
        users
    } else {
        query.all(db.conn()).await?
    };
    let has_next = users.len() as u64 > limit;
    users.truncate(limit as usize);
    Ok(Page {
        users,
        has_next,
        has_previous: after.is_some(),
    })
}

pub async fn count(db: &DatabaseConnection, filter: &Filter) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let query = Users::find().filter(filter.condition(backend));
    if searches_on_postgres(backend, filter) {
        let tx = planned_for_values(db).await?;
        let count = query.count(&tx).await?;
        tx.commit().await?;
        Ok(count)
    } else {
        query.count(db).await
    }
}

fn searches_on_postgres(backend: DatabaseBackend, filter: &Filter) -> bool {
    backend == DatabaseBackend::Postgres && filter.search.is_some()
}

/// A transaction whose statements PostgreSQL plans for the values they are given, every time.
/// A search's best plan depends on its term: collecting a rare term's few matches, walking
/// the creation order for a common one's. After five runs of a prepared statement on a
/// connection, PostgreSQL may settle on one generic plan for all terms, which collects and
/// sorts every match of a common term (hundreds of milliseconds at 100,000 users), on that
/// connection for as long as the pool keeps it. Only searches pay the round trips this takes:
/// every statement planned anew would cost `user(id)` about a third of its rate.
async fn planned_for_values(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let tx = db.begin().await?;
    tx.execute_unprepared("SET LOCAL plan_cache_mode = force_custom_plan")
        .await?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use sea_orm::{DatabaseBackend, EntityTrait, QueryFilter, QueryTrait};

    use super::*;

    #[test]
    fn short_terms_take_every_case_of_their_letters() {
        let mut sigma = case_variants("oΣ");
        sigma.sort();
        assert_eq!(sigma, ["oΣ", "oς", "oσ"]);
        assert_eq!(case_variants("ĳs").len(), 2);
        assert_eq!(case_variants("ß"), ["ß", "ẞ"]);
        assert_eq!(case_variants("ı"), ["ı"]);
        assert_eq!(fold("İstanbul"), "istanbul");
        assert_eq!(fold("ΟΣ"), "οσ");
        assert_eq!(fold("Σίσυφος"), "σίσυφοσ");
    }

    /// The indexed condition binds its own value, after the four exact `LIKE`s.
    #[test]
    fn search_binds_every_pattern() {
        let filter = Filter {
            search: Some("Ali%".into()),
            ..Filter::default()
        };
        for backend in [DatabaseBackend::Postgres, DatabaseBackend::Sqlite] {
            let statement = Users::find()
                .filter(filter.condition(backend))
                .build(backend);
            let values = statement.values.map(|v| v.0).unwrap_or_default();
            if backend == DatabaseBackend::Postgres {
                assert_eq!(values.len(), 5, "{}", statement.sql);
                assert!(statement.sql.contains(") LIKE $5"), "{}", statement.sql);
                assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
            } else {
                assert!(statement.sql.contains("MATCH ?"), "{}", statement.sql);
                assert_eq!(values, [sea_orm::Value::from("\"Ali%\"")]);
            }
        }
    }
}
