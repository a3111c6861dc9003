//! The runtime's structure: the modules of `crates/iwarp/src` form layers, with no import
//! circle (a module may use the ones below it, never one that uses it back).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, with its module path (`a/b.rs` and `a/b/mod.rs` are `a::b`).
fn modules(dir: &Path, prefix: &str, out: &mut BTreeMap<String, PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for p in entries {
        let stem = p.file_stem().and_then(|s| s.to_str()).expect("utf-8 name").to_string();
        if p.is_dir() {
            modules(&p, &format!("{prefix}{stem}::"), out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let name = match stem.as_str() {
                "lib" => continue,
                "mod" => prefix.trim_end_matches("::").to_string(),
                _ => format!("{prefix}{stem}"),
            };
            out.insert(name, p);
        }
    }
}

/// The crate modules `text` names through `crate::` paths (code only, not comments), as the
/// longest known module path each one starts with, and its `super::` uses.
fn uses(text: &str, me: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let parent = me.rsplit_once("::").map(|(p, _)| p.to_string());
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            let mut best = None;
            let mut acc = String::new();
            for seg in path.split("::").filter(|s| !s.is_empty()) {
                if !acc.is_empty() {
                    acc.push_str("::");
                }
                acc.push_str(seg);
                if known.contains(&acc) {
                    best = Some(acc.clone());
                }
            }
            if let Some(b) = best {
                found.insert(b);
            }
        }
        if let (Some(p), true) = (&parent, code.contains("super::")) {
            found.insert(p.clone());
        }
    }
    // A module using its own submodules or itself is no edge between layers.
    found.retain(|m| m != me && !m.starts_with(&format!("{me}::")) && !me.starts_with(&format!("{m}::")));
    found
}

/// A circle in `graph`, if there is one (depth-first search with colours).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == m).expect("on the stack");
                    let mut c = stack[at..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    modules(&src, "", &mut files);
    let known: BTreeSet<String> = files.keys().cloned().collect();
    files.iter().map(|(m, p)| (m.clone(), uses(&std::fs::read_to_string(p).expect("read module"), m, &known))).collect()
}

#[test]
fn the_runtime_modules_have_no_import_circle() {
    let g = import_graph();
    assert!(g.len() > 5, "found the modules: {:?}", g.keys().collect::<Vec<_>>());
    if let Some(c) = find_cycle(&g) {
        panic!("import circle: {}\n(graph: {g:#?})", c.join(" -> "));
    }
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default();
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    let known: BTreeSet<String> = ["x".to_string(), "x::y".to_string(), "z".to_string()].into();
    let text = "use crate::x::y::Thing;\n/// [`crate::z`] in a comment\nfn f() { crate::z::g() }\n";
    assert_eq!(uses(text, "w", &known), ["x::y".to_string(), "z".to_string()].into());
}
