//! The graph's nodes and edges. The nodes are one tab stop (a roving
//! `tabindex`): on a node, the arrow keys move to the nearest node in that
//! direction (along an edge's direction that is the next or previous level),
//! Enter or Space opens it, Escape goes back to the graph.

use super::GraphCtx;
use crate::layout::{NODE_H, NODE_W, NodeBox};
use crate::runs::state_of;
use crate::ui::dom::svg_el;
use ax_core::model::StepType;
use leptos::ev;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;
use wasm_bindgen::JsCast;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct EdgeView {
    pub from: String,
    pub to: String,
    pub d: String,
    pub cyclic: bool,
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n - 1).collect();
        out.push('…');
        out
    }
}

/// One edge (a wide invisible path to click, and the line).
pub(super) fn edge(g: GraphCtx, e: EdgeView) -> AnyView {
    let d = g.d;
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
            if !g.was_drag() {
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

/// The nearest node from `from` in a direction (`dx`, `dy`: one of them ±1):
/// ahead of it, preferring the straightest line.
pub fn nearest(nodes: &[NodeBox], from: &str, dx: f64, dy: f64) -> Option<String> {
    let me = nodes.iter().find(|n| n.key == from)?;
    nodes
        .iter()
        .filter(|n| n.key != from)
        .filter_map(|n| {
            let (vx, vy) = (n.x - me.x, n.y - me.y);
            let ahead = vx * dx + vy * dy;
            let aside = (vx * dy - vy * dx).abs();
            (ahead > 1.0).then_some((ahead + 2.0 * aside, n))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| n.key.clone())
}

/// Move the keyboard focus to the node `key` and keep it in view.
fn focus_node(g: GraphCtx, key: &str) {
    g.focus_key.set(Some(key.to_owned()));
    if let Some((x, y)) =
        g.d.layout
            .with_untracked(|l| l.nodes.iter().find(|n| n.key == key).map(|n| (n.x, n.y)))
    {
        g.camera.reveal(x, y);
    }
    let svg = g.camera.svg.get_untracked();
    let sel = format!("[data-step=\"{}\"]", key.replace('"', "\\\""));
    if let Some(el) = svg
        .and_then(|s| s.query_selector(&sel).ok().flatten())
        .and_then(|e| e.dyn_into::<web_sys::SvgElement>().ok())
    {
        let _ = el.focus();
    }
}

/// A node's outline: a rounded box for a prompt, a hexagon for an approval (a
/// person decides), a box with a second border for a sub-workflow (a workflow
/// inside), each with the state's stripe.
fn node_box(kind: StepType) -> crate::ui::dom::El {
    let (w, h) = (NODE_W, NODE_H);
    let outline = match kind {
        StepType::Approval => {
            let mut d = crate::text::svg_path(&[
                ('M', 14.0, 0.0),
                ('L', w - 14.0, 0.0),
                ('L', w, h / 2.0),
                ('L', w - 14.0, h),
                ('L', 14.0, h),
                ('L', 0.0, h / 2.0),
            ]);
            d.push_str(" Z");
            svg_el("path").attr("class", "box").attr_string("d", d)
        }
        _ => svg_el("rect")
            .attr("class", "box")
            .attr_string("width", crate::text::fixed(w, 0))
            .attr_string("height", crate::text::fixed(h, 0))
            .attr("rx", "8"),
    };
    let mut g = svg_el("g").child(outline);
    if kind == StepType::Workflow {
        g = g.child(
            svg_el("rect")
                .attr("class", "inner")
                .attr("x", "4")
                .attr("y", "4")
                .attr_string("width", crate::text::fixed(w - 8.0, 0))
                .attr_string("height", crate::text::fixed(h - 8.0, 0))
                .attr("rx", "5"),
        );
    }
    let stripe = svg_el("rect")
        .attr("class", "stripe")
        .attr("width", "6")
        .attr("rx", "3");
    g.child(match kind {
        // Inside the hexagon's left edge.
        StepType::Approval => stripe
            .attr("x", "12")
            .attr("y", "8")
            .attr_string("height", crate::text::fixed(h - 16.0, 0)),
        _ => stripe.attr_string("height", crate::text::fixed(h, 0)),
    })
}

/// One step of the graph.
pub(super) fn node(g: GraphCtx, n: NodeBox, has_run: Memo<bool>) -> AnyView {
    let d = g.d;
    let runs = g.runs;
    let key = n.key.clone();
    let (k1, k2, k3, k4, k5, k6) = (
        key.clone(),
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
    let key_nav = key.clone();
    let on_key = move |e: ev::KeyboardEvent| {
        let dir = match e.key().as_str() {
            "ArrowLeft" => Some((-1.0, 0.0)),
            "ArrowRight" => Some((1.0, 0.0)),
            "ArrowUp" => Some((0.0, -1.0)),
            "ArrowDown" => Some((0.0, 1.0)),
            _ => None,
        };
        if let Some((dx, dy)) = dir {
            e.prevent_default();
            e.stop_propagation();
            let next = d
                .layout
                .with_untracked(|l| nearest(&l.nodes, &key_nav, dx, dy));
            if let Some(k) = next {
                focus_node(g, &k);
            }
            return;
        }
        match e.key().as_str() {
            "Enter" | " " => {
                e.prevent_default();
                e.stop_propagation();
                g.node_click(key_nav.clone());
            }
            "Home" | "End" => {
                e.prevent_default();
                e.stop_propagation();
                let target = d.layout.with_untracked(|l| {
                    if e.key() == "Home" {
                        l.nodes.first().map(|n| n.key.clone())
                    } else {
                        l.nodes.last().map(|n| n.key.clone())
                    }
                });
                if let Some(k) = target {
                    focus_node(g, &k);
                }
            }
            "Escape" => {
                if let Some(svg) = g.camera.svg.get_untracked() {
                    let _ = svg.focus();
                }
            }
            _ => {}
        }
    };
    let k2 = StoredValue::new(k2);
    let state_text = move || {
        if has_run.get() {
            runs.states
                .with(|s| state_of(s, &k2.read_value()).as_str().replace('-', " "))
        } else {
            String::new()
        }
    };
    let class = match (n.kind, n.optional) {
        (StepType::Prompt, false) => "node",
        (StepType::Prompt, true) => "node optional",
        (StepType::Approval, false) => "node approval",
        (StepType::Approval, true) => "node approval optional",
        (StepType::Workflow, false) => "node workflow",
        (StepType::Workflow, true) => "node workflow optional",
    };
    let mut group = svg_el("g")
        .attr("class", class)
        .class_dyn("selected", move || {
            d.selected.with(|s| s.as_deref() == Some(k3.as_str()))
        })
        .class_dyn("source", move || {
            d.connect.with(|c| matches!(c, Some(Some(s)) if *s == k4))
        })
        .attr_string("data-step", key.clone())
        .attr_str_dyn("data-state", move || {
            runs.states.with(|s| state_of(s, &k1).as_str())
        })
        .attr_string(
            "transform",
            format!("translate({})", crate::text::svg_path(&[(' ', n.x, n.y)])),
        )
        .attr_str_dyn("tabindex", move || {
            if g.focus_key.with(|f| f.as_deref() == Some(k6.as_str())) {
                "0"
            } else {
                "-1"
            }
        })
        .attr("role", "listitem")
        .attr_dyn("aria-label", {
            let title = title.clone();
            move || {
                let s = state_text();
                if s.is_empty() {
                    title.clone()
                } else {
                    format!("{title}, {s}")
                }
            }
        })
        .attr("aria-roledescription", "step")
        .on_click(move |e: ev::MouseEvent| {
            e.stop_propagation();
            if !g.was_drag() {
                g.node_click(k5.clone());
            }
        })
        .on(ev::keydown, on_key)
        .child(svg_el("title").string(title))
        .child(node_box(n.kind));
    let sub = match (n.kind, &n.workflow) {
        (StepType::Approval, _) => "approval".to_owned(),
        (StepType::Workflow, Some(w)) => format!("↳ {}", clip(w, 16)),
        _ => clip(&n.agent, 18),
    };
    group = group
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
                .string(sub),
        )
        .child(
            svg_el("text")
                .attr("class", "state")
                .attr_string("x", crate::text::fixed(NODE_W - 10.0, 0))
                .attr("y", "44")
                .attr("text-anchor", "end")
                .text_dyn(state_text),
        );
    if let Some(w) = n.workflow.clone().filter(|_| n.kind == StepType::Workflow) {
        // A double click opens the child's document.
        let storage = crate::documents::use_storage();
        group = group.on(ev::dblclick, move |e: ev::MouseEvent| {
            e.stop_propagation();
            storage.open_child(w.clone());
        });
    }
    let mut badge_x = NODE_W - 10.0;
    if n.for_each {
        let k = key.clone();
        group = group.child(
            svg_el("text")
                .attr("class", "badge items")
                .attr("data-testid", "node-items")
                .attr_string("x", crate::text::fixed(badge_x, 0))
                .attr("y", "22")
                .attr("text-anchor", "end")
                .text_dyn(move || {
                    runs.items
                        .with(|l| match l.iter().find(|(key, _, _)| *key == k) {
                            Some((_, done, total)) => format!("{done}/{total}"),
                            None => "each".to_owned(),
                        })
                }),
        );
        badge_x -= 44.0;
    }
    if n.conditional {
        group = group.child(
            svg_el("text")
                .attr("class", "badge")
                .attr_string("x", crate::text::fixed(badge_x, 0))
                .attr("y", "22")
                .attr("text-anchor", "end")
                .text("if"),
        );
    }
    group.into_any()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn at(key: &str, x: f64, y: f64) -> NodeBox {
        NodeBox {
            index: 0,
            key: key.into(),
            agent: String::new(),
            level: 0,
            x,
            y,
            optional: false,
            conditional: false,
            kind: ax_core::model::StepType::Prompt,
            for_each: false,
            workflow: None,
        }
    }

    #[test]
    fn arrows_move_to_the_nearest_node_ahead() {
        // Two levels as columns: a → (b above, c below).
        let nodes = [
            at("a", 0.0, 50.0),
            at("b", 240.0, 0.0),
            at("c", 240.0, 100.0),
        ];
        assert_eq!(nearest(&nodes, "a", 1.0, 0.0).as_deref(), Some("b"));
        assert_eq!(nearest(&nodes, "b", 0.0, 1.0).as_deref(), Some("c"));
        assert_eq!(nearest(&nodes, "c", 0.0, -1.0).as_deref(), Some("b"));
        assert_eq!(nearest(&nodes, "c", -1.0, 0.0).as_deref(), Some("a"));
        assert_eq!(nearest(&nodes, "a", -1.0, 0.0), None);
    }
}
