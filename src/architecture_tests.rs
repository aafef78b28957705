//! The layering of `docs/architecture.md`, enforced: every `crate::…` path in a module's files
//! (product code, unit tests and doc links alike) names a module of a strictly lower layer.
//! The table is read from the document, so the document cannot drift from the code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `module → layer`, from the ```layers block of docs/architecture.md.
fn layers() -> BTreeMap<String, usize> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/architecture.md")).expect("docs/architecture.md");
    let block = doc
        .split("```layers\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```layers block in docs/architecture.md");
    let mut out = BTreeMap::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let layer: usize = words.next().and_then(|w| w.parse().ok()).expect("a layer number first");
        for module in words {
            assert!(out.insert(module.to_string(), layer).is_none(), "{module} listed twice");
        }
    }
    out
}

/// The top-level modules of src/ with their files.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(Path::new(ROOT).join("src")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            let mut stack = vec![path];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(dir).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "rs") {
                        out.entry(name.clone()).or_default().push(p);
                    }
                }
            }
        } else if path.extension().is_some_and(|x| x == "rs")
            && !["lib", "main", "architecture_tests"].contains(&&*name)
        {
            out.entry(name).or_default().push(path);
        }
    }
    out
}

/// Every top-level module a source text names as `crate::NAME` or `crate::{NAME, …}`.
fn uses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                out.push(name);
            }
        } else {
            out.push(
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    out.retain(|n| !n.is_empty() && n.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
    out
}

#[test]
fn every_module_is_in_the_layer_table() {
    let layers = layers();
    let modules = modules();
    for m in modules.keys() {
        assert!(
            layers.contains_key(m),
            "src/{m} is not in docs/architecture.md's layer table"
        );
    }
    for m in layers.keys() {
        assert!(
            modules.contains_key(m),
            "docs/architecture.md lists {m}, which src/ does not have"
        );
    }
}

#[test]
fn dependencies_point_down_the_layers() {
    let layers = layers();
    let mut wrong = Vec::new();
    for (module, files) in modules() {
        let own = layers[&module];
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for used in uses(&text) {
                if used == module {
                    continue;
                }
                match layers.get(&used) {
                    Some(&l) if l < own => {}
                    _ => wrong.push(format!(
                        "{} (layer {own}) uses crate::{used} (layer {:?})",
                        file.strip_prefix(ROOT).unwrap().display(),
                        layers.get(&used)
                    )),
                }
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "upward or sideways dependencies:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scanner_sees_grouped_and_plain_paths() {
    assert_eq!(
        uses("use crate::{iptables::render as x, nft};\nlet y = crate::plan::build(); // crate::Foo"),
        ["iptables", "nft", "plan"]
    );
}

/// Every `§N.N` (and `§N.N item K`) cited in src/ names a heading (and a numbered item under
/// it) of docs/istio-compat.md, the project's own account of Istio compatibility.
#[test]
fn every_cited_section_resolves_in_the_compatibility_document() {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/istio-compat.md")).expect("docs/istio-compat.md");
    // Section → the item numbers listed under its heading.
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in doc.lines() {
        if line.starts_with('#') {
            current = line
                .split_whitespace()
                .find(|w| w.starts_with('§'))
                .map(|w| w[2..].to_string());
            if let Some(s) = &current {
                sections.entry(s.clone()).or_default();
            }
        } else if let Some(s) = &current {
            let item: String = line.chars().take_while(char::is_ascii_digit).collect();
            if !item.is_empty() && line[item.len()..].starts_with(['.', 'a', 'b', 'c']) {
                sections.get_mut(s).unwrap().push(item);
            }
        }
    }
    let mut missing = Vec::new();
    for files in modules().values() {
        for file in files {
            let text = std::fs::read_to_string(file).unwrap();
            for (i, _) in text.match_indices('§') {
                let rest = text[i + '§'.len_utf8()..].trim_start();
                let number: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
                let number = number.trim_end_matches('.').to_string();
                let shown = file.strip_prefix(ROOT).unwrap().display();
                let Some(items) = sections.get(&number) else {
                    missing.push(format!("{shown}: §{number}"));
                    continue;
                };
                let after = rest[number.len()..].trim_start();
                if let Some(item) = after.strip_prefix("item ").or_else(|| after.strip_prefix("step ")) {
                    let item: String = item.chars().take_while(char::is_ascii_digit).collect();
                    if !items.contains(&item) {
                        missing.push(format!("{shown}: §{number} item {item}"));
                    }
                }
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "cited but not in docs/istio-compat.md:\n{}",
        missing.join("\n")
    );
}
