use super::{check_files, markdown, Report};

/// Writes `files` (path, text) under a scratch directory and checks the links of the .md ones.
fn check(files: &[(&str, &str)]) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let mut markdown = Vec::new();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        if path.extension().is_some_and(|e| e == "md") {
            markdown.push(path);
        }
    }
    check_files(dir.path(), &markdown).unwrap()
}

const GUIDE: &str = "# Guide\n\n## Writing a `policy` (YAML)\n\n## Writing a `policy` (YAML)\n";

#[test]
fn good_links_resolve() {
    let report = check(&[
        (
            "README.md",
            "# Top\n\nSee [the guide](docs/guide.md), [its policy part](docs/guide.md#writing-a-policy-yaml-1),\n\
             [above](#top), [a folder](policies/), ![a picture](docs/a%20b.png \"title\")\n\
             and [rules][r].\n\n[r]: <docs/guide.md#guide>\n",
        ),
        ("docs/guide.md", GUIDE),
        ("docs/a b.png", ""),
        ("policies/base.yaml", ""),
    ]);
    assert!(report.broken.is_empty(), "{:?}", report.broken);
    assert_eq!(report.links, 6);
}

#[test]
fn missing_file_is_named() {
    let report = check(&[(
        "docs/guide.md",
        "# Guide\n\nRead [this](../gone.md) first.\n",
    )]);
    assert_eq!(
        report.broken,
        ["docs/guide.md:3: (../gone.md) no such file: gone.md"]
    );
}

#[test]
fn missing_anchor_is_named() {
    let report = check(&[
        ("README.md", "[a](docs/guide.md#writing)\n\n[b](#nowhere)\n"),
        ("docs/guide.md", GUIDE),
    ]);
    assert_eq!(
        report.broken,
        [
            "README.md:1: (docs/guide.md#writing) no heading #writing in docs/guide.md",
            "README.md:3: (#nowhere) no heading #nowhere in README.md",
        ]
    );
}

#[test]
fn links_in_code_are_ignored() {
    let report = check(&[(
        "README.md",
        "```markdown\n[x](gone.md)\n```\n\n~~~~\n```\n[y](gone.md)\n~~~~\n\nInline `[z](gone.md)` and ``a ` [w](gone.md)``.\n\n  ```\n  [v](gone.md)\n  ```\n",
    )]);
    assert!(report.broken.is_empty(), "{:?}", report.broken);
    assert_eq!(report.links, 0);
}

#[test]
fn external_links_are_checked_for_form_only() {
    let report = check(&[(
        "README.md",
        "[a](https://example.org/x#y) [b](mailto:ops@example.org) [c](https:/oops) [d](ftp://x)\n",
    )]);
    assert_eq!(
        report.broken,
        [
            "README.md:1: (https:/oops) not a https://host/... URL",
            "README.md:1: (ftp://x) scheme ftp: links are relative paths, http(s) or mailto",
        ]
    );
}

#[test]
fn slugs_follow_github() {
    assert_eq!(
        markdown::slug("Writing a `policy` (YAML)"),
        "writing-a-policy-yaml"
    );
    assert_eq!(
        markdown::slug("What claw does -- and doesn't"),
        "what-claw-does----and-doesnt"
    );
    assert_eq!(
        markdown::slug("The [rule map](x.md) and snake_case"),
        "the-rule-map-and-snake_case"
    );
    let anchors = markdown::anchors("Setext\n======\n\n# Twice\n# Twice\n<a id=\"here\"></a>\n");
    let anchors: Vec<_> = anchors.iter().map(String::as_str).collect();
    assert_eq!(anchors, ["here", "setext", "twice", "twice-1"]);
}

#[test]
fn link_text_may_span_lines() {
    let report = check(&[(
        "README.md",
        "# Top\n\nClosed unless a rule names them: [credential\nstores](gone.md#guards), and [the\ntop](#top).\n",
    )]);
    assert_eq!(report.links, 2);
    assert_eq!(
        report.broken,
        ["README.md:4: (gone.md#guards) no such file: gone.md"]
    );
}
