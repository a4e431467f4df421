//! A step's `outputSchema` in the forms the vendors' structured-output modes
//! accept. These only steer the model: core validates every answer against the
//! step's own schema, so dropping a keyword a vendor cannot enforce loosens the
//! steering, never the check.

use serde_json::{Map, Value};

/// The schema without the keywords that only say which schema it is (`$schema`,
/// `$id`), which some structured-output modes refuse.
pub(crate) fn without_meta(schema: &Value) -> Value {
    let mut out = schema.clone();
    if let Some(map) = out.as_object_mut() {
        map.remove("$schema");
        map.remove("$id");
    }
    out
}

/// Keywords OpenAI's strict mode accepts.
const OPENAI_STRICT: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "anyOf",
    "description",
    "title",
    "$defs",
    "definitions",
    "$ref",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
];

/// Strict mode's limits on size.
const OPENAI_MAX_DEPTH: usize = 10;
const OPENAI_MAX_PROPERTIES: usize = 5000;

/// Whether OpenAI's strict mode takes the schema as it is: an object at the
/// root; in every object, all properties required and `additionalProperties:
/// false`; only supported keywords; within the nesting and size limits. A
/// schema that is not is sent with `strict: false`.
pub(crate) fn openai_strict_ok(schema: &Value) -> bool {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return false;
    }
    let mut properties = 0;
    strict_node(schema, 0, &mut properties) && properties <= OPENAI_MAX_PROPERTIES
}

fn strict_node(v: &Value, depth: usize, properties: &mut usize) -> bool {
    let Some(map) = v.as_object() else {
        return false;
    };
    if depth > OPENAI_MAX_DEPTH || map.keys().any(|k| !OPENAI_STRICT.contains(&k.as_str())) {
        return false;
    }
    let is_object =
        map.get("type").and_then(Value::as_str) == Some("object") || map.contains_key("properties");
    if is_object {
        let Some(props) = map.get("properties").and_then(Value::as_object) else {
            return false;
        };
        *properties += props.len();
        let required: Vec<&str> = map
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if map.get("additionalProperties") != Some(&Value::Bool(false))
            || props.keys().any(|k| !required.contains(&k.as_str()))
        {
            return false;
        }
        if !props
            .values()
            .all(|p| strict_node(p, depth + 1, properties))
        {
            return false;
        }
    }
    let children = |key: &str| -> Vec<&Value> {
        match map.get(key) {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(Value::Object(o)) if key == "$defs" || key == "definitions" => {
                o.values().collect()
            }
            Some(other @ Value::Object(_)) => vec![other],
            _ => Vec::new(),
        }
    };
    ["items", "anyOf", "$defs", "definitions"]
        .iter()
        .flat_map(|k| children(k))
        .all(|c| strict_node(c, depth + 1, properties))
}

/// Keywords Anthropic's structured outputs accept (the rest are dropped, noted
/// in the description as the SDKs do).
const ANTHROPIC_KEEP: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "anyOf",
    "allOf",
    "description",
    "title",
    "default",
    "$defs",
    "definitions",
    "$ref",
    "format",
    "pattern",
    "minItems",
];

const ANTHROPIC_FORMATS: &[&str] = &[
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "uri",
    "ipv4",
    "ipv6",
    "uuid",
];

/// The schema in the subset Anthropic's structured outputs accept: every object
/// closed (`additionalProperties: false`), unsupported constraints dropped into
/// the description. `None` when it cannot be said in that subset without
/// changing what it means (a map of free keys, a recursive schema, an enum of
/// objects): the caller then uses a forced tool call.
pub(crate) fn for_anthropic(schema: &Value) -> Option<Value> {
    if is_recursive(schema) {
        return None;
    }
    anthropic_node(schema)
}

fn anthropic_node(v: &Value) -> Option<Value> {
    let map = match v {
        Value::Object(map) => map,
        // `true` / `false` schemas have no equivalent.
        _ => return None,
    };
    let mut out = Map::new();
    let mut notes = Vec::new();
    for (k, val) in map {
        match k.as_str() {
            "properties" | "$defs" | "definitions" => {
                let mut inner = Map::new();
                for (name, s) in val.as_object()? {
                    inner.insert(name.clone(), anthropic_node(s)?);
                }
                out.insert(k.clone(), Value::Object(inner));
            }
            "items" => {
                out.insert(k.clone(), anthropic_node(val)?);
            }
            // A narrower "exactly one" becomes "at least one": core checks the rest.
            "anyOf" | "allOf" | "oneOf" => {
                let list = val
                    .as_array()?
                    .iter()
                    .map(anthropic_node)
                    .collect::<Option<Vec<_>>>()?;
                let key = if k == "oneOf" { "anyOf" } else { k.as_str() };
                out.insert(key.into(), Value::Array(list));
            }
            "enum" => {
                let list = val.as_array()?;
                if list.iter().any(|x| x.is_object() || x.is_array()) {
                    return None;
                }
                out.insert(k.clone(), val.clone());
            }
            "additionalProperties" => match val {
                Value::Bool(false) => {}
                // Open objects: closing them narrows the answer, which still fits.
                Value::Bool(true) if map.contains_key("properties") => {}
                _ => return None,
            },
            "format" if !ANTHROPIC_FORMATS.contains(&val.as_str().unwrap_or("")) => {
                notes.push(format!("format: {val}"));
            }
            "pattern" if !simple_pattern(val.as_str().unwrap_or("")) => {
                notes.push(format!("pattern: {val}"));
            }
            "minItems" if val.as_u64().is_some_and(|n| n > 1) => {
                notes.push(format!("minItems: {val}"));
            }
            "$schema" | "$id" | "$comment" | "examples" => {}
            key if ANTHROPIC_KEEP.contains(&key) => {
                out.insert(k.clone(), val.clone());
            }
            key => notes.push(format!("{key}: {val}")),
        }
    }
    let is_object =
        map.get("type").and_then(Value::as_str) == Some("object") || map.contains_key("properties");
    if is_object {
        if !map.contains_key("properties") {
            // A free-form object: nothing to close it around.
            return None;
        }
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    if !notes.is_empty() {
        let mut description = out
            .get("description")
            .and_then(Value::as_str)
            .map(|d| format!("{d} "))
            .unwrap_or_default();
        description.push_str(&format!("({})", notes.join(", ")));
        out.insert("description".into(), Value::String(description));
    }
    Some(Value::Object(out))
}

/// A pattern without the regex features structured outputs refuse
/// (backreferences, lookaround, word boundaries).
fn simple_pattern(p: &str) -> bool {
    let lookaround = p.contains("(?");
    let boundary = p.contains("\\b") || p.contains("\\B");
    let backreference = p
        .as_bytes()
        .windows(2)
        .any(|w| w[0] == b'\\' && w[1].is_ascii_digit() && w[1] != b'0');
    !(lookaround || boundary || backreference)
}

/// An object at the root: what a tool's `input_schema` must be.
pub(crate) fn is_object_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("object")
        || (schema.get("type").is_none() && schema.get("properties").is_some())
}

/// A `$ref` to the root, or a cycle among the definitions.
fn is_recursive(schema: &Value) -> bool {
    let defs: Map<String, Value> = ["$defs", "definitions"]
        .iter()
        .filter_map(|k| schema.get(*k).and_then(Value::as_object))
        .flat_map(|m| m.clone())
        .collect();
    let refs_of = |v: &Value| {
        let mut out = Vec::new();
        collect_refs(v, &mut out);
        out
    };
    if refs_of(schema).iter().any(|r| r == "#") {
        return true;
    }
    // Depth-first search for a cycle: 0 unseen, 1 on the path, 2 done.
    fn visit(
        name: &str,
        defs: &Map<String, Value>,
        state: &mut std::collections::HashMap<String, u8>,
    ) -> bool {
        match state.get(name) {
            Some(1) => return true,
            Some(2) => return false,
            _ => {}
        }
        state.insert(name.to_string(), 1);
        let mut refs = Vec::new();
        if let Some(def) = defs.get(name) {
            collect_refs(def, &mut refs);
        }
        for r in refs {
            if let Some(target) = def_name(&r)
                && visit(target, defs, state)
            {
                return true;
            }
        }
        state.insert(name.to_string(), 2);
        false
    }
    let mut state = std::collections::HashMap::new();
    defs.keys().any(|name| visit(name, &defs, &mut state))
}

fn def_name(reference: &str) -> Option<&str> {
    reference
        .strip_prefix("#/$defs/")
        .or_else(|| reference.strip_prefix("#/definitions/"))
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                if k == "$ref"
                    && let Some(r) = val.as_str()
                {
                    out.push(r.to_string());
                } else {
                    collect_refs(val, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_needs_closed_objects_with_every_property_required() {
        let closed = json!({"type": "object", "additionalProperties": false,
            "required": ["a", "b"],
            "properties": {"a": {"type": "string"}, "b": {"type": "array", "items": {"type": "integer", "minimum": 1}}}});
        assert!(openai_strict_ok(&closed));
        let mut open = closed.clone();
        open.as_object_mut().unwrap().remove("additionalProperties");
        assert!(!openai_strict_ok(&open));
        let mut optional = closed.clone();
        optional["required"] = json!(["a"]);
        assert!(!openai_strict_ok(&optional));
        let mut unsupported = closed.clone();
        unsupported["properties"]["a"]["minLength"] = json!(3);
        assert!(
            !openai_strict_ok(&unsupported),
            "minLength is not in strict mode"
        );
        assert!(
            !openai_strict_ok(&json!({"type": "array", "items": {"type": "string"}})),
            "root must be an object"
        );
        let nested_open = json!({"type": "object", "additionalProperties": false, "required": ["x"],
            "properties": {"x": {"type": "object", "properties": {"y": {"type": "string"}}, "required": ["y"]}}});
        assert!(!openai_strict_ok(&nested_open));
    }

    #[test]
    fn anthropic_closes_objects_and_moves_unsupported_constraints_to_the_description() {
        let schema = json!({"$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object", "required": ["score", "tags"],
        "properties": {
            "score": {"type": "integer", "minimum": 1, "maximum": 10, "description": "How good."},
            "tags": {"type": "array", "minItems": 2, "items": {"type": "string", "maxLength": 20}},
            "kind": {"oneOf": [{"const": "a"}, {"const": "b"}]}
        }});
        let out = for_anthropic(&schema).expect("expressible");
        assert_eq!(out["additionalProperties"], false);
        assert!(out.get("$schema").is_none());
        assert_eq!(
            out["properties"]["score"]["description"],
            "How good. (maximum: 10, minimum: 1)"
        );
        assert!(out["properties"]["score"].get("minimum").is_none());
        assert_eq!(out["properties"]["tags"]["description"], "(minItems: 2)");
        assert_eq!(
            out["properties"]["tags"]["items"]["description"],
            "(maxLength: 20)"
        );
        assert!(out["properties"]["kind"].get("anyOf").is_some());
        assert_eq!(out["required"], json!(["score", "tags"]));
    }

    #[test]
    fn anthropic_refuses_what_it_cannot_say() {
        let map = json!({"type": "object", "additionalProperties": {"type": "number"}});
        assert!(for_anthropic(&map).is_none(), "a map of free keys");
        let free = json!({"type": "object"});
        assert!(for_anthropic(&free).is_none());
        let tree = json!({"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}});
        assert!(for_anthropic(&tree).is_none(), "recursive");
        let cycle = json!({"$defs": {"a": {"type": "object", "properties": {"b": {"$ref": "#/$defs/b"}}},
                                     "b": {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}}},
                           "$ref": "#/$defs/a"});
        assert!(for_anthropic(&cycle).is_none());
        let chain = json!({"$defs": {"a": {"type": "object", "properties": {"b": {"$ref": "#/$defs/b"}}},
                                     "b": {"type": "string"}},
                           "type": "object", "properties": {"x": {"$ref": "#/$defs/a"}}});
        assert!(
            for_anthropic(&chain).is_some(),
            "references without a cycle are fine"
        );
        assert!(for_anthropic(&json!({"enum": [{"a": 1}]})).is_none());
        assert!(simple_pattern("^[a-z]+$"));
        assert!(!simple_pattern("(?=x)"));
        assert!(!simple_pattern("(a)\\1"));
    }
}
