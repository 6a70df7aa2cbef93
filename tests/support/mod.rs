//! Shared test support: start the real server on a random loopback port against a fresh
//! database (SQLite file or PostgreSQL database), and speak GraphQL over HTTP to it.
//!
//! PostgreSQL tests skip with a message when no server is reachable, unless
//! `ROLLCALL_REQUIRE_POSTGRES=1` (as in CI), where they fail instead.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use rollcall::config::Settings;
use rollcall::server::RunningServer;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery";

/// The tests' HTTP client: a request unanswered for a minute fails its test instead of
/// hanging it.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// A time long past, as an SQL literal of this database's timestamp type: for ageing rows
    /// past any retention or expiry.
    pub fn long_ago(self) -> &'static str {
        match self {
            Backend::Sqlite => "'2000-01-01T00:00:00+00:00'",
            Backend::Postgres => "TIMESTAMPTZ '2000-01-01 00:00:00+00'",
        }
    }
}

/// Runs `$check` (an `async fn(TestApp)`) once per backend, as `sqlite::$check` and
/// `postgres::$check`. `$check with $tweak` first passes the settings through `$tweak`.
#[macro_export]
macro_rules! backend_tests {
    ($($check:ident $(with $tweak:expr)?),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    #[allow(unused_mut, unused_assignments)]
                    let mut tweak: fn(&mut rollcall::config::Settings) = |_| {};
                    $( tweak = $tweak; )?
                    if let Some(app) = $crate::support::TestApp::spawn_with(
                        $crate::support::Backend::Sqlite, tweak).await {
                        super::$check(app).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    #[allow(unused_mut, unused_assignments)]
                    let mut tweak: fn(&mut rollcall::config::Settings) = |_| {};
                    $( tweak = $tweak; )?
                    if let Some(app) = $crate::support::TestApp::spawn_with(
                        $crate::support::Backend::Postgres, tweak).await {
                        super::$check(app).await;
                    }
                }
            )*
        }
    };
}

/// A database made for one test and removed when the test ends.
pub struct TestDb {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(PathBuf),
    Postgres { admin_url: String, name: String },
}

/// On PostgreSQL: how many statements of the current database wait for a lock.
pub const LOCK_WAITS: &str = "SELECT count(*) FROM pg_stat_activity \
                              WHERE datname = current_database() AND wait_event_type = 'Lock'";

impl TestDb {
    /// The database file of a SQLite test database.
    pub fn sqlite_file(&self) -> std::path::PathBuf {
        let path = self.url.trim_start_matches("sqlite://");
        path.split('?').next().unwrap_or(path).into()
    }

    /// A connection of its own, as another program would open.
    pub async fn connect(&self) -> sea_orm::DatabaseConnection {
        Database::connect(self.url.as_str())
            .await
            .expect("connect to the test database")
    }

    /// Runs `sql` (one statement or several) over a connection of its own, as another
    /// program or an operator would.
    pub async fn execute(&self, sql: &str) {
        let db = self.connect().await;
        db.execute_unprepared(sql).await.expect(sql);
        let _ = db.close().await;
    }

    /// The first row `sql` returns, over a connection of its own.
    pub async fn query_one(&self, sql: &str) -> sea_orm::QueryResult {
        let db = self.connect().await;
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                sql,
            ))
            .await
            .expect("query")
            .expect("a row");
        let _ = db.close().await;
        row
    }

    pub async fn create(backend: Backend) -> Option<Self> {
        Self::create_with(backend, "").await
    }

    /// A database made with `options` after PostgreSQL's `CREATE DATABASE name` (a locale,
    /// a template); SQLite's take none.
    pub async fn create_with(backend: Backend, options: &str) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir =
                    std::env::temp_dir().join(format!("rollcall-test-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&dir).expect("create temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.join("test.db").display());
                Some(Self {
                    url,
                    cleanup: Cleanup::Dir(dir),
                })
            }
            Backend::Postgres => {
                let admin_url = std::env::var("ROLLCALL_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let admin = match tokio::time::timeout(
                    Duration::from_secs(5),
                    Database::connect(admin_url.as_str()),
                )
                .await
                {
                    Ok(Ok(conn)) => conn,
                    failure => {
                        let reason = match failure {
                            Ok(Err(err)) => err.to_string(),
                            _ => "timed out".into(),
                        };
                        if std::env::var("ROLLCALL_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                            panic!("PostgreSQL required but unreachable at {admin_url}: {reason}");
                        }
                        eprintln!("skipping: no PostgreSQL at {admin_url} ({reason})");
                        return None;
                    }
                };
                let name = format!("rollcall_test_{}", uuid::Uuid::new_v4().simple());
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name} {options}"))
                    .await
                    .expect("create test database");
                let _ = admin.close().await;
                let base = admin_url
                    .rsplit_once('/')
                    .map_or(admin_url.as_str(), |(b, _)| b);
                Some(Self {
                    url: format!("{base}/{name}"),
                    cleanup: Cleanup::Postgres { admin_url, name },
                })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Drop runs inside the test's runtime; a thread of its own may block.
                let _ = std::thread::spawn(move || {
                    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    runtime.block_on(async {
                        if let Ok(admin) = Database::connect(admin_url.as_str()).await {
                            let _ = admin
                                .execute_unprepared(&format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                ))
                                .await;
                            let _ = admin.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// A running server with its own database.
pub struct TestApp {
    pub backend: Backend,
    pub settings: Settings,
    pub server: Option<RunningServer>,
    pub client: reqwest::Client,
    // Declared last: dropped after the server is gone.
    pub db: TestDb,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Option<Self> {
        let db = TestDb::create(backend).await?;
        let mut settings = Settings::with_database(db.url.clone());
        // Tests log in far more often than a person; the tests of the limit turn it back on.
        settings.ip_rate_limit = 0;
        tweak(&mut settings);
        let server = RunningServer::start(&settings)
            .await
            .expect("server starts");
        Some(Self {
            backend,
            settings,
            server: Some(server),
            client: http_client(),
            db,
        })
    }

    /// Another server on the same database, as a second instance behind a load balancer.
    pub async fn second_instance(&self) -> RunningServer {
        RunningServer::start(&self.settings)
            .await
            .expect("second server starts")
    }

    /// Requests to `server` (another instance on this app's database) with this app's client.
    pub fn at(&self, server: &RunningServer) -> Endpoint {
        Endpoint {
            client: self.client.clone(),
            base_url: format!("http://{}", server.addr),
        }
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.server().addr)
    }

    /// Sends `request` as written (`{address}` in it becomes the server's) and returns the status line and body of the answer.
    pub async fn raw_exchange(&self, request: &str) -> String {
        let mut stream = self.send_raw(request).await;
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
        )
        .await
        .expect("answered and closed")
        .expect("read");
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Sends `request` as written (`{address}` in it becomes the server's) and returns the
    /// first part of the answer to arrive, within five seconds, the connection left open.
    pub async fn first_answer(&self, request: &str) -> String {
        let mut stream = self.send_raw(request).await;
        let mut answer = vec![0; 4096];
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut stream, &mut answer),
        )
        .await
        .expect("answered while the connection is open")
        .expect("read");
        String::from_utf8_lossy(&answer[..read]).into_owned()
    }

    /// A new connection that `request` was written to, `{address}` in it the server's.
    async fn send_raw(&self, request: &str) -> tokio::net::TcpStream {
        let base = self.base_url();
        let address = base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let request = request.replace("{address}", address);
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .expect("write");
        stream
    }

    pub fn statement_count(&self) -> u64 {
        self.server().service.db().statement_count()
    }

    /// The text of `/metrics`, read from loopback.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.base_url()))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        response.text().await.expect("text")
    }

    /// Graceful stop of the server (the database stays until the app is dropped).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }
}

/// A server reached over HTTP at `base_url`, such as a second instance of a [`TestApp`].
pub struct Endpoint {
    pub client: reqwest::Client,
    pub base_url: String,
}

impl Gql for TestApp {
    async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        gql_at(&self.client, &self.base_url(), token, query, variables).await
    }
}

impl Gql for Endpoint {
    async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        gql_at(&self.client, &self.base_url, token, query, variables).await
    }
}

impl Gql for ServerProcess {
    async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        gql_at(&self.client, &self.base_url, token, query, variables).await
    }
}

/// The operations the tests send, spoken to any server: a [`TestApp`], another instance of it
/// ([`Endpoint`]) or a `rollcall` process ([`ServerProcess`]).
#[allow(async_fn_in_trait)]
pub trait Gql {
    /// Posts an operation; returns the whole response body.
    async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value;

    /// `me` with `token`.
    async fn me(&self, token: &str) -> Value {
        self.gql(Some(token), ME, json!({})).await
    }

    /// `serverInfo`, asked without a token.
    async fn server_info(&self) -> Value {
        self.gql(None, SERVER_INFO, json!({})).await
    }

    /// Sends `register` with [`PASSWORD`]; returns the whole response.
    async fn register_raw(&self, username: &str, email: &str) -> Value {
        self.gql(
            None,
            REGISTER,
            json!({"input": {"username": username, "email": email, "password": PASSWORD}}),
        )
        .await
    }

    /// Registers a user with [`PASSWORD`] and returns its session.
    async fn register(&self, username: &str) -> Session {
        let body = self
            .register_raw(username, &format!("{username}@example.com"))
            .await;
        Session::from_payload(&body, "register")
    }

    async fn login(&self, login: &str, password: &str) -> Value {
        self.gql(
            None,
            LOGIN,
            json!({"input": {"login": login, "password": password}}),
        )
        .await
    }

    /// Logs in with [`PASSWORD`] and returns the session.
    async fn login_as(&self, login: &str) -> Session {
        Session::from_payload(&self.login(login, PASSWORD).await, "login")
    }

    /// `refreshToken(refreshToken)`.
    async fn refresh(&self, refresh_token: &str) -> Value {
        self.gql(None, REFRESH, json!({"t": refresh_token})).await
    }

    /// `logout(refreshToken)`.
    async fn logout(&self, refresh_token: &str) -> Value {
        self.gql(None, LOGOUT, json!({"t": refresh_token})).await
    }

    /// `users` as `session`, with `first`, `after` and `filter` taken from `variables`.
    async fn users(&self, session: &Session, variables: Value) -> Value {
        self.gql(Some(&session.access), USERS, variables).await
    }

    /// `user(id:)` as `session`.
    async fn user_by_id(&self, session: &Session, id: &str) -> Value {
        self.gql(Some(&session.access), USER_BY_ID, json!({"id": id}))
            .await
    }

    /// `user(username:)` as `session`.
    async fn user_by_name(&self, session: &Session, username: &str) -> Value {
        self.gql(
            Some(&session.access),
            USER_BY_NAME,
            json!({"username": username}),
        )
        .await
    }

    /// `createUser(input)` as `actor`; returns the whole response.
    async fn create_user_raw(&self, actor: &Session, input: Value) -> Value {
        self.gql(Some(&actor.access), CREATE_USER, json!({"input": input}))
            .await
    }

    /// Creates a user through `createUser` as `actor`; returns the new id.
    async fn create_user(&self, actor: &Session, username: &str, role: &str) -> String {
        let body = self.create_user_raw(actor, new_user(username, role)).await;
        body["data"]["createUser"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("createUser failed: {body}"))
            .to_owned()
    }

    /// Creates a user as `actor`, then logs in as that user.
    async fn user_with_role(&self, actor: &Session, username: &str, role: &str) -> Session {
        self.create_user(actor, username, role).await;
        self.login_as(username).await
    }

    /// `updateUser(id, input)` as `actor`.
    async fn update_user(&self, actor: &Session, id: &str, input: Value) -> Value {
        self.gql(
            Some(&actor.access),
            UPDATE_USER,
            json!({"id": id, "input": input}),
        )
        .await
    }

    /// `updateUser(id, {disabled: true})` as `actor`.
    async fn disable(&self, actor: &Session, id: &str) -> Value {
        self.update_user(actor, id, json!({"disabled": true})).await
    }

    /// `deleteUser(id)` as `actor`.
    async fn delete_user(&self, actor: &Session, id: &str) -> Value {
        self.gql(Some(&actor.access), DELETE_USER, json!({"id": id}))
            .await
    }

    /// `setRole(id, role)` as `actor`.
    async fn set_role(&self, actor: &Session, id: &str, role: &str) -> Value {
        self.gql(
            Some(&actor.access),
            SET_ROLE,
            json!({"id": id, "role": role}),
        )
        .await
    }
}

async fn gql_at(
    client: &reqwest::Client,
    base_url: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Value {
    let mut request = client
        .post(format!("{base_url}/graphql"))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    assert_eq!(response.status(), 200, "GraphQL responses are 200");
    response.json().await.expect("JSON body")
}

/// A createUser input for `username` with [`PASSWORD`] and `role`.
pub fn new_user(username: &str, role: &str) -> Value {
    json!({
        "username": username,
        "email": format!("{username}@example.com"),
        "password": PASSWORD,
        "role": role,
    })
}

pub const REGISTER: &str = "mutation($input: RegisterInput!) { register(input: $input) { accessToken refreshToken tokenType expiresAt user { id username email role } } }";
pub const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken tokenType expiresAt expiresIn user { id username email role } } }";
pub const REFRESH: &str = "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken tokenType expiresAt expiresIn user { id username email role } } }";
pub const LOGOUT: &str = "mutation($t: String!) { logout(refreshToken: $t) }";
pub const LOGOUT_EVERYWHERE: &str = "mutation { logoutEverywhere }";
pub const REVOKE_SESSION: &str = "mutation($id: ID!) { revokeSession(id: $id) }";
pub const ENABLE_TOTP: &str = "mutation { enableTotp { secret uri recoveryCodes } }";
pub const CONFIRM_TOTP: &str = "mutation($code: String!) { confirmTotp(code: $code) }";
pub const ME: &str = "{ me { id username email role } }";
pub const SERVER_INFO: &str =
    "{ serverInfo { name version uptimeSeconds database registrationOpen demo } }";
pub const USER_BY_ID: &str =
    "query($id: ID) { user(id: $id) { id username email firstName lastName phone role disabled } }";
pub const USER_BY_NAME: &str = "query($username: String) { user(username: $username) { id username email firstName lastName phone role disabled } }";
pub const USERS: &str = "query($first: Int, $after: String, $filter: UserFilter) { users(first: $first, after: $after, filter: $filter) { totalCount nodes { id username } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }";
pub const CREATE_USER: &str = "mutation($input: CreateUserInput!) { createUser(input: $input) { id username role createdBy { id } } }";
pub const UPDATE_USER: &str = "mutation($id: ID!, $input: UpdateUserInput!) { updateUser(id: $id, input: $input) { id username email firstName lastName phone disabled role } }";
pub const DELETE_USER: &str = "mutation($id: ID!) { deleteUser(id: $id) }";
pub const SET_ROLE: &str =
    "mutation($id: ID!, $role: Role!) { setRole(id: $id, role: $role) { id username role } }";

/// Tokens and identity from an AuthPayload.
#[derive(Debug, Clone)]
pub struct Session {
    pub access: String,
    pub refresh: String,
    pub id: String,
    pub role: String,
}

impl Session {
    pub fn from_payload(body: &Value, field: &str) -> Self {
        let payload = &body["data"][field];
        let text = |v: &Value| {
            v.as_str()
                .unwrap_or_else(|| panic!("{field} failed: {body}"))
                .to_owned()
        };
        Self {
            access: text(&payload["accessToken"]),
            refresh: text(&payload["refreshToken"]),
            id: text(&payload["user"]["id"]),
            role: text(&payload["user"]["role"]),
        }
    }

    /// The session id, from the access token's `sid` claim.
    pub fn sid(&self) -> String {
        jwt_part(&self.access, 1)["sid"]
            .as_str()
            .expect("sid claim")
            .to_owned()
    }
}

/// Part `index` of JWT `token` (0 the header, 1 the claims), decoded.
pub fn jwt_part(token: &str, index: usize) -> Value {
    let part = token
        .split('.')
        .nth(index)
        .unwrap_or_else(|| panic!("`{token}` is not a JWT"));
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, part)
        .unwrap_or_else(|err| panic!("JWT part {index} is not base64url: {err}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|err| panic!("JWT part {index} not JSON: {err}"))
}

/// `extensions.code` of the first error, if any.
pub fn error_code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

/// Asserts the response failed with `code`.
#[track_caller]
pub fn assert_code(body: &Value, code: &str) {
    assert_eq!(error_code(body), Some(code), "expected {code}: {body}");
}

/// Asserts the response has no errors.
#[track_caller]
pub fn assert_ok(body: &Value) {
    assert!(body.get("errors").is_none(), "unexpected errors: {body}");
}

/// The `rollcall` binary running as a process of its own.
pub struct ServerProcess {
    child: Option<std::process::Child>,
    pub base_url: String,
    client: reqwest::Client,
    /// Every line the server wrote to stderr after it started listening.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `rollcall serve` on a random loopback port and waits until it listens.
    pub fn start(database_url: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(database_url, env).listening()
    }

    /// Starts `rollcall serve` without waiting for it, so several can start at once.
    pub fn spawn(database_url: &str, env: &[(&str, &str)]) -> StartingServer {
        Self::spawn_command(rollcall_command(database_url, env))
    }

    /// Starts `command` (a [`rollcall_command`], changed as a test needs) as `rollcall serve`.
    pub fn spawn_command(mut command: std::process::Command) -> StartingServer {
        use std::io::BufRead;
        let mut child = command
            .arg("serve")
            .env("ROLLCALL_LISTEN", "127.0.0.1:0")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn rollcall");
        let stderr = child.stderr.take().expect("stderr piped");
        let (send_address, address) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            // The last lines only: an error that stops start-up is printed last.
            let mut log = std::collections::VecDeque::new();
            let mut listening = false;
            // Reads to the end either way, so the server never blocks on a full pipe.
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if listening {
                    if let Ok(mut kept) = kept.lock() {
                        kept.push(line);
                    }
                    continue;
                }
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default().to_owned();
                    let _ = send_address.send(Ok(addr));
                    listening = true;
                } else {
                    if log.len() == 50 {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            }
            if !listening {
                // The process ended before it listened: hand its output to the test.
                let _ = send_address.send(Err(Vec::from(log).join("\n")));
            }
        });
        StartingServer {
            server: ServerProcess {
                child: Some(child),
                base_url: String::new(),
                client: http_client(),
                log,
            },
            address,
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The status of `GET path` (`/ready`).
    pub async fn status(&self, path: &str) -> reqwest::StatusCode {
        let answer = self.client.get(format!("{}{path}", self.base_url)).send();
        answer.await.expect("an answer").status()
    }

    /// The server's log lines so far, once one contains `marker` (waiting for it up to
    /// [`PROCESS_TIMEOUT`]).
    pub fn log_lines_until(&self, marker: &str) -> Vec<String> {
        self.log_lines_until_count(marker, 1)
    }

    /// The first log line containing `marker`, once there is one.
    pub fn log_line(&self, marker: &str) -> String {
        let lines = self.log_lines_until(marker);
        let found = lines.into_iter().find(|line| line.contains(marker));
        found.expect("the line waited for")
    }

    /// What the server's `/metrics` says now (to a loopback client).
    pub async fn metrics(&self) -> String {
        let response = self.client.get(format!("{}/metrics", self.base_url)).send();
        let response = response.await.expect("sent");
        assert_eq!(response.status(), 200);
        response.text().await.expect("text")
    }

    /// The server's log lines so far, once `count` of them contain `marker`.
    pub fn log_lines_until_count(&self, marker: &str, count: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + PROCESS_TIMEOUT;
        loop {
            let lines = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            if lines.iter().filter(|line| line.contains(marker)).count() >= count {
                return lines;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not {count} log lines with {marker:?}:\n{}",
                lines.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.signal("TERM")
    }

    /// Sends SIGKILL, as a crash or the OOM killer would, and waits for the exit status.
    pub fn kill(self) -> std::process::ExitStatus {
        self.signal("KILL")
    }

    /// Sends signal `name` (`TERM`, `HUP`, …) and waits for the exit status.
    pub fn signal(mut self, name: &str) -> std::process::ExitStatus {
        self.send(name);
        let mut child = self.child.take().expect("running");
        wait_or_kill(&mut child, &format!("rollcall serve after SIG{name}"))
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        let child = self.child.as_mut().expect("started");
        child.try_wait().expect("poll child process").is_none()
    }

    /// Sends signal `name` without waiting for anything.
    pub fn send(&self, name: &str) {
        let child = self.child.as_ref().expect("running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name}");
    }
}

/// A `rollcall serve` process that may not be listening yet; dropped, it is killed like a
/// [`ServerProcess`].
pub struct StartingServer {
    server: ServerProcess,
    address: std::sync::mpsc::Receiver<Result<String, String>>,
}

impl StartingServer {
    /// Waits until the server listens; panics with its output if it exits first.
    pub fn listening(self) -> ServerProcess {
        let mut server = self.server;
        match self.address.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(addr)) => server.base_url = format!("http://{addr}"),
            Ok(Err(log)) => panic!("rollcall exited before listening:\n{log}"),
            Err(err) => panic!("rollcall did not print its address: {err}"),
        }
        server
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A child process killed when dropped, so a test that fails midway leaves none behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `rollcall` command on `database_url` with a clean environment for its settings.
pub fn rollcall_command(database_url: &str, env: &[(&str, &str)]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ROLLCALL_") {
            command.env_remove(key);
        }
    }
    command
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        // Tests log in far more often than a person; the tests of the limit turn it back on.
        .env("ROLLCALL_IP_RATE_LIMIT", "0")
        .envs(env.iter().copied());
    command
}

/// How long a test waits for a process to exit before it kills it and fails.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits for `child` to exit. After [`PROCESS_TIMEOUT`] it kills the child and fails the
/// test, so a process that hangs is a failure and not a test run that never ends.
#[track_caller]
pub fn wait_or_kill(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + PROCESS_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("poll child process") {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {PROCESS_TIMEOUT:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like [`std::process::Child::wait_with_output`], but killing the child and failing the
/// test after [`PROCESS_TIMEOUT`]. Its piped stdout and stderr are read while it runs.
#[track_caller]
pub fn output_or_kill(mut child: std::process::Child, what: &str) -> std::process::Output {
    use std::io::Read;
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_or_kill(&mut child, what);
    std::process::Output {
        status,
        stdout: stdout.join().expect("read stdout"),
        stderr: stderr.join().expect("read stderr"),
    }
}

/// Like [`std::process::Command::output`] (stdin empty, stdout and stderr captured), but
/// failing the test after [`PROCESS_TIMEOUT`].
#[track_caller]
pub fn run_or_kill(command: &mut std::process::Command, what: &str) -> std::process::Output {
    use std::process::Stdio;
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {what}: {err}"));
    output_or_kill(child, what)
}

impl TestApp {
    /// A POST to `/graphql` to build by hand (headers, body), for answers that are not 200.
    pub fn post(&self) -> reqwest::RequestBuilder {
        self.client.post(format!("{}/graphql", self.base_url()))
    }

    /// A connection to this app's database beside the server's, as another program would open.
    pub async fn database(&self) -> sea_orm::DatabaseConnection {
        self.db.connect().await
    }

    /// On PostgreSQL: runs `requests` while a transaction that has run `held` stays open, and
    /// commits it once `waiting` statements of the test's database wait for a lock, so what
    /// the requests do next meets what it committed. Fails when they never wait or hang.
    pub async fn while_held<T>(
        &self,
        held: &[String],
        waiting: i64,
        requests: impl std::future::Future<Output = T>,
    ) -> T {
        use sea_orm::TransactionTrait;

        let db = self.database().await;
        let hold = db.begin().await.expect("begin");
        for sql in held {
            hold.execute_unprepared(sql).await.expect("held statement");
        }
        let release = async {
            self.until_waiting_for_locks(waiting).await;
            hold.commit().await.expect("commit");
        };
        let (answers, ()) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(requests, release)
        })
        .await
        .expect("answered");
        let _ = db.close().await;
        answers
    }

    /// On PostgreSQL: waits until `n` statements of the test's database wait for a lock.
    pub async fn until_waiting_for_locks(&self, n: i64) {
        eventually(&format!("{n} lock waits"), async || {
            self.count(LOCK_WAITS).await >= n
        })
        .await;
    }

    /// The number `sql` (a `SELECT COUNT(*) …`) returns, read beside the server.
    pub async fn count(&self, sql: &str) -> i64 {
        let row = self.db.query_one(sql).await;
        row.try_get_by_index::<i64>(0).expect("a count")
    }

    /// Logs in as `login` with `user_agent` in the User-Agent header.
    pub async fn login_with_agent(&self, login: &str, user_agent: &str) -> Session {
        let body: Value = self
            .post()
            .header("user-agent", user_agent)
            .json(&json!({
                "query": LOGIN,
                "variables": {"input": {"login": login, "password": PASSWORD}},
            }))
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("JSON body");
        Session::from_payload(&body, "login")
    }

    /// Waits until the credential throttle has counted `n` attempts on `subject`: a login
    /// counts its attempt once it has read the account, before its password is checked. (A
    /// success or a new password clears the count: then it never comes.)
    pub async fn until_counted(&self, subject: &str, n: i64) {
        let what = format!("{n} attempts counted on {subject} (or cleared before they were seen)");
        eventually(&what, async || self.failures(subject).await >= n).await;
    }

    /// The credential throttle's count on `subject` (`user:ID`, `login:NAME`,
    /// `session:ID:password`, `session:ID:code`), 0 when it has none.
    pub async fn failures(&self, subject: &str) -> i64 {
        self.count(&format!(
            "SELECT COALESCE(SUM(failures), 0) FROM credential_failures WHERE subject = '{subject}'"
        ))
        .await
    }
}

/// Polls `done` until it holds, failing the test when `what` has not come within 10 s: a
/// regression fails instead of hanging, and a slow machine gets time.
pub async fn eventually(what: &str, done: impl AsyncFnMut() -> bool) {
    eventually_every(
        what,
        Duration::from_secs(10),
        Duration::from_millis(5),
        done,
    )
    .await;
}

/// [`eventually`] with its own bound, polling every `every` (for checks that cost a login or
/// must be a second apart).
pub async fn eventually_every(
    what: &str,
    limit: Duration,
    every: Duration,
    mut done: impl AsyncFnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + limit;
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: never came within {limit:?}"
        );
        tokio::time::sleep(every).await;
    }
}

/// The value of one series in `/metrics` text (`rollcall_logins_total{result="failure"}`),
/// 0 when absent.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(name_and_labels)?;
            rest.trim().split(' ').next()?.parse().ok()
        })
        .unwrap_or(0.0)
}

/// `extensions.retryAfterSeconds` of a RATE_LIMITED answer.
#[track_caller]
pub fn retry_after(body: &Value) -> u64 {
    assert_code(body, "RATE_LIMITED");
    body["errors"][0]["extensions"]["retryAfterSeconds"]
        .as_u64()
        .unwrap_or_else(|| panic!("retryAfterSeconds missing: {body}"))
}

/// Asserts `extensions.fieldCodes` of the first error is exactly `codes`, and names the same
/// fields as `extensions.fields`.
#[track_caller]
pub fn assert_field_codes(body: &Value, codes: Value) {
    let extensions = &body["errors"][0]["extensions"];
    assert_eq!(extensions["fieldCodes"], codes, "{body}");
    let named = |key: &str| -> Vec<String> {
        extensions[key]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(named("fields"), named("fieldCodes"), "{body}");
}
