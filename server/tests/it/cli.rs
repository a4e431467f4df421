//! The `ax` binary as a user runs it: exit codes, output shapes, runs of every
//! example on the offline provider, control from another process, and crashes.

use super::common::Backend;
use ax_server::store::{DbTarget, Store};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ax() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ax"));
    // No provider keys: the offline `echo` provider answers.
    for k in [
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "AX_DB",
        "AX_AGENTS",
    ] {
        c.env_remove(k);
    }
    c.env("HOME", std::env::temp_dir().join("ax-cli-test-home"));
    c
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Env {
    dir: tempfile::TempDir,
    db: DbTarget,
}

impl Env {
    fn new(echo_latency_ms: u64) -> Env {
        Env::on(Backend::Sqlite, echo_latency_ms)
    }
    fn on(backend: Backend, echo_latency_ms: u64) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("agents.toml"),
            format!("[defaults]\nprovider = \"echo\"\n\n[providers.echo]\nkind = \"echo\"\nlatency_ms = {echo_latency_ms}\n"),
        )
        .expect("agents");
        let db = runtime().block_on(backend.fresh(dir.path()));
        Env { dir, db }
    }
    fn db(&self) -> std::ffi::OsString {
        self.db.as_arg()
    }
    /// The database as the library sees it (to check what the processes wrote).
    fn store<T>(&self, f: impl AsyncFnOnce(Store) -> T) -> T {
        runtime().block_on(async {
            let store = Store::open(&self.db).await.expect("open the database");
            f(store).await
        })
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = ax();
        c.args(args)
            .arg("--db")
            .arg(self.db())
            .arg("--agents")
            .arg(self.dir.path().join("agents.toml"));
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("runs ax")
    }
    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    }
}

#[test]
fn validate_exit_codes_and_formats() {
    let env = Env::new(0);
    let ok = env.write(
        "ok.yaml",
        "name: ok\nsteps:\n  - {key: a, agent: backend, prompt: hi}\n",
    );
    let out = env.run(&["workflow", "validate", &ok]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid (1 step"));
    let bad = env.write("bad.yaml", "name: bad\nsteps:\n  - key: a\n    agent: x\n    prompt: p\n    dependencies: [b]\n  - key: b\n    agent: x\n    prompt: p\n    dependencies: [a]\n");
    let out = env.run(&["workflow", "validate", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "{bad}:6:20: error[cycle]: dependency cycle: a → b → a"
        )),
        "{text}"
    );
    let v = env.json(&["workflow", "validate", &bad, "--format", "json"]);
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["code"], "cycle");
    assert_eq!(v["errors"][0]["line"], 6);
    assert!(v.get("order").is_none());
    let v = env.json(&["workflow", "validate", &ok, "--format", "json"]);
    assert_eq!(v["order"], serde_json::json!(["a"]));
    assert_eq!(v["levels"], serde_json::json!([["a"]]));
    let out = env.run(&["workflow", "validate", "/nonexistent/file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let out = env.run(&["workflow", "validate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn graph_and_schema() {
    let env = Env::new(0);
    let f = repo()
        .join("examples/code-review.yaml")
        .display()
        .to_string();
    let v = env.json(&["workflow", "graph", &f]);
    assert_eq!(
        v["levels"][1],
        serde_json::json!(["security-audit", "quality-check"])
    );
    let out = env.run(&["workflow", "graph", &f, "--format", "mermaid"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("flowchart TD"));
    let out = env.run(&["workflow", "graph", &f, "--format", "dot"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"parse-changes\" -> \"security-audit\"")
    );
    let schema = env.json(&["workflow", "schema"]);
    assert!(schema["properties"]["steps"].is_object());
    // The committed schema file is the generated one.
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("docs/workflow.schema.json"))
            .expect("docs/workflow.schema.json"),
    )
    .expect("json");
    assert_eq!(
        committed, schema,
        "docs/workflow.schema.json is stale: regenerate it with `ax workflow schema > docs/workflow.schema.json`"
    );
}

/// Values for the inputs a workflow requires.
fn inputs_for(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("read");
    let a = ax_core::analyze(
        &text,
        &ax_core::Options::for_file(&file.display().to_string()),
    );
    let plan = a.plan.expect("valid example");
    plan.input_names()
        .iter()
        .filter(|n| {
            plan.workflow
                .inputs
                .get(*n)
                .and_then(|i| i.default.as_ref())
                .is_none()
        })
        .map(|n| format!("{n}=sample {n}"))
        .collect()
}

#[test]
fn every_example_runs_offline_with_json_output() {
    let env = Env::new(0);
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .expect("examples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 6);
    for f in files {
        // Approvals and sub-workflows need the server's part of issue 11
        // (deciding from the CLI, starting child runs); until it lands, those
        // examples run in core/tests/examples.rs only.
        let text = std::fs::read_to_string(&f).expect("read");
        let analysis =
            ax_core::analyze(&text, &ax_core::Options::for_file(&f.display().to_string()));
        let needs_server_part = analysis
            .workflow()
            .is_some_and(|w| w.steps.iter().any(|s| s.kind != ax_core::StepType::Prompt));
        if needs_server_part {
            continue;
        }
        let mut args = vec![
            "workflow".to_owned(),
            "run".to_owned(),
            f.display().to_string(),
            "--format".into(),
            "json".into(),
        ];
        for i in inputs_for(&f) {
            args.push("--input".into());
            args.push(i);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.run(&refs);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}\n{}",
            f.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(v["state"], "completed");
        for key in ["id", "workflow", "state", "steps"] {
            assert!(v.get(key).is_some(), "{key} missing");
        }
        for s in v["steps"].as_array().expect("steps") {
            for key in [
                "key",
                "state",
                "attempts",
                "provider",
                "model",
                "output",
                "error",
                "tokensIn",
                "tokensOut",
            ] {
                assert!(s.get(key).is_some(), "step field {key} missing in {s}");
            }
            if s["state"] == "completed" {
                assert_eq!(s["provider"], "echo");
            }
        }
    }
    let list = env.json(&["workflow", "list", "--format", "json"]);
    let rows = list.as_array().expect("list");
    assert!(rows.len() >= 6);
    for key in ["id", "workflow", "state", "createdAt"] {
        assert!(rows[0].get(key).is_some());
    }
    assert!(
        rows.windows(2)
            .all(|w| w[0]["createdAt"].as_u64() >= w[1]["createdAt"].as_u64()),
        "newest first"
    );
    let id = rows[0]["id"].as_str().expect("id");
    let cps = env.json(&["workflow", "checkpoints", id, "--format", "json"]);
    let first = &cps.as_array().expect("cps")[0];
    for key in ["id", "executionId", "createdAt", "completedSteps"] {
        assert!(first.get(key).is_some(), "{key}");
    }
    let status = env.json(&["workflow", "status", &id[..12], "--format", "json"]);
    assert_eq!(status["id"], id);
}

#[test]
fn echo_renders_templates_and_says_what_it_is() {
    let env = Env::new(0);
    let f = env.write("t.yaml", "name: t\ninputs:\n  topic: {description: x}\nsteps:\n  - {key: a, agent: writer, prompt: \"Write about {{topic}}.\"}\n  - {key: b, agent: writer, prompt: \"Review: {{a.result}}\", dependencies: [a]}\n");
    let v = env.json(&[
        "workflow",
        "run",
        &f,
        "--input",
        "topic=owls",
        "--format",
        "json",
    ]);
    let b = v["steps"][1]["output"].as_str().expect("output");
    assert!(b.contains("[echo"), "{b}");
    assert!(
        b.contains("Review: ") && b.contains("Write about owls."),
        "{b}"
    );
    let out = env.run(&["workflow", "run", &f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing input `topic`"));
    let out = env.run(&["workflow", "run", &f, "--input", "topik=x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `topic`"));
}

const SLOW: &str = "name: slow\nconfig: {parallelism: 1}\nsteps:\n  - {key: s1, agent: backend, prompt: one}\n  - {key: s2, agent: backend, prompt: two, dependencies: [s1]}\n  - {key: s3, agent: backend, prompt: three, dependencies: [s2]}\n  - {key: s4, agent: backend, prompt: four, dependencies: [s3]}\n  - {key: s5, agent: backend, prompt: five, dependencies: [s4]}\n";

fn ids(env: &Env) -> Vec<String> {
    let list = env.json(&["workflow", "list", "--limit", "1000", "--format", "json"]);
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Start `ax workflow run` in the background; the caller waits for the child.
#[allow(clippy::zombie_processes)]
fn spawn_run(env: &Env, file: &str) -> (Child, String) {
    let before = ids(env);
    let mut child = env
        .cmd(&["workflow", "run", file])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run");
    // The id appears in the database as soon as the run starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(id) = ids(env).into_iter().find(|i| !before.contains(i)) {
            return (child, id);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run never appeared");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_completed_steps(env: &Env, id: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = env.json(&["workflow", "status", id, "--format", "json"]);
        if s["progress"]["completed"].as_u64() >= Some(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never reached {n} completed steps: {s}"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

fn pause_and_cancel_from_another_process(b: Backend) {
    let env = Env::on(b, 600);
    let f = env.write("slow.yaml", SLOW);
    let (mut child, id) = spawn_run(&env, &f);
    wait_completed_steps(&env, &id, 1);
    let asked = Instant::now();
    let out = env.run(&["workflow", "pause", &id]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The running process exits promptly, saying how to resume.
    let code = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(code, Some(3));
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "took {:?}",
        asked.elapsed()
    );
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(
        stderr.contains(&format!("ax workflow resume {id}")),
        "{stderr}"
    );
    let s = env.json(&["workflow", "status", &id, "--format", "json"]);
    assert_eq!(s["state"], "paused");
    let done_before = s["progress"]["completed"].as_u64().unwrap_or(0);
    assert!(done_before < 5);
    // Resume in this process, then cancel it from a third one.
    let mut resumed = env
        .cmd(&["workflow", "resume", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("resume");
    wait_completed_steps(&env, &id, done_before + 1);
    let out = env.run(&["workflow", "cancel", &id]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(wait_exit(&mut resumed, Duration::from_secs(5)), Some(4));
    let s = env.json(&["workflow", "status", &id, "--format", "json"]);
    assert_eq!(s["state"], "cancelled");
    let out = env.run(&["workflow", "resume", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cancelled"));
}

fn detached_runs_finish_in_the_background(b: Backend) {
    let env = Env::on(b, 20);
    let f = env.write("slow.yaml", SLOW);
    let v = env.json(&["workflow", "run", &f, "--detach", "--format", "json"]);
    let id = v["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = env.json(&["workflow", "status", &id, "--format", "json"]);
        if s["state"] == "completed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "detached run did not finish: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = env.run(&["workflow", "events", &id, "--format", "json"]);
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(lines > 10);
}

/// Kill -9 a running `ax workflow run` at random moments, resume, and check that
/// no completed step ran twice and no result was lost.
fn crash_and_resume_loses_nothing(b: Backend) {
    let env = Env::on(b, 15);
    let mut yaml = String::from("name: crash\nconfig: {parallelism: 3}\nsteps:\n");
    for i in 0..24 {
        let deps = if i < 3 {
            String::new()
        } else {
            format!(", dependencies: [c{}, c{}]", i - 3, i - 2)
        };
        let use_dep = if i < 3 {
            String::new()
        } else {
            format!(" after {{{{c{}.result}}}}", i - 3)
        };
        yaml.push_str(&format!(
            "  - {{key: c{i}, agent: backend, prompt: \"step {i}{use_dep}\"{deps}}}\n"
        ));
    }
    let f = env.write("crash.yaml", &yaml);
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let iterations: usize = std::env::var("AX_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for _ in 0..iterations {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let (mut child, id) = spawn_run(&env, &f);
        std::thread::sleep(Duration::from_millis(20 + seed % 250));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Maybe kill it again while resuming.
        if seed.is_multiple_of(3) {
            let mut again = env
                .cmd(&["workflow", "resume", &id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("resume");
            std::thread::sleep(Duration::from_millis(30 + (seed >> 8) % 150));
            let _ = again.kill();
            let _ = again.wait();
        }
        let s = env.json(&["workflow", "status", &id, "--format", "json"]);
        let out = env.run(&["workflow", "resume", &id, "--format", "json"]);
        if s["state"] != "completed" {
            assert_eq!(
                out.status.code(),
                Some(0),
                "resume of {id} ({}): {}",
                s["state"],
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (attempts, steps, check) = env.store(async |store| {
            (
                store.attempts(&id).await.expect("attempts"),
                store.execution_steps(&id, true).await.expect("steps"),
                store.check().await.expect("check"),
            )
        });
        let mut completed: Vec<&str> = attempts
            .iter()
            .filter(|a| a.state == "completed")
            .map(|a| a.step.as_str())
            .collect();
        completed.sort_unstable();
        let before = completed.len();
        completed.dedup();
        assert_eq!(
            before,
            completed.len(),
            "a completed step ran again in {id}"
        );
        let done = steps
            .iter()
            .filter(|s| s.state == "completed" && s.output.is_some())
            .count();
        assert_eq!(done, 24, "every step completed with its output stored");
        assert_eq!(check, "ok");
    }
}

#[test]
fn serve_refuses_a_public_bind_without_a_token() {
    let env = Env::new(0);
    let out = env
        .cmd(&["serve", "--bind", "0.0.0.0", "--port", "0"])
        .env_remove("AX_TOKEN")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AX_TOKEN"), "{err}");
}

fn serve_answers_healthz_and_pauses_runs_on_shutdown(b: Backend) {
    let env = Env::on(b, 200);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let mut server = env
        .cmd(&["serve", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .get(format!("{base}/healthz"))
        .send()
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(Instant::now() < deadline, "ax serve never became healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r: Value = client
        .post(format!("{base}/api/executions"))
        .json(&serde_json::json!({"source": SLOW}))
        .send()
        .and_then(|r| r.json())
        .expect("start");
    let id = r["id"].as_str().expect("id").to_owned();
    std::thread::sleep(Duration::from_millis(300));
    // SIGINT: the server pauses what it runs and exits.
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(server.id().to_string())
        .status();
    assert_eq!(wait_exit(&mut server, Duration::from_secs(15)), Some(0));
    let s = env.json(&["workflow", "status", &id, "--format", "json"]);
    assert_eq!(s["state"], "paused", "{s}");
    let out = env.run(&["workflow", "resume", &id]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A provider key never reaches the database, its WAL, or the logs, even when
/// the provider repeats it back in answers and errors.
#[test]
fn api_keys_never_reach_the_database_or_logs() {
    const KEY: &str = "sk-test-LEAKCHECK-7d1f9c2a";
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (_fake, addr) = rt.block_on(super::common::fake_llm());
    let env = Env::new(0);
    let agents = env.write(
        "agents-openai.toml",
        &format!("[defaults]\nprovider = \"openai\"\n\n[providers.openai]\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nmodel = \"m\"\n"),
    );
    let f = env.write(
        "leak.yaml",
        "name: leak\nconfig: {continueOnError: true}\nsteps:\n  - {key: a, agent: backend, prompt: \"[leak] hello\"}\n  - {key: b, agent: backend, prompt: \"[leak-401] hello\"}\n",
    );
    let out = ax()
        .args(["workflow", "run", &f, "--format", "json"])
        .arg("--db")
        .arg(env.db())
        .arg("--agents")
        .arg(&agents)
        .env("OPENAI_API_KEY", KEY)
        .env("AX_LOG", "trace")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("\"state\""), "{stdout}\n{stderr}");
    assert!(!stdout.contains(KEY), "key in the output: {stdout}");
    assert!(!stderr.contains(KEY), "key in the logs: {stderr}");
    assert!(
        stdout.contains("[redacted]") || stderr.contains("[redacted]"),
        "the repeated key was scrubbed: {stdout}"
    );
    for name in ["ax.db", "ax.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.dir.path().join(name)) {
            let needle = KEY.as_bytes();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "key found in {name}"
            );
        }
    }
}

/// Several processes opening the same fresh database at once: every one of
/// them finds (or makes) the schema, none fails in the migrations. The
/// processes wait at a barrier (a file appearing) so that they really start
/// together.
fn concurrent_first_opens(b: Backend) {
    let env = Env::on(b, 0);
    let go = env.dir.path().join("go");
    let mut children: Vec<Child> = (0..12)
        .map(|_| {
            let ax = env.cmd(&["workflow", "list", "--format", "json"]);
            let mut line = format!("while [ ! -e '{}' ]; do :; done; exec", go.display());
            line.push_str(&format!(" '{}'", ax.get_program().to_string_lossy()));
            for a in ax.get_args() {
                line.push_str(&format!(" '{}'", a.to_string_lossy()));
            }
            let mut sh = Command::new("sh");
            sh.arg("-c").arg(line);
            for (k, v) in ax.get_envs() {
                match v {
                    Some(v) => sh.env(k, v),
                    None => sh.env_remove(k),
                };
            }
            sh.stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&go, "").expect("go");
    for child in &mut children {
        let code = wait_exit(child, Duration::from_secs(60));
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        assert_eq!(code, Some(0), "{stderr}");
    }
    assert_eq!(env.store(async |s| s.check().await.expect("check")), "ok");
}

crate::on_both_backends_sync!(
    pause_and_cancel_from_another_process,
    detached_runs_finish_in_the_background,
    crash_and_resume_loses_nothing,
    serve_answers_healthz_and_pauses_runs_on_shutdown,
    concurrent_first_opens,
);
