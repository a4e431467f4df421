//! What the three HTTP providers share: one POST with a hard time limit, the
//! mapping from HTTP answers to `ErrorClass`, `retry-after` in its three spellings,
//! and one-line error messages that name the provider, the model and the status
//! and never carry the key.

use super::{ProviderError, scrub};
use ax_core::ErrorClass;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime};

/// One client for every provider: no redirects (a redirect would carry the key
/// headers to another host), a recognizable user agent.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ax/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// A header value that `Debug` output and logs show as `Sensitive`.
pub(crate) fn secret_header(value: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// `base` without trailing slashes, then `path`.
pub(crate) fn join(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
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

    /// A 200 whose body is not what the API documents.
    pub fn malformed(&self, expected: &str, body: &[u8]) -> ProviderError {
        self.error(
            ErrorClass::ServerError,
            Some(200),
            &format!(
                "the answer (HTTP 200) is not the JSON this API returns: {expected}; it starts with: {}",
                excerpt(&String::from_utf8_lossy(body), 160)
            ),
        )
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

/// A finished HTTP exchange.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Send a request and read the whole answer by `deadline`; `total` is the limit
/// the caller was given, for the message. Dropping the returned future cancels
/// the request.
pub(crate) async fn send(
    caller: &Caller<'_>,
    request: reqwest::RequestBuilder,
    deadline: Instant,
    total: Duration,
) -> Result<Answer, ProviderError> {
    let limit = deadline.saturating_duration_since(Instant::now());
    if limit.is_zero() {
        return Err(timeout_error(caller, total));
    }
    let exchange = async {
        let response = request.timeout(limit).send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok::<_, reqwest::Error>(Answer {
            status,
            headers,
            body,
        })
    };
    match tokio::time::timeout(limit, exchange).await {
        Err(_) => Err(timeout_error(caller, total)),
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) if e.is_timeout() => Err(timeout_error(caller, total)),
        Ok(Err(e)) => Err(network_error(caller, &e)),
    }
}

fn timeout_error(caller: &Caller<'_>, limit: Duration) -> ProviderError {
    caller.error(
        ErrorClass::Timeout,
        None,
        &format!("no answer within {}", human(limit)),
    )
}

fn network_error(caller: &Caller<'_>, e: &reqwest::Error) -> ProviderError {
    // The innermost cause says what really happened ("Connection refused",
    // "connection closed before message completed", "dns error: ...").
    let mut innermost = None;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        innermost = Some(s.to_string());
        source = s.source();
    }
    let host = e
        .url()
        .map(|u| {
            let mut h = u.host_str().unwrap_or("?").to_string();
            if let Some(p) = u.port() {
                h.push_str(&format!(":{p}"));
            }
            h
        })
        .unwrap_or_else(|| "the server".into());
    let what = if e.is_connect() {
        format!("could not connect to {host}")
    } else {
        format!("the connection to {host} failed")
    };
    let why = innermost.unwrap_or_else(|| e.to_string());
    caller.error(ErrorClass::Network, None, &format!("{what}: {why}"))
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

    /// Whether any part of the error talks about `word` (case-insensitive).
    pub fn mentions(&self, word: &str) -> bool {
        let word = word.to_ascii_lowercase();
        [&self.kind, &self.code, &self.param, &self.message]
            .into_iter()
            .flatten()
            .any(|s| s.to_ascii_lowercase().contains(&word))
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
        _ => ErrorClass::Other,
    }
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

/// The error for a non-2xx answer: class, message, status and retry delay.
pub(crate) fn status_error(caller: &Caller<'_>, answer: &Answer, err: &ErrorBody) -> ProviderError {
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

/// What a model turned out not to accept, learned from its 400 answers, so the
/// next call leaves it out at once (newer models reject `temperature`; OpenAI's
/// reasoning models reject `max_tokens` in favour of `max_completion_tokens`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quirks {
    pub no_temperature: bool,
    pub max_completion_tokens: bool,
}

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
