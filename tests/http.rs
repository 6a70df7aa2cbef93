//! The HTTP surface: endpoints, limits, batches, and the committed schema.

mod support;

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use support::{Gql, PASSWORD, TestApp, assert_code, assert_ok};

async fn health_ready_and_graphiql(app: TestApp) {
    let base = app.base_url();
    let health = app
        .client
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    // Another method is refused as an unknown path is, in JSON with a code, and told which
    // methods the endpoint takes.
    let posted = app.client.post(format!("{base}/health")).send().await;
    let posted = posted.expect("health posted");
    assert_eq!(posted.status(), 405);
    assert_eq!(posted.headers()["allow"], "GET,HEAD");
    let answer: Value = posted.json().await.expect("json");
    assert_code(&answer, "METHOD_NOT_ALLOWED");
    let ready = app
        .client
        .get(format!("{base}/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    // Ready only while the database holds this release's schema: not one an older release
    // left (a migration missing), nor one a newer release migrated (one unknown here).
    let ready_status = || async {
        app.client
            .get(format!("{base}/ready"))
            .send()
            .await
            .expect("ready")
            .status()
    };
    let db = app.database().await;
    let backend = db.get_database_backend();
    let newest: String = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT max(version) FROM seaql_migrations",
        ))
        .await
        .expect("query")
        .and_then(|row| row.try_get_by_index(0).ok())
        .expect("a migration");
    for (change, status) in [
        (
            format!("DELETE FROM seaql_migrations WHERE version = '{newest}'"),
            503,
        ),
        (
            format!("INSERT INTO seaql_migrations VALUES ('{newest}', 0)"),
            200,
        ),
        (
            "INSERT INTO seaql_migrations VALUES ('m29991231_000001_later', 0)".to_owned(),
            503,
        ),
        (
            "DELETE FROM seaql_migrations WHERE version = 'm29991231_000001_later'".to_owned(),
            200,
        ),
    ] {
        db.execute_unprepared(&change).await.expect("change");
        assert_eq!(ready_status().await, status, "after {change}");
    }
    let page = app
        .client
        .get(format!("{base}/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("graphiql");
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .expect("body")
            .to_lowercase()
            .contains("graphiql")
    );
}

async fn oversized_bodies_get_413_and_batches_400(app: TestApp) {
    let base = app.base_url();
    // Within the size limit, but more JSON values than any request needs: refused before
    // they are read (read, they would take a hundred times their bytes).
    let nested = format!(
        r#"{{"query":"{{ serverInfo {{ name }} }}","variables":{{"v":[{}]}}}}"#,
        vec!["[[]]"; 100_000].join(",")
    );
    let response = app
        .post()
        .header("content-type", "application/json")
        .body(nested)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.expect("JSON error body");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("10,000 JSON values"), "{body}");
    let huge = format!(
        r#"{{"query":"{{ serverInfo {{ name }} }}","pad":"{}"}}"#,
        "a".repeat(1_100_000)
    );
    let response = app
        .post()
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 413);
    // The rest of the body is not read: the connection is not offered for another request.
    assert_eq!(response.headers()["connection"], "close");
    let body: serde_json::Value = response.json().await.expect("JSON error body");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE",
        "{body}"
    );
    // JSON nested deeper than the JSON reader goes is refused as what it is.
    let deep = format!(
        r#"{{"query":"{{ serverInfo {{ name }} }}","variables":{{"v":{}1{}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let response = app
        .post()
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .expect("post");
    let body: serde_json::Value = response.json().await.expect("JSON error body");
    assert_eq!(
        body["errors"][0]["message"], "The body nests JSON 128 deep or more",
        "{body}"
    );

    // A declared length over the limit is answered before any of the body is sent, when the
    // body is too large to read through, or the client waits for the answer before sending.
    for (length, expect) in [("99999999999", ""), ("2000000", "Expect: 100-continue\r\n")] {
        let head = format!(
            "POST /graphql HTTP/1.1\r\nHost: {{address}}\r\nContent-Type: application/json\r\n\
             {expect}Content-Length: {length}\r\n\r\n"
        );
        let answer = app.first_answer(&head).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    // A client that writes the whole of a body over the limit before reading gets the 413,
    // not a connection reset under it (a body larger than the sockets' buffers, which would
    // otherwise hold it unread).
    let body = format!(
        r#"{{"query":"{{ serverInfo {{ name }} }}","pad":"{}"}}"#,
        "a".repeat(8_000_000)
    );
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: {{address}}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..2 {
        let answer = app.raw_exchange(&request).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }

    let batch = json!([{"query": "{ serverInfo { name } }"}, {"query": "{ serverInfo { name } }"}]);
    let response = app
        .client
        .post(format!("{base}/graphql"))
        .json(&batch)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    // One refusal per request, in its place, as batching clients read the answers.
    let body: serde_json::Value = response.json().await.expect("JSON error body");
    let answers = body.as_array().expect("an answer per request");
    assert_eq!(answers.len(), 2, "{body}");
    for answer in answers {
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "BAD_REQUEST",
            "{body}"
        );
        let message = &answer["errors"][0]["message"];
        assert_eq!(message, "Batched requests are not supported", "{body}");
    }
    // Past a hundred requests, or not even JSON, one refusal stands for all.
    for batch in [format!("[{}{{}}]", "{},".repeat(100)), "[{".to_owned()] {
        let response = app
            .client
            .post(format!("{base}/graphql"))
            .header("content-type", "application/json")
            .body(batch)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = response.json().await.expect("JSON error body");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_REQUEST",
            "{body}"
        );
    }

    let response = app
        .client
        .post(format!("{base}/graphql"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);

    // A persisted query's hash alone: none are kept, said as Apollo's client expects, so it
    // sends the query itself.
    let response = app
        .client
        .post(format!("{base}/graphql"))
        .json(&json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "0".repeat(64)}}}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    let answer: serde_json::Value = response.json().await.expect("JSON error body");
    assert_eq!(answer["errors"][0]["message"], "PersistedQueryNotSupported");
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_SUPPORTED",
        "{answer}"
    );

    // JSON that is no GraphQL request: without `query`, or with another type of it.
    for body in [json!({}), json!({"variables": {}}), json!({"query": 5})] {
        let response = app
            .client
            .post(format!("{base}/graphql"))
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 400, "{body}");
        let answer: serde_json::Value = response.json().await.expect("JSON error body");
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "BAD_REQUEST",
            "{body}: {answer}"
        );
    }

    // A body in another encoding, or compressed, is refused rather than misread.
    for (name, value) in [
        ("content-type", "application/json; charset=utf-16"),
        ("content-encoding", "gzip"),
        ("content-encoding", "zz"),
    ] {
        let mut request = app
            .client
            .post(format!("{base}/graphql"))
            .body(r#"{"query":"{ serverInfo { name } }"}"#)
            .header(name, value);
        if name != "content-type" {
            request = request.header("content-type", "application/json");
        }
        let response = request.send().await.expect("post");
        assert_eq!(response.status(), 415, "{name}: {value}");
    }
    // UTF-8 by any of its names, or its subset US-ASCII, is read.
    for charset in ["UTF-8", "\"utf-8\"", "us-ascii", "US-ASCII"] {
        let response = app
            .client
            .post(format!("{base}/graphql"))
            .body(r#"{"query":"{ serverInfo { name } }"}"#)
            .header(
                "content-type",
                format!("application/json; charset={charset}"),
            )
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 200, "{charset}");
    }

    // An operation name that names nothing is not repeated at any length.
    let answer = app
        .client
        .post(format!("{base}/graphql"))
        .json(&json!({"query": "query Q { __typename }", "operationName": "x".repeat(10_000)}))
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("body");
    assert!(answer.len() < 1_000, "{answer}");
    assert!(answer.contains("Unknown operation named"), "{answer}");
}

async fn server_info_is_public(app: TestApp) {
    let body = app.server_info().await;
    assert_ok(&body);
    let info = &body["data"]["serverInfo"];
    assert_eq!(info["name"], "rollcall");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["registrationOpen"], true);
    assert_eq!(info["demo"], false);
    let expected = match app.backend {
        support::Backend::Sqlite => "sqlite",
        support::Backend::Postgres => "postgresql",
    };
    assert_eq!(info["database"], expected);
}

async fn every_error_has_a_code(app: TestApp) {
    // Syntax error, unknown field, wrong argument type: all engine errors.
    for query in [
        "{ me ",
        "{ nope }",
        "{ users(first: \"x\") { totalCount } }",
    ] {
        let body = app.gql(None, query, json!({})).await;
        // The README: the engine's refusals are BAD_USER_INPUT, with no field map.
        assert_code(&body, "BAD_USER_INPUT");
        assert!(
            body["errors"][0]["extensions"].get("fields").is_none(),
            "{query}: {body}"
        );
    }
    // A syntax error says what was expected where, without quoting the line: a password in a
    // literal would travel on into the client's error reports.
    let query = format!(
        "mutation {{ login(input: {{login: \"a\", password: \"my secret pass\"}}){}",
        " ".repeat(500)
    );
    let body = app.gql(None, &query, json!({})).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Syntax error: expected"), "{body}");
    assert!(!message.contains("secret") && message.len() < 200, "{body}");
    assert_eq!(body["errors"][0]["locations"][0]["line"], 1, "{body}");
    // A variable's value of the wrong scalar is refused once, naming the variable, rather
    // than at each argument it reaches.
    let page = "query($n: Int) { users(first: $n) { totalCount } }";
    let body = app.gql(None, page, json!({"n": "x"})).await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(1), "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Variable `$n`"), "{body}");
    // Said once, though the engine's validation finds it twice.
    let body = app
        .gql(None, "subscription { serverInfo { name } }", json!({}))
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(1), "{body}");
    let body = app.gql(None, support::ME, json!({})).await;
    assert_code(&body, "UNAUTHENTICATED");
    let body = app.me("not-a-jwt").await;
    assert_code(&body, "UNAUTHENTICATED");

    // The README's two messages: no token at all, or one that fails.
    for (authorization, message) in [
        ("", "Authentication required"),
        ("Bearer", "Authentication required"),
        ("bearer  ", "Authentication required"),
        ("Bearer not-a-jwt", "Invalid or expired token"),
        ("Basic YTpi", "Invalid or expired token"),
    ] {
        let body: serde_json::Value = app
            .client
            .post(format!("{}/graphql", app.base_url()))
            .header("authorization", authorization)
            .json(&json!({"query": support::ME}))
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("JSON");
        assert_code(&body, "UNAUTHENTICATED");
        assert_eq!(body["errors"][0]["message"], message, "{authorization:?}");
    }
}

/// What HTTP/1.1 says a server must refuse: no `Host`, two of them, a transfer coding it does
/// not know. Each answer is a GraphQL-shaped error in the media type the client accepts, as
/// the endpoint's other answers are, and the same request framed properly is served.
async fn ill_framed_requests_are_refused(app: TestApp) {
    let body = r#"{"query":"{ serverInfo { name } }"}"#;
    let accept = "Accept: application/graphql-response+json\r\n";
    let post = |head: &str| {
        format!(
            "POST /graphql HTTP/1.1\r\n{head}Content-Type: application/json\r\n{accept}\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let chunked = |coding: &str| {
        format!(
            "POST /graphql HTTP/1.1\r\nHost: {{address}}\r\nContent-Type: application/json\r\n\
             {accept}Transfer-Encoding: {coding}\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n\
             0\r\n\r\n",
            body.len()
        )
    };
    for (request, status, code) in [
        (post(""), "400", "BAD_REQUEST"),
        (
            post("Host: {address}\r\nHost: other.example\r\n"),
            "400",
            "BAD_REQUEST",
        ),
        (chunked("gzip, chunked"), "501", "NOT_IMPLEMENTED"),
        (chunked("chunked, chunked"), "400", "BAD_REQUEST"),
        // A preflight is framed as any other request.
        (
            post("Host: {address}\r\nHost: other.example\r\n").replacen("POST", "OPTIONS", 1),
            "400",
            "BAD_REQUEST",
        ),
    ] {
        let answer = app.raw_exchange(&request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(answer.contains(&format!(r#""code":"{code}""#)), "{answer}");
        let head = answer.to_ascii_lowercase();
        assert!(
            head.contains("content-type: application/graphql-response+json")
                && head.contains("vary: accept"),
            "{answer}"
        );
    }
    // A byte-order mark before the JSON, as Windows tools write to files, is skipped.
    let with_mark = post("Host: {address}\r\n")
        .replace(
            &format!("Content-Length: {}", body.len()),
            &format!("Content-Length: {}", body.len() + 3),
        )
        .replace(body, &format!("\u{FEFF}{body}"));
    for request in [post("Host: {address}\r\n"), chunked("chunked"), with_mark] {
        let answer = app.raw_exchange(&request).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(r#""name":"rollcall""#), "{answer}");
    }
    // HTTP/1.0 has no Host requirement.
    let answer = app
        .raw_exchange(&post("").replace("HTTP/1.1", "HTTP/1.0"))
        .await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");

    // A body of tiny chunks costs the server for each: past a megabyte's worth of 64-byte
    // ones (16,384) it is refused as too large, however few bytes it holds.
    let padded = format!("{body}{}", " ".repeat(20_000 - body.len()));
    let in_chunks = |size: usize| {
        let chunks: String = padded
            .as_bytes()
            .chunks(size)
            .map(|chunk| {
                format!(
                    "{:x}\r\n{}\r\n",
                    chunk.len(),
                    String::from_utf8_lossy(chunk)
                )
            })
            .collect();
        format!(
            "POST /graphql HTTP/1.1\r\nHost: {{address}}\r\nContent-Type: application/json\r\n\
             {accept}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunks}0\r\n\r\n"
        )
    };
    let answer = app.raw_exchange(&in_chunks(1)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("more than 16384 pieces"), "{answer}");
    let answer = app.raw_exchange(&in_chunks(64)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A GraphQL parameter given twice in a GET is refused, not settled by whichever one the
/// server's parser keeps; other parameters (cache busters) may repeat.
async fn get_parameters_are_checked(app: TestApp) {
    let get = |query: &str| {
        let app = &app;
        let query = query.to_owned();
        async move {
            let response = app
                .client
                .get(format!("{}/graphql?{query}", app.base_url()))
                .header("accept", "application/json")
                .send()
                .await
                .expect("get");
            let status = response.status();
            (
                status,
                response.json::<serde_json::Value>().await.expect("JSON"),
            )
        }
    };
    let (status, body) = get("query=%7BserverInfo%7Bname%7D%7D&query=%7Bme%7Bid%7D%7D").await;
    assert_eq!(status, 400, "{body}");
    assert_code(&body, "BAD_REQUEST");
    assert_eq!(body["errors"][0]["message"], "`query` is given twice");
    let (status, body) =
        get("query=query%20A%7BserverInfo%7Bname%7D%7D&operationName=A&operationName=B").await;
    assert_eq!(status, 400, "{body}");
    // A subscription client's handshake is told there are none, not that `query` is missing.
    let handshake = app
        .client
        .get(format!("{}/graphql", app.base_url()))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-protocol", "graphql-transport-ws")
        .send()
        .await
        .expect("get");
    assert_eq!(handshake.status(), 400);
    let body: serde_json::Value = handshake.json().await.expect("JSON");
    assert_code(&body, "BAD_REQUEST");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("no subscriptions"), "{body}");
    let (status, body) = get("query=%7BserverInfo%7Bname%7D%7D&_=1&_=2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["serverInfo"]["name"], "rollcall");
    // `null` is no value, as in a POST body; anything else but an object is refused.
    let (status, body) =
        get("query=%7BserverInfo%7Bname%7D%7D&variables=null&extensions=null").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["serverInfo"]["name"], "rollcall");
    let (status, body) = get("query=%7BserverInfo%7Bname%7D%7D&variables=%5B%5D").await;
    assert_eq!(status, 400, "{body}");
    // JSON nested past the reader's bound is named as such, as in a POST body.
    let deep = format!(
        "query=%7BserverInfo%7Bname%7D%7D&variables=%7B%22v%22%3A{}1{}%7D",
        "%5B".repeat(200),
        "%5D".repeat(200)
    );
    let (status, body) = get(&deep).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["message"],
        "`variables` nests JSON 128 deep or more"
    );
    // An answer is kept by no cache: a GET's would otherwise be, personal data and all.
    // GraphiQL's page (a browser's GET without a query) is revalidated instead.
    for (query, accept, kept) in [
        (
            "?query=%7BserverInfo%7Bname%7D%7D",
            "application/json",
            "no-store",
        ),
        ("", "text/html", "no-cache"),
    ] {
        let response = app
            .client
            .get(format!("{}/graphql{query}", app.base_url()))
            .header("accept", accept)
            .send()
            .await
            .expect("get");
        assert_eq!(response.headers()["cache-control"], kept, "{accept}");
    }
    let response = app
        .post()
        .json(&json!({"query": "{ serverInfo { name } }"}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.headers()["cache-control"], "no-store");
}

/// A document is read as the specification says where async-graphql reads it otherwise: the
/// variables of an operation not run are not looked at (GraphiQL sends its whole editor and
/// names the operation to run), an input object naming a field twice is refused rather than
/// run with the last, and JSON's `2.0` is the whole number it is.
async fn documents_are_read_as_the_specification_says(app: TestApp) {
    let owner = app.register("owner").await;
    let token = Some(owner.access.as_str());
    let named = async |query: &str, name: &str, variables: Value| -> Value {
        app.post()
            .bearer_auth(&owner.access)
            .json(&json!({"query": query, "operationName": name, "variables": variables}))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("JSON")
    };
    let two = "query Users($first: Int!) { users(first: $first) { totalCount } } \
               query Me { me { username } }";
    let body = named(two, "Me", json!({})).await;
    assert_eq!(body, json!({"data": {"me": {"username": "owner"}}}));
    let shared = "query A($x: Int) { users(first: $x) { totalCount } } \
                  query B($x: String) { user(username: $x) { username } }";
    let body = named(shared, "B", json!({"x": "owner"})).await;
    assert_eq!(body, json!({"data": {"user": {"username": "owner"}}}));
    // In the operation that runs, an undefined variable is one error, not one per check.
    let body = app
        .gql(token, "{ users(first: $x) { totalCount } }", json!({}))
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(1), "{body}");

    let body = app
        .gql(
            token,
            "{ users(filter: {role: ADMIN, role: OWNER}) { totalCount } }",
            json!({}),
        )
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    assert_eq!(
        body["errors"][0]["message"],
        "There can only be one input field named \"role\""
    );
    assert_eq!(
        body["errors"][0]["locations"],
        json!([{"line": 1, "column": 18}, {"line": 1, "column": 31}])
    );
    let login = format!(
        "mutation {{ login(input: {{login: \"owner\", password: \"{PASSWORD}\", \
         login: \"nobody\"}}) {{ accessToken }} }}"
    );
    let body = app.gql(None, &login, json!({})).await;
    assert_code(&body, "BAD_USER_INPUT");
    assert!(body.get("data").is_none(), "{body}");
    // A byte-order mark is an ignored token, as a space is.
    let hidden = login.replace("login: \"nobody\"", "login\u{feff}: \"nobody\"");
    assert_ne!(hidden, login);
    assert_code(&app.gql(None, &hidden, json!({})).await, "BAD_USER_INPUT");
    // The same member twice in JSON variables is refused the same way.
    let body = named(
        "query Q($f: UserFilter) { users(filter: $f) { totalCount } }",
        "Q",
        json!({}),
    )
    .await;
    assert_ok(&body);
    let repeated = app
        .post()
        .bearer_auth(&owner.access)
        .header("content-type", "application/json")
        .body(r#"{"query": "query($f: UserFilter) { users(filter: $f) { totalCount } }", "variables": {"f": {"role": "ADMIN", "role": "OWNER"}}}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(repeated.status(), 400);

    // `2.0` from JSON is a whole number; the literal `2.0` is a Float.
    let page = "query($first: Int) { users(first: $first) { totalCount } }";
    for first in [json!(2.0), json!(2e0), json!(-0.0)] {
        assert_ok(&app.gql(token, page, json!({"first": first})).await);
    }
    let body = app.gql(token, page, json!({"first": 2.5})).await;
    assert_code(&body, "BAD_USER_INPUT");
    let body = app
        .gql(token, "{ users(first: 2.0) { totalCount } }", json!({}))
        .await;
    assert_code(&body, "BAD_USER_INPUT");
    // An enum given a number is told to give one of its values.
    let body = app
        .gql(
            token,
            "{ users(filter: {role: 1}) { totalCount } }",
            json!({}),
        )
        .await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("give one of its values"), "{body}");
    // A literal beyond 32 bits is no `Int`: the document is refused whole, nothing of it run.
    let wide = app
        .post()
        .bearer_auth(&owner.access)
        .header("accept", "application/graphql-response+json")
        .json(&json!({"query": "{ serverInfo { name } users(first: 2147483648) { totalCount } }"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(wide.status(), 400);
    let body: Value = wide.json().await.expect("JSON");
    assert_code(&body, "BAD_USER_INPUT");
    assert!(body.get("data").is_none(), "{body}");
}

backend_tests!(
    documents_are_read_as_the_specification_says,
    health_ready_and_graphiql,
    get_parameters_are_checked,
    ill_framed_requests_are_refused,
    oversized_bodies_get_413_and_batches_400,
    server_info_is_public,
    every_error_has_a_code,
);

#[test]
fn committed_schema_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql is committed");
    assert_eq!(
        committed,
        rollcall::graphql::sdl(),
        "schema.graphql is stale: run `cargo run -- schema > schema.graphql`"
    );
}

/// A body declared over the limit and sent slowly, or stalled, is answered 413 once half the
/// request timeout has gone into reading it through, not 503 at the timeout (which invites a
/// retry of what will never be taken).
#[tokio::test]
async fn a_slow_oversized_body_still_gets_413() {
    let Some(app) = TestApp::spawn_with(support::Backend::Sqlite, |settings| {
        settings.request_timeout = std::time::Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    // The rest never comes.
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {{address}}\r\nContent-Type: application/json\r\n\
         Content-Length: 2000000\r\n\r\n{}",
        "a".repeat(100_000)
    );
    let answer = app.first_answer(&head).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

/// A body within the limit that stops part-way is answered TIMEOUT at the request timeout; the
/// rest of it unread, the connection closes, and the answer says so, as a 413's does, so that
/// a client does not pool it for its next request.
#[tokio::test]
async fn a_stalled_body_times_out_and_closes_the_connection() {
    let Some(app) = TestApp::spawn_with(support::Backend::Sqlite, |settings| {
        settings.request_timeout = std::time::Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let stalled = "POST /graphql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
                   Content-Length: 49\r\n\r\n{\"query\":";
    let answer = app.raw_exchange(stalled).await.to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(answer.contains("\"timeout\""), "{answer}");
}

/// Introspection tells the description `schema.graphql` gives the schema, wherever the
/// document asks for it, not async-graphql's text about schemas in general.
#[tokio::test]
async fn introspection_describes_the_schema_as_the_sdl_does() {
    let Some(app) = TestApp::spawn(support::Backend::Sqlite).await else {
        return;
    };
    let sdl = rollcall::graphql::sdl();
    let described = sdl
        .rsplit_once("\"\"\"\nschema {")
        .and_then(|(before, _)| before.rsplit_once("\"\"\"\n"))
        .map(|(_, description)| description.trim_end())
        .expect("a description on the schema definition");
    let body = app
        .gql(
            None,
            "{ ...F } fragment F on Query { a: __schema { description ...D } } fragment D on __Schema { d: description }",
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["a"]["description"], described, "{body}");
    assert_eq!(body["data"]["a"]["d"], described, "{body}");
}

/// String values take the escapes the specification allows beyond async-graphql's parser: a
/// code point in braces and a surrogate pair, each one character.
#[tokio::test]
async fn string_escapes_of_any_code_point_are_read() {
    let Some(app) = TestApp::spawn(support::Backend::Sqlite).await else {
        return;
    };
    let document = format!(
        r#"mutation {{ register(input: {{username: "\u{{61}}da", email: "ada@example.com",
           password: "{}", firstName: "\u{{1F600}}", lastName: "\uD83D\uDE00 \u00e9"}})
           {{ user {{ username firstName lastName }} }} }}"#,
        support::PASSWORD
    );
    let body = app.gql(None, &document, json!({})).await;
    assert_ok(&body);
    let user = &body["data"]["register"]["user"];
    assert_eq!(user["username"], "ada", "{body}");
    assert_eq!(user["firstName"], "\u{1F600}", "{body}");
    assert_eq!(user["lastName"], "\u{1F600} \u{e9}", "{body}");
    // An escape that stands for no character is refused as the parser refuses it.
    let body = app
        .gql(None, r#"{ user(username: "\u{D800}") { id } }"#, json!({}))
        .await;
    assert_code(&body, "BAD_USER_INPUT");
}

/// SQLite: a database file deleted, or another moved to its path (a backup restored with
/// `mv`), while the server runs is one it no longer writes to: `/ready` says so.
#[tokio::test]
async fn a_replaced_sqlite_file_is_not_ready() {
    let Some(app) = TestApp::spawn(support::Backend::Sqlite).await else {
        return;
    };
    let path = app.db.sqlite_file();
    let ready = || async {
        app.client
            .get(format!("{}/ready", app.base_url()))
            .send()
            .await
            .expect("ready")
            .status()
    };
    assert_eq!(ready().await, 200);
    let aside = path.with_extension("aside");
    std::fs::rename(&path, &aside).expect("move the file away");
    assert_eq!(ready().await, 503, "the file is gone");
    std::fs::write(&path, b"").expect("an empty file in its place");
    assert_eq!(ready().await, 503, "another file is in its place");
    std::fs::rename(&aside, &path).expect("the file back");
    assert_eq!(ready().await, 200, "the file it opened is back");
}

/// A document with thousands of mistakes is answered with the first hundred and a count of
/// the rest, not a response forty times its size.
#[tokio::test]
async fn a_document_full_of_mistakes_gets_its_first_hundred() {
    let Some(app) = TestApp::spawn(support::Backend::Sqlite).await else {
        return;
    };
    let query = format!("query({}) {{ __typename }}", "$v: Int ".repeat(400));
    let body = app.gql(None, &query, json!({})).await;
    assert_code(&body, "BAD_USER_INPUT");
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 101, "{body}");
    let last = errors[100]["message"].as_str().unwrap_or_default();
    assert!(
        last.ends_with("more errors in the document are left out"),
        "{last}"
    );
    assert_eq!(errors[100]["extensions"]["code"], "BAD_USER_INPUT");
    // The first in the document, in its order.
    let at: Vec<(u64, u64)> = errors[..100]
        .iter()
        .map(|e| {
            let place = &e["locations"][0];
            (
                place["line"].as_u64().unwrap_or(0),
                place["column"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(at.windows(2).all(|pair| pair[0] <= pair[1]), "{at:?}");
    assert!(at[0].1 < 20, "{at:?}");
    // A document with a few mistakes lists each.
    let few = app
        .gql(None, "query($v: Int, $v: Int) { __typename }", json!({}))
        .await;
    let listed = few["errors"].as_array().expect("errors");
    assert!((1..=100).contains(&listed.len()), "{few}");
    assert!(!few.to_string().contains("left out"), "{few}");
}
