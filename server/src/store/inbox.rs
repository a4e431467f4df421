//! Messages for the process that drives an execution: a person's decision on
//! an approval, a child execution's report. They go through the database so
//! that they reach the owner from any process (it takes them when it polls for
//! control requests), and they stay as the audit trail of decisions.

use serde::Serialize;
use serde_json::Value;

/// What a message asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Approve,
    Reject,
    /// A child execution's report (started, waiting, completed, failed).
    Child,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Approve => "approve",
            MessageKind::Reject => "reject",
            MessageKind::Child => "child",
        }
    }

    pub fn parse(s: &str) -> Option<MessageKind> {
        Some(match s {
            "approve" => MessageKind::Approve,
            "reject" => MessageKind::Reject,
            "child" => MessageKind::Child,
            _ => return None,
        })
    }
}

/// A message to leave.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub kind: MessageKind,
    pub step: String,
    pub attempt: Option<u32>,
    /// JSON object: the decision's `comment`, `data` and `by`, or the child's event.
    pub payload: Value,
}

/// A message taken by the owner.
#[derive(Debug, Clone)]
pub struct InboxMessage {
    pub id: i64,
    pub kind: MessageKind,
    pub step: String,
    pub attempt: Option<u32>,
    pub payload: Value,
    pub created_at: u64,
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum MessageOutcome {
    Accepted,
    /// Refused, with the HTTP status that says why (409, 422, 404) and the reason.
    Refused {
        status: u16,
        error: String,
    },
}
