//! axiomd's modules stand on floors, in the flow kernel → sensor → agents → rules → actions →
//! sinks, with the bus (and who is calling, and systemd's notify) as the floor everyone stands on,
//! and the front ends, the configuration and the daemon's wiring above the flow. A top-level
//! module (a folder or a file under `src/`) may name through `crate::` only modules on floors
//! below its own. Read from the source (comments and test modules aside), so a new back-edge
//! fails here, naming the edge.
use std::collections::{BTreeMap, BTreeSet};

/// Every source file under `src/` (but `lib.rs`, `main.rs` and test files) as (its top-level
/// module, its code): comments and test modules left out (tests may reach anywhere).
fn sources() -> Vec<(String, String)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") || p.ends_with("tests.rs") {
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
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            out.push((top, code));
        }
    }
    out
}

/// Top-level module → the top-level modules it names (`crate::x`).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (top, code) in sources() {
        {
            let code = code.as_str();
            let deps = g.entry(top.clone()).or_default();
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
    &["bus", "authz", "notify", "supervise"],
    // What the kernel holds and tells: programs, maps, pins, /proc, cgroupfs; confinement
    // through them.
    &["kernel"],
    // Confinement: profiles, Landlock, limits, and the policy it writes into the kernel's maps.
    &["confine"],
    &["sensor"],
    &["agents"],
    // What the agents' terminals show: painted by the rules, read by the actions.
    &["screens"],
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

/// The identifiers a piece of code is made of, in order.
fn words(code: &str) -> Vec<&str> {
    code.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect()
}

/// Top-level module → the types it defines (`struct`, `enum`, `trait`, `type`).
fn types() -> BTreeMap<String, BTreeSet<String>> {
    let mut t: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (top, code) in sources() {
        let w = words(&code);
        for pair in w.windows(2) {
            if matches!(pair[0], "struct" | "enum" | "trait" | "type") {
                t.entry(top.clone())
                    .or_default()
                    .insert(pair[1].to_string());
            }
        }
    }
    t
}

/// The type a lock guards, from the text after `Mutex<` / `RwLock<`: its first type name
/// past wrappers (`Box<dyn X>` is X) and paths (`crate::m::X` is X).
fn guarded(after: &str) -> Option<&str> {
    words(after)
        .into_iter()
        .find(|w| {
            !matches!(
                *w,
                "Box" | "dyn" | "Arc" | "Option" | "crate" | "self" | "super"
            )
        })
        .filter(|w| w.starts_with(|c: char| c.is_ascii_uppercase()))
}

/// A stage's state is its own room: only the module that defines a type puts it behind a lock
/// (a field `Arc<Mutex<Registry>>` outside `agents` let the API and the actions lock the
/// registry themselves, and poll it). Other rooms reach it through the owner's handle
/// (`agents::Agents`, `kernel::Sensor`, `screens::Screens`, `rules::Claims`).
#[test]
fn a_stage_s_state_is_locked_only_by_the_stage_that_owns_it() {
    let types = types();
    let owner = |t: &str| -> BTreeSet<&str> {
        types
            .iter()
            .filter(|(_, ts)| ts.contains(t))
            .map(|(m, _)| m.as_str())
            .collect()
    };
    let mut wrong = BTreeSet::new();
    for (top, code) in sources() {
        for lock in ["Mutex<", "RwLock<"] {
            for (i, _) in code.match_indices(lock) {
                let Some(t) = guarded(&code[i + lock.len()..]) else {
                    continue;
                };
                let owners = owner(t);
                if !owners.is_empty() && !owners.contains(top.as_str()) {
                    wrong.insert(format!(
                        "{top} puts {t} (the state of {owners:?}) behind a lock of its own: \
                         reach it through its owner's handle"
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "state reached from outside its room: {wrong:#?}"
    );
}

/// Each function's name and body (to its matching brace), in `code`.
fn functions(code: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("fn ") {
        // `fn` as a word, not the end of another identifier.
        if code[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let name = words(&code[i + 3..]).first().copied().unwrap_or("");
        let Some(open) = code[i..].find(['{', ';']).map(|o| i + o) else {
            continue;
        };
        if &code[open..=open] == ";" {
            continue;
        }
        let mut depth = 0;
        for (j, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push((name, &code[open..open + j + 1]));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// A stage does not poll another stage's state from a floor above it: a function that sleeps
/// in a loop (`thread::sleep`, tokio's `sleep`) names no value of a type another module keeps
/// behind a lock. Such a wait belongs to the owner, woken by its notification (the actions
/// waited 50 ms at a time on the rules engine's lock for an agent's screen to go quiet).
#[test]
fn no_stage_polls_another_s_locked_state() {
    let sources = sources();
    // Module → the types it defines that hold a lock (a room with state shared across threads).
    let mut locked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (top, code) in &sources {
        for (i, _) in code.match_indices("struct ") {
            let name = words(&code[i + 7..]).first().copied().unwrap_or("");
            let body: String = code[i..].chars().take_while(|c| *c != '}').collect();
            if ["Mutex<", "RwLock<", "Condvar"]
                .iter()
                .any(|l| body.contains(l))
            {
                locked
                    .entry(top.clone())
                    .or_default()
                    .insert(name.to_string());
            }
        }
    }
    // And the types put behind a lock anywhere (`Arc<Mutex<Engine>>`): their owner's.
    let types = types();
    for (_, code) in &sources {
        for lock in ["Mutex<", "RwLock<"] {
            for (i, _) in code.match_indices(lock) {
                let Some(t) = guarded(&code[i + lock.len()..]) else {
                    continue;
                };
                for (m, ts) in &types {
                    if ts.contains(t) {
                        locked.entry(m.clone()).or_default().insert(t.to_string());
                    }
                }
            }
        }
    }
    // Names each module gives values of another module's locked types (fields, parameters,
    // bindings, in any of its files): `name: Arc<T>`, `name: &T`, `name: Mutex<T>`.
    let mut handles: BTreeMap<&str, BTreeMap<&str, (&str, &str)>> = BTreeMap::new();
    for (top, code) in &sources {
        for (i, _) in code.match_indices(": ") {
            let before = words(&code[..i]).last().copied().unwrap_or("");
            let ty = words(&code[i + 2..])
                .into_iter()
                .find(|t| {
                    !matches!(
                        *t,
                        "Arc" | "Mutex" | "RwLock" | "Box" | "crate" | "Option" | "mut" | "dyn"
                    )
                })
                .unwrap_or("");
            for (m, ts) in &locked {
                if m != top && ts.contains(ty) {
                    handles
                        .entry(top.as_str())
                        .or_default()
                        .insert(before, (m.as_str(), ty));
                }
            }
        }
    }
    let mut wrong = BTreeSet::new();
    for (top, code) in &sources {
        let Some(handles) = handles.get(top.as_str()) else {
            continue;
        };
        for (name, body) in functions(code) {
            let sleeps =
                body.contains("sleep(") && (body.contains("loop {") || body.contains("while "));
            if !sleeps {
                continue;
            }
            let used = words(body);
            for (h, (m, ty)) in handles {
                if used.contains(h) {
                    wrong.insert(format!(
                        "{top}::{name} sleeps in a loop and reads `{h}` ({m}::{ty}): \
                         wait on {m}'s notification instead"
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "polling another stage's state: {wrong:#?}"
    );
}
