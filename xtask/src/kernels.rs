//! The VM kernel matrix: Debian's own LTS kernels (CONFIG_BPF_LSM=y, bpf in the default LSM list),
//! found by name in apt's lists (never a hard-coded ABI number) and cached outside git.

use std::{
    cmp::Ordering,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

use crate::{apt, run};

/// Kernel series of the matrix: the LTS kernels Debian bookworm ships.
pub const SERIES: &[&str] = &["6.1", "6.12"];

pub struct Kernel {
    pub package: String,
    pub vmlinuz: PathBuf,
}

/// `$CLAW_CACHE_DIR`, else `$XDG_CACHE_HOME/claw`, else `~/.cache/claw`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CLAW_CACHE_DIR") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    base.join("claw")
}

/// Every kernel of the matrix, downloaded if missing.
pub fn ensure_all() -> anyhow::Result<Vec<Kernel>> {
    SERIES.iter().map(|series| ensure(series)).collect()
}

fn ensure(series: &str) -> anyhow::Result<Kernel> {
    let package = match newest_package(series)? {
        Some(package) => package,
        None => {
            apt::update()?;
            newest_package(series)?.with_context(|| {
                format!("apt knows no package linux-image-{series}.*-amd64-unsigned")
            })?
        }
    };
    let dir = cache_dir().join("kernels").join(&package);
    let vmlinuz = dir.join("vmlinuz");
    if !vmlinuz.exists() {
        eprintln!("setup: downloading {package}");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if download(&package, &dir).is_err() {
            // Stale apt lists name superseded packages that the mirror no longer serves.
            apt::update()?;
            download(&package, &dir)?;
        }
        extract_vmlinuz(&dir)?;
    }
    Ok(Kernel { package, vmlinuz })
}

/// The newest `linux-image-SERIES.*-amd64-unsigned` (not cloud, not rt) in apt's lists.
fn newest_package(series: &str) -> anyhow::Result<Option<String>> {
    let names = run::output(
        Command::new("apt-cache").args(["pkgnames", &format!("linux-image-{series}.")]),
    )?;
    Ok(names
        .lines()
        .filter(|name| {
            name.ends_with("-amd64-unsigned") && !name.contains("-cloud-") && !name.contains("-rt-")
        })
        .max_by(|a, b| version_cmp(a, b))
        .map(str::to_owned))
}

/// Compares digit runs as numbers and everything else as text ("6.1.0-56" > "6.1.0-9").
fn version_cmp(a: &str, b: &str) -> Ordering {
    fn runs(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    for (x, y) in runs(a).into_iter().zip(runs(b)) {
        let order = match (x, y) {
            ((true, x), (true, y)) => x
                .parse::<u64>()
                .unwrap_or(0)
                .cmp(&y.parse::<u64>().unwrap_or(0)),
            ((_, x), (_, y)) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

fn download(package: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    run::status(
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(dir),
    )
}

/// Keeps only `boot/vmlinuz-*` of the downloaded .deb, as `vmlinuz`.
fn extract_vmlinuz(dir: &std::path::Path) -> anyhow::Result<()> {
    let deb = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("no .deb downloaded into {}", dir.display()))?;
    let mut tar = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("running dpkg-deb")?;
    let listing = tar.stdout.take().context("dpkg-deb stdout")?;
    let extracted = Command::new("tar")
        .args(["-x", "--wildcards", "./boot/vmlinuz-*", "-O"])
        .stdin(listing)
        .output()
        .context("running tar")?;
    let deb_status = tar.wait()?;
    if !deb_status.success() || !extracted.status.success() || extracted.stdout.is_empty() {
        bail!(
            "no boot/vmlinuz-* in {}: {}",
            deb.display(),
            String::from_utf8_lossy(&extracted.stderr)
        );
    }
    let vmlinuz = dir.join("vmlinuz");
    let partial = dir.join("vmlinuz.partial");
    std::fs::write(&partial, &extracted.stdout)?;
    std::fs::rename(&partial, &vmlinuz)?;
    std::fs::remove_file(&deb)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        let newest = [
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-56-amd64-unsigned",
            "linux-image-6.1.0-47-amd64-unsigned",
        ]
        .into_iter()
        .max_by(|a, b| version_cmp(a, b));
        assert_eq!(newest, Some("linux-image-6.1.0-56-amd64-unsigned"));
        assert_eq!(
            version_cmp(
                "linux-image-6.12.117+deb12-amd64-unsigned",
                "linux-image-6.12.99+deb12-amd64-unsigned"
            ),
            Ordering::Greater
        );
    }
}
