//! Live text of running steps: providers stream an answer's text into a
//! [`TextSink`]; the relay puts each piece on an in-process broadcast that the
//! API's event stream (and the CLI) follow. Nothing here is stored: the output
//! is committed once, whole, when the attempt succeeds, and a listener that
//! falls behind loses pieces (it can tell from `offset`), never the result.
//! The same broadcast says when an attempt waits for a provider's capacity
//! before its call, and when that wait is over ([`StepDelta::wait`]).

use crate::providers::TextSink;
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::broadcast;

/// A piece of a running attempt's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepDelta {
    pub execution: String,
    pub step: String,
    pub attempt: u32,
    /// Characters of this attempt's answer sent before this piece; 0 starts the
    /// answer anew (the first piece, or a fallback to another provider).
    pub offset: usize,
    pub text: String,
    /// Not text (`text` is empty) but news of a wait before the call.
    #[serde(skip)]
    pub wait: Option<Wait>,
}

/// An attempt waits before its call, still in flight (no failure, no retry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// It starts waiting for this (`capacity of provider NAME`).
    For(String),
    /// The wait is over: the request is being sent.
    Over,
}

impl StepDelta {
    /// What the step waits for now: `Some(None)` when a wait is over.
    pub fn waiting_for(&self) -> Option<Option<&str>> {
        self.wait.as_ref().map(|w| match w {
            Wait::For(what) => Some(what.as_str()),
            Wait::Over => None,
        })
    }
}

/// The broadcast of [`StepDelta`]s of every run in this process.
#[derive(Clone)]
pub(super) struct DeltaRelay {
    tx: broadcast::Sender<Arc<StepDelta>>,
}

impl DeltaRelay {
    pub fn new() -> DeltaRelay {
        let (tx, _) = broadcast::channel(4096);
        DeltaRelay { tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StepDelta>> {
        self.tx.subscribe()
    }

    /// Where one attempt's provider sends its text, and its router news of a
    /// wait for capacity. Costs nothing while nobody listens.
    pub fn sink(&self, execution: &str, step: &str, attempt: u32) -> TextSink {
        let (execution, step) = (Arc::<str>::from(execution), Arc::<str>::from(step));
        let send = {
            let tx = self.tx.clone();
            move |offset: usize, text: &str, wait: Option<Wait>| {
                if tx.receiver_count() > 0 {
                    let _ = tx.send(Arc::new(StepDelta {
                        execution: execution.to_string(),
                        step: step.to_string(),
                        attempt,
                        offset,
                        text: text.to_owned(),
                        wait,
                    }));
                }
            }
        };
        let announce = send.clone();
        TextSink::new(move |offset, text| send(offset, text, None)).with_waiting(move |what| {
            let wait = match what {
                Some(what) => Wait::For(what.to_owned()),
                None => Wait::Over,
            };
            announce(0, "", Some(wait));
        })
    }
}
