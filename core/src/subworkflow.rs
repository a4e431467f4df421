//! Sub-workflows: finding and validating the workflows that `type: workflow`
//! steps run.
//!
//! The core reads no files, so the caller supplies a [`WorkflowLoader`]: the CLI
//! reads files relative to the parent, the server can also look up stored
//! workflows by name, the browser takes its open documents. [`analyze_tree`]
//! validates a workflow and, through the loader, every workflow below it: a child
//! that cannot be loaded (`missing-workflow`), an input the child does not take
//! (`unknown-input`) or a required one not given (`missing-input`), a cycle across
//! files (`cycle`), nesting deeper than [`MAX_NESTING`] (`too-large`), and the
//! child's own problems. Every problem points at the parent's line and column.

use crate::plan::Plan;
use crate::report::{Code, Problem, Sink, suggest};
use crate::source::Span;
use crate::validate::{Analysis, Options, analyze};
use std::collections::HashMap;
use std::sync::Arc;

/// How deep sub-workflows may nest below the workflow that is run.
pub const MAX_NESTING: usize = 8;

/// A workflow text a loader found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedWorkflow {
    /// What identifies it: the same workflow reached through different references
    /// has the same id (a normalized path, `stored:NAME`, …). Cycles are found by
    /// id, and messages name workflows by it.
    pub id: String,
    pub text: String,
    /// Used to detect the format by extension.
    pub filename: Option<String>,
}

/// Finds the workflow a `type: workflow` step names.
pub trait WorkflowLoader {
    /// The workflow that `reference` (the step's `workflow:` as written) names,
    /// seen from the workflow whose id is `from`; or why it cannot be loaded
    /// ("no such file", …), which becomes the `missing-workflow` message.
    fn load(&mut self, from: &str, reference: &str) -> Result<LoadedWorkflow, String>;
}

impl<F: FnMut(&str, &str) -> Result<LoadedWorkflow, String>> WorkflowLoader for F {
    fn load(&mut self, from: &str, reference: &str) -> Result<LoadedWorkflow, String> {
        self(from, reference)
    }
}

/// Documents held in memory by path (the browser's open documents, test
/// fixtures): references resolve relative to the parent's path ([`join_path`]).
#[derive(Debug, Clone, Default)]
pub struct DocumentLoader {
    documents: HashMap<String, String>,
}

impl DocumentLoader {
    pub fn new(documents: impl IntoIterator<Item = (String, String)>) -> DocumentLoader {
        DocumentLoader {
            documents: documents
                .into_iter()
                .map(|(path, text)| (normalize_path(&path), text))
                .collect(),
        }
    }
}

impl WorkflowLoader for DocumentLoader {
    fn load(&mut self, from: &str, reference: &str) -> Result<LoadedWorkflow, String> {
        let id = join_path(from, reference);
        match self.documents.get(&id) {
            Some(text) => Ok(LoadedWorkflow {
                id: id.clone(),
                text: text.clone(),
                filename: Some(id),
            }),
            None => {
                let mut known: Vec<&str> = self.documents.keys().map(String::as_str).collect();
                crate::sort::sort(&mut known);
                let hint = suggest(&id, known.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                Err(format!("there is no document `{id}`{hint}"))
            }
        }
    }
}

/// `reference` seen from the file `from`: relative to `from`'s folder unless it
/// starts with `/`, with `.` and `..` resolved (`a/b.yaml` + `../c.yaml` →
/// `c.yaml`). Pure text: no file system.
pub fn join_path(from: &str, reference: &str) -> String {
    if reference.starts_with('/') {
        return normalize_path(reference);
    }
    let dir = match from.rfind('/') {
        Some(at) => &from[..=at],
        None => "",
    };
    normalize_path(&format!("{dir}{reference}"))
}

fn normalize_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

/// A child workflow, validated, with its own children.
#[derive(Debug)]
pub struct SubWorkflow {
    pub id: String,
    pub text: String,
    pub filename: Option<String>,
    pub plan: Arc<Plan>,
}

/// What validating one workflow (with everything below it) gave.
enum Node {
    Valid {
        sub: Arc<SubWorkflow>,
        /// The deepest chain of sub-workflows below it (ids; `…` where the
        /// search stopped).
        below: Vec<String>,
    },
    Invalid(Vec<Problem>),
}

struct Tree<'l> {
    loader: &'l mut dyn WorkflowLoader,
    opts: Options,
    /// Workflows being validated, from the root down (their ids).
    stack: Vec<String>,
    done: HashMap<String, Node>,
}

/// Validate a workflow and every workflow its `type: workflow` steps run (found
/// through `loader`; `id` is the workflow's own id, what references in it are
/// relative to). The analysis is [`analyze`]'s, with the sub-workflows' problems
/// added at the parent's positions; a valid plan knows its sub-workflows
/// ([`Plan::sub_workflow`]).
pub fn analyze_tree(
    text: &str,
    opts: &Options,
    id: &str,
    loader: &mut dyn WorkflowLoader,
) -> Analysis {
    let mut tree = Tree {
        loader,
        opts: Options {
            filename: None,
            format: None,
            limits: opts.limits,
        },
        stack: vec![id.to_owned()],
        done: HashMap::new(),
    };
    tree.analyze(text, opts).0
}

/// A workflow's steps run sub-workflows.
fn runs_children(plan: &Plan) -> bool {
    plan.workflow
        .steps
        .iter()
        .any(|s| s.kind == crate::model::StepType::Workflow)
}

impl Tree<'_> {
    /// Validate one workflow and its children; also returns the deepest chain of
    /// sub-workflows below it.
    fn analyze(&mut self, text: &str, opts: &Options) -> (Analysis, Vec<String>) {
        let mut analysis = analyze(text, opts);
        let Some(workflow) = analysis.workflow().cloned() else {
            return (analysis, Vec::new());
        };
        let from = self.stack.last().cloned().unwrap_or_default();
        let mut sink = Sink::new(Some(text));
        let mut deepest: Vec<String> = Vec::new();
        let mut found = Vec::new();
        for (i, step) in workflow.steps.iter().enumerate() {
            if step.kind != crate::model::StepType::Workflow {
                continue;
            }
            let Some(reference) = step.workflow.as_deref().filter(|r| !r.trim().is_empty()) else {
                continue;
            };
            let field = |name: &str| {
                analysis
                    .source_map
                    .as_ref()
                    .and_then(|m| m.step_field(i, name))
            };
            let at = field("workflow").map(|f| f.value);
            let key = Some(step.key.as_str());
            let loaded = match self.loader.load(&from, reference) {
                Ok(l) => l,
                Err(why) => {
                    sink.error(
                        Code::MissingWorkflow,
                        at,
                        key,
                        format!("the workflow `{reference}` cannot be loaded: {why}"),
                    );
                    continue;
                }
            };
            if let Some(pos) = self.stack.iter().position(|s| *s == loaded.id) {
                let mut chain: Vec<&str> = self.stack[pos..].iter().map(String::as_str).collect();
                chain.push(&loaded.id);
                sink.error(
                    Code::Cycle,
                    at,
                    key,
                    format!(
                        "sub-workflow cycle: {} (each runs the next); a workflow cannot run itself, directly or through others",
                        chain.join(" → ")
                    ),
                );
                continue;
            }
            let depth = self.stack.len();
            if !self.done.contains_key(&loaded.id) {
                let child_opts = Options {
                    filename: loaded.filename.clone(),
                    ..self.opts.clone()
                };
                self.stack.push(loaded.id.clone());
                let (child, below) = if depth > MAX_NESTING {
                    // Do not descend further: the nesting is already too deep
                    // (the workflow that is run says so).
                    let child = analyze(&loaded.text, &child_opts);
                    let more = child.plan.as_deref().is_some_and(runs_children);
                    (
                        child,
                        if more {
                            vec!["…".to_owned()]
                        } else {
                            Vec::new()
                        },
                    )
                } else {
                    self.analyze(&loaded.text, &child_opts)
                };
                self.stack.pop();
                let node = match child.plan {
                    Some(plan) if child.report.valid => Node::Valid {
                        sub: Arc::new(SubWorkflow {
                            id: loaded.id.clone(),
                            text: loaded.text.clone(),
                            filename: loaded.filename.clone(),
                            plan,
                        }),
                        below,
                    },
                    _ => Node::Invalid(child.report.errors),
                };
                self.done.insert(loaded.id.clone(), node);
            }
            let Some(node) = self.done.get(&loaded.id) else {
                continue;
            };
            match node {
                Node::Invalid(problems) => {
                    const SHOWN: usize = 5;
                    let last = problems.len().min(SHOWN).saturating_sub(1);
                    for (n, p) in problems.iter().take(SHOWN).enumerate() {
                        let pos = match (p.line, p.column) {
                            (Some(l), Some(c)) => format!(" at {l}:{c}"),
                            _ => String::new(),
                        };
                        let more = if n == last && problems.len() > SHOWN {
                            format!(" (and {} more problems)", problems.len() - SHOWN)
                        } else {
                            String::new()
                        };
                        sink.error(
                            p.code,
                            at,
                            key,
                            format!("in `{}`{pos}: {}{more}", loaded.id, p.message),
                        );
                    }
                }
                Node::Valid { sub, below } => {
                    // How deep is counted from the workflow that is run.
                    if depth == 1 && 1 + below.len() > MAX_NESTING {
                        let chain: Vec<&str> = std::iter::once(from.as_str())
                            .chain(std::iter::once(loaded.id.as_str()))
                            .chain(below.iter().map(String::as_str))
                            .collect();
                        sink.error(
                            Code::TooLarge,
                            at,
                            key,
                            format!(
                                "sub-workflows nest more than {MAX_NESTING} levels deep below this workflow: {}; run fewer levels of workflows inside each other",
                                chain.join(" → ")
                            ),
                        );
                        continue;
                    }
                    if 1 + below.len() > deepest.len() {
                        deepest = std::iter::once(loaded.id.clone())
                            .chain(below.iter().cloned())
                            .collect();
                    }
                    check_inputs(step, i, &analysis, sub, &mut sink);
                    found.push((i, Arc::clone(sub)));
                }
            }
        }
        if sink.has_errors() || !sink.warnings.is_empty() {
            sink.merge_into(&mut analysis.report);
        }
        if analysis.report.valid {
            if let Some(plan) = analysis.plan.as_mut().and_then(Arc::get_mut) {
                for (i, sub) in found {
                    plan.set_sub_workflow(i, sub);
                }
            }
        } else if let Some(plan) = analysis.plan.take() {
            analysis.set_loaded(plan);
        }
        (analysis, deepest)
    }
}

/// The step's `inputs` against what the child takes.
fn check_inputs(
    step: &crate::model::Step,
    i: usize,
    analysis: &Analysis,
    sub: &SubWorkflow,
    sink: &mut Sink<'_>,
) {
    let map = analysis.source_map.as_ref();
    let key = Some(step.key.as_str());
    let takes = sub.plan.input_names();
    let anchor: Option<Span> = map
        .and_then(|m| {
            m.step_field(i, "inputs")
                .or_else(|| m.step_field(i, "workflow"))
        })
        .map(|f| f.key);
    for name in step.inputs.keys() {
        if takes.contains(name) {
            continue;
        }
        let at = map.and_then(|m| m.step_input(i, name)).map(|f| f.key);
        let hint = suggest(name, takes.iter().map(String::as_str))
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        let list = if takes.is_empty() {
            "it takes no inputs".to_owned()
        } else {
            format!(
                "it takes: {}",
                takes
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        sink.error(
            Code::UnknownInput,
            at.or(anchor),
            key,
            format!("`{name}` is not an input of `{}`; {hint}{list}", sub.id),
        );
    }
    let declared = &sub.plan.workflow.inputs;
    for name in takes {
        let has_default = declared.get(name).is_some_and(|s| s.default.is_some());
        if !has_default && !step.inputs.contains_key(name) {
            let what = declared
                .get(name)
                .and_then(|s| s.description.as_deref())
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            sink.error(
                Code::MissingInput,
                anchor,
                key,
                format!(
                    "`{}` requires the input `{name}`{what}; give it under `inputs:` (`{name}: \"…\"`)",
                    sub.id
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn paths_join_relative_to_the_parent() {
        assert_eq!(
            join_path("flows/main.yaml", "./child.yaml"),
            "flows/child.yaml"
        );
        assert_eq!(join_path("flows/main.yaml", "../lib/x.yaml"), "lib/x.yaml");
        assert_eq!(join_path("main.yaml", "sub/c.yaml"), "sub/c.yaml");
        assert_eq!(join_path("a/b/main.yaml", "/abs/c.yaml"), "/abs/c.yaml");
        assert_eq!(join_path("main.yaml", "../up.yaml"), "../up.yaml");
        assert_eq!(join_path("/r/main.yaml", "../../x.yaml"), "/x.yaml");
    }
}
