//! The validator's problems as the code editor's diagnostics: UTF-16 ranges,
//! severity, the message, and a fix where the validator suggests one.
//!
//! The validator says "did you mean `x`?" for a misspelt field, dependency,
//! placeholder or error class; the fix replaces the marked text with `x`. A
//! placeholder naming a step that is not upstream gets "add the dependency"
//! instead. Both are buttons in the diagnostic's tooltip.

use crate::editor_host::{Diagnostic, Fix};
use crate::text::Offsets;
use ax_core::{Analysis, Code, Problem};

/// The diagnostics of an analysis of `text`.
pub fn diagnostics(text: &str, analysis: &Analysis) -> Vec<Diagnostic> {
    let r = &analysis.report;
    if r.errors.is_empty() && r.warnings.is_empty() {
        return Vec::new();
    }
    let offsets = Offsets::new(text);
    r.errors
        .iter()
        .map(|p| (p, "error"))
        .chain(r.warnings.iter().map(|p| (p, "warning")))
        .filter_map(|(p, severity)| {
            let (line, column) = (p.line?, p.column?);
            let (start, end) = offsets.range(line, column, p.end_line.zip(p.end_column));
            let fix = fix_for(text, analysis, p, start, end).map(|f| Fix {
                label: f.label,
                from: offsets.utf16(f.from),
                to: offsets.utf16(f.to),
                insert: f.insert,
            });
            Some(Diagnostic {
                from: offsets.utf16(start),
                to: offsets.utf16(end),
                severity,
                message: format!("{} [{}]", p.message, p.code),
                source: "ax",
                fix,
            })
        })
        .collect()
}

/// A fix in byte offsets.
struct ByteFix {
    label: String,
    from: usize,
    to: usize,
    insert: String,
}

/// The suggestion in a message: the text between backticks after "did you mean".
pub fn suggestion(message: &str) -> Option<&str> {
    let rest = &message[message.find("did you mean `")? + "did you mean `".len()..];
    let s = &rest[..rest.find('`')?];
    (!s.is_empty()).then_some(s)
}

/// The fix of a problem whose text is `start..end`, if there is one.
fn fix_for(
    text: &str,
    analysis: &Analysis,
    p: &Problem,
    start: usize,
    end: usize,
) -> Option<ByteFix> {
    let marked = text.get(start..end)?;
    if p.code == Code::PlaceholderNotUpstream {
        return add_dependency_fix(text, analysis, p, marked);
    }
    let s = suggestion(&p.message)?;
    // Only where the marked text is the misspelt word (quotes stay as they are).
    let bare = marked.trim_matches(['"', '\'']);
    if bare.is_empty() || bare == s || bare.contains('\n') {
        return None;
    }
    let from = start + (marked.len() - marked.trim_start_matches(['"', '\'']).len());
    Some(ByteFix {
        label: format!("Replace with {s}"),
        from,
        to: from + bare.len(),
        insert: s.to_owned(),
    })
}

/// `{{x.result}}` in a step that does not depend on `x`: the fix adds `x` to
/// its dependencies (the edit is `ax_core::edit`'s, as the form's).
fn add_dependency_fix(
    text: &str,
    analysis: &Analysis,
    p: &Problem,
    marked: &str,
) -> Option<ByteFix> {
    let wf = analysis.workflow()?;
    let dependent = p.step.as_deref()?;
    let i = wf.steps.iter().position(|s| s.key == dependent)?;
    let dependency = marked
        .trim_start_matches('{')
        .split(['.', '}'])
        .next()?
        .trim();
    if wf.step(dependency).is_none()
        || crate::layout::cycle_if_added(wf, dependent, dependency).is_some()
    {
        return None;
    }
    let edited = ax_core::edit::add_dependency(text, None, i, dependency).ok()?;
    let (from, to, insert) = smallest_change(text, &edited);
    Some(ByteFix {
        label: format!("Add {dependency} to the dependencies of {dependent}"),
        from,
        to,
        insert: insert.to_owned(),
    })
}

/// The one range of `before` that `after` replaces, and its new text.
fn smallest_change<'a>(before: &str, after: &'a str) -> (usize, usize, &'a str) {
    let mut prefix = before
        .bytes()
        .zip(after.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    while !before.is_char_boundary(prefix) || !after.is_char_boundary(prefix) {
        prefix -= 1;
    }
    let max_suffix = before.len().min(after.len()) - prefix;
    let mut suffix = before
        .bytes()
        .rev()
        .zip(after.bytes().rev())
        .take_while(|(a, b)| a == b)
        .count()
        .min(max_suffix);
    while !before.is_char_boundary(before.len() - suffix)
        || !after.is_char_boundary(after.len() - suffix)
    {
        suffix -= 1;
    }
    (
        prefix,
        before.len() - suffix,
        &after[prefix..after.len() - suffix],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ax_core::{Options, analyze};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn lint(text: &str) -> Vec<Diagnostic> {
        diagnostics(text, &analyze(text, &Options::default()))
    }

    #[test]
    fn problems_become_ranges_with_messages() {
        let text =
            "name: t\nsteps:\n  - key: a\n    agent: x\n    prompt: go\n    dependencies: [b]\n";
        let d = lint(text);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].severity, "error");
        assert_eq!(&text[d[0].from as usize..d[0].to as usize], "b");
        assert!(
            d[0].message.ends_with("[missing-dependency]"),
            "{}",
            d[0].message
        );
    }

    #[test]
    fn misspellings_get_a_replacement() {
        let text = "name: t\nsteps:\n  - key: draft\n    agent: x\n    prompt: go\n  - key: b\n    agent: x\n    prompt: go\n    dependsOn: [draft]\n";
        let d = lint(text);
        let fix = d.iter().find_map(|d| d.fix.clone()).expect("a fix");
        assert_eq!(fix.insert, "dependencies");
        assert_eq!(&text[fix.from as usize..fix.to as usize], "dependsOn");
        let text = "name: t\nsteps:\n  - key: draft\n    agent: x\n    prompt: go\n  - key: b\n    agent: x\n    prompt: go\n    dependencies: [drafts]\n";
        let fix = lint(text)
            .iter()
            .find_map(|d| d.fix.clone())
            .expect("a fix");
        assert_eq!(
            (fix.insert.as_str(), fix.label.as_str()),
            ("draft", "Replace with draft")
        );
    }

    #[test]
    fn offsets_count_utf16_units() {
        let text = "name: \"é😀\"\nsteps:\n  - key: a\n    agent: x\n    prompt: go\n    dependencies: [b]\n";
        let d = lint(text);
        let utf16: Vec<u16> = text.encode_utf16().collect();
        let marked =
            String::from_utf16(&utf16[d[0].from as usize..d[0].to as usize]).unwrap_or_default();
        assert_eq!(marked, "b");
    }

    #[test]
    fn a_placeholder_not_upstream_gets_its_dependency_added() {
        let text = "name: t\nsteps:\n  - key: a\n    agent: x\n    prompt: go\n  - key: b\n    agent: x\n    prompt: \"use {{a.result}}\"\n";
        let d = lint(text);
        let fix = d.iter().find_map(|d| d.fix.clone()).expect("a fix");
        let mut fixed = text.to_owned();
        fixed.replace_range(fix.from as usize..fix.to as usize, &fix.insert);
        assert!(analyze(&fixed, &Options::default()).report.valid, "{fixed}");
        assert_eq!(fix.label, "Add a to the dependencies of b");
    }

    #[test]
    fn suggestions_are_read_from_messages() {
        assert_eq!(
            suggestion("unknown field `x`; did you mean `when`?"),
            Some("when")
        );
        assert_eq!(suggestion("no suggestion here"), None);
    }
}
