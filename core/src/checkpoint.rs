//! Checkpoints: versioned JSON snapshots of an [`crate::exec::Execution`].
//!
//! A checkpoint holds the definition's structural hash (never the definition),
//! the run's inputs, and each step that has left its initial state. Outputs are
//! referenced by content hash and stored once by the driver, so a 1,000-step chain
//! does not write 1,000 growing copies of its results. Deltas carry only the steps
//! that changed since the previous checkpoint; `apply` folds them onto a snapshot.
//!
//! The same format moves between the browser and the server; a
//! [`CheckpointFile`] bundles a checkpoint with its outputs and the workflow text.
//!
//! Version 2 added approvals (the request; decisions are the step's output or
//! error), `forEach` items (the list by hash, and each item that left its initial
//! state) and child links. Version 1 checkpoints (written before) restore as they
//! are: every field version 2 added is absent in them and means "none".

use crate::exec::{ChildLink, StepError};
use crate::plan::{InputError, Plan, output_hash};
use crate::state::{ExecutionState, StepState};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The version this build writes.
pub const CHECKPOINT_VERSION: u32 = 2;
/// The oldest version this build reads.
pub const CHECKPOINT_MIN_VERSION: u32 = 1;

/// Can this build read checkpoints of `version`?
pub fn readable_version(version: u32) -> bool {
    (CHECKPOINT_MIN_VERSION..=CHECKPOINT_VERSION).contains(&version)
}

/// The execution-wide part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub state: ExecutionState,
    pub seed: u64,
    pub inputs: BTreeMap<String, Value>,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub finished_at: Option<u64>,
    #[serde(default)]
    pub active_ms: u64,
    #[serde(default)]
    pub running_since: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub last_checkpoint_at: Option<u64>,
    #[serde(default)]
    pub checkpoint_due: bool,
    #[serde(default)]
    pub pause_settled: bool,
    #[serde(default)]
    pub clock: u64,
    #[serde(default)]
    pub last_wake: Option<u64>,
    /// The run's own budget, over `config.budget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::model::Budget>,
    /// What the run's answers cost so far.
    #[serde(default, skip_serializing_if = "crate::exec::Spend::is_zero")]
    pub spent: crate::exec::Spend,
}

/// A reference to a stored output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRef {
    /// Content hash (see [`crate::plan::output_hash`]).
    pub hash: String,
    pub bytes: u64,
}

/// One step's state in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepSnapshot {
    pub state: StepState,
    #[serde(default)]
    pub attempt: u32,
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputRef>,
    /// The step's structural hash when it completed (to detect edits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped_by_condition: bool,
    /// An approval's request (its rendered prompt). Since version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// A `forEach` step's list and items. Since version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<ItemsSnapshot>,
    /// A `type: workflow` step's child in flight. Since version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<ChildLink>,
}

/// A `forEach` step's items in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemsSnapshot {
    /// The list (a JSON array), stored once by hash like an output.
    pub list: OutputRef,
    pub count: u32,
    /// Items that left their initial state, by index. In a delta: only the items
    /// that changed (see [`Checkpoint::apply`]).
    #[serde(default)]
    pub items: BTreeMap<u32, ItemSnapshot>,
}

/// One item of a `forEach` step in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemSnapshot {
    pub state: StepState,
    #[serde(default)]
    pub attempt: u32,
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<ChildLink>,
}

impl ItemSnapshot {
    /// Ready and never started: what every item is when the list is computed.
    pub fn is_initial(&self) -> bool {
        self.state == StepState::Ready
            && self.attempt == 0
            && self.failures == 0
            && self.started_at.is_none()
            && self.finished_at.is_none()
            && self.deadline.is_none()
            && self.retry_at.is_none()
            && self.output.is_none()
            && self.error.is_none()
            && self.reason.is_none()
            && self.child.is_none()
    }
}

impl StepSnapshot {
    fn is_initial(&self) -> bool {
        self.state == StepState::Pending
            && self.attempt == 0
            && self.failures == 0
            && self.started_at.is_none()
            && self.finished_at.is_none()
            && self.deadline.is_none()
            && self.retry_at.is_none()
            && self.output.is_none()
            && self.error.is_none()
            && self.reason.is_none()
            && !self.skipped_by_condition
            && self.request.is_none()
            && self.items.is_none()
            && self.child.is_none()
    }
}

/// A full snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub version: u32,
    pub definition_hash: String,
    /// Increases with every snapshot or delta of the execution.
    pub seq: u64,
    pub taken_at: u64,
    pub header: Header,
    /// Steps that left their initial state, by key.
    pub steps: BTreeMap<String, StepSnapshot>,
}

/// What changed since the previous checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointDelta {
    pub seq: u64,
    pub taken_at: u64,
    pub header: Header,
    pub steps: BTreeMap<String, StepSnapshot>,
}

impl Checkpoint {
    /// Fold a delta onto this snapshot.
    pub fn apply(&mut self, delta: &CheckpointDelta) {
        self.seq = delta.seq;
        self.taken_at = delta.taken_at;
        self.header = delta.header.clone();
        for (k, s) in &delta.steps {
            if s.is_initial() {
                self.steps.remove(k);
                continue;
            }
            // A delta carries only the items that changed: fold them onto the
            // items of the same list (a new list replaces them all).
            let mut s = s.clone();
            if let (Some(new), Some(old)) = (
                s.items.as_mut(),
                self.steps.get_mut(k).and_then(|b| b.items.take()),
            ) && new.list == old.list
            {
                let changed = std::mem::replace(&mut new.items, old.items);
                for (j, item) in changed {
                    if item.is_initial() {
                        new.items.remove(&j);
                    } else {
                        new.items.insert(j, item);
                    }
                }
            }
            self.steps.insert(k.clone(), s);
        }
    }

    /// Keys of completed steps.
    pub fn completed_steps(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|(_, s)| s.state == StepState::Completed)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Hashes of every output the checkpoint refers to (items' lists and
    /// outputs too).
    pub fn output_hashes(&self) -> BTreeSet<String> {
        crate::sort::btree_set(self.output_refs().map(|(_, r)| r.hash.clone()))
    }

    /// Every output reference, with the step it belongs to.
    pub fn output_refs(&self) -> impl Iterator<Item = (&str, &OutputRef)> {
        self.steps.iter().flat_map(|(k, s)| {
            let items = s.items.iter().flat_map(|it| {
                std::iter::once(&it.list).chain(it.items.values().filter_map(|i| i.output.as_ref()))
            });
            s.output.iter().chain(items).map(move |r| (k.as_str(), r))
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Checkpoint, RestoreError> {
        serde_json::from_str(text).map_err(|e| RestoreError::Format(e.to_string()))
    }
}

/// What a checkpoint means for a (possibly edited) definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Compatibility {
    /// The definition hash matches: the restore is exact.
    pub same_definition: bool,
    /// Completed steps whose results stay valid.
    pub kept: Vec<String>,
    /// Steps of the checkpoint that must run again: changed steps and everything
    /// downstream of them.
    pub rerun: Vec<String>,
    /// Steps with progress in the checkpoint that the definition no longer has.
    pub removed: Vec<String>,
}

fn plan_step<'c>(cp: &'c Checkpoint, plan: &Plan, i: usize) -> Option<&'c StepSnapshot> {
    cp.steps.get(plan.key(i))
}

impl Compatibility {
    pub fn compute(plan: &Plan, cp: &Checkpoint) -> Compatibility {
        let same = plan.hash() == cp.definition_hash;
        let mut c = Compatibility {
            same_definition: same,
            ..Compatibility::default()
        };
        if same {
            c.kept = cp.completed_steps();
            return c;
        }
        c.removed = cp
            .steps
            .keys()
            .filter(|k| plan.index_of(k).is_none())
            .cloned()
            .collect();
        // A step is changed if it completed under another definition of itself.
        // (A step's hash covers its dependencies, so adding a step that others
        // now depend on changes them too.)
        let mut changed = Vec::new();
        for i in 0..plan.len() {
            if let Some(s) = plan_step(cp, plan, i)
                && s.state == StepState::Completed
                && s.step_hash.as_deref() != Some(plan.step_hash(i).as_str())
            {
                changed.push(i);
            }
        }
        let mut rerun: crate::sort::VecSet<usize> = changed.iter().copied().collect();
        rerun.extend(plan.graph.descendants_of(&changed));
        for i in 0..plan.len() {
            let key = plan.key(i);
            let Some(s) = cp.steps.get(key) else { continue };
            if rerun.contains(&i) {
                if s.state != StepState::Pending {
                    c.rerun.push(key.to_owned());
                }
            } else if s.state == StepState::Completed {
                c.kept.push(key.to_owned());
            }
        }
        c
    }
}

/// Why a checkpoint could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "checkpoint format version {found} is not supported (this build reads versions 1 to {supported})"
    )]
    Version { found: u32, supported: u32 },
    #[error(
        "the checkpoint needs the output of step `{step}` (hash {hash}), which is not available"
    )]
    MissingOutput { step: String, hash: String },
    #[error(
        "the stored output of step `{step}` does not match its hash {hash}; the checkpoint or its outputs are corrupt"
    )]
    CorruptOutput { step: String, hash: String },
    #[error("the checkpoint is not valid: {0}")]
    Format(String),
    #[error("the checkpoint's inputs do not fit the edited workflow: {0}")]
    Inputs(InputError),
    #[error("{0}")]
    Invalid(String),
}

/// A self-contained checkpoint file: moves a run between the browser and the
/// server (`ax` imports it and continues with real providers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointFile {
    /// Always `"ax-checkpoint"`.
    pub format: String,
    pub version: u32,
    pub workflow: WorkflowSource,
    pub checkpoint: Checkpoint,
    /// Output texts by content hash.
    pub outputs: BTreeMap<String, String>,
    /// Where it came from (`"browser"`, `"server"`), and the run's id there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowSource {
    pub name: String,
    /// The workflow text (YAML or JSON) the run was started from.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

pub const CHECKPOINT_FILE_FORMAT: &str = "ax-checkpoint";

impl CheckpointFile {
    pub fn new(
        workflow: WorkflowSource,
        checkpoint: Checkpoint,
        outputs: BTreeMap<String, String>,
    ) -> CheckpointFile {
        CheckpointFile {
            format: CHECKPOINT_FILE_FORMAT.to_owned(),
            version: CHECKPOINT_VERSION,
            workflow,
            checkpoint,
            outputs,
            origin: None,
            execution_id: None,
        }
    }

    /// Parse and check a file: format marker, version, and that every referenced
    /// output is present and matches its hash.
    pub fn from_json(text: &str) -> Result<CheckpointFile, RestoreError> {
        let file: CheckpointFile =
            serde_json::from_str(text).map_err(|e| RestoreError::Format(e.to_string()))?;
        if file.format != CHECKPOINT_FILE_FORMAT {
            return Err(RestoreError::Format(format!(
                "`format` is `{}`, expected `{CHECKPOINT_FILE_FORMAT}`",
                file.format
            )));
        }
        if !readable_version(file.version) || !readable_version(file.checkpoint.version) {
            return Err(RestoreError::Version {
                found: file.version.max(file.checkpoint.version),
                supported: CHECKPOINT_VERSION,
            });
        }
        for (key, r) in file.checkpoint.output_refs() {
            match file.outputs.get(&r.hash) {
                None => {
                    return Err(RestoreError::MissingOutput {
                        step: key.to_owned(),
                        hash: r.hash.clone(),
                    });
                }
                Some(text) if output_hash(text) != r.hash => {
                    return Err(RestoreError::CorruptOutput {
                        step: key.to_owned(),
                        hash: r.hash.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(file)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
