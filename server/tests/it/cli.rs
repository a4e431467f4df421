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
    /// How the commands ax prints for this environment start: with its
    /// `--db` and `--agents`, so that they can be copied as they are.
    fn ax(&self) -> String {
        format!(
            "ax --db {} --agents {}",
            self.db().to_string_lossy(),
            self.dir.path().join("agents.toml").display()
        )
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

/// `ax workflow validate` and `run` load sub-workflow files relative to the
/// parent; a missing one is an error at the parent's line and column.
#[test]
fn sub_workflow_files_are_loaded_relative_to_the_parent() {
    let env = Env::new(0);
    std::fs::create_dir_all(env.dir.path().join("flows/lib")).expect("mkdir");
    let parent = env.write(
        "flows/main.yaml",
        "name: main\nsteps:\n  - key: child\n    type: workflow\n    workflow: ./lib/child.yaml\n    inputs: {topic: rust}\n",
    );
    let out = env.run(&["workflow", "validate", &parent]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "{parent}:5:15: error[missing-workflow]: the workflow `./lib/child.yaml` cannot be loaded: cannot read"
        )),
        "{text}"
    );
    env.write(
        "flows/lib/child.yaml",
        "name: child\ninputs:\n  topic: {description: what}\nsteps:\n  - {key: a, agent: backend, prompt: \"about {{topic}}\"}\n",
    );
    let out = env.run(&["workflow", "validate", &parent]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = env.json(&["workflow", "run", &parent, "--format", "json"]);
    assert_eq!(v["state"], "completed", "{v}");
    let id = v["id"].as_str().expect("id");
    let list = env.run(&["workflow", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains(&format!("(child of {id} step child)")),
        "{text}"
    );
    let status = env.run(&["workflow", "status", id]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("children"), "{text}");
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
        // An approval waits for a person (tests of `ax workflow approve` are
        // below); sub-workflows run as child executions here.
        let text = std::fs::read_to_string(&f).expect("read");
        let analysis =
            ax_core::analyze(&text, &ax_core::Options::for_file(&f.display().to_string()));
        let waits = analysis.workflow().is_some_and(|w| {
            w.steps
                .iter()
                .any(|s| s.kind == ax_core::StepType::Approval)
        });
        if waits {
            continue;
        }
        let runs_children: Vec<String> = analysis
            .workflow()
            .map(|w| {
                w.steps
                    .iter()
                    .filter(|s| s.kind == ax_core::StepType::Workflow)
                    .map(|s| s.key.clone())
                    .collect()
            })
            .unwrap_or_default();
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
            if s["state"] == "completed" && !runs_children.iter().any(|k| s["key"] == *k) {
                assert_eq!(s["provider"], "echo");
            }
        }
        if !runs_children.is_empty() {
            // Its children are runs of their own, with their parent.
            let id = v["id"].as_str().expect("id");
            let status = env.json(&["workflow", "status", id, "--format", "json"]);
            let children = status["children"].as_array().expect("children");
            assert!(!children.is_empty(), "{status}");
            for c in children {
                assert_eq!(c["state"], "completed", "{c}");
                assert_eq!(c["parent"]["id"], id, "{c}");
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
        stderr.contains(&format!("{} workflow resume {id}", env.ax())),
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
    // A browser watches the run's event stream (it would only end on a final state).
    let stream = reqwest::blocking::Client::builder()
        .build()
        .expect("client")
        .get(format!("{base}/api/executions/{id}/events"))
        .header("accept", "text/event-stream")
        .send()
        .expect("event stream");
    assert_eq!(stream.status().as_u16(), 200);
    let watcher = std::thread::spawn(move || stream.text().unwrap_or_default());
    std::thread::sleep(Duration::from_millis(300));
    // SIGINT: the server pauses what it runs, ends the stream and exits.
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(server.id().to_string())
        .status();
    assert_eq!(
        wait_exit(&mut server, Duration::from_secs(15)),
        Some(0),
        "ax serve did not exit while an event stream was open"
    );
    let seen = watcher.join().expect("watcher");
    assert!(
        seen.contains("\"state\":\"paused\""),
        "the stream ends after the pause: {seen}"
    );
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

/// What sub-workflows spent is counted in their parent's summary line and
/// status (said apart), and in its JSON `spent`.
#[test]
fn a_run_s_spend_counts_its_sub_workflows() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (_fake, addr) = rt.block_on(super::common::fake_llm());
    let env = Env::new(0);
    let agents = env.write("agents-fake.toml", &super::common::agents_toml(addr));
    env.write(
        "child.yaml",
        "name: child\nsteps:\n  - {key: c, agent: backend, prompt: child}\n",
    );
    let f = env.write(
        "parent.yaml",
        "name: parent\nsteps:\n  - {key: p, agent: backend, prompt: parent}\n  - {key: sub, type: workflow, workflow: ./child.yaml}\n",
    );
    let run = |args: &[&str]| {
        ax().args(args)
            .arg("--db")
            .arg(env.db())
            .arg("--agents")
            .arg(&agents)
            .output()
            .expect("runs ax")
    };
    let out = run(&["workflow", "run", &f]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    // Each call is 11 tokens in and 7 out.
    assert!(
        stdout.contains("; 11→7 tokens + 18 in sub-workflows"),
        "{stdout}"
    );
    let list = run(&["workflow", "list", "--format", "json"]);
    let list: Value = serde_json::from_slice(&list.stdout).expect("JSON");
    let id = list
        .as_array()
        .and_then(|l| l.iter().find(|e| e["workflow"] == "parent"))
        .and_then(|e| e["id"].as_str())
        .expect("the parent's run")
        .to_owned();
    let out = run(&["workflow", "status", &id]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("36 tokens (its sub-workflows $"),
        "{stdout}"
    );
    let out = run(&["workflow", "status", &id, "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["spent"]["tokens"], 36, "{v}");
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

const APPROVAL: &str = "name: gated\nsteps:\n  - {key: build, agent: backend, prompt: build}\n  - {key: sign-off, type: approval, prompt: \"Ship {{build.result}}?\", dependencies: [build]}\n  - {key: ship, agent: backend, prompt: \"ship {{sign-off.result.comment}}\", dependencies: [sign-off]}\n";

/// The id of the only execution.
fn only_execution(env: &Env) -> String {
    let list = env.json(&["workflow", "list", "--format", "json"]);
    list[0]["id"].as_str().expect("an execution").to_owned()
}

fn wait_state(env: &Env, id: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = env.json(&["workflow", "status", id, "--format", "json"]);
        if s["state"] == state {
            return;
        }
        assert!(Instant::now() < deadline, "not {state}: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The foreground run shows the approval and waits; `ax workflow approve` from
/// another process lets it go on to its end.
fn approve_from_another_process(b: Backend) {
    let env = Env::on(b, 5);
    let f = env.write("gated.yaml", APPROVAL);
    let mut run = env
        .cmd(&["workflow", "run", &f])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn run");
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let list = env.json(&["workflow", "list", "--format", "json"]);
        if list[0]["state"] == "waiting" {
            break list[0]["id"].as_str().expect("id").to_owned();
        }
        assert!(Instant::now() < deadline, "never waiting: {list}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let waiting = env.json(&["workflow", "list", "--state", "waiting", "--format", "json"]);
    assert_eq!(waiting.as_array().map(Vec::len), Some(1));
    let out = env.run(&[
        "workflow",
        "approve",
        &id,
        "sign-off",
        "--comment",
        "go ahead",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("approved step `sign-off`"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let code = wait_exit(&mut run, Duration::from_secs(30));
    let mut stdout = String::new();
    if let Some(mut o) = run.stdout.take() {
        use std::io::Read;
        let _ = o.read_to_string(&mut stdout);
    }
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("sign-off"), "{stdout}");
    assert!(
        stdout.contains(&format!("{} workflow approve {id} sign-off", env.ax())),
        "{stdout}"
    );
    let s = env.json(&["workflow", "status", &id, "--format", "json"]);
    assert_eq!(s["state"], "completed");
}

/// A detached run that waits has no driver; `approve` then drives it on here,
/// `reject` fails it with the reason, and a second decision is refused.
fn decisions_drive_a_waiting_run_on(b: Backend) {
    let env = Env::on(b, 5);
    let f = env.write("gated.yaml", APPROVAL);
    env.json(&["workflow", "run", &f, "--detach", "--format", "json"]);
    let id = only_execution(&env);
    wait_state(&env, &id, "waiting");
    let out = env.run(&[
        "workflow",
        "approve",
        &id,
        "sign-off",
        "--data",
        "{not json",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data is not JSON"));
    let out = env.run(&[
        "workflow",
        "reject",
        &id,
        "sign-off",
        "--comment",
        "not today",
        "--by",
        "cy",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(ax_server::cli::EXIT_FAILED),
        "{stderr}"
    );
    let s = env.json(&["workflow", "status", &id, "--format", "json"]);
    assert_eq!(s["state"], "failed");
    assert_eq!(
        s["reason"],
        "step `sign-off` failed: rejected by cy: not today"
    );
    let out = env.run(&["workflow", "approve", &id, "sign-off"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child waits for a decision: `resume` of its parent says which run and
/// step; approving the child from another process drives the child and then
/// its parent to the end before that process exits.
fn a_child_s_approval_from_another_process(b: Backend) {
    let env = Env::on(b, 5);
    env.write(
        "child.yaml",
        "name: child\nsteps:\n  - {key: ok, type: approval, prompt: go?}\n  - {key: a, agent: backend, prompt: a, dependencies: [ok]}\n",
    );
    let f = env.write(
        "parent.yaml",
        "name: parent\nsteps:\n  - {key: sub, type: workflow, workflow: ./child.yaml}\n  - {key: b, agent: backend, prompt: b, dependencies: [sub]}\n",
    );
    let v = env.json(&["workflow", "run", &f, "--detach", "--format", "json"]);
    let id = v["id"].as_str().expect("id").to_owned();
    wait_state(&env, &id, "waiting");
    let status = env.json(&["workflow", "status", &id, "--format", "json"]);
    let child = status["children"][0]["id"]
        .as_str()
        .expect("a child")
        .to_owned();
    wait_state(&env, &child, "waiting");
    let out = env.run(&["workflow", "pause", &id]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_state(&env, &child, "paused");
    let out = env.run(&["workflow", "resume", &id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "its sub-workflow run {child} (step `sub`) waits for a decision on `ok`: `{ax} workflow approve {child} ok`",
            ax = env.ax()
        )),
        "{stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = env.run(&["workflow", "approve", &child, "ok"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = env.json(&["workflow", "status", &id, "--format", "json"]);
    assert_eq!(s["state"], "completed", "{s}");
}

crate::on_both_backends_sync!(
    a_child_s_approval_from_another_process,
    pause_and_cancel_from_another_process,
    approve_from_another_process,
    decisions_drive_a_waiting_run_on,
    detached_runs_finish_in_the_background,
    crash_and_resume_loses_nothing,
    serve_answers_healthz_and_pauses_runs_on_shutdown,
    concurrent_first_opens,
);

/// `--input name=value` is the JSON value when the value parses as JSON, else
/// the text; `@path` is a file's text (docs/format.md, "Inputs").
#[test]
fn inputs_are_json_values_when_they_parse() {
    let env = Env::new(0);
    let f = env.write(
        "inputs.yaml",
        "name: inputs\ninputs:\n  n:\n  tags:\n  opts:\n  flag:\n  topic:\n  zip:\n  doc:\nsteps:\n  - {key: a, agent: backend, prompt: \"{{n}} {{tags}} {{opts}} {{flag}} {{topic}} {{zip}} {{doc}}\"}\n",
    );
    let doc = env.write("doc.txt", "[1, 2]");
    let doc_arg = format!("doc=@{doc}");
    let v = env.json(&[
        "workflow",
        "run",
        &f,
        "--format",
        "json",
        "--input",
        "n=800",
        "--input",
        "tags=[\"a\", \"b\"]",
        "--input",
        "opts={\"k\": 1}",
        "--input",
        "flag=true",
        "--input",
        "topic=solid-state batteries",
        "--input",
        "zip=\"01234\"",
        "--input",
        &doc_arg,
    ]);
    assert_eq!(v["state"], "completed", "{v}");
    assert_eq!(
        v["inputs"],
        serde_json::json!({"n": 800, "tags": ["a", "b"], "opts": {"k": 1}, "flag": true,
                           "topic": "solid-state batteries", "zip": "01234", "doc": "[1, 2]"})
    );
}

/// `ax workflow stats [WORKFLOW]` on a database with known runs.
#[test]
fn workflow_stats_per_workflow() {
    let env = Env::new(0);
    let ok = env.write(
        "ok.yaml",
        "name: ok-flow\nsteps:\n  - {key: a, agent: backend, prompt: hi}\n",
    );
    for _ in 0..2 {
        assert_eq!(env.run(&["workflow", "run", &ok]).status.code(), Some(0));
    }
    let v = env.json(&["workflow", "stats", "--format", "json"]);
    let w = &v["workflows"][0];
    assert_eq!(w["name"], "ok-flow", "{v}");
    assert_eq!(w["runs"], 2);
    assert_eq!(w["byState"], serde_json::json!({"completed": 2}));
    assert_eq!(w["successRate"], 100.0);
    let out = env.run(&["workflow", "stats", "ok-flow"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("runs       2: 2 completed"), "{text}");
    assert!(
        text.contains("success    100.0% of finished runs"),
        "{text}"
    );
    let out = env.run(&["workflow", "stats", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no workflow is named `nope`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--budget-tokens` pauses a run before the attempt that would pass it, the
/// status says why and what was spent, `resume --budget-tokens` raises it; a
/// second `--cache` run is answered from the cache; `ax cache stats|clear`.
#[test]
fn budget_and_cache_from_the_command_line() {
    let env = Env::new(0);
    let f = env.write(
        "b.yaml",
        "name: b\nsteps:\n  - {key: a, agent: writer, prompt: one, maxTokens: 50}\n  - {key: b, agent: writer, prompt: two, maxTokens: 50, dependencies: [a]}\n",
    );
    let out = env.run(&["workflow", "run", &f, "--budget-tokens", "20"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("paused at its budget") && err.contains("--budget-usd"),
        "{err}"
    );
    let id = only_execution(&env);
    let st = env.json(&["workflow", "status", &id, "--format", "json"]);
    assert_eq!(st["state"], "paused");
    let reason = st["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("budget: the next attempt of `a`"),
        "{reason}"
    );
    assert_eq!(st["budget"]["tokens"], 20);
    assert_eq!(st["spent"]["tokens"], 0);
    let out = env.run(&["workflow", "resume", &id, "--budget-tokens", "100000"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = env.json(&["workflow", "status", &id, "--format", "json"]);
    assert_eq!(st["state"], "completed");
    assert_eq!(st["budget"]["tokens"], 100000);
    let out = env.run(&["workflow", "run", &f, "--budget-usd", "-1"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    // The cache: the first --cache run fills it, the second is answered from it.
    for _ in 0..2 {
        let v = env.json(&["workflow", "run", &f, "--cache", "--format", "json"]);
        assert_eq!(v["state"], "completed");
    }
    let last = env.json(&["workflow", "list", "--limit", "1", "--format", "json"]);
    let id = last[0]["id"].as_str().expect("id").to_owned();
    let st = env.json(&["workflow", "status", &id, "--format", "json"]);
    assert_eq!(st["steps"][0]["provider"], "cache");
    assert_eq!(st["steps"][1]["provider"], "cache");
    let stats = env.json(&["cache", "stats", "--format", "json"]);
    assert_eq!(
        (stats["entries"].as_u64(), stats["hits"].as_u64()),
        (Some(2), Some(2))
    );
    let cleared = env.json(&["cache", "clear", "--older-than", "30d", "--format", "json"]);
    assert_eq!(cleared["removed"], 0);
    let cleared = env.json(&["cache", "clear", "--format", "json"]);
    assert_eq!(cleared["removed"], 2);
}
