//! The offline provider: no network, no model, the same answer for the same
//! request. It answers with the prompt it received under a line that says what it
//! is, or, when the step has an `outputSchema`, with a small JSON value that
//! satisfies the schema, so every example runs (and `{{x.result.field}}` resolves)
//! without keys.

use super::{
    Completion, CompletionRequest, Endpoint, KindSpec, Provider, ProviderError, ProviderFuture,
};
use ax_core::ErrorClass;
use ax_core::schema::CompiledSchema;
use std::sync::Arc;
use std::time::Duration;

pub const KIND: KindSpec = KindSpec {
    name: "echo",
    key_env: None,
    base_url_env: None,
    default_base_url: None,
    offline: true,
    build,
};

fn build(e: Endpoint) -> Arc<dyn Provider> {
    Arc::new(Echo::new(&e.name, e.latency))
}

pub const MODEL: &str = "echo";
pub const BANNER: &str = "[echo: offline provider, no model was called]";
/// The text put into free-form strings of a synthesized JSON answer.
pub const PLACEHOLDER: &str = "[echo] offline placeholder";
/// Simpler strings tried when the placeholder breaks a `pattern` or length limit
/// (`^[a-z0-9-]+$` accepts "echo").
const FALLBACK_TEXTS: [&str; 3] = ["echo", "x", "0"];

#[derive(Debug, Clone)]
pub struct Echo {
    name: String,
    latency: Duration,
}

impl Echo {
    /// `latency`: how long each answer takes (for demos and crash tests).
    pub fn new(name: &str, latency: Duration) -> Self {
        Echo {
            name: name.to_string(),
            latency,
        }
    }

    /// The answer for a request, without the wait.
    pub fn answer(req: &CompletionRequest) -> String {
        if let Some(value) = req
            .output_schema
            .as_deref()
            .and_then(|s| CompiledSchema::compile(s).ok())
            .and_then(|c| {
                std::iter::once(PLACEHOLDER)
                    .chain(FALLBACK_TEXTS)
                    .find_map(|text| c.example(text))
            })
        {
            return serde_json::to_string_pretty(&value).unwrap_or_default();
        }
        format!("{BANNER}\n{}", req.prompt)
    }

    async fn run(&self, req: &CompletionRequest) -> Result<Completion, ProviderError> {
        if self.latency > req.timeout {
            tokio::time::sleep(req.timeout).await;
            return Err(ProviderError {
                class: ErrorClass::Timeout,
                message: format!(
                    "{} ({MODEL}): no answer within {} (latency_ms is {})",
                    self.name,
                    super::wire::human(req.timeout),
                    self.latency.as_millis()
                ),
                retry_after_ms: None,
                status: None,
            });
        }
        let text = Echo::answer(req);
        match &req.on_text {
            Some(sink) if self.latency.is_zero() => sink.send(0, &text),
            // Streams like a model: word by word across its latency.
            Some(sink) => {
                let pieces = pieces(&text);
                let start = tokio::time::Instant::now();
                let n = pieces.len().max(1) as u32;
                let mut offset = 0;
                for (i, piece) in (1..).zip(pieces) {
                    // Deadlines from the start, so timer granularity does not add up.
                    tokio::time::sleep_until(start + self.latency * i / n).await;
                    sink.send(offset, piece);
                    offset += piece.chars().count();
                }
            }
            None if !self.latency.is_zero() => tokio::time::sleep(self.latency).await,
            None => {}
        }
        Ok(Completion {
            text,
            model: MODEL.to_string(),
            tokens_in: 0,
            tokens_out: 0,
        })
    }
}

/// `text` in at most 64 pieces that end at word boundaries.
fn pieces(text: &str) -> Vec<&str> {
    let words: Vec<usize> = text
        .char_indices()
        .filter(|(_, c)| c.is_whitespace())
        .map(|(i, c)| i + c.len_utf8())
        .collect();
    let step = words.len().div_ceil(64).max(1);
    let mut cuts: Vec<usize> = words.into_iter().step_by(step).collect();
    cuts.retain(|&c| c < text.len());
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        out.push(&text[start..cut]);
        start = cut;
    }
    out.push(&text[start..]);
    out.retain(|p| !p.is_empty());
    out
}

impl Provider for Echo {
    fn kind(&self) -> &'static str {
        "echo"
    }

    fn complete<'a>(&'a self, req: &'a CompletionRequest) -> ProviderFuture<'a> {
        Box::pin(self.run(req))
    }
}
