//! GraphiQL over HTTP: the page and every file it loads come from the server itself, with the
//! right types and headers, and nothing outside it is named; `ROLLCALL_GRAPHIQL=false` turns
//! all of it off. (tests/browser drives a real browser through the page.)

mod support;

use support::{Backend, TestApp};

/// The files the page loads, with the content type each must be served with.
const PAGE_ASSETS: &[(&str, &str)] = &[
    (
        "/graphiql/graphiql-3.9.0/graphiql.min.css",
        "text/css; charset=utf-8",
    ),
    ("/graphiql/graphiql-init.css", "text/css; charset=utf-8"),
    (
        "/graphiql/react-18.3.1/react.production.min.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "/graphiql/react-dom-18.3.1/react-dom.production.min.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "/graphiql/graphiql-3.9.0/graphiql.min.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "/graphiql/graphiql-init.js",
        "text/javascript; charset=utf-8",
    ),
];

/// The licences and the list of what is vendored, served beside the files they cover.
const NOTICES: &[&str] = &[
    "/graphiql/graphiql-3.9.0/LICENSE",
    "/graphiql/react-18.3.1/LICENSE",
    "/graphiql/react-dom-18.3.1/LICENSE",
    "/graphiql/VERSIONS",
];

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.base_url()))
        .header("accept", "text/html")
        .send()
        .await
        .expect("request sent")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_come_from_the_server_itself() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let page = get(&app, "/graphql").await;
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    let csp = header(&page, "content-security-policy").to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    let html = page.text().await.expect("page body");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page names something outside the server:\n{html}"
    );
    assert!(!html.contains("<script>"), "no inline script:\n{html}");

    for (path, content_type) in PAGE_ASSETS {
        // The page names each file relative to /graphql.
        let relative = path.trim_start_matches('/');
        assert!(
            html.contains(&format!("\"{relative}\"")),
            "{relative} not on the page"
        );
        let response = get(&app, path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(&response, "content-type"), *content_type, "{path}");
        assert_eq!(
            header(&response, "x-content-type-options"),
            "nosniff",
            "{path}"
        );
        let cache = header(&response, "cache-control").to_owned();
        if path.contains("-3.9.0/") || path.contains("-18.3.1/") {
            // Versioned paths: cached for good.
            assert!(cache.contains("max-age=31536000"), "{path}: {cache}");
        } else {
            assert_eq!(cache, "no-cache", "{path}");
        }
        let body = response.bytes().await.expect("asset body");
        assert!(body.len() > 100, "{path} is empty");
        // GraphiQL's stylesheet carries its fonts inline; it must fetch nothing from elsewhere.
        if path.ends_with(".css") {
            let css = String::from_utf8_lossy(&body);
            assert!(!css.contains("url(http"), "{path} loads from elsewhere");
            assert!(!css.contains("@import"), "{path} imports");
        }
    }
    // Production builds, not development ones.
    let react = get(&app, "/graphiql/react-18.3.1/react.production.min.js").await;
    let react = react.text().await.expect("react");
    assert!(react.contains("react.production.min.js"));

    for path in NOTICES {
        let response = get(&app, path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            header(&response, "content-type"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        let text = response.text().await.expect("notice");
        assert!(text.contains("MIT"), "{path}");
    }

    // The endpoint GraphiQL posts to still runs operations.
    let info = support::Gql::server_info(&app).await;
    support::assert_ok(&info);
    assert_eq!(get(&app, "/graphiql/nothing-here.js").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turned_off_there_is_no_page_and_no_files() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| s.graphiql = false).await else {
        return;
    };
    assert_eq!(get(&app, "/graphql").await.status(), 404);
    for path in PAGE_ASSETS
        .iter()
        .map(|(path, _)| *path)
        .chain(NOTICES.iter().copied())
    {
        assert_eq!(get(&app, path).await.status(), 404, "{path}");
    }
    // The API itself is unaffected.
    let info = support::Gql::server_info(&app).await;
    support::assert_ok(&info);
}
