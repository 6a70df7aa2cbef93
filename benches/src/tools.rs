//! The external programs the benchmark drives, installed on first use.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// wrk, from Debian's packages: the load generator for every HTTP scenario.
pub fn wrk() -> Result<PathBuf> {
    if let Some(path) = which("wrk") {
        return Ok(path);
    }
    eprintln!("installing wrk (apt-get install wrk)…");
    let mut status = Command::new("apt-get")
        .args(["install", "-y", "-q", "wrk"])
        .status();
    if !status.as_ref().is_ok_and(|s| s.success()) {
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        status = Command::new("apt-get")
            .args(["install", "-y", "-q", "wrk"])
            .status();
    }
    if !status.is_ok_and(|s| s.success()) {
        bail!("wrk is needed: install it with `apt-get install wrk`");
    }
    which("wrk").context("wrk not on PATH after installing it")
}

/// pgbench, shipped with PostgreSQL's client tools.
pub fn pgbench() -> Option<PathBuf> {
    which("pgbench").or_else(|| {
        let dir = Path::new("/usr/lib/postgresql");
        let mut versions: Vec<_> = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .collect();
        versions.sort();
        versions
            .into_iter()
            .rev()
            .map(|v| v.join("bin/pgbench"))
            .find(|p| p.exists())
    })
}

/// PostGraphile 4 from npm, installed into `dir` (v5 needs a newer Node than Debian's).
pub fn postgraphile(dir: &Path) -> Result<PathBuf> {
    let bin = dir.join("node_modules/.bin/postgraphile");
    if bin.exists() {
        return Ok(bin);
    }
    std::fs::create_dir_all(dir)?;
    eprintln!("installing postgraphile@4 with npm into {}…", dir.display());
    let status = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "postgraphile@4",
        ])
        .current_dir(dir)
        .status()
        .context("running npm")?;
    if !status.success() || !bin.exists() {
        bail!("npm install postgraphile@4 failed");
    }
    Ok(bin)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}
