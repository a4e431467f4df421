//! The graph's toolbar: zoom, fit, orientation, add a step, connect mode, and
//! removing the selected edge.

use super::camera::Camera;
use crate::editing::use_editor;
use crate::ui::dom::{El, el, elc, nothing, show};
use crate::ui::{Panel, use_shell};
use leptos::prelude::*;

pub(super) fn graph_tools(camera: Camera) -> El {
    let d = use_editor();
    let shell = use_shell();
    let connecting = move || d.connect.get().is_some();
    let hint = move || match d.connect.get() {
        Some(None) => "Connect: click the step that must run first…",
        Some(Some(_)) => "…then the step that depends on it (Esc to stop).",
        None => "",
    };
    elc("DIV", "graph-tools")
        .attr("role", "toolbar")
        .attr("aria-label", "Graph")
        .child(
            el("BUTTON")
                .on_click(move |_| camera.zoom_center(1.25))
                .attr("aria-label", "+ zoom in")
                .attr("title", "Zoom in (+)")
                .text("+"),
        )
        .child(
            el("BUTTON")
                .on_click(move |_| camera.zoom_center(0.8))
                .attr("aria-label", "− zoom out")
                .attr("title", "Zoom out (−)")
                .text("−"),
        )
        .child(
            el("BUTTON")
                .on_click(move |_| camera.fit())
                .attr("data-testid", "fit")
                .attr("title", "Fit the graph (0)")
                .text("Fit"),
        )
        .child(
            el("BUTTON")
                .attr("data-testid", "orientation")
                .on_click(move |_| {
                    d.vertical.update(|v| *v = !*v);
                    request_animation_frame(move || camera.fit());
                })
                .attr("title", "Levels as columns or as rows")
                .attr_str_dyn("aria-label", move || {
                    if d.vertical.get() {
                        "⇅ levels as rows"
                    } else {
                        "⇄ levels as columns"
                    }
                })
                .str_dyn(move || if d.vertical.get() { "⇅" } else { "⇄" }),
        )
        .child(elc("SPAN", "sep").attr("aria-hidden", "true"))
        .child(
            el("BUTTON")
                .on_click(move |_| {
                    if d.add_step().is_some() {
                        shell.panel.set(Panel::Step);
                    }
                })
                .attr("data-testid", "add-step")
                .attr("title", "Add a step after the selected one")
                .text("+ Step"),
        )
        .child(
            el("BUTTON")
                .attr("data-testid", "connect")
                .attr_str_dyn(
                    "aria-pressed",
                    move || {
                        if connecting() { "true" } else { "false" }
                    },
                )
                .class_dyn("active", connecting)
                .on_click(move |_| {
                    d.connect.set(if d.connect.get_untracked().is_some() {
                        None
                    } else {
                        Some(None)
                    })
                })
                .attr(
                    "title",
                    "Add a dependency: click the first step, then the step that depends on it",
                )
                .text("Connect"),
        )
        .view(show(
            move || d.selected_edge.with(Option::is_some),
            move || {
                elc("BUTTON", "danger")
                    .attr("data-testid", "remove-edge")
                    .on_click(move |_| {
                        if let Some((to, from)) = d.selected_edge.get_untracked() {
                            d.disconnect(&to, &from);
                        }
                    })
                    .text_dyn(move || {
                        d.selected_edge
                            .get()
                            .map(|(to, from)| format!("Remove {from} → {to}"))
                            .unwrap_or_default()
                    })
                    .into_any()
            },
            nothing,
        ))
        .child(elc("SPAN", "hint").attr("role", "status").str_dyn(hint))
        .child(
            elc("SPAN", "zoom muted")
                .attr("title", "Zoom level")
                .text_dyn(move || {
                    format!("{}%", crate::text::fixed(camera.view.get().zoom * 100.0, 0))
                }),
        )
}
