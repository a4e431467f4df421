//! The workflows in `examples/`: each one is valid without warnings (with the
//! sub-workflows it runs), and each one runs to its end with the sans-IO executor
//! against simulated agents whose answers satisfy the steps' `outputSchema`s, JSON
//! paths and `when` conditions; approvals are decided and sub-workflows run as
//! child executions of their own.
//!
//! The files are embedded with `include_str!` so that the same tests run as wasm in
//! a browser, where there is no filesystem. Natively, a test also reads the
//! directory and fails when a workflow file is missing from [`EXAMPLES`], so the
//! list cannot drift; and every file in the directory is validated from disk.

use ax_core::exec::{Action, Event, Execution, StartChild, StartStep, StepError};
use ax_core::subworkflow::{DocumentLoader, analyze_tree};
use ax_core::template::Template;
use ax_core::{ErrorClass, ExecutionState, Options, Plan, StepState, analyze};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;
#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// Every workflow file in `examples/`, by file name.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "code-review.yaml",
        include_str!("../../examples/code-review.yaml"),
    ),
    (
        "code-review-signoff.yaml",
        include_str!("../../examples/code-review-signoff.yaml"),
    ),
    (
        "content-localization.yaml",
        include_str!("../../examples/content-localization.yaml"),
    ),
    (
        "data-pipeline.json",
        include_str!("../../examples/data-pipeline.json"),
    ),
    (
        "deployment-pipeline.yaml",
        include_str!("../../examples/deployment-pipeline.yaml"),
    ),
    (
        "incident-postmortem.yaml",
        include_str!("../../examples/incident-postmortem.yaml"),
    ),
    (
        "product-launch.json",
        include_str!("../../examples/product-launch.json"),
    ),
    (
        "research-briefing.yaml",
        include_str!("../../examples/research-briefing.yaml"),
    ),
    (
        "research-report.yaml",
        include_str!("../../examples/research-report.yaml"),
    ),
    (
        "research-topic.yaml",
        include_str!("../../examples/research-topic.yaml"),
    ),
    (
        "support-triage.json",
        include_str!("../../examples/support-triage.json"),
    ),
];

const SCHEMA_COMMENT: &str = "# yaml-language-server: $schema=../docs/workflow.schema.json";

fn example(name: &str) -> &'static str {
    EXAMPLES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .unwrap_or_else(|| panic!("no example `{name}` in EXAMPLES"))
}

/// Validate one file with the sub-workflows it runs (found among the examples):
/// no errors, no warnings, a plan.
fn check_valid(name: &str, text: &str) -> Arc<Plan> {
    let mut loader = DocumentLoader::new(
        EXAMPLES
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned())),
    );
    let analysis = analyze_tree(text, &Options::for_file(name), name, &mut loader);
    let report = &analysis.report;
    let problems: Vec<String> = report
        .errors
        .iter()
        .map(|p| p.render(name, "error"))
        .chain(report.warnings.iter().map(|p| p.render(name, "warning")))
        .collect();
    assert!(
        report.valid && problems.is_empty(),
        "{name} should be valid without warnings:\n{}",
        problems.join("\n")
    );
    analysis
        .plan
        .unwrap_or_else(|| panic!("{name} is valid but has no plan"))
}

#[test]
fn every_example_is_valid_without_warnings() {
    assert!(
        EXAMPLES.len() >= 7,
        "expected the seed example and at least six more"
    );
    let json = EXAMPLES
        .iter()
        .filter(|(n, _)| n.ends_with(".json"))
        .count();
    assert!(
        json >= 2,
        "expected at least two JSON examples, found {json}"
    );
    for (name, text) in EXAMPLES {
        let plan = check_valid(name, text);
        assert!(!plan.is_empty(), "{name} has no steps");
        if !name.ends_with(".json") {
            assert_eq!(
                text.lines().next(),
                Some(SCHEMA_COMMENT),
                "{name} should start with the yaml-language-server schema comment"
            );
        }
    }
}

#[test]
fn code_review_is_the_seed_workflow() {
    let name = "code-review.yaml";
    let analysis = analyze(example(name), &Options::for_file(name));
    // The report as `ax workflow validate --format json` prints it, with `order` and `levels`.
    let report = analysis.full_report();
    assert!(report.valid && report.warnings.is_empty(), "{report:?}");
    assert_eq!(
        report.order,
        Some(vec![
            "parse-changes".to_owned(),
            "security-audit".to_owned(),
            "quality-check".to_owned(),
            "aggregate-results".to_owned(),
        ])
    );
    assert_eq!(
        report.levels,
        Some(vec![
            vec!["parse-changes".to_owned()],
            vec!["security-audit".to_owned(), "quality-check".to_owned()],
            vec!["aggregate-results".to_owned()],
        ])
    );
    let wf = &analysis
        .plan
        .as_ref()
        .expect("a valid workflow has a plan")
        .workflow;
    assert_eq!(wf.name, "code-review-workflow");
    assert_eq!(wf.version, "1.0.0");
    assert_eq!(
        wf.steps
            .iter()
            .map(|s| s.agent.as_str())
            .collect::<Vec<_>>(),
        ["backend", "security", "quality", "product"]
    );
    assert_eq!(
        wf.steps.iter().map(|s| s.parallel).collect::<Vec<_>>(),
        [false, true, true, false]
    );
}

/// Natively: every workflow file on disk is in [`EXAMPLES`] (and vice versa), with
/// the same content, and validates when read from disk.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn the_embedded_list_covers_the_directory() {
    let is_workflow_file = |name: &str| {
        let lower = name.to_ascii_lowercase();
        lower.ends_with(".yaml") || lower.ends_with(".yml") || lower.ends_with(".json")
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut on_disk = BTreeSet::new();
    for entry in
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
    {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().is_ok_and(|t| t.is_file()) || !is_workflow_file(&name) {
            continue;
        }
        let text =
            std::fs::read_to_string(entry.path()).unwrap_or_else(|e| panic!("reading {name}: {e}"));
        check_valid(&name, &text);
        if let Some((_, embedded)) = EXAMPLES.iter().find(|(n, _)| *n == name) {
            assert_eq!(
                *embedded, text,
                "{name}: the embedded copy differs from the file"
            );
        }
        on_disk.insert(name);
    }
    let listed: BTreeSet<String> = EXAMPLES.iter().map(|(n, _)| (*n).to_owned()).collect();
    let missing: Vec<&String> = on_disk.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "add these files to EXAMPLES in core/tests/examples.rs (and a scenario): {missing:?}"
    );
    let gone: Vec<&String> = listed.difference(&on_disk).collect();
    assert!(
        gone.is_empty(),
        "EXAMPLES lists files that are not in examples/: {gone:?}"
    );
}

// ---- Simulated runs ----

/// How a simulated agent answers one attempt.
#[derive(Clone)]
enum Reply {
    Ok(String),
    Fail(StepError),
}

fn ok(v: Value) -> Reply {
    Reply::Ok(v.to_string())
}

/// How a simulated person decides an approval.
#[derive(Clone)]
enum Decision {
    Approve(&'static str),
    Reject(&'static str),
}

/// One simulated run of an example.
struct Scenario {
    file: &'static str,
    name: &'static str,
    inputs: Value,
    /// Answers by step key (`workflow-name/key` for a sub-workflow's step), one
    /// per attempt of an item (the last one repeats). Steps not listed answer
    /// with plain text.
    replies: Vec<(&'static str, Vec<Reply>)>,
    /// Decisions by approval step key.
    decisions: Vec<(&'static str, Decision)>,
    expect: ExecutionState,
    skipped: &'static [&'static str],
    failed: &'static [&'static str],
    /// Steps the run never reached (it failed first).
    pending: &'static [&'static str],
    /// Text that the rendered prompt of a step must contain (last attempt).
    prompt_contains: Vec<(&'static str, &'static str)>,
}

impl Scenario {
    fn new(file: &'static str, name: &'static str, inputs: Value) -> Scenario {
        Scenario {
            file,
            name,
            inputs,
            replies: Vec::new(),
            decisions: Vec::new(),
            expect: ExecutionState::Completed,
            skipped: &[],
            failed: &[],
            pending: &[],
            prompt_contains: Vec::new(),
        }
    }
    fn reply(mut self, key: &'static str, answers: Vec<Reply>) -> Scenario {
        self.replies.push((key, answers));
        self
    }
    fn json(self, key: &'static str, v: Value) -> Scenario {
        self.reply(key, vec![ok(v)])
    }
    fn decide(mut self, key: &'static str, decision: Decision) -> Scenario {
        self.decisions.push((key, decision));
        self
    }
    fn skipped(mut self, keys: &'static [&'static str]) -> Scenario {
        self.skipped = keys;
        self
    }
    fn pending(mut self, keys: &'static [&'static str]) -> Scenario {
        self.pending = keys;
        self
    }
    fn failed(mut self, keys: &'static [&'static str]) -> Scenario {
        self.failed = keys;
        self
    }
    fn ends(mut self, state: ExecutionState) -> Scenario {
        self.expect = state;
        self
    }
    fn prompt(mut self, key: &'static str, needle: &'static str) -> Scenario {
        self.prompt_contains.push((key, needle));
        self
    }
}

/// What a simulated run produced.
struct Outcome {
    exec: Execution,
    /// Rendered prompts by step key (`workflow-name/key` in children), one per
    /// attempt.
    prompts: BTreeMap<String, Vec<String>>,
    /// Child executions, in the order they ended.
    children: Vec<Execution>,
}

/// What the simulated run is waiting to do next.
enum Work {
    Attempt(StartStep),
    Child(StartChild),
    Decide(String),
}

/// Drive an execution to its end: answer every `StartStep` in order (250 ms per
/// answer), decide approvals as the scenario says, run each child execution to
/// its end (recursively) and report it, and when nothing is in flight, tick to
/// the next wake-up (retries).
fn simulate(plan: Arc<Plan>, s: &Scenario) -> Outcome {
    let inputs: BTreeMap<String, Value> = match &s.inputs {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => BTreeMap::new(),
    };
    let mut out = Outcome {
        exec: Execution::new(plan, inputs, 42)
            .unwrap_or_else(|e| panic!("{} / {}: inputs refused: {e}", s.file, s.name)),
        prompts: BTreeMap::new(),
        children: Vec::new(),
    };
    drive(&mut out, s, "");
    out
}

/// Run `out.exec` to its end. `prefix` names the workflow in reply keys
/// (`""` for the example itself).
fn drive(out: &mut Outcome, s: &Scenario, prefix: &str) {
    let label = format!("{} / {} {prefix}", s.file, s.name);
    let mut queue: VecDeque<Work> = VecDeque::new();
    // Attempts per (key, item), for the scenario's per-attempt answers.
    let mut tries: BTreeMap<(String, Option<u32>), usize> = BTreeMap::new();
    let mut now = 1_000u64;
    let absorb = |actions: Vec<Action>,
                  queue: &mut VecDeque<Work>,
                  prompts: &mut BTreeMap<String, Vec<String>>| {
        for a in actions {
            match a {
                Action::StartStep(start) => {
                    prompts
                        .entry(format!("{prefix}{}", start.key))
                        .or_default()
                        .push(start.prompt.clone());
                    queue.push_back(Work::Attempt(start));
                }
                Action::StartChild(c) => queue.push_back(Work::Child(c)),
                Action::AwaitDecision { key, prompt, .. } => {
                    prompts
                        .entry(format!("{prefix}{key}"))
                        .or_default()
                        .push(prompt);
                    queue.push_back(Work::Decide(key));
                }
                _ => {}
            }
        }
    };
    let actions = out
        .exec
        .handle(Event::Start, now)
        .unwrap_or_else(|e| panic!("{label}: start: {e}"));
    absorb(actions, &mut queue, &mut out.prompts);
    for _ in 0..10_000 {
        if out.exec.state().is_terminal() {
            break;
        }
        let event = match queue.pop_front() {
            Some(Work::Attempt(start)) => {
                now += 250;
                let n = tries.entry((start.key.clone(), start.item)).or_default();
                *n += 1;
                let scoped = format!("{prefix}{}", start.key);
                let answers = s
                    .replies
                    .iter()
                    .find(|(k, _)| *k == scoped)
                    .map(|(_, a)| a.as_slice());
                let reply = match answers {
                    Some(list) if !list.is_empty() => list[(*n - 1).min(list.len() - 1)].clone(),
                    _ => Reply::Ok(format!(
                        "[{}] Simulated answer for `{}` (attempt {}): the requested analysis, in prose.",
                        start.agent, start.key, start.attempt
                    )),
                };
                match reply {
                    Reply::Ok(output) => Event::StepSucceeded {
                        key: start.key,
                        attempt: start.attempt,
                        output,
                    },
                    Reply::Fail(error) => Event::StepFailed {
                        key: start.key,
                        attempt: start.attempt,
                        error,
                    },
                }
            }
            Some(Work::Decide(key)) => {
                now += 60_000;
                match s.decisions.iter().find(|(k, _)| *k == key).map(|(_, d)| d) {
                    Some(Decision::Approve(comment)) => Event::Approve {
                        key,
                        comment: Some((*comment).to_owned()),
                        data: None,
                        by: Some("reviewer".into()),
                    },
                    Some(Decision::Reject(comment)) => Event::Reject {
                        key,
                        comment: Some((*comment).to_owned()),
                        by: Some("reviewer".into()),
                    },
                    None => panic!("{label}: approval `{key}` has no decision in the scenario"),
                }
            }
            Some(Work::Child(c)) => {
                now += 250;
                let i = out.exec.plan().index_of(&c.key).expect("the child's step");
                let sub = out
                    .exec
                    .plan()
                    .sub_workflow(i)
                    .unwrap_or_else(|| panic!("{label}: `{}` has no loaded sub-workflow", c.key))
                    .clone();
                let exec = Execution::new(sub.plan.clone(), c.inputs.clone(), 7)
                    .unwrap_or_else(|e| panic!("{label}: the child's inputs were refused: {e}"));
                let mut child = Outcome {
                    exec,
                    prompts: std::mem::take(&mut out.prompts),
                    children: std::mem::take(&mut out.children),
                };
                drive(&mut child, s, &format!("{}/", sub.plan.workflow.name));
                out.prompts = std::mem::take(&mut child.prompts);
                out.children = std::mem::take(&mut child.children);
                let ended = match child.exec.outcome() {
                    Some(Ok(result)) => Event::ChildCompleted {
                        key: c.key,
                        attempt: c.attempt,
                        result,
                        spent: Default::default(),
                    },
                    Some(Err(error)) => Event::ChildFailed {
                        key: c.key,
                        attempt: c.attempt,
                        error,
                        spent: Default::default(),
                    },
                    None => panic!("{label}: the child did not end"),
                };
                out.children.push(child.exec);
                ended
            }
            None => match out.exec.next_wakeup() {
                Some(at) => {
                    now = now.max(at);
                    Event::Tick
                }
                None => panic!(
                    "{label}: stuck in {} with nothing in flight and nothing scheduled",
                    out.exec.state()
                ),
            },
        };
        let actions = out
            .exec
            .handle(event, now)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        absorb(actions, &mut queue, &mut out.prompts);
    }
}

fn describe_steps(exec: &Execution) -> String {
    let plan = exec.plan();
    (0..plan.len())
        .map(|i| {
            let s = &exec.steps()[i];
            format!(
                "  {}: {} (attempts {}){}{}",
                plan.key(i),
                s.state,
                s.attempt,
                s.reason
                    .as_ref()
                    .map(|r| format!(", {r}"))
                    .unwrap_or_default(),
                s.error
                    .as_ref()
                    .map(|e| format!(", error {}: {}", e.class, e.message))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn run_scenario(s: &Scenario) -> Outcome {
    let label = format!("{} / {}", s.file, s.name);
    let plan = check_valid(s.file, example(s.file));
    let out = simulate(plan.clone(), s);
    let exec = &out.exec;
    assert_eq!(
        exec.state(),
        s.expect,
        "{label}: ended {} ({:?}):\n{}",
        exec.state(),
        exec.reason(),
        describe_steps(exec)
    );
    let in_state = |state: StepState| -> BTreeSet<&str> {
        (0..plan.len())
            .filter(|&i| exec.steps()[i].state == state)
            .map(|i| plan.key(i))
            .collect()
    };
    let want_skipped: BTreeSet<&str> = s.skipped.iter().copied().collect();
    let want_failed: BTreeSet<&str> = s.failed.iter().copied().collect();
    assert_eq!(
        in_state(StepState::Skipped),
        want_skipped,
        "{label}: skipped steps\n{}",
        describe_steps(exec)
    );
    assert_eq!(
        in_state(StepState::Failed),
        want_failed,
        "{label}: failed steps\n{}",
        describe_steps(exec)
    );
    let want_pending: BTreeSet<&str> = s.pending.iter().copied().collect();
    assert_eq!(
        in_state(StepState::Pending),
        want_pending,
        "{label}: pending steps\n{}",
        describe_steps(exec)
    );
    // Everything else completed.
    for i in 0..plan.len() {
        let key = plan.key(i);
        if !want_skipped.contains(key) && !want_failed.contains(key) && !want_pending.contains(key)
        {
            assert_eq!(
                exec.steps()[i].state,
                StepState::Completed,
                "{label}: step `{key}`\n{}",
                describe_steps(exec)
            );
        }
    }
    // Every placeholder of a started step was filled in.
    for step in &plan.workflow.steps {
        let Some(rendered) = out.prompts.get(&step.key) else {
            continue;
        };
        let template = Template::parse(&step.prompt)
            .unwrap_or_else(|_| panic!("{label}: `{}` prompt parses", step.key));
        for prompt in rendered {
            for ph in template.placeholders() {
                assert!(
                    !prompt.contains(&ph.raw),
                    "{label}: `{}` was not filled in for `{}`:\n{prompt}",
                    ph.raw,
                    step.key
                );
            }
        }
    }
    for (key, needle) in &s.prompt_contains {
        let last = out
            .prompts
            .get(*key)
            .and_then(|p| p.last())
            .unwrap_or_else(|| panic!("{label}: `{key}` never started"));
        assert!(
            last.contains(needle),
            "{label}: the prompt of `{key}` should contain {needle:?}:\n{last}"
        );
    }
    out
}

fn scenarios() -> Vec<Scenario> {
    vec![
        // -- code-review.yaml --
        Scenario::new(
            "code-review.yaml",
            "seed review",
            json!({"git_diff": "diff --git a/src/auth/session.rs b/src/auth/session.rs\n--- a/src/auth/session.rs\n+++ b/src/auth/session.rs\n@@ -40,7 +40,9 @@\n-    let ttl = 3600;\n+    let ttl = config.session_ttl.unwrap_or(3600);\n"}),
        )
        .json("security-audit", json!({"findings": [], "verdict": "no vulnerabilities found"}))
        .prompt("parse-changes", "Parse git diff and extract changed files: diff --git a/src/auth/session.rs")
        .prompt("aggregate-results", "security={\"findings\":[],\"verdict\":\"no vulnerabilities found\"}, quality=[quality]"),
        // -- deployment-pipeline.yaml --
        Scenario::new(
            "deployment-pipeline.yaml",
            "go, with migrations",
            json!({
                "service": "billing-api",
                "release_version": "v4.12.0",
                "changelog": "#1841 Multi-currency invoices behind a flag (ana)\n#1849 Add invoices.currency column with batched backfill (li)\n#1852 Bump openssl to 3.0.15 (bot)",
            }),
        )
        .reply("assess-release", vec![Reply::Ok(
            "Here is the assessment:\n```json\n{\"risk\": \"medium\", \"hasMigrations\": true, \"migrationSummary\": \"Adds a nullable invoices.currency column and backfills it in batches of 10,000 rows.\", \"featureFlags\": [\"multi-currency-invoices\"], \"affectedComponents\": [\"invoice-service\", \"billing-db\"], \"summary\": \"Multi-currency invoices behind a flag, one additive migration with a batched backfill, and an OpenSSL patch bump.\"}\n```".to_owned(),
        )])
        .json("go-no-go", json!({"decision": "go", "conditions": ["5xx rate under 0.5% at each canary stage"], "rationale": "Medium risk, additive migration with a rollback path, no blocking security findings."}))
        .prompt("migration-review", "Adds a nullable invoices.currency column")
        .prompt("migration-review", "for a canary rollout")
        .prompt("test-plan", "release \"medium\" risk")
        .prompt("release-announcement", "([\"multi-currency-invoices\"])")
        .prompt("rollout-runbook", "[\"5xx rate under 0.5% at each canary stage\"]"),
        Scenario::new(
            "deployment-pipeline.yaml",
            "no-go, no migrations",
            json!({
                "service": "search-gateway",
                "release_version": "v2.3.1",
                "changelog": "#77 Replace query parser (sam)",
                "environment": "eu-production",
                "rollout_strategy": "blue-green",
            }),
        )
        .json("assess-release", json!({"risk": "high", "hasMigrations": false, "affectedComponents": ["query-parser"], "summary": "A rewrite of the query parser with no feature flag and no way to run old and new side by side."}))
        .json("go-no-go", json!({"decision": "no-go", "rationale": "High risk without a rollback path."}))
        .skipped(&["migration-review", "rollout-runbook", "release-announcement"])
        .prompt("test-plan", "eu-production with a blue-green rollout")
        .prompt("test-plan", "these feature flags:\nnone."),
        // -- code-review-signoff.yaml --
        Scenario::new(
            "code-review-signoff.yaml",
            "per-file audits, approved",
            json!({"git_diff": review_diff()}),
        )
        .json("parse-changes", review_files())
        .json("security-audit", json!({"path": "src/auth/session.rs", "severity": "low", "findings": [{"line": 42, "issue": "TTL read from config without an upper bound", "fix": "clamp to 86400"}]}))
        .decide("sign-off", Decision::Approve("LGTM once the TTL is clamped"))
        .prompt("security-audit", "`web/login.ts` (language unknown)")
        .prompt("security-audit", "Audit file 2 of this change")
        .prompt("sign-off", "Security audit, per file: [{\"findings\"")
        .prompt("aggregate-results", "with the comment:\nLGTM once the TTL is clamped."),
        Scenario::new(
            "code-review-signoff.yaml",
            "rejected at sign-off",
            json!({"git_diff": review_diff()}),
        )
        .json("parse-changes", review_files())
        .json("security-audit", json!({"path": "x", "severity": "high", "findings": [{"issue": "SQL built from user input"}]}))
        .decide("sign-off", Decision::Reject("fix the SQL injection first"))
        .failed(&["sign-off"])
        .pending(&["aggregate-results"])
        .ends(ExecutionState::Failed),
        // -- research-briefing.yaml (runs research-topic.yaml per topic) --
        Scenario::new(
            "research-briefing.yaml",
            "one child run per topic",
            json!({"question": "Should we offer an on-premise edition of our analytics product in 2026?"}),
        )
        .json("frame", json!({"topics": [
            {"name": "on-premise demand", "question": "How many of our enterprise prospects require on-premise deployment?"},
            {"name": "packaging effort", "question": "What would it take to package our stack for customer data centers?"},
            {"name": "competitor offers", "question": "Which competitors sell on-premise analytics, and at what price?"}
        ]}))
        .json("research-topic/gather-sources", json!({"sources": [{"title": "Enterprise deployment survey", "publisher": "Analyst Co", "date": "2025-06", "claim": "31% of regulated buyers require on-premise"}]}))
        .json("research-topic/fact-check", json!({"confidence": "high", "issues": []}))
        .prompt("research-topic/gather-sources", "on \"competitor offers\" that help\nanswer: Which competitors")
        .prompt("synthesize", "\"confidence\":\"high\""),
        // -- research-topic.yaml, on its own --
        Scenario::new(
            "research-topic.yaml",
            "one topic",
            json!({"topic": "on-premise demand", "question": "How many prospects require on-premise deployment?"}),
        )
        .json("gather-sources", json!({"sources": [{"title": "Survey", "claim": "31% require on-premise"}]}))
        .json("fact-check", json!({"confidence": "medium", "issues": [{"claim": "most buyers", "problem": "the survey says 31%"}]})),
        // -- research-report.yaml --
        Scenario::new(
            "research-report.yaml",
            "fan-out and fan-in",
            json!({"question": "Should we offer an on-premise edition of our analytics product in 2026?"}),
        )
        .json("frame-question", json!({
            "subquestions": [
                "How large is the on-premise analytics market and who buys it?",
                "What would it take to package our stack for on-premise installs?",
                "Which competitors sell on-premise editions and at what price?",
                "Which regulatory and operational risks come with on-premise?"
            ],
            "keywords": ["self-hosted analytics", "air-gapped BI", "data residency"],
            "outOfScope": ["hardware appliances"]
        }))
        .json("fact-check", json!({"verdict": "revise", "issues": [{"claim": "The market grows 30% a year", "problem": "The note gives 18-22%", "fix": "Say 18-22% a year (Gartner, 2025)"}]}))
        .prompt("market-research", "about the market: How large is the on-premise analytics market")
        .prompt("technology-research", "What would it take to package our stack")
        .prompt("competitor-research", "Which competitors sell on-premise editions")
        .prompt("risk-research", "Nothing listed here is in scope:\n[\"hardware appliances\"]")
        .prompt("synthesize", "in at most\n1500 words")
        .prompt("synthesize", "for the executive leadership team")
        .prompt("final-report", "was\n\"revise\""),
        // -- data-pipeline.json --
        Scenario::new(
            "data-pipeline.json",
            "orders ingestion",
            json!({
                "source_name": "shopify.orders",
                "source_schema": "id BIGINT, email TEXT, total_price NUMERIC(12,2), currency CHAR(3), created_at TIMESTAMP, updated_at TIMESTAMP",
                "sample_rows": "id,email,total_price,currency,created_at,updated_at\n1001,ana@example.com,59.90,EUR,2025-10-01T10:00:00Z,2025-10-01T10:00:00Z",
            }),
        )
        .json("profile-source", json!({
            "table": "orders",
            "rowCount": 200,
            "columns": [
                {"name": "id", "type": "bigint", "nullFraction": 0, "pii": false},
                {"name": "email", "type": "text", "nullFraction": 0.02, "pii": true, "notes": "customer email"},
                {"name": "updated_at", "type": "timestamp", "nullFraction": 0, "pii": false}
            ],
            "primaryKeyCandidates": ["id", "email, created_at"],
            "issues": ["3 rows have total_price < 0 (refunds?)"]
        }))
        .prompt("model-design", "Use id as the grain")
        .prompt("model-design", "in snowflake")
        .prompt("data-tests", "The sample had 200 rows")
        .prompt("data-tests", "warn after 6 hours")
        .prompt("orchestration", "scheduled at `0 3 * * *`"),
        // -- incident-postmortem.yaml --
        Scenario::new("incident-postmortem.yaml", "sev2 with customer impact", incident_inputs())
            .json("triage", json!({"severity": "sev2", "category": "availability", "customerImpact": true, "impactedCustomers": 340, "durationMinutes": 47, "services": ["checkout-api"], "summary": "Checkout failed for EU customers after a connection-pool change. Rolled back after 47 minutes."}))
            .skipped(&["security-assessment"])
            .prompt("customer-comms", "roughly 340")
            .prompt("customer-comms", "as \"The Acme team\"")
            .prompt("exec-briefing", "severity sev2, 340")
            .prompt("postmortem-doc", "Security assessment:\nNot required for this incident."),
        Scenario::new("incident-postmortem.yaml", "sev4 without customer impact", incident_inputs())
            .json("triage", json!({"severity": "sev4", "category": "performance", "customerImpact": false, "impactedCustomers": 0, "durationMinutes": 12, "services": ["batch-reports"], "summary": "Nightly reports ran late. No customer saw a delay."}))
            .skipped(&["security-assessment", "customer-comms", "exec-briefing"])
            .prompt("postmortem-doc", "No customer communication was needed."),
        Scenario::new("incident-postmortem.yaml", "sev1 security incident", incident_inputs())
            .json("triage", json!({"severity": "sev1", "category": "security", "customerImpact": true, "impactedCustomers": 12000, "durationMinutes": 95, "services": ["auth", "api-gateway"], "summary": "A leaked deploy token was used to push a malicious image. Revoked and redeployed within 95 minutes."}))
            .prompt("security-assessment", "(sev1,\ncategory security)"),
        // -- support-triage.json --
        Scenario::new("support-triage.json", "bug report, retried classification, failed KB search", triage_inputs())
            .reply("classify-ticket", vec![
                Reply::Ok("This looks like a bug in the CSV export; priority p2.".to_owned()),
                ok(json!({"category": "bug", "priority": "p2", "sentiment": "frustrated", "language": "German", "summary": "CSV export times out for reports with more than 10,000 rows.", "needsEngineering": true, "productArea": "Reports / CSV export"})),
            ])
            .reply("kb-search", vec![Reply::Fail(StepError::new(ErrorClass::Auth, "401 from the knowledge-base search API"))])
            .json("route-ticket", json!({"queue": "engineering-escalations", "responseHours": 8, "notifyAccountOwner": false, "reason": "Reproducible p2 bug on a paid plan."}))
            .skipped(&["security-escalation"])
            .failed(&["kb-search"])
            .prompt("classify-ticket", "Your previous answer was rejected")
            .prompt("classify-ticket", "on the team plan (12 seats, region eu)")
            .prompt("reproduce-bug", "a bug in Reports / CSV export")
            .prompt("draft-reply", "Best knowledge-base article: none found (no link)")
            .prompt("draft-reply", "within 8 hours"),
        Scenario::new("support-triage.json", "routing fails, the rest continues", triage_inputs())
            .json("classify-ticket", json!({"category": "how-to", "priority": "p3", "sentiment": "neutral", "language": "English", "summary": "Asks how to schedule a weekly export.", "needsEngineering": false}))
            .json("kb-search", json!({"articles": [{"title": "Scheduling exports", "url": "https://help.example.com/exports/schedule", "relevance": 0.93}]}))
            .reply("route-ticket", vec![Reply::Fail(StepError::new(ErrorClass::InvalidRequest, "400: the request was malformed"))])
            .skipped(&["reproduce-bug", "security-escalation"])
            .failed(&["route-ticket"])
            .ends(ExecutionState::Failed)
            .prompt("kb-search", "Error message: none quoted")
            .prompt("draft-reply", "Best knowledge-base article: Scheduling exports (https://help.example.com/exports/schedule)")
            .prompt("draft-reply", "within 24 hours"),
        // -- content-localization.yaml --
        Scenario::new("content-localization.yaml", "all default locales", localization_inputs(None))
            .json("prepare-source", localization_source())
            .json("locale-qa", json!({"ready": ["de-DE", "fr-FR", "ja-JP"], "blocked": [{"locale": "pt-BR", "reason": "Button label 'Começar agora gratuitamente' is too long."}]}))
            .prompt("prepare-source", "Merge tags such as {{first_name}} and {{unsubscribe_url}}")
            .prompt("translate-de", "Address\nthe reader with \"Sie\"")
            .prompt("translate-de", "[\"synergy\",\"leverage\",\"revolutionary\",\"best-in-class\"]")
            .prompt("translate-ja", "in\ndesu/masu style")
            .prompt("translate-pt-br", "Address the reader as \"você\"")
            .prompt("publish-plan", "passed QA: [\"de-DE\",\"fr-FR\",\"ja-JP\"]"),
        Scenario::new("content-localization.yaml", "two locales", localization_inputs(Some(json!(["de-DE", "ja-JP"]))))
            .json("prepare-source", localization_source())
            .json("locale-qa", json!({"ready": ["de-DE", "ja-JP"], "blocked": []}))
            .skipped(&["translate-fr", "translate-pt-br"])
            .prompt("locale-qa", "fr-FR: (not produced)")
            .prompt("locale-qa", "Requested locales: [\"de-DE\",\"ja-JP\"]"),
        // -- product-launch.json --
        Scenario::new(
            "product-launch.json",
            "ready to launch",
            json!({
                "product_name": "Pipelines Insights",
                "one_liner": "Shows which CI pipeline steps waste the most time and money, and how to fix them.",
                "key_features": "Cost per pipeline step\nFlaky-test detection\nWeekly savings report",
                "launch_date": "2026-03-17",
            }),
        )
        .json("positioning", json!({
            "headline": "See where your CI time and money go",
            "tagline": "Faster pipelines, smaller bills.",
            "valueProps": [
                {"claim": "Find the slowest steps in minutes", "proof": "Step-level timing across all pipelines"},
                {"claim": "Stop paying for flaky tests", "proof": "Flaky-test detection with re-run cost"},
                {"claim": "Prove the savings", "proof": "A weekly report in dollars saved"}
            ],
            "primaryPersona": "the platform engineering lead",
            "objection": {"question": "Do you need access to our source code?", "answer": "No, only pipeline metadata."}
        }))
        .json("claims-review", json!({"approved": false, "corrections": [{"document": "blog", "claim": "SOC 2 certified", "correction": "SOC 2 Type II audit in progress"}]}))
        .json("readiness-review", json!({"ready": true, "blockers": [], "decisionNote": "Ready: the one claims correction is applied, and every checklist item has an owner."}))
        .prompt("positioning", "Pricing: included in [\"Business\",\"Enterprise\"], otherwise $8/month per seat.")
        .prompt("landing-page", "2. Stop paying for flaky tests (proof: Flaky-test detection with re-run cost)")
        .prompt("sales-enablement", "Do you need access to our source code? -> No, only pipeline metadata.")
        .prompt("readiness-review", "(approved: false)")
        .prompt("announcements", "Lead with \"See where your CI time and money go\""),
        Scenario::new(
            "product-launch.json",
            "blocked launch",
            json!({
                "product_name": "Pipelines Insights",
                "one_liner": "CI cost analytics.",
                "key_features": "Cost per pipeline step",
                "launch_date": "2026-03-17",
                "target_segments": ["enterprise DevOps teams"],
            }),
        )
        .json("positioning", json!({
            "headline": "CI cost analytics",
            "tagline": "Know your pipeline costs.",
            "valueProps": [{"claim": "a", "proof": "b"}, {"claim": "c", "proof": "d"}, {"claim": "e", "proof": "f"}],
            "primaryPersona": "the DevOps lead",
            "objection": {"question": "Is it secure?", "answer": "Metadata only."}
        }))
        .json("claims-review", json!({"approved": true, "corrections": []}))
        .json("readiness-review", json!({"ready": false, "blockers": ["Load test not run"], "decisionNote": "Not ready: the load test for the sign-up flow has not been run yet."}))
        .skipped(&["announcements"])
        .prompt("market-brief", "aimed at [\"enterprise DevOps teams\"]"),
    ]
}

fn incident_inputs() -> Value {
    json!({
        "incident_id": "INC-2291",
        "channel_log": "09:02 ana: checkout 5xx spiking in eu-west\n09:10 li: rolled back pool size change\n09:49 ana: error rate normal, monitoring",
        "alert_timeline": "09:01 Datadog: checkout-api 5xx > 5%\n09:03 PagerDuty: paged on-call",
    })
}

fn triage_inputs() -> Value {
    json!({
        "ticket_id": "48213",
        "ticket_subject": "Export hängt / export hangs",
        "ticket_body": "Hallo, seit gestern bricht der CSV-Export bei großen Berichten ab. Error: 504 Gateway Timeout.",
    })
}

fn localization_inputs(locales: Option<Value>) -> Value {
    let mut v = json!({"source_markdown": "# Meet Scheduled Exports\n\nHi {{first_name}}, your reports can now arrive on their own.\n\n[Start now](https://app.example.com)"});
    if let Some(l) = locales {
        v["locales"] = l;
    }
    v
}

fn review_diff() -> &'static str {
    "diff --git a/src/auth/session.rs b/src/auth/session.rs\n@@ -40 +40 @@\n-    let ttl = 3600;\n+    let ttl = config.session_ttl;\ndiff --git a/src/billing/invoice.rs b/src/billing/invoice.rs\n@@ -1 +1 @@\n-fn total() {}\n+fn total(c: Currency) {}\ndiff --git a/web/login.ts b/web/login.ts\n@@ -9 +9 @@\n-const t = 1;\n+const t = 2;\n"
}

fn review_files() -> Value {
    json!({"files": [
        {"path": "src/auth/session.rs", "language": "rust", "diff": "-    let ttl = 3600;\n+    let ttl = config.session_ttl;"},
        {"path": "src/billing/invoice.rs", "language": "rust", "diff": "-fn total() {}\n+fn total(c: Currency) {}"},
        {"path": "web/login.ts", "diff": "-const t = 1;\n+const t = 2;"}
    ]})
}

fn localization_source() -> Value {
    json!({
        "title": "Meet Scheduled Exports",
        "segments": [
            {"id": "heading", "text": "Meet Scheduled Exports"},
            {"id": "body-1", "text": "Hi {{first_name}}, your reports can now arrive on their own.", "note": "Keep {{first_name}}."},
            {"id": "cta", "text": "Start now"}
        ],
        "doNotTranslate": ["Scheduled Exports"],
        "containsClaims": false,
        "wordCount": 14
    })
}

#[test]
fn every_example_runs_to_its_end() {
    let scenarios = scenarios();
    for (name, _) in EXAMPLES {
        assert!(
            scenarios.iter().any(|s| s.file == *name),
            "{name} has no simulated run; add a Scenario for it in core/tests/examples.rs"
        );
    }
    for s in &scenarios {
        run_scenario(s);
    }
}

#[test]
fn an_invalid_output_is_retried_with_feedback_after_the_backoff() {
    let s = scenarios()
        .into_iter()
        .find(|s| s.file == "support-triage.json")
        .expect("the support-triage scenario");
    let out = run_scenario(&s);
    let classify = out.exec.step("classify-ticket").expect("step");
    assert_eq!(classify.attempt, 2);
    assert_eq!(classify.failures, 1);
    let prompts = &out.prompts["classify-ticket"];
    assert!(!prompts[0].contains("rejected"));
    assert!(
        prompts[1].contains("the output is not JSON, but the step has an outputSchema"),
        "{}",
        prompts[1]
    );
    // The retry waited 500 ms · 2^0, within ±20 %.
    let retry_delay = out.exec.retry_delay(
        out.exec.plan().index_of("classify-ticket").expect("index"),
        1,
        None,
    );
    assert!((400..=600).contains(&retry_delay), "{retry_delay}");
    // The KB search failed with a class its policy does not retry: one attempt.
    let kb = out.exec.step("kb-search").expect("step");
    assert_eq!((kb.attempt, kb.state), (1, StepState::Failed));
}
