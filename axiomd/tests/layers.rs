//! axiomd's modules stand on floors, in the flow kernel → sensor → agents → rules → actions →
//! sinks, with the bus (and who is calling, and systemd's notify) as the floor everyone stands on,
//! and the front ends, the configuration and the daemon's wiring above the flow. A top-level
//! module (a folder or a file under `src/`) may name through `crate::` only modules on floors
//! below its own. Read from the source (comments and test modules aside), so a new back-edge
//! fails here, naming the edge.
use std::collections::{BTreeMap, BTreeSet};

/// Top-level module → the top-level modules it names (`crate::x`).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let text: String = std::fs::read_to_string(&p)
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let deps = g.entry(top.clone()).or_default();
            // Test modules may reach anywhere.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    deps.insert(name);
                }
            }
            // `use crate::{a, b::c}` lists: the first name of each item.
            for (i, _) in code.match_indices("crate::{") {
                let list: String = code[i + 8..].chars().take_while(|c| *c != ';').collect();
                let (mut depth, mut item_start) = (0, true);
                let mut word = String::new();
                for c in list.chars() {
                    if c.is_alphanumeric() || c == '_' {
                        if item_start {
                            word.push(c);
                        }
                        continue;
                    }
                    if !word.is_empty() && word != top && word != "self" {
                        deps.insert(std::mem::take(&mut word));
                    }
                    word.clear();
                    if c.is_whitespace() {
                        continue;
                    }
                    item_start = false;
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        _ => {}
                    }
                    if depth < 0 {
                        break;
                    }
                }
            }
        }
    }
    g
}

/// Circles (strongly connected components of more than one module), Tarjan's algorithm.
fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        on: BTreeSet<&'a str>,
        stack: Vec<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.g.contains_key(w) {
                    continue;
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let l = self.low[v].min(self.low[w]);
                    self.low.insert(v, l);
                } else if self.on.contains(w) {
                    let l = self.low[v].min(self.index[w]);
                    self.low.insert(v, l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut c = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    c.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if c.len() > 1 {
                    c.sort();
                    self.out.push(c);
                }
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on: BTreeSet::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

/// Lowest first. A module may import only modules on lower floors.
const FLOORS: &[&[&str]] = &[
    // What every stage stands on: the event bus (and the store's tap on it), who is calling,
    // systemd's notify protocol.
    &["bus", "authz", "notify"],
    // What the kernel holds and tells: programs, maps, pins, /proc, cgroupfs; confinement
    // through them.
    &["kernel", "confine"],
    &["sensor"],
    &["agents"],
    &["rules"],
    &["actions"],
    // The sinks: they follow the bus.
    &["store", "telemetry"],
    // The front ends: every request answered once, then its D-Bus transport.
    &["api"],
    &["dbus"],
    // Composition: each stage's config section, then the wiring.
    &["config"],
    &["daemon", "bench"],
];

fn floor(m: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&m))
}

#[test]
fn every_module_has_a_floor_and_imports_only_below_it() {
    let g = graph();
    let mut wrong = Vec::new();
    for (m, deps) in &g {
        let Some(own) = floor(m) else {
            wrong.push(format!("{m} has no floor: add it to FLOORS"));
            continue;
        };
        for d in deps {
            match floor(d) {
                Some(f) if f < own => {}
                Some(_) => wrong.push(format!(
                    "{m} (floor {own}) imports {d}, which is not below it"
                )),
                None => wrong.push(format!("{m} imports {d}, which has no floor")),
            }
        }
    }
    assert!(wrong.is_empty(), "layering: {wrong:#?}");
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    let c = circles(&g);
    assert!(c.is_empty(), "import circles: {c:#?}");
}
