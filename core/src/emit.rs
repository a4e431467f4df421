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
            Value::String(s) if literal_ok(&s) => {
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
/// otherwise double-quoted (see [`double_quoted`]).
fn scalar_string(s: &str) -> String {
    if plain_ok(s) {
        s.to_owned()
    } else {
        double_quoted(s)
    }
}

/// May `c` appear as itself in a plain, literal or double-quoted YAML scalar?
/// YAML's printable set (1.2 §5.1) without the byte order mark (a parser takes
/// it for the start of a document, and refuses it inside one) and without the
/// characters that YAML 1.1 reads as line breaks (NEL, LS, PS).
fn yaml_printable(c: char) -> bool {
    matches!(c,
        '\t' | ' '..='~'
        | '\u{A0}'..='\u{2027}'
        | '\u{202A}'..='\u{D7FF}'
        | '\u{E000}'..='\u{FEFE}'
        | '\u{FF00}'..='\u{FFFD}'
        | '\u{10000}'..='\u{10FFFF}')
}

/// A double-quoted YAML scalar: JSON's escapes (a JSON string is a valid YAML
/// one), and `\uXXXX` for every character YAML does not take as itself.
fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if yaml_printable(c) => out.push(c),
            c => {
                // Astral characters are always printable; the rest fit in 16 bits.
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
        }
    }
    out.push('"');
    out
}

/// A multi-line string that a `|` literal block keeps exactly: the first line
/// sets the block's indentation, so it must not be empty or start with a
/// space; every character must be printable (a block has no escapes).
fn literal_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\t', '\n'])
        && s.chars().all(|c| c == '\n' || yaml_printable(c))
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
    s.chars().all(|c| c != '\t' && yaml_printable(c))
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

    /// Approvals, `forEach` and sub-workflow steps, and `outputs`, written and
    /// read back.
    #[test]
    fn new_step_types_round_trip() {
        let src = "name: flows\ninputs:\n  topics: {default: [a, b]}\noutputs:\n  report: \"{{report.result}}\"\nsteps:\n  - key: research\n    type: workflow\n    workflow: ./topic.yaml\n    forEach: \"{{topics}}\"\n    maxConcurrency: 2\n    maxItems: 50\n    inputs: {topic: \"{{item}}\", depth: 3, tags: [x, \"{{index}}\"]}\n  - key: sign-off\n    type: approval\n    prompt: \"Publish? {{research.result}}\"\n    dependencies: [research]\n    timeoutMs: 60000\n    onTimeout: approve\n    outputSchema: {type: [object, \"null\"]}\n  - key: report\n    agent: writer\n    forEach: [one, \"{{sign-off.result.comment}}\"]\n    prompt: \"{{item}}\"\n    dependencies: [sign-off]\n";
        let a = analyze(src, &Options::for_file("x.yaml"));
        assert!(a.report.valid, "{:?}", a.report);
        let wf = a.workflow().cloned().expect("workflow");
        let yaml = to_yaml(&wf);
        let b = analyze(&yaml, &Options::for_file("x.yaml"));
        assert!(b.report.valid, "{yaml}\n{:?}", b.report);
        assert_eq!(b.workflow(), Some(&wf), "{yaml}");
        assert!(
            yaml.contains("  - key: research\n    type: workflow\n    workflow: ./topic.yaml\n"),
            "{yaml}"
        );
        assert!(!yaml.contains("agent: \"\""), "{yaml}");
        let json = to_json(&wf);
        let c = analyze(&json, &Options::for_file("x.json"));
        assert_eq!(c.workflow(), Some(&wf), "{json}");
    }

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
