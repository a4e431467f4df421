//! Several ax processes on one PostgreSQL (issue 13): wake-ups through
//! LISTEN/NOTIFY between engines that stand in for processes (each its own
//! owner and connections), with their polling slowed to a minute so that
//! only a wake-up can make the outcome in time.

use super::common::{Backend, TestEngine, engine, start_stored, wait_for};
use ax_core::ExecutionState;
use ax_server::config::AgentsConfig;
use ax_server::engine::{Decision, Engine, Settings};
use ax_server::providers::Router;
use ax_server::store::{Control, Owner, Store};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// An engine on `t`'s database that polls for requests and work only once a
/// minute: whatever reaches it sooner came as a wake-up.
async fn deaf_engine(t: &TestEngine, keep_waiting: bool) -> Arc<Engine> {
    let store = Store::open(&t.db).await.expect("open store");
    let config = AgentsConfig::load(Some(&t.agents)).expect("agents config");
    let router = Router::new(config, &|_| None).expect("router");
    let settings = Settings {
        poll_interval: Duration::from_secs(60),
        claim_interval: Duration::from_secs(60),
        keep_waiting,
        ..Settings::default()
    };
    Engine::with_owner(store, router, settings, Owner::this_process())
}

async fn pg_engine() -> Option<TestEngine> {
    match Backend::postgres() {
        Some(b) => Some(engine(b).await),
        None => None,
    }
}

async fn step_state(e: &Engine, id: &str, key: &str) -> String {
    e.store()
        .execution_steps(id, false)
        .await
        .ok()
        .and_then(|s| s.into_iter().find(|s| s.key == key))
        .map(|s| s.state)
        .unwrap_or_default()
}

/// A cancel sent through process B reaches the run that process A drives
/// (B waits for the owner to take the request for lease + 5 s = 15 s; A
/// would poll for it after 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_through_another_process_reaches_the_owner() {
    let Some(t) = pg_engine().await else { return };
    let a = deaf_engine(&t, false).await;
    let yaml = "name: long\nsteps:\n  - {key: a, agent: backend, prompt: \"a [sleep:60000]\"}\n";
    let wf = a.create_workflow(yaml.into(), None).await.expect("wf");
    let (rec, handle) = a.start(&wf.id, BTreeMap::new()).await.expect("start");
    let id = rec.id.clone();
    wait_for(20, "step a to run", || async {
        step_state(&a, &id, "a").await == "running"
    })
    .await;
    let b = &t.engine;
    let (_, here) = b
        .control(&id, Control::Cancel)
        .await
        .expect("the owner takes the cancel request");
    assert!(here.is_none(), "A drives it, not B");
    let end = tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("A's runner stops")
        .expect("runner");
    assert_eq!(end.state, ExecutionState::Cancelled, "{:?}", end.reason);
    assert_eq!(step_state(b, &id, "a").await, "cancelled");
}

/// A decision made through process B reaches the approval that process A
/// waits on (B waits 10 s for the owner to take it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_through_another_process_reaches_the_owner() {
    let Some(t) = pg_engine().await else { return };
    let a = deaf_engine(&t, true).await;
    let yaml = "name: ok\nsteps:\n  - {key: ok, type: approval, prompt: ship?}\n  - {key: ship, agent: backend, prompt: \"ship {{ok.result.comment}}\", dependencies: [ok]}\n";
    let wf = a.create_workflow(yaml.into(), None).await.expect("wf");
    let (rec, handle) = a.start(&wf.id, BTreeMap::new()).await.expect("start");
    let id = rec.id.clone();
    wait_for(20, "the approval to wait", || async {
        step_state(&a, &id, "ok").await == "waiting"
    })
    .await;
    let decision = Decision {
        approve: true,
        comment: Some("yes".into()),
        ..Decision::default()
    };
    let (_, here) = t
        .engine
        .decide(&id, "ok", decision)
        .await
        .expect("the owner takes the decision");
    assert!(here.is_none(), "A drives it, not B");
    let end = tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("A's runner ends")
        .expect("runner");
    assert_eq!(end.state, ExecutionState::Completed, "{:?}", end.reason);
    assert_eq!(t.fake.calls_exact("ship yes"), 1);
}

/// An execution created through process B is claimed by the idle worker A at
/// once, not at A's next look at the queue a minute later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_work_wakes_an_idle_worker_of_another_process() {
    let Some(t) = pg_engine().await else { return };
    let a = deaf_engine(&t, false).await;
    a.start_worker();
    let wf = t
        .engine
        .create_workflow(
            "name: w\nsteps:\n  - {key: a, agent: backend, prompt: work}\n".into(),
            None,
        )
        .await
        .expect("wf");
    for round in 0..2 {
        // Round 0 may be found by the worker's first look; round 1 comes
        // while it sleeps.
        let id = t
            .engine
            .create_execution(&wf.id, BTreeMap::new())
            .await
            .expect("created");
        wait_for(30, "the worker to finish the run", || async {
            a.execution(&id).await.is_ok_and(|r| r.state == "completed")
        })
        .await;
        wait_for(10, "the worker to be idle", || async {
            a.running_here() == 0
        })
        .await;
        let leases = t.engine.store().leases(&id).await.expect("leases");
        assert!(
            leases.iter().all(|l| l.owner == a.owner().id),
            "round {round}: {leases:?}"
        );
    }
    assert_eq!(t.fake.calls_exact("work"), 2);
}

// ---------------------------------------------------------------- worker kills

/// A fake OpenAI-compatible LLM that logs every call with the moment it
/// arrived (epoch ms) and answers `answer(<first line>)` after the prompt's
/// `[sleep:MS]`.
#[derive(Clone, Default)]
pub(super) struct CallLog(Arc<std::sync::Mutex<Vec<(String, u64)>>>);

async fn logged_chat(
    axum::extract::State(log): axum::extract::State<CallLog>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> axum::Json<serde_json::Value> {
    let prompt = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|x| x["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    if let Ok(mut l) = log.0.lock() {
        l.push((prompt.clone(), ax_server::store::now_ms()));
    }
    let ms = prompt
        .split_once("[sleep:")
        .and_then(|(_, rest)| rest.split_once(']'))
        .and_then(|(n, _)| n.parse::<u64>().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let first = prompt.lines().next().unwrap_or("");
    axum::Json(serde_json::json!({
        "id": "chatcmpl-soak", "object": "chat.completion", "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("answer({first})")}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    }))
}

async fn logged_llm() -> (CallLog, std::net::SocketAddr) {
    let log = CallLog::default();
    let addr = serve_llm(log.clone(), [127, 0, 0, 1].into()).await;
    (log, addr)
}

/// The logged fake LLM on `ip` (a free port), its calls in `log`.
pub(super) async fn serve_llm(log: CallLog, ip: std::net::IpAddr) -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(logged_chat))
        .with_state(log);
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// `ax worker` (the real binary) on the database, its log in `dir`.
fn spawn_worker(db: &str, agents: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    let log = std::fs::File::create(log).expect("worker log");
    std::process::Command::new(env!("CARGO_BIN_EXE_ax"))
        .args(["worker", "--max-runs", "40", "--db", db, "--agents"])
        .arg(agents)
        .env_remove("AX_DB")
        .env("AX_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn ax worker")
}

const SOAK: &str = r#"name: soak
inputs:
  n: {description: which run}
steps:
  - {key: a, agent: backend, prompt: "a {{n}} [sleep:80]"}
  - {key: b, agent: backend, prompt: "b {{n}} after {{a.result}} [sleep:120]", dependencies: [a]}
  - {key: c, agent: backend, prompt: "c {{n}} after {{b.result}} [sleep:60]", dependencies: [b]}
"#;

/// Three `ax worker` processes on one PostgreSQL drive 300 executions while a
/// random one is killed with SIGKILL every 1–2 s and started again: every
/// execution completes, no step is called again after its completion was
/// recorded (from the provider's own log), every call belongs to a recorded
/// attempt, and the fencing tokens on the rows never go back (no write of an
/// owner after the next owner's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_survive_kills_and_lose_nothing() {
    let Some(Backend::Postgres(server)) = Backend::postgres() else {
        return;
    };
    let (log, addr) = logged_llm().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = dir.path().join("agents.toml");
    std::fs::write(&agents, super::common::agents_toml(addr)).expect("agents");
    let url = super::common::create_database(&server).await;
    let db = ax_server::store::DbTarget::Postgres(url.clone());
    // The submitting process: no worker of its own.
    let api = super::common::engine_on(&db, &agents).await;
    let wf = api.create_workflow(SOAK.into(), None).await.expect("wf");
    let mut workers: Vec<std::process::Child> = (0..3)
        .map(|i| spawn_worker(&url, &agents, &dir.path().join(format!("w{i}-0.log"))))
        .collect();
    let total = 300usize;
    let (mut kills, mut seed, mut created) = (0usize, 0x2545_f491_4f6c_dd1du64, 0usize);
    let started = std::time::Instant::now();
    let mut next_kill = started + Duration::from_millis(1000);
    loop {
        // 15 new executions every half second, until there are 300.
        if created < total {
            for _ in 0..15 {
                let inputs = BTreeMap::from([("n".to_owned(), serde_json::json!(created))]);
                api.create_execution(&wf.id, inputs).await.expect("create");
                created += 1;
            }
        }
        let done = count_state(&url, "completed").await;
        if done == total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(110),
            "only {done} of {total} executions completed in 110 s ({kills} kills); the workers said:\n{}",
            worker_logs(dir.path())
        );
        if std::time::Instant::now() >= next_kill && done < total {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed % 3) as usize;
            let _ = workers[i].kill();
            let _ = workers[i].wait();
            kills += 1;
            let log_file = dir.path().join(format!("w{i}-{kills}.log"));
            workers[i] = spawn_worker(&url, &agents, &log_file);
            next_kill =
                std::time::Instant::now() + Duration::from_millis(1000 + (seed >> 8) % 1000);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let report = verify_soak(&url, &log, total * 3).await;
    eprintln!(
        "worker-kill soak: {total} executions ({} steps) completed in {:.1} s on 3 workers; {kills} kill -9s; {report}",
        total * 3,
        elapsed.as_secs_f64()
    );
    assert!(kills >= 3, "the run ended before enough kills ({kills})");
}

/// Executions by state, owned or not, queued or not (for a failure's message).
async fn run_summary(url: &str) -> String {
    let c = pg(url).await;
    let rows = c
        .query(
            "SELECT state, owner IS NOT NULL, queued_at IS NOT NULL, count(*) FROM workflow_executions GROUP BY 1, 2, 3",
            &[],
        )
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let (s, o, q, n): (String, bool, bool, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
                    format!("{n} {s} owned={o} queued={q}")
                })
                .collect::<Vec<_>>()
                .join(", ")
        });
    rows.unwrap_or_else(|e| e.to_string())
}

/// The last lines of every worker's log (for a failure's message).
pub(super) fn worker_logs(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
    {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- {}\n", f.display()));
        for l in &lines[lines.len().saturating_sub(15)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

pub(super) async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

pub(super) async fn count_state(url: &str, state: &str) -> usize {
    let c = pg(url).await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM workflow_executions WHERE state = $1",
            &[&state],
        )
        .await
        .expect("count")
        .get(0);
    n as usize
}

pub(super) async fn one_count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Check the database and the provider's log after the soak; a summary of
/// the counts.
pub(super) async fn verify_soak(url: &str, log: &CallLog, steps: usize) -> String {
    let c = pg(url).await;
    let twice = one_count(
        &c,
        "SELECT count(*) FROM (SELECT 1 FROM workflow_step_executions WHERE state = 'completed'
           GROUP BY execution_id, step_key HAVING count(*) > 1) x",
    )
    .await;
    assert_eq!(twice, 0, "steps with two completed attempts");
    let incomplete = one_count(
        &c,
        "SELECT count(*) FROM execution_steps WHERE state <> 'completed'",
    )
    .await;
    assert_eq!(incomplete, 0, "steps not completed");
    // Fencing: per execution, in commit order, the token never goes back.
    for table in ["workflow_events", "workflow_checkpoints"] {
        let back = one_count(
            &c,
            &format!(
                "SELECT count(*) FROM (SELECT lease_token, lag(lease_token) OVER (PARTITION BY execution_id ORDER BY id) AS prev
                   FROM {table} WHERE lease_token IS NOT NULL) x WHERE lease_token < prev"
            ),
        )
        .await;
        assert_eq!(
            back, 0,
            "{table}: a write under an older lease after a newer one"
        );
    }
    // Every call to the provider, against the attempts recorded for its prompt.
    let rows = c
        .query(
            "SELECT prompt, count(*), max(finished_at) FILTER (WHERE state = 'completed')
               FROM workflow_step_executions GROUP BY prompt",
            &[],
        )
        .await
        .expect("attempts");
    let calls = log.0.lock().map(|l| l.clone()).unwrap_or_default();
    let mut per_prompt: std::collections::HashMap<&str, Vec<u64>> = Default::default();
    for (p, at) in &calls {
        per_prompt.entry(p.as_str()).or_default().push(*at);
    }
    let (mut after_completion, mut unrecorded, mut attempts) = (0, 0, 0i64);
    for r in &rows {
        let prompt: Option<String> = r.get(0);
        let (n, done): (i64, Option<i64>) = (r.get(1), r.get(2));
        attempts += n;
        let at = prompt
            .as_deref()
            .and_then(|p| per_prompt.get(p))
            .cloned()
            .unwrap_or_default();
        if at.len() as i64 > n {
            unrecorded += 1;
        }
        if let Some(done) = done {
            after_completion += at.iter().filter(|t| **t as i64 > done).count();
        }
    }
    assert_eq!(
        after_completion, 0,
        "calls after the step's completion was recorded"
    );
    assert_eq!(
        unrecorded, 0,
        "prompts called more often than attempts were recorded"
    );
    let takeovers = one_count(
        &c,
        "SELECT count(*) FROM execution_leases WHERE previous_owner IS NOT NULL",
    )
    .await;
    let rerun = calls.len() as i64 - steps as i64;
    format!(
        "{} provider calls ({rerun} re-run attempts that were in flight when their driver stopped), {attempts} attempt rows, {takeovers} takeovers; 0 steps completed twice, 0 calls after a completion, 0 fencing-token reversals",
        calls.len()
    )
}

// ---------------------------------------------------------------- /metrics

/// `GET /metrics` over real HTTP after a run with one rate-limited attempt:
/// the database's figures and this process's counters, in the text format.
async fn metrics_are_scraped_over_http(b: Backend) {
    let t = engine(b).await;
    let state = ax_server::api::AppState {
        engine: t.engine.clone(),
        token: Some(Arc::from("s3cret")),
        web_dir: None,
        access: Arc::new(ax_server::api::Access::local(
            "127.0.0.1".parse().expect("ip"),
        )),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, ax_server::api::app(state)).await;
    });
    let yaml = "name: m\nsteps:\n  - {key: a, agent: backend, prompt: \"a [fail:429 x1]\", retryPolicy: {maxRetries: 2, retryDelayMs: 10}}\n  - {key: b, agent: backend, prompt: b, dependencies: [a]}\n";
    let wf = t
        .engine
        .create_workflow(yaml.into(), None)
        .await
        .expect("wf");
    let (_, handle) = t
        .engine
        .start(&wf.id, BTreeMap::new())
        .await
        .expect("start");
    let end = handle.await.expect("runner");
    assert_eq!(end.state, ExecutionState::Completed, "{:?}", end.reason);
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/metrics");
    let refused = client.get(&url).send().await.expect("request");
    assert_eq!(refused.status().as_u16(), 401, "behind the token");
    let r = client
        .get(&url)
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let kind = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let text = r.text().await.expect("body");
    for line in [
        "ax_executions{state=\"completed\"} 1",
        "ax_queue_depth 0",
        "ax_runs_driven 0",
        "ax_lease_takeovers_total 0",
        "ax_steps_started_total{provider=\"fake\"} 3",
        "ax_steps_completed_total{provider=\"fake\"} 2",
        "ax_steps_failed_total{provider=\"fake\",class=\"rate-limit\"} 1",
        "ax_step_duration_seconds_count{provider=\"fake\"} 3",
        "ax_step_duration_seconds_bucket{provider=\"fake\",le=\"+Inf\"} 3",
        "# TYPE ax_step_duration_seconds histogram",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "`{line}` missing in\n{text}"
        );
    }
}

// ---------------------------------------------------------------- database outage

/// Two `ax worker` processes drive 60 executions while the database drops
/// every connection of theirs and refuses new ones for two seconds, twice (as
/// a restart of PostgreSQL does to its clients): the workers reconnect and
/// every execution completes, no completed step called again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_ride_out_a_database_outage() {
    let Some(Backend::Postgres(server)) = Backend::postgres() else {
        return;
    };
    let (log, addr) = logged_llm().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = dir.path().join("agents.toml");
    std::fs::write(&agents, super::common::agents_toml(addr)).expect("agents");
    let url = super::common::create_database(&server).await;
    let name = url
        .rsplit('/')
        .next()
        .and_then(|s| s.split('?').next())
        .unwrap_or_default()
        .to_owned();
    let db = ax_server::store::DbTarget::Postgres(url.clone());
    let api = super::common::engine_on(&db, &agents).await;
    let wf = api.create_workflow(SOAK.into(), None).await.expect("wf");
    let total = 60usize;
    for n in 0..total {
        let inputs = BTreeMap::from([("n".to_owned(), serde_json::json!(n))]);
        api.create_execution(&wf.id, inputs).await.expect("create");
    }
    drop(api);
    let mut workers: Vec<std::process::Child> = (0..2)
        .map(|i| spawn_worker(&url, &agents, &dir.path().join(format!("w{i}.log"))))
        .collect();
    let admin = pg(&server).await;
    for _ in 0..2 {
        wait_for(60, "some progress before the outage", || async {
            !log.0.lock().map(|l| l.is_empty()).unwrap_or(true)
        })
        .await;
        admin
            .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
            .await
            .expect("refuse connections");
        admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&name],
            )
            .await
            .expect("cut connections");
        tokio::time::sleep(Duration::from_secs(2)).await;
        admin
            .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
            .await
            .expect("allow connections");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let started = std::time::Instant::now();
    loop {
        let done = count_state(&url, "completed").await;
        if done == total {
            break;
        }
        for w in &mut workers {
            assert!(
                w.try_wait().ok().flatten().is_none(),
                "a worker exited after the outage; the workers said:\n{}",
                worker_logs(dir.path())
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "only {done} of {total} executions completed 90 s after the outages ({}); the workers said:\n{}",
            run_summary(&url).await,
            worker_logs(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let report = verify_soak(&url, &log, total * 3).await;
    eprintln!(
        "database outage: {total} executions completed on 2 workers after 2 outages of 2 s; {report}"
    );
}

// ---------------------------------------------------------------- deadlines

/// An approval's deadline is kept by `ax worker` too (not only by `ax
/// serve`): a deployment of API nodes and workers needs no particular
/// process for it.
async fn a_worker_wakes_an_approval_whose_deadline_passed(b: Backend) {
    let t = engine(b).await;
    let yaml = "name: t\nsteps:\n  - {key: ok, type: approval, prompt: ok?, timeoutMs: 500, onTimeout: approve}\n  - {key: next, agent: backend, prompt: \"timed out {{ok.result.timedOut}}\", dependencies: [ok]}\n";
    let (rec, handle) = start_stored(&t, yaml, None).await;
    let end = handle.await.expect("runner");
    assert_eq!(end.state, ExecutionState::Waiting);
    let db = t.db.as_arg().to_string_lossy().into_owned();
    let mut worker = spawn_worker(&db, &t.agents, &t._dir.path().join("worker.log"));
    let id = rec.id.clone();
    let e = t.engine.clone();
    let done = tokio::time::timeout(
        Duration::from_secs(30),
        wait_for(30, "the worker to time the approval out", || {
            let (e, id) = (e.clone(), id.clone());
            async move { e.execution(&id).await.is_ok_and(|r| r.state == "completed") }
        }),
    )
    .await;
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(done.is_ok(), "{}", worker_logs(t._dir.path()));
    assert_eq!(t.fake.calls_exact("timed out true"), 1);
}

crate::on_both_backends!(
    metrics_are_scraped_over_http,
    a_worker_wakes_an_approval_whose_deadline_passed
);
