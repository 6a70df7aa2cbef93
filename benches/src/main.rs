//! rollcall's benchmark: rollcall side by side with PostGraphile and the machine's ceilings.
//!
//! `cargo run --release -p rollcall-bench -- --db postgres --users 100000 --duration 10s`
//! builds the release server, seeds a fresh database through the service layer, drives each
//! scenario with wrk, and prints (and with `--write-results`, writes) a table.

mod load;
mod report;
mod seed;
mod tools;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use load::{Bodies, Load, Measured};
use report::{Report, Row};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Parser)]
#[command(about = "Benchmark rollcall against PostGraphile and the machine's ceilings")]
pub struct Args {
    #[arg(long, value_enum, default_value = "postgres")]
    db: DbKind,
    /// Users to seed.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Measured time per scenario.
    #[arg(long, default_value = "10s", value_parser = rollcall::config::parse_duration)]
    duration: Duration,
    /// Unmeasured load before each scenario.
    #[arg(long, default_value = "2s", value_parser = rollcall::config::parse_duration)]
    warmup: Duration,
    /// Concurrent connections per scenario.
    #[arg(long, default_value_t = 50)]
    connections: u32,
    /// A quick run that only proves the benchmark works: 2,000 users, 2s per scenario, and
    /// missing peer tools reported instead of fatal.
    #[arg(long)]
    short: bool,
    /// Write the results as Markdown to this file (e.g. benches/RESULTS.md).
    #[arg(long)]
    write_results: Option<PathBuf>,
    /// Run only the scenarios whose name contains this text, or one of several separated by
    /// commas (for quick comparisons).
    #[arg(long)]
    only: Option<String>,
    /// A PostgreSQL server where the benchmark may create and drop a database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
}

// The server's allocator and its settings, as in rollcall's own `main.rs`: this binary
// re-executes itself as the server.
rollcall::global_allocator!();

/// Set on the child process that serves: the benchmark binary runs rollcall's own command
/// line, so the server measured is exactly the release build of the library, compiled once.
/// Not a `ROLLCALL_` name: the server warns of those that are no setting.
const AS_SERVER: &str = "RCBENCH_AS_SERVER";

/// Distinct signed-in users behind the `me` scenarios.
const ME_USERS: usize = 20;

fn main() -> std::process::ExitCode {
    if std::env::var_os(AS_SERVER).is_some() {
        return rollcall::cli::main();
    }
    let outcome = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(bench()));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn bench() -> Result<()> {
    let mut args = Args::parse();
    if args.short {
        args.users = args.users.min(2_000);
        args.duration = args.duration.min(Duration::from_secs(2));
        args.warmup = args.warmup.min(Duration::from_secs(1));
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let work_dir = std::env::temp_dir().join(format!("rollcall-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;

    let wrk = tools::wrk()?;
    let server_bin = std::env::current_exe()?;
    let database = seed::Database::create(args.db, &args.postgres_url, &work_dir, "bench").await?;
    let result = run(&args, cores, &wrk, &server_bin, &database, &work_dir).await;
    database.drop_now().await;
    let _ = std::fs::remove_dir_all(&work_dir);
    let report = result?;
    println!("{}", report.markdown());
    if let Some(path) = &args.write_results {
        std::fs::write(path, report.markdown())?;
        eprintln!("wrote {}", path.display());
    }
    report.no_unexpected_errors()
}

async fn run(
    args: &Args,
    cores: usize,
    wrk: &Path,
    server_bin: &Path,
    database: &seed::Database,
    work_dir: &Path,
) -> Result<Report> {
    let started = Instant::now();
    eprintln!("seeding {} users…", args.users);
    let seeded = seed::seed(&database.url, args.users).await?;
    eprintln!("seeded in {:.1}s", started.elapsed().as_secs_f64());

    let mut report = Report::new(args, cores);
    let server = ServerProcess::start(server_bin, &database.url)?;
    let client = reqwest::Client::new();
    wait_until_ready(&client, &server.base).await?;
    // One request so lazily built state exists, then let the process settle.
    graphql(
        &client,
        &server.base,
        None,
        json!({"query": "{ serverInfo { version } }"}),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.idle_rss_mib = load::rss_mib(&[server.pid()]);

    let peer = if args.db == DbKind::Postgres {
        match Peer::start(cores, database).await {
            Ok(peer) => Some(peer),
            Err(err) if args.short => {
                report
                    .notes
                    .push(format!("PostGraphile not measured: {err:#}"));
                None
            }
            Err(err) => return Err(err),
        }
    } else {
        None
    };
    let peer_load = |bodies: Bodies| {
        peer.as_ref().map(|peer| Load {
            wrk,
            url: format!("{}/graphql", peer.url),
            tokens: Vec::new(),
            bodies,
            connections: args.connections,
            threads: cores as u32,
            duration: args.duration,
            warmup: args.warmup,
            pids: vec![peer.child.id()],
            work_dir: work_dir.to_path_buf(),
        })
    };
    let owner = login(
        &client,
        &server.base,
        &seeded.owner_login,
        seed::OWNER_PASSWORD,
    )
    .await?;
    // `me` runs as many standard users, each with a session of their own.
    let mut standard = Vec::new();
    for (name, password) in seeded.logins.iter().take(ME_USERS) {
        standard.push(login(&client, &server.base, name, password).await?);
    }
    let owner = [owner];
    let url = format!("{}/graphql", server.base);
    let load = |tokens: &[String], bodies: Bodies, connections: u32| Load {
        wrk,
        url: url.clone(),
        tokens: tokens.to_vec(),
        bodies,
        connections,
        threads: cores as u32,
        duration: args.duration,
        warmup: args.warmup,
        pids: vec![server.pid()],
        work_dir: work_dir.to_path_buf(),
    };
    let c = args.connections;
    let one = |query: &str, variables: serde_json::Value| {
        Bodies::Pick(vec![
            json!({"query": query, "variables": variables}).to_string(),
        ])
    };

    let peer_idle = peer.as_ref().map(|peer| peer.idle_rss_mib);
    let wanted = |name: &str| {
        args.only
            .as_deref()
            .is_none_or(|only| only.split(',').any(|part| name.contains(part)))
    };
    let mut scenario = |name: &str, measured: Measured| {
        eprintln!(
            "{name}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {}{}",
            measured.requests_per_sec,
            measured.p50_ms,
            measured.p99_ms,
            measured.errors,
            report::error_kinds(&measured)
        );
        report.rows.push(match peer_idle {
            Some(idle) if name.starts_with("PostGraphile") => Row::peer(name, measured, idle),
            _ => Row::rollcall(name, measured),
        });
    };

    // Each ratio's two sides are measured in alternating rounds.
    let server_info = load(&[], one("{ serverInfo { version } }", json!({})), c);
    let me = load(&standard, one("{ me { id username role } }", json!({})), c);
    match (wanted("serverInfo (HTTP + GraphQL ceiling)"), wanted("me")) {
        (true, true) => {
            let (server_info, me) = server_info.run_alternating(&me)?;
            scenario("serverInfo (HTTP + GraphQL ceiling)", server_info);
            scenario("me", me);
        }
        (true, false) => scenario("serverInfo (HTTP + GraphQL ceiling)", server_info.run()?),
        (false, true) => scenario("me", me.run()?),
        (false, false) => {}
    }
    let by_id: Vec<String> = seeded
        .sample_ids
        .iter()
        .map(|id| json!({"query": "query($id: ID!) { user(id: $id) { id username email role } }", "variables": {"id": id}}).to_string())
        .collect();
    if wanted("user(id)") {
        let ours = load(&owner, Bodies::Pick(by_id), c);
        let by_id: Vec<String> = seeded
            .sample_ids
            .iter()
            .map(|id| json!({"query": "query($id: UUID!) { userById(id: $id) { id username email role } }", "variables": {"id": id}}).to_string())
            .collect();
        match peer_load(Bodies::Pick(by_id)) {
            Some(theirs) => {
                let (ours, theirs) = ours.run_alternating(&theirs)?;
                scenario("user(id)", ours);
                scenario("PostGraphile userById", theirs);
            }
            None => scenario("user(id)", ours.run()?),
        }
    }
    if wanted("users(first: 50) + createdBy") {
        let ours = load(
            &owner,
            one(
                "{ users(first: 50) { nodes { id username email createdBy { username } } } }",
                json!({}),
            ),
            c,
        );
        let page = "{ allUsers(first: 50, orderBy: [CREATED_AT_ASC, ID_ASC]) { nodes { id username email userByCreatedBy { username } } } }";
        match peer_load(one(page, json!({}))) {
            Some(theirs) => {
                let (ours, theirs) = ours.run_alternating(&theirs)?;
                scenario("users(first: 50) + createdBy", ours);
                scenario("PostGraphile allUsers(first: 50) + creator", theirs);
            }
            None => scenario("users(first: 50) + createdBy", ours.run()?),
        }
    }
    // Hashing scenarios follow: the peer would only sit in memory.
    if let Some(peer) = peer {
        peer.stop();
    }
    let searches: Vec<String> = (0..200)
        .map(|i| {
            let term = format!("user{:03}", (i * 37) % (args.users / 100).max(1));
            json!({"query": "query($s: String!) { users(first: 50, filter: {search: $s}) { nodes { id username } } }", "variables": {"s": term}}).to_string()
        })
        .collect();
    if wanted("users(search)") {
        scenario(
            "users(search)",
            load(&owner, Bodies::Pick(searches), c).run()?,
        );
    }
    const PREFIX_SEARCH: &str = "users(search) common prefix";
    if wanted(PREFIX_SEARCH) {
        scenario(
            PREFIX_SEARCH,
            common_prefix_search(args, cores, wrk, server_bin, work_dir).await?,
        );
    }
    let page_query = "query($after: String) { users(first: 50, after: $after) { nodes { id username } pageInfo { endCursor } } }";
    if wanted("users(first: 50) page 1") {
        scenario(
            "users(first: 50) page 1",
            load(&owner, one(page_query, json!({})), c).run()?,
        );
    }
    let deep_name = format!("users(first: 50) page {}", seeded.deep_page);
    if wanted(&deep_name) {
        scenario(
            &deep_name,
            load(
                &owner,
                one(page_query, json!({"after": seeded.deep_cursor})),
                c,
            )
            .run()?,
        );
    }
    if wanted("users(first: 50) + totalCount") {
        scenario(
            "users(first: 50) + totalCount",
            load(
                &owner,
                one(
                    "{ users(first: 50) { totalCount nodes { id } } }",
                    json!({}),
                ),
                c,
            )
            .run()?,
        );
    }

    let logins: Vec<String> = seeded
        .logins
        .iter()
        .map(|(login, password)| json!({"query": "mutation($i: LoginInput!) { login(input: $i) { accessToken } }", "variables": {"i": {"login": login, "password": password}}}).to_string())
        .collect();
    // Logins queue behind the hashing threads; a few connections per core keep every thread
    // busy without leaving a long queue of unfinished requests at the end of the window.
    let login_connections = (cores as u32 * 4).min(c);
    // The login rate and the machine's login ceiling (argon2id verifies on every core, no
    // server involved) in alternating rounds, so both see the same machine.
    let mut ceiling = None;
    if wanted("login") {
        let (rounds, slice) = load::rounds(args.duration);
        let mut login = load(&[], Bodies::Pick(logins.clone()), login_connections);
        login.duration = slice;
        let mut measured = Vec::new();
        let mut verifies = 0.0;
        for _ in 0..rounds {
            measured.push(login.run()?);
            login.warmup = Duration::ZERO;
            load::wait_until_idle();
            verifies += seed::argon2_rate(cores, slice);
        }
        ceiling = Some(verifies / rounds as f64);
        scenario("login", load::merge(&measured));
    }

    if wanted("refreshToken") {
        // Enough live refresh tokens that every connection always has one to rotate.
        let mut refresh_tokens = Vec::new();
        for (login_name, password) in seeded.logins.iter().cycle().take(c as usize * 3) {
            let body = graphql(&client, &server.base, None, json!({"query": "mutation($i: LoginInput!) { login(input: $i) { refreshToken } }", "variables": {"i": {"login": login_name, "password": password}}})).await?;
            refresh_tokens.push(
                body["data"]["login"]["refreshToken"]
                    .as_str()
                    .context("login for refresh")?
                    .to_owned(),
            );
        }
        let mut refresh = load(&[], Bodies::Refresh(refresh_tokens), c);
        refresh.warmup = Duration::ZERO;
        scenario("refreshToken", refresh.run()?);
    }

    // `me` alone and then beside a login flood, at the same connection count.
    let me_connections = (c / 5).max(2);
    if wanted("me, idle (fewer connections)") {
        scenario(
            "me, idle (fewer connections)",
            load(
                &standard,
                one("{ me { id username role } }", json!({})),
                me_connections,
            )
            .run()?,
        );
    }
    if wanted("during login flood") {
        let mut flood = load(&[], Bodies::Pick(logins), c);
        // The flood saturates hashing first, then covers the whole `me` run, warm-up included,
        // with time to spare at the end.
        let lead = args.warmup + Duration::from_secs(1);
        flood.duration = lead + args.warmup + args.duration + Duration::from_secs(2);
        flood.warmup = Duration::ZERO;
        let me_beside = load(
            &standard,
            one("{ me { id username role } }", json!({})),
            me_connections,
        );
        load::wait_until_idle();
        let (flood_result, me_result, flood_outlasted_me) = std::thread::scope(|s| {
            let flood = s.spawn(|| flood.run_now());
            std::thread::sleep(lead);
            // Not `run`: that would wait for an idle machine, i.e. for the flood to end.
            let me = me_beside.run_now();
            let flood_outlasted_me = !flood.is_finished();
            (flood.join(), me, flood_outlasted_me)
        });
        let flood_result = flood_result.map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
        let me_result = me_result?;
        if !flood_outlasted_me {
            bail!("the login flood ended before `me` finished measuring beside it");
        }
        scenario("me, during login flood", me_result);
        scenario(report::FLOOD, flood_result);
    }
    server.stop();

    report.argon2_verifies_per_sec = match ceiling {
        Some(ceiling) => ceiling,
        None => seed::argon2_rate(cores, args.duration.min(Duration::from_secs(5))),
    };
    eprintln!(
        "argon2 ceiling: {:.1} verifies/s",
        report.argon2_verifies_per_sec
    );

    if args.db == DbKind::Postgres {
        match pgbench(args, database) {
            Ok(tps) => report.pgbench_tps = Some(tps),
            Err(err) if args.short => report.notes.push(format!("pgbench not measured: {err:#}")),
            Err(err) => return Err(err),
        }
    }
    Ok(report)
}

/// `users(first: 50, filter: {search: "u123"})` on a database of its own holding the
/// common-prefix population ([`seed::seed_common_prefix`]), served by a second rollcall.
async fn common_prefix_search(
    args: &Args,
    cores: usize,
    wrk: &Path,
    server_bin: &Path,
    work_dir: &Path,
) -> Result<Measured> {
    let database =
        seed::Database::create(args.db, &args.postgres_url, work_dir, "bench_prefix").await?;
    let result = async {
        eprintln!("seeding {} common-prefix users…", args.users);
        let owner_login = seed::seed_common_prefix(&database.url, args.users).await?;
        let server = ServerProcess::start(server_bin, &database.url)?;
        let client = reqwest::Client::new();
        let measured = async {
            wait_until_ready(&client, &server.base).await?;
            let owner = login(&client, &server.base, &owner_login, seed::OWNER_PASSWORD).await?;
            let body = json!({
                "query": "query($s: String!) { users(first: 50, filter: {search: $s}) { nodes { id username } } }",
                "variables": {"s": "u123"},
            });
            Load {
                wrk,
                url: format!("{}/graphql", server.base),
                tokens: vec![owner],
                bodies: Bodies::Pick(vec![body.to_string()]),
                connections: args.connections,
                threads: cores as u32,
                duration: args.duration,
                warmup: args.warmup,
                pids: vec![server.pid()],
                work_dir: work_dir.to_path_buf(),
            }
            .run()
        }
        .await;
        server.stop();
        measured
    }
    .await;
    database.drop_now().await;
    result
}

/// PostGraphile 4 on the same table, one worker per core, serving the equivalent reads. It
/// runs beside rollcall so each of its scenarios directly follows rollcall's counterpart: a
/// noisy machine then affects both sides of a ratio alike.
struct Peer {
    child: Child,
    url: String,
    idle_rss_mib: f64,
}

/// `users.created_by` as PostGraphile's `userByCreatedBy`, as rollcall's `createdBy`.
const POSTGRAPHILE_TAGS: &str = r#"{
  version: 1,
  config: {
    class: { users: { tags: { foreignKey: "(created_by) references users (id)" } } },
  },
}
"#;

impl Peer {
    async fn start(cores: usize, database: &seed::Database) -> Result<Self> {
        let tools_dir = std::env::var_os("ROLLCALL_BENCH_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tools"));
        let bin = tools::postgraphile(&tools_dir)?;
        // `created_by` is attribution without a foreign key (deleting an account must not
        // touch the rows it created), so PostGraphile is told of the relation by a smart tag,
        // read from the file of this name in its working directory.
        std::fs::write(tools_dir.join("postgraphile.tags.json5"), POSTGRAPHILE_TAGS)
            .context("writing postgraphile's smart tags")?;
        let port = free_port()?;
        let child = Command::new(bin)
            .current_dir(&tools_dir)
            .args([
                "-c",
                &database.url,
                "-s",
                "public",
                "-n",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .args([
                "--cluster-workers",
                &cores.to_string(),
                "--disable-query-log",
                "--disable-graphiql",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting postgraphile")?;
        let mut peer = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            idle_rss_mib: 0.0,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while graphql(&client, &peer.url, None, json!({"query": "{ __typename }"}))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                peer.stop();
                bail!("postgraphile did not start");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        peer.idle_rss_mib = load::rss_mib(&[peer.child.id()]);
        Ok(peer)
    }

    fn stop(self) {
        drop(self);
    }
}

/// Stopped however the benchmark ends, a failed scenario included.
impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Cluster workers exit with their master.
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// pgbench select-only by primary key, prepared, on the same server and database.
fn pgbench(args: &Args, database: &seed::Database) -> Result<f64> {
    let bin = tools::pgbench().context("pgbench not found")?;
    let init = Command::new(&bin)
        .args(["-i", "-q", "-s", "10", &database.url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !init.success() {
        bail!("pgbench -i failed");
    }
    let output = Command::new(&bin)
        .args(["-n", "-S", "-M", "prepared"])
        .arg(format!("-c{}", args.connections))
        .arg("-j2")
        .arg(format!("-T{}", args.duration.as_secs().max(1)))
        .arg(&database.url)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unexpected pgbench output: {text}"))
}

struct ServerProcess {
    child: Child,
    base: String,
}

impl ServerProcess {
    fn start(bin: &Path, database_url: &str) -> Result<Self> {
        let port = free_port()?;
        let child = Command::new(bin)
            .arg("serve")
            .env(AS_SERVER, "1")
            .env("DATABASE_URL", database_url)
            .env("ROLLCALL_LISTEN", format!("127.0.0.1:{port}"))
            // One load generator on loopback is every client at once: the per-IP limit would
            // measure itself, which is what `0` is for.
            .env("ROLLCALL_IP_RATE_LIMIT", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting rollcall")?;
        Ok(Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(self) {
        drop(self);
    }
}

/// A scenario that fails returns early with `?`: the server must not outlive the benchmark.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_until_ready(client: &reqwest::Client, base: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(format!("{base}/ready")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("rollcall did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn graphql(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> Result<serde_json::Value> {
    let mut request = client.post(format!("{base}/graphql")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let body: serde_json::Value = request.send().await?.error_for_status()?.json().await?;
    if body.get("errors").is_some() {
        bail!("GraphQL errors: {body}");
    }
    Ok(body)
}

async fn login(
    client: &reqwest::Client,
    base: &str,
    login: &str,
    password: &str,
) -> Result<String> {
    let body = graphql(
        client,
        base,
        None,
        json!({"query": "mutation($i: LoginInput!) { login(input: $i) { accessToken } }", "variables": {"i": {"login": login, "password": password}}}),
    )
    .await?;
    Ok(body["data"]["login"]["accessToken"]
        .as_str()
        .context("login returned no token")?
        .to_owned())
}
