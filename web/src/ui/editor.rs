//! The code editor (CodeMirror, through [`EditorHost`]) and the problem list.
//! The validator's problems are drawn in the text (squiggles, gutter marks,
//! the message and a fix on hover) and listed below it; the list and the text
//! follow each other: a click on a problem selects its text, and the problem
//! under the cursor is marked in the list.

use super::dom::{ElRef, Keyed, el, elc, keyed, show};
use super::toolbar::import_file;
use crate::complete;
use crate::documents::use_storage;
use crate::editing::{History, use_editor};
use crate::editor_host::{Callbacks, EditorHost, edits};
use crate::text::{self, Offsets};
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;
use wasm_bindgen::JsCast;

/// The completion answer the editor reads: `{from, to, options}` in UTF-16 offsets.
#[derive(serde::Serialize)]
struct Answer<'a> {
    from: u32,
    to: u32,
    options: &'a [complete::Item],
}

pub fn editor() -> AnyView {
    let d = use_editor();
    let storage = use_storage();
    let parent = ElRef::new();
    // Create the code editor once its element is in the page.
    Effect::new(move |done: Option<bool>| {
        if done == Some(true) {
            return true;
        }
        let Some(el) = parent.get() else {
            return false;
        };
        let el: web_sys::HtmlElement = el.unchecked_into();
        let callbacks = Callbacks {
            on_change: Box::new(move |t| d.user_edit(t)),
            on_edit: Box::new(move |list| d.user_edits(&edits(&list))),
            on_cursor: Box::new(move |pos| d.cursor.set(pos)),
            on_history: Box::new(move |undo, redo| d.history.set(History { undo, redo })),
            on_drop_file: Box::new(move |f| import_file(storage, d, f)),
            complete: Box::new(move |pos, _explicit| completions(d, pos)),
        };
        let host = d.text.with_untracked(|t| {
            EditorHost::new(&el, t, d.format(), "Workflow text, YAML or JSON", callbacks)
        });
        d.attach(Some(host));
        true
    });
    on_cleanup(move || d.attach(None));
    // The validator's problems, as diagnostics of the text they were found in.
    Effect::new(move |_| {
        let a = d.analyzed.get();
        if !d.is_current(&a) {
            return;
        }
        let list = d
            .text
            .with_untracked(|t| crate::lint::diagnostics(t, &a.analysis));
        d.with_host(|h| h.set_diagnostics(&list));
    });
    // The language follows the document's format.
    Effect::new(move |prev: Option<ax_core::parse::Format>| {
        let f = d.analyzed.with(|a| a.format);
        if prev.is_some_and(|p| p != f) {
            d.with_host(|h| h.set_format(f));
        }
        f
    });
    elc("DIV", "editor")
        .attr("data-testid", "editor")
        .node_ref(parent)
        .into_any()
}

/// Completions at a UTF-16 offset of the editor's text, as JSON ("" for none).
fn completions(d: crate::editing::Editor, pos: u32) -> String {
    let a = d.analyze_now();
    d.text.with_untracked(|t| {
        let o = Offsets::new(t);
        let Some(c) = complete::complete(t, a.format, o.byte_of_utf16(pos), &a.analysis) else {
            return String::new();
        };
        serde_json::to_string(&Answer {
            from: o.utf16(c.from),
            to: o.utf16(c.to),
            options: &c.items,
        })
        .unwrap_or_default()
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Item {
    error: bool,
    code: &'static str,
    message: String,
    line: Option<u32>,
    column: Option<u32>,
    /// The problem's text, UTF-16 offsets.
    range: Option<(u32, u32)>,
    step: Option<String>,
}

pub fn problems() -> AnyView {
    let d = use_editor();
    let items = Memo::new(move |_| {
        d.analyzed.with(|a| {
            d.text.with_untracked(|t| {
                let r = &a.analysis.report;
                if r.errors.is_empty() && r.warnings.is_empty() {
                    return Vec::new();
                }
                let o = Offsets::new(t);
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
                        range: p.line.zip(p.column).map(|(l, c)| {
                            let (s, e) = o.range(l, c, p.end_line.zip(p.end_column));
                            (o.utf16(s), o.utf16(e))
                        }),
                        step: p.step.clone(),
                    })
                    .collect::<Vec<_>>()
            })
        })
    });
    // The problem under the cursor (the list follows the text).
    let current = Memo::new(move |_| {
        let pos = d.cursor.get();
        items.with(|list| {
            list.iter().position(|it| {
                it.range
                    .is_some_and(|(s, e)| s <= pos && pos <= e.max(s + 1))
            })
        })
    });
    let list_ref = ElRef::new();
    Effect::new(move |_| {
        if let (Some(i), Some(list)) = (current.get(), list_ref.get_untracked())
            && let Some(li) = list.children().item(i as u32)
        {
            let opts = web_sys::ScrollIntoViewOptions::new();
            opts.set_block(web_sys::ScrollLogicalPosition::Nearest);
            li.scroll_into_view_with_scroll_into_view_options(&opts);
        }
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
    let jump = move |range: Option<(u32, u32)>| {
        if let Some((s, e)) = range {
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
                        .attr("role", "status")
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
                    .node_ref(list_ref)
                    .view(keyed(move || {
                        items
                            .get()
                            .into_iter()
                            .enumerate()
                            .map(|(i, it)| {
                                // The key: the position and everything shown.
                                let key = format!("{i}\u{1}{it:?}");
                                let is_current = move || current.get() == Some(i);
                                Keyed::new(key, move || problem(it, is_current, jump))
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

fn problem(
    it: Item,
    is_current: impl Fn() -> bool + Copy + Send + 'static,
    jump: impl Fn(Option<(u32, u32)>) + Copy + Send + 'static,
) -> AnyView {
    let pos = match (it.line, it.column) {
        (Some(l), Some(c)) => format!("{l}:{c}"),
        _ => "–".into(),
    };
    let range = it.range;
    el("LI")
        .attr(
            "class",
            if it.error {
                "problem error"
            } else {
                "problem warning"
            },
        )
        .attr("data-code", it.code)
        .attr_string("data-line", it.line.unwrap_or(0).to_string())
        .class_dyn("current", is_current)
        .child(
            elc("BUTTON", "problem-button")
                .attr("type", "button")
                .attr_str_dyn(
                    "aria-current",
                    move || if is_current() { "true" } else { "false" },
                )
                .attr("title", "Show in the text")
                .on_click(move |_| jump(range))
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
                ),
        )
        .into_any()
}
