//! The browser surface: thin wasm-bindgen wrappers that take and return JSON
//! strings. All logic lives in the rest of the crate.

use crate::checkpoint::Checkpoint;
use crate::exec::{Event, Execution};
use crate::plan::Plan;
use crate::template::{Context, Template};
use crate::validate::{Options, analyze};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use wasm_bindgen::prelude::*;

fn options(filename: Option<String>) -> Options {
    Options {
        filename,
        ..Options::default()
    }
}

fn js_err(msg: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&msg.to_string())
}

/// Validate a workflow text: the same JSON as `ax workflow validate --format json`.
#[wasm_bindgen]
pub fn validate(text: &str, filename: Option<String>) -> String {
    let a = analyze(text, &options(filename));
    serde_json::to_string(&a.full_report()).unwrap_or_default()
}

/// Validate a workflow text together with the sub-workflows its `type: workflow`
/// steps run, found among `documents` (a JSON object of path → text; paths are
/// relative to `filename`): the same report as `validate`, with the
/// sub-workflows' problems at the parent's positions.
#[wasm_bindgen(js_name = validateWith)]
pub fn validate_with(
    text: &str,
    filename: Option<String>,
    documents_json: &str,
) -> Result<String, JsValue> {
    let documents: BTreeMap<String, String> =
        serde_json::from_str(documents_json).map_err(js_err)?;
    let id = filename
        .clone()
        .unwrap_or_else(|| "workflow.yaml".to_owned());
    let mut loader = crate::subworkflow::DocumentLoader::new(documents);
    let a = crate::subworkflow::analyze_tree(text, &options(filename), &id, &mut loader);
    Ok(serde_json::to_string(&a.full_report()).unwrap_or_default())
}

/// The plan of a valid workflow: `{nodes, edges, order, levels, criticalPath}`;
/// throws the validation report (JSON) when the workflow is invalid.
#[wasm_bindgen]
pub fn plan(text: &str, filename: Option<String>) -> Result<String, JsValue> {
    let a = analyze(text, &options(filename));
    match a.plan {
        Some(p) => Ok(p.to_json().to_string()),
        None => Err(js_err(
            serde_json::to_string(&a.full_report()).unwrap_or_default(),
        )),
    }
}

struct JsonContext {
    inputs: BTreeMap<String, Value>,
    outputs: HashMap<String, String>,
}

impl Context for JsonContext {
    fn input(&self, name: &str) -> Option<&Value> {
        self.inputs.get(name)
    }
    fn output(&self, key: &str) -> Option<&str> {
        self.outputs.get(key).map(String::as_str)
    }
    fn is_step(&self, key: &str) -> bool {
        self.outputs.contains_key(key)
    }
}

/// Render a template with `{"inputs": {...}, "outputs": {"step": "text"}}`.
#[wasm_bindgen]
pub fn render(template: &str, context_json: &str) -> Result<String, JsValue> {
    let ctx: Value = serde_json::from_str(context_json).map_err(js_err)?;
    let inputs = ctx
        .get("inputs")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let outputs = ctx
        .get("outputs")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let t = Template::parse(template).map_err(|errs| {
        js_err(
            errs.into_iter()
                .map(|e| e.message)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    t.render(&JsonContext { inputs, outputs }).map_err(|errs| {
        js_err(
            errs.into_iter()
                .map(|e| e.message)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// The sans-IO executor for JavaScript: events and actions as JSON.
#[wasm_bindgen]
pub struct Executor {
    exec: Execution,
}

#[wasm_bindgen]
impl Executor {
    /// Start a new execution of a workflow text with inputs (a JSON object).
    #[wasm_bindgen(constructor)]
    pub fn new(text: &str, inputs_json: &str, seed: f64) -> Result<Executor, JsValue> {
        let plan = Plan::from_text(text, None)
            .map_err(|r| js_err(serde_json::to_string(&r).unwrap_or_default()))?;
        let inputs: BTreeMap<String, Value> = if inputs_json.trim().is_empty() {
            BTreeMap::new()
        } else {
            serde_json::from_str(inputs_json).map_err(js_err)?
        };
        let exec = Execution::new(plan, inputs, seed as u64).map_err(js_err)?;
        Ok(Executor { exec })
    }

    /// Rebuild from a checkpoint (JSON) and its outputs (`{hash: text}`).
    pub fn restore(
        text: &str,
        checkpoint_json: &str,
        outputs_json: &str,
    ) -> Result<Executor, JsValue> {
        let plan: Arc<Plan> = Plan::from_text(text, None)
            .map_err(|r| js_err(serde_json::to_string(&r).unwrap_or_default()))?;
        let cp = Checkpoint::from_json(checkpoint_json).map_err(js_err)?;
        let outputs: BTreeMap<String, String> =
            serde_json::from_str(outputs_json).map_err(js_err)?;
        let lookup = |h: &str| outputs.get(h).map(|s| Arc::from(s.as_str()));
        let (exec, _) = Execution::restore(plan, &cp, &lookup).map_err(js_err)?;
        Ok(Executor { exec })
    }

    /// Feed an event (JSON, e.g. `{"type":"start"}`) at time `now` (ms); returns
    /// the actions as a JSON array.
    pub fn handle(&mut self, event_json: &str, now: f64) -> Result<String, JsValue> {
        let event: Event = serde_json::from_str(event_json).map_err(js_err)?;
        let actions = self
            .exec
            .handle(event, now.max(0.0) as u64)
            .map_err(js_err)?;
        serde_json::to_string(&actions).map_err(js_err)
    }

    pub fn state(&self) -> String {
        self.exec.state().as_str().to_owned()
    }

    #[wasm_bindgen(js_name = nextWakeup)]
    pub fn next_wakeup(&self) -> Option<f64> {
        self.exec.next_wakeup().map(|t| t as f64)
    }

    /// A full checkpoint (JSON).
    pub fn snapshot(&mut self) -> String {
        self.exec.snapshot().to_json()
    }

    /// Outputs of completed steps as `{hash: text}` (JSON).
    pub fn outputs(&self) -> String {
        let m: BTreeMap<String, String> = self
            .exec
            .outputs()
            .into_iter()
            .map(|(h, t)| (h, t.to_string()))
            .collect();
        serde_json::to_string(&m).unwrap_or_default()
    }
}
