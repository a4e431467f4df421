//! `ax-bench soak`: kill -9 `ax serve` at random moments while many executions
//! run, restart it, resume everything, and check the database afterwards.
//! With `--fault-rate F`, the fake LLM also answers 429s, 500s, too slowly and
//! with reset connections; with `--no-kill`, nothing is killed (the fault run).
//!
//! What is checked (each a count that must be 0, or a state that must hold):
//! - lost results: an execution the API acknowledged (201) that is missing or
//!   does not end completed (with faults: completed or failed with a reason);
//! - re-executed completed steps: a provider call for a step made after that
//!   step's completed attempt was recorded (from the fake LLM's own call log),
//!   and steps with more than one completed non-superseded attempt row;
//! - completed steps without their output, outputs that are not the answer to
//!   the recorded prompt, prompts that quote something other than the stored
//!   result of their dependency;
//! - hangs: executions not finished within the deadline;
//! - `PRAGMA integrity_check` = ok.

use crate::fakellm::{self, FakeLlm};
use crate::serve::Server;
use crate::util::{self, Args, Rng, machine, machine_md, percentile, write_results};
use crate::workflows;
use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Params {
    name: String,
    executions: usize,
    concurrency: usize,
    kills: usize,
    kill_delay_ms: (u64, u64),
    fault_rate: f64,
    steps: usize,
    latency_ms: (u64, u64),
    deadline: Duration,
    seed: u64,
}

#[derive(Default)]
struct Stats {
    kills: usize,
    kills_during_request: usize,
    active_at_kill: Vec<f64>,
    restart_ms: Vec<f64>,
    resumed: usize,
    resume_errors: BTreeMap<String, usize>,
    submit_failed: usize,
    /// Requests that failed while the server was up (not because of a kill).
    api_errors: Vec<String>,
    acked: BTreeMap<String, String>,
    attempted: BTreeSet<String>,
}

fn marker(i: usize) -> String {
    format!("R{i:05}")
}

pub fn main(args: &Args) -> Result<()> {
    let quick = args.flag("quick");
    let fault_rate: f64 = args.num("fault-rate", 0.0)?;
    let no_kill = args.flag("no-kill");
    let kills = if no_kill {
        0
    } else {
        args.num("kills", if quick { 15 } else { 300 })?
    };
    let p = Params {
        name: args
            .get("name")
            .map(str::to_owned)
            .unwrap_or_else(|| if no_kill { "faults" } else { "soak" }.into()),
        executions: args.num(
            "executions",
            if quick {
                40
            } else if kills == 0 {
                1000
            } else {
                kills * 6
            },
        )?,
        concurrency: args.num("concurrency", if quick { 16 } else { 64 })?,
        kills,
        kill_delay_ms: (
            args.num("min-delay-ms", 50)?,
            args.num("max-delay-ms", 2500)?,
        ),
        fault_rate,
        steps: args.num("steps", 24)?,
        latency_ms: (
            args.num("min-latency-ms", 50)?,
            args.num("max-latency-ms", 400)?,
        ),
        deadline: Duration::from_secs(args.num("deadline-s", 180)?),
        seed: args.num("seed", 0x5eed_u64)?,
    };
    let out = util::out_dir(args)?;
    let ax = util::ax_binary(args)?;
    let dir = util::work_dir(&out, &p.name)?;
    let m = machine();
    let started = Instant::now();

    let fake = FakeLlm::start(fakellm::Plan {
        fault_rate: p.fault_rate,
        latency_ms: p.latency_ms,
        slow_ms: 4000,
        retry_after_s: 1,
        seed: p.seed ^ 0xfa_u64,
    })?;
    let agents = format!(
        "[defaults]\nprovider = \"fake\"\n\n[providers.fake]\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\nmodel = \"fake-1\"\ntimeout_ms = 10000\n",
        fake.addr
    );
    let mut server = Server::new(&ax, &dir, &agents)?;
    server.start()?;
    let yaml = workflows::soak(p.steps, Some(1500), Some((4, 100)));
    let r = server.post(
        "/api/workflows",
        &json!({"source": yaml, "filename": "soak.yaml"}),
    )?;
    if r.status != 201 {
        bail!("creating the workflow: HTTP {}: {}", r.status, r.body);
    }
    let wf = r.json()?["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no workflow id"))?
        .to_owned();

    let mut stats = Stats::default();
    let mut rng = Rng::new(p.seed);
    let mut next = 0usize;
    eprintln!(
        "{}: {} executions of a {}-step workflow, ≤{} at once, {} kills, fault rate {}",
        p.name, p.executions, p.steps, p.concurrency, p.kills, p.fault_rate
    );
    for k in 0..p.kills {
        // Spread the executions over the kills, as many at once as allowed.
        let quota = (p.executions * (k + 1)).div_ceil(p.kills.max(1));
        let delay = Duration::from_millis(rng.range(p.kill_delay_ms.0, p.kill_delay_ms.1 + 1));
        let pid = server.pid().ok_or_else(|| anyhow!("no server"))?;
        let dead = Arc::new(AtomicBool::new(false));
        let in_request = Arc::new(AtomicBool::new(false));
        let killer = {
            let (dead, in_request) = (dead.clone(), in_request.clone());
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let during = in_request.load(Ordering::SeqCst);
                // SAFETY: SIGKILL to our own child, which is not reaped before
                // this thread is joined.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
                dead.store(true, Ordering::SeqCst);
                during
            })
        };
        let mut active = 0;
        while !dead.load(Ordering::SeqCst) {
            match work(&server, &p, &wf, &mut next, quota, &mut stats, &in_request) {
                Ok(n) => active = n,
                Err(e) => {
                    // Expected when the kill landed; an error while the server
                    // is still up is a finding.
                    std::thread::sleep(Duration::from_millis(100));
                    if !dead.load(Ordering::SeqCst) && server_alive(&server) {
                        stats.api_errors.push(format!("{e:#}"));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if killer.join().unwrap_or(false) {
            stats.kills_during_request += 1;
        }
        server.kill9(); // reap
        stats.kills += 1;
        stats.active_at_kill.push(active as f64);
        let t = server.start()?;
        stats.restart_ms.push(t.as_secs_f64() * 1000.0);
        if (k + 1) % 25 == 0 || k + 1 == p.kills {
            eprintln!(
                "  {} kills, {} executions submitted, {} active at the last kill, {:.0} s",
                k + 1,
                next,
                active,
                started.elapsed().as_secs_f64()
            );
        }
    }
    // Final phase: no more kills. Submit what is left, resume what was
    // interrupted, and wait for every execution to finish.
    let final_start = Instant::now();
    let never = AtomicBool::new(false);
    let mut last_report = Instant::now();
    let hung: Vec<Value> = loop {
        if let Err(e) = work(
            &server,
            &p,
            &wf,
            &mut next,
            p.executions,
            &mut stats,
            &never,
        ) {
            stats.api_errors.push(format!("{e:#}"));
        }
        let unfinished = unfinished(&server)?;
        if next >= p.executions && unfinished.is_empty() {
            break Vec::new();
        }
        // Each execution gets the deadline from its creation or from the last
        // restart, whichever is later.
        let since = util::now_ms() - final_start.elapsed().as_millis() as u64;
        let overdue: Vec<Value> = unfinished
            .iter()
            .filter(|e| {
                let from = e["createdAt"].as_u64().unwrap_or(0).max(since);
                util::now_ms().saturating_sub(from) > p.deadline.as_millis() as u64
            })
            .cloned()
            .collect();
        if !overdue.is_empty() {
            break overdue;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  waiting: {} submitted, {} unfinished",
                next,
                unfinished.len()
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let drain_s = final_start.elapsed().as_secs_f64();
    server.interrupt()?;
    let calls = fake.calls();
    drop(fake);
    let mut report = check(&server, &p, &stats, &calls, &hung)?;
    if !stats.api_errors.is_empty() {
        report["pass"] = json!(false);
    }
    let total_s = started.elapsed().as_secs_f64();
    let md = render(&p, &stats, &report, &m, args, total_s, drain_s);
    let json = json!({
        "machine": m,
        "quick": args.flag("quick"),
        "params": {
            "executions": p.executions, "concurrency": p.concurrency, "kills": p.kills,
            "killDelayMs": [p.kill_delay_ms.0, p.kill_delay_ms.1], "faultRate": p.fault_rate,
            "steps": p.steps, "latencyMs": [p.latency_ms.0, p.latency_ms.1],
            "deadlineS": p.deadline.as_secs(), "seed": p.seed,
        },
        "kills": stats.kills,
        "killsDuringRequest": stats.kills_during_request,
        "activeAtKill": {"median": percentile(&stats.active_at_kill, 50.0), "max": percentile(&stats.active_at_kill, 100.0)},
        "restartMs": {"median": percentile(&stats.restart_ms, 50.0), "p99": percentile(&stats.restart_ms, 99.0)},
        "resumed": stats.resumed,
        "resumeErrors": stats.resume_errors,
        "submitFailed": stats.submit_failed,
        "apiErrors": stats.api_errors,
        "totalS": total_s,
        "report": report,
    });
    write_results(&out, &p.name, &md, &json)?;
    println!("{md}");
    if !args.flag("keep") {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if report["pass"] != true {
        bail!(
            "{}: invariants violated (see {}/{}.md)",
            p.name,
            out.display(),
            p.name
        );
    }
    Ok(())
}

/// One round of the driver: resume interrupted executions, submit new ones up
/// to `quota` (at most `concurrency` running). Returns the number running.
fn work(
    server: &Server,
    p: &Params,
    wf: &str,
    next: &mut usize,
    quota: usize,
    stats: &mut Stats,
    in_request: &AtomicBool,
) -> Result<usize> {
    let req = |f: &dyn Fn() -> Result<util::Response>| {
        in_request.store(true, Ordering::SeqCst);
        let r = f();
        in_request.store(false, Ordering::SeqCst);
        r
    };
    let list = req(&|| server.get("/api/executions?state=interrupted&limit=1000"))?.json()?;
    for e in list.as_array().into_iter().flatten() {
        let Some(id) = e["id"].as_str() else { continue };
        let path = format!("/api/executions/{id}/resume");
        let r = req(&|| server.post(&path, &json!({})))?;
        if r.status == 202 {
            stats.resumed += 1;
        } else {
            let code = r
                .json()
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            *stats
                .resume_errors
                .entry(format!("{} {code}", r.status))
                .or_default() += 1;
        }
    }
    let running = req(&|| server.get("/api/executions?state=running&limit=1000"))?
        .json()?
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    let mut active = running;
    while *next < quota.min(p.executions) && active < p.concurrency {
        let mk = marker(*next);
        stats.attempted.insert(mk.clone());
        *next += 1;
        let body = json!({"workflowId": wf, "inputs": {"run": mk}});
        match req(&|| server.post("/api/executions", &body)) {
            Ok(r) if r.status == 201 => {
                let id = r.json()?["id"].as_str().unwrap_or_default().to_owned();
                stats.acked.insert(mk, id);
                active += 1;
            }
            Ok(r) => bail!("starting {mk}: HTTP {}: {}", r.status, r.body),
            Err(e) => {
                stats.submit_failed += 1;
                return Err(e);
            }
        }
    }
    Ok(active)
}

fn server_alive(server: &Server) -> bool {
    server.get("/healthz").is_ok_and(|r| r.status == 200)
}

/// Executions that are not finished (every state but completed, failed, cancelled).
fn unfinished(server: &Server) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for s in ["idle", "validating", "running", "paused", "interrupted"] {
        let v = server
            .get(&format!("/api/executions?state={s}&limit=1000"))?
            .json()?;
        out.extend(v.as_array().cloned().unwrap_or_default());
    }
    Ok(out)
}

fn check(
    server: &Server,
    p: &Params,
    stats: &Stats,
    calls: &[fakellm::Call],
    hung: &[Value],
) -> Result<Value> {
    let db = rusqlite::Connection::open_with_flags(
        server.db(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .context("opening the database for the checks")?;
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    // Executions by marker.
    let mut execs: HashMap<String, (String, String, Option<String>)> = HashMap::new();
    {
        let mut st = db.prepare("SELECT id, state, reason, inputs FROM workflow_executions")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        for row in rows {
            let (id, state, reason, inputs) = row?;
            let mk = serde_json::from_str::<Value>(&inputs)
                .ok()
                .and_then(|v| v["run"].as_str().map(str::to_owned))
                .unwrap_or_default();
            execs.insert(mk, (id, state, reason));
        }
    }
    let by_id: HashMap<&str, &str> = execs
        .iter()
        .map(|(mk, (id, _, _))| (id.as_str(), mk.as_str()))
        .collect();
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for (_, s, _) in execs.values() {
        *states.entry(s.clone()).or_default() += 1;
    }
    // Lost results: acknowledged executions that are missing or did not end well.
    let ok_end = |s: &str| s == "completed" || (p.fault_rate > 0.0 && s == "failed");
    let mut lost = Vec::new();
    for (mk, id) in &stats.acked {
        match execs.get(mk) {
            None => lost.push(format!("{mk} ({id}): missing from the database")),
            Some((eid, s, reason)) if !ok_end(s) => lost.push(format!(
                "{mk} ({eid}): {s} ({})",
                reason.as_deref().unwrap_or("no reason")
            )),
            _ => {}
        }
    }
    let unacked_created = execs
        .keys()
        .filter(|mk| !stats.acked.contains_key(*mk))
        .count();
    let failed_without_reason = execs
        .values()
        .filter(|(_, s, r)| s == "failed" && r.as_deref().is_none_or(|r| r.trim().is_empty()))
        .count();
    // Duplicated completions in the attempt rows.
    let dup_rows: i64 = db.query_row(
        "SELECT COUNT(*) FROM (SELECT 1 FROM workflow_step_executions WHERE state = 'completed' AND superseded = 0
          GROUP BY execution_id, step_key HAVING COUNT(*) > 1)",
        [],
        |r| r.get(0),
    )?;
    let missing_outputs: i64 = db.query_row(
        "SELECT COUNT(*) FROM execution_steps s LEFT JOIN step_outputs o ON o.hash = s.output_hash
          WHERE s.state = 'completed' AND o.hash IS NULL",
        [],
        |r| r.get(0),
    )?;
    let incomplete_completed: i64 = db.query_row(
        "SELECT COUNT(*) FROM execution_steps s JOIN workflow_executions e ON e.id = s.execution_id
          WHERE e.state = 'completed' AND s.state <> 'completed'",
        [],
        |r| r.get(0),
    )?;
    let stale_attempts: i64 = db.query_row(
        "SELECT COUNT(*) FROM workflow_step_executions a JOIN workflow_executions e ON e.id = a.execution_id
          WHERE a.state = 'running' AND e.state IN ('completed', 'failed', 'cancelled')",
        [],
        |r| r.get(0),
    )?;
    let attempt_rows: i64 =
        db.query_row("SELECT COUNT(*) FROM workflow_step_executions", [], |r| {
            r.get(0)
        })?;
    // Outputs against prompts, and prompts against their dependency's result.
    let mut outputs: HashMap<(String, String), (String, u64, String, String)> = HashMap::new();
    {
        let mut st = db.prepare(
            "SELECT a.execution_id, a.step_key, a.prompt, o.text, COALESCE(a.finished_at, 0), COALESCE(s.output_hash, ''), a.output_hash
               FROM workflow_step_executions a
               JOIN step_outputs o ON o.hash = a.output_hash
               JOIN execution_steps s ON s.execution_id = a.execution_id AND s.step_key = a.step_key
              WHERE a.state = 'completed' AND a.superseded = 0",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        for row in rows {
            let (eid, key, prompt, text, fin, cur_hash, hash) = row?;
            outputs.insert(
                (eid, key),
                (prompt, fin.max(0) as u64, text, {
                    if cur_hash == hash {
                        String::new()
                    } else {
                        format!(
                            "the step's output {cur_hash} is not its completed attempt's {hash}"
                        )
                    }
                }),
            );
        }
    }
    let mut wrong_outputs = Vec::new();
    for ((eid, key), (prompt, _, text, mismatch)) in &outputs {
        if !mismatch.is_empty() {
            wrong_outputs.push(format!("{eid} {key}: {mismatch}"));
        }
        if *text != workflows::fake_answer(prompt) {
            wrong_outputs.push(format!(
                "{eid} {key}: output {:?} is not the answer to its prompt {:?}",
                util::clip(text, 80),
                util::clip(prompt, 80)
            ));
        }
        // "after <result of c(i-3)>" on the second line.
        let i: usize = key.trim_start_matches('c').parse().unwrap_or(0);
        if i >= 3 {
            let dep = format!("c{}", i - 3);
            let quoted = prompt.lines().nth(1).and_then(|l| l.strip_prefix("after "));
            let stored = outputs
                .get(&(eid.clone(), dep.clone()))
                .map(|o| o.2.as_str());
            if quoted != stored {
                wrong_outputs.push(format!(
                    "{eid} {key}: quotes {quoted:?} but {dep}'s stored result is {stored:?}"
                ));
            }
        }
    }
    // Re-executed completed steps, from the fake LLM's own log.
    let finished_at: HashMap<(String, String), u64> = outputs
        .iter()
        .filter_map(|((eid, key), (_, fin, _, _))| {
            by_id
                .get(eid.as_str())
                .map(|mk| ((mk.to_string(), key.clone()), *fin))
        })
        .collect();
    let mut reexecuted = Vec::new();
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for c in calls {
        *outcomes.entry(c.outcome.name()).or_default() += 1;
        let mut parts = c.head.split_whitespace();
        let (Some(mk), Some(key)) = (parts.next(), parts.next()) else {
            continue;
        };
        if let Some(fin) = finished_at.get(&(mk.to_owned(), key.to_owned()))
            && c.at > *fin
        {
            reexecuted.push(format!(
                "{mk} {key}: called at {} after completing at {fin}",
                c.at
            ));
        }
    }
    // Why steps failed (with faults): per error class, a count and an example
    // of the execution's reason.
    let mut failure_classes: BTreeMap<String, (usize, String)> = BTreeMap::new();
    {
        let mut st = db.prepare(
            "SELECT COALESCE(s.error_class, '(none)'), COALESCE(e.reason, '') FROM execution_steps s
               JOIN workflow_executions e ON e.id = s.execution_id
              WHERE s.state = 'failed'",
        )?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (class, reason) = row?;
            let e = failure_classes.entry(class).or_default();
            e.0 += 1;
            if e.1.is_empty() {
                e.1 = util::clip(&reason, 200);
            }
        }
    }
    let failure_classes: BTreeMap<String, Value> = failure_classes
        .into_iter()
        .map(|(k, (n, ex))| (k, json!({"steps": n, "example": ex})))
        .collect();
    let durations: Vec<f64> = {
        let mut st = db.prepare(
            "SELECT finished_at - created_at FROM workflow_executions WHERE finished_at IS NOT NULL",
        )?;
        st.query_map([], |r| r.get::<_, i64>(0))?
            .filter_map(|d| d.ok())
            .map(|d| d as f64)
            .collect()
    };
    let hung_desc: Vec<String> = hung
        .iter()
        .map(|h| {
            format!(
                "{} {} ({}/{} steps completed)",
                h["id"].as_str().unwrap_or("?"),
                h["state"].as_str().unwrap_or("?"),
                h["progress"]["completed"],
                h["progress"]["total"]
            )
        })
        .collect();
    let lost_n = lost.len();
    let pass = integrity == "ok"
        && lost.is_empty()
        && hung.is_empty()
        && dup_rows == 0
        && reexecuted.is_empty()
        && missing_outputs == 0
        && wrong_outputs.is_empty()
        && incomplete_completed == 0
        && failed_without_reason == 0;
    Ok(json!({
        "pass": pass,
        "integrityCheck": integrity,
        "executionsInDb": execs.len(),
        "acknowledged": stats.acked.len(),
        "createdWithoutAcknowledgement": unacked_created,
        "attemptedSubmissions": stats.attempted.len(),
        "states": states,
        "lostResults": lost_n,
        "lost": lost.iter().take(20).collect::<Vec<_>>(),
        "hung": hung_desc,
        "duplicateCompletedAttemptRows": dup_rows,
        "reexecutedCompletedSteps": reexecuted.len(),
        "reexecuted": reexecuted.iter().take(20).collect::<Vec<_>>(),
        "completedStepsWithoutOutput": missing_outputs,
        "wrongOutputs": wrong_outputs.len(),
        "wrong": wrong_outputs.iter().take(20).collect::<Vec<_>>(),
        "completedExecutionsWithUnfinishedSteps": incomplete_completed,
        "failedWithoutReason": failed_without_reason,
        "staleRunningAttemptRows": stale_attempts,
        "attemptRows": attempt_rows,
        "providerCalls": calls.len(),
        "providerOutcomes": outcomes,
        "failedStepClasses": failure_classes,
        "executionMs": {
            "p50": percentile(&durations, 50.0),
            "p99": percentile(&durations, 99.0),
            "max": percentile(&durations, 100.0),
        },
    }))
}

fn render(
    p: &Params,
    stats: &Stats,
    r: &Value,
    m: &Value,
    args: &Args,
    total_s: f64,
    drain_s: f64,
) -> String {
    let mut s = String::new();
    let title = if p.kills == 0 {
        format!(
            "Provider faults at a {:.0} % rate, no crashes",
            p.fault_rate * 100.0
        )
    } else if p.fault_rate > 0.0 {
        format!(
            "Crash soak with provider faults at a {:.0} % rate",
            p.fault_rate * 100.0
        )
    } else {
        "Crash soak: kill -9 under `ax serve`".to_owned()
    };
    let _ = writeln!(s, "### {title}\n");
    let _ = writeln!(s, "{}\n", machine_md(m));
    let mut cmd = String::from("ax-bench soak");
    for k in [
        "name",
        "kills",
        "executions",
        "concurrency",
        "fault-rate",
        "steps",
        "seed",
    ] {
        if let Some(v) = args.get(k) {
            let _ = write!(cmd, " --{k} {v}");
        }
    }
    for f in ["quick", "no-kill"] {
        if args.flag(f) {
            let _ = write!(cmd, " --{f}");
        }
    }
    let _ = writeln!(
        s,
        "Command: `{cmd}` (run by `cargo xtask soak`), {total_s:.0} s in all. {} executions of a {}-step workflow (a lattice 3 wide; every step `timeoutMs: 1500`, `retryPolicy: {{maxRetries: 4, retryDelayMs: 100}}`), at most {} running at once, submitted through `POST /api/executions` to `ax serve` (release build) on a SQLite file; the fake OpenAI-compatible LLM lives in the driver process (answers after {}–{} ms){}.\n",
        p.executions,
        p.steps,
        p.concurrency,
        p.latency_ms.0,
        p.latency_ms.1,
        if p.fault_rate > 0.0 {
            format!(
                "; {:.0} % of calls fail, evenly split: 429 with `retry-after: 1`, 500, an answer after 4 s (past the 1.5 s step limit), a TCP reset",
                p.fault_rate * 100.0
            )
        } else {
            String::new()
        }
    );
    if p.kills > 0 {
        let _ = writeln!(
            s,
            "The server is killed with SIGKILL {} times, each {}–{} ms (uniform) after it last came up, from a timer thread, so a kill can land anywhere: inside a request ({} did), a commit, a provider call. After each kill the server is restarted and every `interrupted` execution is resumed with `POST /api/executions/{{id}}/resume`. After the last kill, the driver waits for everything to finish.\n",
            stats.kills, p.kill_delay_ms.0, p.kill_delay_ms.1, stats.kills_during_request
        );
    }
    let _ = writeln!(s, "| measure | result |\n|---|---:|");
    let row = |s: &mut String, k: &str, v: String| {
        let _ = writeln!(s, "| {k} | {v} |");
    };
    if p.kills > 0 {
        row(&mut s, "kill -9s", stats.kills.to_string());
        row(
            &mut s,
            "executions running at a kill (median / max)",
            format!(
                "{:.0} / {:.0}",
                percentile(&stats.active_at_kill, 50.0),
                percentile(&stats.active_at_kill, 100.0)
            ),
        );
        row(
            &mut s,
            "restart to healthy (median / p99)",
            format!(
                "{:.0} ms / {:.0} ms",
                percentile(&stats.restart_ms, 50.0),
                percentile(&stats.restart_ms, 99.0)
            ),
        );
        row(&mut s, "resumes (`202`)", stats.resumed.to_string());
        row(
            &mut s,
            "resumes refused",
            if stats.resume_errors.is_empty() {
                "0".into()
            } else {
                format!("{:?}", stats.resume_errors)
            },
        );
    }
    row(
        &mut s,
        "executions acknowledged (`201`) / in the database",
        format!("{} / {}", r["acknowledged"], r["executionsInDb"]),
    );
    if p.kills > 0 {
        row(
            &mut s,
            "submissions cut off by a kill (no answer) / of those, created anyway (they ran too)",
            format!(
                "{} / {}",
                stats.submit_failed, r["createdWithoutAcknowledgement"]
            ),
        );
    }
    row(
        &mut s,
        "API errors while the server was up (must be 0)",
        if stats.api_errors.is_empty() {
            "0".to_owned()
        } else {
            format!(
                "{}: {}",
                stats.api_errors.len(),
                util::clip(&stats.api_errors[0], 200)
            )
        },
    );
    row(
        &mut s,
        "final states",
        r["states"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
    );
    row(
        &mut s,
        "**lost results** (must be 0)",
        r["lostResults"].to_string(),
    );
    row(
        &mut s,
        "**re-executed completed steps** (provider calls after the step's completion was recorded; must be 0)",
        r["reexecutedCompletedSteps"].to_string(),
    );
    row(
        &mut s,
        "steps with two completed attempt rows (must be 0)",
        r["duplicateCompletedAttemptRows"].to_string(),
    );
    row(
        &mut s,
        "completed steps without output / outputs not matching their prompt or dependency (must be 0)",
        format!(
            "{} / {}",
            r["completedStepsWithoutOutput"], r["wrongOutputs"]
        ),
    );
    row(
        &mut s,
        &format!(
            "**hung executions** (not finished {} s after their creation or the last restart; must be 0)",
            p.deadline.as_secs()
        ),
        r["hung"].as_array().map(Vec::len).unwrap_or(0).to_string(),
    );
    row(
        &mut s,
        "failed executions without a reason (must be 0)",
        r["failedWithoutReason"].to_string(),
    );
    row(
        &mut s,
        "`PRAGMA integrity_check`",
        r["integrityCheck"].as_str().unwrap_or("?").to_owned(),
    );
    row(
        &mut s,
        "attempt rows left `running` in finished executions",
        r["staleRunningAttemptRows"].to_string(),
    );
    row(
        &mut s,
        "provider calls (by outcome)",
        format!(
            "{} ({})",
            r["providerCalls"],
            r["providerOutcomes"]
                .as_object()
                .map(|o| o
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
    );
    if p.fault_rate > 0.0 {
        row(
            &mut s,
            "failed steps by error class (with an example of the execution's reason)",
            r["failedStepClasses"]
                .as_object()
                .filter(|o| !o.is_empty())
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            format!(
                                "{k}: {} (“{}”)",
                                v["steps"],
                                v["example"].as_str().unwrap_or("")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_else(|| "none".into()),
        );
    }
    row(
        &mut s,
        "execution time, created → finished (p50 / p99 / max)",
        format!(
            "{:.1} s / {:.1} s / {:.1} s",
            r["executionMs"]["p50"].as_f64().unwrap_or(0.0) / 1000.0,
            r["executionMs"]["p99"].as_f64().unwrap_or(0.0) / 1000.0,
            r["executionMs"]["max"].as_f64().unwrap_or(0.0) / 1000.0
        ),
    );
    row(
        &mut s,
        if p.kills > 0 {
            "time to finish everything after the last restart"
        } else {
            "time to run everything"
        },
        format!("{drain_s:.1} s"),
    );
    let _ = writeln!(
        s,
        "\nVerdict: **{}**.",
        if r["pass"] == true { "pass" } else { "FAIL" }
    );
    for (k, label) in [
        ("lost", "lost"),
        ("hung", "hung"),
        ("reexecuted", "re-executed"),
        ("wrong", "wrong outputs"),
    ] {
        if let Some(a) = r[k].as_array().filter(|a| !a.is_empty()) {
            let _ = writeln!(s, "\n{label} (first {}):\n", a.len().min(20));
            for x in a.iter().take(20) {
                let _ = writeln!(s, "- {}", x.as_str().unwrap_or(""));
            }
        }
    }
    s
}
