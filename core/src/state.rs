//! Execution and step states, and every legal transition between them. A
//! transition is a checked function: an illegal one is an error, never a panic.

use serde::{Deserialize, Serialize};

/// The state of a whole execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionState {
    /// Created, not started.
    Idle,
    /// The definition is being checked (driver-side, before running).
    Validating,
    Running,
    /// Nothing new starts; in-flight steps may still finish.
    Paused,
    /// Nothing can make progress without a decision (an approval, or a child
    /// execution waiting for one). Not terminal: it leaves this state on its own
    /// when a decision arrives (or an approval times out). Nothing is in flight.
    Waiting,
    Completed,
    Failed,
    Cancelled,
    /// The process that ran it stopped without recording an end (a crash);
    /// resuming continues from the last durable state.
    Interrupted,
}

impl ExecutionState {
    pub const ALL: [ExecutionState; 9] = [
        ExecutionState::Idle,
        ExecutionState::Validating,
        ExecutionState::Running,
        ExecutionState::Paused,
        ExecutionState::Waiting,
        ExecutionState::Completed,
        ExecutionState::Failed,
        ExecutionState::Cancelled,
        ExecutionState::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Idle => "idle",
            ExecutionState::Validating => "validating",
            ExecutionState::Running => "running",
            ExecutionState::Paused => "paused",
            ExecutionState::Waiting => "waiting",
            ExecutionState::Completed => "completed",
            ExecutionState::Failed => "failed",
            ExecutionState::Cancelled => "cancelled",
            ExecutionState::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<ExecutionState> {
        ExecutionState::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Completed, failed and cancelled end an execution.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionState::Completed | ExecutionState::Failed | ExecutionState::Cancelled
        )
    }

    /// Paused, failed and interrupted executions can be resumed.
    pub fn is_resumable(self) -> bool {
        matches!(
            self,
            ExecutionState::Paused | ExecutionState::Failed | ExecutionState::Interrupted
        )
    }

    /// Is `self → to` a legal transition?
    pub fn can_become(self, to: ExecutionState) -> bool {
        use ExecutionState::*;
        matches!(
            (self, to),
            (Idle, Validating | Running | Cancelled | Failed)
                | (Validating, Running | Failed | Cancelled)
                | (
                    Running,
                    Paused | Waiting | Completed | Failed | Cancelled | Interrupted
                )
                | (
                    Paused,
                    Running | Completed | Failed | Cancelled | Interrupted
                )
                // A decision (or a child's) arrives: running again; a rejection
                // can fail the run at once.
                | (Waiting, Running | Paused | Failed | Cancelled | Interrupted)
                // A decision or a child's report can fail it while no process
                // runs it.
                | (Interrupted, Running | Paused | Cancelled | Failed)
                | (Failed, Running)
        )
    }

    pub fn transition(self, to: ExecutionState) -> Result<ExecutionState, TransitionError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(TransitionError {
                what: "an execution",
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }
}

impl std::fmt::Display for ExecutionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one step within an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    /// Waiting for dependencies.
    #[default]
    Pending,
    /// Dependencies done; waiting for a slot (or for the execution to resume).
    Ready,
    Running,
    /// Failed with a retryable error; the next attempt starts at a set time.
    WaitingRetry,
    /// An approval step waiting for a person's decision.
    Waiting,
    Completed,
    Failed,
    /// Not run: its condition was false, or something it needs did not complete.
    Skipped,
    Cancelled,
}

impl StepState {
    pub const ALL: [StepState; 9] = [
        StepState::Pending,
        StepState::Ready,
        StepState::Running,
        StepState::WaitingRetry,
        StepState::Waiting,
        StepState::Completed,
        StepState::Failed,
        StepState::Skipped,
        StepState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Ready => "ready",
            StepState::Running => "running",
            StepState::WaitingRetry => "waiting-retry",
            StepState::Waiting => "waiting",
            StepState::Completed => "completed",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
            StepState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<StepState> {
        StepState::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Completed, failed, skipped and cancelled steps are settled.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            StepState::Completed | StepState::Failed | StepState::Skipped | StepState::Cancelled
        )
    }

    pub fn can_become(self, to: StepState) -> bool {
        use StepState::*;
        matches!(
            (self, to),
            (Pending, Ready | Skipped | Cancelled | Failed)
                | (Ready, Running | Waiting | Cancelled | Failed | Skipped | Pending)
                // A decision; a restore under an edited definition asks again.
                | (Waiting, Completed | Failed | Cancelled | Ready | Pending)
                | (Running, Completed | Failed | WaitingRetry | Cancelled | Ready)
                | (WaitingRetry, Ready | Cancelled | Pending)
                // Resume after a failure, restore, or a changed definition.
                | (Failed | Cancelled | Skipped | Completed, Pending)
        )
    }

    pub fn transition(self, to: StepState) -> Result<StepState, TransitionError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(TransitionError {
                what: "a step",
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }
}

impl std::fmt::Display for StepState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An illegal state change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} cannot go from {from} to {to}")]
pub struct TransitionError {
    pub what: &'static str,
    pub from: &'static str,
    pub to: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn terminal_and_resumable_follow_the_seed() {
        use ExecutionState::*;
        let terminal: Vec<_> = ExecutionState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal, [Completed, Failed, Cancelled]);
        let resumable: Vec<_> = ExecutionState::ALL
            .into_iter()
            .filter(|s| s.is_resumable())
            .collect();
        assert_eq!(resumable, [Paused, Failed, Interrupted]);
    }

    #[test]
    fn illegal_transitions_are_errors() {
        use ExecutionState::*;
        assert_eq!(Running.transition(Paused), Ok(Paused));
        let err = Completed
            .transition(Running)
            .expect_err("completed is final");
        assert_eq!(
            err.to_string(),
            "an execution cannot go from completed to running"
        );
        assert!(Cancelled.transition(Running).is_err());
        // Nothing leaves completed or cancelled.
        for to in ExecutionState::ALL {
            assert!(!Completed.can_become(to) && !Cancelled.can_become(to));
        }
        assert!(StepState::Completed.transition(StepState::Running).is_err());
        assert_eq!(
            StepState::Running.transition(StepState::WaitingRetry),
            Ok(StepState::WaitingRetry)
        );
        for s in StepState::ALL {
            assert_eq!(StepState::parse(s.as_str()), Some(s));
        }
        for s in ExecutionState::ALL {
            assert_eq!(ExecutionState::parse(s.as_str()), Some(s));
        }
    }
}
