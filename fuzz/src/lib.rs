//! Shared pieces of the fuzz targets: a plain template context read from the
//! input, and the fixed workflows the executor targets run.

use ax_core::Plan;
use ax_core::template::Context;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Retries, timeouts, `when`, optional steps, an outputSchema, parallelism 2.
pub const DIAMOND: &str = include_str!("../fixtures/diamond.yaml");
/// A fan-out with a run timeout, continueOnError and checkpointInterval.
pub const FAN: &str = include_str!("../fixtures/fan.yaml");
/// A chain on a required input, parallelism 1.
pub const CHAIN: &str = include_str!("../fixtures/chain.yaml");

/// A fixture's plan (they are valid: a test of the fuzz crate would be a
/// panic here on the first run).
pub fn plan(yaml: &str) -> Arc<Plan> {
    Plan::from_text(yaml, Some("fixture.yaml"))
        .unwrap_or_else(|r| panic!("fixture does not validate: {:?}", r.errors))
}

/// Run inputs for a fixture (only the chain has a required one).
pub fn inputs(yaml: &str) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    if yaml == CHAIN {
        m.insert("who".to_owned(), Value::String("fuzz".to_owned()));
    }
    m
}

/// Run inputs and step outputs for templates and conditions.
#[derive(Debug, Default)]
pub struct TextCtx {
    pub inputs: BTreeMap<String, Value>,
    /// Steps by key: `None` for a step that did not complete.
    pub steps: BTreeMap<String, Option<String>>,
}

impl TextCtx {
    /// A fuzz input as `TEXT\0name\0value\0…`: the text and its context (see
    /// [`TextCtx::from_fields`]); `None` when the bytes are not UTF-8.
    pub fn split_input(data: &[u8]) -> Option<(&str, TextCtx)> {
        let mut fields = std::str::from_utf8(data).ok()?.split('\0');
        let text = fields.next().unwrap_or_default();
        Some((text, TextCtx::from_fields(fields)))
    }

    /// From NUL-separated `name`/`value` pairs: a name starting with `@` is a
    /// step (its value the output text; no value: a step that did not complete),
    /// any other name a run input (its value JSON, else a string).
    pub fn from_fields<'a>(mut fields: impl Iterator<Item = &'a str>) -> TextCtx {
        let mut ctx = TextCtx::default();
        while let Some(name) = fields.next() {
            let value = fields.next();
            if let Some(key) = name.strip_prefix('@') {
                ctx.steps.insert(key.to_owned(), value.map(str::to_owned));
            } else {
                let v = value.unwrap_or_default();
                let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
                ctx.inputs.insert(name.to_owned(), v);
            }
        }
        ctx
    }
}

impl Context for TextCtx {
    fn input(&self, name: &str) -> Option<&Value> {
        self.inputs.get(name)
    }
    fn output(&self, key: &str) -> Option<&str> {
        self.steps.get(key)?.as_deref()
    }
    fn is_step(&self, key: &str) -> bool {
        self.steps.contains_key(key)
    }
    fn missing_reason(&self, key: &str) -> Option<String> {
        match self.steps.get(key) {
            Some(None) => Some("was skipped".to_owned()),
            _ => None,
        }
    }
}
