//! The module graph of `src/` has no cycles, and `lib.rs` tells the truth about it.
//!
//! Every `crate::…` and `super::…` path in a module's non-test code is an edge from that
//! module to the deepest module the path names. An edge between two modules counts between
//! their ancestors just below the closest common one (siblings): `model::loader ->
//! reasoning::think` is `model -> reasoning`, `budget::plan -> budget::report` stays as it
//! is, and a child using its parent (or the reverse) is not a sibling edge. Checked:
//! - among the children of every module, the sibling edges have no cycle;
//! - at the top, every edge goes from a module to one after it in `lib.rs`'s "Layers, top to
//!   bottom:" list, which names every module `lib.rs` declares.
//!
//! Test code (`tests.rs` files and `#[cfg(test)]` blocks) is left out: tests may reach
//! anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

/// Every file module under `src/` (the binaries' `main.rs` and `bin/` excluded).
fn modules(root: &Path) -> BTreeMap<ModPath, PathBuf> {
    fn walk(dir: &Path, prefix: &ModPath, out: &mut BTreeMap<ModPath, PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if prefix.is_empty() && name == "bin" {
                    continue;
                }
                let mut m = prefix.clone();
                m.push(name);
                walk(&p, &m, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let mut m = prefix.clone();
                match name.as_str() {
                    "mod" => {}
                    "lib" | "main" if prefix.is_empty() => {
                        if name == "main" {
                            continue;
                        }
                    }
                    "tests" => continue,
                    _ => m.push(name),
                }
                out.insert(m, p);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, &Vec::new(), &mut out);
    out
}

/// The source without comments, string literals and `#[cfg(test)]` items.
fn code_of(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = src[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i..].starts_with(b"#[cfg(test)]") {
            // Skip the attribute and the item after it (to its `;` or matching `}`).
            i += "#[cfg(test)]".len();
            let mut depth = 0;
            while i < b.len() {
                match b[i] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    b';' if depth == 0 => {
                        i += 1;
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e` (the text after a path root).
fn expand(text: &str) -> Vec<String> {
    let t = text.trim_start();
    let mut head = String::new();
    let mut chars = t.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            head.push(c);
            chars.next();
        } else if c == '{' && head.ends_with("::") {
            // Split the group at top-level commas.
            let mut depth = 0;
            let mut start = i + 1;
            let mut parts = Vec::new();
            for (j, c) in t[i..].char_indices() {
                let j = i + j;
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            parts.push(&t[start..j]);
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        parts.push(&t[start..j]);
                        start = j + 1;
                    }
                    _ => {}
                }
            }
            return parts
                .into_iter()
                .filter(|p| !p.trim().is_empty())
                .flat_map(|p| expand(p).into_iter().map(|x| format!("{head}{x}")))
                .collect();
        } else {
            break;
        }
    }
    vec![head.trim_end_matches(':').to_string()]
}

/// The modules `m`'s code names, with the line of code that names each.
fn references(
    m: &ModPath,
    code: &str,
    known: &BTreeMap<ModPath, PathBuf>,
) -> Vec<(ModPath, String)> {
    let mut out = Vec::new();
    for line in code.lines() {
        for (root, base) in [("crate::", Vec::new()), ("super::", m.clone())] {
            let mut rest = line;
            while let Some(at) = rest.find(root) {
                let before = rest[..at].chars().last();
                let after = &rest[at + root.len()..];
                rest = after;
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                for path in expand(after) {
                    let mut target = base.clone();
                    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
                    if root == "super::" {
                        // `super` of module `a::b` (in `a/b.rs` or `a/b/mod.rs`) is `a`.
                        target.pop();
                        while segs.first() == Some(&"super") {
                            segs.remove(0);
                            target.pop();
                        }
                    }
                    // The deepest known module the path names.
                    let mut best = target.clone();
                    for s in segs {
                        let mut next = best.clone();
                        next.push(s.to_string());
                        if known.contains_key(&next) {
                            best = next;
                        } else {
                            break;
                        }
                    }
                    out.push((best, line.trim().to_string()));
                }
            }
        }
    }
    out
}

/// `(a, b)` lifted to the children of their closest common ancestor, if distinct siblings.
fn siblings(a: &ModPath, b: &ModPath) -> Option<(ModPath, ModPath)> {
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    if common >= a.len() || common >= b.len() {
        return None; // one contains the other
    }
    Some((a[..=common].to_vec(), b[..=common].to_vec()))
}

type Edges = BTreeMap<(ModPath, ModPath), Vec<String>>;

fn graph() -> (Edges, Vec<String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&root);
    let mut edges: Edges = BTreeMap::new();
    for (m, file) in &known {
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for (target, line) in references(m, &code, &known) {
            if let Some(e) = siblings(m, &target) {
                edges.entry(e).or_default().push(format!(
                    "{}: {line}",
                    file.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap();
    let doc: String = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join(" ");
    let list = doc
        .split("Layers, top to bottom:")
        .nth(1)
        .expect("lib.rs states its layers")
        .split('.')
        .next()
        .unwrap();
    let order: Vec<String> = list.split(',').map(|m| m.trim().to_string()).collect();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect();
    assert_eq!(
        declared,
        order.iter().cloned().collect(),
        "lib.rs's layer list names exactly its modules"
    );
    (edges, order)
}

fn name(m: &ModPath) -> String {
    m.join("::")
}

#[test]
fn sibling_modules_have_no_cycles() {
    let (edges, _) = graph();
    let mut adj: BTreeMap<&ModPath, BTreeSet<&ModPath>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        adj.entry(a).or_default().insert(b);
    }
    // A cycle exists iff some edge a -> b has a path back b ->* a.
    let reaches = |from: &ModPath, to: &ModPath| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from];
        while let Some(n) = stack.pop() {
            if n == to {
                return true;
            }
            if seen.insert(n) {
                stack.extend(adj.get(n).into_iter().flatten().copied());
            }
        }
        false
    };
    let mut cycles = Vec::new();
    for ((a, b), why) in &edges {
        if reaches(b, a) {
            cycles.push(format!("{} -> {} ({})", name(a), name(b), why[0]));
        }
    }
    assert!(
        cycles.is_empty(),
        "module cycles (each edge below lies on one):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn top_level_modules_depend_only_on_later_ones() {
    let (edges, order) = graph();
    assert!(order.len() > 5, "lib.rs declares its modules: {order:?}");
    let rank = |m: &ModPath| order.iter().position(|o| o == &m[0]);
    let mut bad = Vec::new();
    for ((a, b), why) in &edges {
        if a.len() == 1 && b.len() == 1 {
            let (ra, rb) = (rank(a), rank(b));
            assert!(ra.is_some() && rb.is_some(), "{a:?} or {b:?} not in lib.rs");
            if ra >= rb {
                bad.push(format!("{} -> {} ({})", name(a), name(b), why[0]));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "edges against lib.rs's declared order {order:?}:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_scanner_sees_grouped_and_nested_paths() {
    assert_eq!(
        expand("a::{b, c::{d, e as f}}, x"),
        vec!["a::b", "a::c::d", "a::c::e"]
    );
    let code = code_of("use crate::x; // crate::y\n#[cfg(test)]\nmod tests { use crate::z; }\n");
    assert!(code.contains("crate::x") && !code.contains("crate::y") && !code.contains("crate::z"));
}

/// `cargo test --test layering -- --ignored --nocapture` prints the sibling edges.
#[test]
#[ignore = "prints the module graph"]
fn print_graph() {
    let (edges, order) = graph();
    println!("lib.rs order: {order:?}");
    for ((a, b), why) in &edges {
        println!("{} -> {}  ({} uses)", name(a), name(b), why.len());
    }
}
