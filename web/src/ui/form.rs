//! The form of the selected step. Every change is written back into the text
//! with `ax_core::edit` (comments and formatting elsewhere stay), then read back
//! from the new analysis: the form always shows what the text says.

use super::dom::{el, elc, fragment, nothing, reactive, show};
use super::toolbar::event_target;
use crate::state::{Designer, use_designer};
use crate::text;
use ax_core::model::{ErrorClass, RetryPolicy, Step};
use leptos::ev;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;

pub fn step_panel() -> AnyView {
    let d = use_designer();
    let exists = Memo::new(move |_| {
        d.selected
            .get()
            .filter(|k| d.analyzed.with(|a| a.step_index(k).is_some()))
    });
    reactive(move || match exists.get() {
        Some(key) => untrack(move || step_fields(key)),
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

/// Apply `change` to the step and write it back.
fn commit(d: Designer, key: &str, change: impl FnOnce(&mut Step) -> Result<(), String>) {
    let Some((_, mut step)) = d.step(key) else {
        return;
    };
    match change(&mut step) {
        Ok(()) => {
            d.update_step(key, step);
        }
        Err(e) => d.error(e),
    }
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

fn step_fields(key: String) -> AnyView {
    let d = use_designer();
    let key = StoredValue::new(key);
    let step = Memo::new(move |_| {
        let k = key.get_value();
        d.analyzed.with(|a| {
            a.step_index(&k)
                .and_then(|i| a.workflow().map(|w| (i, w.steps[i].clone())))
        })
    });
    let field = move |f: fn(&Step) -> String| {
        move || step.with(|s| s.as_ref().map(|(_, s)| f(s)).unwrap_or_default())
    };
    let k = move || key.get_value();
    let agents = Memo::new(move |_| {
        d.analyzed.with(|a| {
            let mut v: Vec<String> = a
                .workflow()
                .map(|w| w.steps.iter().map(|s| s.agent.clone()).collect())
                .unwrap_or_default();
            ax_core::sort::sort_unstable(&mut v);
            v.dedup();
            v
        })
    });
    // Steps this one could depend on (not itself, not already, no cycle).
    let candidates = Memo::new(move |_| {
        let me = key.get_value();
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
    let confirm_delete = RwSignal::new(false);
    let deps = move || {
        step.with(|s| {
            s.as_ref()
                .map(|(_, s)| s.dependencies.clone())
                .unwrap_or_default()
        })
    };
    let retry = move || step.with(|s| s.as_ref().and_then(|(_, s)| s.retry_policy.clone()));
    let has_schema =
        move || step.with(|s| s.as_ref().is_some_and(|(_, s)| s.output_schema.is_some()));
    let show_in_text = move |_| {
        let a = d.analyze_now();
        let Some(i) = a.step_index(&key.get_value()) else {
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

    // A field that writes `set` back into the step when it changes.
    let on_change = move |set: fn(&mut Step, String) -> Result<(), String>| {
        move |e: ev::Event| {
            let v = value_of(&e);
            commit(d, &k(), |s| set(s, v))
        }
    };
    let on_check = move |set: fn(&mut Step, bool)| {
        move |e: ev::Event| {
            let v = checked(&e);
            commit(d, &k(), |s| {
                set(s, v);
                Ok(())
            })
        }
    };
    let checkbox = move |testid: &'static str,
                         label: &'static str,
                         get: fn(&Step) -> bool,
                         set: fn(&mut Step, bool)| {
        elc("LABEL", "inline")
            .child(
                el("INPUT")
                    .attr("type", "checkbox")
                    .attr("data-testid", testid)
                    .prop_flag("checked", move || {
                        step.with(|s| s.as_ref().is_some_and(|(_, s)| get(s)))
                    })
                    .on(ev::change, on_check(set)),
            )
            .text(label)
    };
    // A number field of the step's own retry policy.
    let retry_number =
        move |label: &'static str,
              testid: &'static str,
              min: &'static str,
              get: fn(&RetryPolicy) -> String,
              set: fn(&mut RetryPolicy, &str) -> Result<(), String>| {
            elc("LABEL", "inline grow").text(label).child(
                el("INPUT")
                    .attr("type", "number")
                    .attr("min", min)
                    .attr("data-testid", testid)
                    .prop_dyn("value", move || {
                        retry().map(|p| get(&p)).unwrap_or_default()
                    })
                    .on(ev::change, move |e| {
                        let v = value_of(&e);
                        commit(d, &k(), |s| {
                            set(s.retry_policy.get_or_insert_with(RetryPolicy::default), &v)
                        })
                    }),
            )
        };
    let retry_fields = move || {
        let backoff = retry_number(
            "Backoff ×",
            "field-backoff",
            "1",
            |p| p.retry_backoff_multiplier.to_string(),
            |p, v| {
                p.retry_backoff_multiplier = v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 1.0)
                    .ok_or("retryBackoffMultiplier must be a number of at least 1")?;
                Ok(())
            },
        )
        .attr("step", "0.5");
        let classes = ErrorClass::ALL.into_iter().map(|class| {
            let on = move || {
                retry().is_some_and(|p| {
                    p.retryable_errors
                        .map_or(class.retryable_by_default(), |l| l.contains(&class))
                })
            };
            elc("LABEL", "inline small")
                .child(
                    el("INPUT")
                        .attr("type", "checkbox")
                        .prop_flag("checked", on)
                        .on(ev::change, move |e| {
                            let v = checked(&e);
                            commit(d, &k(), |s| {
                                let p = s.retry_policy.get_or_insert_with(RetryPolicy::default);
                                let mut list = p.retryable_errors.clone().unwrap_or_else(|| {
                                    ErrorClass::ALL
                                        .into_iter()
                                        .filter(|c| c.retryable_by_default())
                                        .collect()
                                });
                                list.retain(|c| *c != class);
                                if v {
                                    list.push(class);
                                }
                                ax_core::sort::sort(&mut list);
                                p.retryable_errors = Some(list);
                                Ok(())
                            })
                        }),
                )
                .text(class.as_str())
        });
        let mut class_list =
            elc("DIV", "classes").child(elc("SPAN", "muted small").str_dyn(move || {
                if retry().is_some_and(|p| p.retryable_errors.is_none()) {
                    "Retried errors (the defaults):"
                } else {
                    "Retried errors:"
                }
            }));
        for c in classes {
            class_list = class_list.child(c);
        }
        fragment(vec![
            elc("DIV", "row wrap")
                .child(retry_number(
                    "Max retries",
                    "field-max-retries",
                    "0",
                    |p| p.max_retries.to_string(),
                    |p, v| {
                        p.max_retries = v
                            .trim()
                            .parse::<u32>()
                            .map_err(|_| "maxRetries must be a whole number".to_owned())?;
                        Ok(())
                    },
                ))
                .child(retry_number(
                    "Delay (ms)",
                    "field-retry-delay",
                    "0",
                    |p| p.retry_delay_ms.to_string(),
                    |p, v| {
                        p.retry_delay_ms = v
                            .trim()
                            .parse::<u64>()
                            .map_err(|_| "retryDelayMs must be a whole number".to_owned())?;
                        Ok(())
                    },
                ))
                .child(backoff)
                .into_any(),
            class_list.into_any(),
        ])
    };

    el("FORM")
        .attr("class", "step-form")
        .attr("data-testid", "step-form")
        .on(ev::submit, |e: ev::SubmitEvent| e.prevent_default())
        .child(
            elc("DIV", "form-head")
                .child(el("H2").text("Step ").child(el("CODE").text_dyn(k)))
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
                        .attr("aria-label", "Close the form")
                        .on_click(move |_| d.selected.set(None))
                        .text("✕"),
                ),
        )
        .child(
            el("LABEL")
                .text("Key")
                .child(
                    el("INPUT")
                        .attr("name", "key")
                        .attr("data-testid", "field-key")
                        .prop_dyn("value", field(|s| s.key.clone()))
                        .on(
                            ev::change,
                            on_change(|s, v| {
                                s.key = v.trim().to_owned();
                                Ok(())
                            }),
                        )
                        .attr("spellcheck", "false"),
                )
                .child(
                    elc("SMALL", "muted")
                        .text("Renaming updates dependencies and {{key.result}} placeholders."),
                ),
        )
        .child(
            el("LABEL")
                .text("Agent")
                .child(
                    el("INPUT")
                        .attr("name", "agent")
                        .attr("data-testid", "field-agent")
                        .attr("list", "agents")
                        .prop_dyn("value", field(|s| s.agent.clone()))
                        .on(
                            ev::change,
                            on_change(|s, v| {
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
                })),
        )
        .child(
            el("LABEL")
                .text("Prompt")
                .child(
                    el("TEXTAREA")
                        .attr("name", "prompt")
                        .attr("data-testid", "field-prompt")
                        .attr("rows", "6")
                        .prop_dyn("value", field(|s| s.prompt.clone()))
                        .on(
                            ev::change,
                            on_change(|s, v| {
                                s.prompt = v;
                                Ok(())
                            }),
                        ),
                )
                .child(elc("SMALL", "muted").text(
                    "{{input}}, {{step.result}}, {{step.result.field}}; written back when you leave the field.",
                )),
        )
        .child(
            el("FIELDSET")
                .child(el("LEGEND").text("Dependencies"))
                .child(
                    elc("UL", "chips")
                        .attr("data-testid", "field-dependencies")
                        .list_dyn(move || {
                            deps()
                                .into_iter()
                                .map(|dep| {
                                    let dep2 = dep.clone();
                                    elc("LI", "chip")
                                        .child(el("SPAN").string(dep.clone()))
                                        .child(
                                            elc("BUTTON", "link")
                                                .attr("type", "button")
                                                .attr_string(
                                                    "aria-label",
                                                    format!("Remove the dependency on {dep}"),
                                                )
                                                .on_click(move |_| {
                                                    let target = dep2.clone();
                                                    d.disconnect(&k(), &target);
                                                })
                                                .text("✕"),
                                        )
                                        .into_any()
                                })
                                .collect()
                        })
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
                                    if !dep.is_empty() && d.connect(&dep, &k()) {
                                        add_dep.set(String::new());
                                    }
                                })
                                .text("Add"),
                        ),
                ),
        )
        .child(
            elc("DIV", "row wrap")
                .child(checkbox(
                    "field-optional",
                    "Optional",
                    |s| s.optional,
                    |s, v| s.optional = v,
                ))
                .child(checkbox(
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
                                field(|s| s.timeout_ms.map(|t| t.to_string()).unwrap_or_default()),
                            )
                            .on(
                                ev::change,
                                on_change(|s, v| {
                                    s.timeout_ms = parse_opt_u64(&v, "timeoutMs")?;
                                    if s.timeout_ms == Some(0) {
                                        return Err(
                                            "timeoutMs must be at least 1 (empty for no limit)"
                                                .into(),
                                        );
                                    }
                                    Ok(())
                                }),
                            ),
                    ),
                ),
        )
        .child(
            el("LABEL")
                .text("When (condition)")
                .child(
                    el("INPUT")
                        .attr("name", "when")
                        .attr("data-testid", "field-when")
                        .attr("placeholder", "always")
                        .prop_dyn("value", field(|s| s.when.clone().unwrap_or_default()))
                        .on(
                            ev::change,
                            on_change(|s, v| {
                                s.when = if v.trim().is_empty() { None } else { Some(v) };
                                Ok(())
                            }),
                        ),
                )
                .child(elc("SMALL", "muted").text("e.g. {{review.result}} contains \"approve\"")),
        )
        .child(
            el("FIELDSET")
                .child(
                    el("LEGEND").child(
                        elc("LABEL", "inline")
                            .child(
                                el("INPUT")
                                    .attr("type", "checkbox")
                                    .attr("data-testid", "field-retry")
                                    .prop_flag("checked", move || retry().is_some())
                                    .on(
                                        ev::change,
                                        on_check(|s, v| {
                                            s.retry_policy = v.then(RetryPolicy::default)
                                        }),
                                    ),
                            )
                            .text("Own retry policy"),
                    ),
                )
                .view(show(
                    move || retry().is_some(),
                    retry_fields,
                    || {
                        elc("P", "muted small")
                            .text("Uses config.maxRetries (default 0).")
                            .into_any()
                    },
                )),
        )
        .view(show(
            has_schema,
            || {
                elc("P", "muted small")
                    .text("This step has an outputSchema: edit it in the text; dry runs answer with a matching example.")
                    .into_any()
            },
            nothing,
        ))
        .child(elc("DIV", "row danger-zone").view(show(
            move || confirm_delete.get(),
            move || {
                fragment(vec![
                    el("SPAN")
                        .text("Delete ")
                        .child(el("CODE").text_dyn(k))
                        .text(" and the dependencies on it?")
                        .into_any(),
                    elc("BUTTON", "danger")
                        .attr("type", "button")
                        .attr("data-testid", "confirm-delete")
                        .on_click(move |_| {
                            d.remove_step(&k());
                        })
                        .text("Delete")
                        .into_any(),
                    el("BUTTON")
                        .attr("type", "button")
                        .on_click(move |_| confirm_delete.set(false))
                        .text("Keep")
                        .into_any(),
                ])
            },
            move || {
                elc("BUTTON", "danger")
                    .attr("type", "button")
                    .attr("data-testid", "delete-step")
                    .on_click(move |_| confirm_delete.set(true))
                    .text("Delete step…")
                    .into_any()
            },
        )))
        .into_any()
}
