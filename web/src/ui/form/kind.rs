//! The step form's fields for the kinds of step: `type` (prompt, approval,
//! sub-workflow), `forEach` and `maxConcurrency`, an approval's `onTimeout`, a
//! sub-workflow's `workflow` and `inputs`. (`timeoutMs` is in the flags row.)

use super::StepCtx;
use crate::ui::dom::{El, el, elc, nothing, show};
use ax_core::model::{ForEach, OnTimeout, Step, StepType};
use leptos::ev;
use leptos::prelude::*;

/// A `<select>` of fixed options, following the step.
fn select(
    ctx: StepCtx,
    testid: &'static str,
    options: &[(&'static str, &'static str)],
    get: fn(&Step) -> String,
    set: fn(&mut Step, String) -> Result<(), String>,
) -> El {
    let mut s = el("SELECT")
        .attr("data-testid", testid)
        .prop_dyn("value", ctx.field(get))
        .on(ev::change, ctx.on_change(set));
    for &(value, label) in options {
        s = s.child(el("OPTION").attr("value", value).text(label));
    }
    s
}

pub(super) fn type_field(ctx: StepCtx) -> El {
    el("LABEL").text("Type").child(select(
        ctx,
        "field-type",
        &[
            ("prompt", "prompt (an agent answers)"),
            ("approval", "approval (a person decides)"),
            ("workflow", "workflow (runs another workflow)"),
        ],
        |s| s.kind.as_str().to_owned(),
        |s, v| {
            s.kind = StepType::ALL
                .into_iter()
                .find(|t| t.as_str() == v)
                .ok_or_else(|| format!("unknown type `{v}`: prompt, approval or workflow"))?;
            if !s.kind.is_prompt() {
                // Approvals and sub-workflows take no agent.
                s.agent.clear();
            }
            Ok(())
        },
    ))
}

/// `forEach` as written: a placeholder, or a JSON list.
fn for_each_text(s: &Step) -> String {
    match &s.for_each {
        None => String::new(),
        Some(ForEach::Template(t)) => t.clone(),
        Some(ForEach::List(l)) => serde_json::Value::Array(l.clone()).to_string(),
    }
}

fn set_for_each(s: &mut Step, v: String) -> Result<(), String> {
    let v = v.trim();
    s.for_each = if v.is_empty() {
        None
    } else if v.starts_with('[') {
        match serde_json::from_str::<serde_json::Value>(v) {
            Ok(serde_json::Value::Array(l)) => Some(ForEach::List(l)),
            _ => {
                return Err(format!(
                    "forEach `{v}` is not a JSON list: write one like [\"a\", \"b\"], or a placeholder like {{{{step.result.items}}}}"
                ));
            }
        }
    } else {
        Some(ForEach::Template(v.to_owned()))
    };
    Ok(())
}

fn set_max_concurrency(s: &mut Step, v: String) -> Result<(), String> {
    let v = v.trim();
    s.max_concurrency = match v.parse::<u32>() {
        _ if v.is_empty() => None,
        Ok(n) if n >= 1 => Some(n),
        _ => {
            return Err(format!(
                "maxConcurrency `{v}` must be a whole number of at least 1 (empty for the run's parallelism)"
            ));
        }
    };
    Ok(())
}

pub(super) fn for_each_fields(ctx: StepCtx) -> El {
    elc("DIV", "row wrap")
        .child(
            elc("LABEL", "grow").text("For each").child(
                el("INPUT")
                    .attr("data-testid", "field-for-each")
                    .attr("placeholder", "{{step.result.items}} or [\"a\", \"b\"]")
                    .attr("spellcheck", "false")
                    .prop_dyn("value", ctx.field(for_each_text))
                    .on(ev::change, ctx.on_change(set_for_each)),
            ),
        )
        .child(
            elc("LABEL", "inline").text("Max concurrency").child(
                el("INPUT")
                    .attr("type", "number")
                    .attr("min", "1")
                    .attr("data-testid", "field-max-concurrency")
                    .attr("placeholder", "any")
                    .prop_dyn(
                        "value",
                        ctx.field(|s| s.max_concurrency.map(|n| n.to_string()).unwrap_or_default()),
                    )
                    .on(ev::change, ctx.on_change(set_max_concurrency)),
            ),
        )
}

pub(super) fn approval_fields(ctx: StepCtx) -> leptos::tachys::view::any_view::AnyView {
    show(
        ctx.flag(|s| s.kind == StepType::Approval),
        move || {
            el("LABEL")
                .text("On timeout")
                .child(select(
                    ctx,
                    "field-on-timeout",
                    &[("", "reject (default)"), ("reject", "reject"), ("approve", "approve")],
                    |s| s.on_timeout.map(|o| o.as_str().to_owned()).unwrap_or_default(),
                    |s, v| {
                        s.on_timeout = match v.as_str() {
                            "" => None,
                            "approve" => Some(OnTimeout::Approve),
                            _ => Some(OnTimeout::Reject),
                        };
                        Ok(())
                    },
                ))
                .child(elc("SMALL", "muted").text(
                    "What happens when timeoutMs passes without a decision. The prompt is what the approver reads.",
                ))
                .into_any()
        },
        nothing,
    )
}

fn inputs_text(s: &Step) -> String {
    if s.inputs.is_empty() {
        return String::new();
    }
    let mut m = serde_json::Map::new();
    for (k, v) in &s.inputs {
        m.insert(k.clone(), v.clone());
    }
    serde_json::to_string_pretty(&serde_json::Value::Object(m)).unwrap_or_default()
}

fn set_inputs(s: &mut Step, v: String) -> Result<(), String> {
    if v.trim().is_empty() {
        s.inputs.clear();
        return Ok(());
    }
    match serde_json::from_str::<serde_json::Value>(&v) {
        Ok(serde_json::Value::Object(m)) => {
            s.inputs = ax_core::sort::btree_map(m);
            Ok(())
        }
        Ok(_) => Err("the sub-workflow's inputs must be a JSON object: {\"name\": value}".into()),
        Err(e) => Err(format!("the sub-workflow's inputs are not valid JSON: {e}")),
    }
}

pub(super) fn workflow_fields(ctx: StepCtx) -> leptos::tachys::view::any_view::AnyView {
    let storage = crate::documents::use_storage();
    show(
        ctx.flag(|s| s.kind == StepType::Workflow),
        move || {
            el("FIELDSET")
                .child(el("LEGEND").text("Sub-workflow"))
                .child(
                    el("LABEL")
                        .text("Workflow")
                        .child(
                            el("INPUT")
                                .attr("data-testid", "field-workflow")
                                .attr("placeholder", "./child.yaml")
                                .attr("spellcheck", "false")
                                .prop_dyn(
                                    "value",
                                    ctx.field(|s| s.workflow.clone().unwrap_or_default()),
                                )
                                .on(
                                    ev::change,
                                    ctx.on_change(|s, v| {
                                        let v = v.trim();
                                        s.workflow = (!v.is_empty()).then(|| v.to_owned());
                                        Ok(())
                                    }),
                                ),
                        )
                        .child(
                            elc("BUTTON", "link")
                                .attr("type", "button")
                                .attr("data-testid", "open-child")
                                .on_click(move |_| {
                                    let w = ctx.step.with_untracked(|s| {
                                        s.as_ref().and_then(|s| s.workflow.clone())
                                    });
                                    if let Some(w) = w {
                                        storage.open_child(w);
                                    }
                                })
                                .text("Open it"),
                        ),
                )
                .child(
                    el("LABEL").text("Inputs (JSON)").child(
                        el("TEXTAREA")
                            .attr("rows", "3")
                            .attr("data-testid", "field-inputs")
                            .attr("spellcheck", "false")
                            .prop_dyn("value", ctx.field(inputs_text))
                            .on(ev::change, ctx.on_change(set_inputs)),
                    ),
                )
                .into_any()
        },
        nothing,
    )
}
