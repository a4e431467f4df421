//! The form of the selected step. Every change is written back into the text
//! with `ax_core::edit` (comments and formatting elsewhere stay), then read back
//! from the new analysis: the form always shows what the text says.
//!
//! [`step_form`] lists its sections in order; each is a component of its own
//! taking a [`StepCtx`]. A section for another kind of step (approval, a
//! sub-workflow) goes into that list, shown by the step's type.

mod fields;
mod kind;
mod model;
mod retry;

use super::dom::{el, elc, fragment, nothing, reactive, show};
use super::toolbar::event_target;
use super::{Panel, use_shell};
use crate::editing::{Editor, use_editor};
use crate::runs::use_runs;
use crate::text;
use ax_core::StepState;
use ax_core::model::Step;
use leptos::ev;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;

pub fn step_panel() -> AnyView {
    let d = use_editor();
    let exists = Memo::new(move |_| {
        d.selected
            .get()
            .filter(|k| d.analyzed.with(|a| a.step_index(k).is_some()))
    });
    reactive(move || match exists.get() {
        Some(key) => untrack(move || step_form(key)),
        None => elc("DIV", "empty-state")
            .child(el("P").text("Select a step in the graph to edit it here, or add one."))
            .child(
                el("BUTTON")
                    .on_click(move |_| drop(d.add_step()))
                    .attr("data-testid", "add-step-panel")
                    .text("+ Add a step"),
            )
            .child(elc("P", "muted small").text(
                "Tip: “Connect” in the graph's toolbar adds dependencies by clicking two steps.",
            ))
            .into_any(),
    })
}

/// What every section of the form works on: the step (as the text says now)
/// and how to write a change back.
#[derive(Clone, Copy)]
pub(super) struct StepCtx {
    pub d: Editor,
    key: StoredValue<String>,
    pub step: Memo<Option<Step>>,
}

impl StepCtx {
    fn new(d: Editor, key: String) -> StepCtx {
        let key = StoredValue::new(key);
        let step = Memo::new(move |_| {
            let k = key.get_value();
            d.analyzed
                .with(|a| a.workflow().and_then(|w| w.step(&k).cloned()))
        });
        StepCtx { d, key, step }
    }

    pub fn key(&self) -> String {
        self.key.get_value()
    }

    /// A text of the step, following the text.
    pub fn field(&self, f: fn(&Step) -> String) -> impl Fn() -> String + Copy + Send + 'static {
        let step = self.step;
        move || step.with(|s| s.as_ref().map(f).unwrap_or_default())
    }

    pub fn flag(&self, f: fn(&Step) -> bool) -> impl Fn() -> bool + Copy + Send + 'static {
        let step = self.step;
        move || step.with(|s| s.as_ref().is_some_and(f))
    }

    /// Apply `change` to the step and write it back.
    pub fn commit(&self, change: impl FnOnce(&mut Step) -> Result<(), String>) {
        let key = self.key();
        let Some((_, mut step)) = self.d.step(&key) else {
            return;
        };
        match change(&mut step) {
            Ok(()) => {
                self.d.update_step(&key, step);
            }
            Err(e) => self.d.notices.error(e),
        }
    }

    /// A `change` handler that writes the field's value with `set`.
    pub fn on_change(
        &self,
        set: fn(&mut Step, String) -> Result<(), String>,
    ) -> impl FnMut(ev::Event) + 'static {
        let this = *self;
        move |e: ev::Event| {
            let v = value_of(&e);
            this.commit(|s| set(s, v))
        }
    }

    /// A checkbox's `change` handler.
    pub fn on_check(&self, set: fn(&mut Step, bool)) -> impl FnMut(ev::Event) + 'static {
        let this = *self;
        move |e: ev::Event| {
            let v = checked(&e);
            this.commit(|s| {
                set(s, v);
                Ok(())
            })
        }
    }
}

/// The form: its sections, in order.
fn step_form(key: String) -> AnyView {
    let ctx = StepCtx::new(use_editor(), key);
    el("FORM")
        .attr("class", "step-form")
        .attr("data-testid", "step-form")
        .attr("aria-label", "Step")
        .on(ev::submit, |e: ev::SubmitEvent| e.prevent_default())
        .child(form_head(ctx))
        .view(last_run(ctx))
        .child(fields::key_field(ctx))
        .child(kind::type_field(ctx))
        .view(show(
            ctx.flag(|s| s.kind.is_prompt()),
            move || fields::agent_field(ctx).into_any(),
            nothing,
        ))
        .child(fields::prompt_field(ctx))
        .view(kind::workflow_fields(ctx))
        .child(kind::for_each_fields(ctx))
        .child(fields::dependencies_field(ctx))
        .child(fields::flags_row(ctx))
        .view(kind::approval_fields(ctx))
        .child(fields::when_field(ctx))
        .view(show(
            ctx.flag(|s| s.kind.is_prompt()),
            move || model::model_row(ctx).into_any(),
            nothing,
        ))
        .child(retry::retry_fieldset(ctx))
        .view(output_schema_note(ctx))
        .child(delete_zone(ctx))
        .into_any()
}

fn form_head(ctx: StepCtx) -> super::dom::El {
    let d = ctx.d;
    let show_in_text = move |_| {
        let a = d.analyze_now();
        let Some(i) = a.step_index(&ctx.key()) else {
            return;
        };
        let span = a
            .analysis
            .source_map
            .as_ref()
            .and_then(|m| m.steps.get(i))
            .map(|s| s.anchor());
        if let Some(span) = span {
            let (s, e) = d.text.with_untracked(|t| {
                (
                    text::utf16_offset(t, span.start as usize),
                    text::utf16_offset(t, span.end as usize),
                )
            });
            d.reveal(s, e);
        }
    };
    elc("DIV", "form-head")
        .child(
            el("H2")
                .text("Step ")
                .child(el("CODE").text_dyn(move || ctx.key())),
        )
        .child(
            elc("BUTTON", "link")
                .attr("type", "button")
                .on_click(show_in_text)
                .attr("data-testid", "show-in-text")
                .text("Show in text"),
        )
        .child(
            elc("BUTTON", "link")
                .attr("type", "button")
                .attr("title", "Close the form")
                .on_click(move |_| d.selected.set(None))
                .text("Close"),
        )
}

/// The step's result in the run on the graph, with a way to its details.
fn last_run(ctx: StepCtx) -> AnyView {
    let runs = use_runs();
    let shell = use_shell();
    let summary = Memo::new(move |_| {
        let key = ctx.key();
        runs.run.with(|r| {
            r.as_ref()
                .and_then(|r| r.step(&key))
                .filter(|s| s.state != StepState::Pending)
                .map(|s| {
                    (
                        s.state,
                        s.latency_ms,
                        s.usage.tokens_in + s.usage.tokens_out,
                    )
                })
        })
    });
    show(
        move || summary.with(Option::is_some),
        move || {
            elc("DIV", "last-run")
                .attr("data-testid", "step-last-run")
                .child(el("SPAN").attr_dyn("class", move || {
                    format!(
                        "dot state-{}",
                        summary.get().map_or("pending", |s| s.0.as_str())
                    )
                }))
                .child(el("SPAN").text_dyn(move || {
                    summary
                        .get()
                        .map(|(state, ms, tokens)| {
                            let mut t = format!("Last run: {}", state.as_str().replace('-', " "));
                            if let Some(ms) = ms {
                                t.push_str(&format!(" · {}", super::duration(ms)));
                            }
                            if tokens > 0 {
                                t.push_str(&format!(" · {tokens} tokens"));
                            }
                            t
                        })
                        .unwrap_or_default()
                }))
                .child(
                    elc("BUTTON", "link")
                        .attr("type", "button")
                        .attr("data-testid", "show-run-step")
                        .on_click(move |_| shell.panel.set(Panel::Run))
                        .text("Prompt and output"),
                )
                .into_any()
        },
        nothing,
    )
}

fn output_schema_note(ctx: StepCtx) -> AnyView {
    show(
        ctx.flag(|s| s.output_schema.is_some()),
        || {
            elc("P", "muted small")
                .text("This step has an outputSchema: edit it in the text; dry runs answer with a matching example.")
                .into_any()
        },
        nothing,
    )
}

fn delete_zone(ctx: StepCtx) -> super::dom::El {
    let d = ctx.d;
    let confirm = RwSignal::new(false);
    elc("DIV", "row danger-zone").view(show(
        move || confirm.get(),
        move || {
            fragment(vec![
                el("SPAN")
                    .text("Delete ")
                    .child(el("CODE").text_dyn(move || ctx.key()))
                    .text(" and the dependencies on it?")
                    .into_any(),
                elc("BUTTON", "danger")
                    .attr("type", "button")
                    .attr("data-testid", "confirm-delete")
                    .on_click(move |_| {
                        d.remove_step(&ctx.key());
                    })
                    .text("Delete")
                    .into_any(),
                el("BUTTON")
                    .attr("type", "button")
                    .on_click(move |_| confirm.set(false))
                    .text("Keep")
                    .into_any(),
            ])
        },
        move || {
            elc("BUTTON", "danger")
                .attr("type", "button")
                .attr("data-testid", "delete-step")
                .on_click(move |_| confirm.set(true))
                .text("Delete step…")
                .into_any()
        },
    ))
}

fn value_of(ev: &ev::Event) -> String {
    let t = ev.target();
    if let Some(i) = t
        .as_ref()
        .and_then(|t| wasm_bindgen::JsCast::dyn_ref::<web_sys::HtmlInputElement>(t))
    {
        return i.value();
    }
    if let Some(a) = t
        .as_ref()
        .and_then(|t| wasm_bindgen::JsCast::dyn_ref::<web_sys::HtmlTextAreaElement>(t))
    {
        return a.value();
    }
    if let Some(s) = t
        .as_ref()
        .and_then(|t| wasm_bindgen::JsCast::dyn_ref::<web_sys::HtmlSelectElement>(t))
    {
        return s.value();
    }
    String::new()
}

fn checked(ev: &ev::Event) -> bool {
    let i: web_sys::HtmlInputElement = event_target(ev);
    i.checked()
}

fn parse_opt_u64(s: &str, what: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<u64>()
        .map(Some)
        .map_err(|_| format!("{what} must be a whole number of milliseconds (or empty for none)"))
}
