//! Operating the policy live: apply (atomic, and a bad policy changes nothing), SIGHUP, audit
//! mode by apply, diff, explain, and decisions under apply while a process works.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, ensure, Context as _};
use claw_tests::harness::{expect, in_cgroup, Daemon, Follower, CLAWCTL, VMTEST};
use serde_json::Value;

use super::{
    basics::status_json, tools, Runner, ALLOWED_FILE, DENIED_FILE, EPERM, POLICY, POLICY_PATH,
};

const OPEN_SECRET: &str = "/tmp/claw-test-open-secret.yaml";
const AUDIT_ALL: &str = "/tmp/claw-test-audit.yaml";
const BROKEN: &str = "/tmp/claw-test-broken.yaml";

pub fn run(runner: &mut Runner, daemon: &mut Daemon) {
    runner.check("fixtures_for_policy_cases", fixtures());
    runner.check(
        "network_and_audit_events_reach_the_deny_log",
        events_reach_the_log(),
    );
    runner.check("policy_apply_takes_effect_and_reverts", apply_and_revert());
    runner.check(
        "rejected_policy_leaves_the_old_one_fully_active",
        rejected_apply(),
    );
    runner.check("audit_mode_switched_by_apply", audit_by_apply());
    runner.check("sighup_reapplies_the_policy_file", sighup(daemon));
    runner.check("policy_diff_shows_the_change", diff());
    runner.check(
        "explain_names_hook_program_and_live_proof_for_each_rule",
        explain(),
    );
    runner.check(
        "apply_under_load_gives_only_old_or_new_decisions",
        apply_under_load(),
    );
}

fn fixtures() -> anyhow::Result<()> {
    std::fs::write(
        OPEN_SECRET,
        POLICY.replace(
            "read: [/usr/, /lib/, /workspace/]",
            "read: [/usr/, /lib/, /workspace/, /etc/secret]",
        ),
    )?;
    std::fs::write(
        AUDIT_ALL,
        POLICY.replace(
            "    cgroup: claw/tools\n",
            "    cgroup: claw/tools\n    mode: audit\n",
        ),
    )?;
    std::fs::write(
        BROKEN,
        POLICY.replace(
            "read: [/usr/, /lib/, /workspace/]",
            "read: [/usr/, lib/, /workspace/]",
        ),
    )?;
    ensure!(
        std::fs::read_to_string(OPEN_SECRET)? != POLICY,
        "fixture did not change the policy"
    );
    Ok(())
}

fn clawctl(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(CLAWCTL).args(args).output()?)
}

fn apply(path: &str) -> anyhow::Result<()> {
    let out = clawctl(&["policy", "apply", path])?;
    ensure!(
        out.status.success(),
        "apply {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn events_reach_the_log() -> anyhow::Result<()> {
    let follower = Follower::start(&["--json"])?;
    expect(&["connect", "127.0.0.1:9090"], Some(&tools()), EPERM)?;
    let line = follower
        .line_within(Duration::from_secs(1), |l| l.contains("\"op\":\"connect\""))
        .context("no connect deny within 1 s")?;
    let event: Value = serde_json::from_str(&line)?;
    ensure!(event["destination"] == "127.0.0.1:9090/tcp", "{line}");
    ensure!(
        event["agent"] == "tools" && event["decision"] == "deny",
        "{line}"
    );

    expect(&["open", DENIED_FILE], Some(&super::auditor()), 0)?;
    let line = follower
        .line_within(Duration::from_secs(1), |l| {
            l.contains("\"agent\":\"auditor\"") && l.contains(DENIED_FILE)
        })
        .context("no audit event within 1 s")?;
    let event: Value = serde_json::from_str(&line)?;
    ensure!(
        event["kind"] == "audit" && event["decision"] == "allow",
        "{line}"
    );
    Ok(())
}

fn generation() -> anyhow::Result<u64> {
    status_json()?["generation"].as_u64().context("generation")
}

fn apply_and_revert() -> anyhow::Result<()> {
    let agent = tools();
    let before = generation()?;
    expect(&["open", DENIED_FILE], Some(&agent), EPERM)?;
    apply(OPEN_SECRET)?;
    expect(&["open", DENIED_FILE], Some(&agent), 0)?;
    ensure!(generation()? == before + 1, "generation did not advance");
    apply(POLICY_PATH)?;
    expect(&["open", DENIED_FILE], Some(&agent), EPERM)?;
    expect(&["open", ALLOWED_FILE], Some(&agent), 0)
}

fn rejected_apply() -> anyhow::Result<()> {
    let agent = tools();
    let before = generation()?;
    let out = clawctl(&["policy", "apply", BROKEN])?;
    ensure!(!out.status.success(), "a broken policy was applied");
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        stderr.contains(&format!("{BROKEN}:5:")) && stderr.contains("path `lib/` is relative"),
        "error without position or reason: {stderr}"
    );
    ensure!(generation()? == before, "generation changed");
    expect(&["open", DENIED_FILE], Some(&agent), EPERM)?;
    expect(&["open", ALLOWED_FILE], Some(&agent), 0)?;
    expect(&["exec", "/usr/bin/true"], Some(&agent), 0)?;
    expect(&["connect", "127.0.0.1:9090"], Some(&agent), EPERM)
}

fn audit_by_apply() -> anyhow::Result<()> {
    let agent = tools();
    apply(AUDIT_ALL)?;
    let audited = expect(&["open", DENIED_FILE], Some(&agent), 0);
    apply(POLICY_PATH)?;
    audited?;
    expect(&["open", DENIED_FILE], Some(&agent), EPERM)
}

fn sighup(daemon: &mut Daemon) -> anyhow::Result<()> {
    let agent = tools();
    let before = generation()?;
    std::fs::copy(OPEN_SECRET, POLICY_PATH)?;
    daemon.signal(libc::SIGHUP);
    let mut applied = false;
    for _ in 0..50 {
        if generation()? > before {
            applied = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let opened = expect(&["open", DENIED_FILE], Some(&agent), 0);
    std::fs::write(POLICY_PATH, POLICY)?;
    apply(POLICY_PATH)?;
    ensure!(applied, "SIGHUP did not re-apply within 5 s");
    opened
}

fn diff() -> anyhow::Result<()> {
    let out = clawctl(&["policy", "diff", OPEN_SECRET])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "diff failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(text.contains("+ tools: read /etc/secret"), "{text}");
    ensure!(!text.contains("\n- "), "nothing should be removed: {text}");
    Ok(())
}

fn explain() -> anyhow::Result<()> {
    let out = clawctl(&["explain", "--json"])?;
    ensure!(
        out.status.success(),
        "explain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model: Value = serde_json::from_slice(&out.stdout)?;
    let tools = model["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["agent"] == "tools"))
        .context("tools in explain")?;
    let rules = tools["rules"].as_array().context("rules")?;
    for want in [
        "read /workspace/",
        "write /workspace/",
        "exec /usr/bin/true",
        "libraries /usr/lib/x86_64-linux-gnu/",
        "connect 127.0.0.1:8080/tcp",
    ] {
        let rule = rules
            .iter()
            .find(|r| r["rule"] == want)
            .with_context(|| format!("no `{want}` in explain: {tools}"))?;
        let programs = rule["enforced_by"].as_array().context("enforced_by")?;
        ensure!(!programs.is_empty(), "`{want}` has no mechanism");
        for program in programs {
            ensure!(
                program["attached"] == true && program["id"].as_u64().is_some(),
                "{want}: {program}"
            );
        }
    }
    let ran = rules
        .iter()
        .flat_map(|r| r["enforced_by"].as_array().cloned().unwrap_or_default())
        .any(|p| p["run_count"].as_u64() > Some(0));
    ensure!(ran, "no program shows runs: {tools}");
    ensure!(
        !tools["denied_by_default"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "no default denials listed"
    );
    let human = clawctl(&["explain", "tools"])?;
    let text = String::from_utf8_lossy(&human.stdout);
    ensure!(
        text.contains("lsm/file_open#") && text.contains("denied by default"),
        "{text}"
    );
    Ok(())
}

/// A process opens an allowed and a toggled file in a loop while policies that deny and allow
/// the toggled file are applied in turn: every decision must be one of the two policies'.
fn apply_under_load() -> anyhow::Result<()> {
    let mut command = Command::new(VMTEST);
    command
        .args(["probe", "open-loop", ALLOWED_FILE, DENIED_FILE, "20000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let (mut command, _procs) = in_cgroup(command, &tools())?;
    let child = command.spawn()?;
    let mut applies = 0;
    while applies < 10 {
        apply(if applies % 2 == 0 {
            OPEN_SECRET
        } else {
            POLICY_PATH
        })?;
        applies += 1;
    }
    let out = child.wait_with_output()?;
    apply(POLICY_PATH)?;
    ensure!(out.status.success(), "the loop failed: {:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut total = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [label, code, count] = fields[..] else {
            bail!("bad line {line}");
        };
        let code: i32 = code.parse()?;
        total += count.parse::<usize>()?;
        match (label, code) {
            ("allowed", 0) | ("other", 0) | ("other", EPERM) => {}
            _ => bail!("a decision neither policy makes: {line} (all: {text})"),
        }
    }
    ensure!(total == 40000, "counted {total} opens, want 40000: {text}");
    ensure!(Path::new(DENIED_FILE).exists(), "fixture gone");
    Ok(())
}
