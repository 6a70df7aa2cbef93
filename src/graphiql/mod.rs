//! GraphiQL, the in-browser GraphQL IDE, at `GET /graphql`. Every file it needs (GraphiQL,
//! React, their styles) is compiled into the binary and served under `/graphiql/`, so the
//! page works on a network without internet access and loads nothing from anyone else; its
//! Content-Security-Policy holds it to that. What is vendored, and under which licence, is
//! listed in `assets/VERSIONS`.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The page may run only its own scripts (no inline ones, no eval), talk only to this server,
/// and be framed by nobody. Styles may be inline too: GraphiQL's dialogs and menus add a
/// `<style>` element of computed values as they open. Fonts and a few images are `data:` URLs
/// inside GraphiQL's stylesheet.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; font-src data:; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Vendored files carry their version in their path, so a browser may keep them for good.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The page and our own files change with rollcall under the same path: always revalidated.
const REVALIDATE: &str = "no-cache";

/// A file served at `/graphiql/<file>`.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    cache_control: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($file:literal, $content_type:expr, $cache_control:expr) => {
        Asset {
            path: concat!("/graphiql/", $file),
            content_type: $content_type,
            cache_control: $cache_control,
            body: include_bytes!(concat!("assets/", $file)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("graphiql-3.9.0/graphiql.min.js", JS, IMMUTABLE),
    asset!("graphiql-3.9.0/graphiql.min.css", CSS, IMMUTABLE),
    asset!("graphiql-3.9.0/LICENSE", TEXT, IMMUTABLE),
    asset!("react-18.3.1/react.production.min.js", JS, IMMUTABLE),
    asset!("react-18.3.1/LICENSE", TEXT, IMMUTABLE),
    asset!(
        "react-dom-18.3.1/react-dom.production.min.js",
        JS,
        IMMUTABLE
    ),
    asset!("react-dom-18.3.1/LICENSE", TEXT, IMMUTABLE),
    asset!("VERSIONS", TEXT, REVALIDATE),
    asset!("graphiql-init.js", JS, REVALIDATE),
    asset!("graphiql-init.css", CSS, REVALIDATE),
];

const PAGE: &str = include_str!("assets/index.html");

/// The routes of GraphiQL's files, to merge into the server's router when GraphiQL is on.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || async move { asset.response() }))
    })
}

/// The GraphiQL page, with the Content-Security-Policy that keeps it to its own files.
pub fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, HTML),
            (header::CACHE_CONTROL, REVALIDATE),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
        .into_response()
}

impl Asset {
    fn response(&self) -> Response {
        (
            [
                (header::CONTENT_TYPE, self.content_type),
                (header::CACHE_CONTROL, self.cache_control),
            ],
            self.body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_exactly_the_served_files() {
        // Every file the page names is served, and the page names nothing else.
        let served: Vec<&str> = ASSETS
            .iter()
            .map(|asset| asset.path.trim_start_matches('/'))
            .collect();
        let referenced: Vec<&str> = PAGE
            .split(['"', '\''])
            .filter(|part| part.starts_with("graphiql/"))
            .collect();
        assert!(referenced.len() >= 4, "{referenced:?}");
        for path in referenced {
            assert!(served.contains(&path), "{path} is not served");
        }
        assert!(!PAGE.contains("http:") && !PAGE.contains("https:"));
        assert!(!PAGE.contains("<script>"), "no inline scripts");
    }
}
