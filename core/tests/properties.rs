//! Property tests on random graphs and random runs (native only: proptest).
#![cfg(not(target_arch = "wasm32"))]

use ax_core::exec::{Action, Event, Execution, StepError};
use ax_core::graph::Graph;
use ax_core::sim::{Reply, Simulator};
use ax_core::validate::validate_workflow;
use ax_core::{Config, ErrorClass, ExecutionState, RetryPolicy, Step, StepState, Workflow};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// A random directed graph on `n` nodes (may contain cycles).
fn digraph() -> impl Strategy<Value = (usize, Vec<(usize, usize)>)> {
    (1usize..14).prop_flat_map(|n| (Just(n), proptest::collection::vec((0..n, 0..n), 0..n * 2)))
}

/// A random DAG: edges only from a lower to a higher rank, ranks a permutation.
fn dag() -> impl Strategy<Value = (usize, Vec<(usize, usize)>)> {
    (1usize..25)
        .prop_flat_map(|n| {
            let perm = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
            (
                Just(n),
                perm,
                proptest::collection::vec((0..n, 0..n), 0..n * 2),
            )
        })
        .prop_map(|(n, perm, raw)| {
            let edges = raw
                .into_iter()
                .filter(|(a, b)| a != b)
                .map(|(a, b)| {
                    if a < b {
                        (perm[a], perm[b])
                    } else {
                        (perm[b], perm[a])
                    }
                })
                .collect();
            (n, edges)
        })
}

fn brute_force_has_cycle(n: usize, edges: &[(usize, usize)]) -> bool {
    let mut reach = vec![vec![false; n]; n];
    for &(a, b) in edges {
        if a != b {
            reach[a][b] = true;
        }
    }
    for k in 0..n {
        for i in 0..n {
            for j in 0..n {
                if reach[i][k] && reach[k][j] {
                    reach[i][j] = true;
                }
            }
        }
    }
    (0..n).any(|i| reach[i][i])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn cycle_detection_agrees_with_brute_force((n, edges) in digraph()) {
        let result = Graph::build(n, edges.iter().copied());
        prop_assert_eq!(result.is_err(), brute_force_has_cycle(n, &edges));
        if let Err(cycles) = result {
            // Every reported cycle is a real cycle.
            for c in cycles {
                prop_assert!(c.len() >= 2);
                for w in 0..c.len() {
                    let (step, dep) = (c[w], c[(w + 1) % c.len()]);
                    prop_assert!(edges.contains(&(dep, step)), "{} does not depend on {}", step, dep);
                }
            }
        }
    }

    #[test]
    fn order_respects_edges_and_levels_are_minimal((n, edges) in dag()) {
        let g = Graph::build(n, edges.iter().copied()).expect("a DAG");
        let pos: Vec<usize> = { let mut p = vec![0; n]; for (i, &v) in g.order().iter().enumerate() { p[v] = i; } p };
        prop_assert_eq!(g.order().len(), n);
        for &(a, b) in &edges {
            prop_assert!(pos[a] < pos[b]);
            prop_assert!(g.level_of(a) < g.level_of(b));
        }
        for v in 0..n {
            let deps = g.dependencies(v);
            let expected = deps.iter().map(|&d| g.level_of(d) + 1).max().unwrap_or(0);
            prop_assert_eq!(g.level_of(v), expected);
        }
        // Ties by declaration order: among nodes free at the same time, the smaller
        // index comes first (Kahn with a min-heap reproduces the order).
        let flat: usize = g.levels().map(<[usize]>::len).sum();
        prop_assert_eq!(flat, n);
        let sets = g.ancestor_sets();
        for (v, set) in sets.iter().enumerate() {
            let anc = g.ancestors(v);
            for u in 0..n {
                prop_assert_eq!(set.contains(u), anc.contains(&u));
            }
        }
    }
}

#[derive(Debug, Clone)]
struct RunSpec {
    n: usize,
    edges: Vec<(usize, usize)>,
    parallelism: u32,
    continue_on_error: bool,
    optional: Vec<bool>,
    timeouts: Vec<bool>,
    /// Per attempt: 0 ok, 1 retryable failure, 2 fatal failure, 3 hang.
    script: Vec<u8>,
    latencies: Vec<u64>,
    pause_at: Option<u64>,
    cancel_at: Option<u64>,
}

fn run_spec() -> impl Strategy<Value = RunSpec> {
    dag()
        .prop_flat_map(|(n, edges)| {
            (
                Just(n),
                Just(edges),
                1u32..4,
                any::<bool>(),
                proptest::collection::vec(prop::bool::weighted(0.2), n),
                proptest::collection::vec(prop::bool::weighted(0.3), n),
                proptest::collection::vec(
                    prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
                    64,
                ),
                proptest::collection::vec(1u64..50, 64),
                proptest::option::weighted(0.3, 1u64..200),
                proptest::option::weighted(0.15, 1u64..300),
            )
        })
        .prop_map(
            |(
                n,
                edges,
                parallelism,
                continue_on_error,
                optional,
                timeouts,
                script,
                latencies,
                pause_at,
                cancel_at,
            )| RunSpec {
                n,
                edges,
                parallelism,
                continue_on_error,
                optional,
                timeouts,
                script,
                latencies,
                pause_at,
                cancel_at,
            },
        )
}

fn workflow(spec: &RunSpec) -> Workflow {
    let key = |i: usize| format!("s{i}");
    let steps = (0..spec.n)
        .map(|i| {
            let deps: Vec<String> = spec
                .edges
                .iter()
                .filter(|(_, b)| *b == i)
                .map(|(a, _)| key(*a))
                .collect();
            let mut deps_unique = deps.clone();
            deps_unique.sort();
            deps_unique.dedup();
            let prompt = std::iter::once(format!("step {i}"))
                .chain(
                    deps_unique
                        .iter()
                        .map(|d| format!("{{{{{d}.result ?? \"-\"}}}}")),
                )
                .collect::<Vec<_>>()
                .join(" ");
            Step {
                key: key(i),
                agent: "a".into(),
                prompt,
                dependencies: deps_unique,
                parallel: false,
                optional: spec.optional[i],
                timeout_ms: spec.timeouts[i].then_some(30),
                retry_policy: Some(RetryPolicy {
                    max_retries: 2,
                    retry_delay_ms: 5,
                    ..RetryPolicy::default()
                }),
                output_schema: None,
                when: None,
                ..Step::default()
            }
        })
        .collect();
    Workflow {
        name: "random".into(),
        description: None,
        version: "1.0.0".into(),
        steps,
        config: Config {
            parallelism: spec.parallelism,
            continue_on_error: spec.continue_on_error,
            ..Config::default()
        },
        tags: vec![],
        author: None,
        inputs: BTreeMap::new(),
        outputs: BTreeMap::new(),
    }
}

fn simulate(spec: &RunSpec) -> Simulator<impl FnMut(&ax_core::StartStep) -> Reply> {
    let plan = validate_workflow(workflow(spec)).expect("valid");
    let exec = Execution::new(plan, BTreeMap::new(), 42).expect("exec");
    let script = spec.script.clone();
    let lat = spec.latencies.clone();
    let mut calls = 0usize;
    let mut sim = Simulator::new(exec, 0, move |s| {
        calls += 1;
        let c = script[calls % script.len()];
        let after_ms = lat[calls % lat.len()];
        match c {
            0 => Reply::Succeed {
                after_ms,
                output: format!("out of {} #{}", s.key, s.attempt),
            },
            1 => Reply::Fail {
                after_ms,
                error: StepError::new(ErrorClass::Network, "reset"),
            },
            2 => Reply::Fail {
                after_ms,
                error: StepError::new(ErrorClass::InvalidRequest, "bad"),
            },
            _ => Reply::Hang,
        }
    });
    if let Some(t) = spec.pause_at {
        sim.schedule(
            t,
            Event::Pause {
                immediate: t % 2 == 0,
            },
        );
        sim.schedule(t + 100, Event::Resume);
    }
    if let Some(t) = spec.cancel_at {
        sim.schedule(t, Event::Cancel { reason: None });
    }
    sim
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn executor_invariants_hold_on_random_runs(spec in run_spec()) {
        let mut sim = simulate(&spec);
        let state = sim.run(100_000).expect("no internal error");
        // Always terminates: the run ends, or only hanging steps without timeouts remain.
        let hanging = sim.exec.steps().iter().any(|s| s.state == StepState::Running);
        prop_assert!(state.is_terminal() || hanging, "ended in {state} with nothing in flight");
        let plan = sim.exec.plan().clone();
        let mut running = 0usize;
        let mut status: Vec<StepState> = vec![StepState::Pending; spec.n];
        for (_, a) in &sim.log {
            if let Action::StepChanged { key, state, .. } = a {
                let i = plan.index_of(key).expect("known key");
                if *state == StepState::Running {
                    running += 1;
                    // Never before every dependency settled.
                    for &d in plan.graph.dependencies(i) {
                        prop_assert!(status[d].is_settled(), "{key} started before s{d} settled");
                        if !plan.workflow.steps[i].optional {
                            prop_assert_eq!(status[d], StepState::Completed);
                        }
                    }
                } else if status[i] == StepState::Running {
                    running -= 1;
                }
                status[i] = *state;
                // Never more than the cap.
                prop_assert!(running <= spec.parallelism as usize);
            }
        }
        if state == ExecutionState::Completed {
            for (i, s) in sim.exec.steps().iter().enumerate() {
                prop_assert!(s.state.is_settled());
                if s.state == StepState::Failed { prop_assert!(plan.workflow.steps[i].optional); }
            }
        }
    }

    #[test]
    fn checkpoint_restore_round_trips_at_every_point(spec in run_spec()) {
        let mut sim = simulate(&spec);
        let _ = sim.run(10_000).expect("runs");
        let journal = sim.journal.clone();
        let plan = sim.exec.plan().clone();
        let fresh = || Execution::new(plan.clone(), BTreeMap::new(), 42).expect("exec");
        for k in 0..=journal.len() {
            let mut original = fresh();
            for (t, ev) in &journal[..k] {
                let _ = original.handle(ev.clone(), *t);
            }
            let cp = original.snapshot();
            let json = cp.to_json();
            let cp = ax_core::Checkpoint::from_json(&json).expect("parses");
            let outputs = original.outputs();
            let (mut restored, _) = Execution::restore(plan.clone(), &cp, &|h| outputs.get(h).cloned()).expect("restores");
            for (t, ev) in &journal[k..] {
                let a = original.handle(ev.clone(), *t);
                let b = restored.handle(ev.clone(), *t);
                prop_assert_eq!(a, b);
            }
            prop_assert_eq!(original.peek_snapshot(), restored.peek_snapshot());
        }
    }
}

// ---- forEach maps and approvals ----

#[derive(Debug, Clone)]
struct MapSpec {
    items: usize,
    parallelism: u32,
    max_concurrency: Option<u32>,
    /// Independent prompt steps alongside the map.
    siblings: usize,
    optional: bool,
    /// Per attempt: 0 ok, 1 retryable failure, 2 fatal failure, 3 hang.
    script: Vec<u8>,
    latencies: Vec<u64>,
    timeouts: bool,
    pause_at: Option<u64>,
    /// When the approval after the map is decided, and how.
    decide_after: u64,
    approve: bool,
}

fn map_spec() -> impl Strategy<Value = MapSpec> {
    (
        (
            0usize..14,
            1u32..6,
            proptest::option::of(1u32..5),
            0usize..3,
        ),
        (
            any::<bool>(),
            proptest::collection::vec(
                prop_oneof![8 => Just(0u8), 3 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
                1..30,
            ),
            proptest::collection::vec(1u64..50, 1..10),
            any::<bool>(),
        ),
        (proptest::option::of(0u64..300), 0u64..500, any::<bool>()),
    )
        .prop_map(
            |(
                (items, parallelism, max_concurrency, siblings),
                (optional, script, latencies, timeouts),
                (pause_at, decide_after, approve),
            )| MapSpec {
                items,
                parallelism,
                max_concurrency,
                siblings,
                optional,
                script,
                latencies,
                timeouts,
                pause_at,
                decide_after,
                approve,
            },
        )
}

fn map_yaml(spec: &MapSpec) -> String {
    let items: Vec<usize> = (0..spec.items).collect();
    let mut y = format!(
        "name: map\nconfig: {{parallelism: {}}}\ninputs:\n  xs: {{default: {items:?}}}\nsteps:\n  - key: each\n    agent: w\n    forEach: \"{{{{xs}}}}\"\n    prompt: \"item {{{{item}}}}\"\n    optional: {}\n    retryPolicy: {{maxRetries: 2, retryDelayMs: 5}}\n",
        spec.parallelism, spec.optional
    );
    if let Some(m) = spec.max_concurrency {
        y.push_str(&format!("    maxConcurrency: {m}\n"));
    }
    if spec.timeouts {
        y.push_str("    timeoutMs: 40\n");
    }
    for k in 0..spec.siblings {
        y.push_str(&format!("  - {{key: side{k}, agent: w, prompt: p}}\n"));
    }
    y.push_str("  - {key: sign-off, type: approval, prompt: \"ok {{each.result ?? \\\"-\\\"}}?\", dependencies: [each], optional: true}\n");
    y.push_str("  - {key: after, agent: w, prompt: \"{{sign-off.result.comment ?? \\\"no\\\"}}\", dependencies: [sign-off], optional: true}\n");
    y
}

fn map_sim(spec: &MapSpec) -> Simulator<impl FnMut(&ax_core::StartStep) -> Reply> {
    let plan = ax_core::Plan::from_text(&map_yaml(spec), Some("map.yaml")).expect("valid");
    let exec = Execution::new(plan, BTreeMap::new(), 9).expect("exec");
    let script = spec.script.clone();
    let lat = spec.latencies.clone();
    let mut calls = 0usize;
    let mut sim = Simulator::new(exec, 0, move |s| {
        calls += 1;
        let after_ms = lat[calls % lat.len()];
        match script[calls % script.len()] {
            0 => Reply::Succeed {
                after_ms,
                output: format!("\"{} {:?} #{}\"", s.key, s.item, s.attempt),
            },
            1 => Reply::Fail {
                after_ms,
                error: StepError::new(ErrorClass::RateLimit, "429"),
            },
            2 => Reply::Fail {
                after_ms,
                error: StepError::new(ErrorClass::Auth, "401"),
            },
            _ => Reply::Hang,
        }
    });
    let (approve, after) = (spec.approve, spec.decide_after);
    sim = sim.with_decisions(move |key, _| {
        let key = key.to_owned();
        Some((
            after,
            if approve {
                Event::Approve {
                    key,
                    comment: Some("yes".into()),
                    data: None,
                    by: None,
                }
            } else {
                Event::Reject {
                    key,
                    comment: Some("no".into()),
                    by: None,
                }
            },
        ))
    });
    if let Some(t) = spec.pause_at {
        sim.schedule(
            t,
            Event::Pause {
                immediate: t % 2 == 0,
            },
        );
        sim.schedule(t + 60, Event::Resume);
    }
    sim
}

/// Completed items' outputs of the map step, by item.
fn completed_items(e: &Execution) -> BTreeMap<usize, String> {
    e.step("each")
        .and_then(|s| s.items.as_ref())
        .map(|it| {
            it.runs
                .iter()
                .enumerate()
                .filter(|(_, r)| r.state == StepState::Completed)
                .filter_map(|(j, r)| r.output.as_ref().map(|o| (j, o.text.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// Items never exceed `maxConcurrency`, attempts and items together never
    /// exceed `config.parallelism`, and a completed map lists its items' results
    /// in item order.
    #[test]
    fn items_never_exceed_their_caps(spec in map_spec()) {
        let mut sim = map_sim(&spec);
        let state = sim.run(100_000).expect("no internal error");
        let hanging = sim.exec.in_flight() > 0;
        prop_assert!(state.is_terminal() || hanging, "ended in {} with nothing in flight", state);
        let mut items: BTreeMap<u32, StepState> = BTreeMap::new();
        let mut steps: BTreeMap<String, StepState> = BTreeMap::new();
        for (_, a) in &sim.log {
            match a {
                Action::ItemChanged { item, state, .. } => { items.insert(*item, *state); }
                Action::StepChanged { key, state, .. } if key != "each" => { steps.insert(key.clone(), *state); }
                _ => continue,
            }
            let running_items = items.values().filter(|s| **s == StepState::Running).count();
            let running_steps = steps.values().filter(|s| **s == StepState::Running).count();
            prop_assert!(running_items + running_steps <= spec.parallelism as usize);
            if let Some(m) = spec.max_concurrency {
                prop_assert!(running_items <= m as usize);
            }
        }
        if sim.exec.step("each").map(|s| s.state) == Some(StepState::Completed) {
            let out = sim.exec.step("each").and_then(|s| s.output.as_ref()).map(|o| o.text.to_string()).unwrap_or_default();
            let list: Vec<serde_json::Value> = serde_json::from_str(&out).expect("a JSON list");
            prop_assert_eq!(list.len(), spec.items);
            for (j, v) in list.iter().enumerate() {
                let text = v.as_str().unwrap_or("");
                prop_assert!(text.starts_with(&format!("each Some({j}) #")), "item {} is {}", j, text);
            }
        }
    }

    /// Restored from a checkpoint taken at any point (decisions and item
    /// progress included), an execution makes exactly the decisions the original
    /// makes; and folding its deltas gives its snapshots.
    #[test]
    fn maps_and_decisions_survive_checkpoints_at_every_point(spec in map_spec()) {
        let mut sim = map_sim(&spec);
        let _ = sim.run(10_000).expect("runs");
        let journal = sim.journal.clone();
        let plan = sim.exec.plan().clone();
        let fresh = || Execution::new(plan.clone(), BTreeMap::new(), 9).expect("exec");
        let mut folded = None;
        let mut deltas = fresh();
        for (t, ev) in &journal {
            let _ = deltas.handle(ev.clone(), *t);
            let snap = folded.get_or_insert_with(|| deltas.snapshot());
            let delta = deltas.take_delta();
            snap.apply(&delta);
        }
        if let Some(snap) = folded {
            prop_assert_eq!(&snap.steps, &deltas.peek_snapshot().steps);
        }
        for k in (0..=journal.len()).step_by(3) {
            let mut original = fresh();
            for (t, ev) in &journal[..k] {
                let _ = original.handle(ev.clone(), *t);
            }
            let cp = ax_core::Checkpoint::from_json(&original.snapshot().to_json()).expect("parses");
            let outputs = original.outputs();
            let (mut restored, _) = Execution::restore(plan.clone(), &cp, &|h| outputs.get(h).cloned()).expect("restores");
            for (t, ev) in &journal[k..] {
                let a = original.handle(ev.clone(), *t);
                let b = restored.handle(ev.clone(), *t);
                prop_assert_eq!(a, b);
            }
            prop_assert_eq!(original.peek_snapshot(), restored.peek_snapshot());
        }
    }

    /// A crash at any point, then a restore and a resume: only the items that
    /// had not completed run again, each once; completed ones keep their results.
    #[test]
    fn a_crash_mid_map_reruns_only_unfinished_items(spec in map_spec(), cut in 0.0f64..1.0) {
        let mut sim = map_sim(&spec);
        let _ = sim.run(10_000).expect("runs");
        let journal = sim.journal.clone();
        let plan = sim.exec.plan().clone();
        let k = ((journal.len() as f64) * cut) as usize;
        let mut original = Execution::new(plan.clone(), BTreeMap::new(), 9).expect("exec");
        for (t, ev) in &journal[..k] {
            let _ = original.handle(ev.clone(), *t);
        }
        let now = journal.get(k.saturating_sub(1)).map_or(0, |(t, _)| *t);
        let before = completed_items(&original);
        let listed = original.step("each").and_then(|s| s.items.as_ref()).is_some();
        // A map that failed for good in a run that goes on (it is optional) is
        // settled: nothing of it runs again. Resuming a failed run re-runs it.
        let settled = original.step("each").map(|s| s.state) == Some(StepState::Failed)
            && original.state() != ExecutionState::Failed;
        let cp = original.snapshot();
        let outputs = original.outputs();
        drop(original);
        let (mut r, _) = Execution::restore(plan.clone(), &cp, &|h| outputs.get(h).cloned()).expect("restores");
        r.interrupt(now).expect("interrupt");
        if r.state() == ExecutionState::Cancelled || r.state() == ExecutionState::Completed {
            return Ok(());
        }
        let mut after = Simulator::new(r, now, |s| Reply::Succeed {
            after_ms: 3,
            output: format!("\"again {:?}\"", s.item),
        })
        .with_decisions(|key, _| Some((1, Event::Approve { key: key.into(), comment: None, data: None, by: None })));
        if matches!(after.exec.state(), ExecutionState::Interrupted | ExecutionState::Paused | ExecutionState::Failed) {
            after.schedule(now + 1, Event::Resume);
        }
        // A decision asked before the crash is still awaited: a driver shows the
        // pending decisions of a restored run.
        let pending: Vec<String> = after.exec.pending_decisions().iter().map(|(k, _)| (*k).to_owned()).collect();
        for key in pending {
            after.schedule(now + 2, Event::Approve { key, comment: None, data: None, by: None });
        }
        let state = after.run(100_000).expect("runs");
        prop_assert_eq!(state, ExecutionState::Completed);
        let mut rerun: Vec<usize> = after.starts().iter().filter_map(|(_, s)| s.item.map(|i| i as usize)).collect();
        rerun.sort_unstable();
        let expected: Vec<usize> = if settled {
            Vec::new()
        } else {
            (0..spec.items).filter(|j| !before.contains_key(j)).collect()
        };
        prop_assert_eq!(&rerun, &expected, "listed before the crash: {}", listed);
        let end = completed_items(&after.exec);
        for (j, out) in &before {
            prop_assert_eq!(end.get(j), Some(out));
        }
    }
}

// ---- Children ----

const TREE_PARENT: &str = "name: parent\nconfig: {parallelism: 3}\ninputs:\n  xs: {default: [0, 1, 2, 3, 4]}\nsteps:\n  - key: kids\n    type: workflow\n    workflow: child.yaml\n    forEach: \"{{xs}}\"\n    maxConcurrency: 2\n    inputs: {n: \"{{item}}\"}\n  - {key: solo, type: workflow, workflow: child.yaml, inputs: {n: 9}}\n";
const TREE_CHILD: &str = "name: child\ninputs:\n  n:\nsteps:\n  - {key: work, agent: w, prompt: \"{{n}}\"}\n  - {key: ok, type: approval, prompt: \"{{work.result}}?\", dependencies: [work]}\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]

    /// Random pauses, resumes, cancels and decisions on a parent whose steps run
    /// children: children in flight never exceed the caps, a parent that ended
    /// leaves no child running, and a completed parent has every child's result.
    #[test]
    fn children_follow_their_parent(
        latency in 1u64..40,
        decide in 1u64..200,
        approve in proptest::collection::vec(any::<bool>(), 1..8),
        pause in proptest::option::of((0u64..300, any::<bool>())),
        cancel in proptest::option::of(0u64..600),
    ) {
        use ax_core::sim::TreeSimulator;
        use ax_core::subworkflow::{DocumentLoader, analyze_tree};
        let mut loader = DocumentLoader::new([("child.yaml".to_owned(), TREE_CHILD.to_owned())]);
        let a = analyze_tree(TREE_PARENT, &ax_core::Options::for_file("parent.yaml"), "parent.yaml", &mut loader);
        let root = Execution::new(a.plan.expect("valid"), BTreeMap::new(), 5).expect("exec");
        let mut decisions = 0usize;
        let mut sim = TreeSimulator::new(root, 0, move |_, s| Reply::Succeed {
            after_ms: latency,
            output: format!("w{}", s.attempt),
        })
        .with_decisions(move |_, key, _| {
            decisions += 1;
            let key = key.to_owned();
            let yes = approve[decisions % approve.len()];
            Some((decide, if yes {
                Event::Approve { key, comment: None, data: None, by: None }
            } else {
                Event::Reject { key, comment: None, by: None }
            }))
        });
        if let Some((t, now)) = pause {
            sim.schedule(t, 0, Event::Pause { immediate: now });
            sim.schedule(t + 50, 0, Event::Resume);
        }
        if let Some(t) = cancel {
            sim.schedule(t, 0, Event::Cancel { reason: None });
        }
        let state = sim.run(100_000).expect("runs");
        prop_assert!(state.is_terminal(), "the parent ended: {}", state);
        for r in &sim.runs[1..] {
            prop_assert!(r.exec.state().is_terminal(), "{} is {}", r.id, r.exec.state());
        }
        prop_assert_eq!(sim.runs[0].exec.children_in_flight(), 0);
        // Children of the forEach step in flight at once, from the parent's log.
        let mut live: BTreeMap<(String, u32), bool> = BTreeMap::new();
        for (_, run, a) in &sim.log {
            if *run != 0 { continue; }
            match a {
                Action::StartChild(c) => { live.insert((c.key.clone(), c.attempt), true); }
                Action::ItemChanged { key, attempt, state, .. } if *state != StepState::Running => { live.remove(&(key.clone(), *attempt)); }
                Action::StepChanged { key, attempt, state, .. } if key == "solo" && *state != StepState::Running => { live.remove(&(key.clone(), *attempt)); }
                _ => {}
            }
            let kids = live.keys().filter(|(k, _)| k == "kids").count();
            prop_assert!(kids <= 2, "maxConcurrency");
            prop_assert!(live.len() <= 3, "parallelism");
        }
        if state == ExecutionState::Completed {
            let out = sim.runs[0].exec.step("kids").and_then(|s| s.output.as_ref()).map(|o| o.text.to_string()).unwrap_or_default();
            let list: Vec<serde_json::Value> = serde_json::from_str(&out).expect("list");
            prop_assert_eq!(list.len(), 5);
        }
    }
}

// ---- Budgets over children ----

const BUDGET_PARENT: &str = r#"
name: parent
inputs:
  xs: {default: [0, 1, 2]}
steps:
  - {key: first, agent: w, prompt: "begin", maxTokens: 40}
  - key: kids
    type: workflow
    workflow: child.yaml
    forEach: "{{xs}}"
    maxConcurrency: 2
    inputs: {n: "{{item}}"}
  - {key: solo, type: workflow, workflow: child.yaml, inputs: {n: 9}}
  - {key: last, agent: w, prompt: "end {{first.result}}", maxTokens: 30, dependencies: [first, kids, solo]}
"#;
const BUDGET_CHILD: &str = r#"
name: child
inputs:
  n:
steps:
  - {key: a, agent: w, prompt: "a {{n}}", maxTokens: 25}
  - {key: b, agent: w, prompt: "b {{n}}", maxTokens: 35}
  - {key: deeper, type: workflow, workflow: grandchild.yaml, dependencies: [a]}
"#;
const BUDGET_GRANDCHILD: &str =
    "name: grandchild\nsteps:\n  - {key: g, agent: w, prompt: \"g\", maxTokens: 20}\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A run with children and grandchildren, each answer costing up to its
    /// worst case (prompt estimate + maxTokens): what all of them spent never
    /// passes the root's budget. Whenever the root pauses for its budget, it
    /// is raised by a random amount and resumed; the run completes in the end.
    #[test]
    fn a_run_with_its_children_stays_within_its_budget(
        budget in 1u64..400,
        raises in proptest::collection::vec(20u64..300, 1..40),
        costs in proptest::collection::vec(0u64..=100, 1..30),
        parallelism in 1u32..4,
        latency in 1u64..30,
    ) {
        use ax_core::exec::{Spend, prompt_tokens};
        use ax_core::sim::TreeSimulator;
        use ax_core::subworkflow::{DocumentLoader, analyze_tree};
        let parent = BUDGET_PARENT.replace(
            "name: parent\n",
            &format!("name: parent\nconfig: {{parallelism: {parallelism}, budget: {{tokens: {budget}}}}}\n"),
        );
        let mut loader = DocumentLoader::new([
            ("child.yaml".to_owned(), BUDGET_CHILD.to_owned()),
            ("grandchild.yaml".to_owned(), BUDGET_GRANDCHILD.to_owned()),
        ]);
        let a = analyze_tree(&parent, &ax_core::Options::for_file("parent.yaml"), "parent.yaml", &mut loader);
        prop_assert!(a.report.valid, "{:?}", a.report.errors);
        let root = Execution::new(a.plan.expect("valid"), BTreeMap::new(), 11).expect("exec");
        let mut n = 0usize;
        let mut sim = TreeSimulator::new(root, 0, move |_, s| Reply::Succeed {
            after_ms: latency,
            output: format!("{}{}", s.key, s.attempt),
        })
        .with_charges(move |_, s| {
            // A share of the attempt's worst case.
            let worst = prompt_tokens(s.prompt.len()) + u64::from(s.settings.max_tokens.unwrap_or(0));
            n += 1;
            Spend { usd: 0.0, tokens: worst * costs[n % costs.len()] / 100 }
        });
        let mut limit = budget;
        let mut raised = 0usize;
        loop {
            let state = sim.run(200_000).expect("runs");
            prop_assert!(
                sim.charged.tokens <= limit,
                "spent {} with a budget of {} ({})", sim.charged.tokens, limit, state
            );
            if state == ExecutionState::Completed {
                break;
            }
            let reason = sim.runs[0].exec.reason().unwrap_or("").to_owned();
            prop_assert_eq!(state, ExecutionState::Paused, "{}", reason);
            prop_assert!(reason.starts_with("budget:"), "{}", reason);
            prop_assert!(raised < 200, "never completes: {}", reason);
            limit += raises[raised % raises.len()] + 10 * raised as u64;
            raised += 1;
            sim.runs[0].exec.set_budget(ax_core::Budget { usd: None, tokens: Some(limit) });
            let now = sim.now;
            sim.schedule(now + 1, 0, Event::Resume);
        }
        // Every run ended, and the root counts what they all spent.
        for r in &sim.runs {
            prop_assert_eq!(r.exec.state(), ExecutionState::Completed, "{}", r.id);
        }
        prop_assert_eq!(sim.runs[0].exec.spent().tokens, sim.charged.tokens);
    }
}
