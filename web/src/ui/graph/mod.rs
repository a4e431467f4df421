//! The dependency graph as SVG: layered layout, curved edges, run states as
//! colours. Pan by dragging or with the arrow keys, zoom with the wheel, the
//! buttons or `+`/`-` (`0` fits). Clicking a node (or Enter on it) opens its
//! form, or its run details while the Run tab is open; in connect mode a click
//! on a source and then a target adds a dependency (cycles are refused). The
//! nodes are one tab stop: the arrow keys move between them (see `nodes`).

mod camera;
mod nodes;
mod tools;

use super::dom::{Keyed, elc, keyed, nothing, show, svg_el};
use super::{Panel, use_shell};
use crate::editing::use_editor;
use crate::runs::use_runs;
use camera::Camera;
use leptos::ev;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;

/// Where a pointer drag started: client x and y, and the pan at that time.
type Drag = (f64, f64, (f64, f64));

/// What the nodes and edges share: the camera, how a click is read, and which
/// node is the graph's tab stop.
#[derive(Clone, Copy)]
pub(super) struct GraphCtx {
    pub camera: Camera,
    pub d: crate::editing::Editor,
    shell: super::Shell,
    runs: crate::runs::Runs,
    /// Set while a drag moved: the click that ends it is not a click.
    moved: StoredValue<bool>,
    /// The node reached with Tab (the others with the arrow keys).
    pub focus_key: RwSignal<Option<String>>,
}

impl GraphCtx {
    /// A click on a node: connect mode, or open the step.
    pub fn node_click(&self, key: String) {
        let d = self.d;
        match d.connect.get_untracked() {
            Some(None) => d.connect.set(Some(Some(key))),
            Some(Some(src)) => {
                if src != key {
                    d.connect(&src, &key);
                }
                d.connect.set(Some(None));
            }
            None => {
                d.selected.set(Some(key));
                d.selected_edge.set(None);
                // With the Run tab open (and a run shown) the step's run details
                // follow the selection; otherwise its form opens.
                let keep_run = self.shell.panel.get_untracked() == Panel::Run
                    && self.runs.run.with_untracked(Option::is_some);
                if !keep_run {
                    self.shell.panel.set(Panel::Step);
                }
            }
        }
    }

    /// Whether the click that just happened ended a drag (and forget it).
    pub fn was_drag(&self) -> bool {
        let m = self.moved.get_value();
        self.moved.set_value(false);
        m
    }
}

pub fn graph_view() -> AnyView {
    let d = use_editor();
    let camera = Camera::new(d);
    let g = GraphCtx {
        camera,
        d,
        shell: use_shell(),
        runs: use_runs(),
        moved: StoredValue::new(false),
        focus_key: RwSignal::new(None),
    };
    // Fit when a document opens, or when the graph changes size class (empty,
    // a few steps, dozens, hundreds): pasting a big workflow re-frames it.
    let storage = crate::documents::use_storage();
    Effect::new(move |prev: Option<(Option<String>, usize)>| {
        let doc = storage.doc_id.get();
        let class = d.layout.with(|l| match l.nodes.len() {
            0 => 0,
            1..10 => 1,
            10..50 => 2,
            50..200 => 3,
            _ => 4,
        });
        let first = camera.svg.get().is_some();
        let key = (doc, class);
        if first && prev.as_ref() != Some(&key) {
            request_animation_frame(move || {
                camera.orient();
                request_animation_frame(move || camera.fit_with(true));
            });
        }
        key
    });
    elc("DIV", "graph-wrap")
        .child(tools::graph_tools(camera))
        .view(show(
            move || d.layout.with(|l| l.approximate && !l.nodes.is_empty()),
            || {
                elc("P", "graph-note")
                    .text("The graph has problems (a cycle or a missing step): dashed red edges close a cycle.")
                    .into_any()
            },
            nothing,
        ))
        .view(canvas(g))
        .into_any()
}

/// Zoom about the pointer with the wheel.
fn on_wheel(camera: Camera) -> impl FnMut(ev::WheelEvent) + 'static {
    move |e: ev::WheelEvent| {
        e.prevent_default();
        let Some(svg) = camera.svg.get_untracked() else {
            return;
        };
        let r = svg.get_bounding_client_rect();
        let factor = (-e.delta_y() * 0.0015).exp();
        camera.zoom_at(
            factor,
            f64::from(e.client_x()) - r.left(),
            f64::from(e.client_y()) - r.top(),
        );
    }
}

/// Pan by dragging: pointer down, move and up (also for cancel).
fn drag_handlers(
    g: GraphCtx,
) -> (
    impl FnMut(ev::PointerEvent) + 'static,
    impl FnMut(ev::PointerEvent) + 'static,
    impl FnMut(ev::PointerEvent) + Copy + 'static,
) {
    let camera = g.camera;
    let view = camera.view;
    // Pointer drag: (start x, start y, pan at start).
    let drag: StoredValue<Option<Drag>> = StoredValue::new(None);
    let down = move |e: ev::PointerEvent| {
        if e.button() != 0 {
            return;
        }
        let v = view.get_untracked();
        drag.set_value(Some((
            f64::from(e.client_x()),
            f64::from(e.client_y()),
            (v.x, v.y),
        )));
        g.moved.set_value(false);
    };
    let moved = move |e: ev::PointerEvent| {
        let Some((x0, y0, (tx, ty))) = drag.get_value() else {
            return;
        };
        let (dx, dy) = (f64::from(e.client_x()) - x0, f64::from(e.client_y()) - y0);
        if !g.moved.get_value() && dx.abs() + dy.abs() < 4.0 {
            return;
        }
        if !g.moved.get_value() {
            g.moved.set_value(true);
            if let Some(svg) = camera.svg.get_untracked() {
                let _ = svg.set_pointer_capture(e.pointer_id());
            }
        }
        view.update(|v| (v.x, v.y) = (tx + dx, ty + dy));
    };
    let up = move |_e: ev::PointerEvent| drag.set_value(None);
    (down, moved, up)
}

/// Keys on the graph itself (a node's own keys come first, see `nodes`).
fn on_graph_key(g: GraphCtx) -> impl FnMut(ev::KeyboardEvent) + 'static {
    let (camera, d) = (g.camera, g.d);
    move |e: ev::KeyboardEvent| {
        let step = 60.0;
        match e.key().as_str() {
            "ArrowLeft" => camera.pan(step, 0.0),
            "ArrowRight" => camera.pan(-step, 0.0),
            "ArrowUp" => camera.pan(0.0, step),
            "ArrowDown" => camera.pan(0.0, -step),
            "+" | "=" => camera.zoom_center(1.25),
            "-" | "_" => camera.zoom_center(0.8),
            "0" => camera.fit(),
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
    }
}

/// The SVG: pointer and keyboard handling, the edges and the nodes.
fn canvas(g: GraphCtx) -> AnyView {
    let d = use_editor();
    let runs = use_runs();
    let camera = g.camera;
    let view = camera.view;
    let (on_down, on_move, on_up) = drag_handlers(g);
    let on_background_click = move |_| {
        if !g.was_drag() {
            d.selected_edge.set(None);
        }
    };
    let has_run = Memo::new(move |_| runs.run.with(Option::is_some));
    let connecting = move || d.connect.get().is_some();
    svg_el("svg")
        .attr("data-testid", "graph")
        .attr("class", "graph")
        .class_dyn("has-run", move || has_run.get())
        .class_dyn("connecting", connecting)
        .svg_ref(camera.svg)
        .attr("tabindex", "0")
        .attr("role", "application")
        .attr("aria-roledescription", "dependency graph")
        .attr(
            "aria-label",
            "Dependency graph: arrow keys pan, plus and minus zoom, 0 fits; Tab reaches the steps, where arrow keys move between steps",
        )
        .on(ev::wheel, on_wheel(camera))
        .on(ev::pointerdown, on_down)
        .on(ev::pointermove, on_move)
        .on(ev::pointerup, on_up)
        .on(ev::pointercancel, on_up)
        .on(ev::keydown, on_graph_key(g))
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
                .child(svg_el("g").attr("class", "edges").view(edges(g)))
                .child(
                    svg_el("g")
                        .attr("class", "nodes")
                        .attr("role", "list")
                        .attr("aria-label", "Steps")
                        .view(nodes_list(g, has_run)),
                ),
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
        ))
        .into_any()
}

fn edges(g: GraphCtx) -> AnyView {
    let d = use_editor();
    let list = Memo::new(move |_| {
        d.layout.with(|l| {
            l.edges
                .iter()
                .map(|e| nodes::EdgeView {
                    from: l.nodes[e.from].key.clone(),
                    to: l.nodes[e.to].key.clone(),
                    d: e.d.clone(),
                    cyclic: e.cyclic,
                })
                .collect::<Vec<_>>()
        })
    });
    keyed(move || {
        list.get()
            .into_iter()
            .map(|e| {
                let key = format!("{}\u{1}{}\u{1}{}\u{1}{}", e.from, e.to, e.d, e.cyclic);
                Keyed::new(key, move || nodes::edge(g, e))
            })
            .collect()
    })
}

fn nodes_list(g: GraphCtx, has_run: Memo<bool>) -> AnyView {
    let d = use_editor();
    // The tab stop: the selected node, else the first one.
    Effect::new(move |_| {
        let selected = d.selected.get();
        let keys_ok = d.layout.with(|l| {
            let fk = g.focus_key.get_untracked();
            fk.is_some_and(|k| l.nodes.iter().any(|n| n.key == k))
        });
        if let Some(s) = selected {
            g.focus_key.set(Some(s));
        } else if !keys_ok {
            g.focus_key.set(
                d.layout
                    .with_untracked(|l| l.nodes.first().map(|n| n.key.clone())),
            );
        }
    });
    keyed(move || {
        d.layout
            .get()
            .nodes
            .iter()
            .map(|n| {
                let key = format!(
                    "{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}{}\u{1}{}{}\u{1}{}",
                    n.key,
                    n.agent,
                    n.x,
                    n.y,
                    n.optional,
                    n.conditional,
                    n.kind.as_str(),
                    n.for_each,
                    n.workflow.as_deref().unwrap_or("")
                );
                let n = n.clone();
                Keyed::new(key, move || nodes::node(g, n, has_run))
            })
            .collect()
    })
}
