//! OpenAI Chat Completions: `POST {base}/chat/completions` with
//! `Authorization: Bearer` (only when a key is set); `choices[0].message.content`
//! is the output, `usage.prompt_tokens`/`completion_tokens` the token counts,
//! `finish_reason: length` a truncated answer.
//!
//! Only fields every OpenAI-compatible server understands are sent at first
//! (`max_tokens`, not `max_completion_tokens`), so Ollama, vLLM, llama.cpp and LM
//! Studio work too; what a server or model refuses (`max_tokens`, `temperature`,
//! `stream_options`, `stream`, `response_format`) it names in a 400, and the
//! request is sent again adapted, and stays adapted for that model.
//!
//! Streamed (`stream: true`, `stream_options.include_usage`): chunks whose
//! `choices[0].delta.content` is the new text, one with `finish_reason`, a last
//! one with `usage` and no choices, then `data: [DONE]`.
//!
//! Structured output: `response_format: {type: json_schema}`, strict when the
//! schema meets strict mode's rules.

use super::http::HttpProvider;
use super::schema;
use super::wire::{
    Call, Fault, Optional, Quirk, Reply, Stop, Wire, WireRequest, count, event_json, excerpt,
    system_prompt,
};
use super::{Endpoint, KindSpec, Provider};
use eventsource_stream::Event as SseEvent;
use serde_json::{Value, json};
use std::sync::Arc;

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

pub const KIND: KindSpec = KindSpec {
    name: "openai",
    key_env: Some("OPENAI_API_KEY"),
    base_url_env: Some("OPENAI_BASE_URL"),
    default_base_url: Some(DEFAULT_BASE_URL),
    offline: false,
    build,
};

fn build(e: Endpoint) -> Arc<dyn Provider> {
    Arc::new(HttpProvider::new("openai", OpenAi, e))
}

/// The Chat Completions wire format (base URL with `/v1`, as in the SDKs).
pub(crate) struct OpenAi;

impl Wire for OpenAi {
    fn request(&self, call: &Call<'_>) -> WireRequest {
        let req = call.req;
        let q = call.quirks;
        let mut optional = Vec::new();
        let schema = req.output_schema.as_deref();
        let native = schema
            .filter(|_| !q.has(Quirk::NoNativeSchema))
            .map(schema::without_meta);
        let strict = native.as_ref().is_some_and(schema::openai_strict_ok);
        // Strict mode guarantees the shape; otherwise the model is also told.
        let system = if strict {
            req.system.clone()
        } else {
            system_prompt(req.system.as_deref(), schema)
        };
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": req.prompt}));
        let mut body = json!({"model": req.model, "messages": messages});
        if q.has(Quirk::MaxCompletionTokens) {
            body["max_completion_tokens"] = json!(req.max_tokens);
        } else {
            body["max_tokens"] = json!(req.max_tokens);
            optional.push(Optional::new(
                Quirk::MaxCompletionTokens,
                &["max_completion_tokens"],
            ));
        }
        if let Some(schema) = native {
            body["response_format"] = json!({
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": strict},
            });
            optional.push(Optional::new(
                Quirk::NoNativeSchema,
                &["response_format", "json_schema"],
            ));
        }
        if let Some(t) = call.temperature() {
            body["temperature"] = json!(t);
            optional.push(Optional::new(Quirk::NoTemperature, &["temperature"]));
        }
        if call.stream {
            body["stream"] = json!(true);
            if !q.has(Quirk::NoStreamOptions) {
                body["stream_options"] = json!({"include_usage": true});
                optional.push(Optional::new(
                    Quirk::NoStreamOptions,
                    &["stream_options", "include_usage"],
                ));
            }
            optional.push(Optional::new(Quirk::NoStream, &["stream"]));
        }
        WireRequest {
            path: "/chat/completions".into(),
            body,
            stream: call.stream,
            optional,
        }
    }

    fn auth(&self, key: &str) -> Vec<(&'static str, String)> {
        vec![("authorization", format!("Bearer {key}"))]
    }

    fn parse(&self, body: &[u8]) -> Result<Reply, Fault> {
        let Some(v) = serde_json::from_slice::<Value>(body).ok() else {
            return Err(Fault::malformed(
                "expected a JSON object with `choices`",
                body,
            ));
        };
        let Some(choice) = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return Err(Fault::malformed(
                "expected a non-empty `choices` list",
                body,
            ));
        };
        let Some(message) = choice.get("message").filter(|m| m.is_object()) else {
            return Err(Fault::malformed("expected `choices[0].message`", body));
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
        let mut reply = Reply {
            text,
            model: v.get("model").and_then(Value::as_str).map(str::to_string),
            tokens_in: count(v.get("usage"), "prompt_tokens").unwrap_or(0),
            tokens_out: count(v.get("usage"), "completion_tokens").unwrap_or(0),
            ..Reply::default()
        };
        let refusal = message.get("refusal").and_then(Value::as_str).unwrap_or("");
        finish(
            &mut reply,
            choice.get("finish_reason").and_then(Value::as_str),
            refusal,
        );
        Ok(reply)
    }

    fn event(&self, event: &SseEvent, reply: &mut Reply) -> Result<(), Fault> {
        if event.data.trim() == "[DONE]" {
            reply.closed = true;
            return Ok(());
        }
        let v = event_json(event)?;
        if v.get("error").is_some() {
            return Err(Fault::in_stream(&event.data));
        }
        if reply.model.is_none() {
            reply.model = v.get("model").and_then(Value::as_str).map(str::to_string);
        }
        if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
            reply.tokens_in = count(Some(usage), "prompt_tokens").unwrap_or(reply.tokens_in);
            reply.tokens_out = count(Some(usage), "completion_tokens").unwrap_or(reply.tokens_out);
        }
        let Some(choice) = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return Ok(());
        };
        let delta = choice.get("delta");
        if let Some(Value::String(text)) = delta.and_then(|d| d.get("content")) {
            reply.text.push_str(text);
        }
        if let Some(Value::String(refusal)) = delta.and_then(|d| d.get("refusal")) {
            reply.refusal.push_str(refusal);
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            let refusal = std::mem::take(&mut reply.refusal);
            finish(reply, Some(reason), &refusal);
        }
        Ok(())
    }
}

/// How `finish_reason` (and a refusal) end an answer.
fn finish(reply: &mut Reply, reason: Option<&str>, refusal: &str) {
    if let Some(reason) = reason {
        reply.reason = Some(format!("finish_reason: {reason}"));
    }
    reply.stop = if !refusal.trim().is_empty() {
        Some(Stop::Withheld(format!(
            "the model refused to answer: {}",
            excerpt(refusal, 200)
        )))
    } else {
        match reason {
            Some("length") => Some(Stop::Truncated),
            Some("content_filter") => Some(Stop::Withheld(
                "the answer was withheld by the content filter (finish_reason: content_filter)"
                    .into(),
            )),
            Some(_) => Some(Stop::Done),
            None => None,
        }
    };
}
