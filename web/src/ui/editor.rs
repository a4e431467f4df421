//! The text editor (a textarea with a line-number gutter that scrolls with it
//! and marks lines with problems) and the problem list.

use super::toolbar::{event_target, import_file};
use crate::state::use_designer;
use crate::text;
use leptos::ev;
use leptos::prelude::*;

/// Pixels per line: the CSS gives the textarea and the gutter this line height.
pub const LINE_HEIGHT: f64 = 20.0;
/// The textarea's top padding.
const PAD_TOP: f64 = 8.0;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Mark {
    line: u32,
    error: bool,
}

#[component]
pub fn Editor() -> impl IntoView {
    let d = use_designer();
    let gutter = NodeRef::<leptos::html::Div>::new();
    let dragging = RwSignal::new(false);
    let lines = Memo::new(move |_| d.text.with(|t| text::line_count(t)));
    let numbers = Memo::new(move |_| text::line_numbers(lines.get()));
    let marks = Memo::new(move |_| {
        d.analyzed.with(|a| {
            let r = &a.analysis.report;
            let mut m: Vec<Mark> = r
                .errors
                .iter()
                .map(|p| (p, true))
                .chain(r.warnings.iter().map(|p| (p, false)))
                .filter_map(|(p, error)| p.line.map(|line| Mark { line, error }))
                .collect();
            // One mark per line; errors win.
            m.sort_by_key(|k| (k.line, !k.error));
            m.dedup_by_key(|k| k.line);
            m
        })
    });
    // Programmatic edits (form, graph, restore) reach the textarea here.
    Effect::new(move |_| {
        let t = d.text.get();
        if let Some(ta) = d.editor.get()
            && ta.value() != t
        {
            ta.set_value(&t);
        }
    });
    let sync_scroll = move || {
        if let (Some(ta), Some(g)) = (d.editor.get_untracked(), gutter.get_untracked()) {
            g.set_scroll_top(ta.scroll_top());
        }
    };
    let on_drop = move |e: ev::DragEvent| {
        e.prevent_default();
        dragging.set(false);
        if let Some(f) = e
            .data_transfer()
            .and_then(|t| t.files())
            .and_then(|l| l.get(0))
        {
            import_file(d, f);
        }
    };
    view! {
        <div
            class="editor"
            class:dragging=move || dragging.get()
            on:dragover=move |e: ev::DragEvent| {
                e.prevent_default();
                dragging.set(true);
            }
            on:dragleave=move |_| dragging.set(false)
            on:drop=on_drop
        >
            <div class="gutter" node_ref=gutter aria-hidden="true">
                <div class="gutter-inner" style:height=move || format!("{}px", lines.get() as f64 * LINE_HEIGHT + 2.0 * PAD_TOP + 40.0)>
                    {move || marks.get().into_iter().map(|m| view! {
                        <div
                            class=if m.error { "mark error" } else { "mark warning" }
                            data-line=m.line
                            style:top=format!("{}px", PAD_TOP + f64::from(m.line - 1) * LINE_HEIGHT)
                        ></div>
                    }).collect_view()}
                    <pre class="line-numbers">{move || numbers.get()}</pre>
                </div>
            </div>
            <textarea
                data-testid="editor"
                node_ref=d.editor
                spellcheck="false"
                autocomplete="off"
                autocapitalize="off"
                wrap="off"
                aria-label="Workflow text, YAML or JSON"
                on:input=move |ev| {
                    let ta: web_sys::HtmlTextAreaElement = event_target(&ev);
                    d.user_edit(ta.value());
                }
                on:scroll=move |_| sync_scroll()
            ></textarea>
            <div class="drop-hint" aria-hidden="true">"Drop a YAML or JSON file to open it"</div>
        </div>
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Item {
    error: bool,
    code: &'static str,
    message: String,
    line: Option<u32>,
    column: Option<u32>,
    end: Option<(u32, u32)>,
    step: Option<String>,
}

#[component]
pub fn Problems() -> impl IntoView {
    let d = use_designer();
    let items = Memo::new(move |_| {
        d.analyzed.with(|a| {
            let r = &a.analysis.report;
            r.errors
                .iter()
                .map(|p| (p, true))
                .chain(r.warnings.iter().map(|p| (p, false)))
                .map(|(p, error)| Item {
                    error,
                    code: p.code.as_str(),
                    message: p.message.clone(),
                    line: p.line,
                    column: p.column,
                    end: p.end_line.zip(p.end_column),
                    step: p.step.clone(),
                })
                .collect::<Vec<_>>()
        })
    });
    let summary = move || {
        d.analyzed.with(|a| {
            let r = &a.analysis.report;
            let steps = a.workflow().map_or(0, |w| w.steps.len());
            let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
            let head = if r.errors.is_empty() && r.warnings.is_empty() {
                "Valid".to_owned()
            } else {
                let mut parts = Vec::new();
                if !r.errors.is_empty() {
                    parts.push(plural(r.errors.len(), "error"));
                }
                if !r.warnings.is_empty() {
                    parts.push(plural(r.warnings.len(), "warning"));
                }
                parts.join(", ")
            };
            let format = match a.format {
                ax_core::parse::Format::Json => "JSON",
                ax_core::parse::Format::Yaml => "YAML",
            };
            (
                head,
                format!(
                    "{format} · {} · checked in {:.1} ms",
                    plural(steps, "step"),
                    a.millis
                ),
                r.valid,
            )
        })
    };
    let jump = move |it: &Item| {
        if let (Some(line), Some(col)) = (it.line, it.column) {
            let (s, e) = d
                .text
                .with_untracked(|t| text::selection_for(t, line, col, it.end));
            d.reveal(s, e);
        }
    };
    view! {
        <section class="problems" data-testid="problems" aria-label="Problems">
            <header>
                <strong class:ok=move || summary().2 data-testid="problem-summary">{move || summary().0}</strong>
                <span class="muted" data-testid="analysis-info">{move || summary().1}</span>
            </header>
            <Show
                when=move || !items.with(Vec::is_empty)
                fallback=|| view! { <p class="empty">"No problems: the workflow is valid and can run."</p> }
            >
                <ul>
                    <For each=move || items.get().into_iter().enumerate() key=|(i, it)| (*i, it.clone()) let:entry>
                        {
                            let (_, it) = entry;
                            let it2 = it.clone();
                            let it3 = it.clone();
                            let pos = match (it.line, it.column) {
                                (Some(l), Some(c)) => format!("{l}:{c}"),
                                _ => "–".into(),
                            };
                            view! {
                                <li
                                    class=if it.error { "problem error" } else { "problem warning" }
                                    data-code=it.code
                                    data-line=it.line.unwrap_or(0)
                                    tabindex="0"
                                    role="button"
                                    title="Show in the text"
                                    on:click=move |_| jump(&it2)
                                    on:keydown=move |e: ev::KeyboardEvent| {
                                        if e.key() == "Enter" || e.key() == " " {
                                            e.prevent_default();
                                            jump(&it3);
                                        }
                                    }
                                >
                                    <span class="pos">{pos}</span>
                                    <span class="code">{it.code}</span>
                                    <span class="msg">
                                        {it.step.clone().map(|s| view! { <span class="step-ref">{s}": "</span> })}
                                        {it.message.clone()}
                                    </span>
                                </li>
                            }
                        }
                    </For>
                </ul>
            </Show>
        </section>
    }
}
