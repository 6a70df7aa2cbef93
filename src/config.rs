//! Command line and environment configuration. Every setting is a flag with an environment
//! fallback so the same binary is configured the same way in a shell, a unit file or a container.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

#[derive(Debug, Parser)]
#[command(name = "rollcall", version, about = "A user-management GraphQL server")]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the GraphQL API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Manage users directly on the configured database.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage the keys that sign access tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key current and print its kid. The old key keeps verifying the
    /// tokens it signed until they have expired; running servers switch within 30 seconds.
    Rotate {
        /// Delete every earlier key now, for a key that may have leaked: the tokens they
        /// signed are refused as soon as each server reloads its keys, and clients refresh.
        #[arg(long)]
        revoke: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from stdin, or prompted for without echo.
    Create {
        /// The new user's username (3–32 letters, digits, `_`, `.`, `-`).
        #[arg(long)]
        username: String,
        /// The new user's email address.
        #[arg(long)]
        email: String,
        /// The new user's role.
        #[arg(long, value_enum, ignore_case = true, default_value = "standard")]
        role: CliRole,
    },
    /// Recovery: make USERNAME the owner; the current owner becomes an admin, and the sessions
    /// of both end.
    PromoteOwner { username: String },
    /// Import accounts from another system in one transaction, from FILE (`-` for stdin): a
    /// JSON array of objects with `username`, `email`, `passwordHash` (argon2 PHC, or bcrypt), and
    /// optionally `firstName`, `lastName`, `phone`, `role` (`ADMIN` or `STANDARD`, the
    /// default) and `createdBy` (an existing user's id, kept as attribution). Every row's
    /// fields are checked as `createUser` checks them; any refusal names its row (counted from
    /// 0: `3.email` is the fourth row's) and imports nothing. No owner is imported: a database of
    /// imported users alone gets one with `user promote-owner`.
    Import { file: std::path::PathBuf },
    /// Recovery: turn off USERNAME's two-factor login (authenticator and recovery codes lost),
    /// or drop a setup not yet confirmed, and end their sessions; they log in with their
    /// password alone and may set it up again.
    ResetTotp { username: String },
}

/// A role as `user create --role` and `user import`'s rows name it, in any case.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum CliRole {
    Owner,
    Admin,
    #[default]
    Standard,
}

impl From<CliRole> for crate::db::Role {
    fn from(role: CliRole) -> Self {
        match role {
            CliRole::Owner => Self::Owner,
            CliRole::Admin => Self::Admin,
            CliRole::Standard => Self::Standard,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Registration {
    Open,
    Closed,
}

#[derive(Clone, Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(
        long,
        env = "ROLLCALL_LISTEN",
        default_value = "127.0.0.1:8080",
        value_parser = parse_listen,
        global = true
    )]
    pub listen: SocketAddr,
    /// Database URL: `sqlite://path?mode=rwc` or `postgres://...`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://rollcall.db?mode=rwc",
        // It may hold a password: `--help` shows the default, never the environment's value.
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,
    /// Shared secret (at least 32 bytes) that signs access tokens with HS256 instead of the
    /// default Ed25519 keys, which are kept in the database and published at
    /// `/.well-known/jwks.json`.
    #[arg(
        long,
        env = "ROLLCALL_JWT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub jwt_secret: Option<String>,
    /// Access token lifetime, e.g. `15m`.
    #[arg(long, env = "ROLLCALL_ACCESS_TTL", default_value = "15m", value_parser = parse_duration, global = true)]
    pub access_ttl: Duration,
    /// Refresh token lifetime, e.g. `30d`.
    #[arg(long, env = "ROLLCALL_REFRESH_TTL", default_value = "30d", value_parser = at_least_two_seconds, global = true)]
    pub refresh_ttl: Duration,
    /// Longest a session (one login) lasts, however often its refresh token rotates.
    #[arg(long, env = "ROLLCALL_SESSION_MAX_AGE", default_value = "90d", value_parser = at_least_two_seconds, global = true)]
    pub session_max_age: Duration,
    /// A session not refreshed for this long ends.
    #[arg(long, env = "ROLLCALL_SESSION_IDLE", default_value = "30d", value_parser = at_least_two_seconds, global = true)]
    pub session_idle: Duration,
    /// A rotated refresh token presented again this soon is answered with a new pair for the
    /// same session, not treated as theft: a client's tabs that refresh at once race themselves.
    /// `0s` turns the grace off, for those who would rather end such sessions.
    #[arg(long, env = "ROLLCALL_REFRESH_REUSE_GRACE", default_value = "10s", value_parser = parse_grace, global = true)]
    pub refresh_reuse_grace: Duration,
    /// Sensitive actions (role changes, deleting a user, oneself included, creating an admin,
    /// setting another's password or email, API tokens, setting up two-factor login) need a
    /// fresh password or TOTP check once the session's login is older than this. A refresh does
    /// not count as a login.
    #[arg(long, env = "ROLLCALL_STEP_UP_WINDOW", default_value = "10m", value_parser = parse_duration, global = true)]
    pub step_up_window: Duration,
    /// Audit entries older than this are deleted by the periodic clean-up, so the trail does
    /// not grow without end; `100y` keeps them for good. At least a day.
    #[arg(long, env = "ROLLCALL_AUDIT_RETENTION", default_value = "365d", value_parser = parse_retention, global = true)]
    pub audit_retention: Duration,
    /// Whether anyone may register (`open`) or only admins create users (`closed`).
    #[arg(
        long,
        env = "ROLLCALL_REGISTRATION",
        value_enum,
        ignore_case = true,
        default_value = "open",
        global = true
    )]
    pub registration: Registration,
    /// Read-only demo mode: every mutation that changes users, API tokens or two-factor login
    /// is refused, and so is ending any session but the caller's current one; login, refresh
    /// and logout work. The commands, the operator's, still write.
    #[arg(long, env = "ROLLCALL_DEMO", default_value_t = false, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new(), global = true)]
    pub demo: bool,
    /// The name authenticator apps show beside a user's two-factor codes (the `issuer` of the
    /// `otpauth://` URI `enableTotp` gives).
    #[arg(long, env = "ROLLCALL_TOTP_ISSUER", default_value = "rollcall", value_parser = parse_issuer, global = true)]
    pub totp_issuer: String,
    /// Maximum database connections per instance (on SQLite, for reads). Unset: 10 on
    /// PostgreSQL; on SQLite, one per core plus one, since its queries run on this server's
    /// own CPUs and every further connection only adds a cache and a thread.
    #[arg(long, env = "ROLLCALL_DB_MAX_CONNECTIONS", value_parser = pool_size, global = true)]
    pub db_max_connections: Option<u32>,
    /// How long a request waits for a database connection, and (on PostgreSQL) how long one
    /// statement may run, before it fails instead of hanging; a server uses the request
    /// timeout when that is shorter.
    #[arg(long, env = "ROLLCALL_DB_TIMEOUT", default_value = "5s", value_parser = parse_db_timeout, global = true)]
    pub db_timeout: Duration,
    /// Maximum password hashes computed at once (each holds 19 MiB, or up to 256 MiB for an
    /// imported hash until its account's first login), 1 to 256; defaults to the core count.
    #[arg(long, env = "ROLLCALL_HASH_CONCURRENCY", value_parser = hash_threads, global = true)]
    pub hash_concurrency: Option<usize>,
    /// Consecutive failed password or two-factor checks on one account's logins (or an unknown
    /// login), or inside one session, before it is throttled.
    #[arg(long, env = "ROLLCALL_THROTTLE_AFTER", default_value_t = 5, value_parser = at_least_one::<u32>, global = true)]
    pub throttle_after: u32,
    /// First wait of a throttled account (or session), once `throttle_after` checks have
    /// failed; each further failure doubles it, up to `throttle_max`.
    #[arg(long, env = "ROLLCALL_THROTTLE_WAIT", default_value = "1s", value_parser = at_least_a_second, global = true)]
    pub throttle_wait: Duration,
    /// Longest wait a throttled account is given.
    #[arg(long, env = "ROLLCALL_THROTTLE_MAX", default_value = "15m", value_parser = at_least_a_second, global = true)]
    pub throttle_max: Duration,
    /// Credential attempts per client IP and minute (login, register, refreshToken, a new
    /// password in `updateUser`, `currentPassword`, `verification`, `confirmTotp`, a standard
    /// user's new username); `0` turns the limit off.
    #[arg(
        long,
        env = "ROLLCALL_IP_RATE_LIMIT",
        default_value_t = 60,
        value_parser = count::<u32>,
        global = true
    )]
    pub ip_rate_limit: u32,
    /// Proxies (addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For` is believed
    /// when they connect; by default the client IP is always the socket's.
    #[arg(
        long,
        env = "ROLLCALL_TRUSTED_PROXIES",
        value_parser = list(parse_proxy),
        default_value = "",
        hide_default_value = true,
        global = true
    )]
    pub trusted_proxies: List<IpNet>,
    /// A request running longer is answered with TIMEOUT and its database work rolled back.
    #[arg(long, env = "ROLLCALL_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration, global = true)]
    pub request_timeout: Duration,
    /// A connection whose client takes longer to send a request's head (or sends none while
    /// kept alive) is closed, so slow clients cannot hold connections open. Longer than the
    /// idle timeout of a proxy's pooled connections (60 s for nginx and AWS's load balancers),
    /// which would otherwise send a request into a closing connection.
    #[arg(long, env = "ROLLCALL_HEADER_TIMEOUT", default_value = "75s", value_parser = parse_duration, global = true)]
    pub header_timeout: Duration,
    /// Deepest selection nesting a query may have.
    #[arg(long, env = "ROLLCALL_MAX_DEPTH", default_value_t = 10, value_parser = at_least_one::<usize>, global = true)]
    pub max_depth: usize,
    /// Most aliased fields one document may have.
    #[arg(
        long,
        env = "ROLLCALL_MAX_ALIASES",
        default_value_t = 15,
        value_parser = count::<usize>,
        global = true
    )]
    pub max_aliases: usize,
    /// Most directives one document may have.
    #[arg(
        long,
        env = "ROLLCALL_MAX_DIRECTIVES",
        default_value_t = 50,
        value_parser = count::<usize>,
        global = true
    )]
    pub max_directives: usize,
    /// Longest query text, in bytes.
    #[arg(
        long,
        env = "ROLLCALL_MAX_QUERY_BYTES",
        default_value_t = 16 * 1024,
        value_parser = at_least_one::<usize>,
        global = true
    )]
    pub max_query_bytes: usize,
    /// Highest query complexity: each field counts one, a page's fields times its `first`,
    /// a user's `sessions` and `apiTokens` and a token's `createdBy` ten times theirs.
    #[arg(
        long,
        env = "ROLLCALL_MAX_COMPLEXITY",
        default_value_t = 10_000,
        value_parser = at_least_one::<usize>,
        global = true
    )]
    pub max_complexity: usize,
    /// Browser origins allowed to call the API (comma-separated, e.g.
    /// `https://app.example.com`); `*` allows any origin. None by default.
    #[arg(
        long,
        env = "ROLLCALL_CORS_ORIGINS",
        value_parser = parse_origins,
        default_value = "",
        hide_default_value = true,
        global = true
    )]
    pub cors_origins: List<axum::http::HeaderValue>,
    /// Bearer token that lets non-loopback clients read `/metrics`. Empty counts as unset
    /// (as templates often leave it), never as a token a request without one would match.
    #[arg(
        long,
        env = "ROLLCALL_METRICS_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub metrics_token: Option<String>,
    /// Log lines as human-readable `text` or `json`.
    #[arg(
        long,
        env = "ROLLCALL_LOG_FORMAT",
        value_enum,
        ignore_case = true,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Whether the schema may be introspected; `false` also drops "Did you mean …" hints.
    #[arg(long, env = "ROLLCALL_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new(), global = true)]
    pub introspection: bool,
    /// Whether `GET /graphql` serves GraphiQL, an in-browser IDE whose files are all in the
    /// binary; `false` answers 404 there and serves none of its files.
    #[arg(long, env = "ROLLCALL_GRAPHIQL", default_value_t = true, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new(), global = true)]
    pub graphiql: bool,
}

/// Written out so the signing key and the database URL (which may hold a password) never
/// reach a log through `{:?}`.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("database_url", &"<redacted>")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("session_max_age", &self.session_max_age)
            .field("session_idle", &self.session_idle)
            .field("refresh_reuse_grace", &self.refresh_reuse_grace)
            .field("step_up_window", &self.step_up_window)
            .field("audit_retention", &self.audit_retention)
            .field("registration", &self.registration)
            .field("demo", &self.demo)
            .field("totp_issuer", &self.totp_issuer)
            .field("db_max_connections", &self.db_max_connections)
            .field("db_timeout", &self.db_timeout)
            .field("hash_concurrency", &self.hash_concurrency)
            .field("throttle_after", &self.throttle_after)
            .field("throttle_wait", &self.throttle_wait)
            .field("throttle_max", &self.throttle_max)
            .field("ip_rate_limit", &self.ip_rate_limit)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("request_timeout", &self.request_timeout)
            .field("header_timeout", &self.header_timeout)
            .field("max_depth", &self.max_depth)
            .field("max_aliases", &self.max_aliases)
            .field("max_directives", &self.max_directives)
            .field("max_query_bytes", &self.max_query_bytes)
            .field("max_complexity", &self.max_complexity)
            .field("introspection", &self.introspection)
            .field("cors_origins", &self.cors_origins)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<redacted>"),
            )
            .field("log_format", &self.log_format)
            .field("graphiql", &self.graphiql)
            .finish()
    }
}

/// For a refused value that came from the environment, the variable that gave it: clap's
/// message names only the option, which an operator who set the variable never typed.
pub fn variable_behind(err: &clap::Error) -> Option<String> {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let option = arg.split_whitespace().next()?;
    let long = option.strip_prefix("--")?;
    let command = Cli::command();
    let variable = command
        .get_arguments()
        .find(|candidate| candidate.get_long() == Some(long))?
        .get_env()?;
    let typed = std::env::args_os().any(|given| {
        let given = given.as_encoded_bytes();
        given
            .strip_prefix(option.as_bytes())
            .is_some_and(|rest| rest.is_empty() || rest[0] == b'=')
    });
    let from_variable = std::env::var_os(variable).is_some_and(|value| {
        // Typed too, the variable is still read (and refused) first when it is bad.
        !typed
            || matches!(err.get(ContextKind::InvalidValue),
                Some(ContextValue::String(refused)) if value.to_str() == Some(refused.as_str()))
    });
    from_variable.then(|| {
        format!(
            "The value of {option} comes from {}{}.",
            variable.to_string_lossy(),
            if typed {
                ", read even where the option is given"
            } else {
                ""
            }
        )
    })
}

/// Variables of the project's tests, fuzzer and scripts, not the server's: a shell that runs
/// both has them set, and they are no mistake.
const TOOL_VARIABLES: [&str; 5] = [
    "ROLLCALL_TEST_",
    "ROLLCALL_REQUIRE_POSTGRES",
    "ROLLCALL_FUZZ_",
    "ROLLCALL_BIN",
    // The typed client example's server address.
    "ROLLCALL_URL",
];

/// The `ROLLCALL_*` names among environment variables `names` that are no setting: a misspelt
/// one would otherwise leave its setting at the default without a word.
pub fn unknown_settings(names: impl IntoIterator<Item = String>) -> Vec<String> {
    use clap::CommandFactory;
    let command = Cli::command();
    let known: Vec<&std::ffi::OsStr> = command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .collect();
    names
        .into_iter()
        .filter(|name| name.starts_with("ROLLCALL_") && !known.contains(&name.as_ref()))
        .filter(|name| {
            !TOOL_VARIABLES
                .iter()
                .any(|tool| name == tool || (tool.ends_with('_') && name.starts_with(tool)))
        })
        .collect()
}

impl Settings {
    /// Default settings on a loopback port chosen by the OS, without reading the environment:
    /// for embedding the server and for tests.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.into(),
            jwt_secret: None,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 86_400),
            session_max_age: Duration::from_secs(90 * 86_400),
            session_idle: Duration::from_secs(30 * 86_400),
            refresh_reuse_grace: Duration::from_secs(10),
            step_up_window: Duration::from_secs(600),
            audit_retention: Duration::from_secs(365 * 86_400),
            registration: Registration::Open,
            demo: false,
            totp_issuer: "rollcall".into(),
            db_max_connections: None,
            db_timeout: Duration::from_secs(5),
            hash_concurrency: None,
            throttle_after: 5,
            throttle_wait: Duration::from_secs(1),
            throttle_max: Duration::from_secs(15 * 60),
            ip_rate_limit: 60,
            trusted_proxies: List::default(),
            request_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(75),
            max_depth: 10,
            max_aliases: 15,
            max_directives: 50,
            max_query_bytes: 16 * 1024,
            max_complexity: 10_000,
            introspection: true,
            cors_origins: List::default(),
            metrics_token: None,
            log_format: LogFormat::Text,
            graphiql: true,
        }
    }
}

/// The longest duration any setting takes: times computed from it stay representable. 100
/// of humantime's years (365.25 days each), so `100y` itself is accepted.
const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// A TOTP issuer: 1 to 64 characters, trimmed, without the `:` that separates it from the
/// account name in an authenticator's label, or control characters.
fn parse_issuer(text: &str) -> Result<String, String> {
    let issuer = text.trim();
    if issuer.is_empty() || issuer.chars().count() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if issuer.chars().any(|c| c == ':' || c.is_control()) {
        return Err("must not contain `:` or control characters".into());
    }
    Ok(issuer.to_owned())
}

/// A count, spaces around it allowed as durations allow them (a template's `KEY= 5`).
fn count<T: TryFrom<u64>>(text: &str) -> Result<T, String> {
    match text.trim().parse::<u64>() {
        Ok(count) => T::try_from(count).map_err(|_| format!("`{text}` is too large")),
        Err(err) if *err.kind() == std::num::IntErrorKind::PosOverflow => {
            Err(format!("`{text}` is too large"))
        }
        Err(_) => Err(format!("`{text}` is no whole number")),
    }
}

/// A count that must be at least 1: zero would refuse every query, or hash nothing.
fn at_least_one<T: TryFrom<u64>>(text: &str) -> Result<T, String> {
    match count::<u64>(text)? {
        0 => Err("must be at least 1".into()),
        count => T::try_from(count).map_err(|_| format!("`{text}` is too large")),
    }
}

/// An IP address and port: a host name (`localhost:8080`) is not looked up, so its refusal says
/// what is taken instead.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("`{text}` is no IP address and port (such as 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080)")
    })
}

/// Connections per pool: the pool sets aside room for each at start, so a few zeros too many
/// would take gigabytes before a single connection opened; no database takes this many.
fn pool_size(text: &str) -> Result<u32, String> {
    let size = at_least_one::<u32>(text)?;
    if size > 10_000 {
        return Err("must be at most 10000".into());
    }
    Ok(size)
}

/// Hashing threads: each has its own stack, and thousands fail to start.
fn hash_threads(text: &str) -> Result<usize, String> {
    let threads = at_least_one::<usize>(text)?;
    if threads > 256 {
        return Err("must be at most 256".into());
    }
    Ok(threads)
}

/// Parses durations such as `2s`, `15m`, `12h` or `30d` (humantime's syntax, so `1h 30m` too);
/// zero is refused, since every duration here is a lifetime or a timeout.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    // humantime reads `M` as months: `15M` meant as minutes would be a token for over a year.
    if text
        .split(|c: char| !c.is_ascii_alphabetic())
        .any(|unit| unit == "M")
    {
        return Err(format!(
            "`{text}`: `M` is months here; write `m` for minutes, or days (`30d`)"
        ));
    }
    let duration =
        humantime::parse_duration(text.trim()).map_err(|err| format!("`{text}`: {err}"))?;
    if duration.is_zero() {
        return Err("a duration must be positive".into());
    }
    if duration > MAX_DURATION {
        return Err(format!("`{text}` is longer than 100 years"));
    }
    Ok(duration)
}

/// [`parse_duration`], zero included: a grace may be none.
fn parse_grace(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(duration) if duration.is_zero() => Ok(duration),
        _ => parse_duration(text),
    }
}

/// At least a day: every instance on a database deletes what is older than its own setting,
/// at start-up too, so a mistyped `1m` (or `1s`) would wipe the trail at once.
fn parse_retention(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(24 * 60 * 60) {
        return Err(format!("`{text}` is shorter than a day (`1d`)"));
    }
    Ok(duration)
}

/// At least a second: clients are told to wait whole seconds, and a lock shorter than the
/// store's millisecond would hold nothing.
fn at_least_a_second(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(1) {
        return Err(format!("`{text}` is shorter than a second"));
    }
    Ok(duration)
}

/// At least two seconds, for the session's limits: an access token ends on a whole second,
/// before the session does, and a login or refresh may cross into the next second between
/// writing the session and signing its token; a session of a second would then have no whole
/// second left to give it, and the login or refresh that was written would be answered that
/// the session has ended.
fn at_least_two_seconds(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(2) {
        return Err(format!("`{text}` is shorter than two seconds"));
    }
    Ok(duration)
}

/// At most a day: it is also PostgreSQL's `statement_timeout`, which stops at about 24 days,
/// and no request should wait that long for the database.
fn parse_db_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration > Duration::from_secs(24 * 60 * 60) {
        return Err(format!("`{text}` is longer than a day"));
    }
    Ok(duration)
}

/// A comma-separated setting. Empty items are skipped, so an empty value, as templates leave
/// a variable they were given nothing for, means none rather than stopping start-up.
#[derive(Clone, Debug, PartialEq)]
pub struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T> std::ops::Deref for List<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.0
    }
}

fn list<T: 'static>(
    item: fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<List<T>, String> + Clone + Send + Sync + 'static {
    move |text| {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(item)
            .collect::<Result<_, _>>()
            .map(List)
    }
}

/// A proxy's address (`10.0.0.5`, taken as a single host) or range (`10.0.0.0/8`). An IPv4
/// address written IPv6-mapped (`::ffff:10.0.0.5`, as a dual-stack listener's tools print it)
/// is taken as the IPv4 address it is, which is how a connection's address is compared.
fn parse_proxy(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let net = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is neither an IP address nor a CIDR range"))?;
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && let Some(prefix) = v6.prefix_len().checked_sub(96)
        && let Ok(mapped) = ipnet::Ipv4Net::new(v4, prefix)
    {
        return Ok(IpNet::V4(mapped));
    }
    Ok(net)
}

/// Origins as browsers send them (see [`parse_origin`]), or `*` alone: listed beside others
/// it would quietly allow every origin.
fn parse_origins(text: &str) -> Result<List<axum::http::HeaderValue>, String> {
    let origins = list(parse_origin)(text)?;
    if origins.len() > 1 && origins.iter().any(|origin| origin == "*") {
        return Err("`*` allows every origin: give it alone or not at all".to_owned());
    }
    Ok(origins)
}

/// An origin: `scheme://host[:port]`, no path; or `*`. Written as browsers write `Origin`
/// (lower case, no default port, a domain in its ASCII form), which the header is compared
/// with byte for byte: `https://App.Example.com:443` would otherwise never match.
pub fn parse_origin(text: &str) -> Result<axum::http::HeaderValue, String> {
    let text = text.trim();
    if text == "*" {
        return Ok(axum::http::HeaderValue::from_static("*"));
    }
    let refused = || {
        format!(
            "`{text}` is not an origin like https://app.example.com (no path, no trailing slash)"
        )
    };
    let (_, rest) = text.split_once("://").ok_or_else(refused)?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err(refused());
    }
    // A browser's `Origin` never holds one, so `https://*.example.com` would match nothing.
    if rest.contains('*') {
        return Err(format!(
            "`{text}`: origins are matched whole, without wildcards: list each one"
        ));
    }
    let url = url::Url::parse(text).map_err(|err| format!("`{text}`: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(refused());
    }
    axum::http::HeaderValue::from_str(&url.origin().ascii_serialization())
        .map_err(|err| format!("`{text}`: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        // Times computed from settings must stay representable; a request's database wait
        // must stay within PostgreSQL's statement_timeout.
        assert!(parse_duration("101y").is_err());
        assert!(parse_duration("100y").is_ok());
        assert!(parse_duration("100years").is_ok());
        assert!(parse_duration("100y 1s").is_err());
        assert!(parse_db_timeout("1day").is_ok());
        assert!(parse_db_timeout("25h").is_err());
        // A retention that would empty the trail at start-up is refused.
        assert!(parse_retention("1d").is_ok());
        assert!(parse_retention("100y").is_ok());
        assert!(parse_retention("23h").is_err());
        assert!(parse_retention("1s").is_err());
    }

    /// What operators write: bare addresses, spaces after commas; never zero connections or
    /// hashing threads, nor more threads than a machine starts.
    #[test]
    fn settings_as_operators_write_them() {
        use clap::Parser;
        let parse = |args: &[&str]| Cli::try_parse_from([&["rollcall"], args].concat());
        let cli = parse(&["--trusted-proxies", "10.0.0.5, 192.168.0.0/16,::1"]).expect("proxies");
        let proxies: Vec<String> = cli
            .settings
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(proxies, ["10.0.0.5/32", "192.168.0.0/16", "::1/128"]);
        assert!(parse(&["--trusted-proxies", "nonsense"]).is_err());
        assert!(parse(&["--trusted-proxies", "10.0.0.5,nonsense"]).is_err());
        // Empty, as a template leaves a variable it was given nothing for: none.
        for empty in ["", " ", ","] {
            let cli = parse(&["--trusted-proxies", empty, "--cors-origins", empty]).expect("empty");
            assert!(cli.settings.trusted_proxies.is_empty(), "{empty:?}");
            assert!(cli.settings.cors_origins.is_empty(), "{empty:?}");
        }
        let cli = parse(&[
            "--cors-origins",
            "https://a.example, http://b.example:8080,",
        ])
        .expect("cors");
        assert_eq!(cli.settings.cors_origins.len(), 2);
        assert!(parse(&["--cors-origins", "https://a.example/"]).is_err());
        // Written as browsers send `Origin`, which is compared byte for byte.
        for (given, sent) in [
            ("https://App.Example.com", "https://app.example.com"),
            ("HTTPS://app.example.com:443", "https://app.example.com"),
            ("http://localhost:80", "http://localhost"),
            ("http://localhost:5173", "http://localhost:5173"),
            ("https://münchen.example", "https://xn--mnchen-3ya.example"),
            ("http://[::1]:3000", "http://[::1]:3000"),
        ] {
            let cli = parse(&["--cors-origins", given]).expect(given);
            assert_eq!(cli.settings.cors_origins[0], sent, "{given}");
        }
        for refused in [
            "*,https://a.example",
            "https://a.example,*",
            "ftp://a.example",
            "https://a.example?x",
            "https://user@a.example",
            "https://",
            "a.example",
            "https://*.example.com",
            "http://localhost:*",
        ] {
            assert!(parse(&["--cors-origins", refused]).is_err(), "{refused}");
        }
        assert!(parse(&["--cors-origins", "*"]).is_ok());

        assert!(parse(&["--db-max-connections", "0"]).is_err());
        assert!(parse(&["--hash-concurrency", "0"]).is_err());
        assert!(parse(&["--hash-concurrency", "2"]).is_ok());
        // Each is a thread with its own stack: thousands fail to start, so none are allowed.
        assert!(parse(&["--hash-concurrency", "256"]).is_ok());
        assert!(parse(&["--hash-concurrency", "257"]).is_err());
        // Every count takes the spaces a template leaves around it, as durations do.
        let cli = parse(&[
            "--ip-rate-limit",
            " 5",
            "--hash-concurrency",
            "4 ",
            "--max-aliases",
            " 0 ",
            "--max-directives",
            " 7",
        ])
        .expect("counts");
        assert_eq!(cli.settings.ip_rate_limit, 5);
        assert_eq!(cli.settings.hash_concurrency, Some(4));
        assert_eq!(cli.settings.max_aliases, 0);
        assert_eq!(cli.settings.max_directives, 7);
        let grace = |text| {
            parse(&["--refresh-reuse-grace", text]).map(|cli| cli.settings.refresh_reuse_grace)
        };
        assert_eq!(grace("0s").expect("no grace"), std::time::Duration::ZERO);
        assert!(grace("-1s").is_err());
        let ttl = |text| parse(&["--access-ttl", text]).map(|cli| cli.settings.access_ttl);
        assert_eq!(
            ttl("1h 15m").expect("minutes"),
            std::time::Duration::from_secs(4500)
        );
        assert!(
            ttl("15M").is_err(),
            "months, where minutes were likely meant"
        );
        assert!(ttl("1h 15M").is_err());
        assert!(ttl("2months").is_ok());
        for limit in ["--max-depth", "--max-query-bytes", "--max-complexity"] {
            assert!(parse(&[limit, "0"]).is_err(), "{limit} 0");
            assert!(parse(&[limit, "1"]).is_ok(), "{limit} 1");
        }
        // Switches as env files write them, and choices in any case.
        for (given, on) in [
            ("1", true),
            ("YES", true),
            ("on", true),
            ("0", false),
            ("Off", false),
        ] {
            let cli = parse(&["--demo", given, "--graphiql", given]).expect(given);
            assert_eq!(
                (cli.settings.demo, cli.settings.graphiql),
                (on, on),
                "{given}"
            );
        }
        assert!(parse(&["--demo", ""]).is_err());
        assert!(parse(&["--demo", "maybe"]).is_err());
        let cli = parse(&["--registration", "Closed", "--log-format", "JSON"]).expect("any case");
        assert_eq!(cli.settings.registration, Registration::Closed);
        assert_eq!(cli.settings.log_format, LogFormat::Json);
    }

    /// `with_database` is what the flags default to (the listen address aside), so embedders
    /// and tests run what `rollcall serve` runs. The environment is not read here.
    #[test]
    fn embedded_defaults_are_the_flags_defaults() {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command()
            .mut_args(|arg| arg.env(None))
            .try_get_matches_from(["rollcall"])
            .expect("the defaults parse");
        let flags = Cli::from_arg_matches(&matches).expect("settings").settings;
        let embedded = Settings {
            listen: flags.listen,
            ..Settings::with_database(flags.database_url.clone())
        };
        assert_eq!(format!("{flags:?}"), format!("{embedded:?}"));
    }

    /// Every setting has its row in the README's table of settings.
    #[test]
    fn every_setting_is_in_the_readme() {
        use clap::CommandFactory;
        let readme = include_str!("../README.md");
        for arg in Cli::command().get_arguments() {
            let Some(variable) = arg.get_env() else {
                continue;
            };
            let row = format!("| `{}` |", variable.to_string_lossy());
            assert!(readme.contains(&row), "no README row {row}");
        }
    }

    #[test]
    fn totp_issuers_fit_an_authenticators_label() {
        assert_eq!(parse_issuer(" Example Co ").as_deref(), Ok("Example Co"));
        for refused in ["", "  ", "a:b", "tab\there", &"x".repeat(65)] {
            assert!(parse_issuer(refused).is_err(), "{refused:?}");
        }
    }

    /// A proxy written IPv6-mapped matches its connections, whose addresses are compared as
    /// the IPv4 addresses they are.
    #[test]
    fn proxies_written_ipv6_mapped_are_their_ipv4_addresses() {
        for (written, taken) in [
            ("::ffff:10.0.0.5", "10.0.0.5/32"),
            (" ::ffff:10.0.0.0/104 ", "10.0.0.0/8"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
            ("10.0.0.5", "10.0.0.5/32"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::/0", "::/0"),
        ] {
            assert_eq!(
                super::parse_proxy(written).map(|net| net.to_string()),
                Ok(taken.to_owned()),
                "{written}"
            );
        }
    }

    #[test]
    fn unknown_settings_are_told_apart() {
        let names = [
            "ROLLCALL_LISTEN",
            "ROLLCALL_DATABASE_URL",
            "ROLLCALL_ACESS_TTL",
            "DATABASE_URL",
            "PATH",
            "ROLLCALL_TEST_POSTGRES_URL",
            "ROLLCALL_FUZZ_SECONDS",
            "ROLLCALL_BIN",
            "ROLLCALL_URL",
            "ROLLCALL_BINARY",
        ];
        assert_eq!(
            unknown_settings(names.map(String::from)),
            [
                "ROLLCALL_DATABASE_URL",
                "ROLLCALL_ACESS_TTL",
                "ROLLCALL_BINARY"
            ]
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut settings = Settings::with_database("postgres://app:hunter2hunter2@db/rollcall");
        settings.jwt_secret = Some("s3cret-signing-key-that-is-long-enough".into());
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("request_timeout"), "{printed}");
    }
}
