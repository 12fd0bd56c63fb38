//! The import-circle check of `cargo xtask lint`: within each crate, imports between top-level
//! modules point one way. Two modules that import each other (directly or round a longer circle)
//! cannot be understood, tested or moved apart; the check names every such circle and the line
//! of each import that closes it.

mod collect;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::Path,
};

use anyhow::bail;

/// The crates checked, by their root file. claw-agent's `src/bin/` is not part of its library.
const CRATES: &[(&str, &str)] = &[
    ("claw-agent", "claw-agent/src/lib.rs"),
    ("claw-ebpf", "claw-ebpf/src/main.rs"),
    ("xtask", "xtask/src/main.rs"),
];

/// Prints one summary line per crate; fails naming each circle.
pub fn check(workspace: &Path) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for (name, root) in CRATES {
        let graph = Graph::read(&workspace.join(root), workspace)?;
        let circles = graph.circles();
        eprintln!("imports: {name}: {}", graph.summary(&circles));
        failures.extend(circles.iter().map(|circle| graph.explain(name, circle)));
    }
    if !failures.is_empty() {
        bail!(
            "{}\n  to fix, make imports point one way: move what both sides use down into the \
             module they both may import, or into a new leaf module that imports neither",
            failures.join("\n")
        );
    }
    Ok(())
}

/// A crate's top-level modules and the imports between them.
pub struct Graph {
    pub modules: BTreeSet<String>,
    /// (importer, imported) -> the first place the import happens, `path:line`.
    pub edges: BTreeMap<(String, String), String>,
}

impl Graph {
    /// The graph of the crate rooted at `root_file`, sites shown relative to `base`.
    pub fn read(root_file: &Path, base: &Path) -> anyhow::Result<Graph> {
        let krate = collect::read(root_file, base)?;
        let mut edges = BTreeMap::new();
        for reference in &krate.references {
            if let Some(to) = top_module(&krate, &reference.target) {
                if *to != reference.from {
                    edges
                        .entry((reference.from.clone(), to.clone()))
                        .or_insert_with(|| reference.site.clone());
                }
            }
        }
        Ok(Graph {
            modules: krate.modules,
            edges,
        })
    }

    /// The strongly connected components of more than one module (Tarjan), each sorted.
    pub fn circles(&self) -> Vec<Vec<String>> {
        let mut tarjan = Tarjan {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            found: Vec::new(),
        };
        for module in &self.modules {
            if !tarjan.index.contains_key(module.as_str()) {
                tarjan.visit(module);
            }
        }
        let mut circles: Vec<Vec<String>> = tarjan
            .found
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut c: Vec<String> = c.into_iter().map(str::to_owned).collect();
                c.sort();
                c
            })
            .collect();
        circles.sort();
        circles
    }

    pub fn summary(&self, circles: &[Vec<String>]) -> String {
        let (modules, edges) = (self.modules.len(), self.edges.len());
        let circles = match circles {
            [] => "no circles".to_owned(),
            [one] => format!("1 circle ({} modules)", one.len()),
            many => format!(
                "{} circles ({} modules)",
                many.len(),
                many.iter().map(Vec::len).sum::<usize>()
            ),
        };
        format!("{modules} top-level modules, {edges} edges, {circles}")
    }

    /// The circle's modules, one way round it, and every import inside it with its site.
    pub fn explain(&self, krate: &str, circle: &[String]) -> String {
        let inside: Vec<_> = self
            .edges
            .iter()
            .filter(|((from, to), _)| circle.contains(from) && circle.contains(to))
            .collect();
        let mut text = format!(
            "{krate}: import circle of {} modules: {}\n  for example {}",
            circle.len(),
            circle.join(", "),
            self.round(circle).join(" -> ")
        );
        for ((from, to), site) in inside {
            text += &format!("\n  {from} -> {to}  {site}");
        }
        text
    }

    /// A shortest way from the circle's first module back to itself.
    fn round(&self, circle: &[String]) -> Vec<String> {
        let start = &circle[0];
        let mut came_from: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(at) = queue.pop_front() {
            for (_, to) in self.edges.keys().filter(|(from, _)| from == at) {
                if !circle.contains(to) {
                    continue;
                }
                if to == start {
                    let mut way = vec![start.clone(), at.clone()];
                    let mut node = at;
                    while let Some(prev) = came_from.get(node) {
                        way.push((*prev).clone());
                        node = prev;
                    }
                    way.reverse();
                    return way;
                }
                if !came_from.contains_key(to) {
                    came_from.insert(to, at);
                    queue.push_back(to);
                }
            }
        }
        circle.to_vec()
    }
}

/// The top-level module a path from the crate root points into, if any: its first segment, or,
/// for a name the root imports (`pub use a::Item`), where that import points.
fn top_module<'a>(krate: &'a collect::Crate, target: &'a [String]) -> Option<&'a String> {
    let mut first = target.first()?;
    // A chain of root imports is short; the bound stops a cycle of them.
    for _ in 0..8 {
        if krate.modules.contains(first) {
            return Some(first);
        }
        first = krate.root_imports.get(first)?.first()?;
    }
    None
}

struct Tarjan<'g> {
    graph: &'g Graph,
    index: BTreeMap<&'g str, usize>,
    low: BTreeMap<&'g str, usize>,
    stack: Vec<&'g str>,
    on_stack: BTreeSet<&'g str>,
    found: Vec<Vec<&'g str>>,
}

impl<'g> Tarjan<'g> {
    fn visit(&mut self, module: &'g str) {
        let n = self.index.len();
        self.index.insert(module, n);
        self.low.insert(module, n);
        self.stack.push(module);
        self.on_stack.insert(module);
        let graph = self.graph;
        for (_, to) in graph.edges.keys().filter(|(from, _)| from == module) {
            let to = to.as_str();
            if !self.index.contains_key(to) {
                self.visit(to);
                let low = self.low[module].min(self.low[to]);
                self.low.insert(module, low);
            } else if self.on_stack.contains(to) {
                let low = self.low[module].min(self.index[to]);
                self.low.insert(module, low);
            }
        }
        if self.low[module] == self.index[module] {
            let mut component = Vec::new();
            while let Some(top) = self.stack.pop() {
                self.on_stack.remove(top);
                component.push(top);
                if top == module {
                    break;
                }
            }
            self.found.push(component);
        }
    }
}
