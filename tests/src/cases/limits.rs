//! Limits in the agent's cgroup, and what the kernel does at them: the OOM kill of a process that
//! allocates past memory.max, and a fork bomb stopped at pids.max — each reported with the agent.

use std::{
    os::unix::process::ExitStatusExt as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use claw_tests::harness::{in_cgroup, Follower, CLAWCTL, VMTEST};
use serde_json::Value;

use super::{limited, Runner, POLICY, POLICY_PATH};

const MEMORY_MAX: u64 = 64 << 20;

pub fn run(runner: &mut Runner) {
    runner.check("limits_are_written_to_the_agent_cgroup", written());
    runner.check("agents_shows_limits_and_usage", agents_command());
    runner.check(
        "oom_kill_is_reported_with_agent_cgroup_and_victim_within_1s",
        oom_kill(),
    );
    runner.check("fork_bomb_stops_at_pids_max_and_is_reported", fork_bomb());
    runner.check("limits_removed_by_apply_go_back_to_max", removed_by_apply());
}

fn read(file: &str) -> anyhow::Result<String> {
    let path = limited().join(file);
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}

fn written() -> anyhow::Result<()> {
    ensure!(
        read("memory.max")? == MEMORY_MAX.to_string(),
        "memory.max {}",
        read("memory.max")?
    );
    ensure!(
        read("memory.high")? == (48u64 << 20).to_string(),
        "memory.high {}",
        read("memory.high")?
    );
    ensure!(read("pids.max")? == "16", "pids.max {}", read("pids.max")?);
    ensure!(
        read("cpu.max")? == "100000 100000",
        "cpu.max {}",
        read("cpu.max")?
    );
    Ok(())
}

fn agents_command() -> anyhow::Result<()> {
    let out = Command::new(CLAWCTL).args(["agents", "--json"]).output()?;
    ensure!(out.status.success(), "clawctl agents: {out:?}");
    let agents: Value = serde_json::from_slice(&out.stdout)?;
    let agent = agents
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "limited"))
        .context("limited in clawctl agents")?;
    let limits = agent["limits"].as_array().context("limits")?;
    ensure!(
        limits
            .iter()
            .any(|l| l["name"] == "memory_max" && l["enforced"] == true),
        "{agent}"
    );
    ensure!(
        agent["usage"]["memory_bytes"].as_u64().is_some(),
        "no memory usage: {agent}"
    );
    Ok(())
}

/// Spawns the probe inside the limited agent; returns its pid and exit status.
fn probe_in_limited(args: &[&str]) -> anyhow::Result<(u32, std::process::Output)> {
    let mut command = Command::new(VMTEST);
    command
        .arg("probe")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let (mut command, _procs) = in_cgroup(command, &limited())?;
    let child = command.spawn()?;
    let pid = child.id();
    Ok((pid, child.wait_with_output()?))
}

fn oom_kill() -> anyhow::Result<()> {
    let follower = Follower::start(&["--json", "--include", "oom"])?;
    let (pid, out) = probe_in_limited(&["hog", "1024"])?;
    let killed_at = Instant::now();
    ensure!(
        out.status.signal() == Some(libc::SIGKILL),
        "the hog was not OOM-killed: {:?}",
        out.status
    );
    let line = follower
        .line_within(
            Duration::from_secs(1).saturating_sub(killed_at.elapsed()),
            |l| l.contains("\"kind\":\"oom\""),
        )
        .context("no oom event within 1 s of the kill")?;
    let event: Value = serde_json::from_str(&line)?;
    ensure!(event["agent"] == "limited", "{line}");
    ensure!(event["cgroup"] == "/claw/limited", "{line}");
    ensure!(event["pid"] == pid, "want the victim {pid}: {line}");
    ensure!(event["comm"] == "claw-vmtest", "{line}");
    ensure!(event["details"]["limit_bytes"] == MEMORY_MAX, "{line}");
    ensure!(
        event["details"]["memory_events_oom_kill"].as_u64() >= Some(1),
        "memory.events does not confirm: {line}"
    );
    Ok(())
}

fn fork_bomb() -> anyhow::Result<()> {
    let follower = Follower::start(&["--json", "--include", "pids_max"])?;
    let (_, out) = probe_in_limited(&["fork-bomb"])?;
    ensure!(out.status.success(), "fork bomb probe: {:?}", out.status);
    let forked: usize = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    ensure!(forked < 16, "{forked} forks despite pids.max 16");
    let line = follower
        .line_within(Duration::from_secs(3), |l| {
            l.contains("\"kind\":\"pids_max\"")
        })
        .context("no pids_max event within 3 s")?;
    let event: Value = serde_json::from_str(&line)?;
    ensure!(
        event["agent"] == "limited" && event["details"]["limit"] == 16,
        "{line}"
    );
    ensure!(
        event["details"]["refused_forks"].as_u64() >= Some(1),
        "{line}"
    );
    Ok(())
}

fn removed_by_apply() -> anyhow::Result<()> {
    let unlimited = "/tmp/claw-test-unlimited.yaml";
    std::fs::write(
        unlimited,
        POLICY.replace(
            "    limits: { memory_max: 64M, memory_high: 48M, pids_max: 16, cpu_max: \"1\" }\n",
            "",
        ),
    )?;
    let apply = |path: &str| -> anyhow::Result<()> {
        let out = Command::new(CLAWCTL)
            .args(["policy", "apply", path])
            .output()?;
        ensure!(
            out.status.success(),
            "apply {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    apply(unlimited)?;
    let after = (read("memory.max")?, read("pids.max")?);
    apply(POLICY_PATH)?;
    ensure!(
        after == ("max".to_owned(), "max".to_owned()),
        "limits stayed: {after:?}"
    );
    written()
}
