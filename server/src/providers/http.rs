//! The one HTTP provider: it sends what a [`Wire`] writes, with a hard time
//! limit; reads the answer within a size limit, whole or as a stream of
//! Server-Sent Events (relaying the text while it arrives); learns from
//! refusals what a model does not accept and asks again without it; and turns
//! every failure into a one-line error that names the provider, the model and
//! the status, and never the key.

use super::wire::{
    Call, Caller, ErrorAnswer, ErrorBody, Quirk, QuirkBook, Quirks, Reply, Stop, Wire, WireRequest,
    human, status_error,
};
use super::{Completion, CompletionRequest, Endpoint, Provider, ProviderError, ProviderFuture};
use ax_core::ErrorClass;
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Error bodies are read up to this much: enough for any message, and a server
/// cannot make ax hold more for a failure.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

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
fn secret_header(value: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// `base` without trailing slashes, then `path`.
fn join(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

/// A provider speaking wire format `W` over HTTP.
pub(crate) struct HttpProvider<W: Wire> {
    kind: &'static str,
    wire: W,
    name: String,
    base_url: String,
    key: Option<String>,
    client: reqwest::Client,
    quirks: QuirkBook,
    max_response_bytes: usize,
    stream: bool,
}

impl<W: Wire> HttpProvider<W> {
    pub fn new(kind: &'static str, wire: W, e: Endpoint) -> HttpProvider<W> {
        HttpProvider {
            kind,
            wire,
            name: e.name,
            base_url: e.base_url,
            key: e.key,
            client: e.client,
            quirks: QuirkBook::default(),
            max_response_bytes: usize::try_from(e.max_response_bytes).unwrap_or(usize::MAX),
            stream: e.stream,
        }
    }

    async fn run(&self, req: &CompletionRequest) -> Result<Completion, ProviderError> {
        let caller = Caller {
            provider: &self.name,
            model: &req.model,
            key: self.key.as_deref(),
        };
        let deadline = tokio::time::Instant::now() + req.timeout;
        match tokio::time::timeout_at(deadline, self.exchange(&caller, req)).await {
            Ok(result) => result,
            Err(_) => Err(timeout_error(&caller, req.timeout)),
        }
    }

    /// Ask, and ask again for as long as a refusal teaches something new.
    async fn exchange(
        &self,
        caller: &Caller<'_>,
        req: &CompletionRequest,
    ) -> Result<Completion, ProviderError> {
        let mut quirks = self.quirks.get(&req.model);
        loop {
            let call = Call {
                req,
                quirks,
                stream: self.stream && !quirks.has(Quirk::NoStream),
            };
            let wr = self.wire.request(&call);
            let response = self.send(caller, &wr, req.timeout).await?;
            let status = response.status().as_u16();
            if (200..300).contains(&status) {
                if wr.stream && is_event_stream(response.headers()) {
                    return self.read_stream(caller, req, response).await;
                }
                let body = self.read_body(caller, req, response).await?;
                let reply = match self.wire.parse(&body) {
                    Ok(reply) => reply,
                    // A stream without its content type (some proxies).
                    Err(_) if wr.stream && looks_like_sse(&body) => {
                        let chunks = futures_util::stream::iter([Ok::<_, ReadError>(body)]);
                        return self.read_events(caller, req, chunks).await;
                    }
                    Err(f) => return Err(caller.fault(f, Some(status))),
                };
                if wr.stream {
                    // Asked for a stream, answered whole: this server does not stream.
                    self.learn(req, &mut quirks, Quirk::NoStream, "answers whole");
                }
                return self.finish(caller, req, reply, status);
            }
            let answer = read_error(response, status).await;
            let err = ErrorBody::parse(&answer.body);
            if let Some(q) = refused(&wr, &answer, &err) {
                self.learn(req, &mut quirks, q, "refused it");
                continue;
            }
            return Err(status_error(caller, &answer, &err));
        }
    }

    fn learn(&self, req: &CompletionRequest, quirks: &mut Quirks, q: Quirk, how: &str) {
        *quirks = quirks.with(q);
        self.quirks.set(&req.model, *quirks);
        tracing::info!(provider = %self.name, model = %req.model, quirk = ?q, "the server {how}; adapting the requests for this model");
    }

    async fn send(
        &self,
        caller: &Caller<'_>,
        wr: &WireRequest,
        total: Duration,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut request = self
            .client
            .post(join(&self.base_url, &wr.path))
            .json(&wr.body);
        for (name, value) in self.wire.headers() {
            request = request.header(*name, *value);
        }
        if let Some(key) = &self.key {
            for (name, value) in self.wire.auth(key) {
                if let Some(v) = secret_header(&value) {
                    request = request.header(name, v);
                }
            }
        }
        request
            .send()
            .await
            .map_err(|e| self.transport_error(caller, &e, total, None))
    }

    /// A whole body, or an error once it passes the size limit.
    async fn read_body(
        &self,
        caller: &Caller<'_>,
        req: &CompletionRequest,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, ProviderError> {
        let limit = self.max_response_bytes;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(self.too_large(caller, "the answer"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(caller, &e, req.timeout, None))?
        {
            if body.len() + chunk.len() > limit {
                return Err(self.too_large(caller, "the answer"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn read_stream(
        &self,
        caller: &Caller<'_>,
        req: &CompletionRequest,
        response: reqwest::Response,
    ) -> Result<Completion, ProviderError> {
        let chunks = response
            .bytes_stream()
            .map(|chunk| chunk.map_err(ReadError::Http));
        self.read_events(caller, req, chunks).await
    }

    /// Fold a stream's events into the answer, relaying its text as it grows.
    /// Memory stays within the limit: the answer, and the bytes of the one event
    /// being received, may not pass it.
    async fn read_events<B: AsRef<[u8]>>(
        &self,
        caller: &Caller<'_>,
        req: &CompletionRequest,
        chunks: impl futures_util::Stream<Item = Result<B, ReadError>>,
    ) -> Result<Completion, ProviderError> {
        let limit = self.max_response_bytes;
        let pending = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&pending);
        let events = chunks
            .map(move |chunk| {
                let chunk = chunk?;
                let n = chunk.as_ref().len();
                if counter.fetch_add(n, Ordering::Relaxed).saturating_add(n) > limit {
                    return Err(ReadError::TooLarge);
                }
                Ok(chunk)
            })
            .eventsource();
        let mut events = std::pin::pin!(events);
        let mut reply = Reply::default();
        let mut sent_chars = 0usize;
        while let Some(item) = events.next().await {
            let event = match item {
                Ok(event) => event,
                Err(EventStreamError::Transport(ReadError::TooLarge)) => {
                    return Err(self.too_large(caller, "a stream event"));
                }
                Err(EventStreamError::Transport(ReadError::Http(e))) => {
                    return Err(self.transport_error(caller, &e, req.timeout, Some(&reply)));
                }
                Err(e) => {
                    return Err(caller.error(
                        ErrorClass::ServerError,
                        Some(200),
                        &format!("the answer is not a valid event stream: {e}"),
                    ));
                }
            };
            pending.store(0, Ordering::Relaxed);
            let before = reply.text.len();
            self.wire
                .event(&event, &mut reply)
                .map_err(|f| caller.fault(f, Some(200)))?;
            if reply.text.len() > limit {
                return Err(self.too_large(caller, "the answer"));
            }
            if reply.text.len() > before
                && let Some(sink) = &req.on_text
            {
                let delta = &reply.text[before..];
                sink.send(sent_chars, delta);
                sent_chars += delta.chars().count();
            }
            if reply.closed {
                break;
            }
        }
        if !reply.closed && reply.stop.is_none() {
            return Err(caller.error(
                ErrorClass::Network,
                Some(200),
                &format!(
                    "the stream ended before the answer was complete ({} characters in)",
                    reply.text.chars().count()
                ),
            ));
        }
        self.finish(caller, req, reply, 200)
    }

    /// A complete answer, or why it is not one.
    fn finish(
        &self,
        caller: &Caller<'_>,
        req: &CompletionRequest,
        reply: Reply,
        status: u16,
    ) -> Result<Completion, ProviderError> {
        let reason = reply.reason.as_deref().unwrap_or("no stop reason");
        match reply.stop {
            Some(Stop::Truncated) => {
                let written = if reply.text.trim().is_empty() {
                    "before writing any text".to_string()
                } else {
                    format!("after {} characters", reply.text.chars().count())
                };
                Err(caller.error(
                    ErrorClass::Truncated,
                    Some(status),
                    &format!(
                        "the answer was cut off at the output limit, {} = {} ({reason}), {written}",
                        self.wire.limit_field(),
                        req.max_tokens
                    ),
                ))
            }
            Some(Stop::Withheld(why)) => Err(caller.error(ErrorClass::Other, Some(status), &why)),
            _ if reply.text.trim().is_empty() => Err(caller.error(
                ErrorClass::Other,
                Some(status),
                &format!("the answer has no text ({reason})"),
            )),
            _ => Ok(Completion {
                text: reply.text,
                model: reply
                    .model
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| req.model.clone()),
                tokens_in: reply.tokens_in,
                tokens_out: reply.tokens_out,
            }),
        }
    }

    fn too_large(&self, caller: &Caller<'_>, what: &str) -> ProviderError {
        caller.error(
            ErrorClass::Other,
            Some(200),
            &format!(
                "{what} is larger than max_response_bytes ({} bytes); if that is expected, \
                 raise max_response_bytes in [providers.{}] of the agents file",
                self.max_response_bytes, self.name
            ),
        )
    }
}

/// Why reading a body stopped.
#[derive(Debug)]
enum ReadError {
    Http(reqwest::Error),
    TooLarge,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Http(e) => e.fmt(f),
            ReadError::TooLarge => f.write_str("larger than the limit"),
        }
    }
}

impl std::error::Error for ReadError {}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// Event-stream text that came without its content type.
fn looks_like_sse(body: &[u8]) -> bool {
    let start = body.trim_ascii_start();
    start.starts_with(b"data:") || start.starts_with(b"event:")
}

/// A non-2xx answer, its body cut at [`ERROR_BODY_LIMIT`].
async fn read_error(mut response: reqwest::Response, status: u16) -> ErrorAnswer {
    let headers = response.headers().clone();
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = ERROR_BODY_LIMIT - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    ErrorAnswer {
        status,
        headers,
        body,
    }
}

/// What a refusal (400 or 422, or a 404 without an API error for a stream)
/// teaches: the first optional part of the request it names.
fn refused(wr: &WireRequest, answer: &ErrorAnswer, err: &ErrorBody) -> Option<Quirk> {
    match answer.status {
        400 | 422 => {
            let raw = String::from_utf8_lossy(&answer.body);
            wr.optional
                .iter()
                .find(|o| {
                    o.words.iter().any(|w| {
                        err.mentions(w) || (err.is_empty() && super::wire::names_word(&raw, w))
                    })
                })
                .map(|o| o.quirk)
        }
        // A server without the stream endpoint (Gemini's is its own path).
        404 if wr.stream && err.is_empty() => Some(Quirk::NoStream),
        _ => None,
    }
}

fn timeout_error(caller: &Caller<'_>, limit: Duration) -> ProviderError {
    caller.error(
        ErrorClass::Timeout,
        None,
        &format!("no answer within {}", human(limit)),
    )
}

impl<W: Wire> HttpProvider<W> {
    /// A failure below HTTP: connecting, or the connection breaking (mid-stream,
    /// `partial` holds what had arrived).
    fn transport_error(
        &self,
        caller: &Caller<'_>,
        e: &reqwest::Error,
        total: Duration,
        partial: Option<&Reply>,
    ) -> ProviderError {
        if e.is_timeout() {
            return timeout_error(caller, total);
        }
        // The innermost cause says what really happened ("Connection refused",
        // "connection closed before message completed", "dns error: ...").
        let mut innermost = None;
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            innermost = Some(s.to_string());
            source = s.source();
        }
        let url = e
            .url()
            .cloned()
            .or_else(|| reqwest::Url::parse(&self.base_url).ok());
        let host = url
            .map(|u| {
                let mut h = u.host_str().unwrap_or("?").to_string();
                if let Some(p) = u.port() {
                    h.push_str(&format!(":{p}"));
                }
                h
            })
            .unwrap_or_else(|| "the server".into());
        let what = match partial {
            Some(r) => format!(
                "the stream from {host} broke after {} characters",
                r.text.chars().count()
            ),
            None if e.is_connect() => format!("could not connect to {host}"),
            None => format!("the connection to {host} failed"),
        };
        let why = innermost.unwrap_or_else(|| e.to_string());
        caller.error(ErrorClass::Network, None, &format!("{what}: {why}"))
    }
}

impl<W: Wire> Provider for HttpProvider<W> {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn complete<'a>(&'a self, req: &'a CompletionRequest) -> ProviderFuture<'a> {
        Box::pin(self.run(req))
    }
}

/// By hand, so no key can ever be printed.
impl<W: Wire> std::fmt::Debug for HttpProvider<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProvider")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("base_url", &crate::config::redact_url(&self.base_url))
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("stream", &self.stream)
            .finish()
    }
}
