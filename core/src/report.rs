//! Problems found in a workflow file, in the one shape the CLI, the API and the
//! browser all show: `{code, message, line, column, step}`.

use crate::source::{LineIndex, Span};
use serde::{Deserialize, Serialize};

/// Stable problem codes: tests, scripts and the UI match on these strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The text is not valid YAML/JSON (or not UTF-8).
    Syntax,
    /// A field is unknown, missing or of the wrong type.
    Schema,
    /// The file has no steps.
    EmptyWorkflow,
    /// Two steps share a key.
    DuplicateStep,
    /// A dependency names no step.
    MissingDependency,
    /// A step depends on itself.
    SelfDependency,
    /// Dependencies form a cycle.
    Cycle,
    /// `{{x.result}}` where x is no step and no declared input.
    UnknownPlaceholder,
    /// `{{x.result}}` where x is a step but not an ancestor.
    PlaceholderNotUpstream,
    /// A value is out of range or malformed (key format, condition syntax, …).
    InvalidValue,
    /// The file, its nesting or its alias expansion exceeds a limit (also
    /// sub-workflows nested deeper than 8).
    TooLarge,
    /// `{{item}}` or `{{index}}` outside a step with `forEach`.
    ItemOutsideForeach,
    /// A `type: workflow` step names a file or stored workflow that cannot be loaded.
    MissingWorkflow,
    /// A `type: workflow` step gives an input the child workflow does not take.
    UnknownInput,
    /// A `type: workflow` step does not give an input the child workflow requires.
    MissingInput,
    // Warnings.
    /// `{{name}}` that is not a declared input: allowed, supplied at run time.
    UndeclaredInput,
    /// A declared input that no prompt or condition uses.
    UnusedInput,
    /// The same dependency listed twice.
    DuplicateDependency,
    /// `parallel: true` on a step that nothing can run alongside.
    IneffectiveParallel,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Syntax => "syntax",
            Code::Schema => "schema",
            Code::EmptyWorkflow => "empty-workflow",
            Code::DuplicateStep => "duplicate-step",
            Code::MissingDependency => "missing-dependency",
            Code::SelfDependency => "self-dependency",
            Code::Cycle => "cycle",
            Code::UnknownPlaceholder => "unknown-placeholder",
            Code::PlaceholderNotUpstream => "placeholder-not-upstream",
            Code::InvalidValue => "invalid-value",
            Code::TooLarge => "too-large",
            Code::ItemOutsideForeach => "item-outside-foreach",
            Code::MissingWorkflow => "missing-workflow",
            Code::UnknownInput => "unknown-input",
            Code::MissingInput => "missing-input",
            Code::UndeclaredInput => "undeclared-input",
            Code::UnusedInput => "unused-input",
            Code::DuplicateDependency => "duplicate-dependency",
            Code::IneffectiveParallel => "ineffective-parallel",
        }
    }

    /// Every code, errors first (for documentation and tests).
    pub const ALL: [Code; 19] = [
        Code::Syntax,
        Code::Schema,
        Code::EmptyWorkflow,
        Code::DuplicateStep,
        Code::MissingDependency,
        Code::SelfDependency,
        Code::Cycle,
        Code::UnknownPlaceholder,
        Code::PlaceholderNotUpstream,
        Code::InvalidValue,
        Code::TooLarge,
        Code::ItemOutsideForeach,
        Code::MissingWorkflow,
        Code::UnknownInput,
        Code::MissingInput,
        Code::UndeclaredInput,
        Code::UnusedInput,
        Code::DuplicateDependency,
        Code::IneffectiveParallel,
    ];
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem. `line`/`column` are 1-based and point at the offending step's key
/// or field; they are `null` only when the workflow did not come from text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub code: Code,
    pub message: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub step: Option<String>,
    /// End of the offending text (exclusive), for editors that underline it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_column: Option<u32>,
}

impl Problem {
    /// `FILE:LINE:COL: error[CODE]: message` (the CLI's text format).
    pub fn render(&self, file: &str, severity: &str) -> String {
        let mut out = String::from(file);
        if let (Some(l), Some(c)) = (self.line, self.column) {
            out.push_str(&format!(":{l}:{c}"));
        }
        out.push_str(&format!(": {severity}[{}]: {}", self.code, self.message));
        out
    }
}

/// The outcome of validating a workflow file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Report {
    pub valid: bool,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
    /// Topological order (ties broken by declaration order), when the graph is sound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<String>>,
    /// Execution levels: steps whose dependencies all lie in earlier levels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<Vec<Vec<String>>>,
}

impl Report {
    pub fn has_code(&self, code: Code) -> bool {
        self.errors
            .iter()
            .chain(&self.warnings)
            .any(|p| p.code == code)
    }
}

/// Collects problems, turning byte spans into lines and columns lazily: a clean
/// file never builds the line index.
pub(crate) struct Sink<'t> {
    text: Option<&'t str>,
    index: Option<LineIndex<'t>>,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl<'t> Sink<'t> {
    pub fn new(text: Option<&'t str>) -> Sink<'t> {
        Sink {
            text,
            index: None,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn text(&self) -> Option<&'t str> {
        self.text
    }

    fn problem(
        &mut self,
        code: Code,
        span: Option<Span>,
        step: Option<&str>,
        message: String,
    ) -> Problem {
        let (mut line, mut column, mut end_line, mut end_column) = (None, None, None, None);
        if let (Some(span), Some(text)) = (span, self.text) {
            let index = self.index.get_or_insert_with(|| LineIndex::new(text));
            let start = index.position(span.start as usize);
            line = Some(start.line);
            column = Some(start.column);
            if span.end > span.start {
                let end = index.position(span.end as usize);
                end_line = Some(end.line);
                end_column = Some(end.column);
            }
        }
        Problem {
            code,
            message,
            line,
            column,
            step: step.map(str::to_owned),
            end_line,
            end_column,
        }
    }

    pub fn error(&mut self, code: Code, span: Option<Span>, step: Option<&str>, message: String) {
        let p = self.problem(code, span, step, message);
        self.errors.push(p);
    }

    pub fn warn(&mut self, code: Code, span: Option<Span>, step: Option<&str>, message: String) {
        let p = self.problem(code, span, step, message);
        self.warnings.push(p);
    }

    /// The 1-based line of a byte offset.
    pub fn line_of(&mut self, span: Span) -> Option<u32> {
        let text = self.text?;
        let index = self.index.get_or_insert_with(|| LineIndex::new(text));
        Some(index.position(span.start as usize).line)
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Add these problems to a report made earlier (from the same text), keeping
    /// the report's order.
    pub fn merge_into(self, report: &mut Report) {
        let mut more = self.into_report();
        report.errors.append(&mut more.errors);
        report.warnings.append(&mut more.warnings);
        let key = |p: &Problem| (p.line.unwrap_or(0), p.column.unwrap_or(0), p.code);
        crate::sort::sort_by_key(&mut report.errors, key);
        crate::sort::sort_by_key(&mut report.warnings, key);
        report.valid = report.errors.is_empty();
    }

    pub fn into_report(mut self) -> Report {
        // Stable, source-ordered output: by line, then column, then code.
        let key = |p: &Problem| (p.line.unwrap_or(0), p.column.unwrap_or(0), p.code);
        crate::sort::sort_by_key(&mut self.errors, key);
        crate::sort::sort_by_key(&mut self.warnings, key);
        Report {
            valid: self.errors.is_empty(),
            errors: self.errors,
            warnings: self.warnings,
            order: None,
            levels: None,
        }
    }
}

/// The known name closest to `given`, if it is close enough to be a likely typo.
pub fn suggest<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = given.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for k in known {
        let d = edit_distance(&lower, &k.to_ascii_lowercase());
        let limit = (k.len().max(given.len()) / 3).max(1);
        // Also catch well-known synonyms by prefix (`dependsOn` → `dependencies`).
        let prefix = common_prefix(&lower, &k.to_ascii_lowercase());
        let close = d <= limit || prefix >= 4;
        if close && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| k)
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

/// Damerau–Levenshtein (optimal string alignment) distance.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut prev2 = vec![0usize; m + 1];
    let mut prev: Vec<usize> = (0..=m).collect();
    let mut cur = vec![0usize; m + 1];
    for i in 1..=n {
        cur[0] = i;
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(prev2[j - 2] + 1);
            }
            cur[j] = v;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[m]
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn suggestions_catch_typos_and_synonyms() {
        let known = ["key", "agent", "prompt", "dependencies", "timeoutMs"];
        assert_eq!(suggest("dependsOn", known), Some("dependencies"));
        assert_eq!(suggest("depedencies", known), Some("dependencies"));
        assert_eq!(suggest("promt", known), Some("prompt"));
        assert_eq!(suggest("timeout", known), Some("timeoutMs"));
        assert_eq!(suggest("zzz", known), None);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn codes_serialize_as_their_stable_names() {
        for code in Code::ALL {
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
