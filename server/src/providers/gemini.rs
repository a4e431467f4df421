//! Google Gemini `generateContent`: `POST {base}/v1beta/models/{model}:generateContent`
//! with `x-goog-api-key`; the first candidate's text parts are the output,
//! `usageMetadata.promptTokenCount`/`candidatesTokenCount` (plus thinking tokens,
//! which are billed as output) the token counts.

use super::http::{self, Answer, Caller, ErrorBody};
use super::{Completion, CompletionRequest, Provider, ProviderError, ProviderFuture};
use ax_core::ErrorClass;
use serde_json::{Value, json};
use std::time::Instant;

pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

pub struct Gemini {
    name: String,
    base_url: String,
    key: Option<String>,
    client: reqwest::Client,
}

impl Gemini {
    /// `base_url` without `/v1beta`.
    pub fn new(name: &str, base_url: &str, key: Option<String>, client: reqwest::Client) -> Self {
        Gemini {
            name: name.to_string(),
            base_url: base_url.to_string(),
            key,
            client,
        }
    }

    async fn run(&self, req: &CompletionRequest) -> Result<Completion, ProviderError> {
        let deadline = Instant::now() + req.timeout;
        let caller = Caller {
            provider: &self.name,
            model: &req.model,
            key: self.key.as_deref(),
        };
        let model = req.model.strip_prefix("models/").unwrap_or(&req.model);
        let mut config = json!({"maxOutputTokens": req.max_tokens});
        if let Some(t) = req.temperature {
            config["temperature"] = json!(t);
        }
        if req.output_schema.is_some() {
            config["responseMimeType"] = json!("application/json");
        }
        let mut body = json!({
            "contents": [{"role": "user", "parts": [{"text": req.prompt}]}],
            "generationConfig": config,
        });
        if let Some(system) =
            http::system_prompt(req.system.as_deref(), req.output_schema.as_deref())
        {
            body["systemInstruction"] = json!({"parts": [{"text": system}]});
        }
        let url = http::join(
            &self.base_url,
            &format!("/v1beta/models/{model}:generateContent"),
        );
        let mut request = self.client.post(url).json(&body);
        if let Some(key) = self.key.as_deref().and_then(http::secret_header) {
            request = request.header("x-goog-api-key", key);
        }
        let answer = http::send(&caller, request, deadline, req.timeout).await?;
        if (200..300).contains(&answer.status) {
            return parse(&caller, &answer);
        }
        Err(http::status_error(
            &caller,
            &answer,
            &ErrorBody::parse(&answer.body),
        ))
    }
}

fn parse(caller: &Caller<'_>, answer: &Answer) -> Result<Completion, ProviderError> {
    let Some(v) = answer.json().filter(Value::is_object) else {
        return Err(caller.malformed("expected a JSON object with `candidates`", &answer.body));
    };
    if let Some(reason) = v
        .get("promptFeedback")
        .and_then(|f| f.get("blockReason"))
        .and_then(Value::as_str)
    {
        return Err(caller.error(
            ErrorClass::Other,
            Some(answer.status),
            &format!("the prompt was blocked (blockReason: {reason})"),
        ));
    }
    let Some(candidates) = v.get("candidates").and_then(Value::as_array) else {
        return Err(caller.malformed("expected a `candidates` list", &answer.body));
    };
    let first = candidates.first();
    let text: String = first
        .and_then(|c| c.get("content"))
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                // Thought summaries are not the answer.
                .filter(|p| p.get("thought").and_then(Value::as_bool) != Some(true))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if text.trim().is_empty() {
        let finish = first
            .and_then(|c| c.get("finishReason"))
            .and_then(Value::as_str)
            .unwrap_or("none");
        let what = match finish {
            "MAX_TOKENS" => "the answer has no text: the model reached maxOutputTokens before writing any; raise max_tokens".to_string(),
            "SAFETY" | "RECITATION" | "PROHIBITED_CONTENT" | "BLOCKLIST" | "SPII" => {
                format!("the answer was withheld (finishReason: {finish})")
            }
            other => format!("the answer has no text (finishReason: {other})"),
        };
        return Err(caller.error(ErrorClass::Other, Some(answer.status), &what));
    }
    let usage = v.get("usageMetadata");
    let count = |k: &str| {
        usage
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(Completion {
        text,
        model: v
            .get("modelVersion")
            .and_then(Value::as_str)
            .unwrap_or(caller.model)
            .to_string(),
        tokens_in: count("promptTokenCount"),
        tokens_out: count("candidatesTokenCount") + count("thoughtsTokenCount"),
    })
}

impl Provider for Gemini {
    fn kind(&self) -> &'static str {
        "gemini"
    }

    fn complete<'a>(&'a self, req: &'a CompletionRequest) -> ProviderFuture<'a> {
        Box::pin(self.run(req))
    }
}

impl std::fmt::Debug for Gemini {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemini")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}
