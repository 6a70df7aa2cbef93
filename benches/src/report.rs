//! The results table, ratios and targets, as Markdown.

use std::fmt::Write as _;

use crate::load::Measured;
use crate::{Args, DbKind};

/// The logins beside `me` in the flood scenario.
pub const FLOOD: &str = "login flood (beside me)";

pub struct Row {
    pub name: String,
    pub server: &'static str,
    pub measured: Measured,
    pub idle_rss_mib: Option<f64>,
}

impl Row {
    pub fn rollcall(name: &str, measured: Measured) -> Self {
        Self {
            name: name.into(),
            server: "rollcall",
            measured,
            idle_rss_mib: None,
        }
    }

    pub fn peer(name: &str, measured: Measured, idle_rss_mib: f64) -> Self {
        Self {
            name: name.into(),
            server: "PostGraphile 4",
            measured,
            idle_rss_mib: Some(idle_rss_mib),
        }
    }
}

pub struct Report {
    pub rows: Vec<Row>,
    pub idle_rss_mib: f64,
    pub argon2_verifies_per_sec: f64,
    pub pgbench_tps: Option<f64>,
    pub notes: Vec<String>,
    header: String,
    connections: u32,
    cores: usize,
    db: DbKind,
}

/// lldap 0.6.3 on PostgreSQL, measured on this benchmark's machine class: `me`, a user by id,
/// and a list of 50, in requests/s. SQLite must serve at least five times these.
const LLDAP: [(&str, f64); 3] = [
    ("me", 675.0),
    ("user(id)", 623.0),
    ("users(first: 50) + createdBy", 311.0),
];

impl Report {
    /// Fails the run when a scenario answered with errors, rollcall's or its peer's: the figures
    /// would hide a fault (a broken pooled connection once showed up only as errors beside the
    /// login flood; a query the peer could no longer answer, as fast 400s). The flood's own
    /// logins may time out in wrk by design.
    pub fn no_unexpected_errors(&self) -> anyhow::Result<()> {
        let failed: Vec<String> = self
            .rows
            .iter()
            // The peer's too: a query it cannot answer is no comparison.
            .filter(|row| row.name != FLOOD && row.measured.errors > 0)
            .map(|row| format!("{} ({} errors)", row.name, row.measured.errors))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("scenarios answered with errors: {}", failed.join(", "))
        }
    }

    pub fn new(args: &Args, cores: usize) -> Self {
        let header = format!(
            "- date: {}\n- machine: {} cores ({}), {:.0} GiB RAM, {}\n- database: {:?}, {} seeded users\n- load: wrk, {} connections, {} threads, {}s per scenario after {}s warm-up{}\n",
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
            cores,
            cpu_model(),
            mem_gib(),
            kernel(),
            args.db,
            args.users,
            args.connections,
            cores,
            args.duration.as_secs(),
            args.warmup.as_secs(),
            if args.short { " (short mode)" } else { "" },
        );
        Self {
            rows: Vec::new(),
            idle_rss_mib: 0.0,
            argon2_verifies_per_sec: 0.0,
            pgbench_tps: None,
            notes: Vec::new(),
            header,
            connections: args.connections,
            cores,
            db: args.db,
        }
    }

    fn find(&self, name: &str) -> Option<&Measured> {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .map(|r| &r.measured)
    }

    fn find_prefix(&self, prefix: &str) -> Option<&Measured> {
        self.rows
            .iter()
            .find(|r| r.name.starts_with(prefix))
            .map(|r| &r.measured)
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from("# rollcall benchmark results\n\n");
        out.push_str(&self.header);
        out.push_str("\n| scenario | server | req/s | p50 ms | p99 ms | errors | peak RSS MiB |\n|---|---|---:|---:|---:|---:|---:|\n");
        for row in &self.rows {
            let m = &row.measured;
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.1} |",
                row.name,
                row.server,
                m.requests_per_sec,
                m.p50_ms,
                m.p99_ms,
                m.errors,
                m.peak_rss_mib
            );
        }
        let with_errors: Vec<&Row> = self.rows.iter().filter(|r| r.measured.errors > 0).collect();
        if !with_errors.is_empty() {
            out.push_str("\nErrors by kind (a request wrk timed out and the server then answered counts twice):\n\n");
            for row in with_errors {
                let _ = writeln!(out, "- {}:{}", row.name, error_kinds(&row.measured));
            }
        }
        out.push_str("\n## Ceilings\n\n");
        let _ = writeln!(out, "- rollcall idle RSS: {:.1} MiB", self.idle_rss_mib);
        if let Some(peer) = self.rows.iter().find_map(|r| r.idle_rss_mib) {
            let _ = writeln!(out, "- PostGraphile idle RSS (all workers): {peer:.1} MiB");
        }
        let _ = writeln!(
            out,
            "- argon2id verify, all {} cores: {:.1} verifies/s",
            self.cores, self.argon2_verifies_per_sec
        );
        if let Some(tps) = self.pgbench_tps {
            let _ = writeln!(
                out,
                "- pgbench select-only by primary key, prepared, {} clients: {tps:.0} tps",
                self.connections
            );
        }

        let ratio = |a: Option<&Measured>, b: Option<&Measured>| match (a, b) {
            (Some(a), Some(b)) if b.requests_per_sec > 0.0 => {
                Some(a.requests_per_sec / b.requests_per_sec)
            }
            _ => None,
        };
        if let Some(share) = ratio(self.find("me"), self.find_prefix("serverInfo")) {
            let _ = writeln!(
                out,
                "- `me` as a share of `serverInfo`: {:.1}% (reported, not a target)",
                share * 100.0
            );
        }

        out.push_str("\n## Targets\n\n| target | measured | result |\n|---|---|---|\n");
        let mut target = |name: &str, measured: String, ok: Option<bool>| {
            let verdict = match ok {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            let _ = writeln!(out, "| {name} | {measured} | {verdict} |");
        };
        if self.db == DbKind::Postgres {
            for (ours, theirs, label) in [
                (
                    "user(id)",
                    "PostGraphile userById",
                    "user(id) ≥ 2× PostGraphile, lower p99",
                ),
                (
                    "users(first: 50) + createdBy",
                    "PostGraphile allUsers(first: 50) + creator",
                    "users(first: 50) ≥ 2× PostGraphile, lower p99",
                ),
            ] {
                let (a, b) = (self.find(ours), self.find(theirs));
                let r = ratio(a, b);
                let p99_lower = a.zip(b).map(|(a, b)| a.p99_ms < b.p99_ms);
                target(
                    label,
                    match (r, a, b) {
                        (Some(r), Some(a), Some(b)) => {
                            format!("{r:.2}×, p99 {:.2} vs {:.2} ms", a.p99_ms, b.p99_ms)
                        }
                        _ => "-".into(),
                    },
                    r.zip(p99_lower).map(|(r, lower)| r >= 2.0 && lower),
                );
            }
        } else {
            for (name, lldap) in LLDAP {
                let rate = self.find(name).map(|m| m.requests_per_sec);
                target(
                    &format!("{name} ≥ 5× lldap on PostgreSQL ({:.0}/s)", 5.0 * lldap),
                    rate.map_or("-".into(), |r| format!("{r:.0}/s ({:.1}×)", r / lldap)),
                    rate.map(|r| r >= 5.0 * lldap),
                );
            }
            let refresh = self.find("refreshToken").map(|m| m.p99_ms);
            target(
                "refreshToken p99 ≤ 100 ms",
                refresh.map_or("-".into(), |p| format!("{p:.2} ms")),
                refresh.map(|p| p <= 100.0),
            );
        }
        let search_floor = if self.db == DbKind::Postgres {
            1000.0
        } else {
            200.0
        };
        for name in ["users(search)", "users(search) common prefix"] {
            let rate = self.find(name).map(|m| m.requests_per_sec);
            target(
                &format!("{name} ≥ {search_floor:.0} req/s"),
                rate.map_or("-".into(), |r| format!("{r:.0}/s")),
                rate.map(|r| r >= search_floor),
            );
        }
        let login = self.find("login").map(|m| m.requests_per_sec);
        let share = login
            .filter(|_| self.argon2_verifies_per_sec > 0.0)
            .map(|l| l / self.argon2_verifies_per_sec);
        target(
            "login ≥ 80% of raw argon2 verify rate",
            share.map_or("-".into(), |s| {
                format!(
                    "{:.1}% ({:.1} of {:.1}/s)",
                    s * 100.0,
                    login.unwrap_or(0.0),
                    self.argon2_verifies_per_sec
                )
            }),
            share.map(|s| s >= 0.8),
        );
        let (idle, flood) = (
            self.find("me, idle (fewer connections)"),
            self.find("me, during login flood"),
        );
        let p99_factor = idle
            .zip(flood)
            .filter(|(i, _)| i.p99_ms > 0.0)
            .map(|(i, f)| f.p99_ms / i.p99_ms);
        target(
            "me p99 during login flood ≤ 3× idle",
            p99_factor.map_or("-".into(), |f| format!("{f:.2}×")),
            p99_factor.map(|f| f <= 3.0),
        );
        let first = self.find("users(first: 50) page 1");
        let deep = self
            .rows
            .iter()
            .find(|r| {
                r.name.starts_with("users(first: 50) page ") && r.name != "users(first: 50) page 1"
            })
            .map(|r| &r.measured);
        let cost = ratio(first, deep);
        target(
            "deep page costs ≤ 1.5× the first",
            cost.map_or("-".into(), |c| format!("{c:.2}×")),
            cost.map(|c| c <= 1.5),
        );
        target(
            "idle RSS < 30 MB",
            format!("{:.1} MiB", self.idle_rss_mib),
            Some(self.idle_rss_mib * 1.048_576 < 30.0),
        );
        // Of the scenarios that hash, when any ran (`--only` may leave both out).
        let peak = [FLOOD, "login"]
            .into_iter()
            .filter_map(|name| self.find(name).map(|m| m.peak_rss_mib))
            .reduce(f64::max);
        let bound = 30.0 + self.cores as f64 * 19.0 * 1.048_576;
        target(
            "peak RSS in login flood ≤ 30 MB + hashing threads × 19 MiB",
            peak.map_or("-".into(), |peak| {
                format!("{:.1} MiB (bound {:.1} MiB)", peak, bound / 1.048_576)
            }),
            peak.map(|peak| peak * 1.048_576 <= bound),
        );
        if !self.notes.is_empty() {
            out.push_str("\n## Notes\n\n");
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn mem_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_default()
}

/// ` (TIMEOUT 40, socket_timeout 40)`, or nothing when there were no errors.
pub fn error_kinds(measured: &Measured) -> String {
    if measured.error_kinds.is_empty() {
        return String::new();
    }
    let kinds: Vec<String> = measured
        .error_kinds
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    format!(" ({})", kinds.join(", "))
}
