//! Signing keys: EdDSA access tokens with a kid, the JWKS other services verify them with,
//! keys shared by instances on one database, rotation, and HS256 with a configured secret.

mod support;

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use support::{Gql, Session, TestApp, assert_code, assert_ok, rollcall_command, run_or_kill};

/// Short enough to watch a retired key's window end: keys are reloaded every 2 s and a retired
/// key verifies for 4 s + 2 s.
const SHORT_TTL: Duration = Duration::from_secs(4);

async fn jwks_at(app: &TestApp, base_url: &str) -> (Value, Option<String>) {
    let response = app
        .client
        .get(format!("{base_url}/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks request");
    assert_eq!(response.status(), 200);
    let cache = response
        .headers()
        .get("cache-control")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (response.json().await.expect("jwks body"), cache)
}

async fn jwks(app: &TestApp) -> Value {
    jwks_at(app, &app.base_url()).await.0
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .map(|key| key["kid"].as_str().expect("kid").to_owned())
        .collect()
}

fn header(token: &str) -> Header {
    jsonwebtoken::decode_header(token).expect("token header")
}

fn kid(token: &str) -> String {
    header(token).kid.expect("kid in the header")
}

/// Verifies `token` as another service would: with the JWKS entry its kid names.
fn verify_with_jwks(token: &str, jwks: &Value) -> Result<Value, String> {
    let kid = kid(token);
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|key| key["kid"] == json!(kid)))
        .ok_or("kid not in the JWKS")?;
    let x = jwk["x"].as_str().ok_or("no x")?;
    let key = DecodingKey::from_ed_components(x).map_err(|err| err.to_string())?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["rollcall"]);
    validation.set_audience(&["rollcall"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|err| err.to_string())
}

async fn tokens_are_eddsa_and_verify_with_the_jwks(app: TestApp) {
    let alice = app.register("alice").await;
    let header = header(&alice.access);
    assert_eq!(header.alg, Algorithm::EdDSA);
    let (set, cache) = jwks_at(&app, &app.base_url()).await;
    assert!(
        cache.as_deref().is_some_and(|c| c.contains("max-age=300")),
        "{cache:?}"
    );
    assert_eq!(kids(&set), vec![kid(&alice.access)]);
    let jwk = &set["keys"][0];
    for (field, value) in [
        ("kty", "OKP"),
        ("crv", "Ed25519"),
        ("use", "sig"),
        ("alg", "EdDSA"),
    ] {
        assert_eq!(jwk[field], json!(value), "{field}: {set}");
    }
    assert!(jwk.get("d").is_none(), "no private part: {set}");
    let claims = verify_with_jwks(&alice.access, &set).expect("verifies with the JWKS");
    assert_eq!(claims["sub"], json!(alice.id));

    // HS256 forgeries: with the public key as the secret (algorithm confusion), or any other.
    let x = jwk["x"].as_str().expect("x").to_owned();
    let mut forged_header = Header::new(Algorithm::HS256);
    forged_header.kid = Some(kid(&alice.access));
    for secret in [x.as_bytes(), "k".repeat(40).as_bytes()] {
        let forged =
            jsonwebtoken::encode(&forged_header, &claims, &EncodingKey::from_secret(secret))
                .expect("sign");
        assert_code(&app.me(&forged).await, "UNAUTHENTICATED");
    }

    // A second instance on the same database uses the same key: tokens cross over.
    let second = app.second_instance().await;
    let other = app.at(&second);
    assert_ok(&other.me(&alice.access).await);
    let bob = other.register("bob").await;
    assert_eq!(kid(&bob.access), kid(&alice.access));
    assert_ok(&app.me(&bob.access).await);
    assert_eq!(jwks_at(&app, &other.base_url).await.0, set);
    second.stop().await;
}

/// Rotation in the service: new tokens carry the new kid at once, old ones keep working on
/// every instance, another instance switches on its next reload, and once the old key's
/// window is over it leaves the JWKS and then the database.
async fn rotation_keeps_old_tokens_until_they_expire(app: TestApp) {
    let second = app.second_instance().await;
    let other = app.at(&second);
    let alice = app.register("alice").await;
    let old_kid = kid(&alice.access);

    let new_kid = app
        .server()
        .service
        .rotate_signing_key(false)
        .await
        .expect("rotate");
    assert_ne!(new_kid, old_kid);
    // The old token first, while its 4 s last: a login hashes, which a busy machine may slow.
    assert_ok(&app.me(&alice.access).await);
    assert_ok(&other.me(&alice.access).await);
    let set = jwks(&app).await;
    assert_eq!(kids(&set).len(), 2, "{set}");
    verify_with_jwks(&alice.access, &set).expect("old token verifies with the JWKS");
    let again = app.login_as("alice").await;
    assert_eq!(kid(&again.access), new_kid);
    verify_with_jwks(&again.access, &set).expect("new token verifies with the JWKS");

    // The other instance reloads by itself (nothing it was sent named the new kid) and signs
    // with the new key too.
    support::eventually_every(
        "the other instance's reload",
        Duration::from_secs(10),
        Duration::from_millis(200),
        async || kid(&other.login_as("alice").await.access) == new_kid,
    )
    .await;
    assert_ok(&other.me(&again.access).await);

    // Once the old key's tokens have expired (4 s, plus the reloads the instances recorded
    // on it: at most 12 s after their last record), it is retired on both instances: their
    // JWKS lists only the new one. (The old token has expired by its own 4 s lifetime by then
    // too, so its refusal shows only that the instances still answer.)
    support::eventually_every(
        "the old key's retirement",
        Duration::from_secs(20),
        Duration::from_millis(250),
        async || {
            kids(&jwks(&app).await) == [new_kid.clone()]
                && kids(&jwks_at(&app, &other.base_url).await.0) == [new_kid.clone()]
        },
    )
    .await;
    assert_code(&app.me(&alice.access).await, "UNAUTHENTICATED");
    assert_code(&other.me(&alice.access).await, "UNAUTHENTICATED");
    assert_ok(&app.me(&app.login_as("alice").await.access).await);

    // The next reload deletes the old key, private part and all.
    let database = app.database().await;
    let mut stored = Vec::new();
    for _ in 0..40 {
        stored = database
            .query_all_raw(Statement::from_string(
                database.get_database_backend(),
                "SELECT kid FROM signing_keys",
            ))
            .await
            .expect("keys")
            .iter()
            .filter_map(|row| row.try_get::<String>("", "kid").ok())
            .collect();
        if stored.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, vec![kid(&again.access)]);
    let _ = database.close().await;
    second.stop().await;
}

/// Instances with different access token lifetimes on one database: a rotation leaves the
/// old key in place until the tokens of the longest-lived instance have expired, not only
/// those of the instance that judges (here `app`, whose window for the old key ends 6 s after
/// the rotation; it would then delete the key for everyone).
async fn a_retired_key_verifies_for_the_longest_lifetime(app: TestApp) {
    let mut long = app.settings.clone();
    long.access_ttl = Duration::from_secs(3600);
    let second = rollcall::server::RunningServer::start(&long)
        .await
        .expect("second server starts");
    let other = app.at(&second);
    app.register("alice").await;
    let long_lived = other.login_as("alice").await;
    let old_kid = kid(&long_lived.access);
    app.server()
        .service
        .rotate_signing_key(false)
        .await
        .expect("rotate");
    tokio::time::sleep(SHORT_TTL + Duration::from_millis(3500)).await;
    assert_ok(&app.me(&long_lived.access).await);
    assert_ok(&other.me(&long_lived.access).await);
    assert!(kids(&jwks(&app).await).contains(&old_kid));
    assert!(
        kids(&jwks_at(&app, &other.base_url).await.0).contains(&old_kid),
        "the long-lived instance still publishes the old key"
    );
    second.stop().await;
}

/// A key rotated on one instance works on another at once, long before its periodic reload
/// (30 s with these settings): meeting the new kid, it reloads, and its JWKS has the key too.
async fn a_rotated_key_works_at_once_on_every_instance(app: TestApp) {
    let second = app.second_instance().await;
    let other = app.at(&second);
    app.register("alice").await;
    let new_kid = app
        .server()
        .service
        .rotate_signing_key(false)
        .await
        .expect("rotate");
    let fresh = app.login_as("alice").await;
    assert_eq!(kid(&fresh.access), new_kid);
    assert_ok(&other.me(&fresh.access).await);
    let set = jwks_at(&app, &other.base_url).await.0;
    verify_with_jwks(&fresh.access, &set).expect("the other instance publishes the new key");
    // A kid nobody issued is still refused.
    let (head, rest) = fresh.access.split_once('.').expect("jwt");
    let mut forged_head: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, head)
            .expect("header"),
    )
    .expect("header json");
    forged_head["kid"] = json!("no-such-kid");
    let forged_head = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        forged_head.to_string(),
    );
    assert_code(
        &other.me(&format!("{forged_head}.{rest}")).await,
        "UNAUTHENTICATED",
    );
    second.stop().await;
}

/// `rollcall keys rotate` against a running server's database.
async fn the_rotate_command_switches_running_servers(app: TestApp) {
    let old_kid = kid(&app.register("alice").await.access);
    let url = app.db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_or_kill(
            rollcall_command(&url, &[]).args(["keys", "rotate"]),
            "rollcall keys rotate",
        )
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let new_kid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!new_kid.is_empty() && new_kid != old_kid, "{new_kid}");
    assert!(!stderr.contains("PRIVATE"), "{stderr}");

    // The server switches on its next reload (every 2 s with these settings).
    support::eventually("the switch to the new key", async || {
        kid(&app.login_as("alice").await.access) == new_kid
    })
    .await;
    assert!(kids(&jwks(&app).await).contains(&new_kid));

    // With a shared secret configured there are no stored keys to rotate.
    let url = app.db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_or_kill(
            rollcall_command(&url, &[("ROLLCALL_JWT_SECRET", &"k".repeat(40))])
                .args(["keys", "rotate"]),
            "rollcall keys rotate with a secret",
        )
    })
    .await
    .expect("join");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ROLLCALL_JWT_SECRET"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `keys rotate --revoke`, for a key that may have leaked: tokens the old key signed are
/// refused as soon as the server has reloaded (here at once, through a JWKS read), though
/// they have most of 15 minutes to run; the session itself goes on with a refresh.
async fn revoking_rotation_refuses_old_tokens_at_once(app: TestApp) {
    let alice = app.register("alice").await;
    let old_kid = kid(&alice.access);
    assert_ok(&app.me(&alice.access).await);
    let url = app.db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_or_kill(
            rollcall_command(&url, &[]).args(["keys", "rotate", "--revoke"]),
            "rollcall keys rotate --revoke",
        )
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("refresh"), "{stderr}");
    let new_kid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!new_kid.is_empty() && new_kid != old_kid, "{new_kid}");

    // A JWKS read more than a second after the last reload reads the keys again (tried again
    // on a busy machine, where a reload may time out or meet the periodic one).
    support::eventually_every(
        "the JWKS with only the new key",
        Duration::from_secs(20),
        Duration::from_millis(1100),
        async || kids(&jwks(&app).await) == [new_kid.clone()],
    )
    .await;
    assert_code(&app.me(&alice.access).await, "UNAUTHENTICATED");

    let refreshed = app.refresh(&alice.refresh).await;
    assert_ok(&refreshed);
    let access = refreshed["data"]["refreshToken"]["accessToken"]
        .as_str()
        .expect("access token");
    assert_eq!(kid(access), new_kid);
    assert_ok(&app.me(access).await);

    let audit = app
        .gql(
            Some(access),
            "{ auditLog(first: 5) { nodes { action actorId targetId } } }",
            json!({}),
        )
        .await;
    assert_ok(&audit);
    assert_eq!(
        audit["data"]["auditLog"]["nodes"][0],
        json!({"action": "SIGNING_KEYS_REVOKED", "actorId": null, "targetId": null}),
        "{audit}"
    );
    // An entry about no user is the owner's only: an admin does not see it.
    let owner = Session::from_payload(&refreshed, "refreshToken");
    let admin = app.user_with_role(&owner, "bob", "ADMIN").await;
    let about_keys =
        "{ auditLog(filter: {action: SIGNING_KEYS_REVOKED}) { totalCount nodes { action } } }";
    let seen = app.gql(Some(&admin.access), about_keys, json!({})).await;
    assert_eq!(
        seen["data"]["auditLog"],
        json!({"totalCount": 0, "nodes": []}),
        "{seen}"
    );
}

async fn a_secret_selects_hs256_and_publishes_nothing(app: TestApp) {
    let alice = app.register("alice").await;
    let header = header(&alice.access);
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(header.kid, None);
    // The secret was set with a final newline, as read from a file: it is no part of the key.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    let secret = DecodingKey::from_secret("k".repeat(40).as_bytes());
    jsonwebtoken::decode::<Value>(&alice.access, &secret, &validation)
        .expect("signed with the secret");
    assert_ok(&app.me(&alice.access).await);
    assert_eq!(jwks(&app).await, json!({"keys": []}));
    assert!(
        app.server()
            .service
            .rotate_signing_key(false)
            .await
            .is_err()
    );
}

backend_tests!(
    tokens_are_eddsa_and_verify_with_the_jwks,
    rotation_keeps_old_tokens_until_they_expire with |s| s.access_ttl = crate::SHORT_TTL,
    the_rotate_command_switches_running_servers with |s| s.access_ttl = crate::SHORT_TTL,
    revoking_rotation_refuses_old_tokens_at_once,
    a_rotated_key_works_at_once_on_every_instance,
    a_retired_key_verifies_for_the_longest_lifetime with |s| s.access_ttl = crate::SHORT_TTL,
    a_secret_selects_hs256_and_publishes_nothing with |s| s.jwt_secret = Some(format!("{}\n", "k".repeat(40))),
);

/// Instances starting at once on a new database create one first key between them.
async fn instances_starting_together_agree(backend: support::Backend) {
    let Some(db) = support::TestDb::create(backend).await else {
        return;
    };
    let settings = rollcall::config::Settings::with_database(db.url.clone());
    let starts = (0..4).map(|_| {
        let settings = settings.clone();
        tokio::spawn(async move { rollcall::service::Service::start(&settings).await })
    });
    let mut kids = Vec::new();
    for start in futures::future::join_all(starts).await {
        let service = start.expect("join").expect("service starts");
        kids.push(service.current_kid().expect("a current kid"));
    }
    kids.dedup();
    assert_eq!(kids.len(), 1, "{kids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_instances_starting_together_agree() {
    instances_starting_together_agree(support::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_starting_together_agree() {
    instances_starting_together_agree(support::Backend::Postgres).await;
}

/// A running server says when a rotation reaches it, naming the key it signs with from then
/// on, as its start-up line names the first: an operator sees every instance has the new key
/// before retiring the old one with `--revoke`.
#[tokio::test]
async fn a_server_logs_the_key_it_switches_to() {
    let Some(db) = support::TestDb::create(support::Backend::Sqlite).await else {
        return;
    };
    // Keys are reloaded every 2 s with this lifetime.
    let server = support::ServerProcess::start(&db.url, &[("ROLLCALL_ACCESS_TTL", "4s")]);
    let out = run_or_kill(
        rollcall_command(&db.url, &[]).args(["keys", "rotate"]),
        "rollcall keys rotate",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_kid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let line = server.log_line("now signing with the stored key");
    assert!(line.contains(&new_kid), "{line}");
    assert!(server.terminate().success());
}
