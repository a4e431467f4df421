//! The dependency graph (petgraph): topological order with ties broken by
//! declaration order, execution levels, ancestors and descendants, cycles walked
//! step by step, the critical path, and exports as JSON, Mermaid and Graphviz DOT.
//!
//! Nodes are step indices (declaration order); an edge `d → s` means "s depends on d".

use crate::model::{StepType, Workflow};
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

#[derive(Debug, Clone)]
pub struct Graph {
    g: DiGraph<(), ()>,
    order: Vec<usize>,
    level_of: Vec<usize>,
    /// Steps sorted by (level, index), and where each level starts in it.
    by_level: Vec<usize>,
    level_starts: Vec<usize>,
    deps: Adjacency,
    dependents: Adjacency,
}

/// Sorted adjacency lists in one allocation (compressed sparse rows).
#[derive(Debug, Clone, Default)]
struct Adjacency {
    starts: Vec<usize>,
    targets: Vec<usize>,
}

impl Adjacency {
    fn build(n: usize, pairs: &[(usize, usize)]) -> Adjacency {
        let mut starts = vec![0usize; n + 1];
        for &(a, _) in pairs {
            starts[a + 1] += 1;
        }
        for i in 0..n {
            starts[i + 1] += starts[i];
        }
        let mut fill = starts.clone();
        let mut targets = vec![0usize; pairs.len()];
        for &(a, b) in pairs {
            targets[fill[a]] = b;
            fill[a] += 1;
        }
        for i in 0..n {
            crate::sort::sort_unstable(&mut targets[starts[i]..starts[i + 1]]);
        }
        Adjacency { starts, targets }
    }

    fn get(&self, i: usize) -> &[usize] {
        match (self.starts.get(i), self.starts.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.targets[a..b],
            _ => &[],
        }
    }
}

/// A cycle, as step indices in dependency order: `[a, b, c]` means a depends on b,
/// b on c and c on a.
pub type Cycle = Vec<usize>;

impl Graph {
    /// Build from `n` steps and `(dependency, dependent)` edges. Edges must not be
    /// self-loops; duplicates are ignored. Fails with every cycle found.
    pub fn build(
        n: usize,
        edges: impl IntoIterator<Item = (usize, usize)>,
    ) -> Result<Graph, Vec<Cycle>> {
        let mut edges: Vec<(usize, usize)> = edges
            .into_iter()
            .filter(|&(a, b)| a != b && a < n && b < n)
            .collect();
        crate::sort::sort_unstable(&mut edges);
        edges.dedup();
        let mut g = DiGraph::<(), ()>::with_capacity(n, edges.len());
        for _ in 0..n {
            g.add_node(());
        }
        for &(from, to) in &edges {
            g.add_edge(NodeIndex::new(from), NodeIndex::new(to), ());
        }
        let dependents = Adjacency::build(n, &edges);
        let reversed: Vec<(usize, usize)> = edges.iter().map(|&(a, b)| (b, a)).collect();
        let deps = Adjacency::build(n, &reversed);
        // Kahn's algorithm; the heap yields the lowest declaration index first.
        let mut indegree: Vec<usize> = (0..n).map(|i| deps.get(i).len()).collect();
        let mut heap: BinaryHeap<Reverse<usize>> =
            (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(n);
        let mut level_of = vec![0usize; n];
        while let Some(Reverse(i)) = heap.pop() {
            order.push(i);
            for &j in dependents.get(i) {
                level_of[j] = level_of[j].max(level_of[i] + 1);
                indegree[j] -= 1;
                if indegree[j] == 0 {
                    heap.push(Reverse(j));
                }
            }
        }
        if order.len() < n {
            return Err(find_cycles(&g));
        }
        let depth = level_of.iter().copied().max().map_or(0, |m| m + 1);
        let mut by_level: Vec<usize> = (0..n).collect();
        crate::sort::sort_unstable_by_key(&mut by_level, |&i| (level_of[i], i));
        let mut level_starts = vec![0usize; depth + 1];
        for &l in &level_of {
            level_starts[l + 1] += 1;
        }
        for l in 0..depth {
            level_starts[l + 1] += level_starts[l];
        }
        Ok(Graph {
            g,
            order,
            level_of,
            by_level,
            level_starts,
            deps,
            dependents,
        })
    }

    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// Topological order; among steps that are free at the same time, the one
    /// declared first comes first.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Levels: level 0 has no dependencies; a step sits one level below its deepest
    /// dependency (the minimal such assignment). Each level is in declaration order.
    pub fn levels(&self) -> impl ExactSizeIterator<Item = &[usize]> + '_ {
        (0..self.level_count()).map(|l| self.level(l))
    }

    pub fn level_count(&self) -> usize {
        self.level_starts.len().saturating_sub(1)
    }

    pub fn level(&self, l: usize) -> &[usize] {
        match (self.level_starts.get(l), self.level_starts.get(l + 1)) {
            (Some(&a), Some(&b)) => &self.by_level[a..b],
            _ => &[],
        }
    }

    pub fn level_of(&self, i: usize) -> usize {
        self.level_of[i]
    }

    /// Direct dependencies of step `i` (ascending).
    pub fn dependencies(&self, i: usize) -> &[usize] {
        self.deps.get(i)
    }

    /// Direct dependents of step `i` (ascending).
    pub fn dependents(&self, i: usize) -> &[usize] {
        self.dependents.get(i)
    }

    fn reach(&self, start: &[usize], dir: Direction) -> Vec<bool> {
        let mut seen = vec![false; self.len()];
        let mut queue: VecDeque<usize> = VecDeque::new();
        for &s in start {
            for n in self.g.neighbors_directed(NodeIndex::new(s), dir) {
                if !seen[n.index()] {
                    seen[n.index()] = true;
                    queue.push_back(n.index());
                }
            }
        }
        while let Some(i) = queue.pop_front() {
            for n in self.g.neighbors_directed(NodeIndex::new(i), dir) {
                if !seen[n.index()] {
                    seen[n.index()] = true;
                    queue.push_back(n.index());
                }
            }
        }
        seen
    }

    /// Every step that `i` transitively depends on (ascending).
    pub fn ancestors(&self, i: usize) -> Vec<usize> {
        let seen = self.reach(&[i], Direction::Incoming);
        (0..self.len()).filter(|&j| seen[j]).collect()
    }

    /// Every step that transitively depends on `i` (ascending).
    pub fn descendants(&self, i: usize) -> Vec<usize> {
        self.descendants_of(&[i])
    }

    /// Every step that transitively depends on any of `roots` (ascending, roots excluded
    /// unless they depend on each other).
    pub fn descendants_of(&self, roots: &[usize]) -> Vec<usize> {
        let seen = self.reach(roots, Direction::Outgoing);
        (0..self.len()).filter(|&j| seen[j]).collect()
    }

    /// Ancestor sets of all steps as bitsets, computed in one pass in topological
    /// order: `O(V·V/64 + E·V/64)`. Used when many reachability queries are needed.
    pub fn ancestor_sets(&self) -> Vec<BitSet> {
        let n = self.len();
        let mut sets = vec![BitSet::new(n); n];
        for &i in &self.order {
            for &d in self.deps.get(i) {
                let (src, dst) = if d < i {
                    let (a, b) = sets.split_at_mut(i);
                    (&a[d], &mut b[0])
                } else {
                    let (a, b) = sets.split_at_mut(d);
                    (&b[0], &mut a[i])
                };
                dst.union_with(src);
                dst.insert(d);
            }
        }
        sets
    }

    /// The longest path through the graph by `weight` (e.g. expected durations; 1 per
    /// step counts steps). Returns the path in execution order and its total weight.
    pub fn critical_path(&self, weight: impl Fn(usize) -> f64) -> (Vec<usize>, f64) {
        let n = self.len();
        if n == 0 {
            return (Vec::new(), 0.0);
        }
        let mut best = vec![0.0f64; n];
        let mut prev: Vec<Option<usize>> = vec![None; n];
        for &i in &self.order {
            let mut top: Option<(f64, usize)> = None;
            for &d in self.dependencies(i) {
                if top.is_none_or(|(w, _)| best[d] > w) {
                    top = Some((best[d], d));
                }
            }
            best[i] = weight(i) + top.map_or(0.0, |(w, _)| w);
            prev[i] = top.map(|(_, d)| d);
        }
        let mut end = self.order[0];
        for &i in &self.order {
            if best[i] > best[end] {
                end = i;
            }
        }
        let total = best[end];
        let mut path = vec![end];
        while let Some(p) = prev[*path.last().unwrap_or(&end)] {
            path.push(p);
        }
        path.reverse();
        (path, total)
    }

    /// `{nodes, edges, order, levels, criticalPath}` with step keys.
    pub fn to_json(&self, wf: &Workflow) -> serde_json::Value {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct NodeOut<'a> {
            key: &'a str,
            /// `approval` or `workflow`; absent for prompt steps.
            #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
            kind: Option<&'static str>,
            agent: &'a str,
            level: usize,
            dependencies: Vec<&'a str>,
            optional: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            when: Option<&'a str>,
            /// Runs once per item.
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            for_each: bool,
            /// The sub-workflow a `type: workflow` step runs.
            #[serde(skip_serializing_if = "Option::is_none")]
            workflow: Option<&'a str>,
        }
        let key = |i: usize| wf.steps[i].key.as_str();
        let nodes: Vec<NodeOut<'_>> = (0..self.len())
            .map(|i| {
                let s = &wf.steps[i];
                NodeOut {
                    key: key(i),
                    kind: (!s.kind.is_prompt()).then(|| s.kind.as_str()),
                    agent: &s.agent,
                    level: self.level_of[i],
                    dependencies: self.dependencies(i).iter().map(|&d| key(d)).collect(),
                    optional: s.optional,
                    when: s.when.as_deref(),
                    for_each: s.for_each.is_some(),
                    workflow: s.workflow.as_deref(),
                }
            })
            .collect();
        let edges: Vec<serde_json::Value> = self
            .g
            .edge_indices()
            .filter_map(|e| self.g.edge_endpoints(e))
            .map(|(a, b)| serde_json::json!({"from": key(a.index()), "to": key(b.index())}))
            .collect();
        let (critical, _) = self.critical_path(|_| 1.0);
        serde_json::json!({
            "name": wf.name,
            "nodes": nodes,
            "edges": edges,
            "order": self.order.iter().map(|&i| key(i)).collect::<Vec<_>>(),
            "levels": self.levels().map(|l| l.iter().map(|&i| key(i)).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "criticalPath": critical.into_iter().map(key).collect::<Vec<_>>(),
        })
    }

    /// A Mermaid flowchart (top-down; arrows point from a dependency to its dependent).
    pub fn to_mermaid(&self, wf: &Workflow) -> String {
        let mut out = String::from("flowchart TD\n");
        for (i, s) in wf.steps.iter().enumerate().take(self.len()) {
            let each = if s.for_each.is_some() { " ×each" } else { "" };
            let label = format!(
                "{}{each}<br/><i>{}</i>",
                mermaid_escape(&s.key),
                mermaid_escape(&step_subtitle(s))
            );
            // Approvals are hexagons, sub-workflows subroutines, conditional
            // steps diamonds.
            let shape = match s.kind {
                StepType::Approval => format!("{{{{\"{label}\"}}}}"),
                StepType::Workflow => format!("[[\"{label}\"]]"),
                StepType::Prompt if s.when.is_some() => format!("{{\"{label}\"}}"),
                StepType::Prompt => format!("[\"{label}\"]"),
            };
            out.push_str(&format!("    s{i}{shape}\n"));
        }
        for &i in &self.order {
            for &d in self.dependencies(i) {
                let arrow = if wf.steps[i].optional { "-.->" } else { "-->" };
                out.push_str(&format!("    s{d} {arrow} s{i}\n"));
            }
        }
        out
    }

    /// A Graphviz DOT digraph, ranked by level.
    pub fn to_dot(&self, wf: &Workflow) -> String {
        let mut out = format!(
            "digraph \"{}\" {{\n    rankdir=TB;\n    node [shape=box, style=rounded, fontname=\"Helvetica\"];\n",
            dot_escape(&wf.name)
        );
        for s in wf.steps.iter().take(self.len()) {
            let style = if s.optional {
                ", style=\"rounded,dashed\""
            } else {
                ""
            };
            let shape = match s.kind {
                StepType::Prompt => "",
                StepType::Approval => ", shape=hexagon",
                StepType::Workflow => ", shape=box3d",
            };
            let each = if s.for_each.is_some() { " ×each" } else { "" };
            out.push_str(&format!(
                "    \"{}\" [label=\"{}{each}\\n({})\"{style}{shape}];\n",
                dot_escape(&s.key),
                dot_escape(&s.key),
                dot_escape(&step_subtitle(s))
            ));
        }
        for level in self.levels() {
            if level.len() > 1 {
                let names: Vec<String> = level
                    .iter()
                    .map(|&i| format!("\"{}\"", dot_escape(&wf.steps[i].key)))
                    .collect();
                out.push_str(&format!("    {{ rank=same; {}; }}\n", names.join("; ")));
            }
        }
        for &i in &self.order {
            for &d in self.dependencies(i) {
                out.push_str(&format!(
                    "    \"{}\" -> \"{}\";\n",
                    dot_escape(&wf.steps[d].key),
                    dot_escape(&wf.steps[i].key)
                ));
            }
        }
        out.push_str("}\n");
        out
    }
}

/// What a node shows under its key: the agent, or what else the step does.
fn step_subtitle(s: &crate::model::Step) -> String {
    match s.kind {
        StepType::Prompt => s.agent.clone(),
        StepType::Approval => "approval".to_owned(),
        StepType::Workflow => format!("workflow {}", s.workflow.as_deref().unwrap_or("")),
    }
}

fn mermaid_escape(s: &str) -> String {
    s.replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Find one cycle per strongly connected component, walked in dependency order and
/// starting at the component's first-declared step.
fn find_cycles(g: &DiGraph<(), ()>) -> Vec<Cycle> {
    let mut cycles = Vec::new();
    let mut sccs = petgraph::algo::tarjan_scc(g);
    for scc in &mut sccs {
        crate::sort::sort_unstable(scc);
    }
    crate::sort::sort_by_key(&mut sccs, |c| c.first().map(|n| n.index()));
    for scc in sccs {
        if scc.len() < 2 {
            continue;
        }
        let n = g.node_count();
        let mut in_scc = vec![false; n];
        for v in &scc {
            in_scc[v.index()] = true;
        }
        let start = scc[0].index();
        // BFS along "depends on" (incoming) edges back to `start`: the shortest cycle
        // through it.
        let mut parent: Vec<Option<usize>> = vec![None; n];
        let mut seen = vec![false; n];
        let mut queue = VecDeque::from([start]);
        seen[start] = true;
        let mut last = None;
        'bfs: while let Some(v) = queue.pop_front() {
            let mut deps: Vec<usize> = g
                .neighbors_directed(NodeIndex::new(v), Direction::Incoming)
                .map(NodeIndex::index)
                .filter(|&d| in_scc[d])
                .collect();
            crate::sort::sort_unstable(&mut deps);
            for d in deps {
                if d == start {
                    last = Some(v);
                    break 'bfs;
                }
                if !seen[d] {
                    seen[d] = true;
                    parent[d] = Some(v);
                    queue.push_back(d);
                }
            }
        }
        if let Some(mut v) = last {
            let mut path = vec![v];
            while let Some(p) = parent[v] {
                path.push(p);
                v = p;
            }
            path.reverse();
            cycles.push(path);
        }
    }
    cycles
}

/// A fixed-size set of step indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    pub fn new(n: usize) -> BitSet {
        BitSet {
            words: vec![0; n.div_ceil(64)],
        }
    }
    pub fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }
    pub fn contains(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    pub fn union_with(&mut self, other: &BitSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= *b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn order_levels_and_ties() {
        // 0 → 2, 1 → 2, 2 → 3; 4 independent.
        let g = Graph::build(5, [(0, 2), (1, 2), (2, 3)]).expect("acyclic");
        assert_eq!(g.order(), &[0, 1, 2, 3, 4]);
        let levels: Vec<&[usize]> = g.levels().collect();
        assert_eq!(levels, [&[0, 1, 4][..], &[2], &[3]]);
        assert_eq!(g.ancestors(3), vec![0, 1, 2]);
        assert_eq!(g.descendants(1), vec![2, 3]);
        let sets = g.ancestor_sets();
        assert!(sets[3].contains(0) && sets[3].contains(2) && !sets[3].contains(4));
    }

    #[test]
    fn ties_follow_declaration_not_edge_order() {
        // 3 has no deps and is declared last; 1 depends on 2.
        let g = Graph::build(4, [(2, 1), (0, 3)]).expect("acyclic");
        assert_eq!(g.order(), &[0, 2, 1, 3]);
    }

    #[test]
    fn cycles_are_walked() {
        // 0 depends on 2, 1 depends on 0, 2 depends on 1: 0 → 2 → 1 → 0.
        let err = Graph::build(4, [(2, 0), (0, 1), (1, 2), (3, 3)]).expect_err("cycle");
        assert_eq!(err, vec![vec![0, 2, 1]]);
    }

    #[test]
    fn step_types_have_their_own_shapes() {
        let text = "name: x\nsteps:\n  - {key: a, agent: w, prompt: p, forEach: [1]}\n  - {key: ok, type: approval, prompt: p, dependencies: [a]}\n  - {key: sub, type: workflow, workflow: c.yaml, dependencies: [ok]}\n";
        let plan = crate::Plan::from_text(text, None).expect("valid");
        let json = plan.to_json();
        assert_eq!(json["nodes"][0]["forEach"], true);
        assert_eq!(json["nodes"][0].get("type"), None);
        assert_eq!(json["nodes"][1]["type"], "approval");
        assert_eq!(json["nodes"][2]["type"], "workflow");
        assert_eq!(json["nodes"][2]["workflow"], "c.yaml");
        let m = plan.to_mermaid();
        assert!(m.contains("s0[\"a ×each<br/><i>w</i>\"]"), "{m}");
        assert!(m.contains("s1{{\"ok<br/><i>approval</i>\"}}"), "{m}");
        assert!(
            m.contains("s2[[\"sub<br/><i>workflow c.yaml</i>\"]]"),
            "{m}"
        );
        let d = plan.to_dot();
        assert!(
            d.contains("\"ok\" [label=\"ok\\n(approval)\", shape=hexagon];"),
            "{d}"
        );
        assert!(d.contains("shape=box3d"), "{d}");
    }

    #[test]
    fn critical_path_by_weight() {
        let g = Graph::build(4, [(0, 1), (1, 3), (2, 3)]).expect("acyclic");
        let (path, total) = g.critical_path(|i| if i == 2 { 10.0 } else { 1.0 });
        assert_eq!(path, vec![2, 3]);
        assert_eq!(total, 11.0);
        let (path, total) = g.critical_path(|_| 1.0);
        assert_eq!((path, total), (vec![0, 1, 3], 3.0));
    }
}
