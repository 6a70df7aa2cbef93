//! A fresh database, seeded in bulk through rollcall's service layer.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use rand::seq::IndexedRandom;
use rollcall::config::Settings;
use rollcall::db::Role;
use rollcall::db::entities::user;
use rollcall::service::{ImportedUser, NewUser, Service};
use sea_orm::{ConnectionTrait, Database as SeaDatabase, EntityTrait, QueryOrder, QuerySelect};

use crate::DbKind;

pub const OWNER_PASSWORD: &str = "bench quiet harbour lanterns";
/// Seeded users share these few passwords, so seeding costs four hashes, not N.
const PASSWORDS: [&str; 4] = [
    "bench-password-0",
    "bench-password-1",
    "bench-password-2",
    "bench-password-3",
];
const ADMINS: usize = 10;
const IMPORT_BATCH: usize = 10_000;

pub struct Database {
    pub url: String,
    postgres: Option<(String, String)>,
}

impl Database {
    /// A new database called `label` (unique to this run).
    pub async fn create(
        kind: DbKind,
        postgres_url: &str,
        work_dir: &Path,
        label: &str,
    ) -> Result<Self> {
        match kind {
            DbKind::Sqlite => Ok(Self {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    work_dir.join(format!("{label}.db")).display()
                ),
                postgres: None,
            }),
            DbKind::Postgres => {
                let name = format!("rollcall_{label}_{}", std::process::id());
                let admin = SeaDatabase::connect(postgres_url)
                    .await
                    .with_context(|| format!("connecting to {postgres_url}"))?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
                    .await?;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await?;
                let _ = admin.close().await;
                let base = postgres_url
                    .rsplit_once('/')
                    .map_or(postgres_url, |(b, _)| b);
                Ok(Self {
                    // Loopback: every server under test talks to PostgreSQL without TLS.
                    url: format!("{base}/{name}?sslmode=disable"),
                    postgres: Some((postgres_url.to_owned(), name)),
                })
            }
        }
    }

    pub async fn drop_now(&self) {
        if let Some((admin_url, name)) = &self.postgres
            && let Ok(admin) = SeaDatabase::connect(admin_url.as_str()).await
        {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            let _ = admin.close().await;
        }
    }
}

pub struct Seeded {
    pub owner_login: String,
    /// (login, password) of seeded standard users.
    pub logins: Vec<(String, &'static str)>,
    pub sample_ids: Vec<String>,
    pub deep_page: usize,
    pub deep_cursor: String,
}

/// The service on a new database, with its owner (`owner`, [`OWNER_PASSWORD`]).
async fn service_with_owner(url: &str) -> Result<Service> {
    let service = Service::start(&Settings::with_database(url)).await?;
    let owner = NewUser {
        username: "owner".into(),
        email: "owner@example.com".into(),
        password: OWNER_PASSWORD.into(),
        ..NewUser::default()
    };
    service
        .create_user(None, owner, Role::Owner, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(service)
}

pub async fn seed(url: &str, users: usize) -> Result<Seeded> {
    let service = service_with_owner(url).await?;
    let mut admins = Vec::new();
    for i in 0..ADMINS {
        let admin = NewUser {
            username: format!("admin{i:02}"),
            email: format!("admin{i:02}@example.com"),
            password: OWNER_PASSWORD.into(),
            first_name: Some("Admin".into()),
            ..NewUser::default()
        };
        admins.push(
            service
                .create_user(None, admin, Role::Admin, None)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .id,
        );
    }
    let hashes: Vec<String> = PASSWORDS
        .iter()
        .map(|p| {
            Argon2::default()
                .hash_password(p.as_bytes())
                .map(|h| h.to_string())
        })
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    const FIRST: [&str; 6] = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald"];
    let mut ids = Vec::with_capacity(users);
    for start in (0..users).step_by(IMPORT_BATCH) {
        let batch = (start..(start + IMPORT_BATCH).min(users))
            .map(|i| ImportedUser {
                username: Some(format!("user{i:06}")),
                email: Some(format!("user{i:06}@example.com")),
                password_hash: Some(hashes[i % hashes.len()].clone()),
                first_name: Some(FIRST[i % FIRST.len()].into()),
                last_name: Some(format!("Tester{i}")),
                phone: Some(format!("+1555{i:07}")),
                role: Role::Standard,
                created_by: Some(admins[i % admins.len()]),
                unreadable: Vec::new(),
            })
            .collect();
        ids.extend(
            service
                .import_users(batch)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
    }
    let mut rng = rand::rng();
    let sample_ids = (0..1000)
        .filter_map(|_| ids.choose(&mut rng))
        .map(|id| id.to_string())
        .collect();
    let logins = (0..200.min(users))
        .map(|k| {
            let i = (k * 7919) % users;
            (format!("user{i:06}"), PASSWORDS[i % PASSWORDS.len()])
        })
        .collect();

    // The cursor that ends the page before the deep one: what a client paging 50 at a time
    // would hold after (deep_page - 1) pages.
    let total = users + ADMINS + 1;
    let deep_page = (total / 50).clamp(2, 2000);
    let before = user::Entity::find()
        .order_by_asc(user::Column::CreatedAt)
        .order_by_asc(user::Column::Id)
        .offset(((deep_page - 1) * 50 - 1) as u64)
        .limit(1)
        .one(service.db().conn())
        .await?
        .context("no row before the deep page")?;
    let deep_cursor = rollcall::graphql::encode_cursor(&before);
    settle(&service).await?;
    Ok(Seeded {
        owner_login: "owner".into(),
        logins,
        sample_ids,
        deep_page,
        deep_cursor,
    })
}

/// The table has just taken every row in bulk. Settle it as autovacuum soon would (planner
/// statistics, the trigram index's pending list), so that every scenario, and the peer, reads
/// the same settled table whenever autovacuum happens to run.
async fn settle(service: &Service) -> Result<()> {
    let settle = match service.db().backend() {
        sea_orm::DatabaseBackend::Postgres => "VACUUM ANALYZE users",
        _ => "ANALYZE",
    };
    service.db().conn().execute_unprepared(settle).await?;
    service.db().conn().clone().close().await?;
    Ok(())
}

/// A population whose usernames and emails share one prefix (`u100` … `u100099` for 100,000
/// users, `u100@example.com` …, no names; usernames need three characters, so it starts at
/// 100), where a search for a common fragment such as `u123` is hard
/// for a planner: every row holds some of its trigrams. Returns the owner's login.
pub async fn seed_common_prefix(url: &str, users: usize) -> Result<String> {
    let service = service_with_owner(url).await?;
    let hash = Argon2::default()
        .hash_password(PASSWORDS[0].as_bytes())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
        .to_string();
    let (first, end) = (100, 100 + users);
    for start in (first..end).step_by(IMPORT_BATCH) {
        let batch = (start..(start + IMPORT_BATCH).min(end))
            .map(|i| ImportedUser {
                username: Some(format!("u{i}")),
                email: Some(format!("u{i}@example.com")),
                password_hash: Some(hash.clone()),
                first_name: None,
                last_name: None,
                phone: None,
                role: Role::Standard,
                created_by: None,
                unreadable: Vec::new(),
            })
            .collect();
        service
            .import_users(batch)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    settle(&service).await?;
    Ok("owner".into())
}

/// argon2id verifies per second with rollcall's parameters on `threads` threads: the raw
/// computation, each thread reusing its working memory, so no allocator or server cost is
/// counted (a verify is recomputing the hash and comparing).
///
/// Counted the way wrk counts logins: only verifies finished inside the window, divided by
/// the window. A verify still running at its end is work neither side gets credit for.
pub fn argon2_rate(threads: usize, duration: Duration) -> f64 {
    let argon2 = Argon2::default();
    let salt = b"ceiling-salt-16b";
    let mut expected = [0u8; 32];
    let mut blocks = vec![argon2::Block::default(); argon2.params().block_count()];
    if argon2
        .hash_password_into_with_memory(b"ceiling-password", salt, &mut expected, &mut blocks)
        .is_err()
    {
        return 0.0;
    }
    let count = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut blocks = vec![argon2::Block::default(); argon2.params().block_count()];
                let mut output = [0u8; 32];
                while started.elapsed() < duration {
                    let ok = argon2
                        .hash_password_into_with_memory(
                            b"ceiling-password",
                            salt,
                            &mut output,
                            &mut blocks,
                        )
                        .is_ok();
                    if ok && output == expected && started.elapsed() <= duration {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    count.load(Ordering::Relaxed) as f64 / duration.as_secs_f64().max(f64::EPSILON)
}
