//! Tool calls (`clawctl run --call-id`): each in a cgroup of its own under its agent's, held to
//! the agent's policy or a narrowing of it, named in every event, ended with its command.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use claw_tests::harness::{expect, CGROUP_ROOT, CLAWCTL, VMTEST};
use serde_json::Value;

use super::{tools, Runner, ALLOWED_FILE, DENIED_FILE, ECONNREFUSED, EPERM};

/// A sibling of ALLOWED_FILE that the agent may read (made by the fixtures).
const SIBLING_FILE: &str = "/workspace/true";

fn call_cgroup(call: &str) -> std::path::PathBuf {
    tools().join(format!("call-{call}"))
}

/// The pid of the first process in call CALL's cgroup, once there is one (up to 10 s).
fn first_process(call: &str) -> anyhow::Result<String> {
    let procs = call_cgroup(call).join("cgroup.procs");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = std::fs::read_to_string(&procs).unwrap_or_default();
        if let Some(pid) = listed.lines().next() {
            return Ok(pid.to_owned());
        }
        ensure!(
            Instant::now() < deadline,
            "no process in {}",
            procs.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `clawctl run --agent tools --call-id CALL [EXTRA...] -- claw-vmtest probe PROBE...`
pub(super) fn run_call(call: &str, extra: &[&str], probe: &[&str]) -> anyhow::Result<Output> {
    let output = Command::new(CLAWCTL)
        .args(["run", "--agent", "tools", "--call-id", call])
        .args(extra)
        .args(["--", VMTEST, "probe"])
        .args(probe)
        .output()?;
    Ok(output)
}

pub(super) fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

/// Runs `command`, killing it if it has not ended within `limit`.
fn output_within(mut command: Command, limit: Duration) -> anyhow::Result<Output> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{command:?} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child.wait_with_output()?)
}

/// The seq of the call's denial of `object` (a path or destination). The denial reaches the audit
/// log from the kernel's ring buffer, the call's end from the daemon: the end may be logged
/// first, so the story is read again until the denial is in it.
pub(super) fn denial_in_story(call: &str, object: &str) -> anyhow::Result<u64> {
    let is_denial =
        |e: &Value| e["kind"] == "deny" && (e["path"] == object || e["destination"] == object);
    let events = story_with(call, is_denial)?;
    events
        .iter()
        .find(|e| is_denial(e))
        .and_then(|e| e["seq"].as_u64())
        .with_context(|| format!("no denial of {object} in {events:?}"))
}

/// The call's story once an event `wanted` is in it (read again for up to 10 s: events from the
/// kernel may reach the log after the call's end); the story as it is then, if none is.
pub(super) fn story_with(
    call: &str,
    wanted: impl Fn(&Value) -> bool,
) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = story(call)?;
        if events.iter().any(&wanted) || Instant::now() > deadline {
            return Ok(events);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The events `clawctl events --call CALL --json` prints (it ends at the call's end).
pub(super) fn story(call: &str) -> anyhow::Result<Vec<Value>> {
    let mut command = Command::new(CLAWCTL);
    command.args(["events", "--call", call, "--json", "--since", "10m"]);
    let output = output_within(command, Duration::from_secs(20))?;
    ensure!(output.status.success(), "clawctl events --call: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).context("an event line"))
        .collect()
}

fn gone(pid: &str) -> bool {
    // A killed orphan may linger as a zombie of an init that does not reap: dead all the same.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |stat| stat.split_whitespace().nth(2) == Some("Z"))
}

pub fn run(runner: &mut Runner) {
    runner.check(
        "a_tool_call_runs_in_its_own_cgroup_under_its_agent",
        (|| {
            let mut call = Command::new(CLAWCTL)
                .args([
                    "run",
                    "--agent",
                    "tools",
                    "--call-id",
                    "vm-where",
                    "--",
                    VMTEST,
                    "probe",
                    "sleep",
                    "2",
                ])
                .spawn()?;
            let pid = first_process("vm-where")?;
            let seen = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
            let status = call.wait()?;
            ensure!(status.success(), "clawctl run: {status}");
            ensure!(
                seen.trim() == "0::/claw/tools/call-vm-where",
                "the call's process is in {seen:?}"
            );
            ensure!(
                !call_cgroup("vm-where").exists(),
                "the call's cgroup is left after the call"
            );
            Ok(())
        })(),
    );
    runner.check(
        "a_tool_call_runs_in_a_session_of_its_own",
        (|| {
            // No controlling terminal of the caller's: it cannot push input into it.
            let output = run_call("vm-session", &[], &["own-session"])?;
            ensure!(code(&output) == 0, "{output:?}");
            Ok(())
        })(),
    );
    runner.check(
        "an_agent_cannot_signal_or_trace_its_tool_call",
        (|| {
            let mut call = Command::new(CLAWCTL)
                .args(["run", "--agent", "tools", "--call-id", "vm-reach", "--"])
                .args([VMTEST, "probe", "sleep", "30"])
                .spawn()?;
            let pid = first_process("vm-reach")?;
            // The agent's own processes: a call runs under its own rules and grants.
            let agent = tools();
            let result = (|| {
                expect(&["signal", &pid], Some(&agent), EPERM)?;
                expect(&["ptrace", &pid], Some(&agent), EPERM)?;
                expect(&["task-change", "nice", &pid], Some(&agent), EPERM)
            })();
            let _ = call.kill();
            let _ = call.wait();
            result
        })(),
    );
    runner.check(
        "a_tool_calls_events_carry_its_call_id_and_tell_its_story",
        (|| {
            let output = run_call("vm-story", &[], &["open", DENIED_FILE])?;
            ensure!(code(&output) == EPERM, "{output:?}");
            let events = story_with("vm-story", |e| e["kind"] == "deny")?;
            let kinds: Vec<String> = events
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["kind"].as_str().unwrap_or("?"),
                        e["op"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            ensure!(
                kinds.first().map(String::as_str) == Some("call start")
                    && kinds.last().map(String::as_str) == Some("call end"),
                "{kinds:?}"
            );
            let denial = events
                .iter()
                .find(|e| e["kind"] == "deny" && e["path"] == DENIED_FILE)
                .with_context(|| format!("no denial of {DENIED_FILE} in {events:?}"))?;
            ensure!(
                denial["call"] == "vm-story"
                    && denial["agent"] == "tools"
                    && denial["cgroup"] == "/claw/tools/call-vm-story",
                "{denial}"
            );
            let end = events.last().context("no events")?;
            ensure!(end["details"]["status"] == EPERM, "{end}");
            Ok(())
        })(),
    );
    runner.check(
        "a_process_cannot_leave_its_tool_call",
        (|| {
            let agent_procs = tools().join("cgroup.procs");
            let root_procs = Path::new(CGROUP_ROOT).join("cgroup.procs");
            for target in [&agent_procs, &root_procs] {
                let output = run_call(
                    "vm-leave",
                    &[],
                    &["open", &target.display().to_string(), "w"],
                )?;
                ensure!(
                    code(&output) == EPERM,
                    "writing {}: {output:?}",
                    target.display()
                );
            }
            let output = run_call(
                "vm-leave",
                &[],
                &["clone-into-cgroup", &tools().display().to_string()],
            )?;
            ensure!(
                code(&output) == EPERM,
                "clone3 into the agent's cgroup: {output:?}"
            );
            Ok(())
        })(),
    );
    runner.check(
        "a_tool_call_ends_with_its_command_and_what_it_left_is_killed",
        (|| {
            let output = run_call("vm-bg", &[], &["background-sleep", "60"])?;
            ensure!(output.status.success(), "{output:?}");
            let pid = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            ensure!(
                gone(&pid),
                "the call's background process {pid} outlived the call"
            );
            ensure!(!call_cgroup("vm-bg").exists(), "the call's cgroup is left");
            Ok(())
        })(),
    );
    runner.check(
        "a_call_whose_client_dies_is_ended_and_ids_are_not_shared",
        (|| {
            let mut first = Command::new(CLAWCTL)
                .args([
                    "run",
                    "--agent",
                    "tools",
                    "--call-id",
                    "vm-dup",
                    "--",
                    VMTEST,
                    "probe",
                    "sleep",
                    "60",
                ])
                .stdout(Stdio::null())
                .spawn()?;
            let cgroup = call_cgroup("vm-dup");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !cgroup.join("cgroup.procs").exists()
                || std::fs::read_to_string(cgroup.join("cgroup.procs"))?
                    .trim()
                    .is_empty()
            {
                ensure!(Instant::now() < deadline, "the first call did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
            let second = run_call("vm-dup", &[], &["cgroup"]);
            let killed = first.kill().and_then(|()| first.wait());
            let second = second?;
            killed?;
            let stderr = String::from_utf8_lossy(&second.stderr);
            ensure!(
                code(&second) == 1 && stderr.contains("running"),
                "a second call with the same id: {second:?}"
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while cgroup.exists() {
                ensure!(
                    Instant::now() < deadline,
                    "the call of a killed clawctl still runs"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        })(),
    );
    runner.check(
        "a_narrowed_call_may_do_only_what_it_names",
        (|| {
            let read = ["--allow-read", ALLOWED_FILE];
            let output = run_call("vm-narrow-1", &read, &["open", ALLOWED_FILE])?;
            ensure!(
                output.status.success(),
                "reading the named file: {output:?}"
            );
            let output = run_call("vm-narrow-2", &read, &["open", SIBLING_FILE])?;
            ensure!(
                code(&output) == EPERM,
                "reading a sibling in the narrowed call: {output:?}"
            );
            let output = run_call("vm-wide", &[], &["open", SIBLING_FILE])?;
            ensure!(
                output.status.success(),
                "reading the sibling in a plain call: {output:?}"
            );
            let connect = ["--allow-connect", "127.0.0.1:7005/tcp"];
            let output = run_call("vm-narrow-3", &connect, &["connect", "127.0.0.1:7005"])?;
            ensure!(
                code(&output) == ECONNREFUSED,
                "connecting where named: {output:?}"
            );
            let output = run_call("vm-narrow-4", &connect, &["connect", "127.0.0.1:8080"])?;
            ensure!(code(&output) == EPERM, "connecting elsewhere: {output:?}");
            Ok(())
        })(),
    );
    runner.check(
        "a_call_cannot_widen_its_agent",
        (|| {
            let output = run_call(
                "vm-widen",
                &["--allow-read", DENIED_FILE],
                &["open", DENIED_FILE],
            )?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            ensure!(
                code(&output) == 1 && stderr.contains("only narrow"),
                "a refusal exits 1: {output:?}"
            );
            let output = run_call("../escape", &[], &["open", ALLOWED_FILE])?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            ensure!(
                code(&output) == 2 && stderr.contains("not usable"),
                "a malformed call id is a usage error (exit 2): {output:?}"
            );
            ensure!(
                !call_cgroup("vm-widen").exists(),
                "a refused call left a cgroup"
            );
            Ok(())
        })(),
    );
}
