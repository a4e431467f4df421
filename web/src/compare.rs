//! Two runs side by side, step by step: state, time, tokens and cost of each,
//! and what changed in the output (a line diff of the pretty-printed outputs).

use crate::run_view::{RunView, StepView, pretty};
use similar::{ChangeTag, TextDiff};

/// How a step's outputs compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Same,
    /// Both have an output, and they differ.
    Changed,
    /// Only one run has an output, or the states differ.
    Different,
    /// The step is in one run only (the workflow changed between them).
    OnlyA,
    OnlyB,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Same => "same",
            Change::Changed => "changed",
            Change::Different => "different",
            Change::OnlyA => "only in A",
            Change::OnlyB => "only in B",
        }
    }
}

/// One line of an output diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    /// `' '` kept, `'-'` only in A, `'+'` only in B.
    pub tag: char,
    pub text: String,
}

/// One step of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct StepComparison {
    pub key: String,
    pub a: Option<StepView>,
    pub b: Option<StepView>,
    pub change: Change,
}

impl StepComparison {
    /// The output diff (pretty-printed JSON is compared line by line).
    pub fn diff(&self) -> Vec<DiffLine> {
        let text = |s: &Option<StepView>| {
            s.as_ref()
                .and_then(|s| s.output.as_deref().map(pretty))
                .unwrap_or_default()
        };
        line_diff(&text(&self.a), &text(&self.b))
    }
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub steps: Vec<StepComparison>,
}

impl Comparison {
    pub fn changed(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.change != Change::Same)
            .count()
    }
}

/// Compare step by step, in A's order, then the steps only B has.
pub fn compare(a: &RunView, b: &RunView) -> Comparison {
    let mut steps: Vec<StepComparison> = a
        .steps
        .iter()
        .map(|(key, sa)| {
            let sb = b.step(key).cloned();
            let change = match &sb {
                None => Change::OnlyA,
                Some(sb) => step_change(sa, sb),
            };
            StepComparison {
                key: key.clone(),
                a: Some(sa.clone()),
                b: sb,
                change,
            }
        })
        .collect();
    steps.extend(
        b.steps
            .iter()
            .filter(|(k, _)| a.step(k).is_none())
            .map(|(key, sb)| StepComparison {
                key: key.clone(),
                a: None,
                b: Some(sb.clone()),
                change: Change::OnlyB,
            }),
    );
    Comparison { steps }
}

fn step_change(a: &StepView, b: &StepView) -> Change {
    match (&a.output, &b.output) {
        (Some(x), Some(y)) if x == y || pretty(x) == pretty(y) => Change::Same,
        (Some(_), Some(_)) => Change::Changed,
        (None, None) if a.state == b.state => Change::Same,
        _ => Change::Different,
    }
}

/// A line diff of two texts.
pub fn line_diff(a: &str, b: &str) -> Vec<DiffLine> {
    TextDiff::from_lines(a, b)
        .iter_all_changes()
        .map(|c| DiffLine {
            tag: match c.tag() {
                ChangeTag::Equal => ' ',
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
            },
            text: c.value().trim_end_matches('\n').to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_view::RunKind;
    use ax_core::{ExecutionState, StepState};
    use std::sync::Arc;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn run(steps: &[(&str, Option<&str>)]) -> RunView {
        RunView {
            kind: RunKind::Local,
            id: "r".into(),
            name: "n".into(),
            state: ExecutionState::Completed,
            reason: None,
            spend: None,
            steps: steps
                .iter()
                .map(|(k, o)| {
                    (
                        (*k).to_owned(),
                        StepView {
                            state: if o.is_some() {
                                StepState::Completed
                            } else {
                                StepState::Pending
                            },
                            output: o.map(Arc::from),
                            ..StepView::default()
                        },
                    )
                })
                .collect(),
            checkpoints: Vec::new(),
            source: None,
            created_at: None,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn steps_are_matched_by_key_and_outputs_compared() {
        let a = run(&[
            ("x", Some("{\"n\":1}")),
            ("y", Some("one\ntwo")),
            ("gone", Some("z")),
        ]);
        let b = run(&[
            ("x", Some("{ \"n\": 1 }")),
            ("y", Some("one\nthree")),
            ("new", None),
        ]);
        let c = compare(&a, &b);
        let changes: Vec<(&str, Change)> =
            c.steps.iter().map(|s| (s.key.as_str(), s.change)).collect();
        assert_eq!(
            changes,
            [
                ("x", Change::Same),
                ("y", Change::Changed),
                ("gone", Change::OnlyA),
                ("new", Change::OnlyB)
            ]
        );
        assert_eq!(c.changed(), 3);
        let d = c.steps[1].diff();
        let tags: String = d.iter().map(|l| l.tag).collect();
        assert_eq!(tags, " -+");
        assert_eq!(d[2].text, "three");
    }
}
