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
