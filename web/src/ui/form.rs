//! The form of the selected step. Every change is written back into the text
//! with `ax_core::edit` (comments and formatting elsewhere stay), then read back
//! from the new analysis: the form always shows what the text says.

use super::toolbar::event_target;
use crate::state::{Designer, use_designer};
use crate::text;
use ax_core::model::{ErrorClass, RetryPolicy, Step};
use leptos::ev;
use leptos::prelude::*;

#[component]
pub fn StepPanel() -> impl IntoView {
    let d = use_designer();
    let exists = Memo::new(move |_| {
        d.selected
            .get()
            .filter(|k| d.analyzed.with(|a| a.step_index(k).is_some()))
    });
    move || {
        match exists.get() {
        Some(key) => view! { <StepFields key /> }.into_any(),
        None => view! {
            <div class="empty-state">
                <p>"Select a step in the graph to edit it here, or add one."</p>
                <button on:click=move |_| drop(d.add_step()) data-testid="add-step-panel">"+ Add a step"</button>
                <p class="muted small">"Tip: “Connect” in the graph's toolbar adds dependencies by clicking two steps."</p>
            </div>
        }
        .into_any(),
    }
    }
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

#[component]
fn StepFields(key: String) -> impl IntoView {
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
            v.sort();
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

    view! {
        <form class="step-form" data-testid="step-form" on:submit=|e: ev::SubmitEvent| e.prevent_default()>
            <div class="form-head">
                <h2>"Step " <code>{k}</code></h2>
                <button type="button" class="link" on:click=show_in_text data-testid="show-in-text">"Show in text"</button>
                <button type="button" class="link" aria-label="Close the form" on:click=move |_| d.selected.set(None)>"✕"</button>
            </div>
            <label>
                "Key"
                <input
                    name="key"
                    data-testid="field-key"
                    prop:value=field(|s| s.key.clone())
                    on:change=move |e| {
                        let v = value_of(&e).trim().to_owned();
                        commit(d, &k(), |s| {
                            s.key = v;
                            Ok(())
                        })
                    }
                    spellcheck="false"
                />
                <small class="muted">"Renaming updates dependencies and {{key.result}} placeholders."</small>
            </label>
            <label>
                "Agent"
                <input
                    name="agent"
                    data-testid="field-agent"
                    list="agents"
                    prop:value=field(|s| s.agent.clone())
                    on:change=move |e| {
                        let v = value_of(&e);
                        commit(d, &k(), |s| {
                            s.agent = v;
                            Ok(())
                        })
                    }
                />
                <datalist id="agents">
                    {move || agents.get().into_iter().map(|a| view! {
                        <option value=a></option>
                    }).collect_view()}
                </datalist>
            </label>
            <label>
                "Prompt"
                <textarea
                    name="prompt"
                    data-testid="field-prompt"
                    rows="6"
                    prop:value=field(|s| s.prompt.clone())
                    on:change=move |e| {
                        let v = value_of(&e);
                        commit(d, &k(), |s| {
                            s.prompt = v;
                            Ok(())
                        })
                    }
                ></textarea>
                <small class="muted">"{{input}}, {{step.result}}, {{step.result.field}}; written back when you leave the field."</small>
            </label>
            <fieldset>
                <legend>"Dependencies"</legend>
                <ul class="chips" data-testid="field-dependencies">
                    {move || deps().into_iter().map(|dep|
                        {
                            let dep2 = dep.clone();
                            view! {
                                <li class="chip">
                                    <span>{dep.clone()}</span>
                                    <button
                                        type="button"
                                        class="link"
                                        aria-label=format!("Remove the dependency on {dep}")
                                        on:click=move |_| {
                                            let target = dep2.clone();
                                            d.disconnect(&k(), &target);
                                        }
                                    >
                                        "✕"
                                    </button>
                                </li>
                            }
                        }
                    ).collect_view()}
                    <Show when=move || deps().is_empty()>
                        <li class="muted">"None: runs first."</li>
                    </Show>
                </ul>
                <div class="row">
                    <select
                        aria-label="Add a dependency"
                        data-testid="add-dependency"
                        prop:value=move || add_dep.get()
                        on:change=move |e| add_dep.set(value_of(&e))
                    >
                        <option value="">"Add a dependency…"</option>
                        {move || candidates.get().into_iter().map(|c| view! {
                            <option value=c.clone()>{c.clone()}</option>
                        }).collect_view()}
                    </select>
                    <button
                        type="button"
                        disabled=move || add_dep.with(String::is_empty)
                        on:click=move |_| {
                            let dep = add_dep.get_untracked();
                            if !dep.is_empty() && d.connect(&dep, &k()) {
                                add_dep.set(String::new());
                            }
                        }
                    >
                        "Add"
                    </button>
                </div>
            </fieldset>
            <div class="row wrap">
                <label class="inline">
                    <input
                        type="checkbox"
                        data-testid="field-optional"
                        prop:checked=move || step.with(|s| s.as_ref().is_some_and(|(_, s)| s.optional))
                        on:change=move |e| {
                            let v = checked(&e);
                            commit(d, &k(), |s| {
                                s.optional = v;
                                Ok(())
                            })
                        }
                    />
                    "Optional"
                </label>
                <label class="inline">
                    <input
                        type="checkbox"
                        data-testid="field-parallel"
                        prop:checked=move || step.with(|s| s.as_ref().is_some_and(|(_, s)| s.parallel))
                        on:change=move |e| {
                            let v = checked(&e);
                            commit(d, &k(), |s| {
                                s.parallel = v;
                                Ok(())
                            })
                        }
                    />
                    "Parallel"
                </label>
                <label class="inline grow">
                    "Timeout (ms)"
                    <input
                        type="number"
                        min="1"
                        data-testid="field-timeout"
                        placeholder="none"
                        prop:value=field(|s| s.timeout_ms.map(|t| t.to_string()).unwrap_or_default())
                        on:change=move |e| {
                            let v = value_of(&e);
                            commit(d, &k(), |s| {
                                s.timeout_ms = parse_opt_u64(&v, "timeoutMs")?;
                                if s.timeout_ms == Some(0) {
                                    return Err("timeoutMs must be at least 1 (empty for no limit)".into());
                                }
                                Ok(())
                            })
                        }
                    />
                </label>
            </div>
            <label>
                "When (condition)"
                <input
                    name="when"
                    data-testid="field-when"
                    placeholder="always"
                    prop:value=field(|s| s.when.clone().unwrap_or_default())
                    on:change=move |e| {
                        let v = value_of(&e);
                        commit(d, &k(), |s| {
                            s.when = if v.trim().is_empty() { None } else { Some(v) };
                            Ok(())
                        })
                    }
                />
                <small class="muted">"e.g. {{review.result}} contains \"approve\""</small>
            </label>
            <fieldset>
                <legend>
                    <label class="inline">
                        <input
                            type="checkbox"
                            data-testid="field-retry"
                            prop:checked=move || retry().is_some()
                            on:change=move |e| {
                                let v = checked(&e);
                                commit(d, &k(), |s| {
                                    s.retry_policy = v.then(RetryPolicy::default);
                                    Ok(())
                                })
                            }
                        />
                        "Own retry policy"
                    </label>
                </legend>
                <Show when=move || retry().is_some() fallback=|| view! { <p class="muted small">"Uses config.maxRetries (default 0)."</p> }>
                    <div class="row wrap">
                        <label class="inline grow">
                            "Max retries"
                            <input
                                type="number"
                                min="0"
                                data-testid="field-max-retries"
                                prop:value=move || retry().map(|p| p.max_retries.to_string()).unwrap_or_default()
                                on:change=move |e| {
                                    let v = value_of(&e);
                                    commit(d, &k(), |s| {
                                        let n = v.trim().parse::<u32>().map_err(|_| "maxRetries must be a whole number".to_owned())?;
                                        s.retry_policy.get_or_insert_with(RetryPolicy::default).max_retries = n;
                                        Ok(())
                                    })
                                }
                            />
                        </label>
                        <label class="inline grow">
                            "Delay (ms)"
                            <input
                                type="number"
                                min="0"
                                data-testid="field-retry-delay"
                                prop:value=move || retry().map(|p| p.retry_delay_ms.to_string()).unwrap_or_default()
                                on:change=move |e| {
                                    let v = value_of(&e);
                                    commit(d, &k(), |s| {
                                        let n = v.trim().parse::<u64>().map_err(|_| "retryDelayMs must be a whole number".to_owned())?;
                                        s.retry_policy.get_or_insert_with(RetryPolicy::default).retry_delay_ms = n;
                                        Ok(())
                                    })
                                }
                            />
                        </label>
                        <label class="inline grow">
                            "Backoff ×"
                            <input
                                type="number"
                                min="1"
                                step="0.5"
                                data-testid="field-backoff"
                                prop:value=move || retry().map(|p| p.retry_backoff_multiplier.to_string()).unwrap_or_default()
                                on:change=move |e| {
                                    let v = value_of(&e);
                                    commit(d, &k(), |s| {
                                        let n = v.trim().parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 1.0).ok_or("retryBackoffMultiplier must be a number of at least 1")?;
                                        s.retry_policy.get_or_insert_with(RetryPolicy::default).retry_backoff_multiplier = n;
                                        Ok(())
                                    })
                                }
                            />
                        </label>
                    </div>
                    <div class="classes">
                        <span class="muted small">
                            {move || if retry().is_some_and(|p| p.retryable_errors.is_none()) { "Retried errors (the defaults):" } else { "Retried errors:" }}
                        </span>
                        {ErrorClass::ALL
                            .into_iter()
                            .map(|class| {
                                let on = move || retry().is_some_and(|p| p.retryable_errors.map_or(class.retryable_by_default(), |l| l.contains(&class)));
                                view! {
                                    <label class="inline small">
                                        <input
                                            type="checkbox"
                                            prop:checked=on
                                            on:change=move |e| {
                                                let v = checked(&e);
                                                commit(d, &k(), |s| {
                                                    let p = s.retry_policy.get_or_insert_with(RetryPolicy::default);
                                                    let mut list = p.retryable_errors.clone().unwrap_or_else(|| ErrorClass::ALL.into_iter().filter(|c| c.retryable_by_default()).collect());
                                                    list.retain(|c| *c != class);
                                                    if v {
                                                        list.push(class);
                                                    }
                                                    list.sort();
                                                    p.retryable_errors = Some(list);
                                                    Ok(())
                                                })
                                            }
                                        />
                                        {class.as_str()}
                                    </label>
                                }
                            })
                            .collect_view()}
                    </div>
                </Show>
            </fieldset>
            <Show when=has_schema>
                <p class="muted small">"This step has an outputSchema: edit it in the text; dry runs answer with a matching example."</p>
            </Show>
            <div class="row danger-zone">
                <Show
                    when=move || confirm_delete.get()
                    fallback=move || view! { <button type="button" class="danger" data-testid="delete-step" on:click=move |_| confirm_delete.set(true)>"Delete step…"</button> }
                >
                    <span>"Delete " <code>{k}</code> " and the dependencies on it?"</span>
                    <button type="button" class="danger" data-testid="confirm-delete" on:click=move |_| { d.remove_step(&k()); }>"Delete"</button>
                    <button type="button" on:click=move |_| confirm_delete.set(false)>"Keep"</button>
                </Show>
            </div>
        </form>
    }
}
