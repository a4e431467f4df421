//! Live text of running steps: providers stream an answer's text into a
//! [`TextSink`]; the relay puts each piece on an in-process broadcast that the
//! API's event stream (and the CLI) follow. Nothing here is stored: the output
//! is committed once, whole, when the attempt succeeds, and a listener that
//! falls behind loses pieces (it can tell from `offset`), never the result.

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

    /// Where one attempt's provider sends its text. Costs nothing while nobody
    /// listens.
    pub fn sink(&self, execution: &str, step: &str, attempt: u32) -> TextSink {
        let tx = self.tx.clone();
        let (execution, step) = (execution.to_owned(), step.to_owned());
        TextSink::new(move |offset, text| {
            if tx.receiver_count() > 0 {
                let _ = tx.send(Arc::new(StepDelta {
                    execution: execution.clone(),
                    step: step.clone(),
                    attempt,
                    offset,
                    text: text.to_owned(),
                }));
            }
        })
    }
}
