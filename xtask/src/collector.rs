//! The syslog collector the forwarding tests send to: Debian's rsyslog, unpacked into the cache
//! (not installed: nothing is started as a service, no system file changes). The tests find it
//! through $CLAW_RSYSLOG_ROOT, which `cargo xtask test` sets.

use std::{path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::{kernels, run};

/// How the tests find the unpacked tree.
pub const ROOT_ENV: &str = "CLAW_RSYSLOG_ROOT";

/// rsyslog and the libraries it needs that a minimal bookworm lacks.
const PACKAGES: &[&str] = &["rsyslog", "libestr0", "libfastjson4", "liblognorm5"];

/// The tree rsyslog is unpacked into (usr/sbin/rsyslogd, usr/lib/x86_64-linux-gnu/...).
pub fn root() -> PathBuf {
    kernels::cache_dir().join("rsyslog")
}

/// Downloads and unpacks rsyslog unless it is there.
pub fn ensure(verbose: bool) -> anyhow::Result<PathBuf> {
    let root = root();
    if root.join("usr/sbin/rsyslogd").exists() {
        if verbose {
            eprintln!("setup: rsyslog at {}", root.display());
        }
        return Ok(root);
    }
    eprintln!("setup: unpacking rsyslog into {}", root.display());
    let debs = kernels::cache_dir().join("rsyslog-debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    run::status(
        Command::new("apt-get")
            .args(["download", "-q"])
            .args(PACKAGES)
            .current_dir(&debs),
    )?;
    for deb in std::fs::read_dir(&debs)? {
        let deb = deb?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            run::status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        }
    }
    std::fs::remove_dir_all(&debs).ok();
    Ok(root)
}
