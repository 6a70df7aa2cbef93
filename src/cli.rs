//! The `rollcall` command: serve, migrate, schema, and user administration.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Parser;
use tokio::net::TcpSocket;

use crate::config::{Cli, CliRole, Command, KeysCommand, LogFormat, Settings, UserCommand};
use crate::error::AppError;
use crate::service::{NewUser, Promotion, Service};

/// Writes a command's result to stdout. A reader that has closed the pipe (`| head`, `| true`)
/// does not turn a command that did its work into a failure, as `println!`'s panic (exit 101)
/// would; any other error (a full disk) does, saying the work was done (see [`write_out`]).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*))
    };
}

/// [`say!`] for stderr: what is told the operator, and why a command failed.
macro_rules! say_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Why a command's result could not be written (a full disk, say): the command fails with it.
static OUTPUT_LOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// [`say!`]'s line: a closed pipe is the reader's choice and no failure; any other error is,
/// said once the command ends.
#[doc(hidden)]
pub fn write_out(line: std::fmt::Arguments) {
    use std::io::Write as _;
    match writeln!(std::io::stdout(), "{line}") {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            let _ = OUTPUT_LOST.set(err.to_string());
        }
        _ => {}
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            let variable = crate::config::variable_behind(&err);
            let asked = matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            );
            // Why the process did not start, as a log collector reading JSON can take it.
            if !asked && json_logs_asked() {
                let text = err.render().to_string();
                let text = text.trim_end();
                let mut text = text.strip_prefix("error: ").unwrap_or(text).to_owned();
                if let Some(variable) = &variable {
                    text = format!("{text} ({variable})");
                }
                exiting(LogFormat::Json, &text);
            } else {
                let _ = err.print();
                if let Some(variable) = variable {
                    say_err!("{variable}");
                }
            }
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    let log_format = cli.settings.log_format;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            // An empty value (as a template leaves one, or a list joined of nothing) is no
            // filter: taken as one it would turn every line off, errors included.
            std::env::var("RUST_LOG")
                .ok()
                .filter(|filter| filter.split(',').any(|part| !part.trim().is_empty()))
                .and_then(|filter| tracing_subscriber::EnvFilter::try_new(filter).ok())
                .unwrap_or_else(|| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        // A log line that cannot be written (the reader of a log pipe has gone) is lost, and
        // nothing else: reporting it would panic on the same closed stderr, in a request or in
        // the shutdown.
        .log_internal_errors(false)
        // Colours for a terminal only: files and log collectors get plain text.
        .with_ansi(std::io::stderr().is_terminal());
    match cli.settings.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
    for name in crate::config::unknown_settings(names) {
        let hint = if name == "ROLLCALL_DATABASE_URL" {
            " (the database is DATABASE_URL)"
        } else {
            ""
        };
        tracing::warn!("{name} is no setting of this release and is ignored{hint}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            say_err!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) if OUTPUT_LOST.get().is_none() => ExitCode::SUCCESS,
        result => {
            // Not to be run again blindly: what it changed stands.
            let text = match (result, OUTPUT_LOST.get()) {
                (Err(err), _) => chain(&err),
                (Ok(()), lost) => format!(
                    "the command did its work, but its result could not be written: {}",
                    lost.map_or("", String::as_str)
                ),
            };
            exiting(log_format, &text);
            ExitCode::FAILURE
        }
    }
}

/// A line for the operator on stderr, written directly: a `RUST_LOG` naming other targets
/// would filter a log event away. As JSON where the logs are: a log collector reading JSON
/// would drop or mangle a plain line.
fn tell(format: LogFormat, text: &str) {
    match format {
        LogFormat::Text => say_err!("{text}"),
        LogFormat::Json => say_err!("{}", json_line("INFO", text, None)),
    }
}

/// The last line of a process that fails: why, as [`tell`] writes.
fn exiting(format: LogFormat, why: &str) {
    match format {
        LogFormat::Text => say_err!("error: {why}"),
        LogFormat::Json => say_err!("{}", json_line("ERROR", "exiting", Some(why))),
    }
}

/// Whether JSON logs were asked for, where the settings could not be read (clap stops at the
/// first mistake, before it reads the environment): `--log-format json`, else
/// `ROLLCALL_LOG_FORMAT=json`, written exactly as clap takes them.
fn json_logs_asked() -> bool {
    let mut args = std::env::args_os().skip(1);
    let mut flag = None;
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        } else if arg == "--log-format" {
            flag = args.next();
        } else if let Some(value) = arg.to_str().and_then(|a| a.strip_prefix("--log-format=")) {
            flag = Some(value.into());
        }
    }
    let chosen = flag.or_else(|| std::env::var_os("ROLLCALL_LOG_FORMAT"));
    chosen.is_some_and(|format| format.eq_ignore_ascii_case("json"))
}

/// One line as the JSON logs write theirs.
fn json_line(level: &str, message: &str, error: Option<&str>) -> serde_json::Value {
    let mut line = serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "level": level,
        "message": message,
        "target": "rollcall",
    });
    if let Some(error) = error {
        line["error"] = error.into();
    }
    line
}

/// An error and its causes, each said once: many errors repeat their source in their own
/// message, which `{:#}` would print again.
fn chain(err: &anyhow::Error) -> String {
    crate::error::chain(err.as_ref())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&settings).await,
        Command::Migrate => {
            let db = crate::service::connect(&settings, Some(1), settings.db_timeout).await?;
            // A database a newer release migrated is refused by the migration itself. Counted
            // by the run, after any wait for another's: what it says is what it did.
            let migrated = crate::service::migrate(&settings, &db).await;
            close(&db, settings.db_timeout, false).await;
            match migrated? {
                0 => tell(
                    settings.log_format,
                    "the schema is up to date: no migration to apply",
                ),
                1 => tell(settings.log_format, "1 migration applied"),
                n => tell(settings.log_format, &format!("{n} migrations applied")),
            }
            Ok(())
        }
        Command::Schema => {
            say!("{}", crate::graphql::sdl().trim_end());
            Ok(())
        }
        Command::User(command) => user_command(&settings, command).await,
        Command::Keys(KeysCommand::Rotate { revoke }) => {
            let service = Service::open_existing(&settings).await?;
            let rotated = service.rotate_signing_key(revoke).await;
            close(service.db(), settings.db_timeout, false).await;
            let kid = rotated.map_err(describe)?;
            say!("{kid}");
            let every = service.key_reload_every().as_secs();
            // Read once this rotation was written: another one at the same moment may have
            // made its own key current since (and deleted this one, with --revoke).
            let current = service.current_kid().unwrap_or_default();
            if current != kid {
                tell(
                    settings.log_format,
                    &format!(
                        "new signing key {kid} was made current, but another rotation at the \
                         same moment made its key {current} current since: servers switch to \
                         that one within {every}s"
                    ),
                );
                return Ok(());
            }
            tell(
                settings.log_format,
                &format!(
                    "new signing key {kid} is current; running servers switch to it within \
                     {every}s (those given ROLLCALL_JWT_SECRET sign with the secret and use no \
                     stored key)"
                ),
            );
            if revoke {
                tell(
                    settings.log_format,
                    &format!(
                        "every earlier key is deleted: servers refuse the tokens those signed \
                         within {every}s, and clients get new ones by refreshing"
                    ),
                );
            }
            Ok(())
        }
    }
}

async fn serve(settings: &Settings) -> anyhow::Result<()> {
    #[cfg(unix)]
    raise_open_file_limit();
    // The address is taken before the database is migrated: a server that cannot listen (a
    // port in use, a mistyped address) must not upgrade a schema other servers still serve.
    let cannot_listen = || format!("cannot listen on {}", settings.listen);
    let socket = reserve(settings.listen).with_context(cannot_listen)?;
    let service = Service::start(settings).await?;
    if !settings.listen.ip().is_loopback() && service.first_registrant_would_own().await? {
        tracing::warn!(
            "listening on {} while the database has no account: the first registration \
             becomes the owner. Create the owner first (`rollcall user create --username NAME \
             --email ADDRESS --role owner`), or serve with ROLLCALL_REGISTRATION=closed",
            settings.listen
        );
    }
    if matches!(service.lacks_owner().await, Ok(true)) {
        tracing::warn!(
            "the database has accounts but no owner: nobody can change roles. Make one with \
             `rollcall user promote-owner USERNAME`"
        );
    }
    if let Some(all) = settings
        .trusted_proxies
        .iter()
        .find(|net| net.prefix_len() == 0)
    {
        let family = if matches!(all, ipnet::IpNet::V4(_)) {
            "IPv4"
        } else {
            "IPv6"
        };
        tracing::warn!(
            "ROLLCALL_TRUSTED_PROXIES trusts every {family} address ({all}): any such client can \
             name its own in X-Forwarded-For, and so escape the IP limit; list the proxies' \
             addresses"
        );
    }
    let listener = socket.listen(LISTEN_BACKLOG).with_context(cannot_listen)?;
    // Until here a signal stops the process at once (start-up may wait on a migration lock).
    let shutdown = shutdown_signal();
    tracing::info!(
        "rollcall {} listening on http://{}/graphql ({}; signing with {})",
        env!("CARGO_PKG_VERSION"),
        listener.local_addr()?,
        service.db().backend_name(),
        service.token_signer()
    );
    let db = service.db().clone();
    crate::server::serve(listener, service, settings, shutdown).await?;
    close(&db, settings.db_timeout, true).await;
    tracing::info!("stopped");
    Ok(())
}

/// Connections the kernel queues before they are accepted, as `TcpListener::bind` (and the
/// standard library) has it.
const LISTEN_BACKLOG: u32 = 128;

/// A socket bound to `address` and not yet listening: a port in use, or an address not this
/// machine's, is found before the database is touched, while clients connecting meanwhile are
/// refused rather than left waiting on a server that is still starting. It does not hold the
/// address: another socket that allows reuse, as servers' do, may bind it too until this one
/// listens.
fn reserve(address: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restarted server takes its port while the last one's
    // closed connections linger.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    Ok(socket)
}

/// Resolves on SIGINT, SIGTERM or SIGHUP (whose default would end the process at once when
/// its terminal closes). Listens from the call on, not from the first poll: the server says it
/// is listening before it polls this, and a signal sent as soon as it says so must stop it
/// cleanly too. A second signal while requests finish ends the process at once, as an operator
/// pressing Ctrl-C again expects: the wait may last as long as the request timeout.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let mut signals = Signals::listen();
    async move {
        signals.next().await;
        let first = std::time::Instant::now();
        tracing::info!(
            "shutting down: finishing requests in flight (SIGINT or SIGTERM again, a second \
             from now, stops at once)"
        );
        tokio::spawn(async move {
            loop {
                let (name, status) = signals.next().await;
                // One stop often arrives twice (a terminal's Ctrl-C beside the one a wrapper
                // such as npm forwards; systemd's SIGHUP after its SIGTERM), and a hang-up
                // comes with a closed terminal, not from an operator asking again.
                if name == "SIGHUP" || first.elapsed() < DOUBLED_SIGNAL {
                    tracing::info!("{name} taken as the same stop: still finishing requests");
                    continue;
                }
                tracing::warn!("{name} again: stopping without finishing requests in flight");
                std::process::exit(status);
            }
        });
    }
}

/// Signals this soon after the first are taken as the same stop, delivered twice.
const DOUBLED_SIGNAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The signals that stop the server, each with its name and the exit status a shell gives a
/// process it ends (128 + its number).
struct Signals {
    #[cfg(unix)]
    kinds: Vec<(tokio::signal::unix::Signal, &'static str, i32)>,
}

impl Signals {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut wanted = vec![
                (SignalKind::interrupt(), "SIGINT"),
                (SignalKind::terminate(), "SIGTERM"),
            ];
            // Left ignored where it was (`nohup`): listening for it would undo that.
            if !ignored(libc::SIGHUP) {
                wanted.push((SignalKind::hangup(), "SIGHUP"));
            }
            let kinds = wanted
                .into_iter()
                .filter_map(|(kind, name)| match signal(kind) {
                    Ok(signals) => Some((signals, name, 128 + kind.as_raw_value())),
                    Err(err) => {
                        tracing::error!(%err, "cannot listen for {name}");
                        None
                    }
                })
                .collect();
            Self { kinds }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The next signal to arrive; never, when none can be listened for.
    async fn next(&mut self) -> (&'static str, i32) {
        #[cfg(unix)]
        {
            std::future::poll_fn(|cx| {
                for (signals, name, status) in &mut self.kinds {
                    if signals.poll_recv(cx).is_ready() {
                        return std::task::Poll::Ready((*name, *status));
                    }
                }
                std::task::Poll::Pending
            })
            .await
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            ("Ctrl-C", 130)
        }
    }
}

/// Raises the soft limit of open files to the hard one, as servers commonly do at start-up:
/// every connection takes a file, and under the usual soft limit (1,024) a thousand idle
/// connections would shut everyone else out. The hard limit stays the administrator's.
#[cfg(unix)]
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain system call with a valid, initialised limit block.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let err = std::io::Error::last_os_error();
        tracing::warn!(%err, "cannot read the open-file limit");
        return;
    }
    // macOS refuses an unlimited soft limit: there the most it takes is 10,240 (OPEN_MAX).
    for wanted in [limit.rlim_max, limit.rlim_max.min(10_240)] {
        if wanted <= limit.rlim_cur {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return;
        }
    }
    let err = std::io::Error::last_os_error();
    tracing::warn!(%err, soft = limit.rlim_cur, "cannot raise the open-file limit");
}

/// Whether `signal` is ignored, as this process was started with it.
#[cfg(unix)]
fn ignored(signal: libc::c_int) -> bool {
    let mut current = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: with no new action given, the call only writes the current one into `current`,
    // a block of the right type.
    let read = unsafe { libc::sigaction(signal, std::ptr::null(), current.as_mut_ptr()) };
    // SAFETY: zeroed, then written by the call when it succeeded: valid either way.
    read == 0 && unsafe { current.assume_init() }.sa_sigaction == libc::SIG_IGN
}

async fn user_command(settings: &Settings, command: UserCommand) -> anyhow::Result<()> {
    // Input is read before the database is opened: one that cannot be read (a missing file,
    // no password, JSON that does not parse) leaves no database file or schema behind. Its
    // fields are judged by the service, on the database it opened.
    let password = match &command {
        UserCommand::Create { .. } => read_password()?,
        _ => String::new(),
    };
    let rows = match &command {
        UserCommand::Import { file } => read_import(file)?,
        _ => Vec::new(),
    };
    let service = match &command {
        UserCommand::Create { .. } | UserCommand::Import { .. } => Service::open(settings).await?,
        UserCommand::PromoteOwner { .. } | UserCommand::ResetTotp { .. } => {
            Service::open_existing(settings).await?
        }
    };
    let result = match command {
        UserCommand::Create {
            username,
            email,
            role,
        } => {
            let input = NewUser {
                username,
                email,
                password,
                ..NewUser::default()
            };
            let created = async {
                use sea_orm::ActiveEnum;
                let user = service.create_user(None, input, role.into(), None).await?;
                let role = user.role.to_value();
                say!("created {} ({role}) {}", user.username, user.id);
                advise_owner(&service, settings).await;
                Ok(())
            };
            created.await
        }
        UserCommand::PromoteOwner { username } => {
            service
                .promote_owner(&username)
                .await
                .map(|(user, promotion)| match promotion {
                    Promotion::From(Some(former)) => say!(
                        "{} is now the owner and {former} an admin; the sessions of both ended",
                        user.username
                    ),
                    Promotion::From(None) => {
                        say!("{} is now the owner; their sessions ended", user.username)
                    }
                    Promotion::Unchanged => say!("{} is the owner already", user.username),
                })
        }
        UserCommand::Import { .. } => {
            let imported = service.import_users(rows).await;
            if let Ok(ids) = &imported {
                let users = if ids.len() == 1 { "user" } else { "users" };
                say!("imported {} {users}", ids.len());
                advise_owner(&service, settings).await;
            }
            imported.map(drop)
        }
        UserCommand::ResetTotp { username } => service.reset_totp(&username).await.map(|(username, was_on)| {
            if was_on {
                say!(
                    "two-factor login (or a setup not yet confirmed) is removed for {username}; \
                     their sessions ended"
                );
            } else {
                say!("{username} had no two-factor login set up");
            }
        }),
    };
    close(service.db(), settings.db_timeout, false).await;
    result.map_err(describe)
}

/// Closes the database's connections before the process ends, waiting at most `timeout`: on
/// SQLite the write-ahead log is folded into the file first, so what was written is in the
/// file by itself (a copy of it alone is whole).
async fn close(db: &crate::db::Db, timeout: std::time::Duration, serving: bool) {
    let replaced = db
        .file_replaced()
        .filter(|_| serving)
        .map(std::path::Path::to_path_buf);
    match tokio::time::timeout(timeout, db.close()).await {
        // Said by a server only: beside a running one, a copy of the file alone is no backup
        // whatever a command leaves.
        Ok(Ok(folded)) => {
            if serving && !folded {
                tracing::warn!(
                    "the write-ahead log could not be folded into the database file, which \
                     another process has open: a copy of the file needs its -wal file beside it"
                );
            }
        }
        Ok(Err(err)) => tracing::warn!(%err, "closing the database connections"),
        Err(_) => tracing::warn!("closing the database connections took too long"),
    }
    // SQLite keeps the journal of a file moved or deleted under it, at the path: the next
    // start would replay it into whatever file is there now.
    if let Some(path) = replaced {
        if crate::db::sqlite_companions(&path)
            .iter()
            .any(|companion| companion.exists())
        {
            tracing::error!(
                path = %path.display(),
                "the SQLite database file was removed or replaced while this server ran: the \
                 -wal and -shm files beside it are what this server wrote to the file it had \
                 open; move them away (with that file, if it is kept) before starting a server \
                 on the file now there, or SQLite replays them into it"
            );
        } else {
            tracing::error!(
                path = %path.display(),
                "the SQLite database file was removed or replaced while this server ran: what \
                 it wrote since went to the file it had open, not to the one there now"
            );
        }
    }
}

/// The fields of a `user import` row, as the GraphQL API names them.
const IMPORT_FIELDS: [&str; 8] = [
    "username",
    "email",
    "passwordHash",
    "firstName",
    "lastName",
    "phone",
    "role",
    "createdBy",
];

/// The rows of `user import`'s FILE (`-`: stdin). Each field is read on its own, so a value
/// that does not parse is refused by name and row with the other rows' errors (`3.role`),
/// not as the whole file.
fn read_import(file: &std::path::Path) -> anyhow::Result<Vec<crate::service::ImportedUser>> {
    let text = if file == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read the import from stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    // A byte-order mark, as spreadsheet and Windows tools write before UTF-8, is no content.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let rows: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|err| {
        // Where the text stops being JSON (a stray comma, an escape of half a character cut
        // off mid-emoji) is told by line and column; a row can be named only once it parses.
        let what = if err.is_data() {
            "the import is not a JSON array of users"
        } else {
            "the import is not valid JSON"
        };
        anyhow::Error::new(err).context(what)
    })?;
    // Which of two values a row means is anyone's guess: none is imported.
    if let Some(path) = crate::service::validation::repeated_member(text.as_bytes()) {
        bail!("{path} is given twice in its row: give each field once");
    }
    Ok(rows.into_iter().map(import_row).collect())
}

fn import_row(row: serde_json::Value) -> crate::service::ImportedUser {
    let mut unreadable = Vec::new();
    let mut fields = match row {
        serde_json::Value::Object(fields) => fields,
        _ => {
            unreadable.push((String::new(), "is not a JSON object".to_owned()));
            serde_json::Map::new()
        }
    };
    for name in fields.keys() {
        if !IMPORT_FIELDS.contains(&name.as_str()) {
            unreadable.push((name.clone(), "is no field of a user".to_owned()));
        }
    }
    // A field left out or null is absent; one of the wrong form is named, and absent too.
    fn read<T: serde::de::DeserializeOwned>(
        fields: &mut serde_json::Map<String, serde_json::Value>,
        unreadable: &mut Vec<(String, String)>,
        name: &str,
        what: &str,
    ) -> Option<T> {
        let value = fields.remove(name).filter(|value| !value.is_null())?;
        serde_json::from_value(value)
            .map_err(|_| unreadable.push((name.to_owned(), format!("must be {what}"))))
            .ok()
    }
    let (f, u) = (&mut fields, &mut unreadable);
    let username = read(f, u, "username", "a string");
    let email = read(f, u, "email", "a string");
    let password_hash = read(f, u, "passwordHash", "a string");
    let first_name = read(f, u, "firstName", "a string or null");
    let last_name = read(f, u, "lastName", "a string or null");
    let phone = read(f, u, "phone", "a string or null");
    // In any case, as `user create --role` takes it.
    let role = read::<String>(f, u, "role", "ADMIN or STANDARD")
        .and_then(|role| {
            <CliRole as clap::ValueEnum>::from_str(role.trim(), true)
                .map_err(|_| u.push(("role".to_owned(), "must be ADMIN or STANDARD".to_owned())))
                .ok()
        })
        .unwrap_or_default();
    let created_by = read(f, u, "createdBy", "a user's id (a UUID) or null");
    crate::service::ImportedUser {
        username,
        email,
        password_hash,
        first_name,
        last_name,
        phone,
        // An owner is passed on for the service to refuse by row.
        role: role.into(),
        created_by,
        unreadable,
    }
}

/// Reads the password from a prompt without echo, or from stdin's first line when piped.
/// Advice only, after accounts were made: they are made whatever it finds.
async fn advise_owner(service: &Service, settings: &Settings) {
    if matches!(service.lacks_owner().await, Ok(true)) {
        tell(
            settings.log_format,
            "the database has no owner yet: make one with `rollcall user promote-owner \
             USERNAME` (or create it with --role owner)",
        );
    }
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let password = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Repeat password: ")?;
        if password != again {
            bail!("the passwords differ");
        }
        Ok(password)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        let trimmed = line.strip_suffix('\n').unwrap_or(&line);
        let password = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        // Nothing, or an empty line (`echo | rollcall user create …`): no password at all.
        if password.is_empty() {
            bail!("no password given: write it to stdin, or run the command in a terminal");
        }
        Ok(password.to_owned())
    }
}

fn describe(err: AppError) -> anyhow::Error {
    match err {
        AppError::BadInput(fields) | AppError::Conflict(fields) => {
            const SHOWN: usize = 20;
            let mut list: Vec<(&String, &crate::error::FieldError)> = fields.iter().collect();
            // An import's `12.email` after `2.email`, not between `1.` and `2.`.
            list.sort_by_key(|(field, _)| {
                // `3` (the whole row) beside `3.email`.
                let (row, rest) = field.split_once('.').unwrap_or((field, ""));
                (row.parse::<usize>().ok(), rest.to_owned())
            });
            let mut text: Vec<String> = list
                .iter()
                .take(SHOWN)
                .map(|(f, e)| format!("{f} {}", e.message))
                .collect();
            if list.len() > SHOWN {
                text.push(format!("and {} more", list.len() - SHOWN));
            }
            anyhow::anyhow!("{}", text.join("; "))
        }
        // A command waits for the database as a request does, but has no request to speak of.
        // What it had not committed is rolled back; a rotation may have committed before.
        AppError::Timeout(_) => anyhow::anyhow!(crate::service::BUSY),
        other => anyhow::anyhow!("{}", crate::error::chain(&other)),
    }
}
