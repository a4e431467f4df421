//! Bytes → `analyze` as YAML and as JSON. Never a panic; a valid workflow has a
//! consistent plan (every step once in the order, dependencies first, levels
//! increasing along edges), and emitting it as YAML or JSON and analyzing that
//! again gives the same workflow and the same definition hash.
#![no_main]

use ax_core::parse::Format;
use ax_core::validate::{Options, analyze, analyze_bytes};
use ax_core::{Plan, emit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [Format::Yaml, Format::Json] {
        let opts = Options {
            format: Some(format),
            ..Options::default()
        };
        let a = analyze_bytes(data, &opts);
        let report = a.full_report();
        // A verdict is consistent with its problems.
        assert_eq!(report.valid, report.errors.is_empty(), "{report:?}");
        if let Some(plan) = &a.plan {
            assert!(report.valid);
            check_plan(plan);
            round_trip(plan, Format::Yaml);
            round_trip(plan, Format::Json);
        } else {
            assert!(!report.valid, "valid without a plan");
        }
    }
});

fn check_plan(plan: &Plan) {
    let g = &plan.graph;
    let n = plan.len();
    assert_eq!(g.len(), n);
    let order = g.order();
    assert_eq!(order.len(), n, "order has every step once");
    let mut pos = vec![usize::MAX; n];
    for (p, &i) in order.iter().enumerate() {
        assert!(i < n);
        assert_eq!(pos[i], usize::MAX, "step {i} twice in the order");
        pos[i] = p;
    }
    let mut in_levels = 0;
    for l in g.levels() {
        in_levels += l.len();
    }
    assert_eq!(in_levels, n, "levels hold every step once");
    for i in 0..n {
        assert_eq!(plan.index_of(plan.key(i)), Some(i));
        for &d in g.dependencies(i) {
            assert!(pos[d] < pos[i], "dependency after its dependent");
            assert!(
                g.level_of(d) < g.level_of(i),
                "dependency not on an earlier level"
            );
            assert!(g.dependents(d).contains(&i));
        }
        // Every declared dependency is an edge.
        for dep in &plan.workflow.steps[i].dependencies {
            let d = plan.index_of(dep).expect("dependency is a step");
            assert!(g.dependencies(i).contains(&d));
        }
    }
    // Presentation never panics.
    let _ = plan.to_json();
    let _ = plan.to_mermaid();
    let _ = plan.to_dot();
    let _ = plan.hash();
}

fn round_trip(plan: &Plan, format: Format) {
    let text = match format {
        Format::Yaml => emit::to_yaml(&plan.workflow),
        Format::Json => emit::to_json(&plan.workflow),
    };
    let opts = Options {
        format: Some(format),
        ..Options::default()
    };
    let again = analyze(&text, &opts);
    let Some(p2) = again.plan else {
        panic!(
            "emitted {format:?} does not validate: {:?}\n--- emitted ---\n{text}",
            again.report.errors
        );
    };
    assert_eq!(
        p2.workflow, plan.workflow,
        "emitted {format:?} reads back differently\n--- emitted ---\n{text}"
    );
    assert_eq!(p2.hash(), plan.hash());
}
