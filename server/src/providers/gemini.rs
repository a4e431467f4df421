//! Google Gemini: `POST {base}/v1beta/models/{model}:generateContent` with
//! `x-goog-api-key`; the first candidate's text parts are the output (thought
//! summaries are not), `usageMetadata.promptTokenCount`/`candidatesTokenCount`
//! (plus thinking tokens, which are billed as output) the token counts,
//! `finishReason: MAX_TOKENS` a truncated answer.
//!
//! Streamed: `:streamGenerateContent?alt=sse`, each event a whole
//! `GenerateContentResponse` carrying the next piece of text; the last one has
//! the `finishReason` and the usage; the stream then ends.
//!
//! Structured output: `generationConfig.responseMimeType: application/json` with
//! the schema as `responseJsonSchema`; for servers that refuse it, the schema is
//! described in the system prompt (with the JSON mime type kept).

use super::http::HttpProvider;
use super::schema;
use super::wire::{
    Call, Fault, Optional, Quirk, Reply, Stop, Wire, WireRequest, count, event_json, system_prompt,
};
use super::{Endpoint, KindSpec, Provider};
use ax_core::ErrorClass;
use eventsource_stream::Event as SseEvent;
use serde_json::{Value, json};
use std::sync::Arc;

pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

pub const KIND: KindSpec = KindSpec {
    name: "gemini",
    key_env: Some("GEMINI_API_KEY"),
    base_url_env: Some("GEMINI_BASE_URL"),
    default_base_url: Some(DEFAULT_BASE_URL),
    offline: false,
    build,
};

fn build(e: Endpoint) -> Arc<dyn Provider> {
    Arc::new(HttpProvider::new("gemini", Gemini, e))
}

/// The `generateContent` wire format (base URL without `/v1beta`).
pub(crate) struct Gemini;

impl Wire for Gemini {
    fn request(&self, call: &Call<'_>) -> WireRequest {
        let req = call.req;
        let model = req.model.strip_prefix("models/").unwrap_or(&req.model);
        let mut optional = Vec::new();
        let mut config = json!({"maxOutputTokens": req.max_tokens});
        if let Some(t) = call.temperature() {
            config["temperature"] = json!(t);
            optional.push(Optional::new(Quirk::NoTemperature, &["temperature"]));
        }
        let schema = req.output_schema.as_deref();
        let native = schema.filter(|_| !call.quirks.has(Quirk::NoNativeSchema));
        if schema.is_some() {
            config["responseMimeType"] = json!("application/json");
        }
        if let Some(schema) = native {
            config["responseJsonSchema"] = schema::without_meta(schema);
            optional.push(Optional::new(
                Quirk::NoNativeSchema,
                &[
                    "responseJsonSchema",
                    "response_json_schema",
                    "generation_config.response_json_schema",
                ],
            ));
        }
        let mut body = json!({
            "contents": [{"role": "user", "parts": [{"text": req.prompt}]}],
            "generationConfig": config,
        });
        let system = if native.is_some() {
            req.system.clone()
        } else {
            system_prompt(req.system.as_deref(), schema)
        };
        if let Some(system) = system {
            body["systemInstruction"] = json!({"parts": [{"text": system}]});
        }
        let path = if call.stream {
            optional.push(Optional::new(
                Quirk::NoStream,
                &["alt", "streamGenerateContent"],
            ));
            format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("/v1beta/models/{model}:generateContent")
        };
        WireRequest {
            path,
            body,
            stream: call.stream,
            optional,
        }
    }

    fn auth(&self, key: &str) -> Vec<(&'static str, String)> {
        vec![("x-goog-api-key", key.to_string())]
    }

    fn parse(&self, body: &[u8]) -> Result<Reply, Fault> {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        // `streamGenerateContent` without `alt=sse` answers a list of chunks.
        let chunks = match &v {
            Value::Object(_) => std::slice::from_ref(&v),
            Value::Array(items) if items.iter().all(Value::is_object) => items.as_slice(),
            _ => {
                return Err(Fault::malformed(
                    "expected a JSON object with `candidates`",
                    body,
                ));
            }
        };
        if !chunks
            .iter()
            .any(|c| c.get("candidates").is_some() || c.get("promptFeedback").is_some())
        {
            return Err(Fault::malformed("expected a `candidates` list", body));
        }
        let mut reply = Reply::default();
        for chunk in chunks {
            fold(chunk, &mut reply)?;
        }
        Ok(reply)
    }

    fn event(&self, event: &SseEvent, reply: &mut Reply) -> Result<(), Fault> {
        let v = event_json(event)?;
        if v.get("error").is_some() {
            return Err(Fault::in_stream(&event.data));
        }
        fold(&v, reply)
    }

    fn limit_field(&self) -> &'static str {
        "maxOutputTokens"
    }
}

/// Add one `GenerateContentResponse` (a whole answer, or one streamed piece).
fn fold(v: &Value, reply: &mut Reply) -> Result<(), Fault> {
    if let Some(reason) = v
        .get("promptFeedback")
        .and_then(|f| f.get("blockReason"))
        .and_then(Value::as_str)
    {
        reply.reason = Some(format!("blockReason: {reason}"));
        reply.stop = Some(Stop::Withheld(format!(
            "the prompt was blocked (blockReason: {reason})"
        )));
        return Ok(());
    }
    if let Some(m) = v.get("modelVersion").and_then(Value::as_str) {
        reply.model = Some(m.to_string());
    }
    let usage = v.get("usageMetadata");
    if let Some(n) = count(usage, "promptTokenCount") {
        reply.tokens_in = n;
    }
    if usage.is_some() {
        let out = count(usage, "candidatesTokenCount").unwrap_or(0)
            + count(usage, "thoughtsTokenCount").unwrap_or(0);
        reply.tokens_out = reply.tokens_out.max(out);
    }
    let Some(first) = v
        .get("candidates")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    else {
        return Ok(());
    };
    if let Some(parts) = first.pointer("/content/parts").and_then(Value::as_array) {
        for p in parts {
            // Thought summaries are not the answer.
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(text) = p.get("text").and_then(Value::as_str) {
                reply.text.push_str(text);
            }
        }
    }
    if let Some(finish) = first.get("finishReason").and_then(Value::as_str) {
        reply.reason = Some(format!("finishReason: {finish}"));
        reply.stop = Some(match finish {
            "STOP" | "FINISH_REASON_UNSPECIFIED" => Stop::Done,
            "MAX_TOKENS" => Stop::Truncated,
            "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" => {
                return Err(Fault::new(
                    ErrorClass::Other,
                    format!("the model did not answer with text (finishReason: {finish})"),
                ));
            }
            other => Stop::Withheld(format!("the answer was withheld (finishReason: {other})")),
        });
    }
    Ok(())
}
