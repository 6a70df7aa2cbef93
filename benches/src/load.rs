//! Driving load with wrk and reading what it and /proc report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

/// What one wrk run measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// Non-200 responses, socket errors, and 200s whose body carries GraphQL `errors`.
    pub errors: u64,
    /// The errors by what they were: the GraphQL error code (`HTTP_503` when the body had
    /// none), or the kind of socket error wrk saw.
    pub error_kinds: BTreeMap<String, u64>,
    /// Largest resident set seen while the load ran, in MiB (0 when not sampled).
    pub peak_rss_mib: f64,
}

/// How each request body is chosen.
pub enum Bodies {
    /// One of these, at random.
    Pick(Vec<String>),
    /// refreshToken rotation: each thread keeps a queue of live refresh tokens, sends one and
    /// queues the token the response returns.
    Refresh(Vec<String>),
}

pub struct Load<'a> {
    pub wrk: &'a Path,
    pub url: String,
    /// Bearer tokens; with several, each request picks one at random, so the server sees
    /// many users' sessions rather than one.
    pub tokens: Vec<String>,
    pub bodies: Bodies,
    pub connections: u32,
    pub threads: u32,
    pub duration: Duration,
    pub warmup: Duration,
    /// Processes whose summed RSS is sampled during the run.
    pub pids: Vec<u32>,
    pub work_dir: PathBuf,
}

impl Load<'_> {
    /// Waits for an idle machine, warms up, waits again, and measures. Requests run to
    /// completion even when wrk hangs up, so the waits keep the previous scenario's backlog
    /// and the warm-up's own (a queue of logins, say) out of the measured window.
    pub fn run(&self) -> Result<Measured> {
        wait_until_idle();
        self.measure(true)
    }

    /// Warms up and measures at once, without waiting for an idle machine: for a load
    /// measured beside another that is still running.
    pub fn run_now(&self) -> Result<Measured> {
        self.measure(false)
    }

    fn measure(&self, settle_after_warmup: bool) -> Result<Measured> {
        let script = self
            .work_dir
            .join(format!("load-{}.lua", rand::random::<u32>()));
        std::fs::write(&script, self.lua())?;
        if !self.warmup.is_zero() {
            self.wrk_once(&script, self.warmup)?;
            if settle_after_warmup {
                wait_until_idle();
            }
        }
        let sampler = RssSampler::start(self.pids.clone());
        let result = self.wrk_once(&script, self.duration);
        let peak = sampler.stop();
        let _ = std::fs::remove_file(&script);
        let mut measured = result?;
        measured.peak_rss_mib = peak;
        Ok(measured)
    }

    /// Measures `self` and `other` in alternating rounds, each after its own warm-up, so a
    /// machine whose speed drifts during the run affects both sides of their ratio alike.
    /// Requests/s is the mean over the rounds (they are equally long), p50 the mean of the
    /// rounds' p50 and p99 the worst round's p99.
    pub fn run_alternating(&self, other: &Load) -> Result<(Measured, Measured)> {
        let loads = [self, other];
        let scripts = loads.map(|load| {
            load.work_dir
                .join(format!("load-{}.lua", rand::random::<u32>()))
        });
        for (load, script) in loads.iter().zip(&scripts) {
            std::fs::write(script, load.lua())?;
        }
        let result = (|| {
            for (load, script) in loads.iter().zip(&scripts) {
                if !load.warmup.is_zero() {
                    wait_until_idle();
                    load.wrk_once(script, load.warmup)?;
                }
            }
            let (rounds, slice) = rounds(self.duration);
            let mut measured: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
            for _ in 0..rounds {
                for (i, (load, script)) in loads.iter().zip(&scripts).enumerate() {
                    wait_until_idle();
                    let sampler = RssSampler::start(load.pids.clone());
                    let round = load.wrk_once(script, slice);
                    let peak = sampler.stop();
                    let mut round = round?;
                    round.peak_rss_mib = peak;
                    measured[i].push(round);
                }
            }
            Ok((merge(&measured[0]), merge(&measured[1])))
        })();
        for script in &scripts {
            let _ = std::fs::remove_file(script);
        }
        result
    }

    fn wrk_once(&self, script: &Path, duration: Duration) -> Result<Measured> {
        let output = Command::new(self.wrk)
            .arg(format!("-t{}", self.threads.min(self.connections).max(1)))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", duration.as_secs().max(1)))
            .arg("--timeout=10s")
            .arg("--latency")
            .arg("-s")
            .arg(script)
            .arg(&self.url)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .context("running wrk")?;
        let text = String::from_utf8_lossy(&output.stdout);
        parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
    }

    fn lua(&self) -> String {
        let mut lua = String::new();
        lua.push_str(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
        );
        if let [token] = self.tokens.as_slice() {
            let _ = writeln!(lua, "wrk.headers[\"Authorization\"] = \"Bearer {token}\"");
        }
        lua.push_str("local tokens = {\n");
        for token in self.tokens.iter().filter(|_| self.tokens.len() > 1) {
            let _ = writeln!(lua, "  {},", lua_string(&format!("Bearer {token}")));
        }
        lua.push_str("}\n");
        lua.push_str(
            r#"
local threads = {}
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end
function done(summary, latency, requests)
  local total = 0
  local kinds = {}
  for _, t in ipairs(threads) do
    total = total + (t:get("errors") or 0)
    for kind, count in string.gmatch(t:get("kinds_text") or "", "([%w_]+)=(%d+)") do
      kinds[kind] = (kinds[kind] or 0) + tonumber(count)
    end
  end
  io.write(string.format("graphql_errors %d\n", total))
  for kind, count in pairs(kinds) do io.write(string.format("error_kind %s %d\n", kind, count)) end
end
errors = 0
kinds = {}
-- The counts as text too (`KIND=n;…`): wrk hands strings between threads more simply than tables.
kinds_text = ""
function failed(status, body)
  errors = errors + 1
  local kind = body:match('"code":"([A-Z_]+)"') or ("HTTP_" .. status)
  -- A full hashing queue and the account throttle share a code; their messages differ.
  if kind == "RATE_LIMITED" and body:find("busy", 1, true) then kind = "RATE_LIMITED_busy" end
  kinds[kind] = (kinds[kind] or 0) + 1
  local parts = {}
  for k, n in pairs(kinds) do table.insert(parts, k .. "=" .. n) end
  kinds_text = table.concat(parts, ";")
end
"#,
        );
        match &self.bodies {
            Bodies::Pick(bodies) => {
                lua.push_str("local bodies = {\n");
                for body in bodies {
                    let _ = writeln!(lua, "  {},", lua_string(body));
                }
                lua.push_str(
                    r#"}
-- Every request is formatted once, up front, so the load generator spends its share of the
-- cores sending rather than building requests.
local requests = {}
function init(args)
  math.randomseed(id * 7919 + os.time())
  for _, body in ipairs(bodies) do
    if #tokens == 0 then
      table.insert(requests, wrk.format(nil, nil, nil, body))
    end
    for _, token in ipairs(tokens) do
      local headers = { ["Content-Type"] = "application/json", ["Authorization"] = token }
      table.insert(requests, wrk.format(nil, nil, headers, body))
    end
  end
end
function request() return requests[math.random(#requests)] end
function response(status, headers, body)
  if status ~= 200 or body:find('"errors"', 1, true) then failed(status, body) end
end
"#,
                );
            }
            Bodies::Refresh(tokens) => {
                lua.push_str("local all_tokens = {\n");
                for token in tokens {
                    let _ = writeln!(lua, "  {},", lua_string(token));
                }
                let _ = writeln!(
                    lua,
                    "}}\nlocal thread_count = {}",
                    self.threads.min(self.connections).max(1)
                );
                lua.push_str(
                    r#"local queue = {}
function init(args)
  for i = 1, #all_tokens do
    if (i - 1) % thread_count == id then table.insert(queue, all_tokens[i]) end
  end
end
local template = '{"query":"mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken } }","variables":{"t":"%s"}}'
function request()
  local token = table.remove(queue, 1) or "exhausted"
  return wrk.format(nil, nil, nil, string.format(template, token))
end
function response(status, headers, body)
  local token = body:match('"refreshToken":"([^"]+)"')
  if status ~= 200 or not token then failed(status, body) else table.insert(queue, token) end
end
"#,
                );
            }
        }
        lua
    }
}

fn lua_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn parse_wrk(text: &str) -> Option<Measured> {
    let mut m = Measured::default();
    let mut socket_errors = 0;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => m.requests_per_sec = value.parse().ok()?,
            ["50%", value] => m.p50_ms = duration_ms(value)?,
            ["99%", value] => m.p99_ms = duration_ms(value)?,
            [count, "requests", "in", ..] => m.requests = count.parse().ok()?,
            ["graphql_errors", count] => m.errors += count.parse::<u64>().ok()?,
            ["error_kind", kind, count] => {
                *m.error_kinds.entry((*kind).to_owned()).or_default() +=
                    count.parse::<u64>().ok()?;
            }
            ["Socket", "errors:", rest @ ..] => {
                for pair in rest.chunks(2) {
                    if let [kind, count] = pair {
                        let count = count.trim_end_matches(',').parse::<u64>().unwrap_or(0);
                        socket_errors += count;
                        if count > 0 {
                            *m.error_kinds.entry(format!("socket_{kind}")).or_default() += count;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    m.errors += socket_errors;
    (m.requests_per_sec > 0.0 || m.requests == 0).then_some(m)
}

/// wrk prints `812.00us`, `1.23ms`, `2.01s`.
fn duration_ms(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// How a measurement of `duration` is split into alternating rounds: up to five, none
/// shorter than two seconds unless the whole measurement is.
pub fn rounds(duration: Duration) -> (u64, Duration) {
    let seconds = duration.as_secs().max(1);
    let rounds = (seconds / 2).clamp(1, 5);
    (rounds, Duration::from_secs(seconds / rounds))
}

/// One result from equally long rounds (as in [`Load::run_alternating`]).
pub fn merge(rounds: &[Measured]) -> Measured {
    let n = rounds.len().max(1) as f64;
    Measured {
        requests_per_sec: rounds.iter().map(|r| r.requests_per_sec).sum::<f64>() / n,
        p50_ms: rounds.iter().map(|r| r.p50_ms).sum::<f64>() / n,
        p99_ms: rounds.iter().map(|r| r.p99_ms).fold(0.0, f64::max),
        requests: rounds.iter().map(|r| r.requests).sum(),
        errors: rounds.iter().map(|r| r.errors).sum(),
        error_kinds: rounds.iter().flat_map(|r| &r.error_kinds).fold(
            BTreeMap::new(),
            |mut all, (kind, count)| {
                *all.entry(kind.clone()).or_default() += count;
                all
            },
        ),
        peak_rss_mib: rounds.iter().map(|r| r.peak_rss_mib).fold(0.0, f64::max),
    }
}

/// Waits (at most a minute) until the machine's CPUs are nearly idle.
pub fn wait_until_idle() {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut quiet = 0;
    let mut last = cpu_times();
    while quiet < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = cpu_times();
        let (busy, total) = (now.0.saturating_sub(last.0), now.1.saturating_sub(last.1));
        quiet = if total > 0 && busy * 10 < total {
            quiet + 1
        } else {
            0
        };
        last = now;
    }
}

/// (busy, total) jiffies of all CPUs, from /proc/stat.
fn cpu_times() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Resident set size of a process and its children (PostGraphile's cluster workers), MiB.
pub fn rss_mib(pids: &[u32]) -> f64 {
    let mut all: Vec<u32> = pids.to_vec();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                // Field 4, after the parenthesised command name, is the parent pid.
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                if ppid.is_some_and(|p| pids.contains(&p)) && !all.contains(&pid) {
                    all.push(pid);
                }
            }
        }
    }
    let kib: u64 = all
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum();
    kib as f64 / 1024.0
}

struct RssSampler {
    stop: Arc<AtomicBool>,
    peak_kib: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pids: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kib = Arc::new(AtomicU64::new(0));
        let thread = (!pids.is_empty()).then(|| {
            let (stop, peak) = (stop.clone(), peak_kib.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let kib = (rss_mib(&pids) * 1024.0) as u64;
                    peak.fetch_max(kib, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        });
        Self {
            stop,
            peak_kib,
            thread,
        }
    }

    fn stop(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 2s test @ http://127.0.0.1:1/graphql
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.10ms    1.20ms  20.00ms   80.00%
  Latency Distribution
     50%  812.00us
     75%    3.00ms
     90%    4.00ms
     99%    1.50s
  20000 requests in 2.00s, 5.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  10000.50
graphql_errors 3
error_kind RATE_LIMITED 2
error_kind HTTP_503 1
";
        let m = parse_wrk(text).expect("parsed");
        assert_eq!(m.requests, 20000);
        assert!((m.requests_per_sec - 10000.5).abs() < 1e-9);
        assert!((m.p50_ms - 0.812).abs() < 1e-9);
        assert!((m.p99_ms - 1500.0).abs() < 1e-9);
        assert_eq!(m.errors, 6);
        let kinds: Vec<(&str, u64)> = m
            .error_kinds
            .iter()
            .map(|(k, n)| (k.as_str(), *n))
            .collect();
        assert_eq!(
            kinds,
            [
                ("HTTP_503", 1),
                ("RATE_LIMITED", 2),
                ("socket_read", 2),
                ("socket_timeout", 1)
            ]
        );
    }
}
