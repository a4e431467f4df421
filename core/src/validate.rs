//! Validation: every rule, every problem at once, each at its position.
//!
//! [`analyze`] is the one entry point used by the CLI, the server and the browser:
//! text in, a [`Report`] (the JSON every surface shows) and, when the workflow is
//! valid, a compiled [`Plan`] out.

use crate::condition::Condition;
use crate::graph::{BitSet, Graph};
use crate::load::{SourceMap, load, valid_name};
use crate::model::{ForEach, OnTimeout, Step, StepType, Workflow};
use crate::parse::{Format, Limits, decode, parse};
use crate::plan::Plan;
use crate::report::{Code, Report, Sink, suggest};
use crate::schema::CompiledSchema;
use crate::source::Span;
use crate::template::{PlaceholderRef, Template};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// How to read a workflow file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Used to detect the format by extension (and nothing else).
    pub filename: Option<String>,
    /// Force a format instead of detecting it.
    pub format: Option<Format>,
    pub limits: Limits,
}

impl Options {
    pub fn for_file(name: &str) -> Options {
        Options {
            filename: Some(name.to_owned()),
            ..Options::default()
        }
    }
}

/// The result of reading and validating a workflow.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub report: Report,
    pub source_map: Option<SourceMap>,
    /// Present when the workflow is valid.
    pub plan: Option<Arc<Plan>>,
    /// The loaded workflow when there is no plan (a best-effort load).
    loaded: Option<Workflow>,
    /// The graph when it is sound but the workflow has other problems.
    graph: Option<Graph>,
}

impl Analysis {
    /// The workflow, when the file parsed (even with schema errors: a best-effort load).
    pub fn workflow(&self) -> Option<&Workflow> {
        self.plan
            .as_ref()
            .map(|p| &p.workflow)
            .or(self.loaded.as_ref())
    }

    /// The dependency graph, when it is sound (no cycles, no missing steps).
    pub fn graph(&self) -> Option<&Graph> {
        self.plan.as_ref().map(|p| &p.graph).or(self.graph.as_ref())
    }

    /// The report with the topological `order` and `levels` filled in (when the
    /// graph is sound): what `ax workflow validate --format json` and the wasm
    /// `validate` print. (`report` alone leaves them out: they are presentation,
    /// one string per step.)
    pub fn full_report(&self) -> Report {
        let mut report = self.report.clone();
        if let (Some(g), Some(wf)) = (self.graph(), self.workflow()) {
            let key = |i: &usize| wf.steps[*i].key.clone();
            report.order = Some(g.order().iter().map(key).collect());
            report.levels = Some(g.levels().map(|l| l.iter().map(key).collect()).collect());
        }
        report
    }

    /// The plan turned out invalid after all (a sub-workflow's problem): keep its
    /// workflow and graph, as for any invalid file.
    pub(crate) fn set_loaded(&mut self, plan: Arc<Plan>) {
        self.graph = Some(plan.graph.clone());
        self.loaded =
            Some(Arc::try_unwrap(plan).map_or_else(|p| p.workflow.clone(), |p| p.workflow));
    }

    pub fn into_workflow(self) -> Option<Workflow> {
        match self.plan {
            Some(p) => Some(Arc::try_unwrap(p).map_or_else(|p| p.workflow.clone(), |p| p.workflow)),
            None => self.loaded,
        }
    }
}

/// Validate raw bytes (checks the size limit and UTF-8 first).
pub fn analyze_bytes(bytes: &[u8], opts: &Options) -> Analysis {
    match decode(bytes, &opts.limits) {
        Ok(text) => analyze(text, opts),
        Err(e) => {
            // Position of an invalid byte: count over the valid prefix.
            let prefix = std::str::from_utf8(&bytes[..(e.span.start as usize).min(bytes.len())])
                .unwrap_or("");
            let mut sink = Sink::new(Some(prefix));
            sink.error(
                e.code,
                Some(Span::new(prefix.len(), prefix.len())),
                None,
                e.message,
            );
            Analysis {
                report: sink.into_report(),
                loaded: None,
                graph: None,
                source_map: None,
                plan: None,
            }
        }
    }
}

/// Parse, load and validate a workflow text.
pub fn analyze(text: &str, opts: &Options) -> Analysis {
    let mut sink = Sink::new(Some(text));
    let format = opts
        .format
        .or_else(|| opts.filename.as_deref().and_then(Format::from_filename));
    let doc = match parse(text, format, &opts.limits) {
        Ok(doc) => doc,
        Err(e) => {
            sink.error(e.code, Some(e.span), None, e.message);
            return Analysis {
                report: sink.into_report(),
                loaded: None,
                graph: None,
                source_map: None,
                plan: None,
            };
        }
    };
    let (workflow, map) = load(&doc.root, doc.format, &mut sink);
    let checked = check(&workflow, Some(&map), &mut sink);
    let report = sink.into_report();
    let (plan, loaded, graph) = if report.valid {
        match checked.into_plan(workflow) {
            Ok(plan) => (Some(Arc::new(plan)), None, None),
            Err(workflow) => (None, Some(*workflow), None),
        }
    } else {
        (None, Some(workflow), checked.graph)
    };
    Analysis {
        report,
        loaded,
        graph,
        source_map: Some(map),
        plan,
    }
}

/// Validate a workflow that did not come from text (problems carry no position).
pub fn validate_workflow(workflow: Workflow) -> Result<Arc<Plan>, Report> {
    let mut sink = Sink::new(None);
    let checked = check(&workflow, None, &mut sink);
    if sink.has_errors() {
        return Err(sink.into_report());
    }
    checked
        .into_plan(workflow)
        .map(Arc::new)
        .map_err(|_| Report {
            valid: false,
            ..Report::default()
        })
}

/// Step keys → indices. Keys are the file's: a seeded hash (foldhash: a random seed
/// per process, so no file can be written to collide), several times faster than
/// SipHash on short keys. (One map type for the core and the page: each is a copy
/// of hashbrown in the wasm.)
pub type KeyIndex<'k> = HashMap<&'k str, usize, foldhash::fast::RandomState>;

/// What validation computed that the plan reuses.
pub(crate) struct Checked {
    graph: Option<Graph>,
    /// Declared inputs and undeclared `{{name}}`s.
    input_names: BTreeSet<String>,
    /// Every prompt is a well-formed template.
    prompts_ok: bool,
    conditions: Vec<Option<Box<Condition>>>,
    schemas: Vec<Option<Box<CompiledSchema>>>,
}

impl Checked {
    /// The plan, or the workflow back when something is missing.
    fn into_plan(self, workflow: Workflow) -> Result<Plan, Box<Workflow>> {
        let Some(graph) = self.graph else {
            return Err(Box::new(workflow));
        };
        if !self.prompts_ok {
            return Err(Box::new(workflow));
        }
        Ok(Plan::new(
            workflow,
            graph,
            self.conditions,
            self.schemas,
            self.input_names,
        ))
    }
}

/// Locates things in the source text for problem positions.
struct Locator<'m> {
    map: Option<&'m SourceMap>,
}

impl Locator<'_> {
    fn step_anchor(&self, i: usize) -> Option<Span> {
        self.map.and_then(|m| m.steps.get(i)).map(|s| s.anchor())
    }
    fn step_field(&self, i: usize, field: &str) -> Option<Span> {
        self.map
            .and_then(|m| m.step_field(i, field))
            .map(|f| f.value)
            .or_else(|| self.step_anchor(i))
    }
    fn step_field_key(&self, i: usize, field: &str) -> Option<Span> {
        self.map
            .and_then(|m| m.step_field(i, field))
            .map(|f| f.key)
            .or_else(|| self.step_anchor(i))
    }
    fn dependency(&self, i: usize, j: usize) -> Option<Span> {
        self.map
            .and_then(|m| m.dependency(i, j))
            .or_else(|| self.step_field(i, "dependencies"))
    }
    /// The span of `needle` inside a field's source text, searching from `from`
    /// (falls back to the field itself when the text is escaped differently).
    fn inside(
        &self,
        text: Option<&str>,
        field: Option<Span>,
        needle: &str,
        from: &mut usize,
    ) -> Option<Span> {
        let field = field?;
        let Some(text) = text else { return Some(field) };
        let hay = text.get(field.range())?;
        let start = (*from).min(hay.len());
        match hay.get(start..).and_then(|h| h.find(needle)) {
            Some(off) => {
                let s = field.start as usize + start + off;
                *from = start + off + needle.len();
                Some(Span::new(s, s + needle.len()))
            }
            None => Some(field),
        }
    }
}

fn check<'w>(wf: &'w Workflow, map: Option<&SourceMap>, sink: &mut Sink<'_>) -> Checked {
    let loc = Locator { map };
    let n = wf.steps.len();
    let text = sink.text();
    let mut sound = n > 0;

    // Keys: format and uniqueness.
    let mut index = KeyIndex::with_capacity_and_hasher(n, Default::default());
    for (i, s) in wf.steps.iter().enumerate() {
        if s.key.is_empty() {
            sound = false; // reported by the loader
            continue;
        }
        if !valid_name(&s.key) {
            sink.error(
                Code::InvalidValue,
                loc.step_field(i, "key"),
                Some(&s.key),
                format!(
                    "step key `{}` may only hold letters, digits, `_` and `-` (at most 128); try `{}`",
                    s.key,
                    slug(&s.key)
                ),
            );
        }
        if let Some(&first) = index.get(s.key.as_str()) {
            let first_line = loc.step_field(first, "key").and_then(|sp| sink.line_of(sp));
            let where_first = first_line
                .map(|l| format!(" (first at line {l})"))
                .unwrap_or_default();
            sink.error(
                Code::DuplicateStep,
                loc.step_field(i, "key"),
                Some(&s.key),
                format!(
                    "two steps have the key `{}`{where_first}; keys must be unique — rename one",
                    s.key
                ),
            );
            sound = false;
        } else {
            index.insert(&s.key, i);
        }
        if !s.agent.is_empty() && s.agent.trim().is_empty() {
            sink.error(
                Code::InvalidValue,
                loc.step_field(i, "agent"),
                Some(&s.key),
                "`agent` is blank; name an agent such as `backend`".into(),
            );
        }
        let prompt_given = map.is_none_or(|m| m.step_field(i, "prompt").is_some());
        if s.kind != StepType::Workflow && s.prompt.trim().is_empty() && prompt_given {
            let what = if s.kind == StepType::Approval {
                "write what the approver decides"
            } else {
                "write what the agent should do"
            };
            sink.error(
                Code::InvalidValue,
                loc.step_field(i, "prompt"),
                Some(&s.key),
                format!("`prompt` is empty; {what}"),
            );
        }
        check_kind(s, i, map, &loc, sink);
        check_settings(s, i, &loc, sink);
    }
    for name in wf.inputs.keys() {
        if let Some(&i) = index.get(name.as_str()) {
            let span = map
                .and_then(|m| m.inputs.iter().find(|f| f.name == name.as_str()))
                .map(|f| f.key);
            sink.error(
                Code::InvalidValue,
                span.or(loc.step_anchor(i)),
                None,
                format!("input `{name}` has the same name as a step; rename one so `{{{{{name}}}}}` is unambiguous"),
            );
        }
    }

    // Dependencies.
    let mut edges = Vec::new();
    for (i, s) in wf.steps.iter().enumerate() {
        let label = (!s.key.is_empty()).then_some(s.key.as_str());
        for (j, d) in s.dependencies.iter().enumerate() {
            if s.dependencies[..j].contains(d) {
                sink.warn(
                    Code::DuplicateDependency,
                    loc.dependency(i, j),
                    label,
                    format!("`{d}` is listed twice in `dependencies`; remove one"),
                );
                continue;
            }
            if *d == s.key {
                sink.error(
                    Code::SelfDependency,
                    loc.dependency(i, j),
                    label,
                    format!("step `{d}` depends on itself; remove `{d}` from its `dependencies`"),
                );
                sound = false;
            } else if let Some(&target) = index.get(d.as_str()) {
                edges.push((target, i));
            } else {
                // Declaration order: the first of equally close keys wins, every run.
                let hint = suggest(
                    d,
                    wf.steps
                        .iter()
                        .map(|s| s.key.as_str())
                        .filter(|k| !k.is_empty()),
                )
                .map(|k| format!("did you mean `{k}`? "))
                .unwrap_or_default();
                sink.error(
                    Code::MissingDependency,
                    loc.dependency(i, j),
                    label,
                    format!("step `{}` depends on `{d}`, which is not a step; {hint}declare it or remove the dependency", s.key),
                );
                sound = false;
            }
        }
    }

    // Graph and cycles.
    let graph = match Graph::build(n, edges.iter().copied()) {
        Ok(g) => Some(g),
        Err(cycles) => {
            for cycle in cycles {
                let mut names: Vec<&str> =
                    cycle.iter().map(|&i| wf.steps[i].key.as_str()).collect();
                names.push(names[0]);
                let first = cycle[0];
                let next = &wf.steps[cycle.get(1).copied().unwrap_or(first)].key;
                let dep_pos = wf.steps[first].dependencies.iter().position(|d| d == next);
                let span = dep_pos
                    .and_then(|j| loc.dependency(first, j))
                    .or(loc.step_anchor(first));
                sink.error(
                    Code::Cycle,
                    span,
                    Some(&wf.steps[first].key),
                    format!(
                        "dependency cycle: {} (each step depends on the next); remove one of these dependencies",
                        names.join(" → ")
                    ),
                );
            }
            sound = false;
            None
        }
    };
    let graph = if sound { graph } else { None };

    // Templates, conditions and schemas.
    // Prompts are only scanned here (every placeholder checked, none built): a plan
    // parses a prompt when its step first runs.
    let mut prompts_ok = true;
    // Every placeholder of a step's prompt, `forEach` and `inputs`, with the field
    // it is in, step after step.
    let mut prompt_refs: Vec<(usize, PlaceholderRef<'_>, &'static str)> = Vec::with_capacity(n);
    let mut conditions: Vec<Option<Box<Condition>>> = Vec::with_capacity(n);
    let mut schemas = Vec::with_capacity(n);
    for (i, s) in wf.steps.iter().enumerate() {
        let label = (!s.key.is_empty()).then_some(s.key.as_str());
        // The prompt as before forEach and sub-workflows (the hot path: every
        // step has one); their fields through `scan_field`.
        if let Err(errs) = Template::scan(&s.prompt, |ph| prompt_refs.push((i, ph, "prompt"))) {
            prompts_ok = false;
            for e in errs {
                let raw = &s.prompt[e.range.clone()];
                let span = loc.inside(text, loc.step_field(i, "prompt"), raw, &mut 0);
                sink.error(
                    Code::InvalidValue,
                    span,
                    label,
                    format!("in `prompt`: {}", e.message),
                );
            }
        }
        let mut scan_field = |field: &'static str, t: &'w str, sink: &mut Sink<'_>| {
            if let Err(errs) = Template::scan(t, |ph| prompt_refs.push((i, ph, field))) {
                prompts_ok = false;
                for e in errs {
                    let raw = &t[e.range.clone()];
                    let span = loc.inside(text, loc.step_field(i, field), raw, &mut 0);
                    sink.error(
                        Code::InvalidValue,
                        span,
                        label,
                        format!("in `{field}`: {}", e.message),
                    );
                }
            }
        };
        match &s.for_each {
            Some(ForEach::Template(t)) => {
                if Template::parse(t).is_ok_and(|t| t.as_single().is_none()) {
                    sink.error(
                        Code::InvalidValue,
                        loc.step_field(i, "forEach"),
                        label,
                        format!(
                            "`forEach` must be one placeholder that renders a list, like `\"{{{{parse.result.files}}}}\"`, or a list of items; `{t}` is not one placeholder"
                        ),
                    );
                }
                scan_field("forEach", t, sink);
            }
            Some(ForEach::List(items)) => {
                for v in items {
                    each_text(v, &mut |t| scan_field("forEach", t, sink));
                }
            }
            None => {}
        }
        for v in s.inputs.values() {
            each_text(v, &mut |t| scan_field("inputs", t, sink));
        }
        conditions.push(match &s.when {
            None => None,
            Some(w) => match Condition::parse(w) {
                Ok(c) => Some(Box::new(c)),
                Err(e) => {
                    let raw = w.get(e.range.clone()).unwrap_or("");
                    let field = loc.step_field(i, "when");
                    let span = if raw.is_empty() {
                        field
                    } else {
                        loc.inside(text, field, raw, &mut 0)
                    };
                    sink.error(
                        Code::InvalidValue,
                        span,
                        label,
                        format!("in `when`: {}", e.message),
                    );
                    None
                }
            },
        });
        schemas.push(match &s.output_schema {
            None => None,
            Some(v) => match CompiledSchema::compile(v) {
                Ok(c) => Some(Box::new(c)),
                Err(errs) => {
                    for e in errs {
                        sink.error(
                            Code::InvalidValue,
                            loc.step_field(i, "outputSchema"),
                            label,
                            format!("in `outputSchema` {e}"),
                        );
                    }
                    None
                }
            },
        });
        if s.kind == StepType::Approval
            && s.on_timeout == Some(OnTimeout::Approve)
            && let Some(Some(schema)) = schemas.last()
            && !schema.is_valid(&Value::Null)
        {
            sink.error(
                Code::InvalidValue,
                loc.step_field(i, "onTimeout"),
                label,
                "`onTimeout: approve` approves without data, but `outputSchema` does not accept null; let the schema accept null (`type: [object, \"null\"]`) or use `onTimeout: reject`".into(),
            );
        }
    }

    // Placeholder references.
    // Sorted `Vec`s as sets (a few names each; one `BTreeSet` type less in the wasm).
    let mut used_inputs: Vec<&str> = Vec::new();
    let mut undeclared: Vec<&str> = Vec::new();
    let mut ancestors: Option<Vec<BitSet>> = None;
    let mut refs: Vec<(PlaceholderRef<'_>, &'static str)> = Vec::new();
    let mut next_prompt_ref = 0;
    for (i, s) in wf.steps.iter().enumerate() {
        let label = (!s.key.is_empty()).then_some(s.key.as_str());
        refs.clear();
        while let Some(&(step, ph, field)) = prompt_refs.get(next_prompt_ref)
            && step == i
        {
            refs.push((ph, field));
            next_prompt_ref += 1;
        }
        if let Some(c) = &conditions[i] {
            refs.extend(c.placeholders().into_iter().map(|p| (p.into(), "when")));
        }
        // Positions are only computed for problems: find the n-th occurrence of
        // the placeholder's text in the field's source.
        let span_of = |j: usize| {
            let (ph, field) = refs[j];
            let nth = refs[..j]
                .iter()
                .filter(|(p, f)| *f == field && p.raw == ph.raw)
                .count();
            let mut cursor = 0;
            let mut span = None;
            for _ in 0..=nth {
                span = loc.inside(text, loc.step_field(i, field), ph.raw, &mut cursor);
            }
            span
        };
        for (j, &(ph, field)) in refs.iter().enumerate() {
            let raw = ph.raw;
            // One lookup: whether the root is a step, and which.
            let root_index = index.get(ph.root).copied();
            if ph.root == "item" || ph.root == "index" {
                let named = root_index.is_some() || wf.inputs.contains_key(ph.root);
                let per_item = has_for_each(s, i, map) && matches!(field, "prompt" | "inputs");
                if per_item {
                    if named {
                        let (a, the) = if root_index.is_some() {
                            ("a step", "the step")
                        } else {
                            ("an input", "the input")
                        };
                        let meaning = if ph.root == "item" {
                            "value"
                        } else {
                            "position"
                        };
                        sink.error(
                            Code::InvalidValue,
                            span_of(j),
                            label,
                            format!(
                                "`{raw}` is ambiguous: in a forEach step `{}` is the item's {meaning}, but {a} has that name too; rename {the}",
                                ph.root
                            ),
                        );
                    }
                    continue;
                }
                if !named {
                    let why = match field {
                        "when" => "the condition decides about the whole step, before any item; filter the list upstream instead".to_owned(),
                        "forEach" => "`forEach` computes the list the items come from".to_owned(),
                        _ => format!("it is only defined in a step with `forEach`; add `forEach` to `{}` or use an input or a step result", s.key),
                    };
                    sink.error(
                        Code::ItemOutsideForeach,
                        span_of(j),
                        label,
                        format!("`{raw}` cannot be used here: {why}"),
                    );
                    continue;
                }
            }
            match ph.classify(|_| root_index.is_some()) {
                Err(m) => sink.error(Code::InvalidValue, span_of(j), label, m),
                Ok(true) => {
                    let key = ph.root;
                    let target = root_index.unwrap_or(i);
                    if target == i {
                        sink.error(Code::PlaceholderNotUpstream, span_of(j), label, format!("`{raw}` refers to this step's own result, which does not exist while it runs"));
                    } else if let Some(g) = &graph {
                        let direct = s.dependencies.iter().any(|d| d == key);
                        if !direct {
                            let sets = ancestors.get_or_insert_with(|| g.ancestor_sets());
                            if !sets[i].contains(target) {
                                sink.error(
                                    Code::PlaceholderNotUpstream,
                                    span_of(j),
                                    label,
                                    format!("`{raw}` uses the result of `{key}`, which is not upstream of `{}`; add `{key}` to its `dependencies`", s.key),
                                );
                            }
                        }
                    }
                }
                Ok(false) => {
                    let name = ph.root;
                    if wf.inputs.contains_key(name) {
                        insert_sorted(&mut used_inputs, name);
                    } else if ph.first_is_result {
                        // Declaration order: the first of equally close keys wins, every run.
                        let keys = wf
                            .steps
                            .iter()
                            .map(|s| s.key.as_str())
                            .filter(|k| !k.is_empty());
                        let hint = match suggest(name, keys) {
                            Some(k) => format!("did you mean `{{{{{k}.result}}}}`?"),
                            None => format!(
                                "declare `{name}` under `inputs` or use an existing step's key"
                            ),
                        };
                        sink.error(
                            Code::UnknownPlaceholder,
                            span_of(j),
                            label,
                            format!("`{raw}` refers to `{name}`, which is no step and no declared input; {hint}"),
                        );
                    } else {
                        insert_sorted(&mut used_inputs, name);
                        if insert_sorted(&mut undeclared, name) {
                            sink.warn(
                                Code::UndeclaredInput,
                                span_of(j),
                                label,
                                format!("`{raw}` uses input `{name}`, which `inputs` does not declare; it must be supplied at run time (declare it to document it or give a default)"),
                            );
                        }
                    }
                }
            }
        }
    }
    check_outputs(
        wf,
        map,
        &index,
        &mut used_inputs,
        &mut undeclared,
        sink,
        &mut prompts_ok,
    );
    for name in wf.inputs.keys() {
        if used_inputs.binary_search(&name.as_str()).is_err() {
            let span = map
                .and_then(|m| m.inputs.iter().find(|f| f.name == name.as_str()))
                .map(|f| f.key);
            sink.warn(Code::UnusedInput, span, None, format!("input `{name}` is declared but no prompt or condition uses it; remove it or use `{{{{{name}}}}}`"));
        }
    }
    // `parallel: true` where nothing can run alongside.
    if let Some(g) = &graph {
        let flagged: Vec<usize> = (0..n).filter(|&i| wf.steps[i].parallel).collect();
        let budget = flagged.len().saturating_mul(n + edges.len());
        if !flagged.is_empty() && budget <= 5_000_000 {
            for i in flagged {
                let comparable = g.ancestors(i).len() + g.descendants(i).len();
                let alone = comparable + 1 == n || wf.config.parallelism == 1;
                if alone {
                    let why = if wf.config.parallelism == 1 {
                        "`config.parallelism` is 1"
                    } else {
                        "every other step is upstream or downstream of it"
                    };
                    sink.warn(
                        Code::IneffectiveParallel,
                        loc.step_field_key(i, "parallel"),
                        Some(&wf.steps[i].key),
                        format!("`parallel: true` has no effect: {why}"),
                    );
                }
            }
        }
    }
    let input_names = crate::sort::btree_set(
        wf.inputs
            .keys()
            .cloned()
            .chain(used_inputs.iter().map(|s| (*s).to_owned())),
    );
    Checked {
        graph,
        input_names,
        prompts_ok,
        conditions,
        schemas,
    }
}

/// The fields a step of each type takes, beyond the common ones: a field of
/// another type is an error that says which type it belongs to.
fn check_kind(s: &Step, i: usize, map: Option<&SourceMap>, loc: &Locator<'_>, sink: &mut Sink<'_>) {
    // The common case, cheaply: a prompt step with none of the other types'
    // fields (one written with a wrong value was reported by the loader).
    let others = s.workflow.is_some()
        || !s.inputs.is_empty()
        || s.for_each.is_some()
        || s.max_concurrency.is_some()
        || s.max_items.is_some()
        || s.on_timeout.is_some();
    if s.kind.is_prompt() && !others && map.is_some() {
        return;
    }
    let label = (!s.key.is_empty()).then_some(s.key.as_str());
    // Written in the file (text), or set (a workflow that came as data).
    let present = |field: &str| match map {
        Some(m) => m.step_field(i, field).is_some(),
        None => match field {
            "agent" => !s.agent.is_empty(),
            "prompt" => !s.prompt.is_empty(),
            "workflow" => s.workflow.is_some(),
            "inputs" => !s.inputs.is_empty(),
            "forEach" => s.for_each.is_some(),
            "maxConcurrency" => s.max_concurrency.is_some(),
            "maxItems" => s.max_items.is_some(),
            "onTimeout" => s.on_timeout.is_some(),
            "retryPolicy" => s.retry_policy.is_some(),
            "outputSchema" => s.output_schema.is_some(),
            "model" => s.model.is_some(),
            "temperature" => s.temperature.is_some(),
            "maxTokens" => s.max_tokens.is_some(),
            "system" => s.system.is_some(),
            "cache" => s.cache.is_some(),
            _ => false,
        },
    };
    // A mistyped `type` was reported by the loader: do not guess what it takes.
    let type_text = map
        .and_then(|m| m.step_field(i, "type"))
        .and_then(|f| sink.text().and_then(|t| t.get(f.value.range())));
    if s.kind.is_prompt() && type_text.is_some_and(|t| t.trim_matches(['"', '\'']) != "prompt") {
        return;
    }
    let mut refuse = |field: &str, why: &str| {
        if present(field) {
            sink.error(
                Code::InvalidValue,
                loc.step_field_key(i, field),
                label,
                format!("`{field}` {why}"),
            );
        }
    };
    match s.kind {
        StepType::Prompt => {
            let other = "belongs to `type: workflow` steps; add `type: workflow` or remove it";
            refuse("workflow", other);
            refuse("inputs", other);
            refuse(
                "onTimeout",
                "belongs to `type: approval` steps; add `type: approval` or remove it",
            );
        }
        StepType::Approval => {
            refuse(
                "agent",
                "does not apply to an approval step: a person decides; remove it",
            );
            let other = "belongs to `type: workflow` steps; remove it";
            refuse("workflow", other);
            refuse("inputs", other);
            refuse(
                "forEach",
                "is not supported on approval steps (a decision is about the whole step); ask once about the list, or run a sub-workflow with an approval per item",
            );
            refuse(
                "retryPolicy",
                "does not apply to an approval step: a decision is not retried; remove it",
            );
            for f in SETTINGS {
                refuse(
                    f,
                    "does not apply to an approval step: no model is asked; remove it",
                );
            }
        }
        StepType::Workflow => {
            refuse(
                "agent",
                "does not apply to a `type: workflow` step: the child workflow's steps name their agents; remove it",
            );
            refuse(
                "prompt",
                "does not apply to a `type: workflow` step: pass values with `inputs`; remove it",
            );
            refuse("onTimeout", "belongs to `type: approval` steps; remove it");
            refuse(
                "outputSchema",
                "does not apply to a `type: workflow` step: the child's result is its `outputs`; remove it",
            );
            for f in SETTINGS {
                refuse(
                    f,
                    "does not apply to a `type: workflow` step: set it on the child workflow's steps; remove it",
                );
            }
        }
    }
    if !has_for_each(s, i, map) {
        refuse("maxConcurrency", "only applies to a step with `forEach`");
        refuse("maxItems", "only applies to a step with `forEach`");
    }
    if s.kind == StepType::Approval && s.timeout_ms.is_none() {
        refuse(
            "onTimeout",
            "needs `timeoutMs` (how long to wait for the decision)",
        );
    }
    if let Some(w) = &s.workflow
        && w.trim().is_empty()
    {
        sink.error(
            Code::InvalidValue,
            loc.step_field(i, "workflow"),
            label,
            "`workflow` is blank; give a path such as `./child.yaml`".into(),
        );
    }
    if map.is_none() {
        // A workflow that came as data: the loader did not check what is required.
        let required: &[(&str, bool)] = match s.kind {
            StepType::Prompt => &[
                ("agent", s.agent.is_empty()),
                ("prompt", s.prompt.is_empty()),
            ],
            StepType::Approval => &[("prompt", s.prompt.is_empty())],
            StepType::Workflow => &[("workflow", s.workflow.is_none())],
        };
        for (field, missing) in required {
            if *missing {
                sink.error(
                    Code::Schema,
                    None,
                    label,
                    format!("the step has no `{field}`"),
                );
            }
        }
    }
}

/// A step's own model settings (prompt steps only).
const SETTINGS: [&str; 5] = ["model", "temperature", "maxTokens", "system", "cache"];

/// The ranges of a step's own model settings (their types were checked by the
/// loader; a workflow that came as data is checked here too).
fn check_settings(s: &Step, i: usize, loc: &Locator<'_>, sink: &mut Sink<'_>) {
    let label = (!s.key.is_empty()).then_some(s.key.as_str());
    if let Some(m) = &s.model
        && m.trim().is_empty()
    {
        sink.error(
            Code::InvalidValue,
            loc.step_field(i, "model"),
            label,
            "`model` is blank; name a model such as `claude-sonnet-4-5`, or remove it to use the agent's".into(),
        );
    }
    if let Some(t) = s.temperature
        && !(t.is_finite() && (0.0..=2.0).contains(&t))
    {
        sink.error(
            Code::InvalidValue,
            loc.step_field(i, "temperature"),
            label,
            format!("`temperature` must be between 0 and 2, not {t}"),
        );
    }
    if s.max_tokens == Some(0) {
        sink.error(
            Code::InvalidValue,
            loc.step_field(i, "maxTokens"),
            label,
            "`maxTokens` must be at least 1; remove it to use the agent's".into(),
        );
    }
}

/// The step has a `forEach` (written, even if its value is wrong: that is
/// reported once, not again through `{{item}}` or `maxConcurrency`).
fn has_for_each(s: &Step, i: usize, map: Option<&SourceMap>) -> bool {
    s.for_each.is_some() || map.is_some_and(|m| m.step_field(i, "forEach").is_some())
}

/// Every text inside a value (in lists and mappings too), in order.
fn each_text<'v>(v: &'v Value, f: &mut dyn FnMut(&'v str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|x| each_text(x, f)),
        Value::Object(m) => m.values().for_each(|x| each_text(x, f)),
        _ => {}
    }
}

/// Top-level `outputs`: templates over any step's result (they are rendered when
/// the run completes) and the inputs.
#[allow(clippy::too_many_arguments)]
fn check_outputs<'w>(
    wf: &'w Workflow,
    map: Option<&SourceMap>,
    index: &KeyIndex<'_>,
    used_inputs: &mut Vec<&'w str>,
    undeclared: &mut Vec<&'w str>,
    sink: &mut Sink<'_>,
    templates_ok: &mut bool,
) {
    let text = sink.text();
    for (name, template) in &wf.outputs {
        let field = map
            .and_then(|m| m.outputs.iter().find(|f| f.name == name.as_str()))
            .map(|f| f.value);
        let loc = Locator { map };
        let mut refs = Vec::new();
        if let Err(errs) = Template::scan(template, |ph| refs.push(ph)) {
            *templates_ok = false;
            for e in errs {
                let raw = &template[e.range.clone()];
                let span = loc.inside(text, field, raw, &mut 0);
                sink.error(
                    Code::InvalidValue,
                    span,
                    None,
                    format!("in output `{name}`: {}", e.message),
                );
            }
        }
        let mut cursor = 0;
        for ph in refs {
            let span = loc.inside(text, field, ph.raw, &mut cursor);
            let raw = ph.raw;
            let is_step = index.contains_key(ph.root);
            if !is_step && !wf.inputs.contains_key(ph.root) && matches!(ph.root, "item" | "index") {
                sink.error(
                    Code::ItemOutsideForeach,
                    span,
                    None,
                    format!("`{raw}` cannot be used in `outputs`: it is only defined in a step with `forEach`"),
                );
                continue;
            }
            match ph.classify(|_| is_step) {
                Err(m) => sink.error(
                    Code::InvalidValue,
                    span,
                    None,
                    format!("in output `{name}`: {m}"),
                ),
                Ok(true) => {}
                Ok(false) => {
                    let root = ph.root;
                    if wf.inputs.contains_key(root) {
                        insert_sorted(used_inputs, root);
                    } else if ph.first_is_result {
                        let keys = wf
                            .steps
                            .iter()
                            .map(|s| s.key.as_str())
                            .filter(|k| !k.is_empty());
                        let hint = match suggest(root, keys) {
                            Some(k) => format!("did you mean `{{{{{k}.result}}}}`?"),
                            None => "name a step of this workflow".to_owned(),
                        };
                        sink.error(
                            Code::UnknownPlaceholder,
                            span,
                            None,
                            format!("`{raw}` in output `{name}` refers to `{root}`, which is no step and no declared input; {hint}"),
                        );
                    } else {
                        insert_sorted(used_inputs, root);
                        if insert_sorted(undeclared, root) {
                            sink.warn(
                                Code::UndeclaredInput,
                                span,
                                None,
                                format!("`{raw}` uses input `{root}`, which `inputs` does not declare; it must be supplied at run time (declare it to document it or give a default)"),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// A suggestion for an invalid key.
fn slug(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let t = out.trim_matches('-');
    if t.is_empty() {
        "step".into()
    } else {
        t.chars().take(128).collect()
    }
}

/// Insert into a sorted `Vec` used as a set; true if `s` was not there yet.
fn insert_sorted<'a>(v: &mut Vec<&'a str>, s: &'a str) -> bool {
    match v.binary_search(&s) {
        Ok(_) => false,
        Err(at) => {
            v.insert(at, s);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Analyze `text` 32 times (32 hash seeds) and check that the `code` problem's
    /// message always holds `hint`.
    fn same_hint_every_run(text: &str, code: Code, hint: &str) {
        for _ in 0..32 {
            let a = analyze(text, &Options::for_file("x.yaml"));
            let e = a.report.errors.iter().find(|e| e.code == code);
            let message = e.map_or("", |e| e.message.as_str());
            assert!(message.contains(hint), "{code:?}: {message:?}");
        }
    }

    /// Of equally close step keys, the suggestion for a missing dependency is the
    /// first declared, in every run (it once came from a hash map's order).
    #[test]
    fn missing_dependency_suggestion_is_deterministic() {
        let text = "name: x\nsteps:\n  - {key: a1, agent: b, prompt: p}\n  - {key: a2, agent: b, prompt: p}\n  - {key: c, agent: b, prompt: p, dependencies: [a3]}\n";
        same_hint_every_run(text, Code::MissingDependency, "did you mean `a1`?");
    }

    /// Same for `{{x.result}}` naming no step: the hint came from the key index's
    /// (hash) order.
    #[test]
    fn unknown_placeholder_suggestion_is_deterministic() {
        let text = "name: x\nsteps:\n  - {key: a1, agent: b, prompt: p}\n  - {key: a2, agent: b, prompt: p}\n  - {key: c, agent: b, prompt: \"{{a3.result}}\", dependencies: [a1, a2]}\n";
        same_hint_every_run(
            text,
            Code::UnknownPlaceholder,
            "did you mean `{{a1.result}}`?",
        );
    }

    /// Positions come from the flat field and dependency lists of the source map.
    #[test]
    fn step_fields_and_dependencies_are_found_per_step() {
        let text = "name: x\nsteps:\n  - key: a\n    agent: b\n    prompt: p\n  - key: c\n    agent: b\n    prompt: p\n    dependencies: [a, zz]\n";
        let a = analyze(text, &Options::for_file("x.yaml"));
        let map = a.source_map.as_ref().expect("map");
        let at = |s: crate::source::Span| &text[s.range()];
        assert_eq!(map.step_field(1, "agent").map(|f| at(f.value)), Some("b"));
        assert_eq!(map.step_field(0, "dependencies"), None);
        assert_eq!(map.dependency(1, 1).map(at), Some("zz"));
        assert_eq!(map.dependency(0, 0), None);
        assert_eq!(map.dependency(1, 2), None);
        assert_eq!(at(map.steps[1].anchor()), "c");
        let e = &a.report.errors[0];
        assert_eq!(
            (e.code, e.line, e.column),
            (Code::MissingDependency, Some(9), Some(23))
        );
    }
}
