//! Layered layout of the dependency graph: the core's levels as columns (left to
//! right) or rows (top to bottom), the order inside each level chosen by
//! barycenter sweeps to reduce crossings, edges as cubic curves. Pure and deterministic, so it is tested
//! natively and recomputed only when the graph's shape changes.
//!
//! A workflow with problems still gets a picture: when the core has no sound
//! graph (a cycle, a missing step), levels come from a tolerant longest-path pass
//! that breaks cycles, and the edges that close a cycle are flagged.

use crate::text::svg_path;
use ax_core::Workflow;
use ax_core::graph::Graph;
use ax_core::validate::KeyIndex;
use std::collections::VecDeque;

pub const NODE_W: f64 = 176.0;
pub const NODE_H: f64 = 58.0;
pub const GAP_X: f64 = 72.0;
pub const GAP_Y: f64 = 18.0;
/// Gaps when levels are rows.
pub const ROW_GAP: f64 = 56.0;
pub const COL_GAP: f64 = 22.0;
pub const MARGIN: f64 = 24.0;
/// Barycenter sweeps (down and up alternately).
const SWEEPS: usize = 6;

/// A placed step.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeBox {
    pub index: usize,
    pub key: String,
    pub agent: String,
    pub level: usize,
    pub x: f64,
    pub y: f64,
    pub optional: bool,
    pub conditional: bool,
    /// `prompt`, `approval` or `workflow`: each has its own shape.
    pub kind: ax_core::model::StepType,
    /// Runs once per item (`forEach`).
    pub for_each: bool,
    /// A `type: workflow` step's child, as written.
    pub workflow: Option<String>,
}

/// A drawn dependency: `to` depends on `from`.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgePath {
    pub from: usize,
    pub to: usize,
    /// SVG path data.
    pub d: String,
    /// Part of a dependency cycle.
    pub cyclic: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Layout {
    pub nodes: Vec<NodeBox>,
    pub edges: Vec<EdgePath>,
    pub width: f64,
    pub height: f64,
    /// The core's graph was unsound (levels are approximate).
    pub approximate: bool,
    pub vertical: bool,
    /// What the layout was computed from (see [`shape_of`]).
    pub shape: u64,
    /// Number of levels and the size of the largest one.
    pub levels: usize,
    pub widest: usize,
}

/// A hash of everything the layout depends on: keys, agents, dependencies,
/// the optional and conditional marks, the graph's soundness and orientation.
pub fn shape_of(wf: &Workflow, sound: bool, vertical: bool) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (sound, vertical, wf.steps.len()).hash(&mut h);
    for s in &wf.steps {
        (
            &s.key,
            &s.agent,
            &s.dependencies,
            s.optional,
            s.when.is_some(),
            s.kind.as_str(),
            s.for_each.is_some(),
            &s.workflow,
        )
            .hash(&mut h);
    }
    h.finish()
}

/// Width and height of a layout with `levels` levels of at most `widest` steps.
pub fn dims(levels: usize, widest: usize, vertical: bool) -> (f64, f64) {
    let (l, w) = (levels as f64, widest as f64);
    let span = |n: f64, size: f64, gap: f64| if n > 0.0 { n * (size + gap) - gap } else { 0.0 };
    // Room on one side for edges that bulge around skipped levels.
    let bulge = if l > 2.0 { 60.0 } else { 0.0 };
    if vertical {
        (
            MARGIN * 2.0 + span(w, NODE_W, COL_GAP) + bulge,
            MARGIN * 2.0 + span(l, NODE_H, ROW_GAP),
        )
    } else {
        (
            MARGIN * 2.0 + span(l, NODE_W, GAP_X),
            MARGIN * 2.0 + span(w, NODE_H, GAP_Y) + bulge,
        )
    }
}

impl Layout {
    pub fn node(&self, key: &str) -> Option<&NodeBox> {
        self.nodes.iter().find(|n| n.key == key)
    }
}

/// Dependencies by index: each step's distinct, existing, non-self dependencies
/// (duplicate keys resolve to their first step).
pub fn resolve_dependencies(wf: &Workflow) -> Vec<Vec<usize>> {
    let mut index = KeyIndex::with_capacity_and_hasher(wf.steps.len(), Default::default());
    for (i, s) in wf.steps.iter().enumerate() {
        index.entry(s.key.as_str()).or_insert(i);
    }
    wf.steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut deps: Vec<usize> = s
                .dependencies
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .filter(|&d| d != i)
                .collect();
            ax_core::sort::sort_unstable(&mut deps);
            deps.dedup();
            deps
        })
        .collect()
}

/// Levels for any graph, cycles included: Kahn's algorithm by longest path;
/// when only cycles remain, the earliest declared remaining step is placed as if
/// its unplaced dependencies were not there.
pub fn tolerant_levels(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = deps.len();
    let mut dependents = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut level = vec![0usize; n];
    let mut placed = vec![false; n];
    let mut queue: VecDeque<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut done = 0;
    let mut next_forced = 0;
    while done < n {
        let i = match queue.pop_front() {
            Some(i) => i,
            None => {
                // A cycle: force the first unplaced step.
                while placed[next_forced] {
                    next_forced += 1;
                }
                let i = next_forced;
                level[i] = deps[i]
                    .iter()
                    .filter(|&&d| placed[d])
                    .map(|&d| level[d] + 1)
                    .max()
                    .unwrap_or(0);
                i
            }
        };
        if placed[i] {
            continue;
        }
        placed[i] = true;
        done += 1;
        for &j in &dependents[i] {
            if placed[j] {
                continue;
            }
            level[j] = level[j].max(level[i] + 1);
            indegree[j] = indegree[j].saturating_sub(1);
            if indegree[j] == 0 {
                queue.push_back(j);
            }
        }
    }
    let depth = level.iter().copied().max().map_or(0, |m| m + 1);
    let mut levels = vec![Vec::new(); depth];
    for i in 0..n {
        levels[level[i]].push(i);
    }
    levels
}

/// Edges between consecutive levels that cross, counted pairwise.
pub fn crossings(levels: &[Vec<usize>], deps: &[Vec<usize>]) -> usize {
    let n = deps.len();
    let mut pos = vec![0usize; n];
    let mut level_of = vec![0usize; n];
    for (l, nodes) in levels.iter().enumerate() {
        for (p, &i) in nodes.iter().enumerate() {
            pos[i] = p;
            level_of[i] = l;
        }
    }
    let mut total = 0;
    for (l, nodes) in levels.iter().enumerate().skip(1) {
        let mut edges: Vec<(usize, usize)> = nodes
            .iter()
            .flat_map(|&i| {
                deps[i]
                    .iter()
                    .filter(|&&d| level_of[d] + 1 == l)
                    .map(move |&d| (d, i))
            })
            .map(|(d, i)| (pos[d], pos[i]))
            .collect();
        ax_core::sort::sort_unstable(&mut edges);
        for a in 0..edges.len() {
            for b in a + 1..edges.len() {
                if edges[a].0 < edges[b].0 && edges[a].1 > edges[b].1 {
                    total += 1;
                }
            }
        }
    }
    total
}

/// Reorder each level by the barycenter of its neighbours in the levels already
/// placed, sweeping down then up; keeps the ordering with the fewest crossings.
pub fn order_levels(mut levels: Vec<Vec<usize>>, deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = deps.len();
    let mut dependents = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut pos = vec![0f64; n];
    let place = |levels: &[Vec<usize>], pos: &mut [f64]| {
        for nodes in levels {
            // Centred columns: positions comparable across levels of different sizes.
            let off = -(nodes.len() as f64 - 1.0) / 2.0;
            for (p, &i) in nodes.iter().enumerate() {
                pos[i] = off + p as f64;
            }
        }
    };
    place(&levels, &mut pos);
    // Edges crossing more than ~200k pairs make counting costly; then trust the sweeps.
    let edge_count: usize = deps.iter().map(Vec::len).sum();
    let count = |levels: &[Vec<usize>]| {
        if edge_count <= 4000 {
            crossings(levels, deps)
        } else {
            0
        }
    };
    let mut best = levels.clone();
    let mut best_crossings = count(&levels);
    for sweep in 0..SWEEPS {
        let down = sweep % 2 == 0;
        let order: Vec<usize> = if down {
            (1..levels.len()).collect()
        } else {
            (0..levels.len().saturating_sub(1)).rev().collect()
        };
        for l in order {
            let neighbours: &[Vec<usize>] = if down { deps } else { &dependents };
            let mut keyed: Vec<(f64, usize, usize)> = levels[l]
                .iter()
                .enumerate()
                .map(|(p, &i)| {
                    let ns = &neighbours[i];
                    let bary = if ns.is_empty() {
                        pos[i]
                    } else {
                        ns.iter().map(|&j| pos[j]).sum::<f64>() / ns.len() as f64
                    };
                    (bary, p, i)
                })
                .collect();
            // Ties keep the current order (stable by previous position).
            ax_core::sort::sort_by(&mut keyed, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            levels[l] = keyed.into_iter().map(|(_, _, i)| i).collect();
            let off = -(levels[l].len() as f64 - 1.0) / 2.0;
            for (p, &i) in levels[l].iter().enumerate() {
                pos[i] = off + p as f64;
            }
        }
        let c = count(&levels);
        if c < best_crossings {
            best_crossings = c;
            best = levels.clone();
        }
        if best_crossings == 0 {
            break;
        }
    }
    if edge_count > 4000 { levels } else { best }
}

/// The curve from the right side of `a` to the left side of `b` (from the
/// bottom of `a` to the top of `b` when vertical). An edge that skips levels
/// would run through the steps between: it bulges out to the side instead.
fn curve(ax: f64, ay: f64, bx: f64, by: f64, vertical: bool, span: usize) -> String {
    if span > 1 {
        let bulge = 34.0 + 10.0 * (span.min(8) as f64);
        return if vertical {
            let (x1, y1) = (ax + NODE_W, ay + NODE_H / 2.0);
            let (x2, y2) = (bx + NODE_W, by + NODE_H / 2.0);
            let x = x1.max(x2) + bulge;
            svg_path(&[('M', x1, y1), ('C', x, y1), (' ', x, y2), (' ', x2, y2)])
        } else {
            let (x1, y1) = (ax + NODE_W / 2.0, ay + NODE_H);
            let (x2, y2) = (bx + NODE_W / 2.0, by + NODE_H);
            let y = y1.max(y2) + bulge;
            svg_path(&[('M', x1, y1), ('C', x1, y), (' ', x2, y), (' ', x2, y2)])
        };
    }
    if vertical {
        let (x1, y1) = (ax + NODE_W / 2.0, ay + NODE_H);
        let (x2, y2) = (bx + NODE_W / 2.0, by);
        let dy = ((y2 - y1).abs() / 2.0).max(30.0);
        return svg_path(&[
            ('M', x1, y1),
            ('C', x1, y1 + dy),
            (' ', x2, y2 - dy),
            (' ', x2, y2),
        ]);
    }
    let (x1, y1) = (ax + NODE_W, ay + NODE_H / 2.0);
    let (x2, y2) = (bx, by + NODE_H / 2.0);
    let dx = ((x2 - x1).abs() / 2.0).max(36.0);
    svg_path(&[
        ('M', x1, y1),
        ('C', x1 + dx, y1),
        (' ', x2 - dx, y2),
        (' ', x2, y2),
    ])
}

/// Lay out a (possibly invalid) workflow, levels as columns. `graph` is the
/// core's graph when sound.
pub fn layout(wf: &Workflow, graph: Option<&Graph>) -> Layout {
    layout_oriented(wf, graph, false)
}

/// Lay out with levels as columns, or as rows when `vertical`.
pub fn layout_oriented(wf: &Workflow, graph: Option<&Graph>, vertical: bool) -> Layout {
    let n = wf.steps.len();
    let deps = resolve_dependencies(wf);
    let sound = graph.filter(|g| g.len() == n);
    let levels: Vec<Vec<usize>> = match sound {
        Some(g) => g.levels().map(<[usize]>::to_vec).collect(),
        None => tolerant_levels(&deps),
    };
    let levels = order_levels(levels, &deps);
    let widest = levels.iter().map(Vec::len).max().unwrap_or(0);
    let tallest = widest as f64;
    let mut xy = vec![(0f64, 0f64); n];
    let mut level_of = vec![0usize; n];
    for (l, nodes) in levels.iter().enumerate() {
        for (p, &i) in nodes.iter().enumerate() {
            // Centre each level across the widest one.
            let p = (tallest - nodes.len() as f64) / 2.0 + p as f64;
            xy[i] = if vertical {
                (
                    MARGIN + p * (NODE_W + COL_GAP),
                    MARGIN + l as f64 * (NODE_H + ROW_GAP),
                )
            } else {
                (
                    MARGIN + l as f64 * (NODE_W + GAP_X),
                    MARGIN + p * (NODE_H + GAP_Y),
                )
            };
            level_of[i] = l;
        }
    }
    let cyclic = if sound.is_some() {
        vec![false; n]
    } else {
        in_cycles(&deps)
    };
    let nodes = (0..n)
        .map(|i| {
            let s = &wf.steps[i];
            NodeBox {
                index: i,
                key: s.key.clone(),
                agent: s.agent.clone(),
                level: level_of[i],
                x: xy[i].0,
                y: xy[i].1,
                optional: s.optional,
                conditional: s.when.is_some(),
                kind: s.kind,
                for_each: s.for_each.is_some(),
                workflow: s.workflow.clone(),
            }
        })
        .collect();
    let mut edges = Vec::new();
    for (to, ds) in deps.iter().enumerate() {
        for &from in ds {
            edges.push(EdgePath {
                from,
                to,
                d: curve(
                    xy[from].0,
                    xy[from].1,
                    xy[to].0,
                    xy[to].1,
                    vertical,
                    level_of[to].saturating_sub(level_of[from]),
                ),
                cyclic: cyclic[from] && cyclic[to] && level_of[from] >= level_of[to],
            });
        }
    }
    let (width, height) = dims(levels.len(), widest, vertical);
    Layout {
        shape: shape_of(wf, sound.is_some(), vertical),
        nodes,
        edges,
        width,
        height,
        approximate: sound.is_none(),
        vertical,
        levels: levels.len(),
        widest,
    }
}

/// Steps that lie on some cycle (strongly connected with another step).
fn in_cycles(deps: &[Vec<usize>]) -> Vec<bool> {
    let n = deps.len();
    (0..n)
        .map(|i| deps[i].iter().any(|&d| path(deps, d, i).is_some()))
        .collect()
}

/// A path `from → … → to` following dependencies (each step depends on the next).
pub fn path(deps: &[Vec<usize>], from: usize, to: usize) -> Option<Vec<usize>> {
    let n = deps.len();
    let mut prev = vec![usize::MAX; n];
    let mut seen = vec![false; n];
    let mut queue = VecDeque::from([from]);
    seen[from] = true;
    while let Some(i) = queue.pop_front() {
        if i == to {
            let mut out = vec![to];
            let mut at = to;
            while at != from {
                at = prev[at];
                out.push(at);
            }
            out.reverse();
            return Some(out);
        }
        for &d in &deps[i] {
            if !seen[d] {
                seen[d] = true;
                prev[d] = i;
                queue.push_back(d);
            }
        }
    }
    None
}

/// Why `dependent` may not depend on `dependency`: the cycle it would close,
/// as keys in "depends on" order (`a → b → a`), or `None` when the edge is fine.
pub fn cycle_if_added(wf: &Workflow, dependent: &str, dependency: &str) -> Option<Vec<String>> {
    let index = |k: &str| wf.steps.iter().position(|s| s.key == k);
    let (to, from) = (index(dependent)?, index(dependency)?);
    if to == from {
        return Some(vec![dependent.to_owned(), dependent.to_owned()]);
    }
    let deps = resolve_dependencies(wf);
    // dependent → dependency → … → dependent
    let back = path(&deps, from, to)?;
    let mut keys = vec![dependent.to_owned()];
    keys.extend(back.into_iter().map(|i| wf.steps[i].key.clone()));
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ax_core::{Options, analyze};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn workflow(text: &str) -> (Workflow, Option<Graph>) {
        let a = analyze(text, &Options::default());
        (a.workflow().cloned().expect("workflow"), a.graph().cloned())
    }

    const DIAMOND: &str = "name: d\nsteps:\n  - {key: a, agent: x, prompt: p}\n  - {key: b, agent: x, prompt: p, dependencies: [a]}\n  - {key: c, agent: y, prompt: p, dependencies: [a]}\n  - {key: d, agent: x, prompt: p, dependencies: [b, c], optional: true}\n";

    #[test]
    fn levels_become_columns() {
        let (wf, g) = workflow(DIAMOND);
        let l = layout(&wf, g.as_ref());
        assert!(!l.approximate);
        let level = |k: &str| l.node(k).map(|n| n.level);
        assert_eq!(
            [level("a"), level("b"), level("c"), level("d")],
            [Some(0), Some(1), Some(1), Some(2)]
        );
        let (b, c) = (l.node("b").expect("b"), l.node("c").expect("c"));
        assert_eq!(b.x, c.x);
        assert!((b.y - c.y).abs() >= NODE_H);
        assert_eq!(l.edges.len(), 4);
        assert!(l.node("d").is_some_and(|n| n.optional));
        assert!(l.width > 3.0 * NODE_W && l.height >= 2.0 * NODE_H);
        // a and d sit in the middle of b and c.
        let mid = (b.y + c.y) / 2.0;
        assert!((l.node("a").expect("a").y - mid).abs() < 1.0);
    }

    #[test]
    fn vertical_layouts_put_levels_in_rows() {
        let (wf, g) = workflow(DIAMOND);
        let l = layout_oriented(&wf, g.as_ref(), true);
        let (a, b, c) = (
            l.node("a").expect("a"),
            l.node("b").expect("b"),
            l.node("c").expect("c"),
        );
        assert_eq!(b.y, c.y);
        assert!(b.y > a.y && (b.x - c.x).abs() >= NODE_W);
        assert_eq!((l.width, l.height), dims(3, 2, true));
        assert!(l.edges[0].d.starts_with(&format!(
            "M{:.1},{:.1}",
            a.x + NODE_W / 2.0,
            a.y + NODE_H
        )));
        // An edge that skips a level bulges to the side of the steps between.
        let (wf, g) = workflow(
            "name: c\nsteps:\n  - {key: a, agent: x, prompt: p}\n  - {key: b, agent: x, prompt: p, dependencies: [a]}\n  - {key: c, agent: x, prompt: p, dependencies: [a, b]}\n",
        );
        let l = layout_oriented(&wf, g.as_ref(), true);
        let long = l
            .edges
            .iter()
            .find(|e| e.to == 2 && e.from == 0)
            .expect("a → c");
        assert!(
            long.d
                .starts_with(&format!("M{:.1},", l.nodes[0].x + NODE_W)),
            "{}",
            long.d
        );
    }

    #[test]
    fn barycenter_sweeps_remove_avoidable_crossings() {
        // Two chains declared interleaved so that the natural order crosses.
        let deps = vec![vec![], vec![], vec![1], vec![0], vec![3], vec![2]];
        let levels = vec![vec![0, 1], vec![2, 3], vec![4, 5]];
        assert!(crossings(&levels, &deps) > 0);
        let ordered = order_levels(levels, &deps);
        assert_eq!(crossings(&ordered, &deps), 0, "{ordered:?}");
    }

    #[test]
    fn cycles_still_get_a_layout_with_flagged_edges() {
        let text = "name: c\nsteps:\n  - {key: a, agent: x, prompt: p, dependencies: [c]}\n  - {key: b, agent: x, prompt: p, dependencies: [a]}\n  - {key: c, agent: x, prompt: p, dependencies: [b]}\n  - {key: d, agent: x, prompt: p, dependencies: [a, nope]}\n";
        let (wf, g) = workflow(text);
        assert!(g.is_none());
        let l = layout(&wf, None);
        assert!(l.approximate);
        assert_eq!(l.nodes.len(), 4);
        assert_eq!(l.edges.len(), 4);
        assert_eq!(l.edges.iter().filter(|e| e.cyclic).count(), 1);
        assert!(l.edges.iter().all(|e| !e.d.contains("NaN")));
    }

    #[test]
    fn cycle_check_names_the_path() {
        let (wf, _) = workflow(DIAMOND);
        assert_eq!(
            cycle_if_added(&wf, "a", "d"),
            Some(vec!["a".into(), "d".into(), "b".into(), "a".into()])
        );
        assert_eq!(
            cycle_if_added(&wf, "b", "b"),
            Some(vec!["b".into(), "b".into()])
        );
        assert_eq!(cycle_if_added(&wf, "c", "b"), None);
        assert_eq!(cycle_if_added(&wf, "d", "a"), None);
    }

    #[test]
    fn a_hundred_steps_lay_out_quickly_and_without_overlap() {
        let mut text = String::from("name: big\nsteps:\n");
        for i in 0..100 {
            let deps = if i == 0 {
                String::new()
            } else {
                format!(", dependencies: [s{}, s{}]", i / 2, (i * 7) % i)
            };
            text.push_str(&format!(
                "  - {{key: s{i}, agent: a{}, prompt: p{deps}}}\n",
                i % 5
            ));
        }
        let (wf, g) = workflow(&text);
        let l = layout(&wf, g.as_ref());
        assert_eq!(l.nodes.len(), 100);
        let mut spots: Vec<(i64, i64)> = l.nodes.iter().map(|n| (n.x as i64, n.y as i64)).collect();
        spots.sort_unstable();
        spots.dedup();
        assert_eq!(spots.len(), 100);
    }
}
