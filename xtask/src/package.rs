//! `cargo xtask package`: claw's Debian package, target/debian/claw_VERSION_amd64.deb — the static
//! claw-agent and clawctl (the same build the VM tests run), the systemd unit, /etc/claw (a
//! commented starter policy and the daemon's configuration, both conffiles), man pages, bash, zsh
//! and fish completions, the shipped policies, and the maintainer scripts of deploy/debian. Built
//! with dpkg-deb from a staging tree rather than cargo-deb: nothing to install, and the tree is
//! exactly what `tests/tests/host_package.rs` checks.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::{run, vm};

/// The package's name, and its version (the workspace's).
const NAME: &str = "claw";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where each file of the repository goes in the package, with its mode.
const FILES: &[(&str, &str, u32)] = &[
    (
        "deploy/systemd/claw-agent.service",
        "usr/lib/systemd/system/claw-agent.service",
        0o644,
    ),
    ("deploy/etc/policy.yaml", "etc/claw/policy.yaml", 0o644),
    (
        "deploy/etc/claw-agent.yaml",
        "etc/claw/claw-agent.yaml",
        0o644,
    ),
    ("deploy/debian/postinst", "DEBIAN/postinst", 0o755),
    ("deploy/debian/prerm", "DEBIAN/prerm", 0o755),
    ("deploy/debian/postrm", "DEBIAN/postrm", 0o755),
    ("README.md", "usr/share/doc/claw/README.md", 0o644),
    (
        "docs/operations.md",
        "usr/share/doc/claw/operations.md",
        0o644,
    ),
    ("docs/events.md", "usr/share/doc/claw/events.md", 0o644),
];

/// Builds the package; returns its path.
pub fn build() -> anyhow::Result<PathBuf> {
    let root = run::workspace_root();
    let bin_dir = vm::build_static()?;
    let out = root.join("target/debian");
    let staging = out.join(NAME);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    let place = |from: &Path, to: &str, mode: u32| -> anyhow::Result<()> {
        let to = staging.join(to);
        std::fs::create_dir_all(to.parent().context("a file in a directory")?)?;
        std::fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    place(&bin_dir.join("claw-agent"), "usr/sbin/claw-agent", 0o755)?;
    place(&bin_dir.join("clawctl"), "usr/bin/clawctl", 0o755)?;
    for (from, to, mode) in FILES {
        place(&root.join(from), to, *mode)?;
    }
    copy_tree(
        &root.join("policies"),
        &staging.join("usr/share/claw/policies"),
    )?;
    man_pages(
        &staging,
        &staging.join("usr/sbin/claw-agent"),
        &staging.join("usr/bin/clawctl"),
    )?;
    completions(&staging)?;
    schemas(&staging, &staging.join("usr/bin/clawctl"))?;
    std::fs::write(
        staging.join("usr/share/doc/claw/copyright"),
        "claw: MIT OR Apache-2.0. The kernel programs inside claw-agent are Dual MIT/GPL.\n",
    )?;
    std::fs::write(
        staging.join("DEBIAN/conffiles"),
        "/etc/claw/policy.yaml\n/etc/claw/claw-agent.yaml\n",
    )?;
    std::fs::write(staging.join("DEBIAN/control"), control(&staging)?)?;
    std::fs::write(staging.join("DEBIAN/md5sums"), md5sums(&staging)?)?;
    for dir in walk(&staging)?.into_iter().filter(|p| p.is_dir()) {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    }
    let deb = out.join(format!("{NAME}_{VERSION}_amd64.deb"));
    run::status(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&staging)
            .arg(&deb),
    )?;
    eprintln!("package: {}", deb.display());
    Ok(deb)
}

/// The JSON Schemas of the policy file and of the daemon's configuration, as clawctl prints them,
/// for editors (`# yaml-language-server: $schema=/usr/share/claw/schema/policy.schema.json`).
fn schemas(staging: &Path, clawctl: &Path) -> anyhow::Result<()> {
    let dir = staging.join("usr/share/claw/schema");
    std::fs::create_dir_all(&dir)?;
    for (args, file) in [
        (&["policy", "schema"][..], "policy.schema.json"),
        (
            &["policy", "schema", "--config"][..],
            "claw-agent.schema.json",
        ),
    ] {
        let schema = run::output(Command::new(clawctl).args(args))?;
        std::fs::write(dir.join(file), schema)?;
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// The man pages, made by the binaries themselves (clap_mangen), gzipped as Debian wants.
fn man_pages(staging: &Path, claw_agent: &Path, clawctl: &Path) -> anyhow::Result<()> {
    let man8 = staging.join("usr/share/man/man8");
    let man1 = staging.join("usr/share/man/man1");
    std::fs::create_dir_all(&man8)?;
    std::fs::create_dir_all(&man1)?;
    run::status(Command::new(claw_agent).arg("--man").arg(&man8))?;
    run::status(Command::new(clawctl).arg("man").arg(&man1))?;
    for page in walk(&staging.join("usr/share/man"))?
        .into_iter()
        .filter(|p| p.is_file())
    {
        run::status(Command::new("gzip").args(["-9", "-n"]).arg(&page))?;
        std::fs::set_permissions(
            page.with_extension(format!(
                "{}.gz",
                page.extension().and_then(|e| e.to_str()).unwrap_or("")
            )),
            std::fs::Permissions::from_mode(0o644),
        )?;
    }
    Ok(())
}

/// bash, zsh and fish completions of both binaries, where each shell looks for packaged ones.
fn completions(staging: &Path) -> anyhow::Result<()> {
    let places = [
        ("bash", "usr/share/bash-completion/completions", ""),
        ("zsh", "usr/share/zsh/vendor-completions", "_"),
        ("fish", "usr/share/fish/vendor_completions.d", ""),
    ];
    for (shell, dir, prefix) in places {
        let dir = staging.join(dir);
        std::fs::create_dir_all(&dir)?;
        for (binary, args) in [
            ("usr/sbin/claw-agent", vec!["--completions", shell]),
            ("usr/bin/clawctl", vec!["completions", shell]),
        ] {
            let binary = staging.join(binary);
            let name = binary.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let script = run::output(Command::new(&binary).args(&args))?;
            let file = if shell == "fish" {
                dir.join(format!("{name}.fish"))
            } else {
                dir.join(format!("{prefix}{name}"))
            };
            std::fs::write(&file, script)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}

fn control(staging: &Path) -> anyhow::Result<String> {
    let installed_kib: u64 = walk(staging)?
        .iter()
        .filter(|p| p.is_file() && !p.starts_with(staging.join("DEBIAN")))
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len().div_ceil(1024)))
        .sum();
    Ok(format!(
        "Package: {NAME}\n\
         Version: {VERSION}\n\
         Architecture: amd64\n\
         Maintainer: claw developers <claw@localhost>\n\
         Section: admin\n\
         Priority: optional\n\
         Installed-Size: {installed_kib}\n\
         Depends: init-system-helpers\n\
         Recommends: systemd\n\
         Description: kernel enforcement of AI agents' file, exec and network rules\n \
         claw-agent holds each AI agent (a cgroup) to its policy with BPF LSM and cgroup\n \
         programs, streams every denial to clawctl deny-log, a hash-chained audit log and\n \
         SIEMs, and supervises the agents' processes and tool calls. Check a node with\n \
         claw-agent --check.\n"
    ))
}

/// DEBIAN/md5sums: `md5sum` of every installed file, paths relative to the root (as dpkg
/// --verify reads it).
fn md5sums(staging: &Path) -> anyhow::Result<String> {
    let mut files: Vec<String> = walk(staging)?
        .iter()
        .filter(|p| p.is_file() && !p.starts_with(staging.join("DEBIAN")))
        .filter_map(|p| p.strip_prefix(staging).ok()?.to_str().map(str::to_owned))
        .collect();
    files.sort();
    run::output(Command::new("md5sum").args(&files).current_dir(staging))
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    for path in walk(from)? {
        let target = to.join(path.strip_prefix(from)?);
        if path.is_dir() {
            std::fs::create_dir_all(&target)?;
        } else {
            std::fs::create_dir_all(target.parent().context("a file in a directory")?)?;
            std::fs::copy(&path, &target)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}

/// Every file and directory below `dir`, parents before children.
fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    Ok(found)
}
