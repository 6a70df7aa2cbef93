//! Scale-out: two `rollcall` processes on one database behave as one service.

mod support;

use serde_json::{Value, json};
use support::{Backend, PASSWORD, ServerProcess, TestDb, gql_at};

const LOGIN: &str =
    "mutation($i: LoginInput!) { login(input: $i) { accessToken refreshToken user { id role } } }";
const REFRESH: &str =
    "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken } }";

struct Pair {
    a: ServerProcess,
    b: ServerProcess,
    client: reqwest::Client,
}

impl Pair {
    async fn on(&self, first: bool, token: Option<&str>, query: &str, variables: Value) -> Value {
        let base = if first {
            &self.a.base_url
        } else {
            &self.b.base_url
        };
        gql_at(&self.client, base, token, query, variables).await
    }

    async fn login(&self, first: bool, login: &str) -> Value {
        let body = self
            .on(
                first,
                None,
                LOGIN,
                json!({"i": {"login": login, "password": PASSWORD}}),
            )
            .await;
        assert!(body.get("errors").is_none(), "login {login}: {body}");
        body["data"]["login"].clone()
    }
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value}"))
        .to_owned()
}

fn code(body: &Value) -> Option<&str> {
    support::error_code(body)
}

async fn two_processes_share_one_database(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    // Neither process is given a key: both must agree on the one generated in the database.
    let pair = Pair {
        a: ServerProcess::start(&db.url, &[]),
        b: ServerProcess::start(&db.url, &[]),
        client: reqwest::Client::new(),
    };

    let register =
        "mutation($i: RegisterInput!) { register(input: $i) { accessToken user { id } } }";
    let owner = pair
        .on(
            true,
            None,
            register,
            json!({"i": {"username": "owner", "email": "owner@example.com", "password": PASSWORD}}),
        )
        .await;
    let owner_token = text(&owner["data"]["register"]["accessToken"]);
    let create = "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }";
    let mut ids = Vec::new();
    for name in ["ann", "ben", "cat"] {
        let body = pair
            .on(false, Some(&owner_token), create, json!({"i": {"username": name, "email": format!("{name}@example.com"), "password": PASSWORD}}))
            .await;
        ids.push(text(&body["data"]["createUser"]["id"]));
    }

    // A token issued by one instance is accepted by the other.
    let ann = pair.login(true, "ann").await;
    let ann_access = text(&ann["accessToken"]);
    let me = pair
        .on(false, Some(&ann_access), "{ me { username } }", json!({}))
        .await;
    assert_eq!(me["data"]["me"]["username"], "ann", "{me}");

    // A refresh token rotated on one and replayed on the other is reuse: the family dies.
    let first_refresh = text(&ann["refreshToken"]);
    let rotated = pair
        .on(true, None, REFRESH, json!({"t": first_refresh}))
        .await;
    let newest = text(&rotated["data"]["refreshToken"]["refreshToken"]);
    let replay = pair
        .on(false, None, REFRESH, json!({"t": first_refresh}))
        .await;
    assert_eq!(code(&replay), Some("UNAUTHENTICATED"), "{replay}");
    let after = pair.on(true, None, REFRESH, json!({"t": newest})).await;
    assert_eq!(
        code(&after),
        Some("UNAUTHENTICATED"),
        "the family is revoked: {after}"
    );

    // A user disabled through one instance is refused at once by the other.
    let ben = pair.login(false, "ben").await;
    let ben_access = text(&ben["accessToken"]);
    let disable =
        "mutation($id: ID!) { updateUser(id: $id, input: {disabled: true}) { disabled } }";
    let body = pair
        .on(true, Some(&owner_token), disable, json!({"id": ids[1]}))
        .await;
    assert_eq!(body["data"]["updateUser"]["disabled"], true, "{body}");
    let me = pair
        .on(false, Some(&ben_access), "{ me { id } }", json!({}))
        .await;
    assert_eq!(code(&me), Some("UNAUTHENTICATED"), "{me}");

    // Ownership transfers racing on both instances leave exactly one owner.
    let owner_id = text(&owner["data"]["register"]["user"]["id"]);
    let people = [
        ("owner", owner_id),
        ("ann", ids[0].clone()),
        ("cat", ids[2].clone()),
    ];
    let set_role = "mutation($id: ID!) { setRole(id: $id, role: OWNER) { role } }";
    let mut current = 0;
    for round in 0..3 {
        let token = text(&pair.login(round % 2 == 0, people[current].0).await["accessToken"]);
        let others: Vec<usize> = (0..people.len()).filter(|i| *i != current).collect();
        let (x, y) = tokio::join!(
            pair.on(
                true,
                Some(&token),
                set_role,
                json!({"id": people[others[0]].1})
            ),
            pair.on(
                false,
                Some(&token),
                set_role,
                json!({"id": people[others[1]].1})
            ),
        );
        let won: Vec<usize> = [(&x, others[0]), (&y, others[1])]
            .iter()
            .filter(|(body, _)| body["data"]["setRole"]["role"] == "OWNER")
            .map(|(_, who)| *who)
            .collect();
        assert_eq!(won.len(), 1, "round {round}: one transfer wins: {x} {y}");
        let mut owners = Vec::new();
        for (name, _) in &people {
            if pair.login(round % 2 == 1, name).await["user"]["role"] == "OWNER" {
                owners.push(*name);
            }
        }
        assert_eq!(
            owners,
            [people[won[0]].0],
            "round {round}: exactly one owner"
        );
        current = won[0];
    }
    assert!(pair.a.terminate().success());
    assert!(pair.b.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes() {
    two_processes_share_one_database(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_processes() {
    two_processes_share_one_database(Backend::Sqlite).await;
}

/// Instances deployed at the same moment on a new (or newly upgraded) database all come up:
/// they take turns at the migrations instead of failing on what another one just created.
async fn instances_starting_together(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let starting: Vec<_> = (0..4).map(|_| ServerProcess::spawn(&db.url, &[])).collect();
    let servers: Vec<_> = starting
        .into_iter()
        .map(|server| server.listening())
        .collect();

    // They serve as one: a token issued by the first works on every other.
    let client = reqwest::Client::new();
    let registered = gql_at(
        &client,
        &servers[0].base_url,
        None,
        "mutation($i: RegisterInput!) { register(input: $i) { accessToken } }",
        json!({"i": {"username": "first", "email": "first@example.com", "password": PASSWORD}}),
    )
    .await;
    let token = text(&registered["data"]["register"]["accessToken"]);
    for server in &servers[1..] {
        let me = gql_at(
            &client,
            &server.base_url,
            Some(&token),
            "{ me { username } }",
            json!({}),
        )
        .await;
        assert_eq!(me["data"]["me"]["username"], "first", "{me}");
    }
    for server in servers {
        assert!(server.terminate().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_starting_together() {
    instances_starting_together(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_instances_starting_together() {
    instances_starting_together(Backend::Sqlite).await;
}
