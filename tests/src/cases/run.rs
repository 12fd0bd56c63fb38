//! `clawctl run`: a tool call inside an agent's cgroup from its first instruction, with its
//! output and exit status passed through.

use std::process::Command;

use anyhow::ensure;
use claw_tests::harness::{CLAWCTL, VMTEST};

use super::{Runner, DENIED_FILE, EPERM};

pub fn run(runner: &mut Runner) {
    runner.check(
        "clawctl_run_is_inside_the_cgroup_from_the_first_instruction",
        (|| {
            let out = Command::new(CLAWCTL)
                .args(["run", "--agent", "limited", "--", VMTEST, "probe", "cgroup"])
                .output()?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            ensure!(out.status.success(), "clawctl run failed: {out:?}");
            ensure!(
                stdout.trim() == "0::/claw/limited",
                "the tool saw itself in {stdout:?}"
            );
            Ok(())
        })(),
    );
    runner.check(
        "clawctl_run_passes_the_exit_status_through",
        (|| {
            let status = Command::new(CLAWCTL)
                .args([
                    "run",
                    "--agent",
                    "tools",
                    "--",
                    VMTEST,
                    "probe",
                    "open",
                    DENIED_FILE,
                ])
                .status()?;
            ensure!(
                status.code() == Some(EPERM),
                "exit {status}, want {EPERM} (EPERM)"
            );
            let status = Command::new(CLAWCTL)
                .args(["run", "--agent", "tools", "--", "/usr/bin/true"])
                .status()?;
            ensure!(status.success(), "exit {status}");
            Ok(())
        })(),
    );
    runner.check(
        "clawctl_run_names_the_agents_when_one_is_unknown",
        (|| {
            let out = Command::new(CLAWCTL)
                .args(["run", "--agent", "nope", "--", "/usr/bin/true"])
                .output()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure!(
                !out.status.success()
                    && stderr.contains("no agent `nope`")
                    && stderr.contains("tools"),
                "{stderr}"
            );
            Ok(())
        })(),
    );
}
