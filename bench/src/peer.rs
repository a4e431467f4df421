//! `ax-bench peer`: the same workflows in ax and in LangGraph, in one run,
//! alternating, several repetitions; medians and ratios into
//! `target/bench/peer.md` and `peer.json`.
//!
//! Each measurement is a fresh process (so that peak RSS is that run's) on a
//! fresh SQLite file under `target/bench/work/peer`: `ax-bench ax-run …` for ax,
//! `python bench/peer/peer_bench.py …` for LangGraph.

use crate::util::{self, Args, machine, machine_md, median, mib, write_results};
use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

/// One way of running a case.
#[derive(Clone)]
struct Variant {
    /// Short label for the tables.
    label: &'static str,
    engine: &'static str,
    /// `full`/`normal` for ax; `sync`/`async` (LangGraph's durability) for the peer.
    durability: &'static str,
}

const AX_FULL: Variant = Variant {
    label: "ax, AX_SYNC=full",
    engine: "ax",
    durability: "full",
};
const AX_NORMAL: Variant = Variant {
    label: "ax, default (NORMAL)",
    engine: "ax",
    durability: "normal",
};
const LG_SYNC: Variant = Variant {
    label: "LangGraph, durability=\"sync\"",
    engine: "langgraph",
    durability: "sync",
};
const LG_ASYNC: Variant = Variant {
    label: "LangGraph, default (durability=\"async\")",
    engine: "langgraph",
    durability: "async",
};

struct Case {
    id: &'static str,
    title: String,
    scenario: &'static str,
    executions: usize,
    /// ax: `seq` or `concurrent`; LangGraph: `seq` (SqliteSaver, invoke in a
    /// loop) or `async` (AsyncSqliteSaver, ainvoke under asyncio.gather).
    concurrent: bool,
    /// Every mock step is on the critical path: overhead = (wall − slept) ÷ steps.
    sequential_steps: bool,
    reps: usize,
}

struct Ctx {
    exe: PathBuf,
    python: PathBuf,
    script: PathBuf,
    work: PathBuf,
}

fn run_one(ctx: &Ctx, case: &Case, v: &Variant, rep: usize) -> Result<Value> {
    let dir = ctx
        .work
        .join(format!("{}-{}-{}-{rep}", case.id, v.engine, v.durability));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let mut cmd;
    if v.engine == "ax" {
        cmd = Command::new(&ctx.exe);
        cmd.arg("ax-run")
            .args(["--scenario", case.scenario])
            .args(["--sync", v.durability])
            .args(["--executions", &case.executions.to_string()])
            .args(["--mode", if case.concurrent { "concurrent" } else { "seq" }])
            .arg("--dir")
            .arg(&dir);
    } else {
        cmd = Command::new(&ctx.python);
        cmd.arg(&ctx.script)
            .args(["--scenario", case.scenario])
            .args(["--durability", v.durability])
            .args(["--executions", &case.executions.to_string()])
            .args(["--mode", if case.concurrent { "async" } else { "seq" }])
            .arg("--dir")
            .arg(&dir);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            v.label,
            case.id,
            out.status,
            util::clip(&String::from_utf8_lossy(&out.stderr), 2000)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    let v: Value = serde_json::from_str(line)
        .with_context(|| format!("{} {}: no JSON result in {stdout}", v.label, case.id))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(v)
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

fn med(runs: &[Value], k: &str) -> f64 {
    median(&runs.iter().map(|r| f(r, k)).collect::<Vec<_>>())
}

/// Median per-step overhead in ms.
fn overhead_ms(case: &Case, runs: &[Value]) -> f64 {
    median(
        &runs
            .iter()
            .map(|r| {
                let slept = if case.sequential_steps {
                    f(r, "sleptS")
                } else {
                    0.0
                };
                (f(r, "wallS") - slept) * 1000.0 / f(r, "steps").max(1.0)
            })
            .collect::<Vec<_>>(),
    )
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

/// Re-render `peer.md` from a `peer.json` that a run wrote (no measuring).
fn render_from(args: &Args, path: &std::path::Path) -> Result<()> {
    let out = util::out_dir(args)?;
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    )?;
    let variants = [AX_FULL, LG_SYNC, AX_NORMAL, LG_ASYNC];
    let mut cases = Vec::new();
    let mut results = Vec::new();
    for c in v["cases"].as_array().into_iter().flatten() {
        let id = c["id"].as_str().unwrap_or_default();
        let Some(known) = CASE_IDS.iter().find(|k| **k == id) else {
            continue;
        };
        let executions = c["executions"].as_u64().unwrap_or(1) as usize;
        let mut case = case_for(known, executions, 0);
        case.title = c["title"].as_str().unwrap_or_default().to_owned();
        let per: Vec<Vec<Value>> = variants
            .iter()
            .map(|var| {
                c["variants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|x| x["label"] == var.label)
                    .and_then(|x| x["runs"].as_array().cloned())
                    .unwrap_or_default()
            })
            .collect();
        results.push((id.to_owned(), per));
        cases.push(case);
    }
    let cmdline = v["command"]
        .as_str()
        .unwrap_or("cargo xtask bench-peer")
        .to_owned();
    let md = render(
        &cases,
        &variants,
        &results,
        &v["machine"],
        &v["peer"],
        &cmdline,
    );
    let md_path = out.join("peer.md");
    std::fs::write(&md_path, &md)?;
    eprintln!("wrote {}", md_path.display());
    println!("{md}");
    Ok(())
}

const CASE_IDS: [&str; 5] = [
    "chain40",
    "chain1000",
    "fan100",
    "review-seq",
    "review-concurrent",
];

/// The case `id`, with `executions` code-review executions and `reps` repetitions.
fn case_for(id: &'static str, executions: usize, reps: usize) -> Case {
    let (title, scenario, concurrent, sequential_steps) = match id {
        "chain40" => (
            "40-step chain, 10 ms mock LLM steps".to_owned(),
            "chain40",
            false,
            true,
        ),
        "chain1000" => (
            "1,000-step chain, instant steps".to_owned(),
            "chain1000",
            false,
            true,
        ),
        "fan100" => (
            "1 → 100 → 1 fan, instant steps".to_owned(),
            "fan100",
            false,
            false,
        ),
        "review-seq" => (
            format!("code-review × {executions} executions, one after another, instant steps"),
            "review",
            false,
            false,
        ),
        _ => (
            format!(
                "code-review × {executions} executions, all at once, instant steps (ax: engine tasks; LangGraph: AsyncSqliteSaver + asyncio.gather)"
            ),
            "review",
            true,
            false,
        ),
    };
    Case {
        id,
        title,
        scenario,
        executions: if scenario == "review" { executions } else { 1 },
        concurrent,
        sequential_steps,
        reps,
    }
}

pub fn main(args: &Args) -> Result<()> {
    if let Some(p) = args.get("render-from") {
        return render_from(args, std::path::Path::new(p));
    }
    let out = util::out_dir(args)?;
    let quick = args.flag("quick");
    let reps_override: Option<usize> = args.get("reps").map(str::parse).transpose()?;
    let only = args.get("only").map(str::to_owned);
    let python = args.path("python", "python3");
    let script = args.path("script", util::repo_root().join("bench/peer/peer_bench.py"));
    let ctx = Ctx {
        exe: std::env::current_exe()?,
        python: python.clone(),
        script: script.clone(),
        work: util::work_dir(&out, "peer")?,
    };
    let review_n = if quick { 100 } else { 1000 };
    let reps = |full: usize| reps_override.unwrap_or(if quick { 1 } else { full });
    let cases: Vec<Case> = CASE_IDS
        .iter()
        .map(|id| {
            let full = match *id {
                "chain40" | "fan100" => 7,
                _ => 5,
            };
            case_for(id, review_n, reps(full))
        })
        .collect();
    let versions: Value = {
        let o = Command::new(&python)
            .arg(&script)
            .arg("--versions")
            .output()
            .with_context(|| format!("cannot run {}", python.display()))?;
        serde_json::from_slice(&o.stdout).with_context(|| {
            format!(
                "{} {} --versions: {}",
                python.display(),
                script.display(),
                String::from_utf8_lossy(&o.stderr)
            )
        })?
    };
    let m = machine();
    let variants = [AX_FULL, LG_SYNC, AX_NORMAL, LG_ASYNC];
    let mut results: Vec<(String, Vec<Vec<Value>>)> = Vec::new();
    for case in &cases {
        if only.as_ref().is_some_and(|o| !case.id.contains(o.as_str())) {
            continue;
        }
        let mut per_variant: Vec<Vec<Value>> = vec![Vec::new(); variants.len()];
        for rep in 0..case.reps {
            // Alternate engines, and reverse the order every other repetition.
            let mut order: Vec<usize> = (0..variants.len()).collect();
            if rep % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let v = &variants[i];
                let r = run_one(&ctx, case, v, rep)?;
                eprintln!(
                    "{} rep {}: {}: {} (peak RSS {} MiB)",
                    case.id,
                    rep + 1,
                    v.label,
                    secs(f(&r, "wallS")),
                    f(&r, "peakRssKiB") as u64 / 1024
                );
                per_variant[i].push(r);
            }
        }
        results.push((case.id.to_owned(), per_variant));
    }
    let mut cmdline = String::from("cargo xtask bench-peer");
    for k in ["reps", "only"] {
        if let Some(v) = args.get(k) {
            let _ = write!(cmdline, " --{k} {v}");
        }
    }
    if quick {
        cmdline.push_str(" --quick");
    }
    let md = render(&cases, &variants, &results, &m, &versions, &cmdline);
    let json = json!({
        "command": cmdline,
        "machine": m,
        "quick": args.flag("quick"),
        "peer": versions,
        "cases": results.iter().map(|(id, per)| {
            let case = cases.iter().find(|c| c.id == id).expect("case");
            json!({
                "id": id,
                "title": case.title,
                "executions": case.executions,
                "variants": variants.iter().zip(per).map(|(v, runs)| json!({
                    "label": v.label,
                    "engine": v.engine,
                    "durability": runs.first().map(|r| r["durability"].clone()).unwrap_or(Value::Null),
                    "medianWallS": med(runs, "wallS"),
                    "medianOverheadMsPerStep": overhead_ms(case, runs),
                    "runs": runs,
                })).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
    });
    write_results(&out, "peer", &md, &json)?;
    println!("{md}");
    Ok(())
}

fn render(
    cases: &[Case],
    variants: &[Variant],
    results: &[(String, Vec<Vec<Value>>)],
    m: &Value,
    versions: &Value,
    cmdline: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### ax and LangGraph, side by side\n");
    let _ = writeln!(s, "{}\n", machine_md(m));
    let _ = writeln!(
        s,
        "Peer: langgraph {}, langgraph-checkpoint {}, langgraph-checkpoint-sqlite {} (SqliteSaver / AsyncSqliteSaver on a file), langchain-core {}, aiosqlite {}; Python {}, its SQLite {}.\n",
        versions["langgraph"].as_str().unwrap_or("?"),
        versions["langgraph-checkpoint"].as_str().unwrap_or("?"),
        versions["langgraph-checkpoint-sqlite"]
            .as_str()
            .unwrap_or("?"),
        versions["langchain-core"].as_str().unwrap_or("?"),
        versions["aiosqlite"].as_str().unwrap_or("?"),
        versions["python"].as_str().unwrap_or("?"),
        versions["sqlite"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        s,
        "Command: `{cmdline}`. Each cell is the median of the repetitions (each a fresh process on a fresh database; engines alternate, the order reversed every other repetition). \"Same guarantee\" compares ax with `AX_SYNC=full` against LangGraph with `durability=\"sync\"`: in both, every step's result is committed and fsynced (SQLite WAL, `synchronous=FULL`) before the next step starts. \"Defaults\" compares each as it ships: ax `synchronous=NORMAL` (a committed step survives a killed process, not a power cut) against LangGraph `durability=\"async\"` (the checkpoint is written while the next step runs, with SQLite's `synchronous=FULL`).\n"
    );
    for (id, per) in results {
        let Some(case) = cases.iter().find(|c| c.id == id) else {
            continue;
        };
        let _ = writeln!(s, "#### {}\n", case.title);
        let reps = per.first().map(Vec::len).unwrap_or(0);
        let overhead_head = if case.sequential_steps {
            "orchestration overhead / step"
        } else {
            "wall ÷ steps"
        };
        // With a latency, the mock's own (measured) sleeping is shown: it is
        // what the overhead column subtracts.
        let slept = case.sequential_steps && per.iter().flatten().any(|r| f(r, "sleptS") > 0.0);
        let _ = writeln!(
            s,
            "| engine, durability | wall (median of {reps}) | range |{} {overhead_head} | checkpoint rows written | checkpoint bytes kept | database on disk | peak RSS |",
            if slept {
                " mock LLM time (measured) |"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "|---|---:|---:|{}---:|---:|---:|---:|---:|",
            if slept { "---:|" } else { "" }
        );
        for (v, runs) in variants.iter().zip(per) {
            if runs.is_empty() {
                continue;
            }
            let walls: Vec<f64> = runs.iter().map(|r| f(r, "wallS")).collect();
            let lo = walls.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = walls.iter().copied().fold(0.0, f64::max);
            let rows = if v.engine == "ax" {
                format!("{:.0}", med(runs, "checkpointsWritten"))
            } else {
                format!(
                    "{:.0} + {:.0} writes",
                    med(runs, "checkpointsWritten"),
                    med(runs, "writesRows")
                )
            };
            let bytes = med(runs, "checkpointBytes")
                + if v.engine == "ax" {
                    0.0
                } else {
                    med(runs, "writesBytes")
                };
            let disk = med(runs, "dbBytes") + med(runs, "walBytes");
            let mock = if slept {
                format!(" {} |", secs(med(runs, "sleptS")))
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "| {} | {} | {}–{} |{mock} {:.3} ms | {} | {} | {} | {:.0} MiB |",
                v.label,
                secs(median(&walls)),
                secs(lo),
                secs(hi),
                overhead_ms(case, runs),
                rows,
                mib(bytes as u64),
                mib(disk as u64),
                med(runs, "peakRssKiB") / 1024.0
            );
        }
        let ratio = |a: usize, b: usize| -> String {
            let (x, y) = (&per[a], &per[b]);
            if x.is_empty() || y.is_empty() {
                return "–".into();
            }
            let wall = med(y, "wallS") / med(x, "wallS");
            let oh = overhead_ms(case, y) / overhead_ms(case, x);
            format!("{wall:.1}× the wall time, {oh:.1}× the overhead per step")
        };
        let _ = writeln!(
            s,
            "\nLangGraph ÷ ax — same guarantee: {}; defaults: {}.\n",
            ratio(0, 1),
            ratio(2, 3)
        );
        if slept {
            let _ = writeln!(
                s,
                "Overhead per step = (wall − the mock's measured sleeping) ÷ steps: ax's mock sleeps on tokio's millisecond timer, which rounds each 10 ms sleep up, LangGraph's on `time.sleep`, so the walls differ by that much before any orchestration. For scale only (other machines, not measured here): Windmill's published benchmark of this shape (40 steps of about 10 ms) reports Hatchet 1.2 s, Windmill 2.1 s, Temporal 3.0 s.\n"
            );
        }
    }
    let _ = writeln!(
        s,
        "Checkpoint rows: ax journals one row per commit (a delta of the changed steps; compacted into a full snapshot at the end of a run, so fewer rows are kept than written); LangGraph writes one `checkpoints` row per superstep and one `writes` row per node output and channel trigger. Bytes: ax `workflow_checkpoints.data` (outputs are stored once, by hash, in `step_outputs`); LangGraph `checkpoints.checkpoint + metadata` plus `writes.value`. Database on disk: the SQLite file plus its WAL at the end of the run. Peak RSS: VmHWM of the measuring process (ax: the Rust process with the engine; LangGraph: the Python interpreter)."
    );
    s
}
