//! The HTTP server: `/graphql` (POST for operations, GET for GraphiQL), `/health`, `/ready`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::Settings;
use crate::error::{AppError, INTERNAL_MESSAGE, finalize_response};
use crate::graphql::{self, ApiSchema, Limits};
use crate::service::{Service, StartError};

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
struct AppState {
    schema: ApiSchema,
    service: Service,
    request_timeout: Duration,
    trusted_proxies: Arc<[IpNet]>,
    graphiql: bool,
}

pub fn router(service: Service, settings: &Settings) -> Router {
    let state = AppState {
        schema: graphql::build_schema(Some(service.clone()), Limits::from_settings(settings)),
        service,
        request_timeout: settings.request_timeout,
        trusted_proxies: settings.trusted_proxies.clone().into(),
        graphiql: settings.graphiql,
    };
    let mut router = Router::new();
    if settings.graphiql {
        router = router.merge(crate::graphiql::routes());
    }
    router
        .route("/graphql", get(graphiql).post(graphql_post))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .layer(DefaultBodyLimit::disable())
        // A panic fails its own request with a 500, not the connection.
        .layer(CatchPanicLayer::custom(|_| {
            request_error(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MESSAGE)
        }))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting and finishes requests in flight.
pub async fn serve(
    listener: TcpListener,
    service: Service,
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(service, settings).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A server running in the background of this process, as tests and embedders use it.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub service: Service,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    pub async fn start(settings: &Settings) -> Result<Self, StartError> {
        let service = Service::start(settings).await?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|err| StartError::Other(AppError::internal_from("cannot listen", err)))?;
        let addr = listener
            .local_addr()
            .map_err(|err| StartError::Other(AppError::internal_from("cannot listen", err)))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app =
            router(service.clone(), settings).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            addr,
            service,
            stop: Some(stop),
            task,
        })
    }

    /// Graceful stop; waits for requests in flight.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// One GraphQL request per POST. The body is read here rather than by async-graphql-axum's
/// extractor: that one reads past axum's body limit, reports an oversized body as a generic
/// I/O error, and accepts batches and multipart bodies, where this server answers 413, and
/// 400 for batches, with a JSON error and its code.
///
/// The request runs in this handler's future: when the client goes away, or the request
/// timeout passes, it is dropped, and with it any open transaction (rolled back) and any
/// password check still waiting for a hashing thread (skipped).
async fn graphql_post(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !is_json(&headers) {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "POST bodies must be JSON (Content-Type: application/json)",
        );
    }
    let client_ip = client_ip(peer, &headers, &state.trusted_proxies);
    let timeout = state.request_timeout;
    match tokio::time::timeout(timeout, execute(state, headers, body, client_ip)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?timeout, %client_ip, "request timed out; its work was rolled back");
            let error = AppError::Timeout(
                "The request took too long and was stopped; its unfinished work was rolled back",
            );
            let body = serde_json::json!({
                "errors": [{ "message": error.to_string(), "extensions": { "code": error.code() } }]
            });
            json_response(StatusCode::SERVICE_UNAVAILABLE, &body)
        }
    }
}

async fn execute(state: AppState, headers: HeaderMap, body: Body, client_ip: IpAddr) -> Response {
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(err) => {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            return if too_large {
                request_error(StatusCode::PAYLOAD_TOO_LARGE, "Request body exceeds 1 MiB")
            } else {
                request_error(StatusCode::BAD_REQUEST, "Could not read the request body")
            };
        }
    };
    let request = match parse_request(&bytes) {
        Ok(request) => request,
        Err(message) => return request_error(StatusCode::BAD_REQUEST, message),
    };
    let request = graphql::request_data(
        request,
        &state.service,
        bearer_token(&headers),
        Some(client_ip),
    );
    let mut response = state.schema.execute(request).await;
    finalize_response(&mut response);
    json_response(StatusCode::OK, &response)
}

/// `application/json`, with or without parameters. Anything else (notably `text/plain` and
/// the form encodings, which a browser sends cross-site without a preflight) is refused
/// before it runs.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The client's address: the socket's, or, when the socket's is a trusted proxy, the last
/// address in `X-Forwarded-For` that is not itself a trusted proxy. Addresses a client put
/// further left are never believed.
fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.ip().to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        let parsed = hop
            .parse::<IpAddr>()
            .or_else(|_| hop.parse::<SocketAddr>().map(|addr| addr.ip()));
        match parsed {
            Ok(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client) {
                    return client;
                }
            }
            // Garbage from beyond the last trusted proxy: that proxy is the client we know.
            Err(_) => return client,
        }
    }
    client
}

/// One GraphQL request per POST: a JSON array (a batch) is refused.
fn parse_request(bytes: &Bytes) -> Result<async_graphql::Request, &'static str> {
    if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'[') {
        return Err("Batched requests are not supported");
    }
    serde_json::from_slice(bytes).map_err(|err| match err.classify() {
        serde_json::error::Category::Data => "The body is not a GraphQL request",
        _ => "The body is not valid JSON",
    })
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// An error answered before GraphQL runs, in the same shape as GraphQL's errors.
/// Its code follows from the status.
fn request_error(status: StatusCode, message: &str) -> Response {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        status if status.is_server_error() => "INTERNAL_SERVER_ERROR",
        _ => "BAD_REQUEST",
    };
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    json_response(status, &body)
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(err) => {
            tracing::error!(%err, "serializing response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// GraphiQL, unless it is turned off (`ROLLCALL_GRAPHIQL=false`): then 404, as for any path
/// the server does not serve.
async fn graphiql(State(state): State<AppState>) -> Response {
    if state.graphiql {
        crate::graphiql::page()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn health() -> &'static str {
    "ok"
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.service.db().ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(err) => {
            tracing::warn!(%err, "readiness check: database unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().expect("header"));
        headers
    }

    #[test]
    fn the_client_ip_comes_from_forwarded_for_only_through_trusted_proxies() {
        let proxy: SocketAddr = "10.0.0.2:443".parse().expect("addr");
        let trusted: Vec<IpNet> = vec!["10.0.0.0/24".parse().expect("net")];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let headers = forwarded("203.0.113.9, 198.51.100.4");
        // No trusted proxies: the socket's address, whatever the header says.
        assert_eq!(client_ip(proxy, &headers, &[]), ip("10.0.0.2"));
        // Through a trusted proxy: the last hop it saw; the client-written part is ignored.
        assert_eq!(client_ip(proxy, &headers, &trusted), ip("198.51.100.4"));
        // Several trusted proxies in a row are skipped.
        let chain = forwarded("198.51.100.4, 10.0.0.7");
        assert_eq!(client_ip(proxy, &chain, &trusted), ip("198.51.100.4"));
        // A direct client is never believed.
        let direct: SocketAddr = "192.0.2.1:5555".parse().expect("addr");
        assert_eq!(client_ip(direct, &headers, &trusted), ip("192.0.2.1"));
        // No header, or garbage: the proxy itself.
        assert_eq!(
            client_ip(proxy, &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_ip(proxy, &forwarded("nonsense"), &trusted),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn only_json_bodies_are_accepted() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().expect("header"));
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        for refused in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert!(!with(refused), "{refused}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
