//! LLM providers behind one trait, and the `Router` that turns "agent X, this
//! prompt" into a call on the agent's provider, falling back along its chain.
//!
//! Every HTTP provider is one generic [`http::HttpProvider`] over a small
//! [`wire::Wire`] (how a request is written, an answer and a stream read, and
//! which refusals teach what): Anthropic Messages, OpenAI Chat Completions (and
//! every server that speaks it: Ollama, vLLM, llama.cpp, LM Studio), Google
//! Gemini `generateContent`. `echo` is the offline provider, the default when no
//! key is set. A new wire format is one file and one row of [`KINDS`].
//!
//! Errors carry an `ErrorClass` that core's executor decides retries on.
//! Keys stay in this module: they are read from the environment, sent only in
//! request headers marked sensitive, and scrubbed from every message, note and
//! answer that leaves it.

pub mod anthropic;
pub mod echo;
pub mod gemini;
mod http;
mod limit;
pub mod openai;
mod router;
mod schema;
mod wire;

pub use echo::Echo;
pub use limit::{COOL_DOWN, Limits};
pub use router::{CallOutcome, ProviderStatus, RouteEntry, Router};
pub use wire::{parse_retry_after, parse_retry_after_ms, retry_after};

use ax_core::ErrorClass;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Per-request limit when neither the provider nor `[defaults]` sets one.
pub const DEFAULT_TIMEOUT_MS: u64 = 120_000;
/// `max_tokens` when neither the agent nor `[defaults]` sets one.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// One provider kind: its name in the agents file, where its key and address
/// come from, and how to build it. Adding a kind is adding a row to [`KINDS`].
pub struct KindSpec {
    pub name: &'static str,
    /// The variable holding the key of the built-in provider of this kind.
    pub key_env: Option<&'static str>,
    /// The variable that moves the built-in provider of this kind.
    pub base_url_env: Option<&'static str>,
    pub default_base_url: Option<&'static str>,
    /// Calls nothing and needs no key (echo): always available, costs nothing.
    pub offline: bool,
    pub build: fn(Endpoint) -> Arc<dyn Provider>,
}

/// Every provider kind ax speaks.
pub static KINDS: [KindSpec; 4] = [anthropic::KIND, openai::KIND, gemini::KIND, echo::KIND];

/// What a provider is built from: one `[providers.NAME]` resolved against
/// `[defaults]` and the environment.
#[derive(Clone)]
pub struct Endpoint {
    pub name: String,
    pub base_url: String,
    /// `None` for servers that need none (local servers, proxies that add it).
    pub key: Option<String>,
    pub client: reqwest::Client,
    /// The largest answer read: a body, a stream's text, or one stream event.
    pub max_response_bytes: u64,
    /// Ask for streamed answers.
    pub stream: bool,
    /// Echo only: how long each answer takes.
    pub latency: Duration,
}

/// Receives an answer's text while it streams in: `(offset, text)`, where
/// `offset` counts the characters of this answer sent before. Offset 0 starts an
/// answer (again, after a fallback to another provider). With
/// [`TextSink::with_waiting`] it also hears when the attempt waits before its call.
#[derive(Clone)]
pub struct TextSink {
    text: Arc<TextFn>,
    wait: Option<Arc<WaitFn>>,
}

type TextFn = dyn Fn(usize, &str) + Send + Sync;
type WaitFn = dyn Fn(Option<&str>) + Send + Sync;

impl TextSink {
    pub fn new(f: impl Fn(usize, &str) + Send + Sync + 'static) -> TextSink {
        TextSink {
            text: Arc::new(f),
            wait: None,
        }
    }

    /// Also tell `f` when the attempt waits before its call: `Some(what)`
    /// (`capacity of provider NAME`) when a wait starts, `None` when it is over
    /// and the request is sent.
    pub fn with_waiting(mut self, f: impl Fn(Option<&str>) + Send + Sync + 'static) -> TextSink {
        self.wait = Some(Arc::new(f));
        self
    }

    pub fn send(&self, offset: usize, text: &str) {
        (self.text)(offset, text)
    }

    pub fn waiting(&self, what: Option<&str>) {
        if let Some(f) = &self.wait {
            f(what)
        }
    }
}

impl std::fmt::Debug for TextSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TextSink")
    }
}

/// One call to one model.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    pub prompt: String,
    pub system: Option<String>,
    pub model: String,
    pub temperature: Option<f64>,
    pub max_tokens: u32,
    /// The whole exchange must finish within this.
    pub timeout: Duration,
    /// The step's `outputSchema`: real providers are asked for JSON that fits it
    /// (natively where they can), `echo` synthesizes such JSON.
    pub output_schema: Option<Arc<serde_json::Value>>,
    /// Where the text goes while it streams in, if anyone listens.
    pub on_text: Option<TextSink>,
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// The model that answered, as the provider names it.
    pub model: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

/// Why a call failed: a class the executor can act on, one line for people
/// (provider, model, status, what happened; never a key), and the delay the
/// server asked for.
#[derive(Debug, Clone)]
pub struct ProviderError {
    pub class: ErrorClass,
    pub message: String,
    pub retry_after_ms: Option<u64>,
    pub status: Option<u16>,
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.class, self.message)
    }
}

impl std::error::Error for ProviderError {}

pub type ProviderFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Completion, ProviderError>> + Send + 'a>>;

/// A model endpoint. Dropping the future cancels the call.
pub trait Provider: Send + Sync {
    fn kind(&self) -> &'static str;
    fn complete<'a>(&'a self, req: &'a CompletionRequest) -> ProviderFuture<'a>;
}

/// Replace every secret in `text` with `[redacted]`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.is_empty() && out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "[redacted]");
        }
    }
    out
}
