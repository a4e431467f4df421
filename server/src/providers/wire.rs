//! What a wire format is, and what the three share: the [`Wire`] trait the
//! generic HTTP provider drives, the answer being read ([`Reply`]), the quirks
//! a model can teach ([`Quirk`]), the mapping from error answers to
//! `ErrorClass`, `retry-after` in its three spellings, and one-line messages
//! that name the provider, the model and the status and never carry the key.

use super::{CompletionRequest, ProviderError, scrub};
use ax_core::ErrorClass;
use eventsource_stream::Event as SseEvent;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// One wire format: how a request is written and an answer read. Sending, time
/// and size limits, streaming, learning from refusals and redaction are the
/// generic provider's (`http::HttpProvider`).
pub(crate) trait Wire: Send + Sync + 'static {
    /// The request for one call (path below the base URL, JSON body).
    fn request(&self, call: &Call<'_>) -> WireRequest;

    /// The headers that carry a key.
    fn auth(&self, key: &str) -> Vec<(&'static str, String)>;

    /// Headers every request carries.
    fn headers(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Read a whole (not streamed) answer.
    fn parse(&self, body: &[u8]) -> Result<Reply, Fault>;

    /// Fold one event of a streamed answer into `reply`: append the new text,
    /// note usage and how it ended.
    fn event(&self, event: &SseEvent, reply: &mut Reply) -> Result<(), Fault>;

    /// What the vendor calls the output limit in its requests, for messages.
    fn limit_field(&self) -> &'static str {
        "max_tokens"
    }
}

/// What the generic provider asks of the wire for one request.
pub(crate) struct Call<'a> {
    pub req: &'a CompletionRequest,
    /// What this model is known to refuse.
    pub quirks: Quirks,
    /// Ask for a stream.
    pub stream: bool,
}

impl Call<'_> {
    /// The temperature to send, unless the model refuses one.
    pub fn temperature(&self) -> Option<f64> {
        self.req
            .temperature
            .filter(|_| !self.quirks.has(Quirk::NoTemperature))
    }
}

/// One request, as the wire writes it.
pub(crate) struct WireRequest {
    /// Below the base URL, with its query if any.
    pub path: String,
    pub body: Value,
    /// It asks for a stream.
    pub stream: bool,
    /// What it carries that a model or server may refuse, most specific first.
    pub optional: Vec<Optional>,
}

/// A part of a request that may be refused, and the words a refusal (a 400)
/// uses to name it: the quirk to learn when one does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Optional {
    pub quirk: Quirk,
    pub words: &'static [&'static str],
}

impl Optional {
    pub const fn new(quirk: Quirk, words: &'static [&'static str]) -> Optional {
        Optional { quirk, words }
    }
}

/// Something a model turned out not to accept, learned from its refusals, so
/// the next call leaves it out at once (newer models refuse `temperature`,
/// OpenAI's reasoning models `max_tokens`, many compatible servers `stream`,
/// `stream_options` or `response_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quirk {
    NoTemperature,
    /// `max_completion_tokens` instead of `max_tokens` (OpenAI).
    MaxCompletionTokens,
    /// Streams, but without `stream_options` (OpenAI-compatible servers).
    NoStreamOptions,
    NoStream,
    /// No native structured output (`response_format`, `output_config`,
    /// `responseJsonSchema`).
    NoNativeSchema,
    /// No forced tool call for structured output either (Anthropic's fallback).
    NoToolSchema,
}

/// A set of [`Quirk`]s.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quirks(u8);

impl Quirks {
    pub fn has(self, q: Quirk) -> bool {
        self.0 & (1 << q as u8) != 0
    }

    pub fn with(self, q: Quirk) -> Quirks {
        Quirks(self.0 | (1 << q as u8))
    }
}

/// What each model taught, for the life of the process.
#[derive(Default)]
pub(crate) struct QuirkBook(std::sync::Mutex<std::collections::HashMap<String, Quirks>>);

impl QuirkBook {
    pub fn get(&self, model: &str) -> Quirks {
        self.0
            .lock()
            .map(|m| m.get(model).copied().unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn set(&self, model: &str, quirks: Quirks) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(model.to_string(), quirks);
        }
    }
}

/// How an answer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The model finished.
    Done,
    /// Cut off at the output limit.
    Truncated,
    /// A refusal or a filter: says which.
    Withheld(String),
}

/// An answer being read, from a body or event by event.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    pub text: String,
    /// The model that answered, as the provider names it.
    pub model: Option<String>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// The vendor's own words for how it ended (`stop_reason: max_tokens`).
    pub reason: Option<String>,
    pub stop: Option<Stop>,
    /// The stream's closing event (`message_stop`, `[DONE]`) was seen.
    pub closed: bool,
    /// A refusal streamed in instead of text (OpenAI's `delta.refusal`).
    pub refusal: String,
}

/// A problem the wire found in an answer: its class and what happened.
#[derive(Debug)]
pub(crate) struct Fault {
    pub class: ErrorClass,
    pub what: String,
}

impl Fault {
    pub fn new(class: ErrorClass, what: impl Into<String>) -> Fault {
        Fault {
            class,
            what: what.into(),
        }
    }

    /// A 200 whose body is not what the API documents.
    pub fn malformed(expected: &str, body: &[u8]) -> Fault {
        Fault::new(
            ErrorClass::ServerError,
            format!(
                "the answer (HTTP 200) is not the JSON this API returns: {expected}; it starts with: {}",
                excerpt(&String::from_utf8_lossy(body), 160)
            ),
        )
    }

    /// A stream event whose data is not what the API documents.
    pub fn bad_event(event: &SseEvent) -> Fault {
        Fault::new(
            ErrorClass::ServerError,
            format!(
                "a stream event{} is not the JSON this API sends: {}",
                if event.event == "message" {
                    String::new()
                } else {
                    format!(" (`{}`)", event.event)
                },
                excerpt(&event.data, 160)
            ),
        )
    }

    /// An `error` sent in the middle of a stream, classed by its type.
    pub fn in_stream(data: &str) -> Fault {
        let err = ErrorBody::parse(data.as_bytes());
        let class = err
            .kind
            .as_deref()
            .or(err.code.as_deref())
            .and_then(class_of_kind)
            .unwrap_or(ErrorClass::ServerError);
        let what = match (&err.kind, &err.message) {
            (Some(k), Some(m)) => format!("{k}: {}", excerpt(m, 300)),
            (None, Some(m)) => excerpt(m, 300),
            _ => excerpt(data, 200),
        };
        Fault::new(class, format!("the stream reported an error: {what}"))
    }
}

/// The JSON of an event's data.
pub(crate) fn event_json(event: &SseEvent) -> Result<Value, Fault> {
    serde_json::from_str(&event.data).map_err(|_| Fault::bad_event(event))
}

/// A count in a usage object.
pub(crate) fn count(usage: Option<&Value>, key: &str) -> Option<u64> {
    usage?.get(key)?.as_u64()
}

/// Who is being called, for messages: `anthropic (claude-sonnet-4-6): …`.
pub(crate) struct Caller<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    pub key: Option<&'a str>,
}

impl Caller<'_> {
    pub fn error(&self, class: ErrorClass, status: Option<u16>, what: &str) -> ProviderError {
        let line = format!("{} ({}): {}", self.provider, self.model, one_line(what));
        let secrets: Vec<String> = self.key.map(str::to_string).into_iter().collect();
        ProviderError {
            class,
            message: scrub(&line, &secrets),
            retry_after_ms: None,
            status,
        }
    }

    pub fn fault(&self, f: Fault, status: Option<u16>) -> ProviderError {
        self.error(f.class, status, &f.what)
    }
}

/// `300 ms`, `2.5 s`.
pub(crate) fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The `error` object of an error body, in the shapes the three APIs use:
/// Anthropic `{"type":"error","error":{"type","message"}}`, OpenAI
/// `{"error":{"message","type","param","code"}}`, Gemini
/// `{"error":{"code","message","status","details"}}` (sometimes inside a list).
pub(crate) struct ErrorBody {
    /// `error.type` (Anthropic, OpenAI) or `error.status` (Gemini).
    pub kind: Option<String>,
    /// OpenAI's `error.code` when it is a string.
    pub code: Option<String>,
    /// OpenAI's `error.param`.
    pub param: Option<String>,
    pub message: Option<String>,
    /// Gemini's `error.details[].reason` (e.g. `API_KEY_INVALID`).
    pub reasons: Vec<String>,
    /// Gemini's `google.rpc.RetryInfo` delay.
    pub retry_delay_ms: Option<u64>,
}

impl ErrorBody {
    pub fn parse(body: &[u8]) -> ErrorBody {
        let mut out = ErrorBody {
            kind: None,
            code: None,
            param: None,
            message: None,
            reasons: Vec::new(),
            retry_delay_ms: None,
        };
        let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
            return out;
        };
        if let Value::Array(items) = &v
            && let Some(first) = items.first()
        {
            v = first.clone();
        }
        let Some(err) = v.get("error") else {
            return out;
        };
        if let Value::String(s) = err {
            out.message = Some(s.clone());
            return out;
        }
        let text = |k: &str| err.get(k).and_then(Value::as_str).map(str::to_string);
        out.kind = text("type").or_else(|| text("status"));
        out.code = text("code");
        out.param = text("param");
        out.message = text("message");
        if let Some(details) = err.get("details").and_then(Value::as_array) {
            for d in details {
                if let Some(r) = d.get("reason").and_then(Value::as_str) {
                    out.reasons.push(r.to_string());
                }
                if let Some(delay) = d.get("retryDelay").and_then(Value::as_str) {
                    out.retry_delay_ms = parse_duration_text(delay);
                }
            }
        }
        out
    }

    /// Whether any part of the error names `word` (case-insensitive, as a whole
    /// word: `stream` is not named by "upstream" nor by `stream_options`).
    pub fn mentions(&self, word: &str) -> bool {
        [&self.kind, &self.code, &self.param, &self.message]
            .into_iter()
            .flatten()
            .any(|s| names_word(s, word))
    }

    /// Whether the error has any detail at all (a JSON error object).
    pub fn is_empty(&self) -> bool {
        self.kind.is_none() && self.message.is_none() && self.code.is_none()
    }
}

/// The class of a non-2xx answer.
pub(crate) fn classify(status: u16, err: &ErrorBody) -> ErrorClass {
    let overloaded = err.mentions("overloaded");
    match status {
        429 => ErrorClass::RateLimit,
        529 | 503 => ErrorClass::Overloaded,
        500..=599 if overloaded => ErrorClass::Overloaded,
        500..=599 => ErrorClass::ServerError,
        401 | 403 => ErrorClass::Auth,
        // Gemini answers a bad key with 400 INVALID_ARGUMENT / API_KEY_INVALID.
        400 if err.reasons.iter().any(|r| r == "API_KEY_INVALID")
            || err.mentions("api key not valid") =>
        {
            ErrorClass::Auth
        }
        400 | 404 | 413 | 422 => ErrorClass::InvalidRequest,
        300..=399 => ErrorClass::InvalidRequest,
        408 => ErrorClass::Timeout,
        // A conflict on the server's side (OpenAI's lock timeouts), which the
        // official SDKs retry.
        409 => ErrorClass::ServerError,
        _ => ErrorClass::Other,
    }
}

/// The class of an error's type, as the three APIs name them in error bodies and
/// mid-stream error events.
pub(crate) fn class_of_kind(kind: &str) -> Option<ErrorClass> {
    Some(match kind {
        "rate_limit_error" | "rate_limit_exceeded" | "RESOURCE_EXHAUSTED" => ErrorClass::RateLimit,
        "overloaded_error" | "UNAVAILABLE" => ErrorClass::Overloaded,
        "api_error" | "server_error" | "INTERNAL" => ErrorClass::ServerError,
        "timeout_error" | "DEADLINE_EXCEEDED" => ErrorClass::Timeout,
        "authentication_error" | "permission_error" | "UNAUTHENTICATED" | "PERMISSION_DENIED" => {
            ErrorClass::Auth
        }
        "invalid_request_error"
        | "not_found_error"
        | "request_too_large"
        | "INVALID_ARGUMENT"
        | "NOT_FOUND" => ErrorClass::InvalidRequest,
        _ => return None,
    })
}

fn describe(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::RateLimit => "rate limited",
        ErrorClass::Overloaded => "overloaded",
        ErrorClass::ServerError => "server error",
        ErrorClass::Auth => "the credentials were refused",
        ErrorClass::InvalidRequest => "the request was rejected",
        ErrorClass::Timeout => "the server timed out",
        _ => "the call failed",
    }
}

/// A non-2xx answer (its body read up to a small limit).
pub(crate) struct ErrorAnswer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// The error for a non-2xx answer: class, message, status and retry delay.
pub(crate) fn status_error(
    caller: &Caller<'_>,
    answer: &ErrorAnswer,
    err: &ErrorBody,
) -> ProviderError {
    let status = answer.status;
    let class = classify(status, err);
    let mut head = format!("{} (HTTP {status}", describe(class));
    if let Some(kind) = &err.kind {
        head.push_str(&format!(", {kind}"));
    }
    head.push(')');
    let detail = if (300..400).contains(&status) {
        let to = answer
            .headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        format!("redirected to {to}; set base_url to the final address")
    } else {
        match &err.message {
            Some(m) => excerpt(m, 300),
            None => {
                let raw = String::from_utf8_lossy(&answer.body);
                if raw.trim().is_empty() {
                    "no details in the answer".to_string()
                } else {
                    excerpt(&raw, 200)
                }
            }
        }
    };
    let mut e = caller.error(class, Some(status), &format!("{head}: {detail}"));
    e.retry_after_ms = retry_after(&answer.headers, SystemTime::now()).or(err.retry_delay_ms);
    e
}

/// The delay a server asks for: `retry-after-ms` (milliseconds, OpenAI), then
/// `retry-after` (seconds or an HTTP date).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<u64> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("retry-after-ms")
        .and_then(parse_retry_after_ms)
        .or_else(|| header("retry-after").and_then(|v| parse_retry_after(v, now)))
}

/// `Retry-After: 30`, `Retry-After: 1.5` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`
/// → milliseconds from `now` (0 for a date in the past).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<u64> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).round() as u64);
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(now)
            .map(|d| d.as_millis().min(u64::MAX as u128) as u64)
            .unwrap_or(0),
    )
}

/// `retry-after-ms: 1500` → 1500.
pub fn parse_retry_after_ms(value: &str) -> Option<u64> {
    let ms = value.trim().parse::<f64>().ok()?;
    (ms.is_finite() && ms >= 0.0).then(|| ms.round() as u64)
}

/// A protobuf duration as JSON text: `"58s"`, `"1.5s"`.
fn parse_duration_text(text: &str) -> Option<u64> {
    let secs = text.trim().strip_suffix('s')?.parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).round() as u64)
}

/// `word` in `text`, case-insensitively, not inside a longer identifier.
pub(crate) fn names_word(text: &str, word: &str) -> bool {
    let text = text.to_ascii_lowercase();
    let word = word.to_ascii_lowercase();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(&word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// Whitespace collapsed to single spaces, at most `max` characters.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let flat = one_line(text);
    if flat.chars().count() <= max {
        return flat;
    }
    let mut out: String = flat.chars().take(max).collect();
    out.push('…');
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The system prompt, plus what the output must look like when the step has an
/// `outputSchema` (the engine validates the answer against it).
pub(crate) fn system_prompt(system: Option<&str>, schema: Option<&Value>) -> Option<String> {
    let Some(schema) = schema else {
        return system.map(str::to_string);
    };
    let rule = format!(
        "Reply with exactly one JSON value that satisfies this JSON Schema, and nothing else \
         (no prose, no code fences):\n{}",
        serde_json::to_string(schema).unwrap_or_default()
    );
    Some(match system {
        Some(s) if !s.trim().is_empty() => format!("{s}\n\n{rule}"),
        _ => rule,
    })
}
