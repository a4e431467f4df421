//! Prompt templates: `{{name}}` (a run input), `{{step.result}}` (a step's output
//! text) and `{{step.result.a.b}}` / `{{step.result.items[0]}}` (a field of the
//! step's output parsed as JSON). `{{x ?? "fallback"}}` gives a value to use when
//! `x` has none (a skipped step, a missing field). `\{{` writes a literal `{{`.
//!
//! In a `forEach` step, `{{item}}` (and `{{item.field}}`) is the current item and
//! `{{index}}` its 0-based position.
//!
//! Rendering a placeholder without a value and without a fallback is an error that
//! names the placeholder: nothing is silently replaced by an empty string.

use serde_json::Value;
use std::borrow::Cow;
use std::ops::Range;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Placeholder(Placeholder),
}

/// `{{root.seg.seg ?? "fallback"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Placeholder {
    pub root: String,
    pub path: Vec<Segment>,
    pub fallback: Option<String>,
    /// The placeholder as written, braces included.
    pub raw: String,
    /// Byte range of `raw` in the template text.
    pub range: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A field name (`result`, the most common one, is not allocated).
    Field(Cow<'static, str>),
    Index(usize),
}

impl std::fmt::Display for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Segment::Field(s) => write!(f, "{s}"),
            Segment::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// What a placeholder refers to, once step keys are known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ref<'p> {
    Input { name: &'p str, path: &'p [Segment] },
    Step { key: &'p str, path: &'p [Segment] },
}

/// A malformed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
    /// Byte range in the template text.
    pub range: Range<usize>,
}

impl Placeholder {
    /// Classify against the workflow's step keys. `{{x}}` where x is a step (without
    /// `.result`) is an error: a step's value is always `{{x.result}}`.
    pub fn classify(&self, is_step: impl Fn(&str) -> bool) -> Result<Ref<'_>, String> {
        if is_step(&self.root) {
            match self.path.first() {
                Some(Segment::Field(f)) if f == "result" => Ok(Ref::Step {
                    key: &self.root,
                    path: &self.path[1..],
                }),
                _ => Err(step_without_result(&self.raw, &self.root)),
            }
        } else {
            Ok(Ref::Input {
                name: &self.root,
                path: &self.path,
            })
        }
    }

    /// The path as written, without braces or fallback: `step.result.a[0]`.
    pub fn path_text(&self) -> String {
        let mut s = self.root.clone();
        for seg in &self.path {
            match seg {
                Segment::Field(f) => {
                    s.push('.');
                    s.push_str(f);
                }
                Segment::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        s
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl Template {
    /// Parse a template; every malformed placeholder is reported.
    pub fn parse(text: &str) -> Result<Template, Vec<TemplateError>> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let errors = walk_template(text, &mut |piece| match piece {
            Piece::Text(t) => {
                literal.push_str(t);
                Ok(0)
            }
            Piece::Placeholder(start) => {
                let (ph, end) = parse_placeholder(text, start)?;
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Placeholder(ph));
                Ok(end)
            }
        });
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        if errors.is_empty() {
            Ok(Template { parts })
        } else {
            Err(errors)
        }
    }

    /// Check a template without building it: every placeholder, as written, goes to
    /// `each`; every malformed one is reported, as [`Template::parse`] would. This is
    /// what validation runs on every prompt (no allocation per placeholder); a
    /// [`crate::Plan`] parses a prompt when its step first runs.
    pub fn scan<'t>(
        text: &'t str,
        mut each: impl FnMut(PlaceholderRef<'t>),
    ) -> Result<(), Vec<TemplateError>> {
        let errors = walk_template(text, &mut |piece| match piece {
            Piece::Text(_) => Ok(0),
            Piece::Placeholder(start) => {
                let mut first_is_result = None;
                let (parsed, end) = placeholder_parts(text, start, &mut |seg| {
                    first_is_result.get_or_insert(seg.is_result());
                })?;
                each(PlaceholderRef {
                    raw: parsed.raw,
                    root: parsed.root,
                    first_is_result: first_is_result.unwrap_or(false),
                });
                Ok(end)
            }
        });
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The template's one placeholder, when the template is nothing else (spaces
    /// around it allowed): such a template renders to the placeholder's value
    /// itself where a value is wanted (`forEach`, a child's `inputs`, `outputs`).
    pub fn as_single(&self) -> Option<&Placeholder> {
        let mut found = None;
        for part in &self.parts {
            match part {
                Part::Placeholder(p) if found.is_none() => found = Some(p),
                Part::Text(s) if s.trim().is_empty() => {}
                _ => return None,
            }
        }
        found
    }

    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|p| match p {
            Part::Placeholder(ph) => Some(ph),
            Part::Text(_) => None,
        })
    }

    /// Render with values from `ctx`. Every placeholder without a value is reported.
    pub fn render(&self, ctx: &dyn Context) -> Result<String, Vec<RenderError>> {
        let mut out = String::new();
        let mut errors = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Placeholder(ph) => match resolve(ph, ctx) {
                    Ok(v) => out.push_str(&v.to_text()),
                    Err(e) => errors.push(e),
                },
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

/// A piece of template text: literal text (escapes resolved) or a placeholder
/// starting at a byte offset.
enum Piece<'t> {
    Text(&'t str),
    Placeholder(usize),
}

/// Walk a template's text: `on` gets each piece in order and, for a placeholder,
/// answers where it ends (or its error and where to resume). Returns the errors.
fn walk_template<'t>(
    text: &'t str,
    // `dyn`: one copy of the walk in the page's wasm, not one per caller.
    on: &mut dyn FnMut(Piece<'t>) -> Result<usize, (TemplateError, usize)>,
) -> Vec<TemplateError> {
    let mut errors = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if rest.starts_with("\\{{") {
            // Resolved into the literal `{{` (never an error).
            let _ = on(Piece::Text("{{"));
            i += 3;
            continue;
        }
        if rest.starts_with("{{") {
            match on(Piece::Placeholder(i)) {
                Ok(end) => i = end,
                Err((e, resume)) => {
                    errors.push(e);
                    i = resume;
                }
            }
            continue;
        }
        // Up to the next interesting byte.
        let next =
            crate::scan::find2(&bytes[i + 1..], b'{', b'\\').map_or(text.len(), |n| i + 1 + n);
        let _ = on(Piece::Text(&text[i..next]));
        i = next;
    }
    errors
}

/// A placeholder as written, borrowed from the template text: what validation
/// needs, without building a [`Placeholder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaceholderRef<'t> {
    /// The placeholder as written, braces included.
    pub raw: &'t str,
    /// The name before the first `.` or `[`.
    pub root: &'t str,
    /// Whether the path starts with `.result` (as a step's value must).
    pub first_is_result: bool,
}

impl<'t> PlaceholderRef<'t> {
    /// Like [`Placeholder::classify`]: `Ok(true)` for a step's result, `Ok(false)`
    /// for a run input, an error for a step named without `.result`.
    pub fn classify(&self, is_step: impl Fn(&str) -> bool) -> Result<bool, String> {
        if !is_step(self.root) {
            Ok(false)
        } else if self.first_is_result {
            Ok(true)
        } else {
            Err(step_without_result(self.raw, self.root))
        }
    }
}

impl<'p> From<&'p Placeholder> for PlaceholderRef<'p> {
    fn from(p: &'p Placeholder) -> Self {
        PlaceholderRef {
            raw: &p.raw,
            root: &p.root,
            first_is_result: matches!(p.path.first(), Some(Segment::Field(f)) if f == "result"),
        }
    }
}

fn step_without_result(raw: &str, root: &str) -> String {
    format!("`{raw}` refers to step `{root}`; write `{{{{{root}.result}}}}` for its output")
}

/// Parse `{{ … }}` starting at byte `start` (which holds `{{`). On error, returns
/// where to resume scanning.
pub(crate) fn parse_placeholder(
    text: &str,
    start: usize,
) -> Result<(Placeholder, usize), (TemplateError, usize)> {
    let mut path = Vec::new();
    let (p, end) = placeholder_parts(text, start, &mut |seg| {
        path.push(match seg {
            Seg::Field("result") => Segment::Field(Cow::Borrowed("result")),
            Seg::Field(f) => Segment::Field(Cow::Owned(f.to_owned())),
            Seg::Quoted(s) => Segment::Field(Cow::Owned(s)),
            Seg::Index(i) => Segment::Index(i),
        })
    })?;
    Ok((
        Placeholder {
            root: p.root.to_owned(),
            path,
            fallback: p.fallback,
            raw: p.raw.to_owned(),
            range: p.range,
        },
        end,
    ))
}

/// A path segment as written: a field name, a quoted field name, an index.
enum Seg<'t> {
    Field(&'t str),
    Quoted(String),
    Index(usize),
}

impl Seg<'_> {
    fn is_result(&self) -> bool {
        match self {
            Seg::Field(f) => *f == "result",
            Seg::Quoted(f) => f == "result",
            Seg::Index(_) => false,
        }
    }
}

/// A placeholder's text parts (its path segments go to the caller one by one).
struct PlaceholderText<'t> {
    raw: &'t str,
    root: &'t str,
    fallback: Option<String>,
    range: Range<usize>,
}

/// Parse `{{ … }}` at `start` without building it: the segments go to `seg`.
fn placeholder_parts<'t>(
    text: &'t str,
    start: usize,
    seg: &mut dyn FnMut(Seg<'t>),
) -> Result<(PlaceholderText<'t>, usize), (TemplateError, usize)> {
    let Some(close_rel) = crate::scan::find_pair(&text.as_bytes()[start + 2..], b'}') else {
        return Err((
            TemplateError {
                message: "`{{` is never closed: add `}}`, or write `\\{{` for literal braces"
                    .into(),
                range: start..text.len(),
            },
            text.len(),
        ));
    };
    let end = start + 2 + close_rel + 2;
    let inner = &text[start + 2..end - 2];
    let raw = &text[start..end];
    let err = |message: String| {
        Err((
            TemplateError {
                message,
                range: start..end,
            },
            end,
        ))
    };
    let (path_part, fallback) = match crate::scan::find_pair(inner.as_bytes(), b'?') {
        Some(q) => {
            let fb = inner[q + 2..].trim();
            match parse_string_literal(fb) {
                Some(s) => (&inner[..q], Some(s)),
                None => {
                    return err(format!(
                        "in `{raw}`, the fallback after `??` must be a quoted string, like `?? \"none\"`"
                    ));
                }
            }
        }
        None => (inner, None),
    };
    let path_text = path_part.trim();
    if path_text.is_empty() {
        return err(format!(
            "`{raw}` is empty: name an input (`{{{{topic}}}}`) or a step result (`{{{{step.result}}}}`)"
        ));
    }
    // Names are ASCII (`is_name_char`), so byte offsets are char boundaries.
    let name_end = |from: usize| {
        path_text.as_bytes()[from..]
            .iter()
            .position(|&b| !is_name_char(char::from(b)))
            .map_or(path_text.len(), |n| from + n)
    };
    let root_end = name_end(0);
    let root = &path_text[..root_end];
    if root.is_empty() {
        return err(format!(
            "`{raw}` must start with a name (letters, digits, `_`, `-`)"
        ));
    }
    // `pos` is always at a char boundary: after a name (ASCII) or a `]`.
    let mut pos = root_end;
    while let Some(c) = path_text[pos..].chars().next() {
        match c {
            '.' => {
                let field_end = name_end(pos + 1);
                let field = &path_text[pos + 1..field_end];
                if field.is_empty() {
                    return err(format!("`{raw}` has an empty field name after `.`"));
                }
                match field.parse::<usize>() {
                    Ok(i) if field.bytes().all(|b| b.is_ascii_digit()) => seg(Seg::Index(i)),
                    _ => seg(Seg::Field(field)),
                }
                pos = field_end;
            }
            '[' => {
                let rest = &path_text[pos + 1..];
                let Some(close) = find_bracket_close(rest) else {
                    return err(format!("`{raw}` has an unclosed `[`"));
                };
                let inside = rest[..close].trim();
                if let Ok(i) = inside.parse::<usize>() {
                    seg(Seg::Index(i));
                } else if let Some(s) = parse_string_literal(inside) {
                    seg(Seg::Quoted(s));
                } else {
                    return err(format!(
                        "in `{raw}`, `[{inside}]` must hold an index (`[0]`) or a quoted field name (`[\"a b\"]`)"
                    ));
                }
                // Past the closing bracket (one byte).
                pos += 1 + close + 1;
            }
            c if c.is_whitespace() => {
                return err(format!(
                    "`{raw}` has a space inside the name; placeholders look like `{{{{step.result.field}}}}`"
                ));
            }
            c => {
                return err(format!(
                    "`{raw}` contains `{c}`; names use letters, digits, `_` and `-`"
                ));
            }
        }
    }
    Ok((
        PlaceholderText {
            raw,
            root,
            fallback,
            range: start..end,
        },
        end,
    ))
}

fn find_bracket_close(s: &str) -> Option<usize> {
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c == ']' {
            return Some(i);
        }
    }
    None
}

/// A double- or single-quoted string (JSON escapes in double quotes).
pub(crate) fn parse_string_literal(s: &str) -> Option<String> {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        serde_json::from_str::<String>(s).ok()
    } else if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
        let inner = &s[1..s.len() - 1];
        (!inner.contains('\'')).then(|| inner.to_owned())
    } else {
        None
    }
}

/// Values that templates and conditions read.
pub trait Context {
    /// A run input.
    fn input(&self, name: &str) -> Option<&Value>;
    /// A completed step's output text (`None` if the step did not complete).
    fn output(&self, key: &str) -> Option<&str>;
    /// The step's output parsed as JSON (see [`parse_output_json`]).
    fn output_json(&self, key: &str) -> Option<Cow<'_, Value>> {
        self.output(key).and_then(parse_output_json).map(Cow::Owned)
    }
    /// Is `key` a step of the workflow?
    fn is_step(&self, key: &str) -> bool;
    /// Why a step has no output, for error messages ("was skipped: …").
    fn missing_reason(&self, _key: &str) -> Option<String> {
        None
    }
    /// In a `forEach` step: the current item and its 0-based position.
    fn item(&self) -> Option<(&Value, usize)> {
        None
    }
}

/// A context that adds a `forEach` item to another.
pub struct WithItem<'c> {
    pub base: &'c dyn Context,
    pub item: &'c Value,
    pub index: usize,
}

impl Context for WithItem<'_> {
    fn input(&self, name: &str) -> Option<&Value> {
        self.base.input(name)
    }
    fn output(&self, key: &str) -> Option<&str> {
        self.base.output(key)
    }
    fn output_json(&self, key: &str) -> Option<Cow<'_, Value>> {
        self.base.output_json(key)
    }
    fn is_step(&self, key: &str) -> bool {
        self.base.is_step(key)
    }
    fn missing_reason(&self, key: &str) -> Option<String> {
        self.base.missing_reason(key)
    }
    fn item(&self) -> Option<(&Value, usize)> {
        Some((self.item, self.index))
    }
}

/// Render a value whose texts are templates (in lists and mappings too): a text
/// that is one placeholder becomes that placeholder's value (a list stays a list,
/// a step's output text stays text), any other text is rendered as text.
pub fn render_value(v: &Value, ctx: &dyn Context) -> Result<Value, Vec<RenderError>> {
    let mut errors = Vec::new();
    let out = render_value_in(v, ctx, &mut errors);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn render_value_in(v: &Value, ctx: &dyn Context, errors: &mut Vec<RenderError>) -> Value {
    match v {
        Value::String(s) if s.contains("{{") => match Template::parse(s) {
            Err(errs) => {
                errors.extend(errs.into_iter().map(|e| RenderError {
                    placeholder: s.get(e.range.clone()).unwrap_or_default().to_owned(),
                    message: e.message,
                }));
                Value::Null
            }
            Ok(t) => match t.as_single() {
                Some(ph) => match resolve(ph, ctx) {
                    Ok(r) => r.into_json(),
                    Err(e) => {
                        errors.push(e);
                        Value::Null
                    }
                },
                None => match t.render(ctx) {
                    Ok(text) => Value::String(text),
                    Err(errs) => {
                        errors.extend(errs);
                        Value::Null
                    }
                },
            },
        },
        // `\{{` in a text without placeholders is still an escape.
        Value::String(s) if s.contains("\\{{") => match Template::parse(s) {
            Ok(t) => t.render(ctx).map(Value::String).unwrap_or_else(|errs| {
                errors.extend(errs);
                Value::Null
            }),
            Err(_) => v.clone(),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|x| render_value_in(x, ctx, errors))
                .collect(),
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), render_value_in(x, ctx, errors)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A placeholder that has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    pub placeholder: String,
    pub message: String,
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A resolved value: a step's raw text, or a JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved<'c> {
    Text(&'c str),
    Json(Cow<'c, Value>),
}

impl Resolved<'_> {
    /// Strings as themselves, everything else as compact JSON.
    pub fn to_text(&self) -> Cow<'_, str> {
        match self {
            Resolved::Text(t) => Cow::Borrowed(t),
            Resolved::Json(v) => match v.as_ref() {
                Value::String(s) => Cow::Borrowed(s.as_str()),
                other => Cow::Owned(other.to_string()),
            },
        }
    }

    pub fn into_json(self) -> Value {
        match self {
            Resolved::Text(t) => Value::String(t.to_owned()),
            Resolved::Json(v) => v.into_owned(),
        }
    }
}

/// Resolve a placeholder's value, or say precisely why it has none.
pub fn resolve<'c>(ph: &Placeholder, ctx: &'c dyn Context) -> Result<Resolved<'c>, RenderError> {
    let fail = |message: String| -> Result<Resolved<'c>, RenderError> {
        match &ph.fallback {
            Some(fb) => Ok(Resolved::Json(Cow::Owned(Value::String(fb.clone())))),
            None => Err(RenderError {
                placeholder: ph.raw.clone(),
                message,
            }),
        }
    };
    if let Some((item, index)) = ctx.item() {
        match ph.root.as_str() {
            "item" => {
                return match walk(item, &ph.path) {
                    Ok(v) => Ok(Resolved::Json(Cow::Borrowed(v))),
                    Err(m) => fail(format!("`{}` has no value: item {index} {m}", ph.raw)),
                };
            }
            "index" => {
                return match walk(&Value::from(index), &ph.path) {
                    Ok(v) => Ok(Resolved::Json(Cow::Owned(v.clone()))),
                    Err(m) => fail(format!("`{}` has no value: the index {m}", ph.raw)),
                };
            }
            _ => {}
        }
    }
    let reference = match ph.classify(|k| ctx.is_step(k)) {
        Ok(r) => r,
        Err(m) => {
            return Err(RenderError {
                placeholder: ph.raw.clone(),
                message: m,
            });
        }
    };
    match reference {
        Ref::Input { name, path } => {
            let Some(v) = ctx.input(name) else {
                return fail(format!(
                    "`{}` has no value: the run has no input `{name}` (pass it with --input {name}=…)",
                    ph.raw
                ));
            };
            match walk(v, path) {
                Ok(v) => Ok(Resolved::Json(Cow::Borrowed(v))),
                Err(m) => fail(format!("`{}` has no value: input `{name}` {m}", ph.raw)),
            }
        }
        Ref::Step { key, path } => {
            let Some(text) = ctx.output(key) else {
                let why = ctx
                    .missing_reason(key)
                    .unwrap_or_else(|| "has not completed".to_owned());
                return fail(format!(
                    "`{}` has no value: step `{key}` {why} (give a fallback: `{{{{{} ?? \"…\"}}}}`)",
                    ph.raw,
                    ph.path_text()
                ));
            };
            if path.is_empty() {
                return Ok(Resolved::Text(text));
            }
            let Some(json) = ctx.output_json(key) else {
                return fail(format!(
                    "`{}` has no value: the output of step `{key}` is not JSON, so it has no field `{}`",
                    ph.raw, path[0]
                ));
            };
            match json {
                Cow::Borrowed(v) => match walk(v, path) {
                    Ok(v) => Ok(Resolved::Json(Cow::Borrowed(v))),
                    Err(m) => fail(format!(
                        "`{}` has no value: the output of step `{key}` {m}",
                        ph.raw
                    )),
                },
                Cow::Owned(v) => match walk(&v, path) {
                    Ok(found) => Ok(Resolved::Json(Cow::Owned(found.clone()))),
                    Err(m) => fail(format!(
                        "`{}` has no value: the output of step `{key}` {m}",
                        ph.raw
                    )),
                },
            }
        }
    }
}

/// Follow a path into a JSON value.
pub fn walk<'v>(mut v: &'v Value, path: &[Segment]) -> Result<&'v Value, String> {
    let mut walked = String::new();
    for seg in path {
        let next = match (seg, v) {
            (Segment::Field(f), Value::Object(m)) => m.get(f.as_ref()),
            (Segment::Index(i), Value::Array(a)) => a.get(*i),
            // `.0` on an object with a field "0".
            (Segment::Index(i), Value::Object(m)) => m.get(&i.to_string()),
            _ => None,
        };
        match next {
            Some(n) => v = n,
            None => {
                let at = if walked.is_empty() {
                    String::new()
                } else {
                    format!(" at `{walked}`")
                };
                return Err(match (seg, v) {
                    (Segment::Field(f), Value::Object(_)) => format!("has no field `{f}`{at}"),
                    (Segment::Index(i), Value::Array(a)) => {
                        format!("has {} items{at}, so there is no item [{i}]", a.len())
                    }
                    (_, other) => {
                        format!("holds {}{at}, which has no `{seg}`", json_type_name(other))
                    }
                });
            }
        }
        match seg {
            Segment::Field(f) => {
                if !walked.is_empty() {
                    walked.push('.');
                }
                walked.push_str(f);
            }
            Segment::Index(i) => walked.push_str(&format!("[{i}]")),
        }
    }
    Ok(v)
}

pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A step's output as JSON: the whole text, or else the first fenced code block
/// (models often wrap JSON in ```json … ```).
pub fn parse_output_json(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    if let Ok(v) = serde_json::from_str(trimmed) {
        return Some(v);
    }
    let start = trimmed.find("```")?;
    let after = &trimmed[start + 3..];
    let body_start = after.find('\n')? + 1;
    let body = &after[body_start..];
    let end = body.find("```")?;
    serde_json::from_str(body[..end].trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    struct Ctx {
        inputs: HashMap<String, Value>,
        outputs: HashMap<String, String>,
        steps: Vec<&'static str>,
    }
    impl Context for Ctx {
        fn input(&self, name: &str) -> Option<&Value> {
            self.inputs.get(name)
        }
        fn output(&self, key: &str) -> Option<&str> {
            self.outputs.get(key).map(String::as_str)
        }
        fn is_step(&self, key: &str) -> bool {
            self.steps.contains(&key)
        }
    }

    fn ctx() -> Ctx {
        Ctx {
            inputs: HashMap::from([
                ("topic".to_owned(), json!("rust")),
                ("cfg".to_owned(), json!({"depth": 3})),
            ]),
            outputs: HashMap::from([
                (
                    "audit".to_owned(),
                    "```json\n{\"severity\": \"high\", \"items\": [1, {\"a b\": true}]}\n```"
                        .to_owned(),
                ),
                ("plain".to_owned(), "just text".to_owned()),
            ]),
            steps: vec!["audit", "plain", "skipped"],
        }
    }

    fn render(t: &str) -> Result<String, Vec<RenderError>> {
        Template::parse(t).map_err(|_| Vec::new())?.render(&ctx())
    }

    #[test]
    fn renders_inputs_results_and_paths() {
        assert_eq!(
            render("About {{topic}}.").ok().as_deref(),
            Some("About rust.")
        );
        assert_eq!(
            render("{{ plain.result }}!").ok().as_deref(),
            Some("just text!")
        );
        assert_eq!(
            render("{{audit.result.severity}}").ok().as_deref(),
            Some("high")
        );
        assert_eq!(
            render("{{audit.result.items.0}}").ok().as_deref(),
            Some("1")
        );
        assert_eq!(
            render("{{audit.result.items[1][\"a b\"]}}").ok().as_deref(),
            Some("true")
        );
        assert_eq!(render("{{cfg}}").ok().as_deref(), Some("{\"depth\":3}"));
        assert_eq!(render("{{cfg.depth}}").ok().as_deref(), Some("3"));
    }

    #[test]
    fn escapes_and_fallbacks() {
        assert_eq!(
            render("\\{{literal}} {{topic}}").ok().as_deref(),
            Some("{{literal}} rust")
        );
        assert_eq!(render("a { b } c").ok().as_deref(), Some("a { b } c"));
        assert_eq!(
            render("{{skipped.result ?? \"n/a\"}}").ok().as_deref(),
            Some("n/a")
        );
        assert_eq!(
            render("{{audit.result.nope ?? 'none'}}").ok().as_deref(),
            Some("none")
        );
    }

    #[test]
    fn missing_values_name_the_placeholder() {
        let errs = render("{{nope}} and {{audit.result.missing}} and {{plain.result.x}}")
            .expect_err("three missing values");
        assert_eq!(errs.len(), 3);
        assert_eq!(errs[0].placeholder, "{{nope}}");
        assert!(
            errs[1].message.contains("has no field `missing`"),
            "{}",
            errs[1].message
        );
        assert!(errs[2].message.contains("not JSON"), "{}", errs[2].message);
        let errs = render("{{skipped.result}}").expect_err("not completed");
        assert!(
            errs[0].message.contains("skipped.result ?? "),
            "{}",
            errs[0].message
        );
        let errs = render("{{audit}}").expect_err("step without .result");
        assert!(
            errs[0].message.contains("audit.result"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn malformed_placeholders_are_reported_with_ranges() {
        let errs = Template::parse("ok {{ }} then {{a b}} then {{x.}} then {{unclosed")
            .expect_err("malformed");
        assert_eq!(errs.len(), 4);
        assert_eq!(errs[0].range, 3..8);
        let errs = Template::parse("{{x ?? nope}}").expect_err("bad fallback");
        assert!(errs[0].message.contains("quoted string"));
    }

    #[test]
    fn output_json_tolerates_fences() {
        assert_eq!(parse_output_json(" {\"a\":1} "), Some(json!({"a": 1})));
        assert_eq!(parse_output_json("Here:\n```\n[1]\n```"), Some(json!([1])));
        assert_eq!(parse_output_json("no json"), None);
    }

    /// Validation scans prompts ([`Template::scan`]) and plans parse them
    /// ([`Template::parse`]) when a step runs: both must agree on every text, in the
    /// placeholders seen and in the errors.
    #[test]
    fn scan_agrees_with_parse() {
        const PIECES: &[&str] = &[
            "{{",
            "}}",
            "\\{{",
            "\\",
            "a",
            "b-1",
            "_x",
            ".",
            "result",
            "[0]",
            "[\"result\"]",
            "[\"a b\"]",
            "[",
            "]",
            "??",
            " ?? \"fb\"",
            "'q'",
            " ",
            "{",
            "}",
            "é",
            "7",
            "\n",
            "{{a.result}}",
            "{{b-1.result.x[0]}}",
            "{{_x}}",
            "{{a.result ?? \"d\"}}",
            "{{ a.result }}",
            "{{a[\"result\"].y}}",
            "{{a.resultx}}",
            "{{a.0.result}}",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        let mut placeholders = 0;
        for _ in 0..20_000 {
            let text: String = (0..next() % 12)
                .map(|_| PIECES[next() % PIECES.len()])
                .collect();
            let mut seen = Vec::new();
            let scanned = Template::scan(&text, |p| seen.push(p));
            match Template::parse(&text) {
                Ok(t) => {
                    assert_eq!(scanned, Ok(()), "{text:?}");
                    let parsed: Vec<PlaceholderRef<'_>> =
                        t.placeholders().map(Into::into).collect();
                    assert_eq!(seen, parsed, "{text:?}");
                    placeholders += parsed.len();
                }
                Err(errors) => assert_eq!(scanned, Err(errors), "{text:?}"),
            }
        }
        assert!(
            placeholders > 1_000,
            "the generator makes placeholders: {placeholders}"
        );
    }
}
