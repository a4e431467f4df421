//! In-place edits of workflow text, for editors that write back into the user's
//! file (the browser's step form and graph).
//!
//! Every edit is a pure function from text to text that splices only the bytes
//! it must, at the byte spans the parser recorded (the same spans a
//! [`crate::load::SourceMap`] holds): comments, blank lines, key order and the
//! quoting of untouched values survive. Values are written in the style of their
//! context: JSON in JSON, flow scalars inside `{…}`/`[…]`, and in block YAML plain
//! scalars when they read back unchanged, `|` literals for multi-line text, and
//! double quotes otherwise (a value that was single- or double-quoted keeps its
//! quotes where it can).
//!
//! Where an in-place splice is impossible or does not read back as intended
//! (merge keys, aliases, odd layouts), [`update_step`] falls back to re-emitting
//! just that step (in the file format's field order, styled like [`crate::emit`]).

use crate::load::valid_name;
use crate::model::Step;
use crate::parse::{Entry, Format, Limits, Node, NodeKind, Scalar, parse, resolve};
use crate::template::Template;
use crate::validate::{Options, analyze};
use serde_json::{Map, Value};

/// Why an edit was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("the text does not parse ({0}); fix the syntax first")]
    Syntax(String),
    #[error("the workflow has no `steps` list")]
    NoSteps,
    #[error("there is no step number {0}")]
    NoStep(usize),
    #[error("step {0} is not a mapping")]
    NotAMapping(usize),
    #[error("`{0}` is not a valid step key: use letters, digits, `_` and `-`")]
    InvalidKey(String),
    #[error("a step with the key `{0}` already exists")]
    DuplicateKey(String),
    #[error("cannot edit this in place: {0}")]
    NotInPlace(String),
    #[error("the edit did not read back as intended: {0}")]
    Unverified(String),
}

type Result<T> = std::result::Result<T, EditError>;

/// Replace `start..end` with `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Splice {
    start: usize,
    end: usize,
    text: String,
}

impl Splice {
    fn new(start: usize, end: usize, text: impl Into<String>) -> Splice {
        Splice {
            start,
            end: end.max(start),
            text: text.into(),
        }
    }
}

/// Apply non-overlapping splices.
fn apply(text: &str, mut splices: Vec<Splice>) -> Result<String> {
    crate::sort::sort_by_key(&mut splices, |s| (s.start, s.end));
    for w in splices.windows(2) {
        if w[0].end > w[1].start {
            return Err(EditError::NotInPlace("two changes overlap".into()));
        }
    }
    let mut out = String::with_capacity(text.len() + 64);
    let mut at = 0;
    for s in &splices {
        if s.end > text.len() || !text.is_char_boundary(s.start) || !text.is_char_boundary(s.end) {
            return Err(EditError::NotInPlace(
                "a position is outside the text".into(),
            ));
        }
        out.push_str(&text[at..s.start]);
        out.push_str(&s.text);
        at = s.end;
    }
    out.push_str(&text[at..]);
    Ok(out)
}

/// How values are written at a place in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Json,
    /// Inside a YAML flow collection.
    Flow,
    /// A block mapping's value; `indent` is the column of the mapping's keys.
    Block {
        indent: usize,
    },
}

/// The quoting a scalar had, to keep it where possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    Plain,
    Single,
    Double,
}

/// The parsed text and helpers over its bytes.
struct Doc<'t> {
    text: &'t str,
    format: Format,
    root: Node<'t>,
}

impl<'t> Doc<'t> {
    fn parse(text: &'t str, format: Option<Format>) -> Result<Doc<'t>> {
        let doc =
            parse(text, format, &Limits::default()).map_err(|e| EditError::Syntax(e.message))?;
        Ok(Doc {
            text,
            format: doc.format,
            root: doc.root,
        })
    }

    fn bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }

    fn root_entries(&self) -> &[Entry<'t>] {
        match &self.root.kind {
            NodeKind::Map(e) => e,
            _ => &[],
        }
    }

    fn steps_entry(&self) -> Result<&Entry<'t>> {
        self.root_entries()
            .iter()
            .find(|e| e.key == "steps")
            .ok_or(EditError::NoSteps)
    }

    fn steps(&self) -> Result<&[Node<'t>]> {
        match &self.steps_entry()?.value.kind {
            NodeKind::Seq(items) => Ok(items),
            _ => Err(EditError::NoSteps),
        }
    }

    fn step(&self, i: usize) -> Result<&Node<'t>> {
        let node = self.steps()?.get(i).ok_or(EditError::NoStep(i))?;
        match node.kind {
            NodeKind::Map(_) => Ok(node),
            _ => Err(EditError::NotAMapping(i)),
        }
    }

    fn line_start(&self, pos: usize) -> usize {
        self.text[..pos].rfind('\n').map_or(0, |p| p + 1)
    }

    fn line_end(&self, pos: usize) -> usize {
        self.text[pos..]
            .find('\n')
            .map_or(self.text.len(), |p| pos + p)
    }

    fn column(&self, pos: usize) -> usize {
        pos - self.line_start(pos)
    }

    /// Only whitespace between the start of the line and `pos`.
    fn starts_line(&self, pos: usize) -> bool {
        self.text[self.line_start(pos)..pos].trim().is_empty()
    }

    fn is_flow(&self, node: &Node<'_>) -> bool {
        matches!(
            self.bytes().get(node.span.start as usize),
            Some(b'{' | b'[')
        )
    }

    /// A `|` or `>` scalar (its span covers the content lines only).
    fn is_block_scalar(&self, node: &Node<'_>) -> bool {
        match &node.kind {
            NodeKind::Scalar { quoted: true, .. } => {
                self.format == Format::Yaml
                    && !matches!(
                        self.bytes().get(node.span.start as usize),
                        Some(b'"' | b'\'')
                    )
            }
            _ => false,
        }
    }

    fn quote(&self, node: &Node<'_>) -> Quote {
        match self.bytes().get(node.span.start as usize) {
            _ if !matches!(node.kind, NodeKind::Scalar { quoted: true, .. })
                || self.is_block_scalar(node) =>
            {
                Quote::Plain
            }
            Some(b'\'') => Quote::Single,
            _ => Quote::Double,
        }
    }

    /// Where a node's own text really ends (block collections and block scalars
    /// have spans that run on to the next token).
    fn node_end(&self, node: &Node<'_>) -> usize {
        let span = node.span.range();
        if self.is_block_scalar(node) {
            let body = &self.text[span.clone()];
            return span.start + body.trim_end().len();
        }
        if self.is_flow(node) {
            return span.end;
        }
        match &node.kind {
            NodeKind::Scalar { .. } => span.end,
            NodeKind::Seq(items) => items.last().map_or(span.end, |n| self.node_end(n)),
            NodeKind::Map(entries) => entries.last().map_or(span.end, |e| self.entry_end(e)),
        }
    }

    /// The byte after `key:` (the colon), searching from the end of the key.
    fn after_colon(&self, e: &Entry<'_>) -> usize {
        let from = e.key_span.end as usize;
        self.text[from..].find(':').map_or(from, |p| from + p + 1)
    }

    fn entry_end(&self, e: &Entry<'_>) -> usize {
        if e.value.span.start == e.value.span.end {
            // An implicit null (`key:`): the entry ends at its colon.
            return self.after_colon(e);
        }
        self.node_end(&e.value)
    }

    /// The column of the `-` that introduces a block sequence item.
    fn dash_before(&self, node: &Node<'_>) -> Option<usize> {
        let start = node.span.start as usize;
        let before = self.text[..start].trim_end_matches([' ', '\t']);
        before.ends_with('-').then(|| before.len() - 1)
    }

    fn ctx_of_map(&self, map: &Node<'_>) -> Ctx {
        if self.format == Format::Json {
            Ctx::Json
        } else if self.is_flow(map) {
            Ctx::Flow
        } else {
            let indent = match &map.kind {
                NodeKind::Map(e) if !e.is_empty() => self.column(e[0].key_span.start as usize),
                _ => self.column(map.span.start as usize),
            };
            Ctx::Block { indent }
        }
    }

    fn key_text(&self, name: &str) -> String {
        if self.format == Format::Json {
            Value::String(name.to_owned()).to_string()
        } else {
            yaml_string(name, Ctx::Flow, Quote::Plain)
        }
    }

    /// Entries merged in (`<<: *x`) or copied by an alias live elsewhere in the text.
    fn owns(&self, map: &Node<'_>, e: &Entry<'_>) -> bool {
        let (s, k) = (map.span, e.key_span);
        k.start >= s.start && k.end <= s.end.max(self.entry_end(e) as u32)
    }
}

fn entries<'a, 't>(node: &'a Node<'t>) -> &'a [Entry<'t>] {
    match &node.kind {
        NodeKind::Map(e) => e,
        _ => &[],
    }
}

// ---- Writing values ----

/// Can `s` be written as a plain scalar, in block and flow context alike?
fn plain_ok(s: &str) -> bool {
    if s.is_empty() || s.trim() != s || s.contains('\n') {
        return false;
    }
    if !matches!(resolve(s, false), Scalar::Str(_)) {
        return false; // would read as null, a boolean or a number
    }
    let first = s.chars().next().unwrap_or(' ');
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    if s.contains(": ")
        || s.contains(" #")
        || s.ends_with(':')
        || s.contains(['[', ']', '{', '}', ','])
    {
        return false;
    }
    s.chars().all(|c| !c.is_control())
}

fn json_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// A one-line YAML scalar for a string, keeping the preferred quoting if possible.
fn yaml_string(s: &str, ctx: Ctx, pref: Quote) -> String {
    if ctx == Ctx::Json {
        return json_string(s);
    }
    match pref {
        Quote::Plain if plain_ok(s) => s.to_owned(),
        Quote::Single if !s.contains('\n') && s.chars().all(|c| !c.is_control()) => {
            format!("'{}'", s.replace('\'', "''"))
        }
        _ => json_string(s),
    }
}

/// A `|` literal block for a multi-line string, content at column `indent`
/// (`None` when a literal cannot hold it exactly).
fn literal_block(s: &str, indent: usize) -> Option<String> {
    if !s.contains('\n') || s.contains('\r') || s.starts_with([' ', '\t']) || s.ends_with("\n\n") {
        return None;
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return None;
    }
    let body = s.strip_suffix('\n').unwrap_or(s);
    // Lines of only blanks would confuse indentation detection.
    if body
        .split('\n')
        .any(|l| !l.is_empty() && l.trim().is_empty())
    {
        return None;
    }
    let mut out = String::from(if s.ends_with('\n') { "|" } else { "|-" });
    let pad = " ".repeat(indent);
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    Some(out)
}

/// A value on one line, in flow style (or JSON).
fn flow_value(v: &Value, ctx: Ctx, pref: Quote) -> String {
    match v {
        Value::String(s) => yaml_string(
            s,
            if ctx == Ctx::Json {
                Ctx::Json
            } else {
                Ctx::Flow
            },
            pref,
        ),
        Value::Null => "null".into(),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(|x| flow_value(x, ctx, Quote::Plain)).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, x)| {
                    let key = if ctx == Ctx::Json {
                        json_string(k)
                    } else {
                        yaml_string(k, Ctx::Flow, Quote::Plain)
                    };
                    format!("{key}: {}", flow_value(x, ctx, Quote::Plain))
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// A value for `key:` in context `ctx`. In block context the result may start
/// with a newline (a block mapping) or `|` (a literal); callers put a space
/// before anything else.
fn write_value(v: &Value, ctx: Ctx, pref: Quote) -> String {
    let Ctx::Block { indent } = ctx else {
        return flow_value(v, ctx, pref);
    };
    match v {
        Value::String(s) if s.contains('\n') => {
            literal_block(s, indent + 2).unwrap_or_else(|| json_string(s))
        }
        Value::Object(m) if !m.is_empty() => {
            let pad = " ".repeat(indent + 2);
            let mut out = String::new();
            for (k, x) in m {
                out.push('\n');
                out.push_str(&pad);
                out.push_str(&yaml_string(k, Ctx::Flow, Quote::Plain));
                out.push_str(": ");
                out.push_str(&flow_value(x, Ctx::Flow, Quote::Plain));
            }
            out
        }
        _ => flow_value(v, Ctx::Flow, pref),
    }
}

/// `key: value` for insertion (the key written for the format).
fn entry_text(doc: &Doc<'_>, name: &str, v: &Value, ctx: Ctx) -> String {
    let value = write_value(v, ctx, Quote::Plain);
    let sep = if value.starts_with('\n') { "" } else { " " };
    format!("{}:{sep}{value}", doc.key_text(name))
}

// ---- Mapping and sequence primitives ----

/// Set `name` in a mapping: replace its value, or add the entry.
fn set_in_map(doc: &Doc<'_>, map: &Node<'_>, name: &str, v: &Value) -> Result<Splice> {
    let ctx = doc.ctx_of_map(map);
    match entries(map).iter().find(|e| e.key == name) {
        Some(e) => replace_value(doc, map, e, v, ctx),
        None => insert_entry(doc, map, name, v, ctx),
    }
}

fn replace_value(
    doc: &Doc<'_>,
    map: &Node<'_>,
    e: &Entry<'_>,
    v: &Value,
    ctx: Ctx,
) -> Result<Splice> {
    if !doc.owns(map, e) {
        return Err(EditError::NotInPlace(format!(
            "`{}` comes from a merge key or alias",
            e.key
        )));
    }
    let pref = doc.quote(&e.value);
    let value_span = e.value.span.range();
    let Ctx::Block { .. } = ctx else {
        if value_span.is_empty() {
            return Ok(Splice::new(
                doc.after_colon(e),
                doc.after_colon(e),
                format!(" {}", flow_value(v, ctx, pref)),
            ));
        }
        return Ok(Splice::new(
            value_span.start,
            value_span.end,
            flow_value(v, ctx, pref),
        ));
    };
    // Block context: the value's indentation follows the key's column.
    let ctx = Ctx::Block {
        indent: doc.column(e.key_span.start as usize),
    };
    let new = write_value(v, ctx, pref);
    let inline_old = matches!(e.value.kind, NodeKind::Scalar { .. })
        && !value_span.is_empty()
        && !doc.is_block_scalar(&e.value);
    if inline_old && !new.contains('\n') {
        return Ok(Splice::new(value_span.start, value_span.end, new));
    }
    let start = doc.after_colon(e);
    let mut end = doc.entry_end(e);
    let sep = if new.starts_with('\n') { "" } else { " " };
    let mut text = format!("{sep}{new}");
    if new.contains('\n') {
        // A comment after the old value would end up inside the new block: keep it
        // on the first line instead.
        let line_end = doc.line_end(end);
        let rest = doc.text[end..line_end].trim();
        if !rest.is_empty() {
            let first = text.find('\n').unwrap_or(text.len());
            text.insert_str(first, &format!(" {rest}"));
            end = line_end;
        }
        if end == doc.text.len() && doc.text[..start].ends_with('\n') {
            text.push('\n');
        }
    }
    Ok(Splice::new(start, end, text))
}

fn insert_entry(doc: &Doc<'_>, map: &Node<'_>, name: &str, v: &Value, ctx: Ctx) -> Result<Splice> {
    let list = entries(map);
    match ctx {
        Ctx::Block { indent } => {
            let last = list
                .last()
                .ok_or_else(|| EditError::NotInPlace("an empty block mapping".into()))?;
            let pos = doc.line_end(doc.entry_end(last));
            let text = format!("\n{}{}", " ".repeat(indent), entry_text(doc, name, v, ctx));
            Ok(Splice::new(pos, pos, text))
        }
        Ctx::Json | Ctx::Flow => {
            let kv = entry_text(doc, name, v, ctx);
            let Some(last) = list.last() else {
                let open = map.span.start as usize + 1;
                return Ok(Splice::new(open, open, kv));
            };
            let pos = doc.node_end(&last.value).max(doc.entry_end(last));
            let multiline = doc.text[map.span.range()].contains('\n');
            let text = if multiline {
                format!(
                    ",\n{}{kv}",
                    " ".repeat(doc.column(last.key_span.start as usize))
                )
            } else {
                format!(", {kv}")
            };
            Ok(Splice::new(pos, pos, text))
        }
    }
}

/// Remove `name` from a mapping (`None` when it is not there).
fn remove_from_map(doc: &Doc<'_>, map: &Node<'_>, name: &str) -> Result<Option<Splice>> {
    let list = entries(map);
    let Some(j) = list.iter().position(|e| e.key == name) else {
        return Ok(None);
    };
    let e = &list[j];
    if !doc.owns(map, e) {
        return Err(EditError::NotInPlace(format!(
            "`{name}` comes from a merge key or alias"
        )));
    }
    let key_start = e.key_span.start as usize;
    // JSON keys are quoted: the span covers the quotes.
    if let Ctx::Block { .. } = doc.ctx_of_map(map) {
        let end = doc.line_end(doc.entry_end(e));
        if doc.starts_line(key_start) {
            let end = if end < doc.text.len() { end + 1 } else { end };
            let start = doc.line_start(key_start);
            // The last line of a file without final newline: take the newline before.
            let start = if end == doc.text.len() && !doc.text.ends_with('\n') && start > 0 {
                start - 1
            } else {
                start
            };
            return Ok(Some(Splice::new(start, end, "")));
        }
        // The first entry of a `- key: …` item: the next entry moves up.
        return match list.get(j + 1) {
            Some(next) => Ok(Some(Splice::new(
                key_start,
                next.key_span.start as usize,
                "",
            ))),
            None => Ok(Some(Splice::new(key_start, end, "{}"))),
        };
    }
    let splice = if let Some(next) = list.get(j + 1) {
        Splice::new(key_start, next.key_span.start as usize, "")
    } else if j > 0 {
        Splice::new(doc.entry_end(&list[j - 1]), doc.entry_end(e), "")
    } else {
        Splice::new(key_start, doc.entry_end(e), "")
    };
    Ok(Some(splice))
}

/// Remove item `j` of a sequence with more than one item.
fn remove_item(doc: &Doc<'_>, seq: &Node<'_>, j: usize) -> Result<Splice> {
    let NodeKind::Seq(items) = &seq.kind else {
        return Err(EditError::NotInPlace("not a list".into()));
    };
    let item = &items[j];
    if doc.is_flow(seq) {
        return Ok(if let Some(next) = items.get(j + 1) {
            Splice::new(item.span.start as usize, next.span.start as usize, "")
        } else if j > 0 {
            Splice::new(doc.node_end(&items[j - 1]), doc.node_end(item), "")
        } else {
            Splice::new(item.span.start as usize, doc.node_end(item), "")
        });
    }
    let dash = doc
        .dash_before(item)
        .ok_or_else(|| EditError::NotInPlace("a list item without `-`".into()))?;
    if !doc.starts_line(dash) {
        return Err(EditError::NotInPlace(
            "a list item that does not start its line".into(),
        ));
    }
    let start = doc.line_start(dash);
    let end = doc.line_end(doc.node_end(item));
    let end = if end < doc.text.len() { end + 1 } else { end };
    Ok(Splice::new(start, end, ""))
}

/// Append an item (already written for its context) to a non-empty sequence;
/// `block` gives the item's text for a block sequence at a dash column.
fn append_item(
    doc: &Doc<'_>,
    seq: &Node<'_>,
    flow: &str,
    block: impl Fn(usize) -> String,
) -> Result<Splice> {
    let NodeKind::Seq(items) = &seq.kind else {
        return Err(EditError::NotInPlace("not a list".into()));
    };
    if doc.is_flow(seq) {
        let Some(last) = items.last() else {
            let open = seq.span.start as usize + 1;
            return Ok(Splice::new(open, open, flow));
        };
        let pos = doc.node_end(last);
        let multiline = doc.text[seq.span.range()].contains('\n');
        let text = if multiline {
            let col = doc.column(last.span.start as usize);
            format!(",\n{}{}", " ".repeat(col), indent_lines(flow, col))
        } else {
            format!(", {flow}")
        };
        return Ok(Splice::new(pos, pos, text));
    }
    let last = items
        .last()
        .ok_or_else(|| EditError::NotInPlace("an empty block list".into()))?;
    let dash = doc
        .dash_before(last)
        .ok_or_else(|| EditError::NotInPlace("a list item without `-`".into()))?;
    let col = doc.column(dash);
    let pos = doc.line_end(doc.node_end(last));
    Ok(Splice::new(pos, pos, format!("\n{}", block(col))))
}

/// Indent every line after the first by `col` spaces.
fn indent_lines(s: &str, col: usize) -> String {
    let pad = " ".repeat(col);
    let mut out = String::with_capacity(s.len());
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            if !line.is_empty() {
                out.push_str(&pad);
            }
        }
        out.push_str(line);
    }
    out
}

// ---- Steps as text ----

/// A step's fields in the file format's order (serde_json maps sort their keys).
fn step_fields(step: &Step) -> Vec<(&'static str, Value)> {
    let mut out = vec![("key", Value::String(step.key.clone()))];
    if !step.kind.is_prompt() {
        out.push(("type", Value::String(step.kind.as_str().to_owned())));
    }
    if !step.agent.is_empty() || step.kind.is_prompt() {
        out.push(("agent", Value::String(step.agent.clone())));
    }
    if !step.prompt.is_empty() || step.kind != crate::model::StepType::Workflow {
        out.push(("prompt", Value::String(step.prompt.clone())));
    }
    for (name, value) in new_fields(step) {
        if let Some(v) = value {
            out.push((name, v));
        }
    }
    if !step.dependencies.is_empty() {
        out.push((
            "dependencies",
            step.dependencies
                .iter()
                .map(|d| Value::String(d.clone()))
                .collect(),
        ));
    }
    if step.parallel {
        out.push(("parallel", Value::Bool(true)));
    }
    if step.optional {
        out.push(("optional", Value::Bool(true)));
    }
    if let Some(t) = step.timeout_ms {
        out.push(("timeoutMs", Value::from(t)));
    }
    if let Some(o) = step.on_timeout {
        out.push(("onTimeout", Value::String(o.as_str().to_owned())));
    }
    if let Some(p) = &step.retry_policy {
        out.push(("retryPolicy", Value::Object(retry_json(p))));
    }
    if let Some(s) = &step.output_schema {
        out.push(("outputSchema", s.clone()));
    }
    if let Some(w) = &step.when {
        out.push(("when", Value::String(w.clone())));
    }
    for (name, value) in settings_fields(step) {
        if let Some(v) = value {
            out.push((name, v));
        }
    }
    out
}

/// A step's own model settings, in the file format's order (`None` when absent).
fn settings_fields(step: &Step) -> [(&'static str, Option<Value>); 5] {
    [
        ("model", step.model.clone().map(Value::String)),
        ("temperature", step.temperature.map(Value::from)),
        ("maxTokens", step.max_tokens.map(Value::from)),
        ("system", step.system.clone().map(Value::String)),
        (
            "cache",
            step.cache
                .map(|c| serde_json::to_value(c).unwrap_or(Value::Null)),
        ),
    ]
}

/// The fields of approvals, `forEach` and sub-workflows between `prompt` and
/// `dependencies`, in the file format's order (`None` when absent).
fn new_fields(step: &Step) -> [(&'static str, Option<Value>); 5] {
    [
        ("workflow", step.workflow.clone().map(Value::String)),
        (
            "inputs",
            (!step.inputs.is_empty()).then(|| {
                Value::Object(
                    step.inputs
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                )
            }),
        ),
        (
            "forEach",
            step.for_each.as_ref().map(|f| match f {
                crate::model::ForEach::Template(t) => Value::String(t.clone()),
                crate::model::ForEach::List(items) => Value::Array(items.clone()),
            }),
        ),
        ("maxConcurrency", step.max_concurrency.map(Value::from)),
        ("maxItems", step.max_items.map(Value::from)),
    ]
}

/// A step as block YAML starting with `- ` at column `dash` (lines joined by
/// `\n`, no final newline).
fn block_step(step: &Step, dash: usize) -> String {
    let indent = dash + 2;
    let mut out = format!("{}- ", " ".repeat(dash));
    for (j, (name, v)) in step_fields(step).into_iter().enumerate() {
        if j > 0 {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
        }
        let value = write_value(&v, Ctx::Block { indent }, Quote::Plain);
        let sep = if value.starts_with('\n') { "" } else { " " };
        out.push_str(&format!("{name}:{sep}{value}"));
    }
    out
}

/// A step in flow style or JSON (`pretty` spreads JSON over lines, two spaces
/// per level).
fn flow_step(step: &Step, ctx: Ctx, pretty: bool) -> String {
    let fields = step_fields(step);
    let key = |name: &str| {
        if ctx == Ctx::Json {
            json_string(name)
        } else {
            name.to_owned()
        }
    };
    let items: Vec<String> = fields
        .iter()
        .map(|(name, v)| format!("{}: {}", key(name), flow_value(v, ctx, Quote::Plain)))
        .collect();
    if pretty {
        format!("{{\n  {}\n}}", items.join(",\n  "))
    } else {
        format!("{{{}}}", items.join(", "))
    }
}

// ---- Public edits ----

fn parse_doc(text: &str, format: Option<Format>) -> Result<Doc<'_>> {
    Doc::parse(text, format)
}

/// Set a top-level field of step `i` (`agent`, `prompt`, `timeoutMs`, `when`,
/// `dependencies`, `retryPolicy`, …) to a value, adding the field if missing.
pub fn set_field(
    text: &str,
    format: Option<Format>,
    i: usize,
    field: &str,
    value: &Value,
) -> Result<String> {
    let doc = parse_doc(text, format)?;
    let step = doc.step(i)?;
    let splice = set_in_map(&doc, step, field, value)?;
    apply(text, vec![splice])
}

/// Remove a field of step `i` (no change when it is absent).
pub fn remove_field(text: &str, format: Option<Format>, i: usize, field: &str) -> Result<String> {
    let doc = parse_doc(text, format)?;
    let step = doc.step(i)?;
    match remove_from_map(&doc, step, field)? {
        Some(s) => apply(text, vec![s]),
        None => Ok(text.to_owned()),
    }
}

/// Set (`Some`) or remove (`None`) a field of step `i`'s `retryPolicy`
/// (`maxRetries`, `retryDelayMs`, `retryBackoffMultiplier`, `retryableErrors`),
/// adding the policy if missing.
pub fn set_retry_field(
    text: &str,
    format: Option<Format>,
    i: usize,
    field: &str,
    value: Option<&Value>,
) -> Result<String> {
    let doc = parse_doc(text, format)?;
    let step = doc.step(i)?;
    let policy = entries(step).iter().find(|e| e.key == "retryPolicy");
    let splice = match (policy, value) {
        (Some(p), Some(v)) if matches!(p.value.kind, NodeKind::Map(_)) => {
            set_in_map(&doc, &p.value, field, v)?
        }
        (Some(p), None) if matches!(p.value.kind, NodeKind::Map(_)) => {
            if entries(&p.value).iter().all(|e| e.key == field) {
                // The last field: an empty policy (which differs from none).
                set_in_map(&doc, step, "retryPolicy", &Value::Object(Map::new()))?
            } else {
                match remove_from_map(&doc, &p.value, field)? {
                    Some(s) => s,
                    None => return Ok(text.to_owned()),
                }
            }
        }
        (_, Some(v)) => {
            let mut m = Map::new();
            m.insert(field.to_owned(), v.clone());
            set_in_map(&doc, step, "retryPolicy", &Value::Object(m))?
        }
        (_, None) => return Ok(text.to_owned()),
    };
    apply(text, vec![splice])
}

/// The dependency items of a step node: (value, node).
fn dependency_nodes<'a, 't>(step: &'a Node<'t>) -> Option<(&'a Entry<'t>, &'a [Node<'t>])> {
    let e = entries(step).iter().find(|e| e.key == "dependencies")?;
    match &e.value.kind {
        NodeKind::Seq(items) => Some((e, items)),
        _ => Some((e, &[])),
    }
}

fn scalar_text<'a>(n: &'a Node<'_>) -> Option<&'a str> {
    match n.scalar() {
        Some(Scalar::Str(s)) => Some(s),
        _ => None,
    }
}

/// Make step `i` depend on `dep` (no change when it already does).
pub fn add_dependency(text: &str, format: Option<Format>, i: usize, dep: &str) -> Result<String> {
    let doc = parse_doc(text, format)?;
    let step = doc.step(i)?;
    let splice = match dependency_nodes(step) {
        Some((_, items)) if items.iter().any(|n| scalar_text(n) == Some(dep)) => {
            return Ok(text.to_owned());
        }
        Some((e, _)) if matches!(e.value.kind, NodeKind::Seq(_)) && doc.owns(step, e) => {
            let ctx = if doc.format == Format::Json {
                Ctx::Json
            } else {
                Ctx::Flow
            };
            let item = yaml_string(dep, ctx, Quote::Plain);
            append_item(&doc, &e.value, &item, |col| {
                format!("{}- {item}", " ".repeat(col))
            })?
        }
        Some((_, items)) => {
            let mut list: Vec<Value> = items
                .iter()
                .filter_map(scalar_text)
                .map(|s| Value::String(s.into()))
                .collect();
            list.push(Value::String(dep.into()));
            set_in_map(&doc, step, "dependencies", &Value::Array(list))?
        }
        None => set_in_map(
            &doc,
            step,
            "dependencies",
            &Value::Array(vec![Value::String(dep.into())]),
        )?,
    };
    apply(text, vec![splice])
}

/// The splice removing every `dep` from a step's dependencies (the field goes
/// when the list becomes empty).
fn remove_dependency_splice(doc: &Doc<'_>, step: &Node<'_>, dep: &str) -> Result<Option<Splice>> {
    let Some((e, items)) = dependency_nodes(step) else {
        return Ok(None);
    };
    let hits: Vec<usize> = (0..items.len())
        .filter(|&j| scalar_text(&items[j]) == Some(dep))
        .collect();
    match hits.as_slice() {
        [] => Ok(None),
        _ if hits.len() == items.len() => remove_from_map(doc, step, "dependencies"),
        [j] if doc.owns(step, e) => remove_item(doc, &e.value, *j).map(Some),
        _ => {
            let list: Vec<Value> = items
                .iter()
                .filter_map(scalar_text)
                .filter(|s| *s != dep)
                .map(|s| Value::String(s.into()))
                .collect();
            set_in_map(doc, step, "dependencies", &Value::Array(list)).map(Some)
        }
    }
}

/// Remove `dep` from step `i`'s dependencies.
pub fn remove_dependency(
    text: &str,
    format: Option<Format>,
    i: usize,
    dep: &str,
) -> Result<String> {
    let doc = parse_doc(text, format)?;
    let step = doc.step(i)?;
    match remove_dependency_splice(&doc, step, dep)? {
        Some(s) => apply(text, vec![s]),
        None => Ok(text.to_owned()),
    }
}

/// Add a step at the end of `steps`, in the style of the steps before it.
pub fn add_step(text: &str, format: Option<Format>, step: &Step) -> Result<String> {
    let doc = parse_doc(text, format)?;
    let entry = doc.steps_entry()?;
    if doc.steps()?.iter().any(|n| {
        entries(n)
            .iter()
            .any(|e| e.key == "key" && scalar_text(&e.value) == Some(&step.key))
    }) {
        return Err(EditError::DuplicateKey(step.key.clone()));
    }
    let seq = &entry.value;
    let ctx = if doc.format == Format::Json {
        Ctx::Json
    } else {
        Ctx::Flow
    };
    let empty = matches!(&seq.kind, NodeKind::Seq(items) if items.is_empty());
    let splice = if empty && doc.format == Format::Yaml && !doc.is_flow(&doc.root) {
        // `steps: []` in a block file: start a block list.
        let col = doc.column(entry.key_span.start as usize) + 2;
        Splice::new(
            doc.after_colon(entry),
            doc.node_end(seq),
            format!("\n{}", block_step(step, col)),
        )
    } else {
        let pretty = ctx == Ctx::Json && doc.text[seq.span.range()].contains('\n');
        let flow = flow_step(step, ctx, pretty);
        append_item(&doc, seq, &flow, |col| block_step(step, col))?
    };
    apply(text, vec![splice])
}

/// Remove step `i`, and remove it from the dependencies of every other step.
/// (Placeholders that use its result are left for validation to point out.)
pub fn remove_step(text: &str, format: Option<Format>, i: usize) -> Result<String> {
    let doc = parse_doc(text, format)?;
    let steps = doc.steps()?;
    let node = steps.get(i).ok_or(EditError::NoStep(i))?;
    let key = entries(node)
        .iter()
        .find(|e| e.key == "key")
        .and_then(|e| scalar_text(&e.value));
    let mut splices = Vec::new();
    if steps.len() == 1 {
        let entry = doc.steps_entry()?;
        let text = if doc.is_flow(&entry.value) || doc.format == Format::Json {
            "[]"
        } else {
            " []"
        };
        let start = if text == "[]" {
            entry.value.span.start as usize
        } else {
            doc.after_colon(entry)
        };
        splices.push(Splice::new(start, doc.node_end(&entry.value), text));
    } else {
        splices.push(remove_item(&doc, &doc.steps_entry()?.value, i)?);
    }
    if let Some(key) = key {
        for (j, other) in steps.iter().enumerate() {
            if j == i {
                continue;
            }
            if let Some(s) = remove_dependency_splice(&doc, other, key)? {
                splices.push(s);
            }
        }
    }
    apply(text, splices)
}

/// Byte ranges of `{{old…` placeholder roots in a field's source text.
fn placeholder_roots(src: &str, base: usize, old: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = src[from..].find("{{") {
        let open = from + p;
        from = open + 2;
        if open > 0 && src.as_bytes()[open - 1] == b'\\' {
            continue; // `\{{` is literal
        }
        let mut k = open + 2;
        while src.as_bytes().get(k) == Some(&b' ') {
            k += 1;
        }
        if src[k..].starts_with(old) {
            let after = src.as_bytes().get(k + old.len()).copied();
            let boundary =
                !matches!(after, Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
            if boundary {
                out.push((base + k, base + k + old.len()));
            }
        }
    }
    out
}

/// Does a template (prompt or condition) refer to `old` as a placeholder root?
fn refers_to(value: &str, old: &str) -> bool {
    match Template::parse(value) {
        Ok(t) => t.placeholders().any(|p| p.root == old),
        // Conditions are not templates; a textual look is good enough for them.
        Err(_) => value.contains("{{"),
    }
}

/// Every text node inside `n` (itself, or in its lists and mappings).
fn text_nodes<'a, 't>(n: &'a Node<'t>, out: &mut Vec<&'a Node<'t>>) {
    match &n.kind {
        NodeKind::Scalar { .. } => {
            if scalar_text(n).is_some() {
                out.push(n);
            }
        }
        NodeKind::Seq(items) => items.iter().for_each(|x| text_nodes(x, out)),
        NodeKind::Map(entries) => entries.iter().for_each(|e| text_nodes(&e.value, out)),
    }
}

/// Rename step `i` to `new_key`, updating every dependency on it and every
/// `{{old.result…}}` placeholder in prompts, conditions, `forEach` lists,
/// sub-workflow `inputs` and the workflow's `outputs`.
pub fn rename_step(text: &str, format: Option<Format>, i: usize, new_key: &str) -> Result<String> {
    if !valid_name(new_key) {
        return Err(EditError::InvalidKey(new_key.to_owned()));
    }
    let doc = parse_doc(text, format)?;
    let steps = doc.steps()?;
    let node = doc.step(i)?;
    let key_entry = entries(node)
        .iter()
        .find(|e| e.key == "key")
        .ok_or_else(|| EditError::NotInPlace("the step has no `key`".into()))?;
    let old = scalar_text(&key_entry.value).unwrap_or("").to_owned();
    if old == new_key {
        return Ok(text.to_owned());
    }
    let key_of = |n: &Node<'_>| {
        entries(n)
            .iter()
            .find(|e| e.key == "key")
            .and_then(|e| scalar_text(&e.value))
            .map(str::to_owned)
    };
    if steps.iter().any(|n| key_of(n).as_deref() == Some(new_key)) {
        return Err(EditError::DuplicateKey(new_key.to_owned()));
    }
    let ctx_for = |map: &Node<'_>| match doc.ctx_of_map(map) {
        Ctx::Json => Ctx::Json,
        _ => Ctx::Flow,
    };
    let scalar_splice = |map: &Node<'_>, n: &Node<'_>| {
        Splice::new(
            n.span.start as usize,
            n.span.end as usize,
            yaml_string(new_key, ctx_for(map), doc.quote(n)),
        )
    };
    let mut splices = vec![scalar_splice(node, &key_entry.value)];
    if old.is_empty() {
        return apply(text, splices);
    }
    for step in steps {
        if let Some((_, items)) = dependency_nodes(step) {
            for item in items {
                if scalar_text(item) == Some(&old) {
                    splices.push(scalar_splice(step, item));
                }
            }
        }
        let mut texts = Vec::new();
        for field in ["prompt", "when", "forEach", "inputs"] {
            if let Some(e) = entries(step).iter().find(|e| e.key == field) {
                text_nodes(&e.value, &mut texts);
            }
        }
        splices.extend(rename_in(&doc, &texts, &old, new_key));
    }
    if let Some(e) = doc.root_entries().iter().find(|e| e.key == "outputs") {
        let mut texts = Vec::new();
        text_nodes(&e.value, &mut texts);
        splices.extend(rename_in(&doc, &texts, &old, new_key));
    }
    apply(text, splices)
}

/// Splices renaming the placeholder root `old` in these text nodes.
fn rename_in(doc: &Doc<'_>, texts: &[&Node<'_>], old: &str, new_key: &str) -> Vec<Splice> {
    let mut out = Vec::new();
    for n in texts {
        let Some(value) = scalar_text(n) else {
            continue;
        };
        if !refers_to(value, old) {
            continue;
        }
        let span = n.span.range();
        for (s, t) in placeholder_roots(&doc.text[span.clone()], span.start, old) {
            out.push(Splice::new(s, t, new_key));
        }
    }
    out
}

/// Replace step `i` with `step`, re-emitted in the style of its context (the
/// fallback when a field cannot be edited in place; comments inside the step go).
pub fn replace_step(text: &str, format: Option<Format>, i: usize, step: &Step) -> Result<String> {
    let doc = parse_doc(text, format)?;
    let node = doc.steps()?.get(i).ok_or(EditError::NoStep(i))?;
    let start = node.span.start as usize;
    let end = doc.node_end(node);
    let new = if doc.format == Format::Json {
        let pretty = doc.text[start..end].contains('\n');
        indent_lines(&flow_step(step, Ctx::Json, pretty), doc.column(start))
    } else if doc.is_flow(node) || doc.dash_before(node).is_none() {
        flow_step(step, Ctx::Flow, false)
    } else {
        let dash = doc.dash_before(node).unwrap_or(0);
        let col = doc.column(dash);
        let block = block_step(step, col);
        // Drop the `- ` that stays in the text.
        block.get(col + 2..).unwrap_or("").to_owned()
    };
    apply(text, vec![Splice::new(start, end, new)])
}

fn load_step(text: &str, format: Option<Format>, i: usize) -> Option<(Step, usize)> {
    let a = analyze(
        text,
        &Options {
            format,
            ..Options::default()
        },
    );
    let wf = a.workflow()?;
    Some((wf.steps.get(i)?.clone(), wf.steps.len()))
}

fn retry_json(p: &crate::model::RetryPolicy) -> Map<String, Value> {
    match serde_json::to_value(p) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// Apply the field changes from `old` to `new` one by one, in place.
fn update_in_place(
    text: &str,
    format: Option<Format>,
    i: usize,
    old: &Step,
    new: &Step,
) -> Result<String> {
    let mut text = text.to_owned();
    if old.key != new.key {
        text = rename_step(&text, format, i, &new.key)?;
    }
    let str_field = |text: &str, name: &str, o: &str, n: &str| -> Result<String> {
        if o == n {
            Ok(text.to_owned())
        } else {
            set_field(text, format, i, name, &Value::String(n.to_owned()))
        }
    };
    if old.kind != new.kind {
        text = if new.kind.is_prompt() {
            remove_field(&text, format, i, "type")?
        } else {
            let kind = Value::String(new.kind.as_str().to_owned());
            set_field(&text, format, i, "type", &kind)?
        };
    }
    // A field that a step type does not take is removed rather than emptied.
    let text_field = |text: &str, name: &str, o: &str, n: &str| -> Result<String> {
        if o == n {
            Ok(text.to_owned())
        } else if n.is_empty() && !new.kind.is_prompt() {
            remove_field(text, format, i, name)
        } else {
            str_field(text, name, o, n)
        }
    };
    text = text_field(&text, "agent", &old.agent, &new.agent)?;
    text = text_field(&text, "prompt", &old.prompt, &new.prompt)?;
    for ((name, o), (_, n)) in new_fields(old).into_iter().zip(new_fields(new)) {
        if o != n {
            text = match n {
                Some(v) => set_field(&text, format, i, name, &v)?,
                None => remove_field(&text, format, i, name)?,
            };
        }
    }
    if old.dependencies != new.dependencies {
        let keeps_order = old
            .dependencies
            .iter()
            .filter(|d| new.dependencies.contains(d))
            .eq(new
                .dependencies
                .iter()
                .filter(|d| old.dependencies.contains(d)));
        if keeps_order {
            for d in old
                .dependencies
                .iter()
                .filter(|d| !new.dependencies.contains(d))
            {
                text = remove_dependency(&text, format, i, d)?;
            }
            for d in new
                .dependencies
                .iter()
                .filter(|d| !old.dependencies.contains(d))
            {
                text = add_dependency(&text, format, i, d)?;
            }
        } else if new.dependencies.is_empty() {
            text = remove_field(&text, format, i, "dependencies")?;
        } else {
            let list = new
                .dependencies
                .iter()
                .map(|d| Value::String(d.clone()))
                .collect();
            text = set_field(&text, format, i, "dependencies", &Value::Array(list))?;
        }
    }
    for (name, o, n) in [
        ("parallel", old.parallel, new.parallel),
        ("optional", old.optional, new.optional),
    ] {
        if o != n {
            text = if n {
                set_field(&text, format, i, name, &Value::Bool(true))?
            } else {
                remove_field(&text, format, i, name)?
            };
        }
    }
    if old.timeout_ms != new.timeout_ms {
        text = match new.timeout_ms {
            Some(t) => set_field(&text, format, i, "timeoutMs", &Value::from(t))?,
            None => remove_field(&text, format, i, "timeoutMs")?,
        };
    }
    if old.on_timeout != new.on_timeout {
        text = match new.on_timeout {
            Some(o) => {
                let v = Value::String(o.as_str().to_owned());
                set_field(&text, format, i, "onTimeout", &v)?
            }
            None => remove_field(&text, format, i, "onTimeout")?,
        };
    }
    match (&old.retry_policy, &new.retry_policy) {
        (o, n) if o == n => {}
        (_, None) => text = remove_field(&text, format, i, "retryPolicy")?,
        (None, Some(p)) => {
            let mut m = retry_json(p);
            // Written out in full except the defaults that need no mention.
            let defaults = retry_json(&crate::model::RetryPolicy::default());
            m.retain(|k, v| k == "maxRetries" || defaults.get(k) != Some(v));
            text = set_field(&text, format, i, "retryPolicy", &Value::Object(m))?;
        }
        (Some(o), Some(n)) => {
            let (o, n) = (retry_json(o), retry_json(n));
            for name in [
                "maxRetries",
                "retryDelayMs",
                "retryBackoffMultiplier",
                "retryableErrors",
            ] {
                if o.get(name) != n.get(name) {
                    text = set_retry_field(&text, format, i, name, n.get(name))?;
                }
            }
        }
    }
    if old.output_schema != new.output_schema {
        text = match &new.output_schema {
            Some(s) => set_field(&text, format, i, "outputSchema", s)?,
            None => remove_field(&text, format, i, "outputSchema")?,
        };
    }
    if old.when != new.when {
        text = match &new.when {
            Some(w) => set_field(&text, format, i, "when", &Value::String(w.clone()))?,
            None => remove_field(&text, format, i, "when")?,
        };
    }
    for ((name, o), (_, n)) in settings_fields(old).into_iter().zip(settings_fields(new)) {
        if o != n {
            text = match n {
                Some(v) => set_field(&text, format, i, name, &v)?,
                None => remove_field(&text, format, i, name)?,
            };
        }
    }
    Ok(text)
}

/// Make step `i` read back as `new`: each changed field is edited in place
/// (a changed key is a [`rename_step`]); if that fails or does not read back
/// exactly, the step is re-emitted whole. The result is checked by re-analysis.
pub fn update_step(text: &str, format: Option<Format>, i: usize, new: &Step) -> Result<String> {
    let (old, count) = load_step(text, format, i).ok_or(EditError::NoStep(i))?;
    if &old == new {
        return Ok(text.to_owned());
    }
    let check = |candidate: &str| {
        load_step(candidate, format, i).is_some_and(|(s, n)| &s == new && n == count)
    };
    if let Ok(t) = update_in_place(text, format, i, &old, new)
        && check(&t)
    {
        return Ok(t);
    }
    // Fallback: rename (for the references elsewhere), then re-emit the step.
    let renamed = if old.key != new.key {
        rename_step(text, format, i, &new.key)?
    } else {
        text.to_owned()
    };
    let t = replace_step(&renamed, format, i, new)?;
    if check(&t) {
        Ok(t)
    } else {
        Err(EditError::Unverified(format!(
            "step {} did not read back as edited",
            i + 1
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RetryPolicy, Workflow};
    use serde_json::json;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const YAML: &str = "# The release flow\nname: demo   # the name\nsteps:\n  # first: plan it\n  - key: plan\n    agent: 'planner'\n    prompt: |\n      Plan the work.\n      Carefully.\n\n  - key: build   # builds\n    agent: builder\n    prompt: \"Build {{plan.result}} now\"\n    dependencies:\n      - plan\n    retryPolicy:\n      maxRetries: 2   # twice\n  - {key: ship, agent: shipper, prompt: \"Ship {{ build.result }}\", dependencies: [build, plan]}\nconfig: {parallelism: 2}\n";

    const JSON: &str = "{\n  \"name\": \"demo\",\n  \"steps\": [\n    {\n      \"key\": \"plan\",\n      \"agent\": \"planner\",\n      \"prompt\": \"Plan it\"\n    },\n    {\"key\": \"build\", \"agent\": \"builder\", \"prompt\": \"Build {{plan.result}}\", \"dependencies\": [\"plan\"]}\n  ]\n}\n";

    /// The designer's form sets and clears a step's own model settings and
    /// cache in place, in YAML (block and flow) and JSON.
    #[test]
    fn model_settings_and_cache_are_edited_in_place() {
        for (text, i) in [(YAML, 0), (YAML, 2), (JSON, 1)] {
            let (old, _) = load_step(text, None, i).expect("step");
            let mut new = old.clone();
            new.model = Some("m-2".into());
            new.temperature = Some(0.5);
            new.max_tokens = Some(99);
            new.system = Some("Be brief.".into());
            new.cache = Some(crate::model::Cache::On(true));
            let t = update_step(text, None, i, &new).expect("edit");
            assert_eq!(load_step(&t, None, i).map(|(s, _)| s), Some(new), "{t}");
            let back = update_step(&t, None, i, &old).expect("edit");
            assert_eq!(
                load_step(&back, None, i).map(|(s, _)| s),
                Some(old),
                "{back}"
            );
        }
    }

    fn wf(text: &str) -> Workflow {
        let a = analyze(text, &Options::default());
        assert!(a.report.valid, "{text}\n{:?}", a.report);
        a.workflow().cloned().expect("workflow")
    }

    fn step<'w>(w: &'w Workflow, key: &str) -> &'w Step {
        w.step(key).unwrap_or_else(|| panic!("no step {key}"))
    }

    /// Every comment of the original is still there.
    fn keeps_comments(before: &str, after: &str, except: &[&str]) {
        for line in before.lines() {
            if let Some(p) = line.find('#') {
                let c = &line[p..];
                if !except.iter().any(|e| c.contains(e)) {
                    assert!(after.contains(c), "lost comment {c:?} in\n{after}");
                }
            }
        }
    }

    #[test]
    fn set_scalars_in_block_flow_and_json() {
        let t = set_field(YAML, None, 0, "agent", &json!("lead planner")).expect("edit");
        assert!(t.contains("agent: 'lead planner'"), "{t}");
        let t = set_field(&t, None, 1, "agent", &json!("true")).expect("edit");
        assert!(t.contains("agent: \"true\""), "{t}");
        let t = set_field(&t, None, 2, "agent", &json!("a, b")).expect("edit");
        assert!(t.contains("agent: \"a, b\""), "{t}");
        let w = wf(&t);
        assert_eq!(step(&w, "plan").agent, "lead planner");
        assert_eq!(step(&w, "build").agent, "true");
        assert_eq!(step(&w, "ship").agent, "a, b");
        keeps_comments(YAML, &t, &[]);

        let t = set_field(JSON, None, 1, "agent", &json!("say \"hi\"")).expect("edit");
        assert_eq!(step(&wf(&t), "build").agent, "say \"hi\"");
        assert!(t.contains(r#""agent": "say \"hi\"""#), "{t}");
    }

    #[test]
    fn multi_line_prompts_become_literals_and_back() {
        let t = set_field(
            YAML,
            None,
            1,
            "prompt",
            &json!("Line one\nLine two: {{plan.result}}\n"),
        )
        .expect("edit");
        assert!(
            t.contains(
                "    prompt: |\n      Line one\n      Line two: {{plan.result}}\n    dependencies:"
            ),
            "{t}"
        );
        assert_eq!(
            step(&wf(&t), "build").prompt,
            "Line one\nLine two: {{plan.result}}\n"
        );
        // Block scalar back to one line; the blank line after it stays.
        let t = set_field(YAML, None, 0, "prompt", &json!("Just plan.")).expect("edit");
        assert!(
            t.contains("    prompt: Just plan.\n\n  - key: build"),
            "{t}"
        );
        assert_eq!(step(&wf(&t), "plan").prompt, "Just plan.");
        // Block scalar to block scalar without a final newline.
        let t = set_field(YAML, None, 0, "prompt", &json!("a\nb")).expect("edit");
        assert_eq!(step(&wf(&t), "plan").prompt, "a\nb");
        // In flow style and JSON, escapes.
        let t = set_field(YAML, None, 2, "prompt", &json!("x\ny {{build.result}}")).expect("edit");
        assert!(t.contains(r#"prompt: "x\ny {{build.result}}""#), "{t}");
        assert_eq!(step(&wf(&t), "ship").prompt, "x\ny {{build.result}}");
        keeps_comments(YAML, &t, &[]);
        let t = set_field(JSON, None, 0, "prompt", &json!("x\ny")).expect("edit");
        assert_eq!(step(&wf(&t), "plan").prompt, "x\ny");
    }

    #[test]
    fn comment_after_an_inline_value_survives_a_literal() {
        let src = "name: x\nsteps:\n  - key: a\n    agent: b\n    prompt: short  # keep me\n    when: '{{x}}'\n";
        let t = set_field(src, None, 0, "prompt", &json!("two\nlines")).expect("edit");
        assert!(
            t.contains("prompt: |- # keep me\n      two\n      lines\n    when:"),
            "{t}"
        );
        let a = analyze(&t, &Options::default());
        assert_eq!(
            a.workflow().map(|w| w.steps[0].prompt.as_str()),
            Some("two\nlines")
        );
    }

    #[test]
    fn insert_and_remove_fields() {
        let t = set_field(YAML, None, 0, "timeoutMs", &json!(30000)).expect("edit");
        assert!(
            t.contains("      Carefully.\n    timeoutMs: 30000\n\n  - key: build"),
            "{t}"
        );
        let t = set_field(&t, None, 2, "optional", &json!(true)).expect("edit");
        assert!(
            t.contains("dependencies: [build, plan], optional: true}"),
            "{t}"
        );
        let t = set_field(
            &t,
            None,
            1,
            "when",
            &json!("{{plan.result}} contains \"go\""),
        )
        .expect("edit");
        let w = wf(&t);
        assert_eq!(step(&w, "plan").timeout_ms, Some(30000));
        assert!(step(&w, "ship").optional);
        assert_eq!(
            step(&w, "build").when.as_deref(),
            Some("{{plan.result}} contains \"go\"")
        );
        keeps_comments(YAML, &t, &[]);

        let t = remove_field(&t, None, 1, "retryPolicy").expect("edit");
        assert!(!t.contains("maxRetries"), "{t}");
        let t = remove_field(&t, None, 2, "optional").expect("edit");
        let t = remove_field(&t, None, 0, "timeoutMs").expect("edit");
        let t = remove_field(&t, None, 1, "when").expect("edit");
        assert_eq!(
            wf(&t),
            wf(&YAML.replace("    retryPolicy:\n      maxRetries: 2   # twice\n", ""))
        );
        keeps_comments(YAML, &t, &["twice"]);

        // JSON, pretty and compact.
        let t = set_field(JSON, None, 0, "timeoutMs", &json!(5)).expect("edit");
        assert!(
            t.contains("\"prompt\": \"Plan it\",\n      \"timeoutMs\": 5\n    }"),
            "{t}"
        );
        let t = set_field(&t, None, 1, "optional", &json!(true)).expect("edit");
        assert!(
            t.contains("\"dependencies\": [\"plan\"], \"optional\": true}"),
            "{t}"
        );
        let t = remove_field(&t, None, 0, "timeoutMs").expect("edit");
        let t = remove_field(&t, None, 1, "optional").expect("edit");
        assert_eq!(t, JSON);
    }

    #[test]
    fn removing_the_first_field_of_an_item_moves_the_next_up() {
        let src = "name: x\nsteps:\n  - agent: b   # the agent\n    key: a\n    prompt: p\n";
        let t = remove_field(src, None, 0, "agent").expect("edit");
        assert_eq!(t, "name: x\nsteps:\n  - key: a\n    prompt: p\n");
    }

    #[test]
    fn retry_policy_fields() {
        let t = set_retry_field(YAML, None, 1, "retryDelayMs", Some(&json!(250))).expect("edit");
        assert!(
            t.contains("      maxRetries: 2   # twice\n      retryDelayMs: 250\n"),
            "{t}"
        );
        let t = set_retry_field(&t, None, 1, "maxRetries", Some(&json!(4))).expect("edit");
        assert!(t.contains("maxRetries: 4   # twice"), "{t}");
        let t = set_retry_field(
            &t,
            None,
            0,
            "retryableErrors",
            Some(&json!(["timeout", "rate-limit"])),
        )
        .expect("edit");
        let t = set_retry_field(&t, None, 2, "maxRetries", Some(&json!(1))).expect("edit");
        let w = wf(&t);
        let p = step(&w, "build").retry_policy.clone().expect("policy");
        assert_eq!((p.max_retries, p.retry_delay_ms), (4, 250));
        let p0 = step(&w, "plan").retry_policy.clone().expect("policy");
        assert_eq!(p0.retryable_errors.map(|v| v.len()), Some(2));
        assert_eq!(
            step(&w, "ship")
                .retry_policy
                .as_ref()
                .map(|p| p.max_retries),
            Some(1)
        );
        assert!(t.contains("retryPolicy: {maxRetries: 1}}"), "{t}");
        // Removing the last field leaves an (explicit) empty policy.
        let t = set_retry_field(&t, None, 2, "maxRetries", None).expect("edit");
        assert_eq!(
            step(&wf(&t), "ship").retry_policy,
            Some(RetryPolicy::default())
        );
        let t = set_retry_field(&t, None, 1, "retryDelayMs", None).expect("edit");
        assert!(
            t.contains("      maxRetries: 4   # twice\n  - {key: ship"),
            "{t}"
        );
    }

    #[test]
    fn dependencies_block_flow_and_json() {
        let src = "name: x\nsteps:\n  - {key: a, agent: b, prompt: p}\n  - {key: z, agent: b, prompt: p}\n  - key: c\n    agent: b\n    prompt: p\n    dependencies:\n      - a   # first\n    # more to come\n  - key: d\n    agent: b\n    prompt: p\n";
        let t = add_dependency(src, None, 2, "z").expect("edit");
        assert!(
            t.contains("      - a   # first\n      - z\n    # more to come\n"),
            "{t}"
        );
        let t = add_dependency(&t, None, 3, "c").expect("edit");
        assert!(t.contains("    prompt: p\n    dependencies: [c]\n"), "{t}");
        let t = add_dependency(&t, None, 3, "a").expect("edit");
        assert!(t.contains("dependencies: [c, a]"), "{t}");
        assert_eq!(add_dependency(&t, None, 3, "a").expect("edit"), t);
        let w = wf(&t);
        assert_eq!(step(&w, "c").dependencies, ["a", "z"]);
        assert_eq!(step(&w, "d").dependencies, ["c", "a"]);

        let t2 = remove_dependency(&t, None, 2, "a").expect("edit");
        assert!(
            t2.contains("    dependencies:\n      - z\n    # more to come\n"),
            "{t2}"
        );
        let t2 = remove_dependency(&t2, None, 2, "z").expect("edit");
        assert!(
            !t2.contains("- z") && t2.contains("    prompt: p\n    # more to come\n"),
            "{t2}"
        );
        let t2 = remove_dependency(&t2, None, 3, "c").expect("edit");
        assert!(t2.contains("dependencies: [a]"), "{t2}");
        let t2 = remove_dependency(&t2, None, 3, "a").expect("edit");
        assert!(!t2.contains("dependencies"), "{t2}");
        keeps_comments(src, &t2, &["first"]);

        let t = add_dependency(JSON, None, 0, "build").expect("edit");
        assert!(
            t.contains("\"prompt\": \"Plan it\",\n      \"dependencies\": [\"build\"]\n"),
            "{t}"
        );
        let t = remove_dependency(&t, None, 0, "build").expect("edit");
        assert_eq!(t, JSON);
    }

    fn new_step(key: &str, deps: &[&str]) -> Step {
        Step {
            key: key.into(),
            agent: "writer".into(),
            prompt: "Write it up.\nUse {{plan.result}}.".into(),
            dependencies: deps.iter().map(|d| (*d).to_owned()).collect(),
            parallel: false,
            optional: false,
            timeout_ms: Some(1000),
            retry_policy: None,
            output_schema: None,
            when: None,
            ..Step::default()
        }
    }

    #[test]
    fn add_and_remove_steps() {
        let block = "name: x\nsteps:\n  - key: plan\n    agent: a\n    prompt: p\n# trailing comment\nconfig:\n  parallelism: 2\n";
        let s = new_step("report", &["plan"]);
        let t = add_step(block, None, &s).expect("edit");
        assert!(t.contains("    prompt: p\n  - key: report\n    agent: writer\n    prompt: |-\n      Write it up.\n      Use {{plan.result}}.\n    dependencies: [plan]\n    timeoutMs: 1000\n# trailing comment\n"), "{t}");
        assert_eq!(step(&wf(&t), "report"), &s);
        assert_eq!(
            add_step(&t, None, &s),
            Err(EditError::DuplicateKey("report".into()))
        );

        let t2 = add_step(YAML, None, &s).expect("edit");
        assert!(
            t2.contains("dependencies: [build, plan]}\n  - key: report\n"),
            "{t2}"
        );
        let t3 = add_step(JSON, None, &s).expect("edit");
        assert_eq!(step(&wf(&t3), "report"), &s);
        assert!(
            t3.contains("\"dependencies\": [\"plan\"]},\n    {\n      \"key\": \"report\",\n"),
            "{t3}"
        );
        let flow = "{name: x, steps: [{key: plan, agent: a, prompt: p}]}";
        let t4 = add_step(flow, None, &s).expect("edit");
        assert_eq!(step(&wf(&t4), "report"), &s);

        // Removing takes the step and every dependency on it.
        let r = remove_step(YAML, None, 0).expect("edit");
        let w = wf(&r.replace("{{plan.result}}", "x"));
        assert_eq!(
            w.steps.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
            ["build", "ship"]
        );
        assert!(step(&w, "build").dependencies.is_empty());
        assert_eq!(step(&w, "ship").dependencies, ["build"]);
        keeps_comments(YAML, &r, &["first: plan it"]);
        let r = remove_step(YAML, None, 2).expect("edit");
        assert_eq!(wf(&r).steps.len(), 2);
        assert!(
            r.ends_with("      maxRetries: 2   # twice\nconfig: {parallelism: 2}\n"),
            "{r}"
        );
        let r = remove_step(JSON, None, 0).expect("edit");
        let r = r.replace("{{plan.result}}", "x");
        assert_eq!(wf(&r).steps.len(), 1);
        assert!(step(&wf(&r), "build").dependencies.is_empty());
        let r = remove_step(&t, None, 1).expect("edit");
        assert_eq!(r, block);
    }

    #[test]
    fn rename_updates_dependencies_and_placeholders() {
        let t = rename_step(YAML, None, 0, "design").expect("edit");
        let w = wf(&t);
        assert_eq!(w.steps[0].key, "design");
        assert_eq!(step(&w, "build").dependencies, ["design"]);
        assert_eq!(step(&w, "build").prompt, "Build {{design.result}} now");
        assert_eq!(step(&w, "ship").dependencies, ["build", "design"]);
        keeps_comments(YAML, &t, &[]);
        let t = rename_step(&t, None, 1, "compile").expect("edit");
        assert_eq!(step(&wf(&t), "ship").prompt, "Ship {{ compile.result }}");
        assert_eq!(
            rename_step(&t, None, 1, "ship"),
            Err(EditError::DuplicateKey("ship".into()))
        );
        assert_eq!(
            rename_step(&t, None, 1, "a b"),
            Err(EditError::InvalidKey("a b".into()))
        );
        // A key that prefixes another is not touched.
        let src = "name: x\nsteps:\n  - {key: a, agent: b, prompt: p}\n  - {key: ab, agent: b, prompt: \"{{a.result}} {{ a.result ?? \\\"-\\\" }}\", dependencies: [a]}\n  - {key: c, agent: b, prompt: p, dependencies: [ab], when: '{{ab.result}} == \"x\"'}\n";
        let t = rename_step(src, None, 0, "first").expect("edit");
        assert_eq!(
            step(&wf(&t), "ab").prompt,
            "{{first.result}} {{ first.result ?? \"-\" }}"
        );
        let t = rename_step(src, None, 1, "mid").expect("edit");
        assert_eq!(
            step(&wf(&t), "c").when.as_deref(),
            Some("{{mid.result}} == \"x\"")
        );
        let t = rename_step(JSON, None, 0, "design").expect("edit");
        assert_eq!(step(&wf(&t), "build").prompt, "Build {{design.result}}");
    }

    #[test]
    fn update_step_edits_in_place_and_falls_back() {
        let w = wf(YAML);
        let mut s = step(&w, "build").clone();
        s.key = "compile".into();
        s.agent = "compiler".into();
        s.timeout_ms = Some(60_000);
        s.optional = true;
        s.retry_policy = Some(RetryPolicy {
            max_retries: 5,
            ..RetryPolicy::default()
        });
        s.when = Some("{{plan.result}}".into());
        let t = update_step(YAML, None, 1, &s).expect("edit");
        assert_eq!(&wf(&t).steps[1], &s);
        assert!(t.contains("maxRetries: 5   # twice"), "{t}");
        assert_eq!(step(&wf(&t), "ship").dependencies, ["compile", "plan"]);
        keeps_comments(YAML, &t, &[]);
        // Reordered dependencies rewrite the list.
        let mut s2 = step(&w, "ship").clone();
        s2.dependencies = vec!["plan".into(), "build".into()];
        let t = update_step(YAML, None, 2, &s2).expect("edit");
        assert_eq!(&wf(&t).steps[2], &s2);
        // A step merged from an anchor cannot be edited in place: it is re-emitted.
        let src = "name: x\nbase: &b {agent: shared, prompt: p}\nsteps:\n  - <<: *b\n    key: a\n";
        let src_ok = src.replace(
            "base: &b {agent: shared, prompt: p}\nsteps:\n  - <<: *b\n",
            "steps:\n  - <<: &b {agent: shared, prompt: p}\n",
        );
        let w = analyze(&src_ok, &Options::default());
        assert!(w.report.valid, "{:?}", w.report);
        let mut s = w.workflow().map(|w| w.steps[0].clone()).expect("step");
        s.agent = "own".into();
        let t = update_step(&src_ok, None, 0, &s).expect("edit");
        assert_eq!(&wf(&t).steps[0], &s);
        let _ = src;
    }

    /// A step becomes an approval, a `forEach` step, a sub-workflow step, and
    /// back: each in place, comments kept, reading back exactly.
    #[test]
    fn update_step_edits_the_new_step_types_in_place() {
        use crate::model::{ForEach, OnTimeout, StepType};
        let w = wf(YAML);
        let mut s = step(&w, "build").clone();
        s.kind = StepType::Approval;
        s.agent.clear();
        s.retry_policy = None;
        s.timeout_ms = Some(3_600_000);
        s.on_timeout = Some(OnTimeout::Approve);
        let t = update_step(YAML, None, 1, &s).expect("to an approval");
        assert_eq!(&wf(&t).steps[1], &s);
        assert!(t.contains("  - key: build   # builds\n"), "{t}");
        assert!(t.contains("type: approval"), "{t}");
        assert!(!t.contains("agent: builder"), "{t}");
        keeps_comments(YAML, &t, &["# twice"]);

        let mut f = step(&w, "ship").clone();
        f.for_each = Some(ForEach::Template("{{plan.result.parts}}".into()));
        f.max_concurrency = Some(2);
        f.prompt = "Ship {{item}} ({{index}})".into();
        let t = update_step(YAML, None, 2, &f).expect("forEach");
        assert_eq!(&wf(&t).steps[2], &f);

        let mut c = step(&w, "ship").clone();
        c.kind = StepType::Workflow;
        c.agent.clear();
        c.prompt.clear();
        c.workflow = Some("./ship.yaml".into());
        c.inputs = [("build".to_owned(), json!("{{build.result}}"))].into();
        c.for_each = Some(ForEach::List(vec![json!("eu"), json!("us")]));
        let t = update_step(YAML, None, 2, &c).expect("to a sub-workflow");
        assert_eq!(&wf(&t).steps[2], &c);
        let back = update_step(&t, None, 2, step(&w, "ship")).expect("back");
        assert_eq!(&wf(&back).steps[2], step(&w, "ship"));
        // A new step of each type, added and read back.
        let t = add_step(YAML, None, &s).map(|_| ()).err();
        assert_eq!(t, Some(EditError::DuplicateKey("build".into())));
        let mut a = s.clone();
        a.key = "sign-off".into();
        a.dependencies = vec!["ship".into()];
        let t = add_step(YAML, None, &a).expect("add");
        assert_eq!(step(&wf(&t), "sign-off"), &a);
        let mut c2 = c.clone();
        c2.key = "regions".into();
        let t = add_step(JSON, None, &c2).expect("add to JSON");
        let a = analyze(&t, &Options::default());
        assert_eq!(
            a.workflow().and_then(|w| w.step("regions")),
            Some(&c2),
            "{t}"
        );
    }

    #[test]
    fn rename_updates_for_each_inputs_and_outputs() {
        let src = "name: x\nsteps:\n  - {key: files, agent: w, prompt: p}\n  - key: each\n    agent: w\n    dependencies: [files]\n    forEach: \"{{files.result.list}}\"\n    prompt: \"{{item}}\"\n  - key: sub\n    type: workflow\n    workflow: c.yaml\n    dependencies: [files]\n    forEach: [\"{{files.result}}\", x]\n    inputs:\n      deep: {list: [\"{{ files.result.a }}\"]}\noutputs:\n  all: \"{{files.result}}\"\n";
        let t = rename_step(src, None, 0, "paths").expect("edit");
        let w = wf(&t);
        assert_eq!(
            step(&w, "each").for_each,
            Some(crate::model::ForEach::Template(
                "{{paths.result.list}}".into()
            ))
        );
        assert_eq!(
            step(&w, "sub").inputs["deep"],
            json!({"list": ["{{ paths.result.a }}"]})
        );
        assert_eq!(w.outputs["all"], "{{paths.result}}");
        assert!(!t.contains("files"), "{t}");
    }

    #[test]
    fn text_without_final_newline() {
        let src = "name: x\nsteps:\n  - key: a\n    agent: b\n    prompt: p";
        let t = set_field(src, None, 0, "when", &json!("{{x}}")).expect("edit");
        assert_eq!(
            t,
            "name: x\nsteps:\n  - key: a\n    agent: b\n    prompt: p\n    when: \"{{x}}\""
        );
        let t = remove_field(&t, None, 0, "when").expect("edit");
        assert_eq!(t, src);
        let t = set_field(src, None, 0, "prompt", &json!("a\nb\n")).expect("edit");
        assert_eq!(wf(&t).steps[0].prompt, "a\nb\n");
    }

    /// Every step of every example file: change each kind of field, check that
    /// exactly that step changed and every comment survived.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn edits_round_trip_on_the_examples() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let Ok(read) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut files: Vec<_> = read.flatten().map(|e| e.path()).collect();
        files.sort();
        let mut edited = 0;
        for path in files {
            let Ok(src) = std::fs::read_to_string(&path) else {
                continue;
            };
            let format = path.to_str().and_then(Format::from_filename);
            let a = analyze(
                &src,
                &Options {
                    format,
                    ..Options::default()
                },
            );
            let Some(w) = a.workflow().cloned() else {
                continue;
            };
            if !a.report.valid {
                continue;
            }
            for (i, old) in w.steps.iter().enumerate() {
                let mut s = old.clone();
                s.agent = format!("{}-2", s.agent);
                s.prompt = format!("{}\nAlso: say \"done\" # at the end", s.prompt.trim_end());
                s.timeout_ms = Some(s.timeout_ms.unwrap_or(1000) + 1);
                s.optional = !s.optional;
                s.when = match &s.when {
                    Some(_) => None,
                    None => Some("true".into()),
                };
                let mut p = s.retry_policy.clone().unwrap_or_default();
                p.max_retries += 1;
                s.retry_policy = Some(p);
                let t = update_step(&src, format, i, &s)
                    .unwrap_or_else(|e| panic!("{}: step {i}: {e}", path.display()));
                let b = analyze(
                    &t,
                    &Options {
                        format,
                        ..Options::default()
                    },
                );
                let w2 = b.workflow().cloned().expect("workflow");
                assert_eq!(&w2.steps[i], &s, "{}", path.display());
                for (j, other) in w.steps.iter().enumerate() {
                    if j != i {
                        assert_eq!(&w2.steps[j], other, "{}: step {j} changed", path.display());
                    }
                }
                assert_eq!(
                    (&w2.name, &w2.config, &w2.inputs),
                    (&w.name, &w.config, &w.inputs)
                );
                if format != Some(Format::Json) {
                    keeps_comments(&src, &t, &[]);
                }
                edited += 1;
            }
        }
        assert!(edited > 0 || !dir.exists());
    }

    #[test]
    fn errors_are_reported() {
        assert!(matches!(
            set_field("name: [", None, 0, "agent", &json!("x")),
            Err(EditError::Syntax(_))
        ));
        assert_eq!(
            set_field("name: x\n", None, 0, "agent", &json!("x")),
            Err(EditError::NoSteps)
        );
        assert_eq!(
            set_field(YAML, None, 9, "agent", &json!("x")),
            Err(EditError::NoStep(9))
        );
    }
}
