//! The ax side of the side-by-side: one scenario in this process, through
//! `ax_server::engine::Engine` on a real SQLite file, with an in-process mock
//! provider (as `server/benches/engine.rs`). Prints one JSON line.
//!
//! `ax-bench ax-run --scenario chain40|chain1000|fan100|review --sync normal|full
//!   [--executions N] [--mode seq|concurrent] --dir DIR`

use crate::util::{Args, db_bytes, peak_rss_kib};
use crate::workflows;
use anyhow::{Context as _, Result, anyhow, bail};
use ax_server::config::AgentsConfig;
use ax_server::engine::{Engine, Settings};
use ax_server::providers::{Completion, CompletionRequest, Provider, ProviderFuture, Router};
use ax_server::store::{Durability, Store};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The mock LLM step (the same on the LangGraph side): after `latency`, answer
/// `ok: ` and the first 60 characters of the prompt.
struct Mock {
    latency: Duration,
    slept_ns: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
}

pub fn mock_answer(prompt: &str) -> String {
    format!("ok: {}", prompt.chars().take(60).collect::<String>())
}

impl Provider for Mock {
    fn kind(&self) -> &'static str {
        "echo"
    }
    fn complete<'a>(&'a self, req: &'a CompletionRequest) -> ProviderFuture<'a> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if !self.latency.is_zero() {
                let t = Instant::now();
                tokio::time::sleep(self.latency).await;
                self.slept_ns
                    .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            Ok(Completion {
                text: mock_answer(&req.prompt),
                model: req.model.clone(),
                tokens_in: 10,
                tokens_out: 5,
            })
        })
    }
}

struct Bench {
    engine: Arc<Engine>,
    slept_ns: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
}

fn engine(dir: &Path, db: &str, latency_ms: u64, durability: Durability) -> Result<Bench> {
    let agents = dir.join("agents.toml");
    std::fs::write(
        &agents,
        "[defaults]\nprovider = \"mock\"\n[providers.mock]\nkind = \"echo\"\n",
    )?;
    let store = Store::open_sqlite(&dir.join(db), durability)?;
    let slept_ns = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let router = Router::new(AgentsConfig::load(Some(&agents))?, &|_| None)?.with_provider(
        "mock",
        "mock-1",
        Arc::new(Mock {
            latency: Duration::from_millis(latency_ms),
            slept_ns: slept_ns.clone(),
            calls: calls.clone(),
        }),
    );
    Ok(Bench {
        engine: Engine::new(store, router, Settings::default()),
        slept_ns,
        calls,
    })
}

/// Run `executions` executions of `yaml`; returns the wall time from the first
/// start to the last end.
async fn run(
    b: &Bench,
    yaml: &str,
    executions: usize,
    concurrent: bool,
    inputs: &dyn Fn(usize) -> BTreeMap<String, Value>,
) -> Result<Duration> {
    let wf = b
        .engine
        .create_workflow(yaml.to_owned(), Some("bench.yaml".into()))
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let start = Instant::now();
    let mut handles = Vec::with_capacity(if concurrent { executions } else { 1 });
    for i in 0..executions {
        let (_, h) = b
            .engine
            .start(&wf.id, inputs(i))
            .await
            .map_err(|e| anyhow!("start: {e}"))?;
        if concurrent {
            handles.push(h);
        } else {
            check(h.await?)?;
        }
    }
    for h in handles {
        check(h.await?)?;
    }
    Ok(start.elapsed())
}

fn check(end: ax_server::engine::RunEnd) -> Result<()> {
    if end.state != ax_core::ExecutionState::Completed {
        bail!("a run ended {} ({:?})", end.state, end.reason);
    }
    Ok(())
}

pub fn main(args: &Args) -> Result<()> {
    let scenario = args.get("scenario").unwrap_or("chain40").to_owned();
    let sync = match args.get("sync").unwrap_or("normal") {
        "normal" => Durability::Normal,
        "full" => Durability::Full,
        other => bail!("--sync {other}: use normal or full"),
    };
    let dir = args.path("dir", ".");
    std::fs::create_dir_all(&dir)?;
    let concurrent = match args.get("mode").unwrap_or("seq") {
        "seq" => false,
        "concurrent" => true,
        other => bail!("--mode {other}: use seq or concurrent"),
    };
    let (yaml, latency_ms, executions) = match scenario.as_str() {
        "chain40" => (workflows::chain(40), 10, 1),
        "chain1000" => (workflows::chain(1000), 0, 1),
        "fan100" => (workflows::fan(100), 0, 1),
        "review" => (workflows::code_review(), 0, args.num("executions", 1000)?),
        other => bail!("unknown scenario `{other}`"),
    };
    let latency_ms = args.num("latency-ms", latency_ms)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let review_inputs = |i: usize| {
        BTreeMap::from([(
            "git_diff".to_owned(),
            Value::String(workflows::review_diff(i)),
        )])
    };
    let no_inputs = |_: usize| BTreeMap::new();
    let inputs: &dyn Fn(usize) -> BTreeMap<String, Value> = if scenario == "review" {
        &review_inputs
    } else {
        &no_inputs
    };
    let result = runtime.block_on(async {
        // Warm up (allocator, code paths, the plan cache of a different workflow)
        // on a separate database, then measure on a fresh one.
        {
            let w = engine(&dir, "warmup.db", 0, sync)?;
            run(&w, &workflows::chain(3), 2, false, &no_inputs).await?;
        }
        let b = engine(&dir, "ax.db", latency_ms, sync)?;
        let wall = run(&b, &yaml, executions, concurrent, inputs).await?;
        let f = b.engine.store().footprint().await?;
        let (written, kept, kept_bytes, attempts, events) = (
            f.checkpoint_rows_written,
            f.checkpoint_rows,
            f.checkpoint_bytes,
            f.attempts,
            f.events,
        );
        let steps = b.calls.load(Ordering::Relaxed);
        let slept_ns = b.slept_ns.load(Ordering::Relaxed);
        // Close the database (as the peer does at the end of its run) before
        // measuring the files: the last connection folds the WAL in.
        drop(b);
        tokio::time::sleep(Duration::from_millis(800)).await;
        let (db, wal) = db_bytes(&dir.join("ax.db"));
        Ok::<Value, anyhow::Error>(json!({
            "engine": "ax",
            "scenario": scenario,
            "durability": if sync == Durability::Full { "synchronous=FULL" } else { "synchronous=NORMAL" },
            "mode": if concurrent { "concurrent" } else { "seq" },
            "executions": executions,
            "steps": steps,
            "wallS": wall.as_secs_f64(),
            "sleptS": slept_ns as f64 / 1e9,
            "checkpointsWritten": written,
            "checkpointsKept": kept,
            "checkpointBytes": kept_bytes,
            "attemptRows": attempts,
            "eventRows": events,
            "dbBytes": db,
            "walBytes": wal,
            "peakRssKiB": peak_rss_kib(),
        }))
    });
    let v = result.context("the ax run failed")?;
    println!("{v}");
    Ok(())
}
