//! The HTTP server: `/graphql` (POST for operations, GET for GraphiQL), `/health`, `/ready`.

use std::future::Future;
use std::net::SocketAddr;

use async_graphql::http::GraphiQLSource;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::error::{AppError, INTERNAL_MESSAGE, finalize_response};
use crate::graphql::{self, ApiSchema};
use crate::service::{Service, StartError};

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
struct AppState {
    schema: ApiSchema,
    service: Service,
}

pub fn router(service: Service) -> Router {
    let state = AppState {
        schema: graphql::build_schema(Some(service.clone())),
        service,
    };
    Router::new()
        .route("/graphql", get(graphiql).post(graphql_post))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting and finishes requests in flight.
pub async fn serve(
    listener: TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(service))
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
        let task = tokio::spawn(serve(listener, service.clone(), async {
            let _ = stopped.await;
        }));
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
async fn graphql_post(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
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
    let request = graphql::request_data(request, &state.service, bearer_token(&headers));
    // Run to completion even if the client disconnects, so a mutation is never cut off
    // between its statements.
    let schema = state.schema.clone();
    let mut response = match tokio::spawn(async move { schema.execute(request).await }).await {
        Ok(response) => response,
        Err(err) => {
            tracing::error!(%err, "request task failed");
            return request_error(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MESSAGE);
        }
    };
    finalize_response(&mut response);
    json_response(StatusCode::OK, &response)
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

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
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
