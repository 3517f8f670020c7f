//! The layer invariants of ARCHITECTURE.md, checked by reading `src/`: every `crate::…` path
//! in a layer names only the layers it may import. An import that runs back up (the store
//! reaching into ranking, telemetry into a domain type) fails here with its file and line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each layer of `src/` and the layers it may import, bottom to top. The crate root (`lib.rs`:
/// `FastMap`, `FastSet`) is open to all.
const LAYERS: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("config", &["domain"]),
    ("telemetry", &["config"]),
    ("store", &["domain", "config", "telemetry"]),
    ("learning", &["domain", "config", "telemetry"]),
    ("ranking", &["store", "domain", "config", "telemetry"]),
    (
        "ingest",
        &["learning", "store", "domain", "config", "telemetry"],
    ),
    ("demo", &["store", "domain", "config", "telemetry"]),
    (
        "actors",
        &[
            "ranking",
            "ingest",
            "learning",
            "store",
            "domain",
            "config",
            "telemetry",
        ],
    ),
    (
        "api",
        &[
            "actors",
            "ranking",
            "ingest",
            "learning",
            "store",
            "domain",
            "config",
            "telemetry",
        ],
    ),
    (
        "http",
        &[
            "api",
            "actors",
            "ranking",
            "ingest",
            "learning",
            "store",
            "domain",
            "config",
            "telemetry",
        ],
    ),
    (
        "grpc",
        &[
            "api",
            "actors",
            "ranking",
            "ingest",
            "learning",
            "store",
            "domain",
            "config",
            "telemetry",
        ],
    ),
    (
        "startup",
        &[
            "api",
            "grpc",
            "http",
            "actors",
            "ranking",
            "ingest",
            "learning",
            "demo",
            "store",
            "domain",
            "config",
            "telemetry",
        ],
    ),
    (
        "tools",
        &[
            "startup",
            "actors",
            "ranking",
            "ingest",
            "learning",
            "demo",
            "store",
            "domain",
            "config",
            "telemetry",
        ],
    ),
    (
        "cli",
        &[
            "tools",
            "startup",
            "api",
            "grpc",
            "http",
            "actors",
            "ranking",
            "ingest",
            "learning",
            "demo",
            "store",
            "domain",
            "config",
            "telemetry",
        ],
    ),
];

/// Items of the crate root any layer may use.
const ROOT_ITEMS: &[&str] = &["FastMap", "FastSet"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer a file of `src/` belongs to: its top folder, or its own name at the top.
fn layer_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_str()
        .unwrap();
    first.trim_end_matches(".rs").to_owned()
}

/// The first path segment of every `crate::` path in `code` (comments excluded), with its line.
fn crate_imports(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    // `use crate::{a, b::c}` spans lines: look at the text, not line by line.
    let text: String = code
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = text.as_str();
    let mut offset = 0;
    while let Some(i) = rest.find("crate::") {
        let at = offset + i;
        let after = &rest[i + "crate::".len()..];
        let line = text[..at].matches('\n').count() + 1;
        if let Some(group) = after.strip_prefix('{') {
            // The first segment of each top-level entry: `{a::{b, c}, d}` names a and d.
            let (mut depth, mut entry_start) = (0, true);
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if !name.is_empty() {
                            out.push((line, std::mem::take(&mut name)));
                        }
                        entry_start = true;
                    }
                    c if depth == 0 && entry_start && (c.is_alphanumeric() || c == '_') => {
                        name.push(c)
                    }
                    _ if depth == 0 && !name.is_empty() => {
                        out.push((line, std::mem::take(&mut name)));
                        entry_start = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                out.push((line, name));
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push((line, name));
        }
        offset = at + "crate::".len();
        rest = &text[offset..];
    }
    out
}

#[test]
fn every_layer_imports_only_the_layers_below_it() {
    let layers: Vec<&str> = LAYERS.iter().map(|(l, _)| *l).collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut seen = BTreeSet::new();
    let mut violations = Vec::new();
    for file in &files {
        let layer = layer_of(file);
        if layer == "lib" || layer == "main" {
            continue;
        }
        seen.insert(layer.clone());
        let allowed = LAYERS
            .iter()
            .find(|(l, _)| *l == layer)
            .unwrap_or_else(|| {
                panic!("{file:?}: layer {layer:?} is not in ARCHITECTURE.md's table (and LAYERS)")
            })
            .1;
        let code = std::fs::read_to_string(file).unwrap();
        for (line, target) in crate_imports(&code) {
            let ok = target == layer
                || allowed.contains(&target.as_str())
                || ROOT_ITEMS.contains(&target.as_str());
            if !ok {
                let what = if layers.contains(&target.as_str()) {
                    "a layer it may not import"
                } else {
                    "an unknown crate item"
                };
                violations.push(format!(
                    "{}:{line}: {layer} imports crate::{target} ({what})",
                    file.strip_prefix(src()).unwrap().display()
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    // The table names no layer that does not exist.
    for layer in layers {
        assert!(seen.contains(layer), "LAYERS names {layer:?}, not in src/");
    }
}

#[test]
fn the_import_reader_sees_grouped_and_nested_paths() {
    let code = "use crate::{store::{A, b::C}, domain, telemetry};\n// crate::http in a comment\n\
                let a = crate::ranking::pipeline::rank;";
    let got: Vec<(usize, String)> = crate_imports(code);
    assert_eq!(
        got,
        [
            (1, "store".to_owned()),
            (1, "domain".to_owned()),
            (1, "telemetry".to_owned()),
            (3, "ranking".to_owned())
        ]
    );
}

#[test]
fn architecture_md_lists_every_layer() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md exists");
    for (layer, _) in LAYERS {
        let name = if ["config", "startup", "cli"].contains(layer) {
            format!("`{layer}.rs`")
        } else {
            format!("`{layer}/`")
        };
        assert!(
            doc.contains(&name),
            "ARCHITECTURE.md does not describe {name}"
        );
    }
}
