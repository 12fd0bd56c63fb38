//! `clawctl allow EVENT`: exactly the object of one denial let through for its agent, once or
//! for a while; nothing else.

use std::{
    path::Path,
    process::{Command, Output},
};

use anyhow::ensure;
use claw_tests::harness::{expect, in_cgroup, CLAWCTL};

use super::{
    calls::{code, denial_in_story, run_call},
    named, tools, Runner, AGENT_SOCKET, DENIED_FILE, ECONNREFUSED, EPERM,
};

/// Denies `probe` in tool call `call` and returns the number of its denial of `object` (a path
/// or a destination).
fn denial(call: &str, probe: &[&str], object: &str) -> anyhow::Result<u64> {
    let output = run_call(call, &[], probe)?;
    ensure!(code(&output) == EPERM, "{output:?}");
    denial_in_story(call, object)
}

fn allow(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(CLAWCTL).arg("allow").args(args).output()?;
    ensure!(
        output.status.success(),
        "clawctl allow {args:?}: {output:?}"
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn run(runner: &mut Runner) {
    let agent = tools();
    let inside = Some(agent.as_path());
    runner.check(
        "allow_once_lets_exactly_one_retry_through",
        (|| {
            let seq = denial("vm-grant-file", &["open", DENIED_FILE], DENIED_FILE)?;
            let said = allow(&[&seq.to_string(), "--once"])?;
            ensure!(
                said.contains(DENIED_FILE) && said.contains("agent `tools`"),
                "{said}"
            );
            // Another access to the same file is another grant: writing stays denied.
            expect(&["open", DENIED_FILE, "w"], inside, EPERM)?;
            expect(&["open", DENIED_FILE], inside, 0)?;
            expect(&["open", DENIED_FILE], inside, EPERM)
        })(),
    );
    runner.check(
        "allow_for_a_while_holds_that_destination_only",
        (|| {
            let seq = denial(
                "vm-grant-net",
                &["connect", "127.0.0.1:9300"],
                "127.0.0.1:9300/tcp",
            )?;
            allow(&[&seq.to_string(), "--for", "10m"])?;
            expect(&["connect", "127.0.0.1:9300"], inside, ECONNREFUSED)?;
            expect(&["connect", "127.0.0.1:9300"], inside, ECONNREFUSED)?;
            expect(&["connect", "127.0.0.1:9301"], inside, EPERM)?;
            expect(&["connect", "[::1]:9300"], inside, EPERM)
        })(),
    );
    runner.check(
        "why_names_the_rule_a_denial_ran_into",
        (|| {
            let seq = denial("vm-why", &["open", DENIED_FILE, "w"], DENIED_FILE)?;
            let output = Command::new(CLAWCTL)
                .args(["why", &seq.to_string(), "--json"])
                .output()?;
            ensure!(output.status.success(), "{output:?}");
            let why: serde_json::Value = serde_json::from_slice(&output.stdout)?;
            ensure!(
                why["reason"] == "tools may write only under /workspace/"
                    && why["call"] == "vm-why"
                    && why["object"] == DENIED_FILE,
                "{why}"
            );
            let seq = denial(
                "vm-why-net",
                &["connect", "127.0.0.1:9302"],
                "127.0.0.1:9302/tcp",
            )?;
            let output = Command::new(CLAWCTL)
                .args(["why", &seq.to_string()])
                .output()?;
            let text = String::from_utf8_lossy(&output.stdout);
            ensure!(
                text.contains("tools may connect only to 127.0.0.1:8080/tcp")
                    && text.contains(&format!("clawctl allow {seq} --once")),
                "{text}"
            );
            Ok(())
        })(),
    );
    runner.check(
        "why_from_inside_an_agent_answers_about_its_own_denials_only",
        (|| {
            let seq = denial("vm-why-inside", &["open", DENIED_FILE, "w"], DENIED_FILE)?;
            // The control socket is out of reach in there: clawctl asks the agent socket.
            let why_inside = |cgroup: &Path| -> anyhow::Result<Output> {
                let mut command = Command::new(CLAWCTL);
                command.args(["why", &seq.to_string(), "--json"]);
                let (mut command, _procs) = in_cgroup(command, cgroup)?;
                Ok(command.output()?)
            };
            let output = why_inside(&agent)?;
            ensure!(output.status.success(), "{output:?}");
            let why: serde_json::Value = serde_json::from_slice(&output.stdout)?;
            ensure!(
                why["reason"] == "tools may write only under /workspace/"
                    && why["call"] == "vm-why-inside"
                    && why["object"] == DENIED_FILE,
                "{why}"
            );
            // Another agent, and another tool call of the same agent, are told nothing of it.
            let output = why_inside(&named("broad"))?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            ensure!(
                !output.status.success()
                    && stderr.contains(&format!("no event {seq} of /claw/broad"))
                    && !stderr.contains(DENIED_FILE),
                "{output:?}"
            );
            let output = Command::new(CLAWCTL)
                .args(["run", "--agent", "tools", "--call-id", "vm-why-other", "--"])
                .args([CLAWCTL, "why", &seq.to_string()])
                .output()?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            ensure!(
                !output.status.success()
                    && stderr.contains(&format!("no event {seq} of /claw/tools/call-vm-why-other")),
                "{output:?}"
            );
            Ok(())
        })(),
    );
    runner.check(
        "no_grant_opens_claw_agents_socket_directory",
        (|| {
            let seq = denial("vm-grant-socket", &["unlink", AGENT_SOCKET], AGENT_SOCKET)?;
            let output = Command::new(CLAWCTL)
                .args(["allow", &seq.to_string(), "--once"])
                .output()?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            ensure!(
                !output.status.success()
                    && stderr.contains("no grant may let an agent into /run/claw/"),
                "{output:?}"
            );
            ensure!(Path::new(AGENT_SOCKET).exists(), "the agent socket went");
            Ok(())
        })(),
    );
    runner.check(
        "allow_refuses_what_is_not_a_denial_and_says_how_to_ask",
        (|| {
            let output = Command::new(CLAWCTL)
                .args(["allow", "999999999", "--once"])
                .output()?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            ensure!(
                output.status.code() == Some(1) && stderr.contains("no event 999999999"),
                "{output:?}"
            );
            let output = Command::new(CLAWCTL).args(["allow", "1"]).output()?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            ensure!(
                output.status.code() == Some(2) && stderr.contains("--once"),
                "{output:?}"
            );
            Ok(())
        })(),
    );
}
