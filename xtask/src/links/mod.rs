//! The link check of `cargo xtask lint`: every relative link in the project's Markdown reaches an
//! existing file or directory, and every `#anchor` an existing heading. External links are not
//! fetched (the machines that lint may have no internet), only checked to be well formed.

mod markdown;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Component, Path, PathBuf},
};

use anyhow::{bail, Context as _};

/// Prints a summary line; fails naming each broken link.
pub fn check(workspace: &Path) -> anyhow::Result<()> {
    let files = markdown_files(workspace)?;
    let report = check_files(workspace, &files)?;
    let verdict = match report.broken.len() {
        0 => "all resolve".to_owned(),
        n => format!("{n} broken"),
    };
    eprintln!(
        "links: {} files, {} links, {verdict}",
        files.len(),
        report.links
    );
    if !report.broken.is_empty() {
        bail!("broken links:\n  {}", report.broken.join("\n  "));
    }
    Ok(())
}

/// README.md, policies/README.md and docs/**/*.md, those that exist.
fn markdown_files(workspace: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = ["README.md", "policies/README.md"]
        .iter()
        .map(|f| workspace.join(f))
        .filter(|f| f.is_file())
        .collect();
    let mut dirs = vec![workspace.join("docs")];
    let mut docs = Vec::new();
    while let Some(dir) = dirs.pop() {
        if !dir.is_dir() {
            continue;
        }
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                docs.push(path);
            }
        }
    }
    docs.sort();
    files.extend(docs);
    Ok(files)
}

pub struct Report {
    pub links: usize,
    /// `file:line: target: what is missing`, file relative to the workspace.
    pub broken: Vec<String>,
}

/// Checks the links of `files`, all under `workspace`.
pub fn check_files(workspace: &Path, files: &[PathBuf]) -> anyhow::Result<Report> {
    let mut anchors = Anchors::default();
    let mut report = Report {
        links: 0,
        broken: Vec::new(),
    };
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for link in markdown::links(&text) {
            report.links += 1;
            if let Err(missing) = resolve(workspace, file, &link.target, &mut anchors) {
                report.broken.push(format!(
                    "{}:{}: ({}) {missing}",
                    shown(workspace, file),
                    link.line,
                    link.target
                ));
            }
        }
    }
    Ok(report)
}

/// The anchors of each Markdown file read so far.
#[derive(Default)]
struct Anchors(BTreeMap<PathBuf, BTreeSet<String>>);

impl Anchors {
    fn of(&mut self, file: &Path) -> &BTreeSet<String> {
        self.0.entry(file.to_path_buf()).or_insert_with(|| {
            std::fs::read_to_string(file)
                .map(|text| markdown::anchors(&text))
                .unwrap_or_default()
        })
    }
}

/// Ok if `target`, written in `file`, resolves; else what is missing.
fn resolve(
    workspace: &Path,
    file: &Path,
    target: &str,
    anchors: &mut Anchors,
) -> Result<(), String> {
    if let Some((scheme, rest)) = scheme(target) {
        return external(scheme, rest);
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let path = percent_decode(path.split('?').next().unwrap_or(path));
    let resolved = if path.is_empty() {
        if anchor.is_none() {
            return Err("empty link".to_owned());
        }
        file.to_path_buf()
    } else if let Some(from_root) = path.strip_prefix('/') {
        normalize(&workspace.join(from_root))
    } else {
        normalize(&file.parent().unwrap_or(workspace).join(&path))
    };
    if !resolved.starts_with(workspace) {
        return Err("points outside the repository".to_owned());
    }
    if !resolved.exists() {
        return Err(format!("no such file: {}", shown(workspace, &resolved)));
    }
    // Anchors are checked in Markdown files; GitHub makes its own (`#L10`) for other files.
    if let Some(anchor) = anchor.filter(|_| resolved.extension().is_some_and(|e| e == "md")) {
        if !anchors.of(&resolved).contains(&percent_decode(anchor)) {
            return Err(format!(
                "no heading #{anchor} in {}",
                shown(workspace, &resolved)
            ));
        }
    }
    Ok(())
}

/// `scheme:rest` when the target starts with a URL scheme.
fn scheme(target: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = target.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next()?.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// http(s) with a host, mailto with an address; nothing else is expected in these documents.
fn external(scheme: &str, rest: &str) -> Result<(), String> {
    if rest.contains(char::is_whitespace) {
        return Err("a space in a URL".to_owned());
    }
    match scheme {
        "http" | "https" => {
            let host = rest
                .strip_prefix("//")
                .map(|r| r.split(['/', '?', '#']).next().unwrap_or(""))
                .unwrap_or("");
            let fine = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'));
            fine.then_some(())
                .ok_or_else(|| format!("not a {scheme}://host/... URL"))
        }
        "mailto" => match rest.split_once('@') {
            Some((user, host)) if !user.is_empty() && host.contains('.') => Ok(()),
            _ => Err("not a mailto:name@host address".to_owned()),
        },
        _ => Err(format!(
            "scheme {scheme}: links are relative paths, http(s) or mailto"
        )),
    }
}

/// `%20` and the like, as GitHub decodes them.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = text
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path with `.` and `..` taken out, without looking at the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn shown(workspace: &Path, path: &Path) -> String {
    path.strip_prefix(workspace)
        .unwrap_or(path)
        .display()
        .to_string()
}
