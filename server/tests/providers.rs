//! Providers against local fake servers that speak each documented wire format
//! (Anthropic Messages, OpenAI Chat Completions, Gemini generateContent), whole
//! and streamed, and check what they receive; what they learn from refusals;
//! structured output; truncation and size limits; the router's fallback rules;
//! echo; the agents file; and that keys never leak.

use ax_core::ErrorClass;
use ax_core::schema::CompiledSchema;
use ax_server::config::{AgentsConfig, FileFormat};
use ax_server::providers::TextSink;
use ax_server::providers::{self, CallOutcome, RouteEntry, Router};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

// ---------------------------------------------------------------- fake servers

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
    /// Sent as separate chunks, each after its pause, instead of `body`.
    chunks: Option<Vec<(Duration, String)>>,
    /// Break the connection after the chunks instead of ending the body.
    cut: bool,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply::raw(status, &body.to_string())
    }

    fn raw(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
            chunks: None,
            cut: false,
        }
    }

    /// A `text/event-stream` of these events, each in its own chunk.
    fn sse(events: Vec<String>) -> Reply {
        Reply {
            headers: vec![("content-type", "text/event-stream".into())],
            chunks: Some(events.into_iter().map(|e| (Duration::ZERO, e)).collect()),
            ..Reply::raw(200, "")
        }
    }

    /// Only the first `n` chunks, then the connection breaks.
    fn cut_after(mut self, n: usize) -> Reply {
        if let Some(c) = &mut self.chunks {
            c.truncate(n);
        }
        self.cut = true;
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }

    fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Responder = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

#[derive(Clone)]
struct FakeState {
    seen: Arc<Mutex<Vec<Seen>>>,
    respond: Responder,
}

struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn last(&self) -> Seen {
        self.requests()
            .pop()
            .expect("the fake server received a request")
    }
}

async fn handle(
    State(st): State<FakeState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    st.seen.lock().unwrap().push(seen.clone());
    let reply = (st.respond)(&seen);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).unwrap();
    let mut response = match reply.chunks {
        None => (status, reply.body).into_response(),
        Some(chunks) => {
            let cut = reply.cut;
            let paced = futures_util::stream::iter(chunks).then(|(pause, chunk)| async move {
                tokio::time::sleep(pause).await;
                Ok::<_, std::io::Error>(Bytes::from(chunk))
            });
            // After a pause, so that what was sent is on the wire before the cut.
            let end = futures_util::stream::iter(cut.then_some(())).then(|()| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(std::io::Error::other("the fake server cut the stream"))
            });
            (status, Body::from_stream(paced.chain(end))).into_response()
        }
    };
    for (k, v) in reply.headers {
        response.headers_mut().insert(k, v.parse().unwrap());
    }
    response
}

async fn fake(respond: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Fake {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = FakeState {
        seen: seen.clone(),
        respond: Arc::new(respond),
    };
    let app = axum::Router::new().fallback(handle).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Fake { url, seen }
}

/// A server that accepts connections and closes them at once.
async fn resetting_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    url
}

// ---------------------------------------------------------------- the three wires

const KEY: &str = "sk-test-KEY-zebra-7f3c9a1e";

#[derive(Clone, Copy, Debug)]
enum Wire {
    Anthropic,
    OpenAi,
    Gemini,
}

impl Wire {
    fn name(self) -> &'static str {
        match self {
            Wire::Anthropic => "anthropic",
            Wire::OpenAi => "openai",
            Wire::Gemini => "gemini",
        }
    }

    fn key_env(self) -> &'static str {
        match self {
            Wire::Anthropic => "ANTHROPIC_API_KEY",
            Wire::OpenAi => "OPENAI_API_KEY",
            Wire::Gemini => "GEMINI_API_KEY",
        }
    }

    fn base_env(self) -> &'static str {
        match self {
            Wire::Anthropic => "ANTHROPIC_BASE_URL",
            Wire::OpenAi => "OPENAI_BASE_URL",
            Wire::Gemini => "GEMINI_BASE_URL",
        }
    }

    /// The SDKs' base URL conventions: OpenAI's includes `/v1`.
    fn base(self, server: &str) -> String {
        match self {
            Wire::OpenAi => format!("{server}/v1"),
            _ => server.to_string(),
        }
    }

    fn model(self) -> &'static str {
        match self {
            Wire::Anthropic => "claude-sonnet-4-6",
            Wire::OpenAi => "gpt-4.1-mini",
            Wire::Gemini => "gemini-2.5-flash",
        }
    }

    fn path(self) -> String {
        match self {
            Wire::Anthropic => "/v1/messages".into(),
            Wire::OpenAi => "/v1/chat/completions".into(),
            Wire::Gemini => format!("/v1beta/models/{}:generateContent", self.model()),
        }
    }

    fn success(self, text: &str, tokens_in: u64, tokens_out: u64) -> Value {
        match self {
            Wire::Anthropic => json!({
                "id": "msg_01", "type": "message", "role": "assistant", "model": self.model(),
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out}
            }),
            Wire::OpenAi => json!({
                "id": "chatcmpl-1", "object": "chat.completion", "model": self.model(),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}
            }),
            Wire::Gemini => json!({
                "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": tokens_in, "candidatesTokenCount": tokens_out, "totalTokenCount": tokens_in + tokens_out},
                "modelVersion": self.model()
            }),
        }
    }

    /// Whether the request asks for a streamed answer.
    fn wants_stream(self, seen: &Seen) -> bool {
        match self {
            Wire::Gemini => {
                seen.path.ends_with(":streamGenerateContent") && seen.query.contains("alt=sse")
            }
            _ => seen.body["stream"] == true,
        }
    }

    /// The documented answer to what was asked: a stream of `text` word by word,
    /// or the whole answer.
    fn answer(self, seen: &Seen, text: &str, tokens_in: u64, tokens_out: u64) -> Reply {
        if self.wants_stream(seen) {
            Reply::sse(self.stream(&words(text), tokens_in, tokens_out, self.stop_ok()))
        } else {
            Reply::json(200, self.success(text, tokens_in, tokens_out))
        }
    }

    fn stop_ok(self) -> &'static str {
        match self {
            Wire::Anthropic => "end_turn",
            Wire::OpenAi => "stop",
            Wire::Gemini => "STOP",
        }
    }

    fn stop_truncated(self) -> &'static str {
        match self {
            Wire::Anthropic => "max_tokens",
            Wire::OpenAi => "length",
            Wire::Gemini => "MAX_TOKENS",
        }
    }

    /// The events of a streamed answer made of `pieces`, as each vendor
    /// documents them: event names, field names, usage in the final events.
    fn stream(self, pieces: &[&str], tokens_in: u64, tokens_out: u64, stop: &str) -> Vec<String> {
        let data = |v: Value| format!("data: {v}\n\n");
        let named = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
        let model = self.model();
        match self {
            Wire::Anthropic => {
                let mut out = vec![
                    named(
                        "message_start",
                        json!({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant", "content": [], "model": model, "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": tokens_in, "output_tokens": 1}}}),
                    ),
                    named(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                    ),
                    named("ping", json!({"type": "ping"})),
                ];
                out.extend(pieces.iter().map(|p| named("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}))));
                out.push(named(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ));
                out.push(named("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": tokens_out}})));
                out.push(named("message_stop", json!({"type": "message_stop"})));
                out
            }
            Wire::OpenAi => {
                let chunk = |delta: Value, finish: Value| json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "system_fingerprint": "fp_1", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
                let mut out = vec![data(chunk(
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                ))];
                out.extend(
                    pieces
                        .iter()
                        .map(|p| data(chunk(json!({"content": p}), Value::Null))),
                );
                out.push(data(chunk(json!({}), json!(stop))));
                out.push(data(json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": [], "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}})));
                out.push("data: [DONE]\n\n".to_string());
                out
            }
            Wire::Gemini => {
                let last = pieces.len().saturating_sub(1);
                pieces
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let mut candidate = json!({"content": {"parts": [{"text": p}], "role": "model"}, "index": 0});
                        let mut usage = json!({"promptTokenCount": tokens_in, "totalTokenCount": tokens_in});
                        if i == last {
                            candidate["finishReason"] = json!(stop);
                            usage = json!({"promptTokenCount": tokens_in, "candidatesTokenCount": tokens_out, "totalTokenCount": tokens_in + tokens_out});
                        }
                        format!("data: {}\r\n\r\n", json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model}))
                    })
                    .collect()
            }
        }
    }

    fn error(self, status: u16, message: &str) -> Value {
        match self {
            Wire::Anthropic => {
                let kind = match status {
                    429 => "rate_limit_error",
                    529 => "overloaded_error",
                    401 => "authentication_error",
                    400 => "invalid_request_error",
                    _ => "api_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": message}})
            }
            Wire::OpenAi => {
                let kind = match status {
                    429 => "rate_limit_exceeded",
                    400 => "invalid_request_error",
                    _ => "server_error",
                };
                json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
            }
            Wire::Gemini => {
                let st = match status {
                    429 => "RESOURCE_EXHAUSTED",
                    503 => "UNAVAILABLE",
                    400 => "INVALID_ARGUMENT",
                    403 => "PERMISSION_DENIED",
                    _ => "INTERNAL",
                };
                json!({"error": {"code": status, "message": message, "status": st}})
            }
        }
    }

    /// What every request must carry, per the provider's documentation.
    fn check_request(self, seen: &Seen, prompt: &str, system_part: &str, key: Option<&str>) {
        assert_eq!(seen.method, "POST");
        if self.wants_stream(seen) {
            assert_eq!(
                seen.path,
                self.path()
                    .replace(":generateContent", ":streamGenerateContent")
            );
        } else {
            assert_eq!(seen.path, self.path());
        }
        assert!(
            !seen.query.contains("key"),
            "no key in the URL: {}",
            seen.query
        );
        assert_eq!(seen.header("content-type"), Some("application/json"));
        let b = &seen.body;
        match self {
            Wire::Anthropic => {
                assert_eq!(seen.header("x-api-key"), key);
                assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
                assert_eq!(b["model"], self.model());
                assert!(b["max_tokens"].as_u64().unwrap() > 0);
                assert_eq!(b["messages"], json!([{"role": "user", "content": prompt}]));
                assert!(b["system"].as_str().unwrap().contains(system_part), "{b}");
                assert!(b["temperature"].is_number());
            }
            Wire::OpenAi => {
                assert_eq!(
                    seen.header("authorization").map(str::to_string),
                    key.map(|k| format!("Bearer {k}"))
                );
                assert_eq!(b["model"], self.model());
                assert!(
                    b["max_tokens"].as_u64().unwrap() > 0,
                    "max_tokens, for compatible servers"
                );
                assert!(b.get("max_completion_tokens").is_none());
                assert_eq!(b["messages"][0]["role"], "system");
                assert!(
                    b["messages"][0]["content"]
                        .as_str()
                        .unwrap()
                        .contains(system_part)
                );
                assert_eq!(b["messages"][1], json!({"role": "user", "content": prompt}));
                assert!(b["temperature"].is_number());
            }
            Wire::Gemini => {
                assert_eq!(seen.header("x-goog-api-key"), key);
                assert_eq!(
                    b["contents"],
                    json!([{"role": "user", "parts": [{"text": prompt}]}])
                );
                assert!(
                    b["systemInstruction"]["parts"][0]["text"]
                        .as_str()
                        .unwrap()
                        .contains(system_part)
                );
                assert!(b["generationConfig"]["maxOutputTokens"].as_u64().unwrap() > 0);
                assert!(b["generationConfig"]["temperature"].is_number());
            }
        }
    }
}

/// `text` cut after each space, as models stream it.
fn words(text: &str) -> Vec<&str> {
    text.split_inclusive(' ').collect()
}

fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn router_with(config: &str, env: &HashMap<String, String>) -> Router {
    let config = AgentsConfig::parse(config, FileFormat::Toml, "test.toml").unwrap();
    Router::new(config, &|k| env.get(k).cloned()).unwrap()
}

/// A router whose only keyed provider is `wire`, at `server`, with `extra` config.
fn router_for(wire: Wire, server: &str, extra: &str) -> Router {
    let env = env_of(&[(wire.key_env(), KEY), (wire.base_env(), &wire.base(server))]);
    router_with(extra, &env)
}

fn err(o: &CallOutcome) -> &providers::ProviderError {
    o.result.as_ref().expect_err("the call should fail")
}

fn assert_no_key(o: &CallOutcome) {
    let all = format!("{o:?}");
    assert!(!all.contains(KEY), "the key leaked: {all}");
}

// ---------------------------------------------------------------- per-wire scenarios

/// A sink that keeps what it receives.
type Pieces = Arc<Mutex<Vec<(usize, String)>>>;

fn collector() -> (TextSink, Pieces) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    let sink =
        TextSink::new(move |offset, text| keep.lock().unwrap().push((offset, text.to_string())));
    (sink, got)
}

async fn success(wire: Wire) {
    let server = fake(move |seen| wire.answer(seen, "All good.", 120, 30)).await;
    for (config, streamed) in [("", true), ("[defaults]\nstream = false\n", false)] {
        let router = router_for(wire, &server.url, config);
        assert_eq!(router.default_provider(), wire.name());
        let (sink, pieces) = collector();
        let o = router
            .complete_streaming("backend", "Review the API.", None, None, Some(sink))
            .await;
        let c = o.result.as_ref().expect("success");
        assert_eq!(c.text, "All good.");
        assert_eq!(
            (c.tokens_in, c.tokens_out),
            (120, 30),
            "usage from the final events"
        );
        assert_eq!(c.model, wire.model());
        assert_eq!(o.provider, wire.name());
        assert_eq!(o.model, wire.model());
        assert!(o.notes.is_empty());
        // Built-in prices for the default models.
        let cost = o.cost_usd.expect("a price for the default model");
        let price = AgentsConfig::builtin().prices[wire.model()];
        assert!((cost - price.cost(120, 30)).abs() < 1e-12);
        let seen = server.last();
        wire.check_request(&seen, "Review the API.", "backend engineer", Some(KEY));
        assert_eq!(wire.wants_stream(&seen), streamed, "{config}");
        if streamed {
            if matches!(wire, Wire::OpenAi) {
                assert_eq!(seen.body["stream_options"], json!({"include_usage": true}));
            }
            assert_eq!(
                *pieces.lock().unwrap(),
                vec![(0, "All ".to_string()), (4, "good.".to_string())],
                "the text is relayed as it arrives"
            );
        } else {
            assert!(seen.body.get("stream").is_none());
            assert!(pieces.lock().unwrap().is_empty());
        }
        assert_no_key(&o);
    }
}

async fn rate_limited(wire: Wire) {
    let server = fake(move |_| {
        Reply::json(429, wire.error(429, "Too many requests, slow down."))
            .header("retry-after", "7")
    })
    .await;
    let router = router_for(wire, &server.url, "");
    let o = router.complete("backend", "hi", None, None).await;
    let e = err(&o);
    assert_eq!(e.class, ErrorClass::RateLimit);
    assert_eq!(e.retry_after_ms, Some(7000));
    assert_eq!(e.status, Some(429));
    assert!(
        e.message
            .starts_with(&format!("{} ({})", wire.name(), wire.model())),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("429") && e.message.contains("slow down"),
        "{}",
        e.message
    );
    assert!(!e.message.contains('\n'));
}

async fn server_error(wire: Wire) {
    let server = fake(move |_| Reply::json(500, wire.error(500, "Internal failure"))).await;
    let router = router_for(wire, &server.url, "");
    let o = router.complete("backend", "hi", None, None).await;
    let e = err(&o);
    assert_eq!(e.class, ErrorClass::ServerError);
    assert_eq!(e.status, Some(500));
    assert!(e.message.contains("500"), "{}", e.message);
}

async fn overloaded(wire: Wire) {
    let status = if matches!(wire, Wire::Anthropic) {
        529
    } else {
        503
    };
    let server = fake(move |_| Reply::json(status, wire.error(status, "Overloaded"))).await;
    let router = router_for(wire, &server.url, "");
    let e = router
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Overloaded, "{}", e.message);
    assert_eq!(e.status, Some(status));
}

async fn malformed(wire: Wire) {
    let server = fake(|_| Reply::raw(200, "{\"unexpected\": tru")).await;
    let router = router_for(wire, &server.url, "");
    let e = router
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::ServerError);
    assert!(e.message.contains("not the JSON"), "{}", e.message);
    assert!(
        e.message.contains("{\"unexpected\": tru"),
        "quotes an excerpt: {}",
        e.message
    );
    // Valid JSON of the wrong shape is malformed too.
    let server = fake(|_| Reply::json(200, json!({"hello": "world"}))).await;
    let router = router_for(wire, &server.url, "");
    let e = router
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::ServerError, "{}", e.message);
}

async fn slow(wire: Wire) {
    let server =
        fake(move |_| Reply::json(200, wire.success("late", 1, 1)).after(Duration::from_secs(10)))
            .await;
    let config = format!("[providers.{}]\ntimeout_ms = 300\n", wire.name());
    let router = router_for(wire, &server.url, &config);
    let t = Instant::now();
    let o = router.complete("backend", "hi", None, None).await;
    let e = err(&o);
    assert_eq!(e.class, ErrorClass::Timeout, "{}", e.message);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "returned after {:?}",
        t.elapsed()
    );
    assert!(e.message.contains("300 ms"), "{}", e.message);
    // The step's remaining budget is the tighter limit here.
    let router = router_for(wire, &server.url, "");
    let t = Instant::now();
    let o = router.complete("backend", "hi", None, Some(250)).await;
    let e = err(&o);
    assert_eq!(e.class, ErrorClass::Timeout);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(e.message.contains("budget"), "{}", e.message);
}

async fn connection_reset(wire: Wire) {
    let url = resetting_server().await;
    let router = router_for(wire, &url, "");
    let t = Instant::now();
    let o = router.complete("backend", "hi", None, None).await;
    let e = err(&o);
    assert_eq!(e.class, ErrorClass::Network, "{}", e.message);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(e.message.starts_with(wire.name()), "{}", e.message);
    // Nothing listening at all.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let router = router_for(wire, &closed, "");
    let e = router
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Network, "{}", e.message);
    assert!(e.message.contains("could not connect"), "{}", e.message);
}

async fn stream_cut_midway(wire: Wire) {
    let events = wire.stream(&["one ", "two ", "three ", "four"], 5, 4, wire.stop_ok());
    // Cut after the second piece of text (Gemini: each event is a piece).
    let keep = match wire {
        Wire::Anthropic => 5,
        Wire::OpenAi => 3,
        Wire::Gemini => 2,
    };
    let server = fake(move |_| Reply::sse(events.clone()).cut_after(keep)).await;
    let router = router_for(wire, &server.url, "");
    let (sink, pieces) = collector();
    let o = router
        .complete_streaming("backend", "hi", None, None, Some(sink))
        .await;
    let e = err(&o);
    assert_eq!(
        e.class,
        ErrorClass::Network,
        "a broken stream is retryable: {}",
        e.message
    );
    assert!(
        e.message.contains("broke after 8 characters"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains(&server.url["http://".len()..]),
        "names the host: {}",
        e.message
    );
    assert_eq!(
        *pieces.lock().unwrap(),
        vec![(0, "one ".to_string()), (4, "two ".to_string())],
        "what arrived was relayed, and nothing is kept"
    );
    // A stream that ends cleanly but before the answer did is broken too.
    let mut events = wire.stream(&["one ", "two"], 5, 4, wire.stop_ok());
    match wire {
        // No message_delta (the stop reason) nor message_stop.
        Wire::Anthropic => events.truncate(5),
        // No finish_reason, usage or [DONE].
        Wire::OpenAi => events.truncate(3),
        // No finishReason.
        Wire::Gemini => events.truncate(1),
    }
    let server = fake(move |_| Reply::sse(events.clone())).await;
    let e = router_for(wire, &server.url, "")
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Network, "{}", e.message);
    assert!(
        e.message.contains("ended before the answer was complete"),
        "{}",
        e.message
    );
}

async fn truncated(wire: Wire) {
    let stop = wire.stop_truncated();
    let server = fake(move |seen| {
        if wire.wants_stream(seen) {
            Reply::sse(wire.stream(&["half ", "an "], 5, 4096, stop))
        } else {
            let mut body = wire.success("half an", 5, 4096);
            match wire {
                Wire::Anthropic => body["stop_reason"] = json!(stop),
                Wire::OpenAi => body["choices"][0]["finish_reason"] = json!(stop),
                Wire::Gemini => body["candidates"][0]["finishReason"] = json!(stop),
            }
            Reply::json(200, body)
        }
    })
    .await;
    for config in ["", "[defaults]\nstream = false\n"] {
        let e = router_for(wire, &server.url, config)
            .complete("backend", "hi", None, None)
            .await
            .result
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Truncated, "{config}: {}", e.message);
        let limit = match wire {
            Wire::Gemini => "maxOutputTokens = 4096",
            _ => "max_tokens = 4096",
        };
        assert!(e.message.contains(limit), "names the limit: {}", e.message);
        assert!(
            e.message.contains(stop),
            "and the vendor's reason: {}",
            e.message
        );
        assert!(
            e.message.contains("raise max_tokens in [agents.backend]"),
            "and how to raise it: {}",
            e.message
        );
    }
}

async fn oversize(wire: Wire) {
    let config = "[defaults]\nmax_response_bytes = 2048\n";
    let big = "x".repeat(3000);
    // A whole body past the limit (with a Content-Length, and chunked).
    for chunked in [false, true] {
        let text = big.clone();
        let server = fake(move |_| {
            let body = wire.success(&text, 1, 1).to_string();
            if chunked {
                let half = body.len() / 2;
                Reply {
                    headers: vec![("content-type", "application/json".into())],
                    chunks: Some(vec![
                        (Duration::ZERO, body[..half].to_string()),
                        (Duration::ZERO, body[half..].to_string()),
                    ]),
                    ..Reply::raw(200, "")
                }
            } else {
                Reply::raw(200, &body)
            }
        })
        .await;
        let e = router_for(wire, &server.url, config)
            .complete("backend", "hi", None, None)
            .await
            .result
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Other, "{}", e.message);
        assert!(
            e.message
                .contains("larger than max_response_bytes (2048 bytes)"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains(&format!("[providers.{}]", wire.name())),
            "{}",
            e.message
        );
    }
    // A stream whose text grows past it, in small events.
    let pieces: Vec<String> = (0..30).map(|_| "y".repeat(100)).collect();
    let server = fake(move |_| {
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        Reply::sse(wire.stream(&refs, 1, 1, wire.stop_ok()))
    })
    .await;
    let e = router_for(wire, &server.url, config)
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert!(
        e.message.contains("larger than max_response_bytes"),
        "{}",
        e.message
    );
    // One event that never ends.
    let server = fake(move |_| {
        Reply::sse(vec![
            "data: ".to_string(),
            "z".repeat(1500),
            "z".repeat(1500),
        ])
    })
    .await;
    let e = router_for(wire, &server.url, config)
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert!(
        e.message
            .contains("a stream event is larger than max_response_bytes"),
        "{}",
        e.message
    );
}

macro_rules! wire_tests {
    ($module:ident, $wire:expr) => {
        mod $module {
            use super::*;
            #[tokio::test]
            async fn success_parses_text_and_tokens() {
                success($wire).await
            }
            #[tokio::test]
            async fn rate_limit_with_retry_after() {
                rate_limited($wire).await
            }
            #[tokio::test]
            async fn server_error_500() {
                server_error($wire).await
            }
            #[tokio::test]
            async fn overloaded_status() {
                overloaded($wire).await
            }
            #[tokio::test]
            async fn malformed_json_is_server_error() {
                malformed($wire).await
            }
            #[tokio::test]
            async fn slow_answer_times_out_promptly() {
                slow($wire).await
            }
            #[tokio::test]
            async fn connection_reset_is_network() {
                connection_reset($wire).await
            }
            #[tokio::test]
            async fn stream_cut_midway_is_network() {
                stream_cut_midway($wire).await
            }
            #[tokio::test]
            async fn truncated_answers_fail() {
                truncated($wire).await
            }
            #[tokio::test]
            async fn oversize_answers_fail() {
                oversize($wire).await
            }
        }
    };
}

wire_tests!(anthropic, Wire::Anthropic);
wire_tests!(openai, Wire::OpenAi);
wire_tests!(gemini, Wire::Gemini);

// ---------------------------------------------------------------- classification details

#[tokio::test]
async fn status_classes() {
    let cases: [(u16, ErrorClass); 8] = [
        (401, ErrorClass::Auth),
        (403, ErrorClass::Auth),
        (400, ErrorClass::InvalidRequest),
        (404, ErrorClass::InvalidRequest),
        (413, ErrorClass::InvalidRequest),
        (422, ErrorClass::InvalidRequest),
        (408, ErrorClass::Timeout),
        (502, ErrorClass::ServerError),
    ];
    for (status, class) in cases {
        let server =
            fake(move |_| Reply::json(status, Wire::Anthropic.error(status, "nope"))).await;
        let router = router_for(Wire::Anthropic, &server.url, "");
        let e = router
            .complete("backend", "hi", None, None)
            .await
            .result
            .unwrap_err();
        assert_eq!(e.class, class, "status {status}: {}", e.message);
        assert_eq!(e.status, Some(status));
    }
}

#[tokio::test]
async fn gemini_specifics() {
    // A bad key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID: auth.
    let server = fake(|_| {
        Reply::json(
            400,
            json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}),
        )
    })
    .await;
    let e = router_for(Wire::Gemini, &server.url, "")
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth, "{}", e.message);
    // 429 with the delay only in google.rpc.RetryInfo.
    let server = fake(|_| {
        Reply::json(
            429,
            json!({"error": {"code": 429, "message": "You exceeded your current quota.", "status": "RESOURCE_EXHAUSTED",
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}]}}),
        )
    })
    .await;
    let e = router_for(Wire::Gemini, &server.url, "")
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(
        (e.class, e.retry_after_ms),
        (ErrorClass::RateLimit, Some(3000))
    );
    // A blocked prompt and a withheld answer are `other`.
    let server =
        fake(|_| Reply::json(200, json!({"promptFeedback": {"blockReason": "SAFETY"}}))).await;
    let e = router_for(Wire::Gemini, &server.url, "")
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Other);
    assert!(e.message.contains("SAFETY"), "{}", e.message);
    let server = fake(|_| {
        Reply::json(
            200,
            json!({"candidates": [{"finishReason": "SAFETY", "index": 0}]}),
        )
    })
    .await;
    let e = router_for(Wire::Gemini, &server.url, "")
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Other);
    // Thought parts are not the answer; thinking tokens are billed as output.
    let server = fake(|_| {
        Reply::json(
            200,
            json!({"candidates": [{"content": {"parts": [{"text": "pondering", "thought": true}, {"text": "answer"}]}}],
                   "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "thoughtsTokenCount": 3}}),
        )
    })
    .await;
    let o = router_for(Wire::Gemini, &server.url, "")
        .complete("backend", "hi", None, None)
        .await;
    let c = o.result.unwrap();
    assert_eq!(
        (c.text.as_str(), c.tokens_in, c.tokens_out),
        ("answer", 5, 5)
    );
}

#[tokio::test]
async fn empty_answers_and_refusals_are_other() {
    let server = fake(|_| {
        Reply::json(
            200,
            json!({"choices": [{"message": {"role": "assistant", "content": null}, "finish_reason": "content_filter"}]}),
        )
    })
    .await;
    let e = router_for(Wire::OpenAi, &server.url, "")
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Other);
    assert!(e.message.contains("content_filter"), "{}", e.message);
    let server = fake(|_| {
        Reply::json(
            200,
            json!({"content": [], "model": "claude-sonnet-4-6", "stop_reason": "refusal", "usage": {"input_tokens": 3, "output_tokens": 0}}),
        )
    })
    .await;
    let e = router_for(Wire::Anthropic, &server.url, "")
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Other);
    assert!(e.message.contains("refus"), "{}", e.message);
}

#[tokio::test]
async fn retry_after_as_http_date_and_ms_headers() {
    let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    let server = fake(move |_| {
        Reply::json(429, Wire::Anthropic.error(429, "later")).header("retry-after", &later)
    })
    .await;
    let e = router_for(Wire::Anthropic, &server.url, "")
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    let ms = e.retry_after_ms.unwrap();
    assert!((27_000..=31_000).contains(&ms), "{ms}");
    let server = fake(|_| {
        Reply::json(429, Wire::OpenAi.error(429, "later"))
            .header("retry-after-ms", "1500")
            .header("retry-after", "2")
    })
    .await;
    let e = router_for(Wire::OpenAi, &server.url, "")
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(e.retry_after_ms, Some(1500));
}

#[test]
fn retry_after_parsing() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_400); // 2015-10-21 07:26:40 GMT
    assert_eq!(providers::parse_retry_after("7", now), Some(7000));
    assert_eq!(providers::parse_retry_after(" 120 ", now), Some(120_000));
    assert_eq!(providers::parse_retry_after("1.5", now), Some(1500));
    assert_eq!(
        providers::parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
        Some(80_000)
    );
    assert_eq!(
        providers::parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
        Some(0),
        "a date in the past means now"
    );
    assert_eq!(providers::parse_retry_after("soon", now), None);
    assert_eq!(providers::parse_retry_after("-3", now), None);
    assert_eq!(providers::parse_retry_after_ms("250"), Some(250));
    assert_eq!(providers::parse_retry_after_ms("12.6"), Some(13));
    assert_eq!(providers::parse_retry_after_ms("x"), None);
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("retry-after", "3".parse().unwrap());
    assert_eq!(providers::retry_after(&h, now), Some(3000));
    h.insert("retry-after-ms", "400".parse().unwrap());
    assert_eq!(
        providers::retry_after(&h, now),
        Some(400),
        "the ms header is more precise"
    );
}

// ---------------------------------------------------------------- adapting to newer models

#[tokio::test]
async fn openai_switches_to_max_completion_tokens_when_told() {
    let server = fake(|seen| {
        if seen.body.get("max_tokens").is_some() {
            Reply::json(
                400,
                json!({"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                    "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}}),
            )
        } else if seen.body.get("temperature").is_some() {
            Reply::json(
                400,
                json!({"error": {"message": "Unsupported value: 'temperature' does not support 0.2 with this model. Only the default (1) value is supported.",
                    "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"}}),
            )
        } else {
            Reply::json(200, Wire::OpenAi.success("fine", 1, 1))
        }
    })
    .await;
    let router = router_for(
        Wire::OpenAi,
        &server.url,
        "[providers.openai]\nmodel = \"gpt-5.4-mini\"\n",
    );
    let o = router.complete("backend", "hi", None, None).await;
    assert_eq!(o.result.unwrap().text, "fine");
    assert_eq!(server.requests().len(), 3);
    let last = server.last();
    assert!(last.body["max_completion_tokens"].as_u64().is_some());
    // Learned: the next call is right the first time.
    let o = router.complete("backend", "hi", None, None).await;
    assert!(o.result.is_ok());
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn anthropic_drops_temperature_when_the_model_refuses_it() {
    let server = fake(|seen| {
        if seen.body.get("temperature").is_some() {
            Reply::json(
                400,
                Wire::Anthropic.error(400, "temperature is deprecated for this model."),
            )
        } else {
            Reply::json(200, Wire::Anthropic.success("ok", 1, 1))
        }
    })
    .await;
    let router = router_for(Wire::Anthropic, &server.url, "");
    assert!(
        router
            .complete("security", "hi", None, None)
            .await
            .result
            .is_ok()
    );
    assert_eq!(server.requests().len(), 2);
    // Any other 400 is final.
    let server =
        fake(|_| Reply::json(400, Wire::Anthropic.error(400, "messages: field required"))).await;
    let router = router_for(Wire::Anthropic, &server.url, "");
    let e = router
        .complete("security", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::InvalidRequest);
    assert_eq!(server.requests().len(), 1);
}

// ---------------------------------------------------------------- routing and fallback

fn two_provider_env(anthropic: &Fake, openai: &Fake) -> HashMap<String, String> {
    env_of(&[
        ("ANTHROPIC_API_KEY", KEY),
        ("ANTHROPIC_BASE_URL", &anthropic.url),
        ("OPENAI_API_KEY", "sk-openai-second-key-1234"),
        ("OPENAI_BASE_URL", &format!("{}/v1", openai.url)),
    ])
}

const CHAIN: &str = r#"
[agents.backend]
provider = "anthropic"
fallback = ["openai", "echo"]
"#;

#[tokio::test]
async fn rate_limit_falls_back_to_the_next_provider() {
    let first = fake(|_| {
        Reply::json(429, Wire::Anthropic.error(429, "slow down")).header("retry-after", "5")
    })
    .await;
    let second = fake(|_| Reply::json(200, Wire::OpenAi.success("from openai", 10, 5))).await;
    let router = router_with(CHAIN, &two_provider_env(&first, &second));
    assert_eq!(
        router.route("backend"),
        vec![
            RouteEntry {
                provider: "anthropic".into(),
                model: "claude-sonnet-4-6".into()
            },
            RouteEntry {
                provider: "openai".into(),
                model: "gpt-4.1-mini".into()
            },
            RouteEntry {
                provider: "echo".into(),
                model: "echo".into()
            },
        ]
    );
    let o = router.complete("backend", "hi", None, None).await;
    assert_eq!(o.result.as_ref().unwrap().text, "from openai");
    assert_eq!(o.provider, "openai");
    assert_eq!(o.model, "gpt-4.1-mini");
    assert_eq!(
        o.notes,
        vec!["anthropic: rate-limit (429), falling back to openai".to_string()]
    );
    assert_eq!(first.requests().len(), 1);
    assert_eq!(second.requests().len(), 1);
    assert_no_key(&o);
}

#[tokio::test]
async fn server_errors_fall_through_the_whole_chain() {
    let first = fake(|_| Reply::json(529, Wire::Anthropic.error(529, "Overloaded"))).await;
    let second = fake(|_| Reply::json(500, Wire::OpenAi.error(500, "boom"))).await;
    let router = router_with(CHAIN, &two_provider_env(&first, &second));
    let o = router.complete("backend", "the prompt", None, None).await;
    assert_eq!(o.provider, "echo");
    assert!(o.result.unwrap().text.contains("the prompt"));
    assert_eq!(
        o.notes,
        vec![
            "anthropic: overloaded (529), falling back to openai".to_string(),
            "openai: server-error (500), falling back to echo".to_string(),
        ]
    );
}

#[tokio::test]
async fn invalid_request_and_auth_do_not_fall_back() {
    for (status, class) in [(400, ErrorClass::InvalidRequest), (401, ErrorClass::Auth)] {
        let first = fake(move |_| Reply::json(status, Wire::Anthropic.error(status, "bad"))).await;
        let second = fake(|_| Reply::json(200, Wire::OpenAi.success("never", 1, 1))).await;
        let router = router_with(CHAIN, &two_provider_env(&first, &second));
        let o = router.complete("backend", "hi", None, None).await;
        assert_eq!(err(&o).class, class);
        assert_eq!(o.provider, "anthropic");
        assert!(o.notes.is_empty());
        assert_eq!(second.requests().len(), 0, "no fallback on {status}");
    }
}

#[tokio::test]
async fn missing_key_is_unavailable_and_falls_back() {
    let second = fake(|_| Reply::json(200, Wire::OpenAi.success("from openai", 1, 1))).await;
    let env = env_of(&[
        ("OPENAI_API_KEY", "sk-openai-second-key-1234"),
        ("OPENAI_BASE_URL", &format!("{}/v1", second.url)),
    ]);
    let router = router_with(CHAIN, &env);
    let o = router.complete("backend", "hi", None, None).await;
    assert_eq!(o.provider, "openai");
    assert_eq!(
        o.notes,
        vec!["anthropic: unavailable, falling back to openai".to_string()]
    );
    // Without a fallback the step fails as unavailable, saying which variable to set.
    let router = router_with("[agents.backend]\nprovider = \"anthropic\"\n", &env);
    let o = router.complete("backend", "hi", None, None).await;
    let e = err(&o);
    assert_eq!(e.class, ErrorClass::Unavailable);
    assert!(e.message.contains("ANTHROPIC_API_KEY"), "{}", e.message);
}

#[tokio::test]
async fn openai_compatible_server_without_a_key() {
    let server = fake(|seen| {
        let mut body = Wire::OpenAi.success("local answer", 7, 3);
        body["model"] = seen.body["model"].clone();
        Reply::json(200, body)
    })
    .await;
    let config = format!(
        r#"
[providers.ollama]
kind = "openai"
base_url = "{}/v1"
model = "llama3.1"

[agents.writer]
provider = "ollama"
"#,
        server.url
    );
    // The OpenAI key must not travel to another server.
    let env = env_of(&[("OPENAI_API_KEY", KEY)]);
    let router = router_with(&config, &env);
    let o = router
        .complete("writer", "Write a haiku.", None, None)
        .await;
    let c = o.result.as_ref().unwrap();
    assert_eq!(c.text, "local answer");
    assert_eq!(
        (o.provider.as_str(), o.model.as_str()),
        ("ollama", "llama3.1")
    );
    assert_eq!(o.cost_usd, None, "no price for a local model");
    let seen = server.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.body["model"], "llama3.1");
    assert!(seen.body["max_tokens"].is_number());
    // The built-in openai provider at a local address needs no key either.
    let env = env_of(&[("OPENAI_BASE_URL", &format!("{}/v1", server.url))]);
    let router = router_with("[providers.openai]\nmodel = \"qwen2.5\"\n", &env);
    assert_eq!(router.default_provider(), "openai");
    let o = router.complete("backend", "hi", None, None).await;
    assert!(o.result.is_ok());
    assert_eq!(server.last().header("authorization"), None);
    // A named key variable is sent as a bearer token.
    let config = format!(
        "[providers.vllm]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"VLLM_KEY\"\nmodel = \"m\"\n[agents.data]\nprovider = \"vllm\"\n",
        server.url
    );
    let router = router_with(&config, &env_of(&[("VLLM_KEY", KEY)]));
    assert!(
        router
            .complete("data", "hi", None, None)
            .await
            .result
            .is_ok()
    );
    assert_eq!(
        server.last().header("authorization").map(str::to_string),
        Some(format!("Bearer {KEY}"))
    );
    assert_eq!(router.secrets(), vec![KEY.to_string()]);
    // ... and without it set, the provider is unavailable.
    let router = router_with(&config, &HashMap::new());
    let e = router
        .complete("data", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Unavailable);
    assert!(e.message.contains("VLLM_KEY"), "{}", e.message);
}

#[test]
fn default_provider_follows_the_keys() {
    let r = |pairs: &[(&str, &str)]| router_with("", &env_of(pairs)).default_provider();
    assert_eq!(r(&[]), "echo");
    assert_eq!(r(&[("OPENAI_API_KEY", "sk-1234")]), "openai");
    assert_eq!(
        r(&[("OPENAI_API_KEY", "sk-1234"), ("GEMINI_API_KEY", "g-1234")]),
        "gemini"
    );
    assert_eq!(
        r(&[
            ("OPENAI_API_KEY", "sk-1234"),
            ("GEMINI_API_KEY", "g-1234"),
            ("ANTHROPIC_API_KEY", "a-1234")
        ]),
        "anthropic"
    );
    assert_eq!(
        r(&[("ANTHROPIC_API_KEY", "  ")]),
        "echo",
        "a blank key is no key"
    );
    let router = router_with("[defaults]\nprovider = \"openai\"\n", &HashMap::new());
    assert_eq!(router.default_provider(), "openai");
    // An agent that is not configured uses the defaults.
    assert_eq!(
        router_with("", &HashMap::new()).route("no-such-agent"),
        vec![RouteEntry {
            provider: "echo".into(),
            model: "echo".into()
        }]
    );
}

// ---------------------------------------------------------------- echo

#[tokio::test]
async fn echo_answers_with_the_prompt() {
    let router = router_with("", &HashMap::new());
    let o = router
        .complete("anyone", "Summarize {{x}} please.", None, None)
        .await;
    let c = o.result.as_ref().unwrap();
    assert_eq!(
        c.text,
        "[echo: offline provider, no model was called]\nSummarize {{x}} please."
    );
    assert_eq!((c.tokens_in, c.tokens_out), (0, 0));
    assert_eq!(
        (o.provider.as_str(), o.model.as_str(), o.cost_usd),
        ("echo", "echo", Some(0.0))
    );
    // Deterministic.
    let again = router
        .complete("anyone", "Summarize {{x}} please.", None, None)
        .await;
    assert_eq!(again.result.unwrap().text, c.text);
}

#[tokio::test]
async fn echo_synthesizes_json_for_an_output_schema() {
    let schema = json!({
        "type": "object",
        "required": ["summary", "severity", "score", "findings"],
        "properties": {
            "summary": {"type": "string", "minLength": 3},
            "severity": {"enum": ["low", "medium", "high"]},
            "score": {"type": "integer", "minimum": 1, "maximum": 10},
            "findings": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["file"], "properties": {"file": {"type": "string"}}}}
        }
    });
    let router = router_with("", &HashMap::new());
    let o = router
        .complete("security", "Audit.", Some(Arc::new(schema.clone())), None)
        .await;
    let text = o.result.unwrap().text;
    let value: Value = serde_json::from_str(&text).expect("JSON");
    let compiled = CompiledSchema::compile(&schema).unwrap();
    assert!(compiled.is_valid(&value), "{value}");
    assert_eq!(value["summary"], "[echo] offline placeholder");
    // A pattern the placeholder breaks: a simpler string is tried.
    let slug = json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "string", "pattern": "^[a-z0-9-]+$"}}});
    let o = router
        .complete("security", "Audit.", Some(Arc::new(slug)), None)
        .await;
    let value: Value = serde_json::from_str(&o.result.unwrap().text).unwrap();
    assert_eq!(value, json!({"id": "echo"}));
    // A schema no example can satisfy: the text form (the engine reports output-invalid).
    let hard = json!({"type": "string", "pattern": "^[0-9]{4}-[A-Z]{2}$"});
    let o = router
        .complete("security", "Audit.", Some(Arc::new(hard)), None)
        .await;
    assert!(
        o.result
            .unwrap()
            .text
            .starts_with("[echo: offline provider")
    );
}

#[tokio::test]
async fn echo_latency_is_honoured_and_bounded_by_the_budget() {
    let router = router_with("[providers.echo]\nlatency_ms = 200\n", &HashMap::new());
    let t = Instant::now();
    let o = router.complete("backend", "hi", None, None).await;
    assert!(o.result.is_ok());
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert!(o.latency_ms >= 200);
    let t = Instant::now();
    let o = router.complete("backend", "hi", None, Some(50)).await;
    assert_eq!(err(&o).class, ErrorClass::Timeout);
    assert!(
        t.elapsed() < Duration::from_millis(190),
        "{:?}",
        t.elapsed()
    );
    // A spent budget calls nothing.
    let o = router.complete("backend", "hi", None, Some(0)).await;
    assert_eq!(err(&o).class, ErrorClass::Timeout);
}

#[tokio::test]
async fn echo_streams_across_its_latency() {
    let router = router_with("[providers.echo]\nlatency_ms = 200\n", &HashMap::new());
    let (sink, pieces) = collector();
    let t = Instant::now();
    let o = router
        .complete_streaming("backend", "one two three four five", None, None, Some(sink))
        .await;
    let elapsed = t.elapsed();
    let text = o.result.unwrap().text;
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_millis(600),
        "{elapsed:?}"
    );
    let got = pieces.lock().unwrap().clone();
    assert!(got.len() > 3, "{got:?}");
    let mut joined = String::new();
    for (offset, piece) in &got {
        assert_eq!(*offset, joined.chars().count());
        joined.push_str(piece);
    }
    assert_eq!(joined, text);
    // Without latency: one piece, at once.
    let router = router_with("", &HashMap::new());
    let (sink, pieces) = collector();
    router
        .complete_streaming("backend", "hi", None, None, Some(sink))
        .await;
    assert_eq!(pieces.lock().unwrap().len(), 1);
}

// ---------------------------------------------------------------- the agents file

const FULL_TOML: &str = r#"
[defaults]
provider = "auto"
temperature = 0.3
max_tokens = 2000
timeout_ms = 60000

[providers.ollama]
kind = "openai"
base_url = "http://localhost:11434/v1"
model = "llama3.1"

[providers.anthropic]
model = "claude-haiku-4-5"
timeout_ms = 30000

[agents.backend]
provider = "anthropic"
model = "claude-sonnet-4-6"
fallback = ["ollama", "echo"]

[agents.poet]
provider = "ollama"
system = "You write short poems."
temperature = 0.9
max_tokens = 300

[prices."llama3.1"]
input = 0.0
output = 0.0
"#;

const FULL_YAML: &str = r#"
defaults:
  provider: auto
  temperature: 0.3
  max_tokens: 2000
  timeout_ms: 60000
providers:
  ollama:
    kind: openai
    base_url: http://localhost:11434/v1
    model: llama3.1
  anthropic:
    model: claude-haiku-4-5
    timeout_ms: 30000
agents:
  backend:
    provider: anthropic
    model: claude-sonnet-4-6
    fallback: [ollama, echo]
  poet:
    provider: ollama
    system: You write short poems.
    temperature: 0.9
    max_tokens: 300
prices:
  "llama3.1":
    input: 0.0
    output: 0.0
"#;

#[test]
fn toml_and_yaml_files_load_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let toml_path = dir.path().join("agents.toml");
    let yaml_path = dir.path().join("agents.yaml");
    std::fs::write(&toml_path, FULL_TOML).unwrap();
    std::fs::write(&yaml_path, FULL_YAML).unwrap();
    let a = AgentsConfig::load(Some(&toml_path)).unwrap();
    let b = AgentsConfig::load(Some(&yaml_path)).unwrap();
    assert_eq!(a.source.as_deref(), Some(toml_path.as_path()));
    assert_eq!(
        AgentsConfig {
            source: None,
            ..a.clone()
        },
        AgentsConfig { source: None, ..b }
    );
    // Laid over the built-ins, field by field.
    let backend = &a.agents["backend"];
    assert_eq!(backend.model.as_deref(), Some("claude-sonnet-4-6"));
    assert!(
        backend
            .system
            .as_deref()
            .unwrap()
            .contains("backend engineer"),
        "built-in prompt kept"
    );
    assert_eq!(
        a.providers["anthropic"].model.as_deref(),
        Some("claude-haiku-4-5")
    );
    assert!(a.providers.contains_key("gemini"));
    assert_eq!(a.defaults.max_tokens, Some(2000));
    // Every seed agent and the extra roles have a built-in prompt.
    for agent in [
        "backend",
        "security",
        "quality",
        "product",
        "frontend",
        "devops",
        "data",
        "writer",
        "researcher",
    ] {
        let c = &a.agents[agent];
        assert!(
            c.system.as_deref().is_some_and(|s| s.len() > 100),
            "{agent}"
        );
        assert!(c.temperature.is_some() && c.max_tokens.is_some(), "{agent}");
    }
    let router = Router::new(a, &|_| None).unwrap();
    assert_eq!(
        router.route("backend"),
        vec![
            RouteEntry {
                provider: "anthropic".into(),
                model: "claude-sonnet-4-6".into()
            },
            RouteEntry {
                provider: "ollama".into(),
                model: "llama3.1".into()
            },
            RouteEntry {
                provider: "echo".into(),
                model: "echo".into()
            },
        ]
    );
    assert_eq!(router.route("poet")[0].model, "llama3.1");
    // A missing file is an error naming it; an unknown extension too.
    let e = AgentsConfig::load(Some(&dir.path().join("nope.toml")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.toml"), "{e}");
    let e = AgentsConfig::load(Some(&dir.path().join("agents.ini")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("*.toml or *.yaml"), "{e}");
}

#[test]
fn unknown_fields_are_errors_with_a_suggestion() {
    let text = "[agents.backend]\nprovider = \"anthropic\"\ntemprature = 0.5\n";
    let e = AgentsConfig::parse(text, FileFormat::Toml, "my-agents.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("my-agents.toml:3"), "{e}");
    assert!(
        e.contains("unknown field `temprature` in [agents.backend]"),
        "{e}"
    );
    assert!(e.contains("did you mean `temperature`?"), "{e}");
    let yaml = "providers:\n  local:\n    kind: openai\n    baseurl: http://x\n";
    let e = AgentsConfig::parse(yaml, FileFormat::Yaml, "a.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a.yaml:4") && e.contains("did you mean `base_url`?"),
        "{e}"
    );
    let e = AgentsConfig::parse("[agnets.x]\nmodel = \"m\"\n", FileFormat::Toml, "f.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("f.toml:1") && e.contains("did you mean `agents`?"),
        "{e}"
    );
    let e = AgentsConfig::parse(
        "[providers.openai]\napi_key = \"sk-live\"\n",
        FileFormat::Toml,
        "f.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("api_key_env") && !e.contains("sk-live"), "{e}");
    let e = AgentsConfig::parse(
        "[providers.x]\nkind = \"opneai\"\n",
        FileFormat::Toml,
        "f.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("did you mean `openai`?"), "{e}");
    let e = AgentsConfig::parse(
        "[agents.x]\ntemperature = \"hot\"\n",
        FileFormat::Toml,
        "f.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("f.toml:2") && e.contains("`temperature`"), "{e}");
    // Lines are found inside the right table, not at the first `model`.
    let text = "[agents.a]\nmodel = \"x\"\n\n[agents.b]\nmodel = 5\n";
    let e = AgentsConfig::parse(text, FileFormat::Toml, "f.toml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("f.toml:5: [agents.b] `model`"), "{e}");
    let yaml = "agents:\n  a:\n    model: x\n  b:\n    modle: y\n";
    let e = AgentsConfig::parse(yaml, FileFormat::Yaml, "f.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("f.yaml:5: unknown field `modle` in [agents.b]"),
        "{e}"
    );
    let e = AgentsConfig::parse("[defaults\n", FileFormat::Toml, "f.toml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("f.toml:1:"), "{e}");
}

#[test]
fn unknown_providers_are_errors() {
    let text = "[agents.backend]\nprovider = \"anthropic\"\nfallback = [\"opnai\"]\n";
    let e = AgentsConfig::parse(text, FileFormat::Toml, "f.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[agents.backend] fallback names the unknown provider `opnai`"),
        "{e}"
    );
    assert!(e.contains("did you mean `openai`?"), "{e}");
    let e = AgentsConfig::parse(
        "[agents.x]\nprovider = \"olama\"\n",
        FileFormat::Toml,
        "f.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`olama`"), "{e}");
    let e = AgentsConfig::parse(
        "[defaults]\nprovider = \"nobody\"\n",
        FileFormat::Toml,
        "f.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("[defaults] provider"), "{e}");
    let e = AgentsConfig::parse(
        "[providers.local]\nmodel = \"m\"\n",
        FileFormat::Toml,
        "f.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("[providers.local] has no `kind`"), "{e}");
    let e = AgentsConfig::parse(
        "[agents.x]\ntemperature = 3.0\n",
        FileFormat::Toml,
        "f.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("between 0 and 2"), "{e}");
}

#[tokio::test]
async fn prices_give_the_cost() {
    let server = fake(|_| Reply::json(200, Wire::Anthropic.success("ok", 2_000, 500))).await;
    let config = "[prices.\"claude-sonnet-4-6\"]\ninput = 4.0\noutput = 20.0\n";
    let o = router_for(Wire::Anthropic, &server.url, config)
        .complete("backend", "hi", None, None)
        .await;
    let cost = o.cost_usd.unwrap();
    assert!(
        (cost - (2_000.0 * 4.0 + 500.0 * 20.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
}

// ---------------------------------------------------------------- keys never leak

#[tokio::test]
async fn keys_never_leak() {
    // Both servers echo the key they received back in their error bodies.
    let first = fake(|seen| {
        let key = seen.header("x-api-key").unwrap_or("").to_string();
        Reply::json(
            429,
            Wire::Anthropic.error(429, &format!("key {key} is over its limit")),
        )
    })
    .await;
    let second = fake(|seen| {
        let auth = seen.header("authorization").unwrap_or("").to_string();
        Reply::json(
            401,
            Wire::OpenAi.error(401, &format!("Incorrect API key provided: {auth}")),
        )
    })
    .await;
    let env = env_of(&[
        ("ANTHROPIC_API_KEY", KEY),
        ("ANTHROPIC_BASE_URL", &first.url),
        ("OPENAI_API_KEY", KEY),
        ("OPENAI_BASE_URL", &format!("{}/v1", second.url)),
    ]);
    let config = AgentsConfig::parse(CHAIN, FileFormat::Toml, "f.toml").unwrap();
    let router = Router::new(config.clone(), &|k| env.get(k).cloned()).unwrap();
    let o = router.complete("backend", "hi", None, None).await;
    assert_eq!(
        first.last().header("x-api-key"),
        Some(KEY),
        "the key was sent"
    );
    let e = err(&o);
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(e.message.contains("[redacted]"), "{}", e.message);
    assert_no_key(&o);
    for note in &o.notes {
        assert!(!note.contains(KEY));
    }
    assert!(!format!("{router:?}").contains(KEY));
    assert!(!format!("{config:?}").contains(KEY));
    assert_eq!(router.secrets(), vec![KEY.to_string()]);
    assert!(
        !serde_json::to_string(&router.status())
            .unwrap()
            .contains(KEY)
    );
    // A model that repeats the key in its answer does not hand it out either.
    let server = fake(|seen| {
        let key = seen.header("x-goog-api-key").unwrap_or("").to_string();
        Reply::json(
            200,
            Wire::Gemini.success(&format!("your key is {key}"), 1, 1),
        )
    })
    .await;
    let o = router_for(Wire::Gemini, &server.url, "")
        .complete("backend", "hi", None, None)
        .await;
    assert_eq!(o.result.as_ref().unwrap().text, "your key is [redacted]");
    // A timeout and a network failure carry no key either.
    let url = resetting_server().await;
    assert_no_key(
        &router_for(Wire::OpenAi, &url, "")
            .complete("backend", "hi", None, None)
            .await,
    );
    assert_eq!(
        providers::scrub(&format!("a {KEY} b {KEY}"), &[KEY.to_string()]),
        "a [redacted] b [redacted]"
    );
    // Base URLs with credentials are shown without them.
    let config = AgentsConfig::parse(
        "[providers.p]\nkind = \"openai\"\nbase_url = \"https://user:hunter2@example.invalid/v1?token=abc\"\n",
        FileFormat::Toml,
        "f.toml",
    )
    .unwrap();
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("abc"),
        "{shown}"
    );
}

// ---------------------------------------------------------------- streaming details

#[tokio::test]
async fn an_error_event_mid_stream_is_classed_by_its_type() {
    let server = fake(|_| {
        let mut events = Wire::Anthropic.stream(&["partial "], 3, 1, "end_turn");
        events.truncate(4);
        events.push("event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n".into());
        Reply::sse(events)
    })
    .await;
    let e = router_for(Wire::Anthropic, &server.url, "")
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Overloaded, "{}", e.message);
    assert!(
        e.message.contains("overloaded_error: Overloaded"),
        "{}",
        e.message
    );
    let server = fake(|_| {
        Reply::sse(vec![
            "data: {\"error\": {\"message\": \"The server had an error while processing your request.\", \"type\": \"server_error\"}}\n\n".into(),
        ])
    })
    .await;
    let e = router_for(Wire::OpenAi, &server.url, "")
        .complete("backend", "hi", None, None)
        .await
        .result
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::ServerError, "{}", e.message);
}

#[tokio::test]
async fn a_server_that_refuses_stream_is_asked_again_without_it_and_remembered() {
    // llama.cpp-style: 400 naming the field.
    let server = fake(|seen| {
        if seen.body.get("stream").is_some() {
            Reply::json(
                400,
                json!({"error": {"code": 400, "message": "'stream' is not supported by this server", "type": "invalid_request_error"}}),
            )
        } else {
            Reply::json(200, Wire::OpenAi.success("whole", 2, 1))
        }
    })
    .await;
    let router = router_for(Wire::OpenAi, &server.url, "");
    let o = router.complete("backend", "hi", None, None).await;
    assert_eq!(o.result.unwrap().text, "whole");
    assert_eq!(server.requests().len(), 2);
    assert!(server.last().body.get("stream").is_none());
    assert!(
        router
            .complete("backend", "hi", None, None)
            .await
            .result
            .is_ok()
    );
    assert_eq!(server.requests().len(), 3, "learned: one request");
    // One that streams but does not know stream_options.
    let server = fake(|seen| {
        if seen.body.get("stream_options").is_some() {
            Reply::json(
                400,
                json!({"error": {"message": "Unrecognized request argument supplied: stream_options", "type": "invalid_request_error", "param": null, "code": null}}),
            )
        } else {
            Wire::OpenAi.answer(seen, "streamed anyway", 2, 2)
        }
    })
    .await;
    let router = router_for(Wire::OpenAi, &server.url, "");
    let (sink, pieces) = collector();
    let o = router
        .complete_streaming("backend", "hi", None, None, Some(sink))
        .await;
    assert_eq!(o.result.unwrap().text, "streamed anyway");
    let last = server.last();
    assert_eq!(
        (last.body["stream"].clone(), last.body.get("stream_options")),
        (json!(true), None)
    );
    assert_eq!(pieces.lock().unwrap().len(), 2);
    // One that ignores `stream` and answers whole: read whole, and not asked again.
    let server = fake(|_| Reply::json(200, Wire::OpenAi.success("whole", 2, 1))).await;
    let router = router_for(Wire::OpenAi, &server.url, "");
    assert!(
        router
            .complete("backend", "hi", None, None)
            .await
            .result
            .is_ok()
    );
    assert_eq!(server.last().body["stream"], true);
    assert!(
        router
            .complete("backend", "hi", None, None)
            .await
            .result
            .is_ok()
    );
    assert!(server.last().body.get("stream").is_none());
    // A Gemini proxy without the streaming endpoint.
    let server = fake(|seen| {
        if seen.path.ends_with(":streamGenerateContent") {
            Reply::raw(404, "404 page not found")
        } else {
            Reply::json(200, Wire::Gemini.success("from generateContent", 1, 1))
        }
    })
    .await;
    let o = router_for(Wire::Gemini, &server.url, "")
        .complete("backend", "hi", None, None)
        .await;
    assert_eq!(o.result.unwrap().text, "from generateContent");
    // A stream without its content type (a buffering proxy) is still read.
    let server = fake(|seen| {
        let mut r = Wire::OpenAi.answer(seen, "sniffed", 1, 1);
        r.headers = vec![("content-type", "text/plain".into())];
        r
    })
    .await;
    let o = router_for(Wire::OpenAi, &server.url, "")
        .complete("backend", "hi", None, None)
        .await;
    assert_eq!(o.result.unwrap().text, "sniffed");
}

#[tokio::test]
async fn streamed_text_never_carries_a_key() {
    let server = fake(|seen| {
        let key = seen.header("x-api-key").unwrap_or("").to_string();
        Wire::Anthropic.answer(seen, &format!("the key is {key} ok"), 1, 1)
    })
    .await;
    let (sink, pieces) = collector();
    let o = router_for(Wire::Anthropic, &server.url, "")
        .complete_streaming("backend", "hi", None, None, Some(sink))
        .await;
    assert_eq!(o.result.unwrap().text, "the key is [redacted] ok");
    let relayed: String = pieces
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| t.as_str())
        .collect();
    assert!(!relayed.contains(KEY), "{relayed}");
}

// ---------------------------------------------------------------- structured output

fn strict_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["severity", "summary"],
        "properties": {"severity": {"enum": ["low", "high"]}, "summary": {"type": "string"}}})
}

fn loose_schema() -> Value {
    json!({"type": "object", "required": ["severity"],
        "properties": {"severity": {"enum": ["low", "high"]}, "score": {"type": "integer", "minimum": 1, "maximum": 10}}})
}

#[tokio::test]
async fn openai_gets_response_format_strict_where_the_schema_allows() {
    let server =
        fake(|seen| Wire::OpenAi.answer(seen, r#"{"severity": "low", "summary": "ok"}"#, 1, 1))
            .await;
    let router = router_for(Wire::OpenAi, &server.url, "");
    let o = router
        .complete("security", "Audit.", Some(Arc::new(strict_schema())), None)
        .await;
    assert!(o.result.is_ok());
    let b = server.last().body;
    assert_eq!(b["response_format"]["type"], "json_schema");
    assert_eq!(b["response_format"]["json_schema"]["name"], "output");
    assert_eq!(b["response_format"]["json_schema"]["strict"], true);
    assert_eq!(
        b["response_format"]["json_schema"]["schema"],
        strict_schema()
    );
    assert!(
        !b["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("JSON Schema"),
        "strict mode needs no description in the prompt"
    );
    // A schema outside strict mode's rules: non-strict, and described too.
    router
        .complete("security", "Audit.", Some(Arc::new(loose_schema())), None)
        .await;
    let b = server.last().body;
    assert_eq!(b["response_format"]["json_schema"]["strict"], false);
    assert!(
        b["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("JSON Schema")
    );
}

#[tokio::test]
async fn a_server_that_refuses_response_format_gets_the_schema_in_the_prompt() {
    let server = fake(|seen| {
        if seen.body.get("response_format").is_some() {
            Reply::json(
                400,
                json!({"error": {"message": "response_format json_schema is not supported", "type": "BadRequestError", "param": null, "code": 400}}),
            )
        } else {
            Wire::OpenAi.answer(seen, r#"{"severity": "high"}"#, 1, 1)
        }
    })
    .await;
    let router = router_for(Wire::OpenAi, &server.url, "");
    let o = router
        .complete("security", "Audit.", Some(Arc::new(strict_schema())), None)
        .await;
    assert_eq!(o.result.unwrap().text, r#"{"severity": "high"}"#);
    assert_eq!(server.requests().len(), 2);
    let b = server.last().body;
    assert!(b.get("response_format").is_none());
    assert!(
        b["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("\"severity\"")
    );
    router
        .complete("security", "Audit.", Some(Arc::new(strict_schema())), None)
        .await;
    assert_eq!(server.requests().len(), 3, "remembered for the model");
}

#[tokio::test]
async fn anthropic_uses_output_config_then_a_forced_tool_then_the_prompt() {
    let answer = r#"{"severity":"low"}"#;
    let server = fake(move |seen| Wire::Anthropic.answer(seen, answer, 1, 1)).await;
    let router = router_for(Wire::Anthropic, &server.url, "");
    let o = router
        .complete("security", "Audit.", Some(Arc::new(loose_schema())), None)
        .await;
    assert_eq!(o.result.unwrap().text, answer);
    let b = server.last().body;
    let format = &b["output_config"]["format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(
        format["schema"]["additionalProperties"], false,
        "objects are closed"
    );
    assert!(
        format["schema"]["properties"]["score"]
            .get("minimum")
            .is_none()
    );
    assert!(
        format["schema"]["properties"]["score"]["description"]
            .as_str()
            .unwrap()
            .contains("minimum: 1"),
        "unsupported constraints move to the description"
    );
    assert!(!b["system"].as_str().unwrap().contains("JSON Schema"));
    // A model without structured outputs: a forced tool call, answered whole and streamed.
    let tool_answer = |seen: &Seen, input: Value| {
        if Wire::Anthropic.wants_stream(seen) {
            let named = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
            let json = input.to_string();
            let (a, b) = json.split_at(json.len() / 2);
            Reply::sse(vec![
                named(
                    "message_start",
                    json!({"type": "message_start", "message": {"model": "claude-3-5-haiku", "usage": {"input_tokens": 9, "output_tokens": 1}}}),
                ),
                named(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "ax_output", "input": {}}}),
                ),
                named(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": a}}),
                ),
                named(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": b}}),
                ),
                named(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ),
                named(
                    "message_delta",
                    json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}}),
                ),
                named("message_stop", json!({"type": "message_stop"})),
            ])
        } else {
            Reply::json(
                200,
                json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "ax_output", "input": input}],
                "stop_reason": "tool_use", "usage": {"input_tokens": 9, "output_tokens": 12}}),
            )
        }
    };
    for config in ["", "[defaults]\nstream = false\n"] {
        let server = fake(move |seen| {
            if seen.body.get("output_config").is_some() {
                Reply::json(
                    400,
                    Wire::Anthropic.error(
                        400,
                        "output_config.format: structured outputs are not supported for this model",
                    ),
                )
            } else if seen.body.get("tools").is_some() {
                tool_answer(seen, json!({"severity": "high"}))
            } else {
                Reply::json(500, json!({}))
            }
        })
        .await;
        let router = router_for(Wire::Anthropic, &server.url, config);
        let o = router
            .complete("security", "Audit.", Some(Arc::new(loose_schema())), None)
            .await;
        let c = o.result.unwrap();
        let v: Value = serde_json::from_str(&c.text).unwrap();
        assert_eq!(v, json!({"severity": "high"}), "{config}");
        assert_eq!((c.tokens_in, c.tokens_out), (9, 12));
        let b = server.last().body;
        assert_eq!(
            b["tool_choice"],
            json!({"type": "tool", "name": "ax_output"})
        );
        assert_eq!(b["tools"][0]["input_schema"], loose_schema());
        assert_eq!(server.requests().len(), 2);
    }
    // A server with neither: the prompt.
    let server = fake(|seen| {
        if seen.body.get("output_config").is_some() || seen.body.get("tools").is_some() {
            Reply::json(
                400,
                Wire::Anthropic.error(400, "Extra inputs are not permitted: output_config, tools"),
            )
        } else {
            Wire::Anthropic.answer(seen, r#"{"severity":"low"}"#, 1, 1)
        }
    })
    .await;
    let router = router_for(Wire::Anthropic, &server.url, "");
    assert!(
        router
            .complete("security", "Audit.", Some(Arc::new(loose_schema())), None)
            .await
            .result
            .is_ok()
    );
    let b = server.last().body;
    assert!(b["system"].as_str().unwrap().contains("JSON Schema"));
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn gemini_gets_a_response_json_schema_or_the_prompt() {
    let server = fake(|seen| {
        if seen.body["generationConfig"].get("responseJsonSchema").is_some() && seen.body["contents"][0]["parts"][0]["text"] == "refuse" {
            Reply::json(400, json!({"error": {"code": 400, "message": "Invalid JSON payload received. Unknown name \"responseJsonSchema\" at 'generation_config': Cannot find field.", "status": "INVALID_ARGUMENT"}}))
        } else {
            Wire::Gemini.answer(seen, r#"{"severity": "low"}"#, 1, 1)
        }
    })
    .await;
    let router = router_for(Wire::Gemini, &server.url, "");
    let mut schema = loose_schema();
    schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    let o = router
        .complete("security", "Audit.", Some(Arc::new(schema)), None)
        .await;
    assert!(o.result.is_ok());
    let config = server.last().body["generationConfig"].clone();
    assert_eq!(config["responseMimeType"], "application/json");
    assert_eq!(config["responseJsonSchema"], loose_schema());
    assert!(
        server
            .last()
            .body
            .get("systemInstruction")
            .is_none_or(|s| !s.to_string().contains("JSON Schema"))
    );
    let o = router
        .complete("security", "refuse", Some(Arc::new(loose_schema())), None)
        .await;
    assert!(o.result.is_ok());
    let b = server.last().body;
    assert!(b["generationConfig"].get("responseJsonSchema").is_none());
    assert_eq!(
        b["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert!(
        b["systemInstruction"]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .contains("JSON Schema")
    );
}

// ---------------------------------------------------------------- retry settings

#[test]
fn retry_and_limit_settings_in_the_agents_file() {
    let text = r#"
[defaults]
max_retries = 4
max_retry_after_ms = 120000
max_response_bytes = 1048576

[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
max_retries = 0
initial_retry_delay_ms = 100
max_retry_delay_ms = 1000
stream = false

[agents.writer]
provider = "local"
"#;
    let config = AgentsConfig::parse(text, FileFormat::Toml, "f.toml").unwrap();
    let yaml = "defaults:\n  max_retries: 4\n  max_retry_after_ms: 120000\n  max_response_bytes: 1048576\nproviders:\n  local:\n    kind: openai\n    base_url: http://127.0.0.1:9/v1\n    max_retries: 0\n    initial_retry_delay_ms: 100\n    max_retry_delay_ms: 1000\n    stream: false\nagents:\n  writer:\n    provider: local\n";
    assert_eq!(
        config,
        AgentsConfig::parse(yaml, FileFormat::Yaml, "f.yaml").unwrap()
    );
    let router = Router::new(config, &|_| None).unwrap();
    assert_eq!(
        router.retry_of("writer"),
        ax_core::ProviderRetry {
            max_retries: 0,
            initial_delay_ms: 100,
            max_delay_ms: 1000,
            max_retry_after_ms: 120_000
        }
    );
    assert_eq!(
        router.retry_of("backend"),
        ax_core::ProviderRetry {
            max_retries: 4,
            max_retry_after_ms: 120_000,
            ..ax_core::ProviderRetry::DEFAULT
        },
        "[defaults] applies to every provider"
    );
    for (bad, says) in [
        ("[defaults]\nmax_retry = 3\n", "did you mean `max_retries`?"),
        (
            "[providers.openai]\nmax_retries = 1000\n",
            "max_retries must be at most 100",
        ),
        (
            "[providers.openai]\ninitial_retry_delay_ms = 9000\nmax_retry_delay_ms = 10\n",
            "initial_retry_delay_ms (9000) must not be more than max_retry_delay_ms (10)",
        ),
        (
            "[defaults]\nmax_retry_delay_ms = 10\n[providers.gemini]\ninitial_retry_delay_ms = 500\n",
            "counting what [defaults] sets",
        ),
        (
            "[defaults]\nmax_response_bytes = 0\n",
            "max_response_bytes must be more than 0",
        ),
        ("[providers.openai]\nstream = \"yes\"\n", "`stream`"),
    ] {
        let e = AgentsConfig::parse(bad, FileFormat::Toml, "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[tokio::test]
async fn the_outcome_carries_the_failing_providers_retry_settings() {
    let first = fake(|_| Reply::json(529, Wire::Anthropic.error(529, "Overloaded"))).await;
    let second = fake(|_| Reply::json(503, Wire::OpenAi.error(503, "busy"))).await;
    let config = format!(
        "{CHAIN}\n[providers.openai]\nmax_retries = 7\n[agents.solo]\nprovider = \"anthropic\"\n"
    );
    let router = router_with(
        &config.replace("\"echo\"", ""),
        &two_provider_env(&first, &second),
    );
    let o = router.complete("backend", "hi", None, None).await;
    assert_eq!(o.provider, "openai");
    assert_eq!(o.retry.max_retries, 7, "the last provider tried decides");
    let o = router.complete("solo", "hi", None, None).await;
    assert_eq!(o.retry, ax_core::ProviderRetry::DEFAULT);
}
