//! Anthropic Messages API: `POST {base}/v1/messages` with `x-api-key` and
//! `anthropic-version: 2023-06-01`; the answer's `content` text blocks are the
//! output, `usage.input_tokens`/`output_tokens` the token counts.

use super::http::{self, Answer, Caller, ErrorBody, QuirkBook, Quirks};
use super::{Completion, CompletionRequest, Provider, ProviderError, ProviderFuture};
use ax_core::ErrorClass;
use serde_json::{Value, json};
use std::time::Instant;

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const API_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    name: String,
    base_url: String,
    key: Option<String>,
    client: reqwest::Client,
    quirks: QuirkBook,
}

impl Anthropic {
    /// `base_url` without `/v1` (the SDKs' convention); `key` may be absent for
    /// a proxy that adds its own.
    pub fn new(name: &str, base_url: &str, key: Option<String>, client: reqwest::Client) -> Self {
        Anthropic {
            name: name.to_string(),
            base_url: base_url.to_string(),
            key,
            client,
            quirks: QuirkBook::default(),
        }
    }

    async fn run(&self, req: &CompletionRequest) -> Result<Completion, ProviderError> {
        let deadline = Instant::now() + req.timeout;
        let caller = Caller {
            provider: &self.name,
            model: &req.model,
            key: self.key.as_deref(),
        };
        let mut quirks = self.quirks.get(&req.model);
        loop {
            let answer = self.post(&caller, req, quirks, deadline).await?;
            if (200..300).contains(&answer.status) {
                return parse(&caller, &answer);
            }
            let err = ErrorBody::parse(&answer.body);
            // Newer models refuse sampling parameters: learn it and ask again once.
            if answer.status == 400
                && req.temperature.is_some()
                && !quirks.no_temperature
                && err.mentions("temperature")
            {
                quirks.no_temperature = true;
                self.quirks.set(&req.model, quirks);
                tracing::info!(provider = %self.name, model = %req.model, "model rejects temperature; sending without it");
                continue;
            }
            return Err(http::status_error(&caller, &answer, &err));
        }
    }

    async fn post(
        &self,
        caller: &Caller<'_>,
        req: &CompletionRequest,
        quirks: Quirks,
        deadline: Instant,
    ) -> Result<Answer, ProviderError> {
        let mut body = json!({
            "model": req.model,
            "max_tokens": req.max_tokens,
            "messages": [{"role": "user", "content": req.prompt}],
        });
        if let Some(system) =
            http::system_prompt(req.system.as_deref(), req.output_schema.as_deref())
        {
            body["system"] = json!(system);
        }
        if let (Some(t), false) = (req.temperature, quirks.no_temperature) {
            body["temperature"] = json!(t);
        }
        let mut request = self
            .client
            .post(http::join(&self.base_url, "/v1/messages"))
            .header("anthropic-version", API_VERSION)
            .json(&body);
        if let Some(key) = self.key.as_deref().and_then(http::secret_header) {
            request = request.header("x-api-key", key);
        }
        http::send(caller, request, deadline, req.timeout).await
    }
}

fn parse(caller: &Caller<'_>, answer: &Answer) -> Result<Completion, ProviderError> {
    let Some(v) = answer.json() else {
        return Err(caller.malformed("expected a JSON object with `content`", &answer.body));
    };
    let Some(blocks) = v.get("content").and_then(Value::as_array) else {
        return Err(caller.malformed("expected a `content` list", &answer.body));
    };
    let text: String = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    let stop = v
        .get("stop_reason")
        .and_then(Value::as_str)
        .unwrap_or("none");
    if text.trim().is_empty() {
        let what = match stop {
            "refusal" => "the model refused to answer (stop_reason: refusal)".to_string(),
            "max_tokens" => {
                "the answer has no text: the model reached max_tokens before writing any; raise max_tokens".to_string()
            }
            other => format!("the answer has no text (stop_reason: {other})"),
        };
        return Err(caller.error(ErrorClass::Other, Some(answer.status), &what));
    }
    let usage = v.get("usage");
    let count = |k: &str| {
        usage
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(Completion {
        text,
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(caller.model)
            .to_string(),
        tokens_in: count("input_tokens"),
        tokens_out: count("output_tokens"),
    })
}

impl Provider for Anthropic {
    fn kind(&self) -> &'static str {
        "anthropic"
    }

    fn complete<'a>(&'a self, req: &'a CompletionRequest) -> ProviderFuture<'a> {
        Box::pin(self.run(req))
    }
}

impl std::fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anthropic")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}
