//! GraphQL over HTTP (the GraphQL-over-HTTP specification): `POST /graphql` with a JSON body,
//! `GET /graphql?query=…` for queries, answered as `application/graphql-response+json` (with
//! its status codes) when the client accepts it and as `application/json` otherwise.
//!
//! The body is read here rather than by async-graphql-axum's extractor: that one reads past
//! axum's body limit, reports an oversized body as a generic I/O error, and accepts batches
//! and multipart bodies, where this server answers 413, and 400 for batches.
//!
//! A request runs in its handler's future: when the client goes away, or the request timeout
//! passes, it is dropped, and with it any open transaction (rolled back) and any password
//! check still waiting for a hashing thread (skipped). Only a DataLoader batch already sent
//! (a read, on its own task) runs to its end.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_graphql::parser::types::OperationType;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::client_ip::ClientIp;
use super::{
    AppState, RequestSummary, coded_error, error_answer, json_bytes, json_response, request_error,
    summarised,
};
use crate::error::{AppError, finalize_response};
use crate::graphql::{self, OperationInfo, RequestAuth, SchemaTypes};
use crate::service::validation;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Says the connection closes: the rest of the body is not read, so the connection cannot
/// carry another request, and a client that pooled it would write its next request into a
/// closed socket.
fn body_too_large(unread: Unread) -> Response {
    let mib = MAX_BODY_BYTES / (1024 * 1024);
    let message = match unread {
        Unread::TooManyChunks => format!(
            "Request body comes in more than {} pieces (of {SMALL_CHUNK} bytes on average or \
             less, as chunks or as received): send it in larger ones",
            MAX_BODY_BYTES as u64 / SMALL_CHUNK
        ),
        _ => format!("Request body exceeds {mib} MiB"),
    };
    let mut response = request_error(StatusCode::PAYLOAD_TOO_LARGE, &message);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// How the client wants its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Media {
    /// `application/graphql-response+json`: 400 for requests that fail before execution.
    GraphqlResponse,
    /// `application/json`: 200 for every well-formed request, as older clients expect.
    Json,
}

/// The media type to answer with, from `Accept`; `None` when the client accepts neither.
/// Each type gets the quality of the most specific range that matches it (RFC 9110, 12.5.1),
/// and the higher wins. On a tie, the GraphQL type if the client named it, else
/// `application/json`, which every client of the older form understands.
pub(super) fn negotiate(headers: &HeaderMap) -> Option<Media> {
    let mut ranges = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter(|range| !range.trim().is_empty())
        .peekable();
    if ranges.peek().is_none() {
        return Some(Media::Json);
    }
    let (mut graphql, mut json, mut application, mut any) = (None, None, None, None);
    for range in ranges {
        let mut parts = range.split(';').map(str::trim);
        let essence = parts.next().unwrap_or_default().to_ascii_lowercase();
        let quality = match parts
            .filter_map(|param| param.split_once('='))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case("q"))
        {
            None => 1000,
            Some((_, q)) => match qvalue(q.trim()) {
                Some(q) => q,
                None => continue,
            },
        };
        let slot = match essence.as_str() {
            GRAPHQL_RESPONSE => &mut graphql,
            "application/json" => &mut json,
            "application/*" => &mut application,
            "*/*" => &mut any,
            _ => continue,
        };
        *slot = Some(quality);
    }
    let wildcard = application.or(any);
    let graphql_named = graphql.is_some();
    let graphql = graphql.or(wildcard).unwrap_or(0);
    let json = json.or(wildcard).unwrap_or(0);
    if graphql > 0 && (graphql > json || (graphql == json && graphql_named)) {
        Some(Media::GraphqlResponse)
    } else if json > 0 {
        Some(Media::Json)
    } else {
        None
    }
}

/// An RFC 9110 qvalue in thousandths: `0`, `1`, or either with up to three decimals (`1`'s
/// all zeros). Anything else is no qvalue, and its range is ignored.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Every `/graphql` answer in the media type the client accepts, with `Vary: Accept` and
/// `Cache-Control: no-store`. The refusals made before GraphQL runs (an unreadable body, 413,
/// 415, a timeout) are built as `application/json` too: clients such as Apollo Client 4 read
/// the errors of a non-2xx answer only under the GraphQL type.
pub async fn in_negotiated_media(request: Request, next: Next) -> Response {
    let media = negotiate(request.headers());
    in_media(media, next.run(request).await)
}

/// `response` in `media` (when the client named one it accepts), with `Vary: Accept`, and
/// `Cache-Control: no-store` unless it set its own.
pub(super) fn in_media(media: Option<Media>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    let json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if json && media == Some(Media::GraphqlResponse) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/graphql-response+json; charset=utf-8"),
        );
    }
    headers.append(header::VARY, HeaderValue::from_static("accept"));
    // Answers hold accounts, sessions and addresses: kept by no cache, the browser's included
    // (a GET answer could otherwise be). GraphiQL's page sets its own.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// `/graphql` with a method other than GET, HEAD and POST (OPTIONS is the CORS layer's).
pub async fn other_method(State(state): State<AppState>) -> Response {
    let started = Instant::now();
    let mut response = request_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "GraphQL requests are sent with POST, or GET for queries",
    );
    response.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, OPTIONS"),
    );
    counted(&state, started, response)
}

/// `POST /graphql`: one GraphQL request as JSON.
pub async fn post(
    State(state): State<AppState>,
    Extension(ClientIp(client_ip)): Extension<ClientIp>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let response = respond_to_post(&state, client_ip, &headers, body).await;
    counted(&state, started, response)
}

/// Counts in the metrics a response that never finished executing (refused over HTTP before
/// GraphQL ran, or timed out); [`execute`] counts the others.
pub(super) fn counted(state: &AppState, started: Instant, response: Response) -> Response {
    let summary = response.extensions().get::<RequestSummary>();
    if let Some(summary) = summary.filter(|summary| !summary.executed) {
        let codes: Vec<&str> = summary.codes.iter().map(String::as_str).collect();
        // A timed-out request was valid: its operation, when its document was read by then.
        let operation = if codes.contains(&AppError::TIMEOUT_CODE) {
            summary.operation.as_deref().unwrap_or("unknown")
        } else {
            "invalid"
        };
        state
            .service
            .metrics()
            .request(operation, started.elapsed(), &codes);
    }
    response
}

async fn respond_to_post(
    state: &AppState,
    client_ip: IpAddr,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    if !is_json(headers) {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "POST bodies must be JSON (Content-Type: application/json)",
        );
    }
    if !is_utf8(headers) {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "JSON bodies are UTF-8: leave the charset out or give charset=utf-8",
        );
    }
    if !is_identity(headers) {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Bodies are read as sent: send it without a Content-Encoding",
        );
    }
    let Some(media) = negotiate(headers) else {
        return not_acceptable();
    };
    let timeout = state.request_timeout;
    // A declared length over the limit is refused at once, not after waiting for the body,
    // when the client waits for that answer before sending (`Expect: 100-continue`) or the
    // body is too large to read through.
    let declared = axum::body::HttpBody::size_hint(&body).lower();
    let waits = headers
        .get(header::EXPECT)
        .is_some_and(|expect| expect.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if declared > MAX_BODY_BYTES as u64 && (waits || declared > READ_THROUGH_BYTES) {
        return body_too_large(Unread::TooLarge);
    }
    let seen = Seen::default();
    let work = async {
        let bytes = match read_body(body, declared, timeout / 2).await {
            Ok(bytes) => bytes,
            Err(unread @ (Unread::TooLarge | Unread::TooManyChunks)) => {
                return body_too_large(unread);
            }
            Err(Unread::Broken) => {
                return request_error(StatusCode::BAD_REQUEST, "Could not read the request body");
            }
        };
        match parse_body(&bytes) {
            Ok(request) => {
                let place = (client_ip, media, Method::Post);
                execute(state, headers, request, place, &seen).await
            }
            Err(Refusal::NotPersisted) => persisted_query_not_supported(),
            Err(Refusal::Bad(message)) => request_error(StatusCode::BAD_REQUEST, message),
            Err(Refusal::Repeated(path)) => {
                request_error(StatusCode::BAD_REQUEST, &given_twice(&path))
            }
            Err(Refusal::OutOfRange) => {
                request_error(StatusCode::BAD_REQUEST, &out_of_range("The body"))
            }
            Err(Refusal::Batch(requests)) => batch_refused(requests),
        }
    };
    with_timeout(timeout, client_ip, &seen, work).await
}

/// How much of a body over [`MAX_BODY_BYTES`] is read (and dropped) before the 413. Most
/// clients send the whole body before they read the answer: closed with the rest of it
/// unread, the connection is reset and the answer lost with it. A larger body is cut off.
const READ_THROUGH_BYTES: u64 = 16 * 1024 * 1024;

/// The size of chunk below which a body's chunks count against its bounds by their number:
/// each costs the server what a large one does (a body sent a byte a chunk took 45 times its
/// sender's work), so a body may come in at most its bound's worth of chunks this size.
const SMALL_CHUNK: u64 = 64;

enum Unread {
    TooLarge,
    TooManyChunks,
    Broken,
}

/// The request body, when it is at most [`MAX_BODY_BYTES`] (`declared` long, as far as the
/// request says) in at most as many chunks of [`SMALL_CHUNK`]. A larger one is read through to
/// its end, up to [`READ_THROUGH_BYTES`] and for at most `read_through_for` (so that a slow
/// sender still gets its 413 rather than the request timeout's 503, which invites a retry), and
/// refused.
async fn read_body(
    mut body: Body,
    declared: u64,
    read_through_for: std::time::Duration,
) -> Result<Bytes, Unread> {
    use http_body_util::BodyExt;
    let mut bytes = Vec::new();
    let mut read = 0u64;
    let mut chunks = 0u64;
    let max = MAX_BODY_BYTES as u64;
    while read <= max && declared <= max && chunks <= max / SMALL_CHUNK {
        let Some(frame) = body.frame().await else {
            return Ok(Bytes::from(bytes));
        };
        let Ok(data) = frame.map_err(|_| Unread::Broken)?.into_data() else {
            continue;
        };
        read += data.len() as u64;
        chunks += 1;
        if read <= max {
            bytes.extend_from_slice(&data);
        }
    }
    let refused = if read > max || declared > max {
        Unread::TooLarge
    } else {
        Unread::TooManyChunks
    };
    let read_through = async {
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |data| data.len() as u64);
            chunks += 1;
            if read > READ_THROUGH_BYTES || chunks > READ_THROUGH_BYTES / SMALL_CHUNK {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(read_through_for, read_through).await;
    Err(refused)
}

/// Whether `err` is serde_json's refusal of JSON nested past its bound (128), told by its own
/// wording.
fn is_too_deep(err: &serde_json::Error) -> bool {
    err.to_string().starts_with("recursion limit exceeded")
}

/// Whether `err` is serde_json's refusal of a number beyond a 64-bit float (`1e400`), which is
/// valid JSON a reader may refuse: said as such, not as JSON that is not valid.
fn is_out_of_range(err: &serde_json::Error) -> bool {
    err.to_string().starts_with("number out of range")
}

/// The refusal of a JSON member given twice, named by its path (cut short: a name may be long).
fn given_twice(path: &str) -> String {
    format!("`{}` is given twice in one JSON object", shown(path))
}

/// A client's name (an operation's, a JSON member's) as an answer or the log shows it: its
/// first 100 characters, so a long one costs neither much.
fn cut_short(name: &str) -> String {
    name.chars().take(100).collect()
}

/// The client's `operationName` as the log shows it: only a GraphQL name (letters, digits and
/// `_`), which no operation could have otherwise; any other text is the client's to choose, an
/// email or a password say, and the log keeps none of a body.
fn logged_name(name: &str) -> Option<String> {
    let mut bytes = name.bytes();
    let named = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    named.then(|| cut_short(name))
}

/// [`cut_short`], with an ellipsis where it cut.
fn shown(name: &str) -> String {
    let cut = cut_short(name);
    if cut.len() < name.len() {
        cut + "…"
    } else {
        cut
    }
}

/// The refusal of a number beyond a 64-bit float in `part` of a request.
fn out_of_range(part: &str) -> String {
    format!("{part} holds a number out of range (beyond a 64-bit float)")
}

/// The parameters of a GraphQL request in a query string.
const GET_PARAMETERS: [&str; 4] = ["query", "variables", "operationName", "extensions"];

/// The answer to a WebSocket handshake.
const NO_WEBSOCKETS: &str = "This schema has no subscriptions, and the server takes no WebSocket connections: send queries and mutations as HTTP GET or POST requests";

/// `GET /graphql?query=…&variables=…&operationName=…`: queries only. Without a query, a
/// browser gets GraphiQL.
pub async fn get(
    State(state): State<AppState>,
    Extension(ClientIp(client_ip)): Extension<ClientIp>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    // A subscription client's handshake (graphql-ws): the page or a missing `query` would be
    // no answer to it.
    let upgrade = headers.get(axum::http::header::UPGRADE);
    if upgrade
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .any(|protocol| protocol.trim().eq_ignore_ascii_case("websocket"))
        })
    {
        return counted(
            &state,
            started,
            request_error(StatusCode::BAD_REQUEST, NO_WEBSOCKETS),
        );
    }
    let mut params = HashMap::new();
    for (key, value) in pairs {
        // One of the request's own parameters given twice: which one a cache or proxy in
        // between would pick is anyone's guess, so none is run.
        if GET_PARAMETERS.contains(&key.as_str()) && params.contains_key(&key) {
            let message = format!("`{key}` is given twice");
            return counted(
                &state,
                started,
                request_error(StatusCode::BAD_REQUEST, &message),
            );
        }
        params.insert(key, value);
    }
    let Some(query) = params.get("query").filter(|query| !query.is_empty()) else {
        let hash_only = params.get("extensions").is_some_and(|extensions| {
            serde_json::from_str::<serde_json::Value>(extensions)
                .is_ok_and(|extensions| extensions.get("persistedQuery").is_some())
        });
        if hash_only {
            return counted(&state, started, persisted_query_not_supported());
        }
        // The page itself is no GraphQL request; a refusal in its place is counted.
        return counted(&state, started, super::graphiql(&state, &headers));
    };
    let response = respond_to_get(&state, client_ip, query, &params, &headers).await;
    counted(&state, started, response)
}

async fn respond_to_get(
    state: &AppState,
    client_ip: IpAddr,
    query: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let Some(media) = negotiate(headers) else {
        return not_acceptable();
    };
    let mut request = async_graphql::Request::new(query);
    if let Some(name) = params.get("operationName").filter(|n| !n.is_empty()) {
        request = request.operation_name(name.clone());
    }
    for (key, slot) in [("variables", 0), ("extensions", 1)] {
        let Some(text) = params.get(key).filter(|t| !t.is_empty()) else {
            continue;
        };
        match serde_json::from_str::<serde_json::Value>(text) {
            // `null` is no value, as in a POST body.
            Ok(serde_json::Value::Null) => {}
            Ok(value @ serde_json::Value::Object(_)) => {
                if let Some(path) = validation::repeated_member(text.as_bytes()) {
                    return request_error(
                        StatusCode::BAD_REQUEST,
                        &given_twice(&format!("{key}.{path}")),
                    );
                }
                if slot == 0 {
                    request = request.variables(async_graphql::Variables::from_json(value));
                } else if let Ok(extensions) = serde_json::from_value(value) {
                    request.extensions = extensions;
                }
            }
            Err(err) if is_too_deep(&err) => {
                return request_error(
                    StatusCode::BAD_REQUEST,
                    &format!("`{key}` nests JSON 128 deep or more"),
                );
            }
            Err(err) if is_out_of_range(&err) => {
                return request_error(StatusCode::BAD_REQUEST, &out_of_range(&format!("`{key}`")));
            }
            _ => {
                return request_error(
                    StatusCode::BAD_REQUEST,
                    "`variables` and `extensions` must be JSON objects",
                );
            }
        }
    }
    let timeout = state.request_timeout;
    let seen = Seen::default();
    let place = (client_ip, media, Method::Get);
    let work = execute(state, headers, request, place, &seen);
    with_timeout(timeout, client_ip, &seen, work).await
}

/// What a request's operation turned out to be, read again when it runs out of time.
#[derive(Default)]
struct Seen {
    info: OperationInfo,
    /// The client's `operationName`, once the request is read.
    name: std::sync::OnceLock<Option<String>>,
}

impl Seen {
    /// The log's summary of a request that ran out of time: what was seen of it by then.
    fn summary(&self, code: &str) -> RequestSummary {
        let name = self.name.get().cloned().flatten();
        RequestSummary {
            operation: self.info.root_field(name.as_deref()),
            operation_name: name.as_deref().and_then(logged_name),
            codes: vec![code.to_owned()],
            ..RequestSummary::default()
        }
    }
}

/// How a request came: GET carries queries only.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

/// Whether the operation `request` selects is a mutation (a document that does not parse, or
/// names no such operation, is left to execution to refuse). The parsed document stays in the
/// request, so execution does not parse it again.
fn selects_mutation(request: &mut async_graphql::Request) -> bool {
    let wanted = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return false;
    };
    graphql::selected_operation(document, wanted.as_deref())
        .is_some_and(|operation| operation.node.ty == OperationType::Mutation)
}

async fn with_timeout(
    timeout: std::time::Duration,
    client_ip: IpAddr,
    seen: &Seen,
    work: impl Future<Output = Response>,
) -> Response {
    match tokio::time::timeout(timeout, work).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?timeout, %client_ip, "request timed out; its work was rolled back");
            let error = crate::error::TIMED_OUT;
            let mut response = coded_error(
                StatusCode::SERVICE_UNAVAILABLE,
                error.code(),
                &error.to_string(),
            );
            // Which operations time out is what an operator asks during an incident.
            response.extensions_mut().insert(seen.summary(error.code()));
            // Still reading the body: the rest of it is not read, so the connection closes,
            // said as with a 413.
            if seen.name.get().is_none() {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    }
}

async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    mut request: async_graphql::Request,
    (client_ip, media, method): (IpAddr, Media, Method),
    seen: &Seen,
) -> Response {
    let started = Instant::now();
    let operation_name = request.operation_name.clone();
    let _ = seen.name.set(operation_name.clone());
    let auth = Arc::new(RequestAuth::new(bearer_token(headers)));
    let info = &seen.info;
    let prepared = graphql::prepare_query(&state.limits, &mut request);
    // Asked only of a text within the limits on what is parsed (a few thousand nested
    // brackets would overflow the parser's stack), whether or not it passes the rest.
    if method == Method::Get && prepared.is_ok() && selects_mutation(&mut request) {
        let mut response = request_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Mutations are sent with POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let checked = prepared
        .and_then(|()| graphql::check_document(&state.limits, &mut request, info))
        .and_then(|()| check_values(&state.schema_types, &mut request));
    let mut response = match checked {
        Ok(shape) => {
            // Kept to mend the response afterwards (parsed again only then).
            let query = request.query.clone();
            let variables = shape.root_repeats.then(|| request.variables.clone());
            let request = graphql::request_data(
                request,
                &state.service,
                auth.clone(),
                client_ip,
                graphql::UserAgent::from_header(headers.get(axum::http::header::USER_AGENT)),
            );
            let mut response = state.schema.execute(request).await;
            let skips = shape.skips;
            if let Some(key) = &shape.kept {
                graphql::unkeep(&mut response, key);
            }
            let failed = response.errors.iter().any(|error| !error.path.is_empty());
            if (failed || skips || shape.root_repeats)
                && let Ok(document) = async_graphql::parser::parse_query(&query)
            {
                let wanted = operation_name.as_deref();
                if failed {
                    state
                        .schema_types
                        .propagate_nulls(&mut response, &document, wanted);
                }
                if skips {
                    state
                        .schema_types
                        .restore_skipped(&mut response, &document, wanted);
                }
                // Last: the mending above adds the nulls it makes at an object's end.
                if let Some(variables) = &variables {
                    graphql::order_repeated_root(&mut response, &document, wanted, variables);
                }
            }
            graphql::order_root(&mut response, &shape.root_keys);
            graphql::describe(&mut response, &shape.descriptions);
            response
        }
        Err(refusal) => async_graphql::Response::from_errors(vec![refusal]),
    };
    graphql::name_complexity_limit(&mut response, state.limits.complexity);
    finalize_response(&mut response);
    // Refused before execution: parse, validation, limits, variables.
    let refused = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|error| error.path.is_empty());
    // Serialized before it is counted: an answer too long to send is counted by its code.
    let mut answer = None;
    if !refused {
        let mut capped = Capped(Vec::new());
        match serde_json::to_writer(&mut capped, &response) {
            Ok(()) => answer = Some(capped.0),
            Err(err) if err.is_io() => {
                response = async_graphql::Response::from_errors(vec![too_long()]);
            }
            // Left to `json_response` below, which logs it.
            Err(_) => {}
        }
    }

    let codes: Vec<String> = response
        .errors
        .iter()
        .filter_map(|error| {
            let code = error.extensions.as_ref()?.get("code")?;
            match code {
                async_graphql::Value::String(code) => Some(code.clone()),
                _ => None,
            }
        })
        .collect();
    let operation = if refused {
        "invalid".to_owned()
    } else {
        info.root_field(operation_name.as_deref())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    // Each code once, however many errors carry it: one request of a hundred invalid fields is
    // one failed request to an alert, and to the log line.
    let mut logged: Vec<String> = Vec::new();
    for code in codes {
        if !logged.contains(&code) {
            logged.push(code);
        }
    }
    let code_refs: Vec<&str> = logged.iter().map(String::as_str).collect();
    state
        .service
        .metrics()
        .request(&operation, started.elapsed(), &code_refs);

    let mut http = if refused {
        // The specification's form for a request that never executed: no `data` entry; 400
        // under the GraphQL media type, 200 for clients that know only application/json.
        let status = match media {
            Media::GraphqlResponse => StatusCode::BAD_REQUEST,
            Media::Json => StatusCode::OK,
        };
        json_response(status, &serde_json::json!({ "errors": response.errors }))
    } else if let Some(bytes) = answer {
        json_bytes(StatusCode::OK, bytes)
    } else {
        json_response(StatusCode::OK, &response)
    };
    http.extensions_mut().insert(RequestSummary {
        operation_name: operation_name.as_deref().and_then(logged_name),
        operation: Some(operation),
        user: auth.signed_in(),
        executed: true,
        codes: logged,
    });
    http
}

/// The longest answer sent. The document limits bound the fields asked for, not their
/// length, and lists nest through an API token's `createdBy`: one short query of a user with
/// a hundred tokens of long names could otherwise be answered with tens of megabytes, held
/// for a client that does not read them until the write timeout.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

/// An answer as it is serialized, given up once longer than [`MAX_ANSWER_BYTES`] rather than
/// copied whole first (tens of megabytes, beside the response it is made from).
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + bytes.len() > MAX_ANSWER_BYTES {
            return Err(std::io::Error::other("the answer is too long to send"));
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The error that stands for an answer longer than [`MAX_ANSWER_BYTES`].
fn too_long() -> async_graphql::ServerError {
    let mut error = async_graphql::ServerError::new(
        format!(
            "The answer is longer than the 8 MiB ({MAX_ANSWER_BYTES} bytes) sent at most: select \
             fewer fields or smaller pages (what a mutation changed stays changed)"
        ),
        None,
    );
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", "RESPONSE_TOO_LARGE");
    error.extensions = Some(extensions);
    error
}

/// What execution's answer is shaped by afterwards.
struct Shape {
    /// The response keys of the root fields, for [`graphql::order_root`].
    root_keys: Vec<async_graphql::Name>,
    /// Where the response holds the schema's description, for [`graphql::describe`].
    descriptions: Vec<(async_graphql::Name, async_graphql::Name)>,
    /// Whether the document skips fields (`@skip`, `@include`), for
    /// [`SchemaTypes::restore_skipped`].
    skips: bool,
    /// The key of [`graphql::keep_objects`]'s field when the document runs with it, to take
    /// out after.
    kept: Option<async_graphql::Name>,
    /// Whether a root field is selected twice, for [`graphql::order_repeated_root`].
    root_repeats: bool,
}

/// Checks the input values of the request's (parsed) document against their types, gives its
/// left-out variables their defaults (or null, noting which, for the resolvers), and tells how
/// the response is to be shaped.
fn check_values(
    types: &SchemaTypes,
    request: &mut async_graphql::Request,
) -> async_graphql::ServerResult<Shape> {
    // Set aside while the parsed document borrows the request.
    let mut variables = std::mem::take(&mut request.variables);
    let wanted = request.operation_name.clone();
    let checked = request.parsed_query().and_then(|document| {
        // async-graphql's own refusal would repeat the whole name, however long.
        if let Some(name) = wanted.as_deref()
            && graphql::selected_operation(document, Some(name)).is_none()
        {
            return Err(async_graphql::ServerError::new(
                format!("Unknown operation named \"{}\"", shown(name)),
                None,
            ));
        }
        let checked = types.check_values(document, wanted.as_deref(), &mut variables)?;
        let kept = checked.skips.then(|| graphql::keep_objects(document));
        let (root_keys, root_repeats) = graphql::root_keys(document, wanted.as_deref(), &variables);
        let shape = Shape {
            root_keys,
            descriptions: graphql::description_keys(document, wanted.as_deref()),
            skips: checked.skips,
            kept: kept.as_ref().map(|(_, key)| key.clone()),
            root_repeats,
        };
        Ok((shape, checked.left_out, kept.map(|(document, _)| document)))
    });
    request.variables = variables;
    let (shape, left_out, kept) = checked?;
    if let Some(document) = kept {
        request.set_parsed_query(document);
    }
    request.data.insert(left_out);
    Ok(shape)
}

/// A batch's refusal: one answer per request in an array when the batch is small enough, as
/// batching clients (Apollo's `BatchHttpLink`) read the answer of each operation from its
/// place, else one.
fn batch_refused(requests: Option<usize>) -> Response {
    let Some(requests) = requests else {
        return request_error(StatusCode::BAD_REQUEST, BATCH_REFUSED);
    };
    let answers = vec![error_answer("BAD_REQUEST", BATCH_REFUSED); requests];
    summarised(
        json_response(StatusCode::BAD_REQUEST, &answers),
        "BAD_REQUEST",
    )
}

/// A persisted query's hash without its text: none are kept here. The message is the one
/// Apollo's persisted-query link looks for, to send the query itself.
fn persisted_query_not_supported() -> Response {
    coded_error(
        StatusCode::BAD_REQUEST,
        "PERSISTED_QUERY_NOT_SUPPORTED",
        "PersistedQueryNotSupported",
    )
}

/// Why a POST body is no request to run.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Bad(&'static str),
    /// A member given twice in one JSON object, by its path from the body's top.
    Repeated(String),
    /// A number beyond a 64-bit float.
    OutOfRange,
    /// A persisted query's hash without its text: none are kept here.
    NotPersisted,
    /// A batch, with its number of requests when it is a JSON array of at most
    /// [`MAX_BATCH_ANSWERS`].
    Batch(Option<usize>),
}

const BATCH_REFUSED: &str = "Batched requests are not supported";

/// The most requests of a refused batch answered one by one; a larger one gets one refusal.
const MAX_BATCH_ANSWERS: usize = 100;

/// The most JSON values a body may hold. Read into values, each costs far more memory than
/// its bytes (a megabyte of `[[]]` about a hundred megabytes), and no request of this schema
/// needs more than a few dozen: the bound is checked on the bytes, before anything is built.
const MAX_JSON_VALUES: usize = 10_000;

/// Whether the JSON text `bytes` holds more than `limit` arrays, objects and values separated
/// by commas, counted outside strings (a rough count, which only has to bound the work).
fn holds_more_values(bytes: &[u8], limit: usize) -> bool {
    let (mut count, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in bytes {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' | b',' => {
                count += 1;
                if count > limit {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// One GraphQL request per POST: a JSON array (a batch) is refused. A UTF-8 byte-order mark
/// before it is skipped, as JSON parsers may (RFC 8259, 8.1): Windows tools write one to files
/// that are then sent as they are.
fn parse_body(body: &[u8]) -> Result<async_graphql::Request, Refusal> {
    let bytes = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if holds_more_values(bytes, MAX_JSON_VALUES) {
        return Err(Refusal::Bad(
            "The body holds more than 10,000 JSON values; no request needs that many",
        ));
    }
    if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'[') {
        let requests = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(bytes)
            .ok()
            .map(|requests| requests.len())
            .filter(|n| (1..=MAX_BATCH_ANSWERS).contains(n));
        return Err(Refusal::Batch(requests));
    }
    const NOT_A_REQUEST: &str =
        "The body is not a GraphQL request (a JSON object with a string `query`)";
    let mut request: async_graphql::Request =
        serde_json::from_slice(bytes).map_err(|err| match err.classify() {
            // serde's own wording for a member given twice, which a parser that keeps the
            // last would run unnoticed.
            serde_json::error::Category::Data if err.to_string().starts_with("duplicate field") => {
                Refusal::Bad("The body gives a member (`query`, `variables`, `operationName` or `extensions`) twice")
            }
            // Valid JSON of another shape: say what is wrong with it.
            serde_json::error::Category::Data => {
                match serde_json::from_slice::<serde_json::Value>(bytes) {
                    Ok(body) if body.get("query").is_some_and(serde_json::Value::is_string) => {
                        Refusal::Bad(
                            "`variables` and `extensions` must be JSON objects, `operationName` a string",
                        )
                    }
                    Ok(body)
                        if body.get("query").is_none_or(serde_json::Value::is_null)
                            && body.pointer("/extensions/persistedQuery").is_some() =>
                    {
                        Refusal::NotPersisted
                    }
                    _ => Refusal::Bad(NOT_A_REQUEST),
                }
            }
            _ if is_too_deep(&err) => Refusal::Bad("The body nests JSON 128 deep or more"),
            _ if is_out_of_range(&err) => Refusal::OutOfRange,
            _ => Refusal::Bad("The body is not valid JSON"),
        })?;
    // Only a body with values inside it to repeat is read again, and only those values.
    if !request.variables.is_empty() || !request.extensions.is_empty() {
        #[derive(serde::Deserialize)]
        struct Nested<'a> {
            #[serde(borrow)]
            variables: Option<&'a serde_json::value::RawValue>,
            #[serde(borrow)]
            extensions: Option<&'a serde_json::value::RawValue>,
        }
        if let Ok(nested) = serde_json::from_slice::<Nested>(bytes) {
            for (name, value) in [
                ("variables", nested.variables),
                ("extensions", nested.extensions),
            ] {
                let repeated =
                    value.and_then(|value| validation::repeated_member(value.get().as_bytes()));
                if let Some(path) = repeated {
                    return Err(Refusal::Repeated(format!("{name}.{path}")));
                }
            }
        }
    }
    // async-graphql reads a missing `query` as an empty one; there is no request without it.
    if request.query.is_empty() {
        if request.extensions.contains_key("persistedQuery") {
            return Err(Refusal::NotPersisted);
        }
        return Err(Refusal::Bad(NOT_A_REQUEST));
    }
    // Empty, as in a GET's query string: no name given.
    request.operation_name = request.operation_name.filter(|name| !name.is_empty());
    Ok(request)
}

/// `application/json`, with or without parameters. Anything else (notably `text/plain` and
/// the form encodings, which a browser sends cross-site without a preflight) is refused
/// before it runs.
fn is_json(headers: &HeaderMap) -> bool {
    // One type: with two, which one a body is in is anyone's guess.
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let first = types.next();
    let one = if types.next().is_none() { first } else { None };
    one.and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// A `charset` parameter, when there is one, says UTF-8 (the only encoding of JSON) or its
/// subset US-ASCII.
fn is_utf8(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return true;
    };
    value.split(';').skip(1).all(|parameter| {
        let Some((name, charset)) = parameter.split_once('=') else {
            return true;
        };
        let charset = charset.trim().trim_matches('"');
        !name.trim().eq_ignore_ascii_case("charset")
            || ["utf-8", "us-ascii"]
                .iter()
                .any(|utf8| charset.eq_ignore_ascii_case(utf8))
    })
}

/// No `Content-Encoding` but `identity`: a compressed body would be read as JSON, and an
/// unknown coding ignored.
fn is_identity(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .all(|value| {
            value.to_str().is_ok_and(|codings| {
                codings
                    .split(',')
                    .all(|coding| coding.trim().eq_ignore_ascii_case("identity"))
            })
        })
}

fn not_acceptable() -> Response {
    request_error(
        StatusCode::NOT_ACCEPTABLE,
        "Responses are application/graphql-response+json or application/json",
    )
}

/// The request's bearer token; none for an empty header or `Bearer` alone, as clients send
/// when they have no token yet. A header that holds something else (another scheme, two
/// headers, bytes that are not text) counts as a token that fails: the client hears that its
/// credential is wrong, not that it sent none.
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    let Some(value) = value.to_str().ok().filter(|_| values.next().is_none()) else {
        return Some(String::new());
    };
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !(scheme.is_empty() || scheme.eq_ignore_ascii_case("bearer")) {
        return Some(String::new());
    }
    Some(token.trim().to_owned()).filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_counted_outside_strings() {
        let many = |n: usize| format!("{{\"v\": [{}]}}", vec!["[]"; n].join(","));
        // The object, the list, its three lists and the two commas between them.
        assert!(!holds_more_values(many(3).as_bytes(), 7));
        assert!(holds_more_values(many(3).as_bytes(), 6));
        let text = format!("{{\"query\": \"{}\\\" [,{{\"}}", "[,{".repeat(1000));
        assert!(!holds_more_values(text.as_bytes(), 5), "{text}");
    }

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, value.parse().expect("header"));
        headers
    }

    #[test]
    fn the_answer_follows_accept() {
        let accept = |value: &str| negotiate(&with(header::ACCEPT, value));
        assert_eq!(negotiate(&HeaderMap::new()), Some(Media::Json));
        assert_eq!(accept("application/json"), Some(Media::Json));
        assert_eq!(accept("*/*"), Some(Media::Json));
        assert_eq!(
            accept("application/graphql-response+json, application/json;q=0.9"),
            Some(Media::GraphqlResponse)
        );
        assert_eq!(accept("application/graphql-response+json;q=0"), None);
        assert_eq!(
            accept("application/json;q=1, application/graphql-response+json;q=0.1"),
            Some(Media::Json)
        );
        assert_eq!(
            accept("application/json, application/graphql-response+json"),
            Some(Media::GraphqlResponse)
        );
        assert_eq!(
            accept("application/json;q=0, */*"),
            Some(Media::GraphqlResponse),
            "the most specific range decides"
        );
        assert_eq!(accept("application/json;q=0, text/*"), None);
        assert_eq!(
            accept("application/json;q=0.001, */*"),
            Some(Media::GraphqlResponse),
            "*/* gives the unnamed type its quality"
        );
        assert_eq!(
            accept("application/graphql-response+json;q=2, application/json;q=0.5"),
            Some(Media::Json),
            "an invalid qvalue drops its range"
        );
        assert_eq!(accept("application/json;q=high"), None);
        assert_eq!(accept("application/json; Q=0.000"), None);
        assert_eq!(accept("application/json;q=1.000"), Some(Media::Json));
        assert_eq!(
            accept("*/*;q=0.5, application/graphql-response+json;q=0.4"),
            Some(Media::Json)
        );
        assert_eq!(accept("text/html, application/*;q=0.3"), Some(Media::Json));
        assert_eq!(accept("text/html"), None);
    }

    #[test]
    fn bodies_are_utf8_and_uncompressed() {
        let content = |value: &str| is_utf8(&with(header::CONTENT_TYPE, value));
        assert!(content("application/json"));
        assert!(content("application/json; charset=UTF-8"));
        assert!(content("application/json; charset=\"utf-8\""));
        assert!(content("application/json; charset=US-ASCII"));
        assert!(content("application/json; charset=\"us-ascii\""));
        assert!(!content("application/json; charset=utf-16"));
        assert!(!content("application/json;charset=latin1"));
        let coding = |value: &str| is_identity(&with(header::CONTENT_ENCODING, value));
        assert!(is_identity(&HeaderMap::new()));
        assert!(coding("identity"));
        assert!(!coding("gzip"));
        assert!(!coding("zz"));
        assert!(!coding("identity, br"));
    }

    #[test]
    fn authorization_headers_as_clients_send_them() {
        assert_eq!(bearer_token(&HeaderMap::new()), None);
        let token = |value: &str| bearer_token(&with(header::AUTHORIZATION, value));
        assert_eq!(token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token("bearer  abc ").as_deref(), Some("abc"));
        for wrong in ["Basic YTpi", "abc", "Bearer\tabc", "Basic"] {
            assert_eq!(token(wrong).as_deref(), Some(""), "{wrong}");
        }
        for none in ["", " ", "Bearer", "bearer ", "Bearer   "] {
            assert_eq!(token(none), None, "{none:?}");
        }
        let mut two = with(header::AUTHORIZATION, "Bearer abc");
        two.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer def"),
        );
        assert_eq!(bearer_token(&two).as_deref(), Some(""));
    }

    #[test]
    fn only_json_bodies_are_accepted() {
        let content = |value: &str| is_json(&with(header::CONTENT_TYPE, value));
        assert!(content("application/json"));
        assert!(content("Application/JSON; charset=utf-8"));
        let mut two = with(header::CONTENT_TYPE, "application/json");
        two.append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&two));
        for refused in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert!(!content(refused), "{refused}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn qvalues_are_read_strictly() {
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.123"), Some(123));
        assert_eq!(qvalue("0."), Some(0));
        for invalid in ["2", "1.5", "0.1234", "-0.5", "inf", "NaN", "1e9", "", ".5"] {
            assert_eq!(qvalue(invalid), None, "{invalid}");
        }
    }

    #[test]
    fn a_body_is_refused_for_what_it_gets_wrong() {
        let refusal = |body: &str| match parse_body(&Bytes::from(body.to_owned())) {
            Err(Refusal::Bad(message)) => Some(message.to_owned()),
            Err(Refusal::Repeated(path)) => Some(given_twice(&path)),
            Err(Refusal::OutOfRange) => Some(out_of_range("The body")),
            Err(Refusal::NotPersisted) => Some("not persisted".to_owned()),
            Err(Refusal::Batch(_)) => Some(BATCH_REFUSED.to_owned()),
            Ok(_) => None,
        };
        assert_eq!(refusal(r#"{"query": "{ me { id } }"}"#).as_deref(), None);
        assert_eq!(
            refusal(r#"{"query": "{ me { id } }", "variables": [1]}"#).as_deref(),
            Some("`variables` and `extensions` must be JSON objects, `operationName` a string")
        );
        assert_eq!(
            refusal(r#"{"query": 1}"#).as_deref(),
            Some("The body is not a GraphQL request (a JSON object with a string `query`)")
        );
        // A member given twice in the variables or extensions, at any depth, even written with
        // an escape, named by its path.
        for (repeated, path) in [
            (
                r#"{"query": "q", "variables": {"f": {"role": "A", "role": "B"}}}"#,
                "variables.f.role",
            ),
            (
                r#"{"query": "q", "variables": {"f": [{"a": 1}, {"a": 1, "\u0061": 2}]}}"#,
                "variables.f.1.a",
            ),
            (
                r#"{"query": "q", "extensions": {"x": 1, "x": 2}}"#,
                "extensions.x",
            ),
        ] {
            assert_eq!(refusal(repeated), Some(given_twice(path)), "{repeated}");
        }
        // A member the request does not read is left alone, whatever else it holds.
        assert_eq!(
            refusal(r#"{"query": "q", "variables": {"x": 1}, "other": {"a": 1, "a": 2}}"#),
            None
        );
        assert_eq!(
            refusal(r#"{"query": "q", "variables": {"f": {"a": 1}, "g": {"a": 1}}}"#).as_deref(),
            None
        );
        assert_eq!(
            refusal(r#"{"query": "q", "variables": {"x": 1e400}}"#),
            Some(out_of_range("The body"))
        );
        for (body, requests) in [
            ("[{}]", Some(1)),
            (" [{}, {}]", Some(2)),
            ("[]", None),
            ("[{}, ", None),
        ] {
            let refused = parse_body(&Bytes::from(body.to_owned()));
            assert_eq!(refused.map(drop), Err(Refusal::Batch(requests)), "{body}");
        }
        let many = format!("[{}{{}}]", "{},".repeat(MAX_BATCH_ANSWERS));
        let refused = parse_body(&Bytes::from(many)).map(drop);
        assert_eq!(refused, Err(Refusal::Batch(None)));
        assert_eq!(
            refusal(r#"{"query": "{ me { id } }", "query": "{ serverInfo { name } }"}"#).as_deref(),
            Some(
                "The body gives a member (`query`, `variables`, `operationName` or `extensions`) twice"
            )
        );
        let unnamed = parse_body(&Bytes::from_static(
            br#"{"query": "{ me { id } }", "operationName": ""}"#,
        ));
        assert_eq!(unnamed.map(|request| request.operation_name), Ok(None));
        assert_eq!(refusal("{").as_deref(), Some("The body is not valid JSON"));
        assert_eq!(refusal("\u{FEFF}{\"query\": \"{ me { id } }\"}"), None);
        assert!(refusal("\u{FEFF}\u{FEFF}{\"query\": \"{ me { id } }\"}").is_some());
        let hash_only = r#"{"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "ab"}}}"#;
        assert_eq!(refusal(hash_only).as_deref(), Some("not persisted"));
        let null_query = r#"{"query": null, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "ab"}}}"#;
        assert_eq!(refusal(null_query).as_deref(), Some("not persisted"));
        assert_eq!(
            refusal(r#"{"query": null}"#).as_deref(),
            Some("The body is not a GraphQL request (a JSON object with a string `query`)")
        );
    }

    #[test]
    fn mutations_are_recognised_for_get() {
        let selected = |query: &str, name: Option<&str>| {
            let mut request = async_graphql::Request::new(query);
            if let Some(name) = name {
                request = request.operation_name(name);
            }
            selects_mutation(&mut request)
        };
        assert!(selected("mutation { logout(refreshToken: \"x\") }", None));
        assert!(!selected("{ me { id } }", None));
        let both = "query Q { me { id } } mutation M { logout(refreshToken: \"x\") }";
        assert!(!selected(both, Some("Q")));
        assert!(selected(both, Some("M")));
        assert!(!selected("not graphql", None));
    }
}
