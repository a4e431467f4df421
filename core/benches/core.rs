//! Criterion benchmarks of the core: parse+validate+plan by size and shape,
//! executor throughput, checkpoint write and restore. Figures go to BENCHMARKS.md.

use ax_core::exec::{Event, Execution};
use ax_core::sim::{Reply, Simulator};
use ax_core::{Checkpoint, ExecutionState, Options, Plan, analyze};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

/// A workflow of `n` steps: a chain (each step uses the previous result) or wide
/// (one root, everything else depends on it).
pub fn workflow_yaml(n: usize, chain: bool) -> String {
    let mut s =
        String::from("name: bench\ndescription: generated\nconfig:\n  parallelism: 8\nsteps:\n");
    for i in 0..n {
        s.push_str(&format!("  - key: step-{i}\n    agent: backend\n"));
        if i == 0 {
            s.push_str(
                "    prompt: \"Start the analysis of the repository and list the modules.\"\n",
            );
        } else {
            let dep = if chain { i - 1 } else { 0 };
            s.push_str(&format!(
                "    prompt: \"Review the previous findings and extend them: {{{{step-{dep}.result}}}}\"\n    dependencies: [step-{dep}]\n    timeoutMs: 30000\n"
            ));
        }
    }
    s
}

pub fn workflow_json(n: usize, chain: bool) -> String {
    let a = analyze(&workflow_yaml(n, chain), &Options::for_file("w.yaml"));
    ax_core::emit::to_json(a.workflow().expect("generated workflow loads"))
}

fn parse_validate_plan(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse+validate+plan");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for &n in &[10usize, 100, 1_000, 10_000] {
        for (shape, chain) in [("chain", true), ("wide", false)] {
            for (fmt, text, file) in [
                ("yaml", workflow_yaml(n, chain), "w.yaml"),
                ("json", workflow_json(n, chain), "w.json"),
            ] {
                group.throughput(Throughput::Bytes(text.len() as u64));
                let opts = Options::for_file(file);
                group.bench_with_input(
                    BenchmarkId::new(format!("{fmt}/{shape}"), n),
                    &text,
                    |b, text| {
                        b.iter(|| {
                            let a = analyze(black_box(text), &opts);
                            assert!(a.plan.is_some());
                            a
                        })
                    },
                );
            }
        }
    }
    group.finish();
}

fn plan_for(n: usize, chain: bool) -> Arc<Plan> {
    Plan::from_text(&workflow_yaml(n, chain), Some("w.yaml")).expect("valid")
}

fn executor(c: &mut Criterion) {
    let mut group = c.benchmark_group("executor");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for &(n, chain) in &[(100usize, true), (1_000, true), (1_000, false)] {
        let plan = plan_for(n, chain);
        let shape = if chain { "chain" } else { "wide" };
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new(format!("run/{shape}"), n), |b| {
            b.iter(|| {
                let exec = Execution::new(plan.clone(), BTreeMap::new(), 1).expect("exec");
                let mut sim = Simulator::new(exec, 0, |_| Reply::Succeed {
                    after_ms: 1,
                    output: "ok".into(),
                });
                assert_eq!(sim.run(1_000_000), Ok(ExecutionState::Completed));
            })
        });
    }
    group.bench_function("transition", |b| {
        b.iter(|| black_box(ExecutionState::Running).transition(black_box(ExecutionState::Paused)))
    });
    group.finish();
}

/// An execution of a 100-step chain stopped halfway.
fn halfway(n: usize) -> Execution {
    let exec = Execution::new(plan_for(n, true), BTreeMap::new(), 1).expect("exec");
    let mut sim = Simulator::new(exec, 0, |s| Reply::Succeed {
        after_ms: 1,
        output: format!("result of {} — {}", s.key, "lorem ipsum ".repeat(20)),
    });
    sim.feed(Event::Start).expect("start");
    sim.run(n).expect("runs");
    sim.exec
}

fn checkpoints(c: &mut Criterion) {
    let mut group = c.benchmark_group("checkpoint");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    let mut exec = halfway(100);
    group.bench_function("write/100", |b| b.iter(|| exec.snapshot().to_json()));
    let json = exec.snapshot().to_json();
    let outputs = exec.outputs();
    let plan = exec.plan().clone();
    group.bench_function("restore/100", |b| {
        b.iter(|| {
            let cp = Checkpoint::from_json(black_box(&json)).expect("parses");
            Execution::restore(plan.clone(), &cp, &|h| outputs.get(h).cloned()).expect("restores")
        })
    });
    group.bench_function("delta/100", |b| {
        b.iter(|| serde_json::to_string(&exec.take_delta()).unwrap_or_default())
    });
    group.finish();
}

criterion_group!(benches, parse_validate_plan, executor, checkpoints);
criterion_main!(benches);
