//! `GET /.well-known/jwks.json`: the public keys that verify access tokens, so other services
//! check tokens without a shared secret. With `ROLLCALL_JWT_SECRET` the set is empty: the
//! secret is never published.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::{AppState, json_response};

/// How long verifiers may cache the key set. A key rotated in can sign tokens before a cached
/// set holds it, so verifiers should fetch the set again on an unknown kid.
const CACHE_CONTROL: &str = "public, max-age=300";

pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = json_response(StatusCode::OK, &state.service.jwks().await);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    response
}
