//! Writes the checked-in seed corpus, fuzz/seeds/<target>/, from examples/ and
//! the fixtures: `cargo +nightly run --example make_seeds` (in fuzz/). The
//! files are small and stable; rerun after changing the examples or the input
//! formats of the targets.

use ax_core::exec::{Action, Event, Execution};
use ax_core::plan::output_hash;
use ax_core::validate::{Options, analyze};
use ax_core::{CheckpointFile, Plan, checkpoint::WorkflowSource};
use ax_fuzz::{CHAIN, DIAMOND, FAN};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = root.join("seeds");
    let _ = std::fs::remove_dir_all(&seeds);
    let mut w = Writer { seeds, count: 0 };

    // parse_validate: every example, the fixtures, and a few broken files.
    let mut sources: Vec<(String, String)> = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(root.join("../examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    for p in names {
        let text = std::fs::read_to_string(&p).expect("read example");
        sources.push((p.file_name().unwrap().to_string_lossy().into_owned(), text));
    }
    for (n, t) in [
        ("diamond.yaml", DIAMOND),
        ("fan.yaml", FAN),
        ("chain.yaml", CHAIN),
    ] {
        sources.push((n.to_owned(), t.to_owned()));
    }
    for (name, text) in &sources {
        w.put("parse_validate", name, text.as_bytes());
    }
    for (name, text) in BROKEN {
        w.put("parse_validate", name, text.as_bytes());
    }

    // template, condition, schema: from each step of each valid workflow.
    for (name, text) in &sources {
        let a = analyze(text, &Options::for_file(name));
        let Some(plan) = a.plan else { continue };
        let wf = &plan.workflow;
        for (i, step) in wf.steps.iter().enumerate() {
            let mut ctx = String::new();
            for (input, spec) in &wf.inputs {
                let v = spec
                    .default
                    .clone()
                    .unwrap_or_else(|| serde_json::Value::String(format!("{input} value")));
                ctx.push_str(&format!("\0{input}\0{v}"));
            }
            for d in &step.dependencies {
                let j = plan.index_of(d).expect("dependency");
                let out = plan
                    .output_example(j, "text")
                    .map_or_else(|| "plain text answer".to_owned(), |v| v.to_string());
                ctx.push_str(&format!("\0@{d}\0{out}"));
            }
            let base = format!("{}-{}", name.split('.').next().unwrap(), step.key);
            w.put(
                "template",
                &base,
                format!("{}{ctx}", step.prompt).as_bytes(),
            );
            if let Some(when) = &step.when {
                w.put("condition", &base, format!("{when}{ctx}").as_bytes());
            }
            if let Some(schema) = &step.output_schema {
                let ex = plan.output_example(i, "text").unwrap_or_default();
                w.put("schema", &base, format!("{schema}\0{ex}\0text").as_bytes());
                w.put(
                    "schema",
                    &format!("{base}-bad"),
                    format!("{schema}\0{{}}\0").as_bytes(),
                );
            }
        }
    }
    for (name, text) in CONDITIONS {
        w.put("condition", name, text.as_bytes());
    }
    for (name, text) in SCHEMAS {
        w.put("schema", name, text.as_bytes());
    }

    // checkpoint_restore: snapshots and deltas of runs of the diamond fixture
    // (mode byte `0`: JSON), a checkpoint file, and structured scripts (`1`).
    let plan = Plan::from_text(DIAMOND, Some("diamond.yaml")).expect("diamond");
    for (n, script) in SCRIPTS.iter().enumerate() {
        let (snaps, deltas, file) = run(&plan, script);
        for (k, s) in snaps.iter().enumerate() {
            w.put(
                "checkpoint_restore",
                &format!("run{n}-snap{k}"),
                format!("0{s}").as_bytes(),
            );
        }
        if let Some(d) = deltas.last() {
            w.put(
                "checkpoint_restore",
                &format!("run{n}-delta"),
                format!("0{d}").as_bytes(),
            );
        }
        w.put(
            "checkpoint_restore",
            &format!("run{n}-file"),
            format!("0{file}").as_bytes(),
        );
    }
    for (n, s) in [
        &b"\x01\x05\x41\x42\x83\x10\x20\x30\x40"[..],
        b"\x01\xff\x00\xc0\x01",
        b"\x01\x01\x01\x01\x01\x99\x99",
    ]
    .iter()
    .enumerate()
    {
        w.put("checkpoint_restore", &format!("structured{n}"), s);
    }
    println!("wrote {} seed files under {}", w.count, w.seeds.display());
}

/// A run of the diamond: each line is (step, output) answered in turn, or a
/// failure; returns the snapshots (JSON) after every Checkpoint action, the
/// deltas, and a checkpoint file of the end state.
fn run(
    plan: &Arc<Plan>,
    script: &[(&str, Result<&str, ax_core::ErrorClass>)],
) -> (Vec<String>, Vec<String>, String) {
    let mut e = Execution::new(plan.clone(), BTreeMap::new(), 3).expect("execution");
    let mut snaps = Vec::new();
    let mut deltas = Vec::new();
    let mut now = 10;
    let mut in_flight: BTreeMap<String, u32> = BTreeMap::new();
    let mut record =
        |e: &mut Execution, actions: Vec<Action>, in_flight: &mut BTreeMap<String, u32>| {
            for a in actions {
                match a {
                    Action::Checkpoint => {
                        snaps.push(e.peek_snapshot().to_json());
                        deltas.push(serde_json::to_string(&e.take_delta()).expect("delta"));
                    }
                    Action::StartStep(s) => {
                        in_flight.insert(s.key, s.attempt);
                    }
                    Action::AbortStep { key, .. } => {
                        in_flight.remove(&key);
                    }
                    _ => {}
                }
            }
        };
    let a = e.handle(Event::Start, now).expect("start");
    record(&mut e, a, &mut in_flight);
    for (key, outcome) in script {
        now += 37;
        let Some(attempt) = in_flight.remove(*key) else {
            let a = e.handle(Event::Tick, now + 1000).unwrap_or_default();
            now += 1000;
            record(&mut e, a, &mut in_flight);
            continue;
        };
        let ev = match outcome {
            Ok(out) => Event::StepSucceeded {
                key: (*key).to_owned(),
                attempt,
                output: (*out).to_owned(),
            },
            Err(class) => Event::StepFailed {
                key: (*key).to_owned(),
                attempt,
                error: ax_core::StepError::new(*class, "seed failure"),
            },
        };
        let a = e.handle(ev, now).unwrap_or_default();
        record(&mut e, a, &mut in_flight);
    }
    let cp = e.peek_snapshot();
    let outputs = e
        .outputs()
        .into_iter()
        .map(|(h, t)| (h, t.to_string()))
        .collect();
    let file = CheckpointFile::new(
        WorkflowSource {
            name: "fuzz-diamond".into(),
            source: DIAMOND.into(),
            filename: Some("diamond.yaml".into()),
        },
        cp,
        outputs,
    );
    // Every output used is one the target has stored.
    for h in file.checkpoint.output_hashes() {
        assert!(
            STORED.iter().any(|t| output_hash(t) == h),
            "seed output {h} is not stored"
        );
    }
    (snaps, deltas, file.to_json())
}

const STORED: &[&str] = &[
    "ok",
    "research notes",
    r#"{"level":"high","score":9}"#,
    r#"{"level":"low"}"#,
    "please stop",
];

type Script = &'static [(&'static str, Result<&'static str, ax_core::ErrorClass>)];
const SCRIPTS: &[Script] = &[
    &[
        ("a", Ok("research notes")),
        ("b", Ok(r#"{"level":"high","score":9}"#)),
        ("d", Ok("ok")),
        ("c", Ok("ok")),
        ("e", Ok("ok")),
    ],
    &[
        ("a", Ok("research notes")),
        ("d", Err(ax_core::ErrorClass::Auth)),
        ("b", Ok(r#"{"level":"low"}"#)),
    ],
    &[
        ("a", Err(ax_core::ErrorClass::Timeout)),
        ("x", Ok("")),
        ("a", Ok("ok")),
        ("b", Ok("please stop")),
    ],
    &[("a", Err(ax_core::ErrorClass::Auth))],
];

const BROKEN: &[(&str, &str)] = &[
    (
        "cycle.yaml",
        "name: c\nsteps:\n  - {key: a, agent: x, prompt: \"{{b.result}}\", dependencies: [b]}\n  - {key: b, agent: x, prompt: p, dependencies: [a]}\n",
    ),
    (
        "missing-dep.yaml",
        "name: m\nsteps:\n  - {key: a, agent: x, prompt: p, dependencies: [nope]}\n",
    ),
    (
        "anchors.yaml",
        "name: &n anchors\nsteps:\n  - &s {key: a, agent: x, prompt: *n}\n  - {<<: *s, key: b, dependencies: [a]}\n",
    ),
    (
        "bad-when.yaml",
        "name: w\nsteps:\n  - {key: a, agent: x, prompt: p}\n  - {key: b, agent: x, prompt: q, dependencies: [a], when: '{{a.result}} =='}\n",
    ),
    (
        "types.json",
        "{\"name\": 1, \"steps\": [{\"key\": \"a b\", \"agent\": [], \"prompt\": {}, \"timeoutMs\": -1}], \"config\": {\"parallelism\": 0}}",
    ),
    (
        "flow.yaml",
        "{name: f, version: '2', steps: [{key: a, agent: x, prompt: \"multi\\nline \\u00e9\", retryPolicy: {retryBackoffMultiplier: 1.5e0}}]}",
    ),
    (
        "schema.yaml",
        "name: s\nsteps:\n  - key: a\n    agent: x\n    prompt: |\n      literal {{topic ?? \"t\"}}\n    outputSchema: {type: object, properties: {n: {type: integer, multipleOf: 0.5}}, $defs: {x: {const: null}}}\n",
    ),
];

const CONDITIONS: &[(&str, &str)] = &[
    (
        "ops",
        "{{a.result.n}} >= 10 && !({{a.result.s}} contains 'x') || {{b.result ?? \"no\"}}\0@a\0{\"n\": 12, \"s\": \"yx\"}\0@b",
    ),
    (
        "literals",
        "not (1 < 2.5e0) or null == false and \"10\" > \"9\"",
    ),
    ("input", "{{list}} contains 3\0list\0[1,2,3]"),
];

const SCHEMAS: &[(&str, &str)] = &[
    (
        "combinators",
        "{\"anyOf\":[{\"type\":\"string\",\"pattern\":\"^a+$\"},{\"type\":\"array\",\"items\":{\"$ref\":\"#\"},\"uniqueItems\":true}],\"not\":{\"const\":[]}}\0[\"aa\",[\"a\"]]\0a",
    ),
    (
        "defs",
        "{\"$defs\":{\"n\":{\"type\":\"integer\",\"minimum\":1,\"exclusiveMaximum\":9}},\"type\":\"object\",\"properties\":{\"x\":{\"$ref\":\"#/$defs/n\"}},\"additionalProperties\":false,\"required\":[\"x\"]}\0{\"x\":3}\0",
    ),
    (
        "if",
        "{\"if\":{\"properties\":{\"k\":{\"const\":1}}},\"then\":{\"required\":[\"v\"]},\"else\":{\"maxProperties\":1},\"dependentRequired\":{\"a\":[\"b\"]}}\0{\"k\":1}\0",
    ),
];

struct Writer {
    seeds: PathBuf,
    count: usize,
}

impl Writer {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.seeds.join(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(name), bytes).expect("write seed");
        self.count += 1;
    }
}
