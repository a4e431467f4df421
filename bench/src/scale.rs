//! `ax-bench scale`: throughput and step dispatch latency of N concurrent
//! code-review executions (issue 13 §4), against a fake model with a fixed
//! latency, on SQLite with one `ax worker` and on PostgreSQL with 1, 2, 3.
//!
//! Each case gets a fresh database. The executions are created (queued)
//! through the store before any worker starts; then the workers start and the
//! clock runs until the last execution finishes (its `finished_at`). A step's
//! dispatch latency is the moment its model call reaches the fake model minus
//! the moment it became ready: its last dependency's finish, or its
//! execution's start for a first step (both as the database recorded them).
//! PostgreSQL's CPU is the utime+stime of the postmaster and its children
//! (plus what it reaped) from /proc, before and after.

use crate::fakellm::{self, Call, FakeLlm};
use crate::util::{self, Args, machine, machine_md, percentile, write_results};
use crate::workflows;
use anyhow::{Context as _, Result, anyhow, bail};
use ax_server::config::AgentsConfig;
use ax_server::engine::{Engine, Settings};
use ax_server::providers::Router;
use ax_server::store::{DbTarget, ExecutionFilter, Owner, Store};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Case {
    name: String,
    db: DbTarget,
    workers: usize,
    /// The postmaster, when the database is PostgreSQL.
    postmaster: Option<u32>,
}

pub fn main(args: &Args) -> Result<()> {
    let n: usize = args.num("executions", 1000)?;
    let latency: u64 = args.num("latency-ms", 100)?;
    let deadline = Duration::from_secs(args.num("deadline-s", 240)?);
    let workers: Vec<usize> = args
        .get("workers")
        .unwrap_or("1,2,3")
        .split(',')
        .map(|w| {
            w.trim()
                .parse()
                .map_err(|_| anyhow!("--workers: `{w}` is not a number (give e.g. 1,2,3)"))
        })
        .collect::<Result<_>>()?;
    let pg = args
        .get("pg")
        .map(str::to_owned)
        .or_else(|| std::env::var("AX_TEST_PG").ok());
    let out = util::out_dir(args)?;
    let ax = util::ax_binary(args)?;
    let dir = util::work_dir(&out, "scale")?;
    let m = machine();
    let fake = FakeLlm::start(fakellm::Plan {
        fault_rate: 0.0,
        latency_ms: (latency, latency),
        slow_ms: latency,
        retry_after_s: 1,
        seed: 1,
    })?;
    let agents = dir.join("agents.toml");
    std::fs::write(
        &agents,
        format!(
            "[defaults]\nprovider = \"fake\"\n\n[providers.fake]\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\nmodel = \"fake-1\"\ntimeout_ms = 30000\n",
            fake.addr
        ),
    )?;
    let rt = tokio::runtime::Runtime::new()?;
    let mut cases = vec![Case {
        name: "SQLite, 1 process".into(),
        db: DbTarget::Sqlite(dir.join("scale.db")),
        workers: 1,
        postmaster: None,
    }];
    if let Some(url) = &pg {
        let postmaster = rt.block_on(postmaster_pid(url))?;
        for (i, &w) in workers.iter().enumerate() {
            let db = rt.block_on(fresh_database(url, i))?;
            cases.push(Case {
                name: format!("PostgreSQL, {w} worker{}", if w == 1 { "" } else { "s" }),
                db: DbTarget::Postgres(db),
                workers: w,
                postmaster: Some(postmaster),
            });
        }
    } else {
        eprintln!(
            "scale: no --pg URL and no AX_TEST_PG: SQLite only (run it under `cargo xtask pg --` for PostgreSQL)"
        );
    }
    let mut rows = Vec::new();
    for case in &cases {
        eprintln!(
            "scale: {} — {n} executions, model latency {latency} ms",
            case.name
        );
        if let Ok(mut calls) = fake.calls.lock() {
            calls.clear();
        }
        let row = rt.block_on(run_case(case, &ax, &agents, &dir, n, deadline, &fake))?;
        eprintln!("  {row}");
        rows.push(row);
    }
    drop(fake);
    let md = render(&rows, &m, n, latency, &ax);
    let json = json!({"machine": m, "quick": n < 1000, "executions": n, "latencyMs": latency, "cases": rows});
    write_results(&out, "scale", &md, &json)?;
    println!("{md}");
    if !args.flag("keep") {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

async fn pg_client(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The postmaster's pid, from `postmaster.pid` in the server's data directory.
async fn postmaster_pid(url: &str) -> Result<u32> {
    let c = pg_client(url).await?;
    let row = c.query_one("SHOW data_directory", &[]).await?;
    let data: String = row.get(0);
    let file = Path::new(&data).join("postmaster.pid");
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "cannot read {} (PostgreSQL's CPU is read from /proc: run the server on this machine)",
            file.display()
        )
    })?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow!("{}: no pid on its first line", file.display()))
}

/// A new empty database on the server of `url`; its URL.
async fn fresh_database(url: &str, i: usize) -> Result<String> {
    let c = pg_client(url).await?;
    let name = format!("ax_scale_{}_{i}", std::process::id());
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await
        .with_context(|| format!("cannot drop database {name}"))?;
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("cannot create database {name}"))?;
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
    Ok(if query.is_empty() {
        format!("{prefix}/{name}")
    } else {
        format!("{prefix}/{name}?{query}")
    })
}

/// Create the workflow and `n` queued executions (no worker in this process).
async fn create(db: &DbTarget, agents: &Path, n: usize) -> Result<String> {
    let store = Store::open(db).await?;
    let router = Router::new(AgentsConfig::load(Some(agents))?, &|_| None)?;
    let engine = Engine::with_owner(store, router, Settings::default(), Owner::this_process());
    let wf = engine
        .create_workflow(workflows::code_review(), None)
        .await
        .map_err(|e| anyhow!("creating the workflow: {e}"))?;
    for i in 0..n {
        let inputs = BTreeMap::from([("git_diff".to_owned(), json!(workflows::review_diff(i)))]);
        engine
            .create_execution(&wf.id, inputs)
            .await
            .map_err(|e| anyhow!("creating execution {i}: {e}"))?;
    }
    Ok(wf.id)
}

async fn run_case(
    case: &Case,
    ax: &Path,
    agents: &Path,
    dir: &Path,
    n: usize,
    deadline: Duration,
    fake: &FakeLlm,
) -> Result<Value> {
    create(&case.db, agents, n).await?;
    let store = Store::open(&case.db).await?;
    let load_before = loadavg();
    let pg_before = case.postmaster.map(tree_cpu_s);
    let t0 = util::now_ms();
    let started = Instant::now();
    let db_arg = match &case.db {
        DbTarget::Sqlite(p) => p.display().to_string(),
        DbTarget::Postgres(u) => u.clone(),
    };
    let mut children = (0..case.workers)
        .map(|i| {
            spawn_worker(
                ax,
                &db_arg,
                agents,
                &dir.join(format!("{}-{i}.log", case.workers)),
            )
        })
        .collect::<Result<Vec<Child>>>()?;
    let outcome = wait_all(&store, n, started, deadline).await;
    let worker_cpu: f64 = children.iter().map(|c| proc_cpu_s(c.id()).0).sum();
    let pg_after = case.postmaster.map(tree_cpu_s);
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let (completed, failed) = outcome?;
    let m = measure(&store, n, &fake.calls()).await?;
    let wall_s = (m.last_finish.saturating_sub(t0)) as f64 / 1000.0;
    let steps = m.dispatch.len() as f64;
    let pg_cpu = pg_before.zip(pg_after).map(|(b, a)| a - b);
    Ok(json!({
        "case": case.name,
        "workers": case.workers,
        "completed": completed,
        "failed": failed,
        "steps": steps,
        "wallS": wall_s,
        "stepsPerS": steps / wall_s,
        "executionsPerS": completed as f64 / wall_s,
        "dispatchMs": {"p50": percentile(&m.dispatch, 50.0), "p99": percentile(&m.dispatch, 99.0), "max": percentile(&m.dispatch, 100.0)},
        "workerCpuS": worker_cpu,
        "postgresCpuS": pg_cpu,
        "postgresCpuShare": pg_cpu.map(|c| c / wall_s),
        "loadavg": [load_before, loadavg()],
    }))
}

fn spawn_worker(ax: &Path, db: &str, agents: &Path, log: &Path) -> Result<Child> {
    let log = std::fs::File::create(log)?;
    Command::new(ax)
        .args(["worker", "--db", db, "--agents"])
        .arg(agents)
        .env_remove("AX_DB")
        .env_remove("AX_MAX_RUNS")
        .env("AX_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {} worker", ax.display()))
}

/// Wait until every execution has ended; (completed, failed or otherwise ended).
async fn wait_all(
    store: &Store,
    n: usize,
    started: Instant,
    deadline: Duration,
) -> Result<(u64, u64)> {
    loop {
        let g = store.gauges().await?;
        let count = |s: &str| {
            g.by_state
                .iter()
                .find(|(k, _)| k == s)
                .map_or(0, |(_, c)| *c)
        };
        let (done, bad) = (count("completed"), count("failed") + count("cancelled"));
        if (done + bad) as usize >= n {
            return Ok((done, bad));
        }
        if started.elapsed() > deadline {
            bail!(
                "only {done} of {n} executions completed in {} s (by state: {:?}); use fewer (--executions) or a longer --deadline-s",
                deadline.as_secs(),
                g.by_state
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

struct Measured {
    dispatch: Vec<f64>,
    last_finish: u64,
}

/// Which execution (its diff's file number) and step a model call is for,
/// from the first line of its prompt.
fn call_of(head: &str) -> Option<(usize, &'static str)> {
    let step = [
        ("Parse", "parse-changes"),
        ("Audit", "security-audit"),
        ("Run tests", "quality-check"),
        ("Aggregate", "aggregate-results"),
    ]
    .into_iter()
    .find(|(p, _)| head.starts_with(p))?
    .1;
    let rest = &head[head.find("src/f")? + 5..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((digits.parse().ok()?, step))
}

/// Every step's dispatch latency, and when the last execution finished.
async fn measure(store: &Store, n: usize, calls: &[Call]) -> Result<Measured> {
    let mut arrived: HashMap<(usize, &str), u64> = HashMap::new();
    for c in calls {
        if let Some(k) = call_of(&c.head) {
            arrived.entry(k).or_insert(c.at);
        }
    }
    let execs = store
        .list_executions(ExecutionFilter {
            limit: (n + 10) as u32,
            ..ExecutionFilter::default()
        })
        .await?;
    let mut dispatch = Vec::with_capacity(n * 4);
    let mut last_finish = 0;
    for e in &execs {
        last_finish = last_finish.max(e.finished_at.unwrap_or(0));
        let Some(start) = e.started_at else { continue };
        let Some((i, _)) = e.inputs["git_diff"].as_str().and_then(call_of_diff) else {
            continue;
        };
        let steps = store.execution_steps(&e.id, false).await?;
        let finished: HashMap<&str, u64> = steps
            .iter()
            .filter_map(|s| Some((s.key.as_str(), s.finished_at?)))
            .collect();
        for s in &steps {
            let Some(&at) = arrived.get(&(i, s.key.as_str())) else {
                continue;
            };
            let ready = s
                .dependencies
                .iter()
                .map(|d| finished.get(d.as_str()).copied().unwrap_or(start))
                .max()
                .unwrap_or(start);
            dispatch.push(at.saturating_sub(ready) as f64);
        }
    }
    Ok(Measured {
        dispatch,
        last_finish,
    })
}

fn call_of_diff(diff: &str) -> Option<(usize, &'static str)> {
    call_of(&format!("Parse {diff}"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// (utime+stime, cutime+cstime) of a process, in seconds.
fn proc_cpu_s(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0) / hz;
    // rest[0] is the state (field 3): utime is field 14, so index 11.
    (at(11) + at(12), at(13) + at(14))
}

/// CPU seconds of a process tree rooted at `root` (its children and what it reaped).
fn tree_cpu_s(root: u32) -> f64 {
    let (own, reaped) = proc_cpu_s(root);
    let mut total = own + reaped;
    for pid in children_of(root) {
        total += proc_cpu_s(pid).0;
    }
    total
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            rest.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}

fn render(rows: &[Value], m: &Value, n: usize, latency: u64, ax: &Path) -> String {
    let build = if ax.components().any(|c| c.as_os_str() == "debug") {
        "an unoptimized debug build of `ax`"
    } else {
        "the release build of `ax`"
    };
    let mut s = format!(
        "## Scale: {n} concurrent code-review executions\n\n{n} executions of `examples/code-review.yaml` (4 steps: one, two in parallel, one), all queued before the workers start, against a fake OpenAI-compatible model that answers every call in {latency} ms. Wall time runs from starting the workers to the last execution's finish. Dispatch latency: when a step's model call reached the fake model minus when the step became ready (its last dependency's recorded finish, or its execution's recorded start).\n\n| Setup | Completed | Wall (s) | Steps/s | Executions/s | Dispatch p50 (ms) | Dispatch p99 (ms) | ax workers' CPU (s) | PostgreSQL CPU (s, % of one core) | Load average (before → after) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    );
    for r in rows {
        let pg = match (r["postgresCpuS"].as_f64(), r["postgresCpuShare"].as_f64()) {
            (Some(c), Some(sh)) => format!("{c:.1} ({:.0} %)", sh * 100.0),
            _ => "—".into(),
        };
        s.push_str(&format!(
            "| {} | {}/{} | {:.1} | {:.0} | {:.1} | {:.0} | {:.0} | {:.1} | {} | {} → {} |\n",
            r["case"].as_str().unwrap_or("?"),
            r["completed"],
            n,
            r["wallS"].as_f64().unwrap_or(0.0),
            r["stepsPerS"].as_f64().unwrap_or(0.0),
            r["executionsPerS"].as_f64().unwrap_or(0.0),
            r["dispatchMs"]["p50"].as_f64().unwrap_or(0.0),
            r["dispatchMs"]["p99"].as_f64().unwrap_or(0.0),
            r["workerCpuS"].as_f64().unwrap_or(0.0),
            pg,
            r["loadavg"][0].as_str().unwrap_or("?"),
            r["loadavg"][1].as_str().unwrap_or("?"),
        ));
    }
    s.push_str(&format!(
        "\n{} Command: `cargo xtask bench-scale` (a throwaway PostgreSQL cluster as it ships, fsync on; then `ax-bench scale --executions {n} --latency-ms {latency}`), with {build}.\n",
        machine_md(m)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_matched_to_their_execution_and_step() {
        let diff = workflows::review_diff(42);
        assert_eq!(call_of_diff(&diff), Some((42, "parse-changes")));
        let parse = format!("Parse git diff and extract changed files: {diff}");
        assert_eq!(call_of(&parse), Some((42, "parse-changes")));
        let answer = workflows::fake_answer(&parse);
        for (head, step) in [
            (
                format!("Audit these changes for vulnerabilities: {answer}"),
                "security-audit",
            ),
            (
                format!("Run tests and check code quality: {answer}"),
                "quality-check",
            ),
            (
                format!("Aggregate: security=answer({answer})"),
                "aggregate-results",
            ),
        ] {
            assert_eq!(call_of(&head), Some((42, step)), "{head}");
        }
        assert_eq!(call_of("Something else src/f1.rs"), None);
        assert_eq!(call_of("Parse no file here"), None);
    }
}
