//! Completion for the code editor, from what the validator knows:
//!
//! - field names and their enum values from the file format's JSON Schema
//!   (`docs/workflow.schema.json`, what `ax workflow schema` prints, so new
//!   fields complete as soon as the schema has them);
//! - step keys inside `dependencies` (not the step itself, not one that would
//!   close a cycle, not one already listed);
//! - inside `{{`: the declared inputs, the steps upstream of this one (the
//!   validator refuses the others), `.result`, and the fields of an upstream
//!   step's `outputSchema`.
//!
//! The text is usually mid-edit and invalid, so the position is read from the
//! text around the cursor (indentation and flow brackets for YAML, a bracket
//! scan for JSON), and the steps from the latest analysis.

use ax_core::parse::Format;
use ax_core::{Analysis, Workflow};
use serde_json::Value;
use std::sync::OnceLock;

/// The file format's schema, as `ax workflow schema` prints it.
const SCHEMA: &str = include_str!("../../docs/workflow.schema.json");

/// One proposal.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Item {
    pub label: String,
    /// What is inserted, when it differs from the label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply: Option<String>,
    /// CodeMirror's completion type: `property`, `constant`, `variable`, `class`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    /// Higher comes first (required fields, nearer steps).
    pub boost: i32,
}

/// Proposals for the text between `from` and `to` (byte offsets).
#[derive(Debug, Clone, PartialEq)]
pub struct Completions {
    pub from: usize,
    pub to: usize,
    pub items: Vec<Item>,
}

/// One step down a document: a mapping key or a sequence item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Item,
}

/// What is being typed at the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A key of the mapping at `path`.
    Key,
    /// The value of `key` in the mapping at `path`.
    Value(String),
    /// An item of the sequence at `path`.
    Item,
}

/// Where the cursor is in the document's structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub path: Vec<Seg>,
    pub role: Role,
    /// Byte offset where the word being typed starts.
    pub from: usize,
    /// Keys already in the mapping (not proposed again).
    pub siblings: Vec<String>,
    /// JSON: the word is inside a string (the quotes are there already).
    pub quoted: bool,
}

/// Completions at byte offset `pos`.
pub fn complete(
    text: &str,
    format: Format,
    pos: usize,
    analysis: &Analysis,
) -> Option<Completions> {
    let pos = floor(text, pos.min(text.len()));
    if let Some(c) = placeholder(text, pos, analysis) {
        return Some(c);
    }
    let place = match format {
        Format::Yaml => yaml_place(text, pos)?,
        Format::Json => json_place(text, pos)?,
    };
    let items = by_schema(&place, text, pos, format, analysis);
    Some(Completions {
        from: place.from,
        to: word_end(text, pos),
        items,
    })
}

fn floor(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// The end of the word the cursor is in (completing `ag|ent` replaces all of it).
fn word_end(text: &str, pos: usize) -> usize {
    pos + text[pos..]
        .find(|c: char| !is_word(c))
        .unwrap_or(text.len() - pos)
}

// ---- Placeholders ----

fn placeholder(text: &str, pos: usize, analysis: &Analysis) -> Option<Completions> {
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[line_start..pos];
    let open = before.rfind("{{")?;
    let inner = &before[open + 2..];
    if inner.contains("}}") || !inner.chars().all(|c| is_word(c) || c == '.' || c == ' ') {
        return None;
    }
    let word = inner.trim_start();
    let segments: Vec<&str> = word.split('.').collect();
    let last = segments.last().copied().unwrap_or("");
    let from = pos - last.len();
    let to = word_end(text, pos);
    let closed = text[to..].trim_start_matches(' ').starts_with("}}");
    let close = if closed { "" } else { "}}" };
    let wf = analysis.workflow()?;
    let here = step_at(analysis, text, pos);
    let upstream = match &here {
        Some(k) => ancestors(wf, k),
        // Outside the steps (a stray `{{`): every step, nearest first is meaningless.
        None => wf.steps.iter().map(|s| s.key.clone()).collect(),
    };
    let items = match segments.as_slice() {
        [_] => {
            let mut items: Vec<Item> = wf
                .inputs
                .iter()
                .map(|(name, spec)| Item {
                    label: name.clone(),
                    apply: Some(format!("{name}{close}")),
                    kind: "variable",
                    detail: Some("input".into()),
                    info: spec.description.clone(),
                    boost: 2,
                })
                .collect();
            items.extend(upstream.iter().enumerate().map(|(n, key)| {
                let agent = wf.step(key).map(|s| s.agent.as_str()).unwrap_or("");
                Item {
                    label: format!("{key}.result"),
                    apply: Some(format!("{key}.result{close}")),
                    kind: "class",
                    detail: Some(format!("step · {agent}")),
                    info: Some(format!(
                        "The output of step `{key}` (upstream of this step)."
                    )),
                    boost: 1 - n.min(50) as i32,
                }
            }));
            items
        }
        [step, _] if upstream.iter().any(|k| k == step) => vec![Item {
            label: "result".into(),
            apply: Some(format!("result{close}")),
            kind: "property",
            detail: Some(format!("output of {step}")),
            info: None,
            boost: 0,
        }],
        [step, "result", fields @ .., _] if upstream.iter().any(|k| k == step) => {
            let schema = wf.step(step)?.output_schema.as_ref()?;
            let mut node = schema;
            for f in fields {
                node = node.get("properties")?.get(*f)?;
            }
            properties(node)
                .into_iter()
                .map(|(name, p)| Item {
                    label: name.clone(),
                    apply: Some(if has_properties(p) {
                        name.clone()
                    } else {
                        format!("{name}{close}")
                    }),
                    kind: "property",
                    detail: type_name(p),
                    info: description(p),
                    boost: 0,
                })
                .collect()
        }
        _ => Vec::new(),
    };
    Some(Completions { from, to, items })
}

/// The key of the step whose text holds `pos`.
fn step_at(analysis: &Analysis, text: &str, pos: usize) -> Option<String> {
    let map = analysis.source_map.as_ref()?;
    let s = map
        .steps
        .iter()
        .find(|s| (s.span.start as usize) <= pos && pos <= s.span.end as usize)?;
    let key = s.key?;
    let raw = text.get(key.start as usize..key.end as usize)?;
    Some(raw.trim_matches(|c| c == '"' || c == '\'').to_owned())
}

/// The steps `key` depends on, directly or not, nearest first.
fn ancestors(wf: &Workflow, key: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut queue: Vec<&str> = vec![key];
    let mut i = 0;
    while i < queue.len() {
        if let Some(s) = wf.step(queue[i]) {
            for d in &s.dependencies {
                if d != key && !out.contains(d) && wf.step(d).is_some() {
                    out.push(d.clone());
                    queue.push(d);
                }
            }
        }
        i += 1;
    }
    out
}

/// The steps that depend on `key`, directly or not.
fn descendants(wf: &Workflow, key: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![key.to_owned()];
    let mut i = 0;
    while i < out.len() {
        let k = out[i].clone();
        for s in &wf.steps {
            if s.dependencies.contains(&k) && !out.contains(&s.key) {
                out.push(s.key.clone());
            }
        }
        i += 1;
    }
    out
}

// ---- Where the cursor is: YAML ----

/// A line's structure: its `- ` markers and its key, with their columns.
struct Line<'t> {
    dashes: Vec<usize>,
    key: Option<(usize, &'t str)>,
}

fn parse_line(line: &str) -> Line<'_> {
    let mut col = line.len() - line.trim_start_matches(' ').len();
    let mut dashes = Vec::new();
    let mut rest = &line[col..];
    while rest.starts_with("- ") || rest == "-" {
        dashes.push(col);
        let skip = 1 + rest[1..].len() - rest[1..].trim_start_matches(' ').len();
        col += skip;
        rest = &rest[skip..];
    }
    let key = key_of(rest).map(|k| (col, k));
    Line { dashes, key }
}

/// `name:` at the start of `rest` (followed by a space or the end of the line).
fn key_of(rest: &str) -> Option<&str> {
    let colon = rest.find(':')?;
    let after = &rest[colon + 1..];
    if !(after.is_empty() || after.starts_with(' ') || after.starts_with('#')) {
        return None;
    }
    let k = rest[..colon].trim().trim_matches(|c| c == '"' || c == '\'');
    (!k.is_empty() && k.chars().all(|c| is_word(c) || c == '.' || c == '$')).then_some(k)
}

fn yaml_place(text: &str, pos: usize) -> Option<Place> {
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
    let before = &text[line_start..pos];
    if before.trim_start().starts_with('#') {
        return None;
    }
    let here = parse_line(before);
    // The column of the first structure on this line, and of its mapping's keys.
    let content_col = here
        .dashes
        .first()
        .copied()
        .or(here.key.map(|(c, _)| c))
        .unwrap_or_else(|| before.len() - before.trim_start_matches(' ').len());
    let key_col = here.key.map(|(c, _)| c).unwrap_or_else(|| {
        let after_dashes = here.dashes.last().map_or(content_col, |d| d + 2);
        after_dashes.min(before.len())
    });
    let mut path = block_path(text, line_start, content_col);
    path.extend(here.dashes.iter().map(|_| Seg::Item));
    // The part of the line after the dashes: a flow collection, `key: value`, or a key.
    let tail_start = line_start + key_col.min(before.len());
    let tail = &text[tail_start..pos];
    let mut place = flow_place(tail, tail_start, path.clone())?;
    let in_flow = tail.contains(['{', '[']);
    if matches!(place.role, Role::Key) && !in_flow {
        place.siblings = block_siblings(text, line_start, line_end, key_col);
    }
    Some(place)
}

/// The keys and items that contain a line starting at `line_start` whose first
/// structure is at column `col`, from the lines above it.
fn block_path(text: &str, line_start: usize, col: usize) -> Vec<Seg> {
    let mut threshold = col;
    let mut found: Vec<Seg> = Vec::new();
    let mut end = line_start;
    while threshold > 0 && end > 0 {
        let start = text[..end - 1].rfind('\n').map_or(0, |i| i + 1);
        let line = &text[start..end - 1];
        end = start;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let l = parse_line(line);
        let mut nodes: Vec<(usize, Seg)> = l.dashes.iter().map(|&d| (d, Seg::Item)).collect();
        if let Some((c, k)) = l.key {
            nodes.push((c, Seg::Key(k.to_owned())));
        }
        if nodes.is_empty() {
            // A scalar continuation line: indentation only.
            continue;
        }
        for (c, seg) in nodes.into_iter().rev() {
            if c < threshold {
                found.push(seg);
                threshold = c;
            }
        }
    }
    found.reverse();
    found
}

/// The keys of the block mapping whose keys sit at column `col`, around the
/// current line.
fn block_siblings(text: &str, line_start: usize, line_end: usize, col: usize) -> Vec<String> {
    let mut out = Vec::new();
    // Upwards, to the line that opens the mapping.
    let mut end = line_start;
    while end > 0 {
        let start = text[..end - 1].rfind('\n').map_or(0, |i| i + 1);
        let line = &text[start..end - 1];
        end = start;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let l = parse_line(line);
        let first = l.dashes.first().copied().or(l.key.map(|(c, _)| c));
        match l.key {
            Some((c, k)) if c == col => out.push(k.to_owned()),
            _ => {}
        }
        if first.is_some_and(|f| f < col) {
            break;
        }
        if first.is_none() && indent(line) < col {
            break;
        }
    }
    // Downwards, to the end of the mapping.
    let mut start = (line_end + 1).min(text.len());
    while start < text.len() {
        let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = &text[start..end];
        start = end + 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let l = parse_line(line);
        let first = l.dashes.first().copied().or(l.key.map(|(c, _)| c));
        if first.is_some_and(|f| f < col) || (first.is_none() && indent(line) < col) {
            break;
        }
        if let Some((c, k)) = l.key
            && c == col
            && l.dashes.is_empty()
        {
            out.push(k.to_owned());
        }
    }
    out
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// The place inside one line's text `tail` (starting at byte `base`): flow
/// mappings and sequences nest; `key: value` gives a value.
fn flow_place(tail: &str, base: usize, mut path: Vec<Seg>) -> Option<Place> {
    // (is a mapping, path length at its start, keys seen in it)
    let mut stack: Vec<(bool, usize, Vec<String>)> = Vec::new();
    let mut key: Option<String> = None;
    let mut token = 0;
    let mut quote: Option<char> = None;
    let bytes: Vec<(usize, char)> = tail.char_indices().collect();
    let mut i = 0;
    while i < bytes.len() {
        let (at, c) = bytes[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        let next = bytes.get(i + 1).map(|&(_, c)| c);
        match c {
            '"' | '\'' => quote = Some(c),
            '#' if at == 0 || tail[..at].ends_with(' ') => return None,
            ':' if next.is_none_or(|n| n == ' ') => {
                let k = tail[token..at]
                    .trim()
                    .trim_matches(|c| c == '"' || c == '\'');
                if !k.is_empty() {
                    key = Some(k.to_owned());
                    if let Some((true, _, keys)) = stack.last_mut() {
                        keys.push(k.to_owned());
                    }
                }
                token = at + 1;
            }
            '{' | '[' => {
                match key.take() {
                    Some(k) => path.push(Seg::Key(k)),
                    None if stack.last().is_some_and(|(map, _, _)| !map) => path.push(Seg::Item),
                    None => {}
                }
                stack.push((c == '{', path.len(), Vec::new()));
                token = at + 1;
            }
            '}' | ']' => {
                let (_, len, _) = stack.pop()?;
                // Back to the enclosing collection's path.
                path.truncate(len.saturating_sub(1));
                key = None;
                token = at + 1;
            }
            ',' => {
                key = None;
                token = at + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if quote.is_some() {
        return None;
    }
    let word = tail[token..].trim_start();
    let from = base + tail.len() - word.len();
    let word_ok = word.chars().all(|c| is_word(c) || c == '.');
    if !word_ok {
        return None;
    }
    let (role, siblings) = match (stack.last(), key) {
        (_, Some(k)) => (Role::Value(k), Vec::new()),
        (Some((false, _, _)), None) => (Role::Item, Vec::new()),
        (Some((true, _, keys)), None) => (Role::Key, keys.clone()),
        (None, None) => (Role::Key, Vec::new()),
    };
    Some(Place {
        path,
        role,
        from,
        siblings,
        quoted: false,
    })
}

// ---- Where the cursor is: JSON ----

fn json_place(text: &str, pos: usize) -> Option<Place> {
    struct Frame {
        map: bool,
        /// In a mapping: the key whose value comes next (after `:`).
        key: Option<String>,
        keys: Vec<String>,
        /// In a mapping: a key is expected (after `{` or `,`).
        want_key: bool,
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut string_start: Option<usize> = None;
    let mut last_string: Option<String> = None;
    let mut escaped = false;
    let mut token = 0;
    for (i, c) in text[..pos].char_indices() {
        if let Some(s) = string_start {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                last_string = Some(text[s + 1..i].to_owned());
                string_start = None;
            }
            continue;
        }
        match c {
            '"' => string_start = Some(i),
            '{' | '[' => {
                stack.push(Frame {
                    map: c == '{',
                    key: None,
                    keys: Vec::new(),
                    want_key: c == '{',
                });
                token = i + 1;
            }
            '}' | ']' => {
                stack.pop();
                if let Some(f) = stack.last_mut() {
                    f.key = None;
                }
                token = i + 1;
            }
            ':' => {
                if let Some(f) = stack.last_mut().filter(|f| f.map) {
                    f.key = last_string.take();
                    if let Some(k) = &f.key {
                        f.keys.push(k.clone());
                    }
                    f.want_key = false;
                }
                token = i + 1;
            }
            ',' => {
                if let Some(f) = stack.last_mut() {
                    f.key = None;
                    f.want_key = f.map;
                }
                token = i + 1;
            }
            _ => {}
        }
    }
    let top = stack.last()?;
    let (from, quoted) = match string_start {
        Some(s) => (s + 1, true),
        None => {
            let word = text[token..pos].trim_start();
            (pos - word.len(), false)
        }
    };
    if !text[from..pos].chars().all(|c| is_word(c) || c == '.') {
        return None;
    }
    // The path: every frame but the last contributes the key it is under.
    let mut path = Vec::new();
    for f in &stack[..stack.len() - 1] {
        if f.map {
            path.push(Seg::Key(f.key.clone()?));
        } else {
            path.push(Seg::Item);
        }
    }
    let role = if !top.map {
        Role::Item
    } else if top.want_key {
        Role::Key
    } else {
        Role::Value(top.key.clone()?)
    };
    Some(Place {
        path,
        role,
        from,
        siblings: top.keys.clone(),
        quoted,
    })
}

// ---- Proposals from the schema ----

fn schema() -> &'static Value {
    static SCHEMA_VALUE: OnceLock<Value> = OnceLock::new();
    SCHEMA_VALUE.get_or_init(|| serde_json::from_str(SCHEMA).unwrap_or(Value::Null))
}

/// Follow `$ref`s (`#/$defs/X`).
fn resolve(node: &Value) -> &Value {
    let mut n = node;
    for _ in 0..8 {
        match n.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix('#').and_then(|p| schema().pointer(p)) {
                Some(t) => n = t,
                None => return n,
            },
            None => return n,
        }
    }
    n
}

/// The node and its `anyOf`/`oneOf`/`allOf` alternatives, resolved.
fn variants(node: &Value) -> Vec<&Value> {
    let n = resolve(node);
    let mut out = vec![n];
    for k in ["anyOf", "oneOf", "allOf"] {
        if let Some(list) = n.get(k).and_then(Value::as_array) {
            for v in list {
                out.extend(variants(v));
            }
        }
    }
    out
}

fn child<'s>(node: &'s Value, seg: &Seg) -> Option<&'s Value> {
    variants(node).into_iter().find_map(|v| match seg {
        Seg::Key(k) => v
            .get("properties")
            .and_then(|p| p.get(k))
            .or_else(|| v.get("additionalProperties").filter(|a| a.is_object())),
        Seg::Item => v.get("items"),
    })
}

fn at_path<'s>(path: &[Seg]) -> Option<&'s Value> {
    let mut node = schema();
    for seg in path {
        node = child(node, seg)?;
    }
    Some(node)
}

fn has_properties(node: &Value) -> bool {
    variants(node).iter().any(|v| v.get("properties").is_some())
}

/// Property names and their schemas, in the schema's order.
fn properties(node: &Value) -> Vec<(String, &Value)> {
    let mut out: Vec<(String, &Value)> = Vec::new();
    for v in variants(node) {
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                if !out.iter().any(|(n, _)| n == k) {
                    out.push((k.clone(), p));
                }
            }
        }
    }
    out
}

fn required(node: &Value) -> Vec<String> {
    variants(node)
        .iter()
        .filter_map(|v| v.get("required").and_then(Value::as_array))
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect()
}

fn description(node: &Value) -> Option<String> {
    variants(node)
        .iter()
        .find_map(|v| v.get("description").and_then(Value::as_str))
        .map(str::to_owned)
}

fn type_name(node: &Value) -> Option<String> {
    let v = resolve(node);
    match v.get("type") {
        Some(Value::String(t)) => Some(t.clone()),
        Some(Value::Array(ts)) => Some(
            ts.iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect::<Vec<_>>()
                .join(" | "),
        ),
        _ if v.get("items").is_some() => Some("array".into()),
        _ => None,
    }
}

/// The values a node allows by name: enums, consts, booleans (with their descriptions).
fn values(node: &Value) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for v in variants(node) {
        if let Some(list) = v.get("enum").and_then(Value::as_array) {
            out.extend(
                list.iter()
                    .filter_map(|e| e.as_str())
                    .map(|e| (e.to_owned(), None)),
            );
        }
        if let Some(c) = v.get("const").and_then(Value::as_str) {
            out.push((c.to_owned(), description(v)));
        }
        let boolean = match v.get("type") {
            Some(Value::String(t)) => t == "boolean",
            Some(Value::Array(ts)) => ts.iter().any(|t| t == "boolean"),
            _ => false,
        };
        if boolean {
            out.push(("true".into(), None));
            out.push(("false".into(), None));
        }
    }
    let mut seen: Vec<String> = Vec::new();
    out.retain(|(v, _)| {
        let new = !seen.contains(v);
        seen.push(v.clone());
        new
    });
    out
}

fn is_step_path(path: &[Seg]) -> bool {
    matches!(path, [Seg::Key(s), Seg::Item] if s == "steps")
}

fn by_schema(
    place: &Place,
    text: &str,
    pos: usize,
    format: Format,
    analysis: &Analysis,
) -> Vec<Item> {
    let wf = analysis.workflow();
    // Step keys in `dependencies`.
    let deps_list = |path: &[Seg]| -> bool {
        matches!(path, [.., Seg::Key(d)] if d == "dependencies")
            && is_step_path(&path[..path.len() - 1])
    };
    let in_deps = match &place.role {
        Role::Item => deps_list(&place.path),
        Role::Key => {
            matches!(place.path.last(), Some(Seg::Item))
                && deps_list(&place.path[..place.path.len() - 1])
        }
        Role::Value(_) => false,
    };
    if in_deps {
        return wf
            .map(|wf| dependency_items(wf, analysis, text, pos, format))
            .unwrap_or_default();
    }
    let quote = |s: &str| -> String {
        if format == Format::Json && !place.quoted {
            format!("\"{s}\"")
        } else {
            s.to_owned()
        }
    };
    match &place.role {
        Role::Key => {
            let Some(node) = at_path(&place.path) else {
                return Vec::new();
            };
            if !has_properties(node) {
                // A list of scalars written as `- ` items.
                if matches!(place.path.last(), Some(Seg::Item)) {
                    let parent = at_path(&place.path).into_iter();
                    return parent.flat_map(|n| value_items(n, &quote)).collect();
                }
                return Vec::new();
            }
            let req = required(node);
            properties(node)
                .into_iter()
                .filter(|(name, _)| !place.siblings.contains(name))
                .map(|(name, p)| {
                    let apply = match format {
                        Format::Yaml => format!("{name}: "),
                        Format::Json if place.quoted => name.clone(),
                        Format::Json => format!("\"{name}\": "),
                    };
                    Item {
                        boost: if req.contains(&name) { 2 } else { 0 },
                        apply: Some(apply),
                        kind: "property",
                        detail: type_name(p),
                        info: description(p),
                        label: name,
                    }
                })
                .collect()
        }
        Role::Value(key) => {
            let mut path = place.path.clone();
            path.push(Seg::Key(key.clone()));
            if key == "agent" && is_step_path(&place.path) {
                return agent_items(wf, &quote);
            }
            at_path(&path)
                .map(|n| value_items(n, &quote))
                .unwrap_or_default()
        }
        Role::Item => {
            let mut path = place.path.clone();
            path.push(Seg::Item);
            at_path(&path)
                .map(|n| value_items(n, &quote))
                .unwrap_or_default()
        }
    }
}

fn value_items(node: &Value, quote: &dyn Fn(&str) -> String) -> Vec<Item> {
    values(node)
        .into_iter()
        .map(|(v, info)| Item {
            apply: Some(if v == "true" || v == "false" {
                v.clone()
            } else {
                quote(&v)
            }),
            label: v,
            kind: "constant",
            detail: None,
            info,
            boost: 0,
        })
        .collect()
}

/// The agents already used in the workflow.
fn agent_items(wf: Option<&Workflow>, quote: &dyn Fn(&str) -> String) -> Vec<Item> {
    let mut agents: Vec<&str> = wf
        .map(|w| w.steps.iter().map(|s| s.agent.as_str()).collect())
        .unwrap_or_default();
    agents.sort_unstable();
    agents.dedup();
    agents
        .into_iter()
        .filter(|a| !a.is_empty())
        .map(|a| Item {
            label: a.to_owned(),
            apply: Some(quote(a)),
            kind: "variable",
            detail: Some("agent".into()),
            info: None,
            boost: 0,
        })
        .collect()
}

/// Step keys this step may depend on: not itself, not those that depend on it
/// (a cycle), not those already listed.
fn dependency_items(
    wf: &Workflow,
    analysis: &Analysis,
    text: &str,
    pos: usize,
    format: Format,
) -> Vec<Item> {
    let here = step_at(analysis, text, pos);
    let (excluded, listed) = match here.as_deref().and_then(|k| wf.step(k)) {
        Some(s) => (descendants(wf, &s.key), s.dependencies.clone()),
        None => (Vec::new(), Vec::new()),
    };
    let quoted =
        format == Format::Json && text[..pos].ends_with(|c: char| is_word(c) || c == '"') && {
            let start = text[..pos].rfind(|c: char| !is_word(c)).unwrap_or(0);
            text[start..].starts_with('"')
        };
    wf.steps
        .iter()
        .filter(|s| !s.key.is_empty() && !excluded.contains(&s.key) && !listed.contains(&s.key))
        .map(|s| Item {
            label: s.key.clone(),
            apply: Some(if format == Format::Json && !quoted {
                format!("\"{}\"", s.key)
            } else {
                s.key.clone()
            }),
            kind: "class",
            detail: Some(format!("step · {}", s.agent)),
            info: None,
            boost: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ax_core::{Options, analyze};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Completions where `|` is in `text` (the bar removed).
    fn at(text: &str) -> Vec<String> {
        let pos = text.find('|').expect("a cursor");
        let t = text.replacen('|', "", 1);
        let format = if t.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Yaml
        };
        let a = analyze(
            &t,
            &Options {
                format: Some(format),
                ..Options::default()
            },
        );
        complete(&t, format, pos, &a)
            .map(|c| c.items.into_iter().map(|i| i.label).collect())
            .unwrap_or_default()
    }

    const FLOW: &str = "name: t\ninputs:\n  topic: {description: What to write about}\nsteps:\n  - key: research\n    agent: finder\n    prompt: go\n    outputSchema: {type: object, properties: {facts: {type: array}, meta: {type: object, properties: {source: {type: string}}}}}\n  - key: draft\n    agent: writer\n    prompt: go\n    dependencies: [research]\n  - key: review\n    agent: critic\n    prompt: \"check {{draft.result}}\"\n    dependencies: [draft]\n";

    #[test]
    fn step_fields_come_from_the_schema() {
        let text = FLOW.replace(
            "    dependencies: [draft]\n",
            "    dependencies: [draft]\n    ret|\n",
        );
        let got = at(&text);
        assert!(got.contains(&"retryPolicy".to_owned()), "{got:?}");
        assert!(got.contains(&"outputSchema".to_owned()), "{got:?}");
        // Fields the step has already are not proposed again.
        assert!(!got.contains(&"agent".to_owned()), "{got:?}");
        assert!(!got.contains(&"dependencies".to_owned()), "{got:?}");
        // The top level.
        let got = at(&format!("{FLOW}conf|"));
        assert!(
            got.contains(&"config".to_owned()) && !got.contains(&"steps".to_owned()),
            "{got:?}"
        );
        // Nested: the retry policy.
        let text = FLOW.replace(
            "    dependencies: [draft]\n",
            "    dependencies: [draft]\n    retryPolicy:\n      max|\n",
        );
        let got = at(&text);
        assert!(
            got.contains(&"maxRetries".to_owned()) && got.contains(&"retryableErrors".to_owned()),
            "{got:?}"
        );
    }

    #[test]
    fn flow_mappings_know_their_keys() {
        let text = FLOW.replace(
            "  - key: review\n",
            "  - {key: extra, agent: x, |}\n  - key: review\n",
        );
        let got = at(&text);
        assert!(got.contains(&"prompt".to_owned()), "{got:?}");
        assert!(
            !got.contains(&"key".to_owned()) && !got.contains(&"agent".to_owned()),
            "{got:?}"
        );
    }

    #[test]
    fn enum_values_and_booleans() {
        let text = FLOW.replace("    dependencies: [draft]\n", "    dependencies: [draft]\n    retryPolicy: {maxRetries: 2, retryableErrors: [rate-limit, |]}\n");
        let got = at(&text);
        assert!(
            got.contains(&"timeout".to_owned()) && got.contains(&"server-error".to_owned()),
            "{got:?}"
        );
        let text = FLOW.replace(
            "    dependencies: [draft]\n",
            "    dependencies: [draft]\n    optional: |\n",
        );
        assert_eq!(at(&text), ["true", "false"]);
        let text = FLOW.replace("    agent: critic\n", "    agent: |\n");
        assert_eq!(at(&text), ["finder", "writer"]);
        // A field the schema describes by `$ref` to `oneOf` consts (the step type).
        let text = FLOW.replace("    agent: critic\n", "    agent: critic\n    type: |\n");
        assert_eq!(at(&text), ["prompt", "approval", "workflow"]);
    }

    #[test]
    fn dependencies_offer_steps_that_close_no_cycle() {
        // `research` may depend on nothing that depends on it.
        let text = FLOW.replace(
            "    prompt: go\n    outputSchema",
            "    prompt: go\n    dependencies: [|]\n    outputSchema",
        );
        assert!(at(&text).is_empty(), "{:?}", at(&text));
        // `review` may add `research` (not itself, not `draft` again).
        let text = FLOW.replace(
            "    dependencies: [draft]\n",
            "    dependencies: [draft, |]\n",
        );
        assert_eq!(at(&text), ["research"]);
        // Block lists too.
        let text = FLOW.replace(
            "    dependencies: [draft]\n",
            "    dependencies:\n      - draft\n      - |\n",
        );
        assert_eq!(at(&text), ["research"]);
    }

    #[test]
    fn placeholders_offer_inputs_and_upstream_steps_only() {
        let text = FLOW.replace("check {{draft.result}}", "check {{|");
        let got = at(&text);
        assert!(got.contains(&"topic".to_owned()), "{got:?}");
        assert!(
            got.contains(&"draft.result".to_owned()) && got.contains(&"research.result".to_owned()),
            "{got:?}"
        );
        assert!(
            !got.iter().any(|g| g.starts_with("review")),
            "not itself: {got:?}"
        );
        // `draft` is not upstream of `research`.
        let text = FLOW.replace(
            "    prompt: go\n    outputSchema",
            "    prompt: \"{{|\"\n    outputSchema",
        );
        let got = at(&text);
        assert!(!got.iter().any(|g| g.starts_with("draft")), "{got:?}");
        // Output schema fields, nested.
        let text = FLOW.replace("check {{draft.result}}", "check {{research.result.|");
        assert_eq!(at(&text), ["facts", "meta"]);
        let text = FLOW.replace("check {{draft.result}}", "check {{research.result.meta.|");
        assert_eq!(at(&text), ["source"]);
        let text = FLOW.replace("check {{draft.result}}", "check {{draft.|");
        assert_eq!(at(&text), ["result"]);
    }

    #[test]
    fn json_documents_complete_too() {
        let json = ax_core::emit::to_json(
            analyze(FLOW, &Options::default())
                .workflow()
                .expect("valid"),
        );
        let text = json.replacen("\"agent\": \"critic\",", "\"agent\": \"critic\", \"opt|", 1);
        let got = at(&text);
        assert!(
            got.contains(&"optional".to_owned()) && !got.contains(&"agent".to_owned()),
            "{got:?}"
        );
        let text = json.replacen(
            "\"dependencies\": [\n        \"draft\"\n      ]",
            "\"dependencies\": [\"draft\", \"|\"]",
            1,
        );
        assert_eq!(at(&text), ["research"], "{text}");
    }

    #[test]
    fn ranges_cover_the_word() {
        let text = FLOW.replace(
            "    dependencies: [draft]\n",
            "    dependencies: [draft]\n    ret\n",
        );
        let pos = text.find("    ret\n").expect("ret") + 6;
        let a = analyze(&text, &Options::default());
        let c = complete(&text, Format::Yaml, pos, &a).expect("completions");
        assert_eq!(&text[c.from..c.to], "ret");
        let item = c
            .items
            .iter()
            .find(|i| i.label == "retryPolicy")
            .expect("retryPolicy");
        assert_eq!(item.apply.as_deref(), Some("retryPolicy: "));
        assert!(item.info.as_deref().is_some_and(|i| !i.is_empty()) || item.detail.is_some());
    }
}
