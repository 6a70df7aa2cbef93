//! Roles and the rules around them: registration, createUser, visibility, updateUser,
//! deleteUser, setRole, validation, demo mode, pagination and the cost of `createdBy`.

mod support;

use std::collections::HashSet;

use futures::future::join_all;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use support::{
    Gql, LOGOUT_EVERYWHERE, PASSWORD, REVOKE_SESSION, Session, TestApp, assert_code,
    assert_field_codes, assert_ok, new_user,
};

const NO_SUCH_ID: &str = "00000000-0000-4000-8000-000000000000";

// ---------------------------------------------------------------------------------------------
// Helpers

/// `totalCount` of `users` under `filter`, as `session`.
async fn count(app: &TestApp, session: &Session, filter: Value) -> i64 {
    let body = app
        .users(session, json!({ "first": 0, "filter": filter }))
        .await;
    assert_ok(&body);
    body["data"]["users"]["totalCount"]
        .as_i64()
        .unwrap_or_else(|| panic!("totalCount missing: {body}"))
}

/// Usernames of every user matching `filter`, in listing order.
async fn usernames(app: &TestApp, session: &Session, filter: Value) -> Vec<String> {
    let body = app
        .users(session, json!({ "first": 100, "filter": filter }))
        .await;
    assert_ok(&body);
    body["data"]["users"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("nodes missing: {body}"))
        .iter()
        .map(|n| n["username"].as_str().expect("username").to_owned())
        .collect()
}

/// `extensions.fields` of the first error.
fn fields(body: &Value) -> &Value {
    &body["errors"][0]["extensions"]["fields"]
}

/// Asserts `extensions.fields` of the first error names each of `names`.
#[track_caller]
fn assert_fields(body: &Value, names: &[&str]) {
    let fields = fields(body)
        .as_object()
        .unwrap_or_else(|| panic!("no extensions.fields: {body}"));
    for name in names {
        assert!(fields.contains_key(*name), "fields lack {name}: {body}");
    }
}

/// Asserts the response failed with `code` and answered no `data`.
#[track_caller]
fn assert_refused(body: &Value, code: &str) {
    assert_code(body, code);
    assert!(body["data"].is_null(), "refused but data returned: {body}");
}

/// Creates a user through the service layer, as the operator's CLI does (it works where
/// nobody can register).
async fn create_via_service(app: &TestApp, username: &str, role: rollcall::db::Role) -> String {
    let input = rollcall::service::NewUser {
        username: username.into(),
        email: format!("{username}@example.com"),
        password: PASSWORD.into(),
        ..Default::default()
    };
    let user = app
        .server()
        .service
        .create_user(None, input, role, None)
        .await;
    user.expect("service creates the user").id.to_string()
}

/// Creates the owner through the service layer and logs in as it.
async fn owner_via_service(app: &TestApp) -> Session {
    create_via_service(app, "owner", rollcall::db::Role::Owner).await;
    app.login_as("owner").await
}

// ---------------------------------------------------------------------------------------------
// Registration

async fn first_registration_is_owner_then_standard(app: TestApp) {
    let alice = app.register("alice").await;
    assert_eq!(alice.role, "OWNER");
    let bob = app.register("bob").await;
    assert_eq!(bob.role, "STANDARD");
    assert_eq!(app.me(&alice.access).await["data"]["me"]["role"], "OWNER");
    assert_eq!(app.me(&bob.access).await["data"]["me"]["role"], "STANDARD");

    // RegisterInput has no role: an inline `role` fails validation and creates nobody.
    let body = app
        .gql(
            None,
            &format!(
                r#"mutation {{ register(input: {{ username: "carol", email: "carol@example.com", password: "{PASSWORD}", role: OWNER }}) {{ user {{ role }} }} }}"#
            ),
            json!({}),
        )
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    assert!(body["data"].is_null(), "{body}");
    // Sent through variables, `role` is refused the same way and creates nobody either.
    let body = app
        .gql(
            None,
            support::REGISTER,
            json!({"input": {"username": "dave", "email": "dave@example.com", "password": PASSWORD, "role": "OWNER"}}),
        )
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    assert!(body["data"].is_null(), "{body}");
    assert_code(&app.login("dave", PASSWORD).await, "UNAUTHENTICATED");
    assert_eq!(count(&app, &alice, json!({ "role": "OWNER" })).await, 1);
    // The same registration without `role` works.
    let carol = app.register("carol").await;
    assert_eq!(carol.role, "STANDARD");
}

async fn exactly_one_owner_when_registrations_race(app: TestApp) {
    let names: Vec<String> = (0..20).map(|i| format!("racer{i:02}")).collect();
    let sessions = join_all(names.iter().map(|name| app.register(name))).await;
    let owners: Vec<&Session> = sessions.iter().filter(|s| s.role == "OWNER").collect();
    assert_eq!(owners.len(), 1, "register payloads: {sessions:?}");
    let owner = owners[0];

    // Ask the database, not the payloads: log every user in and read its role.
    let mut owner_names = Vec::new();
    for name in &names {
        let session = app.login_as(name).await;
        let body = app.me(&session.access).await;
        assert_ok(&body);
        if body["data"]["me"]["role"] == "OWNER" {
            owner_names.push(name.clone());
        } else {
            assert_eq!(body["data"]["me"]["role"], "STANDARD", "{body}");
        }
    }
    assert_eq!(owner_names.len(), 1, "owners: {owner_names:?}");
    assert_eq!(count(&app, owner, json!({ "role": "OWNER" })).await, 1);
    assert_eq!(count(&app, owner, json!({})).await, 20);
}

async fn closed_registration_still_allows_create_user(app: TestApp) {
    let body = app.server_info().await;
    assert_eq!(
        body["data"]["serverInfo"]["registrationOpen"], false,
        "{body}"
    );
    let body = app.register_raw("alice", "alice@example.com").await;
    assert_code(&body, "FORBIDDEN");
    assert_code(&app.login("alice", PASSWORD).await, "UNAUTHENTICATED");

    let owner = owner_via_service(&app).await;
    let body = app.create_user_raw(&owner, new_user("bob", "ADMIN")).await;
    assert_ok(&body);
    assert_eq!(body["data"]["createUser"]["role"], "ADMIN");
    let bob = app.login_as("bob").await;
    assert_eq!(bob.role, "ADMIN");
    let body = app
        .create_user_raw(&bob, new_user("carol", "STANDARD"))
        .await;
    assert_ok(&body);
}

// ---------------------------------------------------------------------------------------------
// createUser

async fn create_user_by_role(app: TestApp) {
    let owner = app.register("owner").await;

    let body = app
        .create_user_raw(&owner, new_user("admin1", "ADMIN"))
        .await;
    assert_ok(&body);
    assert_eq!(body["data"]["createUser"]["role"], "ADMIN");
    assert_eq!(body["data"]["createUser"]["createdBy"]["id"], owner.id);
    let body = app
        .create_user_raw(&owner, new_user("std1", "STANDARD"))
        .await;
    assert_ok(&body);
    assert_eq!(body["data"]["createUser"]["role"], "STANDARD");
    let body = app
        .create_user_raw(&owner, new_user("owner2", "OWNER"))
        .await;
    assert_code(&body, "FORBIDDEN");

    let admin = app.login_as("admin1").await;
    let body = app
        .create_user_raw(&admin, new_user("std2", "STANDARD"))
        .await;
    assert_ok(&body);
    assert_eq!(body["data"]["createUser"]["createdBy"]["id"], admin.id);
    let std2 = body["data"]["createUser"]["id"]
        .as_str()
        .expect("std2 id")
        .to_owned();
    let body = app
        .create_user_raw(&admin, new_user("admin2", "ADMIN"))
        .await;
    assert_code(&body, "FORBIDDEN");
    let body = app
        .create_user_raw(&admin, new_user("owner3", "OWNER"))
        .await;
    assert_code(&body, "FORBIDDEN");

    let standard = app.login_as("std1").await;
    let body = app
        .create_user_raw(&standard, new_user("std3", "STANDARD"))
        .await;
    assert_code(&body, "FORBIDDEN");

    // The refused ones do not exist; createdBy reads back as the creator.
    for name in ["owner2", "admin2", "owner3", "std3"] {
        let body = app.user_by_name(&owner, name).await;
        assert_ok(&body);
        assert!(body["data"]["user"].is_null(), "{name} exists: {body}");
    }
    let body = app
        .gql(
            Some(&owner.access),
            "query($id: ID) { user(id: $id) { createdBy { id username } } }",
            json!({ "id": std2 }),
        )
        .await;
    assert_ok(&body);
    assert_eq!(body["data"]["user"]["createdBy"]["id"], admin.id);
    assert_eq!(body["data"]["user"]["createdBy"]["username"], "admin1");
    let body = app
        .gql(
            Some(&owner.access),
            "{ me { createdBy { id } } }",
            json!({}),
        )
        .await;
    assert_ok(&body);
    assert!(body["data"]["me"]["createdBy"].is_null(), "{body}");
}

// ---------------------------------------------------------------------------------------------
// Visibility

async fn visibility_of_users_and_private_fields(app: TestApp) {
    let owner = app.register("owner").await;
    let body = app
        .create_user_raw(
            &owner,
            json!({
                "username": "admin1", "email": "admin1@example.com", "password": PASSWORD,
                "role": "ADMIN", "firstName": "Ada", "lastName": "Min", "phone": "+1 555 0100",
            }),
        )
        .await;
    assert_ok(&body);
    let admin = app.login_as("admin1").await;
    let body = app
        .create_user_raw(
            &admin,
            json!({
                "username": "std1", "email": "std1@example.com", "password": PASSWORD,
                "firstName": "Stan", "lastName": "Dard", "phone": "+1 555 0101",
            }),
        )
        .await;
    assert_ok(&body);
    let standard = app.login_as("std1").await;
    assert_eq!(standard.role, "STANDARD");

    // A standard user: me and itself, by id and by username.
    let body = app.me(&standard.access).await;
    assert_ok(&body);
    assert_eq!(body["data"]["me"]["username"], "std1");
    assert_eq!(body["data"]["me"]["email"], "std1@example.com");
    let body = app.user_by_id(&standard, &standard.id).await;
    assert_ok(&body);
    assert_eq!(body["data"]["user"]["id"], standard.id);
    assert_eq!(body["data"]["user"]["firstName"], "Stan");
    let body = app.user_by_name(&standard, "std1").await;
    assert_ok(&body);
    assert_eq!(body["data"]["user"]["id"], standard.id);

    // ... but not others, nor the listing.
    let body = app.user_by_id(&standard, &admin.id).await;
    assert_code(&body, "FORBIDDEN");
    let body = app.user_by_id(&standard, NO_SUCH_ID).await;
    assert_code(&body, "FORBIDDEN");
    let body = app.users(&standard, json!({})).await;
    assert_code(&body, "FORBIDDEN");
    let body = app.users(&admin, json!({})).await;
    assert_ok(&body);

    // Its creator: id, username and role, nothing private.
    let body = app
        .gql(
            Some(&standard.access),
            "{ me { createdBy { id username role email firstName lastName phone lastLoginAt updatedAt } } }",
            json!({}),
        )
        .await;
    assert_ok(&body);
    let creator = &body["data"]["me"]["createdBy"];
    assert_eq!(creator["id"], admin.id, "{body}");
    assert_eq!(creator["username"], "admin1");
    assert_eq!(creator["role"], "ADMIN");
    // When those changed tells of them too.
    for field in [
        "email",
        "firstName",
        "lastName",
        "phone",
        "lastLoginAt",
        "updatedAt",
    ] {
        assert!(creator[field].is_null(), "{field} leaked: {body}");
    }
    // The owner, who manages that admin, sees when they signed in.
    let body = app
        .gql(
            Some(&owner.access),
            "query($id: ID) { user(id: $id) { lastLoginAt } }",
            json!({"id": admin.id}),
        )
        .await;
    assert!(body["data"]["user"]["lastLoginAt"].is_string(), "{body}");

    // Admins and the owner see other users' private fields.
    let body = app.user_by_id(&admin, &standard.id).await;
    assert_ok(&body);
    let seen = &body["data"]["user"];
    assert_eq!(seen["email"], "std1@example.com", "{body}");
    assert_eq!(seen["firstName"], "Stan");
    assert_eq!(seen["lastName"], "Dard");
    assert_eq!(seen["phone"], "+1 555 0101");
    let body = app.user_by_id(&owner, &admin.id).await;
    assert_ok(&body);
    let seen = &body["data"]["user"];
    assert_eq!(seen["email"], "admin1@example.com", "{body}");
    assert_eq!(seen["firstName"], "Ada");
    assert_eq!(seen["lastName"], "Min");
    assert_eq!(seen["phone"], "+1 555 0100");
    let body = app
        .gql(
            Some(&admin.access),
            "{ users { nodes { username email } } }",
            json!({}),
        )
        .await;
    assert_ok(&body);
    let nodes = body["data"]["users"]["nodes"].as_array().expect("nodes");
    assert!(
        nodes.iter().all(|n| n["email"].is_string()),
        "admin sees every email: {body}"
    );

    // user(): exactly one argument; an unknown id is null.
    let body = app
        .gql(
            Some(&admin.access),
            "query($id: ID) { user(id: $id, username: \"std1\") { id } }",
            json!({ "id": standard.id }),
        )
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    let body = app
        .gql(Some(&admin.access), "{ user { id } }", json!({}))
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    let body = app.user_by_id(&admin, NO_SUCH_ID).await;
    assert_ok(&body);
    assert!(body["data"]["user"].is_null(), "{body}");
    let body = app.user_by_name(&admin, "STD1").await;
    assert_ok(&body);
    assert_eq!(body["data"]["user"]["id"], standard.id);

    // By email too, and either as a login takes it: trimmed, in any case; a name of the other
    // kind finds nobody.
    let by_email = "query($e: String) { user(email: $e) { id } }";
    let by_name = "query($u: String) { user(username: $u) { id } }";
    for (query, variables) in [
        (by_email, json!({"e": " STD1@Example.COM "})),
        (by_name, json!({"u": " std1 "})),
    ] {
        let body = app.gql(Some(&admin.access), query, variables).await;
        assert_eq!(body["data"]["user"]["id"], standard.id, "{body}");
    }
    for (query, variables) in [
        (by_email, json!({"e": "std1"})),
        (by_email, json!({"e": "nobody@example.com"})),
        (by_name, json!({"u": "std1@example.com"})),
    ] {
        let body = app.gql(Some(&admin.access), query, variables).await;
        assert_ok(&body);
        assert!(body["data"]["user"].is_null(), "{body}");
    }
    // A standard user finds themselves by email; anyone else's, or nobody's, is refused alike.
    let body = app
        .gql(
            Some(&standard.access),
            by_email,
            json!({"e": "std1@example.com"}),
        )
        .await;
    assert_eq!(body["data"]["user"]["id"], standard.id, "{body}");
    for email in ["admin1@example.com", "nobody@example.com"] {
        let body = app
            .gql(Some(&standard.access), by_email, json!({"e": email}))
            .await;
        assert_code(&body, "FORBIDDEN");
    }
}

// ---------------------------------------------------------------------------------------------
// updateUser

async fn update_own_profile_and_credentials(app: TestApp) {
    let _owner = app.register("owner").await;
    let bob = app.register("bob").await;

    let body = app
        .update_user(
            &bob,
            &bob.id,
            json!({ "firstName": "Bob", "lastName": "Builder", "phone": "+44 20 7946 0000" }),
        )
        .await;
    assert_ok(&body);
    let updated = &body["data"]["updateUser"];
    assert_eq!(updated["firstName"], "Bob");
    assert_eq!(updated["lastName"], "Builder");
    assert_eq!(updated["phone"], "+44 20 7946 0000");

    // Password and email need the current password.
    let new_password = "a brand new password";
    let body = app
        .update_user(&bob, &bob.id, json!({ "password": new_password }))
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_field_codes(&body, json!({"currentPassword": "REQUIRED"}));
    let body = app
        .update_user(&bob, &bob.id, json!({ "email": "bob2@example.com" }))
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_field_codes(&body, json!({"currentPassword": "REQUIRED"}));
    let body = app
        .update_user(
            &bob,
            &bob.id,
            json!({ "password": new_password, "currentPassword": "not the password" }),
        )
        .await;
    assert_refused(&body, "BAD_USER_INPUT");
    assert_field_codes(&body, json!({"currentPassword": "INCORRECT"}));
    let body = app
        .update_user(
            &bob,
            &bob.id,
            json!({ "email": "bob2@example.com", "currentPassword": "not the password" }),
        )
        .await;
    assert_refused(&body, "BAD_USER_INPUT");
    assert_field_codes(&body, json!({"currentPassword": "INCORRECT"}));
    assert_eq!(
        app.me(&bob.access).await["data"]["me"]["email"],
        "bob@example.com"
    );
    assert_code(&app.login("bob", new_password).await, "UNAUTHENTICATED");

    let body = app
        .update_user(
            &bob,
            &bob.id,
            json!({ "email": "bob2@example.com", "currentPassword": PASSWORD }),
        )
        .await;
    assert_ok(&body);
    assert_eq!(body["data"]["updateUser"]["email"], "bob2@example.com");
    let body = app
        .update_user(
            &bob,
            &bob.id,
            json!({ "password": new_password, "currentPassword": PASSWORD }),
        )
        .await;
    assert_ok(&body);
    assert_code(&app.login("bob", PASSWORD).await, "UNAUTHENTICATED");
    let body = app.login("bob2@example.com", new_password).await;
    assert_ok(&body);
}

/// `currentPassword` and `verification` are checked where the edit or creation needs them, and
/// are no part of it elsewhere: a form that always sends its password box, filled in or left
/// blank, is not refused for it. Past the step-up window a blank verification is missing.
async fn passwords_are_checked_only_where_needed(app: TestApp) {
    const EDIT: &str = "mutation($id: ID!, $input: UpdateUserInput!, $v: VerificationInput) { updateUser(id: $id, input: $input, verification: $v) { firstName } }";
    const CREATE: &str = "mutation($input: CreateUserInput!, $v: VerificationInput) { createUser(input: $input, verification: $v) { id } }";
    let owner = app.register("owner").await;
    let bob = app.user_with_role(&owner, "bob", "STANDARD").await;
    let wrong = "not the password";

    for current in ["", wrong] {
        let edit = json!({"phone": "555 1234", "currentPassword": current});
        assert_ok(&app.update_user(&bob, &bob.id, edit).await);
    }
    // A form's blank new-password box is no new password either.
    let edit = json!({"phone": "555 4321", "password": "", "currentPassword": ""});
    assert_ok(&app.update_user(&bob, &bob.id, edit).await);
    assert_ok(&app.me(&bob.access).await);
    let edit = json!({"email": "bob2@example.com", "currentPassword": ""});
    let body = app.update_user(&bob, &bob.id, edit).await;
    assert_field_codes(&body, json!({"currentPassword": "REQUIRED"}));

    let edit = |v: Value| json!({"id": bob.id, "input": {"firstName": "Robert"}, "v": v});
    let create = |name: &str, v: Value| json!({"input": new_user(name, "STANDARD"), "v": v});
    for v in [
        json!({"password": wrong}),
        json!({"password": ""}),
        json!({}),
    ] {
        let body = app.gql(Some(&owner.access), EDIT, edit(v.clone())).await;
        assert_eq!(
            body["data"]["updateUser"]["firstName"], "Robert",
            "{v}: {body}"
        );
    }
    let body = app
        .gql(
            Some(&owner.access),
            CREATE,
            create("carol", json!({"password": wrong})),
        )
        .await;
    assert_ok(&body);

    // Needed but within the window (the login just now): a blank verification is as none.
    let set = |v: Value| json!({"id": bob.id, "role": "ADMIN", "v": v});
    let set_role = "mutation($id: ID!, $role: Role!, $v: VerificationInput) { setRole(id: $id, role: $role, verification: $v) { role } }";
    let body = app
        .gql(Some(&owner.access), set_role, set(json!({"password": ""})))
        .await;
    assert_eq!(body["data"]["setRole"]["role"], "ADMIN", "{body}");
}

async fn update_other_users_by_role(app: TestApp) {
    let owner = app.register("owner").await;
    let admin = app.user_with_role(&owner, "admin1", "ADMIN").await;
    let admin2_id = app.create_user(&owner, "admin2", "ADMIN").await;
    let std1 = app.user_with_role(&owner, "std1", "STANDARD").await;
    let std2_id = app.create_user(&owner, "std2", "STANDARD").await;

    // ADMIN edits STANDARD, including a new password and disabled.
    let body = app
        .update_user(&admin, &std2_id, json!({ "firstName": "Second" }))
        .await;
    assert_ok(&body);
    assert_eq!(body["data"]["updateUser"]["firstName"], "Second");
    let reset = "reset by the admin";
    let body = app
        .update_user(&admin, &std2_id, json!({ "password": reset }))
        .await;
    assert_ok(&body);
    assert_ok(&app.login("std2", reset).await);
    let body = app
        .update_user(&admin, &std2_id, json!({ "disabled": true }))
        .await;
    assert_ok(&body);
    assert_eq!(body["data"]["updateUser"]["disabled"], true);
    assert_code(&app.login("std2", reset).await, "UNAUTHENTICATED");
    let body = app
        .update_user(&admin, &std2_id, json!({ "disabled": false }))
        .await;
    assert_ok(&body);
    assert_ok(&app.login("std2", reset).await);

    // ... but not another ADMIN nor the OWNER.
    let body = app
        .update_user(&admin, &admin2_id, json!({ "firstName": "Nope" }))
        .await;
    assert_code(&body, "FORBIDDEN");
    let body = app
        .update_user(&admin, &admin2_id, json!({ "disabled": true }))
        .await;
    assert_code(&body, "FORBIDDEN");
    let body = app
        .update_user(&admin, &owner.id, json!({ "firstName": "Nope" }))
        .await;
    assert_code(&body, "FORBIDDEN");
    let body = app
        .update_user(&admin, &owner.id, json!({ "disabled": true }))
        .await;
    assert_code(&body, "FORBIDDEN");

    // OWNER edits ADMIN (and STANDARD).
    let body = app
        .update_user(
            &owner,
            &admin2_id,
            json!({ "firstName": "Edited", "disabled": true }),
        )
        .await;
    assert_ok(&body);
    assert_eq!(body["data"]["updateUser"]["firstName"], "Edited");
    assert_eq!(body["data"]["updateUser"]["disabled"], true);
    let body = app
        .update_user(&owner, &std1.id, json!({ "lastName": "Edited" }))
        .await;
    assert_ok(&body);

    // STANDARD edits nobody else.
    let body = app
        .update_user(&std1, &std2_id, json!({ "firstName": "Nope" }))
        .await;
    assert_code(&body, "FORBIDDEN");
    let body = app
        .update_user(&std1, &admin.id, json!({ "firstName": "Nope" }))
        .await;
    assert_code(&body, "FORBIDDEN");
    let body = app
        .update_user(&std1, &std1.id, json!({ "firstName": "Mine" }))
        .await;
    assert_ok(&body);

    // The refused edits changed nothing.
    let body = app.user_by_id(&owner, &std2_id).await;
    assert_eq!(body["data"]["user"]["firstName"], "Second", "{body}");
    let body = app.user_by_id(&owner, &owner.id).await;
    assert!(body["data"]["user"]["firstName"].is_null(), "{body}");

    // A missing target is NOT_FOUND.
    let body = app
        .update_user(&owner, NO_SUCH_ID, json!({ "firstName": "Ghost" }))
        .await;
    assert_code(&body, "NOT_FOUND");
}

async fn nobody_disables_themselves(app: TestApp) {
    let owner = app.register("owner").await;
    let admin = app.user_with_role(&owner, "admin1", "ADMIN").await;
    let standard = app.user_with_role(&owner, "std1", "STANDARD").await;

    for session in [&owner, &admin, &standard] {
        let body = app
            .update_user(session, &session.id, json!({ "disabled": true }))
            .await;
        assert_code(&body, "FORBIDDEN");
        let body = app.me(&session.access).await;
        assert_ok(&body);
        // Editing oneself otherwise is fine.
        let body = app
            .update_user(session, &session.id, json!({ "firstName": "Self" }))
            .await;
        assert_ok(&body);
        assert_eq!(body["data"]["updateUser"]["disabled"], false);
    }
    // Disabling someone else (whom one manages) works.
    let body = app
        .update_user(&owner, &admin.id, json!({ "disabled": true }))
        .await;
    assert_ok(&body);
    assert_eq!(body["data"]["updateUser"]["disabled"], true);
}

// ---------------------------------------------------------------------------------------------
// deleteUser

async fn delete_user_by_role(app: TestApp) {
    let owner = app.register("owner").await;
    let admin = app.user_with_role(&owner, "admin1", "ADMIN").await;
    let admin2_id = app.create_user(&owner, "admin2", "ADMIN").await;
    let admin3_id = app.create_user(&owner, "admin3", "ADMIN").await;
    let std1_id = app.create_user(&owner, "std1", "STANDARD").await;
    let std2_id = app.create_user(&owner, "std2", "STANDARD").await;
    let std3 = app.user_with_role(&owner, "std3", "STANDARD").await;
    let std4_id = app.create_user(&owner, "std4", "STANDARD").await;

    // ADMIN deletes STANDARD, not ADMIN nor OWNER.
    let body = app.delete_user(&admin, &std1_id).await;
    assert_ok(&body);
    assert_eq!(body["data"]["deleteUser"], std1_id);
    let body = app.delete_user(&admin, &admin2_id).await;
    assert_code(&body, "FORBIDDEN");
    let body = app.delete_user(&admin, &owner.id).await;
    assert_code(&body, "FORBIDDEN");

    // STANDARD deletes nobody else.
    let body = app.delete_user(&std3, &std4_id).await;
    assert_code(&body, "FORBIDDEN");

    // OWNER deletes ADMIN and STANDARD.
    let body = app.delete_user(&owner, &admin2_id).await;
    assert_ok(&body);
    assert_eq!(body["data"]["deleteUser"], admin2_id);
    let body = app.delete_user(&owner, &std2_id).await;
    assert_ok(&body);
    assert_eq!(body["data"]["deleteUser"], std2_id);

    // Gone, and a second delete is NOT_FOUND.
    for id in [&std1_id, &admin2_id, &std2_id] {
        let body = app.user_by_id(&owner, id).await;
        assert_ok(&body);
        assert!(body["data"]["user"].is_null(), "{id} still exists: {body}");
    }
    let body = app.delete_user(&owner, &std2_id).await;
    assert_code(&body, "NOT_FOUND");
    let body = app.delete_user(&owner, NO_SUCH_ID).await;
    assert_code(&body, "NOT_FOUND");

    // STANDARD and ADMIN may delete themselves.
    let body = app.delete_user(&std3, &std3.id).await;
    assert_ok(&body);
    assert_eq!(body["data"]["deleteUser"], std3.id);
    let body = app.delete_user(&admin, &admin.id).await;
    assert_ok(&body);
    assert_eq!(body["data"]["deleteUser"], admin.id);
    assert_code(&app.login("admin1", PASSWORD).await, "UNAUTHENTICATED");

    // The OWNER may not, until it hands ownership over.
    let body = app.delete_user(&owner, &owner.id).await;
    assert_code(&body, "FORBIDDEN");
    assert_ok(&app.me(&owner.access).await);
    let body = app.set_role(&owner, &admin3_id, "OWNER").await;
    assert_ok(&body);
    let old_owner = app.login_as("owner").await;
    assert_eq!(old_owner.role, "ADMIN");
    let body = app.delete_user(&old_owner, &old_owner.id).await;
    assert_ok(&body);
    assert_eq!(body["data"]["deleteUser"], owner.id);
    let new_owner = app.login_as("admin3").await;
    assert_eq!(new_owner.role, "OWNER");
    let body = app.user_by_id(&new_owner, &owner.id).await;
    assert_ok(&body);
    assert!(body["data"]["user"].is_null(), "{body}");
    let body = app.delete_user(&new_owner, &new_owner.id).await;
    assert_code(&body, "FORBIDDEN");
}

// ---------------------------------------------------------------------------------------------
// setRole

async fn set_role_rules_and_ownership_transfer(app: TestApp) {
    let owner = app.register("owner").await;
    let admin = app.user_with_role(&owner, "admin1", "ADMIN").await;
    let std1 = app.user_with_role(&owner, "std1", "STANDARD").await;
    let std2_id = app.create_user(&owner, "std2", "STANDARD").await;

    // Only the owner.
    let body = app.set_role(&admin, &std2_id, "ADMIN").await;
    assert_code(&body, "FORBIDDEN");
    let body = app.set_role(&admin, &admin.id, "OWNER").await;
    assert_code(&body, "FORBIDDEN");
    let body = app.set_role(&std1, &std1.id, "ADMIN").await;
    assert_code(&body, "FORBIDDEN");
    // Never on itself.
    for role in ["ADMIN", "STANDARD", "OWNER"] {
        let body = app.set_role(&owner, &owner.id, role).await;
        assert_code(&body, "FORBIDDEN");
    }
    assert_eq!(app.me(&owner.access).await["data"]["me"]["role"], "OWNER");
    let body = app.user_by_id(&owner, &std2_id).await;
    assert_eq!(body["data"]["user"]["role"], "STANDARD", "{body}");

    // Promote and demote.
    let body = app.set_role(&owner, &std2_id, "ADMIN").await;
    assert_ok(&body);
    assert_eq!(body["data"]["setRole"]["role"], "ADMIN");
    let std2 = app.login_as("std2").await;
    assert_eq!(std2.role, "ADMIN");
    assert_ok(&app.users(&std2, json!({})).await);
    let body = app.set_role(&owner, &std2_id, "STANDARD").await;
    assert_ok(&body);
    assert_eq!(body["data"]["setRole"]["role"], "STANDARD");
    let body = app.set_role(&owner, NO_SUCH_ID, "ADMIN").await;
    assert_code(&body, "NOT_FOUND");

    // Transfer: the target becomes OWNER, the caller ADMIN, and there is still one owner.
    let body = app.set_role(&owner, &admin.id, "OWNER").await;
    assert_ok(&body);
    assert_eq!(body["data"]["setRole"]["role"], "OWNER");
    let new_owner = app.login_as("admin1").await;
    assert_eq!(new_owner.role, "OWNER");
    let old_owner = app.login_as("owner").await;
    assert_eq!(old_owner.role, "ADMIN");
    assert_eq!(count(&app, &new_owner, json!({ "role": "OWNER" })).await, 1);
    assert_eq!(
        usernames(&app, &new_owner, json!({ "role": "OWNER" })).await,
        ["admin1"]
    );
    // The new owner has the owner's powers; the old one has lost them.
    let body = app.set_role(&old_owner, &std1.id, "ADMIN").await;
    assert_code(&body, "FORBIDDEN");
    let body = app.set_role(&new_owner, &std1.id, "ADMIN").await;
    assert_ok(&body);
    assert_eq!(count(&app, &new_owner, json!({ "role": "OWNER" })).await, 1);
}

// ---------------------------------------------------------------------------------------------
// Validation

async fn validation_lists_every_field(app: TestApp) {
    let body = app
        .gql(
            None,
            support::REGISTER,
            json!({"input": {
                "username": "a!",
                "email": "not an email",
                "password": "short",
                "firstName": "x".repeat(101),
                "phone": "+1 2",
            }}),
        )
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_field_codes(
        &body,
        json!({"username": "LENGTH", "email": "FORMAT", "password": "LENGTH", "firstName": "LENGTH", "phone": "LENGTH"}),
    );
    let body = app
        .gql(
            None,
            support::REGISTER,
            json!({"input": {
                "username": "a!b", "email": "alice@example.com", "password": "password1",
                "phone": "call me",
            }}),
        )
        .await;
    assert_field_codes(
        &body,
        json!({"username": "FORMAT", "password": "WEAK_PASSWORD", "phone": "FORMAT"}),
    );
    let body = app
        .gql(
            None,
            support::REGISTER,
            json!({"input": {
                "username": "alice", "email": "alice@example.com", "password": "alice's own secret",
            }}),
        )
        .await;
    assert_field_codes(&body, json!({"password": "PERSONAL_PASSWORD"}));
    // Judged with the other fields, not after they are put right: against the email as it
    // would be stored, though the phone is invalid.
    let body = app
        .gql(
            None,
            support::REGISTER,
            json!({"input": {
                "username": "zed_c", "email": "\tcarol.b@example.com",
                "password": "carol.b sails far away", "phone": "abc",
            }}),
        )
        .await;
    assert_field_codes(
        &body,
        json!({"password": "PERSONAL_PASSWORD", "phone": "FORMAT"}),
    );
    // 100 characters is fine.
    let body = app
        .gql(
            None,
            support::REGISTER,
            json!({"input": {
                "username": "alice", "email": "alice@example.com", "password": PASSWORD,
                "firstName": "x".repeat(100),
            }}),
        )
        .await;
    assert_ok(&body);

    // Username and email both taken (email in another case): CONFLICT naming both.
    let body = app.register_raw("alice", "ALICE@Example.COM").await;
    assert_code(&body, "CONFLICT");
    assert_field_codes(&body, json!({"username": "TAKEN", "email": "TAKEN"}));
    let body = app.register_raw("ALICE", "other@example.com").await;
    assert_code(&body, "CONFLICT");
    assert_fields(&body, &["username"]);
    let body = app.register_raw("alice2", "Alice@example.com").await;
    assert_code(&body, "CONFLICT");
    assert_fields(&body, &["email"]);
    let bob = app.register("bob").await;
    assert_eq!(bob.role, "STANDARD");
    // An edit's password is judged against the email it sends, though that one is invalid.
    let body = app
        .gql(
            Some(&bob.access),
            support::UPDATE_USER,
            json!({"id": bob.id, "input": {
                "email": "robert.b@bad", "password": "robert.b sails far away",
                "currentPassword": PASSWORD,
            }}),
        )
        .await;
    assert_field_codes(
        &body,
        json!({"email": "FORMAT", "password": "PERSONAL_PASSWORD"}),
    );

    // A refused nullable root field is there, as null, beside its error.
    let lookup = "query($id: ID, $username: String) { user(id: $id, username: $username) { id } serverInfo { demo } }";
    let both = app
        .gql(
            Some(&bob.access),
            lookup,
            json!({"id": bob.id, "username": "bob"}),
        )
        .await;
    assert_field_codes(
        &both,
        json!({"id": "NOT_ALLOWED", "username": "NOT_ALLOWED"}),
    );
    assert!(both["data"]["user"].is_null(), "{both}");
    assert!(both["data"].get("user").is_some(), "user missing: {both}");
    assert_eq!(both["data"]["serverInfo"]["demo"], false, "{both}");
    let neither = app.gql(Some(&bob.access), lookup, json!({})).await;
    assert_field_codes(
        &neither,
        json!({"id": "REQUIRED", "username": "REQUIRED", "email": "REQUIRED"}),
    );
}

async fn nul_in_input_is_bad_input(app: TestApp) {
    let body = app.register_raw("bad\u{0}name", "nul@example.com").await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_fields(&body, &["username"]);
    // The same name without NUL registers; a NUL in a login is refused before any lookup.
    let body = app.register_raw("badname", "nul@example.com").await;
    assert_ok(&body);
    let body = app.login("bad\u{0}name", PASSWORD).await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_fields(&body, &["login"]);
    // 318 bytes as sent, over 3,000 once NFKC spells each character out: refused too.
    let body = app.login(&"\u{FDFA}".repeat(106), PASSWORD).await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_fields(&body, &["login"]);
}

async fn password_length_limits(app: TestApp) {
    let too_long = "p".repeat(129);
    let body = app
        .gql(
            None,
            support::REGISTER,
            json!({"input": {"username": "alice", "email": "alice@example.com", "password": too_long}}),
        )
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_fields(&body, &["password"]);
    let seven = "p".repeat(7);
    let body = app
        .gql(
            None,
            support::REGISTER,
            json!({"input": {"username": "alice", "email": "alice@example.com", "password": seven}}),
        )
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_fields(&body, &["password"]);

    // 128 characters, strong enough for the policy.
    let longest = format!("{}abc", "x7!qZ".repeat(25));
    let body = app
        .gql(
            None,
            support::REGISTER,
            json!({"input": {"username": "alice", "email": "alice@example.com", "password": longest}}),
        )
        .await;
    assert_ok(&body);
    assert_ok(&app.login("alice", &longest).await);
    // Every character counts: the password is not truncated.
    assert_code(
        &app.login("alice", &format!("{}abd", "x7!qZ".repeat(25)))
            .await,
        "UNAUTHENTICATED",
    );
    assert_code(
        &app.login("alice", &longest[..127]).await,
        "UNAUTHENTICATED",
    );
}

// ---------------------------------------------------------------------------------------------
// Demo mode

async fn demo_mode_is_read_only(app: TestApp) {
    let owner = owner_via_service(&app).await;
    let target = create_via_service(&app, "std1", rollcall::db::Role::Standard).await;

    let body = app.server_info().await;
    assert_eq!(body["data"]["serverInfo"]["demo"], true, "{body}");
    // A sign-up form that follows `registrationOpen` does not show.
    assert_eq!(
        body["data"]["serverInfo"]["registrationOpen"], false,
        "{body}"
    );

    let body = app.register_raw("alice", "alice@example.com").await;
    assert_code(&body, "FORBIDDEN");
    let body = app
        .create_user_raw(&owner, new_user("bob", "STANDARD"))
        .await;
    assert_code(&body, "FORBIDDEN");
    let body = app
        .update_user(&owner, &target, json!({ "firstName": "Nope" }))
        .await;
    assert_code(&body, "FORBIDDEN");
    let body = app
        .update_user(&owner, &owner.id, json!({ "firstName": "Nope" }))
        .await;
    assert_code(&body, "FORBIDDEN");
    let body = app.delete_user(&owner, &target).await;
    assert_code(&body, "FORBIDDEN");
    let body = app.set_role(&owner, &target, "ADMIN").await;
    assert_code(&body, "FORBIDDEN");
    // Credentials of one's own are changes too.
    for mutation in [
        "mutation { createApiToken(name: \"demo\") { token } }",
        "mutation { enableTotp { secret } }",
        "mutation { confirmTotp(code: \"123456\") }",
        // Refused for the mode before its input is looked at, or counted.
        "mutation { confirmTotp(code: \" \") }",
        "mutation { disableTotp(verification: {password: \"x\"}) }",
        // Out of demo mode the owner would be told `false`: no such token.
        "mutation { revokeApiToken(id: \"0190a0b0-0000-7000-8000-000000000000\") }",
    ] {
        let body = app.gql(Some(&owner.access), mutation, json!({})).await;
        assert_code(&body, "FORBIDDEN");
    }
    let credentials = "SELECT (SELECT count(*) FROM api_tokens) + (SELECT count(*) FROM user_totp)";
    assert_eq!(app.count(credentials).await, 0);

    // Reads, login and refresh work, and nothing changed.
    let body = app.me(&owner.access).await;
    assert_ok(&body);
    assert_eq!(body["data"]["me"]["role"], "OWNER");
    assert_eq!(count(&app, &owner, json!({})).await, 2);
    let body = app.user_by_id(&owner, &target).await;
    assert_ok(&body);
    assert_eq!(body["data"]["user"]["role"], "STANDARD");
    assert!(body["data"]["user"]["firstName"].is_null(), "{body}");
    let standard = app.login_with_agent("std1", "Visitor/1").await;
    assert_ok(&app.me(&standard.access).await);
    let body = app.refresh(&standard.refresh).await;
    assert_ok(&body);
    let standard = Session::from_payload(&body, "refreshToken");

    // Visitors sharing an account see where and with what only their own session signs in,
    // and the audit trail shows no addresses.
    let other_visitor = app.login_with_agent("std1", "Visitor/2").await;
    let body = app
        .gql(
            Some(&standard.access),
            "{ me { sessions { current ip userAgent } } }",
            json!({}),
        )
        .await;
    let sessions = body["data"]["me"]["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2, "{body}");
    for session in sessions {
        let expected = if session["current"] == true {
            json!({"current": true, "ip": "127.0.0.1", "userAgent": "Visitor/1"})
        } else {
            json!({"current": false, "ip": null, "userAgent": null})
        };
        assert_eq!(session, &expected, "{body}");
    }
    let body = app
        .gql(
            Some(&owner.access),
            "{ auditLog(first: 50) { edges { node { action ip } } } }",
            json!({}),
        )
        .await;
    let entries = body["data"]["auditLog"]["edges"]
        .as_array()
        .expect("entries");
    assert!(!entries.is_empty(), "{body}");
    assert!(entries.iter().all(|e| e["node"]["ip"].is_null()), "{body}");

    // Ending sessions: a visitor's own, yes; those of others sharing the account, no.
    let revoke = REVOKE_SESSION;
    let other_sid = json!({"id": other_visitor.sid()});
    for (caller, query, variables) in [
        (&standard, revoke, &other_sid),
        (&owner, revoke, &other_sid),
        (&standard, LOGOUT_EVERYWHERE, &json!({})),
    ] {
        let body = app
            .gql(Some(&caller.access), query, variables.clone())
            .await;
        assert_code(&body, "FORBIDDEN");
    }
    assert_ok(&app.me(&other_visitor.access).await);
    let body = app
        .gql(
            Some(&other_visitor.access),
            revoke,
            json!({"id": other_visitor.sid()}),
        )
        .await;
    assert_eq!(body["data"]["revokeSession"], true, "{body}");
    assert_code(&app.me(&other_visitor.access).await, "UNAUTHENTICATED");
    assert_ok(&app.me(&standard.access).await);
}

// ---------------------------------------------------------------------------------------------
// Pagination and search

const FIRST_NAMES: [&str; 5] = ["Ann", "Bert", "Zebediah", "Dora", "Eve"];
const LAST_NAMES: [&str; 5] = ["Smith", "Jones", "Okafor", "McZeb", "Lee"];

async fn pagination_search_and_filters(app: TestApp) {
    let owner = app.register("owner").await;
    let mut created = vec!["owner".to_owned()];
    for i in 0..25 {
        let username = format!("user{i:02}");
        let role = if i % 5 == 0 { "ADMIN" } else { "STANDARD" };
        let body = app
            .create_user_raw(
                &owner,
                json!({
                    "username": username,
                    "email": format!("{username}@example.com"),
                    "password": PASSWORD,
                    "role": role,
                    "firstName": FIRST_NAMES[i % 5],
                    "lastName": LAST_NAMES[(i / 5) % 5],
                }),
            )
            .await;
        assert_ok(&body);
        created.push(username);
    }

    // Default page of 20, then the rest: creation order, no duplicates, no gaps.
    let body = app.users(&owner, json!({})).await;
    assert_ok(&body);
    let page = &body["data"]["users"];
    assert_eq!(page["totalCount"], 26);
    let nodes = page["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 20, "{body}");
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    assert_eq!(page["pageInfo"]["hasPreviousPage"], false);
    let mut seen: Vec<String> = nodes
        .iter()
        .map(|n| n["username"].as_str().expect("username").to_owned())
        .collect();
    let cursor = page["pageInfo"]["endCursor"]
        .as_str()
        .expect("endCursor")
        .to_owned();
    let body = app.users(&owner, json!({ "after": cursor })).await;
    assert_ok(&body);
    let page = &body["data"]["users"];
    let nodes = page["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 6, "{body}");
    assert_eq!(page["pageInfo"]["hasNextPage"], false);
    assert_eq!(page["pageInfo"]["hasPreviousPage"], true);
    seen.extend(
        nodes
            .iter()
            .map(|n| n["username"].as_str().expect("username").to_owned()),
    );
    assert_eq!(seen, created);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 26);
    // Small pages walk the same order.
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let body = app
            .users(&owner, json!({ "first": 7, "after": after }))
            .await;
        assert_ok(&body);
        let page = &body["data"]["users"];
        for node in page["nodes"].as_array().expect("nodes") {
            walked.push(node["username"].as_str().expect("username").to_owned());
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
        assert!(walked.len() <= 26, "pagination does not end: {walked:?}");
    }
    assert_eq!(walked, created);

    // Limits and bad cursors.
    let body = app.users(&owner, json!({ "first": 101 })).await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_field_codes(&body, json!({"first": "RANGE"}));
    let body = app.users(&owner, json!({ "first": 100 })).await;
    assert_ok(&body);
    assert_eq!(
        body["data"]["users"]["nodes"].as_array().map(Vec::len),
        Some(26)
    );
    // Times past what PostgreSQL stores (years before 1 and after 9999) are no cursors either.
    let out_of_range = [
        "dXNlcnM6LTgwMDAwMDAwMDAwMDAwMDAwMDAwOjAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMA",
        "dXNlcnM6MjUzNDAyMzAwODAwMDAwMDAwOjAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMA",
    ];
    for bad in ["garbage", "", "!!!!", "eyJ4IjoxfQ"]
        .into_iter()
        .chain(out_of_range)
    {
        let body = app.users(&owner, json!({ "after": bad })).await;
        assert_code(&body, "BAD_USER_INPUT");
        let audit = "query($after: String) { auditLog(after: $after) { edges { cursor } } }";
        let body = app
            .gql(Some(&owner.access), audit, json!({ "after": bad }))
            .await;
        assert_code(&body, "BAD_USER_INPUT");
    }
    // One list's cursor is no position in the other.
    let users_cursor = app.users(&owner, json!({ "first": 1 })).await["data"]["users"]["pageInfo"]
        ["endCursor"]
        .clone();
    let audit = "query($first: Int, $after: String) { auditLog(first: $first, after: $after) { pageInfo { endCursor } } }";
    let audit_cursor = app
        .gql(Some(&owner.access), audit, json!({ "first": 1 }))
        .await["data"]["auditLog"]["pageInfo"]["endCursor"]
        .clone();
    assert!(users_cursor.is_string() && audit_cursor.is_string());
    let body = app
        .gql(Some(&owner.access), audit, json!({ "after": users_cursor }))
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_field_codes(&body, json!({"after": "FORMAT"}));
    let body = app.users(&owner, json!({ "after": audit_cursor })).await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_field_codes(&body, json!({"after": "FORMAT"}));
    // Every refused argument at once, on both lists.
    let body = app
        .users(
            &owner,
            json!({"first": 101, "after": "garbage", "filter": {"search": "x".repeat(201)}}),
        )
        .await;
    assert_field_codes(
        &body,
        json!({"first": "RANGE", "after": "FORMAT", "search": "LENGTH"}),
    );
    let audit = "query($first: Int, $after: String, $filter: AuditFilter) { auditLog(first: $first, after: $after, filter: $filter) { pageInfo { endCursor } } }";
    let body = app
        .gql(
            Some(&owner.access),
            audit,
            json!({"first": -1, "after": "garbage", "filter": {"actorId": "nope", "targetId": "x"}}),
        )
        .await;
    assert_field_codes(
        &body,
        json!({"first": "RANGE", "after": "FORMAT", "actorId": "FORMAT", "targetId": "FORMAT"}),
    );
    // No username holds NUL: nobody is found, and nothing fails.
    let body = app.user_by_name(&owner, "user\u{0}01").await;
    assert_ok(&body);
    assert!(body["data"]["user"].is_null(), "{body}");

    // Search: username, email, first and last name, case-insensitively.
    assert_eq!(
        usernames(&app, &owner, json!({ "search": "USER0" })).await,
        created[1..11]
    );
    assert_eq!(
        usernames(&app, &owner, json!({ "search": "User13@EXAMPLE" })).await,
        ["user13"]
    );
    let zebediahs: Vec<String> = (0..25)
        .filter(|i| i % 5 == 2)
        .map(|i| format!("user{i:02}"))
        .collect();
    assert_eq!(
        usernames(&app, &owner, json!({ "search": "zEBEDIAH" })).await,
        zebediahs
    );
    let mczebs: Vec<String> = (15..20).map(|i| format!("user{i:02}")).collect();
    assert_eq!(
        usernames(&app, &owner, json!({ "search": "mczeb" })).await,
        mczebs
    );
    // A search box's spaces around the term are no part of it; spaces alone are no term.
    assert_eq!(
        usernames(&app, &owner, json!({ "search": " mczeb\u{3000}" })).await,
        mczebs
    );
    assert_eq!(count(&app, &owner, json!({ "search": "   " })).await, 26);
    // "zeb" is in Zebediah (first name) and McZeb (last name).
    let zeb: Vec<String> = (0..25)
        .filter(|i| i % 5 == 2 || (15..20).contains(i))
        .map(|i| format!("user{i:02}"))
        .collect();
    assert_eq!(
        usernames(&app, &owner, json!({ "search": "ZEB" })).await,
        zeb
    );
    assert_eq!(
        count(&app, &owner, json!({ "search": "ZEB" })).await,
        zeb.len() as i64
    );

    // `%` and `_` are literal.
    for (username, last) in [("pct", "100%_done"), ("plain", "1000 done")] {
        let mut input = new_user(username, "STANDARD");
        input["lastName"] = json!(last);
        assert_ok(&app.create_user_raw(&owner, input).await);
    }
    assert_eq!(
        usernames(&app, &owner, json!({ "search": "0%_" })).await,
        ["pct"]
    );
    assert_eq!(
        usernames(&app, &owner, json!({ "search": "%" })).await,
        ["pct"]
    );
    assert!(
        usernames(&app, &owner, json!({ "search": "0_d" }))
            .await
            .is_empty()
    );
    assert_eq!(
        usernames(&app, &owner, json!({ "search": "done" })).await,
        ["pct", "plain"]
    );
    assert_eq!(count(&app, &owner, json!({ "search": "0%_" })).await, 1);

    // Role and disabled filters, alone and together, honoured by totalCount.
    assert_eq!(count(&app, &owner, json!({})).await, 28);
    let admins: Vec<String> = (0..25).step_by(5).map(|i| format!("user{i:02}")).collect();
    assert_eq!(
        usernames(&app, &owner, json!({ "role": "ADMIN" })).await,
        admins
    );
    assert_eq!(count(&app, &owner, json!({ "role": "ADMIN" })).await, 5);
    assert_eq!(count(&app, &owner, json!({ "role": "STANDARD" })).await, 22);
    assert_eq!(
        usernames(&app, &owner, json!({ "role": "OWNER" })).await,
        ["owner"]
    );
    for name in ["user03", "user05"] {
        let body = app.user_by_name(&owner, name).await;
        let id = body["data"]["user"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {body}"))
            .to_owned();
        assert_ok(
            &app.update_user(&owner, &id, json!({ "disabled": true }))
                .await,
        );
    }
    assert_eq!(
        usernames(&app, &owner, json!({ "disabled": true })).await,
        ["user03", "user05"]
    );
    assert_eq!(count(&app, &owner, json!({ "disabled": true })).await, 2);
    assert_eq!(count(&app, &owner, json!({ "disabled": false })).await, 26);
    assert_eq!(
        usernames(&app, &owner, json!({ "disabled": true, "role": "ADMIN" })).await,
        ["user05"]
    );
    assert_eq!(
        count(
            &app,
            &owner,
            json!({ "disabled": false, "role": "ADMIN", "search": "user" })
        )
        .await,
        4
    );
    // A filtered listing pages too.
    let body = app
        .users(&owner, json!({ "first": 3, "filter": { "role": "ADMIN" } }))
        .await;
    assert_ok(&body);
    assert_eq!(body["data"]["users"]["totalCount"], 5);
    assert_eq!(body["data"]["users"]["pageInfo"]["hasNextPage"], true);
    let cursor = body["data"]["users"]["pageInfo"]["endCursor"].clone();
    let body = app
        .users(
            &owner,
            json!({ "first": 3, "after": cursor, "filter": { "role": "ADMIN" } }),
        )
        .await;
    assert_ok(&body);
    let rest: Vec<&str> = body["data"]["users"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["username"].as_str().expect("username"))
        .collect();
    assert_eq!(rest, ["user15", "user20"]);
    assert_eq!(body["data"]["users"]["pageInfo"]["hasNextPage"], false);
}

// ---------------------------------------------------------------------------------------------
// N+1

/// Statements run by one `users(first: $first) { nodes { createdBy { username } } }`.
async fn created_by_cost(app: &TestApp, owner: &Session, first: usize) -> u64 {
    let query = "query($first: Int) { users(first: $first) { nodes { createdBy { username } } } }";
    let before = app.statement_count();
    let body = app
        .gql(Some(&owner.access), query, json!({ "first": first }))
        .await;
    let after = app.statement_count();
    assert_ok(&body);
    let nodes = body["data"]["users"]["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), first.min(32), "{body}");
    assert!(
        nodes
            .iter()
            .skip(2)
            .all(|n| n["createdBy"]["username"] == "admin1"),
        "{body}"
    );
    after - before
}

/// An owner, `admin1` (created by the owner) and `count` standard users `{prefix}NN` created
/// by `admin1`; returns the owner's session.
async fn owner_admin_and_members(app: &TestApp, prefix: &str, count: usize) -> Session {
    let owner = app.register("owner").await;
    let admin = app.user_with_role(&owner, "admin1", "ADMIN").await;
    for i in 0..count {
        app.create_user(&admin, &format!("{prefix}{i:02}"), "STANDARD")
            .await;
    }
    owner
}

async fn created_by_is_batched(app: TestApp) {
    let owner = owner_admin_and_members(&app, "user", 30).await;
    let small = created_by_cost(&app, &owner, 5).await;
    let large = created_by_cost(&app, &owner, 50).await;
    let again = created_by_cost(&app, &owner, 50).await;
    assert_eq!(small, large, "statements for 5 users vs 50");
    assert_eq!(large, again, "statement count is stable");
    assert!(large <= 4, "{large} statements for one page");
}

/// Statements run by `query` as `session`; the query must succeed.
async fn statements_for(app: &TestApp, session: &Session, query: &str) -> (u64, Value) {
    let before = app.statement_count();
    let body = app.gql(Some(&session.access), query, json!({})).await;
    let after = app.statement_count();
    assert_ok(&body);
    (after - before, body)
}

/// `totalCount` is one more statement, run only for a query that selects it.
async fn total_count_costs_a_statement_only_when_selected(app: TestApp) {
    let owner = owner_admin_and_members(&app, "member", 8).await;
    let plain = "{ users(first: 5) { nodes { id } } }";
    let counted = "{ users(first: 5) { totalCount nodes { id } } }";

    let mut costs = Vec::new();
    // Alternated and repeated, so neither query is measured only while something is warming.
    for query in [plain, counted, plain, counted] {
        let (cost, body) = statements_for(&app, &owner, query).await;
        let page = &body["data"]["users"];
        assert_eq!(page["nodes"].as_array().map(Vec::len), Some(5), "{body}");
        if query == counted {
            assert_eq!(page["totalCount"], 10, "{body}");
        } else {
            assert!(page.get("totalCount").is_none(), "{body}");
        }
        costs.push(cost);
    }
    let (without, with) = (costs[0], costs[1]);
    assert_eq!(
        costs[2], without,
        "statements for the page alone are stable: {costs:?}"
    );
    assert_eq!(
        costs[3], with,
        "statements with totalCount are stable: {costs:?}"
    );
    assert!(
        without < with,
        "totalCount selected costs {with} statements, not selected {without}: the count runs \
         either always or never"
    );
    // Written many times over, by fragments spreading each other twice, it still runs once.
    let doubled: String = (1..8)
        .map(|n| {
            format!(
                "fragment T{n} on UserConnection {{ ...T{m} ...T{m} }} ",
                m = n - 1
            )
        })
        .collect();
    let repeated = format!(
        "{{ users(first: 0) {{ ...T7 }} }} \
         fragment T0 on UserConnection {{ totalCount }} {doubled}"
    );
    let (cost, body) = statements_for(&app, &owner, &repeated).await;
    assert_eq!(body["data"]["users"]["totalCount"], 10, "{body}");
    assert!(
        cost <= with,
        "{cost} statements for 128 spreads of totalCount"
    );
}

/// `createdBy` through edges, in a searched page, and one level further (the creators' own
/// creators, which the page query did not fetch).
async fn created_by_in_edges_searches_and_nested(app: TestApp) {
    let owner = owner_admin_and_members(&app, "member", 4).await;
    let query = "query($filter: UserFilter) { users(first: 10, filter: $filter) { edges { node { username createdBy { username createdBy { username } } } } } }";
    for filter in [json!(null), json!({"search": "member"})] {
        let body = app
            .gql(Some(&owner.access), query, json!({ "filter": filter }))
            .await;
        assert_ok(&body);
        let edges = body["data"]["users"]["edges"].as_array().expect("edges");
        let members: Vec<_> = edges
            .iter()
            .map(|edge| &edge["node"])
            .filter(|node| {
                node["username"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("member"))
            })
            .collect();
        assert_eq!(members.len(), 4, "{body}");
        for node in members {
            assert_eq!(node["createdBy"]["username"], "admin1", "{body}");
            assert_eq!(
                node["createdBy"]["createdBy"]["username"], "owner",
                "{body}"
            );
        }
    }
}

/// A page's `nodes` give the same data whether the fields are selected directly, through
/// fragments or beside a skipped directive, for every viewer.
async fn page_nodes_match_the_generic_resolution(app: TestApp) {
    let owner = owner_admin_and_members(&app, "member", 3).await;
    let profiled = app.create_user(&owner, "profiled", "STANDARD").await;
    let body = app
        .update_user(
            &owner,
            &profiled,
            json!({"firstName": "Ada", "lastName": "Lovelace", "phone": "+15550100"}),
        )
        .await;
    assert_ok(&body);
    assert_ok(&app.login("profiled", PASSWORD).await);
    let admin = Session::from_payload(&app.login("admin1", PASSWORD).await, "login");

    const FIELDS: &str = "__typename id name: username email firstName lastName phone role disabled createdAt updatedAt lastLoginAt createdBy { __typename id username email role }";
    let page = |selection: &str| format!("{{ users(first: 20) {{ {selection} }} }} ");
    let fast = page(&format!("nodes {{ {FIELDS} }}"));
    let generic = [
        page(&format!("nodes {{ ... on User {{ {FIELDS} }} }}")),
        page("nodes { ...fields }") + &format!("fragment fields on User {{ {FIELDS} }}"),
        page(&format!(
            "nodes {{ {FIELDS} extra: id @include(if: false) }}"
        )),
        page(&format!("nodes {{ id {FIELDS} }}")),
    ];
    for viewer in [&owner, &admin] {
        let expected = app.gql(Some(&viewer.access), &fast, json!({})).await;
        assert_ok(&expected);
        let nodes = &expected["data"]["users"]["nodes"];
        assert_eq!(nodes.as_array().map(Vec::len), Some(6), "{expected}");
        let profiled = nodes
            .as_array()
            .into_iter()
            .flatten()
            .find(|node| node["name"] == "profiled")
            .expect("profiled user on the page");
        assert_eq!(profiled["firstName"], "Ada", "{expected}");
        assert_eq!(profiled["createdBy"]["username"], "owner", "{expected}");
        assert!(profiled["lastLoginAt"].is_string(), "{expected}");
        for query in &generic {
            let body = app.gql(Some(&viewer.access), query, json!({})).await;
            assert_eq!(body, expected, "{query}");
        }
        let edges = app
            .gql(
                Some(&viewer.access),
                &page(&format!("edges {{ cursor node {{ {FIELDS} }} }}")),
                json!({}),
            )
            .await;
        let generic_edges = app
            .gql(
                Some(&viewer.access),
                &page(&format!(
                    "edges {{ ... on UserEdge {{ cursor node {{ {FIELDS} }} }} }}"
                )),
                json!({}),
            )
            .await;
        assert_eq!(edges, generic_edges);
        let edge_nodes: Vec<&Value> = edges["data"]["users"]["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|edge| &edge["node"])
            .collect();
        let nodes: Vec<&Value> = nodes.as_array().into_iter().flatten().collect();
        assert_eq!(edge_nodes, nodes, "{edges}");
    }
}

/// Search folds case beyond ASCII on both databases, as it does for ASCII; accents still count.
async fn search_folds_case_beyond_ascii(app: TestApp) {
    let owner = app.register("owner").await;
    for (username, first, last) in [
        ("alpha", "Émile", "Østerberg"),
        ("beta", "Emile", "Osterberg"),
    ] {
        let mut input = new_user(username, "STANDARD");
        input["firstName"] = json!(first);
        input["lastName"] = json!(last);
        assert_ok(&app.create_user_raw(&owner, input).await);
    }
    for term in ["Émile", "émile", "ÉMILE", "østerb", "ØSTER", "Émi"] {
        let found = usernames(&app, &owner, json!({ "search": term })).await;
        assert_eq!(found, ["alpha"], "{term}");
    }
    assert_eq!(
        usernames(&app, &owner, json!({ "search": "emile" })).await,
        ["beta"]
    );
    // Terms of every length, below SQLite's trigram index too, in any case of their letters;
    // Greek's final sigma is a sigma.
    for (username, first, last) in [("gamma", "ΣΊΣΥΦΟΣ", "Ĳssel"), ("delta", "Σίσυφος", "Δ")]
    {
        let mut input = new_user(username, "STANDARD");
        input["firstName"] = json!(first);
        input["lastName"] = json!(last);
        assert_ok(&app.create_user_raw(&owner, input).await);
    }
    let sisyphus = [
        "Σ",
        "σ",
        "ς",
        "ΣΊ",
        "σί",
        "ΦΟ",
        "φο",
        "ΟΣ",
        "ος",
        "οσ",
        "ΦΟΣ",
        "φος",
        "φοσ",
        "ΣΊΣΥΦΟΣ",
        "σίσυφος",
        "Σίσυφοσ",
    ];
    for term in sisyphus {
        let found = usernames(&app, &owner, json!({ "search": term })).await;
        assert_eq!(found, ["gamma", "delta"], "{term}");
    }
    for term in ["Ĳ", "ĳ", "Ĳs", "ĳS", "ĳssel"] {
        let found = usernames(&app, &owner, json!({ "search": term })).await;
        assert_eq!(found, ["gamma"], "{term}");
    }
    // Turkish dotted and dotless i, and the German capital sharp s.
    for (username, first, last) in [("epsilon", "İstanbul", "ılık"), ("zeta", "GROẞ", "Z")] {
        let mut input = new_user(username, "STANDARD");
        input["firstName"] = json!(first);
        input["lastName"] = json!(last);
        assert_ok(&app.create_user_raw(&owner, input).await);
    }
    for (term, expected) in [
        ("İstanbul", "epsilon"),
        ("İs", "epsilon"),
        ("İst", "epsilon"),
        ("ı", "epsilon"),
        ("ıl", "epsilon"),
        ("ılık", "epsilon"),
        ("oß", "zeta"),
        ("GROẞ", "zeta"),
        ("groß", "zeta"),
    ] {
        let found = usernames(&app, &owner, json!({ "search": term })).await;
        assert_eq!(found, [expected], "{term}");
    }
    // As the README says, SQLite matches İ only as itself, in usernames as in names (where
    // PostgreSQL finds every i): not the i of "epsilon" or any other username.
    if app.backend == support::Backend::Sqlite {
        for term in ["İ", "İs", "Sİ"] {
            let found = usernames(&app, &owner, json!({ "search": term })).await;
            let expected: &[&str] = if term == "Sİ" { &[] } else { &["epsilon"] };
            assert_eq!(found, expected, "{term}");
        }
    }
}

/// Addresses that look the same are one account, on both databases: registered full-width,
/// found typed plainly; an accent as one character or as a letter and a combining mark.
/// Invisible characters, control characters in names and a phone that is no number are
/// refused, each naming its field.
async fn lookalike_input_is_one_value_or_refused(app: TestApp) {
    let body = app
        .register_raw("emile", "\u{C9}mile@\u{FF25}xample.com")
        .await;
    assert_ok(&body);
    assert_eq!(
        body["data"]["register"]["user"]["email"], "\u{E9}mile@example.com",
        "{body}"
    );
    assert_ok(&app.login("E\u{301}MILE@example.com", PASSWORD).await);
    let body = app.register_raw("emile2", "e\u{301}mile@example.com").await;
    assert_code(&body, "CONFLICT");
    assert_fields(&body, &["email"]);
    // An address typed long (387 bytes of full-width letters, 129 once normalised) logs in
    // and is found typed as it was registered.
    let typed = format!(
        "{}\u{FF20}{}\u{FF0E}\u{FF43}\u{FF4F}\u{FF4D}",
        "\u{FF45}".repeat(64),
        "\u{FF45}".repeat(60)
    );
    assert_eq!(typed.len(), 387);
    assert_ok(&app.register_raw("wide", &typed).await);
    let wide = app.login(&typed, PASSWORD).await;
    assert_ok(&wide);
    let found = app
        .gql(
            Some(&Session::from_payload(&wide, "login").access),
            "query($email: String) { user(email: $email) { username } }",
            json!({"email": typed}),
        )
        .await;
    assert_eq!(found["data"]["user"]["username"], "wide", "{found}");

    let body = app
        .gql(
            None,
            support::REGISTER,
            json!({"input": {
                "username": "...",
                "email": "z\u{200B}ed@example.com",
                "password": PASSWORD,
                "firstName": "Zed\u{202E}",
                "lastName": "\u{200B}\u{3164}",
                "phone": "call me maybe",
            }}),
        )
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_fields(
        &body,
        &["username", "email", "firstName", "lastName", "phone"],
    );
    // The last two read as `zed@example.com`: a Cyrillic `е` in one part, the musical null
    // notehead (which fonts draw as nothing) in another.
    for odd in [
        "z..ed@example.com",
        "zed@ex<a>mple.com",
        "zed@127.0.0.1",
        "z\u{435}d@example.com",
        "zed\u{1D159}@example.com",
    ] {
        let body = app.register_raw("zed", odd).await;
        assert_code(&body, "BAD_USER_INPUT");
        assert_fields(&body, &["email"]);
    }
    let zed = |profile: Value| {
        let mut input =
            json!({"username": "zed", "email": "zed@example.com", "password": PASSWORD});
        if let (Some(input), Some(profile)) = (input.as_object_mut(), profile.as_object()) {
            input.extend(profile.clone());
        }
        app.gql(None, support::REGISTER, json!({ "input": input }))
    };
    // A zero-width space inside a name makes it look like another, and is refused.
    let body = zed(json!({"firstName": "Z\u{200B}ed", "lastName": "\u{FEFF}Doe"})).await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_fields(&body, &["firstName", "lastName"]);
    let body = zed(json!({"firstName": "Zed", "phone": "+44 (20) 7946-0000 ext. 12"})).await;
    assert_ok(&body);
}

/// Emails stored before they were normalised are rewritten by the migration that started
/// normalising them, so a login by email still finds them; one whose normalised form is taken
/// is left as it was.
async fn emails_stored_before_normalisation_are_migrated(app: TestApp) {
    app.register("emile").await;
    app.register("eve").await;
    app.register("eve2").await;
    let db = app.database().await;
    let run = |sql: &'static str| {
        let db = &db;
        async move {
            db.execute_unprepared(sql).await.expect(sql);
        }
    };
    // As the earlier release stored them: trimmed and lower-cased only.
    run("UPDATE users SET email = 'e\u{301}mile@example.com' WHERE username = 'emile'").await;
    run("UPDATE users SET email = '\u{FF45}ve@example.com' WHERE username = 'eve2'").await;
    run("DELETE FROM seaql_migrations WHERE version = 'm20261208_000009_email_keys'").await;
    assert_code(
        &app.login("\u{E9}mile@example.com", PASSWORD).await,
        "UNAUTHENTICATED",
    );
    // A domain in its ASCII form, as releases before the email_domains migration kept it.
    app.register("ida").await;
    run("UPDATE users SET email = 'ida@xn--mnchen-3ya.de' WHERE username = 'ida'").await;
    run("DELETE FROM seaql_migrations WHERE version = 'm20261210_000011_email_domains'").await;
    assert_code(
        &app.login("ida@m\u{FC}nchen.de", PASSWORD).await,
        "UNAUTHENTICATED",
    );

    // Another instance starting migrates.
    let instance = app.second_instance().await;
    let second = app.at(&instance);
    assert_ok(&second.login("\u{E9}mile@example.com", PASSWORD).await);
    assert_ok(&second.login("eve@example.com", PASSWORD).await);
    // Either form of the domain finds ida, and the other form is no new address.
    assert_ok(&second.login("ida@m\u{FC}nchen.de", PASSWORD).await);
    assert_ok(&second.login("ida@xn--mnchen-3ya.de", PASSWORD).await);
    let body = second.register_raw("ida2", "ida@xn--mnchen-3ya.de").await;
    assert_code(&body, "CONFLICT");
    // eve's address was taken: eve2's stays as it was, and eve2 still logs in by name.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE email = '\u{FF45}ve@example.com'")
            .await,
        1
    );
    let eve2 = second.login_as("eve2").await;
    // Stored values sent back unchanged, from before today's rules, are no change: not
    // judged again, no currentPassword needed.
    run("UPDATE users SET phone = 'call after 5pm' WHERE username = 'eve2'").await;
    let body = second
        .update_user(
            &eve2,
            &eve2.id,
            json!({"email": "\u{FF45}ve@example.com", "phone": "call after 5pm", "firstName": "Eve"}),
        )
        .await;
    assert_ok(&body);
    assert_eq!(body["data"]["updateUser"]["firstName"], "Eve", "{body}");
    // Nor one that today's rules would write differently (trimmed), beside a real change.
    run("UPDATE users SET last_name = ' Ed ' WHERE username = 'eve2'").await;
    let body = second
        .update_user(
            &eve2,
            &eve2.id,
            json!({"firstName": "Eva", "lastName": " Ed ", "phone": "call after 5pm"}),
        )
        .await;
    assert_ok(&body);
    assert_eq!(body["data"]["updateUser"]["lastName"], " Ed ", "{body}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE last_name = ' Ed ' AND first_name = 'Eva'")
            .await,
        1
    );
    let body = second
        .update_user(&eve2, &eve2.id, json!({"phone": "call before 5pm"}))
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_fields(&body, &["phone"]);
}

/// A mutation's later fields answer with what the earlier ones changed, not with what the
/// request loaded before: a user disabled by the second edit lists none of the API tokens
/// disabling deleted, and a creator deleted in between is gone from `createdBy` (on SQLite
/// the row's own reference is cleared too; on PostgreSQL only the loader tells).
async fn later_mutation_fields_see_earlier_changes(app: TestApp) {
    let owner = app.register("owner").await;
    let ada = app.user_with_role(&owner, "ada", "ADMIN").await;
    let sam = app.user_with_role(&ada, "sam", "STANDARD").await;
    let issue = "mutation { createApiToken(name: \"ci\") { token } }";
    assert_ok(&app.gql(Some(&sam.access), issue, json!({})).await);

    let edits = "mutation($id: ID!, $ada: ID!) { \
        a: updateUser(id: $id, input: {firstName: \"Sam\"}) { apiTokens { name } createdBy { username } } \
        d: deleteUser(id: $ada) \
        b: updateUser(id: $id, input: {disabled: true}) { disabled apiTokens { name } createdBy { username } } }";
    let body = app
        .gql(
            Some(&owner.access),
            edits,
            json!({"id": sam.id, "ada": ada.id}),
        )
        .await;
    assert_ok(&body);
    let a = &body["data"]["a"];
    assert_eq!(a["apiTokens"], json!([{"name": "ci"}]), "{body}");
    assert_eq!(a["createdBy"]["username"], "ada", "{body}");
    let b = &body["data"]["b"];
    assert_eq!(b["disabled"], true, "{body}");
    assert_eq!(b["apiTokens"], json!([]), "{body}");
    assert_eq!(b["createdBy"], Value::Null, "{body}");
}

/// A mutation field after one that ended the caller's session (deleting oneself, logging out
/// everywhere) answers UNAUTHENTICATED, even one that would change nothing, answer `false` or
/// check a password: not with what the caller could see before.
async fn a_no_op_after_the_caller_is_gone_is_refused(app: TestApp) {
    let owner = app.register("owner").await;
    let ada = app.user_with_role(&owner, "ada", "ADMIN").await;
    let sam = app.user_with_role(&ada, "sam", "STANDARD").await;
    let gone = "mutation($me: ID!, $s: ID!) { a: deleteUser(id: $me) \
                b: updateUser(id: $s, input: {}) { email } }";
    let body = app
        .gql(Some(&ada.access), gone, json!({"me": ada.id, "s": sam.id}))
        .await;
    assert_eq!(body["errors"][0]["path"], json!(["b"]), "{body}");
    assert_code(&body, "UNAUTHENTICATED");
    let out = "mutation($s: ID!) { a: logoutEverywhere \
               b: setRole(id: $s, role: STANDARD) { email } }";
    let body = app
        .gql(Some(&owner.access), out, json!({"s": sam.id}))
        .await;
    assert_eq!(body["errors"][0]["path"], json!(["b"]), "{body}");
    assert_code(&body, "UNAUTHENTICATED");
    // Nor a `false`, nor a password checked for a caller signed out.
    let tries = [
        "mutation { a: logoutEverywhere b: revokeSession(id: \"00000000-0000-7000-8000-000000000000\") }",
        "mutation { a: logoutEverywhere b: disableTotp(verification: {password: \"not the password\"}) }",
    ];
    for document in tries {
        let sam = app.login_as("sam").await;
        let body = app.gql(Some(&sam.access), document, json!({})).await;
        assert_eq!(body["errors"][0]["path"], json!(["b"]), "{body}");
        assert_code(&body, "UNAUTHENTICATED");
    }
}

/// A mutation's fields run in order, and stop at the first that fails: its non-null payload
/// nulls `data`, so a later change would have nothing in the response to say it happened.
async fn a_mutation_stops_at_its_first_failed_field(app: TestApp) {
    let owner = app.register("owner").await;
    let dave = app.create_user(&owner, "dave", "STANDARD").await;
    let body = app
        .gql(
            Some(&owner.access),
            "mutation($d: ID!) { \
               before: updateUser(id: $d, input: {firstName: \"Ran\"}) { firstName } \
               bad: updateUser(id: \"not an id\", input: {firstName: \"x\"}) { id } \
               after: updateUser(id: $d, input: {lastName: \"NotRun\"}) { lastName } \
               logout(refreshToken: \"whatever\") }",
            json!({"d": dave}),
        )
        .await;
    assert_eq!(body["data"], Value::Null, "{body}");
    let errors = body["errors"].as_array().expect("errors");
    let at = |key: &str| {
        errors
            .iter()
            .find(|error| error["path"] == json!([key]))
            .unwrap_or_else(|| panic!("no error at {key}: {body}"))["extensions"]["code"]
            .clone()
    };
    assert_eq!(at("bad"), "BAD_USER_INPUT");
    assert_eq!(at("after"), "NOT_RUN");
    assert_eq!(at("logout"), "NOT_RUN");
    assert!(
        errors
            .iter()
            .all(|error| error["path"] != json!(["before"])),
        "{body}"
    );
    let seen = app.user_by_id(&owner, &dave).await;
    assert_eq!(seen["data"]["user"]["firstName"], "Ran", "{seen}");
    assert_eq!(seen["data"]["user"]["lastName"], Value::Null, "{seen}");
}

/// The payload of `setRole` is judged as the caller stands after the change: an owner who
/// hands ownership over sees what an admin sees, of the users reached from it too (here the
/// new owner's creator, an admin, whose sessions an admin may not see).
async fn a_transfer_payload_is_seen_as_an_admin_sees_it(app: TestApp) {
    let owner = app.register("owner").await;
    let carol = app.user_with_role(&owner, "carol", "ADMIN").await;
    let bob = app.create_user(&carol, "bob", "STANDARD").await;
    let transfer = "mutation($id: ID!) { setRole(id: $id, role: OWNER) { role \
                    createdBy { username sessions { id } } } }";
    let body = app
        .gql(Some(&owner.access), transfer, json!({"id": bob}))
        .await;
    let payload = &body["data"]["setRole"];
    assert_eq!(payload["role"], "OWNER", "{body}");
    assert_eq!(payload["createdBy"]["username"], "carol", "{body}");
    assert!(payload["createdBy"]["sessions"].is_null(), "{body}");
    assert_code(&body, "FORBIDDEN");
    assert_eq!(
        body["errors"][0]["path"],
        json!(["setRole", "createdBy", "sessions"]),
        "{body}"
    );
}

backend_tests!(
    a_transfer_payload_is_seen_as_an_admin_sees_it,
    a_mutation_stops_at_its_first_failed_field,
    later_mutation_fields_see_earlier_changes,
    a_no_op_after_the_caller_is_gone_is_refused,
    search_folds_case_beyond_ascii,
    lookalike_input_is_one_value_or_refused,
    emails_stored_before_normalisation_are_migrated,
    first_registration_is_owner_then_standard,
    exactly_one_owner_when_registrations_race,
    closed_registration_still_allows_create_user
        with |s| { s.registration = rollcall::config::Registration::Closed; },
    create_user_by_role,
    visibility_of_users_and_private_fields,
    update_own_profile_and_credentials,
    passwords_are_checked_only_where_needed,
    update_other_users_by_role,
    nobody_disables_themselves,
    delete_user_by_role,
    set_role_rules_and_ownership_transfer,
    validation_lists_every_field,
    nul_in_input_is_bad_input,
    password_length_limits,
    demo_mode_is_read_only with |s| { s.demo = true; },
    pagination_search_and_filters,
    created_by_is_batched,
    total_count_costs_a_statement_only_when_selected,
    created_by_in_edges_searches_and_nested,
    page_nodes_match_the_generic_resolution,
);
