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
    /// An approval step's request (what the approver reads), once it waited.
    pub request: Option<String>,
    /// A forEach step's items, once its list is known.
    pub items: Option<ItemsView>,
    /// The running attempt's answer so far, as its provider streams it (server
    /// `step-delta` events, or a dry run's simulated pieces); never stored.
    pub live: Option<LiveText>,
    /// What the running attempt waits for before its call ("capacity of
    /// provider X", from server `step-waiting` events); never stored.
    pub waiting_for: Option<String>,
}

/// The text of a running attempt as it arrives.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LiveText {
    pub attempt: u32,
    pub text: String,
}

/// How many lines of live text the run panel shows (the latest ones).
pub const LIVE_LINES: usize = 4;

impl LiveText {
    /// The last [`LIVE_LINES`] lines, at most 400 characters.
    pub fn tail(&self) -> String {
        let lines: Vec<&str> = self.text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LIVE_LINES)..].join("\n");
        let n = tail.chars().count();
        tail.chars().skip(n.saturating_sub(400)).collect()
    }
}

/// A forEach step's progress and, where the page knows them, its items.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ItemsView {
    pub completed: usize,
    pub total: usize,
    /// Each item's state and result (or error); empty when only the counts are
    /// known (a server run: the results are the step's output once it completed).
    pub items: Vec<ItemView>,
}

/// One item of a forEach step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ItemView {
    pub state: StepState,
    pub output: Option<Arc<str>>,
    pub error: Option<String>,
}

impl StepView {
    /// Answered from the response cache (provider `cache`): no call, cost 0.
    pub fn cached(&self) -> bool {
        self.provider.as_deref() == Some("cache")
    }

    /// A piece of the running attempt's answer: `offset` characters of it were
    /// sent before. A new attempt (or offset 0, a fallback) starts the text anew;
    /// a piece that overlaps is cut to what is new; a gap (missed pieces) is
    /// shown as `…`. Pieces of an older attempt are dropped.
    pub fn push_delta(&mut self, attempt: u32, offset: usize, text: &str) {
        if attempt < self.attempt {
            return;
        }
        let live = self.live.get_or_insert_with(LiveText::default);
        if live.attempt != attempt || offset == 0 {
            *live = LiveText {
                attempt,
                text: String::new(),
            };
        }
        let have = live.text.chars().count();
        if offset > have {
            live.text.push('…');
            live.text.push_str(text);
        } else {
            live.text.extend(text.chars().skip(have - offset));
        }
    }

    /// The output pretty-printed when it is JSON, else as it is.
    pub fn output_text(&self) -> Option<String> {
        self.output.as_deref().map(pretty)
    }

    /// A forEach step's items as the run panel lists them: (state, result or
    /// error). The items the page knows, else the elements of the step's
    /// output (the JSON list of the items' results).
    pub fn item_rows(&self) -> Vec<(StepState, String)> {
        if let Some(i) = self.items.as_ref().filter(|i| !i.items.is_empty()) {
            return i
                .items
                .iter()
                .map(|it| {
                    let text = match (&it.output, &it.error) {
                        (Some(o), _) => pretty(o),
                        (None, Some(e)) => e.clone(),
                        (None, None) => String::new(),
                    };
                    (it.state, text)
                })
                .collect();
        }
        let list = self
            .output
            .as_deref()
            .and_then(|o| serde_json::from_str::<serde_json::Value>(o).ok());
        match list {
            Some(serde_json::Value::Array(l)) if self.items.is_some() => l
                .iter()
                .map(|v| {
                    let text = match v {
                        serde_json::Value::String(s) => s.clone(),
                        v => serde_json::to_string_pretty(v).unwrap_or_default(),
                    };
                    (StepState::Completed, text)
                })
                .collect(),
            _ => Vec::new(),
        }
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
    /// What a server run has spent and its budget (`None` for dry runs).
    pub spend: Option<Spend>,
    pub steps: Vec<(String, StepView)>,
    pub checkpoints: Vec<CheckpointMeta>,
    /// The workflow text it runs (may differ from the editor's).
    pub source: Option<String>,
    /// Epoch milliseconds.
    pub created_at: Option<u64>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
}

/// A server run's spend (`spent`) and, when set, its `budget`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Spend {
    pub usd: f64,
    pub tokens: u64,
    pub budget_usd: Option<f64>,
    pub budget_tokens: Option<u64>,
}

impl Spend {
    /// "Spent $0.0123 · 1,234 tokens (budget $2.50 · 500,000 tokens)".
    pub fn text(&self) -> String {
        let usd = if self.usd == 0.0 {
            "0".to_owned()
        } else {
            crate::text::fixed(self.usd, 4)
        };
        let mut t = format!("Spent ${usd} · {} tokens", thousands(self.tokens));
        let budget: Vec<String> = self
            .budget_usd
            .map(|u| format!("${}", crate::text::fixed(u, 2)))
            .into_iter()
            .chain(
                self.budget_tokens
                    .map(|n| format!("{} tokens", thousands(n))),
            )
            .collect();
        if !budget.is_empty() {
            t.push_str(&format!(" (budget {})", budget.join(" · ")));
        }
        t
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A run paused at its budget (reason `budget: …`): how to go on.
pub fn budget_hint(reason: Option<&str>, id: &str) -> Option<String> {
    reason.filter(|r| r.starts_with("budget:")).map(|_| {
        format!(
            "Raise the budget to go on: ax workflow resume {id} --budget-usd N \
             (or --budget-tokens N), or POST /api/executions/{id}/resume with \
             {{\"budget\": {{\"usd\": N}}}}. Resume here keeps the same budget."
        )
    })
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

    /// A fresh view of the same run keeps the live text of the steps still
    /// running the same attempt (the API's answers carry none).
    pub fn keep_live(&mut self, old: &RunView) {
        for (key, s) in &mut self.steps {
            if s.state == StepState::Running
                && let Some(l) = old.step(key).and_then(|o| o.live.as_ref())
                && l.attempt == s.attempt
            {
                s.live = Some(l.clone());
            }
            if s.state == StepState::Running
                && let Some(o) = old.step(key).filter(|o| o.attempt == s.attempt)
                && let Some(w) = &o.waiting_for
            {
                s.waiting_for = Some(w.clone());
            }
        }
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
            spend: None,
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

    #[test]
    fn deltas_grow_the_attempts_text_and_a_new_attempt_starts_anew() {
        let mut s = StepView {
            attempt: 1,
            ..StepView::default()
        };
        s.push_delta(1, 0, "Hel");
        s.push_delta(1, 3, "lo\nwor");
        s.push_delta(1, 5, "\nworld"); // overlaps: only `ld` is new
        assert_eq!(
            s.live.as_ref().map(|l| l.text.as_str()),
            Some("Hello\nworld")
        );
        s.push_delta(1, 20, "x"); // a gap
        assert_eq!(
            s.live.as_ref().map(|l| l.text.as_str()),
            Some("Hello\nworld…x")
        );
        s.attempt = 2;
        s.push_delta(1, 13, "late"); // an older attempt's piece
        s.push_delta(2, 0, "again");
        assert_eq!(
            s.live,
            Some(LiveText {
                attempt: 2,
                text: "again".into()
            })
        );
        let long = LiveText {
            attempt: 1,
            text: "1\n2\n3\n4\n5\n6".into(),
        };
        assert_eq!(long.tail(), "3\n4\n5\n6");
    }
}
