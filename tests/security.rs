//! Attacks refused: the credential throttles, one password check per request, the GraphQL
//! limits, cross-site bodies, bootstrap and account rules, the password policy.

mod support;

use std::time::{Duration, Instant};

use futures::future::join_all;
use rollcall::db::Role;
use rollcall::service::NewUser;
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::{Value, json};
use support::*;

/// A first throttle wait no test outlasts, so a lock cannot end while a test expects it.
const TEN_MINUTES: Duration = Duration::from_secs(600);

/// Logs in as `login` with a wrong password.
async fn wrong_login(app: &impl Gql, login: &str) -> Value {
    app.login(login, "not the right password").await
}

/// How many hashes the servers at `urls` have computed (each login checked costs one).
async fn hashes(urls: &[String]) -> f64 {
    let mut total = 0.0;
    for url in urls {
        let text = reqwest::get(format!("{url}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        total += metric(&text, "rollcall_password_hash_wait_seconds_count");
    }
    total
}

/// Runs with a first wait of 6 s (`ROLLCALL_THROTTLE_WAIT`): the attempts after the fifth
/// failure must come inside it, and a hash under a loaded machine's CPU can take seconds.
async fn account_throttle_after_five_failures(app: TestApp) {
    let owner = app.register("owner").await;
    app.create_user(&owner, "bob", "STANDARD").await;
    let second = app.second_instance().await;
    for _ in 0..5 {
        assert_code(&wrong_login(&app, "bob").await, "UNAUTHENTICATED");
    }
    // Throttled: even the right password fails at once, by username or by email, and on a
    // second instance on the same database.
    let both = [app.base_url(), format!("http://{}", second.addr)];
    let checked = hashes(&both).await;
    let wait = retry_after(&app.login("bob", PASSWORD).await);
    assert!(
        (3..=6).contains(&wait),
        "the first wait is the setting's 6 s, less the time since it began: {wait}"
    );
    retry_after(&app.login("bob@example.com", PASSWORD).await);
    retry_after(&app.at(&second).login("bob", PASSWORD).await);
    assert_eq!(hashes(&both).await, checked, "refused without hashing");
    // After the wait the right password works and starts the count afresh.
    tokio::time::sleep(Duration::from_millis(6_100)).await;
    assert_ok(&app.login("bob", PASSWORD).await);
    for _ in 0..4 {
        assert_code(&wrong_login(&app, "bob").await, "UNAUTHENTICATED");
    }
    assert_ok(&app.login("bob", PASSWORD).await);
    second.stop().await;
}

/// Runs with a first wait of 3 s, for the same reason as the test above.
async fn waits_grow_and_unknown_logins_are_throttled_alike(app: TestApp) {
    for _ in 0..5 {
        assert_code(&wrong_login(&app, "nobody").await, "UNAUTHENTICATED");
    }
    let first = retry_after(&wrong_login(&app, "nobody").await);
    assert!((1..=3).contains(&first), "{first}");
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    // The sixth failure doubles the wait, to 6 s: more than the first could be.
    assert_code(&wrong_login(&app, "NOBODY").await, "UNAUTHENTICATED");
    let doubled = retry_after(&wrong_login(&app, "nobody").await);
    assert!((4..=6).contains(&doubled), "{doubled}");
    // Counted under a hash of the login: what is typed there is at times a password.
    use sha2::{Digest, Sha256};
    let hashed = format!("login:{}", hex::encode(Sha256::digest("nobody")));
    assert_eq!(app.failures(&hashed).await, 6);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM credential_failures WHERE subject LIKE '%nobody%'")
            .await,
        0
    );
}

/// Runs with a first wait of ten minutes, so no lock ends while the attempts run.
async fn parallel_attempts_cannot_slip_past_the_count(app: TestApp) {
    let owner = app.register("owner").await;
    let bob = app.create_user(&owner, "bob", "STANDARD").await;
    let answers = join_all((0..20).map(|_| wrong_login(&app, "bob"))).await;
    let checked = answers
        .iter()
        .filter(|a| error_code(a) == Some("UNAUTHENTICATED"))
        .count();
    let throttled = answers
        .iter()
        .filter(|a| error_code(a) == Some("RATE_LIMITED"))
        .count();
    // Exactly the allowance was checked: no more slipped past the count, none was lost; and
    // the account's throttle refused the rest, not a busy hashing queue.
    assert_eq!((checked, throttled), (5, 15), "{answers:?}");
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "rollcall_throttled_total{kind=\"account\"}"),
        15.0
    );
    assert_eq!(app.failures(&format!("user:{bob}")).await, 5);
    retry_after(&app.login("bob", PASSWORD).await);
}

/// Under a threshold set high, many attempts on one account at once contend for its count: those
/// that keep losing are refused as throttled, never answered as an internal error.
async fn attempts_contending_for_one_count_are_throttled_not_failed(app: TestApp) {
    let owner = app.register("owner").await;
    app.create_user(&owner, "bob", "STANDARD").await;
    let answers = join_all((0..40).map(|_| wrong_login(&app, "bob"))).await;
    for answer in &answers {
        let code = error_code(answer);
        assert!(
            matches!(code, Some("UNAUTHENTICATED" | "RATE_LIMITED")),
            "{answer}"
        );
    }
}

/// A locked-out account given a new password, or a disabled one enabled again, logs in at
/// once: its count was made against a password that no longer stands, or while no login
/// could succeed.
async fn a_new_password_or_enabling_starts_the_count_afresh(app: TestApp) {
    let owner = app.register("owner").await;
    let bob = app.create_user(&owner, "bob", "STANDARD").await;
    for _ in 0..5 {
        assert_code(&wrong_login(&app, "bob").await, "UNAUTHENTICATED");
    }
    retry_after(&app.login("bob", PASSWORD).await);
    let new_password = "a fresh Passphrase 91";
    let set = json!({"password": new_password});
    assert_ok(
        &app.gql(
            Some(&owner.access),
            "mutation($id: ID!, $input: UpdateUserInput!, $v: VerificationInput) { updateUser(id: $id, input: $input, verification: $v) { id } }",
            json!({"id": bob, "input": set, "v": {"password": PASSWORD}}),
        )
        .await,
    );
    assert_ok(&app.login("bob", new_password).await);

    // Disabled, even the right password fails, and counts; enabled again, it works at once.
    assert_ok(
        &app.update_user(&owner, &bob, json!({"disabled": true}))
            .await,
    );
    for _ in 0..5 {
        assert_code(&app.login("bob", new_password).await, "UNAUTHENTICATED");
    }
    retry_after(&app.login("bob", new_password).await);
    assert_ok(
        &app.update_user(&owner, &bob, json!({"disabled": false}))
            .await,
    );
    let session = Session::from_payload(&app.login("bob", new_password).await, "login");

    // The user's own new password, given in a session while their logins are locked.
    for _ in 0..5 {
        assert_code(&wrong_login(&app, "bob").await, "UNAUTHENTICATED");
    }
    retry_after(&app.login("bob", new_password).await);
    let own = json!({"password": "my own Passphrase 17", "currentPassword": new_password});
    assert_ok(&app.update_user(&session, &bob, own).await);
    assert_ok(&app.login("bob", "my own Passphrase 17").await);
}

/// A password given again inside a session is counted per session: five wrong
/// `currentPassword`s stop that session's next, not the account's logins; and logins locked by
/// someone who knows only the username do not stop the signed-in owner from verifying.
async fn current_password_is_throttled_per_session(app: TestApp) {
    let owner = app.register("owner").await;
    let bob = app.register("bob").await;
    let change = async |session: &Session, current: &str| {
        app.update_user(
            session,
            &session.id,
            json!({"password": "a brand new passphrase", "currentPassword": current}),
        )
        .await
    };
    // A blank box is no guess: refused as missing, and not counted.
    for _ in 0..6 {
        let body = change(&bob, "").await;
        assert_field_codes(&body, json!({"currentPassword": "REQUIRED"}));
    }
    let body = app.login("bob", "").await;
    assert_field_codes(&body, json!({"password": "REQUIRED"}));
    for _ in 0..5 {
        let body = change(&bob, "wrong current password").await;
        assert_code(&body, "BAD_USER_INPUT");
        assert_eq!(
            body["errors"][0]["extensions"]["fields"]["currentPassword"],
            "is incorrect"
        );
        assert_eq!(
            body["errors"][0]["extensions"]["fieldCodes"]["currentPassword"],
            "INCORRECT"
        );
    }
    // Refused at once: the new password is not judged either (no hashing thread), however
    // often the throttled session sends one.
    let url = [app.base_url()];
    let before = hashes(&url).await;
    for _ in 0..3 {
        retry_after(&change(&bob, PASSWORD).await);
    }
    assert_eq!(hashes(&url).await - before, 0.0);
    // The account's logins are not locked by it, and another session has its own count.
    let again = app.login_as("bob").await;
    assert_ok(&change(&again, PASSWORD).await);

    for _ in 0..5 {
        assert_code(&wrong_login(&app, "owner").await, "UNAUTHENTICATED");
    }
    retry_after(&app.login("owner", PASSWORD).await);
    // Step-up verification in the owner's session, and a password change, still work.
    let step_up = app
        .gql(
            Some(&owner.access),
            "mutation($v: VerificationInput) { createApiToken(name: \"t\", verification: $v) { token } }",
            json!({"v": {"password": PASSWORD}}),
        )
        .await;
    assert_ok(&step_up);
    assert_ok(&change(&owner, PASSWORD).await);
}

/// An unknown login, a wrong password and a disabled account each cost one password check, so
/// none is answered sooner than the others. (That the dummy hash has the real parameters is a
/// unit test of `auth::password`.)
async fn unknown_and_known_logins_cost_a_check_alike(app: TestApp) {
    let owner = app.register("owner").await;
    app.create_user(&owner, "bob", "STANDARD").await;
    let carol = app.create_user(&owner, "carol", "STANDARD").await;
    assert_ok(&app.disable(&owner, &carol).await);
    let url = [app.base_url()];
    for login in [
        "bob",
        "bob@example.com",
        "nobody",
        "nobody@example.com",
        "carol",
    ] {
        let before = hashes(&url).await;
        assert_code(&wrong_login(&app, login).await, "UNAUTHENTICATED");
        assert_eq!(hashes(&url).await - before, 1.0, "{login}");
    }
    // The right password of the disabled account too.
    let before = hashes(&url).await;
    assert_code(&app.login("carol", PASSWORD).await, "UNAUTHENTICATED");
    assert_eq!(hashes(&url).await - before, 1.0);
}

#[tokio::test]
async fn the_ip_limit_counts_credential_attempts_per_client() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| s.ip_rate_limit = 3).await else {
        return;
    };
    let alice = app.register("alice").await;
    // Blank boxes are no attempt: refused as missing, however often.
    for _ in 0..4 {
        let blank = app.login("", PASSWORD).await;
        assert_field_codes(&blank, json!({"login": "REQUIRED"}));
        let blank = app.login("alice", "").await;
        assert_field_codes(&blank, json!({"password": "REQUIRED"}));
    }
    assert_code(&wrong_login(&app, "alice").await, "UNAUTHENTICATED");
    assert_ok(&app.refresh(&alice.refresh).await);
    let refused = wrong_login(&app, "alice").await;
    let wait = retry_after(&refused);
    assert!((1..=20).contains(&wait), "{refused}");
    assert_code(
        &app.register_raw("carol", "carol@example.com").await,
        "RATE_LIMITED",
    );
    // Other operations are not credential attempts.
    assert_ok(&app.me(&alice.access).await);
}

/// `currentPassword` counts against the IP only where it is checked: sent along with an edit that
/// needs none, filled in or blank, it is not an attempt.
#[tokio::test]
async fn the_ip_limit_counts_current_password_only_when_checked() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| s.ip_rate_limit = 2).await else {
        return;
    };
    let alice = app.register("alice").await;
    let bob = app.create_user(&alice, "bob", "STANDARD").await;
    for (name, current) in [("Bob", PASSWORD), ("Robert", ""), ("Bobby", PASSWORD)] {
        let edit = json!({"firstName": name, "currentPassword": current});
        assert_ok(&app.update_user(&alice, &bob, edit).await);
    }
    let own = json!({"phone": "555 0100", "currentPassword": "not the password"});
    assert_ok(&app.update_user(&alice, &alice.id, own).await);
    let own = json!({"password": "a new Passphrase 77", "currentPassword": PASSWORD});
    assert_ok(&app.update_user(&alice, &alice.id, own).await);
    assert_code(
        &app.login("alice", "a new Passphrase 77").await,
        "RATE_LIMITED",
    );
}

/// A new password is judged on the hashing threads (its strength), so each one sent counts
/// against the IP before it is judged, whether or not the edit then passes.
#[tokio::test]
async fn the_ip_limit_counts_new_passwords() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| s.ip_rate_limit = 3).await else {
        return;
    };
    let alice = app.register("alice").await;
    let bob = app.create_user(&alice, "bob", "STANDARD").await;
    let bob_session = app.login_as("bob").await;
    // Without the `currentPassword` it needs: refused, and counted all the same.
    let own = json!({"password": "a new Passphrase 77"});
    let body = app.update_user(&bob_session, &bob, own.clone()).await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_code(
        &app.update_user(&bob_session, &bob, own).await,
        "RATE_LIMITED",
    );
    // The owner's setting of another's password counts too.
    let other = json!({"password": "another Passphrase 78"});
    assert_code(&app.update_user(&alice, &bob, other).await, "RATE_LIMITED");
}

/// A standard user, who cannot list users, learns from renaming themselves which usernames are
/// taken: those renames count against the IP. An owner's renames of others do not.
#[tokio::test]
async fn the_ip_limit_counts_a_standard_users_renames() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| s.ip_rate_limit = 3).await else {
        return;
    };
    let alice = app.register("alice").await;
    let bob = app.create_user(&alice, "bob", "STANDARD").await;
    for name in ["robert", "bobby"] {
        assert_ok(
            &app.update_user(&alice, &bob, json!({"username": name}))
                .await,
        );
    }
    let bobby = app.login_as("bobby").await;
    let probe = json!({"username": "alice"});
    assert_code(
        &app.update_user(&bobby, &bob, probe.clone()).await,
        "CONFLICT",
    );
    assert_code(&app.update_user(&bobby, &bob, probe).await, "RATE_LIMITED");
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.ip_rate_limit = 2;
        s.trusted_proxies = rollcall::config::List(vec!["127.0.0.1/32".parse().expect("net")]);
    })
    .await
    else {
        return;
    };
    let login_from = |client: &str| {
        app.post()
            .header("x-forwarded-for", format!("10.9.9.9, {client}"))
            .json(&json!({
                "query": LOGIN,
                "variables": {"input": {"login": "nobody", "password": "wrong password!"}}
            }))
            .send()
    };
    let code = |response: reqwest::Response| async move {
        let body: Value = response.json().await.expect("json");
        error_code(&body).map(str::to_owned)
    };
    for _ in 0..2 {
        let answer = code(login_from("198.51.100.1").await.expect("sent")).await;
        assert_eq!(answer.as_deref(), Some("UNAUTHENTICATED"));
    }
    let answer = code(login_from("198.51.100.1").await.expect("sent")).await;
    assert_eq!(answer.as_deref(), Some("RATE_LIMITED"));
    // Another client behind the same proxy has its own bucket.
    let answer = code(login_from("198.51.100.2").await.expect("sent")).await;
    assert_eq!(answer.as_deref(), Some("UNAUTHENTICATED"));

    // Without trusted proxies the header is ignored: everyone here is 127.0.0.1.
    let Some(direct) = TestApp::spawn_with(Backend::Sqlite, |s| s.ip_rate_limit = 2).await else {
        return;
    };
    for (n, client) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .iter()
        .enumerate()
    {
        let response = direct
            .post()
            .header("x-forwarded-for", *client)
            .json(&json!({
                "query": LOGIN,
                "variables": {"input": {"login": "nobody", "password": "wrong password!"}}
            }))
            .send()
            .await
            .expect("sent");
        let answer = code(response).await;
        let expected = if n < 2 {
            "UNAUTHENTICATED"
        } else {
            "RATE_LIMITED"
        };
        assert_eq!(answer.as_deref(), Some(expected));
    }
}

/// Each way of putting two password checks in one document, refused before any of it runs.
async fn one_password_check_per_request(app: TestApp) {
    let owner = app.register("owner").await;
    app.create_user(&owner, "bob", "STANDARD").await;
    let login = r#"login(input: {login: "bob", password: "wrong password!"}) { accessToken }"#;
    let documents = [
        format!("mutation {{ a: {login} b: {login} }}"),
        format!(
            "mutation {{ ...F ...F2 }} fragment F on Mutation {{ {login} }} fragment F2 on Mutation {{ b: {login} }}"
        ),
        format!("mutation {{ ... on Mutation {{ {login} }} c: {login} }}"),
        format!("mutation A {{ {login} }} mutation B {{ {login} }}"),
        format!(
            r#"mutation {{ {login} register(input: {{username: "x1", email: "x1@example.com", password: "correct horse battery"}}) {{ accessToken }} }}"#
        ),
    ];
    for document in &documents {
        // Three times each: were any of it run, bob would be throttled by now.
        for _ in 0..3 {
            let body = app.gql(None, document, json!({})).await;
            assert_code(&body, "BAD_USER_INPUT");
            let message = body["errors"][0]["message"].as_str().unwrap_or_default();
            assert!(message.contains("password"), "{body}");
            assert!(body["data"].is_null(), "{body}");
        }
    }
    assert_ok(&app.login("bob", PASSWORD).await);
    assert_code(&app.login("x1", PASSWORD).await, "UNAUTHENTICATED");
    // One password check and other fields beside it are fine.
    let body = app
        .gql(None, &format!("mutation {{ {login} }}"), json!({}))
        .await;
    assert_code(&body, "UNAUTHENTICATED");
}

async fn graphql_limits(app: TestApp) {
    let owner = app.register("owner").await;
    let token = Some(owner.access.as_str());
    let refused = |body: &Value, words: &str| {
        assert_code(body, "BAD_USER_INPUT");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "expected {words:?}: {body}");
    };
    // Depth: ten levels pass, eleven do not.
    let nested = |levels: usize| {
        let mut inner = "id".to_owned();
        for _ in 0..levels - 3 {
            inner = format!("createdBy {{ {inner} }}");
        }
        format!("{{ users {{ nodes {{ {inner} }} }} }}")
    };
    assert_ok(&app.gql(token, &nested(10), json!({})).await);
    refused(
        &app.gql(token, &nested(11), json!({})).await,
        "nested 11 levels",
    );
    // Lists a user holds count as full as they may be: a user's API tokens lead back to them
    // through `createdBy`, and each level would multiply by up to a hundred.
    let tokens = "{ me { apiTokens { id name createdAt lastUsedAt createdBy { username } } } }";
    assert_ok(&app.gql(token, tokens, json!({})).await);
    let nested =
        "{ me { apiTokens { createdBy { apiTokens { createdBy { sessions { id } } } } } } }";
    refused(&app.gql(token, nested, json!({})).await, "complex");
    // One such cycle passes under a few aliases, not under more.
    let cycle = |n: usize| {
        let fields: Vec<String> = (0..n)
            .map(|i| format!("a{i}: me {{ apiTokens {{ createdBy {{ apiTokens {{ id }} }} }} }}"))
            .collect();
        format!("{{ {} }}", fields.join(" "))
    };
    assert_ok(&app.gql(token, &cycle(8), json!({})).await);
    refused(&app.gql(token, &cycle(9), json!({})).await, "complex");
    // An admin's page of fifty users with their sessions and tokens passes, and one of a
    // hundred with their sessions.
    let console = "{ users(first: 50) { nodes { id username email role disabled createdAt \
                   lastLoginAt sessions { id createdAt lastUsedAt expiresAt ip userAgent current } \
                   apiTokens { id name createdAt lastUsedAt expiresAt } } \
                   pageInfo { hasNextPage endCursor } totalCount } }";
    assert_ok(&app.gql(token, console, json!({})).await);
    let sessions = "{ users(first: 100) { nodes { id username \
                    sessions { id createdAt lastUsedAt expiresAt ip userAgent current } } } }";
    assert_ok(&app.gql(token, sessions, json!({})).await);
    // An operation that does not run counts too: its page as the default 20 where the request
    // leaves its `first` out, as the largest where the request gives another type for it.
    let unrun = "query A($first: Int) { users(first: $first) { nodes { id \
                 sessions { id createdAt lastUsedAt expiresAt ip userAgent current } \
                 apiTokens { id name createdAt lastUsedAt expiresAt } } } } \
                 query B { me { id } }";
    let run_b = async |variables: Value| -> Value {
        let body = json!({"query": unrun, "operationName": "B", "variables": variables});
        let response = app.post().bearer_auth(owner.access.as_str()).json(&body);
        response
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("JSON")
    };
    assert_ok(&run_b(json!({})).await);
    refused(&run_b(json!({"first": "many"})).await, "complex");
    // Clients' standard introspection query (GraphiQL's) passes.
    assert_ok(&app.gql(None, INTROSPECTION, json!({})).await);
    // Aliases: fifteen pass, sixteen do not.
    let aliases = |n: usize| {
        let fields: Vec<String> = (0..n).map(|i| format!("a{i}: me {{ id }}")).collect();
        format!("{{ {} }}", fields.join(" "))
    };
    assert_ok(&app.gql(token, &aliases(15), json!({})).await);
    refused(&app.gql(token, &aliases(16), json!({})).await, "aliases");
    // Directives: fifty pass, fifty-one do not.
    let directives = |n: usize| format!("{{ me {{ {} }} }}", "id @include(if: true) ".repeat(n));
    assert_ok(&app.gql(token, &directives(50), json!({})).await);
    refused(
        &app.gql(token, &directives(51), json!({})).await,
        "directives",
    );
    // Query text: 16 KiB pass, one byte more does not.
    let sized = |bytes: usize| {
        let query = "{ me { id } }";
        format!("{query}{}", " ".repeat(bytes - query.len()))
    };
    assert_ok(&app.gql(token, &sized(16 * 1024), json!({})).await);
    refused(
        &app.gql(token, &sized(16 * 1024 + 1), json!({})).await,
        "bytes",
    );
    // Brackets nested a few thousand deep (values, list types) would overflow the parser's
    // stack and abort the server: refused before parsing, by POST and by GET, and the server
    // goes on.
    let deep = |n: usize| {
        format!(
            "{{ serverInfo(x: {}1{}) {{ name }} }}",
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    for query in [
        deep(2_000),
        format!(
            "{{ serverInfo(x: {}1{}) {{ name }} }}",
            "{a:".repeat(2_000),
            "}".repeat(2_000)
        ),
        format!(
            "query($v: {}Int{}) {{ me {{ id }} }}",
            "[".repeat(2_000),
            "]".repeat(2_000)
        ),
    ] {
        refused(&app.gql(token, &query, json!({})).await, "nests brackets");
    }
    let get = app
        .client
        .get(format!("{}/graphql", app.base_url()))
        .query(&[("query", deep(7_000))])
        .header("accept", "application/json")
        .send()
        .await
        .expect("get");
    let body: Value = get.json().await.expect("JSON");
    refused(&body, "nests brackets");
    // A mutation runs once per response key: one repeated (a fragment spread twice, or the
    // field selected again) is refused whole, before any of it runs.
    let token_field = "createApiToken(name: \"dup\") { token }";
    for repeated in [
        format!("mutation {{ {token_field} {token_field} }}"),
        format!("mutation {{ ...F ...F }} fragment F on Mutation {{ {token_field} }}"),
    ] {
        refused(
            &app.gql(token, &repeated, json!({})).await,
            "more than once",
        );
    }
    let listed = app
        .gql(token, "{ me { apiTokens { id } } }", json!({}))
        .await;
    assert_eq!(listed["data"]["me"]["apiTokens"], json!([]), "{listed}");
    // `__typename` runs nothing: Apollo and urql add it to every selection set, fragments on
    // the mutation type included.
    let typed = "mutation { ...F ...G __typename } \
                 fragment F on Mutation { a: createApiToken(name: \"a\") { token __typename } __typename } \
                 fragment G on Mutation { b: createApiToken(name: \"b\") { token __typename } __typename }";
    assert_ok(&app.gql(token, typed, json!({})).await);
    // Introspection answers from the whole schema: `__schema` runs once an operation.
    let twice = "{ ...I ...I } fragment I on Query { __schema { types { name } } }";
    refused(&app.gql(None, twice, json!({})).await, "__schema");
    // And nothing under it runs twice: a fragment spread thousands of times in one `__schema`
    // took most of a second.
    let within = format!(
        "{{ __schema {{ {} }} }} fragment T on __Schema {{ types {{ fields {{ name }} }} }}",
        "...T ".repeat(1_000)
    );
    refused(&app.gql(None, &within, json!({})).await, "more than once");
    // Up to a hundred levels are the parser's to judge.
    let body = app.gql(token, &deep(90), json!({})).await;
    refused(&body, "Unknown argument");
    assert_ok(&app.server_info().await);
    // Complexity: a list counts as many times as `first` asks for.
    let page = |first: usize| {
        format!(
            "users(first: {first}) {{ nodes {{ id username email firstName lastName phone role disabled createdAt updatedAt lastLoginAt createdBy {{ id username email firstName lastName phone role disabled createdAt updatedAt }} }} }}"
        )
    };
    let copies = |first: usize, n: usize| {
        let fields: Vec<String> = (0..n).map(|i| format!("p{i}: {}", page(first))).collect();
        format!("{{ {} }}", fields.join(" "))
    };
    assert_ok(
        &app.gql(token, &format!("{{ {} }}", page(100)), json!({}))
            .await,
    );
    refused(
        &app.gql(token, &copies(100, 5), json!({})).await,
        "is over 10000",
    );
    // The same selection asking for fewer users is cheap enough.
    assert_ok(&app.gql(token, &copies(5, 3), json!({})).await);
    // Thirty fragments, each spreading the next twice: 2^31 fields from under 2 KB, refused
    // at once rather than walked (the walk would hold a worker thread for hours).
    let mut bomb = String::from("{ ...F0 } ");
    for i in 0..30 {
        bomb += &format!("fragment F{i} on Query {{ ...F{n} ...F{n} }} ", n = i + 1);
    }
    bomb += "fragment F30 on Query { serverInfo { version } }";
    let answered = tokio::time::timeout(Duration::from_secs(30), app.gql(None, &bomb, json!({})))
        .await
        .expect("answered, not walked");
    refused(&answered, "selects 2147483648 fields");
    // The same bomb ending in a fragment the document does not define counts no fields, and
    // is refused for that fragment before anything spreads it.
    let unknown = bomb.replace("fragment F30 on Query { serverInfo { version } }", "");
    let answered =
        tokio::time::timeout(Duration::from_secs(30), app.gql(None, &unknown, json!({})))
            .await
            .expect("answered, not walked");
    refused(&answered, "Unknown fragment \"F30\"");
    // A variable's value is bounded like the query text, since each use copies it.
    let lookups = format!(
        "query($v: String) {{ {} }}",
        "user(username: $v) { id } ".repeat(100)
    );
    let body = app
        .gql(token, &lookups, json!({"v": "a".repeat(16 * 1024)}))
        .await;
    refused(&body, "Variable `$v` holds more than 16384 bytes");
    assert_ok(
        &app.gql(token, &lookups, json!({"v": "a".repeat(1024)}))
            .await,
    );
    // Nor may fragments multiply a value: each use is a copy, counted against a request
    // body's worth of input.
    let mut chain = String::from("query($v: String) { ...F0 } ");
    for i in 0..11 {
        chain += &format!("fragment F{i} on Query {{ ...F{n} ...F{n} }} ", n = i + 1);
    }
    chain += "fragment F11 on Query { user(username: $v) { id } }";
    let body = app
        .gql(token, &chain, json!({"v": "a".repeat(1_000)}))
        .await;
    refused(&body, "bytes of argument values");
    // The same value as the variable's default.
    let defaulted = chain.replace(
        "query($v: String)",
        &format!("query($v: String = \"{}\")", "a".repeat(1_000)),
    );
    refused(
        &app.gql(token, &defaulted, json!({})).await,
        "bytes of argument values",
    );
    // Spread within the limit, a fragment used many times is fine.
    let shared = "{ a: serverInfo { ...V } b: serverInfo { ...V } } fragment V on ServerInfo { version name }";
    assert_ok(&app.gql(None, shared, json!({})).await);
}

#[tokio::test]
async fn introspection_and_suggestions_can_be_turned_off() {
    let typo = "{ serverInfo { nme } }";
    let Some(open) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    assert_ok(
        &open
            .gql(None, "{ __schema { queryType { name } } }", json!({}))
            .await,
    );
    let body = open.gql(None, typo, json!({})).await;
    assert!(body.to_string().contains("Did you mean"), "{body}");

    let Some(closed) = TestApp::spawn_with(Backend::Sqlite, |s| s.introspection = false).await
    else {
        return;
    };
    for query in [
        "{ __schema { queryType { name } } }",
        "{ __type(name: \"User\") { name } }",
        "{ me { ... on User { id } } ...F } fragment F on Query { __schema { types { name } } }",
    ] {
        let body = closed.gql(None, query, json!({})).await;
        assert_code(&body, "BAD_USER_INPUT");
        assert!(
            body.to_string().contains("Introspection is turned off"),
            "{body}"
        );
    }
    // `__typename` is no introspection.
    assert_ok(&closed.gql(None, "{ __typename }", json!({})).await);
    let body = closed.gql(None, typo, json!({})).await;
    assert_code(&body, "BAD_USER_INPUT");
    assert!(!body.to_string().contains("Did you mean"), "{body}");
    // Ordinary queries still work.
    assert_ok(&closed.server_info().await);
}

/// Every walk of a parsed document recursed once for each fragment a chain spreads: within a
/// raised length limit, a few thousand fragments each spreading the next overflowed a worker's
/// stack and aborted the server. Refused before any walk, and the server goes on.
#[tokio::test]
async fn long_fragment_chains_are_refused_before_they_are_walked() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |settings| {
        settings.max_query_bytes = 1_000_000;
    })
    .await
    else {
        return;
    };
    let links = 5_000;
    let chain = |last: &str, operation: &str| {
        let mut query = format!("{operation} {{ ...f0 }}");
        for i in 0..links - 1 {
            query.push_str(&format!(" fragment f{i} on Query {{ ...f{} }}", i + 1));
        }
        query.push_str(&format!(" fragment f{} on Query {{ {last} }}", links - 1));
        query
    };
    for (query, words) in [
        (chain("__typename", "query"), "recursion depth"),
        (chain("...f0", "query"), "within itself"),
        (chain("...nowhere", "query"), "recursion depth"),
        // Validation refuses unused fragments too, after a walk of them that costs seconds.
        (
            "{ __typename } fragment u on Query { __typename }".to_owned(),
            "is never used",
        ),
    ] {
        let body = app.gql(None, &query, json!({})).await;
        assert_code(&body, "BAD_USER_INPUT");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "expected {words:?}: {message}");
    }
    assert_ok(&app.gql(None, "{ serverInfo { name } }", json!({})).await);
}

#[tokio::test]
async fn bodies_a_browser_sends_cross_site_are_refused_unrun() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let mutation = json!({
        "query": REGISTER,
        "variables": {"input": {"username": "victim", "email": "v@example.com", "password": PASSWORD}}
    })
    .to_string();
    for content_type in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=xyz"),
        None,
    ] {
        let mut request = app.post().body(mutation.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("sent");
        assert_eq!(response.status(), 415, "{content_type:?}");
        let body: Value = response.json().await.expect("json");
        assert_code(&body, "UNSUPPORTED_MEDIA_TYPE");
    }
    // Nothing ran: the name is still free.
    assert_ok(&app.register_raw("victim", "v@example.com").await);
}

/// A request past the timeout is answered with TIMEOUT and leaves nothing behind.
async fn a_request_past_the_timeout_is_rolled_back(app: TestApp) {
    let alice = app.register("alice").await;
    let database = app.database().await;
    // Another program holds the users table, so the edit's write has to wait.
    let blocker = database.begin().await.expect("begin");
    match app.backend {
        Backend::Postgres => {
            blocker
                .execute_unprepared("LOCK TABLE users IN EXCLUSIVE MODE")
                .await
                .expect("lock");
        }
        Backend::Sqlite => {
            // SQLite began a deferred transaction; a write makes it hold the write lock.
            blocker
                .execute_unprepared(
                    "INSERT INTO server_settings (name, value) VALUES ('test-lock', 'held')",
                )
                .await
                .expect("take the write lock");
        }
    }
    let started = Instant::now();
    let edit = app
        .post()
        .bearer_auth(&alice.access)
        .json(&json!({
            "query": "mutation($id: ID!) { updateUser(id: $id, input: {firstName: \"Late\"}) { id } }",
            "variables": {"id": alice.id},
        }))
        .send();
    let waited = async {
        // On PostgreSQL the edit is seen waiting for the lock: it timed out there.
        if app.backend == Backend::Postgres {
            app.until_waiting_for_locks(1).await;
        }
    };
    let (response, ()) = tokio::join!(edit, waited);
    let response = response.expect("sent");
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("json");
    assert_code(&body, "TIMEOUT");
    assert!(
        elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}"
    );
    let metrics = app.metrics().await;
    assert_eq!(
        support::metric(&metrics, "rollcall_errors_total{code=\"TIMEOUT\"}"),
        1.0,
        "{metrics}"
    );
    if app.backend == Backend::Postgres {
        // The statement stopped with its request, though the database timeout is a minute:
        // no connection is left waiting for the lock on behalf of a client that has its
        // answer.
        eventually_every(
            "no statement left waiting for the lock after its request timed out",
            Duration::from_secs(3),
            Duration::from_millis(100),
            async || app.count(support::LOCK_WAITS).await == 0,
        )
        .await;
    }
    blocker.rollback().await.expect("release");
    // Nothing of the edit was kept, and it goes through once the table is free.
    let me = app
        .gql(Some(&alice.access), "{ me { firstName } }", json!({}))
        .await;
    assert_eq!(me["data"]["me"]["firstName"], Value::Null, "{me}");
    assert_ok(
        &app.update_user(&alice, &alice.id, json!({"firstName": "Late"}))
            .await,
    );
    let _ = database.close().await;
}

async fn a_full_hashing_queue_refuses_at_once(app: TestApp) {
    // One thread, 32 places: far more logins at once than that are refused, not queued.
    let app = &app;
    let answers =
        join_all((0..120).map(|i| async move { wrong_login(app, &format!("nobody{i}")).await }))
            .await;
    let busy = answers
        .iter()
        .filter(|a| error_code(a) == Some("RATE_LIMITED"))
        .count();
    for answer in &answers {
        let code = error_code(answer);
        assert!(
            matches!(code, Some("UNAUTHENTICATED" | "RATE_LIMITED")),
            "{answer}"
        );
    }
    assert!(busy > 0, "no login was refused");
    let message = answers
        .iter()
        .find(|a| error_code(a) == Some("RATE_LIMITED"))
        .and_then(|a| a["errors"][0]["message"].as_str())
        .unwrap_or_default();
    assert!(message.contains("busy"), "{message}");
    // The logins turned away were counted nowhere: a row is left for each login checked only.
    let checked = answers.len() - busy;
    eventually("the turned-away logins taken back", async || {
        app.count("SELECT COUNT(*) FROM credential_failures").await == checked as i64
    })
    .await;
    // And the server is fine afterwards.
    assert_ok(&app.server_info().await);
}

async fn registration_makes_an_owner_only_on_an_empty_database(app: TestApp) {
    // An account made by the operator (the command line's path), not an owner.
    let service = &app.server().service;
    let admin = NewUser {
        username: "operator".into(),
        email: "operator@example.com".into(),
        password: PASSWORD.into(),
        ..NewUser::default()
    };
    service
        .create_user(None, admin, Role::Admin, None)
        .await
        .expect("created");
    let first = app.register("first").await;
    assert_eq!(first.role, "STANDARD");
}

async fn the_first_registrant_of_an_empty_database_owns_it(app: TestApp) {
    assert_eq!(app.register("first").await.role, "OWNER");
    assert_eq!(app.register("second").await.role, "STANDARD");
}

/// An admin's edit decided on a role that changed before its write is refused: the decision
/// is taken again on the locked row inside the write's transaction.
async fn authorisation_is_decided_inside_the_write(app: TestApp) {
    let owner = app.register("owner").await;
    let admin = app.user_with_role(&owner, "admin", "ADMIN").await;
    let target = app.create_user(&owner, "target", "STANDARD").await;
    let victim = app.create_user(&owner, "victim", "STANDARD").await;

    for (id, action) in [(&target, "update"), (&victim, "delete")] {
        let database = app.database().await;
        let promote = database.begin().await.expect("begin");
        let sql = |backend: Backend| match backend {
            Backend::Postgres => format!("UPDATE users SET role = 'ADMIN' WHERE id = '{id}'"),
            Backend::Sqlite => format!(
                "UPDATE users SET role = 'ADMIN' WHERE hex(id) = upper(replace('{id}', '-', ''))"
            ),
        };
        // The promotion holds its lock while the admin's request starts.
        promote
            .execute_unprepared(&sql(app.backend))
            .await
            .expect("promote");
        let request = async {
            match action {
                "update" => {
                    app.update_user(&admin, id, json!({"firstName": "Edited"}))
                        .await
                }
                _ => app.delete_user(&admin, id).await,
            }
        };
        let commit = async {
            match app.backend {
                // The request has read the old role and waits for the row: only the decision
                // inside the write can refuse it.
                Backend::Postgres => app.until_waiting_for_locks(1).await,
                // SQLite shows no lock waits, but the request holds the server's one writer
                // connection while it waits for the write lock (reads take the others): seen
                // held twice, 100 ms apart, it is waiting there.
                Backend::Sqlite => {
                    let writer = app
                        .server()
                        .service
                        .db()
                        .writer()
                        .get_sqlite_connection_pool();
                    let mut held = 0;
                    support::eventually("the request waiting for the write lock", async || {
                        held = if writer.num_idle() == 0 && writer.size() > 0 {
                            held + 1
                        } else {
                            0
                        };
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        held == 2
                    })
                    .await;
                }
            }
            promote.commit().await.expect("commit");
        };
        let (answer, ()) = tokio::join!(request, commit);
        assert_code(&answer, "FORBIDDEN");
        let seen = app.user_by_id(&owner, id).await;
        assert_eq!(seen["data"]["user"]["role"], "ADMIN", "{seen}");
        assert_eq!(seen["data"]["user"]["firstName"], Value::Null, "{seen}");
        let _ = database.close().await;
    }
}

async fn ownership_never_goes_to_a_disabled_account(app: TestApp) {
    let owner = app.register("owner").await;
    let bob = app.create_user(&owner, "bob", "ADMIN").await;
    assert_ok(&app.disable(&owner, &bob).await);
    let body = app.set_role(&owner, &bob, "OWNER").await;
    assert_code(&body, "FORBIDDEN");
    assert!(body.to_string().contains("disabled"), "{body}");
    let err = app
        .server()
        .service
        .promote_owner("bob")
        .await
        .expect_err("refused");
    assert_eq!(err.code(), "FORBIDDEN");
    // The owner is unchanged.
    assert_eq!(app.me(&owner.access).await["data"]["me"]["role"], "OWNER");
}

/// A domain label in its ASCII form takes time quadratic in its length to decode: a long one
/// is refused by its length before anything decodes it, and the server answers at once.
#[tokio::test]
async fn a_huge_email_is_refused_before_it_is_decoded() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let email = format!("ada@xn--{}", "a".repeat(15_000));
    let started = Instant::now();
    let body = app.register_raw("ada", &email).await;
    assert_field_codes(&body, json!({"email": "LENGTH"}));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    // At the bound, decoding is cheap, and the address is still judged on what it encodes.
    let body = app
        .register_raw("ada", &format!("ada@xn--{}.de", "a".repeat(1_000)))
        .await;
    assert_field_codes(&body, json!({"email": "LENGTH"}));
    assert_ok(&app.server_info().await);
}

/// The strength estimate of a new password can take much CPU on a crafted one; it runs on the
/// hashing threads, so requests beside it are answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judging_a_password_holds_no_request_worker() {
    // Hashing threads yield to everything else: on a busy machine the registrations may take
    // long, and that is not what this test is about.
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.request_timeout = Duration::from_secs(60);
    })
    .await
    else {
        return;
    };
    let crafted: String = "4@8({[<3691!|7$5+%20".repeat(7).chars().take(127).collect();
    let registrations = join_all((0..4).map(|i| {
        app.gql(
            None,
            REGISTER,
            json!({"input": {
                "username": format!("crafty{i}"),
                "email": format!("crafty{i}@example.com"),
                "password": crafted,
            }}),
        )
    }));
    let beside = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        assert_ok(&app.server_info().await);
        started.elapsed()
    };
    let (answers, waited) = tokio::join!(registrations, beside);
    for body in answers {
        assert_ok(&body);
    }
    assert!(
        waited < Duration::from_secs(2),
        "serverInfo waited {waited:?}"
    );
}

#[tokio::test]
async fn the_password_policy_refuses_common_and_personal_passwords() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let register = |username: &str, password: &str| {
        app.gql(
            None,
            REGISTER,
            json!({"input": {
                "username": username,
                "email": format!("{username}.mail@example.com"),
                "password": password,
            }}),
        )
    };
    let reason = |body: &Value| {
        assert_code(body, "BAD_USER_INPUT");
        body["errors"][0]["extensions"]["fields"]["password"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    for common in ["password123", "qwertyuiop", "12345678", "iloveyou"] {
        assert_eq!(
            reason(&register("alice", common).await),
            "is too common or too easy to guess"
        );
    }
    assert_eq!(
        reason(&register("alice", "ALICE is my name, really").await),
        "must not contain the account's username"
    );
    assert_eq!(
        reason(&register("carol", "I am carol.mail after all").await),
        "must not contain the account's username"
    );
    // Judged against the email as stored: a space or full-width letters typed into the email
    // do not let its local part through.
    for email in [" Bob.Smith@example.com", "ｂｏｂ.smith@example.com"] {
        let body = app
            .gql(
                None,
                REGISTER,
                json!({"input": {"username": "robert", "email": email, "password": "bob.smith rides a bike"}}),
            )
            .await;
        assert_eq!(
            reason(&body),
            "must not contain the account's email address",
            "{email}"
        );
    }
    let owner = Session::from_payload(&register("owner", PASSWORD).await, "register");
    // The same rules when a password is changed.
    let body = app
        .update_user(
            &owner,
            &owner.id,
            json!({"password": "owner owner owner", "currentPassword": PASSWORD}),
        )
        .await;
    assert_eq!(reason(&body), "must not contain the account's username");
    // Over-long inputs are refused before any hashing.
    let long = "x".repeat(129);
    let body = app.login("owner", &long).await;
    assert_eq!(reason(&body), "must be at most 128 characters");
    let body = app
        .update_user(
            &owner,
            &owner.id,
            json!({"password": "a brand new passphrase", "currentPassword": long}),
        )
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    assert!(
        body["errors"][0]["extensions"]["fields"]["currentPassword"].is_string(),
        "{body}"
    );
    // An invalid new email is reported with the `currentPassword` it would need, at once.
    let body = app
        .update_user(&owner, &owner.id, json!({"email": "not an address"}))
        .await;
    let fields = &body["errors"][0]["extensions"]["fields"];
    assert!(
        fields["email"].is_string() && fields["currentPassword"].is_string(),
        "{body}"
    );
}

/// A login given up on while it waits for a hashing thread is not counted against the
/// account: here the client gives up on three wrong-password logins queued behind others.
async fn an_attempt_nobody_waited_for_is_not_counted(app: TestApp) {
    let alice = app.register("alice").await;
    let app = &app;
    let fillers =
        join_all((0..30).map(|i| async move { wrong_login(app, &format!("nobody{i}")).await }));
    let subject = format!("user:{}", alice.id);
    let impatient = async {
        eventually("the hashing queue to fill", async || {
            metric(&app.metrics().await, "rollcall_password_hash_queue") >= 20.0
        })
        .await;
        let attempts: Vec<_> = (0..3)
            .map(|_| {
                tokio::spawn(
                    app.post()
                        .json(&json!({
                            "query": LOGIN,
                            "variables": {"input": {"login": "alice", "password": "not the password"}},
                        }))
                        .send(),
                )
            })
            .collect();
        // Counted before they wait for a hashing thread, then given up on while they wait.
        app.until_counted(&subject, 3).await;
        for attempt in &attempts {
            attempt.abort();
        }
        join_all(attempts).await
    };
    let (_, given_up) = tokio::join!(fillers, impatient);
    for outcome in given_up {
        assert!(
            outcome.as_ref().is_err_and(|err| err.is_cancelled()),
            "answered before the client gave up: {outcome:?}"
        );
    }
    support::eventually("the attempts taken back", async || {
        app.failures(&subject).await == 0
    })
    .await;
    // And a wrong password that is answered counts as ever.
    assert_code(&wrong_login(app, "alice").await, "UNAUTHENTICATED");
    assert_eq!(app.failures(&subject).await, 1);
}

/// Counts nobody has added to for a day go, a few rows a statement (two here), so a flood's
/// backlog never needs one statement longer than the timeout; recent and locked ones stay.
async fn old_throttle_counts_are_forgotten_in_batches(app: TestApp) {
    let db = app.database().await;
    let day_ago = chrono::Utc::now().timestamp_millis() - 25 * 3600 * 1000;
    let far = chrono::Utc::now().timestamp_millis() + 3600 * 1000;
    for (subject, locked_until, updated_at) in [
        ("login:a", 0, day_ago),
        ("login:b", 0, day_ago),
        ("login:c", 0, day_ago),
        ("login:d", 0, day_ago),
        ("login:e", 0, day_ago),
        ("login:locked", far, day_ago),
        ("login:recent", 0, day_ago + 2 * 3600 * 1000),
    ] {
        db.execute_unprepared(&format!(
            "INSERT INTO credential_failures (subject, failures, locked_until, updated_at) \
             VALUES ('{subject}', 5, {locked_until}, {updated_at})"
        ))
        .await
        .expect("a count");
    }
    let purged = rollcall::db::throttle::purge(&db, 2)
        .await
        .expect("purge runs");
    assert_eq!(purged, 5);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM credential_failures").await,
        2
    );
}

/// An attempt taken back takes back the lock its count set, and only that one: a lock set since
/// by another attempt, let in once the first lock had run out while the taken-back attempt
/// still waited for its check, stays.
async fn a_taken_back_attempt_takes_back_only_its_own_lock(app: TestApp) {
    use rollcall::db::throttle::{Policy, release, reserve};
    let db = app.database().await;
    let policy = Policy {
        after: 2,
        first_wait: Duration::from_secs(600),
        max_wait: Duration::from_secs(3_600),
    };
    let subject = "login:target";
    let reserved = async || reserve(&db, subject, policy).await.expect("reserve runs");
    assert_eq!(
        reserved().await.map(|r| r.lock),
        Ok(0),
        "the first failure sets no lock"
    );
    let first = reserved().await.expect("the second is let in and locks");
    assert!(first.lock > 0);
    // Its lock runs out while it still waits for its check; another attempt is let in.
    db.execute_unprepared(&format!(
        "UPDATE credential_failures SET locked_until = 1 WHERE subject = '{subject}'"
    ))
    .await
    .expect("the lock runs out");
    let later = reserved().await.expect("let in once the lock ran out");
    assert!(later.lock > 0);
    // The first is taken back: the later lock stands.
    release(&db, subject, first).await.expect("release runs");
    assert!(
        reserved().await.is_err(),
        "the later lock was taken back too"
    );
    assert_eq!(app.failures(subject).await, 2);
    // Taken back in turn, the later attempt's lock goes with it.
    release(&db, subject, later).await.expect("release runs");
    assert!(reserved().await.is_ok());
}

/// An attempt counted before a success and taken back after it (its check still waiting on
/// another instance) takes nothing from the run of failures begun since: the count after a
/// success is the new failures', all of them.
async fn an_attempt_taken_back_after_a_success_leaves_the_new_count(app: TestApp) {
    use rollcall::db::throttle::{Policy, clear, release, reserve};
    let db = app.database().await;
    let policy = Policy {
        after: 5,
        first_wait: Duration::from_secs(600),
        max_wait: Duration::from_secs(3_600),
    };
    let subject = "login:target";
    let reserved = async || {
        reserve(&db, subject, policy)
            .await
            .expect("reserve runs")
            .expect("let in")
    };
    let waiting = [reserved().await, reserved().await, reserved().await];
    // The right password, elsewhere: the count starts afresh.
    clear(&db, subject).await.expect("clear runs");
    for _ in 0..4 {
        reserved().await;
    }
    for attempt in waiting {
        release(&db, subject, attempt).await.expect("release runs");
    }
    assert_eq!(app.failures(subject).await, 4);
    // The fifth failure since the success locks, as it would have without the take-backs.
    assert!(reserved().await.lock > 0);
    assert!(
        reserve(&db, subject, policy)
            .await
            .expect("reserve runs")
            .is_err()
    );
}

backend_tests!(
    a_taken_back_attempt_takes_back_only_its_own_lock,
    an_attempt_taken_back_after_a_success_leaves_the_new_count,
    old_throttle_counts_are_forgotten_in_batches,
    account_throttle_after_five_failures with |s| s.throttle_wait = std::time::Duration::from_secs(6),
    waits_grow_and_unknown_logins_are_throttled_alike with |s| s.throttle_wait = std::time::Duration::from_secs(3),
    parallel_attempts_cannot_slip_past_the_count with |s| s.throttle_wait = super::TEN_MINUTES,
    attempts_contending_for_one_count_are_throttled_not_failed with |s| {
        s.throttle_after = 1_000;
        s.hash_concurrency = Some(2);
    },
    a_new_password_or_enabling_starts_the_count_afresh with |s| s.throttle_wait = super::TEN_MINUTES,
    current_password_is_throttled_per_session with |s| s.throttle_wait = super::TEN_MINUTES,
    unknown_and_known_logins_cost_a_check_alike with |s| s.throttle_after = 1_000,
    one_password_check_per_request,
    graphql_limits,
    a_request_past_the_timeout_is_rolled_back with |s| {
        s.request_timeout = std::time::Duration::from_secs(1);
        s.db_timeout = std::time::Duration::from_secs(60);
    },
    a_full_hashing_queue_refuses_at_once with |s| s.hash_concurrency = Some(1),
    an_attempt_nobody_waited_for_is_not_counted with |s| s.hash_concurrency = Some(1),
    registration_makes_an_owner_only_on_an_empty_database,
    the_first_registrant_of_an_empty_database_owns_it,
    authorisation_is_decided_inside_the_write,
    ownership_never_goes_to_a_disabled_account,
);

/// A client that stops reading answers loses its connection once no more of one could be
/// written for the header timeout (a second here), rather than holding it, and the answers
/// waiting for it, for ever.
#[tokio::test]
async fn a_client_that_stops_reading_is_let_go() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.header_timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let address = app.server().addr;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("a small receive buffer");
    let stream = socket.connect(address).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let body = json!({ "query": INTROSPECTION }).to_string();
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // 150 answers of the whole schema (over 8 MB), more than the connection's buffers hold
    // (4 MiB at most for the server's sending), so the server's writes wait for the client.
    // Written aside: once those wait, the server reads no more requests either.
    let requests = request.repeat(150);
    let written = tokio::spawn(async move {
        let _ = writer.write_all(requests.as_bytes()).await;
        writer
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut answers = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answers)).await;
    // Closed by the server (a reset, or the end after what it had sent), not left open.
    assert!(read.is_ok(), "the connection is still open");
    let taken = String::from_utf8_lossy(&answers)
        .matches("HTTP/1.1 200")
        .count();
    assert!(taken < 150, "{taken} answers were taken");
    written.abort();
    assert_ok(&app.server_info().await);
}

/// graphql-js's `getIntrospectionQuery()`, as GraphiQL and code generators send it.
const INTROSPECTION: &str = r#"
    query IntrospectionQuery {
      __schema {
        queryType { name }
        mutationType { name }
        subscriptionType { name }
        types { ...FullType }
        directives { name description locations args { ...InputValue } }
      }
    }
    fragment FullType on __Type {
      kind name description
      fields(includeDeprecated: true) {
        name description
        args { ...InputValue }
        type { ...TypeRef }
        isDeprecated deprecationReason
      }
      inputFields { ...InputValue }
      interfaces { ...TypeRef }
      enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
      possibleTypes { ...TypeRef }
    }
    fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
    fragment TypeRef on __Type {
      kind name
      ofType { kind name ofType { kind name ofType { kind name ofType { kind name
        ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
    }
"#;

/// Lists nest through an API token's `createdBy`: a user with a hundred tokens of long names
/// asks in one short query, within the document limits, for an answer of megabytes. It is not
/// sent (nor held for a client that does not read it), and the error says why.
#[tokio::test]
async fn an_answer_too_long_is_not_sent() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let alice = app.register("alice").await;
    // A hundred characters of four bytes each.
    let long = "😀".repeat(96);
    for n in 0..100 {
        let body = app
            .gql(
                Some(&alice.access),
                "mutation($name: String!) { createApiToken(name: $name) { token } }",
                json!({"name": format!("t{n:03}{long}")}),
            )
            .await;
        assert_ok(&body);
    }
    let nested =
        "{ me { apiTokens { createdBy { apiTokens { name a: name b: name c: name } } } } }";
    let response = app
        .post()
        .bearer_auth(&alice.access)
        .json(&json!({ "query": nested }))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert_code(&body, "RESPONSE_TOO_LARGE");
    assert!(body["data"].is_null(), "{body}");
    // The same list once is answered.
    let once = app
        .gql(
            Some(&alice.access),
            "{ me { apiTokens { name } } }",
            json!({}),
        )
        .await;
    assert_ok(&once);
    assert_eq!(
        once["data"]["me"]["apiTokens"].as_array().map(Vec::len),
        Some(100)
    );
}
