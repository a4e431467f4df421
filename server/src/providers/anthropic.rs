//! Anthropic Messages API: `POST {base}/v1/messages` with `x-api-key` and
//! `anthropic-version: 2023-06-01`. The answer's `text` blocks are the output,
//! `usage.input_tokens`/`output_tokens` the token counts; `stop_reason:
//! max_tokens` is a truncated answer.
//!
//! Streamed (`stream: true`): `message_start` (model, input tokens),
//! `content_block_delta` (`text_delta`, or `input_json_delta` for a tool call),
//! `message_delta` (stop reason, output tokens), `message_stop`; `ping`s in
//! between; an `error` event fails the call with its type's class.
//!
//! Structured output: `output_config.format` with the schema brought into the
//! subset structured outputs accept; for models without it, a forced call of a
//! tool whose input schema is the step's; for servers without either, the
//! schema described in the system prompt.

use super::http::HttpProvider;
use super::schema;
use super::wire::{
    Call, Fault, Optional, Quirk, Reply, Stop, Wire, WireRequest, count, event_json, system_prompt,
};
use super::{Endpoint, KindSpec, Provider};
use eventsource_stream::Event as SseEvent;
use serde_json::{Value, json};
use std::sync::Arc;

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const API_VERSION: &str = "2023-06-01";
/// The tool a forced tool call fills in, when structured output is a tool call.
const OUTPUT_TOOL: &str = "ax_output";

pub const KIND: KindSpec = KindSpec {
    name: "anthropic",
    key_env: Some("ANTHROPIC_API_KEY"),
    base_url_env: Some("ANTHROPIC_BASE_URL"),
    default_base_url: Some(DEFAULT_BASE_URL),
    offline: false,
    build,
};

fn build(e: Endpoint) -> Arc<dyn Provider> {
    Arc::new(HttpProvider::new("anthropic", Anthropic, e))
}

/// The Messages API wire format (base URL without `/v1`, as in the SDKs).
pub(crate) struct Anthropic;

/// How a step's `outputSchema` is asked for.
enum Mode {
    Native(Value),
    Tool(Value),
    Prompt,
}

fn mode(call: &Call<'_>) -> Option<Mode> {
    let schema = call.req.output_schema.as_deref()?;
    if !call.quirks.has(Quirk::NoNativeSchema)
        && let Some(s) = schema::for_anthropic(schema)
    {
        return Some(Mode::Native(s));
    }
    if !call.quirks.has(Quirk::NoToolSchema) && schema::is_object_schema(schema) {
        return Some(Mode::Tool(schema::without_meta(schema)));
    }
    Some(Mode::Prompt)
}

impl Wire for Anthropic {
    fn request(&self, call: &Call<'_>) -> WireRequest {
        let req = call.req;
        let mut body = json!({
            "model": req.model,
            "max_tokens": req.max_tokens,
            "messages": [{"role": "user", "content": req.prompt}],
        });
        let mut optional = Vec::new();
        let mode = mode(call);
        let system = match &mode {
            Some(Mode::Prompt) => {
                system_prompt(req.system.as_deref(), req.output_schema.as_deref())
            }
            _ => req.system.clone(),
        };
        if let Some(system) = system {
            body["system"] = json!(system);
        }
        match mode {
            Some(Mode::Native(schema)) => {
                body["output_config"] =
                    json!({"format": {"type": "json_schema", "schema": schema}});
                optional.push(Optional::new(
                    Quirk::NoNativeSchema,
                    &[
                        "output_config",
                        "output_format",
                        "output format",
                        "structured output",
                        "structured outputs",
                    ],
                ));
            }
            Some(Mode::Tool(schema)) => {
                body["tools"] = json!([{
                    "name": OUTPUT_TOOL,
                    "description": "Record the answer. Its input is the whole answer, as JSON that satisfies the schema.",
                    "input_schema": schema,
                }]);
                body["tool_choice"] = json!({"type": "tool", "name": OUTPUT_TOOL});
                optional.push(Optional::new(
                    Quirk::NoToolSchema,
                    &["tools", "tool_choice", "tool_use", "input_schema"],
                ));
            }
            Some(Mode::Prompt) | None => {}
        }
        if let Some(t) = call.temperature() {
            body["temperature"] = json!(t);
            optional.push(Optional::new(Quirk::NoTemperature, &["temperature"]));
        }
        if call.stream {
            body["stream"] = json!(true);
            optional.push(Optional::new(Quirk::NoStream, &["stream"]));
        }
        WireRequest {
            path: "/v1/messages".into(),
            body,
            stream: call.stream,
            optional,
        }
    }

    fn auth(&self, key: &str) -> Vec<(&'static str, String)> {
        vec![("x-api-key", key.to_string())]
    }

    fn headers(&self) -> &'static [(&'static str, &'static str)] {
        &[("anthropic-version", API_VERSION)]
    }

    fn parse(&self, body: &[u8]) -> Result<Reply, Fault> {
        let Some(v) = serde_json::from_slice::<Value>(body).ok() else {
            return Err(Fault::malformed(
                "expected a JSON object with `content`",
                body,
            ));
        };
        let Some(blocks) = v.get("content").and_then(Value::as_array) else {
            return Err(Fault::malformed("expected a `content` list", body));
        };
        let tool_input = blocks
            .iter()
            .find(|b| {
                b.get("type").and_then(Value::as_str) == Some("tool_use")
                    && b.get("name").and_then(Value::as_str) == Some(OUTPUT_TOOL)
            })
            .and_then(|b| b.get("input"));
        let text = match tool_input {
            Some(input) => input.to_string(),
            None => blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect(),
        };
        let mut reply = Reply {
            text,
            model: v.get("model").and_then(Value::as_str).map(str::to_string),
            tokens_in: count(v.get("usage"), "input_tokens").unwrap_or(0),
            tokens_out: count(v.get("usage"), "output_tokens").unwrap_or(0),
            ..Reply::default()
        };
        stop(&mut reply, v.get("stop_reason").and_then(Value::as_str));
        Ok(reply)
    }

    fn event(&self, event: &SseEvent, reply: &mut Reply) -> Result<(), Fault> {
        if event.event == "error" {
            return Err(Fault::in_stream(&event.data));
        }
        let v = event_json(event)?;
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let message = v.get("message");
                reply.model = message
                    .and_then(|m| m.get("model"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let usage = message.and_then(|m| m.get("usage"));
                reply.tokens_in = count(usage, "input_tokens").unwrap_or(0);
                reply.tokens_out = count(usage, "output_tokens").unwrap_or(0);
            }
            "content_block_start" => {
                if let Some(Value::String(text)) = v.pointer("/content_block/text") {
                    reply.text.push_str(text);
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta");
                let piece = match delta.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => delta.and_then(|d| d.get("text")),
                    // The forced tool call's input: the JSON answer, in pieces.
                    Some("input_json_delta") => delta.and_then(|d| d.get("partial_json")),
                    // Thinking, signatures, citations: not the answer.
                    _ => None,
                };
                if let Some(Value::String(piece)) = piece {
                    reply.text.push_str(piece);
                }
            }
            "message_delta" => {
                let usage = v.get("usage");
                if let Some(n) = count(usage, "output_tokens") {
                    reply.tokens_out = n;
                }
                if let Some(n) = count(usage, "input_tokens") {
                    reply.tokens_in = reply.tokens_in.max(n);
                }
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    stop(reply, Some(reason));
                }
            }
            "message_stop" => reply.closed = true,
            "error" => return Err(Fault::in_stream(&event.data)),
            // `ping`, `content_block_stop`, and whatever a later API version adds.
            _ => {}
        }
        Ok(())
    }
}

/// How `stop_reason` ends an answer.
fn stop(reply: &mut Reply, reason: Option<&str>) {
    let Some(reason) = reason else {
        return;
    };
    reply.reason = Some(format!("stop_reason: {reason}"));
    reply.stop = Some(match reason {
        "max_tokens" | "model_context_window_exceeded" => Stop::Truncated,
        "refusal" => Stop::Withheld("the model refused to answer (stop_reason: refusal)".into()),
        _ => Stop::Done,
    });
}
