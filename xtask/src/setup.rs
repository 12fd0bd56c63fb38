//! `cargo xtask setup`: what a fresh Debian bookworm machine (as root) needs to build and test
//! claw. Every step checks first, so a second run takes seconds.

use std::process::Command;

use anyhow::{bail, Context as _};

use crate::{apt, collector, kernels, run};

/// Debian packages: LLVM for bpf-linker, qemu and busybox for the VM tests, cpio for the
/// initramfs, mmdebstrap for the install test's Debian root.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "mmdebstrap",
];
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

/// Runs the set-up, saying what it does.
pub fn run() -> anyhow::Result<()> {
    install(true)
}

/// Runs the set-up quietly when nothing is missing (used before test and demo).
pub fn ensure() -> anyhow::Result<()> {
    install(false)
}

fn install(verbose: bool) -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !apt::installed(pkg))
        .collect();
    if !missing.is_empty() {
        eprintln!("setup: installing Debian packages {}", missing.join(" "));
        apt::update()?;
        apt::install(&missing)?;
    } else if verbose {
        eprintln!("setup: Debian packages present");
    }

    let components = run::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context(
        "the nightly toolchain builds claw's eBPF programs (rustup toolchain install nightly)",
    )?;
    if !components.lines().any(|c| c.starts_with("rust-src")) {
        eprintln!("setup: adding rust-src to the nightly toolchain");
        run::status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    } else if verbose {
        eprintln!("setup: nightly rust-src present");
    }

    if !run::succeeds(Command::new("bpf-linker").arg("--version")) {
        eprintln!("setup: installing bpf-linker (against LLVM 22; a few minutes)");
        let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
        run::status(
            Command::new("cargo")
                .args([
                    "install",
                    "bpf-linker",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("PATH", path),
        )?;
        if !run::succeeds(Command::new("bpf-linker").arg("--version")) {
            bail!("bpf-linker was installed but is not on PATH: add ~/.cargo/bin to PATH");
        }
    } else if verbose {
        eprintln!("setup: bpf-linker present");
    }

    if !run::succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        eprintln!("setup: installing cargo-fuzz");
        run::status(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    } else if verbose {
        eprintln!("setup: cargo-fuzz present");
    }

    collector::ensure(verbose)?;
    for kernel in kernels::ensure_all()? {
        if verbose {
            eprintln!(
                "setup: kernel {} at {}",
                kernel.package,
                kernel.vmlinuz.display()
            );
        }
    }
    Ok(())
}
