//! `when:` text + a context → `Condition::parse` and `evaluate`.
//!
//! Input: the condition, then NUL-separated `name`/`value` pairs as in the
//! template target (`@key` = a step's output).
//!
//! Properties: error ranges slice the text; placeholder ranges slice to their
//! `raw`; evaluation is deterministic; `!(c)` parses whenever `c` does (up to the
//! nesting limit) and evaluates to the negation (or the same error).
#![no_main]

use ax_core::condition::Condition;
use ax_fuzz::TextCtx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((text, ctx)) = TextCtx::split_input(data) else {
        return;
    };
    let c = match Condition::parse(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.message.is_empty());
            assert!(
                text.get(e.range.clone()).is_some(),
                "error range {:?} does not slice {text:?}",
                e.range
            );
            return;
        }
    };
    for ph in c.placeholders() {
        assert_eq!(text.get(ph.range.clone()), Some(ph.raw.as_str()));
    }
    let v = c.evaluate(&ctx);
    assert_eq!(v, c.evaluate(&ctx), "evaluation is not deterministic");
    if let Err(m) = &v {
        assert!(!m.is_empty());
    }
    let negated = format!("!({text})");
    match Condition::parse(&negated) {
        Ok(n) => match (&v, n.evaluate(&ctx)) {
            (Ok(a), Ok(b)) => assert_eq!(*a, !b, "!({text:?}) is not the negation"),
            (Err(a), Err(b)) => assert_eq!(*a, b),
            (a, b) => panic!("{text:?} gives {a:?} but its negation {b:?}"),
        },
        Err(e) => assert!(
            e.message.contains("nest") || e.message.contains("deep"),
            "{text:?} parses but {negated:?} does not: {}",
            e.message
        ),
    }
});
