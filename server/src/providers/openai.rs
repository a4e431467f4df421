//! OpenAI Chat Completions: `POST {base}/chat/completions` with
//! `Authorization: Bearer`; `choices[0].message.content` is the output,
//! `usage.prompt_tokens`/`completion_tokens` the token counts. Only the fields every
//! OpenAI-compatible server understands are sent (`max_tokens`, not the newer
//! `max_completion_tokens`), so Ollama, vLLM, llama.cpp and LM Studio work too; a
//! model that insists on the newer field says so in a 400 and gets it on a second try.

use super::http::{self, Answer, Caller, ErrorBody, QuirkBook, Quirks};
use super::{Completion, CompletionRequest, Provider, ProviderError, ProviderFuture};
use ax_core::ErrorClass;
use serde_json::{Value, json};
use std::time::Instant;

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

pub struct OpenAi {
    name: String,
    base_url: String,
    key: Option<String>,
    client: reqwest::Client,
    quirks: QuirkBook,
}

impl OpenAi {
    /// `base_url` includes `/v1` (the SDKs' convention); without a key no
    /// `Authorization` header is sent (local servers need none).
    pub fn new(name: &str, base_url: &str, key: Option<String>, client: reqwest::Client) -> Self {
        OpenAi {
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
            if answer.status == 400 {
                let param = err.param.as_deref().unwrap_or("");
                let learned = if !quirks.max_completion_tokens
                    && (param == "max_tokens" || err.mentions("max_completion_tokens"))
                {
                    quirks.max_completion_tokens = true;
                    true
                } else if req.temperature.is_some()
                    && !quirks.no_temperature
                    && (param == "temperature" || err.mentions("temperature"))
                {
                    quirks.no_temperature = true;
                    true
                } else {
                    false
                };
                if learned {
                    self.quirks.set(&req.model, quirks);
                    tracing::info!(provider = %self.name, model = %req.model, ?quirks, "adapting the request to what the model accepts");
                    continue;
                }
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
        let mut messages = Vec::new();
        if let Some(system) =
            http::system_prompt(req.system.as_deref(), req.output_schema.as_deref())
        {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": req.prompt}));
        let mut body = json!({"model": req.model, "messages": messages});
        let limit_field = if quirks.max_completion_tokens {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        body[limit_field] = json!(req.max_tokens);
        if let (Some(t), false) = (req.temperature, quirks.no_temperature) {
            body["temperature"] = json!(t);
        }
        let mut request = self
            .client
            .post(http::join(&self.base_url, "/chat/completions"))
            .json(&body);
        if let Some(auth) = self
            .key
            .as_deref()
            .and_then(|k| http::secret_header(&format!("Bearer {k}")))
        {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        http::send(caller, request, deadline, req.timeout).await
    }
}

fn parse(caller: &Caller<'_>, answer: &Answer) -> Result<Completion, ProviderError> {
    let Some(v) = answer.json() else {
        return Err(caller.malformed("expected a JSON object with `choices`", &answer.body));
    };
    let Some(choice) = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    else {
        return Err(caller.malformed("expected a non-empty `choices` list", &answer.body));
    };
    let Some(message) = choice.get("message").filter(|m| m.is_object()) else {
        return Err(caller.malformed("expected `choices[0].message`", &answer.body));
    };
    // A string, or (some compatible servers) a list of `{type: "text", text}` parts.
    let text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    let finish = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("none");
    if text.trim().is_empty() {
        let what = if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
            format!(
                "the model refused to answer: {}",
                http::excerpt(refusal, 200)
            )
        } else if finish == "content_filter" {
            "the answer was withheld by the content filter (finish_reason: content_filter)"
                .to_string()
        } else if finish == "length" {
            "the answer has no text: the model reached max_tokens before writing any; raise max_tokens".to_string()
        } else {
            format!("the answer has no text (finish_reason: {finish})")
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
            .filter(|m| !m.is_empty())
            .unwrap_or(caller.model)
            .to_string(),
        tokens_in: count("prompt_tokens"),
        tokens_out: count("completion_tokens"),
    })
}

impl Provider for OpenAi {
    fn kind(&self) -> &'static str {
        "openai"
    }

    fn complete<'a>(&'a self, req: &'a CompletionRequest) -> ProviderFuture<'a> {
        Box::pin(self.run(req))
    }
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}
