//! Credential stores: no wider rule reaches into them, a rule naming one does; other processes'
//! environments stay closed; programs are not started with preload variables.

use std::{
    os::unix::process::ExitStatusExt as _,
    process::{Command, Stdio},
};

use anyhow::{ensure, Context as _};
use claw_tests::harness::{expect, in_cgroup, CLAWCTL, VMTEST};

use super::{calls::story, limited, named, runtime, tools, Runner, ALLOWED_FILE, EPERM};

const EACCES: i32 = 13;

const FILES: [&str; 5] = [
    "/root/.ssh/id_ed25519",
    "/root/.aws/credentials",
    "/root/.aws/config",
    "/run/secrets/token",
    "/etc/claw-not-a-secret",
];

fn fixtures() -> anyhow::Result<()> {
    for file in FILES {
        if let Some(dir) = std::path::Path::new(file).parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(file, "secret\n")?;
    }
    Ok(())
}

/// `claw-vmtest probe open ALLOWED_FILE` started in `cgroup` (None: outside agents) with the
/// variable `name=value`.
fn started_with(
    name: &str,
    value: &str,
    cgroup: Option<&std::path::Path>,
) -> anyhow::Result<std::process::ExitStatus> {
    let mut command = Command::new(VMTEST);
    command
        .args(["probe", "open", ALLOWED_FILE])
        .env(name, value)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(match cgroup {
        Some(cgroup) => {
            let (mut command, _procs) = in_cgroup(command, cgroup)?;
            command.status()?
        }
        None => command.status()?,
    })
}

pub fn run(runner: &mut Runner) {
    runner.check(
        "a_program_started_with_a_preload_variable_is_refused",
        (|| {
            let tools = tools();
            for (name, value) in [
                ("LD_PRELOAD", "/workspace/none.so"),
                ("LD_AUDIT", "/workspace/none.so"),
                ("NODE_OPTIONS", "--require=/workspace/x.js"),
            ] {
                let status = started_with(name, value, Some(&tools))?;
                ensure!(status.signal() == Some(9), "{name} in tools: {status}");
            }
            let status = started_with("NOT_A_PRELOAD", "1", Some(&tools))?;
            ensure!(status.success(), "a harmless variable: {status}");
            let status = started_with("LD_PRELOAD", "/workspace/none.so", None)?;
            ensure!(status.signal().is_none(), "outside agents: {status}");
            // Agent `runtime` has allow_env: [NODE_OPTIONS] (and no read rule for the file).
            let status = started_with("NODE_OPTIONS", "--max-old-space-size=64", Some(&runtime()))?;
            ensure!(
                status.signal().is_none(),
                "NODE_OPTIONS where allowed: {status}"
            );
            let status = started_with("LD_PRELOAD", "/workspace/none.so", Some(&runtime()))?;
            ensure!(
                status.signal() == Some(9),
                "LD_PRELOAD where only NODE_OPTIONS is allowed: {status}"
            );
            // The denial names the variable, the call and why.
            let output = Command::new(CLAWCTL)
                .args([
                    "run",
                    "--agent",
                    "tools",
                    "--call-id",
                    "vm-preload",
                    "--",
                    VMTEST,
                    "probe",
                    "open",
                    ALLOWED_FILE,
                ])
                .env("LD_PRELOAD", "/workspace/none.so")
                .output()?;
            ensure!(output.status.code() == Some(128 + 9), "{output:?}");
            let events = story("vm-preload")?;
            let denial = events
                .iter()
                .find(|e| e["op"] == "preload")
                .with_context(|| format!("no preload denial in {events:?}"))?;
            ensure!(
                denial["path"] == "LD_PRELOAD=/workspace/none.so"
                    && denial["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("allow_env")),
                "{denial}"
            );
            Ok(())
        })(),
    );
    // Agent `broad` reads and writes [/], and names /root/.aws/credentials.
    let broad = named("broad");
    let inside = Some(broad.as_path());
    runner.check(
        "credential_stores_are_closed_under_a_wider_rule",
        (|| {
            fixtures()?;
            expect(&["open", "/root/.ssh/id_ed25519"], inside, EPERM)?;
            expect(
                &["open", "/root/.ssh/authorized_keys", "create"],
                inside,
                EPERM,
            )?;
            expect(&["open", "/run/secrets/token"], inside, EPERM)?;
            expect(&["open", "/etc/claw-not-a-secret"], inside, 0)?;
            expect(&["open", "/root/.ssh/id_ed25519"], None, 0)
        })(),
    );
    runner.check(
        "a_rule_naming_a_credential_opens_that_one_only",
        (|| {
            expect(&["open", "/root/.aws/credentials"], inside, 0)?;
            expect(&["open", "/root/.aws/config"], inside, EPERM)
        })(),
    );
    runner.check(
        "other_processes_environments_are_closed",
        (|| {
            // Agent `limited` reads [/proc/]: its own environment, not another process's (the
            // ptrace hook refuses the read access; /proc reports any such refusal as EACCES).
            let limited = limited();
            expect(&["open", "/proc/self/environ"], Some(&limited), 0)?;
            expect(&["open", "/proc/1/environ"], Some(&limited), EACCES)?;
            expect(&["open", "/proc/1/environ"], None, 0)
        })(),
    );
}
