//! The in-kernel test cases of issue 2: file_open enforcement inside an agent's cgroup, no effect
//! outside it, and the deny reaching `clawctl deny-log --follow` (human and JSON) within 1 s.

use std::{
    path::Path,
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use serde_json::Value;

use crate::harness::{
    probe_open, report, Daemon, Follower, ScratchCgroup, CGROUP_ROOT, CLAWCTL, CLAW_AGENT,
};

const POLICY: &str = "\
agents:
  - name: tools
    cgroup: claw/tools
    files:
      read: [/usr/, /lib/, /workspace/]
";
const POLICY_PATH: &str = "/tmp/claw-test-policy.yaml";
const ALLOWED_FILE: &str = "/workspace/hello.txt";
const DENIED_FILE: &str = "/etc/secret";
const EPERM: i32 = 1;
/// The acceptance bound from the kernel's deny to the line printed by clawctl.
const DELIVERY_BOUND: Duration = Duration::from_secs(1);

fn agent_cgroup() -> std::path::PathBuf {
    Path::new(CGROUP_ROOT).join("claw/tools")
}

pub fn run_all() -> ExitCode {
    let mut all_passed = true;
    let mut check = |name: &str, result: anyhow::Result<()>| all_passed &= report(name, &result);

    check("fixtures", fixtures());
    check(
        "clawctl_status_fails_without_daemon",
        status_fails_without_daemon(),
    );
    check(
        "daemon_refuses_when_bpf_lsm_inactive",
        refuses_when_lsm_inactive(),
    );

    let mut daemon = match Daemon::start(Path::new(POLICY_PATH), Path::new("/tmp/claw-agent.log"))
        .and_then(|mut d| d.wait_enforcing(Duration::from_secs(120)).map(|()| d))
    {
        Ok(daemon) => daemon,
        Err(err) => {
            check("daemon_enforces_policy", Err(err));
            return ExitCode::FAILURE;
        }
    };
    check("daemon_enforces_policy", Ok(()));
    check(
        "status_reports_program_and_agent",
        status_reports_enforcing(),
    );
    check("daemon_created_agent_cgroup", cgroup_created());

    let followers =
        Follower::start(&[]).and_then(|human| Ok((human, Follower::start(&["--json"])?)));
    match followers {
        Ok((human, json)) => {
            check(
                "agent_open_outside_read_prefixes_is_eperm_and_logged",
                denied_and_logged(&human, &json),
            );
        }
        Err(err) => check(
            "agent_open_outside_read_prefixes_is_eperm_and_logged",
            Err(err),
        ),
    }
    check("agent_open_inside_read_prefixes_succeeds", allowed_inside());
    check(
        "process_outside_agents_opens_both",
        outside_unaffected(None),
    );
    check(
        "process_in_unmanaged_cgroup_opens_both",
        ScratchCgroup::create("claw-test-unmanaged")
            .and_then(|cgroup| outside_unaffected(Some(&cgroup.0))),
    );
    check("status_counts_decisions", status_counts());
    check("daemon_stops_on_sigterm", stops_cleanly(&mut daemon));
    let _ = std::fs::remove_dir(agent_cgroup());
    let _ = std::fs::remove_dir(Path::new(CGROUP_ROOT).join("claw"));

    if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn fixtures() -> anyhow::Result<()> {
    std::fs::write(POLICY_PATH, POLICY)?;
    std::fs::create_dir_all("/workspace")?;
    std::fs::write(ALLOWED_FILE, "hello\n")?;
    std::fs::write(DENIED_FILE, "s3cr3t\n")?;
    Ok(())
}

fn status_fails_without_daemon() -> anyhow::Result<()> {
    let out = Command::new(CLAWCTL).arg("status").output()?;
    ensure!(
        !out.status.success(),
        "clawctl status succeeded with no daemon"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        stderr.contains("cannot reach claw-agent"),
        "unclear reason: {stderr}"
    );
    Ok(())
}

fn refuses_when_lsm_inactive() -> anyhow::Result<()> {
    let list = "/tmp/lsm-without-bpf";
    std::fs::write(list, "lockdown,capability,landlock,yama\n")?;
    let out = Command::new(CLAW_AGENT)
        .args([
            "--policy",
            POLICY_PATH,
            "--socket",
            "/tmp/unused.sock",
            "--lsm-list",
            list,
        ])
        .output()?;
    ensure!(
        !out.status.success(),
        "claw-agent ran without BPF LSM active"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        stderr.contains("BPF LSM is not active"),
        "unclear reason: {stderr}"
    );
    ensure!(
        !agent_cgroup().exists(),
        "a refused claw-agent still created {}",
        agent_cgroup().display()
    );
    Ok(())
}

fn status_json() -> anyhow::Result<Value> {
    let out = Command::new(CLAWCTL).args(["status", "--json"]).output()?;
    ensure!(out.status.success(), "clawctl status failed: {out:?}");
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn status_reports_enforcing() -> anyhow::Result<()> {
    let status = status_json()?;
    ensure!(status["enforcing"] == true, "not enforcing: {status}");
    ensure!(
        status["programs"][0]["hook"] == "lsm/file_open"
            && status["programs"][0]["attached"] == true,
        "file_open not attached: {status}"
    );
    ensure!(
        status["agents"][0]["name"] == "tools" && status["agents"][0]["cgroup"] == "/claw/tools",
        "agent missing: {status}"
    );
    Ok(())
}

fn cgroup_created() -> anyhow::Result<()> {
    ensure!(
        agent_cgroup().join("cgroup.procs").exists(),
        "{} is not a cgroup",
        agent_cgroup().display()
    );
    Ok(())
}

fn denied_and_logged(human: &Follower, json: &Follower) -> anyhow::Result<()> {
    human.drain();
    json.drain();
    let (pid, errno) = probe_open(DENIED_FILE, Some(&agent_cgroup()))?;
    let denied_at = Instant::now();
    ensure!(
        errno == EPERM,
        "open {DENIED_FILE} in the agent: errno {errno}, want EPERM"
    );

    // Static glibc reads /proc/self/maps at start-up, which the policy denies too: look for the
    // line about the file, from this pid.
    let line = json
        .line_within(DELIVERY_BOUND.saturating_sub(denied_at.elapsed()), |line| {
            line.contains(&format!("\"path\":\"{DENIED_FILE}\""))
        })
        .context("no JSON deny line for the file within 1 s")?;
    let event: Value = serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
    let want = [
        ("agent", Value::from("tools")),
        ("cgroup", Value::from("/claw/tools")),
        ("pid", Value::from(pid)),
        ("comm", Value::from("claw-vmtest")),
        ("op", Value::from("open")),
        ("path", Value::from(DENIED_FILE)),
        ("decision", Value::from("deny")),
    ];
    for (key, value) in want {
        ensure!(
            event[key] == value,
            "{key} is {}, want {value}: {line}",
            event[key]
        );
    }
    ensure!(
        event["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() > 20),
        "time: {line}"
    );

    let line = human
        .line_within(DELIVERY_BOUND.saturating_sub(denied_at.elapsed()), |line| {
            line.contains(DENIED_FILE)
        })
        .context("no human deny line for the file within 1 s")?;
    for part in [
        "tools".to_owned(),
        format!("pid={pid}"),
        "comm=claw-vmtest".to_owned(),
        format!("open {DENIED_FILE}"),
        "deny".to_owned(),
    ] {
        ensure!(line.contains(&part), "missing `{part}`: {line}");
    }
    Ok(())
}

fn allowed_inside() -> anyhow::Result<()> {
    let (_, errno) = probe_open(ALLOWED_FILE, Some(&agent_cgroup()))?;
    ensure!(
        errno == 0,
        "open {ALLOWED_FILE} in the agent: errno {errno}"
    );
    Ok(())
}

fn outside_unaffected(cgroup: Option<&Path>) -> anyhow::Result<()> {
    for path in [ALLOWED_FILE, DENIED_FILE] {
        let (_, errno) = probe_open(path, cgroup)?;
        ensure!(errno == 0, "open {path} outside agents: errno {errno}");
    }
    Ok(())
}

fn status_counts() -> anyhow::Result<()> {
    let status = status_json()?;
    let counters = &status["counters"];
    ensure!(
        counters["denied"].as_u64() >= Some(1),
        "no deny counted: {status}"
    );
    ensure!(
        counters["allowed"].as_u64() >= Some(1),
        "no allow counted: {status}"
    );
    ensure!(counters["events_lost_kernel"] == 0, "events lost: {status}");
    Ok(())
}

fn stops_cleanly(daemon: &mut Daemon) -> anyhow::Result<()> {
    let status = daemon.stop()?;
    ensure!(status.success(), "claw-agent exited with {status}");
    if Path::new("/run/claw/claw.sock").exists() {
        bail!("the control socket was left behind");
    }
    let out = Command::new(CLAWCTL)
        .arg("status")
        .stderr(Stdio::null())
        .status()?;
    ensure!(
        !out.success(),
        "clawctl status succeeds after the daemon stopped"
    );
    Ok(())
}
