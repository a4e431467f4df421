//! What the page shows of a run, wherever it ran: a dry run in this page
//! (`local_run`) or an execution on the server (`server`). Plain data, so that
//! the graph, the run panel and the comparison read one shape.

use ax_core::{ExecutionState, StepState};
use std::sync::Arc;

/// Where a run runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Local,
    Server,
}

impl RunKind {
    pub fn label(self) -> &'static str {
        match self {
            RunKind::Local => "dry run",
            RunKind::Server => "server",
        }
    }
}

/// A stored checkpoint as lists show it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    /// The local sequence number or the server's checkpoint id.
    pub id: String,
    pub seq: u64,
    pub at: f64,
    pub state: Option<ExecutionState>,
    pub completed: usize,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Outcome {
    /// Still running (or lost with the page before it answered).
    #[default]
    Running,
    Succeeded,
    /// The error class and message.
    Failed {
        class: String,
        message: String,
    },
    /// Stopped by the executor (timeout, pause, cancel).
    Aborted(String),
}

/// One attempt of a step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttemptView {
    pub attempt: u32,
    /// Epoch milliseconds.
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub outcome: Outcome,
}

impl AttemptView {
    pub fn millis(&self) -> Option<u64> {
        Some(self.finished_at?.saturating_sub(self.started_at?))
    }
}

/// Tokens and cost of a step (all its attempts).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: Option<f64>,
    /// Counted by the page (about 4 characters per token), not by a provider:
    /// dry runs call no model.
    pub estimated: bool,
}

/// One step as the graph, the run panel and the comparison show it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepView {
    pub state: StepState,
    /// Attempts started so far.
    pub attempt: u32,
    /// The rendered prompt of the latest attempt.
    pub prompt: Option<String>,
    pub output: Option<Arc<str>>,
    /// The latest error, as `class: message`.
    pub error: Option<String>,
    /// Why it was skipped or cancelled.
    pub reason: Option<String>,
    pub usage: Usage,
    /// The latest attempt's answer time in milliseconds.
    pub latency_ms: Option<u64>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// Provider and model that answered (server runs).
    pub provider: Option<String>,
    pub model: Option<String>,
    /// Every attempt known to the page, oldest first. A run reopened from a
    /// checkpoint knows only the latest attempt of each step.
    pub attempts: Vec<AttemptView>,
}

impl StepView {
    /// The output pretty-printed when it is JSON, else as it is.
    pub fn output_text(&self) -> Option<String> {
        self.output.as_deref().map(pretty)
    }

    pub fn is_json(&self) -> bool {
        self.output.as_deref().is_some_and(|o| {
            let t = o.trim_start();
            (t.starts_with('{') || t.starts_with('['))
                && serde_json::from_str::<serde_json::Value>(o).is_ok()
        })
    }
}

/// A JSON text pretty-printed (two spaces); any other text unchanged.
pub fn pretty(text: &str) -> String {
    let t = text.trim_start();
    if !(t.starts_with('{') || t.starts_with('[')) {
        return text.to_owned();
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| text.to_owned()),
        Err(_) => text.to_owned(),
    }
}

/// The run shown on the graph and in the run panel (or one side of a comparison).
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    pub kind: RunKind,
    pub id: String,
    pub name: String,
    pub state: ExecutionState,
    pub reason: Option<String>,
    pub steps: Vec<(String, StepView)>,
    pub checkpoints: Vec<CheckpointMeta>,
    /// The workflow text it runs (may differ from the editor's).
    pub source: Option<String>,
    /// Epoch milliseconds.
    pub created_at: Option<u64>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
}

impl RunView {
    pub fn completed(&self) -> usize {
        self.steps
            .iter()
            .filter(|(_, s)| s.state == StepState::Completed)
            .count()
    }

    pub fn step(&self, key: &str) -> Option<&StepView> {
        self.steps.iter().find(|(k, _)| k == key).map(|(_, s)| s)
    }

    /// Wall-clock time from start to finish (or to the latest step's end).
    pub fn millis(&self) -> Option<u64> {
        let start = self
            .started_at
            .or_else(|| self.steps.iter().filter_map(|(_, s)| s.started_at).min())?;
        let end = self
            .finished_at
            .or_else(|| self.steps.iter().filter_map(|(_, s)| s.finished_at).max())?;
        Some(end.saturating_sub(start))
    }

    /// Tokens and cost over every step.
    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for (_, s) in &self.steps {
            u.tokens_in += s.usage.tokens_in;
            u.tokens_out += s.usage.tokens_out;
            u.estimated |= s.usage.estimated;
            if let Some(c) = s.usage.cost_usd {
                *u.cost_usd.get_or_insert(0.0) += c;
            }
        }
        u
    }
}

/// About 4 characters per token: the usual rule of thumb for English text,
/// for dry runs, where no provider counts them.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn json_outputs_are_pretty_printed_and_text_is_kept() {
        assert_eq!(
            pretty("{\"a\":1,\"b\":[true]}"),
            "{\n  \"a\": 1,\n  \"b\": [\n    true\n  ]\n}"
        );
        assert_eq!(pretty("plain {not json"), "plain {not json");
        assert_eq!(pretty("{broken"), "{broken");
    }

    #[test]
    fn totals_add_steps_up() {
        let step = |t: u64, c: Option<f64>, start: u64, end: u64| StepView {
            usage: Usage {
                tokens_in: t,
                tokens_out: 2 * t,
                cost_usd: c,
                estimated: false,
            },
            started_at: Some(start),
            finished_at: Some(end),
            ..StepView::default()
        };
        let run = RunView {
            kind: RunKind::Server,
            id: "e".into(),
            name: "n".into(),
            state: ExecutionState::Completed,
            reason: None,
            steps: vec![
                ("a".into(), step(10, Some(0.5), 100, 200)),
                ("b".into(), step(5, None, 200, 450)),
            ],
            checkpoints: Vec::new(),
            source: None,
            created_at: None,
            started_at: None,
            finished_at: None,
        };
        let u = run.usage();
        assert_eq!((u.tokens_in, u.tokens_out, u.cost_usd), (15, 30, Some(0.5)));
        assert_eq!(run.millis(), Some(350));
        assert_eq!(estimate_tokens("abcdefghi"), 3);
    }
}
