//! Inputs that the fuzz targets (fuzz/, `cargo xtask fuzz`) found, each the
//! smallest form of a crash or a broken property, kept so that it stays fixed.
//! RELIABILITY.md ("Fuzzing") says which run found what.

use ax_core::exec::{Action, Event, Execution};
use ax_core::validate::{Options, analyze};
use ax_core::{Plan, Workflow, emit};
use std::collections::BTreeMap;

/// Analyze `text` (format from `name`), emit the workflow as YAML and as JSON,
/// and read both back: the same workflow each time.
fn round_trip(name: &str, text: &str) -> Workflow {
    let a = analyze(text, &Options::for_file(name));
    assert!(a.report.valid, "{:?}", a.report.errors);
    let wf = a.workflow().cloned().expect("workflow");
    for (file, out) in [
        ("x.yaml", emit::to_yaml(&wf)),
        ("x.json", emit::to_json(&wf)),
    ] {
        let b = analyze(&out, &Options::for_file(file));
        assert!(b.report.valid, "{file}: {:?}\n{out}", b.report.errors);
        assert_eq!(
            b.workflow(),
            Some(&wf),
            "{file} reads back differently:\n{out}"
        );
    }
    wf
}

/// parse_validate: a byte order mark inside a multi-line prompt (from a JSON
/// file) was written as itself into a YAML `|` block, and YAML refuses a BOM
/// inside a document, so the exported YAML did not read back.
#[test]
fn yaml_export_escapes_a_byte_order_mark() {
    let wf = round_trip(
        "bom.json",
        r#"{"name": "x", "steps": [{"key": "a", "agent": "b", "prompt": "one \ufeff{{topic}}\ntwo"}]}"#,
    );
    assert!(wf.steps[0].prompt.contains('\u{feff}'));
    // On one line (a quoted scalar) too, and as a key.
    round_trip(
        "bom.json",
        r#"{"name": "\ufeffx", "inputs": {"t": {"default": {"\ufeffk": 1}}}, "steps": [{"key": "a", "agent": "b", "prompt": "{{t}}"}]}"#,
    );
}

/// Edge inputs of the same family (these already read back before the fix:
/// saphyr-parser takes them raw): characters outside YAML's printable set
/// (DEL, C1 controls, NEL, the line and paragraph separators, U+FFFE) in one-
/// and multi-line strings, now escaped.
#[test]
fn yaml_export_escapes_non_printable_characters() {
    for c in [
        "\\u007f", "\\u0085", "\\u0090", "\\u2028", "\\u2029", "\\ufffe", "\\u0001",
    ] {
        round_trip(
            "np.json",
            &format!(
                r#"{{"name": "n{c}", "steps": [{{"key": "a", "agent": "b", "prompt": "x{c}y\nz{c}"}}]}}"#
            ),
        );
    }
}

/// Found while fixing the above (same code, by reading it, before the fuzzer
/// got there): a multi-line string whose first line is empty went into a `|`
/// block, which takes its indentation from the first non-empty line, so
/// `"\n  x"` came back as `"\nx"`. Such strings are now double-quoted.
#[test]
fn yaml_export_keeps_leading_indentation_after_an_empty_first_line() {
    let wf = round_trip(
        "lead.json",
        r#"{"name": "l", "steps": [{"key": "a", "agent": "b", "prompt": "\n  indented\nnot"}]}"#,
    );
    assert_eq!(wf.steps[0].prompt, "\n  indented\nnot");
}

/// executor_events: when one event starts several steps, the actions came as
/// StepChanged(running), StartStep, StepChanged(running), StartStep…, with the
/// Checkpoint after the first record only: a driver that walks the list in
/// order started an attempt before recording the next one. Records (and the
/// checkpoint) now all come before the first effect.
#[test]
fn records_come_before_effects_when_several_steps_start() {
    let yaml = "name: fan\nconfig: {parallelism: 3}\nsteps:\n  - {key: root, agent: w, prompt: go}\n  - {key: f1, agent: w, prompt: one, dependencies: [root]}\n  - {key: f2, agent: w, prompt: two, dependencies: [root]}\n  - {key: f3, agent: w, prompt: three, dependencies: [root]}\n";
    let plan = Plan::from_text(yaml, Some("fan.yaml")).expect("plan");
    let mut e = Execution::new(plan, BTreeMap::new(), 1).expect("execution");
    e.handle(Event::Start, 0).expect("start");
    let actions = e
        .handle(
            Event::StepSucceeded {
                key: "root".into(),
                attempt: 1,
                output: "ok".into(),
            },
            10,
        )
        .expect("answer");
    let starts = actions
        .iter()
        .filter(|a| matches!(a, Action::StartStep(_)))
        .count();
    assert_eq!(starts, 3, "{actions:?}");
    let first_effect = actions
        .iter()
        .position(|a| !a.is_record())
        .expect("effects");
    assert!(
        actions[first_effect..].iter().all(|a| !a.is_record()),
        "a record after an effect: {actions:?}"
    );
    let checkpoint = actions
        .iter()
        .position(|a| matches!(a, Action::Checkpoint))
        .expect("checkpoint");
    assert_eq!(checkpoint + 1, first_effect, "{actions:?}");
}

/// executor_events: after `interrupt` (the process died; the wake-up it knew is
/// gone), a refused event (here `Start` on an interrupted run) marked the
/// pending retry's wake-up as announced while its actions were dropped, so the
/// `Resume` that followed sent no `WakeAt`: the new driver never ticked, and
/// the run hung with a step waiting for a retry.
#[test]
fn a_refused_event_does_not_swallow_the_wake_up() {
    use ax_core::{ErrorClass, StepError};
    let yaml = "name: r\nsteps:\n  - {key: a, agent: w, prompt: p, retryPolicy: {maxRetries: 2, retryDelayMs: 1000}}\n";
    let plan = Plan::from_text(yaml, Some("r.yaml")).expect("plan");
    let mut e = Execution::new(plan, BTreeMap::new(), 1).expect("execution");
    e.handle(Event::Start, 0).expect("start");
    let failed = e
        .handle(
            Event::StepFailed {
                key: "a".into(),
                attempt: 1,
                error: StepError::new(ErrorClass::RateLimit, "slow down"),
            },
            10,
        )
        .expect("failure");
    let retry_at = failed
        .iter()
        .find_map(|a| match a {
            Action::WakeAt { at } => Some(*at),
            _ => None,
        })
        .expect("a wake-up for the retry");
    e.interrupt(20).expect("interrupt");
    assert!(e.handle(Event::Start, 30).is_err());
    let resumed = e.handle(Event::Resume, 40).expect("resume");
    assert!(
        resumed.contains(&Action::WakeAt { at: retry_at }),
        "the driver is never told to wake: {resumed:?}"
    );
}

/// checkpoint_restore (its field-editing mode): a checkpoint whose sequence
/// number was `u64::MAX` restored, and the next `take_delta` overflowed
/// (`attempt to add with overflow` in debug builds, a wrap to 0 in release);
/// a step's attempt count at `u32::MAX` did the same at its next start (seen
/// while writing that mode). Such a checkpoint is now refused with a clear
/// error.
#[test]
fn a_checkpoint_with_exhausted_counters_is_refused() {
    use ax_core::{Checkpoint, RestoreError, StepState};
    let yaml = "name: c\nsteps:\n  - {key: a, agent: w, prompt: p}\n";
    let plan = Plan::from_text(yaml, Some("c.yaml")).expect("plan");
    let mut e = Execution::new(plan.clone(), BTreeMap::new(), 1).expect("execution");
    e.handle(Event::Start, 0).expect("start");
    let good = e.snapshot();

    let mut cp: Checkpoint = good.clone();
    cp.seq = u64::MAX;
    match Execution::restore(plan.clone(), &cp, &|_| None) {
        Err(RestoreError::Invalid(m)) => assert!(m.contains("sequence number"), "{m}"),
        other => panic!(
            "restored a checkpoint at seq u64::MAX: {:?}",
            other.map(|_| ())
        ),
    }

    let mut cp = good.clone();
    let a = cp.steps.get_mut("a").expect("step a");
    a.state = StepState::Ready;
    a.attempt = u32::MAX;
    match Execution::restore(plan.clone(), &cp, &|_| None) {
        Err(RestoreError::Invalid(m)) => assert!(m.contains("step `a` has attempt"), "{m}"),
        other => panic!(
            "restored a step at attempt u32::MAX: {:?}",
            other.map(|_| ())
        ),
    }

    // The checkpoint as taken still restores.
    assert!(Execution::restore(plan, &good, &|_| None).is_ok());
}
