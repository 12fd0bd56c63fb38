//! Asking apt and installing through it, for setup and for the kernel matrix. It sits below both
//! (it uses only `run`), so setup, which fetches the kernels, and kernels, which may need fresh
//! package lists, do not import each other.

use std::process::Command;

use anyhow::bail;

use crate::run;

/// Whether dpkg has `package` installed.
pub fn installed(package: &str) -> bool {
    run::output(Command::new("dpkg-query").args(["-W", "-f", "${Status}", package]))
        .is_ok_and(|status| status.trim() == "install ok installed")
}

/// `apt-get update`, once per xtask run.
pub fn update() -> anyhow::Result<()> {
    static UPDATED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if UPDATED.get().is_some() {
        return Ok(());
    }
    run::status(Command::new("apt-get").args(["update", "-q"]))?;
    let _ = UPDATED.set(());
    Ok(())
}

/// Installs `packages` without removing anything: apt's own plan is asked first, and if it
/// would remove a package (to resolve a conflict), nothing is installed and the error names
/// them and says what to do. `--no-remove` guards the real run as well.
pub fn install(packages: &[&str]) -> anyhow::Result<()> {
    let plan = run::output(
        Command::new("apt-get")
            .args(["install", "-s", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C"),
    )?;
    let removed = removals(&plan);
    if !removed.is_empty() {
        bail!(
            "installing {} would remove {}, which setup never does. See why with \
             `apt-get install -s {}`; resolve the conflict yourself (or install those packages \
             by hand and accept the removal), then run setup again",
            packages.join(" "),
            removed.join(" "),
            packages.join(" ")
        );
    }
    run::status(
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-remove",
                "--no-install-recommends",
            ])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The packages an `apt-get install -s` plan removes (its `Remv NAME [VERSION]` lines, `Purg`
/// where apt is set to purge).
fn removals(plan: &str) -> Vec<&str> {
    plan.lines()
        .filter_map(|line| {
            line.strip_prefix("Remv ")
                .or_else(|| line.strip_prefix("Purg "))
        })
        .filter_map(|rest| rest.split_whitespace().next())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_that_removes_names_what_it_removes() {
        let plan = "NOTE: This is only a simulation!\n\
                    Reading package lists...\n\
                    The following packages will be REMOVED:\n  qemu-utils\n\
                    Remv qemu-utils [1:7.2+dfsg-7+deb12u7]\n\
                    Purg qemu-block-extra [1:7.2+dfsg-7+deb12u7]\n\
                    Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u12 Debian-Security:12/stable-security [amd64])\n\
                    Conf qemu-system-x86 (1:7.2+dfsg-7+deb12u12 Debian-Security:12/stable-security [amd64])\n";
        assert_eq!(removals(plan), ["qemu-utils", "qemu-block-extra"]);
    }

    #[test]
    fn a_plan_that_only_installs_removes_nothing() {
        let plan = "Inst cpio (2.13+dfsg-7.1 Debian:12.12/stable [amd64])\n\
                    Conf cpio (2.13+dfsg-7.1 Debian:12.12/stable [amd64])\n";
        assert!(removals(plan).is_empty());
    }
}
