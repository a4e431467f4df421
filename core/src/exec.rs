//! The sans-IO executor. An [`Execution`] owns every scheduling decision of a run:
//! the driver (the server's tokio loop, the browser's wasm loop, a test) feeds it
//! [`Event`]s with the current time and carries out the [`Action`]s it answers
//! with. It never reads a clock, draws randomness or does IO, so the same events
//! give the same actions on every platform.
//!
//! Driver contract, per `handle` call:
//! 1. persist the records (`StepChanged`, `ExecutionChanged`, `Checkpoint`) first,
//! 2. then carry out the effects (`AbortStep`, `StartStep`, `WakeAt`, `Finished`).
//!
//! `WakeAt` replaces any earlier wake-up; waking early or late is harmless (send
//! `Tick` with the real time).
//!
//! Beyond prompt steps: an approval step waits for a decision event (`Approve`,
//! `Reject`) and an execution with nothing to do but wait is `waiting`
//! (`approval.rs`); a `forEach` step runs one attempt (or child) per item, each
//! item retried on its own (`items.rs`); a `type: workflow` step runs a child
//! execution that the driver starts, reports on and controls (`child.rs`).
//! Attempt numbers count per step across its items, so `(key, attempt)` always
//! names one attempt or one child.

mod approval;
mod budget;
mod child;
mod items;

pub use budget::{DEFAULT_MAX_TOKENS, Rate, Spend, prompt_tokens};
pub use child::ChildControl;
pub use items::{ItemRun, Items};

use crate::checkpoint::{
    CHECKPOINT_VERSION, Checkpoint, CheckpointDelta, Compatibility, Header, OutputRef,
    RestoreError, StepSnapshot,
};
use crate::model::{Budget, ErrorClass, ModelSettings, RetryPolicy, StepType};
use crate::plan::{InputError, Plan, output_hash};
use crate::retry::{self, Decision, ProviderRetry};
use crate::sort::VecSet;
use crate::state::{ExecutionState, StepState, TransitionError};
use crate::template::{Context, parse_output_json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// Why an attempt failed, as the driver classified it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepError {
    pub class: ErrorClass,
    pub message: String,
    /// The provider asked to wait this long before trying again (`retry-after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// The failing provider's retry settings (from the agents file), for steps
    /// without a `retryPolicy`; `None` means the SDK defaults. An input to the
    /// decision only: never recorded, so a restored run uses whatever the
    /// driver then reports.
    #[serde(skip)]
    pub provider_retry: Option<ProviderRetry>,
}

impl StepError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> StepError {
        StepError {
            class,
            message: message.into(),
            retry_after_ms: None,
            provider_retry: None,
        }
    }
}

/// What happens to an execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    /// A person approved an approval step that is waiting. `data` must satisfy
    /// the step's `outputSchema` (when it has one).
    #[serde(rename_all = "camelCase")]
    Approve {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<Value>,
        /// Who decided, when the driver knows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// A person rejected an approval step that is waiting: it fails with class
    /// `rejected`.
    #[serde(rename_all = "camelCase")]
    Reject {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// The driver started the child execution that `StartChild` asked for
    /// (recorded in checkpoints, so that a restore finds the child again).
    #[serde(rename_all = "camelCase")]
    ChildStarted {
        key: String,
        attempt: u32,
        /// The child execution's id.
        id: String,
    },
    /// A child execution began (or stopped) waiting for a decision.
    #[serde(rename_all = "camelCase")]
    ChildWaiting {
        key: String,
        attempt: u32,
        waiting: bool,
    },
    /// A child execution completed; `result` is its [`Execution::outcome`].
    #[serde(rename_all = "camelCase")]
    ChildCompleted {
        key: String,
        attempt: u32,
        result: Value,
        /// What the child (with its own children) spent: charged to this run.
        #[serde(default, skip_serializing_if = "Spend::is_zero")]
        spent: Spend,
    },
    /// A child execution failed or was cancelled (see [`Execution::outcome`]).
    #[serde(rename_all = "camelCase")]
    ChildFailed {
        key: String,
        attempt: u32,
        error: StepError,
        #[serde(default, skip_serializing_if = "Spend::is_zero")]
        spent: Spend,
    },
    /// A child execution paused because it reached the budget this run gave
    /// it (what was left of this run's budget when it started): this run
    /// pauses for its budget too.
    #[serde(rename_all = "camelCase")]
    ChildOutOfBudget {
        key: String,
        attempt: u32,
        /// The child's own reason.
        reason: String,
    },
    /// Begin running (from idle).
    Start,
    /// An attempt answered.
    #[serde(rename_all = "camelCase")]
    StepSucceeded {
        key: String,
        attempt: u32,
        output: String,
    },
    /// An attempt failed.
    #[serde(rename_all = "camelCase")]
    StepFailed {
        key: String,
        attempt: u32,
        error: StepError,
    },
    /// Time passed (timers may fire).
    Tick,
    /// Start nothing new; with `immediate`, abort in-flight attempts too (they
    /// re-run on resume without using a retry).
    Pause {
        #[serde(default)]
        immediate: bool,
    },
    /// Continue a paused, interrupted or failed execution.
    Resume,
    /// Abort everything; final.
    Cancel {
        #[serde(default)]
        reason: Option<String>,
    },
}

/// Why an in-flight attempt must be aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AbortReason {
    Timeout,
    Paused,
    Cancelled,
    RunFailed,
}

/// A request to start one attempt of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartStep {
    pub key: String,
    pub attempt: u32,
    pub agent: String,
    /// The rendered prompt.
    pub prompt: String,
    /// The attempt times out at this time (the executor enforces it; the driver
    /// may also pass it to its HTTP client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// The step's `outputSchema`, for providers with structured output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Arc<Value>>,
    /// For a `forEach` step: the item (0-based) this attempt is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
    /// The step's own model settings, over the agent's.
    #[serde(default, skip_serializing_if = "ModelSettings::is_empty")]
    pub settings: ModelSettings,
    /// Whether (and how) the driver may answer from the response cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::model::CacheUse>,
}

/// A request to start a child execution (`type: workflow`): run `workflow`
/// (the step's reference as written; [`Plan::sub_workflow`] has it loaded when
/// the plan was made with a loader) with `inputs`, then send `ChildCompleted` or
/// `ChildFailed` with the same key and attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartChild {
    pub key: String,
    pub attempt: u32,
    pub workflow: String,
    pub inputs: BTreeMap<String, Value>,
    /// The child is cancelled (and the attempt fails with `timeout`) at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// For a `forEach` step: the item (0-based) this child is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
    /// When this run has a budget: what the child may spend (what was left of
    /// this run's budget; the child's own `config.budget` where that is lower).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

/// What the driver must record or do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Action {
    /// Record: a step changed state.
    #[serde(rename_all = "camelCase")]
    StepChanged {
        key: String,
        state: StepState,
        attempt: u32,
        at: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<StepError>,
        /// For `completed`: the content hash of the output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_hash: Option<String>,
    },
    /// Record: the execution changed state.
    #[serde(rename_all = "camelCase")]
    ExecutionChanged {
        state: ExecutionState,
        at: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Record: a `forEach` step computed its list; its items run from now on.
    #[serde(rename_all = "camelCase")]
    ItemsListed { key: String, count: u32, at: u64 },
    /// Record: an item of a `forEach` step changed state.
    #[serde(rename_all = "camelCase")]
    ItemChanged {
        key: String,
        item: u32,
        state: StepState,
        attempt: u32,
        at: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<StepError>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_hash: Option<String>,
    },
    /// Record: take a checkpoint now (`snapshot()` or `take_delta()`).
    Checkpoint,
    /// Effect: abort an in-flight attempt.
    #[serde(rename_all = "camelCase")]
    AbortStep {
        key: String,
        attempt: u32,
        reason: AbortReason,
    },
    /// Effect: start an attempt.
    StartStep(StartStep),
    /// Effect: an approval step waits for a decision; show `prompt` to the
    /// people who decide. At `deadline` (if any) the executor decides by the
    /// step's `onTimeout`.
    #[serde(rename_all = "camelCase")]
    AwaitDecision {
        key: String,
        prompt: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<u64>,
        /// What `data` given with an approval must satisfy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_schema: Option<Arc<Value>>,
    },
    /// Effect: start a child execution.
    StartChild(StartChild),
    /// Effect: pause, resume or cancel a child execution in flight (the parent
    /// was paused, resumed or cancelled, failed, or the attempt timed out).
    #[serde(rename_all = "camelCase")]
    ControlChild {
        key: String,
        attempt: u32,
        control: ChildControl,
    },
    /// Effect: give the child of `(key, attempt)` this budget (this run's
    /// budget was raised while the child was in flight: it gets what is left
    /// now). Comes before the `ControlChild` that resumes it.
    #[serde(rename_all = "camelCase")]
    BudgetChild {
        key: String,
        attempt: u32,
        budget: Budget,
    },
    /// Effect: send `Tick` at (or after) this time.
    #[serde(rename_all = "camelCase")]
    WakeAt { at: u64 },
    /// Effect: the execution ended.
    #[serde(rename_all = "camelCase")]
    Finished {
        state: ExecutionState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl Action {
    /// Records are persisted before effects are carried out.
    pub fn is_record(&self) -> bool {
        matches!(
            self,
            Action::StepChanged { .. }
                | Action::ExecutionChanged { .. }
                | Action::ItemsListed { .. }
                | Action::ItemChanged { .. }
                | Action::Checkpoint
        )
    }
}

/// Events the execution refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("the workflow has no step `{0}`")]
    UnknownStep(String),
    /// A result for an attempt that is no longer running (timed out, aborted,
    /// superseded). Drivers drop it.
    #[error("ignored a result for step `{key}` attempt {attempt}: {why}")]
    Stale {
        key: String,
        attempt: u32,
        why: String,
    },
    #[error("cannot {action} an execution that is {state}")]
    InvalidControl {
        action: &'static str,
        state: ExecutionState,
    },
    /// A decision for a step that is not waiting for one (HTTP 409).
    #[error("step `{key}` is not waiting for a decision: it is {state}")]
    NotWaiting { key: String, state: StepState },
    /// A decision for a step that is not an approval, or a child's report for a
    /// step that runs no child (and the like).
    #[error("step `{key}` {why}")]
    WrongStep { key: String, why: String },
    /// Approval data that does not satisfy the step's `outputSchema` (HTTP 422).
    #[error("the data does not satisfy the `outputSchema` of step `{key}`: {}", .problems.join("; "))]
    InvalidDecision { key: String, problems: Vec<String> },
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    Inputs(#[from] InputError),
}

/// A completed step's output.
#[derive(Debug)]
pub struct Output {
    pub text: Arc<str>,
    pub hash: String,
    json: OnceLock<Option<Value>>,
}

impl Output {
    pub fn new(text: Arc<str>) -> Output {
        let hash = output_hash(&text);
        Output {
            text,
            hash,
            json: OnceLock::new(),
        }
    }
    fn with_json(text: Arc<str>, json: Option<Value>) -> Output {
        let o = Output::new(text);
        let _ = o.json.set(json);
        o
    }
    /// The output parsed as JSON (whole text or first fenced block), computed once.
    pub fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| parse_output_json(&self.text))
            .as_ref()
    }
}

impl Clone for Output {
    fn clone(&self) -> Self {
        let o = Output {
            text: self.text.clone(),
            hash: self.hash.clone(),
            json: OnceLock::new(),
        };
        if let Some(j) = self.json.get() {
            let _ = o.json.set(j.clone());
        }
        o
    }
}

impl PartialEq for Output {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.text == other.text
    }
}

/// One step's progress in this execution.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepRun {
    pub state: StepState,
    /// Attempts started so far.
    pub attempt: u32,
    /// Failed attempts counted against the retry budget.
    pub failures: u32,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// The running attempt times out at this time.
    pub deadline: Option<u64>,
    /// The next attempt starts at this time (waiting-retry).
    pub retry_at: Option<u64>,
    pub output: Option<Output>,
    pub error: Option<StepError>,
    /// Why it was skipped or cancelled, in words.
    pub reason: Option<String>,
    /// Skipped because its `when` condition was false (not because of a dependency).
    pub skipped_by_condition: bool,
    /// An approval's request: its prompt, rendered when it began waiting.
    pub request: Option<String>,
    /// A `forEach` step's items, once its list is known.
    pub items: Option<Box<Items>>,
    /// A `type: workflow` step's child in flight (without `forEach`).
    pub child: Option<ChildLink>,
}

/// What an attempt number names: a step's own attempt (or child), or one of
/// its items'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Step(usize),
    Item(usize, usize),
}

impl Slot {
    /// The step's index.
    fn step(self) -> usize {
        match self {
            Slot::Step(i) | Slot::Item(i, _) => i,
        }
    }
}

/// A child execution in flight, as its parent knows it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildLink {
    /// The child execution's id, once the driver reported it (`ChildStarted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The child waits for a decision (`ChildWaiting`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waiting: bool,
    /// The child used up what it was given (`ChildOutOfBudget`, with its
    /// reason): it gets more once more is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starved: Option<String>,
    /// What of this run's budget is held for the child until it ends (the
    /// budget it was given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Spend>,
}

/// A run of a [`Plan`].
#[derive(Debug, Clone)]
pub struct Execution {
    plan: Arc<Plan>,
    state: ExecutionState,
    inputs: BTreeMap<String, Value>,
    seed: u64,
    steps: Vec<StepRun>,
    started_at: Option<u64>,
    finished_at: Option<u64>,
    /// Running (unpaused) time accumulated before `running_since`.
    active_ms: u64,
    running_since: Option<u64>,
    reason: Option<String>,
    last_checkpoint_at: Option<u64>,
    checkpoint_due: bool,
    pause_settled: bool,
    seq: u64,
    clock: u64,
    /// The run's own budget (over `config.budget`) and what it spent.
    budget: Budget,
    spent: Spend,
    // Derived state, rebuilt on restore.
    /// Each step's worst case per attempt (the driver's price table).
    rates: Vec<Rate>,
    /// The worst case of attempts in flight: (step, attempt, spend).
    reserved: Vec<(usize, u32, Spend)>,
    /// The next attempt waits for attempts in flight to settle (budget).
    budget_wait: bool,
    /// Attempts and children in flight (what `config.parallelism` caps).
    running: usize,
    /// Children in flight, and those of them waiting for a decision.
    children: usize,
    waiting_children: usize,
    /// Approval steps waiting for a decision.
    waiting: usize,
    /// Steps and items waiting to retry.
    retrying: usize,
    /// Steps that can start something: ready steps, and `forEach` steps with an
    /// item to start (below their `maxConcurrency`).
    ready: VecSet<usize>,
    timers: VecSet<(u64, usize)>,
    /// Deadlines and retry times of items: (time, step, item).
    item_timers: VecSet<(u64, usize, u32)>,
    unsettled_deps: Vec<u32>,
    last_wake: Option<u64>,
    // Delta tracking.
    dirty: VecSet<usize>,
    dirty_items: VecSet<(usize, u32)>,
    // Per-call output.
    actions: Vec<Action>,
    want_checkpoint: bool,
}

impl Execution {
    /// A new, idle execution. Inputs are checked (unknown and missing ones are
    /// errors) and defaults filled in. `seed` makes retry jitter reproducible.
    pub fn new(
        plan: Arc<Plan>,
        inputs: BTreeMap<String, Value>,
        seed: u64,
    ) -> Result<Execution, ExecError> {
        let inputs = plan.resolve_inputs(inputs)?;
        let n = plan.len();
        let mut e = Execution {
            state: ExecutionState::Idle,
            inputs,
            seed,
            steps: vec![StepRun::default(); n],
            started_at: None,
            finished_at: None,
            active_ms: 0,
            running_since: None,
            reason: None,
            last_checkpoint_at: None,
            checkpoint_due: false,
            pause_settled: false,
            seq: 0,
            clock: 0,
            budget: Budget::default(),
            spent: Spend::default(),
            rates: Vec::new(),
            reserved: Vec::new(),
            budget_wait: false,
            running: 0,
            children: 0,
            waiting_children: 0,
            waiting: 0,
            retrying: 0,
            ready: VecSet::new(),
            timers: VecSet::new(),
            item_timers: VecSet::new(),
            unsettled_deps: Vec::new(),
            last_wake: None,
            dirty: VecSet::new(),
            dirty_items: VecSet::new(),
            actions: Vec::new(),
            want_checkpoint: false,
            plan,
        };
        e.rebuild_derived();
        Ok(e)
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }
    pub fn state(&self) -> ExecutionState {
        self.state
    }
    pub fn inputs(&self) -> &BTreeMap<String, Value> {
        &self.inputs
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
    pub fn started_at(&self) -> Option<u64> {
        self.started_at
    }
    pub fn finished_at(&self) -> Option<u64> {
        self.finished_at
    }
    pub fn steps(&self) -> &[StepRun] {
        &self.steps
    }
    pub fn step(&self, key: &str) -> Option<&StepRun> {
        self.plan.index_of(key).map(|i| &self.steps[i])
    }
    /// Attempts and child executions in flight.
    pub fn in_flight(&self) -> usize {
        self.running
    }
    /// Child executions in flight.
    pub fn children_in_flight(&self) -> usize {
        self.children
    }
    /// Paused or waiting with no attempt in flight, or ended: the driver has
    /// nothing to wait for (children in flight report through their own runs).
    pub fn is_quiescent(&self) -> bool {
        self.state.is_terminal()
            || (matches!(
                self.state,
                ExecutionState::Paused
                    | ExecutionState::Interrupted
                    | ExecutionState::Idle
                    | ExecutionState::Waiting
            ) && self.running == self.children)
    }

    /// When the driver should next send `Tick`, if ever.
    pub fn next_wakeup(&self) -> Option<u64> {
        let mut next = self.timers.first().map(|(t, _)| *t);
        let mut consider = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(&(t, _, _)) = self.item_timers.first() {
            consider(t);
        }
        if self.state == ExecutionState::Running
            && let Some(d) = self.run_deadline()
        {
            consider(d);
        }
        if self.checkpoint_due
            && !self.state.is_terminal()
            && let (Some(iv), Some(last)) = (
                self.plan.workflow.config.checkpoint_interval,
                self.last_checkpoint_at,
            )
        {
            consider(last.saturating_add(iv));
        }
        next
    }

    fn run_deadline(&self) -> Option<u64> {
        let timeout = self.plan.workflow.config.timeout?;
        let since = self.running_since?;
        Some(since.saturating_add(timeout.saturating_sub(self.active_ms)))
    }

    /// Feed one event; returns what to record and do.
    pub fn handle(&mut self, event: Event, now: u64) -> Result<Vec<Action>, ExecError> {
        self.clock = self.clock.max(now);
        let now = self.clock;
        self.actions.clear();
        self.want_checkpoint = false;
        let result = self.dispatch(event, now);
        if result.is_ok() {
            self.advance(now)?;
        }
        if result.is_err() {
            // A refused event changes nothing worth recording.
            self.want_checkpoint = false;
        }
        // Records first (starting several steps interleaves each one's record
        // with its effect), then the checkpoint, then the effects, in order.
        let (mut actions, effects): (Vec<Action>, Vec<Action>) = std::mem::take(&mut self.actions)
            .into_iter()
            .partition(Action::is_record);
        if self.want_checkpoint {
            self.last_checkpoint_at = Some(now);
            self.checkpoint_due = false;
            actions.push(Action::Checkpoint);
        }
        actions.extend(effects);
        // Finished goes last, after every effect.
        if let Some(pos) = actions
            .iter()
            .position(|a| matches!(a, Action::Finished { .. }))
        {
            let f = actions.remove(pos);
            actions.push(f);
        }
        // A refused event returns no actions, so it must not count a wake-up
        // as announced (after `interrupt`, the next accepted event re-announces).
        result?;
        let wake = if self.state.is_terminal() {
            None
        } else {
            self.next_wakeup()
        };
        if wake.is_some()
            && wake != self.last_wake
            && let Some(at) = wake
        {
            actions.push(Action::WakeAt { at });
        }
        self.last_wake = wake;
        Ok(actions)
    }

    fn dispatch(&mut self, event: Event, now: u64) -> Result<(), ExecError> {
        match event {
            Event::Start => {
                if !matches!(
                    self.state,
                    ExecutionState::Idle | ExecutionState::Validating
                ) {
                    return Err(ExecError::InvalidControl {
                        action: "start",
                        state: self.state,
                    });
                }
                self.set_state(ExecutionState::Running, now, None)?;
                self.started_at = Some(now);
                self.running_since = Some(now);
                // A restore point before anything ran.
                self.want_checkpoint = true;
                let roots: Vec<usize> = (0..self.steps.len())
                    .filter(|&i| self.unsettled_deps[i] == 0)
                    .collect();
                let mut work = Vec::new();
                for i in roots {
                    if self.steps[i].state == StepState::Pending {
                        self.consider(i, now, &mut work)?;
                    }
                }
                self.drain(work, now)
            }
            Event::StepSucceeded {
                key,
                attempt,
                output,
            } => {
                let i = match self.attempt_slot(&key, attempt, StepType::Prompt)? {
                    Slot::Item(i, j) => return self.item_succeeded(i, j, output, now),
                    Slot::Step(i) => i,
                };
                self.finish_attempt(i);
                let mut work = Vec::new();
                match self.check_output(i, output) {
                    Ok(out) => self.complete_step(i, out, now, &mut work)?,
                    Err(err) => self.fail_attempt(i, err, now, &mut work)?,
                }
                self.drain(work, now)
            }
            Event::StepFailed {
                key,
                attempt,
                error,
            } => {
                let i = match self.attempt_slot(&key, attempt, StepType::Prompt)? {
                    Slot::Item(i, j) => return self.item_failed(i, j, error, now),
                    Slot::Step(i) => i,
                };
                self.finish_attempt(i);
                let mut work = Vec::new();
                self.fail_attempt(i, error, now, &mut work)?;
                self.drain(work, now)
            }
            Event::Approve {
                key,
                comment,
                data,
                by,
            } => self.approve(&key, comment, data, by, now),
            Event::Reject { key, comment, by } => self.reject(&key, comment, by, now),
            Event::ChildStarted { key, attempt, id } => self.child_started(&key, attempt, id),
            Event::ChildWaiting {
                key,
                attempt,
                waiting,
            } => self.child_waiting(&key, attempt, waiting),
            Event::ChildCompleted {
                key,
                attempt,
                result,
                spent,
            } => self.child_completed(&key, attempt, result, spent, now),
            Event::ChildFailed {
                key,
                attempt,
                error,
                spent,
            } => self.child_failed(&key, attempt, error, spent, now),
            Event::ChildOutOfBudget {
                key,
                attempt,
                reason,
            } => self.child_out_of_budget(&key, attempt, &reason),
            Event::Tick => Ok(()),
            Event::Pause { immediate } => {
                match self.state {
                    ExecutionState::Running => {
                        self.accumulate_active(now);
                        self.set_state(ExecutionState::Paused, now, None)?;
                        self.pause_settled = false;
                    }
                    ExecutionState::Waiting => {
                        self.set_state(ExecutionState::Paused, now, None)?;
                        self.pause_settled = false;
                    }
                    // `pause --now` on an already paused run aborts what is still in flight.
                    ExecutionState::Paused if immediate => {}
                    state => {
                        return Err(ExecError::InvalidControl {
                            action: "pause",
                            state,
                        });
                    }
                }
                if immediate {
                    self.abort_in_flight(now, AbortReason::Paused, "aborted by pause")?;
                }
                self.control_children(ChildControl::Pause { immediate });
                Ok(())
            }
            Event::Resume => {
                let from = self.state;
                if !matches!(
                    from,
                    ExecutionState::Paused | ExecutionState::Interrupted | ExecutionState::Failed
                ) {
                    return Err(ExecError::InvalidControl {
                        action: "resume",
                        state: from,
                    });
                }
                self.set_state(ExecutionState::Running, now, None)?;
                self.reason = None;
                self.finished_at = None;
                self.running_since = Some(now);
                if from == ExecutionState::Failed {
                    self.reset_failures(now)?;
                }
                self.control_children(ChildControl::Resume);
                Ok(())
            }
            Event::Cancel { reason } => {
                if self.state.is_terminal() {
                    return Err(ExecError::InvalidControl {
                        action: "cancel",
                        state: self.state,
                    });
                }
                let reason = reason.unwrap_or_else(|| "cancelled by request".to_owned());
                self.stop_all(now, AbortReason::Cancelled, &reason, true)?;
                self.end(ExecutionState::Cancelled, now, Some(reason))
            }
        }
    }

    /// After every event: fire due timers, start what can start, detect the end,
    /// and decide about checkpoints.
    fn advance(&mut self, now: u64) -> Result<(), ExecError> {
        // Timers.
        while let Some(&(t, i)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            let s = &self.steps[i];
            if s.state == StepState::Running && s.deadline == Some(t) {
                let limit = self.plan.workflow.steps[i].timeout_ms.unwrap_or(0);
                self.abort_attempt(i, AbortReason::Timeout);
                let mut work = Vec::new();
                self.fail_attempt(
                    i,
                    StepError::new(
                        ErrorClass::Timeout,
                        format!("the attempt ran past its limit of {limit} ms"),
                    ),
                    now,
                    &mut work,
                )?;
                self.drain(work, now)?;
            } else if s.state == StepState::WaitingRetry && s.retry_at == Some(t) {
                self.steps[i].retry_at = None;
                self.set_step(i, StepState::Ready, now, None, None, None)?;
                self.ready.insert(i);
            } else if s.state == StepState::Waiting && s.deadline == Some(t) {
                self.approval_timed_out(i, now)?;
            }
        }
        self.fire_item_timers(now)?;
        // A decision arrived (or a child stopped waiting): on with the run.
        if self.state == ExecutionState::Waiting && !self.blocked_on_decisions() {
            self.set_state(ExecutionState::Running, now, None)?;
            self.running_since = Some(now);
        }
        // The run's time limit.
        if self.state == ExecutionState::Running
            && let (Some(deadline), Some(timeout)) =
                (self.run_deadline(), self.plan.workflow.config.timeout)
            && now >= deadline
        {
            let reason = format!("the run timed out after {timeout} ms");
            self.stop_all(now, AbortReason::RunFailed, &reason, false)?;
            self.accumulate_active(now);
            self.end(ExecutionState::Failed, now, Some(reason))?;
        }
        self.schedule(now)?;
        // Nothing can move without a decision: wait (the time does not count
        // against `config.timeout`, as paused time does not).
        if self.state == ExecutionState::Running && self.blocked_on_decisions() {
            self.accumulate_active(now);
            self.set_state(ExecutionState::Waiting, now, Some(self.waiting_reason()))?;
            self.want_checkpoint = true;
        }
        self.check_done(now)?;
        // Paused and no attempt left in flight: a checkpoint marks the pause.
        if self.state == ExecutionState::Paused
            && self.running == self.children
            && !self.pause_settled
        {
            self.pause_settled = true;
            self.want_checkpoint = true;
        }
        if self.checkpoint_due && !self.want_checkpoint {
            match (
                self.plan.workflow.config.checkpoint_interval,
                self.last_checkpoint_at,
            ) {
                (Some(iv), Some(last)) if now < last.saturating_add(iv) => {}
                _ => self.want_checkpoint = true,
            }
        }
        Ok(())
    }

    /// The attempt (or child) that an answer is for: a step's, or one of its
    /// items'. `kind` is the step type the answer fits.
    fn attempt_slot(&self, key: &str, attempt: u32, kind: StepType) -> Result<Slot, ExecError> {
        let i = self
            .plan
            .index_of(key)
            .ok_or_else(|| ExecError::UnknownStep(key.to_owned()))?;
        let step_kind = self.plan.workflow.steps[i].kind;
        if step_kind != kind {
            let why = match kind {
                StepType::Workflow => format!(
                    "runs no child workflow (it is a `{step_kind}` step); this report is not for it"
                ),
                _ => format!("is a `{step_kind}` step: it has no provider attempts"),
            };
            return Err(ExecError::WrongStep {
                key: key.to_owned(),
                why,
            });
        }
        let Some(items) = &self.steps[i].items else {
            return self.running_attempt(key, attempt).map(Slot::Step);
        };
        match items
            .runs
            .iter()
            .position(|r| r.state == StepState::Running && r.attempt == attempt)
        {
            Some(j) => Ok(Slot::Item(i, j)),
            None => Err(ExecError::Stale {
                key: key.to_owned(),
                attempt,
                why: "no item of the step is running this attempt".into(),
            }),
        }
    }

    /// A succeeded attempt's output, checked against the step's `outputSchema`.
    fn check_output(&self, i: usize, output: String) -> Result<Output, StepError> {
        let text: Arc<str> = Arc::from(output);
        let Some(schema) = self.plan.schemas[i].as_ref() else {
            return Ok(Output::new(text));
        };
        let Some(json) = parse_output_json(&text) else {
            return Err(StepError::new(
                ErrorClass::OutputInvalid,
                "the output is not JSON, but the step has an outputSchema",
            ));
        };
        let problems = schema.validate(&json, 5);
        if problems.is_empty() {
            Ok(Output::with_json(text, Some(json)))
        } else {
            Err(StepError::new(
                ErrorClass::OutputInvalid,
                format!(
                    "the output does not match outputSchema: {}",
                    problems.join("; ")
                ),
            ))
        }
    }

    /// Step `i` completed with `out`.
    fn complete_step(
        &mut self,
        i: usize,
        out: Output,
        now: u64,
        work: &mut Vec<usize>,
    ) -> Result<(), ExecError> {
        let hash = out.hash.clone();
        let s = &mut self.steps[i];
        s.output = Some(out);
        s.error = None;
        s.finished_at = Some(now);
        self.set_step(i, StepState::Completed, now, None, None, Some(hash))?;
        work.push(i);
        Ok(())
    }

    /// Step `i` failed for good (no retry), with `err`.
    fn fail_step(
        &mut self,
        i: usize,
        err: StepError,
        now: u64,
        work: &mut Vec<usize>,
    ) -> Result<(), ExecError> {
        let s = &mut self.steps[i];
        s.error = Some(err.clone());
        s.finished_at = Some(now);
        self.set_step(i, StepState::Failed, now, None, Some(err), None)?;
        work.push(i);
        Ok(())
    }

    /// Stop step `i`'s attempt in flight (a provider call or a child).
    fn abort_attempt(&mut self, i: usize, reason: AbortReason) {
        let attempt = self.steps[i].attempt;
        self.finish_attempt(i);
        let key = self.plan.key(i).to_owned();
        match self.steps[i].child.take() {
            Some(link) => {
                self.release_child(&link);
                self.actions.push(Action::ControlChild {
                    key,
                    attempt,
                    control: ChildControl::Cancel { reason },
                });
            }
            None => self.actions.push(Action::AbortStep {
                key,
                attempt,
                reason,
            }),
        }
    }

    /// Abort every provider attempt in flight (children are paused instead);
    /// they go back to ready and run again, without using a retry.
    fn abort_in_flight(
        &mut self,
        now: u64,
        reason: AbortReason,
        why: &str,
    ) -> Result<(), ExecError> {
        for i in self.running_steps() {
            if self.steps[i].items.is_some() {
                self.requeue_items(i, now, reason, why)?;
                continue;
            }
            if self.steps[i].child.is_some() {
                continue;
            }
            self.abort_attempt(i, reason);
            self.set_step(
                i,
                StepState::Ready,
                now,
                Some(format!("{why}; runs again on resume")),
                None,
                None,
            )?;
            self.ready.insert(i);
        }
        Ok(())
    }

    fn running_attempt(&self, key: &str, attempt: u32) -> Result<usize, ExecError> {
        let i = self
            .plan
            .index_of(key)
            .ok_or_else(|| ExecError::UnknownStep(key.to_owned()))?;
        let s = &self.steps[i];
        if s.state != StepState::Running {
            return Err(ExecError::Stale {
                key: key.to_owned(),
                attempt,
                why: format!("the step is {}", s.state),
            });
        }
        if s.attempt != attempt {
            return Err(ExecError::Stale {
                key: key.to_owned(),
                attempt,
                why: format!("attempt {} is the current one", s.attempt),
            });
        }
        Ok(i)
    }

    /// Bookkeeping when an attempt stops running (for any reason).
    fn finish_attempt(&mut self, i: usize) {
        if let Some(d) = self.steps[i].deadline.take() {
            self.timers.remove(&(d, i));
        }
        self.running = self.running.saturating_sub(1);
    }

    fn running_steps(&self) -> Vec<usize> {
        (0..self.steps.len())
            .filter(|&i| self.steps[i].state == StepState::Running)
            .collect()
    }

    fn policy(&self, i: usize) -> RetryPolicy {
        let step = &self.plan.workflow.steps[i];
        match &step.retry_policy {
            Some(p) => p.clone(),
            None => RetryPolicy {
                max_retries: self.plan.workflow.config.max_retries,
                ..RetryPolicy::default()
            },
        }
    }

    /// Delay before retry number `n` (1-based) under the step's workflow rule
    /// (its `retryPolicy`, else `config.maxRetries` with the default delays):
    /// `delay · multiplier^(n-1)`, ±20 % jitter from the seed, at least the
    /// provider's `retry-after`.
    pub fn retry_delay(&self, i: usize, n: u32, retry_after: Option<u64>) -> u64 {
        let r = jitter(self.seed, self.plan.key(i), n);
        retry::policy_delay(&self.policy(i), n, r, retry_after)
    }

    /// The retry settings a failure of step `i` came with: the provider's, or
    /// none at all for a sub-workflow (its own steps had their provider's
    /// retries; running the whole child again is its retryPolicy's call alone).
    fn provider_retry(&self, i: usize, err: &mut StepError) -> ProviderRetry {
        let own = err.provider_retry.take().unwrap_or_default();
        match self.plan.workflow.steps[i].kind {
            StepType::Workflow => ProviderRetry::NONE,
            StepType::Prompt | StepType::Approval => own,
        }
    }

    fn fail_attempt(
        &mut self,
        i: usize,
        mut err: StepError,
        now: u64,
        work: &mut Vec<usize>,
    ) -> Result<(), ExecError> {
        let provider = self.provider_retry(i, &mut err);
        let s = &mut self.steps[i];
        s.failures = s.failures.saturating_add(1);
        let failures = s.failures;
        s.finished_at = Some(now);
        let decision = retry::decide(
            self.plan.workflow.steps[i].retry_policy.as_ref(),
            self.plan.workflow.config.max_retries,
            &provider,
            retry::Failure {
                class: err.class,
                retry_after_ms: err.retry_after_ms,
                failures,
            },
            jitter(self.seed, self.plan.key(i), failures),
        );
        match decision {
            Decision::Retry { delay_ms, reason } if self.state != ExecutionState::Cancelled => {
                let at = now.saturating_add(delay_ms);
                let s = &mut self.steps[i];
                s.retry_at = Some(at);
                s.error = Some(err.clone());
                self.timers.insert((at, i));
                self.set_step(
                    i,
                    StepState::WaitingRetry,
                    now,
                    Some(reason),
                    Some(err),
                    None,
                )?;
            }
            Decision::Retry { .. } | Decision::Fail { .. } => {
                let reason = match decision {
                    Decision::Fail { reason } => reason,
                    Decision::Retry { .. } => None,
                };
                self.steps[i].error = Some(err.clone());
                self.set_step(i, StepState::Failed, now, reason, Some(err), None)?;
                work.push(i);
            }
        }
        Ok(())
    }

    /// Propagate settled steps: unlock dependents, skip what cannot run, and fail
    /// the run when a required step failed (unless `continueOnError`).
    fn drain(&mut self, mut work: Vec<usize>, now: u64) -> Result<(), ExecError> {
        while let Some(i) = work.pop() {
            self.checkpoint_due = true;
            let state = self.steps[i].state;
            if state == StepState::Failed
                && !self.plan.workflow.steps[i].optional
                && !self.plan.workflow.config.continue_on_error
                && !self.state.is_terminal()
            {
                let msg = self.steps[i]
                    .error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_default();
                let reason = format!("step `{}` failed: {msg}", self.plan.key(i));
                self.stop_all(now, AbortReason::RunFailed, &reason, false)?;
                self.accumulate_active(now);
                return self.end(ExecutionState::Failed, now, Some(reason));
            }
            let plan = Arc::clone(&self.plan);
            for &d in plan.graph.dependents(i) {
                self.unsettled_deps[d] = self.unsettled_deps[d].saturating_sub(1);
                if self.unsettled_deps[d] == 0 && self.steps[d].state == StepState::Pending {
                    self.consider(d, now, &mut work)?;
                }
            }
        }
        Ok(())
    }

    /// All dependencies of a pending step are settled: decide whether it runs.
    fn consider(&mut self, i: usize, now: u64, work: &mut Vec<usize>) -> Result<(), ExecError> {
        let plan = Arc::clone(&self.plan);
        let step = &plan.workflow.steps[i];
        let missing = plan
            .graph
            .dependencies(i)
            .iter()
            .copied()
            .find(|&d| self.steps[d].state != StepState::Completed);
        if let Some(d) = missing
            && !step.optional
        {
            let why = match self.steps[d].state {
                StepState::Skipped => "was skipped",
                StepState::Failed => "failed",
                _ => "did not complete",
            };
            let reason = format!("dependency `{}` {why}", plan.key(d));
            self.set_step(i, StepState::Skipped, now, Some(reason), None, None)?;
            work.push(i);
            return Ok(());
        }
        if let Some(cond) = &plan.conditions[i] {
            match cond.evaluate(self) {
                Ok(true) => {}
                Ok(false) => {
                    let when = step.when.clone().unwrap_or_default();
                    self.steps[i].skipped_by_condition = true;
                    self.set_step(
                        i,
                        StepState::Skipped,
                        now,
                        Some(format!("condition `{when}` is false")),
                        None,
                        None,
                    )?;
                    work.push(i);
                    return Ok(());
                }
                Err(msg) => {
                    let err = StepError::new(
                        ErrorClass::Template,
                        format!("the `when` condition could not be evaluated: {msg}"),
                    );
                    self.steps[i].error = Some(err.clone());
                    self.steps[i].finished_at = Some(now);
                    self.set_step(i, StepState::Failed, now, None, Some(err), None)?;
                    work.push(i);
                    return Ok(());
                }
            }
        }
        self.set_step(i, StepState::Ready, now, None, None, None)?;
        self.ready.insert(i);
        Ok(())
    }

    /// Start ready steps, lowest declaration index first, up to `parallelism`.
    /// Approvals begin waiting and `forEach` steps compute their lists without
    /// taking a slot; items and children take one each, like attempts.
    fn schedule(&mut self, now: u64) -> Result<(), ExecError> {
        if self.state != ExecutionState::Running {
            return Ok(());
        }
        if self.children > 0 {
            self.feed_starved_children(now)?;
            if self.state != ExecutionState::Running {
                return Ok(());
            }
        }
        if self.plan.has_approvals() {
            let approvals: Vec<usize> = self
                .ready
                .iter()
                .copied()
                .filter(|&i| self.plan.workflow.steps[i].kind == StepType::Approval)
                .collect();
            for i in approvals {
                if self.state != ExecutionState::Running {
                    return Ok(());
                }
                self.ready.remove(&i);
                self.open_approval(i, now)?;
            }
        }
        let cap = self.plan.workflow.config.parallelism.max(1) as usize;
        while self.state == ExecutionState::Running {
            let Some(&i) = self.ready.first() else {
                break;
            };
            // An approval that became ready in this loop (a failure unlocked it).
            if self.plan.workflow.steps[i].kind == StepType::Approval {
                self.ready.pop_first();
                self.open_approval(i, now)?;
                continue;
            }
            let has_items = self.plan.workflow.steps[i].for_each.is_some();
            if has_items && self.steps[i].state == StepState::Ready {
                self.ready.pop_first();
                self.list_items(i, now)?;
                continue;
            }
            if self.running >= cap {
                break;
            }
            self.ready.pop_first();
            if has_items {
                self.start_item(i, now)?;
            } else if self.plan.workflow.steps[i].kind == StepType::Workflow {
                self.start_child(i, now)?;
            } else {
                self.start_attempt(i, now)?;
            }
            if std::mem::take(&mut self.budget_wait) {
                // Within budget once attempts in flight have answered.
                break;
            }
        }
        Ok(())
    }

    /// Start an attempt of prompt step `i`.
    fn start_attempt(&mut self, i: usize, now: u64) -> Result<(), ExecError> {
        let rendered = self.plan.prompt(i).and_then(|t| {
            t.render(self).map_err(|errors| {
                errors
                    .iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        });
        let prompt = match rendered {
            Ok(p) => with_feedback(p, self.steps[i].error.as_ref()),
            Err(msg) => {
                let mut work = Vec::new();
                self.fail_step(i, StepError::new(ErrorClass::Template, msg), now, &mut work)?;
                return self.drain(work, now);
            }
        };
        if !self.within_budget(i, &prompt, now)? {
            // Paused, or waiting for answers: it starts later.
            self.ready.insert(i);
            return Ok(());
        }
        let plan = Arc::clone(&self.plan);
        let step = &plan.workflow.steps[i];
        let deadline = step.timeout_ms.map(|t| now.saturating_add(t));
        let s = &mut self.steps[i];
        s.attempt = s.attempt.saturating_add(1);
        s.started_at = Some(now);
        s.finished_at = None;
        s.deadline = deadline;
        s.reason = None;
        let attempt = s.attempt;
        if let Some(d) = deadline {
            self.timers.insert((d, i));
        }
        self.running += 1;
        self.set_step(i, StepState::Running, now, None, None, None)?;
        self.actions.push(Action::StartStep(StartStep {
            key: step.key.clone(),
            attempt,
            agent: step.agent.clone(),
            prompt,
            deadline,
            output_schema: plan.output_schemas[i].clone(),
            item: None,
            settings: step.settings(),
            cache: step.cache_use(&plan.workflow.config),
        }));
        Ok(())
    }

    fn check_done(&mut self, now: u64) -> Result<(), ExecError> {
        if !matches!(self.state, ExecutionState::Running | ExecutionState::Paused) {
            return Ok(());
        }
        if !self.steps.iter().all(|s| s.state.is_settled()) {
            return Ok(());
        }
        let failed: Vec<String> = (0..self.steps.len())
            .filter(|&i| {
                self.steps[i].state == StepState::Failed && !self.plan.workflow.steps[i].optional
            })
            .map(|i| self.plan.key(i).to_owned())
            .collect();
        self.accumulate_active(now);
        if failed.is_empty() {
            self.end(ExecutionState::Completed, now, None)
        } else {
            let reason = format!(
                "required step{} failed: {}",
                if failed.len() == 1 { "" } else { "s" },
                failed.join(", ")
            );
            self.end(ExecutionState::Failed, now, Some(reason))
        }
    }

    /// Abort everything in flight; with `cancel_all`, also cancel every unsettled step.
    fn stop_all(
        &mut self,
        now: u64,
        why: AbortReason,
        reason: &str,
        cancel_all: bool,
    ) -> Result<(), ExecError> {
        for i in 0..self.steps.len() {
            let st = self.steps[i].state;
            let cancel = match st {
                StepState::Running if self.steps[i].items.is_some() => {
                    self.cancel_items(i, now, why, reason)?;
                    true
                }
                StepState::Running => {
                    self.abort_attempt(i, why);
                    true
                }
                StepState::Ready | StepState::WaitingRetry | StepState::Waiting => true,
                StepState::Pending => cancel_all,
                _ => false,
            };
            if cancel {
                if let Some(t) = self.steps[i].retry_at.take() {
                    self.timers.remove(&(t, i));
                }
                if st == StepState::Waiting
                    && let Some(d) = self.steps[i].deadline.take()
                {
                    self.timers.remove(&(d, i));
                }
                self.ready.remove(&i);
                self.set_step(
                    i,
                    StepState::Cancelled,
                    now,
                    Some(reason.to_owned()),
                    None,
                    None,
                )?;
            }
        }
        Ok(())
    }

    fn end(
        &mut self,
        state: ExecutionState,
        now: u64,
        reason: Option<String>,
    ) -> Result<(), ExecError> {
        self.set_state(state, now, reason.clone())?;
        self.reason = reason.clone();
        self.finished_at = Some(now);
        self.running_since = None;
        self.want_checkpoint = true;
        self.actions.push(Action::Finished { state, reason });
        Ok(())
    }

    fn accumulate_active(&mut self, now: u64) {
        if let Some(since) = self.running_since.take() {
            self.active_ms = self.active_ms.saturating_add(now.saturating_sub(since));
        }
    }

    /// Resume after failure: failed and cancelled steps, and what was skipped
    /// because of them, go back to pending with a fresh retry budget.
    fn reset_failures(&mut self, now: u64) -> Result<(), ExecError> {
        let roots: Vec<usize> = (0..self.steps.len())
            .filter(|&i| {
                matches!(
                    self.steps[i].state,
                    StepState::Failed | StepState::Cancelled
                )
            })
            .collect();
        let mut reset: VecSet<usize> = roots.iter().copied().collect();
        for d in self.plan.graph.descendants_of(&roots) {
            let s = &self.steps[d];
            if s.state != StepState::Completed && s.state.is_settled() {
                reset.insert(d);
            }
        }
        for i in reset.into_ascending() {
            let s = &mut self.steps[i];
            s.failures = 0;
            s.error = None;
            s.retry_at = None;
            s.skipped_by_condition = false;
            s.finished_at = None;
            s.request = None;
            // Completed items keep their results: the list is computed again and,
            // when it is the same, only the other items run.
            self.reset_items(i, now)?;
            self.set_step(
                i,
                StepState::Pending,
                now,
                Some("reset on resume".into()),
                None,
                None,
            )?;
        }
        self.active_ms = 0;
        self.rebuild_derived();
        self.consider_all_unlocked(now)
    }

    fn consider_all_unlocked(&mut self, now: u64) -> Result<(), ExecError> {
        let mut work = Vec::new();
        for i in 0..self.steps.len() {
            if self.steps[i].state == StepState::Pending && self.unsettled_deps[i] == 0 {
                self.consider(i, now, &mut work)?;
            }
        }
        self.drain(work, now)
    }

    fn set_state(
        &mut self,
        to: ExecutionState,
        now: u64,
        reason: Option<String>,
    ) -> Result<(), ExecError> {
        self.state = self.state.transition(to)?;
        self.actions.push(Action::ExecutionChanged {
            state: to,
            at: now,
            reason,
        });
        Ok(())
    }

    fn set_step(
        &mut self,
        i: usize,
        to: StepState,
        now: u64,
        reason: Option<String>,
        error: Option<StepError>,
        output_hash: Option<String>,
    ) -> Result<(), ExecError> {
        let s = &mut self.steps[i];
        let from = s.state;
        s.state = s.state.transition(to)?;
        if to != StepState::Skipped {
            s.skipped_by_condition = false;
        }
        if to == StepState::Pending {
            s.output = None;
        }
        if matches!(
            to,
            StepState::Skipped
                | StepState::Cancelled
                | StepState::Ready
                | StepState::Pending
                | StepState::WaitingRetry
        ) || reason.is_some()
        {
            s.reason = reason.clone();
        }
        if matches!(to, StepState::Skipped | StepState::Cancelled) {
            s.finished_at = Some(now);
        }
        self.count_transition(from, to);
        self.dirty.insert(i);
        self.actions.push(Action::StepChanged {
            key: self.plan.key(i).to_owned(),
            state: to,
            attempt: self.steps[i].attempt,
            at: now,
            reason,
            error,
            output_hash,
        });
        Ok(())
    }

    /// Keep the counters of waiting and retrying steps and items.
    fn count_transition(&mut self, from: StepState, to: StepState) {
        if from == to {
            return;
        }
        match from {
            StepState::Waiting => self.waiting = self.waiting.saturating_sub(1),
            StepState::WaitingRetry => self.retrying = self.retrying.saturating_sub(1),
            _ => {}
        }
        match to {
            StepState::Waiting => self.waiting += 1,
            StepState::WaitingRetry => self.retrying += 1,
            _ => {}
        }
    }

    /// Recompute the caches that follow from step states.
    fn rebuild_derived(&mut self) {
        let n = self.steps.len();
        self.running = 0;
        self.children = 0;
        self.waiting_children = 0;
        self.waiting = 0;
        self.retrying = 0;
        self.ready.clear();
        self.timers.clear();
        self.item_timers.clear();
        self.unsettled_deps = vec![0; n];
        for i in 0..n {
            let s = &self.steps[i];
            match s.state {
                StepState::Running if s.items.is_some() => {}
                StepState::Running => {
                    self.running += 1;
                    if let Some(link) = &s.child {
                        self.children += 1;
                        self.waiting_children += usize::from(link.waiting);
                    }
                    if let Some(d) = s.deadline {
                        self.timers.insert((d, i));
                    }
                }
                StepState::Ready => {
                    self.ready.insert(i);
                }
                StepState::WaitingRetry => {
                    self.retrying += 1;
                    if let Some(t) = s.retry_at {
                        self.timers.insert((t, i));
                    }
                }
                StepState::Waiting => {
                    self.waiting += 1;
                    if let Some(d) = s.deadline {
                        self.timers.insert((d, i));
                    }
                }
                _ => {}
            }
            self.unsettled_deps[i] = self
                .plan
                .graph
                .dependencies(i)
                .iter()
                .filter(|&&d| !self.steps[d].state.is_settled())
                .count() as u32;
        }
        self.rebuild_items();
    }

    /// The process that ran this execution is gone: attempts in flight are lost.
    /// They go back to ready (without using a retry) and the execution becomes
    /// interrupted; `Resume` continues it. Returns the records to persist.
    pub fn interrupt(&mut self, now: u64) -> Result<Vec<Action>, ExecError> {
        self.clock = self.clock.max(now);
        let now = self.clock;
        self.actions.clear();
        // Attempts in flight are lost; children are executions of their own and
        // carry on (the driver finds them again through their link).
        self.abort_in_flight(now, AbortReason::Paused, "interrupted")?;
        self.actions.retain(Action::is_record);
        if matches!(self.state, ExecutionState::Running | ExecutionState::Paused) {
            self.accumulate_active(now);
            self.set_state(
                ExecutionState::Interrupted,
                now,
                Some("the process running it stopped".into()),
            )?;
        }
        self.last_wake = None;
        Ok(std::mem::take(&mut self.actions))
    }

    // ---- Checkpoints ----

    fn header(&self, now: u64) -> Header {
        Header {
            state: self.state,
            seed: self.seed,
            inputs: self.inputs.clone(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            active_ms: self.active_ms,
            running_since: self.running_since,
            reason: self.reason.clone(),
            last_checkpoint_at: self.last_checkpoint_at,
            checkpoint_due: self.checkpoint_due,
            pause_settled: self.pause_settled,
            clock: self.clock.max(now),
            last_wake: self.last_wake,
            budget: (!self.budget.is_unlimited()).then_some(self.budget),
            spent: self.spent,
        }
    }

    fn step_snapshot(&self, i: usize) -> StepSnapshot {
        self.step_snapshot_of(i, None)
    }

    /// Step `i`'s snapshot; of its items only those in `only` (a delta's), or all.
    fn step_snapshot_of(&self, i: usize, only: Option<&[u32]>) -> StepSnapshot {
        let s = &self.steps[i];
        StepSnapshot {
            state: s.state,
            attempt: s.attempt,
            failures: s.failures,
            started_at: s.started_at,
            finished_at: s.finished_at,
            deadline: s.deadline,
            retry_at: s.retry_at,
            output: s.output.as_ref().map(|o| OutputRef {
                hash: o.hash.clone(),
                bytes: o.text.len() as u64,
            }),
            step_hash: (s.state == StepState::Completed || s.items.is_some())
                .then(|| self.plan.step_hash(i)),
            error: s.error.clone(),
            reason: s.reason.clone(),
            skipped_by_condition: s.skipped_by_condition,
            request: s.request.clone(),
            items: self.items_snapshot(i, only),
            child: s.child.clone(),
        }
    }

    /// A full snapshot. Outputs are referenced by content hash, not copied.
    pub fn snapshot(&mut self) -> Checkpoint {
        self.seq = self.seq.saturating_add(1);
        self.dirty.clear();
        self.dirty_items.clear();
        self.peek_snapshot()
    }

    /// A full snapshot without advancing the checkpoint sequence.
    pub fn peek_snapshot(&self) -> Checkpoint {
        let steps = crate::sort::btree_map(
            (0..self.steps.len())
                .filter(|&i| self.steps[i] != StepRun::default())
                .map(|i| (self.plan.key(i).to_owned(), self.step_snapshot(i))),
        );
        Checkpoint {
            version: CHECKPOINT_VERSION,
            definition_hash: self.plan.hash().to_owned(),
            seq: self.seq,
            taken_at: self.clock,
            header: self.header(self.clock),
            steps,
        }
    }

    /// Only what changed since the last snapshot or delta: small, whatever the
    /// size of the workflow. Fold deltas onto a snapshot with `Checkpoint::apply`.
    pub fn take_delta(&mut self) -> CheckpointDelta {
        self.seq = self.seq.saturating_add(1);
        let mut dirty = std::mem::take(&mut self.dirty);
        // Items that changed, by step (ascending: `dirty_items` is sorted).
        let mut changed: Vec<(usize, Vec<u32>)> = Vec::new();
        for (i, j) in std::mem::take(&mut self.dirty_items).into_ascending() {
            match changed.last_mut() {
                Some((last, items)) if *last == i => items.push(j),
                _ => changed.push((i, vec![j])),
            }
            dirty.insert(i);
        }
        CheckpointDelta {
            seq: self.seq,
            taken_at: self.clock,
            header: self.header(self.clock),
            steps: crate::sort::btree_map(dirty.into_ascending().map(|i| {
                let only = changed
                    .binary_search_by_key(&i, |(s, _)| *s)
                    .map_or(&[][..], |at| changed[at].1.as_slice());
                (
                    self.plan.key(i).to_owned(),
                    self.step_snapshot_of(i, Some(only)),
                )
            })),
        }
    }

    /// Outputs of completed steps by hash (what a checkpoint refers to).
    pub fn outputs(&self) -> BTreeMap<String, Arc<str>> {
        crate::sort::btree_map(self.output_list())
    }

    /// [`Execution::outputs`] as a `Vec` sorted by hash (what the browser page
    /// uses: one `BTreeMap` type less in its wasm).
    pub fn output_list(&self) -> Vec<(String, Arc<str>)> {
        let mut v: Vec<(String, Arc<str>)> = self
            .steps
            .iter()
            .flat_map(|s| {
                let items = s.items.iter().flat_map(|it| {
                    std::iter::once(&it.list)
                        .chain(it.runs.iter().filter_map(|r| r.output.as_ref()))
                });
                s.output.iter().chain(items)
            })
            .map(|o| (o.hash.clone(), o.text.clone()))
            .collect();
        crate::sort::sort_by(&mut v, |a, b| a.0.cmp(&b.0));
        // The last of equal hashes, as collecting into a map keeps.
        let mut out: Vec<(String, Arc<str>)> = Vec::with_capacity(v.len());
        for kv in v {
            match out.last_mut() {
                Some(last) if last.0 == kv.0 => *last = kv,
                _ => out.push(kv),
            }
        }
        out
    }

    /// Rebuild an execution from a checkpoint. With the same definition the result
    /// is identical to the execution that took it. With an edited definition,
    /// completed steps whose definition changed, and everything downstream of them,
    /// go back to pending; the [`Compatibility`] says which.
    ///
    /// `output` looks up an output text by its hash.
    pub fn restore(
        plan: Arc<Plan>,
        cp: &Checkpoint,
        output: &dyn Fn(&str) -> Option<Arc<str>>,
    ) -> Result<(Execution, Compatibility), RestoreError> {
        if !crate::checkpoint::readable_version(cp.version) {
            return Err(RestoreError::Version {
                found: cp.version,
                supported: CHECKPOINT_VERSION,
            });
        }
        check_counters(cp)?;
        let compat = Compatibility::compute(&plan, cp);
        let n = plan.len();
        let mut steps = vec![StepRun::default(); n];
        let same = compat.same_definition;
        let mut rerun = vec![false; n];
        for key in &compat.rerun {
            if let Some(i) = plan.index_of(key) {
                rerun[i] = true;
            }
        }
        for (key, snap) in &cp.steps {
            let Some(i) = plan.index_of(key) else {
                continue;
            };
            if rerun[i] {
                continue; // back to pending
            }
            let out = match &snap.output {
                None => None,
                Some(r) => Some(restore_output(key, r, output)?),
            };
            if snap.state == StepState::Completed && out.is_none() {
                return Err(RestoreError::MissingOutput {
                    step: key.clone(),
                    hash: String::new(),
                });
            }
            // An edited definition may change what is in flight (an attempt, or
            // the request of an approval): treat it as lost. Children run on.
            // Items stay if the step is what it was (its hash is kept while it
            // has items); else the list is computed again and every item runs.
            let items = match &snap.items {
                Some(it)
                    if plan.workflow.steps[i].for_each.is_some()
                        && (same || snap.step_hash.as_deref() == Some(&plan.step_hash(i))) =>
                {
                    Some(Box::new(items::restore_items(key, it, same, output)?))
                }
                _ => None,
            };
            let state = match snap.state {
                StepState::Running if snap.items.is_some() && items.is_none() => StepState::Ready,
                StepState::Running if !same && snap.child.is_none() && snap.items.is_none() => {
                    StepState::Ready
                }
                StepState::Waiting if !same => StepState::Ready,
                state => state,
            };
            steps[i] = StepRun {
                state,
                attempt: snap.attempt,
                failures: snap.failures,
                started_at: snap.started_at,
                finished_at: snap.finished_at,
                deadline: if matches!(state, StepState::Running | StepState::Waiting) {
                    snap.deadline
                } else {
                    None
                },
                retry_at: snap.retry_at,
                output: out,
                error: snap.error.clone(),
                reason: snap.reason.clone(),
                skipped_by_condition: snap.skipped_by_condition,
                // What was asked stays with the decision; a request made under
                // another definition is asked again.
                request: if state == StepState::Ready {
                    None
                } else {
                    snap.request.clone()
                },
                items,
                child: if state == StepState::Running {
                    snap.child.clone()
                } else {
                    None
                },
            };
        }
        let h = &cp.header;
        let inputs = if same {
            h.inputs.clone()
        } else {
            // The edited definition may take other inputs.
            let mut inputs = h.inputs.clone();
            inputs.retain(|k, _| plan.input_names().contains(k));
            plan.resolve_inputs(inputs).map_err(RestoreError::Inputs)?
        };
        let mut e = Execution {
            state: h.state,
            inputs,
            seed: h.seed,
            steps,
            started_at: h.started_at,
            finished_at: h.finished_at,
            active_ms: h.active_ms,
            running_since: h.running_since,
            reason: h.reason.clone(),
            last_checkpoint_at: h.last_checkpoint_at,
            checkpoint_due: h.checkpoint_due,
            pause_settled: h.pause_settled,
            seq: cp.seq,
            clock: h.clock,
            budget: h.budget.unwrap_or_default(),
            spent: h.spent,
            rates: Vec::new(),
            reserved: Vec::new(),
            budget_wait: false,
            running: 0,
            children: 0,
            waiting_children: 0,
            waiting: 0,
            retrying: 0,
            ready: VecSet::new(),
            timers: VecSet::new(),
            item_timers: VecSet::new(),
            unsettled_deps: Vec::new(),
            last_wake: h.last_wake,
            dirty: VecSet::new(),
            dirty_items: VecSet::new(),
            actions: Vec::new(),
            want_checkpoint: false,
            plan,
        };
        e.rebuild_derived();
        if !same {
            // Re-evaluate pending steps whose dependencies are all settled.
            let now = e.clock;
            if e.state == ExecutionState::Cancelled {
                // Cancel is final, edited definition or not: what it would
                // redo stays cancelled, as a cancel leaves what never ran.
                for s in e.steps.iter_mut().filter(|s| !s.state.is_settled()) {
                    s.state = StepState::Cancelled;
                    s.reason = Some("the execution was cancelled".into());
                }
                e.rebuild_derived();
            } else if e.state.is_terminal() && e.steps.iter().any(|s| !s.state.is_settled()) {
                // A finished run with steps to redo becomes resumable.
                e.state = ExecutionState::Interrupted;
                e.finished_at = None;
            }
            if matches!(
                e.state,
                ExecutionState::Running | ExecutionState::Paused | ExecutionState::Interrupted
            ) {
                e.consider_all_unlocked(now)
                    .map_err(|err| RestoreError::Invalid(err.to_string()))?;
            }
            e.actions.clear();
            e.dirty = (0..e.steps.len()).collect();
        }
        Ok((e, compat))
    }
}

impl Context for Execution {
    fn input(&self, name: &str) -> Option<&Value> {
        self.inputs.get(name)
    }
    fn output(&self, key: &str) -> Option<&str> {
        let i = self.plan.index_of(key)?;
        let s = &self.steps[i];
        if s.state != StepState::Completed {
            return None;
        }
        s.output.as_ref().map(|o| &*o.text)
    }
    fn output_json(&self, key: &str) -> Option<Cow<'_, Value>> {
        let i = self.plan.index_of(key)?;
        let s = &self.steps[i];
        if s.state != StepState::Completed {
            return None;
        }
        s.output.as_ref()?.json().map(Cow::Borrowed)
    }
    fn is_step(&self, key: &str) -> bool {
        self.plan.index_of(key).is_some()
    }
    fn missing_reason(&self, key: &str) -> Option<String> {
        let s = self.step(key)?;
        Some(match (&s.state, &s.reason) {
            (StepState::Skipped, Some(r)) => format!("was skipped ({r})"),
            (StepState::Failed, _) => "failed".to_owned(),
            (state, _) => format!("is {state}"),
        })
    }
}

/// A retry's prompt after an invalid answer tells the model what was wrong.
fn with_feedback(prompt: String, last_error: Option<&StepError>) -> String {
    match last_error {
        Some(e) if e.class == ErrorClass::OutputInvalid => format!(
            "{prompt}\n\n(Your previous answer was rejected: {}. Answer again, following the required format exactly.)",
            e.message
        ),
        _ => prompt,
    }
}

/// Counters a run only ever increments must leave room to count on: a
/// checkpoint with more checkpoints or attempts than any run can make is
/// corrupt (and past 2^53 a JavaScript reader would round it).
fn check_counters(cp: &Checkpoint) -> Result<(), RestoreError> {
    const MAX_SEQ: u64 = 1 << 53;
    const MAX_COUNT: u32 = 1 << 31;
    if cp.seq > MAX_SEQ {
        return Err(RestoreError::Invalid(format!(
            "the checkpoint is not valid: its sequence number {} is past {MAX_SEQ}; it is corrupt",
            cp.seq
        )));
    }
    for (key, s) in &cp.steps {
        let items = s.items.iter().flat_map(|it| it.items.values());
        let counts = [(s.attempt, s.failures)]
            .into_iter()
            .chain(items.map(|i| (i.attempt, i.failures)));
        for (attempt, failures) in counts {
            for (what, n) in [("attempt", attempt), ("failure count", failures)] {
                if n > MAX_COUNT {
                    return Err(RestoreError::Invalid(format!(
                        "the checkpoint is not valid: step `{key}` has {what} {n}, past {MAX_COUNT}; it is corrupt"
                    )));
                }
            }
        }
        if let Some(it) = &s.items
            && let Some((&j, _)) = it.items.iter().next_back()
            && j >= it.count
        {
            return Err(RestoreError::Invalid(format!(
                "the checkpoint is not valid: step `{key}` has item {j} of a list of {}; it is corrupt",
                it.count
            )));
        }
    }
    Ok(())
}

/// An output text by its reference, checked against its hash.
pub(crate) fn restore_output(
    key: &str,
    r: &OutputRef,
    output: &dyn Fn(&str) -> Option<Arc<str>>,
) -> Result<Output, RestoreError> {
    let text = output(&r.hash).ok_or_else(|| RestoreError::MissingOutput {
        step: key.to_owned(),
        hash: r.hash.clone(),
    })?;
    if output_hash(&text) != r.hash {
        return Err(RestoreError::CorruptOutput {
            step: key.to_owned(),
            hash: r.hash.clone(),
        });
    }
    Ok(Output::new(text))
}

/// A reproducible number in [0, 1) from (seed, step, attempt).
fn jitter(seed: u64, key: &str, attempt: u32) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let x = splitmix64(seed ^ splitmix64(h ^ u64::from(attempt)));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
