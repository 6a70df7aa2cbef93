//! API tokens and the audit trail over HTTP: tokens shown once and stored hashed, acting for
//! queries only, issued by managers, stopped by revocation, expiry, disabling and deletion;
//! audit entries for every kind of change, who sees which, and their pagination.

mod support;

use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{
    Backend, Gql, LOGOUT_EVERYWHERE, PASSWORD, REVOKE_SESSION, Session, TestApp, assert_code,
    assert_field_codes, assert_ok, eventually, new_user,
};

const CREATE_TOKEN: &str = "mutation($name: String!, $expiresAt: DateTime, $userId: ID) { createApiToken(name: $name, expiresAt: $expiresAt, userId: $userId) { token apiToken { id name createdAt lastUsedAt expiresAt } } }";
const REVOKE_TOKEN: &str = "mutation($id: ID!) { revokeApiToken(id: $id) }";
const MY_TOKENS: &str = "{ me { apiTokens { id name lastUsedAt expiresAt } } }";
const USER_TOKENS: &str = "query($id: ID!) { user(id: $id) { apiTokens { id name } } }";
const AUDIT: &str = "query($first: Int, $after: String, $filter: AuditFilter) { auditLog(first: $first, after: $after, filter: $filter) { edges { cursor node { id at action actorId targetId targetRole ip fields actor { username } target { username } } } pageInfo { hasNextPage hasPreviousPage endCursor } } }";

/// Creates an API token as `session`; returns (token, id).
async fn create_token(app: &TestApp, session: &Session, variables: Value) -> (String, String) {
    let body = app
        .gql(Some(&session.access), CREATE_TOKEN, variables)
        .await;
    assert_ok(&body);
    let payload = &body["data"]["createApiToken"];
    (
        payload["token"].as_str().expect("token").to_owned(),
        payload["apiToken"]["id"].as_str().expect("id").to_owned(),
    )
}

async fn scalar(app: &TestApp, sql: &str) -> Vec<String> {
    let db = app.database().await;
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("query")
        .into_iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("text"))
        .collect()
}

async fn tokens_act_for_queries_and_never_manage(app: TestApp) {
    let owner = app.register("alice").await;
    let bob = app.create_user(&owner, "bob", "STANDARD").await;
    let (token, id) = create_token(&app, &owner, json!({"name": "backup script"})).await;
    assert!(token.starts_with("rc_"), "{token}");

    // Acts as its user for queries.
    let me = app.me(&token).await;
    assert_ok(&me);
    assert_eq!(me["data"]["me"]["username"], "alice");
    let users = app
        .gql(Some(&token), support::USERS, json!({"first": 5}))
        .await;
    assert_ok(&users);

    // Listed without the token; only its SHA-256 is stored.
    let listed = app.gql(Some(&owner.access), MY_TOKENS, json!({})).await;
    assert_ok(&listed);
    let tokens = listed["data"]["me"]["apiTokens"].as_array().expect("list");
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["id"], id.as_str());
    assert_eq!(tokens[0]["name"], "backup script");
    assert!(!listed.to_string().contains(&token));
    // Its use is recorded, beside the request rather than in its way.
    eventually("the token's use is recorded", async || {
        let listed = app.gql(Some(&owner.access), MY_TOKENS, json!({})).await;
        !listed["data"]["me"]["apiTokens"][0]["lastUsedAt"].is_null()
    })
    .await;
    let stored = scalar(&app, "SELECT token_hash FROM api_tokens").await;
    assert_eq!(stored, vec![hex::encode(Sha256::digest(token.as_bytes()))]);

    // Every management and credential mutation needs an interactive session.
    let attempts = [
        (
            support::CREATE_USER,
            json!({"input": new_user("carol", "STANDARD")}),
        ),
        (
            support::UPDATE_USER,
            json!({"id": owner.id, "input": {"firstName": "A"}}),
        ),
        (
            support::UPDATE_USER,
            json!({"id": bob, "input": {"disabled": true}}),
        ),
        (support::DELETE_USER, json!({"id": bob})),
        (support::SET_ROLE, json!({"id": bob, "role": "ADMIN"})),
        (CREATE_TOKEN, json!({"name": "another"})),
        (REVOKE_TOKEN, json!({"id": id})),
        (LOGOUT_EVERYWHERE, json!({})),
        (REVOKE_SESSION, json!({"id": uuid::Uuid::nil()})),
        ("mutation { enableTotp { secret } }", json!({})),
        ("mutation { confirmTotp(code: \"123456\") }", json!({})),
        (
            "mutation { disableTotp(verification: {password: \"x\"}) }",
            json!({}),
        ),
    ];
    for (query, variables) in attempts {
        let body = app.gql(Some(&token), query, variables).await;
        assert_code(&body, "FORBIDDEN");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("interactive session"), "{query}: {body}");
    }
    // Nothing changed: bob is still there and the token still works.
    assert_ok(&app.user_by_id(&owner, &bob).await);
    assert_ok(&app.me(&token).await);

    // A forged token with the prefix is refused like any bad token.
    assert_code(&app.me("rc_not-a-real-token").await, "UNAUTHENTICATED");
}

async fn revocation_expiry_disabling_and_deletion_stop_tokens(app: TestApp) {
    let owner = app.register("alice").await;
    let bob_id = app.create_user(&owner, "bob", "STANDARD").await;
    let bob = app.login_as("bob").await;

    let (revoked, revoked_id) = create_token(&app, &bob, json!({"name": "one"})).await;
    assert_ok(&app.me(&revoked).await);
    let body = app
        .gql(Some(&bob.access), REVOKE_TOKEN, json!({"id": revoked_id}))
        .await;
    assert_eq!(body["data"]["revokeApiToken"], true, "{body}");
    assert_code(&app.me(&revoked).await, "UNAUTHENTICATED");
    // Gone: a manager is told so; anyone else is refused as for any token not their own, so
    // that whether an id exists does not show.
    let again = app
        .gql(Some(&owner.access), REVOKE_TOKEN, json!({"id": revoked_id}))
        .await;
    assert_eq!(again["data"]["revokeApiToken"], false, "{again}");
    let again = app
        .gql(Some(&bob.access), REVOKE_TOKEN, json!({"id": revoked_id}))
        .await;
    assert_code(&again, "FORBIDDEN");

    let soon = chrono::Utc::now() + chrono::Duration::seconds(5);
    let (expiring, _) = create_token(
        &app,
        &bob,
        json!({"name": "short", "expiresAt": soon.to_rfc3339()}),
    )
    .await;
    assert_ok(&app.me(&expiring).await);
    let left = (soon - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(300)).await;
    assert_code(&app.me(&expiring).await, "UNAUTHENTICATED");

    // Disabling stops the token at once, and enabling again does not revive it.
    let (kept, _) = create_token(&app, &bob, json!({"name": "kept"})).await;
    assert_ok(&app.me(&kept).await);
    assert_ok(&app.disable(&owner, &bob_id).await);
    assert_code(&app.me(&kept).await, "UNAUTHENTICATED");
    assert_ok(
        &app.update_user(&owner, &bob_id, json!({"disabled": false}))
            .await,
    );
    assert_code(&app.me(&kept).await, "UNAUTHENTICATED");

    // Deleting the user stops the tokens an admin issued for them.
    let issued = app
        .gql(
            Some(&owner.access),
            CREATE_TOKEN,
            json!({"name": "issued", "userId": bob_id}),
        )
        .await;
    assert_ok(&issued);
    let issued = issued["data"]["createApiToken"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(app.me(&issued).await["data"]["me"]["id"], bob_id.as_str());
    assert_ok(&app.delete_user(&owner, &bob_id).await);
    assert_code(&app.me(&issued).await, "UNAUTHENTICATED");
}

async fn managers_issue_and_see_tokens_of_users_they_manage(app: TestApp) {
    let owner = app.register("alice").await;
    let admin = app.user_with_role(&owner, "adele", "ADMIN").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    let carol = app.user_with_role(&owner, "carol", "STANDARD").await;

    // An admin issues a token for a standard user: it acts as that user.
    let (for_bob, for_bob_id) =
        create_token(&app, &admin, json!({"name": "ci", "userId": bob.id})).await;
    assert_eq!(app.me(&for_bob).await["data"]["me"]["id"], bob.id.as_str());
    let seen = app
        .gql(Some(&admin.access), USER_TOKENS, json!({"id": bob.id}))
        .await;
    assert_ok(&seen);
    assert_eq!(
        seen["data"]["user"]["apiTokens"][0]["id"],
        for_bob_id.as_str()
    );
    // Bob sees it among his own, and who made it for him (an admin's profile stays hidden
    // from him), beside the one he made himself.
    create_token(&app, &bob, json!({"name": "mine"})).await;
    let own = app
        .gql(
            Some(&bob.access),
            "{ me { apiTokens { id name createdBy { username email } } } }",
            json!({}),
        )
        .await;
    assert_ok(&own);
    let tokens = &own["data"]["me"]["apiTokens"];
    assert_eq!(tokens[1]["id"], for_bob_id.as_str(), "{own}");
    assert_eq!(tokens[1]["createdBy"]["username"], "adele", "{own}");
    assert_eq!(tokens[1]["createdBy"]["email"], Value::Null, "{own}");
    assert_eq!(tokens[0]["name"], "mine", "{own}");
    assert_eq!(tokens[0]["createdBy"]["username"], "bob", "{own}");

    // Nobody issues for, or sees the tokens of, someone they do not manage.
    for (actor, target) in [(&admin, &owner.id), (&bob, &carol.id), (&admin, &admin.id)] {
        let body = app
            .gql(
                Some(&actor.access),
                CREATE_TOKEN,
                json!({"name": "x", "userId": target}),
            )
            .await;
        if actor.id == *target {
            assert_ok(&body);
        } else {
            assert_code(&body, "FORBIDDEN");
        }
    }
    // Decided before the input, as for every edit of another: a blank name or a past expiry
    // for someone out of reach is FORBIDDEN too, and so is an unknown user's id for bob.
    for variables in [
        json!({"name": "   ", "userId": owner.id}),
        json!({"name": "x", "userId": owner.id, "expiresAt": "2001-01-01T00:00:00Z"}),
    ] {
        let body = app.gql(Some(&admin.access), CREATE_TOKEN, variables).await;
        assert_code(&body, "FORBIDDEN");
    }
    let unknown = json!({"name": "   ", "userId": "0190b7a5-0000-7000-8000-000000000000"});
    let body = app.gql(Some(&bob.access), CREATE_TOKEN, unknown).await;
    assert_code(&body, "FORBIDDEN");
    let hidden = app
        .gql(Some(&admin.access), USER_TOKENS, json!({"id": owner.id}))
        .await;
    assert_code(&hidden, "FORBIDDEN");

    // Revocation: the admin may revoke bob's token; carol may not revoke it.
    let refused = app
        .gql(Some(&carol.access), REVOKE_TOKEN, json!({"id": for_bob_id}))
        .await;
    assert_code(&refused, "FORBIDDEN");
    assert_ok(&app.me(&for_bob).await);
    let revoked = app
        .gql(Some(&admin.access), REVOKE_TOKEN, json!({"id": for_bob_id}))
        .await;
    assert_eq!(revoked["data"]["revokeApiToken"], true, "{revoked}");
    assert_code(&app.me(&for_bob).await, "UNAUTHENTICATED");

    // A token issued for someone rests on the issuer managing them: when the admin is demoted,
    // the tokens they issued stop, while bob's own token keeps working.
    let (issued, _) = create_token(&app, &admin, json!({"name": "ci", "userId": bob.id})).await;
    let (own, _) = create_token(&app, &bob, json!({"name": "mine"})).await;
    assert_ok(&app.me(&issued).await);
    assert_ok(&app.set_role(&owner, &admin.id, "STANDARD").await);
    assert_code(&app.me(&issued).await, "UNAUTHENTICATED");
    assert_ok(&app.me(&own).await);
}

async fn token_input_is_validated(app: TestApp) {
    let owner = app.register("alice").await;
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let body = app
        .gql(
            Some(&owner.access),
            CREATE_TOKEN,
            json!({"name": "  ", "expiresAt": past}),
        )
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_field_codes(&body, json!({"name": "LENGTH", "expiresAt": "RANGE"}));
    let far = app
        .gql(
            Some(&owner.access),
            CREATE_TOKEN,
            json!({"name": "x", "expiresAt": (chrono::Utc::now() + chrono::Duration::days(4_000)).to_rfc3339()}),
        )
        .await;
    assert_code(&far, "BAD_USER_INPUT");
    assert_field_codes(&far, json!({"expiresAt": "RANGE"}));
    let later = (chrono::Utc::now() + chrono::Duration::days(3_000)).to_rfc3339();
    let (token, _) = create_token(&app, &owner, json!({"name": "x", "expiresAt": later})).await;
    assert_ok(&app.me(&token).await);
    // Any offset is read; the answer is in UTC.
    let at = chrono::Utc::now() + chrono::Duration::days(2);
    let tokyo = at.with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).expect("offset"));
    let body = app
        .gql(
            Some(&owner.access),
            CREATE_TOKEN,
            json!({"name": "x", "expiresAt": tokyo.to_rfc3339()}),
        )
        .await;
    assert_ok(&body);
    let expires = body["data"]["createApiToken"]["apiToken"]["expiresAt"]
        .as_str()
        .expect("expiresAt");
    // One form for every answer: microseconds, and `Z`.
    assert!(expires.ends_with('Z'), "{expires}");
    assert_eq!(
        expires.len(),
        "2027-01-31T09:30:00.000000Z".len(),
        "{expires}"
    );
    let read = chrono::DateTime::parse_from_rfc3339(expires).expect("RFC 3339");
    assert!(
        (read.timestamp_micros() - at.timestamp_micros()).abs() <= 1,
        "{expires}"
    );
    // A value that is no RFC 3339 date and time, as a variable or in the document, is refused
    // before any of the document runs: the logout beside it does not happen.
    let log_out_and_create = |expires: &str| {
        let at = if expires == "$at" {
            ", $at: DateTime"
        } else {
            ""
        };
        format!(
            "mutation($t: String!{at}) {{ logout(refreshToken: $t) \
             createApiToken(name: \"n\", expiresAt: {expires}) {{ token }} }}"
        )
    };
    let refresh = json!({"t": owner.refresh});
    let with_at = |at: Value| json!({"t": owner.refresh, "at": at});
    for (query, variables) in [
        (log_out_and_create("$at"), with_at(json!("not a date"))),
        (log_out_and_create("$at"), with_at(json!("2027-01-01"))),
        (log_out_and_create("$at"), with_at(json!(5))),
        (log_out_and_create("\"2027-01-01 10:00\""), refresh),
    ] {
        let body = app.gql(Some(&owner.access), &query, variables).await;
        assert!(body.get("data").is_none(), "{query}: {body}");
        assert_code(&body, "BAD_USER_INPUT");
    }
    assert_ok(&app.me(&owner.access).await);
    let missing = app
        .gql(
            Some(&owner.access),
            CREATE_TOKEN,
            json!({"name": "x", "userId": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_code(&missing, "NOT_FOUND");
}

/// The audit entries `session` may read, newest first, with `variables`.
async fn audit(app: &TestApp, session: &Session, variables: Value) -> Value {
    app.gql(Some(&session.access), AUDIT, variables).await
}

fn actions(body: &Value) -> Vec<String> {
    body["data"]["auditLog"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no audit page: {body}"))
        .iter()
        .map(|edge| edge["node"]["action"].as_str().unwrap_or("?").to_owned())
        .collect()
}

async fn the_audit_trail_records_every_kind_of_change(app: TestApp) {
    let owner = app.register("alice").await;
    let admin = app.user_with_role(&owner, "adele", "ADMIN").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    assert_ok(
        &app.update_user(
            &owner,
            &bob.id,
            json!({"firstName": "Bob", "phone": "+1 555"}),
        )
        .await,
    );
    // A refused change leaves no entry: the entry is written with the change or not at all.
    let taken = app
        .update_user(&owner, &bob.id, json!({"email": "adele@example.com"}))
        .await;
    assert_code(&taken, "CONFLICT");
    let (_, token_id) = create_token(&app, &bob, json!({"name": "script"})).await;
    assert_ok(
        &app.gql(Some(&bob.access), REVOKE_TOKEN, json!({"id": token_id}))
            .await,
    );
    assert_ok(&app.set_role(&owner, &admin.id, "STANDARD").await);
    assert_ok(&app.logout(&bob.refresh).await);

    let all = audit(&app, &owner, json!({"first": 50})).await;
    assert_ok(&all);
    assert_eq!(
        actions(&all),
        [
            "LOGGED_OUT",
            "ROLE_CHANGED",
            "API_TOKEN_REVOKED",
            "API_TOKEN_CREATED",
            "USER_UPDATED",
            "LOGGED_IN",
            "USER_CREATED",
            "LOGGED_IN",
            "USER_CREATED",
            "USER_REGISTERED",
        ]
    );
    let edges = all["data"]["auditLog"]["edges"].as_array().expect("edges");
    let updated = &edges[4]["node"];
    assert_eq!(updated["actorId"], owner.id.as_str());
    assert_eq!(updated["targetId"], bob.id.as_str());
    assert_eq!(updated["actor"]["username"], "alice");
    assert_eq!(updated["target"]["username"], "bob");
    assert_eq!(updated["fields"], json!(["firstName", "phone"]));
    assert_eq!(updated["ip"], "127.0.0.1");
    assert_eq!(edges[1]["node"]["fields"], json!(["role"]));
    // Which way a role went, and the role of a change's target then.
    assert_eq!(edges[1]["node"]["targetRole"], "STANDARD");
    assert_eq!(edges[6]["node"]["targetRole"], "STANDARD");
    assert_eq!(edges[8]["node"]["targetRole"], "ADMIN");
    assert_eq!(edges[9]["node"]["targetRole"], "OWNER");
    // Never a secret: no password, token or hash in the stored entries.
    let stored = scalar(
        &app,
        "SELECT action || ' ' || fields || ' ' || COALESCE(ip, '') FROM audit_log",
    )
    .await
    .join("\n");
    assert!(
        !stored.contains(PASSWORD) && !stored.contains("$argon2"),
        "{stored}"
    );

    // Filters.
    let created = audit(
        &app,
        &owner,
        json!({"filter": {"action": "USER_CREATED", "targetId": bob.id}}),
    )
    .await;
    assert_eq!(actions(&created), ["USER_CREATED"]);
    // A filter by action reads that action's entries only, however long the trail grows
    // (SQLite's planner, unlike PostgreSQL's, picks the index on a table this small too).
    let db = app.database().await;
    if db.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
        let plan = db
            .query_all_raw(Statement::from_string(
                sea_orm::DatabaseBackend::Sqlite,
                "EXPLAIN QUERY PLAN SELECT id FROM audit_log WHERE action = 'ROLE_CHANGED' \
                 ORDER BY at DESC, id DESC LIMIT 21",
            ))
            .await
            .expect("plan");
        let detail: Vec<String> = plan
            .iter()
            .map(|row| row.try_get_by_index::<String>(3).expect("detail"))
            .collect();
        assert!(
            detail
                .iter()
                .any(|step| step.contains("idx_audit_log_action")),
            "{detail:?}"
        );
    }
    let by_bob = audit(&app, &owner, json!({"filter": {"actorId": bob.id}})).await;
    assert_eq!(
        actions(&by_bob),
        [
            "LOGGED_OUT",
            "API_TOKEN_REVOKED",
            "API_TOKEN_CREATED",
            "LOGGED_IN"
        ]
    );

    // Keyset pages, newest first, with no overlap.
    let first = audit(&app, &owner, json!({"first": 4})).await;
    assert_eq!(first["data"]["auditLog"]["pageInfo"]["hasNextPage"], true);
    let cursor = first["data"]["auditLog"]["pageInfo"]["endCursor"].clone();
    let second = audit(&app, &owner, json!({"first": 4, "after": cursor})).await;
    assert_eq!(
        [actions(&first), actions(&second)].concat(),
        actions(&all)[..8].to_vec()
    );
    assert_eq!(
        second["data"]["auditLog"]["pageInfo"]["hasPreviousPage"],
        true
    );

    // Ending sessions is recorded too.
    let elsewhere = app.login_as("alice").await;
    let ended = app
        .gql(Some(&elsewhere.access), LOGOUT_EVERYWHERE, json!({}))
        .await;
    assert_ok(&ended);
    let fresh = app.login_as("alice").await;
    let latest = audit(&app, &fresh, json!({"first": 3})).await;
    assert_eq!(
        actions(&latest),
        ["LOGGED_IN", "ALL_SESSIONS_REVOKED", "LOGGED_IN"]
    );
}

async fn admins_read_entries_about_standard_users_and_themselves(app: TestApp) {
    let owner = app.register("alice").await;
    let admin = app.user_with_role(&owner, "adele", "ADMIN").await;
    let other_admin = app.user_with_role(&owner, "otto", "ADMIN").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;

    let seen = audit(&app, &admin, json!({"first": 50})).await;
    assert_ok(&seen);
    let edges = seen["data"]["auditLog"]["edges"].as_array().expect("edges");
    let targets: Vec<&str> = edges
        .iter()
        .map(|edge| edge["node"]["targetId"].as_str().unwrap_or(""))
        .collect();
    assert!(targets.contains(&bob.id.as_str()), "{seen}");
    assert!(targets.contains(&admin.id.as_str()), "{seen}");
    assert!(
        targets.iter().all(|id| *id == bob.id || *id == admin.id),
        "only bob's and adele's own entries: {seen}"
    );
    assert!(!targets.contains(&other_admin.id.as_str()));
    assert!(!targets.contains(&owner.id.as_str()));
    // Addresses: adele's own and bob's (whom she manages) show; the owner's do not.
    for edge in edges {
        let node = &edge["node"];
        let actor = node["actorId"].as_str().unwrap_or("");
        let shown = node["ip"].as_str() == Some("127.0.0.1");
        assert_eq!(shown, actor == admin.id || actor == bob.id, "{node}");
    }

    let refused = audit(&app, &bob, json!({})).await;
    assert_code(&refused, "FORBIDDEN");
    let with_token = create_token(&app, &owner, json!({"name": "reader"}))
        .await
        .0;
    let by_token = app.gql(Some(&with_token), AUDIT, json!({})).await;
    assert_ok(&by_token);
}

/// An entry's address shows by the actor's role as they acted, as the entry itself does by
/// its target's: it neither vanishes once the actor is deleted nor appears once an admin is
/// demoted.
async fn addresses_follow_the_actors_role_as_they_acted(app: TestApp) {
    let owner = app.register("alice").await;
    let admin = app.user_with_role(&owner, "adele", "ADMIN").await;
    let otto = app.user_with_role(&owner, "otto", "ADMIN").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    assert_ok(
        &app.update_user(&otto, &bob.id, json!({"firstName": "Bob"}))
            .await,
    );
    // Both later changes are the owner's: otto demoted, bob deleted.
    assert_ok(&app.set_role(&owner, &otto.id, "STANDARD").await);
    assert_ok(&app.delete_user(&owner, &bob.id).await);

    let seen = audit(&app, &admin, json!({"first": 50})).await;
    assert_ok(&seen);
    let edges = seen["data"]["auditLog"]["edges"].as_array().expect("edges");
    let entry = |action: &str, actor: &str| {
        edges
            .iter()
            .map(|edge| &edge["node"])
            .find(|node| node["action"] == action && node["actorId"] == actor)
            .unwrap_or_else(|| panic!("no {action} by {actor}: {seen}"))
    };
    // Bob's login, as a standard user whom adele managed: shown, although bob is gone.
    assert_eq!(entry("LOGGED_IN", &bob.id)["ip"], "127.0.0.1", "{seen}");
    // Otto's edit of bob, made as adele's fellow admin: hidden, although otto is standard now.
    assert!(entry("USER_UPDATED", &otto.id)["ip"].is_null(), "{seen}");

    // Entries written before actors' roles were kept get them from the migration: bob's role
    // as the target of his own login, otto's as he is now.
    let db = app.database().await;
    for sql in [
        "ALTER TABLE audit_log DROP COLUMN actor_role",
        "DELETE FROM seaql_migrations WHERE version = 'm20261213_000014_audit_actor_role'",
    ] {
        db.execute_unprepared(sql).await.expect(sql);
    }
    let instance = app.second_instance().await;
    let roles = "SELECT COUNT(*) FROM audit_log WHERE actor_id IS NOT NULL AND actor_role IS NULL";
    assert_eq!(app.count(roles).await, 0);
    let seen = app
        .at(&instance)
        .gql(Some(&admin.access), AUDIT, json!({"first": 50}))
        .await;
    let bobs = seen["data"]["auditLog"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|edge| &edge["node"])
        .find(|node| node["action"] == "LOGGED_IN" && node["actorId"] == bob.id.as_str());
    assert_eq!(
        bobs.map(|node| &node["ip"]),
        Some(&json!("127.0.0.1")),
        "{seen}"
    );
}

const AUDIT_COUNTED: &str = "query($first: Int, $filter: AuditFilter) { auditLog(first: $first, filter: $filter) { totalCount nodes { action targetId } edges { node { id } } } }";

/// `totalCount` counts what the reader may see with the filter, across pages; `nodes` holds the
/// page's entries in the edges' order.
async fn audit_counts_and_nodes_follow_scope_and_filter(app: TestApp) {
    let owner = app.register("alice").await;
    let admin = app.user_with_role(&owner, "adele", "ADMIN").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    assert_ok(
        &app.update_user(&owner, &bob.id, json!({"firstName": "Bob"}))
            .await,
    );
    let all = app.count("SELECT COUNT(*) FROM audit_log").await;

    let page = app
        .gql(Some(&owner.access), AUDIT_COUNTED, json!({"first": 2}))
        .await;
    assert_ok(&page);
    let log = &page["data"]["auditLog"];
    assert_eq!(log["totalCount"], all, "{page}");
    let nodes = log["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2, "{page}");
    assert_eq!(nodes[0]["action"], "USER_UPDATED");
    let edges = log["edges"].as_array().expect("edges");
    let ids = |list: &[Value], at: &str| -> Vec<Value> {
        list.iter()
            .map(|item| item.pointer(at).cloned().unwrap_or_default())
            .collect()
    };
    let with_ids = app
        .gql(
            Some(&owner.access),
            "{ auditLog(first: 2) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        ids(
            with_ids["data"]["auditLog"]["nodes"]
                .as_array()
                .expect("nodes"),
            "/id"
        ),
        ids(edges, "/node/id")
    );

    // Filtered: bob's entries are his creation, his login and the update.
    let about_bob = app
        .gql(
            Some(&owner.access),
            AUDIT_COUNTED,
            json!({"filter": {"targetId": bob.id}}),
        )
        .await;
    assert_eq!(
        about_bob["data"]["auditLog"]["totalCount"], 3,
        "{about_bob}"
    );
    let updates = app
        .gql(
            Some(&owner.access),
            AUDIT_COUNTED,
            json!({"filter": {"action": "USER_UPDATED"}}),
        )
        .await;
    assert_eq!(updates["data"]["auditLog"]["totalCount"], 1, "{updates}");

    // An admin counts only the entries an admin reads: about standard users and themselves.
    let seen = app
        .gql(Some(&admin.access), AUDIT_COUNTED, json!({"first": 100}))
        .await;
    assert_ok(&seen);
    let listed = seen["data"]["auditLog"]["nodes"].as_array().expect("nodes");
    assert_eq!(
        seen["data"]["auditLog"]["totalCount"],
        listed.len(),
        "{seen}"
    );
    assert!((listed.len() as i64) < all, "{seen}");
    assert!(
        listed.iter().all(
            |node| node["targetId"] == bob.id.as_str() || node["targetId"] == admin.id.as_str()
        ),
        "{seen}"
    );
    let refused = app
        .gql(Some(&bob.access), "{ auditLog { totalCount } }", json!({}))
        .await;
    assert_code(&refused, "FORBIDDEN");
}

/// The housekeeping deletes entries older than the retention, a batch a statement, and keeps
/// the rest.
async fn the_audit_purge_deletes_entries_past_their_retention(app: TestApp) {
    let owner = app.register("alice").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    let db = app.database().await;
    let long_ago = app.backend.long_ago();
    db.execute_unprepared(&format!("UPDATE audit_log SET at = {long_ago}"))
        .await
        .expect("age every entry");
    let aged = app.count("SELECT COUNT(*) FROM audit_log").await;
    assert!(aged >= 3, "{aged}");
    assert_ok(
        &app.update_user(&owner, &bob.id, json!({"firstName": "Bob"}))
            .await,
    );

    // The start-up round of the housekeeping may have run already: what is left is what counts.
    let purged = app
        .server()
        .service
        .purge_audit(2)
        .await
        .expect("purge runs");
    assert!(purged as i64 <= aged, "{purged}");
    let left = app.gql(Some(&owner.access), AUDIT_COUNTED, json!({})).await;
    assert_eq!(left["data"]["auditLog"]["totalCount"], 1, "{left}");
    assert_eq!(
        left["data"]["auditLog"]["nodes"][0]["action"], "USER_UPDATED",
        "{left}"
    );
    // Nothing else is old enough.
    let again = app
        .server()
        .service
        .purge_audit(2)
        .await
        .expect("purge runs");
    assert_eq!(again, 0);
}

/// The housekeeping deletes tokens past their expiry, a batch a statement, and keeps the rest.
async fn the_purge_deletes_expired_api_tokens(app: TestApp) {
    let owner = app.register("alice").await;
    for name in ["a", "b", "c", "kept"] {
        create_token(&app, &owner, json!({ "name": name })).await;
    }
    let db = app.database().await;
    let long_ago = app.backend.long_ago();
    db.execute_unprepared(&format!(
        "UPDATE api_tokens SET expires_at = {long_ago} WHERE name <> 'kept'"
    ))
    .await
    .expect("expire three");
    let purged = app
        .server()
        .service
        .purge_api_tokens(2)
        .await
        .expect("purge runs");
    assert_eq!(purged, 3);
    assert_eq!(scalar(&app, "SELECT name FROM api_tokens").await, ["kept"]);
}

/// Each mutation of a document acts as its caller is by then: a session ended, or an ownership
/// handed over, earlier in the same document issues no token after it; nor does anyone issue
/// tokens for a disabled account (enabling it must revive none).
async fn a_document_acts_as_its_caller_is_by_then(app: TestApp) {
    let owner = app.register("alice").await;
    let adele = app.create_user(&owner, "adele", "ADMIN").await;
    let heir = app.create_user(&owner, "heir", "STANDARD").await;
    let bob = app.create_user(&owner, "bob", "STANDARD").await;
    let tokens = "SELECT count(*) FROM api_tokens";

    let owner = app.login_as("alice").await;
    assert_ok(&app.disable(&owner, &bob).await);
    let for_disabled = app
        .gql(
            Some(&owner.access),
            CREATE_TOKEN,
            json!({"name": "ci", "userId": bob}),
        )
        .await;
    assert_code(&for_disabled, "FORBIDDEN");

    let handed_over = app
        .gql(
            Some(&owner.access),
            "mutation($heir: ID!, $admin: ID!) { setRole(id: $heir, role: OWNER) { role } \
             createApiToken(name: \"keep\", userId: $admin) { token } }",
            json!({"heir": heir, "admin": adele}),
        )
        .await;
    let errors = handed_over["errors"].as_array().expect("an error");
    assert_eq!(errors.len(), 1, "{handed_over}");
    assert_eq!(errors[0]["path"][0], "createApiToken", "{handed_over}");
    assert_eq!(
        errors[0]["extensions"]["code"], "UNAUTHENTICATED",
        "{handed_over}"
    );
    let heir = app.login_as("heir").await;
    assert_eq!(heir.role, "OWNER");
    let ended = app
        .gql(
            Some(&heir.access),
            "mutation { logoutEverywhere createApiToken(name: \"late\") { token } }",
            json!({}),
        )
        .await;
    assert_eq!(ended["errors"][0]["path"][0], "createApiToken", "{ended}");
    assert_code(&ended, "UNAUTHENTICATED");
    assert_eq!(app.count(tokens).await, 0);
}

backend_tests!(
    a_document_acts_as_its_caller_is_by_then,
    tokens_act_for_queries_and_never_manage,
    revocation_expiry_disabling_and_deletion_stop_tokens,
    managers_issue_and_see_tokens_of_users_they_manage,
    token_input_is_validated,
    the_audit_trail_records_every_kind_of_change,
    admins_read_entries_about_standard_users_and_themselves,
    addresses_follow_the_actors_role_as_they_acted,
    audit_counts_and_nodes_follow_scope_and_filter,
    the_purge_deletes_expired_api_tokens,
    the_audit_purge_deletes_entries_past_their_retention with |s| {
        s.audit_retention = std::time::Duration::from_secs(86_400);
    },
);

/// On SQLite, a read made with an API token does not wait for another process's write lock
/// to record the token's use: the record is written beside the request (its wait would take
/// the database timeout, ten seconds here, for every such read while the lock is held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_token_read_does_not_wait_for_a_write_lock() {
    use sea_orm::TransactionTrait;

    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.db_timeout = std::time::Duration::from_secs(10);
    })
    .await
    else {
        return;
    };
    let owner = app.register("alice").await;
    let (token, _) = create_token(&app, &owner, json!({"name": "script"})).await;
    let db = app.database().await;
    let hold = db.begin().await.expect("begin");
    hold.execute_unprepared("UPDATE users SET updated_at = updated_at")
        .await
        .expect("take the write lock");
    let started = std::time::Instant::now();
    let me = app.me(&token).await;
    let took = started.elapsed();
    hold.rollback().await.expect("release the lock");
    let _ = db.close().await;
    assert_ok(&me);
    assert!(
        took < std::time::Duration::from_secs(5),
        "the read waited {took:?}"
    );
}
