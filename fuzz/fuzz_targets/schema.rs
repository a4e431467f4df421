//! `outputSchema` subset: schema JSON + value JSON → `CompiledSchema`.
//!
//! Input: the schema (JSON), NUL, the value (JSON), NUL, a text for `example`.
//!
//! Properties: compile errors are non-empty messages; `validate` returns at most
//! `limit` problems and agrees with `is_valid` whatever the limit; a synthesized
//! example validates; without `$ref`/`$defs`, `{"not": s}` accepts exactly what
//! `s` rejects.
#![no_main]

use ax_core::schema::CompiledSchema;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(all) = std::str::from_utf8(data) else {
        return;
    };
    let mut fields = all.split('\0');
    let Ok(schema) = serde_json::from_str::<Value>(fields.next().unwrap_or_default()) else {
        return;
    };
    let value: Value = serde_json::from_str(fields.next().unwrap_or("null")).unwrap_or(Value::Null);
    let text = fields.next().unwrap_or("text");
    let compiled = match CompiledSchema::compile(&schema) {
        Ok(c) => c,
        Err(errors) => {
            assert!(!errors.is_empty());
            assert!(errors.iter().all(|e| !e.is_empty()));
            return;
        }
    };
    let few = compiled.validate(&value, 3);
    assert!(few.len() <= 3);
    let many = compiled.validate(&value, 1000);
    assert_eq!(few.is_empty(), many.is_empty());
    assert_eq!(compiled.is_valid(&value), many.is_empty());
    assert!(many.iter().all(|e| !e.is_empty()));
    if let Some(ex) = compiled.example(text) {
        assert!(compiled.is_valid(&ex));
    }
    let src = schema.to_string();
    if !src.contains("$ref")
        && !src.contains("$defs")
        && !src.contains("definitions")
        && let Ok(not) = CompiledSchema::compile(&json!({ "not": schema }))
    {
        assert_ne!(
            not.is_valid(&value),
            compiled.is_valid(&value),
            "`not` does not invert {schema} on {value}"
        );
    }
});
