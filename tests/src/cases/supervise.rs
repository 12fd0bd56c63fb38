//! Supervised processes (`run:`): started inside the agent's cgroup, output captured in
//! claw-agent's log, restarted with back-off, given up after a crash loop, reported as lifecycle
//! events.

use std::{process::Command, time::Duration};

use anyhow::{ensure, Context as _};
use claw_tests::harness::{Follower, CLAWCTL, DAEMON_LOG};
use serde_json::Value;

use super::{named, Runner, POLICY, POLICY_PATH};

const CRASHING: &str = "/tmp/claw-test-crashing.yaml";

pub fn run(runner: &mut Runner) {
    runner.check("supervised_process_runs_in_its_agent", long_running());
    runner.check(
        "crashing_process_restarts_with_backoff_then_gives_up",
        crash_loop(),
    );
}

fn long_running() -> anyhow::Result<()> {
    let procs = std::fs::read_to_string(named("svclong").join("cgroup.procs"))?;
    ensure!(
        procs.lines().count() == 1,
        "want the one supervised process: {procs:?}"
    );
    let out = Command::new(CLAWCTL).args(["agents", "--json"]).output()?;
    let agents: Value = serde_json::from_slice(&out.stdout)?;
    let agent = agents
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "svclong"))
        .context("svclong in clawctl agents")?;
    ensure!(agent["restarts"] == 0, "{agent}");
    Ok(())
}

fn crash_loop() -> anyhow::Result<()> {
    // The probe prints its cgroup (captured into claw-agent's log), then opens a file that does
    // not exist: exit 2 every time.
    let crashing = format!(
        "{POLICY}  - name: crasher\n    cgroup: claw/crasher\n    exec: [/usr/bin/claw-vmtest]\n    files:\n      read: [/proc/]\n    run: {{ command: [/usr/bin/claw-vmtest, probe, open, /nonexistent], restart_delay_ms: 100, max_restarts: 3 }}\n"
    );
    std::fs::write(CRASHING, crashing)?;
    let follower = Follower::start(&["--json", "--include", "lifecycle"])?;
    let out = Command::new(CLAWCTL)
        .args(["policy", "apply", CRASHING])
        .output()?;
    ensure!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen = Vec::new();
    while !seen.iter().any(|(op, _): &(String, Value)| op == "gave-up") {
        let line = follower
            .line_within(Duration::from_secs(10), |l| {
                l.contains("\"agent\":\"crasher\"")
            })
            .with_context(|| format!("lifecycle events stopped after {seen:?}"))?;
        let event: Value = serde_json::from_str(&line)?;
        ensure!(
            event["kind"] == "lifecycle" && event["cgroup"] == "/claw/crasher",
            "{line}"
        );
        seen.push((
            event["op"].as_str().unwrap_or("").to_owned(),
            event["details"].clone(),
        ));
    }
    let ops: Vec<&str> = seen.iter().map(|(op, _)| op.as_str()).collect();
    ensure!(
        ops == [
            "started",
            "exited",
            "restarted",
            "started",
            "exited",
            "restarted",
            "started",
            "exited",
            "restarted",
            "started",
            "exited",
            "gave-up"
        ],
        "lifecycle: {ops:?}"
    );
    ensure!(seen[1].1["status"] == 2, "exit status: {:?}", seen[1].1);
    let delays: Vec<u64> = seen
        .iter()
        .filter(|(op, _)| op == "restarted")
        .filter_map(|(_, d)| d["delay_ms"].as_u64())
        .collect();
    ensure!(delays == [100, 200, 400], "back-off {delays:?}");
    let log = std::fs::read_to_string(DAEMON_LOG)?;
    ensure!(
        log.contains("probe: No such file or directory (os error 2)"),
        "the process's stderr is not in claw-agent's log"
    );
    let out = Command::new(CLAWCTL)
        .args(["policy", "apply", POLICY_PATH])
        .output()?;
    ensure!(
        out.status.success(),
        "apply back: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir(named("crasher"));
    Ok(())
}
