//! Text → a tree of spanned nodes, for YAML and JSON alike, with limits that make
//! hostile input fail fast (size, nesting, alias expansion, invalid UTF-8).
//!
//! The tree keeps every node's byte span so that every later problem can point at
//! the exact line and column, and so that editors can rewrite one field in place.
//! Scalars stay as text plus "was it quoted"; their type is resolved only when the
//! loader asks (YAML 1.2 core schema), so `version: 1.0` can still be read as the
//! string `"1.0"` without loss.

mod json;
mod yaml;

use crate::report::Code;
use crate::source::Span;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The two accepted syntaxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// By file extension, else `None`.
    pub fn from_filename(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".json") {
            Some(Format::Json)
        } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Some(Format::Yaml)
        } else {
            None
        }
    }

    /// By content: a document whose first significant character opens a JSON
    /// object or array is JSON.
    pub fn sniff(text: &str) -> Format {
        let trimmed = text.trim_start_matches('\u{feff}').trim_start();
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

/// Limits for untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size of the text in bytes (default 4 MiB).
    pub max_bytes: usize,
    /// Maximum nesting of mappings and sequences (default 64).
    pub max_depth: usize,
    /// Maximum number of nodes that YAML aliases may add (default 100,000).
    pub max_alias_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 4 * 1024 * 1024,
            max_depth: 64,
            max_alias_nodes: 100_000,
        }
    }
}

/// A node of the parsed document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node<'a> {
    pub kind: NodeKind<'a>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind<'a> {
    /// A scalar: its text and whether it was quoted (quoted scalars are always strings).
    Scalar {
        text: Cow<'a, str>,
        quoted: bool,
    },
    Seq(Vec<Node<'a>>),
    Map(Vec<Entry<'a>>),
}

/// A mapping entry. Keys are scalars; `key_span` points at the key text.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<'a> {
    pub key: Cow<'a, str>,
    pub key_span: Span,
    pub value: Node<'a>,
}

/// A scalar with its type resolved (YAML 1.2 core schema; JSON is a subset).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'s> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'s str),
}

impl<'a> Node<'a> {
    pub fn scalar(&self) -> Option<Scalar<'_>> {
        match &self.kind {
            NodeKind::Scalar { text, quoted } => Some(resolve(text, *quoted)),
            _ => None,
        }
    }

    /// A short description of the node's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.scalar() {
            Some(Scalar::Null) => "null",
            Some(Scalar::Bool(_)) => "a boolean",
            Some(Scalar::Int(_)) => "an integer",
            Some(Scalar::Float(_)) => "a number",
            Some(Scalar::Str(_)) => "a string",
            None => match self.kind {
                NodeKind::Seq(_) => "a list",
                _ => "a mapping",
            },
        }
    }

    /// The node as JSON (for `outputSchema`, input defaults and input files).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Scalar { text, quoted } => match resolve(text, *quoted) {
                Scalar::Null => Value::Null,
                Scalar::Bool(b) => Value::Bool(b),
                Scalar::Int(i) => Value::from(i),
                Scalar::Float(f) => serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .unwrap_or_else(|| Value::String(text.to_string())),
                Scalar::Str(s) => Value::String(s.to_owned()),
            },
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => {
                // Inserted one by one: `collect()` would sort (and bring a sort).
                let mut m = serde_json::Map::new();
                m.extend(
                    entries
                        .iter()
                        .map(|e| (e.key.to_string(), e.value.to_json())),
                );
                Value::Object(m)
            }
        }
    }

    fn count(&self) -> usize {
        match &self.kind {
            NodeKind::Scalar { .. } => 1,
            NodeKind::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            NodeKind::Map(entries) => {
                1 + entries.iter().map(|e| 1 + e.value.count()).sum::<usize>()
            }
        }
    }
}

/// Resolve a scalar's type. Quoted scalars are strings; plain ones follow the YAML
/// 1.2 core schema (`yes`/`no`/`on`/`off` stay strings).
pub fn resolve(text: &str, quoted: bool) -> Scalar<'_> {
    if quoted {
        return Scalar::Str(text);
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    let bytes = text.as_bytes();
    let first = bytes[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Scalar::Str(text);
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if !hex.is_empty()
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(v) = i64::from_str_radix(hex, 16)
        {
            return Scalar::Int(v);
        }
        return Scalar::Str(text);
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if !oct.is_empty()
            && oct.bytes().all(|b| (b'0'..=b'7').contains(&b))
            && let Ok(v) = i64::from_str_radix(oct, 8)
        {
            return Scalar::Int(v);
        }
        return Scalar::Str(text);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(v) => Scalar::Int(v),
            Err(_) => text
                .parse::<f64>()
                .map(Scalar::Float)
                .unwrap_or(Scalar::Str(text)),
        };
    }
    if is_float_syntax(digits)
        && let Ok(v) = text.parse::<f64>()
    {
        return Scalar::Float(v);
    }
    Scalar::Str(text)
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_float_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

/// Why text could not be turned into a tree.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub code: Code,
    pub message: String,
    pub span: Span,
}

impl ParseError {
    pub(crate) fn new(code: Code, span: Span, message: impl Into<String>) -> ParseError {
        ParseError {
            code,
            message: message.into(),
            span,
        }
    }
}

/// A parsed document.
#[derive(Debug, Clone)]
pub struct Document<'a> {
    pub format: Format,
    pub root: Node<'a>,
}

/// Check the size limit and UTF-8 of raw bytes.
pub fn decode<'b>(bytes: &'b [u8], limits: &Limits) -> Result<&'b str, ParseError> {
    if bytes.len() > limits.max_bytes {
        return Err(too_large_file(bytes.len(), limits));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        ParseError::new(
            Code::Syntax,
            Span::new(at, at + 1),
            format!(
                "the file is not valid UTF-8 (invalid byte at offset {at}); save it as UTF-8 text"
            ),
        )
    })
}

fn too_large_file(len: usize, limits: &Limits) -> ParseError {
    ParseError::new(
        Code::TooLarge,
        Span::new(0, 0),
        format!(
            "the file is {} bytes; the limit is {} bytes. Split the workflow or raise the limit",
            len, limits.max_bytes
        ),
    )
}

/// Parse text as `format` (or detect it: extension first, then content).
pub fn parse<'a>(
    text: &'a str,
    format: Option<Format>,
    limits: &Limits,
) -> Result<Document<'a>, ParseError> {
    if text.len() > limits.max_bytes {
        return Err(too_large_file(text.len(), limits));
    }
    match format {
        Some(Format::Json) => json::parse(text, limits).map(|root| Document {
            format: Format::Json,
            root,
        }),
        Some(Format::Yaml) => yaml::parse(text, limits).map(|root| Document {
            format: Format::Yaml,
            root,
        }),
        None => match Format::sniff(text) {
            Format::Json => match json::parse(text, limits) {
                Ok(root) => Ok(Document {
                    format: Format::Json,
                    root,
                }),
                // `{a: 1}` is YAML flow style, not JSON: give YAML a chance.
                Err(json_err) => match yaml::parse(text, limits) {
                    Ok(root) => Ok(Document {
                        format: Format::Yaml,
                        root,
                    }),
                    Err(_) => Err(json_err),
                },
            },
            Format::Yaml => yaml::parse(text, limits).map(|root| Document {
                format: Format::Yaml,
                root,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn core_schema_resolution() {
        assert_eq!(resolve("", false), Scalar::Null);
        assert_eq!(resolve("~", false), Scalar::Null);
        assert_eq!(resolve("true", false), Scalar::Bool(true));
        assert_eq!(resolve("yes", false), Scalar::Str("yes"));
        assert_eq!(resolve("42", false), Scalar::Int(42));
        assert_eq!(resolve("-7", false), Scalar::Int(-7));
        assert_eq!(resolve("0x1F", false), Scalar::Int(31));
        assert_eq!(resolve("0o17", false), Scalar::Int(15));
        assert_eq!(resolve("1.5", false), Scalar::Float(1.5));
        assert_eq!(resolve("1e3", false), Scalar::Float(1000.0));
        assert_eq!(resolve(".5", false), Scalar::Float(0.5));
        assert_eq!(resolve("1.0.0", false), Scalar::Str("1.0.0"));
        assert_eq!(resolve("42", true), Scalar::Str("42"));
        assert_eq!(resolve("-", false), Scalar::Str("-"));
        assert_eq!(resolve("1e", false), Scalar::Str("1e"));
        assert!(matches!(resolve(".nan", false), Scalar::Float(f) if f.is_nan()));
    }

    #[test]
    fn format_detection() {
        assert_eq!(Format::from_filename("a/b.JSON"), Some(Format::Json));
        assert_eq!(Format::from_filename("x.yml"), Some(Format::Yaml));
        assert_eq!(Format::from_filename("x.txt"), None);
        assert_eq!(Format::sniff("  \n{\"a\":1}"), Format::Json);
        assert_eq!(Format::sniff("name: x"), Format::Yaml);
    }

    #[test]
    fn yaml_flow_mapping_sniffed_as_json_falls_back_to_yaml() {
        let doc = parse("{name: x, steps: []}", None, &Limits::default());
        assert!(matches!(
            doc,
            Ok(Document {
                format: Format::Yaml,
                ..
            })
        ));
    }

    #[test]
    fn invalid_utf8_and_size_are_reported() {
        let limits = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        let err = decode(&[b'a'; 11], &limits).err();
        assert_eq!(err.map(|e| e.code), Some(Code::TooLarge));
        let err = decode(b"name: \xff", &Limits::default()).err();
        assert_eq!(err.as_ref().map(|e| e.code), Some(Code::Syntax));
        assert_eq!(err.map(|e| e.span.start), Some(6));
    }
}
