//! Prometheus metrics (`GET /metrics`), kept in a registry of each server's own rather than a
//! process-wide one, so servers embedded side by side (as the tests run them) count apart.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    /// The first root field of the operation (`me`, `login`, …), or `invalid` when the
    /// document was refused: bounded by the schema, unlike client-chosen operation names.
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

/// Every metric rollcall exports. Cheap to clone: the metrics share their values.
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<OperationLabel, Counter>,
    pub duration: Family<OperationLabel, Histogram>,
    pub errors: Family<CodeLabel, Counter>,
    pub logins: Family<ResultLabel, Counter>,
    pub throttled: Family<KindLabel, Counter>,
    pub hash_queue: Gauge,
    pub hash_queue_capacity: Gauge,
    pub hash_wait: Histogram,
    pub db_connections: Family<StateLabel, Gauge>,
    pub db_connections_max: Gauge,
    /// The database's own count, shared with it (see `Db::statement_counter`).
    pub db_statements: Counter,
}

/// Series that exist from the start, at zero: every throttle, both login results, and the
/// codes an alert watches (a rule over a series that has not appeared yet sees no data, not 0).
const THROTTLES: [&str; 4] = ["account", "session", "ip", "busy"];
const LOGIN_RESULTS: [&str; 2] = ["success", "failure"];
const WATCHED_CODES: [&str; 5] = [
    "INTERNAL_SERVER_ERROR",
    "TIMEOUT",
    "RATE_LIMITED",
    "UNAUTHENTICATED",
    "FORBIDDEN",
];

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Self::empty();
        for kind in THROTTLES {
            let _ = metrics.throttled.get_or_create(&KindLabel { kind });
        }
        for result in LOGIN_RESULTS {
            let _ = metrics.logins.get_or_create(&ResultLabel { result });
        }
        for code in WATCHED_CODES {
            let _ = metrics.errors.get_or_create(&CodeLabel {
                code: code.to_owned(),
            });
        }
        metrics
    }
}

impl Metrics {
    fn empty() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
            }),
            errors: Family::default(),
            logins: Family::default(),
            throttled: Family::default(),
            hash_queue: Gauge::default(),
            hash_queue_capacity: Gauge::default(),
            hash_wait: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            db_connections: Family::default(),
            db_connections_max: Gauge::default(),
            db_statements: Counter::default(),
        }
    }

    /// A registry holding these metrics, for encoding.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("rollcall");
        registry.register(
            "requests",
            "GraphQL requests by operation",
            self.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "GraphQL request latency by operation",
            self.duration.clone(),
        );
        registry.register(
            "errors",
            "Requests answered with each error code (a GraphQL error's extensions.code, or an \
             HTTP refusal's), counted once per code a request carries",
            self.errors.clone(),
        );
        registry.register(
            "logins",
            "Logins checked, by result (success, failure); throttled ones are not checked",
            self.logins.clone(),
        );
        registry.register(
            "throttled",
            "Attempts refused by a throttle: account, session, ip, or busy (hashing queue full)",
            self.throttled.clone(),
        );
        registry.register(
            "password_hash_queue",
            "Password hashes waiting for a hashing thread",
            self.hash_queue.clone(),
        );
        registry.register(
            "password_hash_queue_capacity",
            "The most password hashes that may wait; past it, attempts are refused as busy",
            self.hash_queue_capacity.clone(),
        );
        registry.register(
            "password_hash_wait_seconds",
            "Time a password hash waited for a hashing thread",
            self.hash_wait.clone(),
        );
        registry.register(
            "db_connections",
            "Database connections by state (in_use, idle)",
            self.db_connections.clone(),
        );
        registry.register(
            "db_connections_max",
            "The most database connections the pools may open (in_use plus idle at most)",
            self.db_connections_max.clone(),
        );
        registry.register(
            "db_statements",
            "Database statements run, over every pool",
            self.db_statements.clone(),
        );
        registry
    }

    /// One finished GraphQL request.
    pub fn request(&self, operation: &str, elapsed: Duration, codes: &[&str]) {
        let label = OperationLabel {
            operation: operation.to_owned(),
        };
        self.requests.get_or_create(&label).inc();
        self.duration
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
        for code in codes {
            self.errors
                .get_or_create(&CodeLabel {
                    code: (*code).to_owned(),
                })
                .inc();
        }
    }

    pub fn login(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.logins.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn throttled(&self, kind: &'static str) {
        self.throttled.get_or_create(&KindLabel { kind }).inc();
    }
}

/// The text exposition of `registry`.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}
