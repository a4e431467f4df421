//! The run panel: the run on the graph (its controls, the selected step's
//! prompt, output, tokens, cost, time and attempts, every step, checkpoints),
//! the runs of the open document (dry runs and server runs together, two of
//! them compared), and the dry-run settings.
//!
//! The panel is a list of sections ([`run_panel`]); a step's details are a
//! list of sections too (`steps::step_detail`). A new kind of step state
//! (an approval waiting for a person, the items of a forEach, text streaming
//! in) adds a section there, reading `Runs::run`.

mod checkpoints;
mod compare;
mod controls;
mod history;
mod settings;
mod steps;

pub use compare::compare_dialog;

use super::dom::{el, elc, show};
use crate::run_view::RunKind;
use crate::runs::use_runs;
use ax_core::ExecutionState;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;

/// A run to open or compare: where it ran and its id.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRef {
    pub kind: RunKind,
    pub id: String,
    /// How lists name it ("dry run 14:02:11").
    pub label: String,
}

/// Why Resume is unavailable for a run in `state` (`None`: it can be resumed).
pub(crate) fn resume_blocked(state: Option<ExecutionState>) -> Option<&'static str> {
    match state {
        Some(s) if s.is_resumable() => None,
        Some(ExecutionState::Completed) => {
            Some("This run has completed: there is nothing left to resume")
        }
        Some(ExecutionState::Cancelled) => Some("This run was cancelled: it cannot be resumed"),
        Some(ExecutionState::Running) => Some("The run is running"),
        Some(_) => Some("The run is not paused"),
        None => Some("No run"),
    }
}

pub fn run_panel() -> AnyView {
    let runs = use_runs();
    let has_run = move || runs.run.with(Option::is_some);
    elc("DIV", "run-panel")
        .attr("data-testid", "run-panel")
        .child(
            elc("SECTION", "active-run")
                .attr("aria-label", "The run on the graph")
                .view(show(
                    has_run,
                    || {
                        super::dom::fragment(vec![
                            controls::run_head(),
                            controls::run_controls(),
                            steps::step_detail(),
                            steps::steps_list(),
                            checkpoints::checkpoints(),
                        ])
                    },
                    || {
                        elc("P", "empty")
                            .text("No run yet. Press “▶ Dry run” (Ctrl+Enter) to try the workflow here.")
                            .into_any()
                    },
                ))
                .child(checkpoints::import_checkpoint()),
        )
        .view(history::document_runs())
        .child(settings::settings())
        .into_any()
}

/// A small "label value" pair for run figures.
pub(super) fn figure(label: &'static str, value: String) -> super::dom::El {
    elc("DIV", "figure")
        .child(elc("DT", "muted small").text(label))
        .child(el("DD").string(value))
}
