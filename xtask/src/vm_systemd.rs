//! The install test on a real Debian with systemd (issue 18): a Debian bookworm root made by
//! mmdebstrap (cached like the kernels), with claw's package and the static claw-vmtest added,
//! booted as the initramfs with systemd as PID 1 on each kernel of the matrix — once as Debian
//! boots, once with an `lsm=` list without `bpf` (Ubuntu's situation). claw-vmtest runs as a
//! systemd service there (`claw-vmtest systemd` / `systemd-nobpf`) and reports on the console.

use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::{
    kernels::{self, Kernel},
    package, run,
    vm::{self, BootOptions, Tally},
};

/// What the root holds beyond minbase: systemd as init, and nothing that needs the network.
const INCLUDE: &str = "systemd-sysv";
/// Documentation, manuals and locales are left out: the initramfs is unpacked into the guest's
/// memory.
const EXCLUDE: &[&str] = &[
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/locale/*",
    "/usr/share/info/*",
];
/// Bumped when the recipe above changes, so that a cached root of the old one is not used.
const ROOT_VERSION: u32 = 1;
/// Exactly Ubuntu's active LSMs: BPF LSM built, `bpf` not listed.
const LSM_WITHOUT_BPF: &str = "lsm=lockdown,capability,landlock,yama,apparmor";
/// The guest's memory: the root, unpacked from the initramfs, lives in it.
const MEMORY_MIB: u32 = 2048;

/// The service that runs the suite once the system is up, writing to the serial console.
const UNIT: &str = "[Unit]
Description=claw install test
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/bin/claw-vmtest %i
# claw-vmtest powers off when it is done; this also when it is not (a crash, a usage error).
ExecStopPost=/usr/bin/systemctl poweroff --force --force
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
";

pub fn test(kernel_filter: Option<&str>) -> anyhow::Result<()> {
    let kernels: Vec<Kernel> = kernels::ensure_all()?
        .into_iter()
        .filter(|k| kernel_filter.is_none_or(|f| k.package.contains(f)))
        .collect();
    if kernels.is_empty() {
        bail!("no kernel of the matrix matches {kernel_filter:?}");
    }
    let deb = package::build()?;
    let bin_dir = vm::build_static()?;
    let root = ensure_root()?;
    let initramfs = build_initramfs(&root, &deb, &bin_dir)?;
    let mut tally = Tally::default();
    for kernel in &kernels {
        for (mode, append) in [("systemd", ""), ("systemd-nobpf", LSM_WITHOUT_BPF)] {
            let log = vm::log_path(kernel, mode);
            let options = BootOptions {
                memory_mib: MEMORY_MIB,
                append: format!(
                    "{append} systemd.show_status=0 systemd.unit=claw-install-test@{mode}.service"
                ),
                echo: false,
            };
            let outcome = vm::boot(kernel, &initramfs, mode, &log, &options)?;
            tally.add(kernel, &outcome, log);
        }
    }
    tally.finish("vm-systemd")
}

/// The cached Debian root (a tarball), made with mmdebstrap from the Debian archive if missing.
fn ensure_root() -> anyhow::Result<PathBuf> {
    let dir = kernels::cache_dir().join("roots");
    let tarball = dir.join(format!("bookworm-systemd-v{ROOT_VERSION}.tar"));
    if tarball.exists() {
        return Ok(tarball);
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "vm-systemd: making a Debian bookworm root with systemd (mmdebstrap, about a minute)"
    );
    let partial = dir.join(format!("bookworm-systemd-v{ROOT_VERSION}.tar.partial"));
    let mut mmdebstrap = Command::new("mmdebstrap");
    mmdebstrap
        .args(["--variant=minbase", "--mode=root", "--format=tar"])
        .arg(format!("--include={INCLUDE}"));
    for pattern in EXCLUDE {
        mmdebstrap.arg(format!("--dpkgopt=path-exclude={pattern}"));
    }
    mmdebstrap
        .arg("bookworm")
        .arg(&partial)
        .arg("http://deb.debian.org/debian");
    run::status(&mut mmdebstrap)
        .context("mmdebstrap (package mmdebstrap; cargo xtask setup installs it)")?;
    std::fs::rename(&partial, &tarball)?;
    Ok(tarball)
}

/// The root, with the package, claw-vmtest, the test service and /init (systemd), as a newc cpio.
fn build_initramfs(root_tarball: &Path, deb: &Path, bin_dir: &Path) -> anyhow::Result<PathBuf> {
    let target = run::workspace_root().join("target/vm");
    let staging = target.join("systemd-root");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    run::status(
        Command::new("tar")
            .args(["--numeric-owner", "-xpf"])
            .arg(root_tarball)
            .arg("-C")
            .arg(&staging),
    )?;
    std::fs::copy(
        deb,
        staging
            .join("root")
            .join(deb.file_name().context("package name")?),
    )?;
    std::fs::copy(
        bin_dir.join("claw-vmtest"),
        staging.join("usr/local/bin/claw-vmtest"),
    )?;
    let units = staging.join("etc/systemd/system");
    std::fs::write(units.join("claw-install-test@.service"), UNIT)?;
    // The console is the suite's: no login prompt on it.
    symlink("/dev/null", units.join("serial-getty@ttyS0.service"))?;
    std::fs::write(staging.join("etc/hostname"), "claw-node\n")?;
    symlink("/lib/systemd/systemd", staging.join("init"))?;

    let archive = target.join("systemd-initramfs.cpio");
    vm::pack_cpio(&staging, &archive)?;
    std::fs::remove_dir_all(&staging)?;
    Ok(archive)
}
