//! Orchestration overhead of the durable engine, writes to a real SQLite file
//! included, with the offline `echo` provider as the mock step.
//!
//! `cargo bench -p ax-server --bench engine` (add `-- --quick` for a smoke run).
//! With `AX_BENCH_PG=postgres://…` (e.g. under `cargo xtask pg -- …`) every
//! scenario also runs on PostgreSQL, each run on a fresh database.
//! Overhead per step = (wall time − the time the mock steps themselves take on
//! the critical path) ÷ steps.

use ax_server::config::AgentsConfig;
use ax_server::engine::{Engine, Settings};
use ax_server::providers::{Completion, CompletionRequest, Provider, ProviderFuture, Router};
use ax_server::store::{Durability, Store};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn chain(n: usize) -> String {
    let mut s = String::from("name: chain\nconfig: {parallelism: 8}\nsteps:\n");
    for i in 0..n {
        if i == 0 {
            s.push_str("  - {key: s0, agent: backend, prompt: start}\n");
        } else {
            s.push_str(&format!("  - {{key: s{i}, agent: backend, prompt: \"next {{{{s{}.result}}}}\", dependencies: [s{}]}}\n", i - 1, i - 1));
        }
    }
    s
}

fn fan(width: usize) -> String {
    let mut s = String::from(
        "name: fan\nconfig: {parallelism: 64}\nsteps:\n  - {key: root, agent: backend, prompt: start}\n",
    );
    let mut deps = Vec::new();
    for i in 0..width {
        s.push_str(&format!("  - {{key: w{i}, agent: backend, prompt: \"w{i} {{{{root.result}}}}\", dependencies: [root]}}\n"));
        deps.push(format!("w{i}"));
    }
    s.push_str(&format!(
        "  - {{key: join, agent: backend, prompt: join, dependencies: [{}]}}\n",
        deps.join(", ")
    ));
    s
}

/// The mock step: answers a short fixed text after a fixed latency.
struct Mock {
    latency: Duration,
    /// Time actually spent waiting (sleeps overshoot by up to a timer tick).
    slept_ns: Arc<std::sync::atomic::AtomicU64>,
}

impl Provider for Mock {
    fn kind(&self) -> &'static str {
        "echo"
    }
    fn complete<'a>(&'a self, req: &'a CompletionRequest) -> ProviderFuture<'a> {
        Box::pin(async move {
            if !self.latency.is_zero() {
                let t = Instant::now();
                tokio::time::sleep(self.latency).await;
                self.slept_ns.fetch_add(
                    t.elapsed().as_nanos() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            Ok(Completion {
                text: "ok: a short mock answer".to_owned(),
                model: req.model.clone(),
                tokens_in: 10,
                tokens_out: 5,
            })
        })
    }
}

/// Where a run stores its data.
#[derive(Clone)]
enum Backend {
    Sqlite(Durability),
    /// The server's URL; each run creates its own database.
    Postgres(String),
}

async fn open_store(dir: &std::path::Path, backend: &Backend) -> Store {
    match backend {
        Backend::Sqlite(d) => Store::open_sqlite(&dir.join("bench.db"), *d).expect("store"),
        Backend::Postgres(url) => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("AX_BENCH_PG: cannot connect");
            tokio::spawn(conn);
            let name = format!("ax_bench_{}", ax_server::ids::new_id().to_lowercase());
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create a database");
            let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
            let target = ax_server::store::DbTarget::Postgres(format!("{base}/{name}"));
            Store::open(&target).await.expect("store")
        }
    }
}

async fn engine(
    dir: &std::path::Path,
    latency_ms: u64,
    backend: &Backend,
    slept: Arc<std::sync::atomic::AtomicU64>,
) -> Arc<Engine> {
    let agents = dir.join("agents.toml");
    std::fs::write(
        &agents,
        "[defaults]\nprovider = \"mock\"\n[providers.mock]\nkind = \"echo\"\n",
    )
    .expect("agents");
    let store = open_store(dir, backend).await;
    let router = Router::new(AgentsConfig::load(Some(&agents)).expect("config"), &|_| {
        None
    })
    .expect("router")
    .with_provider(
        "mock",
        "mock-1",
        Arc::new(Mock {
            latency: Duration::from_millis(latency_ms),
            slept_ns: slept,
        }),
    );
    Engine::new(store, router, Settings::default())
}

struct Row {
    name: String,
    steps: usize,
    wall: Duration,
    ideal: Duration,
    db_bytes: u64,
    checkpoints: i64,
}

/// `sequential`: every mock step is on the critical path (a chain run alone), so
/// the measured sleeping time is the ideal wall time.
async fn run_once(
    name: &str,
    yaml: &str,
    executions: usize,
    latency_ms: u64,
    sequential: bool,
    backend: &Backend,
) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let slept = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let e = engine(dir.path(), latency_ms, backend, slept.clone()).await;
    let wf = e
        .create_workflow(yaml.to_owned(), Some("bench.yaml".into()))
        .await
        .expect("valid");
    let steps_per = wf.step_count as usize;
    let start = Instant::now();
    let mut handles = Vec::with_capacity(executions);
    for _ in 0..executions {
        let (_, h) = e.start(&wf.id, BTreeMap::new()).await.expect("start");
        handles.push(h);
    }
    for h in handles {
        let end = h.await.expect("runner");
        assert_eq!(
            end.state,
            ax_core::ExecutionState::Completed,
            "{:?}",
            end.reason
        );
    }
    let wall = start.elapsed();
    let ideal = if sequential {
        Duration::from_nanos(slept.load(std::sync::atomic::Ordering::Relaxed))
    } else {
        Duration::ZERO
    };
    let checkpoints = e.store().footprint().await.expect("count").checkpoint_rows as i64;
    let db_bytes = match backend {
        Backend::Sqlite(_) => ["bench.db", "bench.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
            .map(|m| m.len())
            .sum(),
        Backend::Postgres(_) => e.store().footprint().await.map_or(0, |f| f.database_bytes),
    };
    Row {
        name: name.to_owned(),
        steps: steps_per * executions,
        wall,
        ideal,
        db_bytes,
        checkpoints,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `-- --only TEXT` runs the scenarios whose name contains TEXT.
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let repeats = if quick { 1 } else { 3 };
    let review = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/code-review.yaml"
    ))
    .expect("examples/code-review.yaml")
    // The seed workflow needs its diff input: give it a default for the bench.
    .replace(
        "git_diff:\n    description:",
        "git_diff:\n    default: \"diff --git a/x b/x\"\n    description:",
    );
    let n_exec = if quick { 100 } else { 1000 };
    let scenarios: Vec<(String, String, usize, u64, bool, Durability)> = vec![
        (
            "40-step chain, 10 ms steps".into(),
            chain(40),
            1,
            10,
            true,
            Durability::Normal,
        ),
        (
            "1,000-step chain, instant steps".into(),
            chain(1000),
            1,
            0,
            true,
            Durability::Normal,
        ),
        (
            "1,000-step chain, instant, synchronous=FULL".into(),
            chain(1000),
            1,
            0,
            true,
            Durability::Full,
        ),
        (
            "1 → 1,000 → 1 fan, instant steps".into(),
            fan(1000),
            1,
            0,
            false,
            Durability::Normal,
        ),
        (
            format!("code-review × {n_exec} concurrent executions"),
            review,
            n_exec,
            0,
            false,
            Durability::Normal,
        ),
    ];
    let pg = std::env::var("AX_BENCH_PG").ok().filter(|u| !u.is_empty());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | database | steps | wall (best of {repeats}) | overhead / step | checkpoint rows | database size |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    let mut runs: Vec<(String, &'static str, String, usize, u64, bool, Backend)> = Vec::new();
    for (name, yaml, execs, latency, sequential, durability) in scenarios {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        runs.push((
            name.clone(),
            "SQLite",
            yaml.clone(),
            execs,
            latency,
            sequential,
            Backend::Sqlite(durability),
        ));
        // PostgreSQL's own durability (fsync) is the server's setting, not ours.
        if let (Some(url), Durability::Normal) = (&pg, durability) {
            runs.push((
                name,
                "PostgreSQL",
                yaml,
                execs,
                latency,
                sequential,
                Backend::Postgres(url.clone()),
            ));
        }
    }
    for (name, database, yaml, execs, latency, sequential, backend) in runs {
        let mut best: Option<Row> = None;
        for _ in 0..repeats {
            let row =
                runtime.block_on(run_once(&name, &yaml, execs, latency, sequential, &backend));
            if best.as_ref().is_none_or(|b| row.wall < b.wall) {
                best = Some(row);
            }
        }
        let Some(r) = best else { continue };
        let overhead = r.wall.saturating_sub(r.ideal).as_secs_f64() * 1000.0 / r.steps as f64;
        let _ = writeln!(
            out,
            "| {} | {database} | {} | {:.1} ms | {:.3} ms | {} | {:.1} MiB |",
            r.name,
            r.steps,
            r.wall.as_secs_f64() * 1000.0,
            overhead,
            r.checkpoints,
            r.db_bytes as f64 / (1024.0 * 1024.0)
        );
        eprintln!(
            "{} ({database}): {:.1} ms, {overhead:.3} ms/step",
            r.name,
            r.wall.as_secs_f64() * 1000.0
        );
    }
    println!("{out}");
    // `-- --out DIR`: also write engine.md and engine.json there (for BENCHMARKS.md).
    if let Some(dir) = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
    {
        let dir = std::path::Path::new(dir);
        let _ = std::fs::create_dir_all(dir);
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
            })
            .unwrap_or_default();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: String = load
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let md = format!(
            "### The durable engine: orchestration overhead per step\n\nMachine: {cores} × {cpu}, {date}; load average at start {load}. \
             Command: `cargo bench -p ax-server --bench engine` (run by `cargo xtask bench-core`). A mock step answers a fixed short text after the given latency; \
             every step is committed to the database (a real SQLite file in WAL mode; with `AX_BENCH_PG` set, also a PostgreSQL server on this machine, each run on a fresh database) before the next one starts. Overhead per step = (wall − the mock's measured sleeping on the critical path) ÷ steps.\n\n{out}"
        );
        let _ = std::fs::write(dir.join("engine.md"), md);
        let _ = std::fs::write(dir.join("engine.json"), format!("{{\"quick\": {quick}}}"));
    }
}
