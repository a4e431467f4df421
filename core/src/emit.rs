//! Workflow → YAML or JSON text (export, "save as", the browser's form edits).
//!
//! The YAML writer is ours so that output is stable and readable: block style,
//! multi-line prompts as `|` literals, and strings quoted only when YAML would
//! otherwise read them as something else.

use crate::model::Workflow;
use crate::parse::{Format, Limits, Node, NodeKind, parse};
use serde_json::Value;

/// Pretty JSON in the file format's field order.
pub fn to_json(wf: &Workflow) -> String {
    serde_json::to_string_pretty(wf).unwrap_or_default() + "\n"
}

/// Block-style YAML in the file format's field order.
pub fn to_yaml(wf: &Workflow) -> String {
    // serde writes struct fields in declaration order, and our JSON parser keeps
    // object order: going through JSON text keeps the file format's order (a
    // `serde_json::Value` would sort the keys).
    let json = serde_json::to_string(wf).unwrap_or_default();
    let limits = Limits {
        max_bytes: usize::MAX,
        max_depth: 256,
        max_alias_nodes: 0,
    };
    let mut out = String::new();
    if let Ok(doc) = parse(&json, Some(Format::Json), &limits) {
        write_node(&doc.root, 0, &mut out, Context::Root);
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Context {
    Root,
    MapValue,
    SeqItem,
}

fn indent(n: usize, out: &mut String) {
    for _ in 0..n {
        out.push(' ');
    }
}

/// A scalar node as it should read in YAML.
fn node_scalar(n: &Node<'_>) -> Option<Value> {
    match &n.kind {
        NodeKind::Scalar { .. } => Some(n.to_json()),
        _ => None,
    }
}

fn write_node(n: &Node<'_>, level: usize, out: &mut String, ctx: Context) {
    match &n.kind {
        NodeKind::Map(entries) if !entries.is_empty() => {
            if ctx == Context::MapValue {
                out.push('\n');
            }
            for (i, e) in entries.iter().enumerate() {
                // The first key of a list item shares the `- ` line.
                if !(ctx == Context::SeqItem && i == 0) {
                    indent(level, out);
                }
                out.push_str(&scalar_string(&e.key));
                out.push(':');
                write_node(&e.value, level + 2, out, Context::MapValue);
            }
        }
        NodeKind::Seq(items) if !items.is_empty() => {
            let scalars: Option<Vec<Value>> = items.iter().map(node_scalar).collect();
            if let Some(scalars) = scalars.filter(|v| {
                v.len() <= 8
                    && v.iter()
                        .all(|x| !matches!(x, Value::String(s) if s.contains('\n')))
            }) {
                let flow: Vec<String> = scalars.iter().map(flow_scalar).collect();
                let line = format!(" [{}]", flow.join(", "));
                if line.len() < 80 {
                    out.push_str(&line);
                    out.push('\n');
                    return;
                }
            }
            if ctx == Context::MapValue {
                out.push('\n');
            }
            for x in items {
                indent(level, out);
                out.push_str("- ");
                match &x.kind {
                    NodeKind::Map(m) if !m.is_empty() => {
                        write_node(x, level + 2, out, Context::SeqItem)
                    }
                    _ => {
                        let mut s = String::new();
                        write_node(x, level + 2, &mut s, Context::SeqItem);
                        out.push_str(s.trim_start());
                    }
                }
            }
        }
        NodeKind::Map(_) => out.push_str(if ctx == Context::MapValue {
            " {}\n"
        } else {
            "{}\n"
        }),
        NodeKind::Seq(_) => out.push_str(if ctx == Context::MapValue {
            " []\n"
        } else {
            "[]\n"
        }),
        NodeKind::Scalar { .. } => match n.to_json() {
            Value::String(s)
                if s.contains('\n') && !s.contains('\r') && !s.starts_with([' ', '\t']) =>
            {
                // A literal block keeps prompts readable.
                let chomp = if s.ends_with("\n\n") {
                    "+"
                } else if s.ends_with('\n') {
                    ""
                } else {
                    "-"
                };
                out.push_str(if ctx == Context::MapValue { " |" } else { "|" });
                out.push_str(chomp);
                out.push('\n');
                let body = s.strip_suffix('\n').unwrap_or(&s);
                for line in body.split('\n') {
                    if !line.is_empty() {
                        indent(level, out);
                        out.push_str(line);
                    }
                    out.push('\n');
                }
            }
            other => {
                if ctx == Context::MapValue {
                    out.push(' ');
                }
                out.push_str(&flow_scalar(&other));
                out.push('\n');
            }
        },
    }
}

fn flow_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => scalar_string(s),
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

/// A string as a YAML scalar: plain when that reads back as the same string,
/// otherwise double-quoted with JSON escapes (valid YAML).
fn scalar_string(s: &str) -> String {
    if plain_ok(s) {
        s.to_owned()
    } else {
        Value::String(s.to_owned()).to_string()
    }
}

fn plain_ok(s: &str) -> bool {
    if s.is_empty() || s.trim() != s {
        return false;
    }
    if !matches!(
        crate::parse::resolve(s, false),
        crate::parse::Scalar::Str(_)
    ) {
        return false; // would read as null, bool or number
    }
    let first = s.chars().next().unwrap_or(' ');
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        // `-x` and `:x` are fine only when not followed by space, but keep it simple.
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    if s.contains(['[', ']', '{', '}', ',']) {
        // Safe in block context but not in flow lists; quote for uniformity.
        return false;
    }
    s.chars().all(|c| !c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Options, analyze};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SRC: &str = r#"name: "round trip: yes"
version: "1.0"
inputs:
  topic: {description: "What about", default: 3}
steps:
  - key: a
    agent: backend
    prompt: "line one\nline two: {{topic}}\n"
  - key: b
    agent: "true"
    prompt: "- starts with dash, has [brackets] and # hash"
    dependencies: [a]
    optional: true
    retryPolicy: {maxRetries: 2, retryableErrors: [timeout]}
    outputSchema: {type: object, required: [x], properties: {x: {enum: ["a", 1, null]}}}
    when: '{{a.result}} contains "x"'
config: {parallelism: 2, continueOnError: true}
tags: [one, "two words", "3"]
"#;

    #[test]
    fn yaml_and_json_round_trip() {
        let a = analyze(SRC, &Options::for_file("x.yaml"));
        assert!(a.report.valid, "{:?}", a.report);
        let wf = a.workflow().cloned().expect("workflow");
        let yaml = to_yaml(&wf);
        let b = analyze(&yaml, &Options::for_file("x.yaml"));
        assert!(b.report.valid, "{yaml}\n{:?}", b.report);
        assert_eq!(b.workflow(), Some(&wf), "{yaml}");
        let json = to_json(&wf);
        let c = analyze(&json, &Options::for_file("x.json"));
        assert_eq!(c.workflow(), Some(&wf), "{json}");
        assert!(yaml.contains("prompt: |\n      line one\n"), "{yaml}");
        // The file format's order, not alphabetical.
        assert!(yaml.starts_with("name: "), "{yaml}");
        let key = yaml.find("- key: a").unwrap_or(usize::MAX);
        let agent = yaml.find("agent: backend").unwrap_or(0);
        assert!(key < agent, "{yaml}");
    }
}
