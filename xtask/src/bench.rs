//! `cargo xtask bench-peer | soak | load | growth`: the long measurements behind
//! BENCHMARKS.md and RELIABILITY.md. Not part of `cargo xtask test` (minutes,
//! not seconds). Each builds `ax` and `ax-bench` in release, installs what it
//! needs (a LangGraph virtualenv, wrk), and runs `ax-bench`, which writes its
//! tables and JSON to `target/bench/`.

use std::path::PathBuf;

use crate::run::{Ctx, Result, python_venv};
use crate::say;

/// The peer's packages, pinned (transitive dependencies included).
const REQUIREMENTS: &str = "bench/peer/requirements.txt";

fn build(ctx: &Ctx) -> Result<PathBuf> {
    let mut cmd = ctx.cmd("cargo");
    cmd.args(["build", "--release", "-p", "ax-server", "-p", "ax-bench"]);
    cmd.run()?;
    Ok(ctx.target.join("release"))
}

fn ax_bench(ctx: &Ctx, release: &std::path::Path, args: &[&str], rest: &[String]) -> Result<()> {
    let mut cmd = ctx.cmd(release.join("ax-bench"));
    cmd.args(args)
        .args(rest)
        .arg("--ax")
        .arg(release.join("ax"))
        .arg("--out")
        .arg(ctx.target.join("bench"));
    cmd.run()
}

fn quick(rest: &[String]) -> bool {
    rest.iter().any(|a| a == "--quick")
}

/// Copy the tables of a full run into RELIABILITY.md (never a `--quick` run's).
fn publish(ctx: &Ctx, release: &std::path::Path, rest: &[String], names: &str) -> Result<()> {
    if quick(rest) {
        say!("--quick: RELIABILITY.md left as it is (only full runs are published)");
        return Ok(());
    }
    let mut cmd = ctx.cmd(release.join("ax-bench"));
    cmd.args(["publish", "--names", names])
        .arg("--out")
        .arg(ctx.target.join("bench"));
    cmd.run()
}

/// A throwaway virtualenv in target/bench/venv with the pinned LangGraph.
fn venv(ctx: &Ctx) -> Result<PathBuf> {
    let python = python_venv(ctx, &ctx.target.join("bench/venv"), REQUIREMENTS)?;
    Ok(python.join("python"))
}

pub fn bench_peer(ctx: &Ctx, rest: &[String]) -> Result<()> {
    let python = venv(ctx)?;
    let release = build(ctx)?;
    let mut cmd = ctx.cmd(release.join("ax-bench"));
    cmd.arg("peer")
        .args(rest)
        .arg("--python")
        .arg(&python)
        .arg("--script")
        .arg(ctx.root.join("bench/peer/peer_bench.py"))
        .arg("--out")
        .arg(ctx.target.join("bench"));
    cmd.run()?;
    say!(
        "tables: {} (JSON beside it)",
        ctx.target.join("bench/peer.md").display()
    );
    publish_to(ctx, &release, rest, "peer", "BENCHMARKS.md")
}

/// The core's criterion benchmarks and the engine's overhead benchmark, into
/// BENCHMARKS.md.
pub fn bench_core(ctx: &Ctx, rest: &[String]) -> Result<()> {
    let mut cmd = ctx.cmd("cargo");
    cmd.args(["bench", "-p", "ax-core", "--bench", "core"]);
    cmd.run()?;
    let mut cmd = ctx.cmd("cargo");
    cmd.args(["bench", "-p", "ax-server", "--bench", "engine", "--"])
        .args(rest)
        .arg("--out")
        .arg(ctx.target.join("bench"));
    cmd.run()?;
    let release = build(ctx)?;
    let mut cmd = ctx.cmd(release.join("ax-bench"));
    cmd.args(["core-report", "--out"])
        .arg(ctx.target.join("bench"));
    cmd.run()?;
    publish_to(ctx, &release, rest, "core,engine", "BENCHMARKS.md")
}

/// Copy full-run tables into a document between its `bench:NAME` markers.
fn publish_to(
    ctx: &Ctx,
    release: &std::path::Path,
    rest: &[String],
    names: &str,
    file: &str,
) -> Result<()> {
    if quick(rest) {
        say!("--quick: {file} left as it is (only full runs are published)");
        return Ok(());
    }
    let mut cmd = ctx.cmd(release.join("ax-bench"));
    cmd.args(["publish", "--names", names, "--file"])
        .arg(ctx.root.join(file))
        .arg("--out")
        .arg(ctx.target.join("bench"));
    cmd.run()
}

/// The crash soak, the crash soak with provider faults, and provider faults alone.
pub fn soak(ctx: &Ctx, rest: &[String]) -> Result<()> {
    let release = build(ctx)?;
    ax_bench(ctx, &release, &["soak", "--name", "soak"], rest)?;
    ax_bench(
        ctx,
        &release,
        &["soak", "--name", "soak-faults", "--fault-rate", "0.1"],
        rest,
    )?;
    ax_bench(
        ctx,
        &release,
        &[
            "soak",
            "--name",
            "faults",
            "--fault-rate",
            "0.2",
            "--no-kill",
        ],
        rest,
    )?;
    publish(ctx, &release, rest, "soak,soak-faults,faults")
}

pub fn load(ctx: &Ctx, rest: &[String]) -> Result<()> {
    ensure_wrk(ctx)?;
    let release = build(ctx)?;
    ax_bench(ctx, &release, &["load"], rest)?;
    publish(ctx, &release, rest, "load")
}

pub fn growth(ctx: &Ctx, rest: &[String]) -> Result<()> {
    let release = build(ctx)?;
    ax_bench(ctx, &release, &["growth"], rest)?;
    publish(ctx, &release, rest, "growth")
}

/// wrk from Debian's packages.
fn ensure_wrk(ctx: &Ctx) -> Result<()> {
    if ctx.which("wrk").is_some() {
        return Ok(());
    }
    say!("wrk not found: installing Debian's package");
    for args in [&["update"][..], &["install", "-y", "wrk"][..]] {
        if args[0] == "update" && ctx.apt_updated.get() {
            continue;
        }
        let mut cmd = ctx.root_cmd("env")?;
        cmd.args(["DEBIAN_FRONTEND=noninteractive", "apt-get"])
            .args(args);
        cmd.run()?;
        if args[0] == "update" {
            ctx.apt_updated.set(true);
        }
    }
    if ctx.which("wrk").is_none() {
        return Err("apt-get install wrk did not put wrk on PATH".into());
    }
    Ok(())
}

/// Throughput and dispatch latency of many concurrent runs on SQLite and on a
/// throwaway PostgreSQL cluster (as PostgreSQL ships: fsync on), into
/// BENCHMARKS.md. Options go to `ax-bench scale` (`--executions N`, …).
pub fn scale(ctx: &Ctx, rest: &[String], report: &mut crate::run::Report) -> Result<()> {
    crate::pg::ensure_installed(ctx, report)?;
    let release = build(ctx)?;
    let pg = crate::pg::running(ctx, crate::pg::Mode::Durable)?;
    let mut cmd = ctx.cmd(release.join("ax-bench"));
    cmd.args(["scale", "--pg", &pg.cluster.url()])
        .args(rest)
        .arg("--ax")
        .arg(release.join("ax"))
        .arg("--out")
        .arg(ctx.target.join("bench"));
    cmd.run()?;
    drop(pg);
    publish_to(ctx, &release, rest, "scale", "BENCHMARKS.md")
}
