use std::path::Path;

use super::Graph;

/// Writes `files` (path, text) under a scratch directory and reads the crate rooted at src/lib.rs.
fn graph(files: &[(&str, &str)]) -> Graph {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    Graph::read(&dir.path().join("src/lib.rs"), dir.path()).unwrap()
}

fn edges(graph: &Graph) -> Vec<(&str, &str, &str)> {
    graph
        .edges
        .iter()
        .map(|((from, to), site)| (from.as_str(), to.as_str(), site.as_str()))
        .collect()
}

#[test]
fn circle_names_both_edges() {
    let graph = graph(&[
        ("src/lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("src/a.rs", "use crate::b::g;\npub fn f() {}\n"),
        (
            "src/b.rs",
            "pub fn g() {}\n\nfn h() {\n    crate::a::f();\n}\n",
        ),
        ("src/c.rs", "use crate::a::f;\n"),
    ]);
    let circles = graph.circles();
    assert_eq!(circles, [["a", "b"]]);
    assert_eq!(
        graph.summary(&circles),
        "3 top-level modules, 3 edges, 1 circle (2 modules)"
    );
    let text = graph.explain("scratch", &circles[0]);
    assert!(text.contains("import circle of 2 modules: a, b"), "{text}");
    assert!(text.contains("a -> b -> a"), "{text}");
    assert!(text.contains("a -> b  src/a.rs:1"), "{text}");
    assert!(text.contains("b -> a  src/b.rs:4"), "{text}");
    // c only imports from the circle: it is not in it.
    assert!(!text.contains("c ->"), "{text}");
}

#[test]
fn acyclic_crate_passes() {
    let graph = graph(&[
        ("src/lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("src/a.rs", "use crate::{b::g, c::h};\n"),
        ("src/b.rs", "pub fn g() { crate::c::h() }\n"),
        ("src/c.rs", "pub fn h() {}\n"),
    ]);
    let circles = graph.circles();
    assert!(circles.is_empty());
    assert_eq!(
        graph.summary(&circles),
        "3 top-level modules, 3 edges, no circles"
    );
}

#[test]
fn super_resolves_against_the_files_module() {
    let graph = graph(&[
        ("src/lib.rs", "mod kernel;\nmod policy;\n"),
        ("src/kernel.rs", ""),
        ("src/policy/mod.rs", "mod compile;\nmod rules;\n"),
        ("src/policy/compile/mod.rs", "mod net;\n"),
        (
            "src/policy/compile/net.rs",
            // super::super is policy (a self-edge), one more is the root.
            "use super::super::rules::R;\nuse super::super::super::kernel::X;\n",
        ),
        ("src/policy/rules.rs", ""),
    ]);
    assert_eq!(
        edges(&graph),
        [("policy", "kernel", "src/policy/compile/net.rs:2")]
    );
}

#[test]
fn grouped_use_trees_reach_each_module() {
    let graph = graph(&[
        ("src/lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\n"),
        (
            "src/a.rs",
            "use crate::{\n    b::{self, x},\n    c as see,\n    d::*,\n};\n",
        ),
        ("src/b.rs", ""),
        ("src/c.rs", ""),
        ("src/d.rs", ""),
    ]);
    assert_eq!(
        edges(&graph),
        [
            ("a", "b", "src/a.rs:2"),
            ("a", "c", "src/a.rs:3"),
            ("a", "d", "src/a.rs:4"),
        ]
    );
}

#[test]
fn folder_module_counts_once() {
    let graph = graph(&[
        ("src/lib.rs", "mod x;\nmod z;\n"),
        ("src/x/mod.rs", "mod y;\n"),
        ("src/x/y.rs", "use crate::z::Z;\nuse super::w;\n"),
        ("src/z.rs", "pub struct Z;\n"),
    ]);
    assert_eq!(graph.modules.len(), 2);
    assert_eq!(edges(&graph), [("x", "z", "src/x/y.rs:1")]);
}

#[test]
fn macros_and_test_modules_count() {
    let graph = graph(&[
        (
            "src/lib.rs",
            "mod a;\nmod b;\nmod c;\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}\n",
        ),
        ("src/a.rs", "fn f() {\n    assert!(crate::b::ok());\n}\n"),
        (
            "src/b.rs",
            "#[cfg(test)]\nmod tests {\n    use super::super::c::C;\n}\n",
        ),
        (
            "src/c.rs",
            "macro_rules! m {\n    () => { $crate::a::f() };\n}\n",
        ),
    ]);
    assert_eq!(
        edges(&graph),
        [
            ("a", "b", "src/a.rs:2"),
            ("b", "c", "src/b.rs:3"),
            ("c", "a", "src/c.rs:2"),
            ("tests", "c", "src/lib.rs:6"),
        ]
    );
    assert_eq!(graph.circles(), [["a", "b", "c"]]);
}

#[test]
fn root_imports_lead_into_their_module() {
    let graph = graph(&[
        (
            "src/lib.rs",
            "mod a;\nmod b;\npub use a::Item;\nstatic ROOT: u8 = 0;\n",
        ),
        ("src/a.rs", "pub struct Item;\n"),
        ("src/b.rs", "use crate::{Item, ROOT};\n"),
    ]);
    assert_eq!(edges(&graph), [("b", "a", "src/b.rs:1")]);
}

#[test]
fn missing_module_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), "mod gone;\n").unwrap();
    let err = Graph::read(&dir.path().join("src/lib.rs"), Path::new("/"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("`mod gone;` has no file"), "{err}");
}
