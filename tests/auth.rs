//! Authentication over HTTP: login, access-token verification, refresh-token rotation and
//! reuse detection, logout, immediate revocation, and several instances on one database.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{Gql, PASSWORD, Session, TestApp, assert_code, assert_ok};

/// The signing key the forgery checks configure, so they can sign tokens the server must
/// accept and prove that the refusals are about the one thing each token gets wrong.
fn known_secret() -> String {
    "k".repeat(40)
}

// ---------------------------------------------------------------------------------------------
// Login

async fn login_by_username_and_email(app: TestApp) {
    let alice = app.register("alice").await;
    // A registration opens a session, so it counts as the first login.
    let me = app
        .gql(
            Some(&alice.access),
            "{ me { createdAt lastLoginAt } }",
            json!({}),
        )
        .await;
    assert_eq!(
        me["data"]["me"]["lastLoginAt"], me["data"]["me"]["createdAt"],
        "{me}"
    );
    for login in ["alice", "ALICE", "alice@example.com", "Alice@EXAMPLE.com"] {
        let before = Utc::now();
        let body = app.login(login, PASSWORD).await;
        assert_ok(&body);
        let payload = &body["data"]["login"];
        assert_eq!(payload["tokenType"], "Bearer", "{login}: {body}");
        assert_eq!(payload["user"]["id"], alice.id.as_str(), "{login}: {body}");
        assert_eq!(payload["user"]["username"], "alice", "{login}: {body}");
        let expires = expires_at(payload);
        assert!(
            expires > before,
            "{login}: expiresAt {expires} is not in the future"
        );
        // The default access lifetime is 15 minutes.
        let lifetime = expires - before;
        assert!(
            lifetime > chrono::Duration::minutes(14) && lifetime <= chrono::Duration::minutes(16),
            "{login}: expiresAt {expires} is not about 15 minutes ahead of {before}"
        );
        // The same, in seconds from the answer, for clients whose clock is off.
        let seconds = payload["expiresIn"].as_i64().expect("expiresIn");
        let left = (expires - Utc::now()).num_seconds();
        assert!(
            (left - 2..=left + 1).contains(&seconds),
            "{login}: {seconds} vs {left}: {body}"
        );

        let session = Session::from_payload(&body, "login");
        assert_ne!(
            session.refresh, alice.refresh,
            "every login gets its own refresh token"
        );
        let me = app.me(&session.access).await;
        assert_ok(&me);
        assert_eq!(me["data"]["me"]["id"], alice.id.as_str());
        assert_eq!(me["data"]["me"]["username"], "alice");
        assert_eq!(me["data"]["me"]["role"], "OWNER");
    }
}

async fn bad_credentials_are_indistinguishable(app: TestApp) {
    let owner = app.register("owner").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    let carol = app.user_with_role(&owner, "carol", "STANDARD").await;
    assert_ok(&app.disable(&owner, &carol.id).await);

    let wrong_password = app.login("bob", "not the password").await;
    let unknown_user = app.login("nobody", PASSWORD).await;
    let unknown_email = app.login("nobody@example.com", PASSWORD).await;
    // Carol's password is right: only the disabled flag stands in the way.
    let disabled = app.login("carol", PASSWORD).await;

    for (what, body) in [
        ("wrong password", &wrong_password),
        ("unknown user", &unknown_user),
        ("unknown email", &unknown_email),
        ("disabled user", &disabled),
    ] {
        assert_code(body, "UNAUTHENTICATED");
        assert!(
            body["data"].is_null(),
            "{what}: no data may come back: {body}"
        );
        let errors = body["errors"].as_array().expect("errors array");
        assert_eq!(errors.len(), 1, "{what}: exactly one error: {body}");
        // Same operation, so even path and locations must match: the whole error is equal.
        assert_eq!(
            body["errors"], wrong_password["errors"],
            "{what} must fail exactly like a wrong password"
        );
        assert_eq!(
            body["errors"][0]["message"], wrong_password["errors"][0]["message"],
            "{what}: message"
        );
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            wrong_password["errors"][0]["extensions"]["code"],
            "{what}: code"
        );
    }
    // Bob's own sessions are untouched by the failed attempt.
    assert_ok(&app.me(&bob.access).await);

    // A blank box is no attempt: missing, named like a blank password, for a form to flag.
    for (login, password, field) in [("", PASSWORD, "login"), ("  ", PASSWORD, "login")]
        .into_iter()
        .chain([("bob", "", "password")])
    {
        let body = app.login(login, password).await;
        assert_code(&body, "BAD_USER_INPUT");
        support::assert_field_codes(&body, json!({ field: "REQUIRED" }));
    }
}

// ---------------------------------------------------------------------------------------------
// Access tokens

/// With a generated key the tests cannot sign a valid token, but anything they sign is foreign.
async fn tokens_not_signed_by_the_server_are_refused(app: TestApp) {
    let alice = app.register("alice").await;
    assert_ok(&app.me(&alice.access).await);
    let claims = jwt_payload(&alice.access);

    let foreign = sign(&claims, Algorithm::HS256, known_secret().as_bytes());
    assert_code(&app.me(&foreign).await, "UNAUTHENTICATED");
    let none = unsigned(&claims);
    assert_code(&app.me(&none).await, "UNAUTHENTICATED");
    // The server's own signature over a header that says `none`.
    let signature = alice.access.rsplit('.').next().expect("signature part");
    let relabelled = format!("{}.{signature}", none.trim_end_matches('.'));
    assert_code(&app.me(&relabelled).await, "UNAUTHENTICATED");

    // Tampering with the payload breaks the signature: a live token of a live session, given
    // a later expiry, is refused for its signature alone.
    let bob = app.user_with_role(&alice, "bob", "STANDARD").await;
    let mut bob_claims = jwt_payload(&bob.access);
    bob_claims["exp"] = json!(Utc::now().timestamp() + 365 * 86_400);
    let tampered_payload = URL_SAFE_NO_PAD.encode(bob_claims.to_string());
    let mut parts: Vec<&str> = bob.access.split('.').collect();
    parts[1] = &tampered_payload;
    assert_code(&app.me(&parts.join(".")).await, "UNAUTHENTICATED");
    assert_ok(&app.me(&bob.access).await);

    // Not JWTs at all.
    for junk in ["", "Bearer", "a.b.c", "..", &alice.refresh] {
        assert_code(&app.me(junk).await, "UNAUTHENTICATED");
    }
}

/// The server signs with a known key here, so the test can sign a token the server must accept
/// and then get exactly one thing wrong at a time.
async fn forged_tokens_are_refused(app: TestApp) {
    let alice = app.register("alice").await;
    let bob = app.user_with_role(&alice, "bob", "STANDARD").await;
    let secret = known_secret();
    let key = secret.as_bytes();
    let issued = jwt_payload(&alice.access);
    for claim in ["sub", "sid", "iat", "exp", "iss", "aud"] {
        assert!(
            !issued[claim].is_null(),
            "the server's token carries `{claim}`: {issued}"
        );
    }
    assert_eq!(issued["sub"], alice.id.as_str());
    let header = jwt_header(&alice.access);
    assert_eq!(
        header["alg"], "HS256",
        "the server signs with HS256: {header}"
    );

    let now = Utc::now().timestamp();
    let good = json!({
        "sub": issued["sub"], "sid": issued["sid"], "iat": now, "exp": now + 300,
        "iss": issued["iss"], "aud": issued["aud"],
    });

    // The control: a well-formed token signed with the server's key is accepted, so every
    // refusal below is about what that token gets wrong.
    let accepted = app.me(&sign(&good, Algorithm::HS256, key)).await;
    assert_ok(&accepted);
    assert_eq!(accepted["data"]["me"]["id"], alice.id.as_str());

    let refuse = |what: String, token: String| {
        let app = &app;
        async move {
            let body = app.me(&token).await;
            assert_code(&body, "UNAUTHENTICATED");
            assert!(
                body["data"].is_null(),
                "{what}: no data may come back: {body}"
            );
        }
    };

    // Other keys and algorithms.
    refuse(
        "another key".into(),
        sign(
            &good,
            Algorithm::HS256,
            b"another key that is long enough!!",
        ),
    )
    .await;
    refuse(
        "secret plus a byte".into(),
        sign(&good, Algorithm::HS256, format!("{secret}k").as_bytes()),
    )
    .await;
    refuse("HS384, same key".into(), sign(&good, Algorithm::HS384, key)).await;
    refuse("HS512, same key".into(), sign(&good, Algorithm::HS512, key)).await;
    refuse("alg none".into(), unsigned(&good)).await;
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(good.to_string());
        refuse(format!("alg {alg}"), format!("{header}.{payload}.")).await;
    }

    // Extensions the server would have to understand (RFC 7515, 4.1.11); a header with an
    // extra member that is not critical is accepted, so the refusal is about `crit`.
    let with_header = |header: Value| {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(good.to_string())
        );
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(key),
            Algorithm::HS256,
        )
        .expect("sign");
        format!("{message}.{signature}")
    };
    let extra = with_header(json!({"alg": "HS256", "typ": "JWT", "x-note": 1}));
    assert_ok(&app.me(&extra).await);
    refuse(
        "crit".into(),
        with_header(json!({"alg": "HS256", "typ": "JWT", "crit": ["x-note"], "x-note": 1})),
    )
    .await;

    // Each required claim, missing.
    for claim in ["aud", "sid", "sub", "iss", "exp", "iat"] {
        let mut claims = good.clone();
        claims.as_object_mut().expect("claims object").remove(claim);
        refuse(
            format!("missing {claim}"),
            sign(&claims, Algorithm::HS256, key),
        )
        .await;
    }

    // Each checked claim, wrong.
    let wrong: [(&str, Value); 8] = [
        ("iss", json!("someone-else")),
        ("aud", json!("someone-else")),
        ("aud", json!([])),
        ("exp", json!(now - 5)),
        ("sid", json!(uuid::Uuid::new_v4())),
        ("sub", json!(uuid::Uuid::new_v4())),
        // Bob is real, but the session is Alice's.
        ("sub", json!(bob.id)),
        ("sub", json!("not-a-uuid")),
    ];
    for (claim, value) in wrong {
        let mut claims = good.clone();
        claims[claim] = value.clone();
        refuse(
            format!("{claim} = {value}"),
            sign(&claims, Algorithm::HS256, key),
        )
        .await;
    }
    // Expired a while ago, with an iat to match.
    let mut expired = good.clone();
    expired["iat"] = json!(now - 120);
    expired["exp"] = json!(now - 60);
    refuse("expired".into(), sign(&expired, Algorithm::HS256, key)).await;

    // Bob's real session, but Alice as the subject and vice versa, fail; Bob's own claims pass.
    let bob_issued = jwt_payload(&bob.access);
    let mut bob_claims = good.clone();
    bob_claims["sub"] = bob_issued["sub"].clone();
    bob_claims["sid"] = bob_issued["sid"].clone();
    let body = app.me(&sign(&bob_claims, Algorithm::HS256, key)).await;
    assert_ok(&body);
    assert_eq!(body["data"]["me"]["id"], bob.id.as_str());
    let mut crossed = bob_claims.clone();
    crossed["sub"] = json!(alice.id);
    refuse(
        "Alice with Bob's session".into(),
        sign(&crossed, Algorithm::HS256, key),
    )
    .await;

    // A valid token of a session that has ended is refused although its signature is good.
    assert_eq!(app.logout(&alice.refresh).await["data"]["logout"], true);
    refuse(
        "well formed, session logged out".into(),
        sign(&good, Algorithm::HS256, key),
    )
    .await;
}

async fn access_tokens_expire(app: TestApp) {
    let alice = app.register("alice").await;
    // The token is issued between these two moments, with a one-second TTL and `exp` rounded
    // up to the second: however slow the machine, it lives at least a second and at most two.
    let before = Utc::now();
    let body = app.login("alice", PASSWORD).await;
    let after = Utc::now();
    assert_ok(&body);
    let expires = expires_at(&body["data"]["login"]);
    assert!(
        expires >= before + chrono::Duration::seconds(1)
            && expires <= after + chrono::Duration::seconds(2),
        "expiresAt {expires} should be one to two seconds after the login ({before} to {after})"
    );
    let session = Session::from_payload(&body, "login");
    assert_ok(&app.me(&session.access).await);

    // Refused from `expiresAt` on, not through the second it names (RFC 7519: valid only
    // before `exp`).
    let left = (expires - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(100)).await;
    assert_code(&app.me(&session.access).await, "UNAUTHENTICATED");
    assert_code(&app.me(&alice.access).await, "UNAUTHENTICATED");

    // Only the access token expired: the session refreshes into a fresh one that works.
    let refreshed = app.refresh(&session.refresh).await;
    assert_ok(&refreshed);
    let renewed = Session::from_payload(&refreshed, "refreshToken");
    assert_ok(&app.me(&renewed.access).await);
}

// ---------------------------------------------------------------------------------------------
// Refresh tokens

async fn refresh_rotates_and_reuse_revokes_the_family(app: TestApp) {
    let alice = app.register("alice").await;
    let other = app.login_as("alice").await;

    let body = app.refresh(&alice.refresh).await;
    assert_ok(&body);
    let payload = &body["data"]["refreshToken"];
    assert_eq!(payload["tokenType"], "Bearer");
    assert!(expires_at(payload) > Utc::now());
    let rotated = Session::from_payload(&body, "refreshToken");
    assert_eq!(rotated.id, alice.id);
    assert_ne!(rotated.refresh, alice.refresh, "the refresh token rotates");
    let me_body = app.me(&rotated.access).await;
    assert_ok(&me_body);
    assert_eq!(me_body["data"]["me"]["id"], alice.id.as_str());

    // A second rotation works too, from the newest token.
    let body = app.refresh(&rotated.refresh).await;
    assert_ok(&body);
    let newest = Session::from_payload(&body, "refreshToken");
    assert_ok(&app.me(&newest.access).await);

    // Replaying an already-rotated token after the reuse grace fails and ends the whole family.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replay = app.refresh(&alice.refresh).await;
    assert_code(&replay, "UNAUTHENTICATED");
    assert!(replay["data"].is_null(), "{replay}");
    assert_code(&app.refresh(&newest.refresh).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&rotated.refresh).await, "UNAUTHENTICATED");
    assert_code(&app.me(&newest.access).await, "UNAUTHENTICATED");
    assert_code(&app.me(&rotated.access).await, "UNAUTHENTICATED");
    assert_code(&app.me(&alice.access).await, "UNAUTHENTICATED");
    // Audited once, with no actor or IP: whoever replayed it is not known to be alice.
    let reused = "SELECT count(*) FROM audit_log WHERE action = 'REFRESH_TOKEN_REUSED' \
                  AND actor_id IS NULL AND ip IS NULL";
    assert_eq!(app.count(reused).await, 1);

    // Another login of the same user is another family and lives on.
    assert_ok(&app.me(&other.access).await);
    let body = app.refresh(&other.refresh).await;
    assert_ok(&body);
    assert_ok(
        &app.me(&Session::from_payload(&body, "refreshToken").access)
            .await,
    );

    // Tokens that were never issued.
    for junk in ["", "nonsense", &alice.access] {
        assert_code(&app.refresh(junk).await, "UNAUTHENTICATED");
    }
}

/// A refresh token lives `ROLLCALL_REFRESH_TTL` (two seconds here) and not a moment longer.
async fn refresh_tokens_expire(app: TestApp) {
    let alice = app.register("alice").await;
    // The control: a young refresh token rotates, so the refusal below is about age alone.
    let body = app.refresh(&alice.refresh).await;
    assert_ok(&body);
    let rotated = Session::from_payload(&body, "refreshToken");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let body = app.refresh(&rotated.refresh).await;
    assert_code(&body, "UNAUTHENTICATED");
    assert!(body["data"].is_null(), "{body}");
    // The one it replaced came back within the reuse grace (10 s), but past its lifetime.
    let body = app.refresh(&alice.refresh).await;
    assert_code(&body, "UNAUTHENTICATED");

    // A new login gets a new refresh token that works.
    let fresh = app.login_as("alice").await;
    assert_ok(&app.refresh(&fresh.refresh).await);
}

/// Two refreshes of one token at once (a client's tabs racing each other) both succeed within
/// the reuse grace: each gets a pair of the same session, and the session lives on.
async fn simultaneous_refreshes_within_the_grace_both_succeed(app: TestApp) {
    app.register("alice").await;
    for round in 0..5 {
        let session = app.login_as("alice").await;
        let sid = session.sid();
        let (first, second) =
            tokio::join!(app.refresh(&session.refresh), app.refresh(&session.refresh));
        let mut refresh_tokens = Vec::new();
        for body in [&first, &second] {
            assert_ok(body);
            let pair = Session::from_payload(body, "refreshToken");
            assert_eq!(pair.sid(), sid, "round {round}: the same session: {body}");
            assert_ok(&app.me(&pair.access).await);
            refresh_tokens.push(pair.refresh);
        }
        assert_ne!(
            refresh_tokens[0], refresh_tokens[1],
            "round {round}: each answer has a refresh token of its own"
        );
        // Both successors rotate in turn: neither answer was treated as theft.
        for token in &refresh_tokens {
            assert_ok(&app.refresh(token).await);
        }
    }
}

async fn logout_ends_only_that_session(app: TestApp) {
    let alice = app.register("alice").await;
    let other = app.login_as("alice").await;
    assert_ok(&app.me(&alice.access).await);

    let body = app.logout(&alice.refresh).await;
    assert_ok(&body);
    assert_eq!(body["data"]["logout"], true, "{body}");
    // Again: nothing was left to end, and nothing is recorded.
    let again = app.logout(&alice.refresh).await;
    assert_eq!(again["data"]["logout"], false, "{again}");
    let logouts = "SELECT COUNT(*) FROM audit_log WHERE action = 'LOGGED_OUT'";
    assert_eq!(app.count(logouts).await, 1);

    assert_code(&app.refresh(&alice.refresh).await, "UNAUTHENTICATED");
    assert_code(&app.me(&alice.access).await, "UNAUTHENTICATED");

    assert_ok(&app.me(&other.access).await);
    let body = app.refresh(&other.refresh).await;
    assert_ok(&body);
    assert_ok(
        &app.me(&Session::from_payload(&body, "refreshToken").access)
            .await,
    );
}

async fn logout_of_a_rotated_session_ends_the_family(app: TestApp) {
    let alice = app.register("alice").await;
    let body = app.refresh(&alice.refresh).await;
    let rotated = Session::from_payload(&body, "refreshToken");
    let body = app.logout(&rotated.refresh).await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    assert_code(&app.refresh(&rotated.refresh).await, "UNAUTHENTICATED");
    assert_code(&app.me(&rotated.access).await, "UNAUTHENTICATED");
    assert_code(&app.me(&alice.access).await, "UNAUTHENTICATED");
}

/// A logout given a refresh token rotated longer ago than the grace is that token's reuse:
/// the session ends, recorded as `REFRESH_TOKEN_REUSED` with no actor or IP, not as its
/// user's logout from the presenter's address. Within the grace it is the user's logout.
async fn a_logout_with_a_token_rotated_past_the_grace_is_a_reuse(app: TestApp) {
    let alice = app.register("alice").await;
    let body = app.refresh(&alice.refresh).await;
    let rotated = Session::from_payload(&body, "refreshToken");
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let body = app.logout(&alice.refresh).await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    assert_code(&app.me(&rotated.access).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&rotated.refresh).await, "UNAUTHENTICATED");
    let reused = "SELECT count(*) FROM audit_log WHERE action = 'REFRESH_TOKEN_REUSED' \
                  AND actor_id IS NULL AND ip IS NULL";
    let logged_out = "SELECT count(*) FROM audit_log WHERE action = 'LOGGED_OUT'";
    assert_eq!(app.count(reused).await, 1);
    assert_eq!(app.count(logged_out).await, 0);

    let again = app.login_as("alice").await;
    let body = app.refresh(&again.refresh).await;
    let rotated = Session::from_payload(&body, "refreshToken");
    let body = app.logout(&again.refresh).await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    assert_code(&app.me(&rotated.access).await, "UNAUTHENTICATED");
    assert_eq!(app.count(reused).await, 1);
    assert_eq!(app.count(logged_out).await, 1);
}

/// A logout given a refresh token past its lifetime is refused as a refresh refuses it:
/// `false`, and the session lives on through the chain its grace forked (the expired token
/// was rotated within the grace, so its sibling was never used). Its expiry is set in the
/// database, so no wait decides the test.
async fn a_logout_with_an_expired_refresh_token_ends_nothing(app: TestApp) {
    let login = app.register("alice").await;
    let first = Session::from_payload(&app.refresh(&login.refresh).await, "refreshToken");
    let forked = Session::from_payload(&app.refresh(&login.refresh).await, "refreshToken");
    expire_refresh_token(&app, &first.refresh).await;
    assert_code(&app.refresh(&first.refresh).await, "UNAUTHENTICATED");
    let body = app.logout(&first.refresh).await;
    assert_eq!(body["data"]["logout"], false, "{body}");
    assert_ok(&app.me(&forked.access).await);
    let logged_out = "SELECT count(*) FROM audit_log WHERE action = 'LOGGED_OUT'";
    assert_eq!(app.count(logged_out).await, 0);
}

/// Sets refresh token `token` past its lifetime in the database, as if its time had passed.
async fn expire_refresh_token(app: &TestApp, token: &str) {
    use sea_orm::ConnectionTrait;

    let hash = rollcall::auth::tokens::hash_token(token);
    let db = app.database().await;
    db.execute_unprepared(&format!(
        "UPDATE refresh_tokens SET expires_at = {} WHERE token_hash = '{hash}'",
        app.backend.long_ago()
    ))
    .await
    .expect("expire the token");
    let _ = db.close().await;
}

/// A rotated refresh token is recognised as reused until it expires; once expired it is
/// refused as unknown, by a refresh and a logout alike, whether or not the housekeeping has
/// deleted it yet: the session lives on.
async fn an_expired_rotated_token_is_refused_as_unknown(app: TestApp) {
    let login = app.register("alice").await;
    let rotated = Session::from_payload(&app.refresh(&login.refresh).await, "refreshToken");
    expire_refresh_token(&app, &login.refresh).await;
    assert_code(&app.refresh(&login.refresh).await, "UNAUTHENTICATED");
    assert_eq!(app.logout(&login.refresh).await["data"]["logout"], false);
    assert_ok(&app.me(&rotated.access).await);
    let reused = "SELECT count(*) FROM audit_log WHERE action = 'REFRESH_TOKEN_REUSED'";
    assert_eq!(app.count(reused).await, 0);
}

/// Many requests in flight at once, from many sessions (some revoked), each answered for its
/// own session: answers are never mixed up and revocation holds under concurrency.
async fn concurrent_requests_see_only_their_own_session(app: TestApp) {
    let owner = app.register("owner").await;
    let mut sessions = vec![("owner".to_owned(), owner.clone(), true)];
    for n in 0..7 {
        let name = format!("user{n}");
        let session = app.user_with_role(&owner, &name, "STANDARD").await;
        // Every third user logs out, so their access token must be refused.
        let live = n % 3 != 0;
        if !live {
            assert_eq!(app.logout(&session.refresh).await["data"]["logout"], true);
        }
        sessions.push((name, session, live));
    }

    let requests = (0..120).map(|i| {
        let (name, session, live) = &sessions[i % sessions.len()];
        let app = &app;
        async move { (name, *live, app.me(&session.access).await) }
    });
    for (name, live, body) in futures::future::join_all(requests).await {
        if live {
            assert_ok(&body);
            assert_eq!(body["data"]["me"]["username"], name.as_str(), "{body}");
        } else {
            assert_code(&body, "UNAUTHENTICATED");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Revocation

async fn disabling_revokes_at_once(app: TestApp) {
    let owner = app.register("owner").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    let bob_again = app.login_as("bob").await;
    assert_ok(&app.me(&bob.access).await);

    let body = app.disable(&owner, &bob.id).await;
    assert_ok(&body);
    assert_eq!(body["data"]["updateUser"]["disabled"], true);

    assert_code(&app.me(&bob.access).await, "UNAUTHENTICATED");
    assert_code(&app.me(&bob_again.access).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&bob.refresh).await, "UNAUTHENTICATED");
    assert_code(&app.login("bob", PASSWORD).await, "UNAUTHENTICATED");

    // Disabling revoked the refresh tokens; it did not merely block them while disabled.
    let body = app
        .update_user(&owner, &bob.id, json!({"disabled": false}))
        .await;
    assert_ok(&body);
    assert_code(&app.refresh(&bob_again.refresh).await, "UNAUTHENTICATED");
    // Once enabled again, Bob can log in afresh.
    let body = app.login("bob", PASSWORD).await;
    assert_ok(&body);
    assert_ok(&app.me(&Session::from_payload(&body, "login").access).await);
    // The owner was never affected.
    assert_ok(&app.me(&owner.access).await);
}

async fn deleting_revokes_at_once(app: TestApp) {
    let owner = app.register("owner").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    assert_ok(&app.me(&bob.access).await);

    let body = app.delete_user(&owner, &bob.id).await;
    assert_ok(&body);
    assert_eq!(body["data"]["deleteUser"], bob.id.as_str());

    assert_code(&app.me(&bob.access).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&bob.refresh).await, "UNAUTHENTICATED");
    assert_code(&app.login("bob", PASSWORD).await, "UNAUTHENTICATED");

    // Deleting one's own account ends one's own sessions too.
    let carol = app.user_with_role(&owner, "carol", "STANDARD").await;
    let body = app.delete_user(&carol, &carol.id).await;
    assert_ok(&body);
    assert_code(&app.me(&carol.access).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&carol.refresh).await, "UNAUTHENTICATED");
}

async fn role_change_revokes_sessions(app: TestApp) {
    let owner = app.register("owner").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    assert_ok(&app.me(&bob.access).await);

    let body = app.set_role(&owner, &bob.id, "ADMIN").await;
    assert_ok(&body);
    assert_eq!(body["data"]["setRole"]["role"], "ADMIN");
    assert_code(&app.me(&bob.access).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&bob.refresh).await, "UNAUTHENTICATED");

    let admin = app.login_as("bob").await;
    assert_eq!(admin.role, "ADMIN");
    assert_ok(&app.me(&admin.access).await);
    assert_ok(&app.set_role(&owner, &bob.id, "STANDARD").await);
    assert_code(&app.me(&admin.access).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&admin.refresh).await, "UNAUTHENTICATED");
    // The owner's own sessions are not touched by changing someone else's role.
    assert_ok(&app.me(&owner.access).await);
    assert_ok(&app.refresh(&owner.refresh).await);
}

/// Handing ownership over changes two roles, so both users lose every session: the old owner's
/// tokens must not keep acting with the owner's powers.
async fn ownership_transfer_revokes_both_users_sessions(app: TestApp) {
    let owner = app.register("owner").await;
    let owner_elsewhere = app.login_as("owner").await;
    let admin = app.user_with_role(&owner, "admin1", "ADMIN").await;
    let bystander = app.user_with_role(&owner, "std1", "STANDARD").await;
    for session in [&owner, &owner_elsewhere, &admin] {
        assert_ok(&app.me(&session.access).await);
    }

    let body = app.set_role(&owner, &admin.id, "OWNER").await;
    assert_ok(&body);
    assert_eq!(body["data"]["setRole"]["role"], "OWNER", "{body}");

    for (who, session) in [
        ("old owner", &owner),
        ("old owner's other session", &owner_elsewhere),
        ("new owner", &admin),
    ] {
        let body = app.me(&session.access).await;
        assert_code(&body, "UNAUTHENTICATED");
        assert!(body["data"].is_null(), "{who}: {body}");
        assert_code(&app.refresh(&session.refresh).await, "UNAUTHENTICATED");
    }
    // The old owner's old token can no longer change roles.
    assert_code(
        &app.set_role(&owner, &bystander.id, "ADMIN").await,
        "UNAUTHENTICATED",
    );
    // Nobody else's sessions ended.
    assert_ok(&app.me(&bystander.access).await);

    // Signing in again gives each their new role.
    assert_eq!(app.login_as("owner").await.role, "ADMIN");
    assert_eq!(app.login_as("admin1").await.role, "OWNER");
}

async fn password_change_revokes_sessions(app: TestApp) {
    const NEW_PASSWORD: &str = "a brand new passphrase";
    let owner = app.register("owner").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    let bob_elsewhere = app.login_as("bob").await;

    let body = app
        .update_user(
            &bob,
            &bob.id,
            json!({"password": NEW_PASSWORD, "currentPassword": PASSWORD}),
        )
        .await;
    assert_ok(&body);

    // Every session ends, the one that changed the password included.
    assert_code(&app.me(&bob.access).await, "UNAUTHENTICATED");
    assert_code(&app.me(&bob_elsewhere.access).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&bob.refresh).await, "UNAUTHENTICATED");
    assert_code(
        &app.refresh(&bob_elsewhere.refresh).await,
        "UNAUTHENTICATED",
    );
    assert_code(&app.login("bob", PASSWORD).await, "UNAUTHENTICATED");
    let body = app.login("bob", NEW_PASSWORD).await;
    assert_ok(&body);
    let fresh = Session::from_payload(&body, "login");
    assert_ok(&app.me(&fresh.access).await);
    let body = app.refresh(&fresh.refresh).await;
    assert_ok(&body);
    let fresh = Session::from_payload(&body, "refreshToken");

    // A password set for Bob by the owner revokes Bob's sessions as well.
    let body = app
        .update_user(&owner, &bob.id, json!({"password": PASSWORD}))
        .await;
    assert_ok(&body);
    assert_code(&app.me(&fresh.access).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&fresh.refresh).await, "UNAUTHENTICATED");
    assert_code(&app.login("bob", NEW_PASSWORD).await, "UNAUTHENTICATED");
    // The owner who set it keeps their session.
    assert_ok(&app.me(&owner.access).await);
    let body = app.login("bob", PASSWORD).await;
    assert_ok(&body);
    assert_ok(&app.me(&Session::from_payload(&body, "login").access).await);
}

/// A login that checked the old password while the password changed gives no session that
/// outlives the change. One hashing thread, kept busy, lines the work up: the login reads the
/// old hash, the change hashes and commits, and the login's check of the old password ends
/// before or after that commit.
async fn a_login_racing_a_password_change_keeps_no_session(app: TestApp) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let owner = app.register("owner").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    let app = &app;
    // About a second of password checks ahead of the change's and the login's.
    let busy = futures::future::join_all(
        (0..10).map(|n| async move { app.login(&format!("nobody{n}"), PASSWORD).await }),
    );
    let changed = AtomicBool::new(false);
    let change = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let body = app
            .update_user(
                &owner,
                &bob.id,
                json!({"password": "a brand new passphrase"}),
            )
            .await;
        changed.store(true, Ordering::SeqCst);
        body
    };
    let login = async {
        tokio::time::sleep(Duration::from_millis(40)).await;
        app.login("bob", PASSWORD).await
    };
    let race_ran = async {
        app.until_counted(&format!("user:{}", bob.id), 1).await;
        assert!(
            !changed.load(Ordering::SeqCst),
            "the login read the account after the change: the race was not run"
        );
    };
    let (_, changed, login, ()) = tokio::join!(busy, change, login, race_ran);
    assert_ok(&changed);
    if login["errors"].is_null() {
        let late = Session::from_payload(&login, "login");
        assert_code(&app.me(&late.access).await, "UNAUTHENTICATED");
        assert_code(&app.refresh(&late.refresh).await, "UNAUTHENTICATED");
    } else {
        assert_code(&login, "UNAUTHENTICATED");
    }
    assert_code(&app.login("bob", PASSWORD).await, "UNAUTHENTICATED");
}

async fn role_changes_take_effect_at_once(app: TestApp) {
    let owner = app.register("owner").await;
    let carol = app.user_with_role(&owner, "carol", "STANDARD").await;
    assert_code(&app.users(&carol, json!({"first": 10})).await, "FORBIDDEN");

    assert_ok(&app.set_role(&owner, &carol.id, "ADMIN").await);
    // The role change ended Carol's sessions: the old access token acts with no role at all,
    // neither the STANDARD one that is gone nor the ADMIN one it was never issued for.
    let old = app.users(&carol, json!({"first": 10})).await;
    assert_code(&old, "UNAUTHENTICATED");
    assert!(old["data"].is_null(), "{old}");
    assert_code(&app.me(&carol.access).await, "UNAUTHENTICATED");

    let admin = app.login_as("carol").await;
    assert_eq!(admin.role, "ADMIN");
    let body = app.users(&admin, json!({"first": 10})).await;
    assert_ok(&body);
    assert_eq!(body["data"]["users"]["totalCount"], 2, "{body}");

    assert_ok(&app.set_role(&owner, &carol.id, "STANDARD").await);
    // The ADMIN session opened before the demotion no longer lists users.
    let stale = app.users(&admin, json!({"first": 10})).await;
    assert!(
        stale["data"].is_null() || stale["data"]["users"].is_null(),
        "a demoted ADMIN's old token still lists users: {stale}"
    );
    assert_code(&stale, "UNAUTHENTICATED");
    // A new session after the demotion is STANDARD and refused.
    let standard = app.login_as("carol").await;
    assert_eq!(standard.role, "STANDARD");
    assert_code(
        &app.users(&standard, json!({"first": 10})).await,
        "FORBIDDEN",
    );
    let body = app.me(&standard.access).await;
    assert_eq!(body["data"]["me"]["role"], "STANDARD", "{body}");
}

// ---------------------------------------------------------------------------------------------
// Several instances on one database

async fn instances_share_tokens_and_revocations(app: TestApp) {
    let owner = app.register("owner").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    let second_server = app.second_instance().await;
    let second = app.at(&second_server);

    // An access token issued by one instance is accepted by the other.
    let body = second.me(&bob.access).await;
    assert_ok(&body);
    assert_eq!(body["data"]["me"]["id"], bob.id.as_str());

    // Rotated on the first, replayed on the second after the grace: reuse, and the family is
    // gone everywhere.
    let body = app.refresh(&bob.refresh).await;
    assert_ok(&body);
    let rotated = Session::from_payload(&body, "refreshToken");
    assert_ok(&second.me(&rotated.access).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replay = second.refresh(&bob.refresh).await;
    assert_code(&replay, "UNAUTHENTICATED");
    assert_code(&app.refresh(&rotated.refresh).await, "UNAUTHENTICATED");
    assert_code(&second.refresh(&rotated.refresh).await, "UNAUTHENTICATED");
    assert_code(&app.me(&rotated.access).await, "UNAUTHENTICATED");
    assert_code(&second.me(&rotated.access).await, "UNAUTHENTICATED");

    // Logged in on the second, refreshed on the first.
    let bob = second.login_as("bob").await;
    let body = app.refresh(&bob.refresh).await;
    assert_ok(&body);
    let bob = Session::from_payload(&body, "refreshToken");
    assert_ok(&app.me(&bob.access).await);

    // Disabled through the second instance, refused at once by the first.
    let body = second.disable(&owner, &bob.id).await;
    assert_ok(&body);
    assert_code(&app.me(&bob.access).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&bob.refresh).await, "UNAUTHENTICATED");
    assert_code(&app.login("bob", PASSWORD).await, "UNAUTHENTICATED");
    assert_code(&second.me(&bob.access).await, "UNAUTHENTICATED");

    // Logged out on the first, refused by the second.
    let body = app.logout(&owner.refresh).await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    assert_code(&second.me(&owner.access).await, "UNAUTHENTICATED");

    second_server.stop().await;
}

/// A user deleted through one instance is refused by another at once, with the access token
/// that instance itself issued and had just accepted.
async fn deleted_users_are_refused_by_every_instance(app: TestApp) {
    let owner = app.register("owner").await;
    let bob_id = app.create_user(&owner, "bob", "STANDARD").await;
    let second_server = app.second_instance().await;
    let second = app.at(&second_server);
    let bob = second.login_as("bob").await;
    let body = second.me(&bob.access).await;
    assert_ok(&body);
    assert_eq!(body["data"]["me"]["id"], bob_id.as_str(), "{body}");

    let body = app.delete_user(&owner, &bob_id).await;
    assert_ok(&body);
    assert_eq!(body["data"]["deleteUser"], bob_id.as_str(), "{body}");

    let body = second.me(&bob.access).await;
    assert_code(&body, "UNAUTHENTICATED");
    assert!(body["data"].is_null(), "{body}");
    assert_code(&second.refresh(&bob.refresh).await, "UNAUTHENTICATED");
    assert_code(&second.login("bob", PASSWORD).await, "UNAUTHENTICATED");
    // The owner, who deleted Bob, keeps their session.
    assert_ok(&second.me(&owner.access).await);

    second_server.stop().await;
}

/// `user(id:)` authenticates in the same query as its lookup: a dead session must still be
/// refused, whether the target is someone else or the caller.
async fn user_by_id_checks_the_session_too(app: TestApp) {
    let owner = app.register("alice").await;
    let bob = app.create_user(&owner, "bob", "STANDARD").await;
    let body = app.user_by_id(&owner, &bob).await;
    assert_ok(&body);
    assert_eq!(body["data"]["user"]["email"], "bob@example.com", "{body}");
    assert_ok(&app.logout(&owner.refresh).await);
    for id in [bob.as_str(), owner.id.as_str()] {
        let body = app.user_by_id(&owner, id).await;
        assert_code(&body, "UNAUTHENTICATED");
    }
    // Also when another field already loaded the (refused) viewer first.
    let body = app
        .gql(
            Some(&owner.access),
            "query($id: ID!) { me { id } user(id: $id) { id } }",
            json!({"id": bob}),
        )
        .await;
    assert_code(&body, "UNAUTHENTICATED");
}

// ---------------------------------------------------------------------------------------------
// Registration

async fn closed_registration_is_forbidden(app: TestApp) {
    let body = app.register_raw("alice", "alice@example.com").await;
    assert_code(&body, "FORBIDDEN");
    assert!(body["data"].is_null(), "{body}");
    let info = app.server_info().await;
    assert_eq!(
        info["data"]["serverInfo"]["registrationOpen"], false,
        "{info}"
    );
    // Nothing was created: the refused registrant cannot log in.
    assert_code(&app.login("alice", PASSWORD).await, "UNAUTHENTICATED");
    // A refusal that looks nothing up costs the address none of its budget (two here): a
    // sign-up form sent again and again leaves its users' logins alone.
    for _ in 0..3 {
        assert_code(
            &app.register_raw("alice", "alice@example.com").await,
            "FORBIDDEN",
        );
    }
    assert_code(&app.login("alice", PASSWORD).await, "UNAUTHENTICATED");
}

backend_tests!(
    login_by_username_and_email,
    bad_credentials_are_indistinguishable,
    tokens_not_signed_by_the_server_are_refused,
    forged_tokens_are_refused with |s| s.jwt_secret = Some(crate::known_secret()),
    access_tokens_expire with |s| s.access_ttl = std::time::Duration::from_secs(1),
    refresh_rotates_and_reuse_revokes_the_family with |s| {
        s.refresh_reuse_grace = std::time::Duration::from_millis(200);
    },
    refresh_tokens_expire with |s| s.refresh_ttl = std::time::Duration::from_secs(2),
    simultaneous_refreshes_within_the_grace_both_succeed,
    logout_ends_only_that_session,
    logout_of_a_rotated_session_ends_the_family,
    a_logout_with_a_token_rotated_past_the_grace_is_a_reuse with |s| {
        s.refresh_reuse_grace = std::time::Duration::from_secs(3);
    },
    a_logout_with_an_expired_refresh_token_ends_nothing,
    an_expired_rotated_token_is_refused_as_unknown with |s| {
        s.refresh_reuse_grace = std::time::Duration::ZERO;
    },
    concurrent_requests_see_only_their_own_session,
    disabling_revokes_at_once,
    deleting_revokes_at_once,
    role_change_revokes_sessions,
    ownership_transfer_revokes_both_users_sessions,
    password_change_revokes_sessions,
    a_login_racing_a_password_change_keeps_no_session with |s| s.hash_concurrency = Some(1),
    role_changes_take_effect_at_once,
    instances_share_tokens_and_revocations with |s| {
        s.refresh_reuse_grace = std::time::Duration::from_millis(200);
    },
    deleted_users_are_refused_by_every_instance,
    user_by_id_checks_the_session_too,
    closed_registration_is_forbidden with |s| {
        s.registration = rollcall::config::Registration::Closed;
        s.ip_rate_limit = 2;
    },
);

// ---------------------------------------------------------------------------------------------
// Helpers for tokens

/// `expiresAt` of an AuthPayload.
fn expires_at(payload: &Value) -> DateTime<Utc> {
    let text = payload["expiresAt"]
        .as_str()
        .unwrap_or_else(|| panic!("expiresAt missing: {payload}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|err| panic!("expiresAt `{text}` is not RFC 3339: {err}"))
        .with_timezone(&Utc)
}

fn jwt_payload(token: &str) -> Value {
    support::jwt_part(token, 1)
}

fn jwt_header(token: &str) -> Value {
    support::jwt_part(token, 0)
}

/// Signs `claims` with `alg` (an HMAC algorithm) and `secret`.
fn sign(claims: &Value, alg: Algorithm, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret))
        .expect("sign test token")
}

/// `claims` under an `alg: none` header with an empty signature.
fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}
