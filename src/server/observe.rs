//! What operators see: one log line per request, and `GET /metrics`.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Extension, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::client_ip::{ClientIp, client_ip};
use super::graphql::bearer_token;
use super::{AppState, RequestSummary};

/// Logs one line per request once it is answered: its id, method, path, status, duration and
/// client's address, and for GraphQL its operation, the signed-in user and the error codes.
/// Never a body, a header value other than the request id, or a variable, so no password or
/// token.
pub async fn request_log(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    // As the audit trail has it: a failed login or a refusal leaves no other trace of where
    // it came from. Worked out here once, for the line and for the handlers.
    let client_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| client_ip(*peer, request.headers(), &state.trusted_proxies));
    if let Some(ip) = client_ip {
        request.extensions_mut().insert(ClientIp(ip));
    }
    let request_id: String = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    // What the request logs on its way (an internal error's cause, a timeout, a detected token
    // reuse) carries its id, so a client's report of an id finds the cause among concurrent
    // ones: at the level of errors, so it does even where the request lines are filtered out.
    let span = tracing::error_span!(
        target: "rollcall",
        "request",
        request_id = request_id.as_str()
    );
    // Filtered out (as under load tests): none of the line's strings are worth building.
    if !tracing::enabled!(target: "rollcall::request", tracing::Level::INFO) {
        return next.run(request).instrument(span).await;
    }
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let client_ip = client_ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
    let response = next.run(request).instrument(span).await;
    let status = response.status().as_u16();
    // An orchestrator probes, and a collector scrapes, every few seconds: one that passes is
    // no news.
    if matches!(path.as_str(), "/health" | "/ready" | "/metrics") && response.status().is_success()
    {
        tracing::debug!(target: "rollcall::request", path = path.as_str(), status, "probe");
        return response;
    }
    let summary = response.extensions().get::<RequestSummary>();
    // A number to a tenth of a millisecond, so JSON logs carry it as a number.
    let duration_ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
    let operation = summary.and_then(|s| s.operation.as_deref()).unwrap_or("-");
    let operation_name = summary
        .and_then(|s| s.operation_name.as_deref())
        .unwrap_or("-");
    let user = summary
        .and_then(|s| s.user)
        .map_or_else(|| "-".to_owned(), |id| id.to_string());
    let errors = summary
        .map(|s| s.codes.join(","))
        .filter(|codes| !codes.is_empty())
        .unwrap_or_else(|| "-".to_owned());
    tracing::info!(
        target: "rollcall::request",
        // A string value: the text format quotes and escapes it, so a client's id cannot
        // forge the line's other fields (`x status=200 user=…`).
        request_id = request_id.as_str(),
        method = %method,
        path = path.as_str(),
        status,
        duration_ms,
        client_ip = %client_ip,
        operation,
        operation_name,
        user = %user,
        errors = %errors,
        "request"
    );
    response
}

/// `GET /metrics`, Prometheus' text exposition (OpenMetrics). Loopback clients may read it;
/// others only with `Authorization: Bearer <ROLLCALL_METRICS_TOKEN>` when that is set. A
/// request that names a client it was forwarded for is never taken as loopback: a reverse
/// proxy on the same host, not listed as trusted, would otherwise open it to everyone.
pub async fn metrics(
    State(state): State<AppState>,
    Extension(ClientIp(client_ip)): Extension<ClientIp>,
    headers: HeaderMap,
) -> Response {
    let forwarded = ["x-forwarded-for", "x-real-ip", "forwarded"]
        .iter()
        .any(|name| headers.contains_key(*name));
    let loopback = !forwarded && client_ip.is_loopback();
    if !loopback && !token_matches(&headers, state.metrics_token.as_deref()) {
        return (
            StatusCode::FORBIDDEN,
            "metrics are served to loopback clients, or with the metrics token\n",
        )
            .into_response();
    }
    let service = &state.service;
    let metrics = service.metrics();
    metrics.hash_queue.set(service.hash_queue_len() as i64);
    // Capacities, so an alert compares against them rather than a copy of the settings.
    let capacity = i64::try_from(service.hash_queue_capacity()).unwrap_or(i64::MAX);
    metrics.hash_queue_capacity.set(capacity);
    metrics
        .db_connections_max
        .set(i64::from(service.db().connection_max()));
    let (in_use, idle) = service.db().connection_counts();
    for (state, count) in [("in_use", in_use), ("idle", idle)] {
        metrics
            .db_connections
            .get_or_create(&crate::metrics::StateLabel { state })
            .set(i64::from(count));
    }
    match crate::metrics::encode(&metrics.registry()) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(%err, "encoding metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Compares SHA-256 digests: how long the comparison takes tells at most how much of the
/// digest matched, which says nothing about the token.
fn token_matches(headers: &HeaderMap, expected: Option<&str>) -> bool {
    // An empty setting is no token: it must not match a request that sends none.
    // Trimmed like the token a request sends.
    let Some(expected) = expected.map(str::trim).filter(|token| !token.is_empty()) else {
        return false;
    };
    // The scheme in any case, as on the GraphQL endpoint.
    let given = bearer_token(headers).unwrap_or_default();
    Sha256::digest(given.as_bytes()) == Sha256::digest(expected.as_bytes())
}
