//! Agents are cgroup subtrees: a process in any cgroup below an agent's — made by root from
//! outside the agent, by a container runtime, by systemd — is held to the agent's rules from its
//! first instruction, and its events name its own cgroup and the agent.

use std::{path::Path, time::Duration};

use anyhow::{ensure, Context as _};
use claw_tests::harness::{expect, Follower, ScratchCgroup};

use super::{confine::Sleeper, tools, Runner, ALLOWED_FILE, DENIED_FILE, ECONNREFUSED, EPERM};

/// The tools agent's file, exec, connect and listen rules, as a process in `cgroup` meets them.
fn held_to_the_tools_rules(cgroup: &Path) -> anyhow::Result<()> {
    let inside = Some(cgroup);
    expect(&["open", DENIED_FILE], inside, EPERM)?;
    expect(&["open", ALLOWED_FILE], inside, 0)?;
    expect(&["create", "/etc/subtree-planted"], inside, EPERM)?;
    ensure!(
        !Path::new("/etc/subtree-planted").exists(),
        "a process below the agent created /etc/subtree-planted"
    );
    expect(&["exec", "/workspace/true"], inside, EPERM)?;
    expect(&["exec", "/usr/bin/true"], inside, 0)?;
    expect(&["connect", "127.0.0.1:9090"], inside, EPERM)?;
    expect(&["listen", "0.0.0.0:4444"], inside, EPERM)?;
    expect(&["listen", "127.0.0.1:0"], inside, EPERM)?;
    expect(&["connect", "127.0.0.1:8080"], inside, ECONNREFUSED)
}

/// A cgroup root makes below the agent's, from outside the agent.
fn child_cgroup() -> anyhow::Result<()> {
    let child = ScratchCgroup::create("claw/tools/made-by-root")?;
    held_to_the_tools_rules(&child.0)?;
    // The same cgroup tree outside every agent: no rules.
    let outside = ScratchCgroup::create("claw-subtree-outside")?;
    let outside_child = ScratchCgroup::create("claw-subtree-outside/child")?;
    expect(&["open", DENIED_FILE], Some(&outside_child.0), 0)?;
    expect(&["exec", "/workspace/true"], Some(&outside_child.0), 0)?;
    drop(outside_child);
    drop(outside);
    Ok(())
}

/// A container-like tree: a pod's cgroup and a container's below it.
fn nested_tree() -> anyhow::Result<()> {
    let pod = ScratchCgroup::create("claw/tools/pod")?;
    let container = ScratchCgroup::create("claw/tools/pod/container")?;
    held_to_the_tools_rules(&container.0)?;
    held_to_the_tools_rules(&pod.0)
}

/// Fresh cgroups, each entered by a process at once (it joins before its exec, so its first
/// instruction runs there) whose first act is a denied open: never one that goes through.
fn fresh_cgroups_race() -> anyhow::Result<()> {
    for round in 0..40 {
        let fresh = ScratchCgroup::create(&format!("claw/tools/fresh-{round}"))?;
        expect(&["open", DENIED_FILE], Some(&fresh.0), EPERM)
            .with_context(|| format!("round {round}"))?;
    }
    Ok(())
}

/// Within the subtree signals reach; from below the agent to the host they do not.
fn signals() -> anyhow::Result<()> {
    let child = ScratchCgroup::create("claw/tools/signals")?;
    let below = Sleeper::start(Some(&child.0))?;
    let host = Sleeper::start(None)?;
    expect(&["signal", &below.pid()], Some(&tools()), 0)?;
    expect(&["signal", &host.pid()], Some(&child.0), EPERM)?;
    expect(&["ptrace", &host.pid()], Some(&child.0), EPERM)
}

/// A denial below the agent is the agent's event, naming the process's own cgroup.
fn event_names_the_cgroup() -> anyhow::Result<()> {
    let pod = ScratchCgroup::create("claw/tools/evpod")?;
    let container = ScratchCgroup::create("claw/tools/evpod/ctr")?;
    let secret = "/etc/subtree-secret";
    std::fs::write(secret, "s\n")?;
    let follower = Follower::start(&["--json", "--agent", "tools", "--op", "open"])?;
    expect(&["open", secret], Some(&container.0), EPERM)?;
    let line = follower
        .line_within(Duration::from_secs(20), |line| line.contains(secret))
        .context("no deny event for the open below the agent")?;
    let event: serde_json::Value = serde_json::from_str(&line)?;
    ensure!(
        event["agent"] == "tools",
        "event of agent {}",
        event["agent"]
    );
    ensure!(
        event["cgroup"] == "/claw/tools/evpod/ctr",
        "event names cgroup {}, want /claw/tools/evpod/ctr",
        event["cgroup"]
    );
    ensure!(event["kind"] == "deny", "event kind {}", event["kind"]);
    drop(container);
    drop(pod);
    Ok(())
}

pub fn run(runner: &mut Runner) {
    runner.check(
        "a_child_cgroup_made_from_outside_the_agent_is_held_to_its_rules",
        child_cgroup(),
    );
    runner.check(
        "a_container_like_tree_two_levels_deep_is_held_to_its_rules",
        nested_tree(),
    );
    runner.check(
        "no_process_ever_runs_unconfined_in_a_fresh_child_cgroup",
        fresh_cgroups_race(),
    );
    runner.check(
        "signals_reach_within_the_agents_subtree_and_not_out_of_it",
        signals(),
    );
    runner.check(
        "a_denial_below_the_agent_names_its_own_cgroup_and_the_agent",
        event_names_the_cgroup(),
    );
}
