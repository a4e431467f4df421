//! `ax-bench growth`: 10,000 small executions through `ax serve`, with
//! `ax workflow prune` run from a second process every batch; the database's
//! size on disk is recorded after every batch. A second run without pruning is
//! the baseline.

use crate::serve::Server;
use crate::util::{self, Args, db_bytes, machine, machine_md, mib, write_results};
use crate::workflows;
use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

struct Point {
    executions: usize,
    db: u64,
    wal: u64,
    rows: i64,
    prune_ms: Option<f64>,
    after_prune: Option<(u64, u64)>,
}

struct Run {
    points: Vec<Point>,
    wall_s: f64,
    prune_failures: Vec<String>,
    completed: i64,
    failed_or_other: i64,
}

fn run(
    ax: &std::path::Path,
    dir: &std::path::Path,
    total: usize,
    batch: usize,
    rate: f64,
    prune: Option<&str>,
) -> Result<Run> {
    let agents = "[defaults]\nprovider = \"echo\"\n\n[providers.echo]\nkind = \"echo\"\n";
    let mut server = Server::new(ax, dir, agents)?;
    server.start()?;
    let r = server.post(
        "/api/workflows",
        &json!({"source": workflows::code_review()}),
    )?;
    let wf = r.json()?["id"].as_str().unwrap_or_default().to_owned();
    let t = Instant::now();
    let mut points = Vec::new();
    let mut prune_failures = Vec::new();
    let mut completed_total = 0i64;
    let mut other_total = 0i64;
    let mut done = 0;
    let concurrency = 32;
    while done < total {
        let n = batch.min(total - done);
        // Submit the batch, at most `concurrency` running at once.
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            // A steady stream: execution k starts at k / rate seconds.
            let due = t + Duration::from_secs_f64((done + i) as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if i % concurrency == concurrency - 1 {
                while server
                    .get("/api/executions?state=running&limit=1000")?
                    .json()?
                    .as_array()
                    .map(Vec::len)
                    .unwrap_or(0)
                    >= concurrency
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let body =
                json!({"workflowId": wf, "inputs": {"git_diff": workflows::review_diff(done + i)}});
            let r = server.post("/api/executions", &body)?;
            if r.status != 201 {
                bail!("starting an execution: HTTP {}: {}", r.status, r.body);
            }
            ids.push(r.json()?["id"].as_str().unwrap_or_default().to_owned());
        }
        // Wait for the batch to finish.
        let deadline = Instant::now() + Duration::from_secs(120);
        for id in &ids {
            loop {
                let v = server.get(&format!("/api/executions/{id}"))?.json()?;
                match v["state"].as_str() {
                    Some("completed") => {
                        completed_total += 1;
                        break;
                    }
                    Some("failed" | "cancelled" | "interrupted" | "paused") => {
                        other_total += 1;
                        break;
                    }
                    _ if Instant::now() > deadline => {
                        bail!("execution {id} did not finish within 120 s: {v}")
                    }
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
        done += n;
        let (db, wal) = db_bytes(server.db());
        let rows: i64 = {
            let c = rusqlite::Connection::open_with_flags(
                server.db(),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            c.query_row("SELECT COUNT(*) FROM workflow_executions", [], |r| r.get(0))?
        };
        let mut p = Point {
            executions: done,
            db,
            wal,
            rows,
            prune_ms: None,
            after_prune: None,
        };
        if let Some(age) = prune {
            let pt = Instant::now();
            let out = server
                .ax_cmd(&[
                    "workflow",
                    "prune",
                    "--keep",
                    "1",
                    "--older-than",
                    age,
                    "--delete-finished",
                    "--format",
                    "json",
                ])
                .output()?;
            p.prune_ms = Some(pt.elapsed().as_secs_f64() * 1000.0);
            if !out.status.success() {
                prune_failures.push(format!(
                    "after {done} executions: {} {}",
                    out.status,
                    util::clip(&String::from_utf8_lossy(&out.stderr), 300)
                ));
            }
            p.after_prune = Some(db_bytes(server.db()));
        }
        eprintln!(
            "  {done} executions: db {} + wal {}{}",
            mib(db),
            mib(wal),
            p.after_prune
                .map(|(d, w)| format!(", after prune {} + {}", mib(d), mib(w)))
                .unwrap_or_default()
        );
        points.push(p);
    }
    let wall_s = t.elapsed().as_secs_f64();
    server.interrupt()?;
    Ok(Run {
        points,
        wall_s,
        prune_failures,
        completed: completed_total,
        failed_or_other: other_total,
    })
}

fn point_json(p: &Point) -> Value {
    json!({
        "executions": p.executions, "dbBytes": p.db, "walBytes": p.wal, "executionRows": p.rows,
        "pruneMs": p.prune_ms,
        "afterPrune": p.after_prune.map(|(d, w)| json!({"dbBytes": d, "walBytes": w})),
    })
}

pub fn main(args: &Args) -> Result<()> {
    let quick = args.flag("quick");
    let total: usize = args.num("executions", if quick { 1000 } else { 10_000 })?;
    let batch: usize = args.num("batch", if quick { 200 } else { 500 })?;
    let age = args
        .get("older-than")
        .unwrap_or(if quick { "3s" } else { "20s" })
        .to_owned();
    let rate: f64 = args.num("rate", if quick { 100.0 } else { 50.0 })?;
    let baseline = !args.flag("no-baseline") && args.get("baseline") != Some("no");
    let out = util::out_dir(args)?;
    let ax = util::ax_binary(args)?;
    let m = machine();
    eprintln!("growth: {total} executions, prune every {batch} (--older-than {age})");
    let pruned = run(
        &ax,
        &util::work_dir(&out, "growth")?,
        total,
        batch,
        rate,
        Some(&age),
    )?;
    let base = if baseline {
        eprintln!("growth baseline: {total} executions, no pruning");
        Some(run(
            &ax,
            &util::work_dir(&out, "growth-baseline")?,
            total,
            batch,
            rate,
            None,
        )?)
    } else {
        None
    };
    // Bounded: the database file's largest size in the second half is at most
    // 1.25 × its largest in the first half (linear growth would double it). The
    // WAL is reported beside it: the server truncates it past 64 MiB.
    let half = pruned.points.len() / 2;
    let max_db = |ps: &[Point]| ps.iter().map(|p| p.db).max().unwrap_or(0);
    let max_wal = |ps: &[Point]| ps.iter().map(|p| p.wal).max().unwrap_or(0);
    let first = max_db(&pruned.points[..half.max(1)]);
    let second = max_db(&pruned.points[half..]);
    let bounded = second as f64 <= first as f64 * 1.25;
    let pass = bounded
        && pruned.prune_failures.is_empty()
        && pruned.failed_or_other == 0
        && pruned.completed == total as i64;
    let mut md = String::new();
    let _ = writeln!(md, "### Database growth with pruning\n");
    let _ = writeln!(md, "{}\n", machine_md(&m));
    let _ = writeln!(
        md,
        "Command: `cargo xtask growth{}`. {total} executions of code-review (4 steps, instant echo provider, each with its own diff) through `POST /api/executions` to `ax serve` (release), a steady {rate:.0} a second (at most 32 running at once), in batches of {batch}; after each batch `ax workflow prune --keep 1 --older-than {age} --delete-finished` runs as a second process against the live database. Sizes are of the SQLite file and of its WAL, just before each prune and just after it{}.\n",
        if quick { " --quick" } else { "" },
        if baseline {
            "; the baseline is the same run without pruning"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "| executions | pruned: database file | WAL | after the prune: file + WAL | executions kept | prune took |{}",
        if baseline {
            " no pruning: database file | WAL | executions kept |"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "|---:|---:|---:|---:|---:|---:|{}",
        if baseline { "---:|---:|---:|" } else { "" }
    );
    let step = (pruned.points.len() / 10).max(1);
    for (i, p) in pruned.points.iter().enumerate() {
        if i % step != step - 1 && i != 0 && i + 1 != pruned.points.len() {
            continue;
        }
        let b = base.as_ref().and_then(|b| b.points.get(i));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.0} ms |{}",
            p.executions,
            mib(p.db),
            mib(p.wal),
            p.after_prune.map(|(d, w)| mib(d + w)).unwrap_or_default(),
            p.rows,
            p.prune_ms.unwrap_or(0.0),
            b.map(|b| format!(" {} | {} | {} |", mib(b.db), mib(b.wal), b.rows))
                .unwrap_or_default()
        );
    }
    let last = pruned.points.last().map(|p| p.db).unwrap_or(0);
    let _ = writeln!(
        md,
        "\nDatabase file: largest {} in the first half, {} in the second (bounded, at most 1.25×: **{}**); {} at the end{}. WAL: at most {}{}. Executions: {} completed, {} not; prune failures: {}. Wall time {:.0} s{}. Verdict: **{}**.",
        mib(first),
        mib(second),
        if bounded { "yes" } else { "no" },
        mib(last),
        base.as_ref()
            .and_then(|b| b.points.last())
            .map(|b| format!(", against {} without pruning", mib(b.db)))
            .unwrap_or_default(),
        mib(max_wal(&pruned.points)),
        base.as_ref()
            .map(|b| format!(" ({} without pruning)", mib(max_wal(&b.points))))
            .unwrap_or_default(),
        pruned.completed,
        pruned.failed_or_other,
        if pruned.prune_failures.is_empty() {
            "none".to_owned()
        } else {
            pruned.prune_failures.join("; ")
        },
        pruned.wall_s,
        base.as_ref()
            .map(|b| format!(" ({:.0} s without pruning)", b.wall_s))
            .unwrap_or_default(),
        if pass { "pass" } else { "FAIL" }
    );
    let json = json!({
        "machine": m, "quick": quick, "executions": total, "batch": batch, "olderThan": age, "ratePerS": rate,
        "pruned": {"points": pruned.points.iter().map(point_json).collect::<Vec<_>>(), "wallS": pruned.wall_s,
                   "pruneFailures": pruned.prune_failures, "completed": pruned.completed},
        "baseline": base.as_ref().map(|b| json!({"points": b.points.iter().map(point_json).collect::<Vec<_>>(), "wallS": b.wall_s})),
        "firstHalfMaxBytes": first, "secondHalfMaxBytes": second, "bounded": bounded, "pass": pass,
    });
    write_results(&out, "growth", &md, &json)?;
    println!("{md}");
    if !args.flag("keep") {
        let _ = std::fs::remove_dir_all(out.join("work/growth"));
        let _ = std::fs::remove_dir_all(out.join("work/growth-baseline"));
    }
    if !pass {
        bail!(
            "growth: the database did not stay bounded, or runs or prunes failed (see growth.md)"
        );
    }
    Ok(())
}
