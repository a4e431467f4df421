//! `ax-bench core-report`: turn criterion's recorded estimates of the core
//! benchmarks (`cargo bench -p ax-core --bench core`) into the tables of
//! BENCHMARKS.md (`target/bench/core.md`, `core.json`), with the targets.

use crate::util::{self, Args};
use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Every `…/new/benchmark.json` + `estimates.json` under target/criterion:
/// full id → (median ns, mean ns, throughput bytes).
fn read_criterion(dir: &Path, out: &mut BTreeMap<String, (f64, f64, Option<u64>)>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "new") {
                let bench: Value =
                    serde_json::from_str(&std::fs::read_to_string(p.join("benchmark.json"))?)?;
                let est: Value =
                    serde_json::from_str(&std::fs::read_to_string(p.join("estimates.json"))?)?;
                let id = bench["full_id"].as_str().unwrap_or("").to_owned();
                let median = est["median"]["point_estimate"].as_f64().unwrap_or(f64::NAN);
                let mean = est["mean"]["point_estimate"].as_f64().unwrap_or(f64::NAN);
                let bytes = bench["throughput"]["Bytes"].as_u64();
                out.insert(id, (median, mean, bytes));
            } else {
                read_criterion(&p, out)?;
            }
        }
    }
    Ok(())
}

fn fmt_time(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else {
        format!("{:.2} ms", ns / 1_000_000.0)
    }
}

pub fn main(args: &Args) -> Result<()> {
    let out = util::out_dir(args)?;
    let criterion = util::repo_root().join("target").join("criterion");
    let mut est = BTreeMap::new();
    read_criterion(&criterion, &mut est)
        .with_context(|| format!("reading {}", criterion.display()))?;
    if est.is_empty() {
        bail!(
            "no criterion results in {}: run `cargo bench -p ax-core --bench core` first",
            criterion.display()
        );
    }
    let machine = util::machine();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### The core: parse + validate + plan, executor, checkpoints\n"
    );
    let _ = writeln!(md, "{}\n", util::machine_md(&machine));
    let _ = writeln!(
        md,
        "Command: `cargo xtask bench-core` (criterion: `cargo bench -p ax-core --bench core`, 20–30 samples each; the median is shown).\n"
    );
    let _ = writeln!(
        md,
        "#### parse + validate + plan (text in, a report and a runnable plan out)\n"
    );
    let _ = writeln!(
        md,
        "| steps | YAML chain | YAML wide | JSON chain | JSON wide | YAML size |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for n in [10u64, 100, 1_000, 10_000] {
        let get = |fmt: &str, shape: &str| {
            est.get(&format!("parse+validate+plan/{fmt}/{shape}/{n}"))
                .copied()
        };
        let cell = |v: Option<(f64, f64, Option<u64>)>| {
            v.map_or("–".to_owned(), |(m, _, _)| fmt_time(m))
        };
        let size = get("yaml", "chain")
            .and_then(|v| v.2)
            .map_or("–".to_owned(), util::kib);
        let _ = writeln!(
            md,
            "| {n} | {} | {} | {} | {} | {size} |",
            cell(get("yaml", "chain")),
            cell(get("yaml", "wide")),
            cell(get("json", "chain")),
            cell(get("json", "wide"))
        );
        rows.push(json!({
            "steps": n,
            "yaml_chain_ns": get("yaml", "chain").map(|v| v.0),
            "yaml_wide_ns": get("yaml", "wide").map(|v| v.0),
            "json_chain_ns": get("json", "chain").map(|v| v.0),
            "json_wide_ns": get("json", "wide").map(|v| v.0),
        }));
    }
    let target = |id: &str, limit_ns: f64| -> String {
        match est.get(id) {
            Some((m, _, _)) if *m <= limit_ns => format!("{} ✓", fmt_time(*m)),
            Some((m, _, _)) => format!("{} ✗", fmt_time(*m)),
            None => "–".to_owned(),
        }
    };
    let _ = writeln!(
        md,
        "\nTargets (issue 2): 10 steps under 50 µs (YAML chain: {}); 10,000 steps under 40 ms in YAML (chain: {}, wide: {}) and 5 ms in JSON (chain: {}, wide: {}).\n",
        target("parse+validate+plan/yaml/chain/10", 50_000.0),
        target("parse+validate+plan/yaml/chain/10000", 40_000_000.0),
        target("parse+validate+plan/yaml/wide/10000", 40_000_000.0),
        target("parse+validate+plan/json/chain/10000", 5_000_000.0),
        target("parse+validate+plan/json/wide/10000", 5_000_000.0)
    );
    // What validation and planning add to reading the text at all.
    for shape in ["chain", "wide"] {
        let m = |id: String| est.get(&id).map(|v| v.0);
        if let (Some(serde), Some(parse), Some(full)) = (
            m(format!("baseline/serde_json/json/{shape}/10000")),
            m(format!("baseline/parse/json/{shape}/10000")),
            m(format!("parse+validate+plan/json/{shape}/10000")),
        ) {
            let _ = writeln!(
                md,
                "Against reading alone (JSON, 10,000 steps, {shape}): serde_json straight into the model types (no positions, no checks) {}; the core's spanned parse alone {}; parse + validate + plan {} = {:.2}× serde_json's read, {:.2}× the core's own parse.\n",
                fmt_time(serde),
                fmt_time(parse),
                fmt_time(full),
                full / serde,
                full / parse
            );
        }
    }
    let _ = writeln!(md, "#### Executor and checkpoints\n");
    let _ = writeln!(md, "| benchmark | median | per step |");
    let _ = writeln!(md, "|---|---:|---:|");
    for (id, label, steps) in [
        (
            "executor/run/chain/100",
            "a 100-step chain run to completion in virtual time",
            100.0,
        ),
        ("executor/run/chain/1000", "a 1,000-step chain", 1000.0),
        ("executor/run/wide/1000", "a 1 → 999 fan", 1000.0),
        ("executor/transition", "one checked state transition", 1.0),
        (
            "checkpoint/write/100",
            "checkpoint of a 100-step run, full snapshot → JSON",
            1.0,
        ),
        (
            "checkpoint/restore/100",
            "checkpoint JSON → identical execution (100 steps)",
            1.0,
        ),
        (
            "checkpoint/delta/100",
            "checkpoint delta → JSON (what the server journals)",
            1.0,
        ),
    ] {
        if let Some((m, _, _)) = est.get(id) {
            let per = if steps > 1.0 {
                fmt_time(m / steps)
            } else {
                "".to_owned()
            };
            let _ = writeln!(md, "| {label} | {} | {per} |", fmt_time(*m));
        }
    }
    let _ = writeln!(
        md,
        "\nTarget (issue 2): a checkpoint under 1 ms each way (write: {}; restore: {}).",
        target("checkpoint/write/100", 1_000_000.0),
        target("checkpoint/restore/100", 1_000_000.0)
    );
    std::fs::write(out.join("core.md"), &md)?;
    let all: BTreeMap<&String, f64> = est.iter().map(|(k, v)| (k, v.0)).collect();
    std::fs::write(
        out.join("core.json"),
        serde_json::to_string_pretty(
            &json!({"quick": false, "machine": machine, "parse_validate_plan": rows, "median_ns": all}),
        )?,
    )?;
    print!("{md}");
    Ok(())
}
