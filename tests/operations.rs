//! The people who call and run rollcall: browsers on other origins (CORS), GraphQL over HTTP
//! to the letter, request ids, request logs and metrics.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;

const APP: &str = "https://app.example.com";

async fn spawn(tweak: impl FnOnce(&mut rollcall::config::Settings)) -> Option<TestApp> {
    TestApp::spawn_with(Backend::Sqlite, tweak).await
}

#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let Some(app) = spawn(|s| {
        s.cors_origins =
            rollcall::config::List(vec![rollcall::config::parse_origin(APP).expect("origin")]);
    })
    .await
    else {
        return;
    };
    let preflight = |origin: &str| {
        app.client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/graphql", app.base_url()),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, authorization, apollographql-client-name, traceparent",
            )
            .send()
    };
    let allowed = preflight(APP).await.expect("sent");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], APP);
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("content-type"),
        "{allowed_headers}"
    );
    // Headers client libraries and tracing SDKs add are allowed too.
    for name in ["authorization", "apollographql-client-name", "traceparent"] {
        assert!(allowed_headers.contains(name), "{allowed_headers}");
    }
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .expect("ascii")
            .contains("POST")
    );
    assert_eq!(headers["access-control-max-age"], "600");

    let refused = preflight("https://evil.example.com").await.expect("sent");
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    // The actual request from an allowed origin carries the header; others' do not.
    for (origin, expected) in [(APP, Some(APP)), ("https://evil.example.com", None)] {
        let response = app
            .post()
            .header("origin", origin)
            .json(&json!({"query": SERVER_INFO}))
            .send()
            .await
            .expect("sent");
        let header = response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().expect("ascii").to_owned());
        assert_eq!(header.as_deref(), expected, "{origin}");
    }

    // Pages on other origins read the keys too; other paths are no API, and OPTIONS there is
    // answered as any other method is.
    let options = |path: &'static str| {
        app.client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}{path}", app.base_url()),
            )
            .header("origin", APP)
            .header("access-control-request-method", "GET")
            .send()
    };
    let keys = options("/.well-known/jwks.json").await.expect("sent");
    assert!(keys.status().is_success(), "{}", keys.status());
    assert_eq!(keys.headers()["access-control-allow-origin"], APP);
    assert_eq!(keys.headers()["access-control-allow-methods"], "GET");
    let posted = app
        .client
        .post(format!("{}/.well-known/jwks.json", app.base_url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(posted.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(posted.headers()["allow"], "GET,HEAD");
    for (path, status) in [
        ("/nope", StatusCode::NOT_FOUND),
        ("/health", StatusCode::METHOD_NOT_ALLOWED),
        ("/metrics", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let answer = options(path).await.expect("sent");
        assert_eq!(answer.status(), status, "{path}");
        assert!(
            answer
                .headers()
                .get("access-control-allow-methods")
                .is_none(),
            "{path}"
        );
    }
}

#[tokio::test]
async fn without_configured_origins_no_origin_is_allowed() {
    let Some(app) = spawn(|_| {}).await else {
        return;
    };
    let response = app
        .post()
        .header("origin", APP)
        .json(&json!({"query": SERVER_INFO}))
        .send()
        .await
        .expect("sent");
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn the_request_id_goes_round_trip() {
    let Some(app) = spawn(|_| {}).await else {
        return;
    };
    let response = app
        .post()
        .header("x-request-id", "trace-me-42")
        .json(&json!({"query": SERVER_INFO}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    let response = app
        .post()
        .json(&json!({"query": SERVER_INFO}))
        .send()
        .await
        .expect("sent");
    let generated = response.headers()["x-request-id"].to_str().expect("ascii");
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    // An id the log could not show as sent is replaced, in the response as in the log.
    let long = "x".repeat(129);
    let unusable: [&[u8]; 5] = [b"", b"   ", b"caf\xc3\xa9", b"a\tb", long.as_bytes()];
    for id in unusable {
        let response = app
            .post()
            .header(
                "x-request-id",
                reqwest::header::HeaderValue::from_bytes(id).expect("value"),
            )
            .json(&json!({"query": SERVER_INFO}))
            .send()
            .await
            .expect("sent");
        let echoed = response.headers()["x-request-id"].to_str().expect("ascii");
        assert!(uuid::Uuid::parse_str(echoed).is_ok(), "{id:?}: {echoed}");
    }
}

/// GraphQL over HTTP: the media type follows `Accept`, with its status codes.
#[tokio::test]
async fn responses_follow_the_graphql_over_http_spec() {
    let Some(app) = spawn(|_| {}).await else {
        return;
    };
    let send = |accept: &'static str, query: &'static str| {
        app.post()
            .header("accept", accept)
            .json(&json!({"query": query}))
            .send()
    };
    const GRAPHQL: &str = "application/graphql-response+json";
    let ok = send(GRAPHQL, SERVER_INFO).await.expect("sent");
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(
        ok.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with(GRAPHQL)
    );
    // A document that fails validation: 400 and no `data` with the GraphQL media type...
    let invalid = send(GRAPHQL, "{ nonsense }").await.expect("sent");
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    let body: Value = invalid.json().await.expect("json");
    assert!(body.get("data").is_none(), "{body}");
    assert!(body["errors"][0]["message"].is_string(), "{body}");
    // ...and 200 for clients that only know application/json.
    let legacy = send("application/json", "{ nonsense }")
        .await
        .expect("sent");
    assert_eq!(legacy.status(), StatusCode::OK);
    assert!(
        legacy.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/json")
    );
    // Either way a request that never ran has no `data` entry, not even null.
    let body: Value = legacy.json().await.expect("json");
    assert!(body.get("data").is_none(), "{body}");
    assert!(body["errors"][0]["message"].is_string(), "{body}");
    // A field error during execution is still a 200 with data.
    let unauthenticated = send(GRAPHQL, "{ me { id } }").await.expect("sent");
    assert_eq!(unauthenticated.status(), StatusCode::OK);
    let body: Value = unauthenticated.json().await.expect("json");
    assert_code(&body, "UNAUTHENTICATED");
    // Refusals made before GraphQL runs come in the media type asked for too (Apollo Client 4
    // reads a non-2xx body's errors only under it), and every answer varies by `Accept`.
    for (body, status) in [
        ("[]", StatusCode::BAD_REQUEST),
        ("{", StatusCode::BAD_REQUEST),
        ("{\"variables\": {}}", StatusCode::BAD_REQUEST),
    ] {
        let refused = app
            .post()
            .header("accept", GRAPHQL)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(refused.status(), status, "{body}");
        assert!(
            refused.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with(GRAPHQL),
            "{body}"
        );
        assert_eq!(refused.headers()["vary"], "accept", "{body}");
        let answer: Value = refused.json().await.expect("json");
        assert_code(&answer, "BAD_REQUEST");
    }
    let other_method = app
        .client
        .put(format!("{}/graphql", app.base_url()))
        .header("accept", GRAPHQL)
        .send()
        .await
        .expect("sent");
    assert_eq!(other_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(other_method.headers()["allow"], "GET, HEAD, POST, OPTIONS");
    assert!(
        other_method.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with(GRAPHQL)
    );
    let answer: Value = other_method.json().await.expect("json");
    assert_code(&answer, "METHOD_NOT_ALLOWED");
    // Neither media type acceptable: 406.
    let html = send("text/html", SERVER_INFO).await.expect("sent");
    assert_eq!(html.status(), StatusCode::NOT_ACCEPTABLE);
    // The client's preference by quality decides.
    let prefers_json = send(
        "application/json;q=1, application/graphql-response+json;q=0.1",
        "{ nonsense }",
    )
    .await
    .expect("sent");
    assert_eq!(prefers_json.status(), StatusCode::OK);
    // A non-null variable left out or sent as null: refused before anything runs.
    let login = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }";
    for variables in [json!({}), json!({"i": null})] {
        let response = app
            .post()
            .header("accept", GRAPHQL)
            .json(&json!({"query": login, "variables": variables}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{variables}");
        let body: Value = response.json().await.expect("json");
        assert!(body.get("data").is_none(), "{body}");
        assert_code(&body, "BAD_USER_INPUT");
    }
}

/// A failed field is null, and a failed non-null one nulls its nearest nullable parent, or
/// `data` itself: what a client generated from the schema can represent.
#[tokio::test]
async fn failed_fields_are_null_up_to_a_nullable_parent() {
    let Some(app) = spawn(|_| {}).await else {
        return;
    };
    let owner = app.register("alice").await;
    app.create_user(&owner, "bob", "STANDARD").await;
    let bob = Session::from_payload(&app.login("bob", PASSWORD).await, "login");
    // `me` is non-null: without a token, nothing of the document is left.
    let anonymous = app
        .gql(None, "{ serverInfo { name } me { id } }", json!({}))
        .await;
    assert_eq!(anonymous["data"], Value::Null, "{anonymous}");
    assert_eq!(anonymous["errors"][0]["path"], json!(["me"]), "{anonymous}");
    assert_code(&anonymous, "UNAUTHENTICATED");
    // `user` is nullable: it alone is null, named by its alias.
    let bad_id = app
        .gql(
            Some(&bob.access),
            "{ me { username } someone: user(id: \"not an id\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        bad_id["data"],
        json!({"me": {"username": "bob"}, "someone": null}),
        "{bad_id}"
    );
    assert_eq!(bad_id["errors"][0]["path"], json!(["someone"]), "{bad_id}");
    // Alone, too (async-graphql would answer `data: null`).
    let alone = app
        .gql(
            Some(&bob.access),
            "{ user(id: \"not an id\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(alone["data"], json!({"user": null}), "{alone}");
    // A standard user's `users` (non-null) takes the whole document with it.
    let list = app
        .gql(
            Some(&bob.access),
            "{ me { username } users(first: 1) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(list["data"], Value::Null, "{list}");
    assert_code(&list, "FORBIDDEN");
}

/// Fields come back in the order asked for, whichever finishes first (async-graphql writes
/// concurrently resolved fields as they finish).
/// Errors point at the line an editor shows, whichever line ends the document uses: a
/// carriage return alone ends a line too.
#[tokio::test]
async fn error_locations_count_every_kind_of_line_end() {
    let Some(app) = spawn(|_| {}).await else {
        return;
    };
    for end in ["\n", "\r\n", "\r"] {
        let query = ["{", "  me {", "    nope", "  }", "}"].join(end);
        let body = app.gql(None, &query, json!({})).await;
        assert_eq!(
            body["errors"][0]["locations"],
            json!([{"line": 3, "column": 5}]),
            "{end:?}: {body}"
        );
    }
    // Fragments refused before validation are placed too: where one is defined, or spread.
    for (query, line, column) in [
        ("{ me { id } }\nfragment F on User { id }", 2, 1),
        ("{ me { ...G } }", 1, 11),
        ("{ me { ...F } }\n\nfragment F on User { ...F }", 3, 1),
    ] {
        let body = app.gql(None, query, json!({})).await;
        assert_eq!(
            body["errors"][0]["locations"],
            json!([{"line": line, "column": column}]),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn fields_come_back_in_the_order_asked_for() {
    let Some(app) = spawn(|_| {}).await else {
        return;
    };
    let owner = app.register("alice").await;
    let query = "{ s: serverInfo { name } me { username } users(first: 1) { totalCount nodes { id } } \
                 auditLog(first: 1) { edges { node { target { username } actor { username } id } } } }";
    let keys = [
        "\"s\"",
        "\"me\"",
        "\"users\"",
        "\"totalCount\"",
        "\"nodes\"",
        "\"auditLog\"",
        "\"target\"",
        "\"actor\"",
    ];
    // Fields that wait (a database read, a DataLoader) before ones that do not, at the root
    // (which async-graphql resolves concurrently whatever the type says) and below it.
    let waiting_first = "{ me { username } serverInfo { name } \
                         users(first: 1) { edges { node { createdBy { username } } cursor } \
                         pageInfo { hasNextPage } } \
                         auditLog(first: 1) { edges { node { actor { username } } cursor } \
                         pageInfo { endCursor } } }";
    let waiting_keys = [
        "\"me\"",
        "\"serverInfo\"",
        "\"users\"",
        "\"createdBy\"",
        "\"cursor\"",
        "\"hasNextPage\"",
        "\"auditLog\"",
        "\"actor\"",
        "\"endCursor\"",
    ];
    // The body as text: parsed, an object's keys are sorted.
    let text_of = |body: Value| {
        let request = app.post().bearer_auth(&owner.access).json(&body);
        async move {
            let response = request.send().await.expect("sent");
            response.text().await.expect("body")
        }
    };
    // An API token's creator waits for a DataLoader, in a list and in a mutation's payload.
    let tokens = "{ me { apiTokens { createdBy { username } name id } } }";
    let token_keys = ["\"createdBy\"", "\"name\"", "\"id\""];
    // A root field selected twice, the first occurrence waiting for a DataLoader: the merged
    // object keeps the document's order, not the order the occurrences finished in.
    let repeated = "{ me { sessions { id } } me { username } }";
    let repeated_keys = ["\"sessions\"", "\"id\"", "\"username\""];
    let created = text_of(json!({"query": "mutation { createApiToken(name: \"ci\") { apiToken { createdBy { id } name } token } }"})).await;
    let at = |text: &str, key: &str| text.find(key).unwrap_or_else(|| panic!("{key} in {text}"));
    assert!(
        at(&created, "createdBy") < at(&created, "\"name\""),
        "{created}"
    );
    assert!(
        at(&created, "\"name\"") < at(&created, "\"token\""),
        "{created}"
    );
    for _ in 0..20 {
        for (query, keys) in [
            (query, &keys[..]),
            (waiting_first, &waiting_keys[..]),
            (tokens, &token_keys[..]),
            (repeated, &repeated_keys[..]),
        ] {
            let text = text_of(json!({"query": query})).await;
            let at: Vec<usize> = keys
                .iter()
                .map(|key| text.find(key).unwrap_or_else(|| panic!("{key} in {text}")))
                .collect();
            assert!(at.windows(2).all(|pair| pair[0] < pair[1]), "{text}");
        }
    }
    // A field refused in one row of a page keeps its place in that row: an admin sees no
    // owner's sessions.
    app.create_user(&owner, "adam", "ADMIN").await;
    let admin = app.login_as("adam").await;
    let page = app
        .post()
        .bearer_auth(&admin.access)
        .json(&json!({"query": "{ users(first: 5) { nodes { username sessions { id } role } } }"}))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("body");
    assert!(page.contains("FORBIDDEN"), "{page}");
    for row in page.split("\"username\"").skip(1) {
        let (sessions, role) = (row.find("\"sessions\""), row.find("\"role\""));
        assert!(sessions.is_some() && sessions < role, "{page}");
    }
    // A sign-in payload's user before its tokens.
    let login = text_of(json!({
        "query": "mutation($i: LoginInput!) { login(input: $i) { \
                  user { createdBy { id } username } accessToken } }",
        "variables": {"i": {"login": "alice", "password": PASSWORD}},
    }))
    .await;
    assert!(
        login.find("\"user\"") < login.find("\"accessToken\""),
        "{login}"
    );
    // Every root field skipped: an empty `data`, not a null one.
    let skipped = app
        .gql(None, "{ serverInfo @skip(if: true) { name } }", json!({}))
        .await;
    assert_eq!(skipped, json!({"data": {}}));
    // An object whose every field was skipped is an empty object where null cannot be.
    let skipped = app
        .gql(
            Some(&owner.access),
            "query($d: Boolean! = false) { serverInfo { name @include(if: $d) } \
             users(first: 1) { nodes { id @include(if: $d) } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        skipped,
        json!({"data": {"serverInfo": {}, "users": {"nodes": [{}]}}})
    );
}

/// An input field given as a variable the request leaves out is left out too (the
/// specification's input coercion), not set to null: a profile form sending only what changed
/// keeps the rest.
#[tokio::test]
async fn a_variable_left_out_leaves_its_input_field_out() {
    let Some(app) = spawn(|_| {}).await else {
        return;
    };
    let owner = app.register("alice").await;
    let update = "mutation($id: ID!, $first: String, $phone: String) { \
                  updateUser(id: $id, input: {firstName: $first, phone: $phone}) { firstName phone } }";
    let body = app
        .gql(
            Some(&owner.access),
            update,
            json!({"id": owner.id, "first": "Alice", "phone": "+44 20 7946 0000"}),
        )
        .await;
    assert_eq!(
        body["data"]["updateUser"],
        json!({"firstName": "Alice", "phone": "+44 20 7946 0000"}),
        "{body}"
    );
    let body = app
        .gql(
            Some(&owner.access),
            update,
            json!({"id": owner.id, "first": "Al"}),
        )
        .await;
    assert_eq!(
        body["data"]["updateUser"],
        json!({"firstName": "Al", "phone": "+44 20 7946 0000"}),
        "{body}"
    );
    // Sent as null, it clears.
    let body = app
        .gql(
            Some(&owner.access),
            update,
            json!({"id": owner.id, "first": "Al", "phone": null}),
        )
        .await;
    assert_eq!(
        body["data"]["updateUser"],
        json!({"firstName": "Al", "phone": null}),
        "{body}"
    );
}

/// Whether a document is valid does not depend on the variables a request leaves out: an
/// unused, undefined or twice-declared variable, or two fields of one name with different
/// arguments, are refused whether or not the variable beside them is sent.
#[tokio::test]
async fn a_left_out_variable_hides_no_validation_error() {
    let Some(app) = spawn(|_| {}).await else {
        return;
    };
    let owner = app.register("alice").await;
    for query in [
        "query($s: String, $t: String) { users(filter: {search: $s}) { totalCount } }",
        "query($s: String) { users(filter: {search: $s, role: $undefined}) { totalCount } }",
        "query($s: String, $s: String) { users(filter: {search: $s}) { totalCount } }",
        "query($s: String) { users(filter: {search: $s}) { totalCount } \
         users(filter: {}) { totalCount } }",
        // No directive is allowed on a variable definition.
        "query($s: String @skip(if: true)) { users(filter: {search: $s}) { totalCount } }",
        "query($s: String @deprecated) { users(filter: {search: $s}) { totalCount } }",
        // An input object beside a left-out variable is checked all the same.
        "query($s: String) { users(filter: {search: $s, bogus: 1}) { totalCount } }",
        "query($s: String, $r: Role) { users(filter: {search: 5, role: $r}) { totalCount } }",
        "query($s: String, $r: Role) { users(filter: {search: $s, role: NOPE}) { totalCount } }",
    ] {
        for variables in [json!({}), json!({"s": "a"})] {
            let body = app.gql(Some(&owner.access), query, variables.clone()).await;
            assert!(
                body.get("data").is_none() && body["errors"][0]["message"].is_string(),
                "{query} with {variables}: {body}"
            );
        }
    }
    // A variable's value beside a left-out one, too.
    let query =
        "query($s: String, $r: Role) { users(filter: {search: $s, role: $r}) { totalCount } }";
    let body = app
        .gql(Some(&owner.access), query, json!({"r": "admin"}))
        .await;
    assert!(body.get("data").is_none(), "{body}");
}

/// Fields under one response key merge when they ask for the same thing, and the document is
/// refused when they do not, wherever they are written (async-graphql compared only fields
/// side by side, and answered one of two nested ones).
#[tokio::test]
async fn fields_under_one_key_merge_or_refuse_the_document() {
    let Some(app) = spawn(|_| {}).await else {
        return;
    };
    let owner = app.register("alice").await;
    let token = Some(owner.access.as_str());
    let body = app
        .gql(
            token,
            "{ me { id } ...F } fragment F on Query { me { username } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["data"]["me"],
        json!({"id": owner.id, "username": "alice"}),
        "{body}"
    );
    for query in [
        "{ me { x: id } me { x: username } }",
        "{ me { ...F x: username } } fragment F on User { x: id }",
        "{ x: me { id } ... on Query { x: serverInfo { name } } }",
    ] {
        let body = app.gql(token, query, json!({})).await;
        assert!(body.get("data").is_none(), "{query}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("\"x\" conflict"), "{query}: {body}");
    }
}

/// Introspection's arguments are checked like the schema's: a nullable variable where
/// `__type` needs a name is refused before anything runs.
#[tokio::test]
async fn introspection_arguments_take_variables_of_their_type_only() {
    let Some(app) = spawn(|_| {}).await else {
        return;
    };
    let lookup = |ty: &str| format!("query($n: {ty}) {{ __type(name: $n) {{ name }} }}");
    let body = app.gql(None, &lookup("String"), json!({"n": "User"})).await;
    assert!(body.get("data").is_none(), "{body}");
    let body = app
        .gql(None, &lookup("String!"), json!({"n": "User"}))
        .await;
    assert_eq!(body["data"]["__type"]["name"], "User", "{body}");
    let fields =
        "query($d: Boolean!) { __type(name: \"User\") { fields(includeDeprecated: $d) { name } } }";
    let body = app.gql(None, fields, json!({"d": true})).await;
    assert!(body["data"]["__type"]["fields"].is_array(), "{body}");
}

/// An input value of the wrong kind (an input object as a string, an enum as a string literal)
/// refuses the request before anything runs: the mutation's earlier fields do not happen.
#[tokio::test]
async fn input_values_of_the_wrong_kind_are_refused_before_anything_runs() {
    let Some(app) = spawn(|_| {}).await else {
        return;
    };
    let owner = app.register("alice").await;
    let refused = |query: &'static str, variables: Value| {
        let app = &app;
        let token = owner.access.clone();
        async move {
            let response = app
                .post()
                .bearer_auth(&token)
                .header("accept", "application/graphql-response+json")
                .json(&json!({"query": query, "variables": variables}))
                .send()
                .await
                .expect("sent");
            let status = response.status();
            let body: Value = response.json().await.expect("json");
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query} {body}");
            assert!(body.get("data").is_none(), "{body}");
            assert_code(&body, "BAD_USER_INPUT");
        }
    };
    let both = "mutation($i: CreateUserInput!) { createApiToken(name: \"first\") { token } \
                createUser(input: $i) { id } }";
    for wrong in [json!("x"), json!([1, 2]), json!(true), json!(5)] {
        refused(both, json!({"i": wrong})).await;
    }
    refused(
        "mutation { createApiToken(name: \"first\") { token } createUser(input: \"x\") { id } }",
        json!({}),
    )
    .await;
    refused(
        "query($f: UserFilter) { users(filter: $f) { totalCount } }",
        json!({"f": "x"}),
    )
    .await;
    refused(
        "{ users(filter: { role: \"STANDARD\" }) { totalCount } }",
        json!({}),
    )
    .await;
    refused(
        "query($r: Role = \"ADMIN\") { users(filter: { role: $r }) { totalCount } }",
        json!({}),
    )
    .await;
    // A variable whose type does not fit where it is used, even when its value would.
    let fits_not = [
        (
            "mutation($i: RegisterInput!) { createApiToken(name: \"first\") { token } \
             createUser(input: $i) { id } }",
            json!({"i": {"username": "zed", "email": "zed@example.com", "password": "seven amber kites 99"}}),
        ),
        (
            "mutation($r: String!) { createApiToken(name: \"first\") { token } \
             setRole(id: \"00000000-0000-0000-0000-000000000000\", role: $r) { id } }",
            json!({"r": "ADMIN"}),
        ),
        // Nullable where a value is required, with no default to stand in.
        (
            "mutation($r: Role) { createApiToken(name: \"first\") { token } \
             setRole(id: \"00000000-0000-0000-0000-000000000000\", role: $r) { id } }",
            json!({}),
        ),
        (
            "query($s: Boolean) { serverInfo @skip(if: $s) { name } }",
            json!({"s": true}),
        ),
    ];
    for (query, variables) in fits_not {
        refused(query, variables).await;
    }
    // A fragment that spreads itself is refused, not walked for ever.
    refused(
        "query { ...A } fragment A on Query { ...A serverInfo { name } }",
        json!({}),
    )
    .await;
    // Another operation of the document is checked too, though only one runs.
    let response = app
        .post()
        .header("accept", "application/graphql-response+json")
        .json(&json!({
            "query": "query A { serverInfo { name } } \
                      query B { users(filter: { role: \"ADMIN\" }) { totalCount } }",
            "operationName": "A",
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let tokens = app
        .gql(
            Some(&owner.access),
            "{ me { apiTokens { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(tokens["data"]["me"]["apiTokens"], json!([]), "{tokens}");
    // A variable left out takes its default, in directives too.
    let skipped = app
        .gql(
            Some(&owner.access),
            "query($s: Boolean! = true, $n: Boolean = false) { \
             me { username @skip(if: $s) id @include(if: $n) role } }",
            json!({}),
        )
        .await;
    assert_eq!(
        skipped["data"],
        json!({"me": {"role": "OWNER"}}),
        "{skipped}"
    );
    // A field selected again under its key merges with the first, whose every field was
    // skipped: its object is not lost to the first's emptiness, through fragments too.
    for (query, variables, expected) in [
        (
            "{ me { id @skip(if: true) } me { username } }",
            json!({}),
            json!({"me": {"username": "alice"}}),
        ),
        (
            "query($d: Boolean!) { me { ...A ...B } } \
             fragment A on User { sessions { id @include(if: $d) } } \
             fragment B on User { sessions { current } }",
            json!({"d": false}),
            json!({"me": {"sessions": [{"current": true}]}}),
        ),
        (
            "{ me { ...F } me { username } } fragment F on User { id @skip(if: true) }",
            json!({}),
            json!({"me": {"username": "alice"}}),
        ),
        // At a nullable position too, an object all of whose fields are skipped is one.
        (
            "{ user(username: \"alice\") { id @skip(if: true) } }",
            json!({}),
            json!({"user": {}}),
        ),
        // A client's own alias of the key the server uses for this is kept, and the merge
        // still made.
        (
            "{ me { id @skip(if: true) } me { username } x: me { __rollcallKept: username } }",
            json!({}),
            json!({"me": {"username": "alice"}, "x": {"__rollcallKept": "alice"}}),
        ),
    ] {
        let body = app.gql(Some(&owner.access), query, variables).await;
        assert_eq!(body, json!({ "data": expected }), "{query}");
    }
    // Written as the specification wants, the same values are accepted.
    let fine = app
        .gql(
            Some(&owner.access),
            "query($r: Role, $f: UserFilter) { a: users(filter: { role: $r }) { totalCount } \
             b: users(filter: $f) { totalCount } c: users(filter: { role: OWNER }) { totalCount } }",
            json!({"r": "OWNER", "f": {"role": "OWNER"}}),
        )
        .await;
    assert_eq!(
        fine["data"],
        json!({"a": {"totalCount": 1}, "b": {"totalCount": 1}, "c": {"totalCount": 1}}),
        "{fine}"
    );
}

#[tokio::test]
async fn get_runs_queries_and_refuses_mutations() {
    let Some(app) = spawn(|_| {}).await else {
        return;
    };
    let get = |params: &[(&str, &str)]| {
        app.client
            .get(format!("{}/graphql", app.base_url()))
            .header("accept", "application/json")
            .query(params)
            .send()
    };
    let response = get(&[
        (
            "query",
            "query($skip: Boolean!) { serverInfo { name @skip(if: $skip) } }",
        ),
        ("variables", "{\"skip\": false}"),
    ])
    .await
    .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["data"]["serverInfo"]["name"], "rollcall", "{body}");

    let mutation = get(&[("query", "mutation { logout(refreshToken: \"x\") }")])
        .await
        .expect("sent");
    assert_eq!(mutation.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(mutation.headers()["allow"], "POST");

    // A query of exactly the length accepted, with an escape whose rewrite is a byte longer
    // (`\u{9}` is read as `\u0009`): measured as sent, once.
    let mut at_limit = r#"{ __type(name: "\u{9}") { name } } #"#.to_owned();
    at_limit.push_str(&"x".repeat(app.settings.max_query_bytes - at_limit.len()));
    let response = get(&[("query", at_limit.as_str())]).await.expect("sent");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({"data": {"__type": null}}));

    let bad_variables = get(&[("query", "{ serverInfo { name } }"), ("variables", "[1]")])
        .await
        .expect("sent");
    assert_eq!(bad_variables.status(), StatusCode::BAD_REQUEST);
    let missing = get(&[]).await.expect("sent");
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    // A persisted query's hash alone, as Apollo's client sends it over GET.
    let hash_only = get(&[(
        "extensions",
        "{\"persistedQuery\":{\"version\":1,\"sha256Hash\":\"00\"}}",
    )])
    .await
    .expect("sent");
    assert_eq!(hash_only.status(), StatusCode::BAD_REQUEST);
    let body: Value = hash_only.json().await.expect("json");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotSupported");
    assert_code(&body, "PERSISTED_QUERY_NOT_SUPPORTED");
    // An empty query is none, as it is in a POST body.
    let empty = get(&[("query", "")]).await.expect("sent");
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn metrics_count_logins_and_requests() {
    const HASH_THREADS: usize = 2;
    const READ_CONNECTIONS: u32 = 3;
    let Some(app) = spawn(|s| {
        s.hash_concurrency = Some(HASH_THREADS);
        s.db_max_connections = Some(READ_CONNECTIONS);
    })
    .await
    else {
        return;
    };
    let before = app.metrics().await;
    // Series an alert watches are there from the start, at zero.
    for series in [
        "rollcall_throttled_total{kind=\"account\"} 0",
        "rollcall_throttled_total{kind=\"session\"} 0",
        "rollcall_throttled_total{kind=\"ip\"} 0",
        "rollcall_throttled_total{kind=\"busy\"} 0",
        "rollcall_logins_total{result=\"success\"} 0",
        "rollcall_errors_total{code=\"INTERNAL_SERVER_ERROR\"} 0",
    ] {
        assert!(
            before.lines().any(|line| line == series),
            "{series}: {before}"
        );
    }
    app.register("alice").await;
    assert_code(
        &app.login("alice", "not the password").await,
        "UNAUTHENTICATED",
    );
    assert_ok(&app.login("alice", PASSWORD).await);
    // Refused over HTTP, before GraphQL runs: counted too.
    let refused = app
        .client
        .post(format!("{}/graphql", app.base_url()))
        .header("content-type", "text/plain")
        .body("{ serverInfo { name } }")
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // So are another method, and a body in a transfer coding HTTP/1.1 servers refuse.
    let put = app
        .client
        .put(format!("{}/graphql", app.base_url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
    let answer = app
        .raw_exchange(
            "POST /graphql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        )
        .await;
    assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
    // Three errors of one code in one request: one failed request.
    let body = app.gql(None, "{ me { a b c } }", json!({})).await;
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(3), "{body}");
    let after = app.metrics().await;
    for (code, count) in [
        ("BAD_USER_INPUT", 1.0),
        ("UNSUPPORTED_MEDIA_TYPE", 1.0),
        ("METHOD_NOT_ALLOWED", 1.0),
        ("NOT_IMPLEMENTED", 1.0),
    ] {
        let series = format!("rollcall_errors_total{{code=\"{code}\"}}");
        assert_eq!(
            metric(&after, &series) - metric(&before, &series),
            count,
            "{code}: {after}"
        );
    }
    let invalid = "rollcall_requests_total{operation=\"invalid\"}";
    assert_eq!(
        metric(&after, invalid) - metric(&before, invalid),
        4.0,
        "{after}"
    );
    let failures = "rollcall_logins_total{result=\"failure\"}";
    let successes = "rollcall_logins_total{result=\"success\"}";
    assert_eq!(
        metric(&after, failures) - metric(&before, failures),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(&after, successes) - metric(&before, successes),
        1.0,
        "{after}"
    );
    assert!(
        metric(&after, "rollcall_requests_total{operation=\"login\"}") >= 2.0,
        "{after}"
    );
    assert!(
        metric(&after, "rollcall_errors_total{code=\"UNAUTHENTICATED\"}") >= 1.0,
        "{after}"
    );
    assert!(
        after.contains("rollcall_request_duration_seconds_bucket"),
        "{after}"
    );
    assert!(after.contains("rollcall_password_hash_queue"), "{after}");
    // Capacities beside the gauges, for alerts: 32 places per hashing thread, and the SQLite
    // reading pool's connections and the writer's one.
    assert_eq!(
        metric(&after, "rollcall_password_hash_queue_capacity"),
        32.0 * HASH_THREADS as f64,
        "{after}"
    );
    assert_eq!(
        metric(&after, "rollcall_db_connections_max"),
        f64::from(READ_CONNECTIONS + 1),
        "{after}"
    );
    assert!(
        after.contains("rollcall_db_connections{state=\"in_use\"}"),
        "{after}"
    );
    let statements = "rollcall_db_statements_total";
    assert!(
        metric(&after, statements) > metric(&before, statements),
        "{after}"
    );
}

#[tokio::test]
async fn metrics_need_loopback_or_the_token() {
    let Some(app) = spawn(|s| {
        s.trusted_proxies = rollcall::config::List(vec!["127.0.0.1/32".parse().expect("net")]);
        s.metrics_token = Some("metrics-token-for-the-test".into());
    })
    .await
    else {
        return;
    };
    let scrape = |token: Option<&'static str>| {
        let mut request = app
            .client
            .get(format!("{}/metrics", app.base_url()))
            // As a client beyond the (trusted) proxy on loopback.
            .header("x-forwarded-for", "203.0.113.7");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(
        scrape(None).await.expect("sent").status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        scrape(Some("wrong")).await.expect("sent").status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        scrape(Some("metrics-token-for-the-test"))
            .await
            .expect("sent")
            .status(),
        StatusCode::OK
    );
    // The scheme is case-insensitive, as on the GraphQL endpoint.
    let lower = app
        .client
        .get(format!("{}/metrics", app.base_url()))
        .header("x-forwarded-for", "203.0.113.7")
        .header("authorization", "bearer metrics-token-for-the-test")
        .send()
        .await
        .expect("sent");
    assert_eq!(lower.status(), StatusCode::OK);
}

/// An empty metrics token (a template's unfilled variable) is no token: a remote client
/// sending none is refused.
#[tokio::test]
async fn an_empty_metrics_token_opens_nothing() {
    let Some(app) = spawn(|s| {
        s.trusted_proxies = rollcall::config::List(vec!["127.0.0.1/32".parse().expect("net")]);
        s.metrics_token = Some(String::new());
    })
    .await
    else {
        return;
    };
    let url = format!("{}/metrics", app.base_url());
    for bearer in [None, Some("")] {
        let mut request = app
            .client
            .get(&url)
            .header("x-forwarded-for", "203.0.113.7");
        if let Some(token) = bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = request.send().await.expect("sent");
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{bearer:?}");
    }
}

/// A reverse proxy on the same host that is not listed as trusted does not make the clients
/// it forwards loopback clients.
#[tokio::test]
async fn metrics_are_not_opened_by_an_untrusted_local_proxy() {
    let Some(app) = spawn(|_| {}).await else {
        return;
    };
    let url = format!("{}/metrics", app.base_url());
    let direct = app.client.get(&url).send().await.expect("sent");
    assert_eq!(direct.status(), StatusCode::OK);
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.7"),
        ("forwarded", "for=203.0.113.7"),
        ("x-real-ip", "203.0.113.7"),
    ] {
        let relayed = app
            .client
            .get(&url)
            .header(name, value)
            .send()
            .await
            .expect("sent");
        assert_eq!(relayed.status(), StatusCode::FORBIDDEN, "{name}");
    }
}

/// One log line per request with its id, operation, user, status and codes, and no secret in
/// any line, in both formats.
#[tokio::test]
async fn request_logs_name_the_request_and_hide_secrets() {
    for format in ["text", "json"] {
        let Some(db) = TestDb::create(Backend::Sqlite).await else {
            return;
        };
        let server = ServerProcess::start(
            &db.url,
            &[
                ("ROLLCALL_LOG_FORMAT", format),
                ("ROLLCALL_REFRESH_REUSE_GRACE", "0s"),
            ],
        );
        // A passing probe or scrape is no line at INFO.
        for probe in ["/health", "/ready", "/metrics"] {
            assert_eq!(server.status(probe).await, StatusCode::OK);
        }
        let alice = server.register("alice").await;
        let wrong = "not-the-password-9f8e7d";
        assert_code(&server.login("alice", wrong).await, "UNAUTHENTICATED");
        let response = server
            .client()
            .post(format!("{}/graphql", server.base_url))
            // Spaces and `=` would forge the text line's other fields.
            .header(
                "x-request-id",
                format!("log-test-{format} status=999 user=x"),
            )
            .bearer_auth(&alice.access)
            .json(&json!({"query": ME, "operationName": null}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
        let sent_id = format!("log-test-{format} status=999 user=x");
        let lines = server.log_lines_until(&sent_id);
        let line = lines
            .iter()
            .find(|l| l.contains(&sent_id))
            .expect("the request's line");
        // The id is one quoted value, not three fields.
        let quoted = match format {
            "json" => format!("\"request_id\":\"{sent_id}\""),
            _ => format!("\"{sent_id}\""),
        };
        assert!(line.contains(&quoted), "{line}");
        assert!(line.contains(&alice.id), "{line}");
        assert!(line.contains("me"), "{line}");
        assert!(line.contains("200"), "{line}");
        if format == "json" {
            for line in &lines {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
            }
            let parsed: Value = serde_json::from_str(line).expect("JSON");
            assert!(parsed["duration_ms"].is_number(), "{line}");
        }
        assert!(
            lines.iter().all(|l| ["/health", "/ready", "/metrics"]
                .iter()
                .all(|p| !l.contains(p))),
            "probes logged: {lines:?}"
        );
        let failed = lines
            .iter()
            .find(|l| l.contains("UNAUTHENTICATED"))
            .expect("the failed login's line");
        assert!(failed.contains("login"), "{failed}");
        // Where a failed login came from is in its line: the audit trail keeps no entry.
        assert!(failed.contains("127.0.0.1"), "{failed}");

        // What a request logs on its way carries the request's id: here a refresh token
        // presented again, which ends the session.
        assert_ok(&server.refresh(&alice.refresh).await);
        let reuse_id = format!("reuse-{format}");
        let body: Value = server
            .client()
            .post(format!("{}/graphql", server.base_url))
            .header("x-request-id", &reuse_id)
            .json(&json!({"query": support::REFRESH, "variables": {"t": alice.refresh}}))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("JSON");
        assert_code(&body, "UNAUTHENTICATED");
        let warning = server.log_line("refresh token reuse");
        assert!(warning.contains(&reuse_id), "{warning}");
        // Once per session, as its audit entry: a later replay finds it ended already.
        assert_code(&server.refresh(&alice.refresh).await, "UNAUTHENTICATED");
        let marker = format!("after-reuse-{format}");
        let response = server
            .client()
            .post(format!("{}/graphql", server.base_url))
            .header("x-request-id", &marker)
            .json(&json!({"query": "{ __typename }"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
        let lines_now = server.log_lines_until(&marker);
        let warnings = lines_now.iter().filter(|l| l.contains("family revoked"));
        assert_eq!(warnings.count(), 1, "{lines_now:?}");
        for secret in [
            PASSWORD,
            wrong,
            alice.access.as_str(),
            alice.refresh.as_str(),
            "$argon2",
        ] {
            assert!(
                lines.iter().all(|l| !l.contains(secret)),
                "a secret reached the log"
            );
        }

        // An internal error is logged with its cause and the field it failed at, as a path.
        let alice = server.login_as("alice").await;
        let db = db.connect().await;
        sea_orm::ConnectionTrait::execute_unprepared(
            &db,
            "ALTER TABLE sessions RENAME TO sessions_gone",
        )
        .await
        .expect("rename");
        assert_code(&server.me(&alice.access).await, "INTERNAL_SERVER_ERROR");
        let line = server.log_line("internal error");
        assert!(line.contains("sessions"), "the cause: {line}");
        let path = match format {
            "json" => "\"path\":\"me\"",
            _ => "path=\"me\"",
        };
        assert!(line.contains(path), "{line}");
    }
}

/// A request that runs out of time is logged with the operation it was running, so an operator
/// sees which operations time out; what it logs on its way carries its id though the request
/// lines are filtered out; and a refusal names its client's address like any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_timed_out_is_logged_with_its_operation() {
    use sea_orm::{ConnectionTrait, TransactionTrait};

    for filter in ["info", "info,rollcall::request=off"] {
        let Some(db) = TestDb::create(Backend::Postgres).await else {
            return;
        };
        let server = ServerProcess::start(
            &db.url,
            &[
                ("ROLLCALL_REQUEST_TIMEOUT", "1s"),
                ("ROLLCALL_LOG_FORMAT", "json"),
                ("RUST_LOG", filter),
            ],
        );
        let alice = server.register("alice").await;
        let blocker = db.connect().await;
        let hold = blocker.begin().await.expect("begin");
        hold.execute_unprepared("LOCK TABLE users IN EXCLUSIVE MODE")
            .await
            .expect("lock");
        let response = server
            .client()
            .post(format!("{}/graphql", server.base_url))
            .bearer_auth(&alice.access)
            .header("x-request-id", format!("late-{filter}"))
            .json(&json!({
                "query": "mutation Rename($id: ID!) { updateUser(id: $id, input: {firstName: \"Late\"}) { id } }",
                "operationName": "Rename",
                "variables": {"id": alice.id},
            }))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        hold.rollback().await.expect("release");
        let _ = blocker.close().await;
        let warning: Value =
            serde_json::from_str(&server.log_line("request timed out")).expect("JSON");
        assert_eq!(
            warning["span"]["request_id"],
            format!("late-{filter}"),
            "{warning}"
        );
        if filter != "info" {
            continue;
        }
        let line = server.log_line("\"status\":503");
        let fields: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(fields["operation"], "updateUser", "{line}");
        assert_eq!(fields["operation_name"], "Rename", "{line}");
        assert_eq!(fields["errors"], "TIMEOUT", "{line}");
        assert_eq!(fields["client_ip"], "127.0.0.1", "{line}");
        // Counted under the operation it ran, as the line names it.
        let metrics = server.metrics().await;
        assert_eq!(
            metric(&metrics, "rollcall_errors_total{code=\"TIMEOUT\"}"),
            1.0,
            "{metrics}"
        );
        assert_eq!(
            metric(
                &metrics,
                "rollcall_requests_total{operation=\"updateUser\"}"
            ),
            1.0,
            "{metrics}"
        );
        let refused = server
            .client()
            .post(format!("{}/graphql", server.base_url))
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .expect("sent");
        assert_eq!(refused.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let line = server.log_line("\"status\":415");
        assert!(line.contains("\"client_ip\":\"127.0.0.1\""), "{line}");
    }
}

/// An empty `RUST_LOG`, as a template leaves one, logs as if unset: taken as a filter it would
/// turn every line off, errors included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_log_filter_is_the_default() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    for (filter, name) in [("", "alice"), (" , ", "bob")] {
        let server = ServerProcess::start(&db.url, &[("RUST_LOG", filter)]);
        server.register(name).await;
        let lines = server.log_lines_until("operation=\"register\"");
        assert!(lines.iter().any(|line| line.contains("INFO")), "{lines:?}");
    }
}

/// The log keeps a client's `operationName` only when it is a GraphQL name: any other text names
/// no operation, and is the client's to fill with what the log must not keep.
#[tokio::test]
async fn only_a_name_is_logged_as_the_operation_name() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let server = ServerProcess::start(&db.url, &[]);
    for (name, id) in [
        ("Info", "named"),
        ("alice@example.com password=hunter2", "text"),
    ] {
        let response = server
            .client()
            .post(format!("{}/graphql", server.base_url))
            .header("x-request-id", id)
            .json(&json!({"query": "query Info { serverInfo { name } }", "operationName": name}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let named = server.log_line("request_id=\"named\"");
    assert!(named.contains("operation_name=\"Info\""), "{named}");
    let text = server.log_line("request_id=\"text\"");
    assert!(text.contains("operation_name=\"-\""), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(server.terminate().success());
}
