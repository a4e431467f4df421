//! Criterion benchmarks of the core: parse+validate+plan by size and shape,
//! executor throughput, checkpoint write and restore. Figures go to BENCHMARKS.md.

use ax_core::exec::{Event, Execution};
use ax_core::parse::Format;
use ax_core::sim::{Reply, Simulator};
use ax_core::{Checkpoint, ExecutionState, Options, Plan, Workflow, analyze};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

#[path = "support/workload.rs"]
mod workload;
use workload::{workflow_json, workflow_yaml};

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

/// What the JSON figures compare with: serde_json reading the same text straight
/// into the model types (no positions, no validation, no plan), and the core's own
/// spanned parse alone.
fn baseline(c: &mut Criterion) {
    let mut group = c.benchmark_group("baseline");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    let limits = ax_core::parse::Limits::default();
    for (shape, chain) in [("chain", true), ("wide", false)] {
        let text = workflow_json(10_000, chain);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(
            BenchmarkId::new(format!("serde_json/json/{shape}"), 10_000),
            &text,
            |b, text| b.iter(|| serde_json::from_str::<Workflow>(black_box(text)).expect("reads")),
        );
        group.bench_with_input(
            BenchmarkId::new(format!("parse/json/{shape}"), 10_000),
            &text,
            |b, text| {
                b.iter(|| {
                    ax_core::parse::parse(black_box(text), Some(Format::Json), &limits)
                        .expect("parses")
                })
            },
        );
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

criterion_group!(
    benches,
    parse_validate_plan,
    baseline,
    executor,
    checkpoints
);
criterion_main!(benches);
