//! `outputSchema`: a JSON Schema (2020-12 vocabulary) that a step's output must
//! satisfy. Schemas are compiled when the workflow is validated, so a typo in a
//! keyword is a validation error, not a silently ignored rule.
//!
//! Supported: type, enum, const, the numeric, string, array and object keywords,
//! allOf/anyOf/oneOf/not, if/then/else, `$ref` to `#`, `#/$defs/…` and
//! `#/definitions/…`, and the annotations (title, description, default, format…).
//! Keywords that need remote documents or the unevaluated-* machinery are refused
//! with a clear message; `x-…` extension keywords are ignored.

use crate::report::suggest;
use regex_lite::Regex;
use serde_json::{Map, Value};

#[derive(Debug, Clone)]
pub struct CompiledSchema {
    root: Schema,
    defs: Defs,
}

/// Definitions by pointer, sorted (a binary search; no `HashMap` type of its own in
/// the wasm).
#[derive(Debug, Clone, Default)]
struct Defs(Vec<(String, Schema)>);

impl Defs {
    fn find(&self, r: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(r))
    }

    fn get(&self, r: &str) -> Option<&Schema> {
        self.find(r).ok().map(|i| &self.0[i].1)
    }

    /// Replaces what the pointer had.
    fn insert(&mut self, r: String, s: Schema) {
        match self.find(&r) {
            Ok(i) => self.0[i].1 = s,
            Err(i) => self.0.insert(i, (r, s)),
        }
    }
}

#[derive(Debug, Clone)]
enum Schema {
    Bool(bool),
    Obj(Box<Rules>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JType {
    Null,
    Boolean,
    Object,
    Array,
    Number,
    Integer,
    String,
}

impl JType {
    fn parse(s: &str) -> Option<JType> {
        Some(match s {
            "null" => JType::Null,
            "boolean" => JType::Boolean,
            "object" => JType::Object,
            "array" => JType::Array,
            "number" => JType::Number,
            "integer" => JType::Integer,
            "string" => JType::String,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            JType::Null => "null",
            JType::Boolean => "boolean",
            JType::Object => "object",
            JType::Array => "array",
            JType::Number => "number",
            JType::Integer => "integer",
            JType::String => "string",
        }
    }
    fn matches(self, v: &Value) -> bool {
        match self {
            JType::Null => v.is_null(),
            JType::Boolean => v.is_boolean(),
            JType::Object => v.is_object(),
            JType::Array => v.is_array(),
            JType::Number => v.is_number(),
            JType::Integer => match v {
                Value::Number(n) => {
                    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
                }
                _ => false,
            },
            JType::String => v.is_string(),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Rules {
    types: Option<Vec<JType>>,
    enumeration: Option<Vec<Value>>,
    constant: Option<Value>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    multiple_of: Option<f64>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    pattern: Option<(String, Regex)>,
    items: Option<Schema>,
    prefix_items: Vec<Schema>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    unique_items: bool,
    contains: Option<Schema>,
    min_contains: Option<u64>,
    max_contains: Option<u64>,
    properties: Vec<(String, Schema)>,
    required: Vec<String>,
    additional_properties: Option<Schema>,
    pattern_properties: Vec<(String, Regex, Schema)>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    property_names: Option<Schema>,
    dependent_required: Vec<(String, Vec<String>)>,
    all_of: Vec<Schema>,
    any_of: Vec<Schema>,
    one_of: Vec<Schema>,
    not: Option<Schema>,
    if_then_else: Option<(Schema, Option<Schema>, Option<Schema>)>,
    reference: Option<String>,
}

const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "$anchor",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
    "contentMediaType",
    "contentEncoding",
    "contentSchema",
];

const KEYWORDS: &[&str] = &[
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "minProperties",
    "maxProperties",
    "propertyNames",
    "dependentRequired",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "$ref",
    "$defs",
    "definitions",
];

const UNSUPPORTED: &[&str] = &[
    "$dynamicRef",
    "$dynamicAnchor",
    "$recursiveRef",
    "$recursiveAnchor",
    "$vocabulary",
    "unevaluatedProperties",
    "unevaluatedItems",
    "dependentSchemas",
    "dependencies",
    "additionalItems",
];

struct Compiler {
    errors: Vec<String>,
    /// Top-level definitions by pointer (`#/$defs/name`, `#/definitions/name`).
    defs: Defs,
    /// Every `$ref` seen, with where it was.
    refs: Vec<(String, String)>,
}

impl CompiledSchema {
    /// Compile a schema; every problem is reported with its location in the schema.
    pub fn compile(schema: &Value) -> Result<CompiledSchema, Vec<String>> {
        let mut c = Compiler {
            errors: Vec::new(),
            defs: Defs::default(),
            refs: Vec::new(),
        };
        let root = c.schema(schema, "", 0);
        let compiled = CompiledSchema {
            root,
            defs: std::mem::take(&mut c.defs),
        };
        // Every `$ref` must resolve.
        for (at, r) in std::mem::take(&mut c.refs) {
            if r != "#" && compiled.defs.get(&r).is_none() {
                c.err(
                    &at,
                    format!(
                        "`$ref: {r}` points to no schema; define it under the top-level `$defs`"
                    ),
                );
            }
        }
        if c.errors.is_empty() {
            Ok(compiled)
        } else {
            Err(c.errors)
        }
    }

    /// Validate a value; returns up to `limit` problems, each with its JSON pointer.
    pub fn validate(&self, value: &Value, limit: usize) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(&self.root, value, &mut String::new(), &mut errors, limit, 0);
        errors
    }

    pub fn is_valid(&self, value: &Value) -> bool {
        self.validate(value, 1).is_empty()
    }

    fn resolve<'s>(&'s self, r: &str) -> Option<&'s Schema> {
        if r == "#" {
            Some(&self.root)
        } else {
            self.defs.get(r)
        }
    }

    fn check(
        &self,
        schema: &Schema,
        v: &Value,
        path: &mut String,
        errors: &mut Vec<String>,
        limit: usize,
        depth: usize,
    ) {
        if errors.len() >= limit {
            return;
        }
        let at = |path: &str| {
            if path.is_empty() {
                "/".to_owned()
            } else {
                path.to_owned()
            }
        };
        let rules = match schema {
            Schema::Bool(true) => return,
            Schema::Bool(false) => {
                errors.push(format!("{}: no value is allowed here", at(path)));
                return;
            }
            Schema::Obj(r) => r,
        };
        if depth > 64 {
            errors.push(format!("{}: the schema recurses too deeply", at(path)));
            return;
        }
        if let Some(r) = &rules.reference
            && let Some(target) = self.resolve(r)
        {
            self.check(target, v, path, errors, limit, depth + 1);
        }
        if let Some(types) = &rules.types
            && !types.iter().any(|t| t.matches(v))
        {
            let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
            push(
                errors,
                limit,
                path,
                format!("expected {}, got {}", names.join(" or "), short(v)),
            );
            return;
        }
        if let Some(options) = &rules.enumeration
            && !options.iter().any(|o| json_eq(o, v))
        {
            let shown: Vec<String> = options.iter().map(|o| o.to_string()).collect();
            push(
                errors,
                limit,
                path,
                format!("expected one of {}, got {}", shown.join(", "), short(v)),
            );
        }
        if let Some(c) = &rules.constant
            && !json_eq(c, v)
        {
            push(
                errors,
                limit,
                path,
                format!("expected {c}, got {}", short(v)),
            );
        }
        if let Some(n) = v.as_f64().filter(|_| v.is_number()) {
            if let Some(m) = rules.minimum.filter(|m| n < *m) {
                push(
                    errors,
                    limit,
                    path,
                    format!("{n} is less than the minimum {m}"),
                );
            }
            if let Some(m) = rules.maximum.filter(|m| n > *m) {
                push(
                    errors,
                    limit,
                    path,
                    format!("{n} is more than the maximum {m}"),
                );
            }
            if let Some(m) = rules.exclusive_minimum.filter(|m| n <= *m) {
                push(errors, limit, path, format!("{n} must be more than {m}"));
            }
            if let Some(m) = rules.exclusive_maximum.filter(|m| n >= *m) {
                push(errors, limit, path, format!("{n} must be less than {m}"));
            }
            if let Some(m) = rules.multiple_of {
                let q = n / m;
                if (q - q.round()).abs() > 1e-9 {
                    push(errors, limit, path, format!("{n} is not a multiple of {m}"));
                }
            }
        }
        if let Value::String(s) = v {
            let len = s.chars().count() as u64;
            if let Some(m) = rules.min_length.filter(|m| len < *m) {
                push(
                    errors,
                    limit,
                    path,
                    format!("text of {len} characters is shorter than {m}"),
                );
            }
            if let Some(m) = rules.max_length.filter(|m| len > *m) {
                push(
                    errors,
                    limit,
                    path,
                    format!("text of {len} characters is longer than {m}"),
                );
            }
            if let Some((src, re)) = &rules.pattern
                && !re.is_match(s)
            {
                push(
                    errors,
                    limit,
                    path,
                    format!("{} does not match the pattern `{src}`", short(v)),
                );
            }
        }
        if let Value::Array(items) = v {
            let n = items.len() as u64;
            if let Some(m) = rules.min_items.filter(|m| n < *m) {
                push(
                    errors,
                    limit,
                    path,
                    format!("{n} items, fewer than the minimum {m}"),
                );
            }
            if let Some(m) = rules.max_items.filter(|m| n > *m) {
                push(
                    errors,
                    limit,
                    path,
                    format!("{n} items, more than the maximum {m}"),
                );
            }
            if rules.unique_items {
                'outer: for i in 0..items.len() {
                    for j in i + 1..items.len() {
                        if json_eq(&items[i], &items[j]) {
                            push(
                                errors,
                                limit,
                                path,
                                format!("items {i} and {j} are equal; items must be unique"),
                            );
                            break 'outer;
                        }
                    }
                }
            }
            for (i, item) in items.iter().enumerate() {
                let sub = rules
                    .prefix_items
                    .get(i)
                    .or(if i >= rules.prefix_items.len() {
                        rules.items.as_ref()
                    } else {
                        None
                    });
                if let Some(sub) = sub {
                    let len = path.len();
                    path.push_str(&format!("/{i}"));
                    self.check(sub, item, path, errors, limit, depth + 1);
                    path.truncate(len);
                }
            }
            if let Some(c) = &rules.contains {
                let count = items.iter().filter(|i| self.passes(c, i, depth)).count() as u64;
                let min = rules.min_contains.unwrap_or(1);
                if count < min {
                    push(
                        errors,
                        limit,
                        path,
                        format!("{count} items match `contains`; at least {min} must"),
                    );
                }
                if let Some(max) = rules.max_contains.filter(|m| count > *m) {
                    push(
                        errors,
                        limit,
                        path,
                        format!("{count} items match `contains`; at most {max} may"),
                    );
                }
            }
        }
        if let Value::Object(map) = v {
            let n = map.len() as u64;
            if let Some(m) = rules.min_properties.filter(|m| n < *m) {
                push(
                    errors,
                    limit,
                    path,
                    format!("{n} fields, fewer than the minimum {m}"),
                );
            }
            if let Some(m) = rules.max_properties.filter(|m| n > *m) {
                push(
                    errors,
                    limit,
                    path,
                    format!("{n} fields, more than the maximum {m}"),
                );
            }
            for r in &rules.required {
                if !map.contains_key(r) {
                    push(errors, limit, path, format!("the field `{r}` is required"));
                }
            }
            for (k, needs) in &rules.dependent_required {
                if map.contains_key(k) {
                    for need in needs {
                        if !map.contains_key(need) {
                            push(
                                errors,
                                limit,
                                path,
                                format!("the field `{need}` is required when `{k}` is present"),
                            );
                        }
                    }
                }
            }
            for (k, val) in map {
                if let Some(names) = &rules.property_names
                    && !self.passes(names, &Value::String(k.clone()), depth)
                {
                    push(
                        errors,
                        limit,
                        path,
                        format!("the field name `{k}` is not allowed"),
                    );
                }
                let mut matched = false;
                let len = path.len();
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                if let Some((_, s)) = rules.properties.iter().find(|(p, _)| p == k) {
                    matched = true;
                    self.check(s, val, path, errors, limit, depth + 1);
                }
                for (_, re, s) in &rules.pattern_properties {
                    if re.is_match(k) {
                        matched = true;
                        self.check(s, val, path, errors, limit, depth + 1);
                    }
                }
                if !matched {
                    match &rules.additional_properties {
                        Some(Schema::Bool(false)) => {
                            path.truncate(len);
                            push(
                                errors,
                                limit,
                                path,
                                format!("the field `{k}` is not allowed"),
                            );
                            continue;
                        }
                        Some(s) => self.check(s, val, path, errors, limit, depth + 1),
                        None => {}
                    }
                }
                path.truncate(len);
            }
        }
        for s in &rules.all_of {
            self.check(s, v, path, errors, limit, depth + 1);
        }
        if !rules.any_of.is_empty() && !rules.any_of.iter().any(|s| self.passes(s, v, depth)) {
            push(
                errors,
                limit,
                path,
                "matches none of the `anyOf` alternatives".into(),
            );
        }
        if !rules.one_of.is_empty() {
            let n = rules
                .one_of
                .iter()
                .filter(|s| self.passes(s, v, depth))
                .count();
            if n != 1 {
                push(
                    errors,
                    limit,
                    path,
                    format!("matches {n} of the `oneOf` alternatives; exactly one must match"),
                );
            }
        }
        if let Some(s) = &rules.not
            && self.passes(s, v, depth)
        {
            push(errors, limit, path, "matches the schema under `not`".into());
        }
        if let Some((cond, then, els)) = &rules.if_then_else {
            let branch = if self.passes(cond, v, depth) {
                then
            } else {
                els
            };
            if let Some(b) = branch {
                self.check(b, v, path, errors, limit, depth + 1);
            }
        }
    }

    /// A small value that satisfies the schema, for offline and simulated
    /// providers: consts, first enum values, required fields, minimal lists,
    /// numbers inside their bounds, and `text` for free-form strings. `None` when
    /// the synthesized value does not validate (e.g. a `pattern` it cannot guess).
    pub fn example(&self, text: &str) -> Option<Value> {
        let v = self.synthesize(&self.root, text, 0);
        self.is_valid(&v).then_some(v)
    }

    fn synthesize(&self, schema: &Schema, text: &str, depth: usize) -> Value {
        let Schema::Obj(r) = schema else {
            return Value::Null;
        };
        if depth > 16 {
            return Value::Null;
        }
        if let Some(c) = &r.constant {
            return c.clone();
        }
        if let Some(first) = r.enumeration.as_ref().and_then(|e| e.first()) {
            return first.clone();
        }
        if let Some(target) = r.reference.as_deref().and_then(|x| self.resolve(x)) {
            return self.synthesize(target, text, depth + 1);
        }
        if let Some(first) = r.all_of.first().or(r.any_of.first()).or(r.one_of.first()) {
            let mut base = self.synthesize(first, text, depth + 1);
            // allOf parts that add object fields.
            for extra in r.all_of.iter().skip(1) {
                if let (Value::Object(m), Value::Object(more)) =
                    (&mut base, self.synthesize(extra, text, depth + 1))
                {
                    for (k, v) in more {
                        m.entry(k).or_insert(v);
                    }
                }
            }
            if r.types.is_none() && r.properties.is_empty() {
                return base;
            }
        }
        let ty = match &r.types {
            Some(t) => t
                .iter()
                .copied()
                .find(|t| *t != JType::Null)
                .unwrap_or(JType::Null),
            None if !r.properties.is_empty() || !r.required.is_empty() => JType::Object,
            None if r.items.is_some() || !r.prefix_items.is_empty() => JType::Array,
            None if r.minimum.is_some() || r.maximum.is_some() => JType::Number,
            None => JType::String,
        };
        match ty {
            JType::Null => Value::Null,
            JType::Boolean => Value::Bool(true),
            JType::Integer | JType::Number => {
                let lo = r
                    .minimum
                    .or(r.exclusive_minimum.map(|m| m + 1.0))
                    .unwrap_or(0.0);
                let hi = r.maximum.or(r.exclusive_maximum.map(|m| m - 1.0));
                let mut n = lo.max(0.0);
                if let Some(h) = hi {
                    n = n.min(h).max(lo);
                }
                if let Some(m) = r.multiple_of {
                    n = (n / m).ceil() * m;
                }
                if ty == JType::Integer || n.fract() == 0.0 {
                    Value::from(n.ceil() as i64)
                } else {
                    serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
                }
            }
            JType::String => {
                let mut s = text.to_owned();
                let min = r.min_length.unwrap_or(0) as usize;
                while s.chars().count() < min {
                    s.push('.');
                }
                if let Some(max) = r.max_length {
                    s = s.chars().take(max as usize).collect();
                }
                Value::String(s)
            }
            JType::Array => {
                let mut items: Vec<Value> = r
                    .prefix_items
                    .iter()
                    .map(|p| self.synthesize(p, text, depth + 1))
                    .collect();
                let min = r.min_items.unwrap_or(0).max(r.min_contains.unwrap_or(0)) as usize;
                while items.len() < min.max(usize::from(r.contains.is_some())) {
                    let sub = r.contains.as_ref().or(r.items.as_ref());
                    items.push(sub.map_or(Value::String(text.to_owned()), |s| {
                        self.synthesize(s, text, depth + 1)
                    }));
                }
                Value::Array(items)
            }
            JType::Object => {
                let mut m = serde_json::Map::new();
                for (k, sub) in &r.properties {
                    m.insert(k.clone(), self.synthesize(sub, text, depth + 1));
                }
                for k in &r.required {
                    if !m.contains_key(k) {
                        let sub = r
                            .additional_properties
                            .as_ref()
                            .filter(|s| !matches!(s, Schema::Bool(_)));
                        m.insert(
                            k.clone(),
                            sub.map_or(Value::String(text.to_owned()), |s| {
                                self.synthesize(s, text, depth + 1)
                            }),
                        );
                    }
                }
                Value::Object(m)
            }
        }
    }

    fn passes(&self, s: &Schema, v: &Value, depth: usize) -> bool {
        let mut errs = Vec::new();
        self.check(s, v, &mut String::new(), &mut errs, 1, depth + 1);
        errs.is_empty()
    }
}

fn push(errors: &mut Vec<String>, limit: usize, path: &str, msg: String) {
    if errors.len() < limit {
        let at = if path.is_empty() { "/" } else { path };
        errors.push(format!("{at}: {msg}"));
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(60).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// JSON equality where 1 and 1.0 are equal.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

impl Compiler {
    fn err(&mut self, at: &str, msg: String) {
        let at = if at.is_empty() { "/" } else { at };
        self.errors.push(format!("at `{at}`: {msg}"));
    }

    fn schema(&mut self, v: &Value, at: &str, depth: usize) -> Schema {
        if depth > 32 {
            self.err(at, "the schema nests more than 32 levels".into());
            return Schema::Bool(true);
        }
        match v {
            Value::Bool(b) => Schema::Bool(*b),
            Value::Object(m) => Schema::Obj(Box::new(self.rules(m, at, depth))),
            other => {
                self.err(
                    at,
                    format!(
                        "a schema is an object or a boolean, not {}",
                        crate::template::json_type_name(other)
                    ),
                );
                Schema::Bool(true)
            }
        }
    }

    fn count(&mut self, m: &Map<String, Value>, key: &str, at: &str) -> Option<u64> {
        let v = m.get(key)?;
        match v.as_u64() {
            Some(n) => Some(n),
            None => {
                self.err(
                    at,
                    format!("`{key}` must be a non-negative integer, not {v}"),
                );
                None
            }
        }
    }

    fn number(&mut self, m: &Map<String, Value>, key: &str, at: &str) -> Option<f64> {
        let v = m.get(key)?;
        match v.as_f64() {
            Some(n) if v.is_number() => Some(n),
            _ => {
                self.err(at, format!("`{key}` must be a number, not {v}"));
                None
            }
        }
    }

    fn list(&mut self, m: &Map<String, Value>, key: &str, at: &str, depth: usize) -> Vec<Schema> {
        match m.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, s)| self.schema(s, &format!("{at}/{key}/{i}"), depth + 1))
                .collect(),
            Some(_) => {
                self.err(at, format!("`{key}` must be a non-empty list of schemas"));
                Vec::new()
            }
        }
    }

    fn sub(&mut self, m: &Map<String, Value>, key: &str, at: &str, depth: usize) -> Option<Schema> {
        m.get(key)
            .map(|s| self.schema(s, &format!("{at}/{key}"), depth + 1))
    }

    fn regex(&mut self, src: &str, at: &str, key: &str) -> Option<Regex> {
        match Regex::new(src) {
            Ok(r) => Some(r),
            Err(e) => {
                let first = e.to_string();
                let first = first.lines().last().unwrap_or("invalid");
                self.err(
                    at,
                    format!("`{key}` `{src}` is not a valid regular expression: {first}"),
                );
                None
            }
        }
    }

    fn strings(&mut self, v: &Value, at: &str, key: &str) -> Vec<String> {
        match v.as_array() {
            Some(items) if items.iter().all(Value::is_string) => items
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            _ => {
                self.err(at, format!("`{key}` must be a list of strings"));
                Vec::new()
            }
        }
    }

    fn rules(&mut self, m: &Map<String, Value>, at: &str, depth: usize) -> Rules {
        let mut r = Rules::default();
        for key in m.keys() {
            if KEYWORDS.contains(&key.as_str())
                || ANNOTATIONS.contains(&key.as_str())
                || key.starts_with("x-")
            {
                continue;
            }
            if UNSUPPORTED.contains(&key.as_str()) {
                self.err(at, format!("`{key}` is not supported by ax; express the rule with the supported keywords (see docs/format.md)"));
                continue;
            }
            let hint = suggest(key, KEYWORDS.iter().chain(ANNOTATIONS).copied())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            self.err(
                at,
                format!("unknown schema keyword `{key}`{hint} (prefix extensions with `x-`)"),
            );
        }
        if let Some(t) = m.get("type") {
            let names: Vec<&Value> = match t {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            let mut types = Vec::new();
            for n in names {
                match n.as_str().and_then(JType::parse) {
                    Some(t) => types.push(t),
                    None => self.err(at, format!("`type` {n} is not one of null, boolean, object, array, number, integer, string")),
                }
            }
            r.types = Some(types);
        }
        if let Some(e) = m.get("enum") {
            match e.as_array() {
                Some(a) => r.enumeration = Some(a.clone()),
                None => self.err(at, "`enum` must be a list".into()),
            }
        }
        r.constant = m.get("const").cloned();
        r.minimum = self.number(m, "minimum", at);
        r.maximum = self.number(m, "maximum", at);
        if m.get("exclusiveMinimum").is_some_and(Value::is_boolean)
            || m.get("exclusiveMaximum").is_some_and(Value::is_boolean)
        {
            self.err(at, "boolean `exclusiveMinimum`/`exclusiveMaximum` (draft 4) is not supported; give the bound as a number".into());
        } else {
            r.exclusive_minimum = self.number(m, "exclusiveMinimum", at);
            r.exclusive_maximum = self.number(m, "exclusiveMaximum", at);
        }
        r.multiple_of = self.number(m, "multipleOf", at);
        if r.multiple_of.is_some_and(|x| x <= 0.0) {
            self.err(at, "`multipleOf` must be greater than 0".into());
            r.multiple_of = None;
        }
        r.min_length = self.count(m, "minLength", at);
        r.max_length = self.count(m, "maxLength", at);
        if let Some(p) = m.get("pattern") {
            match p.as_str() {
                Some(src) => {
                    if let Some(re) = self.regex(src, at, "pattern") {
                        r.pattern = Some((src.to_owned(), re));
                    }
                }
                None => self.err(at, "`pattern` must be a string".into()),
            }
        }
        match m.get("items") {
            // Draft 4–7 tuple form.
            Some(Value::Array(_)) => r.prefix_items = self.list(m, "items", at, depth),
            Some(_) => r.items = self.sub(m, "items", at, depth),
            None => {}
        }
        if m.contains_key("prefixItems") {
            r.prefix_items = self.list(m, "prefixItems", at, depth);
        }
        r.min_items = self.count(m, "minItems", at);
        r.max_items = self.count(m, "maxItems", at);
        match m.get("uniqueItems") {
            Some(Value::Bool(b)) => r.unique_items = *b,
            Some(_) => self.err(at, "`uniqueItems` must be true or false".into()),
            None => {}
        }
        r.contains = self.sub(m, "contains", at, depth);
        r.min_contains = self.count(m, "minContains", at);
        r.max_contains = self.count(m, "maxContains", at);
        if let Some(p) = m.get("properties") {
            match p.as_object() {
                Some(props) => {
                    for (k, s) in props {
                        let s = self.schema(s, &format!("{at}/properties/{k}"), depth + 1);
                        r.properties.push((k.clone(), s));
                    }
                }
                None => self.err(at, "`properties` must be an object of schemas".into()),
            }
        }
        if let Some(req) = m.get("required") {
            r.required = self.strings(req, at, "required");
        }
        r.additional_properties = self.sub(m, "additionalProperties", at, depth);
        if let Some(p) = m.get("patternProperties") {
            match p.as_object() {
                Some(props) => {
                    for (k, s) in props {
                        let s = self.schema(s, &format!("{at}/patternProperties/{k}"), depth + 1);
                        if let Some(re) = self.regex(k, at, "patternProperties") {
                            r.pattern_properties.push((k.clone(), re, s));
                        }
                    }
                }
                None => self.err(at, "`patternProperties` must be an object".into()),
            }
        }
        r.min_properties = self.count(m, "minProperties", at);
        r.max_properties = self.count(m, "maxProperties", at);
        r.property_names = self.sub(m, "propertyNames", at, depth);
        if let Some(d) = m.get("dependentRequired") {
            match d.as_object() {
                Some(obj) => {
                    for (k, v) in obj {
                        let needs = self.strings(v, at, "dependentRequired");
                        r.dependent_required.push((k.clone(), needs));
                    }
                }
                None => self.err(at, "`dependentRequired` must be an object".into()),
            }
        }
        r.all_of = self.list(m, "allOf", at, depth);
        r.any_of = self.list(m, "anyOf", at, depth);
        r.one_of = self.list(m, "oneOf", at, depth);
        r.not = self.sub(m, "not", at, depth);
        if let Some(cond) = self.sub(m, "if", at, depth) {
            let then = self.sub(m, "then", at, depth);
            let els = self.sub(m, "else", at, depth);
            r.if_then_else = Some((cond, then, els));
        }
        if let Some(x) = m.get("$ref") {
            match x.as_str() {
                Some(s) if s == "#" || s.starts_with("#/$defs/") || s.starts_with("#/definitions/") => {
                    self.refs.push((at.to_owned(), s.to_owned()));
                    r.reference = Some(s.to_owned());
                }
                Some(s) => self.err(
                    at,
                    format!("`$ref: {s}` is not supported; refer to `#` or to `#/$defs/NAME` in the same schema"),
                ),
                None => self.err(at, "`$ref` must be a string".into()),
            }
        }
        for container in ["$defs", "definitions"] {
            if let Some(defs) = m.get(container) {
                if !at.is_empty() {
                    self.err(at, format!("`{container}` is only supported at the top of outputSchema; move it there"));
                    continue;
                }
                match defs.as_object() {
                    Some(obj) => {
                        for (k, s) in obj {
                            let compiled = self.schema(s, &format!("/{container}/{k}"), depth + 1);
                            self.defs.insert(format!("#/{container}/{k}"), compiled);
                        }
                    }
                    None => self.err(at, format!("`{container}` must be an object of schemas")),
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn check(schema: Value, value: Value) -> Vec<String> {
        CompiledSchema::compile(&schema)
            .map(|s| s.validate(&value, 10))
            .unwrap_or_else(|e| e)
    }

    #[test]
    fn objects_types_and_enums() {
        let schema = json!({
            "type": "object",
            "required": ["severity", "findings"],
            "properties": {
                "severity": {"enum": ["low", "medium", "high"]},
                "findings": {"type": "array", "items": {"type": "string", "minLength": 3}, "maxItems": 2},
                "score": {"type": "integer", "minimum": 0, "maximum": 10}
            },
            "additionalProperties": false
        });
        assert!(
            check(
                schema.clone(),
                json!({"severity": "high", "findings": ["sql"], "score": 3})
            )
            .is_empty()
        );
        let errs = check(
            schema,
            json!({"severity": "huge", "findings": ["ab", "abc", "abcd"], "score": 11.5, "extra": 1}),
        );
        let all = errs.join("\n");
        assert!(all.contains("/severity: expected one of"), "{all}");
        assert!(all.contains("/findings/0: text of 2 characters"), "{all}");
        assert!(all.contains("/findings: 3 items"), "{all}");
        assert!(all.contains("/score: expected integer"), "{all}");
        assert!(all.contains("`extra` is not allowed"), "{all}");
    }

    #[test]
    fn combinators_refs_and_patterns() {
        let schema = json!({
            "$defs": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
            "anyOf": [{"$ref": "#/$defs/code"}, {"type": "null"}]
        });
        assert!(check(schema.clone(), json!("ABC")).is_empty());
        assert!(check(schema.clone(), json!(null)).is_empty());
        assert_eq!(check(schema, json!("abc")).len(), 1);
        let one = json!({"oneOf": [{"type": "integer"}, {"minimum": 0}]});
        assert!(check(one.clone(), json!(-1)).is_empty());
        assert_eq!(check(one, json!(1)).len(), 1);
        let cond = json!({"if": {"properties": {"kind": {"const": "a"}}}, "then": {"required": ["a"]}, "else": {"required": ["b"]}});
        assert!(check(cond.clone(), json!({"kind": "a", "a": 1})).is_empty());
        assert_eq!(check(cond, json!({"kind": "z", "a": 1})).len(), 1);
        let rec =
            json!({"type": "object", "properties": {"child": {"$ref": "#"}}, "required": ["v"]});
        assert_eq!(check(rec, json!({"v": 1, "child": {"child": {}}})).len(), 2);
    }

    #[test]
    fn bad_schemas_are_refused_with_hints() {
        let errs = check(
            json!({"type": "obj", "requried": ["a"], "unevaluatedProperties": false, "pattern": "("}),
            json!(null),
        );
        let all = errs.join("\n");
        assert!(all.contains("`type` \"obj\""), "{all}");
        assert!(all.contains("did you mean `required`"), "{all}");
        assert!(all.contains("not supported"), "{all}");
        assert!(all.contains("regular expression"), "{all}");
        let errs = check(json!({"$ref": "#/$defs/missing"}), json!(1));
        assert_eq!(
            errs,
            [
                "at `/`: `$ref: #/$defs/missing` points to no schema; define it under the top-level `$defs`"
            ]
        );
        assert!(
            check(json!({"$ref": "col", "$defs": {"col": {}}}), json!(1))[0]
                .contains("not supported")
        );
        let nested = json!({"properties": {"a": {"$defs": {"d": {}}}}, "$ref": "#/$defs/d"});
        assert_eq!(check(nested, json!(1)).len(), 2);
        assert!(check(json!({"x-ui": 1, "title": "t"}), json!(1)).is_empty());
    }

    #[test]
    fn examples_satisfy_their_schemas() {
        for schema in [
            json!({"type": "object", "required": ["severity", "items"], "properties": {"severity": {"enum": ["low", "high"]}, "items": {"type": "array", "minItems": 2, "items": {"type": "string", "minLength": 6}}, "score": {"type": "integer", "minimum": 3, "maximum": 9}}, "additionalProperties": false}),
            json!({"$defs": {"n": {"type": "number", "exclusiveMinimum": 0.5}}, "type": "object", "properties": {"n": {"$ref": "#/$defs/n"}}}),
            json!({"allOf": [{"type": "object", "required": ["a"]}, {"required": ["b"]}]}),
            json!({"type": ["null", "boolean"]}),
            json!(true),
        ] {
            let c = CompiledSchema::compile(&schema).expect("compiles");
            assert!(c.example("echo").is_some(), "{schema}");
        }
        let c = CompiledSchema::compile(&json!({"type": "string", "pattern": "^[0-9]{4}$"}))
            .expect("compiles");
        assert_eq!(c.example("echo"), None);
    }

    #[test]
    fn arrays_unique_contains_tuples() {
        assert_eq!(
            check(json!({"uniqueItems": true}), json!([1, 1.0])).len(),
            1
        );
        assert_eq!(
            check(
                json!({"contains": {"const": 2}, "maxContains": 1}),
                json!([2, 2])
            )
            .len(),
            1
        );
        assert!(
            check(
                json!({"prefixItems": [{"type": "string"}], "items": {"type": "number"}}),
                json!(["a", 1, 2])
            )
            .is_empty()
        );
        assert_eq!(
            check(json!({"items": [{"type": "string"}]}), json!([1])).len(),
            1
        );
    }
}
