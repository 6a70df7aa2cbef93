//! Uniqueness under races, and the validation of bulk imports.

mod support;

use rollcall::db::Role;
use rollcall::error::FieldCode;
use rollcall::service::ImportedUser;
use serde_json::json;
use support::{Gql, TestApp, assert_code};

/// Two users change their email to the same new address at once, many times over. Whichever
/// loses is told the email is in use, whether the pre-check or the unique index caught it
/// (the index path once re-checked the old values and blamed the username).
async fn racing_email_changes_conflict_on_email(app: TestApp) {
    let owner = app.register("owner").await;
    let a = app.create_user(&owner, "racer-a", "STANDARD").await;
    let b = app.create_user(&owner, "racer-b", "STANDARD").await;
    for round in 0..15 {
        let email = format!("shared{round}@example.com");
        let (first, second) = tokio::join!(
            app.update_user(&owner, &a, json!({"email": email})),
            app.update_user(&owner, &b, json!({"email": email})),
        );
        let failed: Vec<_> = [&first, &second]
            .into_iter()
            .filter(|body| body.get("errors").is_some())
            .collect();
        assert_eq!(failed.len(), 1, "round {round}: {first} / {second}");
        assert_code(failed[0], "CONFLICT");
        let fields = &failed[0]["errors"][0]["extensions"]["fields"];
        assert!(
            fields.get("email").is_some(),
            "round {round}: {}",
            failed[0]
        );
        assert!(
            fields.get("username").is_none(),
            "round {round}: {}",
            failed[0]
        );
    }
}

fn imported(username: &str) -> ImportedUser {
    ImportedUser {
        username: Some(username.into()),
        email: Some(format!("{username}@example.com")),
        password_hash: Some(
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
                .into(),
        ),
        first_name: None,
        last_name: None,
        phone: None,
        role: Role::Standard,
        created_by: None,
        unreadable: Vec::new(),
    }
}

/// Imports check names and phone as `createUser` does, name the row, and write nothing when
/// any row is invalid.
async fn imports_validate_like_create_user(app: TestApp) {
    // Registered first: once imported accounts exist, registrations are not owners.
    let owner = app.register("owner").await;
    let service = &app.server().service;
    // Nothing to import is no import: nothing audited.
    assert!(
        service
            .import_users(Vec::new())
            .await
            .expect("empty")
            .is_empty()
    );
    let imports = "SELECT count(*) FROM audit_log WHERE action = 'USERS_IMPORTED'";
    assert_eq!(app.count(imports).await, 0);
    let mut rows = vec![
        imported("import-ok"),
        imported("import-bad"),
        imported("import-bad-too"),
    ];
    rows[1].first_name = Some("x".repeat(101));
    rows[1].phone = Some("0\u{0}1".into());
    rows[2].email = Some("nope".into());
    let mut lone = imported("import-lone");
    (lone.username, lone.password_hash) = (None, None);
    rows.push(lone);
    let err = service
        .import_users(rows)
        .await
        .expect_err("a 101-character name and a NUL are refused");
    assert_eq!(err.code(), "BAD_USER_INPUT");
    let rollcall::error::AppError::BadInput(fields) = err else {
        unreachable!()
    };
    assert!(fields.contains_key("1.firstName"), "{fields:?}");
    assert!(fields.contains_key("1.phone"), "{fields:?}");
    assert!(
        fields.contains_key("2.email"),
        "every row at once: {fields:?}"
    );
    for left_out in ["3.username", "3.passwordHash"] {
        let code = fields.get(left_out).map(|error| error.code);
        assert_eq!(code, Some(FieldCode::Required), "{left_out}: {fields:?}");
    }

    // Once every row is valid: names in use by an account or an earlier row, and creators
    // that are no user, each named by its row.
    let mut rows = vec![imported("owner"), imported("twin"), imported("TWIN")];
    rows[2].email = Some("twin@example.com".into());
    let err = service.import_users(rows).await.expect_err("names in use");
    let rollcall::error::AppError::Conflict(fields) = err else {
        panic!("not CONFLICT: {err:?}");
    };
    let mut named: Vec<&str> = fields.keys().map(String::as_str).collect();
    named.sort_unstable();
    assert_eq!(
        named,
        ["0.email", "0.username", "2.email", "2.username"],
        "{fields:?}"
    );
    let mut row = imported("orphan");
    row.created_by = Some(uuid::Uuid::new_v4());
    let err = service
        .import_users(vec![row])
        .await
        .expect_err("no such creator");
    let rollcall::error::AppError::BadInput(fields) = err else {
        panic!("not BAD_USER_INPUT: {err:?}");
    };
    assert!(fields.contains_key("0.createdBy"), "{fields:?}");

    // A hash must parse, and its cost stay bounded: it is checked on every login attempt.
    for hash in [
        "$argon2id$not-a-hash",
        "$argon2id$v=19$m=4294967295,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        "$argon2id$v=19$m=19456,t=1000,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
    ] {
        let mut row = imported("import-hash");
        row.password_hash = Some(hash.into());
        let err = service.import_users(vec![row]).await.expect_err(hash);
        let rollcall::error::AppError::BadInput(fields) = err else {
            panic!("{hash}: not BAD_USER_INPUT");
        };
        assert!(fields.contains_key("0.passwordHash"), "{hash}: {fields:?}");
    }

    let mut rows = vec![imported("import-ok")];
    rows[0].last_name = Some("  Lovelace ".into());
    service
        .import_users(rows)
        .await
        .expect("a valid row imports");
    let body = app
        .gql(
            Some(&owner.access),
            "{ users(filter: {search: \"import\"}) { nodes { username lastName } } }",
            json!({}),
        )
        .await;
    // Trimmed like createUser's, and the refused batch left nothing behind.
    assert_eq!(
        body["data"]["users"]["nodes"],
        json!([{"username": "import-ok", "lastName": "Lovelace"}]),
        "{body}"
    );
}

/// A standard user cannot learn which ids exist by editing or deleting them: an existing
/// user and a made-up id get the same refusal.
async fn refusals_do_not_reveal_which_ids_exist(app: TestApp) {
    let owner = app.register("owner").await;
    let other = app.create_user(&owner, "someone", "STANDARD").await;
    let member = app.user_with_role(&owner, "member", "STANDARD").await;
    let missing = uuid::Uuid::new_v4().to_string();
    for id in [&other, &missing] {
        let body = app
            .update_user(&member, id, json!({"firstName": "X"}))
            .await;
        assert_code(&body, "FORBIDDEN");
        let body = app.delete_user(&member, id).await;
        assert_code(&body, "FORBIDDEN");
    }
    // Where the caller may manage users, a missing id is simply not found.
    assert_code(&app.delete_user(&owner, &missing).await, "NOT_FOUND");
}

/// The same edit sent many times at once changes the row once: one audit entry, and the
/// others answer with the row as it is.
async fn identical_edits_at_once_are_audited_once(app: TestApp) {
    let owner = app.register("owner").await;
    let bob = app.create_user(&owner, "bob", "STANDARD").await;
    for (round, input) in [json!({"disabled": true}), json!({"firstName": "Same"})]
        .into_iter()
        .enumerate()
    {
        let edits = (0..6).map(|_| app.update_user(&owner, &bob, input.clone()));
        for body in futures::future::join_all(edits).await {
            assert_eq!(body.get("errors"), None, "round {round}: {body}");
        }
        let entries = app
            .count("SELECT count(*) FROM audit_log WHERE action = 'USER_UPDATED'")
            .await;
        assert_eq!(entries, round as i64 + 1, "round {round}");
    }
}

backend_tests!(
    refusals_do_not_reveal_which_ids_exist,
    racing_email_changes_conflict_on_email,
    imports_validate_like_create_user,
    identical_edits_at_once_are_audited_once,
);

/// A statement that runs past `ROLLCALL_DB_TIMEOUT` is cancelled by PostgreSQL instead of
/// holding its request (and a pooled connection) indefinitely; the pool stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_statements_time_out() {
    use sea_orm::ConnectionTrait;

    let tweak = |settings: &mut rollcall::config::Settings| {
        settings.db_timeout = std::time::Duration::from_millis(500);
    };
    let Some(app) = TestApp::spawn_with(support::Backend::Postgres, tweak).await else {
        return;
    };
    let db = app.server().service.db();
    let started = std::time::Instant::now();
    let slow = db.conn().execute_unprepared("SELECT pg_sleep(5)").await;
    assert!(
        slow.is_err(),
        "a 5 s statement finished under a 500 ms timeout"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    db.conn()
        .execute_unprepared("SELECT 1")
        .await
        .expect("the pool still answers");
}

/// PostgreSQL's user-search index takes new users directly, not through GIN's pending list,
/// which every search would otherwise read in full until the next vacuum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_search_index_has_no_pending_list() {
    use sea_orm::{ConnectionTrait, Statement};

    let Some(app) = TestApp::spawn(support::Backend::Postgres).await else {
        return;
    };
    let db = app.database().await;
    let options = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT array_to_string(reloptions, ',') AS options FROM pg_class \
             WHERE relname = 'idx_users_search_text'",
        ))
        .await
        .expect("read the index options")
        .expect("the search index exists");
    let options: Option<String> = options.try_get("", "options").expect("options column");
    assert_eq!(options.as_deref(), Some("fastupdate=off"));
}

/// A search is planned for its term each time: after five runs of a prepared statement on a
/// connection, PostgreSQL may settle on one generic plan for every term, and for a common
/// term that plan collects and sorts every match. Here the server's one connection is asked
/// which plans its searches got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_searches_are_planned_for_their_terms() {
    use sea_orm::{ConnectionTrait, Statement};

    let Some(app) = TestApp::spawn_with(support::Backend::Postgres, |s| {
        s.db_max_connections = Some(1);
    })
    .await
    else {
        return;
    };
    let owner = app.register("owner").await;
    let search = "query($s: String, $f: Int) { users(first: $f, filter: {search: $s}) { \
                  totalCount nodes { id } } }";
    for term in [
        "own", "owner", "ner", "xyz", "exa", "example", "wne", "o", "ow", "qqq",
    ] {
        let page = app
            .gql(Some(&owner.access), search, json!({"s": term, "f": 5}))
            .await;
        support::assert_ok(&page);
    }
    let db = app.server().service.db().conn();
    let plans = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COALESCE(SUM(generic_plans), 0)::int8 AS generic, \
             COALESCE(SUM(custom_plans), 0)::int8 AS custom \
             FROM pg_prepared_statements WHERE statement LIKE '%LIKE%' \
             AND statement NOT LIKE '%pg_prepared_statements%'",
        ))
        .await
        .expect("read the plans")
        .expect("a row");
    let generic: i64 = plans.try_get("", "generic").expect("generic");
    let custom: i64 = plans.try_get("", "custom").expect("custom");
    assert_eq!(generic, 0, "{custom} custom plans");
    assert!(custom >= 20, "{custom} custom plans");
}

/// A request dropped while its transaction's `BEGIN` is on the wire (a client that
/// disconnects, the request timeout) leaves no pooled connection inside a transaction. If one
/// did, later requests' statements would run in it and hold its locks, and after their first
/// error every statement on that connection would fail until the server restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_abandoned_begin_leaves_no_connection_in_a_transaction() {
    use sea_orm::ConnectionTrait;

    let Some(app) = TestApp::spawn(support::Backend::Postgres).await else {
        return;
    };
    let db = app.server().service.db();
    for polls in 0..120 {
        let mut begin = std::pin::pin!(db.begin_write());
        for _ in 0..polls % 6 {
            if futures::poll!(begin.as_mut()).is_ready() {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    // Connections go back to the pool (sending any rollback queued for them) as they are used.
    for _ in 0..20 {
        db.conn()
            .execute_unprepared("SELECT 1")
            .await
            .expect("the pool answers");
    }
    // A rollback sent as a connection goes back may still be on its way.
    let stuck = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND state LIKE 'idle in transaction%'";
    support::eventually("no pooled connection inside a transaction", async || {
        app.count(stuck).await == 0
    })
    .await;
}

/// An import's creators stay users until it commits: one deleted while the import waits for
/// its row (the test's transaction holds the deletion open) is named as no user, not a
/// foreign-key failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_creator_deleted_during_an_import_is_named() {
    let Some(app) = TestApp::spawn(support::Backend::Postgres).await else {
        return;
    };
    let owner = app.register("owner").await;
    let creator = app.create_user(&owner, "creator", "ADMIN").await;
    let deletion = [format!("DELETE FROM users WHERE id = '{creator}'")];
    let mut row = imported("created");
    row.created_by = Some(creator.parse().expect("an id"));
    let import = app.server().service.import_users(vec![row]);
    let err = app
        .while_held(&deletion, 1, import)
        .await
        .expect_err("the creator is gone");
    let rollcall::error::AppError::BadInput(fields) = err else {
        panic!("not BAD_USER_INPUT: {err:?}");
    };
    assert!(fields.contains_key("0.createdBy"), "{fields:?}");
}
