//! Decisions on approval steps, from any process (the API, the CLI), across
//! restarts.
//!
//! The executor decides whether a decision applies (the step must be waiting,
//! the data must satisfy its `outputSchema`). A decision reaches it one of two
//! ways: through the execution's inbox, when a process drives the execution
//! (this one or another: the owner takes messages when it polls for control
//! requests, and records whether each was accepted), or here, when nothing
//! drives it (a `waiting` execution costs no task): this process claims it,
//! applies the decision and drives the run on. Every decision stays in the
//! inbox table as the audit trail.

use super::{Engine, EngineError, EngineResult, Msg, RunEnd};
use crate::store::{
    Claim, ExecutionRecord, InboxMessage, MessageKind, MessageOutcome, NewMessage, now_ms,
};
use anyhow::Result;
use ax_core::ExecutionState;
use ax_core::exec::{Action, Event, ExecError};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long a decision waits for the process driving the execution to take it.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A person's decision on an approval step.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    pub approve: bool,
    pub comment: Option<String>,
    /// Checked against the step's `outputSchema` (approvals only).
    pub data: Option<Value>,
    /// Who decided, when the surface knows.
    pub by: Option<String>,
}

impl Decision {
    fn event(&self, step: &str) -> Event {
        if self.approve {
            Event::Approve {
                key: step.to_owned(),
                comment: self.comment.clone(),
                data: self.data.clone(),
                by: self.by.clone(),
            }
        } else {
            Event::Reject {
                key: step.to_owned(),
                comment: self.comment.clone(),
                by: self.by.clone(),
            }
        }
    }

    fn message(&self, step: &str) -> NewMessage {
        NewMessage {
            kind: if self.approve {
                MessageKind::Approve
            } else {
                MessageKind::Reject
            },
            step: step.to_owned(),
            attempt: None,
            payload: json!({"comment": self.comment, "data": self.data, "by": self.by}),
        }
    }
}

/// The executor's event for a message from the inbox.
pub(super) fn message_event(m: &InboxMessage) -> Option<Event> {
    let text = |k: &str| m.payload.get(k).and_then(Value::as_str).map(str::to_owned);
    match m.kind {
        MessageKind::Approve => Some(Event::Approve {
            key: m.step.clone(),
            comment: text("comment"),
            data: m.payload.get("data").filter(|d| !d.is_null()).cloned(),
            by: text("by"),
        }),
        MessageKind::Reject => Some(Event::Reject {
            key: m.step.clone(),
            comment: text("comment"),
            by: text("by"),
        }),
        // A child's report is the executor's event itself.
        MessageKind::Child => serde_json::from_value(m.payload.clone()).ok(),
    }
}

/// How a refused event reads to whoever sent it: an HTTP status and why.
pub(super) fn refusal(e: &ExecError) -> MessageOutcome {
    let status = match e {
        ExecError::InvalidDecision { .. } => 422,
        ExecError::UnknownStep(_) => 404,
        _ => 409,
    };
    MessageOutcome::Refused {
        status,
        error: e.to_string(),
    }
}

fn refused(status: u16, error: String) -> EngineError {
    match status {
        404 => EngineError::NotFound(error),
        422 => EngineError::Unprocessable(error),
        _ => EngineError::Conflict(error),
    }
}

impl Engine {
    /// Approve or reject an approval step of an execution, from any process.
    /// When nothing drives the execution (it waits, or is paused or
    /// interrupted), this process applies the decision and, if the run can go
    /// on, drives it (the handle).
    pub async fn decide(
        self: &Arc<Self>,
        id: &str,
        step: &str,
        decision: Decision,
    ) -> EngineResult<(ExecutionRecord, Option<JoinHandle<RunEnd>>)> {
        let rec = self.execution(id).await?;
        let state = rec.state();
        if state.is_terminal() {
            return Err(EngineError::Conflict(format!(
                "execution {id} is {state}: step `{step}` is not waiting for a decision"
            )));
        }
        let now = now_ms();
        let here = self.live_here(id);
        let elsewhere =
            rec.owner.as_deref().is_some_and(|o| o != self.me.id) && self.owner_alive(&rec);
        if here.is_some() || elsewhere {
            let row = self.store.deliver(id, decision.message(step), now).await?;
            if let Some(tx) = here {
                let _ = tx.send(Msg::Inbox);
            }
            return self.await_outcome(id, row, &rec).await;
        }
        // Nothing drives it: apply the decision here.
        let (_, mut exec) = self.load(id).await?;
        let lease = match self
            .store
            .claim(id, &self.me, now, self.lease_ms(), true)
            .await?
        {
            Claim::Granted { lease, .. } => lease,
            Claim::Held { owner } => {
                return Err(EngineError::Conflict(format!(
                    "execution {id} was just taken over by another process ({owner}); decide again"
                )));
            }
        };
        let mut records = Vec::new();
        if !exec.state().is_terminal()
            && (exec.in_flight() > exec.children_in_flight()
                || exec.state() == ExecutionState::Running)
        {
            // Attempts that were in flight died with their process.
            records = exec
                .interrupt(now)
                .map_err(|e| EngineError::Internal(anyhow::anyhow!(e)))?;
            if rec.state() == ExecutionState::Interrupted {
                records.retain(|a| !matches!(a, Action::ExecutionChanged { .. }));
            }
        }
        let event = decision.event(step);
        // A refused decision changes nothing: try it on a copy first.
        if let Err(e) = exec.clone().handle(event.clone(), now) {
            let outcome = refusal(&e);
            let row = self.store.deliver(id, decision.message(step), now).await;
            if let Ok(row) = row {
                let _ = self.store.settle_message(row, outcome.clone(), now).await;
            }
            self.store.release(&lease).await?;
            return Err(match outcome {
                MessageOutcome::Refused { status, error } => refused(status, error),
                MessageOutcome::Accepted => EngineError::Conflict(e.to_string()),
            });
        }
        if !records.is_empty() {
            self.commit_records(id, &mut exec, records, now, &lease)
                .await?;
        }
        let row = self.store.deliver(id, decision.message(step), now).await?;
        self.store
            .settle_message(row, MessageOutcome::Accepted, now)
            .await?;
        let handle = self.spawn_runner(id.to_owned(), exec, lease, Some(event), rec.parent.clone());
        Ok((self.execution(id).await?, Some(handle)))
    }

    /// Wait until the process driving the execution took message `row`.
    async fn await_outcome(
        self: &Arc<Self>,
        id: &str,
        row: i64,
        rec: &ExecutionRecord,
    ) -> EngineResult<(ExecutionRecord, Option<JoinHandle<RunEnd>>)> {
        let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
        loop {
            match self.store.message_outcome(row).await? {
                Some(MessageOutcome::Accepted) => return Ok((self.execution(id).await?, None)),
                Some(MessageOutcome::Refused { status, error }) => {
                    return Err(refused(status, error));
                }
                None => {}
            }
            // The runner that was told may have been on its way out (the run
            // had just begun to wait): nobody would read the message then.
            // `nudge` tells a live runner again, or drives the run here.
            if self.live_here(id).is_none() {
                self.nudge(id).await?;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(EngineError::Conflict(format!(
                    "execution {id} is driven by {}, which did not take the decision within {} s; it stays queued and applies when that process polls again",
                    rec.owner.as_deref().unwrap_or("another process"),
                    DELIVERY_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Wake the waiting executions whose wake-up is due (an approval's
    /// deadline): `ax serve` calls this about once a second, instead of keeping
    /// a task per waiting run. Returns how many it woke.
    pub async fn wake_due(self: &Arc<Self>) -> Result<usize> {
        let now = now_ms();
        let mut woken = 0;
        for id in self.store.due_waiting(now, 50).await? {
            if self.live_here(&id).is_some() {
                continue;
            }
            let Ok((rec, exec)) = self.load(&id).await else {
                continue;
            };
            if self.owner_alive(&rec) {
                continue;
            }
            let Claim::Granted { lease, .. } = self
                .store
                .claim(&id, &self.me, now, self.lease_ms(), true)
                .await?
            else {
                continue;
            };
            self.spawn_runner(id, exec, lease, Some(Event::Tick), rec.parent);
            woken += 1;
        }
        Ok(woken)
    }
}
