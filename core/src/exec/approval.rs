//! Approval steps: a step that waits for a person's decision.
//!
//! When its turn comes the step renders its prompt (the request the approver
//! reads) and waits (`waiting`), costing no slot of `config.parallelism`. A
//! decision arrives as an event, from whoever the driver lets decide: `Approve`
//! completes the step with `{"approved": true, "comment", "data", "decidedAt"}`
//! (data checked against the step's `outputSchema`), `Reject` fails it with class
//! `rejected`. With `timeoutMs`, the executor decides itself at the deadline, by
//! `onTimeout`. An execution in which nothing can move without a decision is
//! `waiting`: nothing is in flight, and it leaves that state by itself.

use super::{Action, ExecError, Execution, Output, StepError};
use crate::model::{ErrorClass, OnTimeout, StepType};
use crate::state::{ExecutionState, StepState};
use serde_json::{Map, Value, json};
use std::sync::Arc;

impl Execution {
    /// Approval step `i` is ready: render its request and wait for a decision.
    pub(super) fn open_approval(&mut self, i: usize, now: u64) -> Result<(), ExecError> {
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
            Ok(p) => p,
            Err(msg) => {
                let mut work = Vec::new();
                self.fail_step(i, StepError::new(ErrorClass::Template, msg), now, &mut work)?;
                return self.drain(work, now);
            }
        };
        let plan = Arc::clone(&self.plan);
        let step = &plan.workflow.steps[i];
        let deadline = step.timeout_ms.map(|t| now.saturating_add(t));
        let s = &mut self.steps[i];
        s.attempt = s.attempt.saturating_add(1);
        s.started_at = Some(now);
        s.finished_at = None;
        s.deadline = deadline;
        s.request = Some(prompt.clone());
        if let Some(d) = deadline {
            self.timers.insert((d, i));
        }
        self.set_step(i, StepState::Waiting, now, None, None, None)?;
        self.actions.push(Action::AwaitDecision {
            key: step.key.clone(),
            prompt,
            deadline,
            output_schema: plan.output_schemas[i].clone(),
        });
        Ok(())
    }

    /// The approval step `key`, waiting for a decision.
    fn waiting_approval(&self, key: &str) -> Result<usize, ExecError> {
        let i = self
            .plan
            .index_of(key)
            .ok_or_else(|| ExecError::UnknownStep(key.to_owned()))?;
        let kind = self.plan.workflow.steps[i].kind;
        if kind != StepType::Approval {
            return Err(ExecError::WrongStep {
                key: key.to_owned(),
                why: format!("is a `{kind}` step, not an approval: there is nothing to decide"),
            });
        }
        let state = self.steps[i].state;
        if state != StepState::Waiting {
            return Err(ExecError::NotWaiting {
                key: key.to_owned(),
                state,
            });
        }
        Ok(i)
    }

    pub(super) fn approve(
        &mut self,
        key: &str,
        comment: Option<String>,
        data: Option<Value>,
        by: Option<String>,
        now: u64,
    ) -> Result<(), ExecError> {
        let i = self.waiting_approval(key)?;
        if let Some(schema) = self.plan.schemas[i].as_ref() {
            let value = data.clone().unwrap_or(Value::Null);
            let mut problems = schema.validate(&value, 5);
            if !problems.is_empty() {
                if data.is_none() {
                    problems.insert(
                        0,
                        "no data was given, and this approval asks for data".to_owned(),
                    );
                }
                return Err(ExecError::InvalidDecision {
                    key: key.to_owned(),
                    problems,
                });
            }
        }
        let result = decision(comment, data, by, now, false);
        self.decided(i, Ok(result), now)
    }

    pub(super) fn reject(
        &mut self,
        key: &str,
        comment: Option<String>,
        by: Option<String>,
        now: u64,
    ) -> Result<(), ExecError> {
        let i = self.waiting_approval(key)?;
        let who = by.map(|b| format!(" by {b}")).unwrap_or_default();
        let message = match comment.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            Some(c) => format!("rejected{who}: {c}"),
            None => format!("rejected{who} (no comment given)"),
        };
        self.decided(i, Err(StepError::new(ErrorClass::Rejected, message)), now)
    }

    /// Nobody decided within `timeoutMs`: decide by `onTimeout`.
    pub(super) fn approval_timed_out(&mut self, i: usize, now: u64) -> Result<(), ExecError> {
        let step = &self.plan.workflow.steps[i];
        let limit = step.timeout_ms.unwrap_or(0);
        let outcome = match step.on_timeout.unwrap_or_default() {
            OnTimeout::Approve => Ok(decision(None, None, None, now, true)),
            OnTimeout::Reject => Err(StepError::new(
                ErrorClass::Timeout,
                format!("no decision within {limit} ms; rejected (onTimeout: reject)"),
            )),
        };
        self.decided(i, outcome, now)
    }

    fn decided(
        &mut self,
        i: usize,
        outcome: Result<Value, StepError>,
        now: u64,
    ) -> Result<(), ExecError> {
        if let Some(d) = self.steps[i].deadline.take() {
            self.timers.remove(&(d, i));
        }
        let mut work = Vec::new();
        match outcome {
            Ok(result) => {
                let text: Arc<str> = Arc::from(result.to_string());
                self.complete_step(i, Output::with_json(text, Some(result)), now, &mut work)?;
            }
            Err(err) => self.fail_step(i, err, now, &mut work)?,
        }
        self.drain(work, now)
    }

    /// Nothing can move without a decision: no attempt in flight, every child in
    /// flight waits for one, nothing to retry, nothing that could start, and at
    /// least one decision is awaited.
    pub(super) fn blocked_on_decisions(&self) -> bool {
        let cap = self.plan.workflow.config.parallelism.max(1) as usize;
        self.waiting + self.waiting_children > 0
            && self.running == self.waiting_children
            && self.retrying == 0
            && (self.ready.is_empty() || self.running >= cap)
    }

    /// What the execution waits for, in words (the `waiting` state's reason).
    pub(super) fn waiting_reason(&self) -> String {
        let mut approvals: Vec<&str> = Vec::new();
        let mut children: Vec<&str> = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            if s.state == StepState::Waiting {
                approvals.push(self.plan.key(i));
            }
            let child_waits = s.child.as_ref().is_some_and(|c| c.waiting)
                || s.items.as_ref().is_some_and(|it| {
                    it.runs
                        .iter()
                        .any(|r| r.child.as_ref().is_some_and(|c| c.waiting))
                });
            if child_waits {
                children.push(self.plan.key(i));
            }
        }
        let list = |keys: &[&str]| {
            keys.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !approvals.is_empty() {
            parts.push(format!("a decision on {}", list(&approvals)));
        }
        if !children.is_empty() {
            parts.push(format!(
                "a decision in the sub-workflow of {}",
                list(&children)
            ));
        }
        format!("waiting for {}", parts.join(" and "))
    }

    /// The approval steps waiting for a decision, with their requests.
    pub fn pending_decisions(&self) -> Vec<(&str, &str)> {
        if self.state.is_terminal() || self.state == ExecutionState::Idle {
            return Vec::new();
        }
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == StepState::Waiting)
            .map(|(i, s)| (self.plan.key(i), s.request.as_deref().unwrap_or("")))
            .collect()
    }
}

/// An approval's result.
fn decision(
    comment: Option<String>,
    data: Option<Value>,
    by: Option<String>,
    now: u64,
    timed_out: bool,
) -> Value {
    let mut m = Map::new();
    m.insert("approved".into(), Value::Bool(true));
    m.insert("comment".into(), comment.map_or(Value::Null, Value::String));
    m.insert("data".into(), data.unwrap_or(Value::Null));
    m.insert("decidedAt".into(), json!(iso8601(now)));
    if let Some(by) = by {
        m.insert("by".into(), Value::String(by));
    }
    if timed_out {
        m.insert("timedOut".into(), Value::Bool(true));
    }
    Value::Object(m)
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC time
/// (`2025-03-01T09:30:00.000Z`), without a clock or a date library.
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's days-to-civil.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::iso8601;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn times_read_as_rfc3339() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_740_821_400_123), "2025-03-01T09:30:00.123Z");
        assert_eq!(iso8601(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
