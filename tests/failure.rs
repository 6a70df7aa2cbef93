//! Failure and load: concurrent writers on SQLite, a server killed mid-write, a database that
//! goes away and comes back, and races that must leave exactly one winner.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::{StreamExt, stream};
use rollcall::auth::tokens::hash_token;
use rollcall::db::entities::{refresh_token, session, user};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait};
use serde_json::{Value, json};
use support::{
    Backend, CREATE_USER, ENABLE_TOTP, Gql, PASSWORD, REVOKE_SESSION, ServerProcess, Session,
    TestApp, TestDb, assert_code, assert_ok, error_code, eventually_every, new_user, run_or_kill,
};

/// Longest any single request may take before the test counts it as hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client for one server with a timeout on every request, whose requests may fail in
/// transport (the server was killed): [`Http::try_gql`] reports that instead of panicking.
#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    base_url: String,
}

impl Http {
    fn new(base_url: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("HTTP client"),
            base_url: base_url.to_owned(),
        }
    }

    /// Posts an operation. `Err` when no complete answer arrived; a status other than 200
    /// fails the test.
    async fn try_gql(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Result<Value, reqwest::Error> {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.base_url))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        assert_eq!(status, 200, "GraphQL responses are 200: {body}");
        Ok(body)
    }

    /// `GET path`: the status, or `Err` when no answer arrived.
    async fn status(&self, path: &str) -> Result<u16, reqwest::Error> {
        let response = self
            .client
            .get(format!("{}{path}", self.base_url))
            .send()
            .await?;
        Ok(response.status().as_u16())
    }
}

impl Gql for Http {
    async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        self.try_gql(token, query, variables)
            .await
            .unwrap_or_else(|err| panic!("request failed: {err}"))
    }
}

/// The variables of `register` for `name` with [`PASSWORD`].
fn registration(name: &str) -> Value {
    json!({"input": {
        "username": name,
        "email": format!("{name}@example.com"),
        "password": PASSWORD,
    }})
}

// ---------------------------------------------------------------------------------------------
// SQLite under concurrent writers

/// How long the concurrent writers write.
const WRITE_LOAD: Duration = Duration::from_secs(10);

/// What one writer did, and every response that had errors.
#[derive(Default)]
struct WriterReport {
    ops: HashMap<&'static str, usize>,
    failures: Vec<String>,
}

/// One of the concurrent writers: registers, then until `deadline` updates its own profile,
/// rotates its refresh token, logs in and registers further accounts, checking every answer.
async fn writer(http: &Http, w: usize, deadline: Instant) -> WriterReport {
    let mut report = WriterReport::default();
    let name = format!("writer{w}");
    let mut session = http.register(&name).await;
    let mut first_name = None;
    let mut n = 0usize;
    while Instant::now() < deadline {
        let (op, body) = match n % 6 {
            0 | 3 => {
                let value = format!("First{w}x{n}");
                let body = http
                    .update_user(&session, &session.id, json!({"firstName": value}))
                    .await;
                if body.get("errors").is_none() {
                    assert_eq!(body["data"]["updateUser"]["firstName"], value, "{body}");
                    first_name = Some(value);
                }
                ("updateUser", body)
            }
            1 | 4 => {
                let body = http.refresh(&session.refresh).await;
                if body.get("errors").is_none() {
                    session = Session::from_payload(&body, "refreshToken");
                }
                ("refreshToken", body)
            }
            2 => ("login", http.login(&name, PASSWORD).await),
            _ => {
                let other = format!("writer{w}-{n}");
                let body = http
                    .register_raw(&other, &format!("{other}@example.com"))
                    .await;
                ("register", body)
            }
        };
        *report.ops.entry(op).or_default() += 1;
        if body.get("errors").is_some() {
            report.failures.push(format!("writer {w}, {op}: {body}"));
        }
        n += 1;
    }
    // The last profile update this writer was told about is the one stored.
    let body = http.user_by_id(&session, &session.id).await;
    assert_ok(&body);
    assert_eq!(
        body["data"]["user"]["firstName"].as_str(),
        first_name.as_deref(),
        "writer {w}: {body}"
    );
    report
}

/// Sixteen clients write at once for ten seconds: registrations, logins, refresh rotations
/// and profile updates. SQLite has one writer at a time; every request waits its turn and
/// succeeds. A "database is locked" from SQLite would reach the client as
/// `INTERNAL_SERVER_ERROR`, so every response is checked for errors of any kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sixteen_concurrent_writers_all_succeed() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let server = ServerProcess::start(&db.url, &[]);
    let http = Http::new(&server.base_url);
    let owner = http.register("owner").await;
    let deadline = Instant::now() + WRITE_LOAD;
    let reports = join_all((0..16).map(|w| writer(&http, w, deadline))).await;

    let mut ops: HashMap<&str, usize> = HashMap::new();
    let mut failures = Vec::new();
    for report in reports {
        for (op, count) in report.ops {
            *ops.entry(op).or_default() += count;
        }
        failures.extend(report.failures);
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, the first: {:#?}",
        failures.len(),
        ops.values().sum::<usize>(),
        &failures[..failures.len().min(10)]
    );
    for op in ["updateUser", "refreshToken", "login", "register"] {
        assert!(
            ops.get(op).copied().unwrap_or(0) > 0,
            "no {op} ran: {ops:?}"
        );
    }
    eprintln!("16 writers for {WRITE_LOAD:?}: {ops:?}");

    // Every registration answered is there: the owner, 16 writers and their extra accounts.
    let body = http.users(&owner, json!({"first": 1})).await;
    assert_ok(&body);
    assert_eq!(
        body["data"]["users"]["totalCount"],
        1 + 16 + ops["register"],
        "{body}"
    );
    assert!(server.terminate().success());
}

// ---------------------------------------------------------------------------------------------
// SIGKILL mid-write

/// An account registered during the load, as its worker last heard of it.
struct Registered {
    name: String,
    id: String,
    access: String,
    /// The newest refresh token answered for the registration's session.
    refresh: String,
    /// A rotation of `refresh` was sent and not answered.
    rotation_pending: bool,
    /// `deleteUser` of itself was answered.
    deleted: bool,
    /// `deleteUser` of itself was sent and not answered.
    delete_pending: bool,
}

/// What one registering worker was told before the server died.
#[derive(Default)]
struct RegistrationLog {
    users: Vec<Registered>,
    /// A registration sent and not answered.
    pending: Option<String>,
}

/// What the worker transferring ownership was told before the server died.
struct OwnershipLog {
    /// Indexes into the people who take turns at owning, in the order they became owner; the
    /// first is the original owner.
    owners: Vec<usize>,
    /// A transfer to this person was sent and not answered.
    pending: Option<usize>,
}

#[derive(Default)]
struct Progress {
    answered: AtomicUsize,
    transfers: AtomicUsize,
    deletes: AtomicUsize,
    /// Set just before the server is sent SIGKILL.
    killed: AtomicBool,
}

impl Progress {
    /// The answer to a request of the load, or `None` when the server died first. A request
    /// left unanswered before the kill fails the test.
    async fn answer(
        &self,
        request: impl std::future::Future<Output = Result<Value, reqwest::Error>>,
    ) -> Option<Value> {
        match request.await {
            Ok(body) => {
                self.answered.fetch_add(1, Ordering::Relaxed);
                Some(body)
            }
            Err(err) => {
                assert!(
                    self.killed.load(Ordering::SeqCst),
                    "a request went unanswered before the kill: {err}"
                );
                None
            }
        }
    }
}

/// Registers accounts until the server dies: each rotates its refresh token twice, and every
/// third deletes itself. Any answered error fails the test; no answer ends the worker.
async fn registering_worker(http: &Http, w: usize, progress: &Progress) -> RegistrationLog {
    let mut log = RegistrationLog::default();
    for n in 0.. {
        let name = format!("crash{w}-{n}");
        let Some(body) = progress
            .answer(http.try_gql(None, support::REGISTER, registration(&name)))
            .await
        else {
            log.pending = Some(name);
            return log;
        };
        let session = Session::from_payload(&body, "register");
        log.users.push(Registered {
            name,
            id: session.id,
            access: session.access,
            refresh: session.refresh,
            rotation_pending: false,
            deleted: false,
            delete_pending: false,
        });
        let user = log.users.last_mut().expect("just pushed");
        for _ in 0..2 {
            let Some(body) = progress
                .answer(http.try_gql(None, support::REFRESH, json!({"t": user.refresh})))
                .await
            else {
                user.rotation_pending = true;
                return log;
            };
            let rotated = Session::from_payload(&body, "refreshToken");
            user.access = rotated.access;
            user.refresh = rotated.refresh;
        }
        if n % 3 == 2 {
            let Some(body) = progress
                .answer(http.try_gql(
                    Some(&user.access),
                    support::DELETE_USER,
                    json!({"id": user.id}),
                ))
                .await
            else {
                user.delete_pending = true;
                return log;
            };
            assert_ok(&body);
            assert_eq!(body["data"]["deleteUser"], user.id.as_str(), "{body}");
            progress.deletes.fetch_add(1, Ordering::Relaxed);
            user.deleted = true;
        }
    }
    unreachable!("the loop ends when the server dies")
}

/// Passes ownership around `people` until the server dies: the owner transfers it to the
/// next person, who logs in (the transfer ended the sessions of both) and does the same.
async fn ownership_worker(
    http: &Http,
    people: &[(String, String)],
    owner: Session,
    progress: &Progress,
) -> OwnershipLog {
    let mut log = OwnershipLog {
        owners: vec![0],
        pending: None,
    };
    let mut session = owner;
    loop {
        let current = *log.owners.last().expect("an owner");
        let next = (current + 1) % people.len();
        let Some(body) = progress
            .answer(http.try_gql(
                Some(&session.access),
                support::SET_ROLE,
                json!({"id": people[next].1, "role": "OWNER"}),
            ))
            .await
        else {
            log.pending = Some(next);
            return log;
        };
        assert_eq!(body["data"]["setRole"]["role"], "OWNER", "{body}");
        progress.transfers.fetch_add(1, Ordering::Relaxed);
        log.owners.push(next);
        let Some(body) = progress
            .answer(http.try_gql(
                None,
                support::LOGIN,
                json!({"input": {"login": people[next].0, "password": PASSWORD}}),
            ))
            .await
        else {
            return log;
        };
        session = Session::from_payload(&body, "login");
        assert_eq!(session.role, "OWNER");
    }
}

/// Every table read back directly, for checks the API cannot make.
struct Snapshot {
    users: HashMap<String, user::Model>,
    sessions: Vec<session::Model>,
    tokens: Vec<refresh_token::Model>,
}

async fn snapshot(conn: &DatabaseConnection) -> Snapshot {
    let users = user::Entity::find()
        .all(conn)
        .await
        .expect("read users")
        .into_iter()
        .map(|u| (u.id.to_string(), u))
        .collect();
    Snapshot {
        users,
        sessions: session::Entity::find()
            .all(conn)
            .await
            .expect("read sessions"),
        tokens: refresh_token::Entity::find()
            .all(conn)
            .await
            .expect("read refresh tokens"),
    }
}

/// The server is killed with SIGKILL in the middle of a write load (registrations, refresh
/// rotations, ownership transfers, self-deletions) and started again on the same database.
/// Everything it answered as done is there, whole; what was in flight is either fully there
/// or not at all.
async fn sigkill_mid_load_loses_nothing_answered(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = ServerProcess::start(&db.url, &[]);
    let http = Http::new(&server.base_url);

    let owner = http.register("owner").await;
    let mut people = vec![("owner".to_owned(), owner.id.clone())];
    for i in 1..=4 {
        let name = format!("heir{i}");
        let id = http.create_user(&owner, &name, "STANDARD").await;
        people.push((name, id));
    }

    let progress = Progress::default();
    let killer = async {
        // Only a wait: the load runs until enough of every kind of write was answered.
        eventually_every(
            "the write load to get going",
            Duration::from_secs(60),
            Duration::from_millis(10),
            async || {
                progress.answered.load(Ordering::Relaxed) >= 150
                    && progress.transfers.load(Ordering::Relaxed) >= 3
                    && progress.deletes.load(Ordering::Relaxed) >= 3
            },
        )
        .await;
        progress.killed.store(true, Ordering::SeqCst);
        let status = server.kill();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "SIGKILL ends the server: {status:?}"
        );
    };
    let (_, ownership, registrations) = tokio::join!(
        killer,
        ownership_worker(&http, &people, owner, &progress),
        join_all((0..7).map(|w| registering_worker(&http, w, &progress))),
    );

    // Started again on the same database, without any repair. A reuse grace of a millisecond:
    // a rotation committed just before the kill must show as spent, not be answered again.
    let server = ServerProcess::start(&db.url, &[("ROLLCALL_REFRESH_REUSE_GRACE", "1ms")]);
    let http = Http::new(&server.base_url);
    let conn = sea_orm::Database::connect(db.url.as_str())
        .await
        .expect("connect to the test database");
    if backend == Backend::Sqlite {
        let row = conn
            .query_one_raw(sea_orm::Statement::from_string(
                conn.get_database_backend(),
                "PRAGMA integrity_check",
            ))
            .await
            .expect("integrity check")
            .expect("a row");
        let result: String = row.try_get_by_index(0).expect("text");
        assert_eq!(result, "ok");
    }
    let db_state = snapshot(&conn).await;

    // Exactly one owner: the last one answered, or the target of the transfer in flight.
    let owners: Vec<&user::Model> = db_state
        .users
        .values()
        .filter(|u| u.role == rollcall::db::Role::Owner)
        .collect();
    assert_eq!(owners.len(), 1, "owners: {owners:?}");
    // What was in flight at the kill, and whether it was written: printed, for the record.
    let mut in_flight = Vec::new();
    let written = |yes: bool| if yes { "written" } else { "not written" };
    let mut chain = ownership.owners.clone();
    let last = *chain.last().expect("an owner");
    let owner_index = people
        .iter()
        .position(|(_, id)| *id == owners[0].id.to_string())
        .expect("the owner is one of the people taking turns");
    if owner_index != last {
        assert_eq!(
            Some(owner_index),
            ownership.pending,
            "the owner is neither the last one answered ({last}) nor the pending target"
        );
        chain.push(owner_index);
    }
    if let Some(target) = ownership.pending {
        in_flight.push(format!(
            "transfer to {}: {}",
            people[target].0,
            written(target == owner_index)
        ));
    }
    // Everyone who owned before is an admin (each transfer demotes in the same transaction);
    // the others are untouched.
    for (i, (name, id)) in people.iter().enumerate() {
        let expected = if i == owner_index {
            rollcall::db::Role::Owner
        } else if chain.contains(&i) {
            rollcall::db::Role::Admin
        } else {
            rollcall::db::Role::Standard
        };
        assert_eq!(db_state.users[id].role, expected, "{name}");
    }

    // Each registration answered is there and logs in, unless it was answered as deleted;
    // a registration in flight is wholly there or not at all.
    let mut registered = Vec::new();
    let mut pending_names = HashSet::new();
    for log in registrations {
        registered.extend(log.users);
        pending_names.extend(log.pending);
    }
    let by_name: HashMap<&str, &user::Model> = db_state
        .users
        .values()
        .map(|u| (u.username.as_str(), u))
        .collect();
    let expected_names: HashSet<&str> = people
        .iter()
        .map(|(name, _)| name.as_str())
        .chain(registered.iter().map(|u| u.name.as_str()))
        .chain(pending_names.iter().map(String::as_str))
        .collect();
    for name in by_name.keys() {
        assert!(expected_names.contains(name), "unexpected user {name}");
    }
    let sessions_of = |id: &str| -> Vec<&session::Model> {
        db_state
            .sessions
            .iter()
            .filter(|s| s.user_id.to_string() == id)
            .collect()
    };
    let mut to_log_in: Vec<(String, String)> = Vec::new();
    let mut live = Vec::new();
    for user in &registered {
        let exists = db_state.users.contains_key(&user.id);
        if user.deleted {
            assert!(!exists, "{} was answered as deleted", user.name);
        } else if !exists {
            assert!(
                user.delete_pending,
                "{} was answered as registered and is gone",
                user.name
            );
        }
        if user.delete_pending {
            in_flight.push(format!("deletion of {}: {}", user.name, written(!exists)));
        }
        if exists {
            to_log_in.push((user.name.clone(), user.id.clone()));
            live.push(user);
        } else {
            assert!(sessions_of(&user.id).is_empty(), "{}'s sessions", user.name);
        }
    }
    for name in &pending_names {
        if let Some(user) = by_name.get(name.as_str()) {
            to_log_in.push((name.clone(), user.id.to_string()));
        }
        in_flight.push(format!(
            "registration of {name}: {}",
            written(by_name.contains_key(name.as_str()))
        ));
    }

    // Every session is whole: it belongs to a user and has exactly one unused refresh token
    // (a login or registration writes the session with its first token, and a rotation marks
    // one used and adds its successor in one transaction).
    let session_ids: HashSet<String> = db_state.sessions.iter().map(|s| s.id.to_string()).collect();
    for s in &db_state.sessions {
        assert!(
            db_state.users.contains_key(&s.user_id.to_string()),
            "session {} of a missing user",
            s.id
        );
        let unused = db_state
            .tokens
            .iter()
            .filter(|t| t.session_id == s.id && t.used_at.is_none())
            .count();
        assert_eq!(
            unused, 1,
            "session {} has {unused} unused refresh tokens",
            s.id
        );
    }
    for t in &db_state.tokens {
        assert!(
            session_ids.contains(&t.session_id.to_string()),
            "refresh token of a missing session"
        );
    }

    // The newest refresh token answered works, unless its rotation was in flight and
    // committed; then it is spent and its session holds the successor. Access tokens issued
    // before the crash still work (the signing key is in the database).
    for user in &live {
        let row = db_state
            .tokens
            .iter()
            .find(|t| t.token_hash == hash_token(&user.refresh))
            .unwrap_or_else(|| panic!("{}'s newest refresh token is missing", user.name));
        let body = http.me(&user.access).await;
        assert_eq!(body["data"]["me"]["username"], user.name.as_str(), "{body}");
        let body = http.refresh(&user.refresh).await;
        if user.rotation_pending {
            in_flight.push(format!(
                "rotation for {}: {}",
                user.name,
                written(row.used_at.is_some())
            ));
        }
        if row.used_at.is_none() {
            assert_ok(&body);
        } else {
            assert!(
                user.rotation_pending,
                "{}'s newest answered refresh token was spent",
                user.name
            );
            assert_code(&body, "UNAUTHENTICATED");
        }
    }
    // Answered deletions hold through the API too.
    for user in registered.iter().filter(|u| u.deleted) {
        assert_code(&http.login(&user.name, PASSWORD).await, "UNAUTHENTICATED");
        assert_code(&http.me(&user.access).await, "UNAUTHENTICATED");
    }
    // Everyone who is there logs in, with the password given at registration.
    let failed_logins: Vec<String> = stream::iter(to_log_in)
        .map(|(name, id)| {
            let http = &http;
            async move {
                let body = http.login(&name, PASSWORD).await;
                let got = body["data"]["login"]["user"]["id"].as_str();
                (got != Some(id.as_str())).then(|| format!("{name}: {body}"))
            }
        })
        .buffer_unordered(4)
        .filter_map(|failed| async move { failed })
        .collect()
        .await;
    assert!(failed_logins.is_empty(), "{failed_logins:#?}");

    // The API agrees: one owner, and as many users as the tables hold.
    let owner = http.login_as(&people[owner_index].0).await;
    assert_eq!(owner.role, "OWNER");
    let body = http
        .users(&owner, json!({"first": 1, "filter": {"role": "OWNER"}}))
        .await;
    assert_eq!(body["data"]["users"]["totalCount"], 1, "{body}");
    let body = http.users(&owner, json!({"first": 1})).await;
    assert_eq!(
        body["data"]["users"]["totalCount"],
        db_state.users.len(),
        "{body}"
    );
    eprintln!(
        "{backend:?}: killed after {} answered writes ({} transfers, {} deletions); {} users; \
         in flight: {in_flight:?}",
        progress.answered.load(Ordering::Relaxed),
        progress.transfers.load(Ordering::Relaxed),
        progress.deletes.load(Ordering::Relaxed),
        db_state.users.len()
    );
    let _ = conn.close().await;
    assert!(server.terminate().success());
}

/// A role change checked while its caller was the owner, but waiting for its target's row
/// while the ownership moved on, is refused: the caller is checked again under the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_role_change_waiting_out_a_transfer_is_refused() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let owner = app.register("owner").await;
    let target = app.create_user(&owner, "target", "STANDARD").await;
    let heir = app.create_user(&owner, "heir", "STANDARD").await;
    // What a transfer commits, held open, with the target's row locked as well; released once
    // the request, past its checks as the owner, waits for a row lock.
    let transfer = [
        format!("UPDATE users SET role = 'ADMIN' WHERE id = '{}'", owner.id),
        format!("UPDATE users SET role = 'OWNER' WHERE id = '{heir}'"),
        format!("SELECT id FROM users WHERE id = '{target}' FOR UPDATE"),
    ];
    let body = app
        .while_held(&transfer, 1, app.set_role(&owner, &target, "ADMIN"))
        .await;
    assert_code(&body, "FORBIDDEN");
    let role = app
        .count(&format!(
            "SELECT count(*) FROM users WHERE id = '{target}' AND role = 'STANDARD'"
        ))
        .await;
    assert_eq!(role, 1, "the target kept its role");
}

/// Deleting a user beside a role change of a user they created: neither waits on the other for
/// good, and the created user's `createdBy` reads as null once its creator is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_deleting_a_creator_beside_a_role_change_of_its_user_does_not_deadlock() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let alice = app.register("alice").await;
    let creator = app.user_with_role(&alice, "creator", "ADMIN").await;
    let created = app.create_user(&creator, "created", "STANDARD").await;
    // An owner whose id sorts after `created`'s, so a role change locks `created` first.
    let heir = app.create_user(&alice, "heir", "STANDARD").await;
    assert_ok(&app.set_role(&alice, &heir, "OWNER").await);
    let owner = app.login_as("heir").await;
    assert!(created < heir, "ids are ordered by creation");

    // Holds the deletion after its users are locked and before its row goes; the role change
    // starts once the deletion waits, and both are let go once it waits too.
    let hold = ["LOCK TABLE api_tokens IN EXCLUSIVE MODE".to_owned()];
    let deletion = app.delete_user(&owner, &creator.id);
    let change = async {
        app.until_waiting_for_locks(1).await;
        app.set_role(&owner, &created, "ADMIN").await
    };
    let (deleted, changed) = app
        .while_held(&hold, 2, async { tokio::join!(deletion, change) })
        .await;
    assert_ok(&deleted);
    assert_eq!(changed["data"]["setRole"]["role"], "ADMIN", "{changed}");
    let orphan = app
        .gql(
            Some(&owner.access),
            "query($id: ID!) { user(id: $id) { role createdBy { id } } }",
            json!({"id": created}),
        )
        .await;
    assert_eq!(
        orphan["data"]["user"],
        json!({"role": "ADMIN", "createdBy": null}),
        "{orphan}"
    );
}

/// Deleting the account many users were created by (an import may attribute thousands to one
/// admin) writes none of their rows on PostgreSQL: it fits the database timeout (one second
/// here, which rewriting 15,000 rows with their search index entries outlasts), and their
/// `createdBy` reads as null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_deleting_the_creator_of_many_users_writes_none_of_them() {
    let Some(app) = postgres_with_a_short_db_timeout().await else {
        return;
    };
    let owner = app.register("owner").await;
    let creator = app.create_user(&owner, "creator", "ADMIN").await;
    let db = app.database().await;
    db.execute_unprepared(&format!(
        "INSERT INTO users (id, username, username_key, email, password_hash, role, disabled, \
         created_at, updated_at, created_by) \
         SELECT gen_random_uuid(), 'made' || n, 'made' || n, 'made' || n || '@example.com', \
         password_hash, 'STANDARD', false, created_at, updated_at, id \
         FROM users, generate_series(1, 15000) AS n WHERE id = '{creator}'"
    ))
    .await
    .expect("users attributed to the creator");
    let _ = db.close().await;
    assert_ok(&app.delete_user(&owner, &creator).await);
    // Their rows were not written: they keep the id, which names no account now.
    let kept = format!("SELECT count(*) FROM users WHERE created_by = '{creator}'");
    assert_eq!(app.count(&kept).await, 15_000);
    let made = app
        .gql(
            Some(&owner.access),
            "{ user(username: \"made15000\") { createdBy { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(made["data"]["user"], json!({"createdBy": null}), "{made}");
}

/// An admin demoted while a request of theirs waits for their row is refused by it: creating a
/// user, issuing a token for a standard user, ending one's session. The demotion is held open
/// until each request waits for the row, then committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_manager_demoted_mid_request_is_refused() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let owner = app.register("owner").await;
    let adele = app.user_with_role(&owner, "adele", "ADMIN").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    let bob_session = app
        .count(&format!(
            "SELECT count(*) FROM sessions WHERE user_id = '{}' AND revoked_at IS NULL",
            bob.id
        ))
        .await;
    assert_eq!(bob_session, 1);
    let db = app.database().await;
    let session_id: uuid::Uuid = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!("SELECT id FROM sessions WHERE user_id = '{}'", bob.id),
        ))
        .await
        .expect("query")
        .expect("a session")
        .try_get_by_index(0)
        .expect("an id");
    let requests = [
        (CREATE_USER, json!({"input": new_user("carol", "STANDARD")})),
        (
            "mutation($id: ID!) { createApiToken(name: \"ci\", userId: $id) { token } }",
            json!({"id": bob.id}),
        ),
        (REVOKE_SESSION, json!({"id": session_id.to_string()})),
    ];
    let demotion = [format!(
        "UPDATE users SET role = 'STANDARD' WHERE id = '{}'",
        adele.id
    )];
    for (query, variables) in requests {
        let request = app.gql(Some(&adele.access), query, variables);
        assert_code(&app.while_held(&demotion, 1, request).await, "FORBIDDEN");
        db.execute_unprepared(&format!(
            "UPDATE users SET role = 'ADMIN' WHERE id = '{}'",
            adele.id
        ))
        .await
        .expect("restore");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE username = 'carol'")
            .await,
        0
    );
    assert_eq!(app.count("SELECT count(*) FROM api_tokens").await, 0);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM sessions WHERE id = '{session_id}' AND revoked_at IS NULL"
        ))
        .await,
        1
    );
    let _ = db.close().await;
}

/// A write whose session is revoked while it waits for the caller's row is refused: a
/// revocation committed before the write's lock ends what the session had started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_session_revoked_mid_request_writes_nothing() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let owner = app.register("owner").await;
    let adele = app.user_with_role(&owner, "adele", "ADMIN").await;
    // What `revokeSession` does: lock the session's user, then end the session.
    let revocation = [
        format!("SELECT id FROM users WHERE id = '{}' FOR UPDATE", adele.id),
        format!(
            "UPDATE sessions SET revoked_at = now() WHERE user_id = '{}'",
            adele.id
        ),
    ];
    let request = app.create_user_raw(&adele, new_user("carol", "STANDARD"));
    assert_code(
        &app.while_held(&revocation, 1, request).await,
        "UNAUTHENTICATED",
    );
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE username = 'carol'")
            .await,
        0
    );
}

/// An ownership transfer that waits for a lock writes its audit entries after the wait, so an
/// entry committed meanwhile (here a registration) is not newer than the transfer's: a reader
/// paging the trail newest first in between cannot pass them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_waiting_transfer_writes_its_audit_entries_last() {
    use sea_orm::TransactionTrait;

    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let owner = app.register("owner").await;
    let heir = app.user_with_role(&owner, "heir", "ADMIN").await;
    let db = app.database().await;
    let hold = db.begin().await.expect("begin");
    hold.execute_unprepared(&format!(
        "SELECT id FROM sessions WHERE user_id = '{}' FOR UPDATE",
        heir.id
    ))
    .await
    .expect("hold the heir's sessions");
    let transfer = app.set_role(&owner, &heir.id, "OWNER");
    let meanwhile = async {
        app.until_waiting_for_locks(1).await;
        app.register("carol").await;
        hold.commit().await.expect("release");
    };
    let (body, ()) = tokio::join!(transfer, meanwhile);
    assert_ok(&body);
    let newer = "SELECT count(*) FROM audit_log WHERE action = 'ROLE_CHANGED' AND at > \
                 (SELECT at FROM audit_log WHERE action = 'USER_REGISTERED' ORDER BY at DESC LIMIT 1)";
    assert_eq!(
        app.count(newer).await,
        2,
        "both entries of the transfer come after"
    );
    let _ = db.close().await;
}

/// The server's PostgreSQL connections say whose they are, so an operator can tell them apart
/// in `pg_stat_activity`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_are_named() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    app.register("alice").await;
    let named = "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name = 'rollcall'";
    assert!(app.count(named).await >= 1);
}

/// A login whose password was right but that ended unfinished (here: timed out waiting for
/// the user's row, which the test holds) is no failed attempt: its count is taken back, so
/// clients retrying through a slow database do not throttle the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_unfinished_login_with_the_right_password_is_not_counted() {
    use sea_orm::TransactionTrait;

    // Long enough for the registration on a busy machine, short for the test.
    let Some(app) = TestApp::spawn_with(Backend::Postgres, |s| {
        s.request_timeout = Duration::from_secs(3);
    })
    .await
    else {
        return;
    };
    let alice = app.register("alice").await;
    let login = json!({"input": {"login": "alice", "password": PASSWORD}});
    let db = app.database().await;
    let hold = db.begin().await.expect("begin");
    hold.execute_unprepared(&format!(
        "SELECT id FROM users WHERE id = '{}' FOR UPDATE",
        alice.id
    ))
    .await
    .expect("hold the row");
    let subject = format!("user:{}", alice.id);
    for _ in 0..3 {
        // The round before has stopped waiting, so the wait seen below is this round's.
        support::eventually("no lock waits", async || {
            app.count(support::LOCK_WAITS).await == 0
        })
        .await;
        let sent = app
            .post()
            .json(&json!({"query": support::LOGIN, "variables": login}))
            .send();
        // Each one checked its password and reached the row: it timed out there, not before.
        let (response, ()) = tokio::join!(sent, app.until_waiting_for_locks(1));
        let response = response.expect("sent");
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.expect("json");
        assert_code(&body, "TIMEOUT");
    }
    hold.rollback().await.expect("release the row");
    support::eventually("the attempts taken back", async || {
        app.failures(&subject).await == 0
    })
    .await;
    assert_ok(&app.gql(None, support::LOGIN, login).await);
    let _ = db.close().await;
}

/// A login the database failed after its password checked is taken back, though the first
/// try to take it back fails too (as it does on a connection the same failure broke): the
/// take-back is tried again, and the right password is not left counted as a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_take_back_the_database_refuses_is_tried_again() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let alice = app.register("alice").await;
    let subject = format!("user:{}", alice.id);
    let db = app.database().await;
    // Sessions cannot be opened, and the count cannot go down, until the test says so; the
    // sequence counts the refused take-backs outside their rolled-back transactions.
    db.execute_unprepared(
        "CREATE SEQUENCE refused_take_backs;
         CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
         CREATE FUNCTION refuse_take_back() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM nextval('refused_take_backs');
                RAISE EXCEPTION 'refused by the test'; END $$;
         CREATE TRIGGER no_sessions BEFORE INSERT ON sessions
             FOR EACH ROW EXECUTE FUNCTION refuse();
         CREATE TRIGGER no_take_backs BEFORE UPDATE ON credential_failures
             FOR EACH ROW WHEN (NEW.failures < OLD.failures) EXECUTE FUNCTION refuse_take_back();
         CREATE TRIGGER no_forgetting BEFORE DELETE ON credential_failures
             FOR EACH ROW EXECUTE FUNCTION refuse_take_back();",
    )
    .await
    .expect("triggers");
    let login = json!({"input": {"login": "alice", "password": PASSWORD}});
    let body = app.gql(None, support::LOGIN, login.clone()).await;
    assert_code(&body, "INTERNAL_SERVER_ERROR");
    support::eventually("a take-back refused", async || {
        app.count("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM refused_take_backs")
            .await
            > 0
    })
    .await;
    assert_eq!(app.failures(&subject).await, 1);
    db.execute_unprepared(
        "DROP TRIGGER no_take_backs ON credential_failures;
         DROP TRIGGER no_forgetting ON credential_failures; DROP TRIGGER no_sessions ON sessions",
    )
    .await
    .expect("drop triggers");
    support::eventually("the attempt taken back", async || {
        app.failures(&subject).await == 0
    })
    .await;
    assert_ok(&app.gql(None, support::LOGIN, login).await);
    let _ = db.close().await;
}

/// A logout by refresh token takes the session's user's row as every revocation does, so a
/// write of theirs holding it (here the test's lock) finishes before the session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_logout_waits_for_a_write_holding_the_user() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let alice = app.register("alice").await;
    let write = [format!(
        "SELECT id FROM users WHERE id = '{}' FOR UPDATE",
        alice.id
    )];
    let logout = app.logout(&alice.refresh);
    let body = app.while_held(&write, 1, logout).await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    let me = app
        .gql(Some(&alice.access), "{ me { id } }", json!({}))
        .await;
    assert_code(&me, "UNAUTHENTICATED");
}

/// A refresh takes its user's row before its token and session, as a deletion of that user
/// does, so the two cannot deadlock: when they meet (here both held behind the test's lock on
/// the row, the refresh first) they take the row in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_refresh_and_a_deletion_of_its_user_take_the_row_in_turn() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let owner = app.register("owner").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    let hold = [format!(
        "SELECT id FROM users WHERE id = '{}' FOR UPDATE",
        bob.id
    )];
    let refresh = app.refresh(&bob.refresh);
    let deletion = async {
        app.until_waiting_for_locks(1).await;
        app.gql(
            Some(&owner.access),
            "mutation($id: ID!) { deleteUser(id: $id) }",
            json!({"id": bob.id}),
        )
        .await
    };
    let (refreshed, deleted) = app
        .while_held(&hold, 2, async { tokio::join!(refresh, deletion) })
        .await;
    assert_ok(&refreshed);
    assert_eq!(deleted["data"]["deleteUser"], bob.id.as_str(), "{deleted}");
    let again = refreshed["data"]["refreshToken"]["refreshToken"]
        .as_str()
        .expect("a new refresh token");
    assert_code(&app.refresh(again).await, "UNAUTHENTICATED");
}

/// `user promote-owner` racing a transfer through the API (held open by the test until the
/// command waits for the owner's row) reads the owner again and hands ownership on from the
/// new one: one owner, and no unique-index failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_promoting_an_owner_beside_a_transfer_reads_the_owner_again() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let alice = app.register("alice").await;
    let bob = app.user_with_role(&alice, "bob", "ADMIN").await;
    let carol = app.user_with_role(&alice, "carol", "ADMIN").await;
    let transfer = [
        format!("UPDATE users SET role = 'ADMIN' WHERE id = '{}'", alice.id),
        format!("UPDATE users SET role = 'OWNER' WHERE id = '{}'", carol.id),
    ];
    let promotion = app.server().service.promote_owner("bob");
    let promoted = app
        .while_held(&transfer, 1, promotion)
        .await
        .expect("bob is promoted");
    assert_eq!(promoted.0.id.to_string(), bob.id);
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE role = 'OWNER'")
            .await,
        1
    );
    let carol_now = app
        .count(&format!(
            "SELECT count(*) FROM users WHERE id = '{}' AND role = 'ADMIN'",
            carol.id
        ))
        .await;
    assert_eq!(carol_now, 1, "the owner of the moment became an admin");
}

/// An edit decides what it changes on the row as it is once locked: a value it sends back as
/// it read it, changed meanwhile by another edit (held open by the test), is written after
/// that one; a value the other edit already set is not written or audited again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_edit_decides_its_changes_on_the_locked_row() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let owner = app.register("owner").await;
    let bob = app.create_user(&owner, "bob", "STANDARD").await;
    assert_ok(
        &app.update_user(&owner, &bob, json!({"firstName": "Robert"}))
            .await,
    );
    let other_edit = [format!(
        "UPDATE users SET first_name = 'Bobby', last_name = 'Builder' WHERE id = '{bob}'"
    )];
    let edit = app.update_user(
        &owner,
        &bob,
        json!({"firstName": "Robert", "lastName": "Builder", "phone": "+1 555 0100"}),
    );
    let body = app.while_held(&other_edit, 1, edit).await;
    assert_ok(&body);
    let user = &body["data"]["updateUser"];
    assert_eq!(user["firstName"], "Robert", "{body}");
    assert_eq!(user["lastName"], "Builder", "{body}");
    let audited = app
        .count(&format!(
            "SELECT count(*) FROM audit_log WHERE action = 'USER_UPDATED' AND target_id = '{bob}' \
             AND fields = 'firstName,phone'"
        ))
        .await;
    assert_eq!(audited, 1, "the edit's fields as it made them");
}

/// A statement stopped by its timeout (the database timeout, one second here) is answered
/// `TIMEOUT` like a request past its own, not as an internal error: when the request's timeout
/// is the shorter the two run out together, and the answer must not depend on which fires
/// first. Nothing of the edit is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_statement_past_its_timeout_is_answered_timeout() {
    use sea_orm::TransactionTrait;

    let Some(app) = postgres_with_a_short_db_timeout().await else {
        return;
    };
    let owner = app.register("owner").await;
    let bob = app.create_user(&owner, "bob", "STANDARD").await;
    let db = app.database().await;
    let hold = db.begin().await.expect("begin");
    hold.execute_unprepared(&format!(
        "SELECT id FROM users WHERE id = '{bob}' FOR UPDATE"
    ))
    .await
    .expect("hold the row");
    let body = app
        .update_user(&owner, &bob, json!({"firstName": "Robert"}))
        .await;
    hold.rollback().await.expect("release the row");
    let _ = db.close().await;
    assert_code(&body, "TIMEOUT");
    let unchanged = app
        .count(&format!(
            "SELECT count(*) FROM users WHERE id = '{bob}' AND first_name IS NULL"
        ))
        .await;
    assert_eq!(unchanged, 1);
}

/// On SQLite, a write kept waiting past its busy timeout by another process's write lock is
/// `TIMEOUT`, as a statement past its timeout is on PostgreSQL, not an internal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_write_kept_waiting_by_another_process_is_answered_timeout() {
    use sea_orm::TransactionTrait;

    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.db_timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let owner = app.register("owner").await;
    let bob = app.create_user(&owner, "bob", "STANDARD").await;
    let db = app.database().await;
    let hold = db.begin().await.expect("begin");
    hold.execute_unprepared("UPDATE users SET updated_at = updated_at")
        .await
        .expect("take the write lock");
    let body = app
        .update_user(&owner, &bob, json!({"firstName": "Robert"}))
        .await;
    hold.rollback().await.expect("release the lock");
    let _ = db.close().await;
    assert_code(&body, "TIMEOUT");
}

/// The same inside a field its request's loader resolves: the batch's statement past its
/// timeout is `TIMEOUT` at that field, like one outside a loader, not an internal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_loader_statement_past_its_timeout_is_answered_timeout() {
    use sea_orm::TransactionTrait;

    let Some(app) = postgres_with_a_short_db_timeout().await else {
        return;
    };
    let owner = app.register("owner").await;
    let db = app.database().await;
    let hold = db.begin().await.expect("begin");
    // Only the loader of `totpEnabled` reads this table.
    hold.execute_unprepared("LOCK TABLE user_totp IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("hold the table");
    let body = app
        .gql(
            Some(&owner.access),
            "{ me { username totpEnabled } }",
            json!({}),
        )
        .await;
    hold.rollback().await.expect("release the table");
    let _ = db.close().await;
    assert_code(&body, "TIMEOUT");
    assert_eq!(body["errors"][0]["path"], json!(["me", "totpEnabled"]));
    assert_eq!(body["data"]["me"]["username"], "owner");
}

/// A login answers and audits the role its user has once the login commits: one changed
/// while it hashed the password (held open by the test) is the one its session acts with,
/// and the entry is shown to admins by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_login_records_the_role_changed_while_it_ran() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let owner = app.register("owner").await;
    let bob = app.create_user(&owner, "bob", "STANDARD").await;
    let promotion = [format!(
        "UPDATE users SET role = 'ADMIN' WHERE id = '{bob}'"
    )];
    let body = app
        .while_held(&promotion, 1, app.login("bob", PASSWORD))
        .await;
    assert_ok(&body);
    assert_eq!(body["data"]["login"]["user"]["role"], "ADMIN", "{body}");
    let audited = app
        .count(&format!(
            "SELECT count(*) FROM audit_log WHERE action = 'LOGGED_IN' AND target_id = '{bob}' \
             AND target_role = 'ADMIN' AND actor_role = 'ADMIN'"
        ))
        .await;
    assert_eq!(
        audited, 1,
        "the login audited with the role it signed in with"
    );
}

/// An email sent back in another spelling of the stored address is no change, and it is not
/// written either: an email change committed meanwhile (held open by the test) stands, since
/// undoing it would take the step-up verification this edit was never asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_email_sent_back_respelt_does_not_undo_a_change_made_meanwhile() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let owner = app.register("owner").await;
    let bob = app.create_user(&owner, "bob", "STANDARD").await;
    let other_edit = [format!(
        "UPDATE users SET email = 'robert@example.com' WHERE id = '{bob}'"
    )];
    let edit = app.update_user(
        &owner,
        &bob,
        json!({"email": "Bob@Example.com", "firstName": "Robert"}),
    );
    let body = app.while_held(&other_edit, 1, edit).await;
    assert_ok(&body);
    let user = &body["data"]["updateUser"];
    assert_eq!(user["email"], "robert@example.com", "{body}");
    assert_eq!(user["firstName"], "Robert", "{body}");
    let audited = app
        .count(&format!(
            "SELECT count(*) FROM audit_log WHERE action = 'USER_UPDATED' AND target_id = '{bob}' \
             AND fields = 'firstName'"
        ))
        .await;
    assert_eq!(audited, 1, "the edit's fields as it made them");
}

/// `disableTotp` verified by password drops only a pending setup: one confirmed while the
/// request ran (here held between the check and the removal) stays on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_password_never_removes_a_factor_confirmed_meanwhile() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let alice = app.register("alice").await;
    assert_ok(&app.gql(Some(&alice.access), ENABLE_TOTP, json!({})).await);
    let confirmation = [format!(
        "UPDATE user_totp SET confirmed_at = now() WHERE user_id = '{}'",
        alice.id
    )];
    let request = app.gql(
        Some(&alice.access),
        "mutation($v: VerificationInput!) { disableTotp(verification: $v) }",
        json!({"v": {"password": PASSWORD}}),
    );
    let body = app.while_held(&confirmation, 1, request).await;
    assert_code(&body, "VERIFICATION_REQUIRED");
    let on = app
        .gql(Some(&alice.access), "{ me { totpEnabled } }", json!({}))
        .await;
    assert_eq!(on["data"]["me"]["totpEnabled"], true, "{on}");
}

/// Two two-factor setups started at once take turns on the caller's row: both answer with a
/// setup, and the one left pending is the second's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_setups_at_once_both_start() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let alice = app.register("alice").await;
    let hold = [format!(
        "SELECT id FROM users WHERE id = '{}' FOR UPDATE",
        alice.id
    )];
    let first = app.gql(Some(&alice.access), ENABLE_TOTP, json!({}));
    let second = app.gql(Some(&alice.access), ENABLE_TOTP, json!({}));
    let (first, second) = app
        .while_held(&hold, 2, async { tokio::join!(first, second) })
        .await;
    assert_ok(&first);
    assert_ok(&second);
    let pending = app
        .count(&format!(
            "SELECT count(*) FROM user_totp WHERE user_id = '{}' AND confirmed_at IS NULL",
            alice.id
        ))
        .await;
    assert_eq!(pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkill_mid_load_loses_nothing_answered() {
    sigkill_mid_load_loses_nothing_answered(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkill_mid_load_loses_nothing_answered() {
    sigkill_mid_load_loses_nothing_answered(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL outage

/// A PostgreSQL cluster of the test's own in a temporary directory, on a free loopback port;
/// stopped and removed when dropped, also when the test fails.
struct PrivateCluster {
    dir: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    /// Run the server binaries as the `postgres` system user (they refuse to run as root).
    as_postgres: bool,
}

impl PrivateCluster {
    /// `None` (after a message) when PostgreSQL's server binaries are not installed, unless
    /// `ROLLCALL_REQUIRE_POSTGRES=1`, where that fails the test.
    fn create() -> Option<Self> {
        let Some(bin) = find_initdb() else {
            if std::env::var("ROLLCALL_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("PostgreSQL required but initdb was not found");
            }
            eprintln!("skipping: initdb not found (PATH, /usr/lib/postgresql/*/bin)");
            return None;
        };
        let as_postgres = command_output("id", &["-u"]) == "0";
        let dir = std::env::temp_dir().join(format!("rollcall-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cluster = Self {
            data: dir.join("data"),
            dir,
            bin,
            port,
            as_postgres,
        };
        if as_postgres {
            let status = std::process::Command::new("chown")
                .args(["postgres:", &cluster.dir.display().to_string()])
                .status()
                .expect("chown runs");
            assert!(status.success(), "chown the cluster dir to postgres");
        }
        let output = run_or_kill(
            &mut cluster.command(
                "initdb",
                &[
                    "-D",
                    &cluster.data.display().to_string(),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
            ),
            "initdb",
        );
        assert!(
            output.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(cluster)
    }

    /// `program` from the server binaries, as the `postgres` user when we are root.
    fn command(&self, program: &str, args: &[&str]) -> std::process::Command {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            std::process::Command::new(path)
        };
        command.args(args).current_dir(&self.dir);
        command
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Command {
        let data = self.data.display().to_string();
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        self.command("pg_ctl", &all)
    }

    /// Starts the server and waits until it accepts connections.
    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").display().to_string();
        let output = run_or_kill(
            &mut self.pg_ctl(&["-o", &options, "-l", &log, "-w", "-t", "30", "start"]),
            "pg_ctl start",
        );
        assert!(
            output.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server in `mode` (`fast`: disconnects clients, `immediate`: as a crash).
    fn stop(&self, mode: &str) {
        let output = run_or_kill(
            &mut self.pg_ctl(&["-m", mode, "-w", "-t", "30", "stop"]),
            "pg_ctl stop",
        );
        assert!(
            output.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // No panics here: this may run while a failed test unwinds.
        let pid_file = self.data.join("postmaster.pid");
        if pid_file.exists() {
            let stopped = self
                .pg_ctl(&["-m", "immediate", "-w", "-t", "20", "stop"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()
                .and_then(|mut child| wait_briefly(&mut child, Duration::from_secs(30)));
            if !stopped.is_some_and(|status| status.success()) {
                // pg_ctl failed or hung: end the postmaster by its recorded PID.
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|text| text.lines().next().map(str::to_owned))
                    .filter(|pid| pid.parse::<u32>().is_ok())
                {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &pid])
                        .status();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits up to `limit` for `child`; kills it and answers `None` after that.
fn wait_briefly(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The directory holding `initdb`: on the PATH, or Debian's versioned directories (newest).
fn find_initdb() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(dir) = on_path.into_iter().find(|dir| dir.join("initdb").is_file()) {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// `ROLLCALL_DB_TIMEOUT` in the outage test.
const DB_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a request may take to fail while the database is gone.
const OUTAGE_BOUND: Duration = Duration::from_secs(6);

const UP: u8 = 0;
const STOPPING: u8 = 1;
const DOWN: u8 = 2;
const STARTING: u8 = 3;
const BACK: u8 = 4;
/// Phases per outage: the phase of outage `n` is `n * PHASES + UP` and so on.
const PHASES: u8 = 5;

/// One request of the load during the outage test.
struct Outcome {
    op: &'static str,
    sent: u8,
    answered: u8,
    elapsed: Duration,
    body: Value,
}

/// Panics unless `body` failed the way a request fails while the database is gone: with
/// `INTERNAL_SERVER_ERROR` (or `SERVICE_UNAVAILABLE`) and nothing of the driver's text.
#[track_caller]
fn assert_outage_error(body: &Value, what: &str) {
    let code = error_code(body);
    assert!(
        matches!(code, Some("INTERNAL_SERVER_ERROR" | "SERVICE_UNAVAILABLE")),
        "{what}: {body}"
    );
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    if code == Some("INTERNAL_SERVER_ERROR") {
        assert_eq!(message, rollcall::error::INTERNAL_MESSAGE, "{what}: {body}");
    }
    let text = body.to_string().to_lowercase();
    for driver in [
        "sqlx",
        "pool",
        "connection refused",
        "os error",
        "error returned from database",
        "terminating connection",
        "io error",
        "closed",
    ] {
        assert!(
            !text.contains(driver),
            "{what}: driver text {driver:?}: {body}"
        );
    }
    assert!(body["data"].is_null(), "{what}: {body}");
}

/// Keeps registering, logging in and asking `me` until `stop`; records every answer.
async fn outage_worker(
    http: Http,
    w: usize,
    known: Session,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicU8>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
) {
    let mut n = 0usize;
    while stop.load(Ordering::Relaxed) == 0 {
        let sent = phase.load(Ordering::SeqCst);
        let started = Instant::now();
        let (op, body) = match n % 3 {
            0 => {
                let name = format!("load{w}-{n}");
                let body = http
                    .try_gql(None, support::REGISTER, registration(&name))
                    .await;
                ("register", body)
            }
            1 => (
                "login",
                http.try_gql(
                    None,
                    support::LOGIN,
                    json!({"input": {"login": "before", "password": PASSWORD}}),
                )
                .await,
            ),
            _ => (
                "me",
                http.try_gql(Some(&known.access), support::ME, json!({}))
                    .await,
            ),
        };
        let body = body.unwrap_or_else(|err| panic!("{op} got no answer: {err}"));
        outcomes.lock().expect("outcomes").push(Outcome {
            op,
            sent,
            answered: phase.load(Ordering::SeqCst),
            elapsed: started.elapsed(),
            body,
        });
        n += 1;
    }
}

/// Asks `op` once with the database gone, and checks it fails in time and cleanly.
async fn fails_in_time(what: &str, request: impl std::future::Future<Output = Value>) {
    let started = Instant::now();
    let body = request.await;
    let elapsed = started.elapsed();
    assert_outage_error(&body, what);
    assert!(
        elapsed <= OUTAGE_BOUND,
        "{what} took {elapsed:?} to fail (bound {OUTAGE_BOUND:?})"
    );
}

/// PostgreSQL goes away under load and comes back, twice: stopped cleanly, then as in a crash
/// (`pg_ctl stop -m immediate`). While it is away every request fails
/// within a bound with `INTERNAL_SERVER_ERROR` and no driver text, and `/ready` answers 503;
/// once it is back, the same server process serves again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_fails_fast_and_recovers() {
    let Some(cluster) = PrivateCluster::create() else {
        return;
    };
    cluster.start();
    let timeout = format!("{}s", DB_TIMEOUT.as_secs());
    // Up to five logins of one account run at once here (four workers and this task), and the
    // account throttle counts each before its check: a burst as the database comes back must
    // not read as five failures.
    let server = ServerProcess::start(
        &cluster.url(),
        &[
            ("ROLLCALL_DB_TIMEOUT", &timeout),
            ("ROLLCALL_THROTTLE_AFTER", "100"),
        ],
    );
    let http = Http::new(&server.base_url);
    let owner = http.register("owner").await;
    let before = http.register("before").await;
    assert_eq!(http.status("/ready").await.expect("ready answers"), 200);

    let phase = Arc::new(AtomicU8::new(UP));
    let stop = Arc::new(AtomicU8::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(outage_worker(
                http.clone(),
                w,
                before.clone(),
                phase.clone(),
                stop.clone(),
                outcomes.clone(),
            ))
        })
        .collect();
    let answered_in = |sent: u8| {
        let outcomes = outcomes.clone();
        move || {
            outcomes
                .lock()
                .expect("outcomes")
                .iter()
                .filter(|o| o.sent == sent && o.answered == sent)
                .count()
        }
    };

    // Two outages: a clean shutdown (clients are told) and a crash (connections just end).
    for (cycle, mode) in [(0u8, "fast"), (1, "immediate")] {
        let at = |p: u8| cycle * PHASES + p;
        phase.store(at(UP), Ordering::SeqCst);
        let up = answered_in(at(UP));
        eventually_every(
            "answers with the database up",
            Duration::from_secs(30),
            Duration::from_millis(10),
            async || up() >= 12,
        )
        .await;

        phase.store(at(STOPPING), Ordering::SeqCst);
        tokio::task::block_in_place(|| cluster.stop(mode));
        phase.store(at(DOWN), Ordering::SeqCst);
        // Each fails on its own within the bound, asked all at once.
        let ready = async {
            let started = Instant::now();
            let status = http.status("/ready").await.expect("ready answers");
            (status, started.elapsed())
        };
        let (_, _, _, _, _, (status, elapsed)) = tokio::join!(
            fails_in_time(
                "register",
                http.register_raw("during", "during@example.com")
            ),
            fails_in_time("login", http.login("before", PASSWORD)),
            fails_in_time("me", http.me(&before.access)),
            fails_in_time("refreshToken", http.refresh(&before.refresh)),
            fails_in_time("users", http.users(&owner, json!({"first": 5}))),
            ready,
        );
        assert_eq!(status, 503, "/ready with the database down");
        assert!(elapsed <= OUTAGE_BOUND, "/ready took {elapsed:?}");
        assert_eq!(http.status("/health").await.expect("health answers"), 200);
        let down = answered_in(at(DOWN));
        eventually_every(
            "answers with the database down",
            Duration::from_secs(30),
            Duration::from_millis(10),
            async || down() >= 4,
        )
        .await;

        phase.store(at(STARTING), Ordering::SeqCst);
        tokio::task::block_in_place(|| cluster.start());
        // Only a wait: the pool reconnects on its own, and `/ready` says when it has.
        eventually_every(
            "/ready 200 after the restart",
            Duration::from_secs(30),
            Duration::from_millis(100),
            async || http.status("/ready").await.expect("ready answers") == 200,
        )
        .await;
        phase.store(at(BACK), Ordering::SeqCst);

        // The same process serves again: old accounts and tokens, new registrations.
        let again = http.login_as("before").await;
        assert_eq!(again.id, before.id);
        let me = http.me(&before.access).await;
        assert_eq!(me["data"]["me"]["username"], "before", "{me}");
        let after = http.register(&format!("after{cycle}")).await;
        assert_eq!(after.role, "STANDARD");
        assert_ok(&http.refresh(&again.refresh).await);
        let back = answered_in(at(BACK));
        eventually_every(
            "answers with the database back",
            Duration::from_secs(30),
            Duration::from_millis(10),
            async || back() >= 12,
        )
        .await;
    }
    stop.store(1, Ordering::Relaxed);
    for worker in workers {
        tokio::time::timeout(REQUEST_TIMEOUT, worker)
            .await
            .expect("worker stops")
            .expect("worker succeeded");
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));
    let mut registered = Vec::new();
    for o in &outcomes {
        let what = format!(
            "{} sent in phase {} answered in {}",
            o.op, o.sent, o.answered
        );
        assert!(
            o.elapsed <= OUTAGE_BOUND,
            "{what} took {:?}: {}",
            o.elapsed,
            o.body
        );
        if o.body.get("errors").is_some() {
            assert_outage_error(&o.body, &what);
        }
        if o.sent == o.answered {
            match o.sent % PHASES {
                UP | BACK => assert_ok(&o.body),
                DOWN => assert!(o.body.get("errors").is_some(), "{what}: {}", o.body),
                _ => {}
            }
        }
        if o.op == "register" && o.body.get("errors").is_none() {
            registered.push(o.body["data"]["register"]["user"]["username"].clone());
        }
    }
    // Every registration answered, before or between the outages, survived them.
    for name in registered {
        let name = name.as_str().expect("a username");
        assert_eq!(http.login_as(name).await.role, "STANDARD");
    }
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.body.get("errors").is_some())
        .collect();
    eprintln!(
        "outage: {} requests, {} failed, slowest failure {:?}",
        outcomes.len(),
        failed.len(),
        failed.iter().map(|o| o.elapsed).max()
    );
    assert!(server.terminate().success());
    tokio::task::block_in_place(|| cluster.stop("fast"));
}

/// A relay to the test's PostgreSQL server that can stop passing bytes without closing a
/// connection, as a stalled network does: the database's own timeouts cannot fire then.
struct StallingRelay {
    /// The test database's URL, through the relay.
    url: String,
    stalled: Arc<AtomicBool>,
    accepting: tokio::task::JoinHandle<()>,
}

impl StallingRelay {
    async fn start(database_url: &str) -> Self {
        let mut url = reqwest::Url::parse(database_url).expect("database URL");
        let upstream = format!(
            "{}:{}",
            url.host_str().expect("database host"),
            url.port().unwrap_or(5432)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay port");
        let port = listener.local_addr().expect("relay address").port();
        url.set_host(Some("127.0.0.1")).expect("relay host");
        url.set_port(Some(port)).expect("relay port");
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (flag, upstream) = (flag.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        Self::pass(client_read, server_write, flag.clone()),
                        Self::pass(server_read, client_write, flag),
                    );
                });
            }
        });
        Self {
            url: url.to_string(),
            stalled,
            accepting,
        }
    }

    async fn pass(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        stalled: Arc<AtomicBool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            while stalled.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    fn stall(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }
}

impl Drop for StallingRelay {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// `/ready` asks the database, and a database that stops answering mid-connection (the
/// network stalls, so no statement timeout fires) makes it answer 503 within the database
/// timeout, not hang until the network comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ready_answers_in_time_when_the_network_stalls() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let relay = StallingRelay::start(&db.url).await;
    let timeout = format!("{}s", DB_TIMEOUT.as_secs());
    let server = ServerProcess::start(&relay.url, &[("ROLLCALL_DB_TIMEOUT", &timeout)]);
    let http = Http::new(&server.base_url);
    assert_eq!(http.status("/ready").await.expect("ready answers"), 200);

    relay.stall(true);
    let started = Instant::now();
    let status = http.status("/ready").await.expect("ready answers");
    let elapsed = started.elapsed();
    assert_eq!(status, 503, "/ready with the database not answering");
    assert!(elapsed <= OUTAGE_BOUND, "/ready took {elapsed:?}");
    let status = http.status("/ready").await.expect("ready answers");
    assert_eq!(status, 503, "/ready with the database still not answering");

    relay.stall(false);
    eventually_every(
        "/ready 200",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || http.status("/ready").await.expect("ready answers") == 200,
    )
    .await;
    // The outage is logged when it begins and when it ends, not once per probe.
    let lines = server.log_lines_until("the database is ready again");
    let warned = lines
        .iter()
        .filter(|line| line.contains("readiness check: database unavailable"))
        .count();
    assert_eq!(warned, 1, "{lines:#?}");
    drop(server);
}

/// PostgreSQL ends every connection (a restart or a failover): once the pooled connections
/// have sat idle a second, the pool finds them dead before use, and no request fails on one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_ended_by_the_database_are_replaced_before_use() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let server = ServerProcess::start(&db.url, &[]);
    let http = Http::new(&server.base_url);
    let user = http.register("owner").await;
    // Several connections in the pool.
    for body in join_all((0..12).map(|_| http.me(&user.access))).await {
        assert_ok(&body);
    }
    let admin = sea_orm::Database::connect(db.url.as_str())
        .await
        .expect("connect");
    let ended = admin
        .execute_unprepared(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await
        .expect("end the server's connections");
    assert!(ended.rows_affected() >= 1, "the server held connections");
    let _ = admin.close().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for i in 0..20 {
        let body = http.me(&user.access).await;
        assert!(
            body.get("errors").is_none(),
            "request {i} after the database ended its connections: {body}"
        );
    }
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// Races

/// The owner transfers ownership to five users at once, three times over: exactly one transfer
/// wins each time, the others are refused and change nothing.
async fn simultaneous_ownership_transfers_leave_one_owner(app: TestApp) {
    let owner = app.register("owner").await;
    let mut people = vec![("owner".to_owned(), owner.id.clone())];
    for i in 1..=5 {
        let name = format!("heir{i}");
        let id = app.create_user(&owner, &name, "STANDARD").await;
        people.push((name, id));
    }
    let mut roles: Vec<&str> = vec![
        "OWNER", "STANDARD", "STANDARD", "STANDARD", "STANDARD", "STANDARD",
    ];
    let mut current = 0;
    for round in 0..3 {
        let session = app.login_as(&people[current].0).await;
        let targets: Vec<usize> = (0..people.len()).filter(|i| *i != current).collect();
        let bodies = join_all(
            targets
                .iter()
                .map(|t| app.set_role(&session, &people[*t].1, "OWNER")),
        )
        .await;
        let winners: Vec<usize> = targets
            .iter()
            .zip(&bodies)
            .filter(|(_, body)| body.get("errors").is_none())
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {bodies:#?}");
        for body in bodies.iter().filter(|b| b.get("errors").is_some()) {
            // FORBIDDEN when the loser was authenticated before the winner committed (its
            // caller is no longer the owner), UNAUTHENTICATED after (the winner ended the
            // caller's sessions).
            assert!(
                matches!(error_code(body), Some("FORBIDDEN" | "UNAUTHENTICATED")),
                "round {round}: {body}"
            );
            assert!(body["data"].is_null(), "round {round}: {body}");
        }
        let winner = winners[0];
        roles[current] = "ADMIN";
        roles[winner] = "OWNER";
        for (i, (name, _)) in people.iter().enumerate() {
            let session = app.login_as(name).await;
            assert_eq!(session.role, roles[i], "round {round}: {name}");
        }
        let new_owner = app.login_as(&people[winner].0).await;
        let body = app
            .users(&new_owner, json!({"first": 1, "filter": {"role": "OWNER"}}))
            .await;
        assert_eq!(
            body["data"]["users"]["totalCount"], 1,
            "round {round}: {body}"
        );
        current = winner;
    }
}

/// Eight registrations of one username (in different cases, usernames are case-insensitive)
/// at once create exactly one account; the others are told the username is taken. The same
/// for one email under different usernames.
async fn simultaneous_registrations_create_one_account(app: TestApp) {
    let owner = app.register("owner").await;
    for round in 0..3 {
        let base = format!("same{round}");
        let names: Vec<String> = (0..8)
            .map(|i| match i % 3 {
                0 => base.clone(),
                1 => base.to_uppercase(),
                _ => format!("Same{round}"),
            })
            .collect();
        let bodies = join_all(names.iter().enumerate().map(|(i, name)| {
            let email = format!("{base}-{i}@example.com");
            let app = &app;
            async move { app.register_raw(name, &email).await }
        }))
        .await;
        let won = one_winner(&bodies, "username", &format!("round {round}"));
        let session = Session::from_payload(&bodies[won], "register");
        let me = app.me(&app.login_as(&base).await.access).await;
        assert_eq!(me["data"]["me"]["id"], session.id.as_str(), "{me}");
        assert_eq!(
            me["data"]["me"]["email"],
            format!("{base}-{won}@example.com"),
            "{me}"
        );
        let body = app.users(&owner, json!({"filter": {"search": base}})).await;
        assert_eq!(body["data"]["users"]["totalCount"], 1, "{body}");

        let email = format!("shared{round}@example.com");
        let bodies = join_all((0..8).map(|i| {
            let (app, email) = (&app, &email);
            async move { app.register_raw(&format!("mail{round}-{i}"), email).await }
        }))
        .await;
        let won = one_winner(&bodies, "email", &format!("round {round}"));
        let session = Session::from_payload(&bodies[won], "register");
        let me = app.me(&app.login_as(&email).await.access).await;
        assert_eq!(me["data"]["me"]["id"], session.id.as_str(), "{me}");
        let body = app
            .users(
                &owner,
                json!({"filter": {"search": format!("mail{round}-")}}),
            )
            .await;
        assert_eq!(body["data"]["users"]["totalCount"], 1, "{body}");
    }
}

/// Exactly one of `bodies` succeeded; every other is a `CONFLICT` naming `field` only.
/// Returns the winner's index.
fn one_winner(bodies: &[Value], field: &str, what: &str) -> usize {
    let winners: Vec<usize> = (0..bodies.len())
        .filter(|i| bodies[*i].get("errors").is_none())
        .collect();
    assert_eq!(winners.len(), 1, "{what}: {bodies:#?}");
    for body in bodies.iter().filter(|b| b.get("errors").is_some()) {
        assert_code(body, "CONFLICT");
        let fields = &body["errors"][0]["extensions"]["fields"];
        assert_eq!(
            fields.as_object().map(|f| f.keys().collect::<Vec<_>>()),
            Some(vec![&field.to_owned()]),
            "{what}: {body}"
        );
    }
    winners[0]
}

backend_tests!(
    simultaneous_ownership_transfers_leave_one_owner,
    simultaneous_registrations_create_one_account,
);

/// A server on PostgreSQL whose statements time out after a second.
async fn postgres_with_a_short_db_timeout() -> Option<TestApp> {
    TestApp::spawn_with(Backend::Postgres, |s| {
        s.db_timeout = Duration::from_secs(1);
    })
    .await
}

/// Out of file descriptors, the server says so in one log line a minute, not one per retry of
/// its accept (every 50 ms), and serves again once descriptors are free.
#[tokio::test]
async fn accept_errors_are_logged_once_a_minute() {
    use std::os::unix::process::CommandExt;

    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let mut command = support::rollcall_command(&db.url, &[]);
    // SAFETY: the child calls only setrlimit, which is async-signal-safe, before it execs.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let server = ServerProcess::spawn_command(command).listening();
    let address = server.base_url.trim_start_matches("http://").to_owned();
    let held: Vec<std::net::TcpStream> = (0..100)
        .filter_map(|_| std::net::TcpStream::connect(&address).ok())
        .collect();
    server.log_lines_until("accept error");
    // Some forty retries.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines: Vec<String> = server
        .log_lines_until("accept error")
        .into_iter()
        .filter(|line| line.contains("accept error"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("Too many open files"), "{lines:#?}");
    drop(held);
    support::eventually("serving again", async || {
        server.status("/health").await == reqwest::StatusCode::OK
    })
    .await;
    server.terminate();
}
