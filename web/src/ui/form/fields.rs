//! The step form's fields: key, agent, prompt, dependencies, flags, condition.

use super::{StepCtx, parse_opt_u64, value_of};
use crate::ui::dom::{El, el, elc, nothing, show};
use leptos::ev;
use leptos::prelude::*;

pub(super) fn key_field(ctx: StepCtx) -> El {
    el("LABEL")
        .text("Key")
        .child(
            el("INPUT")
                .attr("name", "key")
                .attr("data-testid", "field-key")
                .prop_dyn("value", ctx.field(|s| s.key.clone()))
                .on(
                    ev::change,
                    ctx.on_change(|s, v| {
                        s.key = v.trim().to_owned();
                        Ok(())
                    }),
                )
                .attr("spellcheck", "false"),
        )
        .child(
            elc("SMALL", "muted")
                .text("Renaming updates dependencies and {{key.result}} placeholders."),
        )
}

pub(super) fn agent_field(ctx: StepCtx) -> El {
    let d = ctx.d;
    let agents = Memo::new(move |_| {
        d.analyzed.with(|a| {
            let mut v: Vec<String> = a
                .workflow()
                .map(|w| w.steps.iter().map(|s| s.agent.clone()).collect())
                .unwrap_or_default();
            v.sort_unstable();
            v.dedup();
            v
        })
    });
    el("LABEL")
        .text("Agent")
        .child(
            el("INPUT")
                .attr("name", "agent")
                .attr("data-testid", "field-agent")
                .attr("list", "agents")
                .prop_dyn("value", ctx.field(|s| s.agent.clone()))
                .on(
                    ev::change,
                    ctx.on_change(|s, v| {
                        s.agent = v;
                        Ok(())
                    }),
                ),
        )
        .child(el("DATALIST").attr("id", "agents").list_dyn(move || {
            agents
                .get()
                .into_iter()
                .map(|a| el("OPTION").attr_string("value", a).into_any())
                .collect()
        }))
}

pub(super) fn prompt_field(ctx: StepCtx) -> El {
    el("LABEL")
        .text("Prompt")
        .child(
            el("TEXTAREA")
                .attr("name", "prompt")
                .attr("data-testid", "field-prompt")
                .attr("rows", "6")
                .prop_dyn("value", ctx.field(|s| s.prompt.clone()))
                .on(
                    ev::change,
                    ctx.on_change(|s, v| {
                        s.prompt = v;
                        Ok(())
                    }),
                ),
        )
        .child(elc("SMALL", "muted").text(
            "{{input}}, {{step.result}}, {{step.result.field}}; written back when you leave the field.",
        ))
}

pub(super) fn dependencies_field(ctx: StepCtx) -> El {
    let d = ctx.d;
    // Steps this one could depend on (not itself, not already, no cycle).
    let candidates = Memo::new(move |_| {
        let me = ctx.key();
        d.analyzed.with(|a| {
            let Some(wf) = a.workflow() else {
                return Vec::new();
            };
            let mine = wf
                .step(&me)
                .map(|s| s.dependencies.clone())
                .unwrap_or_default();
            wf.steps
                .iter()
                .filter(|s| s.key != me && !s.key.is_empty() && !mine.contains(&s.key))
                .filter(|s| crate::layout::cycle_if_added(wf, &me, &s.key).is_none())
                .map(|s| s.key.clone())
                .collect::<Vec<_>>()
        })
    });
    let add_dep = RwSignal::new(String::new());
    let deps = move || {
        ctx.step.with(|s| {
            s.as_ref()
                .map(|s| s.dependencies.clone())
                .unwrap_or_default()
        })
    };
    let chip = move |dep: String| {
        let target = dep.clone();
        elc("LI", "chip")
            .child(el("SPAN").string(dep.clone()))
            .child(
                elc("BUTTON", "link")
                    .attr("type", "button")
                    .attr_string("title", format!("Remove the dependency on {dep}"))
                    .attr_string("aria-label", format!("Remove {dep}"))
                    .on_click(move |_| {
                        d.disconnect(&ctx.key(), &target);
                    })
                    .text("Remove"),
            )
            .into_any()
    };
    el("FIELDSET")
        .child(el("LEGEND").text("Dependencies"))
        .child(
            elc("UL", "chips")
                .attr("data-testid", "field-dependencies")
                .list_dyn(move || deps().into_iter().map(chip).collect())
                .view(show(
                    move || deps().is_empty(),
                    || elc("LI", "muted").text("None: runs first.").into_any(),
                    nothing,
                )),
        )
        .child(
            elc("DIV", "row")
                .child(
                    el("SELECT")
                        .attr("aria-label", "Add a dependency")
                        .attr("data-testid", "add-dependency")
                        .child(el("OPTION").attr("value", "").text("Add a dependency…"))
                        .list_dyn(move || {
                            candidates
                                .get()
                                .into_iter()
                                .map(|c| {
                                    el("OPTION")
                                        .attr_string("value", c.clone())
                                        .string(c)
                                        .into_any()
                                })
                                .collect()
                        })
                        .prop_dyn("value", move || add_dep.get())
                        .on(ev::change, move |e| add_dep.set(value_of(&e))),
                )
                .child(
                    el("BUTTON")
                        .attr("type", "button")
                        .flag_dyn("disabled", move || add_dep.with(String::is_empty))
                        .on_click(move |_| {
                            let dep = add_dep.get_untracked();
                            if !dep.is_empty() && d.connect(&dep, &ctx.key()) {
                                add_dep.set(String::new());
                            }
                        })
                        .text("Add"),
                ),
        )
}

fn checkbox(
    ctx: StepCtx,
    testid: &'static str,
    label: &'static str,
    get: fn(&ax_core::Step) -> bool,
    set: fn(&mut ax_core::Step, bool),
) -> El {
    elc("LABEL", "inline")
        .child(
            el("INPUT")
                .attr("type", "checkbox")
                .attr("data-testid", testid)
                .prop_flag("checked", ctx.flag(get))
                .on(ev::change, ctx.on_check(set)),
        )
        .text(label)
}

pub(super) fn flags_row(ctx: StepCtx) -> El {
    elc("DIV", "row wrap")
        .child(checkbox(
            ctx,
            "field-optional",
            "Optional",
            |s| s.optional,
            |s, v| s.optional = v,
        ))
        .child(checkbox(
            ctx,
            "field-parallel",
            "Parallel",
            |s| s.parallel,
            |s, v| s.parallel = v,
        ))
        .child(
            elc("LABEL", "inline grow").text("Timeout (ms)").child(
                el("INPUT")
                    .attr("type", "number")
                    .attr("min", "1")
                    .attr("data-testid", "field-timeout")
                    .attr("placeholder", "none")
                    .prop_dyn(
                        "value",
                        ctx.field(|s| s.timeout_ms.map(|t| t.to_string()).unwrap_or_default()),
                    )
                    .on(
                        ev::change,
                        ctx.on_change(|s, v| {
                            s.timeout_ms = parse_opt_u64(&v, "timeoutMs")?;
                            if s.timeout_ms == Some(0) {
                                return Err(
                                    "timeoutMs must be at least 1 (empty for no limit)".into()
                                );
                            }
                            Ok(())
                        }),
                    ),
            ),
        )
}

pub(super) fn when_field(ctx: StepCtx) -> El {
    el("LABEL")
        .text("When (condition)")
        .child(
            el("INPUT")
                .attr("name", "when")
                .attr("data-testid", "field-when")
                .attr("placeholder", "always")
                .prop_dyn("value", ctx.field(|s| s.when.clone().unwrap_or_default()))
                .on(
                    ev::change,
                    ctx.on_change(|s, v| {
                        s.when = if v.trim().is_empty() { None } else { Some(v) };
                        Ok(())
                    }),
                ),
        )
        .child(elc("SMALL", "muted").text("e.g. {{review.result}} contains \"approve\""))
}
