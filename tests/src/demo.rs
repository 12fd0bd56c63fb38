//! `cargo xtask demo`, inside the VM: claw-agent enforcing policies/tools.yaml, a tool process in
//! the agent's cgroup reading its workspace and then trying a secret, and the kernel's refusal in
//! `clawctl deny-log --follow`.

use std::{
    path::Path,
    process::{Command, ExitCode},
    time::Duration,
};

use anyhow::{ensure, Context as _};

use crate::harness::{in_cgroup, Daemon, Follower, CGROUP_ROOT, CLAWCTL};

const POLICY: &str = "/etc/claw/tools.yaml";

pub fn run() -> ExitCode {
    match demo() {
        Ok(()) => {
            println!("\ndemo: done — the kernel said no, and the operator saw it.");
            ExitCode::SUCCESS
        }
        Err(err) => {
            println!("demo: FAILED: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn step(text: &str) {
    println!("\n==> {text}");
}

fn demo() -> anyhow::Result<()> {
    std::fs::create_dir_all("/workspace")?;
    std::fs::write(
        "/workspace/notes.md",
        "# tool workspace\nthe agent may read this\n",
    )?;
    std::fs::create_dir_all("/root/.ssh")?;
    std::fs::write(
        "/root/.ssh/id_ed25519",
        "-----BEGIN OPENSSH PRIVATE KEY-----\n",
    )?;

    step(&format!("the policy ({POLICY})"));
    print!("{}", std::fs::read_to_string(POLICY)?);

    step("claw-agent --policy /etc/claw/tools.yaml");
    let mut daemon = Daemon::start(Path::new(POLICY), Path::new("/tmp/claw-agent.log"))?;
    daemon.wait_enforcing(Duration::from_secs(120))?;

    step("clawctl status");
    let status = Command::new(CLAWCTL).arg("status").status()?;
    ensure!(status.success(), "clawctl status failed");

    step("clawctl deny-log --follow   (in the background)");
    let follower = Follower::start(&[])?;

    let cgroup = Path::new(CGROUP_ROOT).join("claw/tools");
    step("a tool call in the agent's cgroup: cat /workspace/notes.md; cat /root/.ssh/id_ed25519");
    let mut shell = Command::new("/usr/bin/sh");
    shell.args([
        "-c",
        "cat /workspace/notes.md; cat /root/.ssh/id_ed25519 && echo 'NOT DENIED' || echo \"cat exited $? — denied by the kernel\"",
    ]);
    let (mut shell, _procs) = in_cgroup(shell, &cgroup)?;
    let status = shell.status().context("running the tool call")?;
    ensure!(status.success(), "the tool call's shell failed: {status}");

    step("what clawctl deny-log --follow printed");
    let line = follower
        .line_within(Duration::from_secs(2), |line| {
            line.contains("/root/.ssh/id_ed25519")
        })
        .context("no deny line for the key arrived")?;
    println!("{line}");

    daemon.stop()?;
    let _ = std::fs::remove_dir(&cgroup);
    Ok(())
}
