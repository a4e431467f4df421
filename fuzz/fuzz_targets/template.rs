//! Template text + a context → `Template::parse` and `render`.
//!
//! Input: the template, then NUL-separated `name`/`value` pairs: a name starting
//! with `@` is a step (its value the output text; no value: a step that did not
//! complete), any other name a run input (its value JSON, else a string).
//!
//! Properties: `Template::scan` (what validation runs) sees the same placeholders
//! and errors as `Template::parse`; errors carry byte ranges that slice the text; each placeholder's
//! range slices to its `raw`; text without `{{` renders to itself; `render` is
//! `Ok` exactly when every placeholder resolves, and its errors name placeholders
//! of the template.
#![no_main]

use ax_core::template::{Part, PlaceholderRef, Template, parse_output_json, resolve};
use ax_fuzz::TextCtx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((text, ctx)) = TextCtx::split_input(data) else {
        return;
    };
    for out in ctx.steps.values().flatten() {
        let _ = parse_output_json(out);
    }

    // Validation scans (`Template::scan`), plans parse: they must agree.
    let mut scanned = Vec::new();
    let scan = Template::scan(text, |p| scanned.push(p));
    let parsed = Template::parse(text);
    match &parsed {
        Ok(t) => {
            assert_eq!(scan, Ok(()));
            let refs: Vec<PlaceholderRef<'_>> = t.placeholders().map(Into::into).collect();
            assert_eq!(scanned, refs);
        }
        Err(errors) => assert_eq!(scan.as_ref().err(), Some(errors)),
    }

    let t = match parsed {
        Ok(t) => t,
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in &errors {
                assert!(!e.message.is_empty());
                assert!(
                    text.get(e.range.clone()).is_some(),
                    "error range {:?} does not slice the text",
                    e.range
                );
            }
            return;
        }
    };
    for ph in t.placeholders() {
        assert_eq!(text.get(ph.range.clone()), Some(ph.raw.as_str()));
        let _ = ph.path_text();
    }
    if !text.contains("{{") {
        assert_eq!(t.parts.len(), usize::from(!text.is_empty()));
    }
    let resolves = t.placeholders().all(|ph| resolve(ph, &ctx).is_ok());
    match t.render(&ctx) {
        Ok(out) => {
            assert!(
                resolves,
                "render succeeded where a placeholder does not resolve"
            );
            if !text.contains("{{") {
                assert_eq!(out, text);
            }
            // Literal parts appear in order.
            let mut rest = out.as_str();
            for p in &t.parts {
                if let Part::Text(s) = p {
                    let at = rest.find(s.as_str()).expect("literal text kept");
                    rest = &rest[at + s.len()..];
                }
            }
        }
        Err(errors) => {
            assert!(!resolves, "render failed where every placeholder resolves");
            assert!(!errors.is_empty());
            for e in &errors {
                assert!(t.placeholders().any(|ph| ph.raw == e.placeholder));
                assert!(!e.message.is_empty());
            }
        }
    }
});
