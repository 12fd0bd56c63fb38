//! Reading one crate's references between its own modules: every file reached from the crate
//! root through `mod` declarations, parsed with syn. A reference is a `use crate::...` or
//! `use super::...` tree, a `crate::` or `super::` path in code, or such a path in the tokens of a
//! macro (which syn leaves unparsed).

use std::{
    collections::{BTreeMap, BTreeSet},
    mem,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use proc_macro2::{Delimiter, Spacing, Span, TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// A reference from one top-level module to a path of the crate.
pub struct Reference {
    /// The top-level module it is written in.
    pub from: String,
    /// What it names, from the crate root (`crate::a::f` is `["a", "f"]`).
    pub target: Vec<String>,
    /// Where: `path:line`, the path relative to the directory given to [`read`].
    pub site: String,
}

#[derive(Default)]
pub struct Crate {
    /// The crate root's child modules, inline or in files.
    pub modules: BTreeSet<String>,
    /// Names the crate root imports from one of its modules (`pub use a::Item`): `Item -> a::Item`.
    /// A reference to `crate::Item` goes through them into `a`.
    pub root_imports: BTreeMap<String, Vec<String>>,
    pub references: Vec<Reference>,
}

/// Reads the crate whose root file is `root_file` (src/lib.rs or src/main.rs). Sites are shown
/// relative to `base`.
pub fn read(root_file: &Path, base: &Path) -> anyhow::Result<Crate> {
    let mut krate = Crate::default();
    let dir = root_file
        .parent()
        .context("a crate root lies in a directory")?;
    let mut pending = vec![(root_file.to_path_buf(), Vec::new(), dir.to_path_buf())];
    while let Some((file, module, dir)) = pending.pop() {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let shown = file
            .strip_prefix(base)
            .unwrap_or(&file)
            .display()
            .to_string();
        let ast = match syn::parse_file(&text) {
            Ok(ast) => ast,
            Err(err) => bail!("parsing {shown}:{}: {err}", err.span().start().line),
        };
        let mut visitor = Visitor {
            file: &file,
            shown,
            module,
            dir,
            krate: &mut krate,
            pending: &mut pending,
            error: None,
        };
        visitor.visit_file(&ast);
        if let Some(err) = visitor.error {
            return Err(err);
        }
    }
    Ok(krate)
}

struct Visitor<'a> {
    file: &'a Path,
    shown: String,
    /// The module being walked, from the crate root (empty: the root itself).
    module: Vec<String>,
    /// Where `mod x;` in that module finds x.rs or x/mod.rs.
    dir: PathBuf,
    krate: &'a mut Crate,
    /// Module files still to read: (file, its module path, its children's directory).
    pending: &'a mut Vec<(PathBuf, Vec<String>, PathBuf)>,
    error: Option<anyhow::Error>,
}

impl Visitor<'_> {
    /// The absolute path `segments` names, written in the current module; None for paths from
    /// outside the crate or relative to the current module (its own items).
    fn resolve(&self, segments: &[String]) -> Option<Vec<String>> {
        let (mut path, rest) = match segments.first()?.as_str() {
            "crate" => (Vec::new(), &segments[1..]),
            "super" | "self" => {
                let mut path = self.module.clone();
                let mut rest = segments;
                while let Some(first) = rest.first() {
                    match first.as_str() {
                        "self" => {}
                        "super" => {
                            path.pop()?;
                        }
                        _ => break,
                    }
                    rest = &rest[1..];
                }
                (path, rest)
            }
            // In the root a relative path starts at the root: a child module, or another crate.
            _ if self.module.is_empty() => (Vec::new(), segments),
            _ => return None,
        };
        path.extend(rest.iter().filter(|s| *s != "self").cloned());
        Some(path)
    }

    fn record(&mut self, segments: &[String], span: Span) {
        let Some(target) = self.resolve(segments) else {
            return;
        };
        // The root is not a module of its own: what it refers to makes no edge.
        if let Some(from) = self.module.first() {
            self.krate.references.push(Reference {
                from: from.clone(),
                target,
                site: format!("{}:{}", self.shown, span.start().line),
            });
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        let (name, binding, span) = match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
                return;
            }
            syn::UseTree::Group(g) => {
                for item in &g.items {
                    self.use_tree(prefix, item);
                }
                return;
            }
            syn::UseTree::Name(n) => (Some(&n.ident), Some(&n.ident), n.ident.span()),
            syn::UseTree::Rename(r) => (Some(&r.ident), Some(&r.rename), r.ident.span()),
            syn::UseTree::Glob(g) => (None, None, g.star_token.span),
        };
        let mut path = prefix.clone();
        path.extend(name.map(ToString::to_string));
        self.record(&path, span);
        if self.module.is_empty() {
            let binding = binding.map(ToString::to_string).filter(|b| b != "_");
            if let (Some(binding), Some(target)) = (binding, self.resolve(&path)) {
                let binding = if binding == "self" {
                    prefix.last().cloned().unwrap_or(binding)
                } else {
                    binding
                };
                self.krate.root_imports.insert(binding, target);
            }
        }
    }

    /// `crate::a` and `super::a` in a macro's tokens (`$crate::a` too), including
    /// `crate::{a, b}`.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(group) => self.scan_tokens(group.stream()),
                TokenTree::Ident(start)
                    if (start == "crate" || start == "super")
                        && !(i >= 2 && path_sep(&tokens, i - 2)) =>
                {
                    let mut path = vec![start.to_string()];
                    let mut heads = Vec::new();
                    let mut j = i + 1;
                    while path_sep(&tokens, j) {
                        match tokens.get(j + 2) {
                            Some(TokenTree::Ident(next)) => path.push(next.to_string()),
                            Some(TokenTree::Group(group))
                                if group.delimiter() == Delimiter::Brace =>
                            {
                                heads = group_heads(group.stream());
                            }
                            _ => {}
                        }
                        j += 3;
                        if !heads.is_empty() {
                            break;
                        }
                    }
                    if heads.is_empty() {
                        self.record(&path, start.span());
                    }
                    for head in heads {
                        self.record(&[path.clone(), head].concat(), start.span());
                    }
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// `mod name;`: the file it lives in and the directory its own children live in.
    fn module_file(&self, item: &syn::ItemMod) -> anyhow::Result<(PathBuf, PathBuf)> {
        let name = item.ident.to_string();
        for attr in &item.attrs {
            if let syn::Meta::NameValue(nv) = &attr.meta {
                if nv.path.is_ident("path") {
                    if let syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(s),
                        ..
                    }) = &nv.value
                    {
                        // A #[path] file places its children as a mod.rs does.
                        let file = self.file.parent().unwrap_or(Path::new("")).join(s.value());
                        let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
                        return Ok((file, dir));
                    }
                }
            }
        }
        let children = self.dir.join(&name);
        let flat = self.dir.join(format!("{name}.rs"));
        let folder = children.join("mod.rs");
        match (flat.exists(), folder.exists()) {
            (true, false) => Ok((flat, children)),
            (false, true) => Ok((folder, children)),
            (true, true) => bail!(
                "{}: both {} and {}",
                self.shown,
                flat.display(),
                folder.display()
            ),
            (false, false) => bail!("{}: `mod {name};` has no file", self.shown),
        }
    }
}

impl<'ast> Visit<'ast> for Visitor<'_> {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        let name = item.ident.to_string();
        if self.module.is_empty() {
            self.krate.modules.insert(name.clone());
        }
        let mut module = self.module.clone();
        module.push(name.clone());
        match &item.content {
            Some((_, items)) => {
                let inner_dir = self.dir.join(&name);
                let outer_dir = mem::replace(&mut self.dir, inner_dir);
                let outer = mem::replace(&mut self.module, module);
                for item in items {
                    self.visit_item(item);
                }
                self.module = outer;
                self.dir = outer_dir;
            }
            None => match self.module_file(item) {
                Ok((file, dir)) => self.pending.push((file, module, dir)),
                Err(err) => {
                    self.error.get_or_insert(err);
                }
            },
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        // `use ::name` is always another crate.
        if item.leading_colon.is_none() {
            self.use_tree(&mut Vec::new(), &item.tree);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            // A lone `crate` or `super` (as in `pub(super)`) names no module.
            if segments.len() > 1 {
                self.record(&segments, path.segments[0].ident.span());
            }
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        visit::visit_macro(self, mac);
        self.scan_tokens(mac.tokens.clone());
    }
}

/// Whether `tokens[i..]` starts with `::`.
fn path_sep(tokens: &[TokenTree], i: usize) -> bool {
    matches!(
        (tokens.get(i), tokens.get(i + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':'
    )
}

/// The leading `a::b` of each comma-separated entry of a `{...}` use group.
fn group_heads(tokens: TokenStream) -> Vec<Vec<String>> {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut heads = Vec::new();
    for entry in tokens.split(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ',')) {
        let mut head = Vec::new();
        let mut j = 0;
        while let Some(TokenTree::Ident(ident)) = entry.get(j) {
            head.push(ident.to_string());
            if !path_sep(entry, j + 1) {
                break;
            }
            j += 3;
        }
        if !head.is_empty() {
            heads.push(head);
        }
    }
    heads
}
