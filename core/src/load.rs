//! Spanned tree → [`Workflow`] plus a [`SourceMap`], reporting every schema problem
//! at once (unknown fields with a suggestion, wrong types, missing fields) at the
//! position of the offending key or value.
//!
//! Loading never stops at the first problem: a step with a bad field is still
//! loaded (with the field empty) so that graph and placeholder checks can run too.

use crate::model::{
    Budget, Cache, CacheTtl, Config, ErrorClass, ForEach, InputSpec, OnTimeout, RetryPolicy, Step,
    StepType, Workflow, default_max_retries, default_multiplier, default_parallelism,
    default_retry_delay, default_version,
};
use crate::parse::{Entry, Format, Node, NodeKind, Scalar};
use crate::report::{Code, Sink, suggest};
use crate::source::Span;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

pub(crate) const WORKFLOW_FIELDS: &[&str] = &[
    "name",
    "description",
    "version",
    "steps",
    "config",
    "tags",
    "author",
    "inputs",
    "outputs",
];
/// The common fields first (each field of each step is looked up here); the
/// first four are the required ones, by their bits (see [`Loader::step`]).
pub(crate) const STEP_FIELDS: &[&str] = &[
    "key",
    "agent",
    "prompt",
    "workflow",
    "dependencies",
    "parallel",
    "optional",
    "timeoutMs",
    "retryPolicy",
    "outputSchema",
    "when",
    "type",
    "inputs",
    "forEach",
    "maxConcurrency",
    "maxItems",
    "onTimeout",
    "model",
    "temperature",
    "maxTokens",
    "system",
    "cache",
];
pub(crate) const RETRY_FIELDS: &[&str] = &[
    "maxRetries",
    "retryDelayMs",
    "retryBackoffMultiplier",
    "retryableErrors",
];
pub(crate) const CONFIG_FIELDS: &[&str] = &[
    "timeout",
    "maxRetries",
    "checkpointInterval",
    "parallelism",
    "continueOnError",
    "budget",
    "cache",
];
pub(crate) const BUDGET_FIELDS: &[&str] = &["usd", "tokens"];
pub(crate) const INPUT_FIELDS: &[&str] = &["description", "default"];

/// A field's key and value spans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldSource {
    pub name: Cow<'static, str>,
    pub key: Span,
    pub value: Span,
}

/// Where a step's parts are in the text (for error positions and in-place edits).
/// Its fields and dependency items are ranges of the [`SourceMap`]'s flat lists
/// (two allocations per file rather than two per step): ask the map
/// ([`SourceMap::step_field`], [`SourceMap::dependency`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepSource {
    /// The whole step item.
    pub span: Span,
    /// The value of its `key`, when it has one.
    pub key: Option<Span>,
    /// Its fields in [`SourceMap::step_fields`].
    pub fields: Range<u32>,
    /// Its dependency list items in [`SourceMap::dependency_spans`].
    pub dependencies: Range<u32>,
    /// The entries of its `inputs` (a `type: workflow` step) in
    /// [`SourceMap::step_inputs`].
    #[serde(default)]
    pub inputs: Range<u32>,
}

impl StepSource {
    /// The best place to point at for a problem with the step as a whole.
    pub fn anchor(&self) -> Span {
        self.key.unwrap_or(self.span)
    }
}

/// Positions of the workflow's parts in the source text.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SourceMap {
    pub format: Option<Format>,
    pub root: Span,
    pub fields: Vec<FieldSource>,
    /// One per entry of `steps`, in order (also for entries that failed to load).
    pub steps: Vec<StepSource>,
    /// The fields of every step, step after step (see [`StepSource::fields`]).
    pub step_fields: Vec<FieldSource>,
    /// The dependency items of every step (see [`StepSource::dependencies`]).
    pub dependency_spans: Vec<Span>,
    /// The span of the `steps` list itself.
    pub steps_list: Option<Span>,
    pub inputs: Vec<FieldSource>,
    /// The entries of every step's `inputs` (see [`StepSource::inputs`]).
    #[serde(default)]
    pub step_inputs: Vec<FieldSource>,
    /// The entries of the top-level `outputs`.
    #[serde(default)]
    pub outputs: Vec<FieldSource>,
}

impl SourceMap {
    pub fn field(&self, name: &str) -> Option<&FieldSource> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Field `name` of step `i`.
    pub fn step_field(&self, i: usize, name: &str) -> Option<&FieldSource> {
        let r = &self.steps.get(i)?.fields;
        self.step_fields
            .get(r.start as usize..r.end as usize)?
            .iter()
            .find(|f| f.name == name)
    }

    /// The entry `name` of step `i`'s `inputs`.
    pub fn step_input(&self, i: usize, name: &str) -> Option<&FieldSource> {
        let r = &self.steps.get(i)?.inputs;
        self.step_inputs
            .get(r.start as usize..r.end as usize)?
            .iter()
            .find(|f| f.name == name)
    }

    /// The `j`-th item of step `i`'s `dependencies`.
    pub fn dependency(&self, i: usize, j: usize) -> Option<Span> {
        let r = &self.steps.get(i)?.dependencies;
        self.dependency_spans
            .get(r.start as usize..r.end as usize)?
            .get(j)
            .copied()
    }
}

struct Loader<'s, 't> {
    sink: &'s mut Sink<'t>,
    yaml: bool,
}

/// Load a workflow from a parsed document. Problems go to `sink`.
pub(crate) fn load(root: &Node<'_>, format: Format, sink: &mut Sink<'_>) -> (Workflow, SourceMap) {
    let mut l = Loader {
        sink,
        yaml: format == Format::Yaml,
    };
    let mut map = SourceMap {
        format: Some(format),
        root: root.span,
        ..SourceMap::default()
    };
    let mut wf = Workflow {
        name: String::new(),
        description: None,
        version: default_version(),
        steps: Vec::new(),
        config: Config::default(),
        tags: Vec::new(),
        author: None,
        inputs: BTreeMap::new(),
        outputs: BTreeMap::new(),
    };
    let NodeKind::Map(entries) = &root.kind else {
        l.sink.error(
            Code::Schema,
            Some(root.span),
            None,
            format!(
                "a workflow is a mapping with `name` and `steps`, not {}",
                root.type_name()
            ),
        );
        return (wf, map);
    };
    let entries = l.check_fields(entries, WORKFLOW_FIELDS, "workflow", None);
    let mut saw_steps = false;
    let mut saw_name = false;
    for e in &entries {
        map.fields.push(FieldSource {
            name: known(&e.key, WORKFLOW_FIELDS),
            key: e.key_span,
            value: e.value.span,
        });
        match e.key.as_ref() {
            "name" => {
                saw_name = true;
                if let Some(s) = l.string(e, None) {
                    if s.trim().is_empty() {
                        l.sink.error(
                            Code::InvalidValue,
                            Some(e.value.span),
                            None,
                            "`name` is empty; give the workflow a name".into(),
                        );
                    }
                    wf.name = s;
                }
            }
            "description" => wf.description = l.string(e, None),
            "version" => {
                if let Some(v) = l.string(e, None) {
                    wf.version = v;
                }
            }
            "author" => wf.author = l.string(e, None),
            "tags" => l.string_list(e, None, &mut |s, _| wf.tags.push(s)),
            "config" => wf.config = l.config(&e.value),
            "inputs" => wf.inputs = l.inputs(&e.value, &mut map),
            "outputs" => wf.outputs = l.outputs(&e.value, &mut map),
            "steps" => {
                saw_steps = true;
                map.steps_list = Some(e.value.span);
                match &e.value.kind {
                    NodeKind::Seq(items) => {
                        if items.is_empty() {
                            l.sink.error(
                                Code::EmptyWorkflow,
                                Some(e.value.span),
                                None,
                                "`steps` is empty; a workflow needs at least one step".into(),
                            );
                        }
                        wf.steps.reserve_exact(items.len());
                        map.steps.reserve_exact(items.len());
                        let (mut fields, mut deps) = (0, 0);
                        for item in items {
                            if let NodeKind::Map(entries) = &item.kind {
                                fields += entries.len();
                                deps += entries.iter().find(|e| e.key == "dependencies").map_or(
                                    0,
                                    |e| match &e.value.kind {
                                        NodeKind::Seq(d) => d.len(),
                                        _ => 0,
                                    },
                                );
                            }
                        }
                        map.step_fields.reserve_exact(fields);
                        map.dependency_spans.reserve_exact(deps);
                        for item in items {
                            let step = l.step(item, &mut map);
                            wf.steps.push(step);
                        }
                    }
                    _ => l.sink.error(
                        Code::Schema,
                        Some(e.value.span),
                        None,
                        format!(
                            "`steps` must be a list of steps, not {}",
                            e.value.type_name()
                        ),
                    ),
                }
            }
            _ => {}
        }
    }
    if !saw_name {
        l.sink.error(
            Code::Schema,
            Some(Span::new(
                root.span.start as usize,
                root.span.start as usize,
            )),
            None,
            "the workflow has no `name`; add `name: my-workflow`".into(),
        );
    }
    if !saw_steps {
        l.sink.error(
            Code::EmptyWorkflow,
            Some(Span::new(
                root.span.start as usize,
                root.span.start as usize,
            )),
            None,
            "the workflow has no `steps`; add a `steps:` list with at least one step".into(),
        );
    }
    (wf, map)
}

impl<'t> Loader<'_, 't> {
    /// Report unknown and duplicate fields; returns the entries to interpret.
    fn check_fields<'n, 'a>(
        &mut self,
        entries: &'n [Entry<'a>],
        known: &[&str],
        what: &str,
        step: Option<&str>,
    ) -> Vec<&'n Entry<'a>> {
        let mut seen = 0;
        entries
            .iter()
            .filter(|e| self.field_ok(e, &mut seen, known, what, step).is_some())
            .collect()
    }

    /// Is `e` a known field seen for the first time (`seen` has a bit per field of
    /// `known` already met)? Its index in `known`, or reported and `None`.
    fn field_ok(
        &mut self,
        e: &Entry<'_>,
        seen: &mut u64,
        known: &[&str],
        what: &str,
        step: Option<&str>,
    ) -> Option<usize> {
        debug_assert!(known.len() <= 64);
        let Some(at) = known.iter().position(|k| *k == e.key) else {
            let hint = match suggest(&e.key, known.iter().copied()) {
                Some(s) => format!("; did you mean `{s}`?"),
                None => format!("; known fields: {}", known.join(", ")),
            };
            self.sink.error(
                Code::Schema,
                Some(e.key_span),
                step,
                format!("unknown field `{}` in {what}{hint}", e.key),
            );
            return None;
        };
        let bit = 1u64 << (at % 64);
        if *seen & bit != 0 {
            self.sink.error(
                Code::Schema,
                Some(e.key_span),
                step,
                format!("`{}` appears twice in this {what}; keep one", e.key),
            );
            return None;
        }
        *seen |= bit;
        Some(at)
    }

    fn string(&mut self, e: &Entry<'_>, step: Option<&str>) -> Option<String> {
        self.string_node(&e.value, &e.key, step)
    }

    fn string_node(&mut self, n: &Node<'_>, field: &str, step: Option<&str>) -> Option<String> {
        match n.scalar() {
            Some(Scalar::Str(s)) => Some(s.to_owned()),
            // `version: 1.0` in YAML: keep the text as written.
            Some(Scalar::Int(_) | Scalar::Float(_)) if self.yaml => match &n.kind {
                NodeKind::Scalar { text, .. } => Some(text.to_string()),
                _ => None,
            },
            _ => {
                self.sink.error(
                    Code::Schema,
                    Some(n.span),
                    step,
                    format!("`{field}` must be text, not {}", n.type_name()),
                );
                None
            }
        }
    }

    /// The strings of a list field, each with its span, handed to `each` (no
    /// temporary list: this runs for every step's `dependencies`).
    fn string_list(
        &mut self,
        e: &Entry<'_>,
        step: Option<&str>,
        each: &mut dyn FnMut(String, Span),
    ) {
        match &e.value.kind {
            NodeKind::Seq(items) => {
                for i in items {
                    if let Some(s) = self.string_node(i, &e.key, step) {
                        each(s, i.span);
                    }
                }
            }
            // `dependencies: []` written as `dependencies:` (null) is an empty list.
            NodeKind::Scalar { .. } if e.value.scalar() == Some(Scalar::Null) => {}
            _ => {
                self.sink.error(
                    Code::Schema,
                    Some(e.value.span),
                    step,
                    format!(
                        "`{}` must be a list (`[a, b]`), not {}",
                        e.key,
                        e.value.type_name()
                    ),
                );
            }
        }
    }

    fn boolean(&mut self, e: &Entry<'_>, step: Option<&str>) -> Option<bool> {
        match e.value.scalar() {
            Some(Scalar::Bool(b)) => Some(b),
            Some(Scalar::Str(s)) if matches!(s, "yes" | "no" | "on" | "off" | "y" | "n") => {
                self.sink.error(
                    Code::Schema,
                    Some(e.value.span),
                    step,
                    format!(
                        "`{}` must be true or false; `{s}` is text in YAML 1.2",
                        e.key
                    ),
                );
                None
            }
            _ => {
                self.sink.error(
                    Code::Schema,
                    Some(e.value.span),
                    step,
                    format!(
                        "`{}` must be true or false, not {}",
                        e.key,
                        e.value.type_name()
                    ),
                );
                None
            }
        }
    }

    /// A non-negative whole number (integral floats such as `3e4` are accepted).
    fn unsigned(&mut self, e: &Entry<'_>, step: Option<&str>, unit: &str) -> Option<u64> {
        let n = match e.value.scalar() {
            Some(Scalar::Int(i)) => Some(i as f64),
            Some(Scalar::Float(f)) if f.is_finite() && f.fract() == 0.0 => Some(f),
            _ => None,
        };
        match n {
            Some(n) if n >= 0.0 && n <= u64::MAX as f64 => Some(n as u64),
            Some(n) => {
                self.sink.error(
                    Code::InvalidValue,
                    Some(e.value.span),
                    step,
                    format!("`{}` must be zero or more, not {n}", e.key),
                );
                None
            }
            None => {
                let hint = if unit.is_empty() {
                    String::new()
                } else {
                    format!(" of {unit}")
                };
                let got = what_it_is(e);
                self.sink.error(
                    Code::Schema,
                    Some(e.value.span),
                    step,
                    format!("`{}` must be a whole number{hint}, not {got}", e.key),
                );
                None
            }
        }
    }

    /// A finite number (ranges are validation's business).
    fn number(&mut self, e: &Entry<'_>, step: Option<&str>) -> Option<f64> {
        match e.value.scalar() {
            Some(Scalar::Int(i)) => Some(i as f64),
            Some(Scalar::Float(f)) if f.is_finite() => Some(f),
            _ => {
                let got = what_it_is(e);
                self.sink.error(
                    Code::Schema,
                    Some(e.value.span),
                    step,
                    format!("`{}` must be a number, not {got}", e.key),
                );
                None
            }
        }
    }

    fn u32_field(&mut self, e: &Entry<'_>, step: Option<&str>) -> Option<u32> {
        let v = self.unsigned(e, step, "")?;
        match u32::try_from(v) {
            Ok(v) => Some(v),
            Err(_) => {
                self.sink.error(
                    Code::InvalidValue,
                    Some(e.value.span),
                    step,
                    format!(
                        "`{}` is too large ({v}); the maximum is {}",
                        e.key,
                        u32::MAX
                    ),
                );
                None
            }
        }
    }

    fn positive_ms(&mut self, e: &Entry<'_>, step: Option<&str>) -> Option<u64> {
        let v = self.unsigned(e, step, "milliseconds")?;
        if v == 0 {
            self.sink.error(
                Code::InvalidValue,
                Some(e.value.span),
                step,
                format!(
                    "`{}` must be at least 1 millisecond; remove it for no limit",
                    e.key
                ),
            );
            return None;
        }
        Some(v)
    }

    fn config(&mut self, n: &Node<'_>) -> Config {
        let mut c = Config::default();
        let NodeKind::Map(entries) = &n.kind else {
            self.sink.error(
                Code::Schema,
                Some(n.span),
                None,
                format!("`config` must be a mapping, not {}", n.type_name()),
            );
            return c;
        };
        for e in self.check_fields(entries, CONFIG_FIELDS, "config", None) {
            match e.key.as_ref() {
                "timeout" => c.timeout = self.positive_ms(e, None),
                "maxRetries" => c.max_retries = self.u32_field(e, None).unwrap_or(0),
                "checkpointInterval" => c.checkpoint_interval = self.positive_ms(e, None),
                "parallelism" => {
                    if let Some(p) = self.u32_field(e, None) {
                        if p == 0 {
                            self.sink.error(
                                Code::InvalidValue,
                                Some(e.value.span),
                                None,
                                "`parallelism` must be at least 1".into(),
                            );
                        } else {
                            c.parallelism = p;
                        }
                    }
                }
                "continueOnError" => c.continue_on_error = self.boolean(e, None).unwrap_or(false),
                "budget" => c.budget = self.budget(&e.value),
                "cache" => c.cache = self.cache(e, None),
                _ => {}
            }
        }
        if c.parallelism == 0 {
            c.parallelism = default_parallelism();
        }
        c
    }

    /// `cache`: `true`, `false` or `{ttlMs}`.
    fn cache(&mut self, e: &Entry<'_>, step: Option<&str>) -> Option<Cache> {
        if let Some(Scalar::Bool(b)) = e.value.scalar() {
            return Some(Cache::On(b));
        }
        let NodeKind::Map(entries) = &e.value.kind else {
            self.sink.error(
                Code::Schema,
                Some(e.value.span),
                step,
                format!(
                    "`cache` is true, false or `{{ttlMs: 3600000}}`, not {}",
                    e.value.type_name()
                ),
            );
            return None;
        };
        let mut ttl = None;
        for f in self.check_fields(entries, &["ttlMs"], "cache", step) {
            ttl = self.positive_ms(f, step);
        }
        if entries.is_empty() {
            self.sink.error(
                Code::InvalidValue,
                Some(e.value.span),
                step,
                "`cache` is empty; write `cache: true` or `cache: {ttlMs: 3600000}`".into(),
            );
        }
        ttl.map(|ttl_ms| Cache::Ttl(CacheTtl { ttl_ms }))
    }

    /// `config.budget`: `{usd, tokens}`, at least one.
    fn budget(&mut self, n: &Node<'_>) -> Option<Budget> {
        let NodeKind::Map(entries) = &n.kind else {
            self.sink.error(
                Code::Schema,
                Some(n.span),
                None,
                format!(
                    "`budget` is a mapping such as `{{usd: 2.50, tokens: 500000}}`, not {}",
                    n.type_name()
                ),
            );
            return None;
        };
        let mut b = Budget::default();
        for e in self.check_fields(entries, BUDGET_FIELDS, "budget", None) {
            match e.key.as_ref() {
                "usd" => {
                    b.usd = self.number(e, None).filter(|&v| {
                        v >= 0.0 || {
                            self.sink.error(
                                Code::InvalidValue,
                                Some(e.value.span),
                                None,
                                format!("`usd` must be zero or more, not {v}"),
                            );
                            false
                        }
                    })
                }
                "tokens" => b.tokens = self.unsigned(e, None, "tokens"),
                _ => {}
            }
        }
        if entries.is_empty() {
            self.sink.error(
                Code::InvalidValue,
                Some(n.span),
                None,
                "`budget` is empty; set `usd`, `tokens` or both, or remove it".into(),
            );
        }
        Some(b)
    }

    fn inputs(&mut self, n: &Node<'_>, map: &mut SourceMap) -> BTreeMap<String, InputSpec> {
        let mut out = BTreeMap::new();
        let NodeKind::Map(entries) = &n.kind else {
            self.sink.error(
                Code::Schema,
                Some(n.span),
                None,
                format!(
                    "`inputs` maps input names to descriptions, not {}",
                    n.type_name()
                ),
            );
            return out;
        };
        let mut seen: Vec<&str> = Vec::new();
        for e in entries {
            if seen.contains(&e.key.as_ref()) {
                self.sink.error(
                    Code::Schema,
                    Some(e.key_span),
                    None,
                    format!("input `{}` is declared twice; keep one", e.key),
                );
                continue;
            }
            seen.push(&e.key);
            if !valid_name(&e.key) {
                self.sink.error(
                    Code::InvalidValue,
                    Some(e.key_span),
                    None,
                    format!(
                        "input name `{}` may only hold letters, digits, `_` and `-`",
                        e.key
                    ),
                );
            }
            map.inputs.push(FieldSource {
                name: Cow::Owned(e.key.to_string()),
                key: e.key_span,
                value: e.value.span,
            });
            let spec = match &e.value.kind {
                // Shorthand: `topic: What to write about`.
                NodeKind::Scalar { .. } => match e.value.scalar() {
                    Some(Scalar::Null) => InputSpec::default(),
                    _ => InputSpec {
                        description: self.string(e, None),
                        default: None,
                    },
                },
                NodeKind::Map(fields) => {
                    let mut spec = InputSpec::default();
                    for f in self.check_fields(fields, INPUT_FIELDS, "input", None) {
                        match f.key.as_ref() {
                            "description" => spec.description = self.string(f, None),
                            "default" => spec.default = Some(f.value.to_json()),
                            _ => {}
                        }
                    }
                    spec
                }
                NodeKind::Seq(_) => {
                    self.sink.error(
                        Code::Schema,
                        Some(e.value.span),
                        None,
                        format!(
                            "input `{}` takes a description or `{{description, default}}`, not a list",
                            e.key
                        ),
                    );
                    InputSpec::default()
                }
            };
            out.insert(e.key.to_string(), spec);
        }
        out
    }

    /// Load a step; its positions go to `map` (one [`StepSource`] per item, always).
    fn step(&mut self, item: &Node<'_>, map: &mut SourceMap) -> Step {
        let fields_start = u32_len(&map.step_fields);
        let deps_start = u32_len(&map.dependency_spans);
        let inputs_start = u32_len(&map.step_inputs);
        let mut src = StepSource {
            span: item.span,
            key: None,
            fields: fields_start..fields_start,
            dependencies: deps_start..deps_start,
            inputs: inputs_start..inputs_start,
        };
        let mut step = Step::default();
        let NodeKind::Map(entries) = &item.kind else {
            self.sink.error(
                Code::Schema,
                Some(item.span),
                None,
                format!(
                    "each step is a mapping with `key`, `agent` and `prompt`, not {}",
                    item.type_name()
                ),
            );
            map.steps.push(src);
            return step;
        };
        // The key first, so that every other problem can name the step.
        // (Held apart from `step` until the end, so problems can borrow it as a label.)
        let key = entries
            .iter()
            .find(|e| e.key == "key")
            .and_then(|e| self.string(e, None))
            .unwrap_or_default();
        let label = (!key.is_empty()).then_some(key.as_str());
        let mut seen = 0;
        let mut unknown_type = false;
        for e in entries {
            let Some(at) = self.field_ok(e, &mut seen, STEP_FIELDS, "step", label) else {
                continue;
            };
            map.step_fields.push(FieldSource {
                name: Cow::Borrowed(STEP_FIELDS[at]),
                key: e.key_span,
                value: e.value.span,
            });
            match STEP_FIELDS[at] {
                "key" => src.key = Some(e.value.span),
                "agent" => step.agent = self.string(e, label).unwrap_or_default(),
                "prompt" => step.prompt = self.string(e, label).unwrap_or_default(),
                "type" => match self.step_type(e, label) {
                    Some(kind) => step.kind = kind,
                    None => unknown_type = true,
                },
                "workflow" => step.workflow = self.string(e, label),
                "inputs" => step.inputs = self.step_inputs(e, label, map),
                "forEach" => step.for_each = self.for_each(e, label),
                "maxConcurrency" | "maxItems" => {
                    let v = self.u32_field(e, label).filter(|&v| {
                        v > 0 || {
                            self.sink.error(
                                Code::InvalidValue,
                                Some(e.value.span),
                                label,
                                format!("`{}` must be at least 1", e.key),
                            );
                            false
                        }
                    });
                    if e.key == "maxItems" {
                        step.max_items = v;
                    } else {
                        step.max_concurrency = v;
                    }
                }
                "dependencies" => {
                    if let NodeKind::Seq(items) = &e.value.kind {
                        step.dependencies.reserve_exact(items.len());
                    }
                    self.string_list(e, label, &mut |d, span| {
                        step.dependencies.push(d);
                        map.dependency_spans.push(span);
                    });
                }
                "parallel" => step.parallel = self.boolean(e, label).unwrap_or(false),
                "optional" => step.optional = self.boolean(e, label).unwrap_or(false),
                "timeoutMs" => step.timeout_ms = self.positive_ms(e, label),
                "onTimeout" => step.on_timeout = self.on_timeout(e, label),
                "retryPolicy" => step.retry_policy = self.retry(&e.value, label),
                "outputSchema" => match &e.value.kind {
                    NodeKind::Map(_) => step.output_schema = Some(e.value.to_json()),
                    _ if matches!(e.value.scalar(), Some(Scalar::Bool(_))) => {
                        step.output_schema = Some(e.value.to_json())
                    }
                    _ => self.sink.error(
                        Code::Schema,
                        Some(e.value.span),
                        label,
                        format!(
                            "`outputSchema` must be a JSON Schema object, not {}",
                            e.value.type_name()
                        ),
                    ),
                },
                "when" => step.when = self.string(e, label),
                "model" => step.model = self.string(e, label),
                "system" => step.system = self.string(e, label),
                "maxTokens" => step.max_tokens = self.u32_field(e, label),
                "temperature" => step.temperature = self.number(e, label),
                "cache" => step.cache = self.cache(e, label),
                _ => {}
            }
        }
        // What each type needs (fields a type does not take are validation's
        // business: it reports them for workflows that did not come from text too).
        // `key`, `agent`, `prompt` and `workflow` are the first four fields.
        let required: &[usize] = match step.kind {
            // What a mistyped type needs is unknown: only its key is asked for.
            _ if unknown_type => &[0],
            StepType::Prompt => &[0, 1, 2],
            StepType::Approval => &[0, 2],
            StepType::Workflow => &[0, 3],
        };
        for &at in required {
            let field = STEP_FIELDS[at];
            if seen & (1 << at) == 0 {
                let example = match field {
                    "key" => "key: my-step",
                    "agent" => "agent: backend",
                    "workflow" => "workflow: ./child.yaml",
                    _ if step.kind == StepType::Approval => {
                        "prompt: \"…\" (what the approver reads)"
                    }
                    _ => "prompt: \"…\"",
                };
                let of = if step.kind.is_prompt() {
                    String::new()
                } else {
                    format!(" (a `type: {}` step needs it)", step.kind)
                };
                self.sink.error(
                    Code::Schema,
                    Some(src.anchor()),
                    label,
                    format!("the step has no `{field}`; add `{example}`{of}"),
                );
            }
        }
        step.key = key;
        src.fields.end = u32_len(&map.step_fields);
        src.dependencies.end = u32_len(&map.dependency_spans);
        src.inputs.end = u32_len(&map.step_inputs);
        map.steps.push(src);
        step
    }

    fn step_type(&mut self, e: &Entry<'_>, step: Option<&str>) -> Option<StepType> {
        let name = self.string(e, step)?;
        if let Some(kind) = StepType::parse(&name) {
            return Some(kind);
        }
        let names = StepType::ALL.map(StepType::as_str);
        let hint = suggest(&name, names)
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        self.sink.error(
            Code::InvalidValue,
            Some(e.value.span),
            step,
            format!(
                "unknown step type `{name}`; {hint}types: {} (`prompt` when absent)",
                names.join(", ")
            ),
        );
        None
    }

    fn on_timeout(&mut self, e: &Entry<'_>, step: Option<&str>) -> Option<OnTimeout> {
        let name = self.string(e, step)?;
        match name.as_str() {
            "reject" => Some(OnTimeout::Reject),
            "approve" => Some(OnTimeout::Approve),
            _ => {
                self.sink.error(
                    Code::InvalidValue,
                    Some(e.value.span),
                    step,
                    format!("`onTimeout` is `reject` or `approve`, not `{name}`"),
                );
                None
            }
        }
    }

    /// `forEach`: a placeholder (text) or a list written out.
    fn for_each(&mut self, e: &Entry<'_>, step: Option<&str>) -> Option<ForEach> {
        match &e.value.kind {
            NodeKind::Seq(_) => match e.value.to_json() {
                serde_json::Value::Array(items) => Some(ForEach::List(items)),
                _ => None,
            },
            NodeKind::Scalar { .. } if matches!(e.value.scalar(), Some(Scalar::Str(_))) => {
                self.string(e, step).map(ForEach::Template)
            }
            _ => {
                self.sink.error(
                    Code::Schema,
                    Some(e.value.span),
                    step,
                    format!(
                        "`forEach` takes one placeholder that renders a list (`\"{{{{step.result.items}}}}\"`) or a list, not {}",
                        e.value.type_name()
                    ),
                );
                None
            }
        }
    }

    /// A `type: workflow` step's `inputs`: names to values (text values are templates).
    fn step_inputs(
        &mut self,
        e: &Entry<'_>,
        step: Option<&str>,
        map: &mut SourceMap,
    ) -> BTreeMap<String, serde_json::Value> {
        let mut out = BTreeMap::new();
        let entries = match &e.value.kind {
            NodeKind::Map(entries) => entries,
            NodeKind::Scalar { .. } if e.value.scalar() == Some(Scalar::Null) => return out,
            _ => {
                self.sink.error(
                    Code::Schema,
                    Some(e.value.span),
                    step,
                    format!(
                        "a step's `inputs` maps the child workflow's input names to values, not {}",
                        e.value.type_name()
                    ),
                );
                return out;
            }
        };
        for f in entries {
            if out.contains_key(f.key.as_ref()) {
                self.sink.error(
                    Code::Schema,
                    Some(f.key_span),
                    step,
                    format!("input `{}` is given twice; keep one", f.key),
                );
                continue;
            }
            map.step_inputs.push(FieldSource {
                name: Cow::Owned(f.key.to_string()),
                key: f.key_span,
                value: f.value.span,
            });
            out.insert(f.key.to_string(), f.value.to_json());
        }
        out
    }

    /// Top-level `outputs`: names to templates.
    fn outputs(&mut self, n: &Node<'_>, map: &mut SourceMap) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let NodeKind::Map(entries) = &n.kind else {
            self.sink.error(
                Code::Schema,
                Some(n.span),
                None,
                format!(
                    "`outputs` maps result names to templates (`summary: \"{{{{report.result}}}}\"`), not {}",
                    n.type_name()
                ),
            );
            return out;
        };
        for e in entries {
            if out.contains_key(e.key.as_ref()) {
                self.sink.error(
                    Code::Schema,
                    Some(e.key_span),
                    None,
                    format!("output `{}` is declared twice; keep one", e.key),
                );
                continue;
            }
            if !valid_name(&e.key) {
                self.sink.error(
                    Code::InvalidValue,
                    Some(e.key_span),
                    None,
                    format!(
                        "output name `{}` may only hold letters, digits, `_` and `-`",
                        e.key
                    ),
                );
            }
            map.outputs.push(FieldSource {
                name: Cow::Owned(e.key.to_string()),
                key: e.key_span,
                value: e.value.span,
            });
            if let Some(t) = self.string_node(&e.value, &e.key, None) {
                out.insert(e.key.to_string(), t);
            }
        }
        out
    }

    fn retry(&mut self, n: &Node<'_>, step: Option<&str>) -> Option<RetryPolicy> {
        let NodeKind::Map(entries) = &n.kind else {
            self.sink.error(
                Code::Schema,
                Some(n.span),
                step,
                format!("`retryPolicy` must be a mapping, not {}", n.type_name()),
            );
            return None;
        };
        let mut p = RetryPolicy {
            max_retries: default_max_retries(),
            retry_delay_ms: default_retry_delay(),
            retry_backoff_multiplier: default_multiplier(),
            retryable_errors: None,
        };
        for e in self.check_fields(entries, RETRY_FIELDS, "retryPolicy", step) {
            match e.key.as_ref() {
                "maxRetries" => {
                    if let Some(v) = self.u32_field(e, step) {
                        p.max_retries = v;
                    }
                }
                "retryDelayMs" => {
                    if let Some(v) = self.unsigned(e, step, "milliseconds") {
                        p.retry_delay_ms = v;
                    }
                }
                "retryBackoffMultiplier" => match e.value.scalar() {
                    Some(Scalar::Int(i)) if i >= 1 => p.retry_backoff_multiplier = i as f64,
                    Some(Scalar::Float(f)) if f.is_finite() && f >= 1.0 => {
                        p.retry_backoff_multiplier = f
                    }
                    Some(Scalar::Int(_) | Scalar::Float(_)) => self.sink.error(
                        Code::InvalidValue,
                        Some(e.value.span),
                        step,
                        "`retryBackoffMultiplier` must be at least 1 (1 keeps the delay constant)"
                            .into(),
                    ),
                    _ => self.sink.error(
                        Code::Schema,
                        Some(e.value.span),
                        step,
                        format!(
                            "`retryBackoffMultiplier` must be a number, not {}",
                            e.value.type_name()
                        ),
                    ),
                },
                "retryableErrors" => {
                    let mut classes = Vec::new();
                    let mut names = Vec::new();
                    self.string_list(e, step, &mut |name, span| names.push((name, span)));
                    for (name, span) in names {
                        match ErrorClass::parse(&name) {
                            Some(c) => classes.push(c),
                            None => {
                                let names = ErrorClass::ALL.map(ErrorClass::as_str);
                                let hint = suggest(&name.replace('_', "-"), names)
                                    .map(|s| format!("did you mean `{s}`? "))
                                    .unwrap_or_default();
                                self.sink.error(
                                    Code::InvalidValue,
                                    Some(span),
                                    step,
                                    format!(
                                        "unknown error class `{name}`; {hint}classes: {}",
                                        names.join(", ")
                                    ),
                                );
                            }
                        }
                    }
                    p.retryable_errors = Some(classes);
                }
                _ => {}
            }
        }
        Some(p)
    }
}

/// The static name of a known field (no allocation per field).
/// A list's length as a `u32` (source maps hold at most one item per byte of a
/// text that is at most `Limits::max_bytes` long; saturates beyond).
fn u32_len<T>(v: &[T]) -> u32 {
    u32::try_from(v.len()).unwrap_or(u32::MAX)
}

fn known(name: &str, list: &'static [&'static str]) -> Cow<'static, str> {
    match list.iter().find(|k| **k == name) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(name.to_owned()),
    }
}

/// Step keys and input names: letters, digits, `_` and `-` (no dots: they separate
/// placeholder paths).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What a value that is not the number it should be is, for the message:
/// the text or number itself, else its type.
fn what_it_is(e: &Entry<'_>) -> String {
    match e.value.scalar() {
        Some(Scalar::Str(s)) => format!("`{s}`"),
        Some(Scalar::Float(f)) => format!("{f}"),
        _ => e.value.type_name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Limits, parse};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// `step` tracks the fields it saw by their bits in `seen`, and finds the
    /// required ones by position.
    #[test]
    fn field_lists_fit_the_seen_bits() {
        assert_eq!(&STEP_FIELDS[..4], ["key", "agent", "prompt", "workflow"]);
        assert!(
            [
                STEP_FIELDS,
                RETRY_FIELDS,
                CONFIG_FIELDS,
                BUDGET_FIELDS,
                INPUT_FIELDS,
                WORKFLOW_FIELDS
            ]
            .iter()
            .all(|l| l.len() <= 64)
        );
    }

    fn load_text(text: &str) -> (Workflow, crate::report::Report) {
        let doc = parse(text, None, &Limits::default()).expect("parses");
        let mut sink = Sink::new(Some(text));
        let (wf, _) = load(&doc.root, doc.format, &mut sink);
        (wf, sink.into_report())
    }

    #[test]
    fn loads_every_field_with_defaults() {
        let (wf, report) = load_text(
            "name: demo\nversion: 2.0\nsteps:\n  - key: a\n    agent: backend\n    prompt: hi\n    timeoutMs: 3e4\n    retryPolicy: {maxRetries: 1, retryableErrors: [timeout]}\n    outputSchema: {type: object}\n",
        );
        assert!(report.valid, "{report:?}");
        assert_eq!(wf.version, "2.0");
        assert_eq!(wf.config.parallelism, 5);
        let s = &wf.steps[0];
        assert_eq!(s.timeout_ms, Some(30_000));
        let p = s.retry_policy.as_ref().expect("policy");
        assert_eq!((p.max_retries, p.retry_delay_ms), (1, 1000));
        assert_eq!(p.retryable_errors, Some(vec![ErrorClass::Timeout]));
    }

    #[test]
    fn reports_every_schema_problem_at_once() {
        let text = "name: demo\nsteps:\n  - key: a\n    agent: x\n    prompt: p\n    dependsOn: [b]\n    optional: yes\n  - key: b\n    prompt: 3\n    timeoutMs: 30s\n    retryPolicy: {retryBackoffMultiplier: 0.5, retryableErrors: [rate_limit]}\nconfig: {parallelism: 0, paralellism: 2}\n";
        let (_, report) = load_text(text);
        let msgs: Vec<String> = report
            .errors
            .iter()
            .map(|p| {
                format!(
                    "{}:{} {} {}",
                    p.line.unwrap_or(0),
                    p.column.unwrap_or(0),
                    p.code,
                    p.message
                )
            })
            .collect();
        let all = msgs.join("\n");
        assert!(
            all.contains(
                "6:5 schema unknown field `dependsOn` in step; did you mean `dependencies`?"
            ),
            "{all}"
        );
        assert!(
            all.contains("7:15 schema `optional` must be true or false"),
            "{all}"
        );
        assert!(all.contains("the step has no `agent`"), "{all}");
        assert!(
            all.contains("`timeoutMs` must be a whole number of milliseconds, not `30s`"),
            "{all}"
        );
        assert!(all.contains("at least 1 (1 keeps"), "{all}");
        assert!(all.contains("did you mean `rate-limit`?"), "{all}");
        assert!(all.contains("`parallelism` must be at least 1"), "{all}");
        assert!(all.contains("did you mean `parallelism`"), "{all}");
        assert_eq!(
            report
                .errors
                .iter()
                .filter(|p| p.step.as_deref() == Some("b"))
                .count(),
            4
        );
    }

    #[test]
    fn json_is_strictly_typed() {
        let (_, report) = load_text(
            r#"{"name": "x", "version": 1, "steps": [{"key": "a", "agent": "b", "prompt": "c"}]}"#,
        );
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].line, Some(1));
        assert_eq!(report.errors[0].column, Some(26));
    }

    #[test]
    fn missing_name_and_steps() {
        let (_, report) = load_text("description: nothing\n");
        assert!(report.has_code(Code::Schema));
        assert!(report.has_code(Code::EmptyWorkflow));
        let (_, report) = load_text("name: x\nsteps: []\n");
        assert!(report.has_code(Code::EmptyWorkflow));
    }

    #[test]
    fn input_shorthand_and_defaults() {
        let (wf, report) = load_text(
            "name: x\ninputs:\n  topic: What to write about\n  depth: {default: 3}\n  bare:\nsteps: [{key: a, agent: b, prompt: c}]\n",
        );
        assert!(report.valid, "{report:?}");
        assert_eq!(
            wf.inputs["topic"].description.as_deref(),
            Some("What to write about")
        );
        assert_eq!(wf.inputs["depth"].default, Some(serde_json::json!(3)));
        assert!(wf.inputs["bare"].default.is_none());
    }
}
