//! `ax-bench cli`: `ax workflow run` of an N-step chain on the offline echo
//! provider, timed as a whole process (start to exit, as a user runs it), for
//! the `ax` binary and, with `--before PATH`, another build of it, alternating
//! in one run; medians into `target/bench/cli.md` and `cli.json`.
//!
//! `ax-bench cli [--quick] [--reps N] [--steps N] [--ax PATH] [--before PATH]`

use crate::util::{self, Args, machine, machine_md, median, write_results};
use crate::workflows;
use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Run {
    wall_s: f64,
    /// First step's start to last step's end, from the run's own records.
    span_s: f64,
    /// Lines of the progress display naming a completed step.
    shown: usize,
}

fn run_once(exe: &Path, dir: &Path, steps: usize) -> Result<Run> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let flow = dir.join("chain.yaml");
    std::fs::write(&flow, workflows::chain_plain(steps))?;
    let agents = dir.join("agents.toml");
    std::fs::write(
        &agents,
        "[defaults]\nprovider = \"echo\"\n\n[providers.echo]\nkind = \"echo\"\nlatency_ms = 0\n",
    )?;
    let db = dir.join("ax.db");
    let ax = |args: &[&str]| {
        let mut c = Command::new(exe);
        c.args(args)
            .arg("--db")
            .arg(&db)
            .arg("--agents")
            .arg(&agents);
        for k in [
            "ANTHROPIC_API_KEY",
            "OPENAI_API_KEY",
            "GEMINI_API_KEY",
            "AX_DB",
        ] {
            c.env_remove(k);
        }
        c
    };
    let flow_arg = flow.display().to_string();
    let started = Instant::now();
    let out = ax(&["workflow", "run", &flow_arg]).output()?;
    let wall_s = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} workflow run failed ({}): {}",
            exe.display(),
            out.status,
            util::clip(&String::from_utf8_lossy(&out.stderr), 2000)
        );
    }
    let shown = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with('✓'))
        .count();
    let id = stdout
        .lines()
        .rev()
        .find_map(|l| l.split_whitespace().next())
        .context("no summary line")?
        .to_owned();
    let status = ax(&["workflow", "status", &id, "--format", "json"]).output()?;
    let v: Value = serde_json::from_slice(&status.stdout).context("status is not JSON")?;
    let steps_v = v["steps"].as_array().cloned().unwrap_or_default();
    let first = steps_v.iter().filter_map(|s| s["startedAt"].as_u64()).min();
    let last = steps_v
        .iter()
        .filter_map(|s| s["finishedAt"].as_u64())
        .max();
    let span_s = match (first, last) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1000.0,
        _ => f64::NAN,
    };
    Ok(Run {
        wall_s,
        span_s,
        shown,
    })
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

pub fn main(args: &Args) -> Result<()> {
    let quick = args.flag("quick");
    let reps: usize = args.num("reps", if quick { 2 } else { 7 })?;
    let steps: usize = args.num("steps", 1000)?;
    let after = util::ax_binary(args)?;
    let mut binaries: Vec<(String, PathBuf)> = vec![("this build".into(), after)];
    if let Some(b) = args.get("before") {
        let p = PathBuf::from(b);
        if !p.is_file() {
            bail!("--before {b}: no such file");
        }
        binaries.insert(0, ("--before".into(), p));
    }
    let out = util::out_dir(args)?;
    let work = util::work_dir(&out, "cli")?;
    let m = machine();
    let mut results: Vec<Vec<Run>> = binaries.iter().map(|_| Vec::new()).collect();
    for rep in 0..reps {
        // Alternate, the order reversed every other repetition.
        let mut order: Vec<usize> = (0..binaries.len()).collect();
        if rep % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let r = run_once(&binaries[i].1, &work.join(format!("{i}-{rep}")), steps)?;
            eprintln!(
                "{} rep {rep}: {} (steps span {}, {} lines)",
                binaries[i].0,
                secs(r.wall_s),
                secs(r.span_s),
                r.shown
            );
            results[i].push(r);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let mut md = String::new();
    let _ = writeln!(md, "## The command line, as a whole process\n");
    let _ = writeln!(
        md,
        "{} Command: `cargo build --release -p ax-server && cargo run -p ax-bench -- cli --ax target/release/ax{}` \
         ({reps} repetitions, alternating). Each run: `ax workflow run chain.yaml --db FRESH.db --agents echo.toml`, \
         a {steps}-step chain of plain prompts on the offline echo provider (no latency), stdout to a pipe; \
         wall = process start to exit (opening the database, storing the workflow, the run, the progress lines, the summary); \
         steps span = first step's start to last step's end, from the run's records.\n",
        machine_md(&m),
        if binaries.len() > 1 {
            " --before OLD_AX"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "| binary | wall (median of {reps}) | range | steps span (median) | completed-step lines shown |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for ((label, path), runs) in binaries.iter().zip(&results) {
        let walls: Vec<f64> = runs.iter().map(|r| r.wall_s).collect();
        let spans: Vec<f64> = runs.iter().map(|r| r.span_s).collect();
        let (lo, hi) = walls
            .iter()
            .fold((f64::MAX, 0.0f64), |(a, b), &w| (a.min(w), b.max(w)));
        let shown = runs.iter().map(|r| r.shown).min().unwrap_or(0);
        let _ = writeln!(
            md,
            "| {label} | {} | {}–{} | {} | {shown} of {steps} |",
            secs(median(&walls)),
            secs(lo),
            secs(hi),
            secs(median(&spans))
        );
        rows.push(
            json!({"binary": label, "path": path.display().to_string(), "wallS": walls,
                         "spanS": spans, "medianWallS": median(&walls), "shown": shown}),
        );
    }
    let json = json!({"quick": quick, "machine": m, "steps": steps, "reps": reps, "rows": rows});
    write_results(&out, "cli", &md, &json)
}
