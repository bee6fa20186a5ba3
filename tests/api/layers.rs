//! The house's layers, checked from the source: each folder of `src/`
//! imports only from the layers below it, as `src/lib.rs`'s `# Layout` and
//! `docs/architecture.md` draw them.
//!
//! The rules are read from the `crate::` paths in code (comments and unit
//! tests left out), so moving a module into the wrong layer, or reaching up
//! from the core into HTTP, fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What each layer of `src/` may import, besides itself. The top
/// (`lib.rs`, `main.rs`, `server/`) assembles everything and is not listed.
const LAYERS: &[(&str, &[&str])] = &[
    ("core", &[]),
    ("config", &["core"]),
    ("store", &["core", "config"]),
    ("net", &["core", "config"]),
    ("http", &["core", "config", "net"]),
    ("transport", &["core", "config", "net", "http"]),
    ("classroom", &["core", "config", "net", "http"]),
];

/// Every `.rs` file below `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level modules a file's code names as `crate::<module>`, leaving
/// out comments and everything from `#[cfg(test)]` on.
fn imports(code: &str) -> BTreeSet<String> {
    let code = code.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or_default();
        for (at, _) in line.match_indices("crate::") {
            let name: String = line[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// The layer a file of `src/` belongs to: its folder, or its own name for
/// a file at the top.
fn layer_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("a file below src/");
    let first = relative.components().next().expect("a path");
    let first = first.as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

#[test]
fn every_layer_imports_only_from_the_layers_below_it() {
    // Arrange
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    let mut checked = 0;
    // Act
    for file in sources(&src) {
        let layer = layer_of(&src, &file);
        let Some((_, allowed)) = LAYERS.iter().find(|(name, _)| *name == layer) else {
            continue;
        };
        checked += 1;
        let code = std::fs::read_to_string(&file).expect("a readable source file");
        for module in imports(&code) {
            if module != layer && !allowed.contains(&module.as_str()) {
                broken.push(format!(
                    "{} ({layer}) imports crate::{module}",
                    file.strip_prefix(&src).unwrap_or(&file).display()
                ));
            }
        }
    }
    // Assert
    assert!(
        checked > 30,
        "only {checked} files were checked: is src/ laid out in layers?"
    );
    assert!(
        broken.is_empty(),
        "imports against the layers:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_layer_check_sees_an_upward_import() {
    let code = "use crate::core::log::Seq;\n// crate::http in a comment\nfn f() { crate::http::state::x(); }\n#[cfg(test)]\nuse crate::server;";
    assert_eq!(
        imports(code),
        BTreeSet::from(["core".to_owned(), "http".to_owned()])
    );
}
