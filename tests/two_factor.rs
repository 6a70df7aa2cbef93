//! Two-factor login and step-up verification over HTTP: TOTP setup and confirmation, codes
//! accepted once, recovery codes used once, the throttle counting wrong codes, and sensitive
//! actions refused after the step-up window until the password or code is given again, which
//! a refresh does not get around.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{
    Backend, CONFIRM_TOTP, ENABLE_TOTP, Gql, PASSWORD, Session, TestApp, assert_code,
    assert_field_codes, assert_ok, metric, new_user,
};
use totp_rs::{Builder, Secret};

const DISABLE: &str = "mutation($v: VerificationInput!) { disableTotp(verification: $v) }";
const TOTP_ENABLED: &str = "{ me { totpEnabled } }";
const SET_ROLE: &str = "mutation($id: ID!, $role: Role!, $v: VerificationInput) { setRole(id: $id, role: $role, verification: $v) { role } }";
const DELETE: &str =
    "mutation($id: ID!, $v: VerificationInput) { deleteUser(id: $id, verification: $v) }";
const CREATE_ADMIN: &str = "mutation($input: CreateUserInput!, $v: VerificationInput) { createUser(input: $input, verification: $v) { id } }";
const UPDATE_OTHER: &str = "mutation($id: ID!, $input: UpdateUserInput!, $v: VerificationInput) { updateUser(id: $id, input: $input, verification: $v) { id } }";
const CREATE_TOKEN: &str =
    "mutation($v: VerificationInput) { createApiToken(name: \"t\", verification: $v) { token } }";

/// The code an authenticator app shows for `secret` at `offset` seconds from now.
fn code(secret: &str, offset: i64) -> String {
    let totp = Builder::new()
        .with_secret(Secret::try_from_base32(secret).expect("base32 secret"))
        .build()
        .expect("totp");
    let at = u64::try_from(chrono::Utc::now().timestamp() + offset).expect("time");
    totp.generate(at).to_string()
}

/// Starts and confirms two-factor login for `session`; returns the secret, the recovery codes
/// and the code that confirmed.
async fn turn_on(app: &TestApp, session: &Session) -> (String, Vec<String>, String) {
    let (secret, codes) = start_setup(app, session).await;
    let confirming = code(&secret, 0);
    let confirmed = app
        .gql(
            Some(&session.access),
            CONFIRM_TOTP,
            json!({"code": confirming}),
        )
        .await;
    assert_eq!(confirmed["data"]["confirmTotp"], true, "{confirmed}");
    (secret, codes, confirming)
}

/// Starts two-factor setup for `session`; returns the secret and the recovery codes.
async fn start_setup(app: &TestApp, session: &Session) -> (String, Vec<String>) {
    let setup = app.gql(Some(&session.access), ENABLE_TOTP, json!({})).await;
    assert_ok(&setup);
    let secret = setup["data"]["enableTotp"]["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let codes = setup["data"]["enableTotp"]["recoveryCodes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    (secret, codes)
}

async fn login_with(app: &TestApp, login: &str, password: &str, totp: Option<&str>) -> Value {
    app.gql(
        None,
        support::LOGIN,
        json!({"input": {"login": login, "password": password, "totpCode": totp}}),
    )
    .await
}

async fn totp_is_enforced_once_confirmed(app: TestApp) {
    let alice = app.register("alice").await;
    let setup = app.gql(Some(&alice.access), ENABLE_TOTP, json!({})).await;
    assert_ok(&setup);
    let payload = &setup["data"]["enableTotp"];
    let secret = payload["secret"].as_str().expect("secret").to_owned();
    let uri = payload["uri"].as_str().expect("uri");
    assert!(uri.starts_with("otpauth://totp/rollcall:alice?"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert_eq!(payload["recoveryCodes"].as_array().map(Vec::len), Some(10));

    // Not enforced before confirmation; a wrong code does not confirm.
    assert_ok(&login_with(&app, "alice", PASSWORD, None).await);
    let me = app.gql(Some(&alice.access), TOTP_ENABLED, json!({})).await;
    assert_eq!(me["data"]["me"]["totpEnabled"], false);
    let wrong = app
        .gql(Some(&alice.access), CONFIRM_TOTP, json!({"code": "000000"}))
        .await;
    assert_code(&wrong, "BAD_USER_INPUT");
    assert_field_codes(&wrong, json!({"code": "INCORRECT"}));

    // Starting again replaces the pending secret; the new one confirms.
    let (secret, recovery, confirming) = turn_on(&app, &alice).await;
    let me = app.gql(Some(&alice.access), TOTP_ENABLED, json!({})).await;
    assert_eq!(me["data"]["me"]["totpEnabled"], true);
    // The secret is never shown again.
    let again = app.gql(Some(&alice.access), ENABLE_TOTP, json!({})).await;
    assert_code(&again, "FORBIDDEN");
    assert!(!again.to_string().contains(&secret));
    // Confirming again says it is on, not that there is nothing to confirm.
    let confirmed_again = app
        .gql(
            Some(&alice.access),
            CONFIRM_TOTP,
            json!({"code": code(&secret, 0)}),
        )
        .await;
    assert_code(&confirmed_again, "FORBIDDEN");
    assert_eq!(
        confirmed_again["errors"][0]["message"], "Two-factor login is already on",
        "{confirmed_again}"
    );

    // Without a code, or with a wrong one: TOTP_REQUIRED. A wrong password: as ever. In the
    // metrics, the missing code is no result yet and the wrong one a failure.
    let before = app.metrics().await;
    assert_code(
        &login_with(&app, "alice", PASSWORD, None).await,
        "TOTP_REQUIRED",
    );
    assert_code(
        &login_with(&app, "alice", PASSWORD, Some("123456")).await,
        "TOTP_REQUIRED",
    );
    let after = app.metrics().await;
    for (result, change) in [("success", 0.0), ("failure", 1.0)] {
        let series = format!("rollcall_logins_total{{result=\"{result}\"}}");
        assert_eq!(
            metric(&after, &series) - metric(&before, &series),
            change,
            "{result}: {after}"
        );
    }
    assert_code(
        &login_with(&app, "alice", "wrong password", Some(&code(&secret, 30))).await,
        "UNAUTHENTICATED",
    );

    // The code that confirmed cannot log in (no replay); the next step's code can, once.
    assert_code(
        &login_with(&app, "alice", PASSWORD, Some(&confirming)).await,
        "TOTP_REQUIRED",
    );
    // Typed as apps show it, with a space in the middle.
    let next = code(&secret, 30);
    let shown = format!("{} {}", &next[..3], &next[3..]);
    let session = login_with(&app, "alice", PASSWORD, Some(&shown)).await;
    assert_ok(&session);
    assert_code(
        &login_with(&app, "alice", PASSWORD, Some(&next)).await,
        "TOTP_REQUIRED",
    );

    // A recovery code works once, in any case and without its dashes.
    let typed = recovery[0].to_lowercase().replace('-', "");
    assert_ok(&login_with(&app, "alice", PASSWORD, Some(&typed)).await);
    assert_code(
        &login_with(&app, "alice", PASSWORD, Some(&recovery[0])).await,
        "TOTP_REQUIRED",
    );

    // A form's blank code box is a missing code, named on its field and counted nowhere: more
    // of them than the throttle allows leave the next real code its chance.
    for _ in 0..6 {
        let blank = app
            .gql(
                Some(&alice.access),
                DISABLE,
                json!({"v": {"totpCode": " "}}),
            )
            .await;
        assert_field_codes(&blank, json!({"verification.totpCode": "REQUIRED"}));
        let blank = app
            .gql(Some(&alice.access), CONFIRM_TOTP, json!({"code": ""}))
            .await;
        assert_field_codes(&blank, json!({"code": "REQUIRED"}));
    }
    // At login it asks for the code, as with no box at all.
    assert_code(
        &login_with(&app, "alice", PASSWORD, Some("")).await,
        "TOTP_REQUIRED",
    );

    // Turning it off needs the second factor, not the password.
    let by_password = app
        .gql(
            Some(&alice.access),
            DISABLE,
            json!({"v": {"password": PASSWORD}}),
        )
        .await;
    assert_code(&by_password, "VERIFICATION_REQUIRED");
    let off = app
        .gql(
            Some(&alice.access),
            DISABLE,
            json!({"v": {"totpCode": recovery[1]}}),
        )
        .await;
    assert_eq!(off["data"]["disableTotp"], true, "{off}");
    // Nothing left to turn off: `false`, whatever the verification.
    for verification in [
        json!({"password": "not the password"}),
        json!({"totpCode": "000000"}),
    ] {
        let again = app
            .gql(Some(&alice.access), DISABLE, json!({"v": verification}))
            .await;
        assert_eq!(again["data"]["disableTotp"], false, "{again}");
    }
    // Without two-factor login, a blank code box is ignored.
    assert_ok(&login_with(&app, "alice", PASSWORD, Some("")).await);
    let plain = login_with(&app, "alice", PASSWORD, None).await;
    assert_ok(&plain);

    // Each step is in the audit trail; never a secret or a code.
    let trail = app
        .gql(
            Some(&Session::from_payload(&plain, "login").access),
            "{ auditLog(first: 50) { edges { node { action fields } } } }",
            json!({}),
        )
        .await;
    assert_ok(&trail);
    let actions: Vec<&str> = trail["data"]["auditLog"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter_map(|edge| edge["node"]["action"].as_str())
        .filter(|action| *action != "LOGGED_IN")
        .collect();
    assert_eq!(
        actions,
        [
            "TOTP_DISABLED",
            "RECOVERY_CODE_USED",
            "RECOVERY_CODE_USED",
            "TOTP_ENABLED",
            "TOTP_SETUP_STARTED",
            "TOTP_SETUP_STARTED",
            "USER_REGISTERED",
        ]
    );
    for secret in [secret.as_str(), recovery[0].as_str(), next.as_str()] {
        assert!(!trail.to_string().contains(secret));
    }
}

/// Authenticator apps show the operator's name beside the codes (`ROLLCALL_TOTP_ISSUER`, here
/// "Example Co").
async fn the_issuer_is_the_operators(app: TestApp) {
    let alice = app.register("alice").await;
    let setup = app.gql(Some(&alice.access), ENABLE_TOTP, json!({})).await;
    let uri = setup["data"]["enableTotp"]["uri"].as_str().expect("uri");
    assert!(
        uri.starts_with("otpauth://totp/Example%20Co:alice?"),
        "{uri}"
    );
    assert!(uri.contains("issuer=Example%20Co"), "{uri}");
}

/// Two logins racing with one code, or one recovery code: exactly one gets in.
async fn a_code_raced_twice_lets_one_login_in(app: TestApp) {
    let alice = app.register("alice").await;
    let (secret, recovery, _) = turn_on(&app, &alice).await;
    let next = code(&secret, 30);
    for code in [next.as_str(), recovery[0].as_str()] {
        let (a, b) = tokio::join!(
            login_with(&app, "alice", PASSWORD, Some(code)),
            login_with(&app, "alice", PASSWORD, Some(code)),
        );
        let passed = [&a, &b]
            .iter()
            .filter(|body| body.get("errors").is_none())
            .count();
        assert_eq!(passed, 1, "{a}\n{b}");
        let refused = if a.get("errors").is_some() { &a } else { &b };
        assert_code(refused, "TOTP_REQUIRED");
    }
}

/// A login with the code already accepted, which the app may still show (a second device, a
/// retry after a lost answer), says so and is not counted: past the throttle's five, the next
/// code still logs in.
async fn a_spent_code_at_login_is_not_counted(app: TestApp) {
    let alice = app.register("alice").await;
    let (secret, recovery, confirming) = turn_on(&app, &alice).await;
    assert_ok(&login_with(&app, "alice", PASSWORD, Some(&recovery[0])).await);
    for spent in [&confirming, &recovery[0]] {
        for _ in 0..4 {
            let again = login_with(&app, "alice", PASSWORD, Some(spent)).await;
            assert_code(&again, "TOTP_REQUIRED");
            assert!(again.to_string().contains("already used"), "{again}");
        }
    }
    assert_ok(&login_with(&app, "alice", PASSWORD, Some(&code(&secret, 30))).await);
}

/// A confirmation sent twice at once (a double click) turns two-factor login on once, and the
/// other answer says it is on, not that there is no setup.
async fn a_double_confirmation_says_it_is_on(app: TestApp) {
    for user in ["alice", "bob", "carol", "dave"] {
        let session = app.register(user).await;
        let (secret, _) = start_setup(&app, &session).await;
        let confirming = code(&secret, 0);
        let confirm = || {
            app.gql(
                Some(&session.access),
                CONFIRM_TOTP,
                json!({"code": confirming}),
            )
        };
        let (a, b) = tokio::join!(confirm(), confirm());
        let (on, refused) = if a.get("errors").is_none() {
            (a, b)
        } else {
            (b, a)
        };
        assert_eq!(on["data"]["confirmTotp"], true, "{on}");
        assert_code(&refused, "FORBIDDEN");
        assert_eq!(
            refused["errors"][0]["message"], "Two-factor login is already on",
            "{refused}"
        );
    }
}

/// Runs with a first wait of ten minutes: the lock the fourth login sets must still hold when
/// the fifth comes, however long the fourth's checks took.
async fn wrong_codes_count_towards_the_throttle(app: TestApp) {
    let alice = app.register("alice").await;
    // The confirmation is counted on its session, not on the account's logins.
    let (secret, _, _) = turn_on(&app, &alice).await;
    // The right password without its code (a login form's first step, sent again as often as
    // the user goes back to it) is no failure.
    for code in [None, Some(""), Some(" "), None, None] {
        assert_code(
            &login_with(&app, "alice", PASSWORD, code).await,
            "TOTP_REQUIRED",
        );
    }
    let subject = format!("user:{}", alice.id);
    assert_eq!(app.failures(&subject).await, 0);
    for _ in 0..3 {
        assert_code(
            &login_with(&app, "alice", PASSWORD, Some("000000")).await,
            "TOTP_REQUIRED",
        );
    }
    // One short of the threshold, the first step again: its count, and the lock that count
    // reached, are taken back, so the next code is still checked.
    assert_code(
        &login_with(&app, "alice", PASSWORD, None).await,
        "TOTP_REQUIRED",
    );
    assert_eq!(app.failures(&subject).await, 3);
    assert_code(
        &login_with(&app, "alice", PASSWORD, Some("000000")).await,
        "TOTP_REQUIRED",
    );
    // Throttled now: even the right password and code wait.
    assert_code(
        &login_with(&app, "alice", PASSWORD, Some(&code(&secret, 30))).await,
        "RATE_LIMITED",
    );
}

/// The right password (here `currentPassword`, for a new email) clears only the password count:
/// it cannot clear the wrong codes counted before it, or a stolen password would buy unlimited
/// guesses at the code, a few at a time. Codes given at login count on the account; passwords
/// and codes given inside a session each on their own count of that session.
async fn a_password_does_not_clear_wrong_codes(app: TestApp) {
    let alice = app.register("alice").await;
    let (secret, recovery, _) = turn_on(&app, &alice).await;
    for _ in 0..2 {
        assert_code(
            &login_with(&app, "alice", PASSWORD, Some("000000")).await,
            "TOTP_REQUIRED",
        );
        let step_up = app
            .gql(
                Some(&alice.access),
                CREATE_TOKEN,
                json!({"v": {"totpCode": "000000"}}),
            )
            .await;
        assert_code(&step_up, "BAD_USER_INPUT");
        assert_field_codes(&step_up, json!({"verification.totpCode": "INCORRECT"}));
    }
    // Two wrong passwords in the session, then a right one (a new email needs it).
    let change_email = |current: &str| json!({"id": alice.id, "input": {"email": "alice2@example.com", "currentPassword": current}});
    for _ in 0..2 {
        let wrong = app
            .gql(
                Some(&alice.access),
                UPDATE_OTHER,
                change_email("not it at all"),
            )
            .await;
        assert_code(&wrong, "BAD_USER_INPUT");
    }
    let codes = format!("session:{}:code", alice.sid());
    let passwords = format!("session:{}:password", alice.sid());
    assert_eq!(app.failures(&passwords).await, 2);
    let new_email = app
        .gql(Some(&alice.access), UPDATE_OTHER, change_email(PASSWORD))
        .await;
    assert_ok(&new_email);
    // The password cleared its own count only: the wrong codes, at login and in the session,
    // stay counted.
    assert_eq!(app.failures(&passwords).await, 0);
    assert_eq!(app.failures(&format!("user:{}", alice.id)).await, 2);
    assert_eq!(app.failures(&codes).await, 2);
    // And a right code clears only the codes' count.
    for _ in 0..2 {
        let new_password = json!({"id": alice.id, "input": {"password": "violet kettle thunder moss", "currentPassword": "not it at all"}});
        let wrong = app
            .gql(Some(&alice.access), UPDATE_OTHER, new_password)
            .await;
        assert_code(&wrong, "BAD_USER_INPUT");
    }
    let step_up = app
        .gql(
            Some(&alice.access),
            CREATE_TOKEN,
            json!({"v": {"totpCode": recovery[0]}}),
        )
        .await;
    assert_ok(&step_up);
    assert_eq!(app.failures(&codes).await, 0);
    assert_eq!(app.failures(&passwords).await, 2);
    // Not a lock of its own either: the right code still gets in.
    assert_ok(&login_with(&app, "alice", PASSWORD, Some(&code(&secret, 30))).await);
}

/// A verification given in a session that ends within the same request proves nothing: the
/// document's later step-up is refused, not let through on the right password.
async fn a_verification_in_an_ended_session_is_refused(app: TestApp) {
    let alice = app.register("alice").await;
    let body = app
        .gql(
            Some(&alice.access),
            "mutation($v: VerificationInput) { logoutEverywhere t: createApiToken(name: \"t\", verification: $v) { token } }",
            json!({"v": {"password": PASSWORD}}),
        )
        .await;
    // `t` is non-null, so its failure nulls `data` (the logout before it still happened).
    assert_eq!(body["data"], Value::Null, "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["t"]), "{body}");
    assert_code(&body, "UNAUTHENTICATED");
    assert_code(&app.me(&alice.access).await, "UNAUTHENTICATED");
    assert_eq!(app.count("SELECT count(*) FROM api_tokens").await, 0);
}

/// Two-factor changes from a session that ended earlier in the same document change nothing,
/// and spend no recovery code.
async fn two_factor_changes_in_an_ended_session_are_refused(app: TestApp) {
    let alice = app.register("alice").await;
    let (secret, _) = start_setup(&app, &alice).await;
    let confirm = app
        .gql(
            Some(&alice.access),
            "mutation($c: String!) { logoutEverywhere confirmTotp(code: $c) }",
            json!({"c": code(&secret, 0)}),
        )
        .await;
    assert_eq!(
        confirm["errors"][0]["path"],
        json!(["confirmTotp"]),
        "{confirm}"
    );
    assert_code(&confirm, "UNAUTHENTICATED");
    let alice = Session::from_payload(&login_with(&app, "alice", PASSWORD, None).await, "login");
    let on = app.gql(Some(&alice.access), TOTP_ENABLED, json!({})).await;
    assert_eq!(on["data"]["me"]["totpEnabled"], false, "{on}");

    let (_, recovery, _) = turn_on(&app, &alice).await;
    let disable = app
        .gql(
            Some(&alice.access),
            "mutation($c: String!) { logoutEverywhere \
             disableTotp(verification: {totpCode: $c}) }",
            json!({"c": recovery[0]}),
        )
        .await;
    assert_code(&disable, "UNAUTHENTICATED");
    // Still on, and the recovery code still unused.
    assert_ok(&login_with(&app, "alice", PASSWORD, Some(&recovery[0])).await);
    assert_code(
        &login_with(&app, "alice", PASSWORD, None).await,
        "TOTP_REQUIRED",
    );
}

/// A login that read the account before two-factor login was turned on, and finished after,
/// needs the code too. One hashing thread, kept busy, holds the login's password check while
/// the other session confirms.
async fn a_login_racing_the_confirmation_needs_the_code(app: TestApp) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let alice = app.register("alice").await;
    let (secret, _) = start_setup(&app, &alice).await;
    let app = &app;
    // About a second of password checks ahead of the login's.
    let busy = futures::future::join_all(
        (0..10).map(|n| async move { app.login(&format!("nobody{n}"), PASSWORD).await }),
    );
    let logged_in = AtomicBool::new(false);
    let login = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let body = login_with(app, "alice", PASSWORD, None).await;
        logged_in.store(true, Ordering::SeqCst);
        body
    };
    let confirm = async {
        // The login has read the account, two-factor login still off, and waits for its check.
        app.until_counted(&format!("user:{}", alice.id), 1).await;
        let body = app
            .gql(
                Some(&alice.access),
                CONFIRM_TOTP,
                json!({"code": code(&secret, 0)}),
            )
            .await;
        assert!(
            !logged_in.load(Ordering::SeqCst),
            "the login ended before the confirmation: the race was not run"
        );
        body
    };
    let (_, login, confirmed) = tokio::join!(busy, login, confirm);
    assert_eq!(confirmed["data"]["confirmTotp"], true, "{confirmed}");
    assert_code(&login, "TOTP_REQUIRED");
}

async fn sensitive_actions_need_a_recent_login(app: TestApp) {
    let registered = app.register("alice").await;
    let bob = app.create_user(&registered, "bob", "STANDARD").await;
    let carol = app.user_with_role(&registered, "carol", "STANDARD").await;
    let owner = app.login_as("alice").await;

    // Within the window (the login was just now) no verification is needed.
    let promoted = app
        .gql(
            Some(&owner.access),
            SET_ROLE,
            json!({"id": bob, "role": "ADMIN"}),
        )
        .await;
    assert_ok(&promoted);

    tokio::time::sleep(WAIT).await;
    // A refresh is not a login: the refreshed session still needs verification.
    let refreshed = Session::from_payload(&app.refresh(&owner.refresh).await, "refreshToken");
    let attempts = [
        (SET_ROLE, json!({"id": bob, "role": "STANDARD"})),
        (
            UPDATE_OTHER,
            json!({"id": bob, "input": {"password": "violet kettle thunder moss"}}),
        ),
        (
            UPDATE_OTHER,
            json!({"id": bob, "input": {"email": "bob.new@example.com"}}),
        ),
        (DELETE, json!({"id": carol.id})),
        (CREATE_ADMIN, json!({"input": new_user("dave", "ADMIN")})),
        (CREATE_TOKEN, json!({})),
        (ENABLE_TOTP, json!({})),
    ];
    for (query, variables) in &attempts {
        let body = app
            .gql(Some(&refreshed.access), query, variables.clone())
            .await;
        assert_code(&body, "VERIFICATION_REQUIRED");
        // A verification of blank boxes is a missing one, named on its field.
        if !query.contains("$v:") {
            continue;
        }
        let mut blank = variables.clone();
        blank["v"] = json!({"password": ""});
        let body = app.gql(Some(&refreshed.access), query, blank).await;
        support::assert_field_codes(&body, json!({"verification.password": "REQUIRED"}));
    }
    // Input that could not be created anyway is refused on its fields first, without asking
    // for (or counting) a verification.
    let mut invalid = new_user("x", "ADMIN");
    invalid["email"] = json!("not an address");
    let body = app
        .gql(
            Some(&refreshed.access),
            CREATE_ADMIN,
            json!({"input": invalid, "v": {"password": "not my password"}}),
        )
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    let fields = &body["errors"][0]["extensions"]["fields"];
    assert!(
        fields["username"].is_string() && fields["email"].is_string(),
        "{body}"
    );
    assert!(fields["verification.password"].is_null(), "{body}");
    // Nothing happened.
    let still = app.user_by_id(&owner, &bob).await;
    assert_eq!(still["data"]["user"]["role"], "ADMIN", "{still}");
    assert_eq!(still["data"]["user"]["email"], "bob@example.com", "{still}");
    assert_ok(&app.login("bob", PASSWORD).await);
    // Not sensitive: a standard user created, another's name changed.
    assert_ok(
        &app.create_user_raw(&refreshed, new_user("erin", "STANDARD"))
            .await,
    );
    assert_ok(
        &app.gql(
            Some(&refreshed.access),
            UPDATE_OTHER,
            json!({"id": bob, "input": {"firstName": "Bob"}}),
        )
        .await,
    );

    // A wrong password is refused on its field; the right one lets the action through and
    // counts as fresh for the rest of the window.
    let mut with_wrong = attempts[0].1.clone();
    with_wrong["v"] = json!({"password": "not my password"});
    let wrong = app.gql(Some(&refreshed.access), SET_ROLE, with_wrong).await;
    assert_code(&wrong, "BAD_USER_INPUT");
    assert_field_codes(&wrong, json!({"verification.password": "INCORRECT"}));
    let mut with_password = attempts[0].1.clone();
    with_password["v"] = json!({"password": PASSWORD});
    let demoted = app
        .gql(Some(&refreshed.access), SET_ROLE, with_password)
        .await;
    assert_eq!(demoted["data"]["setRole"]["role"], "STANDARD", "{demoted}");
    for (query, variables) in &attempts[1..] {
        let body = app
            .gql(Some(&refreshed.access), query, variables.clone())
            .await;
        assert_ok(&body);
    }
    assert_ok(
        &app.login("bob.new@example.com", "violet kettle thunder moss")
            .await,
    );

    // Deleting oneself cannot be undone either: a stale session needs the password too.
    let erin = app.login_as("erin").await;
    tokio::time::sleep(WAIT).await;
    assert_code(
        &app.gql(Some(&erin.access), DELETE, json!({"id": erin.id}))
            .await,
        "VERIFICATION_REQUIRED",
    );
    assert_ok(&app.login("erin", PASSWORD).await);
    assert_ok(
        &app.gql(
            Some(&erin.access),
            DELETE,
            json!({"id": erin.id, "v": {"password": PASSWORD}}),
        )
        .await,
    );
    assert_code(&app.login("erin", PASSWORD).await, "UNAUTHENTICATED");
}

async fn with_totp_on_only_the_code_verifies(app: TestApp) {
    let owner = app.register("alice").await;
    let bob = app.create_user(&owner, "bob", "STANDARD").await;
    let (secret, recovery, confirming) = turn_on(&app, &owner).await;
    tokio::time::sleep(WAIT).await;

    let by_password = app
        .gql(
            Some(&owner.access),
            SET_ROLE,
            json!({"id": bob, "role": "ADMIN", "v": {"password": PASSWORD}}),
        )
        .await;
    assert_code(&by_password, "VERIFICATION_REQUIRED");
    // The code that confirmed, which the app still shows, is told apart from a wrong one, and
    // retyping it is no guess: past the throttle's five it is still told so.
    for _ in 0..7 {
        let replayed = app
            .gql(
                Some(&owner.access),
                SET_ROLE,
                json!({"id": bob, "role": "ADMIN", "v": {"totpCode": confirming}}),
            )
            .await;
        assert_code(&replayed, "BAD_USER_INPUT");
        assert_field_codes(&replayed, json!({"verification.totpCode": "USED"}));
    }
    let wrong = app
        .gql(
            Some(&owner.access),
            SET_ROLE,
            json!({"id": bob, "role": "ADMIN", "v": {"totpCode": code(&secret, 600)}}),
        )
        .await;
    assert_field_codes(&wrong, json!({"verification.totpCode": "INCORRECT"}));
    let by_code = app
        .gql(
            Some(&owner.access),
            SET_ROLE,
            json!({"id": bob, "role": "ADMIN", "v": {"totpCode": code(&secret, 30)}}),
        )
        .await;
    assert_eq!(by_code["data"]["setRole"]["role"], "ADMIN", "{by_code}");

    tokio::time::sleep(WAIT).await;
    let by_recovery = app
        .gql(
            Some(&owner.access),
            DELETE,
            json!({"id": bob, "v": {"totpCode": recovery[0]}}),
        )
        .await;
    assert_ok(&by_recovery);
}

/// A sensitive action refused for its target or its input (a disabled new owner, a name in
/// use, a token for a disabled account or past the limit) is refused before the verification
/// is checked: the recovery code given with it is not spent, and no use is audited.
async fn refused_actions_spend_no_recovery_code(app: TestApp) {
    let owner = app.register("alice").await;
    let bob = app.create_user(&owner, "bob", "STANDARD").await;
    let carol = app.create_user(&owner, "carol", "STANDARD").await;
    assert_ok(&app.disable(&owner, &carol).await);
    let (_, recovery, _) = turn_on(&app, &owner).await;
    tokio::time::sleep(WAIT).await;
    let v = json!({"totpCode": recovery[0]});
    let token_for = "mutation($u: ID, $v: VerificationInput) { createApiToken(name: \"t\", userId: $u, verification: $v) { token } }";
    let refusals = [
        (
            SET_ROLE,
            json!({"id": carol, "role": "OWNER", "v": v}),
            "FORBIDDEN",
        ),
        (token_for, json!({"u": carol, "v": v}), "FORBIDDEN"),
        (
            CREATE_ADMIN,
            json!({"input": new_user("bob", "ADMIN"), "v": v}),
            "CONFLICT",
        ),
        (
            UPDATE_OTHER,
            json!({"id": bob, "input": {"email": "carol@example.com"}, "v": v}),
            "CONFLICT",
        ),
    ];
    for (query, variables, code) in refusals {
        let body = app.gql(Some(&owner.access), query, variables).await;
        assert_code(&body, code);
    }
    // A role already held is no change, and needs no verification.
    let same = app
        .gql(
            Some(&owner.access),
            SET_ROLE,
            json!({"id": bob, "role": "STANDARD", "v": v}),
        )
        .await;
    assert_eq!(same["data"]["setRole"]["role"], "STANDARD", "{same}");
    let used = "SELECT COUNT(*) FROM audit_log WHERE action = 'RECOVERY_CODE_USED'";
    assert_eq!(app.count(used).await, 0);
    // The code is still good.
    assert_ok(
        &app.gql(Some(&owner.access), DELETE, json!({"id": bob, "v": v}))
            .await,
    );
    assert_eq!(app.count(used).await, 1);
}

/// The same for a token refused for the limit on a user's live tokens. A verification given
/// within the step-up window is checked all the same, so the window need not pass.
async fn a_token_past_the_limit_spends_no_recovery_code(app: TestApp) {
    let owner = app.register("alice").await;
    let bob = app.create_user(&owner, "bob", "STANDARD").await;
    let issue = "mutation($u: ID, $v: VerificationInput) { createApiToken(name: \"t\", userId: $u, verification: $v) { token } }";
    for _ in 0..100 {
        assert_ok(&app.gql(Some(&owner.access), issue, json!({"u": bob})).await);
    }
    let (_, recovery, _) = turn_on(&app, &owner).await;
    let v = json!({"totpCode": recovery[0]});
    let refused = app
        .gql(Some(&owner.access), issue, json!({"u": bob, "v": v}))
        .await;
    assert_code(&refused, "FORBIDDEN");
    let used = "SELECT COUNT(*) FROM audit_log WHERE action = 'RECOVERY_CODE_USED'";
    assert_eq!(app.count(used).await, 0);
    assert_ok(&app.gql(Some(&owner.access), issue, json!({"v": v})).await);
    assert_eq!(app.count(used).await, 1);
}

/// The authenticator app lists the account under its name as it is when the setup starts,
/// renamed earlier in the same document too.
async fn the_setup_names_the_account_as_it_is_then(app: TestApp) {
    let sam = app.register("sam").await;
    let body = app
        .gql(
            Some(&sam.access),
            "mutation($me: ID!) { a: updateUser(id: $me, input: {username: \"sam2\"}) { username } \
             b: enableTotp { uri } }",
            json!({"me": sam.id}),
        )
        .await;
    assert_ok(&body);
    let uri = body["data"]["b"]["uri"].as_str().expect("uri");
    assert!(uri.contains(":sam2?"), "{uri}");
}

/// The step-up window of these tests, and a wait that outlasts it. A verification must stay
/// fresh over several actions after it, two of which hash a password: on a busy machine
/// those can take seconds.
const WINDOW: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_millis(5_300);

/// `totpEnabled`, `sessions` and `apiTokens` over a page of users are one batched query each,
/// whatever the page size, and each user gets their own.
async fn credential_fields_over_a_page_are_batched(app: TestApp) {
    let owner = app.register("owner").await;
    for i in 0..8 {
        app.create_user(&owner, &format!("member{i:02}"), "STANDARD")
            .await;
    }
    assert_ok(&app.login("member00", PASSWORD).await);
    assert_ok(&app.gql(Some(&owner.access), CREATE_TOKEN, json!({})).await);
    turn_on(&app, &owner).await;
    let query = "query($first: Int) { users(first: $first) { nodes { username totpEnabled sessions { id } apiTokens { name } } } }";
    let mut costs = Vec::new();
    for first in [3, 9, 3, 9] {
        let before = app.statement_count();
        let body = app
            .gql(Some(&owner.access), query, json!({ "first": first }))
            .await;
        costs.push(app.statement_count() - before);
        assert_ok(&body);
        let nodes = body["data"]["users"]["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), first, "{body}");
        for node in nodes {
            let name = node["username"].as_str().expect("username");
            let count = |field: &str| node[field].as_array().map(Vec::len);
            assert_eq!(node["totpEnabled"], name == "owner", "{body}");
            let sessions = usize::from(name == "owner" || name == "member00");
            assert_eq!(count("sessions"), Some(sessions), "{body}");
            assert_eq!(
                count("apiTokens"),
                Some(usize::from(name == "owner")),
                "{body}"
            );
        }
    }
    assert_eq!(costs[0], costs[1], "statements for 3 users vs 9: {costs:?}");
    assert_eq!(costs[2], costs[3], "statements for 3 users vs 9: {costs:?}");
    assert!(costs[1] <= 5, "{costs:?} statements for one page");
}

fn short_window(settings: &mut rollcall::config::Settings) {
    settings.step_up_window = WINDOW;
}

/// Several `disableTotp` at once, each with its own unused recovery code: one turns it off,
/// the others answer `false` (nothing left), none is told its code is wrong.
async fn disables_at_once_turn_it_off_once(app: TestApp) {
    let alice = app.register("alice").await;
    let (_, codes, _) = turn_on(&app, &alice).await;
    let disables = codes.iter().take(5).map(|code| {
        app.gql(
            Some(&alice.access),
            DISABLE,
            json!({"v": {"totpCode": code}}),
        )
    });
    let answers = futures::future::join_all(disables).await;
    let mut turned_off = 0;
    for body in &answers {
        match &body["data"]["disableTotp"] {
            Value::Bool(true) => turned_off += 1,
            Value::Bool(false) => {}
            _ => panic!("neither true nor false: {body}"),
        }
    }
    assert_eq!(turned_off, 1, "{answers:?}");
    let off = app.gql(Some(&alice.access), TOTP_ENABLED, json!({})).await;
    assert_eq!(off["data"]["me"]["totpEnabled"], false, "{off}");
}

/// A code is accepted only while the secret it was checked against is still the one in place:
/// replaced meanwhile (held here between a login's check of the code and its use), the old
/// secret's code lets nobody in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_code_of_a_secret_replaced_meanwhile_is_refused() {
    let Some(app) = TestApp::spawn(support::Backend::Postgres).await else {
        return;
    };
    let alice = app.register("alice").await;
    let (secret, _, _) = turn_on(&app, &alice).await;
    // The next step's code: the confirmation used up this one.
    let old_code = code(&secret, 30);
    let replacement = [format!(
        "UPDATE user_totp SET secret = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP' WHERE user_id = '{}'",
        alice.id
    )];
    let login = login_with(&app, "alice", PASSWORD, Some(&old_code));
    let body = app.while_held(&replacement, 1, login).await;
    assert_code(&body, "TOTP_REQUIRED");
    // Neither wrong nor spent: the factor changed under it, and it is not counted.
    assert!(body.to_string().contains("changed meanwhile"), "{body}");
    assert_eq!(app.failures(&format!("user:{}", alice.id)).await, 0);
}

/// A sensitive action's new password is hashed before its verification is checked: here the
/// hashing queue fills while the verification waits (the caller's row held by the test), and
/// the action still goes through, rather than answering "busy" with its recovery code spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_busy_hashing_queue_spends_no_recovery_code() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    use std::sync::atomic::{AtomicBool, Ordering};

    let Some(app) =
        TestApp::spawn_with(support::Backend::Postgres, |s| s.hash_concurrency = Some(1)).await
    else {
        return;
    };
    let owner = app.register("owner").await;
    let bob = app.create_user(&owner, "bob", "STANDARD").await;
    let (_, recovery, _) = turn_on(&app, &owner).await;
    let actions = [
        (
            UPDATE_OTHER,
            json!({"id": bob, "input": {"password": "a brand new passphrase"}}),
        ),
        (CREATE_ADMIN, json!({"input": new_user("carol", "ADMIN")})),
    ];
    for ((query, mut variables), code) in actions.into_iter().zip(&recovery) {
        variables["v"] = json!({"totpCode": code});
        let db = app.database().await;
        let hold = db.begin().await.expect("begin");
        let lock = format!("SELECT id FROM users WHERE id = '{}' FOR UPDATE", owner.id);
        hold.execute_unprepared(&lock).await.expect("locked");
        let stop = AtomicBool::new(false);
        let (stop, app) = (&stop, &app);
        // Wrong logins keep the queue full until the action has its answer.
        let fill = |i: usize| async move {
            for round in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                app.login(&format!("nobody{i}x{round}"), "wrong").await;
            }
        };
        let action = async {
            let answer = app.gql(Some(&owner.access), query, variables).await;
            stop.store(true, Ordering::Relaxed);
            answer
        };
        // Once the action waits for the verification's lock, the queue fills; then it goes on.
        let release = async {
            app.until_waiting_for_locks(1).await;
            let full = async {
                support::eventually("the hashing queue to fill", async || {
                    metric(&app.metrics().await, "rollcall_password_hash_queue") >= 32.0
                })
                .await;
                hold.commit().await.expect("commit");
            };
            tokio::join!(full, futures::future::join_all((0..40).map(fill)));
        };
        let (answer, ()) = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::join!(action, release)
        })
        .await
        .expect("answered");
        assert_ok(&answer);
        let _ = db.close().await;
    }
    let used = "SELECT COUNT(*) FROM audit_log WHERE action = 'RECOVERY_CODE_USED'";
    assert_eq!(app.count(used).await, 2);
}

/// A login with a recovery code audits the code's use and the login with the role the user
/// has once they commit: one changed while it ran (held open by the test) is the one shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_recovery_code_login_records_the_role_changed_while_it_ran() {
    let Some(app) = TestApp::spawn(support::Backend::Postgres).await else {
        return;
    };
    let owner = app.register("owner").await;
    app.create_user(&owner, "bob", "STANDARD").await;
    let bob = app.login_as("bob").await;
    let (_, codes, _) = turn_on(&app, &bob).await;
    let promotion = [format!(
        "UPDATE users SET role = 'ADMIN' WHERE id = '{}'",
        bob.id
    )];
    let login = login_with(&app, "bob", PASSWORD, Some(&codes[0]));
    let body = app.while_held(&promotion, 1, login).await;
    assert_ok(&body);
    assert_eq!(body["data"]["login"]["user"]["role"], "ADMIN", "{body}");
    // Bob's first login was as a standard user; this one, with the code, as an admin.
    for (action, before) in [("RECOVERY_CODE_USED", 0), ("LOGGED_IN", 1)] {
        let audited = |role| {
            format!(
                "SELECT count(*) FROM audit_log WHERE action = '{action}' \
                 AND target_id = '{}' AND target_role = '{role}' AND actor_role = '{role}'",
                bob.id
            )
        };
        assert_eq!(app.count(&audited("STANDARD")).await, before, "{action}");
        assert_eq!(app.count(&audited("ADMIN")).await, 1, "{action}");
    }
}

backend_tests!(
    a_spent_code_at_login_is_not_counted,
    disables_at_once_turn_it_off_once,
    a_double_confirmation_says_it_is_on,
    the_issuer_is_the_operators with |s| s.totp_issuer = "Example Co".into(),
    // These logins fail on purpose more often than the default throttle allows.
    totp_is_enforced_once_confirmed with |s| s.throttle_after = 20,
    wrong_codes_count_towards_the_throttle with |s| {
        s.throttle_after = 4;
        s.throttle_wait = std::time::Duration::from_secs(600);
    },
    a_password_does_not_clear_wrong_codes with |s| s.throttle_after = 4,
    a_verification_in_an_ended_session_is_refused,
    two_factor_changes_in_an_ended_session_are_refused,
    a_login_racing_the_confirmation_needs_the_code with |s| s.hash_concurrency = Some(1),
    a_code_raced_twice_lets_one_login_in with |s| s.throttle_after = 20,
    sensitive_actions_need_a_recent_login with super::short_window,
    with_totp_on_only_the_code_verifies with super::short_window,
    refused_actions_spend_no_recovery_code with super::short_window,
    a_token_past_the_limit_spends_no_recovery_code,
    the_setup_names_the_account_as_it_is_then,
    credential_fields_over_a_page_are_batched,
);

/// A `verification` checked and a `confirmTotp` each count against the client's IP, like a
/// login: both check a credential.
#[tokio::test]
async fn the_ip_limit_counts_verifications_and_code_confirmations() {
    for first in ["verification", "confirmTotp"] {
        let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| s.ip_rate_limit = 2).await else {
            return;
        };
        // The registration is the first attempt.
        let alice = app.register("alice").await;
        let (body, field) = match first {
            "verification" => (
                app.gql(
                    Some(&alice.access),
                    CREATE_TOKEN,
                    json!({"v": {"password": "not my password"}}),
                )
                .await,
                "verification.password",
            ),
            _ => {
                // Setting up asks for no credential; confirming checks a code.
                start_setup(&app, &alice).await;
                (
                    app.gql(Some(&alice.access), CONFIRM_TOTP, json!({"code": "000000"}))
                        .await,
                    "code",
                )
            }
        };
        assert_code(&body, "BAD_USER_INPUT");
        assert_field_codes(&body, json!({ field: "INCORRECT" }));
        // The second attempt took the last place: the next credential is refused.
        assert_code(&app.login("alice", PASSWORD).await, "RATE_LIMITED");
    }
}

#[tokio::test]
async fn a_verification_box_the_user_does_not_need_is_no_attempt() {
    for totp in [false, true] {
        let limit = if totp { 3 } else { 2 };
        let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| s.ip_rate_limit = limit).await
        else {
            return;
        };
        // The registration is the first attempt, a confirmation the second.
        let alice = app.register("alice").await;
        // A form that always sends both boxes, the one this user needs left empty.
        let (sent, field) = if totp {
            turn_on(&app, &alice).await;
            (
                json!({"password": PASSWORD, "totpCode": ""}),
                "verification.totpCode",
            )
        } else {
            (
                json!({"password": "", "totpCode": "123456"}),
                "verification.password",
            )
        };
        for _ in 0..3 {
            let body = app
                .gql(Some(&alice.access), CREATE_TOKEN, json!({ "v": sent }))
                .await;
            assert_field_codes(&body, json!({ field: "REQUIRED" }));
        }
        // None of them took the last place, which the next credential does.
        assert_code(
            &app.login("alice", "not my password").await,
            "UNAUTHENTICATED",
        );
        assert_code(&app.login("alice", PASSWORD).await, "RATE_LIMITED");
    }
}
