//! Asking apt, for setup and for the kernel matrix. It sits below both (it uses only `run`), so
//! setup, which fetches the kernels, and kernels, which may need fresh package lists, do not
//! import each other.

use std::process::Command;

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
