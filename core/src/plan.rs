//! A validated, compiled workflow: the graph, parsed prompts and conditions,
//! compiled output schemas, and structural hashes. An [`crate::exec::Execution`]
//! runs a `Plan`; checkpoints refer to it by hash.

use crate::condition::Condition;
use crate::graph::Graph;
use crate::model::StepType;
use crate::model::Workflow;
use crate::report::{Report, suggest};
use crate::schema::CompiledSchema;
use crate::subworkflow::SubWorkflow;
use crate::template::Template;
use crate::validate::{Options, analyze};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

#[derive(Debug)]
pub struct Plan {
    pub workflow: Workflow,
    pub graph: Graph,
    /// Step indices sorted by key (stably), built on first use (validation alone
    /// does not need it); a binary search instead of a `HashMap` type of its own.
    index: OnceLock<Vec<usize>>,
    /// Each step's prompt, parsed when the step first runs (validation only
    /// scans them: see [`Template::scan`]).
    prompts: Vec<OnceLock<Template>>,
    // Boxed: most steps have neither, and 10,000 empty inline slots are a megabyte.
    pub(crate) conditions: Vec<Option<Box<Condition>>>,
    pub(crate) schemas: Vec<Option<Box<CompiledSchema>>>,
    pub(crate) output_schemas: Vec<Option<Arc<Value>>>,
    /// Inputs the workflow can use: declared ones and undeclared `{{name}}`s.
    input_names: BTreeSet<String>,
    /// Structural hashes, computed on first use (validation alone needs none).
    hashes: OnceLock<Hashes>,
    /// The workflows that `type: workflow` steps run, when the plan was made with a
    /// loader ([`crate::subworkflow::analyze_tree`]); by step index.
    sub_workflows: Vec<Option<Arc<SubWorkflow>>>,
    has_approvals: bool,
}

#[derive(Debug)]
struct Hashes {
    definition: String,
    steps: Vec<[u8; 16]>,
}

/// Why run inputs were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("{}", describe_missing(.0))]
    Missing(Vec<String>),
    #[error("unknown input `{name}`{}; this workflow takes: {}", .suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default(), if .known.is_empty() { "no inputs".to_owned() } else { .known.join(", ") })]
    Unknown {
        name: String,
        suggestion: Option<String>,
        known: Vec<String>,
    },
}

fn describe_missing(names: &[String]) -> String {
    let flags: Vec<String> = names.iter().map(|n| format!("--input {n}=…")).collect();
    format!(
        "missing input{} {}: pass {}",
        if names.len() == 1 { "" } else { "s" },
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", "),
        flags.join(" ")
    )
}

impl Plan {
    pub(crate) fn new(
        workflow: Workflow,
        graph: Graph,
        conditions: Vec<Option<Box<Condition>>>,
        schemas: Vec<Option<Box<CompiledSchema>>>,
        input_names: BTreeSet<String>,
    ) -> Plan {
        debug_assert_eq!(graph.len(), workflow.steps.len());
        let output_schemas = workflow
            .steps
            .iter()
            .map(|s| s.output_schema.clone().map(Arc::new))
            .collect();
        let prompts = workflow.steps.iter().map(|_| OnceLock::new()).collect();
        let has_approvals = workflow.steps.iter().any(|s| s.kind == StepType::Approval);
        let sub_workflows = vec![None; workflow.steps.len()];
        Plan {
            sub_workflows,
            has_approvals,
            workflow,
            graph,
            index: OnceLock::new(),
            prompts,
            conditions,
            schemas,
            output_schemas,
            input_names,
            hashes: OnceLock::new(),
        }
    }

    /// Step `i`'s prompt template, parsed on first use. Validation checked every
    /// prompt, so this fails only for a step index out of range or (should the
    /// checks and the parser ever disagree) with the parser's own message.
    pub(crate) fn prompt(&self, i: usize) -> Result<&Template, String> {
        let (Some(cell), Some(step)) = (self.prompts.get(i), self.workflow.steps.get(i)) else {
            return Err(format!("no step #{i} in this plan"));
        };
        if let Some(t) = cell.get() {
            return Ok(t);
        }
        let t = Template::parse(&step.prompt).map_err(|errs| {
            errs.into_iter()
                .map(|e| e.message)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        Ok(cell.get_or_init(|| t))
    }

    /// The workflow step `i` runs (`type: workflow`), when the plan was made with a
    /// loader.
    pub fn sub_workflow(&self, i: usize) -> Option<&Arc<SubWorkflow>> {
        self.sub_workflows.get(i)?.as_ref()
    }

    pub(crate) fn set_sub_workflow(&mut self, i: usize, sub: Arc<SubWorkflow>) {
        if let Some(slot) = self.sub_workflows.get_mut(i) {
            *slot = Some(sub);
        }
    }

    /// Whether any step is an approval.
    pub fn has_approvals(&self) -> bool {
        self.has_approvals
    }

    /// Parse and validate text into a plan, or the report of what is wrong.
    pub fn from_text(text: &str, filename: Option<&str>) -> Result<Arc<Plan>, Report> {
        let opts = Options {
            filename: filename.map(str::to_owned),
            ..Options::default()
        };
        let a = analyze(text, &opts);
        a.plan.ok_or(a.report)
    }

    pub fn len(&self) -> usize {
        self.workflow.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workflow.steps.is_empty()
    }

    pub fn index_of(&self, key: &str) -> Option<usize> {
        let steps = &self.workflow.steps;
        let order = self.index.get_or_init(|| {
            let mut order: Vec<usize> = (0..steps.len()).collect();
            crate::sort::sort_by_key(&mut order, |&i| steps[i].key.as_str());
            order
        });
        // The last of equal keys (as a map built in step order keeps).
        let p = order.partition_point(|&i| steps[i].key.as_str() <= key);
        let i = *order.get(p.checked_sub(1)?)?;
        (steps[i].key == key).then_some(i)
    }

    pub fn key(&self, i: usize) -> &str {
        &self.workflow.steps[i].key
    }

    /// Structural hash of the definition (the steps' keys, agents, prompts,
    /// dependencies, conditions and output schemas), 32 hex digits.
    pub fn hash(&self) -> &str {
        &self.hashes().definition
    }

    fn hashes(&self) -> &Hashes {
        self.hashes.get_or_init(|| {
            let mut buf = String::new();
            let steps: Vec<[u8; 16]> = self
                .workflow
                .steps
                .iter()
                .map(|s| step_hash(s, &mut buf))
                .collect();
            let mut h = Sha256::new();
            h.update(b"ax-definition-v1\n");
            for sh in &steps {
                h.update(hex(sh).as_bytes());
                h.update(b"\n");
            }
            // Added only when present, so that a workflow without them keeps the
            // hash it had before they existed (and its checkpoints restore exactly).
            if !self.workflow.outputs.is_empty() {
                buf.clear();
                let outputs: serde_json::Map<String, Value> = self
                    .workflow
                    .outputs
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                canonical_json(&Value::Object(outputs), &mut buf);
                h.update(b"outputs ");
                h.update(buf.as_bytes());
                h.update(b"\n");
            }
            Hashes {
                definition: hex(&h.finalize()[..16]),
                steps,
            }
        })
    }

    /// Structural hash of one step, 32 hex digits.
    pub fn step_hash(&self, i: usize) -> String {
        hex(&self.hashes().steps[i])
    }

    /// Every input the workflow can use, declared or not.
    pub fn input_names(&self) -> &BTreeSet<String> {
        &self.input_names
    }

    /// Check supplied inputs and fill in defaults. Unknown names and missing
    /// required inputs are errors (with a suggestion for typos).
    pub fn resolve_inputs(
        &self,
        supplied: BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, Value>, InputError> {
        for name in supplied.keys() {
            if !self.input_names.contains(name) {
                return Err(InputError::Unknown {
                    name: name.clone(),
                    suggestion: suggest(name, self.input_names.iter().map(String::as_str))
                        .map(str::to_owned),
                    known: self.input_names.iter().cloned().collect(),
                });
            }
        }
        let mut out = supplied;
        let mut missing = Vec::new();
        for name in &self.input_names {
            if out.contains_key(name) {
                continue;
            }
            match self
                .workflow
                .inputs
                .get(name)
                .and_then(|s| s.default.clone())
            {
                Some(d) => {
                    out.insert(name.clone(), d);
                }
                None => missing.push(name.clone()),
            }
        }
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(InputError::Missing(missing))
        }
    }

    /// A value satisfying step `i`'s `outputSchema` (for offline and simulated
    /// providers), or `None` if it has none or none can be synthesized.
    pub fn output_example(&self, i: usize, text: &str) -> Option<Value> {
        self.schemas.get(i)?.as_ref()?.example(text)
    }

    pub fn has_output_schema(&self, i: usize) -> bool {
        self.schemas.get(i).is_some_and(Option::is_some)
    }

    pub fn to_json(&self) -> Value {
        self.graph.to_json(&self.workflow)
    }
    pub fn to_mermaid(&self) -> String {
        self.graph.to_mermaid(&self.workflow)
    }
    pub fn to_dot(&self) -> String {
        self.graph.to_dot(&self.workflow)
    }
}

fn step_hash(s: &crate::model::Step, canon: &mut String) -> [u8; 16] {
    let mut deps: Vec<&str> = s.dependencies.iter().map(String::as_str).collect();
    crate::sort::sort_unstable(&mut deps);
    deps.dedup();
    // Canonical JSON of [key, agent, prompt, deps, when, outputSchema].
    canon.clear();
    canon.push('[');
    for part in [&s.key, &s.agent, &s.prompt] {
        push_json_str(part, canon);
        canon.push(',');
    }
    canon.push('[');
    for (i, d) in deps.iter().enumerate() {
        if i > 0 {
            canon.push(',');
        }
        push_json_str(d, canon);
    }
    canon.push_str("],");
    match &s.when {
        Some(w) => push_json_str(w, canon),
        None => canon.push_str("null"),
    }
    canon.push(',');
    match &s.output_schema {
        Some(v) => canonical_json(v, canon),
        None => canon.push_str("null"),
    }
    // What else decides a step's result, only when set: steps without it keep the
    // hash they had before these fields existed.
    let mut extra = serde_json::Map::new();
    if !s.kind.is_prompt() {
        extra.insert("type".into(), Value::String(s.kind.as_str().into()));
    }
    if let Some(w) = &s.workflow {
        extra.insert("workflow".into(), Value::String(w.clone()));
    }
    if !s.inputs.is_empty() {
        let inputs = s.inputs.iter().map(|(k, v)| (k.clone(), v.clone()));
        extra.insert("inputs".into(), Value::Object(inputs.collect()));
    }
    if let Some(f) = &s.for_each {
        extra.insert(
            "forEach".into(),
            serde_json::to_value(f).unwrap_or(Value::Null),
        );
    }
    // A step's own model settings: a changed model is a changed step.
    if let Some(m) = &s.model {
        extra.insert("model".into(), Value::String(m.clone()));
    }
    if let Some(t) = s.temperature {
        extra.insert("temperature".into(), Value::from(t));
    }
    if let Some(m) = s.max_tokens {
        extra.insert("maxTokens".into(), Value::from(m));
    }
    if let Some(m) = &s.system {
        extra.insert("system".into(), Value::String(m.clone()));
    }
    if !extra.is_empty() {
        canon.push(',');
        canonical_json(&Value::Object(extra), canon);
    }
    canon.push(']');
    let digest = Sha256::digest(canon.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// A JSON string literal, as serde_json writes it.
fn push_json_str(s: &str, out: &mut String) {
    out.push('"');
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
    } else {
        out.push_str(&Value::String(s.to_owned()).to_string()[1..]);
        out.pop();
    }
    out.push('"');
}

/// JSON with object keys sorted, independent of serde_json's map features.
pub fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            crate::sort::sort(&mut keys);
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_str(k, out);
                out.push(':');
                if let Some(x) = m.get(k) {
                    canonical_json(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Content hash of a step output: how checkpoints refer to outputs.
pub fn output_hash(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes())[..16])
}
