//! The dry run's logic, free of timers and storage: a simulated provider and a
//! [`Driver`] that feeds the core [`Execution`] and turns its actions into
//! [`Effect`]s for the browser shell (`local_run`) to carry out. Following the
//! core's driver contract, records (checkpoints) come before effects (timers).
//!
//! Checkpoints are stored small: the first of a run is a full snapshot, later
//! ones are deltas (a fresh snapshot every [`SNAPSHOT_EVERY`]), and each output
//! text is stored once, by hash.

use ax_core::checkpoint::{Checkpoint, CheckpointDelta};
use ax_core::exec::{AbortReason, ChildControl, Spend, StartChild};
use ax_core::{
    Action, ErrorClass, Event, ExecError, Execution, ExecutionState, Plan, StartStep, StepError,
    StepState,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::run_view::{
    AttemptView, ItemView, ItemsView, Outcome, StepView, Usage, estimate_tokens,
};

/// A full snapshot after this many deltas, so that a restore replays few.
pub const SNAPSHOT_EVERY: u64 = 20;

/// How the simulated provider behaves (stored in `RunRecord`s as
/// `{"latencyMs", "failureRate", "seed"}`, see `store`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimSettings {
    /// Mean latency of an attempt in milliseconds (each attempt varies ±50 %).
    pub latency_ms: u32,
    /// Percentage of attempts that fail with a retryable error.
    pub failure_rate: f64,
    pub seed: u64,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            latency_ms: 600,
            failure_rate: 0.0,
            seed: 1,
        }
    }
}

/// A small deterministic generator (splitmix64): the same run gives the same answers.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// In `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// What the simulated provider answers to one attempt (or how a child ends),
/// and after how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T = String> {
    pub after_ms: u64,
    pub outcome: Result<T, StepError>,
}

/// The simulated provider: deterministic per (seed, step, attempt).
pub fn simulate(plan: &Plan, start: &StartStep, settings: &SimSettings) -> Reply {
    let mut rng = Rng::new(
        settings.seed
            ^ fnv(&start.key)
            ^ u64::from(start.attempt).wrapping_mul(0x2545_F491_4F6C_DD1D),
    );
    let latency = f64::from(settings.latency_ms);
    let after_ms = (latency * (0.5 + rng.unit())).round() as u64;
    if rng.unit() * 100.0 < settings.failure_rate {
        let classes = [
            ErrorClass::ServerError,
            ErrorClass::RateLimit,
            ErrorClass::Overloaded,
            ErrorClass::Network,
        ];
        let class = classes[(rng.next_u64() % classes.len() as u64) as usize];
        let error = StepError::new(
            class,
            format!(
                "simulated {class} failure (failure rate {}%)",
                settings.failure_rate
            ),
        );
        return Reply {
            after_ms,
            outcome: Err(error),
        };
    }
    let note = format!(
        "simulated answer of `{}` for step `{}`",
        start.agent, start.key
    );
    let i = plan.index_of(&start.key);
    let output = match i.and_then(|i| plan.output_example(i, &note)) {
        Some(json) => serde_json::to_string_pretty(&json).unwrap_or_default(),
        None => {
            let mut prompt: String = start.prompt.chars().take(240).collect();
            if prompt.len() < start.prompt.len() {
                prompt.push('…');
            }
            format!(
                "[{note}, attempt {}]\nThis is a dry run: no model was called. The prompt was:\n{prompt}",
                start.attempt
            )
        }
    };
    Reply {
        after_ms,
        outcome: Ok(output),
    }
}

/// How long a child may run in virtual time (events), so that a child that
/// never ends cannot hang the page.
const CHILD_EVENTS: usize = 200_000;

/// A `type: workflow` step's child in a dry run: the sub-workflow (loaded with
/// the plan from the browser's documents) runs to its end in virtual time with
/// the simulated provider, its own children likewise; its result (or error)
/// arrives after its simulated duration. A child that waits for an approval
/// cannot be answered in the page and fails saying so.
pub fn simulate_child(plan: &Plan, start: &StartChild, settings: &SimSettings) -> Reply<Value> {
    simulate_child_spending(plan, start, settings).0
}

/// [`simulate_child`], with what the child spent (charged to its parent). A
/// child of a run with a budget runs on what the run had left
/// (`start.budget`).
pub fn simulate_child_spending(
    plan: &Plan,
    start: &StartChild,
    settings: &SimSettings,
) -> (Reply<Value>, Spend) {
    let fail = |message: String| {
        let reply = Reply {
            after_ms: 0,
            outcome: Err(StepError::new(ErrorClass::Other, message)),
        };
        (reply, Spend::default())
    };
    let Some(sub) = plan
        .index_of(&start.key)
        .and_then(|i| plan.sub_workflow(i))
        .cloned()
    else {
        return fail(format!(
            "the sub-workflow `{}` of step `{}` is not loaded: keep it as a document of this browser under that name (New or Import…), then start the dry run again",
            start.workflow, start.key
        ));
    };
    let seed = settings.seed ^ fnv(&start.key) ^ u64::from(start.attempt);
    let mut exec = match Execution::new(sub.plan.clone(), start.inputs.clone(), seed) {
        Ok(e) => e,
        Err(e) => return fail(format!("sub-workflow `{}`: {e}", sub.id)),
    };
    if let Some(budget) = start.budget {
        exec.set_budget(budget);
    }
    let mut child = Driver::new(exec, *settings);
    child.records = false;
    let end = match child.run_virtual(CHILD_EVENTS) {
        Ok(end) => end,
        Err(e) => return fail(format!("sub-workflow `{}`: {e}", sub.id)),
    };
    let outcome = match (child.state(), child.exec.outcome()) {
        (ExecutionState::Waiting, _) => Err(StepError::new(
            ErrorClass::Other,
            format!(
                "sub-workflow `{}` waits for a decision on {}: the dry run cannot decide inside a sub-workflow; dry-run its document, or run it on the server",
                sub.id,
                child
                    .exec
                    .pending_decisions()
                    .iter()
                    .map(|(k, _)| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        (_, Some(outcome)) => outcome,
        (ExecutionState::Paused, None) => Err(StepError::new(
            ErrorClass::Other,
            format!(
                "sub-workflow `{}` paused: {}",
                sub.id,
                child.exec.reason().unwrap_or("paused")
            ),
        )),
        (state, None) => Err(StepError::new(
            ErrorClass::Other,
            format!("sub-workflow `{}` did not end (it is {state})", sub.id),
        )),
    };
    let reply = Reply {
        after_ms: end,
        outcome,
    };
    (reply, child.exec.spent())
}

/// A checkpoint to store, with the output texts it needs that are not stored yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Persist {
    pub seq: u64,
    pub taken_at: u64,
    pub state: ExecutionState,
    pub record: Record,
    pub outputs: Vec<(String, Arc<str>)>,
    pub completed: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Snapshot(Checkpoint),
    Delta(CheckpointDelta),
}

/// What the browser shell must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Store a checkpoint (before anything below).
    Persist(Persist),
    /// Deliver `event` after `after_ms` (a simulated answer).
    Reply {
        key: String,
        attempt: u32,
        after_ms: u64,
        event: Event,
    },
    /// Forget a scheduled answer (the attempt was aborted).
    Cancel { key: String, attempt: u32 },
    /// Send `Tick` at this time (replaces the previous wake-up).
    Wake { at: u64 },
    Finished {
        state: ExecutionState,
        reason: Option<String>,
    },
}

/// Drives an [`Execution`] with the simulated provider.
#[derive(Debug, Clone)]
pub struct Driver {
    pub exec: Execution,
    pub settings: SimSettings,
    /// Rendered prompts of the latest attempts.
    prompts: BTreeMap<String, String>,
    /// Every attempt seen by this driver, by step key.
    attempts: BTreeMap<String, Vec<AttemptView>>,
    /// Output hashes already stored.
    stored: BTreeSet<String>,
    /// The simulated answers of running attempts, streamed in pieces:
    /// (step key, attempt, started at, answer due after ms, answer); a few at
    /// a time, a list is enough.
    answers: Vec<(String, u32, u64, u64, String)>,
    deltas_since_snapshot: u64,
    snapshots: u64,
    /// Takes checkpoints (a simulated child does not: it is not stored).
    records: bool,
}

/// The simulated provider costs nothing (a dry run never pauses at a dollar
/// budget); tokens are bounded by the step's `maxTokens`.
fn simulated_rate(s: &ax_core::Step) -> ax_core::exec::Rate {
    ax_core::exec::Rate {
        usd_per_token: Some((0.0, 0.0)),
        max_tokens: s.max_tokens.unwrap_or(ax_core::exec::DEFAULT_MAX_TOKENS),
        fixed_tokens: 0,
    }
}

impl Driver {
    pub fn new(mut exec: Execution, settings: SimSettings) -> Driver {
        exec.set_rates(&simulated_rate);
        Driver {
            exec,
            settings,
            prompts: BTreeMap::new(),
            attempts: BTreeMap::new(),
            stored: BTreeSet::new(),
            answers: Vec::new(),
            deltas_since_snapshot: 0,
            snapshots: 0,
            records: true,
        }
    }

    /// A driver for a restored execution whose outputs are already stored and
    /// whose base snapshot exists.
    pub fn restored(mut exec: Execution, settings: SimSettings) -> Driver {
        exec.set_rates(&simulated_rate);
        let stored = ax_core::sort::btree_set(exec.output_list().into_iter().map(|(h, _)| h));
        Driver {
            exec,
            settings,
            prompts: BTreeMap::new(),
            attempts: BTreeMap::new(),
            stored,
            answers: Vec::new(),
            deltas_since_snapshot: 0,
            snapshots: 1,
            records: true,
        }
    }

    pub fn state(&self) -> ExecutionState {
        self.exec.state()
    }

    /// Feed one event at `now` (ms) and get what to do.
    pub fn feed(&mut self, event: Event, now: u64) -> Result<Vec<Effect>, ExecError> {
        let answer = match &event {
            Event::StepSucceeded { key, attempt, .. } => {
                Some((key.clone(), *attempt, Outcome::Succeeded))
            }
            Event::ChildCompleted { key, attempt, .. } => {
                Some((key.clone(), *attempt, Outcome::Succeeded))
            }
            Event::StepFailed {
                key,
                attempt,
                error,
            }
            | Event::ChildFailed {
                key,
                attempt,
                error,
                ..
            } => Some((
                key.clone(),
                *attempt,
                Outcome::Failed {
                    class: error.class.to_string(),
                    message: error.message.clone(),
                },
            )),
            _ => None,
        };
        let actions = self.exec.handle(event, now)?;
        if let Some((key, attempt, outcome)) = answer {
            self.end_attempt(&key, attempt, outcome, now);
        }
        Ok(self.process(actions, now))
    }

    fn end_attempt(&mut self, key: &str, attempt: u32, outcome: Outcome, now: u64) {
        if let Some(a) = self
            .attempts
            .get_mut(key)
            .and_then(|l| l.iter_mut().find(|a| a.attempt == attempt))
            .filter(|a| a.outcome == Outcome::Running)
        {
            a.finished_at = Some(now);
            a.outcome = outcome;
        }
    }

    fn start_attempt(&mut self, key: &str, attempt: u32, now: u64) {
        self.attempts
            .entry(key.to_owned())
            .or_default()
            .push(AttemptView {
                attempt,
                started_at: Some(now),
                finished_at: None,
                outcome: Outcome::Running,
            });
    }

    /// Run from idle to the end (or until nothing more can happen) in virtual
    /// time from 0, answers after their simulated latency; returns the time it
    /// ended. `max_events` bounds it.
    pub fn run_virtual(&mut self, max_events: usize) -> Result<u64, ExecError> {
        let mut now = 0;
        // (due, key, attempt, event), in the order they were scheduled.
        let mut pending: Vec<(u64, String, u32, Event)> = Vec::new();
        let mut wake: Option<u64> = None;
        let mut effects = self.feed(Event::Start, now)?;
        for _ in 0..max_events {
            for e in effects.drain(..) {
                match e {
                    Effect::Reply {
                        key,
                        attempt,
                        after_ms,
                        event,
                    } => pending.push((now + after_ms, key, attempt, event)),
                    Effect::Cancel { key, attempt } => {
                        pending.retain(|p| !(p.1 == key && p.2 == attempt))
                    }
                    Effect::Wake { at } => wake = Some(at),
                    Effect::Persist(_) | Effect::Finished { .. } => {}
                }
            }
            if self.state().is_terminal() {
                break;
            }
            let next = pending
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.0)
                .map(|(i, p)| (i, p.0));
            let event = match (next, wake) {
                (None, None) => break,
                (Some((i, at)), w) if w.is_none_or(|w| at <= w) => {
                    now = now.max(at);
                    pending.remove(i).3
                }
                (_, w) => {
                    wake = None;
                    now = now.max(w.unwrap_or(now));
                    Event::Tick
                }
            };
            effects = match self.feed(event, now) {
                Ok(e) => e,
                Err(ExecError::Stale { .. }) => Vec::new(),
                Err(e) => return Err(e),
            };
        }
        Ok(now)
    }

    /// The page went away with attempts in flight: they are re-run on resume.
    pub fn interrupt(&mut self, now: u64) -> Result<Vec<Effect>, ExecError> {
        let actions = self.exec.interrupt(now)?;
        for list in self.attempts.values_mut() {
            for a in list.iter_mut().filter(|a| a.outcome == Outcome::Running) {
                a.outcome = Outcome::Aborted("lost with the page".into());
            }
        }
        Ok(self.process(actions, now))
    }

    /// Take a checkpoint now (e.g. after a restore), as the executor would.
    pub fn checkpoint(&mut self) -> Persist {
        self.take_checkpoint()
    }

    fn take_checkpoint(&mut self) -> Persist {
        let record = if self.snapshots == 0 || self.deltas_since_snapshot + 1 >= SNAPSHOT_EVERY {
            self.snapshots += 1;
            self.deltas_since_snapshot = 0;
            Record::Snapshot(self.exec.snapshot())
        } else {
            self.deltas_since_snapshot += 1;
            Record::Delta(self.exec.take_delta())
        };
        let (seq, taken_at) = match &record {
            Record::Snapshot(c) => (c.seq, c.taken_at),
            Record::Delta(d) => (d.seq, d.taken_at),
        };
        let mut outputs = Vec::new();
        for (hash, text) in self.exec.output_list() {
            if self.stored.insert(hash.clone()) {
                outputs.push((hash, text));
            }
        }
        let completed = self
            .exec
            .steps()
            .iter()
            .filter(|s| s.state == StepState::Completed)
            .count();
        Persist {
            seq,
            taken_at,
            state: self.exec.state(),
            record,
            outputs,
            completed,
        }
    }

    fn process(&mut self, actions: Vec<Action>, now: u64) -> Vec<Effect> {
        let mut records = Vec::new();
        let mut effects = Vec::new();
        for a in actions {
            match a {
                Action::Checkpoint if self.records => {
                    records.push(Effect::Persist(self.take_checkpoint()))
                }
                Action::Checkpoint => {}
                Action::StepChanged { .. } | Action::ExecutionChanged { .. } => {}
                Action::StartStep(s) => effects.push(self.start_step(s, now)),
                Action::AbortStep {
                    key,
                    attempt,
                    reason,
                } => {
                    let why = match reason {
                        AbortReason::Timeout => "timed out",
                        AbortReason::Paused => "paused",
                        AbortReason::Cancelled => "cancelled",
                        _ => "aborted",
                    };
                    self.end_attempt(&key, attempt, Outcome::Aborted(why.into()), now);
                    effects.push(Effect::Cancel { key, attempt });
                }
                Action::WakeAt { at } => effects.push(Effect::Wake { at }),
                Action::Finished { state, reason } => {
                    effects.push(Effect::Finished { state, reason })
                }
                // forEach items arrive as attempts (`StartStep` with an item);
                // an approval waits for a decision (the run is `waiting`).
                // A simulated child has its outcome already: a pause lets it
                // finish (as a running attempt does); a cancel drops it.
                Action::ItemsListed { .. }
                | Action::ItemChanged { .. }
                | Action::AwaitDecision { .. }
                | Action::BudgetChild { .. }
                | Action::ControlChild {
                    control: ChildControl::Pause { .. } | ChildControl::Resume,
                    ..
                } => {}
                Action::ControlChild { key, attempt, .. } => {
                    self.end_attempt(&key, attempt, Outcome::Aborted("cancelled".into()), now);
                    effects.push(Effect::Cancel { key, attempt });
                }
                Action::StartChild(c) => effects.push(self.start_child(c, now)),
            }
        }
        records.extend(effects);
        records
    }

    /// An attempt starts: its simulated answer, due after its latency.
    fn start_step(&mut self, s: StartStep, now: u64) -> Effect {
        self.prompts.insert(s.key.clone(), s.prompt.clone());
        self.start_attempt(&s.key, s.attempt, now);
        let reply = simulate(self.exec.plan(), &s, &self.settings);
        let (key, attempt) = (s.key, s.attempt);
        self.answers.retain(|a| a.0 != key);
        if let (Ok(output), None) = (&reply.outcome, s.item) {
            let answer = (key.clone(), attempt, now, reply.after_ms, output.clone());
            self.answers.push(answer);
        }
        let event = match reply.outcome {
            Ok(output) => Event::StepSucceeded {
                key: key.clone(),
                attempt,
                output,
            },
            Err(error) => Event::StepFailed {
                key: key.clone(),
                attempt,
                error,
            },
        };
        Effect::Reply {
            key,
            attempt,
            after_ms: reply.after_ms,
            event,
        }
    }

    /// A child starts: it runs at once in virtual time; its outcome is due
    /// after its simulated duration.
    fn start_child(&mut self, c: StartChild, now: u64) -> Effect {
        self.start_attempt(&c.key, c.attempt, now);
        let (reply, spent) = simulate_child_spending(self.exec.plan(), &c, &self.settings);
        let (key, attempt) = (c.key, c.attempt);
        let event = match reply.outcome {
            Ok(result) => Event::ChildCompleted {
                key: key.clone(),
                attempt,
                result,
                spent,
            },
            Err(error) => Event::ChildFailed {
                key: key.clone(),
                attempt,
                error,
                spent,
            },
        };
        Effect::Reply {
            key,
            attempt,
            after_ms: reply.after_ms,
            event,
        }
    }

    /// Every step's state, prompt, output, attempts and estimated tokens, in
    /// declaration order.
    pub fn view(&self) -> Vec<(String, StepView)> {
        let plan = self.exec.plan();
        self.exec
            .steps()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let key = plan.key(i).to_owned();
                // Reopened runs render the prompt again (the same template
                // code over the same upstream outputs).
                let prompt = self.prompts.get(&key).cloned().or_else(|| {
                    (s.attempt > 0)
                        .then(|| {
                            ax_core::template::Template::parse(&plan.workflow.steps[i].prompt).ok()
                        })
                        .flatten()
                        .and_then(|t| t.render(&self.exec).ok())
                });
                let attempts = match self.attempts.get(&key) {
                    Some(list) if !list.is_empty() => list.clone(),
                    // Reopened from a checkpoint: the latest attempt is all that is known.
                    _ if s.attempt > 0 => vec![AttemptView {
                        attempt: s.attempt,
                        started_at: s.started_at,
                        finished_at: s.finished_at,
                        outcome: match (&s.error, s.state) {
                            (Some(e), _) => Outcome::Failed {
                                class: e.class.to_string(),
                                message: e.message.clone(),
                            },
                            (None, StepState::Completed) => Outcome::Succeeded,
                            (None, _) => Outcome::Running,
                        },
                    }],
                    _ => Vec::new(),
                };
                let output = s.output.as_ref().map(|o| o.text.clone());
                let sent = prompt.as_deref().map_or(0, estimate_tokens);
                let usage = Usage {
                    tokens_in: sent * attempts.len() as u64,
                    tokens_out: output.as_deref().map_or(0, estimate_tokens),
                    cost_usd: None,
                    estimated: true,
                };
                let view = StepView {
                    state: s.state,
                    attempt: s.attempt,
                    prompt,
                    output,
                    error: s
                        .error
                        .as_ref()
                        .map(|e| format!("{}: {}", e.class, e.message)),
                    reason: s.reason.clone(),
                    usage,
                    latency_ms: attempts.last().and_then(AttemptView::millis),
                    started_at: s.started_at,
                    finished_at: s.finished_at,
                    provider: Some("simulated".into()),
                    model: None,
                    attempts,
                    request: s.request.clone(),
                    items: s.items.as_deref().map(items_view),
                    live: None,
                    waiting_for: None,
                };
                (key, view)
            })
            .collect()
    }
}

/// A simulated answer streams in this many pieces, evenly over its latency;
/// the last one arrives with the answer.
pub const PIECES: u64 = 4;

impl Driver {
    /// The running steps' simulated answers so far at `now`: of each answer,
    /// the pieces due by then (none before the first quarter of its latency).
    pub fn stream_at(&self, steps: &mut [(String, StepView)], now: u64) {
        for (key, s) in steps.iter_mut() {
            let Some((_, attempt, started, after, text)) =
                self.answers.iter().find(|a| a.0 == *key)
            else {
                continue;
            };
            if s.state != StepState::Running || s.attempt != *attempt || *after == 0 {
                continue;
            }
            let due = (now.saturating_sub(*started) * PIECES / after).min(PIECES - 1);
            let chars = text.chars().count() as u64;
            let shown = (chars * due / PIECES) as usize;
            if shown > 0 {
                s.push_delta(*attempt, 0, &text.chars().take(shown).collect::<String>());
            }
        }
    }
}

/// A forEach step's items as the run panel shows them.
fn items_view(items: &ax_core::exec::Items) -> ItemsView {
    ItemsView {
        completed: items.completed(),
        total: items.len(),
        items: items
            .runs
            .iter()
            .map(|r| ItemView {
                state: r.state,
                output: r.output.as_ref().map(|o| o.text.clone()),
                error: r
                    .error
                    .as_ref()
                    .map(|e| format!("{}: {}", e.class, e.message)),
            })
            .collect(),
    }
}

/// Fold stored records (oldest first, starting at a snapshot) into the
/// checkpoint at `upto` (inclusive).
pub fn fold_checkpoint(records: &[(u64, Record)], upto: u64) -> Option<Checkpoint> {
    let relevant: Vec<&(u64, Record)> = records.iter().filter(|(s, _)| *s <= upto).collect();
    let base = relevant
        .iter()
        .rposition(|(_, r)| matches!(r, Record::Snapshot(_)))?;
    let Record::Snapshot(mut cp) = relevant[base].1.clone() else {
        return None;
    };
    for (_, r) in &relevant[base + 1..] {
        if let Record::Delta(d) = r {
            cp.apply(d);
        }
    }
    Some(cp)
}

/// Inputs a run needs, filled with defaults or sample values.
pub fn sample_inputs(plan: &Plan) -> BTreeMap<String, serde_json::Value> {
    ax_core::sort::btree_map(plan.input_names().iter().map(|name| {
        let v = plan
            .workflow
            .inputs
            .get(name)
            .and_then(|s| s.default.clone())
            .unwrap_or_else(|| serde_json::Value::String(format!("sample {name}")));
        (name.clone(), v)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ax_core::{Options, analyze};
    use std::collections::BinaryHeap;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const FLOW: &str = "name: t\ninputs:\n  topic: {default: bees}\nsteps:\n  - {key: a, agent: x, prompt: \"About {{topic}}\"}\n  - {key: b, agent: y, prompt: \"Use {{a.result}}\", dependencies: [a], outputSchema: {type: object, required: [n], properties: {n: {type: integer}}}}\n  - {key: c, agent: y, prompt: \"n={{b.result.n}}\", dependencies: [b], retryPolicy: {maxRetries: 5, retryDelayMs: 10}}\n";

    fn plan(text: &str) -> Arc<Plan> {
        analyze(text, &Options::default()).plan.expect("valid")
    }

    /// Run to the end in virtual time, carrying out effects like the shell does.
    fn run(driver: &mut Driver, stored: &mut Vec<(u64, Record)>) -> ExecutionState {
        let mut now = 1_000;
        let mut queue: BinaryHeap<std::cmp::Reverse<(u64, u64)>> = BinaryHeap::new();
        let mut events: BTreeMap<u64, (String, u32, Event)> = BTreeMap::new();
        let mut seq = 0;
        let mut effects = driver.feed(Event::Start, now).expect("start");
        for _ in 0..10_000 {
            for e in effects.drain(..) {
                match e {
                    Effect::Persist(p) => stored.push((p.seq, p.record)),
                    Effect::Reply {
                        key,
                        attempt,
                        after_ms,
                        event,
                    } => {
                        seq += 1;
                        queue.push(std::cmp::Reverse((now + after_ms, seq)));
                        events.insert(seq, (key, attempt, event));
                    }
                    Effect::Cancel { key, attempt } => {
                        events.retain(|_, (k, a, _)| !(*k == key && *a == attempt))
                    }
                    Effect::Wake { at } => {
                        seq += 1;
                        queue.push(std::cmp::Reverse((at, seq)));
                        events.insert(seq, (String::new(), 0, Event::Tick));
                    }
                    Effect::Finished { .. } => {}
                }
            }
            if driver.state().is_terminal() {
                break;
            }
            let Some(std::cmp::Reverse((at, id))) = queue.pop() else {
                break;
            };
            let Some((_, _, ev)) = events.remove(&id) else {
                continue;
            };
            now = now.max(at);
            effects = match driver.feed(ev, now) {
                Ok(e) => e,
                Err(ExecError::Stale { .. }) => Vec::new(),
                Err(e) => panic!("{e}"),
            };
        }
        driver.state()
    }

    #[test]
    fn a_zero_latency_run_completes_with_schema_outputs() {
        let p = plan(FLOW);
        let exec = Execution::new(p.clone(), sample_inputs(&p), 7).expect("exec");
        let mut d = Driver::new(
            exec,
            SimSettings {
                latency_ms: 0,
                failure_rate: 0.0,
                seed: 3,
            },
        );
        let mut stored = Vec::new();
        assert_eq!(run(&mut d, &mut stored), ExecutionState::Completed);
        let view = d.view();
        assert!(view.iter().all(|(_, v)| v.state == StepState::Completed));
        let b = &view[1].1;
        let json: serde_json::Value =
            serde_json::from_str(b.output.as_deref().unwrap_or("")).expect("json output");
        assert!(json["n"].is_i64(), "{json}");
        assert!(view[0].1.prompt.as_deref() == Some("About bees"));
        assert!(
            view[0]
                .1
                .output
                .as_deref()
                .is_some_and(|o| o.contains("dry run"))
        );
        // The stored records fold back into the final checkpoint.
        assert!(matches!(stored[0].1, Record::Snapshot(_)));
        assert!(
            stored[1..]
                .iter()
                .all(|(_, r)| matches!(r, Record::Delta(_)))
        );
        let last = stored.last().map(|(s, _)| *s).unwrap_or(0);
        let cp = fold_checkpoint(&stored, last).expect("fold");
        assert_eq!(cp, d.exec.peek_snapshot());
    }

    #[test]
    fn failures_are_retried_and_deterministic() {
        let p = plan(FLOW);
        let settings = SimSettings {
            latency_ms: 50,
            failure_rate: 40.0,
            seed: 11,
        };
        let go = || {
            let exec = Execution::new(p.clone(), sample_inputs(&p), 1).expect("exec");
            let mut d = Driver::new(exec, settings);
            let state = run(&mut d, &mut Vec::new());
            (
                state,
                d.view()
                    .into_iter()
                    .map(|(k, v)| (k, v.state, v.attempt))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(go(), go());
        let replies: Vec<Reply> = (1..50)
            .map(|attempt| {
                let s = StartStep {
                    key: "a".into(),
                    attempt,
                    agent: "x".into(),
                    prompt: "p".into(),
                    deadline: None,
                    output_schema: None,
                    item: None,
                    settings: Default::default(),
                    cache: None,
                };
                simulate(&p, &s, &settings)
            })
            .collect();
        let failed = replies.iter().filter(|r| r.outcome.is_err()).count();
        assert!((5..=35).contains(&failed), "{failed} of 49 failed");
        assert!(replies.iter().all(|r| (25..=75).contains(&r.after_ms)));
    }

    #[test]
    fn restore_then_interrupt_reruns_what_was_in_flight() {
        let p = plan(FLOW);
        let exec = Execution::new(p.clone(), sample_inputs(&p), 1).expect("exec");
        let mut d = Driver::new(
            exec,
            SimSettings {
                latency_ms: 100,
                failure_rate: 0.0,
                seed: 1,
            },
        );
        let effects = d.feed(Event::Start, 10).expect("start");
        let Some(Effect::Persist(first)) = effects.first().cloned() else {
            panic!("checkpoint first: {effects:?}")
        };
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Reply { key, .. } if key == "a"))
        );
        // The page reloads: restore the checkpoint, interrupt, resume.
        let Record::Snapshot(cp) = first.record else {
            panic!("snapshot")
        };
        let (exec, compat) = Execution::restore(p.clone(), &cp, &|_| None).expect("restore");
        assert!(compat.same_definition);
        let mut d2 = Driver::restored(exec, d.settings);
        d2.interrupt(5_000).expect("interrupt");
        assert_eq!(d2.state(), ExecutionState::Interrupted);
        let effects = d2.feed(Event::Resume, 5_001).expect("resume");
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Reply { key, attempt: 2, .. } if key == "a")),
            "{effects:?}"
        );
        assert_eq!(run_from(&mut d2, effects), ExecutionState::Completed);
    }

    fn run_from(d: &mut Driver, mut effects: Vec<Effect>) -> ExecutionState {
        let mut now = 5_001;
        for _ in 0..1000 {
            let mut next = None;
            for e in effects.drain(..) {
                if let Effect::Reply {
                    after_ms, event, ..
                } = e
                {
                    next.get_or_insert((now + after_ms, event));
                }
            }
            let Some((at, ev)) = next else { break };
            now = at;
            effects = d.feed(ev, now).unwrap_or_default();
        }
        d.state()
    }

    fn zero() -> SimSettings {
        SimSettings {
            latency_ms: 0,
            failure_rate: 0.0,
            seed: 1,
        }
    }

    #[test]
    fn an_approval_waits_and_the_decision_is_a_checkpointed_event() {
        let p = plan(
            "name: t\nsteps:\n  - {key: a, agent: x, prompt: go}\n  - {key: ok, type: approval, prompt: \"Fine? {{a.result}}\", dependencies: [a]}\n  - {key: b, agent: x, prompt: \"said {{ok.result.comment}}\", dependencies: [ok]}\n",
        );
        let exec = Execution::new(p.clone(), sample_inputs(&p), 1).expect("exec");
        let mut d = Driver::new(exec, zero());
        let mut stored = Vec::new();
        assert_eq!(run(&mut d, &mut stored), ExecutionState::Waiting);
        let view = d.view();
        assert_eq!(view[1].1.state, StepState::Waiting);
        assert!(
            view[1]
                .1
                .request
                .as_deref()
                .is_some_and(|r| r.starts_with("Fine? [simulated answer")),
            "{:?}",
            view[1].1.request
        );
        let decision = Event::Approve {
            key: "ok".into(),
            comment: Some("yes".into()),
            data: None,
            by: None,
        };
        let effects = d.feed(decision, 5_000).expect("approve");
        let Some(Effect::Persist(p1)) = effects.first().cloned() else {
            panic!("the decision is checkpointed first: {effects:?}")
        };
        // The checkpoint carries the decision: restored, the step is completed.
        stored.push((p1.seq, p1.record));
        let cp = fold_checkpoint(&stored, p1.seq).expect("fold");
        let outputs = d.exec.outputs();
        let (restored, _) =
            Execution::restore(p.clone(), &cp, &|h| outputs.get(h).cloned()).expect("restore");
        assert_eq!(restored.steps()[1].state, StepState::Completed);
        assert_eq!(run_from(&mut d, effects), ExecutionState::Completed);
        assert_eq!(d.view()[2].1.prompt.as_deref(), Some("said yes"));
    }

    #[test]
    fn foreach_items_run_and_show_their_results() {
        let p = plan(
            "name: t\nsteps:\n  - {key: each, agent: x, forEach: [\"a\", \"b\"], prompt: \"item {{item}} #{{index}}\"}\n",
        );
        let exec = Execution::new(p.clone(), sample_inputs(&p), 1).expect("exec");
        let mut d = Driver::new(exec, zero());
        assert_eq!(run(&mut d, &mut Vec::new()), ExecutionState::Completed);
        let view = d.view();
        let items = view[0].1.items.clone().expect("items");
        assert_eq!((items.completed, items.total), (2, 2));
        let rows = view[0].1.item_rows();
        assert_eq!(rows.len(), 2);
        assert!(rows[1].1.contains("item b #1"), "{:?}", rows[1]);
        assert_eq!(view[0].1.attempts.len(), 2, "one attempt per item");
    }

    const KID: &str = "name: kid\ninputs:\n  text: {}\nsteps:\n  - {key: t, agent: x, prompt: \"Translate {{text}}\"}\n";

    fn tree(parent: &str, docs: Vec<(String, String)>) -> Arc<Plan> {
        let mut loader = ax_core::subworkflow::DocumentLoader::new(docs);
        let a =
            ax_core::subworkflow::analyze_tree(parent, &Options::default(), "p.yaml", &mut loader);
        a.plan.unwrap_or_else(|| panic!("{:?}", a.report.errors))
    }

    #[test]
    fn a_simulated_answer_streams_in_pieces_over_its_latency() {
        let p = plan("name: s\nsteps:\n  - {key: a, agent: w, prompt: Say a long thing}\n");
        let exec = Execution::new(p.clone(), sample_inputs(&p), 1).expect("exec");
        let settings = SimSettings {
            latency_ms: 1000,
            ..zero()
        };
        let mut d = Driver::new(exec, settings);
        let effects = d.feed(Event::Start, 100).expect("start");
        let (after, event) = effects
            .iter()
            .find_map(|e| match e {
                Effect::Reply {
                    after_ms, event, ..
                } => Some((*after_ms, event.clone())),
                _ => None,
            })
            .expect("an answer");
        let Event::StepSucceeded { output, .. } = &event else {
            panic!("{event:?}")
        };
        let live_at = |d: &Driver, now: u64| {
            let mut steps = d.view();
            d.stream_at(&mut steps, now);
            steps[0].1.live.as_ref().map(|l| l.text.clone())
        };
        assert_eq!(live_at(&d, 100), None, "nothing before the first piece");
        let half = live_at(&d, 100 + after / 2).expect("half the answer");
        let late = live_at(&d, 100 + after * 10).expect("all but the last piece");
        assert!(output.starts_with(&late) && late.starts_with(&half) && half.len() < late.len());
        assert!(
            late.len() < output.len(),
            "the last piece comes with the answer"
        );
        d.feed(event.clone(), 100 + after).expect("answer");
        assert_eq!(live_at(&d, 100 + after), None, "the output replaces it");
    }

    #[test]
    fn a_child_runs_in_virtual_time_and_its_result_arrives_after_it() {
        let p = tree(
            "name: p\nsteps:\n  - {key: c, type: workflow, workflow: ./kid.yaml, inputs: {text: hello}}\n",
            vec![("kid.yaml".into(), KID.into())],
        );
        let exec = Execution::new(p.clone(), sample_inputs(&p), 1).expect("exec");
        let settings = SimSettings {
            latency_ms: 100,
            ..zero()
        };
        let mut d = Driver::new(exec, settings);
        let effects = d.feed(Event::Start, 0).expect("start");
        let reply = effects.iter().find_map(|e| match e {
            Effect::Reply {
                after_ms, event, ..
            } => Some((*after_ms, event.clone())),
            _ => None,
        });
        let Some((after, Event::ChildCompleted { result, .. })) = reply else {
            panic!("{effects:?}")
        };
        assert!(
            (50..=150).contains(&after),
            "the child's simulated time: {after}"
        );
        assert!(
            result["t"]
                .as_str()
                .is_some_and(|t| t.contains("Translate hello")),
            "{result}"
        );
        assert_eq!(run_from(&mut d, effects), ExecutionState::Completed);
    }

    #[test]
    fn a_child_that_waits_for_a_person_fails_saying_why() {
        let kid = "name: kid\nsteps:\n  - {key: ok, type: approval, prompt: Fine?}\n";
        let p = tree(
            "name: p\nsteps:\n  - {key: c, type: workflow, workflow: kid.yaml}\n",
            vec![("kid.yaml".into(), kid.into())],
        );
        let start = StartChild {
            key: "c".into(),
            attempt: 1,
            workflow: "kid.yaml".into(),
            inputs: BTreeMap::new(),
            deadline: None,
            item: None,
            budget: None,
        };
        let reply = simulate_child(&p, &start, &zero());
        let err = reply.outcome.expect_err("fails");
        assert!(err.message.contains("`ok`"), "{}", err.message);
        assert!(err.message.contains("cannot decide"), "{}", err.message);
    }

    #[test]
    fn pause_waits_for_running_steps_and_resume_continues() {
        let p = plan(FLOW);
        let exec = Execution::new(p.clone(), sample_inputs(&p), 1).expect("exec");
        let mut d = Driver::new(
            exec,
            SimSettings {
                latency_ms: 0,
                failure_rate: 0.0,
                seed: 1,
            },
        );
        let effects = d.feed(Event::Start, 1).expect("start");
        d.feed(Event::Pause { immediate: false }, 2).expect("pause");
        assert_eq!(d.state(), ExecutionState::Paused);
        // The running attempt of `a` answers; nothing new starts.
        let ev = effects.into_iter().find_map(|e| match e {
            Effect::Reply { event, .. } => Some(event),
            _ => None,
        });
        let after = d.feed(ev.expect("reply"), 3).expect("answer");
        assert!(!after.iter().any(|e| matches!(e, Effect::Reply { .. })));
        assert!(
            after.iter().any(|e| matches!(e, Effect::Persist(_))),
            "a checkpoint marks the pause"
        );
        let resumed = d.feed(Event::Resume, 4).expect("resume");
        assert!(
            resumed
                .iter()
                .any(|e| matches!(e, Effect::Reply { key, .. } if key == "b"))
        );
        assert_eq!(run_from(&mut d, resumed), ExecutionState::Completed);
    }
}
