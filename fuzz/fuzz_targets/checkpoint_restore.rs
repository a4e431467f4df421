//! Checkpoint restore against a fixed valid plan (fixtures/diamond.yaml).
//!
//! Input, by its first byte:
//! - even: the rest is checkpoint JSON (also tried as a delta and as a
//!   checkpoint file), restored with a fixed set of stored outputs;
//! - odd: a structured path. The first half of the rest drives a run of the
//!   plan (which attempt answers, how), then the run is snapshotted and edited
//!   as the second half says (its first byte odd: fields of the snapshot set
//!   to extreme or inconsistent values; even: bytes of its JSON replaced or
//!   removed), and the result restored.
//!
//! Either way: `Ok` or a `RestoreError`, never a panic. A restored execution
//! snapshots to something that restores exactly (restore ∘ snapshot is a fixed
//! point), and handles a round of events (ticks, answers for what is in flight,
//! pause, resume, cancel, interrupt) with `Ok` or a refusal.
#![no_main]

use ax_core::checkpoint::CheckpointFile;
use ax_core::exec::{Event, Execution, StepError};
use ax_core::plan::output_hash;
use ax_core::{Checkpoint, CheckpointDelta, ErrorClass, ExecutionState, Plan, StepState};
use ax_fuzz::{DIAMOND, plan};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// Outputs a driver has stored (seeds refer to them by hash).
const STORED: &[&str] = &[
    "ok",
    "research notes",
    r#"{"level":"high","score":9}"#,
    r#"{"level":"low"}"#,
    "please stop",
];

/// The plan, and the stored outputs by hash.
type Fixture = (Arc<Plan>, BTreeMap<String, Arc<str>>);

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let outputs = STORED
            .iter()
            .map(|t| (output_hash(t), Arc::<str>::from(*t)))
            .collect();
        (plan(DIAMOND), outputs)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (plan, stored) = fixture();
    if mode % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        if let Ok(delta) = serde_json::from_str::<CheckpointDelta>(text) {
            let mut base = Execution::new(plan.clone(), BTreeMap::new(), 0)
                .expect("execution")
                .snapshot();
            base.apply(&delta);
            exercise(plan, &base, stored);
        }
        if let Ok(file) = CheckpointFile::from_json(text) {
            let outputs: BTreeMap<String, Arc<str>> = file
                .outputs
                .iter()
                .map(|(h, t)| (h.clone(), Arc::from(t.as_str())))
                .collect();
            exercise(plan, &file.checkpoint, &outputs);
        }
        if let Ok(cp) = Checkpoint::from_json(text) {
            exercise(plan, &cp, stored);
        }
    } else {
        structured(plan, rest);
    }
});

/// Run the plan as the bytes say, snapshot, mutate the JSON, restore.
fn structured(plan: &Arc<Plan>, data: &[u8]) {
    let split = data.len() / 2;
    let (script, edits) = data.split_at(split);
    let mut e = Execution::new(plan.clone(), BTreeMap::new(), 7).expect("execution");
    let mut now = 0;
    let mut in_flight: Vec<(String, u32)> = Vec::new();
    let feed = |e: &mut Execution, ev: Event, now: u64, in_flight: &mut Vec<(String, u32)>| {
        if let Ok(actions) = e.handle(ev, now) {
            for a in actions {
                match a {
                    ax_core::Action::StartStep(s) => in_flight.push((s.key, s.attempt)),
                    ax_core::Action::AbortStep { key, .. } => in_flight.retain(|(k, _)| *k != key),
                    _ => {}
                }
            }
        }
    };
    feed(&mut e, Event::Start, now, &mut in_flight);
    for &b in script {
        now += u64::from(b % 64) * 10;
        let ev = match (b >> 6, in_flight.is_empty()) {
            (_, true) | (3, _) => Event::Tick,
            (0 | 1, false) => {
                let (key, attempt) = in_flight.remove(b as usize % in_flight.len());
                Event::StepSucceeded {
                    key,
                    attempt,
                    output: STORED[b as usize % STORED.len()].to_owned(),
                }
            }
            _ => {
                let (key, attempt) = in_flight.remove(b as usize % in_flight.len());
                Event::StepFailed {
                    key,
                    attempt,
                    error: StepError::new(ErrorClass::ALL[b as usize % ErrorClass::ALL.len()], "fuzz"),
                }
            }
        };
        feed(&mut e, ev, now, &mut in_flight);
    }
    let outputs = e.outputs();
    let cp = e.snapshot();
    // Unmutated, the restore is exact.
    let (r, compat) = Execution::restore(plan.clone(), &cp, &|h| outputs.get(h).cloned())
        .expect("a fresh snapshot restores");
    assert!(compat.same_definition);
    assert_eq!(r.peek_snapshot(), cp);
    if edits.first().is_some_and(|b| b & 1 == 1) {
        // Edit fields of the snapshot to extreme or inconsistent values.
        let mut cp = cp;
        for edit in edits[1..].chunks(3) {
            set_field(plan, &mut cp, edit);
        }
        exercise(plan, &cp, &outputs);
        return;
    }
    let mut json = cp.to_json().into_bytes();
    for pair in edits.chunks(2) {
        if json.is_empty() {
            break;
        }
        let at = pair[0] as usize * 7 % json.len();
        match pair.get(1) {
            Some(&v) if v < 0x80 => json[at] = v,
            Some(_) => {
                json.remove(at);
            }
            None => json.truncate(at),
        }
    }
    if let Ok(text) = std::str::from_utf8(&json)
        && let Ok(cp) = Checkpoint::from_json(text)
    {
        exercise(plan, &cp, &outputs);
    }
}

/// `[step, field, value]`: set one field of a step (or of the header) to one
/// of a few values, extremes included.
fn set_field(plan: &Plan, cp: &mut Checkpoint, edit: &[u8]) {
    let [step, field, value] = *edit else {
        return;
    };
    let v: u64 = match value % 8 {
        0 => 0,
        1 => 1,
        2 => u64::from(u32::MAX) - 1,
        3 => u64::from(u32::MAX),
        4 => u64::MAX - 1,
        5 => u64::MAX,
        _ => u64::from(value) * 100,
    };
    let v32 = u32::try_from(v).unwrap_or(u32::MAX);
    let h = &mut cp.header;
    match field % 16 {
        8 => h.clock = v,
        9 => h.active_ms = v,
        10 => h.running_since = Some(v),
        11 => h.state = ExecutionState::ALL[value as usize % ExecutionState::ALL.len()],
        12 => h.last_wake = Some(v),
        13 => h.last_checkpoint_at = Some(v),
        14 => h.started_at = Some(v),
        15 => cp.seq = v,
        f => {
            let key = plan.key(step as usize % plan.len()).to_owned();
            let s = cp.steps.entry(key).or_insert_with(|| {
                serde_json::from_str(r#"{"state": "pending"}"#).expect("a step snapshot")
            });
            match f {
                0 => s.attempt = v32,
                1 => s.failures = v32,
                2 => s.started_at = Some(v),
                3 => s.finished_at = Some(v),
                4 => s.deadline = Some(v),
                5 => s.retry_at = Some(v),
                6 => s.state = StepState::ALL[value as usize % StepState::ALL.len()],
                _ => s.skipped_by_condition = !s.skipped_by_condition,
            }
        }
    }
}

/// Restore; check the fixed point; feed a round of events.
fn exercise(plan: &Arc<Plan>, cp: &Checkpoint, outputs: &BTreeMap<String, Arc<str>>) {
    let lookup = |h: &str| outputs.get(h).cloned();
    let Ok((mut e, _compat)) = Execution::restore(plan.clone(), cp, &lookup) else {
        return;
    };
    let snap = e.peek_snapshot();
    let (again, compat) = Execution::restore(plan.clone(), &snap, &lookup)
        .expect("a restored execution's snapshot restores");
    assert!(compat.same_definition);
    assert_eq!(
        again.peek_snapshot(),
        snap,
        "restore ∘ snapshot is not a fixed point"
    );
    let _ = Checkpoint::from_json(&snap.to_json()).expect("snapshot JSON reads back");

    let t0 = snap.header.clock;
    let mut events = vec![(Event::Tick, t0)];
    for (i, s) in e.steps().iter().enumerate() {
        if s.state == StepState::Running {
            events.push((
                Event::StepSucceeded {
                    key: plan.key(i).to_owned(),
                    attempt: s.attempt,
                    output: r#"{"level":"high"}"#.to_owned(),
                },
                t0.saturating_add(1),
            ));
        }
    }
    events.extend([
        (Event::Tick, t0.saturating_add(100_000)),
        (Event::Pause { immediate: true }, t0.saturating_add(100_001)),
        (Event::Resume, t0.saturating_add(100_002)),
        (Event::Tick, u64::MAX),
        (Event::Cancel { reason: None }, u64::MAX),
    ]);
    let mut interrupted = e.clone();
    let _ = interrupted.interrupt(t0);
    let _ = interrupted.handle(Event::Resume, t0);
    for (ev, at) in events {
        let _ = e.handle(ev, at);
        let _ = e.take_delta();
    }
}
