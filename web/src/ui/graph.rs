//! The dependency graph as SVG: layered layout, curved edges, run states as
//! colours; pan by dragging or with the arrow keys, zoom with the wheel, the
//! buttons or `+`/`-` (`0` fits). Clicking a node opens its form; in connect mode
//! a click on a source and then a target adds a dependency (cycles are refused).

use super::dom::{Keyed, el, elc, keyed, nothing, show, svg_el};
use crate::layout::NodeBox;
use crate::layout::{NODE_H, NODE_W};
use crate::state::{Designer, Panel, use_designer};
use leptos::ev;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;

const MIN_ZOOM: f64 = 0.08;
const MAX_ZOOM: f64 = 3.0;
/// Below this zoom labels are hard to read: a document opens at this zoom instead.
const READABLE_ZOOM: f64 = 0.6;

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n - 1).collect();
        out.push('…');
        out
    }
}

/// Where a pointer drag started: client x and y, and the pan at that time.
type Drag = (f64, f64, (f64, f64));

/// The pan (`x`, `y`) and zoom of the graph: one signal (each signal type
/// brings its own copy of the reactive code).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Viewport {
    x: f64,
    y: f64,
    zoom: f64,
}

#[derive(Debug, Clone, PartialEq)]
struct EdgeView {
    from: String,
    to: String,
    d: String,
    cyclic: bool,
}

pub fn graph_view() -> AnyView {
    let d = use_designer();
    let view = RwSignal::new(Viewport {
        x: 0.0,
        y: 0.0,
        zoom: 1.0,
    });
    let svg_ref = NodeRef::<leptos::svg::Svg>::new();
    // Pointer drag: (start x, start y, pan at start); `moved` suppresses the click.
    let drag: StoredValue<Option<Drag>> = StoredValue::new(None);
    let moved = StoredValue::new(false);

    let size = move || {
        // Called from animation frames: the graph may be gone by then.
        view.try_get_untracked()?;
        svg_ref.get_untracked().map(|s| {
            let r = s.get_bounding_client_rect();
            (r.width(), r.height())
        })
    };
    // Fit the whole graph; with `readable`, a big graph is shown from its start
    // at a zoom where labels can be read instead.
    let fit_with = move |readable: bool| {
        let Some((w, h)) = size() else { return };
        if w < 10.0 || h < 10.0 {
            return;
        }
        let (lw, lh) = d
            .layout
            .with_untracked(|l| (l.width.max(1.0), l.height.max(1.0)));
        let k = (w / lw).min(h / lh).clamp(MIN_ZOOM, 1.0);
        if readable && k < READABLE_ZOOM {
            let zoom = READABLE_ZOOM;
            // The first levels in view, centred across (levels are centred too).
            view.set(if d.vertical.get_untracked() {
                Viewport {
                    x: (w - lw * zoom) / 2.0,
                    y: 0.0,
                    zoom,
                }
            } else {
                Viewport {
                    x: 0.0,
                    y: (h - lh * zoom) / 2.0,
                    zoom,
                }
            });
            return;
        }
        view.set(Viewport {
            x: (w - lw * k) / 2.0,
            y: ((h - lh * k) / 2.0).max(0.0),
            zoom: k,
        });
    };
    let fit = move || fit_with(false);
    let zoom_at = move |factor: f64, cx: f64, cy: f64| {
        let v = view.get_untracked();
        let k2 = (v.zoom * factor).clamp(MIN_ZOOM, MAX_ZOOM);
        view.set(Viewport {
            x: cx - (cx - v.x) * k2 / v.zoom,
            y: cy - (cy - v.y) * k2 / v.zoom,
            zoom: k2,
        });
    };
    let zoom_center = move |factor: f64| {
        let (w, h) = size().unwrap_or((600.0, 400.0));
        zoom_at(factor, w / 2.0, h / 2.0);
    };
    // Pick the orientation that shows the graph biggest in this viewport.
    let orient = move || {
        let Some((w, h)) = size() else { return };
        let (levels, widest) = d.layout.with_untracked(|l| (l.levels, l.widest));
        let scale = |v: bool| {
            let (lw, lh) = crate::layout::dims(levels, widest, v);
            (w / lw.max(1.0)).min(h / lh.max(1.0))
        };
        let vertical = scale(true) > scale(false) * 1.1;
        if vertical != d.vertical.get_untracked() {
            d.vertical.set(vertical);
        }
    };
    // Fit when a document opens, or when the graph changes size class (empty,
    // a few steps, dozens, hundreds): pasting a big workflow re-frames it.
    Effect::new(move |prev: Option<(Option<String>, usize)>| {
        let doc = d.doc_id.get();
        let class = d.layout.with(|l| match l.nodes.len() {
            0 => 0,
            1..10 => 1,
            10..50 => 2,
            50..200 => 3,
            _ => 4,
        });
        let first = svg_ref.get().is_some();
        let key = (doc, class);
        if first && prev.as_ref() != Some(&key) {
            request_animation_frame(move || {
                orient();
                request_animation_frame(move || fit_with(true));
            });
        }
        key
    });

    let on_wheel = move |e: ev::WheelEvent| {
        e.prevent_default();
        let Some(svg) = svg_ref.get_untracked() else {
            return;
        };
        let r = svg.get_bounding_client_rect();
        let factor = (-e.delta_y() * 0.0015).exp();
        zoom_at(
            factor,
            f64::from(e.client_x()) - r.left(),
            f64::from(e.client_y()) - r.top(),
        );
    };
    let on_down = move |e: ev::PointerEvent| {
        if e.button() != 0 {
            return;
        }
        let v = view.get_untracked();
        drag.set_value(Some((
            f64::from(e.client_x()),
            f64::from(e.client_y()),
            (v.x, v.y),
        )));
        moved.set_value(false);
    };
    let on_move = move |e: ev::PointerEvent| {
        let Some((x0, y0, (tx, ty))) = drag.get_value() else {
            return;
        };
        let (dx, dy) = (f64::from(e.client_x()) - x0, f64::from(e.client_y()) - y0);
        if !moved.get_value() && dx.abs() + dy.abs() < 4.0 {
            return;
        }
        if !moved.get_value() {
            moved.set_value(true);
            if let Some(svg) = svg_ref.get_untracked() {
                let _ = svg.set_pointer_capture(e.pointer_id());
            }
        }
        view.update(|v| (v.x, v.y) = (tx + dx, ty + dy));
    };
    let on_up = move |_e: ev::PointerEvent| drag.set_value(None);
    let on_key = move |e: ev::KeyboardEvent| {
        let step = 60.0;
        match e.key().as_str() {
            "ArrowLeft" => view.update(|v| v.x += step),
            "ArrowRight" => view.update(|v| v.x -= step),
            "ArrowUp" => view.update(|v| v.y += step),
            "ArrowDown" => view.update(|v| v.y -= step),
            "+" | "=" => zoom_center(1.25),
            "-" | "_" => zoom_center(0.8),
            "0" => fit(),
            "Delete" | "Backspace" => {
                if let Some((to, from)) = d.selected_edge.get_untracked() {
                    d.disconnect(&to, &from);
                } else {
                    return;
                }
            }
            _ => return,
        }
        e.prevent_default();
    };
    // The click that ends a drag is not a click on what is under the pointer.
    let was_drag = move || {
        let m = moved.get_value();
        moved.set_value(false);
        m
    };
    let on_background_click = move |_| {
        if !was_drag() {
            d.selected_edge.set(None);
        }
    };

    let edges = Memo::new(move |_| {
        d.layout.with(|l| {
            l.edges
                .iter()
                .map(|e| EdgeView {
                    from: l.nodes[e.from].key.clone(),
                    to: l.nodes[e.to].key.clone(),
                    d: e.d.clone(),
                    cyclic: e.cyclic,
                })
                .collect::<Vec<_>>()
        })
    });
    let many = Memo::new(move |_| d.layout.with(|l| l.nodes.len() > 150));
    let has_run = Memo::new(move |_| d.run.with(Option::is_some));
    let connecting = move || d.connect.get().is_some();

    let node_click = move |key: String| match d.connect.get_untracked() {
        Some(None) => d.connect.set(Some(Some(key))),
        Some(Some(src)) => {
            if src == key {
                d.connect.set(Some(None));
            } else {
                d.connect(&src, &key);
                d.connect.set(Some(None));
            }
        }
        None => {
            d.selected.set(Some(key));
            d.selected_edge.set(None);
            d.panel.set(Panel::Step);
        }
    };

    let hint = move || match d.connect.get() {
        Some(None) => "Connect: click the step that must run first…",
        Some(Some(_)) => "…then the step that depends on it (Esc to stop).",
        None => "",
    };

    let tools = elc("DIV", "graph-tools")
        .attr("role", "toolbar")
        .attr("aria-label", "Graph")
        .child(
            el("BUTTON")
                .on_click(move |_| zoom_center(1.25))
                .attr("aria-label", "Zoom in")
                .attr("title", "Zoom in (+)")
                .text("+"),
        )
        .child(
            el("BUTTON")
                .on_click(move |_| zoom_center(0.8))
                .attr("aria-label", "Zoom out")
                .attr("title", "Zoom out (−)")
                .text("−"),
        )
        .child(
            el("BUTTON")
                .on_click(move |_| fit())
                .attr("data-testid", "fit")
                .attr("title", "Fit the graph (0)")
                .text("Fit"),
        )
        .child(
            el("BUTTON")
                .attr("data-testid", "orientation")
                .on_click(move |_| {
                    d.vertical.update(|v| *v = !*v);
                    request_animation_frame(fit);
                })
                .attr("title", "Levels as columns or as rows")
                .attr(
                    "aria-label",
                    "Switch between left-to-right and top-to-bottom",
                )
                .str_dyn(move || if d.vertical.get() { "⇅" } else { "⇄" }),
        )
        .child(elc("SPAN", "sep"))
        .child(
            el("BUTTON")
                .on_click(move |_| drop(d.add_step()))
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
                .text_dyn(move || format!("{}%", crate::text::fixed(view.get().zoom * 100.0, 0))),
        );
    let edges_view = keyed(move || {
        edges
            .get()
            .into_iter()
            .map(|e| {
                let key = format!("{}\u{1}{}\u{1}{}\u{1}{}", e.from, e.to, e.d, e.cyclic);
                Keyed::new(key, move || edge(d, e, was_drag))
            })
            .collect()
    });
    let nodes_view = keyed(move || {
        d.layout
            .get()
            .nodes
            .iter()
            .map(|n| {
                let key = format!(
                    "{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}{}",
                    n.key, n.agent, n.x, n.y, n.optional, n.conditional
                );
                let n = n.clone();
                Keyed::new(key, move || node(d, n, has_run, many, was_drag, node_click))
            })
            .collect()
    });
    let graph = svg_el("svg")
        .attr("data-testid", "graph")
        .attr("class", "graph")
        .class_dyn("has-run", move || has_run.get())
        .class_dyn("connecting", connecting)
        .svg_ref(svg_ref)
        .attr("tabindex", "0")
        .attr("role", "group")
        .attr(
            "aria-label",
            "Dependency graph: arrow keys pan, plus and minus zoom, 0 fits",
        )
        .on(ev::wheel, on_wheel)
        .on(ev::pointerdown, on_down)
        .on(ev::pointermove, on_move)
        .on(ev::pointerup, on_up)
        .on(ev::pointercancel, on_up)
        .on(ev::keydown, on_key)
        .on_click(on_background_click)
        .child(
            svg_el("defs").child(
                svg_el("marker")
                    .attr("id", "arrow")
                    .attr("viewBox", "0 0 10 10")
                    .attr("refX", "9")
                    .attr("refY", "5")
                    .attr("markerWidth", "7")
                    .attr("markerHeight", "7")
                    .attr("orient", "auto-start-reverse")
                    .child(
                        svg_el("path")
                            .attr("d", "M0,0 L10,5 L0,10 z")
                            .attr("class", "arrow-head"),
                    ),
            ),
        )
        .child(
            svg_el("g")
                .attr_dyn("transform", move || {
                    let v = view.get();
                    format!(
                        "translate({}) scale({})",
                        crate::text::svg_path(&[(' ', v.x, v.y)]),
                        crate::text::fixed(v.zoom, 4)
                    )
                })
                .child(svg_el("g").attr("class", "edges").view(edges_view))
                .child(svg_el("g").attr("class", "nodes").view(nodes_view)),
        )
        .view(show(
            move || d.layout.with(|l| l.nodes.is_empty()),
            || {
                svg_el("text")
                    .attr("class", "empty")
                    .attr("x", "24")
                    .attr("y", "40")
                    .text("No steps yet: add one with “+ Step”.")
                    .into_any()
            },
            nothing,
        ));
    elc("DIV", "graph-wrap")
        .child(tools)
        .view(show(
            move || d.layout.with(|l| l.approximate && !l.nodes.is_empty()),
            || {
                elc("P", "graph-note")
                    .text("The graph has problems (a cycle or a missing step): dashed red edges close a cycle.")
                    .into_any()
            },
            nothing,
        ))
        .child(graph)
        .into_any()
}

/// One edge of the graph (a wide invisible path to click, and the line).
fn edge(d: Designer, e: EdgeView, was_drag: impl Fn() -> bool + Copy + 'static) -> AnyView {
    let (to, from) = (e.to.clone(), e.from.clone());
    let (to2, from2) = (e.to.clone(), e.from.clone());
    svg_el("g")
        .attr("class", if e.cyclic { "edge cyclic" } else { "edge" })
        .class_dyn("selected", move || {
            d.selected_edge
                .with(|s| s.as_ref().is_some_and(|(t, f)| *t == to2 && *f == from2))
        })
        .attr_string("data-from", e.from.clone())
        .attr_string("data-to", e.to.clone())
        .on_click(move |ev: ev::MouseEvent| {
            ev.stop_propagation();
            if !was_drag() {
                d.selected_edge.set(Some((to.clone(), from.clone())));
            }
        })
        .child(
            svg_el("path")
                .attr("class", "hit")
                .attr_string("d", e.d.clone()),
        )
        .child(
            svg_el("path")
                .attr("class", "line")
                .attr_string("d", e.d)
                .attr("marker-end", "url(#arrow)"),
        )
        .into_any()
}

/// One step of the graph.
fn node(
    d: Designer,
    n: NodeBox,
    has_run: Memo<bool>,
    many: Memo<bool>,
    was_drag: impl Fn() -> bool + Copy + 'static,
    node_click: impl Fn(String) + Copy + 'static,
) -> AnyView {
    let key = n.key.clone();
    let (k1, k2, k3, k4, k5) = (
        key.clone(),
        key.clone(),
        key.clone(),
        key.clone(),
        key.clone(),
    );
    let title = format!(
        "{} — agent {}{}{}",
        n.key,
        n.agent,
        if n.optional { " (optional)" } else { "" },
        if n.conditional { " (conditional)" } else { "" }
    );
    let label = if n.key.is_empty() {
        "(no key)".to_owned()
    } else {
        clip(&n.key, 21)
    };
    let key_enter = key.clone();
    let mut g = svg_el("g")
        .attr("class", if n.optional { "node optional" } else { "node" })
        .class_dyn("selected", move || {
            d.selected.with(|s| s.as_deref() == Some(k3.as_str()))
        })
        .class_dyn("source", move || {
            d.connect.with(|c| matches!(c, Some(Some(s)) if *s == k4))
        })
        .attr_string("data-step", key.clone())
        .attr_str_dyn("data-state", move || {
            d.states.with(|s| crate::state::state_of(s, &k1).as_str())
        })
        .attr_string(
            "transform",
            format!("translate({})", crate::text::svg_path(&[(' ', n.x, n.y)])),
        )
        .attr_str_dyn("tabindex", move || if many.get() { "-1" } else { "0" })
        .attr("role", "button")
        .attr_string("aria-label", title.clone())
        .on_click(move |e: ev::MouseEvent| {
            e.stop_propagation();
            if !was_drag() {
                node_click(k5.clone());
            }
        })
        .on(ev::keydown, move |e: ev::KeyboardEvent| {
            if e.key() == "Enter" || e.key() == " " {
                e.prevent_default();
                e.stop_propagation();
                node_click(key_enter.clone());
            }
        })
        .child(svg_el("title").string(title))
        .child(
            svg_el("rect")
                .attr("class", "box")
                .attr_string("width", crate::text::fixed(NODE_W, 0))
                .attr_string("height", crate::text::fixed(NODE_H, 0))
                .attr("rx", "8"),
        )
        .child(
            svg_el("rect")
                .attr("class", "stripe")
                .attr("width", "6")
                .attr_string("height", crate::text::fixed(NODE_H, 0))
                .attr("rx", "3"),
        )
        .child(
            svg_el("text")
                .attr("class", "key")
                .attr("x", "16")
                .attr("y", "24")
                .string(label),
        )
        .child(
            svg_el("text")
                .attr("class", "agent")
                .attr("x", "16")
                .attr("y", "44")
                .string(clip(&n.agent, 18)),
        )
        .child(
            svg_el("text")
                .attr("class", "state")
                .attr_string("x", crate::text::fixed(NODE_W - 10.0, 0))
                .attr("y", "44")
                .attr("text-anchor", "end")
                .text_dyn(move || {
                    if has_run.get() {
                        d.states
                            .with(|s| crate::state::state_of(s, &k2).as_str().replace('-', " "))
                    } else {
                        String::new()
                    }
                }),
        );
    if n.conditional {
        g = g.child(
            svg_el("text")
                .attr("class", "badge")
                .attr_string("x", crate::text::fixed(NODE_W - 10.0, 0))
                .attr("y", "22")
                .attr("text-anchor", "end")
                .text("if"),
        );
    }
    g.into_any()
}
