//! The HTTP server: `/graphql` (GraphQL over HTTP, and GraphiQL for browsers), `/health`,
//! `/ready`, `/metrics`, `/.well-known/jwks.json`; around them CORS, a request id, one log
//! line per request, and headers suitable for an API.

mod client_ip;
mod graphql;
mod jwks;
mod observe;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use uuid::Uuid;

use crate::config::Settings;
use crate::error::{AppError, INTERNAL_MESSAGE};
use crate::graphql::{ApiSchema, Limits, SchemaTypes, build_schema};
use crate::service::{Service, StartError};

/// How long browsers may cache a CORS preflight answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(600);

#[derive(Clone)]
struct AppState {
    schema: ApiSchema,
    schema_types: Arc<SchemaTypes>,
    limits: Limits,
    service: Service,
    request_timeout: Duration,
    trusted_proxies: Arc<[IpNet]>,
    metrics_token: Option<Arc<str>>,
    graphiql: bool,
    /// Whether the last readiness check failed: a failure is logged when it begins and the
    /// recovery when it ends, not once per probe while the database is away.
    unready: Arc<std::sync::atomic::AtomicBool>,
}

/// What a GraphQL handler tells the request log about its request.
#[derive(Debug, Clone, Default)]
struct RequestSummary {
    /// The client's `operationName`, shortened.
    operation_name: Option<String>,
    /// The operation's first root field, as metrics label it.
    operation: Option<String>,
    /// The signed-in user, when the request checked its token.
    user: Option<Uuid>,
    /// Whether execution finished and counted the request in the metrics itself.
    executed: bool,
    codes: Vec<String>,
}

/// The routes and the layers around them.
fn router(service: Service, settings: &Settings) -> Router {
    let limits = Limits::from_settings(settings);
    let schema = build_schema(Some(service.clone()), limits);
    let state = AppState {
        schema_types: Arc::new(SchemaTypes::from_sdl(&schema.sdl())),
        schema,
        limits,
        service,
        request_timeout: settings.request_timeout,
        trusted_proxies: settings.trusted_proxies.to_vec().into(),
        metrics_token: settings.metrics_token.as_deref().map(Arc::from),
        graphiql: settings.graphiql,
        unready: Arc::default(),
    };
    let request_id = HeaderName::from_static("x-request-id");
    // CORS on the two endpoints pages on other origins call, the API and its keys: it answers
    // every OPTIONS as a preflight, which elsewhere would say that any path exists.
    let cors = cors(&settings.cors_origins);
    // Layers run outside in from the last one added: the request id is set first, so the
    // log line and the response both carry it.
    let mut router = Router::new();
    if settings.graphiql {
        router = router.merge(crate::graphiql::routes());
    }
    router
        .route(
            "/graphql",
            get(graphql::get)
                .post(graphql::post)
                .fallback(graphql::other_method)
                .layer::<_, std::convert::Infallible>(axum::middleware::from_fn(
                    graphql::in_negotiated_media,
                ))
                // Here too, inside CORS: a page on another origin reads the 500 as such.
                .layer::<_, std::convert::Infallible>(CatchPanicLayer::custom(panicked))
                .layer(cors.clone()),
        )
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(observe::metrics))
        .route(
            "/.well-known/jwks.json",
            get(jwks::jwks)
                .fallback(method_not_allowed)
                .layer(cors.allow_methods([Method::GET])),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_ill_framed,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::request_log,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(axum::middleware::map_request(usable_request_id))
        .with_state(state)
}

/// A panic fails its own request with a 500, not the connection.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    request_error(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MESSAGE)
}

/// Accept errors, logged at most once a minute with how many came since the last line: out of
/// file descriptors, the server tries again every 50 ms, and a line each would flood the log.
#[derive(Default)]
struct AcceptErrors {
    last: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

impl AcceptErrors {
    const EVERY: Duration = Duration::from_secs(60);

    fn record(&self, err: &std::io::Error) {
        let now = std::time::Instant::now();
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match last.as_mut() {
            Some((at, unlogged)) if now.duration_since(*at) < Self::EVERY => *unlogged += 1,
            _ => {
                let unlogged = last.map_or(0, |(_, unlogged)| unlogged);
                tracing::error!(%err, more_since_last_line = unlogged, "accept error");
                *last = Some((now, 0));
            }
        }
    }
}

/// Keeps a client's `X-Request-Id` only when the log can show it as sent: one value of 1 to
/// [`REQUEST_ID_MAX`] printable ASCII characters, not all spaces. Any other is dropped, and a
/// generated one takes its place in the log and the response alike, so the two still match.
async fn usable_request_id(mut request: axum::extract::Request) -> axum::extract::Request {
    let headers = request.headers_mut();
    let mut values = headers.get_all("x-request-id").iter();
    let usable = match (values.next(), values.next()) {
        (Some(value), None) => {
            let bytes = value.as_bytes();
            bytes.len() <= REQUEST_ID_MAX
                && bytes.iter().all(|b| (b' '..=b'~').contains(b))
                && bytes.iter().any(|b| *b != b' ')
        }
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !usable {
        headers.remove("x-request-id");
    }
    request
}

/// The longest request id kept from a client.
const REQUEST_ID_MAX: usize = 128;

/// CORS for browser frontends on other origins: exactly the configured origins (or any,
/// with `*`; no credentials either way, since rollcall uses no cookies), for GET and POST with
/// whatever request headers the browser asks for: client libraries and tracing SDKs add their
/// own (`apollographql-client-name`, `traceparent`, `sentry-trace`), and the server ignores
/// those it does not read. Other origins get no CORS headers at all.
fn cors(origins: &[HeaderValue]) -> CorsLayer {
    let allow = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().cloned())
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([HeaderName::from_static("x-request-id")])
        .max_age(CORS_MAX_AGE)
}

/// Serves until `shutdown` resolves, then stops accepting and finishes requests in flight,
/// for at most the request timeout and [`SHUTDOWN_SLACK`]: a client that stalls while
/// sending a request would otherwise hold the shutdown until the header timeout.
pub fn serve(
    listener: TcpListener,
    service: Service,
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
    // A serving instance cleans up and reloads keys for as long as it lives.
    service.run_in_background();
    let app = router(service, settings).into_make_service_with_connect_info::<SocketAddr>();
    let grace = settings.request_timeout + SHUTDOWN_SLACK;
    // axum-server rather than `axum::serve`, which cannot bound how long a client may take to
    // send a request's head: a client sending it slowly would hold its connection for ever.
    let handle = axum_server::Handle::<SocketAddr>::new();
    // HTTP/1.1 only: proxies speak it to their upstreams.
    let mut server = axum_server::Server::from_listener(listener)
        .http1_only()
        .acceptor(WriteTimeout(settings.header_timeout))
        .handle(handle.clone())
        // Out of file descriptors, say: the server backs off and goes on accepting.
        .accept_error_handler({
            let errors = AcceptErrors::default();
            move |_, err| errors.record(err)
        });
    server
        .http_builder()
        .http1()
        .header_read_timeout(settings.header_timeout);
    tokio::spawn(async move {
        shutdown.await;
        handle.graceful_shutdown(Some(grace));
    });
    server.serve(app)
}

/// Closes a connection when no more of an answer can be written for this long (the header
/// timeout, the time a client is given to send a request's head). hyper bounds how long a
/// client may take to send a request, not to read an answer: a client that stops reading (or
/// pipelines requests and reads none) would hold its connection, and the answers' memory,
/// for ever. The system takes more of an answer only once a good part of the socket's buffer
/// (up to a few MiB) has been read, so a client reading a larger answer must read that much
/// within the timeout.
#[derive(Clone, Copy)]
struct WriteTimeout(Duration);

impl<S> axum_server::accept::Accept<tokio::net::TcpStream, S> for WriteTimeout {
    type Stream = std::pin::Pin<Box<tokio_io_timeout::TimeoutStream<tokio::net::TcpStream>>>;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(self.0));
        std::future::ready(Ok((Box::pin(stream), service)))
    }
}

/// How much longer than the request timeout a shutdown waits for open connections.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(5);

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
        let task = tokio::spawn(serve(listener, service.clone(), settings, async {
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

/// An error answered outside GraphQL's execution, in the same shape as GraphQL's errors.
/// Its code follows from the status.
fn request_error(status: StatusCode, message: &str) -> Response {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        StatusCode::NOT_ACCEPTABLE => "NOT_ACCEPTABLE",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
        status if status.is_server_error() => "INTERNAL_SERVER_ERROR",
        _ => "BAD_REQUEST",
    };
    coded_error(status, code, message)
}

/// [`request_error`] with a code of its own.
fn coded_error(status: StatusCode, code: &str, message: &str) -> Response {
    summarised(json_response(status, &error_answer(code, message)), code)
}

/// An answer of one error, in GraphQL's shape.
fn error_answer(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    })
}

/// `response`, a refusal with `code`, as the request log and the metrics read it.
fn summarised(mut response: Response, code: &str) -> Response {
    response.extensions_mut().insert(RequestSummary {
        codes: vec![code.to_owned()],
        ..RequestSummary::default()
    });
    response
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes(status, bytes),
        Err(err) => {
            tracing::error!(%err, "serializing response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// [`json_response`] of a body serialized already.
fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        bytes,
    )
        .into_response()
}

/// `GET /graphql` without a query: GraphiQL for a browser (404 when it is turned off), a 400
/// for anything else.
fn graphiql(state: &AppState, headers: &HeaderMap) -> Response {
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    match (browser, state.graphiql) {
        (true, true) => crate::graphiql::page(),
        (true, false) => request_error(StatusCode::NOT_FOUND, "No such endpoint"),
        (false, _) => request_error(
            StatusCode::BAD_REQUEST,
            "A GET request needs a `query` parameter",
        ),
    }
}

/// What HTTP/1.1 says a server must refuse and hyper passes on (RFC 9112, 3.2 and 6.1): a
/// request without exactly one `Host`, which proxies and caches may route by a different one
/// than the server saw, and a body in a transfer coding other than `chunked`, which would
/// otherwise be read as if it were plain.
///
/// A GraphQL request refused so is counted in the metrics as the endpoint's own refusals are.
async fn refuse_ill_framed(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let refuse = |status, message| {
        let response = request_error(status, message);
        if request.uri().path() == "/graphql" {
            // In the media type the endpoint's other answers take: this one is made before
            // its routes are reached.
            let response = graphql::in_media(graphql::negotiate(request.headers()), response);
            return graphql::counted(&state, std::time::Instant::now(), response);
        }
        response
    };
    let headers = request.headers();
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && request.version() == Version::HTTP_11) {
        return refuse(StatusCode::BAD_REQUEST, "Give exactly one Host header");
    }
    let codings: Vec<&[u8]> = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    // Chunked once at most (RFC 9112, 7.1): a proxy that decodes it twice would read another
    // body than this server does.
    if codings.len() > 1 && codings.iter().all(|c| c.eq_ignore_ascii_case(b"chunked")) {
        return refuse(StatusCode::BAD_REQUEST, "Chunked may be given once only");
    }
    let foreign_coding = codings
        .iter()
        .any(|coding| !coding.eq_ignore_ascii_case(b"chunked"));
    if foreign_coding {
        return refuse(
            StatusCode::NOT_IMPLEMENTED,
            "The only transfer coding accepted is chunked",
        );
    }
    next.run(request).await
}

async fn not_found() -> Response {
    request_error(StatusCode::NOT_FOUND, "No such endpoint")
}

/// As a 404 is said, with the methods it takes in `Allow` (axum's, added to this answer).
async fn method_not_allowed() -> Response {
    request_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "This endpoint does not take that method",
    )
}

async fn health() -> &'static str {
    "ok"
}

async fn ready(State(state): State<AppState>) -> Response {
    if let Some(path) = state.service.db().file_replaced() {
        if !state.unready.swap(true, Ordering::Relaxed) {
            tracing::error!(
                path = %path.display(),
                "the SQLite database file was removed or replaced since start-up; this \
                 server's open connections still use the file they opened, and what they \
                 write there is lost: restart it"
            );
        }
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "database file removed or replaced",
        )
            .into_response();
    }
    // Reachable, and holding exactly this release's schema: an empty database put in place
    // of the old one, or one a newer release migrated, answers every request with an error.
    let pending = state.service.db().pending_migrations().await;
    let was_unready = state
        .unready
        .swap(!matches!(pending, Ok(0)), Ordering::Relaxed);
    match pending {
        Ok(0) => {
            if was_unready {
                tracing::info!("readiness check: the database is ready again");
            }
            (StatusCode::OK, "ready").into_response()
        }
        Ok(pending) => {
            if !was_unready {
                tracing::warn!(pending, "readiness check: the database lacks migrations");
            }
            (StatusCode::SERVICE_UNAVAILABLE, "database not migrated").into_response()
        }
        Err(err) => {
            if !was_unready {
                tracing::warn!(error = %crate::error::chain(&err), "readiness check: database unavailable or migrated further");
            }
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable, or holding migrations this release does not know",
            )
                .into_response()
        }
    }
}
