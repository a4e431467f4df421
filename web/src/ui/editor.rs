//! The text editor (a textarea with a line-number gutter that scrolls with it
//! and marks lines with problems) and the problem list.

use super::dom::{ElRef, Keyed, el, elc, keyed, show};
use super::toolbar::{event_target, import_file};
use crate::state::use_designer;
use crate::text;
use leptos::ev;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;

/// Pixels per line: the CSS gives the textarea and the gutter this line height.
pub const LINE_HEIGHT: f64 = 20.0;
/// The editor's textarea (its node reference is the designer's).
pub fn textarea(e: web_sys::HtmlElement) -> web_sys::HtmlTextAreaElement {
    wasm_bindgen::JsCast::unchecked_into(e)
}

/// The textarea's top padding.
const PAD_TOP: f64 = 8.0;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Mark {
    line: u32,
    error: bool,
}

pub fn editor() -> AnyView {
    let d = use_designer();
    let gutter = ElRef::new();
    let dragging = RwSignal::new(false);
    let lines = Memo::new(move |_| d.text.with(|t| text::line_count(t)));
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
            ax_core::sort::sort_by_key(&mut m, |k| (k.line, !k.error));
            m.dedup_by_key(|k| k.line);
            m
        })
    });
    // Programmatic edits (form, graph, restore) reach the textarea here.
    Effect::new(move |_| {
        let t = d.text.get();
        if let Some(ta) = d.editor.get().map(textarea)
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
    elc("DIV", "editor")
        .class_dyn("dragging", move || dragging.get())
        .on(ev::dragover, move |e: ev::DragEvent| {
            e.prevent_default();
            dragging.set(true);
        })
        .on(ev::dragleave, move |_| dragging.set(false))
        .on(ev::drop, on_drop)
        .child(
            elc("DIV", "gutter")
                .node_ref(gutter)
                .attr("aria-hidden", "true")
                .child(
                    elc("DIV", "gutter-inner")
                        .style_dyn("height", move || {
                            format!(
                                "{}px",
                                lines.get() as f64 * LINE_HEIGHT + 2.0 * PAD_TOP + 40.0
                            )
                        })
                        .list_dyn(move || {
                            marks
                                .get()
                                .into_iter()
                                .map(|m| {
                                    elc(
                                        "DIV",
                                        if m.error {
                                            "mark error"
                                        } else {
                                            "mark warning"
                                        },
                                    )
                                    .attr_string("data-line", m.line.to_string())
                                    .style_string(
                                        "top",
                                        format!(
                                            "{}px",
                                            PAD_TOP + f64::from(m.line - 1) * LINE_HEIGHT
                                        ),
                                    )
                                    .into_any()
                                })
                                .collect()
                        })
                        .child(
                            elc("PRE", "line-numbers")
                                .text_dyn(move || text::line_numbers(lines.get())),
                        ),
                ),
        )
        .child(
            el("TEXTAREA")
                .attr("data-testid", "editor")
                .node_ref(d.editor)
                .attr("spellcheck", "false")
                .attr("autocomplete", "off")
                .attr("autocapitalize", "off")
                .attr("wrap", "off")
                .attr("aria-label", "Workflow text, YAML or JSON")
                .on(ev::input, move |ev| {
                    let ta: web_sys::HtmlTextAreaElement = event_target(&ev);
                    d.user_edit(ta.value());
                })
                .on(ev::scroll, move |_| sync_scroll()),
        )
        .child(
            elc("DIV", "drop-hint")
                .attr("aria-hidden", "true")
                .text("Drop a YAML or JSON file to open it"),
        )
        .into_any()
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

pub fn problems() -> AnyView {
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
                    "{format} · {} · checked in {} ms",
                    plural(steps, "step"),
                    text::fixed(a.millis, 1)
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
    elc("SECTION", "problems")
        .attr("data-testid", "problems")
        .attr("aria-label", "Problems")
        .child(
            el("HEADER")
                .child(
                    el("STRONG")
                        .class_dyn("ok", move || summary().2)
                        .attr("data-testid", "problem-summary")
                        .text_dyn(move || summary().0),
                )
                .child(
                    elc("SPAN", "muted")
                        .attr("data-testid", "analysis-info")
                        .text_dyn(move || summary().1),
                ),
        )
        .view(show(
            move || !items.with(Vec::is_empty),
            move || {
                el("UL")
                    .view(keyed(move || {
                        items
                            .get()
                            .into_iter()
                            .enumerate()
                            .map(|(i, it)| {
                                // The key: the position and everything shown.
                                let key = format!("{i}\u{1}{it:?}");
                                Keyed::new(key, move || problem(it, jump))
                            })
                            .collect()
                    }))
                    .into_any()
            },
            || {
                elc("P", "empty")
                    .text("No problems: the workflow is valid and can run.")
                    .into_any()
            },
        ))
        .into_any()
}

fn problem(it: Item, jump: impl Fn(&Item) + Copy + Send + 'static) -> AnyView {
    let pos = match (it.line, it.column) {
        (Some(l), Some(c)) => format!("{l}:{c}"),
        _ => "–".into(),
    };
    let it2 = it.clone();
    let it3 = it.clone();
    elc(
        "LI",
        if it.error {
            "problem error"
        } else {
            "problem warning"
        },
    )
    .attr("data-code", it.code)
    .attr_string("data-line", it.line.unwrap_or(0).to_string())
    .attr("tabindex", "0")
    .attr("role", "button")
    .attr("title", "Show in the text")
    .on_click(move |_| jump(&it2))
    .on(ev::keydown, move |e: ev::KeyboardEvent| {
        if e.key() == "Enter" || e.key() == " " {
            e.prevent_default();
            jump(&it3);
        }
    })
    .child(elc("SPAN", "pos").string(pos))
    .child(elc("SPAN", "code").text(it.code))
    .child(
        elc("SPAN", "msg")
            .child_opt(
                it.step
                    .clone()
                    .map(|s| elc("SPAN", "step-ref").string(s).text(": ")),
            )
            .string(it.message.clone()),
    )
    .into_any()
}
