//! Sessions over HTTP: the list with its details, who sees whose, revoking one, ending all,
//! the maximum age and idle limits, the refresh reuse grace, and the purge of spent rows.

mod support;

use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use support::{
    Gql, LOGOUT_EVERYWHERE, PASSWORD, REVOKE_SESSION, Session, TestApp, assert_code, assert_ok,
};

const MY_SESSIONS: &str =
    "{ me { sessions { id createdAt lastUsedAt expiresAt userAgent ip current } } }";
const USER_SESSIONS: &str =
    "query($id: ID!) { user(id: $id) { sessions { id userAgent current } } }";

/// A `DateTime` answer as a time.
fn time(value: &Value) -> chrono::DateTime<chrono::Utc> {
    value
        .as_str()
        .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
        .unwrap_or_else(|| panic!("a DateTime: {value}"))
        .into()
}

/// `me.sessions` as `session`; panics on errors.
async fn my_sessions(app: &TestApp, session: &Session) -> Vec<Value> {
    let body = app.gql(Some(&session.access), MY_SESSIONS, json!({})).await;
    assert_ok(&body);
    body["data"]["me"]["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("sessions missing: {body}"))
        .clone()
}

async fn lists_own_sessions_newest_first(app: TestApp) {
    app.register("alice").await;
    let laptop = app.login_with_agent("alice", "Laptop/1.0").await;
    let phone = app
        .login_with_agent("alice", &format!("Phone/2.0 {}", "x".repeat(300)))
        .await;

    let sessions = my_sessions(&app, &phone).await;
    // The registration's session, the laptop's and the phone's.
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    assert_eq!(sessions[0]["id"], phone.sid().as_str(), "newest first");
    assert_eq!(sessions[1]["id"], laptop.sid().as_str());
    assert_eq!(sessions[0]["current"], true);
    assert_eq!(sessions[1]["current"], false);
    assert_eq!(sessions[2]["current"], false);
    let agent = sessions[0]["userAgent"].as_str().expect("a user agent");
    assert!(agent.starts_with("Phone/2.0 x"), "{agent}");
    assert_eq!(agent.chars().count(), 200, "shortened: {agent}");
    assert_eq!(sessions[1]["userAgent"], "Laptop/1.0");
    for session in &sessions {
        assert_eq!(session["ip"], "127.0.0.1", "{session}");
        assert_eq!(session["createdAt"], session["lastUsedAt"], "{session}");
        assert!(session["expiresAt"].as_str() > session["createdAt"].as_str());
    }

    // From the laptop, the laptop's session is the current one.
    let sessions = my_sessions(&app, &laptop).await;
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{sessions:?}");
    assert_eq!(current[0]["id"], laptop.sid().as_str());

    // A refresh moves lastUsedAt on, and keeps the session.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let body = app.refresh(&laptop.refresh).await;
    let refreshed = Session::from_payload(&body, "refreshToken");
    assert_eq!(refreshed.sid(), laptop.sid());
    let sessions = my_sessions(&app, &refreshed).await;
    assert_eq!(sessions.len(), 3);
    let row = &sessions[1];
    assert_eq!(row["current"], true, "{row}");
    assert!(
        row["lastUsedAt"].as_str() > row["createdAt"].as_str(),
        "{row}"
    );

    // Logged out, a session leaves the list.
    assert_ok(&app.logout(&phone.refresh).await);
    let sessions = my_sessions(&app, &refreshed).await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(sessions.iter().all(|s| s["id"] != phone.sid().as_str()));
}

async fn managers_see_the_sessions_of_those_they_manage(app: TestApp) {
    let owner = app.register("owner").await;
    let admin = app.user_with_role(&owner, "adam", "ADMIN").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    let carol = app.user_with_role(&owner, "carol", "STANDARD").await;

    for viewer in [&owner, &admin] {
        let body = app
            .gql(Some(&viewer.access), USER_SESSIONS, json!({"id": bob.id}))
            .await;
        assert_ok(&body);
        let sessions = body["data"]["user"]["sessions"].as_array().expect("list");
        assert_eq!(sessions.len(), 1, "{body}");
        assert_eq!(sessions[0]["id"], bob.sid().as_str());
        assert_eq!(sessions[0]["current"], false, "not the viewer's session");
    }
    // The owner sees an admin's sessions, the admin does not see the owner's.
    let body = app
        .gql(Some(&owner.access), USER_SESSIONS, json!({"id": admin.id}))
        .await;
    assert_ok(&body);
    let ids: Vec<&Value> = body["data"]["user"]["sessions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|session| &session["id"])
        .collect();
    assert_eq!(ids, [&json!(admin.sid())], "{body}");
    let body = app
        .gql(Some(&admin.access), USER_SESSIONS, json!({"id": owner.id}))
        .await;
    assert_code(&body, "FORBIDDEN");

    // A standard user looks up nobody else (as before) and cannot end others' sessions.
    let body = app
        .gql(Some(&carol.access), USER_SESSIONS, json!({"id": bob.id}))
        .await;
    assert_code(&body, "FORBIDDEN");
    let body = app
        .gql(
            Some(&carol.access),
            REVOKE_SESSION,
            json!({"id": bob.sid()}),
        )
        .await;
    assert_code(&body, "FORBIDDEN");
    // Nor tell whether a session id exists.
    let body = app
        .gql(
            Some(&carol.access),
            REVOKE_SESSION,
            json!({"id": "0192f1d2-0000-7000-8000-000000000000"}),
        )
        .await;
    assert_code(&body, "FORBIDDEN");
    assert_ok(&app.me(&bob.access).await);
    let body = app
        .gql(
            Some(&admin.access),
            REVOKE_SESSION,
            json!({"id": owner.sid()}),
        )
        .await;
    assert_code(&body, "FORBIDDEN");
    assert_ok(&app.me(&owner.access).await);

    // Anonymous callers are asked to sign in.
    let body = app.gql(None, LOGOUT_EVERYWHERE, json!({})).await;
    assert_code(&body, "UNAUTHENTICATED");
}

async fn revoking_a_session_stops_its_tokens_at_once(app: TestApp) {
    let owner = app.register("owner").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    let bob_again = app.login_as("bob").await;

    // Bob ends his other session himself.
    let body = app
        .gql(
            Some(&bob_again.access),
            REVOKE_SESSION,
            json!({"id": bob.sid()}),
        )
        .await;
    assert_ok(&body);
    assert_eq!(body["data"]["revokeSession"], true, "{body}");
    assert_code(&app.me(&bob.access).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&bob.refresh).await, "UNAUTHENTICATED");
    assert_ok(&app.me(&bob_again.access).await);
    // Already ended: false.
    let body = app
        .gql(
            Some(&bob_again.access),
            REVOKE_SESSION,
            json!({"id": bob.sid()}),
        )
        .await;
    assert_eq!(body["data"]["revokeSession"], false, "{body}");

    // The owner ends Bob's remaining one.
    let body = app
        .gql(
            Some(&owner.access),
            REVOKE_SESSION,
            json!({"id": bob_again.sid()}),
        )
        .await;
    assert_eq!(body["data"]["revokeSession"], true, "{body}");
    assert_code(&app.me(&bob_again.access).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&bob_again.refresh).await, "UNAUTHENTICATED");
    let body = app
        .gql(
            Some(&owner.access),
            REVOKE_SESSION,
            json!({"id": "not-an-id"}),
        )
        .await;
    assert_code(&body, "BAD_USER_INPUT");
}

async fn logout_everywhere_ends_every_session(app: TestApp) {
    let alice = app.register("alice").await;
    let second = app.login_as("alice").await;
    let third = app.login_as("alice").await;
    app.register("bob").await;
    let bob = app.login_as("bob").await;
    // An ended session is not counted.
    assert_ok(&app.logout(&second.refresh).await);

    let body = app
        .gql(Some(&third.access), LOGOUT_EVERYWHERE, json!({}))
        .await;
    assert_ok(&body);
    assert_eq!(body["data"]["logoutEverywhere"], 2, "{body}");
    for session in [&alice, &second, &third] {
        assert_code(&app.me(&session.access).await, "UNAUTHENTICATED");
        assert_code(&app.refresh(&session.refresh).await, "UNAUTHENTICATED");
    }
    // Other users' sessions live on.
    assert_ok(&app.me(&bob.access).await);
    let fresh = app.login_as("alice").await;
    assert_eq!(my_sessions(&app, &fresh).await.len(), 1);

    // Signing out the other devices keeps the one asking.
    let laptop = app.login_as("alice").await;
    let phone = app.login_as("alice").await;
    let sign_out_others = || {
        app.gql(
            Some(&phone.access),
            "mutation { logoutEverywhere(keepCurrent: true) }",
            json!({}),
        )
    };
    let body = sign_out_others().await;
    assert_eq!(body["data"]["logoutEverywhere"], 2, "{body}");
    for session in [&fresh, &laptop] {
        assert_code(&app.me(&session.access).await, "UNAUTHENTICATED");
        assert_code(&app.refresh(&session.refresh).await, "UNAUTHENTICATED");
    }
    assert_ok(&app.me(&phone.access).await);
    let kept = my_sessions(&app, &phone).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["current"], true);
    assert_ok(&app.refresh(&phone.refresh).await);
    // With nothing else to end, nothing is recorded; what was is marked as keeping one.
    let body = sign_out_others().await;
    assert_eq!(body["data"]["logoutEverywhere"], 0, "{body}");
    let recorded = app
        .count("SELECT count(*) FROM audit_log WHERE action = 'ALL_SESSIONS_REVOKED'")
        .await;
    assert_eq!(recorded, 2);
    let marked = app
        .count(
            "SELECT count(*) FROM audit_log WHERE action = 'ALL_SESSIONS_REVOKED' \
             AND fields = 'keepCurrent'",
        )
        .await;
    assert_eq!(marked, 1);

    // A form's optional variable left out leaves the argument to its default (false): this
    // session ends too, as the specification reads it, where it was refused as null.
    let laptop = app.login_as("alice").await;
    let body = app
        .gql(
            Some(&phone.access),
            "mutation($keep: Boolean) { logoutEverywhere(keepCurrent: $keep) }",
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["logoutEverywhere"], 2, "{body}");
    for session in [&phone, &laptop] {
        assert_code(&app.me(&session.access).await, "UNAUTHENTICATED");
    }
}

/// `ROLLCALL_SESSION_MAX_AGE` (five seconds here) ends a session however often it refreshes,
/// access tokens included: their `expiresAt` is the session's end, not the TTL's.
async fn sessions_end_at_their_maximum_age(app: TestApp) {
    let alice = app.register("alice").await;
    // The session began before its registration was answered.
    let born = Instant::now();
    let mut current = alice.clone();
    let mut expires = None;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let body = app.refresh(&current.refresh).await;
        assert_ok(&body);
        expires = Some(time(&body["data"]["refreshToken"]["expiresAt"]));
        current = Session::from_payload(&body, "refreshToken");
    }
    let listed = my_sessions(&app, &current).await;
    assert_eq!(listed.len(), 1);
    // Rounded down to the second, as an `exp` the session bounds.
    let ends = time(&listed[0]["expiresAt"]);
    let expires = expires.expect("refreshed");
    assert!(
        expires <= ends && expires > ends - chrono::Duration::seconds(1),
        "the token expires at {expires}, its session ends at {ends}"
    );
    tokio::time::sleep_until((born + Duration::from_millis(5_100)).into()).await;
    assert_code(&app.me(&current.access).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&current.refresh).await, "UNAUTHENTICATED");
    assert_logout_ends_nothing(&app, &current).await;
    // Marked revoked all the same (its refresh token, unexpired, was still found): raising
    // the maximum age later cannot bring it back.
    let revoked = "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL";
    assert_eq!(
        app.count(revoked).await,
        1,
        "marked revoked (alice's one session)"
    );
    let fresh = app.login_as("alice").await;
    assert_eq!(my_sessions(&app, &fresh).await.len(), 1, "only the new one");
}

/// A logout with the refresh token of a session that has ended already says so, and records
/// no logout.
async fn assert_logout_ends_nothing(app: &TestApp, session: &Session) {
    let body = app.logout(&session.refresh).await;
    assert_eq!(body["data"]["logout"], false, "{body}");
    let logouts = app
        .count("SELECT COUNT(*) FROM audit_log WHERE action = 'LOGGED_OUT'")
        .await;
    assert_eq!(logouts, 0, "no session was ended");
}

/// A session with less than a second left (its maximum age is two seconds here, and it is
/// refreshed 1.1 s after its login) refreshes no more: the access token would end at the last
/// whole second before the session does, dead on arrival or good for a moment. (With a
/// maximum age of one second, the login itself could cross into that last second.)
async fn a_session_in_its_last_second_refreshes_no_more(app: TestApp) {
    let alice = app.register("alice").await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_code(&app.refresh(&alice.refresh).await, "UNAUTHENTICATED");
}

/// `ROLLCALL_SESSION_IDLE` (three seconds here) ends a session that is not refreshed;
/// refreshing keeps it going.
async fn idle_sessions_end(app: TestApp) {
    let alice = app.register("alice").await;
    let idle = app.login_as("alice").await;
    // Neither of those was used after this.
    let last_used = Instant::now();
    let mut busy = app.login_as("alice").await;
    let mut refresh_busy = async || {
        let body = app.refresh(&busy.refresh).await;
        assert_ok(&body);
        busy = Session::from_payload(&body, "refreshToken");
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        refresh_busy().await;
    }
    tokio::time::sleep_until((last_used + Duration::from_millis(3_100)).into()).await;
    // Refreshed 1.6 s ago at most; the other two were idle 3.1 s.
    refresh_busy().await;
    assert_code(&app.refresh(&idle.refresh).await, "UNAUTHENTICATED");
    assert_code(&app.me(&idle.access).await, "UNAUTHENTICATED");
    assert_code(&app.me(&alice.access).await, "UNAUTHENTICATED");
    assert_logout_ends_nothing(&app, &idle).await;
    let listed = my_sessions(&app, &busy).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], busy.sid().as_str());
    // It ends three seconds after its last refresh, unless refreshed again.
    let ends = time(&listed[0]["expiresAt"]);
    let refreshed = time(&listed[0]["lastUsedAt"]);
    assert_eq!(ends - refreshed, chrono::Duration::seconds(3), "{listed:?}");
}

/// A refresh token's lifetime (three seconds here) shorter than the idle limit bounds the
/// session as the idle limit would: past it the session cannot go on, and it is not listed.
async fn sessions_end_with_their_refresh_tokens(app: TestApp) {
    idle_sessions_end(app).await;
}

/// A rotated token presented again within the grace gets a pair for the same session; after
/// the grace (three seconds here) the reuse revokes the session.
async fn reuse_within_the_grace_keeps_the_session(app: TestApp) {
    let alice = app.register("alice").await;
    let body = app.refresh(&alice.refresh).await;
    let first = Session::from_payload(&body, "refreshToken");
    let body = app.refresh(&alice.refresh).await;
    assert_ok(&body);
    let again = Session::from_payload(&body, "refreshToken");
    assert_eq!(again.sid(), alice.sid(), "the same session");
    assert_ne!(again.refresh, first.refresh);
    assert_ok(&app.me(&first.access).await);
    assert_ok(&app.me(&again.access).await);
    assert_eq!(my_sessions(&app, &again).await.len(), 1);

    tokio::time::sleep(Duration::from_millis(3_200)).await;
    assert_code(&app.refresh(&alice.refresh).await, "UNAUTHENTICATED");
    assert_code(&app.me(&again.access).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&again.refresh).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&first.refresh).await, "UNAUTHENTICATED");
}

/// With no grace, the first replay of a rotated token is reuse: the session ends at once.
async fn without_a_grace_any_replay_ends_the_session(app: TestApp) {
    let alice = app.register("alice").await;
    let body = app.refresh(&alice.refresh).await;
    let rotated = Session::from_payload(&body, "refreshToken");
    assert_code(&app.refresh(&alice.refresh).await, "UNAUTHENTICATED");
    assert_code(&app.me(&rotated.access).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&rotated.refresh).await, "UNAUTHENTICATED");
}

/// The housekeeping purge deletes expired refresh tokens (used ones included: until then a
/// replay must still count as reuse) and sessions ended for over a day; live sessions and
/// their unexpired tokens stay.
/// Two rows a statement here, so the five expired tokens take three.
async fn purge_removes_spent_rows(app: TestApp) {
    let alice = app.register("alice").await;
    let mut current = alice.clone();
    for _ in 0..3 {
        let body = app.refresh(&current.refresh).await;
        current = Session::from_payload(&body, "refreshToken");
    }
    let ended = app.login_as("alice").await;
    assert_ok(&app.logout(&ended.refresh).await);
    // Revoked a day and more ago, as far as the purge can tell.
    let db = app.database().await;
    let long_ago = app.backend.long_ago();
    db.execute_unprepared(&format!(
        "UPDATE sessions SET revoked_at = {long_ago} WHERE revoked_at IS NOT NULL"
    ))
    .await
    .expect("age the revoked session");
    assert_eq!(app.count("SELECT COUNT(*) FROM refresh_tokens").await, 5);
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 2);

    // Used but unexpired tokens stay, so a replay still revokes (the grace is 200 ms here).
    let service = &app.server().service;
    let purged = service.purge_sessions(2).await.expect("purge runs");
    assert_eq!(purged.sessions, 1, "{purged:?}");
    assert_eq!(purged.refresh_tokens, 0, "{purged:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM refresh_tokens").await, 4);
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 1);

    // Past the refresh-token lifetime (five seconds here) all of them go; the session,
    // refreshed meanwhile, stays with its newest token, which has 2.5 s left.
    let body = app.refresh(&current.refresh).await;
    current = Session::from_payload(&body, "refreshToken");
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let body = app.refresh(&current.refresh).await;
    assert_ok(&body);
    current = Session::from_payload(&body, "refreshToken");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let purged = service.purge_sessions(2).await.expect("purge runs");
    assert_eq!(purged.refresh_tokens, 5, "{purged:?}");
    assert_eq!(purged.sessions, 0, "{purged:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM refresh_tokens").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 1);
    assert_ok(&app.me(&current.access).await);
    assert_ok(&app.refresh(&current.refresh).await);
}

/// The credential fields are nullable: an admin's page that holds the owner keeps its data,
/// with null and FORBIDDEN for the owner's fields only. In the payload of login and refresh
/// they answer for the user just signed in, whatever token the request carries.
async fn credential_fields_answer_per_user_and_for_the_payload(app: TestApp) {
    let owner = app.register("owner").await;
    let admin = app.user_with_role(&owner, "admin", "ADMIN").await;
    app.create_user(&owner, "member", "STANDARD").await;
    let page = "{ users(first: 10) { nodes { username totpEnabled sessions { id } apiTokens { name } } } }";
    let body = app.gql(Some(&admin.access), page, json!({})).await;
    let nodes = body["data"]["users"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("the page survives: {body}"));
    assert_eq!(nodes.len(), 3, "{body}");
    for node in nodes {
        let managed = node["username"] == "member" || node["username"] == "admin";
        for field in ["totpEnabled", "sessions", "apiTokens"] {
            // Present as null, as GraphQL has it, not left out.
            let value = node
                .get(field)
                .unwrap_or_else(|| panic!("{field} missing: {body}"));
            assert_eq!(value.is_null(), !managed, "{field}: {body}");
        }
    }
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 3, "one per refused field: {body}");
    for error in errors {
        assert_eq!(error["extensions"]["code"], "FORBIDDEN", "{body}");
    }

    let payload = "mutation($input: LoginInput!) { login(input: $input) { user { username totpEnabled sessions { current } apiTokens { name } } } }";
    let input = json!({"input": {"login": "member", "password": PASSWORD}});
    // Without a token, and with someone else's.
    for token in [None, Some(owner.access.as_str())] {
        let body = app.gql(token, payload, input.clone()).await;
        assert_ok(&body);
        let user = &body["data"]["login"]["user"];
        assert_eq!(user["username"], "member", "{body}");
        assert_eq!(user["totpEnabled"], false, "{body}");
        let current: Vec<&Value> = user["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .filter(|s| s["current"] == true)
            .collect();
        assert_eq!(current.len(), 1, "the new session is current: {body}");
    }
    // Refreshed with another standard user's token attached, who may see none of member's.
    let other = app.user_with_role(&owner, "other", "STANDARD").await;
    let member = app.login_as("member").await;
    let refresh = "mutation($t: String!) { refreshToken(refreshToken: $t) { user { username totpEnabled sessions { current } } } }";
    let body = app
        .gql(Some(&other.access), refresh, json!({"t": member.refresh}))
        .await;
    assert_ok(&body);
    let user = &body["data"]["refreshToken"]["user"];
    assert_eq!(user["totpEnabled"], false, "{body}");
    let current = user["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter(|s| s["current"] == true)
        .count();
    assert_eq!(current, 1, "{body}");

    // Users reached from the payload are seen by the account that signed in too, whatever
    // token the request carries: the admin's creator (the owner) shows its email to an admin
    // but not its credentials, with no token or with the owner's own.
    let creator = "mutation($input: LoginInput!) { login(input: $input) { user { createdBy { username email totpEnabled sessions { id } apiTokens { name } } } } }";
    let input = json!({"input": {"login": "admin", "password": PASSWORD}});
    for token in [None, Some(owner.access.as_str())] {
        let body = app.gql(token, creator, input.clone()).await;
        let owner_seen = &body["data"]["login"]["user"]["createdBy"];
        assert_eq!(owner_seen["username"], "owner", "{body}");
        assert_eq!(owner_seen["email"], "owner@example.com", "{body}");
        for field in ["totpEnabled", "sessions", "apiTokens"] {
            assert!(
                owner_seen.get(field).is_some_and(Value::is_null),
                "{field}: {body}"
            );
        }
        let errors = body["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 3, "{body}");
        for error in errors {
            assert_eq!(error["extensions"]["code"], "FORBIDDEN", "{body}");
        }
    }
}

/// A user holds at most 100 live sessions: a login beyond ends the oldest, whose tokens stop.
async fn a_login_beyond_the_most_sessions_ends_the_oldest(app: TestApp) {
    use sea_orm::{ConnectionTrait, Statement};
    let alice = app.register("alice").await;
    let db = app.database().await;
    let backend = db.get_database_backend();
    let first: uuid::Uuid = db
        .query_one_raw(Statement::from_string(backend, "SELECT id FROM sessions"))
        .await
        .expect("query")
        .and_then(|row| row.try_get_by_index(0).ok())
        .expect("the registration's session");
    let placeholders = match app.backend {
        support::Backend::Sqlite => ("?", "?"),
        support::Backend::Postgres => ("$1", "$2"),
    };
    // 99 more, as new as the registration's: 100 in all.
    for _ in 0..99 {
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "INSERT INTO sessions (id, user_id, created_at, last_used_at) \
                 SELECT {}, user_id, created_at, last_used_at FROM sessions WHERE id = {}",
                placeholders.0, placeholders.1
            ),
            [uuid::Uuid::now_v7().into(), first.into()],
        ))
        .await
        .expect("a session");
    }
    let live = "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL";
    assert_eq!(app.count(live).await, 100);
    assert_ok(&app.me(&alice.access).await);
    let newest = app.login_as("alice").await;
    assert_eq!(app.count(live).await, 100);
    assert_ok(&app.me(&newest.access).await);
    assert_code(&app.me(&alice.access).await, "UNAUTHENTICATED");
    assert_code(&app.refresh(&alice.refresh).await, "UNAUTHENTICATED");
}

backend_tests!(
    a_login_beyond_the_most_sessions_ends_the_oldest,
    lists_own_sessions_newest_first,
    credential_fields_answer_per_user_and_for_the_payload,
    managers_see_the_sessions_of_those_they_manage,
    revoking_a_session_stops_its_tokens_at_once,
    logout_everywhere_ends_every_session,
    sessions_end_at_their_maximum_age with |s| s.session_max_age = std::time::Duration::from_secs(5),
    a_session_in_its_last_second_refreshes_no_more with |s| {
        s.session_max_age = std::time::Duration::from_secs(2);
    },
    idle_sessions_end with |s| s.session_idle = std::time::Duration::from_secs(3),
    sessions_end_with_their_refresh_tokens with |s| s.refresh_ttl = std::time::Duration::from_secs(3),
    reuse_within_the_grace_keeps_the_session with |s| {
        s.refresh_reuse_grace = std::time::Duration::from_secs(3);
    },
    without_a_grace_any_replay_ends_the_session with |s| {
        s.refresh_reuse_grace = std::time::Duration::ZERO;
    },
    purge_removes_spent_rows with |s| {
        s.refresh_reuse_grace = std::time::Duration::from_millis(200);
        s.refresh_ttl = std::time::Duration::from_secs(5);
    },
);
